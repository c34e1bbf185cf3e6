"""Channel options: TLS 1.3 instead of Noise, and a private-network pre-shared key."""

from __future__ import annotations

import dataclasses
import os

import trio

from overlay.host import HostConfigError, read_psk
from tests.netutil import fully_attested, local_config, make_agent, wait_until


def _cfg(security: str = "noise"):
    cfg = local_config()
    return dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, security=security))


async def test_tls_federation_attests(tmp_path):
    async with trio.open_nursery() as n:
        a = make_agent(tmp_path, "a", config=_cfg("tls"))
        await n.start(a.run)
        b = make_agent(tmp_path, "b", config=_cfg("tls"), bootstrap=(a.full_addrs()[0],))
        await n.start(b.run)
        await wait_until(lambda: fully_attested([a, b]), 30)
        a.stop()
        b.stop()


async def test_psk_keeps_outsiders_out(tmp_path):
    from node.agent import Agent

    psk, wrong = os.urandom(32).hex(), os.urandom(32).hex()

    def agent(name: str, key: str, boot: tuple[str, ...] = ()) -> Agent:
        base = make_agent(tmp_path, name, bootstrap=boot)
        return Agent(config=base.config, identity=base._identity, provider=base.provider,
                     engine=base.engine, psk_hex=key)

    async with trio.open_nursery() as n:
        a = agent("a", psk)
        await n.start(a.run)
        b = agent("b", psk, (a.full_addrs()[0],))
        c = agent("c", wrong, (a.full_addrs()[0],))
        await n.start(b.run)
        await n.start(c.run)
        await wait_until(lambda: fully_attested([a, b]), 30)
        await wait_until(lambda: c.counters.get("dial_failed") >= 2, 30)
        assert not c.peers.connected() and c.peer_id not in {p.peer_id for p in a.peers.all()}
        for x in (a, b, c):
            x.stop()


def test_psk_file_formats(tmp_path):
    key = os.urandom(32).hex()
    p = tmp_path / "k"
    p.write_text(key + "\n")
    assert read_psk(p) == key
    p.write_text(f"/key/swarm/psk/1.0.0/\n/base16/\n{key}\n")
    assert read_psk(p) == key
    for bad in ("abc", "zz" * 32, f"/key/swarm/psk/1.0.0/\n/base64/\n{key}"):
        p.write_text(bad)
        try:
            read_psk(p)
        except HostConfigError:
            continue
        raise AssertionError(f"accepted {bad!r}")


async def test_quic_federation_attests(tmp_path):
    cfg = local_config()
    cfg = dataclasses.replace(cfg, network=dataclasses.replace(
        cfg.network, listen=("/ip4/127.0.0.1/udp/0/quic-v1",)))
    async with trio.open_nursery() as n:
        a = make_agent(tmp_path, "a", config=cfg)
        await n.start(a.run)
        assert "/quic-v1/p2p/" in a.full_addrs()[0]
        b = make_agent(tmp_path, "b", config=cfg, bootstrap=(a.full_addrs()[0],))
        await n.start(b.run)
        await wait_until(lambda: fully_attested([a, b]), 30)
        a.stop()
        b.stop()

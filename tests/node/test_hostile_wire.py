"""An unattested plain py-libp2p host sends CBOR tags on the attest protocol to a real node.

Both directions of the exchange are attacked: tagged challenges to the node's prover (one
stream per tag) and tagged evidence in answer to the node's own challenges. Every frame is
refused with reason ``tag`` and counted; no tag decoder runs (tag 35 would compile a regular
expression); the node keeps serving.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import cbor2
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from overlay.framing import FrameReader, frame, read_message
from overlay.messages import ATTEST_PROTOCOL, AttestChallenge
from tests.consensus.test_cbor_strict import ALL_TAGS, _tagged_payload
from tests.netutil import local_config, make_agent, wait_until
from tests.overlay.test_hostile_peers import Hostile

PATTERN = "(evil+)+$"


def _tagged_challenge(tag: int) -> bytes:
    return cbor2.dumps(["attest-challenge", 1, {"nonce": cbor2.CBORTag(tag, _tagged_payload(tag))}])


async def test_tags_on_the_attest_protocol_are_refused_and_counted(tmp_path, monkeypatch):
    compiled: list[Any] = []
    real_compile = re.compile

    def spy(pattern: Any, *a: Any, **k: Any) -> Any:
        if pattern == PATTERN:
            compiled.append(pattern)
        return real_compile(pattern, *a, **k)

    monkeypatch.setattr(re, "compile", spy)
    key = f"{ATTEST_PROTOCOL}:tag"

    answered: list[bool] = []

    async def respond(h: Hostile, stream: Any) -> None:
        # The answer to the node's first challenge: evidence with a regular expression inside;
        # later challenges get a reset, so the tag counter below counts our challenges only.
        await read_message(FrameReader(stream), AttestChallenge, timeout_s=5)
        if answered:
            await stream.reset()
            return
        answered.append(True)
        body = {"kind": "sim", "blob": cbor2.CBORTag(35, PATTERN), "certs": [], "public_key": h.pub}
        await stream.write(frame(cbor2.dumps(["attest-evidence", 1, body])))
        await stream.read(100)

    h = Hostile(respond)
    cfg = local_config()
    # Keep the unattested attacker connected for the whole test.
    cfg = dataclasses.replace(cfg, attestation=dataclasses.replace(cfg.attestation, attest_deadline_s=120.0))
    agent = make_agent(tmp_path, "victim", config=cfg)

    async def body(agent: Any) -> None:
        await wait_until(lambda: agent.counters.get("remote_error", key) >= 1, 15)
        for tag in (35, *ALL_TAGS):
            before = agent.counters.get("remote_error", key)
            stream = await h.host.new_stream(agent.host.get_id(), [ATTEST_PROTOCOL])
            await stream.write(frame(_tagged_challenge(tag)))
            await wait_until(lambda b=before: agent.counters.get("remote_error", key) > b, 10)
            await stream.reset()  # the node has reset it already: py-libp2p's reset does not raise
        assert agent.counters.get("remote_error", key) == 1 + 1 + len(ALL_TAGS)
        assert compiled == []
        assert not agent.peers.attested()
        assert agent.status()["peer_id"]  # still serving
        assert h.unexpected == []  # the attacker's own answer ran as written

    with trio.fail_after(120):
        async with trio.open_nursery() as n:
            await n.start(agent.run)
            async with h.host.run([]):
                await h.host.connect(info_from_p2p_addr(Multiaddr(agent.full_addrs()[0])))
                await body(agent)
            agent.stop()

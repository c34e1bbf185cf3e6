"""overlay/discovery.py without root: backoff, bootstrap addresses, and mDNS (advertisement and
hostile TXT records through a stand-in zeroconf, then a real round trip on loopback).

tests/node/test_netns_mdns.py runs mDNS between two network namespaces (root only); these
tests check the same module's logic wherever the suite runs.
"""

from __future__ import annotations

import random
import socket
import threading
import time
import uuid
from typing import Any

import multiaddr
import pytest
import zeroconf
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from zeroconf import InterfaceChoice, ServiceInfo, ServiceStateChange, Zeroconf

from overlay.discovery import (
    MDNS_SERVICE,
    Backoff,
    BootstrapAddressError,
    MdnsAdvertiser,
    _ip_of,
    _port_of,
    split_p2p_addr,
)


def peer_id() -> str:
    return ID.from_pubkey(create_new_key_pair().public_key).to_base58()


# ------------------------------------------------------------------------- backoff


@pytest.mark.parametrize("kw", [
    {"initial_s": 0, "max_s": 1}, {"initial_s": 2, "max_s": 1}, {"initial_s": 1, "max_s": 2, "factor": 0.5},
    {"initial_s": 1, "max_s": 2, "jitter": 1.0}, {"initial_s": 1, "max_s": 2, "jitter": -0.1},
])
def test_backoff_refuses_nonsense(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="need"):
        Backoff(rng=random.Random(0), **kw)


@settings(deadline=None, max_examples=200)
@given(st.floats(0.01, 10), st.floats(1, 100), st.floats(1, 4), st.floats(0, 0.99), st.integers(0, 2**32),
       st.integers(1, 30))
def test_backoff_grows_to_its_cap_within_the_jitter_and_replays_from_its_seed(
        initial_s: float, spread: float, factor: float, jitter: float, seed: int, n: int) -> None:
    max_s = initial_s * spread
    b = Backoff(initial_s, max_s, rng=random.Random(seed), factor=factor, jitter=jitter)
    delays = [b.next_delay() for _ in range(n)]
    assert b.attempts == n
    base = initial_s
    for d in delays:
        assert base * (1 - jitter) - 1e-9 <= d <= base * (1 + jitter) + 1e-9
        base = min(max_s, base * factor)
    again = Backoff(initial_s, max_s, rng=random.Random(seed), factor=factor, jitter=jitter)
    assert [again.next_delay() for _ in range(n)] == delays
    b.reset()
    assert b.attempts == 0
    assert initial_s * (1 - jitter) - 1e-9 <= b.next_delay() <= initial_s * (1 + jitter) + 1e-9


def test_backoff_jitter_spreads_both_ways() -> None:
    """Dialers that failed together must not retry in lockstep: the jitter goes below the base
    as well as above it, over the whole ±jitter band."""
    b = Backoff(1.0, 1.0, rng=random.Random(7), jitter=0.2)
    delays = [b.next_delay() for _ in range(500)]
    assert min(delays) < 0.85 and max(delays) > 1.15


# ------------------------------------------------------------------------- bootstrap addresses


def test_a_bootstrap_address_splits_into_transport_and_identity() -> None:
    pid = peer_id()
    assert split_p2p_addr(f"/ip4/10.0.0.7/tcp/4001/p2p/{pid}") == ("/ip4/10.0.0.7/tcp/4001", pid)


def test_a_bootstrap_address_without_an_identity_is_refused() -> None:
    with pytest.raises(BootstrapAddressError, match="no /p2p/"):
        split_p2p_addr("/ip4/10.0.0.7/tcp/4001")


@pytest.mark.parametrize("addr", ["", "garbage", "/ip4/999.0.0.1/tcp/1/p2p/x", "/ip4/1.2.3.4/tcp/notaport",
                                  "/p2p/notbase58!!", "/ip4/1.2.3.4/tcp/1/p2p/" + "1" * 300])
def test_a_malformed_bootstrap_address_is_one_error_type(addr: str) -> None:
    with pytest.raises(BootstrapAddressError):
        split_p2p_addr(addr)


PARTS = ["ip4", "1.2.3.4", "tcp", "4001", "p2p", "ip6", "::1", "udp", "x", "", "12D3KooW"]


@settings(deadline=None, max_examples=300)
@given(st.text(max_size=80) | st.lists(st.sampled_from(PARTS), max_size=8).map("/".join))
def test_any_text_is_split_or_refused_never_anything_else(addr: str) -> None:
    try:
        transport, pid = split_p2p_addr(addr)
    except BootstrapAddressError:
        return
    assert pid and pid in addr and "/p2p/" not in transport


def test_address_helpers() -> None:
    assert _ip_of("/ip4/10.1.2.3/tcp/4001") == "10.1.2.3"
    assert _ip_of("/ip6/::1/tcp/4001") == "" and _ip_of("") == "" and _ip_of("/ip4") == ""
    assert _port_of("/ip4/10.1.2.3/tcp/4001") == 4001 and _port_of("/ip4/10.1.2.3/udp/53") == 53
    assert _port_of("/ip4/10.1.2.3/tcp/http") == 0 and _port_of("/ip4/10.1.2.3/quic/1") == 0
    assert _port_of("/ip4/10.1.2.3") == 0


# ------------------------------------------------------------------------- mDNS, stand-in zeroconf


class FakeZeroconf:
    """Records what MdnsAdvertiser registers; answers get_service_info from a table."""

    def __init__(self, interfaces: Any = None, ip_version: Any = None) -> None:
        self.interfaces = interfaces
        self.registered: list[ServiceInfo] = []
        self.answers: dict[str, ServiceInfo | None] = {}
        self.asked: list[str] = []
        self.closed = False

    def register_service(self, info: ServiceInfo) -> None:
        self.registered.append(info)

    def unregister_service(self, info: ServiceInfo) -> None:
        self.registered.remove(info)

    def get_service_info(self, service_type: str, name: str, timeout: int = 3000) -> ServiceInfo | None:
        self.asked.append(name)
        return self.answers.get(name)

    def close(self) -> None:
        self.closed = True


class FakeBrowser:
    def __init__(self, zc: Any, service_type: str, handlers: list[Any]) -> None:
        self.service_type, self.handlers = service_type, handlers


@pytest.fixture
def fake_zc(monkeypatch: pytest.MonkeyPatch) -> list[FakeZeroconf]:
    made: list[FakeZeroconf] = []

    def make(**kw: Any) -> FakeZeroconf:
        made.append(FakeZeroconf(**kw))
        return made[-1]

    monkeypatch.setattr(zeroconf, "Zeroconf", make)
    monkeypatch.setattr(zeroconf, "ServiceBrowser", FakeBrowser)
    return made


def advertiser(fake_zc: list[FakeZeroconf], me: str = "12D3KooWme", addrs: list[str] | None = None,
               interfaces: list[str] | None = None) -> tuple[MdnsAdvertiser, FakeZeroconf, list[Any]]:
    found: list[Any] = []
    adv = MdnsAdvertiser(me, addrs if addrs is not None else ["/ip4/10.0.0.5/tcp/4001/p2p/" + me],
                         lambda pid, a: found.append((pid, a)), interfaces=interfaces)
    return adv, fake_zc[-1], found


def test_registration_lists_the_routable_addresses_and_at_most_eight_multiaddrs(fake_zc) -> None:
    addrs = ["/ip4/0.0.0.0/tcp/4001", "/ip4/127.0.0.1/tcp/4001", "/ip4/10.0.0.5/tcp/4001",
             *(f"/ip4/10.0.1.{i}/tcp/4001" for i in range(8))]
    adv, zc, _ = advertiser(fake_zc, "12D3KooW" + "x" * 40, addrs)
    (info,) = zc.registered
    assert info.type == MDNS_SERVICE and info.name == f"{'x' * 20}.{MDNS_SERVICE}"
    assert info.port == 4001
    assert sorted(info.parsed_addresses()) == sorted(["10.0.0.5", *(f"10.0.1.{i}" for i in range(8))])
    props = {k.decode(): v.decode() for k, v in info.properties.items() if v is not None}
    assert props == {"id": "12D3KooW" + "x" * 40, **{f"a{i}": a for i, a in enumerate(addrs[:8])}}
    # the multicast group is joined on the listening interfaces; all of them when unspecified
    assert zc.interfaces == sorted({"10.0.0.5", *(f"10.0.1.{i}" for i in range(8))})
    adv.close()
    assert zc.registered == [] and zc.closed


def test_interfaces_given_or_all(fake_zc) -> None:
    assert advertiser(fake_zc, interfaces=["192.168.1.9"])[1].interfaces == ["192.168.1.9"]
    assert advertiser(fake_zc, addrs=["/ip4/0.0.0.0/tcp/1"])[1].interfaces is InterfaceChoice.All


def record(txt: bytes | dict[Any, Any], name: str = "peer") -> tuple[str, ServiceInfo]:
    full = f"{name}.{MDNS_SERVICE}"
    return full, ServiceInfo(MDNS_SERVICE, full, addresses=[socket.inet_aton("10.0.0.9")], port=4001,
                             properties=txt)


def txt(*entries: bytes) -> bytes:
    """A raw TXT record: length-prefixed strings, as they come off the wire."""
    return b"".join(bytes([len(e)]) + e for e in entries)


def see(adv: MdnsAdvertiser, zc: FakeZeroconf, name: str, change: Any = ServiceStateChange.Added) -> None:
    adv._on_change(zc, MDNS_SERVICE, name, change)


def test_a_peer_found_is_reported_with_its_addresses_in_key_order(fake_zc) -> None:
    adv, zc, found = advertiser(fake_zc)
    name, info = record({"id": "12D3KooWpeer", "a1": "/ip4/10.0.0.9/tcp/2", "a0": "/ip4/10.0.0.9/tcp/1"})
    zc.answers[name] = info
    see(adv, zc, name)
    see(adv, zc, name, ServiceStateChange.Updated)
    assert found == [("12D3KooWpeer", ["/ip4/10.0.0.9/tcp/1", "/ip4/10.0.0.9/tcp/2"])] * 2


def test_a_removed_or_unresolvable_service_reports_nothing(fake_zc) -> None:
    adv, zc, found = advertiser(fake_zc)
    name, info = record({"id": "12D3KooWpeer", "a0": "/ip4/10.0.0.9/tcp/1"})
    zc.answers[name] = info
    see(adv, zc, name, ServiceStateChange.Removed)
    assert zc.asked == []  # not even resolved
    see(adv, zc, "gone." + MDNS_SERVICE)  # resolution timed out
    assert found == []


@pytest.mark.parametrize("raw, why", [
    (txt(b"a0=/ip4/10.0.0.9/tcp/1"), "no id"),
    (txt(b"id=", b"a0=/ip4/10.0.0.9/tcp/1"), "empty id"),
    (txt(b"id", b"a0=/ip4/10.0.0.9/tcp/1"), "id without a value"),
    (txt(b"id=12D3KooWme", b"a0=/ip4/10.0.0.9/tcp/1"), "our own id"),
    (txt(b"id=" + b"Q" * 129, b"a0=/ip4/10.0.0.9/tcp/1"), "id longer than 128"),
])
def test_a_record_without_a_usable_foreign_id_is_ignored(fake_zc, raw: bytes, why: str) -> None:
    adv, zc, found = advertiser(fake_zc)
    name, info = record(raw)
    zc.answers[name] = info
    see(adv, zc, name)
    assert found == [], why


def test_hostile_addresses_are_bounded_and_undecodable_bytes_do_not_crash(fake_zc) -> None:
    adv, zc, found = advertiser(fake_zc)
    # a TXT string is at most 255 bytes, so no address off the wire exceeds 252 characters
    entries = [b"id=12D3KooW\xffpeer", b"a0=/ip4/10.0.0.9/tcp/1" + b"9" * 230]
    entries += [b"a%d=/ip4/10.0.0.%d/tcp/1" % (i, i) for i in range(1, 20)]
    entries += [b"x0=/ip4/10.9.9.9/tcp/1", b"a\xfe=/ip4/10.0.0.250/tcp/\xff"]
    name, info = record(txt(*entries))
    zc.answers[name] = info
    see(adv, zc, name)
    ((pid, addrs),) = found
    assert pid == "12D3KooW\ufffdpeer"
    assert len(addrs) == 8 and all(len(a) <= 256 for a in addrs)
    assert "/ip4/10.9.9.9/tcp/1" not in addrs  # only a<n> keys carry addresses
    assert "/ip4/10.0.0.9/tcp/1" + "9" * 230 in addrs


def test_a_record_whose_txt_is_not_key_value_is_ignored(fake_zc) -> None:
    adv, zc, found = advertiser(fake_zc)
    for raw in (b"", b"\x00", b"\x05abc", bytes(range(1, 40))):
        name, info = record(raw, name=f"junk{len(raw)}")
        zc.answers[name] = info
        see(adv, zc, name)
    assert found == []


# ------------------------------------------------------------------------- mDNS, for real on loopback


def test_two_advertisers_find_each_other_on_loopback_and_a_hostile_record_is_filtered() -> None:
    """Real zeroconf, multicast on the loopback interface only (no root, no namespaces).
    Peer ids are unique to this run, so other runs on the same machine do not interfere."""
    tag = uuid.uuid4().hex[:12]
    ids = {"a": f"12D3KooWa{tag}", "b": f"12D3KooWb{tag}", "evil": f"12D3KooWe{tag}"}
    found: dict[str, dict[str, list[str]]] = {"a": {}, "b": {}}
    lock = threading.Lock()

    def on_found(who: str) -> Any:
        def f(pid: str, addrs: list[str]) -> None:
            with lock:
                found[who][pid] = addrs
        return f

    evil_zc = Zeroconf(interfaces=["127.0.0.1"])
    evil_name = f"evil{tag}.{MDNS_SERVICE}"
    evil = ServiceInfo(MDNS_SERVICE, evil_name, addresses=[socket.inet_aton("10.77.0.1")], port=9,
                       properties=txt(b"id=" + ids["evil"].encode(), b"a0=" + b"7" * 250,
                                      *(b"a%d=/ip4/10.77.0.1/tcp/%d" % (i, i) for i in range(1, 12))))
    evil_zc.register_service(evil)
    advs: list[MdnsAdvertiser] = []
    try:
        for who, ip in (("a", "10.77.0.2"), ("b", "10.77.0.3")):
            advs.append(MdnsAdvertiser(ids[who], [f"/ip4/{ip}/tcp/4001/p2p/{ids[who]}"], on_found(who),
                                       interfaces=["127.0.0.1"]))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with lock:
                done = all({ids["evil"], ids[o]} <= found[w].keys() for w, o in (("a", "b"), ("b", "a")))
            if done:
                break
            time.sleep(0.05)
        with lock:
            assert found["a"].get(ids["b"]) == [f"/ip4/10.77.0.3/tcp/4001/p2p/{ids['b']}"], found
            assert found["b"].get(ids["a"]) == [f"/ip4/10.77.0.2/tcp/4001/p2p/{ids['a']}"], found
            for who in ("a", "b"):
                assert ids[who] not in found[who]  # never itself
                hostile = found[who][ids["evil"]]
                assert len(hostile) == 8 and all(len(a) <= 256 for a in hostile)
    finally:
        for adv in advs:
            adv.close()
        evil_zc.unregister_service(evil)
        evil_zc.close()


# --------------------------------------------------------------------------- bootstrap by name


def test_dns_name_of_a_bootstrap_address():
    from overlay.discovery import dns_name

    assert dns_name("/dns4/enclave-swarm-0.svc.ns.svc.cluster.local/tcp/4001") == (
        "enclave-swarm-0.svc.ns.svc.cluster.local", socket.AF_INET, "/tcp/4001")
    assert dns_name("/dns6/h/tcp/1") == ("h", socket.AF_INET6, "/tcp/1")
    assert dns_name("/dns/h/udp/1/quic-v1") == ("h", socket.AF_UNSPEC, "/udp/1/quic-v1")
    assert dns_name("/ip4/127.0.0.1/tcp/1") is None
    assert dns_name("/dnsaddr/h") is None  # TXT-record indirection: not a host name
    assert dns_name("/dns4//tcp/1") is None and dns_name("dns4/h") is None


@given(st.lists(st.sampled_from([(socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "10.0.0.7"),
                                  (socket.AF_INET6, "::1"), (socket.AF_INET6, "fd00::2"),
                                  (socket.AF_INET6, "fd00::3"), (socket.AF_UNIX, "/x")]), max_size=12))
def test_resolved_addrs_are_ip_multiaddrs_without_duplicates(found):
    from overlay.discovery import MAX_RESOLVED_ADDRS, resolved_addrs

    out = resolved_addrs(found, "/tcp/4001")
    assert len(out) == len(set(out)) <= MAX_RESOLVED_ADDRS
    for a in out:
        multiaddr.Multiaddr(a)  # parses
        assert a.startswith(("/ip4/", "/ip6/")) and a.endswith("/tcp/4001")
    wanted = [(f, ip) for f, ip in found if f != socket.AF_UNIX]
    assert len(out) == min(MAX_RESOLVED_ADDRS, len({(f, ip) for f, ip in wanted}))

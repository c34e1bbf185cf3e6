"""The capability record: built from config + detection, signed, bounded, fuzzed."""

from __future__ import annotations

import contextlib
import dataclasses

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings

from consensus.scheduler import MAX_PRICE, Measurements, Offer
from node import config as node_config
from node.config import ConfigError, TasksConfig
from node.tasks import capability
from node.tasks.capability import (
    MAX_ACCELERATORS,
    MAX_CORES,
    MAX_LINKS,
    MAX_MEMORY_MIB,
    CapabilityRecord,
    Detected,
    Link,
    build_capability,
    capability_problems,
    choose_links,
    detect,
    links_moved,
    measurements_of,
    sign_capability,
    to_offer,
    verify_capability,
)
from overlay.errors import RemoteProtocolError
from overlay.records import PAYLOAD_MAX_BYTES
from overlay.wire import decode, encode
from tests.strategies import cbor_values

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def record(**kw: object) -> CapabilityRecord:
    cfg = TasksConfig(accelerators=("gpu", "fpga", "gpu"), region="eu-west", provider="ovh",
                          price_core_s=1500, price_gib=20_000)
    r = build_capability(cfg, Detected(8, 16384), node_id="12D3KooWnode", tee_kind="sev-snp",
                         seq=1000, agent_version="0.1.0")
    return sign_capability(KEY, dataclasses.replace(r, **kw))  # type: ignore[arg-type]


def test_build_from_config_and_detection() -> None:
    r = record()
    assert (r.cores, r.memory_mib) == (7, 16384 - 512)  # detected minus the reserve
    assert r.accelerators == ("fpga", "gpu") and (r.region, r.provider) == ("eu-west", "ovh")
    sized = build_capability(TasksConfig(cores=64, memory_mib=100), Detected(4, 8192), node_id="n",
                             tee_kind="tdx", seq=1, agent_version="1")
    assert (sized.cores, sized.memory_mib) == (4, 100)  # never more than the host has
    tiny = build_capability(TasksConfig(), Detected(1, 256), node_id="n", tee_kind="sim", seq=1,
                            agent_version="1")
    assert (tiny.cores, tiny.memory_mib) == (1, 1)
    d = detect()
    assert d.cores >= 1 and d.memory_mib >= 1


def test_round_trip_signature_and_offer() -> None:
    r = record()
    assert capability_problems(r) == []
    assert decode(encode(r), CapabilityRecord) == r
    assert verify_capability(r)
    assert not verify_capability(dataclasses.replace(r, price_core_s=1))  # tampered after signing
    other = sign_capability(Ed25519PrivateKey.from_private_bytes(bytes(32)), r)
    assert verify_capability(other) and other.issuer != r.issuer
    assert not verify_capability(dataclasses.replace(other, issuer=r.issuer))
    assert to_offer(r) == Offer("12D3KooWnode", 7, 15872, ("fpga", "gpu"), 1500, 20_000)


@pytest.mark.parametrize(("change", "reason"), [
    ({"cores": 0}, "bounds"),
    ({"memory_mib": 2**40}, "bounds"),
    ({"price_core_s": -1}, "bounds"),
    ({"price_gib": 2**41}, "bounds"),
    ({"tee_kind": "quantum"}, "invalid"),
    ({"region": "eu west"}, "invalid"),
    ({"accelerators": ("gpu", "fpga")}, "invalid"),
    ({"accelerators": ("a",) * 17}, "bounds"),
    ({"node_id": ""}, "invalid"),
    ({"agent_version": ""}, "invalid"),
    ({"signature": b"short"}, "bounds"),
    ({"links": (Link("b", 1, None), Link("a", 1, None))}, "invalid"),
    ({"links": (Link("a", 1, None), Link("a", 2, None))}, "invalid"),
    ({"links": (Link("12D3KooWnode", 1, None),)}, "invalid"),
    ({"links": (Link("a", None, None),)}, "invalid"),
    ({"links": (Link("a", -1, None),)}, "bounds"),
    ({"links": (Link("a", 1, 0),)}, "bounds"),
    ({"links": tuple(Link(f"p{i:02d}", 1, None) for i in range(MAX_LINKS + 1))}, "bounds"),
])
def test_out_of_bounds_records_are_refused_on_decode(change: dict[str, object], reason: str) -> None:
    body = {f.name: getattr(record(), f.name) for f in dataclasses.fields(CapabilityRecord)}
    body.update({k: list(v) if isinstance(v, tuple) else v for k, v in change.items()})
    body["accelerators"] = list(body["accelerators"])  # type: ignore[call-overload]
    body["links"] = [_link_body(lk) for lk in body["links"]]  # type: ignore[attr-defined]
    with pytest.raises(RemoteProtocolError) as exc:
        decode(cbor2.dumps(["capability-record", 2, body]), CapabilityRecord)
    assert exc.value.reason == reason


def _link_body(lk: Link) -> object:
    return {"peer": lk.peer, "rtt_ms": lk.rtt_ms, "kib_s": lk.kib_s}


def _pid(i: int) -> str:
    return f"12D3KooW{i:03d}" + "x" * 41  # a peer id's length


def test_links_take_measured_peers_rates_first_then_the_nearest() -> None:
    measured = [(_pid(i), 10.0 + i, None) for i in range(40)]
    measured += [(_pid(100), 900.4, 52_000.6), ("12D3KooWnode", 0.1, 1.0), (_pid(101), None, None),
                 (_pid(102), 99_999.0, 2.0**50)]
    links = choose_links("12D3KooWnode", measured)
    assert len(links) == MAX_LINKS
    assert [lk.peer for lk in links] == sorted(lk.peer for lk in links)  # canonical order
    got = {lk.peer: (lk.rtt_ms, lk.kib_s) for lk in links}
    assert got[_pid(100)] == (900, 52_001)  # rounded
    assert got[_pid(102)] == (capability.MAX_LINK_RTT_MS, capability.MAX_LINK_KIB_S)  # clamped
    # the rest are the nearest by RTT; never the node itself, never a peer with no figure
    assert set(got) == {_pid(100), _pid(102)} | {_pid(i) for i in range(MAX_LINKS - 2)}
    assert choose_links("n", [("n", 1.0, 1.0), ("", 1.0, None)]) == ()
    r = record(links=links)
    assert capability_problems(r) == [] and decode(encode(r), CapabilityRecord) == r


def test_the_largest_record_fits_a_gossip_payload() -> None:
    biggest = record(node_id=_pid(999), seq=2**63 - 1, cores=MAX_CORES, memory_mib=MAX_MEMORY_MIB,
                     accelerators=tuple(f"a{i:02d}" + "x" * 61 for i in range(MAX_ACCELERATORS)),
                     region="r" * 64, provider="p" * 64, price_core_s=MAX_PRICE,
                     price_gib=MAX_PRICE, agent_version="v" * 32,
                     links=tuple(Link(_pid(i), capability.MAX_LINK_RTT_MS, capability.MAX_LINK_KIB_S)
                                 for i in range(MAX_LINKS)))
    assert capability_problems(biggest) == []
    assert len(encode(biggest)) <= PAYLOAD_MAX_BYTES


def test_links_move_on_a_new_peer_or_a_doubled_figure_not_on_noise() -> None:
    base = (Link("a", 1, None), Link("b", 40, 5000))
    assert not links_moved(base, base)
    assert not links_moved(base, (Link("a", 4, None), Link("b", 70, 9000)))  # within 2x / floors
    assert links_moved(base, (Link("a", 1, None),))                           # a peer went
    assert links_moved(base, (*base, Link("c", 1, None)))                     # a peer came
    assert links_moved(base, (Link("a", 1, 1), Link("b", 40, 5000)))         # a rate appeared
    assert links_moved(base, (Link("a", 10, None), Link("b", 40, 5000)))      # 1 -> 10 ms
    assert links_moved(base, (Link("a", 1, None), Link("b", 20, 5000)))       # halved
    assert links_moved(base, (Link("a", 1, None), Link("b", 40, 10_000)))     # doubled


def test_measurements_are_each_publishers_links() -> None:
    a = record(node_id="a", links=(Link("b", 3, None), Link("c", 7, 800)))
    b = record(node_id="b", links=(Link("a", 4, 2000),))
    m = measurements_of([a, b])
    assert m.rtt_ms == {"a": {"b": 3, "c": 7}, "b": {"a": 4}}
    assert m.bandwidth_kib_s == {"a": {"c": 800}, "b": {"a": 2000}}
    assert measurements_of([]) == Measurements()


def test_config_validation() -> None:
    TasksConfig().validate()
    for bad in (TasksConfig(cores=-1), TasksConfig(price_gib=2**41), TasksConfig(region="a b"),
                TasksConfig(accelerators=("x",) * 17)):
        with pytest.raises(ConfigError, match=r"tasks\."):
            bad.validate()


def test_the_config_bounds_are_the_wire_bounds() -> None:
    assert node_config.TASK_MAX_PRICE == MAX_PRICE
    assert node_config.TASK_MAX_CORES == capability.MAX_CORES
    assert node_config.TASK_MAX_MEMORY_MIB == capability.MAX_MEMORY_MIB
    assert node_config.TASK_MAX_ACCELERATORS == capability.MAX_ACCELERATORS


def test_the_tasks_section_round_trips_through_the_config_file() -> None:
    cfg = node_config.NodeConfig.local_test()
    cfg = dataclasses.replace(cfg, tasks=TasksConfig(cores=2, accelerators=("gpu",), region="eu",
                                                     price_core_s=5))
    text = cfg.to_toml()
    assert "[tasks]" in text and "# Prices in micro-units" in text
    assert node_config.config_from_toml(text) == cfg
    with pytest.raises(ConfigError, match=r"tasks\.cores"):
        node_config.config_from_toml(text.replace("cores = 2", "cores = -2"))


@settings(max_examples=300, deadline=None)
@given(cbor_values)
def test_fuzzed_bodies_are_only_ever_refused_cleanly(body: object) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode(cbor2.dumps(["capability-record", 2, body]), CapabilityRecord)

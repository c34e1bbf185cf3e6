"""The capability record: built from config + detection, signed, bounded, fuzzed."""

from __future__ import annotations

import contextlib
import dataclasses

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings

from consensus.scheduler import MAX_PRICE, Offer
from node import config as node_config
from node.config import ConfigError, TasksConfig
from node.tasks import capability
from node.tasks.capability import (
    CapabilityRecord,
    Detected,
    build_capability,
    capability_problems,
    detect,
    sign_capability,
    to_offer,
    verify_capability,
)
from overlay.errors import RemoteProtocolError
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
])
def test_out_of_bounds_records_are_refused_on_decode(change: dict[str, object], reason: str) -> None:
    body = {f.name: getattr(record(), f.name) for f in dataclasses.fields(CapabilityRecord)}
    body.update({k: list(v) if isinstance(v, tuple) else v for k, v in change.items()})
    body["accelerators"] = list(body["accelerators"])  # type: ignore[call-overload]
    with pytest.raises(RemoteProtocolError) as exc:
        decode(cbor2.dumps(["capability-record", 1, body]), CapabilityRecord)
    assert exc.value.reason == reason


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
        decode(cbor2.dumps(["capability-record", 1, body]), CapabilityRecord)

"""The capability record: built from config + detection, signed, bounded, fuzzed."""

from __future__ import annotations

import contextlib
import dataclasses

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings

from consensus.scheduler import Offer
from node.tasks.capability import (
    CapabilityRecord,
    Detected,
    TaskOfferConfig,
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
    cfg = TaskOfferConfig(accelerators=("gpu", "fpga", "gpu"), region="eu-west", provider="ovh",
                          price_core_s=1500, price_gib=20_000)
    r = build_capability(cfg, Detected(8, 16384), node_id="12D3KooWnode", tee_kind="sev-snp",
                         seq=1000, agent_version="0.1.0")
    return sign_capability(KEY, dataclasses.replace(r, **kw))  # type: ignore[arg-type]


def test_build_from_config_and_detection() -> None:
    r = record()
    assert (r.cores, r.memory_mib) == (7, 16384 - 512)  # detected minus the reserve
    assert r.accelerators == ("fpga", "gpu") and (r.region, r.provider) == ("eu-west", "ovh")
    sized = build_capability(TaskOfferConfig(cores=64, memory_mib=100), Detected(4, 8192), node_id="n",
                             tee_kind="tdx", seq=1, agent_version="1")
    assert (sized.cores, sized.memory_mib) == (4, 100)  # never more than the host has
    tiny = build_capability(TaskOfferConfig(), Detected(1, 256), node_id="n", tee_kind="sim", seq=1,
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
    TaskOfferConfig().validate()
    for bad in (TaskOfferConfig(cores=-1), TaskOfferConfig(price_gib=2**41), TaskOfferConfig(region="a b"),
                TaskOfferConfig(accelerators=("x",) * 17)):
        with pytest.raises(ValueError, match=r"tasks\."):
            bad.validate()


@settings(max_examples=300, deadline=None)
@given(cbor_values)
def test_fuzzed_bodies_are_only_ever_refused_cleanly(body: object) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode(cbor2.dumps(["capability-record", 1, body]), CapabilityRecord)

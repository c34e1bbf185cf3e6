"""Signed integrity findings (node/tasks/findings.py): the record's signature and bounds, every
reason a received finding is refused against a real committed state, and a fuzz of its
decoder (garbage gives RemoteProtocolError, never anything else)."""

from __future__ import annotations

import contextlib
import dataclasses

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus import integrity as I
from consensus import tasks as T
from consensus.state import AnnounceManager, Join, SetCouncil, SwarmState, apply
from node.tasks.findings import AHEAD, check_finding, evidence_bytes, sign_finding, verify_finding
from overlay.errors import LocalProtocolError, RemoteProtocolError
from overlay.host import peer_id_of
from overlay.messages_gossip import FindingRecord
from overlay.wire import decode, encode, spec_of
from tests.consensus.test_tasks import H2, H, ok, submit
from tests.strategies import cbor_values

KEYS = [Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32) for i in range(6)]
IDS = [peer_id_of(k) for k in KEYS]
MANAGER, LIAR, HONEST, STRANGER = 0, 1, 2, 5


def committed_state() -> SwarmState:
    """IDS[0] manages; a job ran on IDS[1..3] (quorum 2), IDS[1] outvoted: finding 1."""
    s = SwarmState()
    for i, pid in enumerate(IDS):
        s, r = apply(s, Join(pid, f"p{i}", "eu", "sim", 1000 if i == MANAGER else 900, True))
        assert r.ok
    s, _ = apply(s, SetCouncil(1))
    s, r = apply(s, AnnounceManager(3, s.council[0]))
    assert r.ok and s.manager_id == IDS[MANAGER]
    s = ok(s, submit("j", n=1, r=3, owner=IDS[4], quorum=2))
    s = ok(s, T.AssignFragments("j", 7, tuple(T.Assignment(0, i, IDS[i + 1]) for i in range(3))))
    for r, out in enumerate((H2, H, H)):
        s = ok(s, T.FragmentResult("j", 0, r, IDS[r + 1], True, out, 3, 100, 4096, 5))
    return ok(s, T.JobDone("j", H, 3))


def test_a_committed_finding_signed_by_its_manager_is_adopted() -> None:
    s = committed_state()
    f = I.finding(s, 1)
    assert f is not None and f["node"] == IDS[LIAR] and f["by"] == IDS[MANAGER]
    rec = sign_finding(KEYS[MANAGER], f, 1000.0)
    assert verify_finding(rec) and decode(encode(rec), FindingRecord) == rec
    assert check_finding(rec, IDS[MANAGER], IDS[LIAR], s) == ("", "")
    assert cbor2.loads(rec.evidence) == {"out": H2, "agreed": H}


def test_every_refusal_reason() -> None:
    s = committed_state()
    f = I.finding(s, 1)
    assert f is not None
    good = sign_finding(KEYS[MANAGER], f, 1000.0)
    # the signature no longer holds once a field changes (a forgery by anyone but the manager)
    assert check_finding(dataclasses.replace(good, subject=IDS[HONEST]), IDS[MANAGER], IDS[HONEST],
                         s)[0] == "bad-signature"
    # a genuine record relayed under another issuer's gossip record, or about another subject
    assert check_finding(good, IDS[HONEST], IDS[LIAR], s)[0] == "issuer-mismatch"
    assert check_finding(good, IDS[MANAGER], IDS[HONEST], s)[0] == "issuer-mismatch"
    # a node that ran no replica of the fragment signs the committed finding itself
    by_stranger = sign_finding(KEYS[STRANGER], f, 1000.0)
    assert check_finding(by_stranger, IDS[STRANGER], IDS[LIAR], s)[0] == "not-a-witness"
    # a node that ran a replica beside it, but did not commit it
    by_witness = sign_finding(KEYS[HONEST], f, 1000.0)
    assert check_finding(by_witness, IDS[HONEST], IDS[LIAR], s)[0] == "not-the-committer"
    # the manager itself signing what it did not commit: another subject, kind or evidence
    for change in ({"node": IDS[HONEST]}, {"kind": I.TRAP}, {"ev": {"out": H, "agreed": H2}},
                   {"rep": 2}, {"term": 2}):
        lie = sign_finding(KEYS[MANAGER], {**f, **change}, 1000.0)
        assert check_finding(lie, IDS[MANAGER], lie.subject, s)[0] == "forged", change
    # an id ahead of our state waits for it (our view may lag the manager's)
    ahead = sign_finding(KEYS[MANAGER], {**f, "id": 2}, 1000.0)
    assert check_finding(ahead, IDS[MANAGER], IDS[LIAR], s)[0] == AHEAD


def test_a_finding_dropped_from_the_log_is_not_committed_any_more() -> None:
    s = committed_state()
    f = dict(I.finding(s, 1) or {})
    sec = dict(s.ext[I.SECTION])
    sec["log"] = []  # as after MAX_LOG newer findings
    s = dataclasses.replace(s, ext={**s.ext, I.SECTION: sec})
    rec = sign_finding(KEYS[MANAGER], f, 1000.0)
    assert check_finding(rec, IDS[MANAGER], IDS[LIAR], s)[0] == "not-committed"


def test_the_largest_finding_fits_its_bound() -> None:
    f = {"id": 2**62, "node": "x" * 128, "kind": I.BAD_SIGNATURE, "job": "j" * 256,
         "frag": 1 << 20, "rep": 1 << 20, "term": 2**62,
         "ev": {"err": "e" * I.MAX_ERR, "digest": H, "sig": b"s" * 64, "key": "k" * 80}}
    rec = sign_finding(KEYS[0], f, 1e12)
    assert len(encode(rec)) <= spec_of(FindingRecord)[2]
    assert len(evidence_bytes(f["ev"])) <= 1024
    with pytest.raises(LocalProtocolError):
        encode(dataclasses.replace(rec, kind="lies"))


records = st.builds(
    FindingRecord, st.binary(min_size=32, max_size=32), st.text(min_size=1, max_size=60),
    st.integers(1, 2**40), st.sampled_from(I.KINDS), st.text(min_size=1, max_size=40),
    st.integers(0, 100), st.integers(0, 8), st.integers(0, 2**40), st.binary(max_size=200),
    st.floats(0, 1e10, allow_nan=False), st.binary(min_size=64, max_size=64))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(records)
def test_valid_records_round_trip(rec: FindingRecord) -> None:
    assert decode(encode(rec), FindingRecord) == rec


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_garbage_gives_remote_protocol_error_only(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode(data, FindingRecord)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(records, st.data())
def test_mutated_records_give_remote_protocol_error_only(rec: FindingRecord, data: st.DataObject) -> None:
    raw = bytearray(encode(rec))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    with contextlib.suppress(RemoteProtocolError):
        got = decode(bytes(raw), FindingRecord)
        assert got.kind in I.KINDS  # whatever decodes passed the schema


@settings(max_examples=300)
@given(cbor_values)
def test_wrong_bodies_in_a_valid_envelope_give_remote_protocol_error_only(body: object) -> None:
    name, version, _ = spec_of(FindingRecord)
    with contextlib.suppress(RemoteProtocolError):
        decode(cbor2.dumps([name, version, body]), FindingRecord)

"""Pure parts of the workload engine: limits, capability checks, the signed digest payload, and
the committed example modules against their hashes."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.workload import RESULT_DOMAIN, ErrorKind, Grants, Limits, examples, result_digest_payload
from node.workload.limits import WASI_MODULE, Capability, capability_of, refused_imports

H = [hashlib.sha256(bytes([i])).digest() for i in range(3)]


def test_payload_is_domain_tagged_canonical_cbor() -> None:
    p = result_digest_payload("job-1", 7, H[0], H[1], H[2])
    assert p.startswith(RESULT_DOMAIN)
    assert cbor2.loads(p[len(RESULT_DOMAIN):]) == ["job-1", 7, H[0], H[1], H[2]]
    assert p == result_digest_payload("job-1", 7, H[0], H[1], H[2])


@given(st.text(min_size=1, max_size=20), st.integers(0, 2**32), st.permutations(H))
def test_payload_binds_every_field(job: str, index: int, hashes: list[bytes]) -> None:
    base = result_digest_payload(job, index, *hashes)
    assert result_digest_payload(job + "x", index, *hashes) != base
    assert result_digest_payload(job, index + 1, *hashes) != base
    swapped = [hashes[1], hashes[0], hashes[2]]
    assert result_digest_payload(job, index, *swapped) != base


@pytest.mark.parametrize("args", [
    ("j", 0, b"short", H[1], H[2]),
    ("j", -1, H[0], H[1], H[2]),
    ("", 0, H[0], H[1], H[2]),
])
def test_payload_rejects_bad_fields(args: tuple) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError):
        result_digest_payload(*args)


@pytest.mark.parametrize(("name", "cap"), [
    ("clock_time_get", Capability.CLOCK), ("clock_res_get", Capability.CLOCK),
    ("poll_oneoff", Capability.CLOCK), ("random_get", Capability.RANDOM),
    ("path_open", Capability.FILESYSTEM), ("path_unlink_file", Capability.FILESYSTEM),
    ("sock_accept", Capability.NETWORK), ("fd_write", None), ("fd_read", None),
    ("proc_exit", None), ("args_get", None),
])
def test_capability_of(name: str, cap: Capability | None) -> None:
    assert capability_of(name) == cap


def test_refused_imports_follow_grants() -> None:
    clock = [(WASI_MODULE, "fd_write"), (WASI_MODULE, "clock_time_get")]
    assert refused_imports(clock, Grants())[0] == ErrorKind.DENIED_CAPABILITY
    assert refused_imports(clock, Grants(clock=True)) == (None, "")
    rnd = [(WASI_MODULE, "random_get")]
    assert refused_imports(rnd, Grants(clock=True))[0] == ErrorKind.DENIED_CAPABILITY
    assert refused_imports(rnd, Grants(random=True)) == (None, "")
    # Filesystem and network have no grant at all.
    assert refused_imports([(WASI_MODULE, "path_open")], Grants(True, True))[0] == ErrorKind.DENIED_CAPABILITY
    assert refused_imports([(WASI_MODULE, "sock_send")], Grants(True, True))[0] == ErrorKind.DENIED_CAPABILITY
    assert refused_imports([("env", "f")], Grants(True, True))[0] == ErrorKind.BAD_MODULE


@pytest.mark.parametrize("bad", [
    Limits(fuel=0), Limits(memory_bytes=1000), Limits(wall_time_s=0), Limits(wall_time_s=1e9),
    Limits(max_output_bytes=-1), Limits(max_stderr_bytes=10**9),
])
def test_limits_validate(bad: Limits) -> None:
    with pytest.raises(ValueError):
        bad.validate()
    Limits().validate()


def test_committed_modules_match_their_hashes_and_sources() -> None:
    assert examples.check() == []
    names = set(examples.hashes())
    assert {"wordcount", "sum", "forever", "hog", "flood"} <= names
    for name in names:
        assert (examples.HERE / f"{name}.c").exists() or (examples.HERE / f"{name}.wat").exists(), name

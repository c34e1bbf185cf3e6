"""Fixtures for the key backends: every token lives in this test's own SoftHSM2 store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.keys.files import FileKeys
from node.keys.pkcs11 import Pkcs11Keys
from node.keys.softhsm import SoftHsm, softhsm_missing

BACKENDS = ["file", "pkcs11"]


@pytest.fixture
def hsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsm:
    why = softhsm_missing()
    if why:
        pytest.skip(why)  # a failure on the project's machine (tests/conftest.py)
    h = SoftHsm(tmp_path / "softhsm")
    monkeypatch.setenv("SOFTHSM2_CONF", str(h.conf))
    return h


@pytest.fixture
def opened() -> Iterator[list[Pkcs11Keys]]:
    """Providers a test opened; closed after it (a module is shared by the process)."""
    keys: list[Pkcs11Keys] = []
    yield keys
    for k in keys:
        k.close()


def make_provider(backend: str, request: pytest.FixtureRequest, label: str = "node") -> FileKeys | Pkcs11Keys:
    if backend == "file":
        return FileKeys(Ed25519PrivateKey.generate())
    hsm: SoftHsm = request.getfixturevalue("hsm")
    opened: list[Pkcs11Keys] = request.getfixturevalue("opened")
    p = Pkcs11Keys(hsm.made.get(label) or hsm.init_token(label), create=True)
    opened.append(p)
    return p


@pytest.fixture(params=BACKENDS)
def provider(request: pytest.FixtureRequest) -> FileKeys | Pkcs11Keys:
    return make_provider(request.param, request)

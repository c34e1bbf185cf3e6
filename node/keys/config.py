"""``keys.toml``: where a node's keys live, and key references given as PKCS#11 URIs.

A data dir without ``keys.toml`` keeps its keys in files (``identity.key``): today's
behaviour and the default. ``enclave-swarm init --keys pkcs11`` writes::

    backend = "pkcs11"

    [pkcs11]
    module = "/usr/lib/softhsm/libsofthsm2.so"
    token = "node-a"
    pin_file = "/etc/enclave-swarm/pin"    # or "" and the PIN in $ENCLAVE_SWARM_PKCS11_PIN
    pin_env = "ENCLAVE_SWARM_PKCS11_PIN"
    identity_label = "enclave-swarm identity"
    sealing_label = "enclave-swarm sealing"

The file never holds the PIN. Like config.toml, an unknown key is an error, never ignored,
and the file is size-bounded.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path
from typing import Any

from node.keys.base import KeyProviderError
from node.keys.pkcs11 import IDENTITY_LABEL, PIN_ENV, TokenConfig
from node.keys.uri import Pkcs11Uri, UriError, parse_uri

KEYS_FILE = "keys.toml"
MAX_KEYS_FILE_BYTES = 64 * 1024
BACKENDS = ("file", "pkcs11")
DEFAULT_SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def _q(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def keys_toml(cfg: TokenConfig) -> str:
    """The text of ``keys.toml`` for a token backend (every field with its comment)."""
    return "\n".join([
        "# Where this node's private keys live (docs/keys.md). Written by `enclave-swarm init`.",
        'backend = "pkcs11"',
        "",
        "[pkcs11]",
        "# The vendor's PKCS#11 module.",
        f"module = {_q(cfg.module)}",
        "# Label of the token holding the keys.",
        f"token = {_q(cfg.token)}",
        "# File whose first line is the user PIN; empty: the PIN is in the environment variable below.",
        f"pin_file = {_q(cfg.pin_file)}",
        f"pin_env = {_q(cfg.pin_env)}",
        "# Labels of the node's Ed25519 identity key pair and AES-256 sealing key in the token.",
        f"identity_label = {_q(cfg.identity_label)}",
        f"sealing_label = {_q(cfg.sealing_label)}",
        "",
    ])


def load_keys_file(path: Path) -> TokenConfig | None:
    """The token settings of ``path``, or None when the file is absent (file backend).

    Raises:
        KeyProviderError: unreadable, too big, not TOML, an unknown key or a wrong type.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEYS_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeyProviderError(f"{path}: cannot read ({exc.strerror})") from None
    if len(data) > MAX_KEYS_FILE_BYTES:
        raise KeyProviderError(f"{path}: larger than {MAX_KEYS_FILE_BYTES} bytes")
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise KeyProviderError(f"{path}: not valid TOML ({exc})") from None
    unknown = set(doc) - {"backend", "pkcs11"}
    if unknown:
        raise KeyProviderError(f"{path}: unknown key {sorted(unknown)[0]!r}")
    backend = doc.get("backend", "file")
    if backend not in BACKENDS:
        raise KeyProviderError(f"{path}: backend must be one of {', '.join(BACKENDS)}")
    if backend == "file":
        return None
    sec = doc.get("pkcs11")
    if not isinstance(sec, dict):
        raise KeyProviderError(f"{path}: backend pkcs11 needs a [pkcs11] section")
    fields = {f.name for f in dataclasses.fields(TokenConfig)}
    bad = set(sec) - fields
    if bad:
        raise KeyProviderError(f"{path}: unknown key pkcs11.{sorted(bad)[0]}")
    for k, v in sec.items():
        if not isinstance(v, str) or len(v) > 4096:
            raise KeyProviderError(f"{path}: pkcs11.{k} must be a string")
    for k in ("module", "token"):
        if not sec.get(k):
            raise KeyProviderError(f"{path}: pkcs11.{k} is required")
    return TokenConfig(**sec)


def token_config_from_uri(text: str, *, module: str | None = None) -> TokenConfig:
    """A :class:`TokenConfig` for the key a ``pkcs11:`` URI names (RFC 7512).

    ``module-path`` in the URI, else ``module``, else $ENCLAVE_SWARM_PKCS11_MODULE, else the
    SoftHSM2 path; ``pin-source`` as ``file:PATH``/``PATH`` or ``env:NAME``, else the PIN is
    in $ENCLAVE_SWARM_PKCS11_PIN.

    Raises:
        KeyProviderError: the URI does not parse or lacks ``token``.
    """
    try:
        uri: Pkcs11Uri = parse_uri(text)
    except UriError as exc:
        raise KeyProviderError(str(exc)) from None
    if not uri.token:
        raise KeyProviderError("pkcs11 URI: token=... is required")
    mod = uri.module_path or module or os.environ.get("ENCLAVE_SWARM_PKCS11_MODULE") or DEFAULT_SOFTHSM_MODULE
    pin_file, pin_env = "", PIN_ENV
    src = uri.pin_source or ""
    if src.startswith("env:"):
        pin_env = src[4:]
    elif src:
        pin_file = src[5:] if src.startswith("file:") else src
    return TokenConfig(module=mod, token=uri.token, pin_file=pin_file, pin_env=pin_env,
                       identity_label=uri.object or IDENTITY_LABEL)


def describe(cfg: TokenConfig | None) -> dict[str, Any]:
    if cfg is None:
        return {"backend": "file"}
    return {"backend": "pkcs11", "module": cfg.module, "token": cfg.token}

"""PKCS#11 URIs (RFC 7512), the part of them a key reference needs.

``pkcs11:token=node-a;object=enclave-swarm%20identity;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/es/pin``

Rules (pure code, no I/O):

- Path attributes are ``;``-separated, query attributes ``&``-separated, values
  percent-encoded. Known path attributes: ``token``, ``object``, ``type``, ``id``,
  ``manufacturer``, ``model``, ``serial``, ``slot-id``; known query attributes:
  ``module-path``, ``pin-source``. An unknown or repeated attribute is refused, never
  ignored: a typo must not select another key.
- ``pin-value`` is refused: a PIN in a URI ends up in shell history, process listings and
  logs. ``pin-source`` may name a file (``file:/path`` or a bare path) or, our extension,
  an environment variable (``env:NAME``).
- Bounded: a URI longer than :data:`MAX_URI_CHARS` is refused.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse

MAX_URI_CHARS = 4096
_PATH_ATTRS = ("token", "object", "type", "id", "manufacturer", "model", "serial", "slot-id")
_QUERY_ATTRS = ("module-path", "pin-source")
_TYPES = ("private", "public", "secret-key", "cert", "data")
# RFC 7512 pchar minus the separators, after percent-decoding is applied per attribute.
_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


class UriError(ValueError):
    """The string is not a PKCS#11 URI we accept (the message says why)."""


@dataclasses.dataclass(frozen=True)
class Pkcs11Uri:
    token: str | None = None
    object: str | None = None
    type: str | None = None
    id: bytes | None = None
    manufacturer: str | None = None
    model: str | None = None
    serial: str | None = None
    slot_id: int | None = None
    module_path: str | None = None
    pin_source: str | None = None

    def format(self) -> str:
        """The canonical URI text (round-trips through :func:`parse_uri`)."""
        def enc(v: str) -> str:
            return urllib.parse.quote(v, safe="")

        path = []
        for name in _PATH_ATTRS:
            v = getattr(self, name.replace("-", "_"))
            if v is None:
                continue
            if name == "id":
                path.append("id=" + "".join(f"%{b:02x}" for b in v))
            else:
                path.append(f"{name}={enc(str(v))}")
        query = [f"{n}={enc(getattr(self, n.replace('-', '_')))}" for n in _QUERY_ATTRS
                 if getattr(self, n.replace("-", "_")) is not None]
        return "pkcs11:" + ";".join(path) + ("?" + "&".join(query) if query else "")


def is_pkcs11_uri(text: str) -> bool:
    return text.startswith("pkcs11:")


def _pairs(part: str, sep: str, allowed: tuple[str, ...], where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    if not part:
        return out
    for item in part.split(sep):
        name, eq, value = item.partition("=")
        if not eq or not _NAME.match(name):
            raise UriError(f"pkcs11 URI: malformed {where} attribute {item[:40]!r}")
        if name == "pin-value":
            raise UriError("pkcs11 URI: pin-value is refused (a PIN must not be on a command line); "
                           "use pin-source=file:PATH or pin-source=env:NAME")
        if name not in allowed:
            raise UriError(f"pkcs11 URI: unknown {where} attribute {name!r}")
        if name in out:
            raise UriError(f"pkcs11 URI: attribute {name!r} given twice")
        out[name] = value
    return out


def parse_uri(text: str) -> Pkcs11Uri:
    """Parse a ``pkcs11:`` URI.

    Raises:
        UriError: not a PKCS#11 URI, too long, an unknown/repeated/malformed attribute,
            ``pin-value``, a bad ``type``, ``id`` or ``slot-id``.
    """
    if len(text) > MAX_URI_CHARS:
        raise UriError(f"pkcs11 URI longer than {MAX_URI_CHARS} characters")
    if not is_pkcs11_uri(text):
        raise UriError("not a pkcs11: URI")
    body = text[len("pkcs11:"):]
    path, _q, query = body.partition("?")
    p = _pairs(path, ";", _PATH_ATTRS, "path")
    q = _pairs(query, "&", _QUERY_ATTRS, "query")
    try:
        dec = {k: urllib.parse.unquote(v, errors="strict") for k, v in (p | q).items() if k != "id"}
        ident = urllib.parse.unquote_to_bytes(p["id"]) if "id" in p else None
    except UnicodeDecodeError:
        raise UriError("pkcs11 URI: an attribute is not valid percent-encoded UTF-8") from None
    if "type" in dec and dec["type"] not in _TYPES:
        raise UriError(f"pkcs11 URI: type must be one of {', '.join(_TYPES)}")
    slot: int | None = None
    if "slot-id" in dec:
        if not dec["slot-id"].isdigit() or len(dec["slot-id"]) > 20:
            raise UriError("pkcs11 URI: slot-id must be a decimal number")
        slot = int(dec["slot-id"])
    return Pkcs11Uri(
        token=dec.get("token"), object=dec.get("object"), type=dec.get("type"), id=ident,
        manufacturer=dec.get("manufacturer"), model=dec.get("model"), serial=dec.get("serial"),
        slot_id=slot, module_path=dec.get("module-path"), pin_source=dec.get("pin-source"),
    )

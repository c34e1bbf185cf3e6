"""One wire format: CBOR envelopes around versioned, schema-checked frozen dataclasses.

Theory of operation
-------------------
Every message type is a frozen dataclass registered with :func:`message`, which gives it a
stable ``name``, a ``version`` and a hard ``max_bytes`` bound. On the wire a message is the
CBOR array ``[name, version, {field: value, ...}]``.

Decoding is the single receive boundary, and it runs in this order, stopping at the first
failure with a :class:`RemoteProtocolError` (never any other exception):

1. size: the raw frame must not exceed the type's bound (or the global bound before the type
   is known);
2. CBOR: a strict pre-scan (``consensus/cbor_strict.py``) walks the item structure before
   cbor2 sees a byte: any tag, anywhere, is refused with reason ``tag`` (cbor2 would build
   objects for the tags it knows, e.g. compile a regular expression for tag 35, before any
   hook runs); indefinite lengths, stray simple values, nesting deeper than
   ``cbor_strict.MAX_DEPTH``, trailing bytes and more items than the expected types' schemas
   allow are refused with reason ``cbor``; only then does cbor2 build plain values;
3. envelope: a 3-element array of (known name, supported version, map);
4. schema: exactly the declared fields, each of the declared type (recursively for nested
   messages, tuples and optionals), with per-field length bounds;
5. semantics: the class's optional ``validate()`` method.

Only then is the frozen dataclass handed to the caller. Encoding checks the same schema, and a
failure there is a :class:`LocalProtocolError`: we never put invalid bytes on the wire.

Supported field types: ``bytes``, ``str``, ``int``, ``float``, ``bool``, ``None``, another
registered message class, ``tuple[T, ...]`` and ``T | None``. Maps are deliberately absent:
use a tuple of small message records, which keeps every key schema-checked.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

import cbor2

from consensus import cbor_strict
from overlay.errors import LocalProtocolError, RemoteProtocolError

# No single frame may exceed this, whatever the type; a type's own bound is usually smaller.
MAX_FRAME_BYTES = 4 * 1024 * 1024
# Per-field bounds: strings and byte strings longer than this are refused unless the field
# declares its own bound through ``field(metadata={"max_len": N})``.
DEFAULT_MAX_LEN = 64 * 1024
# Tuples longer than this are refused unless the field declares ``max_items``.
DEFAULT_MAX_ITEMS = 1024
# Integers are bounded to 64 bits signed/unsigned: no bignum surprises.
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

T = TypeVar("T")

_REGISTRY: dict[str, type[Any]] = {}
_SPEC: dict[type[Any], _Spec] = {}


@dataclasses.dataclass(frozen=True)
class _Spec:
    name: str
    version: int
    max_bytes: int
    fields: tuple[tuple[str, Any, dict[str, Any]], ...]


def message(name: str, *, version: int = 1, max_bytes: int = 64 * 1024) -> Callable[[type[T]], type[T]]:
    """Register a frozen dataclass as a wire message type.

    Args:
        name: stable wire name, unique in the catalogue (``overlay/messages.py``).
        version: schema version; a decoder refuses versions it does not know.
        max_bytes: hard upper bound on the encoded size of one message of this type.

    Raises:
        LocalProtocolError: the class is not a frozen dataclass or the name is taken.
    """
    if max_bytes > MAX_FRAME_BYTES:
        raise LocalProtocolError(f"{name}: max_bytes above the global frame bound")

    def register(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            raise LocalProtocolError(f"{cls.__name__} must be a frozen dataclass")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise LocalProtocolError(f"wire name {name!r} registered twice")
        hints = get_type_hints(cls)
        fields = tuple(
            (f.name, hints[f.name], dict(f.metadata)) for f in dataclasses.fields(cls)
        )
        _REGISTRY[name] = cls
        _SPEC[cls] = _Spec(name, version, max_bytes, fields)
        return cls

    return register


def spec_of(cls: type[Any]) -> tuple[str, int, int]:
    """Return ``(name, version, max_bytes)`` of a registered message class."""
    s = _SPEC.get(cls)
    if s is None:
        raise LocalProtocolError(f"{cls.__name__} is not a registered message")
    return s.name, s.version, s.max_bytes


def registered() -> dict[str, type[Any]]:
    """A copy of the catalogue: wire name to class."""
    return dict(_REGISTRY)


# --------------------------------------------------------------------------- encoding


def _to_plain(value: Any, tp: Any, meta: dict[str, Any], where: str) -> Any:
    try:
        return _convert(value, tp, meta, where, _encode_nested)
    except RemoteProtocolError as exc:  # same checks, but on our side it is a bug
        raise LocalProtocolError(f"refusing to encode {where}: {exc.detail}") from None


def _encode_nested(value: Any, cls: type[Any], where: str) -> Any:
    if type(value) is not cls:
        raise RemoteProtocolError("schema", f"{where}: expected {cls.__name__}")
    spec = _SPEC[cls]
    return {n: _to_plain(getattr(value, n), t, m, f"{where}.{n}") for n, t, m in spec.fields}


def encode(msg: Any) -> bytes:
    """Encode a registered message to its CBOR envelope.

    Raises:
        LocalProtocolError: the message is not registered, violates its schema or its bound.
    """
    cls = type(msg)
    spec = _SPEC.get(cls)
    if spec is None:
        raise LocalProtocolError(f"{cls.__name__} is not a registered message")
    body = {n: _to_plain(getattr(msg, n), t, m, f"{spec.name}.{n}") for n, t, m in spec.fields}
    validate = getattr(msg, "validate", None)
    if validate is not None:
        try:
            validate()
        except RemoteProtocolError as exc:
            raise LocalProtocolError(f"refusing to encode invalid {spec.name}: {exc}") from None
    data = cbor2.dumps([spec.name, spec.version, body], canonical=True)
    if len(data) > spec.max_bytes:
        raise LocalProtocolError(f"{spec.name} encodes to {len(data)} > {spec.max_bytes} bytes")
    return data


# --------------------------------------------------------------------------- decoding


def _loads(data: bytes, max_items: int | None = None) -> Any:
    try:
        return cbor_strict.loads(data, max_items=max_items)
    except cbor_strict.CborRefused as exc:
        raise RemoteProtocolError(exc.reason, exc.detail) from None


@functools.cache
def _item_bound(tp: Any, max_items: int | None = None) -> int:
    """The most CBOR data items a value of field type ``tp`` can have under its schema.

    The strict scan refuses a frame with more items than this before cbor2 builds anything,
    so a frame of many tiny items costs no more than the largest valid message of its type.
    """
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return max((_item_bound(a, max_items) for a in get_args(tp) if a is not type(None)), default=1)
    if origin is tuple:
        n = DEFAULT_MAX_ITEMS if max_items is None else max_items
        return 1 + n * _item_bound(get_args(tp)[0])
    if isinstance(tp, type) and tp in _SPEC:
        return 1 + sum(1 + _item_bound(t, m.get("max_items")) for _, t, m in _SPEC[tp].fields)
    return 1


def _frame_item_bound(classes: tuple[Any, ...]) -> int:
    # 3: the envelope array, the name and the version. The slack lets a frame that is only a
    # little off (an extra field) reach the schema check, whose reason says more.
    return 2 * (3 + max(_item_bound(c) for c in classes)) + 64


def _decode_nested(value: Any, cls: type[Any], where: str) -> Any:
    if not isinstance(value, dict):
        raise RemoteProtocolError("schema", f"{where}: expected a map")
    spec = _SPEC[cls]
    names = {n for n, _, _ in spec.fields}
    extra = set(value) - names
    if extra:
        raise RemoteProtocolError("schema", f"{where}: unknown fields {sorted(map(str, extra))[:5]}")
    missing = names - set(value)
    if missing:
        raise RemoteProtocolError("schema", f"{where}: missing fields {sorted(missing)[:5]}")
    kwargs = {n: _convert(value[n], t, m, f"{where}.{n}", _decode_nested) for n, t, m in spec.fields}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except RemoteProtocolError:
            raise
        except (ValueError, TypeError) as exc:
            raise RemoteProtocolError("invalid", f"{where}: {exc}"[:200]) from None
    return obj


def _convert(
    value: Any,
    tp: Any,
    meta: dict[str, Any],
    where: str,
    nested: Callable[[Any, type[Any], str], Any],
) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise LocalProtocolError(f"{where}: only `T | None` unions are supported")
        return _convert(value, rest[0], meta, where, nested)
    if origin is tuple:
        args = get_args(tp)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise LocalProtocolError(f"{where}: only tuple[T, ...] is supported")
        if not isinstance(value, (list, tuple)):
            raise RemoteProtocolError("schema", f"{where}: expected an array")
        max_items = meta.get("max_items", DEFAULT_MAX_ITEMS)
        if len(value) > max_items:
            raise RemoteProtocolError("bounds", f"{where}: {len(value)} items > {max_items}")
        item_meta = {k: v for k, v in meta.items() if k != "max_items"}
        return tuple(
            _convert(v, args[0], item_meta, f"{where}[{i}]", nested) for i, v in enumerate(value)
        )
    if tp is bytes:
        if type(value) is not bytes:
            raise RemoteProtocolError("schema", f"{where}: expected bytes")
        _check_len(value, meta, where)
        return value
    if tp is str:
        if type(value) is not str:
            raise RemoteProtocolError("schema", f"{where}: expected text")
        _check_len(value, meta, where)
        return value
    if tp is bool:
        if type(value) is not bool:
            raise RemoteProtocolError("schema", f"{where}: expected a bool")
        return value
    if tp is int:
        if type(value) is not int:
            raise RemoteProtocolError("schema", f"{where}: expected an int")
        lo, hi = meta.get("min", INT_MIN), meta.get("max", INT_MAX)
        if not lo <= value <= hi:
            raise RemoteProtocolError("bounds", f"{where}: {value} outside [{lo}, {hi}]")
        return value
    if tp is float:
        if type(value) not in (float, int) or type(value) is bool:
            raise RemoteProtocolError("schema", f"{where}: expected a number")
        f = float(value)
        if f != f or f in (float("inf"), float("-inf")):
            raise RemoteProtocolError("bounds", f"{where}: not a finite number")
        lo, hi = meta.get("min", -1e300), meta.get("max", 1e300)
        if not lo <= f <= hi:
            raise RemoteProtocolError("bounds", f"{where}: {f} outside [{lo}, {hi}]")
        return f
    if tp is type(None):
        if value is not None:
            raise RemoteProtocolError("schema", f"{where}: expected null")
        return None
    if isinstance(tp, type) and tp in _SPEC:
        return nested(value, tp, where)
    raise LocalProtocolError(f"{where}: unsupported field type {tp!r}")


def _check_len(value: bytes | str, meta: dict[str, Any], where: str) -> None:
    exact = meta.get("len")
    if exact is not None and len(value) != exact:
        raise RemoteProtocolError("bounds", f"{where}: length {len(value)} != {exact}")
    max_len = meta.get("max_len", DEFAULT_MAX_LEN)
    if len(value) > max_len:
        raise RemoteProtocolError("bounds", f"{where}: length {len(value)} > {max_len}")


def decode(data: bytes, expected: type[T] | tuple[type[Any], ...] | None = None) -> T:
    """Decode and validate one frame.

    Args:
        data: the raw frame.
        expected: the class (or classes) acceptable here; anything else is refused.

    Returns:
        The validated frozen dataclass.

    Raises:
        RemoteProtocolError: for every kind of bad input, with ``reason`` one of
            ``size``, ``tag``, ``cbor``, ``envelope``, ``unexpected``, ``version``, ``schema``,
            ``bounds``, ``invalid``.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise LocalProtocolError("decode() takes bytes")
    bound = MAX_FRAME_BYTES
    if isinstance(expected, type) and expected in _SPEC:
        bound = _SPEC[expected].max_bytes
    elif isinstance(expected, tuple) and expected:
        bound = max(_SPEC[c].max_bytes for c in expected)
    if len(data) > bound:
        raise RemoteProtocolError("size", f"frame of {len(data)} bytes > {bound}")
    max_items = None
    if isinstance(expected, type) and expected in _SPEC:
        max_items = _frame_item_bound((expected,))
    elif isinstance(expected, tuple) and expected:
        max_items = _frame_item_bound(expected)
    raw = _loads(bytes(data), max_items)
    if not isinstance(raw, list) or len(raw) != 3:
        raise RemoteProtocolError("envelope", "expected [name, version, body]")
    name, version, body = raw
    if type(name) is not str or type(version) is not int:
        raise RemoteProtocolError("envelope", "bad name or version")
    cls = _REGISTRY.get(name)
    if cls is None:
        raise RemoteProtocolError("unexpected", f"unknown message {name[:64]!r}")
    if expected is not None:
        allowed = expected if isinstance(expected, tuple) else (expected,)
        if cls not in allowed:
            raise RemoteProtocolError("unexpected", f"{name} not acceptable here")
    spec = _SPEC[cls]
    if version != spec.version:
        raise RemoteProtocolError("version", f"{name} v{version} (we speak v{spec.version})")
    if len(data) > spec.max_bytes:
        raise RemoteProtocolError("size", f"{name} of {len(data)} bytes > {spec.max_bytes}")
    result: T = _decode_nested(body, cls, name)
    return result

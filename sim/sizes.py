"""Encoded message sizes without encoding every message.

Exact sizes come from :func:`overlay.wire.encode`; here a message's size is its type's encoded
size with empty lists (cached once per type and per short-field length) plus the encoded size
of each list item (cached per item object: the simulator shares one object between all the
messages that carry it). The result is within a few bytes of ``len(encode(msg))`` (CBOR
length headers); tests check the bound.
"""

from __future__ import annotations

from typing import Any

from overlay import wire
from overlay.messages_gossip import (
    GossipDigest,
    GossipDigestEntry,
    GossipPush,
    SwimAck,
    SwimGossip,
    SwimNack,
    SwimPing,
    SwimPingReq,
    SwimSync,
    SwimUpdate,
)
from overlay.records import Record

_LIST_FIELDS: dict[type[Any], tuple[str, ...]] = {
    SwimPing: ("updates", "records"),
    SwimPingReq: ("updates",),
    SwimAck: ("updates", "records"),
    SwimNack: (),
    SwimSync: ("members",),
    SwimGossip: ("updates",),
    GossipPush: ("records", "user"),
    GossipDigest: ("entries",),
}
_EMPTY: dict[type[Any], Any] = {
    SwimPing: SwimPing(2**31, ""),
    SwimPingReq: SwimPingReq(2**31, ""),
    SwimAck: SwimAck(2**31),
    SwimNack: SwimNack(2**31),
    SwimSync: SwimSync(),
    SwimGossip: SwimGossip(),
    GossipPush: GossipPush(),
    GossipDigest: GossipDigest(),
}
_base: dict[type[Any], int] = {t: len(wire.encode(m)) for t, m in _EMPTY.items()}
_items: dict[int, tuple[Any, int]] = {}
_ITEMS_MAX = 500_000


def _u(s: str) -> int:
    """UTF-8 length (``isascii`` is O(1) in CPython, and simulated ids are ASCII)."""
    return len(s) if s.isascii() else len(s.encode())


def _str(n: int) -> int:
    return n + (1 if n < 24 else 2 if n < 256 else 3 if n < 65536 else 5)


def _int(v: int) -> int:
    return 1 if v < 24 else 2 if v < 256 else 3 if v < 65536 else 5 if v < 2**32 else 9


def _keys(cls: type[Any]) -> int:
    import dataclasses

    names = [f.name for f in dataclasses.fields(cls)]
    return 1 + sum(_str(len(k)) for k in names)


_K_UPDATE = _keys(SwimUpdate)
_K_RECORD = _keys(Record)
_K_ENTRY = _keys(GossipDigestEntry)
_FLOAT = 9  # upper bound: canonical CBOR may shorten a float to 3 or 5 bytes


def _item_size(x: Any) -> int:
    t = type(x)
    if t is SwimUpdate:
        a, b, inc = x.node, x.origin, x.incarnation
        if a.isascii() and b.isascii() and len(a) < 24 and len(b) < 24 and inc < 24:
            return _K_UPDATE + 3 + len(a) + 1 + len(b)  # the common case, inlined
        return _K_UPDATE + _str(_u(a)) + 1 + _int(inc) + _str(_u(b))
    if t is Record:
        # One record object rides on every push that carries it (tens per node): size it once.
        hit = _items.get(id(x))
        if hit is not None and hit[0] is x:
            return int(hit[1])
        size = (_K_RECORD + _str(_u(x.kind)) + _str(_u(x.issuer)) + _str(_u(x.subject))
                + _int(x.version) + 2 * _FLOAT + _str(len(x.payload)) + _str(len(x.signature)))
        _remember(x, size)
        return size
    if t is GossipDigestEntry:
        return (_K_ENTRY + _str(_u(x.kind)) + _str(_u(x.subject)) + _int(x.version) + _FLOAT
                + _str(len(x.sig_prefix)) + _str(_u(x.issuer)))
    return _item_size_encoded(x)


def _item_size_encoded(x: Any) -> int:
    hit = _items.get(id(x))
    if hit is not None and hit[0] is x:
        return hit[1]
    if type(x) is bytes:
        return len(x) + 3
    name = wire.spec_of(type(x))[0]
    size = len(wire.encode(x)) - len(name) - 3  # minus the envelope around a top-level frame
    _remember(x, size)
    return size


def _remember(x: Any, size: int) -> None:
    """Cache ``x``'s size by identity (the entry holds ``x``, so its id is not reused)."""
    if len(_items) >= _ITEMS_MAX:
        _items.clear()
    _items[id(x)] = (x, size)


def wire_size(msg: Any) -> int:
    """Encoded size of ``msg`` in bytes (within a few bytes of the exact encoding)."""
    t = type(msg)
    size = _base[t]
    if t is SwimPing or t is SwimPingReq:
        size += _u(msg.target)
    for f in _LIST_FIELDS[t]:
        for x in getattr(msg, f):
            size += _item_size(x)
    return size

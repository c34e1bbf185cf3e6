"""Strict CBOR: one data item with no tags, checked before cbor2 builds any object from it.

Theory of operation
-------------------
cbor2 gives meaning to the tags it knows (tag 35 compiles a regular expression; others build
datetimes, decimals, fractions, UUIDs, IP addresses, sets and shared references) *before* any
``tag_hook`` is consulted, and no option of cbor2 6.x switches that off (``semantic_decoders``
only overrides tags one by one, and the set of built-in tags changes between versions). So
every byte string that came off the network is first walked by :func:`scan`, a small
iterative parser of the CBOR item structure that builds nothing, and only bytes it accepts
reach ``cbor2.loads``.

Rules (RFC 8949 section 3; anything else is refused with :class:`CborRefused`):

1. exactly one data item filling the buffer (no trailing bytes, nothing truncated);
2. major type 6 (a tag) anywhere: refused, reason ``"tag"``;
3. definite lengths only (our encoders never write indefinite ones), each no larger than the
   bytes left, so a length field cannot make anyone allocate more than the input;
4. major type 7: only false, true, null and half/single/double floats (no ``undefined``, no
   other simple values, no stray ``break``);
5. text strings are valid UTF-8;
6. nesting depth (arrays and maps) at most ``max_depth``, and at most ``max_items`` items.

The scan is a loop over item headers with an explicit stack (no recursion, so no
``RecursionError`` whatever the input); byte and text strings are skipped by length, so its
cost grows with the number of items, never with the size of the strings.

This module lives in ``consensus/`` because ``consensus/`` imports nothing from the other
folders and decodes snapshots and commands that come off the wire; ``overlay/wire.py`` uses
the same code, so there is one strict parser, not two.
"""

from __future__ import annotations

from typing import Any

import cbor2

#: Nesting bound for arrays and maps. Our deepest message nests well under 16.
MAX_DEPTH = 32


class CborRefused(ValueError):
    """The bytes are not one strict, tag-free CBOR item.

    Attributes:
        reason: ``"tag"`` for a tag anywhere in the item, ``"cbor"`` for anything else.
        detail: what was wrong and at which offset (never the offending bytes).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# Major type 7 additional information values we accept: false, true, null, and the three
# float widths (value: bytes that follow).
_SIMPLE_OK = {20: 0, 21: 0, 22: 0, 25: 2, 26: 4, 27: 8}
_ARG_BYTES = {24: 1, 25: 2, 26: 4, 27: 8}


def scan(data: bytes, *, max_depth: int = MAX_DEPTH, max_items: int | None = None) -> None:
    """Check that ``data`` is exactly one strict, tag-free CBOR item (see the module rules).

    Args:
        data: the encoded item.
        max_depth: deepest allowed nesting of arrays and maps (a scalar has depth 0).
        max_items: most data items allowed in total (None: bounded by ``len(data)``).

    Raises:
        CborRefused: the bytes break a rule; nothing has been decoded.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    n = len(data)
    limit = n if max_items is None else min(n, max_items)
    pos = 0
    items = 0
    need = 1  # items still to read in the innermost open container (or at the top level)
    stack: list[int] = []  # ``need`` of each enclosing container
    while True:
        if pos >= n:
            raise CborRefused("cbor", f"truncated at offset {pos}")
        items += 1
        if items > limit:
            raise CborRefused("cbor", f"more than {limit} items")
        start = pos
        b = data[pos]
        pos += 1
        major = b >> 5
        ai = b & 0x1F
        if major == 6:
            raise CborRefused("tag", f"tag at offset {start}")
        if major == 7:
            width = _SIMPLE_OK.get(ai)
            if width is None:
                raise CborRefused("cbor", f"simple value {ai} at offset {start}")
            if pos + width > n:
                raise CborRefused("cbor", f"truncated float at offset {start}")
            pos += width
            arg = 0
        else:
            if ai < 24:
                arg = ai
            else:
                width = _ARG_BYTES.get(ai)
                if width is None:  # 28..30 reserved, 31 indefinite length
                    what = "indefinite length" if ai == 31 else "reserved additional information"
                    raise CborRefused("cbor", f"{what} at offset {start}")
                if pos + width > n:
                    raise CborRefused("cbor", f"truncated argument at offset {start}")
                arg = int.from_bytes(data[pos:pos + width], "big")
                pos += width
            if major == 2 or major == 3:
                if arg > n - pos:
                    raise CborRefused("cbor", f"string of {arg} bytes past the end at offset {start}")
                if major == 3:
                    try:
                        data[pos:pos + arg].decode("utf-8")
                    except UnicodeDecodeError:
                        raise CborRefused("cbor", f"invalid UTF-8 at offset {start}") from None
                pos += arg
            elif major >= 4:  # 4 array, 5 map: arg items / pairs, each at least one byte
                count = arg if major == 4 else 2 * arg
                if count > n - pos:
                    raise CborRefused("cbor", f"container of {count} items past the end at offset {start}")
                if count:
                    if len(stack) >= max_depth:
                        raise CborRefused("cbor", f"nesting deeper than {max_depth} at offset {start}")
                    stack.append(need - 1)
                    need = count
                    continue
        need -= 1
        while need == 0:
            if not stack:
                if pos != n:
                    raise CborRefused("cbor", f"{n - pos} trailing bytes after the item")
                return
            need = stack.pop()


def _refuse_tag(_decoder: Any, tag: Any, *_: Any) -> Any:
    # Unreachable after scan(); kept so that a scanner bug cannot silently admit a tag.
    raise CborRefused("tag", f"tag {tag.tag}")


def loads(data: bytes, *, max_depth: int = MAX_DEPTH, max_items: int | None = None) -> Any:
    """Decode one strict, tag-free CBOR item: :func:`scan` first, then cbor2.

    Args:
        data: the encoded item.
        max_depth: see :func:`scan`.
        max_items: see :func:`scan`.

    Returns:
        Plain Python values: int, float, bool, None, bytes, str, list, dict.

    Raises:
        CborRefused: with reason ``"tag"`` or ``"cbor"``; never another exception type.
    """
    data = bytes(data)
    scan(data, max_depth=max_depth, max_items=max_items)
    try:
        return cbor2.loads(data, tag_hook=_refuse_tag, max_depth=max_depth + 1,
                           allow_indefinite=False, allow_duplicate_keys=False)
    except CborRefused:
        raise
    except RecursionError:
        raise CborRefused("cbor", "nesting too deep") from None
    except Exception as exc:  # cbor2 raises several types (CBORDecodeError, ValueError, ...)
        raise CborRefused("cbor", f"{type(exc).__name__}: {exc}"[:200]) from None

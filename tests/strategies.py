"""Shared Hypothesis strategies for decoder fuzzing."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.binary(max_size=80)
    | st.sampled_from([b"\x00" * 16, b"\x01" * 32, b"\x02" * 64, b"\x03" * 7])
    | st.text(max_size=40)
)

# Arbitrary CBOR-encodable values, nested a few levels deep. Built with deferred() rather than
# recursive(): recent Hypothesis warns when a recursive() extension happens not to recurse.
cbor_values: st.SearchStrategy[Any] = st.deferred(
    lambda: LEAVES
    | st.lists(cbor_values, max_size=4)
    | st.dictionaries(st.text(max_size=10), cbor_values, max_size=4)
)

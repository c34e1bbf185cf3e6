"""The simulator's cached sizes stay within a few bytes per item of the real encoding."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from overlay.wire import encode
from sim.sizes import wire_size
from tests.overlay_core.test_codec_fuzz import messages


def _items(msg) -> int:
    return sum(len(getattr(msg, f, ())) for f in ("updates", "records", "members", "entries",
                                                  "user"))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_wire_size_is_close_to_the_encoding(msg):
    exact = len(encode(msg))
    est = wire_size(msg)
    slack = 12 + 16 * _items(msg)  # int/float/length headers the estimate rounds up
    assert exact - slack <= est <= exact + slack

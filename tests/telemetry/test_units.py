"""The pure parts of node/telemetry and node/metrics: histogram buckets, the metrics address,
the catalogue's naming conventions, and sd_notify's datagrams on a real AF_UNIX socket."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.metrics import BUCKETS, Counters, Timings
from node.telemetry.catalog import CATALOG, PROCESS_METRICS
from node.telemetry.server import MetricsAddressError, parse_metrics_address
from node.telemetry.systemd import Notifier, socket_address, watchdog_interval_s

ROOT = Path(__file__).resolve().parents[2]


@given(st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), max_size=200),
       st.sampled_from(sorted(BUCKETS)))
def test_timings_are_cumulative_buckets_with_count_and_sum(values: list[float], kind: str) -> None:
    t = Timings()
    for v in values:
        t.observe("x", kind, v, "l")
    snap = t.snapshot()
    if not values:
        assert snap == {} and t.count("x") == 0
        return
    bounds, cumulative, total, n = snap[("x", "l")]
    assert bounds == BUCKETS[kind] and len(cumulative) == len(bounds) + 1
    assert cumulative == sorted(cumulative) and cumulative[-1] == n == len(values) == t.count("x", "l")
    for b, c in zip(bounds, cumulative, strict=False):
        assert c == sum(1 for v in values if v <= b)  # Prometheus' le: less than or equal
    assert total == pytest.approx(sum(values))


def test_counters_items_is_a_copy() -> None:
    c = Counters()
    c.inc("a", "x", 2)
    items = c.items()
    c.inc("a", "x")
    assert items == [(("a", "x"), 2)] and c.get("a") == 3


@pytest.mark.parametrize(("text", "host", "port"), [
    ("127.0.0.1:9464", "127.0.0.1", 9464), ("localhost:0", "127.0.0.1", 0),
    ("[::1]:9464", "::1", 9464), ("127.3.2.1:65535", "127.3.2.1", 65535)])
def test_loopback_addresses_parse(text: str, host: str, port: int) -> None:
    a = parse_metrics_address(text)
    assert (a.host, a.port) == (host, port)


@pytest.mark.parametrize("text", ["", "9464", "127.0.0.1", "127.0.0.1:", ":9464", "127.0.0.1:x",
                                  "127.0.0.1:65536", "127.0.0.1:123456", "example.org:9464",
                                  "127.0.0.1:-1", "[::1:9464"])
def test_malformed_addresses_are_usage_errors(text: str) -> None:
    with pytest.raises(MetricsAddressError) as exc:
        parse_metrics_address(text)
    assert exc.value.usage


@pytest.mark.parametrize("text", ["0.0.0.0:9464", "10.1.2.3:9464", "[::]:9464"])
def test_non_loopback_is_refused_unless_allowed(text: str) -> None:
    with pytest.raises(MetricsAddressError) as exc:
        parse_metrics_address(text)
    assert not exc.value.usage and "--metrics-allow-remote" in str(exc.value)
    assert not parse_metrics_address(text, allow_remote=True).host.startswith("127.")


@given(st.text(max_size=80))
def test_any_text_parses_or_is_refused_with_a_reason(text: str) -> None:
    try:
        a = parse_metrics_address(text)
    except MetricsAddressError as exc:
        assert str(exc)
    else:
        assert 0 <= a.port <= 65535


def test_catalogue_follows_prometheus_conventions() -> None:
    names = [m.full_name for m in CATALOG]
    assert len(names) == len(set(names))
    for m in CATALOG:
        assert re.fullmatch(r"enclave_swarm_[a-z][a-z0-9_]*", m.full_name), m.name
        assert not m.name.endswith("_total"), "counters get _total when exposed"
        assert m.kind in ("counter", "gauge", "histogram")
        if m.kind == "histogram":
            assert m.name.endswith("_seconds")
        assert not {"peer", "peer_id", "job", "job_id", "node"} & set(m.labels), m.name
        assert m.help.endswith(".") or m.help.endswith(")")


def test_operations_doc_lists_every_metric() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    for m in CATALOG:
        assert f"`{m.exposed_name}`" in doc, m.exposed_name
    for name in PROCESS_METRICS:
        assert f"enclave_swarm_{name}" in doc, name


# ------------------------------------------------------------------ sd_notify


def _receiver(address: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(address)
    s.settimeout(5)
    return s


def test_notify_reaches_a_path_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with _receiver(path) as rx:
        n = Notifier.from_env({"NOTIFY_SOCKET": path})
        assert n is not None and n.notify(ready=1, status="up\nand running")
        assert rx.recv(4096) == b"READY=1\nSTATUS=up and running"


def test_notify_reaches_an_abstract_socket() -> None:
    name = f"enclave-swarm-test-{os.getpid()}"
    with _receiver("\0" + name) as rx:
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert n is not None and n.notify(watchdog=1)
        assert rx.recv(4096) == b"WATCHDOG=1"


def test_notify_without_a_listener_is_counted_not_raised(tmp_path: Path) -> None:
    n = Notifier(str(tmp_path / "nobody"))
    assert not n.notify(ready=1) and n.failed == 1 and n.sent == 0


def test_environment_decides_socket_and_watchdog() -> None:
    assert socket_address({}) is None and socket_address({"NOTIFY_SOCKET": "vsock:2:1"}) is None
    assert socket_address({"NOTIFY_SOCKET": "@"}) is None
    assert watchdog_interval_s({}) is None and watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "abc"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "3000000"}) == 3.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "2"}, pid=2) == 3.0

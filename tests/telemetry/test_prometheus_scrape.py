"""Prometheus itself scrapes three node processes: Debian's ``prometheus`` server (installed by
``make sysdeps`` when missing) on loopback, and its HTTP API answers with a sample from each
node, so the exposition is checked by Prometheus' own parser, not ours. Also ``promtool`` on
the example alerting rules we ship (deploy/prometheus/alerts.yml) and their unit tests."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from node.demo import NodeProcess, all_mutually_attested
from node.testing import poll_until

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus"


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: `make sysdeps` installs Debian's prometheus package"
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(pred, timeout_s: float, step_s: float = 0.5, what: str = "condition"):  # type: ignore[no-untyped-def]
    return poll_until(pred, timeout_s, step_s, what)


def query(api: str, promql: str) -> list[dict[str, Any]]:
    url = f"{api}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read())
    except OSError:
        return []
    assert body["status"] == "success", body
    return list(body["data"]["result"])


@pytest.mark.process
def test_prometheus_scrapes_three_nodes(tmp_path: Path) -> None:
    prometheus = _tool("prometheus")
    ports = [free_port() for _ in range(3)]
    nodes: list[NodeProcess] = []
    server = None
    log = open(tmp_path / "prometheus.log", "wb")  # closed in finally
    try:
        for i, port in enumerate(ports):
            boot = [nodes[0].addrs[0]] if nodes else None
            p = NodeProcess(tmp_path / f"n{i}", bootstrap=boot, extra=["--metrics", f"127.0.0.1:{port}"])
            nodes.append(p)
            p.wait_listening(60)
        targets = [f"127.0.0.1:{p}" for p in ports]
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: enclave-swarm\n    static_configs:\n"
            f"      - targets: {json.dumps(targets)}\n")
        web = free_port()
        api = f"http://127.0.0.1:{web}"
        server = subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{web}"], stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: all_mutually_attested([p.status() for p in nodes]), 90, what="the nodes attest")

        def every_node_scraped() -> bool:
            got = {r["metric"]["instance"]: float(r["value"][1])
                   for r in query(api, 'enclave_swarm_attested_peers{tee="sim"}')}
            return set(got) == set(targets) and all(v == 2 for v in got.values())

        wait_for(every_node_scraped, 90, what="Prometheus holds attested_peers 2 from each node")
        up = {r["metric"]["instance"]: r["value"][1] for r in query(api, 'up{job="enclave-swarm"}')}
        assert up == {t: "1" for t in targets}
        # one manager among the three, as Prometheus sees them
        managers = query(api, 'sum(enclave_swarm_raft_role{role="manager"})')
        assert managers and float(managers[0]["value"][1]) == 1
        hist = query(api, "sum by (instance) (enclave_swarm_attestation_seconds_count)")
        assert {r["metric"]["instance"] for r in hist} == set(targets)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        for p in nodes:
            p.signal(signal.SIGTERM)
        for p in nodes:
            p.wait(15)
        log.close()


@pytest.mark.process  # runs promtool
def test_promtool_accepts_the_example_rules() -> None:
    r = subprocess.run([_tool("promtool"), "check", "rules", str(RULES / "alerts.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


@pytest.mark.process  # runs promtool
def test_the_example_alerts_fire_on_their_series() -> None:
    r = subprocess.run([_tool("promtool"), "test", "rules", "alerts_test.yml"], cwd=RULES,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_metric_an_alert_names_is_exported() -> None:
    import re

    from node.telemetry.catalog import CATALOG, PREFIX

    exposed = {m.exposed_name for m in CATALOG}
    exposed |= {m.full_name + s for m in CATALOG if m.kind == "histogram"
                for s in ("_bucket", "_sum", "_count")}
    names = set(re.findall(r"\b(enclave_swarm_[a-z0-9_]+)", (RULES / "alerts.yml").read_text()))
    assert names and names <= exposed, names - exposed
    assert all(n.startswith(PREFIX) for n in names)

"""The operator's EnclaveJob and EnclaveFederation handlers (the kopf-decorated functions of
node/k8s/operator.py, called as kopf calls them) against a real federation of node processes
on loopback. The Kubernetes side is faked only where no API server runs here: the resource's
status is a dict that each handler call's ``patch.status`` is merged into (what kopf does with
the patch), and the federation handler's API is :class:`DictApi`, three calls over a dict."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import kopf
import pytest

from node.demo import NodeProcess, all_mutually_attested, start_nodes
from node.k8s import handlers, jobs
from node.k8s import operator as op
from node.tasks.spec import SpecError
from node.testing import poll_until as wait_for
from tests.k8s.fakes import DictApi

pytestmark = pytest.mark.process

EXAMPLES = Path(__file__).resolve().parents[2] / "node" / "workload" / "examples"
LOG = logging.getLogger("test.k8s")




def _ready(nodes: list[NodeProcess]) -> bool:
    st = [p.status() for p in nodes]
    if not all_mutually_attested(st):
        return False
    managers = {s.get("manager") for s in st if s}
    return (len(managers) == 1 and None not in managers
            and all(len(s.get("capabilities", {})) == len(nodes) for s in st if s)
            and all(s["consensus"]["members"]["admitted"] == len(nodes) for s in st if s))


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("k8sfed")
    procs = start_nodes([tmp / f"node{i}" for i in range(3)])
    try:
        wait_for(lambda: _ready(procs), 120, 0.3)
        yield tmp, procs
    finally:
        for p in procs:
            p.signal(signal.SIGKILL)
            p.wait(10)


def _config(tmp: Path, node: NodeProcess, pod: str) -> handlers.OperatorConfig:
    return handlers.OperatorConfig(data_dir=node.data_dir, pod=pod, namespace="swarm",
                                   service="enclave-swarm", work_dir=tmp / f"{pod}-op" / "jobs",
                                   results_dir=tmp / f"{pod}-op" / "results")


def drive_job(spec: dict, status: dict, *, name: str, uid: str, until, timeout_s: float = 120.0) -> dict:
    """Call the kopf handler as kopf's timer would, merging each patch into ``status``, until
    ``until(status)``. Returns the final status."""

    async def loop() -> dict:
        deadline = time.monotonic() + timeout_s
        while not until(status):
            assert time.monotonic() < deadline, f"job resource stuck at {status}"
            patch = kopf.Patch()
            await op.job_reconcile(spec=spec, status=dict(status), namespace="swarm", name=name,
                                   uid=uid, patch=patch, logger=LOG)
            status.update(patch.get("status", {}))
            await asyncio.sleep(0.3)
        return status

    return asyncio.run(loop())


def _describe(node: NodeProcess, job_id: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "node.cli", "jobs", "describe", job_id, "--json",
                        "--data-dir", str(node.data_dir)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_an_enclavejob_runs_to_completion_and_its_status_mirrors_describe(fed, monkeypatch):
    tmp, procs = fed
    owner = procs[1]
    monkeypatch.setattr(op, "CONFIG", _config(tmp, owner, "enclave-swarm-1"))
    text = "".join(f"the quick brown fox jumps over the lazy dog {i % 7}\n" for i in range(300))
    spec = {"job": {"version": 1, "name": "words",
                    "module": {"path": "wordcount.wasm",  # a shipped example, by name
                               "sha256": hashlib_of("wordcount.wasm")},
                    "split": {"mode": "records", "fragments": 4},
                    "aggregation": {"kind": "merge-counts"}},
            "inputText": text}
    status: dict = {}
    drive_job(spec, status, name="words", uid="0123456789abcdef",
              until=lambda s: s.get("phase") in jobs.TERMINAL_PHASES and s.get("result"))
    assert status["phase"] == jobs.SUCCEEDED, status
    assert status["node"]["pod"] == "enclave-swarm-1"
    assert status["node"]["peerId"] == owner.status()["peer_id"]
    # the result: exported where the status says, and right
    res = status["result"]
    assert json.loads(Path(res["path"]).read_bytes()) == dict(Counter(text.split()))
    assert res["bytes"] == Path(res["path"]).stat().st_size and res["pod"] == "enclave-swarm-1"
    # the status mirrors `jobs describe --json`
    d = _describe(owner, status["jobId"])
    assert status["jobStatus"] == d["status"] == "done"
    assert status["fragments"] == {"total": d["fragments"] * d["redundancy"], "done": d["done"],
                                   "failed": d["failed"]}
    assert status["fragments"]["done"] == status["fragments"]["total"] > 0
    assert res["sha256"] == d["result_hash"] == status["resultSha256"]
    assert status["resultBytes"] == d["result_bytes"]
    # once ended and exported, the handler has nothing more to do (kopf's timer stops too)
    assert not op._live(status)
    patch = kopf.Patch()
    asyncio.run(op.job_reconcile(spec=spec, status=dict(status), namespace="swarm", name="words",
                                 uid="0123456789abcdef", patch=patch, logger=LOG))
    assert not patch


def test_an_invalid_enclavejob_gets_its_reasons_and_the_operator_goes_on(fed, monkeypatch):
    tmp, procs = fed
    monkeypatch.setattr(op, "CONFIG", _config(tmp, procs[2], "enclave-swarm-2"))
    bad = {"job": {"version": 1, "module": {"path": "wordcount.wasm", "sha256": "00" * 32},
                   "split": {"mode": "sideways", "fragments": 0},
                   "aggregation": {"kind": "merge-counts"}},
           "inputText": "a b c\n"}
    status: dict = {}
    drive_job(bad, status, name="bad", uid="u-bad", until=lambda s: s.get("phase"), timeout_s=30)
    assert status["phase"] == jobs.INVALID
    text = "\n".join(status["reasons"])
    assert "job.module.sha256" in text and "job.split.mode" in text and "job.split.fragments" in text
    assert "jobId" not in status  # nothing was submitted
    # an input path that does not exist: Invalid too, named
    wc = {"path": "wordcount.wasm", "sha256": hashlib_of("wordcount.wasm")}
    missing = {"job": {**bad["job"], "module": wc,
                       "split": {"mode": "records", "fragments": 2},
                       "input": {"path": str(tmp / "no-such-input")}}}
    status2: dict = {}
    drive_job(missing, status2, name="missing", uid="u-missing", until=lambda s: s.get("phase"),
              timeout_s=30)
    assert status2["phase"] == jobs.INVALID and "no-such-input" in "\n".join(status2["reasons"])
    # and the next good job on the same operator still runs
    good = {"job": {"version": 1, "module": {"path": "wordcount.wasm",
                                              "sha256": hashlib_of("wordcount.wasm")},
                    "split": {"mode": "records", "fragments": 2},
                    "aggregation": {"kind": "merge-counts"}},
            "inputText": "a b a\n"}
    status3: dict = {}
    drive_job(good, status3, name="good", uid="u-good",
              until=lambda s: s.get("phase") in jobs.TERMINAL_PHASES and s.get("result"))
    assert status3["phase"] == jobs.SUCCEEDED
    assert json.loads(Path(status3["result"]["path"]).read_bytes()) == {"a": 2, "b": 1}


def hashlib_of(example: str) -> str:
    return hashlib.sha256((EXAMPLES / example).read_bytes()).hexdigest()


def test_a_stopped_node_is_a_retry_not_a_failure(tmp_path, monkeypatch):
    """No node on the socket: kopf is told to retry (TemporaryError); the status is untouched."""
    cfg = handlers.OperatorConfig(data_dir=tmp_path / "none", pod="enclave-swarm-0", namespace="swarm",
                                  service="enclave-swarm", work_dir=tmp_path / "jobs",
                                  results_dir=tmp_path / "results")
    monkeypatch.setattr(op, "CONFIG", cfg)
    wc = {"path": "wordcount.wasm", "sha256": hashlib_of("wordcount.wasm")}
    spec = {"job": {"version": 1, "module": wc,
                    "split": {"mode": "records", "fragments": 1}, "aggregation": {"kind": "merge-counts"}},
            "inputText": "x\n"}
    patch = kopf.Patch()
    with pytest.raises(kopf.TemporaryError):
        asyncio.run(op.job_reconcile(spec=spec, status={}, namespace="swarm", name="j", uid="u",
                                     patch=patch, logger=LOG))
    assert not patch


def test_the_federation_handler_patches_the_statefulset_and_publishes_its_node(fed, monkeypatch):
    tmp, procs = fed
    node = procs[0]
    monkeypatch.setattr(op, "CONFIG", _config(tmp, node, "enclave-swarm-0"))
    policy = 'allowed_kinds = ["sev-snp", "tdx"]\nmin_score = 70\n'
    api = DictApi({("statefulsets", "enclave-swarm"): {"spec": {"replicas": 1},
                                                       "status": {"readyReplicas": 3}},
                   ("configmaps", "strict-policy"): {"data": {"policy.toml": policy}}})
    monkeypatch.setattr(op, "_API", api)
    spec = {"statefulSet": "enclave-swarm", "scale": 3, "profile": "wan",
            "policy": {"configMapRef": {"name": "strict-policy"}}}
    patch = kopf.Patch()
    asyncio.run(op.federation_reconcile(spec=spec, namespace="swarm", name="fed", patch=patch, logger=LOG))
    st = patch["status"]
    peer = node.status()["peer_id"]
    assert st["phase"] == "Ready" and st["replicas"] == 3 and st["attestedPeers"] == 2
    assert st["manager"] == node.status()["manager"] and st["members"] == 3
    sts_patch = api.patches[0]
    assert sts_patch[:2] == ("statefulsets", "enclave-swarm") and sts_patch[3] is True  # strategic
    body = sts_patch[2]
    assert body["spec"]["replicas"] == 3
    assert body["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == "strict-policy"
    addr = f"/dns4/enclave-swarm-0.enclave-swarm.swarm.svc.cluster.local/tcp/4001/p2p/{peer}"
    assert api.objects[("configmaps", "enclave-swarm-bootstrap")]["data"]["addrs"] == addr + "\n"
    assert st["bootstrap"] == addr
    # a policy the nodes would refuse: Invalid with the reason, nothing patched
    api.objects[("configmaps", "strict-policy")]["data"]["policy.toml"] = "allow_simulated = true\n"
    patch = kopf.Patch()
    asyncio.run(op.federation_reconcile(spec=spec, namespace="swarm", name="fed", patch=patch, logger=LOG))
    assert patch["status"]["phase"] == "Invalid"
    assert "allow_simulated" in patch["status"]["reasons"][0] and len(api.patches) == 1


def test_prepare_keeps_spec_errors_apart_from_the_files_it_writes(tmp_path):
    """A relative module path that is not a plain example name stays as written (and fails)."""
    with pytest.raises(SpecError) as e:
        jobs.prepare({"job": {"version": 1, "module": {"path": "../x.wasm", "sha256": "0" * 64}},
                      "inputText": "a"}, workdir=tmp_path)
    assert any(p == "job.module.path" for p, _ in e.value.errors)


def test_deleting_a_running_enclavejob_cancels_its_job(fed, monkeypatch):
    tmp, procs = fed
    owner = procs[2]
    monkeypatch.setattr(op, "CONFIG", _config(tmp, owner, "enclave-swarm-2"))
    spec = {"job": {"version": 1, "name": "spin",
                    "module": {"path": "forever.wasm", "sha256": hashlib_of("forever.wasm")},
                    "split": {"mode": "bytes", "fragments": 2},
                    "limits": {"wall_time_s": 600},
                    "aggregation": {"kind": "concat"}},
            "inputText": "0123456789"}
    status: dict = {}
    drive_job(spec, status, name="spin", uid="u-spin", until=lambda s: s.get("phase") == jobs.RUNNING)
    job_id = status["jobId"]
    asyncio.run(op.job_delete(status=dict(status), namespace="swarm", name="spin", uid="u-spin"))
    wait_for(lambda: _describe(owner, job_id)["status"] == "cancelled", 60, 0.5)
    assert "EnclaveJob swarm/spin deleted" in _describe(owner, job_id)["reason"]
    # the files handed to the node are gone with the resource
    assert not jobs.job_workdir(op.CONFIG.work_dir, "swarm", "spin", "u-spin").exists()

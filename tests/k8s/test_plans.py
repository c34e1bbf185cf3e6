"""The operator's pure plans (node/k8s/jobs.py, node/k8s/federation.py): unit and property
tests, no processes and no kopf."""

from __future__ import annotations

import hashlib
import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.k8s import federation, jobs
from node.tasks.spec import SpecError

WC = hashlib.sha256((jobs.EXAMPLES_DIR / "wordcount.wasm").read_bytes()).hexdigest()
GOOD = {"job": {"version": 1, "module": {"path": "wordcount.wasm", "sha256": WC},
                "split": {"mode": "records", "fragments": 2}, "aggregation": {"kind": "merge-counts"}},
        "inputText": "a b\n"}
PEER = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"


def test_a_valid_spec_is_submitted_with_its_inline_input(tmp_path):
    a = jobs.plan(GOOD, {}, workdir=tmp_path)
    assert a.kind == "submit" and a.prepared is not None
    doc = json.loads(a.prepared.spec_json)
    assert doc["input"] == {"path": str(tmp_path / "input")}
    assert doc["module"]["path"] == str(jobs.EXAMPLES_DIR / "wordcount.wasm")
    assert a.prepared.input_bytes == b"a b\n"


@pytest.mark.parametrize(("status", "kind"), [
    ({"phase": "Invalid", "reasons": ["x"]}, "none"),
    ({"phase": "Queued", "jobId": "j1"}, "poll"),
    ({"phase": "Running", "jobId": "j1"}, "poll"),
    ({"phase": "Succeeded", "jobId": "j1"}, "export"),
    ({"phase": "Succeeded", "jobId": "j1", "result": {"path": "/r"}}, "none"),
    ({"phase": "Failed", "jobId": "j1"}, "none"),
    ({"phase": "Cancelled", "jobId": "j1"}, "none"),
])
def test_plan_follows_the_status(tmp_path, status, kind):
    a = jobs.plan(GOOD, status, workdir=tmp_path)
    assert a.kind == kind and (kind == "none" or a.job_id == "j1")


def test_every_problem_is_named_at_once(tmp_path):
    spec = {"job": {"version": 2, "module": {"path": "x.txt", "sha256": "zz"}, "colour": "red"},
            "inputText": 7, "extra": 1}
    a = jobs.plan(spec, {}, workdir=tmp_path)
    assert a.kind == "invalid"
    text = "\n".join(a.reasons)
    for path in ("extra", "inputText", "job.version", "job.module.path", "job.module.sha256", "job.colour"):
        assert path in text, path


def test_inline_input_is_bounded_and_exclusive(tmp_path):
    big = {**GOOD, "inputText": "x" * (jobs.MAX_INLINE_INPUT_BYTES + 1)}
    with pytest.raises(SpecError, match="inputText"):
        jobs.prepare(big, workdir=tmp_path)
    both = {"job": {**GOOD["job"], "input": {"object": "0" * 32}}, "inputText": "a"}
    with pytest.raises(SpecError, match=r"either here or as job\.input"):
        jobs.prepare(both, workdir=tmp_path)
    with pytest.raises(SpecError, match=r"job\.input"):
        jobs.prepare({"job": GOOD["job"]}, workdir=tmp_path)
    with pytest.raises(SpecError, match="job"):
        jobs.prepare({"inputText": "a"}, workdir=tmp_path)


@settings(max_examples=150, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                    max_leaves=20))
def test_any_spec_is_a_plan_never_a_crash(tmp_path_factory, job):
    """Whatever a resource holds (the API server keeps unknown fields), the plan is an action;
    an invalid one carries at most MAX_REASONS + 1 bounded reasons."""
    a = jobs.plan({"job": job, "inputText": "x"}, {}, workdir=tmp_path_factory.getbasetemp())
    assert a.kind in ("invalid", "submit")
    assert len(a.reasons) <= jobs.MAX_REASONS + 1
    assert all(len(r) <= jobs.MAX_REASON_CHARS for r in a.reasons)


def test_status_from_describe():
    d = {"job_id": "j", "status": "running", "reason": "", "fragments": 3, "redundancy": 2,
         "done": 4, "failed": 1, "result_hash": "", "result_bytes": 0, "waiting": "",
         "replicas": [{"fragment": 1, "replica": 0, "state": "failed", "node": "n1", "error": "trap"}],
         "integrity": []}
    s = jobs.status_from_describe(d)
    assert s["phase"] == "Running" and s["fragments"] == {"total": 6, "done": 4, "failed": 1}
    assert s["reasons"] == ["fragment 1 replica 0 on n1: trap"] and "resultSha256" not in s
    done = jobs.status_from_describe({**d, "status": "done", "result_hash": "ab", "result_bytes": 9})
    assert done["phase"] == "Succeeded" and done["resultSha256"] == "ab" and done["resultBytes"] == 9
    q = jobs.status_from_describe({**d, "status": "queued", "waiting": "2 nodes short", "replicas": []})
    assert q["phase"] == "Queued" and q["reasons"] == ["waiting: 2 nodes short"]


def test_a_refusal_by_the_node_is_final_with_its_reasons():
    s = jobs.submit_failed_status("invalid job spec", [["input.path", "cannot read /x"]])
    assert s["phase"] == "Invalid" and s["reasons"] == ["input.path: cannot read /x"]
    assert jobs.submit_failed_status("busy")["reasons"] == ["busy"]


def test_result_and_work_paths_stay_in_their_directory(tmp_path):
    p = jobs.result_path(tmp_path, "ns", "../../etc/passwd", "j/1")
    assert p.parent == tmp_path and "/" not in p.name
    w = jobs.job_workdir(tmp_path, "..", "x", "..")
    assert w.parent == tmp_path


# --------------------------------------------------------------------------- federation


def test_federation_plan_and_its_reasons():
    p = federation.plan({"scale": 5, "profile": "wan", "policy": {"configMapRef": {"name": "pol"}}})
    assert (p.statefulset, p.scale, p.profile, p.policy_configmap, p.policy_key) == (
        "enclave-swarm", 5, "wan", "pol", "policy.toml")
    with pytest.raises(federation.FederationSpecError) as e:
        federation.plan({"scale": 0, "profile": "cloud", "statefulSet": "Bad_Name",
                         "policy": {"configMapRef": {}}, "replicas": 3})
    text = "\n".join(e.value.reasons)
    for key in ("scale", "profile", "statefulSet", "policy.configMapRef.name", "replicas"):
        assert key in text
    with pytest.raises(federation.FederationSpecError):
        federation.plan({"scale": True})


def test_policy_checks_are_the_nodes():
    assert federation.check_policy('allowed_kinds = ["tdx"]\nmin_score = 80\n', "wan") == []
    assert "invalid TOML" in federation.check_policy("min_score = = 1", "wan")[0]
    assert "unknown policy keys" in federation.check_policy("min_scor = 1\n", "wan")[0]
    assert "allow_simulated" in federation.check_policy("allow_simulated = true\n", "lan")[0]
    assert federation.check_policy("allow_simulated = true\n", "local-test") == []
    assert "larger" in federation.check_policy("#" * (federation.MAX_POLICY_BYTES + 1), "wan")[0]


def test_node_addr_is_checked():
    a = federation.node_addr("enclave-swarm-0", "enclave-swarm", "prod", PEER)
    assert a == f"/dns4/enclave-swarm-0.enclave-swarm.prod.svc.cluster.local/tcp/4001/p2p/{PEER}"
    from overlay.discovery import split_p2p_addr

    assert split_p2p_addr(a)[1] == PEER  # what `run --bootstrap` accepts
    with pytest.raises(ValueError):
        federation.node_addr("pod", "svc", "ns", "not a peer id")
    with pytest.raises(ValueError):
        federation.node_addr("Pod.x", "svc", "ns", PEER)


_pods = st.sampled_from([f"enclave-swarm-{i}" for i in range(12)])


@given(st.lists(st.tuples(_pods, st.text(alphabet=string.ascii_letters, min_size=1, max_size=8)),
                max_size=30))
def test_bootstrap_text_keeps_one_line_per_pod_newest_first(updates):
    text = ""
    for pod, tag in updates:
        text = federation.bootstrap_text(text, pod, f"/dns4/{pod}.svc/tcp/4001/p2p/{tag}")
        lines = text.splitlines()
        assert lines[0] == f"/dns4/{pod}.svc/tcp/4001/p2p/{tag}"
        pods = [ln.split("/")[2].split(".")[0] for ln in lines]
        assert len(pods) == len(set(pods)) <= federation.MAX_BOOTSTRAP_LINES


def test_federation_status():
    p = federation.plan({"scale": 3})
    node = {"attested_peers": 2, "manager": "m", "term": 4, "consensus": {"members": {"admitted": 3}}}
    assert federation.status_from_node(node, {"readyReplicas": 3}, p)["phase"] == "Ready"
    s = federation.status_from_node(node, {"readyReplicas": 1}, p)
    assert s["phase"] == "Scaling" and s["reasons"] == ["1 of 3 nodes ready"]
    forming = federation.status_from_node({**node, "manager": None}, {"readyReplicas": 3}, p)
    assert forming["phase"] == "Forming"

"""Every manifest under deploy/kubernetes/, rendered as ``kubectl apply -k`` renders it, is
valid for the last three Kubernetes minor versions kubernetes-validate ships schemas for
(strict: an unknown field is an error); every custom resource instance is valid against its
CRD's openAPIV3Schema; and the manifests say what docs/kubernetes.md says they do."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv

from node.k8s import federation, jobs
from node.tasks.spec import SpecError
from tests.k8s.kustomize import KustomizeError, apply_op, render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("sev-snp", "tdx", "dev-insecure-simulated-tee")
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def last_minor_versions(n: int = 3) -> list[str]:
    minors = sorted({tuple(int(x) for x in v.split(".")[:2]) for v in kv.all_versions()})
    return [f"{a}.{b}.0" for a, b in minors[-n:]]


VERSIONS = last_minor_versions()
CRDS = {(d["spec"]["group"], d["spec"]["names"]["kind"]): d for d in render(K8S / "crds")}


def _examples() -> list[dict[str, Any]]:
    out = []
    for f in sorted((K8S / "examples").glob("*.yaml")):
        out += [d for d in yaml.safe_load_all(f.read_text()) if d]
    return out


def _all_objects() -> list[tuple[str, dict[str, Any]]]:
    objs = [("crds", d) for d in CRDS.values()]
    objs += [(f"overlays/{o}", d) for o in OVERLAYS for d in render(K8S / "overlays" / o)]
    objs += [("examples", d) for d in _examples()]
    return objs


def validate(obj: dict[str, Any], version: str) -> None:
    group = obj["apiVersion"].rpartition("/")[0]
    crd = CRDS.get((group, obj["kind"]))
    if crd is not None:  # one of ours (or kopf's peering): its CRD's schema
        jsonschema.validate(obj, crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}, version, strict=True)
    elif obj["kind"] == "ServiceMonitor":
        jsonschema.validate(obj, SERVICE_MONITOR)
    else:
        kubernetes_validate.validate(obj, version, strict=True)


# The Prometheus operator's CRD is not here to validate against: its fields that we use,
# with their types from its API reference (monitoring.coreos.com/v1), nothing else allowed.
SERVICE_MONITOR = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {"type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
                 "properties": {
                     "selector": {"type": "object", "properties": {"matchLabels": {
                         "type": "object", "additionalProperties": {"type": "string"}}}},
                     "endpoints": {"type": "array", "minItems": 1, "items": {
                         "type": "object", "additionalProperties": False, "required": ["port"],
                         "properties": {
                             "port": {"type": "string"}, "path": {"type": "string"},
                             "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                             "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"}}}}}}},
}


def test_three_kubernetes_versions_are_checked():
    assert len(VERSIONS) == 3 and VERSIONS[-1].startswith(kv.major_minor(kv.latest_version()))


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid(version):
    objs = _all_objects()
    assert len(objs) > 30
    for where, obj in objs:
        try:
            validate(obj, version)
        except Exception as exc:
            raise AssertionError(f"{where}: {obj['kind']} {obj['metadata'].get('name')}: {exc}") from None


def test_validation_catches_a_typo():
    """The check is not vacuous: a misspelt field fails strict validation, a wrong type fails
    a CRD schema."""
    sts = next(o for o in render(K8S / "overlays" / "sev-snp") if o["kind"] == "StatefulSet")
    sts["spec"]["template"]["spec"]["runtimeClass"] = "kata-qemu-snp"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, VERSIONS[-1], strict=True)
    job = next(o for o in _examples() if o["kind"] == "EnclaveJob")
    job["spec"]["job"]["split"]["fragments"] = "four"
    with pytest.raises(jsonschema.ValidationError):
        validate(job, VERSIONS[-1])


def _sts(overlay: str) -> dict[str, Any]:
    return next(o for o in render(K8S / "overlays" / overlay) if o["kind"] == "StatefulSet")


def _node(sts: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "node")


@pytest.mark.parametrize(("overlay", "runtime", "label", "tee"), [
    ("sev-snp", "kata-qemu-snp", "amd.feature.node.kubernetes.io/snp", "sev-snp"),
    ("tdx", "kata-qemu-tdx", "intel.feature.node.kubernetes.io/tdx", "tdx")])
def test_confidential_pools(overlay, runtime, label, tee):
    sts = _sts(overlay)
    pod = sts["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == runtime and pod["nodeSelector"] == {label: "true"}
    args = _node(sts)["args"]
    assert f"--tee={tee}" in args
    env = {e["name"]: e.get("value") for e in _node(sts)["env"]}
    assert env["ENCLAVE_SWARM_PROFILE"] == "wan"


def test_the_simulated_tee_is_only_in_the_dev_overlay():
    for o in ("sev-snp", "tdx"):
        text = yaml.safe_dump_all(render(K8S / "overlays" / o))
        assert "sim" not in " ".join(_node(_sts(o))["args"]) and "insecure" not in text.lower()
    base = yaml.safe_dump_all(render(K8S / "base"))
    assert "--tee=sim" not in base and "insecure" not in base.lower()
    dev = _sts("dev-insecure-simulated-tee")
    args = _node(dev)["args"]
    assert {"--tee=sim", "--insecure-simulated-tee"} <= set(args)
    assert any(a.startswith("--psk=") for a in args)  # the node refuses it without a key
    assert dev["spec"]["template"]["metadata"]["labels"]["enclave-swarm.io/insecure"] == "simulated-tee"
    assert "runtimeClassName" not in dev["spec"]["template"]["spec"]


def test_statefulset_service_pdb_and_probes():
    objs = render(K8S / "overlays" / "sev-snp")
    by = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    sts, svc = by[("StatefulSet", "enclave-swarm")], by[("Service", "enclave-swarm")]
    assert svc["spec"]["clusterIP"] == "None" and sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert svc["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    assert {p["name"] for p in svc["spec"]["ports"]} == {"p2p", "metrics"}
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    node = _node(sts)
    assert any(m["name"] == "data" for m in node["volumeMounts"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        cmd = node[probe]["exec"]["command"]
        assert cmd[:2] == ["enclave-swarm", "status"] and "--data-dir=/var/lib/enclave-swarm/node" in cmd
    assert {"--metrics=$(POD_IP):9464", "--metrics-allow-remote"} <= set(node["args"])
    for c in sts["spec"]["template"]["spec"]["containers"]:
        assert {"cpu", "memory"} <= set(c["resources"]["requests"]), c["name"]
        assert c["image"] == f"localhost/enclave-swarm:{VERSION}"
    pdb = by[("PodDisruptionBudget", "enclave-swarm")]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    sm = by[("ServiceMonitor", "enclave-swarm")]
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["selector"]["matchLabels"] == svc["metadata"]["labels"]
    sec = sts["spec"]["template"]["spec"]["securityContext"]
    assert sec["runAsNonRoot"] is True and sec["runAsUser"] != 0


def _strategic_merge(target: Any, patch: Any) -> Any:
    """Strategic merge as the API server does it for the lists the operator patches
    (containers, env, volumes: merged by ``name``)."""
    if isinstance(target, dict) and isinstance(patch, dict):
        out = dict(target)
        for k, v in patch.items():
            out[k] = _strategic_merge(target.get(k), v) if k in target else v
        return out
    if isinstance(target, list) and isinstance(patch, list) and all(
            isinstance(x, dict) and "name" in x for x in target + patch):
        out_list = list(target)
        for item in patch:
            i = next((j for j, x in enumerate(out_list) if x["name"] == item["name"]), None)
            if i is None:
                out_list.append(item)
            else:
                out_list[i] = _strategic_merge(out_list[i], item)
        return out_list
    return patch


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_operators_statefulset_patch_fits_the_manifests(overlay):
    """The federation handler's patch names a container, env variable and volume that exist,
    and the patched StatefulSet is still valid."""
    sts = _sts(overlay)
    p = federation.plan({"scale": 7, "profile": "wan", "policy": {"configMapRef": {"name": "strict"}}})
    patch = federation.statefulset_patch(p, "ab" * 32)
    names = {c["name"] for c in sts["spec"]["template"]["spec"]["containers"]}
    assert {c["name"] for c in patch["spec"]["template"]["spec"]["containers"]} <= names
    assert {v["name"] for v in patch["spec"]["template"]["spec"]["volumes"]} <= {
        v["name"] for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert {e["name"] for e in patch["spec"]["template"]["spec"]["containers"][0]["env"]} <= {
        e["name"] for e in _node(sts)["env"]}
    merged = _strategic_merge(sts, patch)
    assert merged["spec"]["replicas"] == 7
    vols = {v["name"]: v for v in merged["spec"]["template"]["spec"]["volumes"]}
    assert vols["policy"]["configMap"]["name"] == "strict"
    for version in VERSIONS:
        kubernetes_validate.validate(merged, version, strict=True)


def test_rbac_allows_what_the_operator_calls():
    role = next(o for o in render(K8S / "base") if o["kind"] == "Role")
    allowed = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    for need in [("", "configmaps", "get"), ("", "configmaps", "create"), ("", "configmaps", "patch"),
                 ("apps", "statefulsets", "get"), ("apps", "statefulsets", "patch"),
                 ("enclave-swarm.io", "enclavejobs/status", "patch"),
                 ("enclave-swarm.io", "enclavefederations/status", "patch"),
                 ("kopf.dev", "kopfpeerings", "patch")]:
        assert need in allowed, need


def test_example_jobs_meet_the_operator(tmp_path):
    """The example EnclaveJob is accepted by the operator's checks (its module's hash is the
    shipped example's); the invalid one gets every reason, the misspelt key included."""
    ex = {o["metadata"]["name"]: o for o in _examples() if o["kind"] == "EnclaveJob"}
    prepared = jobs.prepare(ex["wordcount"]["spec"], workdir=tmp_path)
    assert prepared.input_bytes and b"quick brown fox" in prepared.input_bytes
    sha = hashlib.sha256((jobs.EXAMPLES_DIR / "wordcount.wasm").read_bytes()).hexdigest()
    assert ex["wordcount"]["spec"]["job"]["module"]["sha256"] == sha
    with pytest.raises(SpecError) as e:
        jobs.prepare(ex["wordcount-typo"]["spec"], workdir=tmp_path)
    paths = {p for p, _ in e.value.errors}
    assert {"job.redundnacy", "job.split.mode", "job.module.sha256"} <= paths


def test_example_federation_meets_the_operator():
    docs = _examples()
    cm = next(o for o in docs if o["kind"] == "ConfigMap")
    fed = next(o for o in docs if o["kind"] == "EnclaveFederation" and o["spec"].get("policy"))
    p = federation.plan(fed["spec"])
    assert p.policy_configmap == cm["metadata"]["name"]
    assert federation.check_policy(cm["data"][p.policy_key], p.profile) == []


def test_the_renderer_refuses_what_it_does_not_do(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(KustomizeError):
        render(tmp_path)
    doc = {"a": [1, 2]}
    apply_op(doc, {"op": "add", "path": "/a/-", "value": 3})
    apply_op(doc, {"op": "add", "path": "/b~1c", "value": 1})
    assert doc == {"a": [1, 2, 3], "b/c": 1}
    with pytest.raises(KustomizeError):
        apply_op(doc, {"op": "test", "path": "/b~1c", "value": 2})


def _entrypoint(tmp_path: Path, hostname: str, lines: str, extra_env: dict[str, str]) -> list[str]:
    fake = tmp_path / "enclave-swarm"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    fake.chmod(0o755)
    boot = tmp_path / "addrs"
    boot.write_text(lines)
    env = {"PATH": os.environ["PATH"], "HOSTNAME": hostname, "ENCLAVE_SWARM_BIN": str(fake),
           "ENCLAVE_SWARM_BOOTSTRAP_FILE": str(boot), **extra_env}
    r = subprocess.run(["sh", str(ROOT / "deploy" / "container" / "entrypoint.sh"), "run", "--data-dir=/d"],
                       capture_output=True, text=True, env=env, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    return r.stdout.splitlines()


def test_the_entrypoint_turns_the_bootstrap_configmap_into_flags(tmp_path):
    a0 = "/dns4/enclave-swarm-0.enclave-swarm.ns.svc.cluster.local/tcp/4001/p2p/12D3KooWA"
    a1 = "/dns4/enclave-swarm-1.enclave-swarm.ns.svc.cluster.local/tcp/4001/p2p/12D3KooWB"
    policy = tmp_path / "policy.toml"
    policy.write_text("min_score = 70\n")
    args = _entrypoint(tmp_path, "enclave-swarm-1", f"# published by the operator\n{a0}\n\n{a1}",
                       {"ENCLAVE_SWARM_PROFILE": "wan", "ENCLAVE_SWARM_POLICY_FILE": str(policy)})
    assert args == ["run", "--data-dir=/d", "--profile", "wan", "--policy", str(policy),
                    "--bootstrap", a0]  # its own line (pod 1) left out
    # no policy file (the ConfigMap is optional): no --policy; pod 0 never waits
    args = _entrypoint(tmp_path, "enclave-swarm-0", "", {"ENCLAVE_SWARM_POLICY_FILE": "/nonexistent",
                                                          "ENCLAVE_SWARM_BOOTSTRAP_WAIT_S": "600"})
    assert args == ["run", "--data-dir=/d"]


def test_a_later_pod_does_not_start_alone(tmp_path):
    """Pod 1 with no node to join after the wait exits 1 saying why (kubelet restarts it),
    rather than founding a federation of its own."""
    with pytest.raises(RuntimeError, match="no node to join"):
        _entrypoint(tmp_path, "enclave-swarm-1", "# nothing yet\n", {"ENCLAVE_SWARM_BOOTSTRAP_WAIT_S": "1"})

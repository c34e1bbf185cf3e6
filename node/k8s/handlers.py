"""The operator's handlers, kopf-free: each turns a resource's spec and status into status
fields, by way of the pure plans (node/k8s/jobs.py, node/k8s/federation.py), this pod's node
(:class:`~node.k8s.nodeclient.NodeClient`) and, for federations, the Kubernetes API
(:class:`~node.k8s.kube.Api`). node/k8s/operator.py registers them with kopf.

Errors: a spec that is wrong is the resource's problem (phase ``Invalid``, reasons in its
status; nothing raised, so the operator goes on with the other resources); a node that does not
answer raises :class:`~node.k8s.nodeclient.NodeUnavailable` (kopf retries later).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from node.k8s import federation, jobs
from node.k8s.kube import Api, ApiError
from node.k8s.nodeclient import NodeClient

SUBMIT_TIMEOUT_S = 120.0   # the node reads and splits the input, then the job is committed
RESULT_TIMEOUT_S = 120.0


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
    """Where this operator's node is and who it is in the cluster (from the pod's env)."""

    data_dir: Path
    pod: str
    namespace: str
    service: str       # the headless Service of the StatefulSet (bootstrap DNS)
    work_dir: Path     # job specs and inline inputs handed to the node
    results_dir: Path  # exported results

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> OperatorConfig:
        data = Path(env.get("ENCLAVE_SWARM_DATA_DIR", "/var/lib/enclave-swarm/node"))
        k8s = Path(env.get("ENCLAVE_SWARM_OPERATOR_DIR", str(data.parent / "operator")))
        return cls(data_dir=data, pod=env.get("POD_NAME", os.uname().nodename),
                   namespace=env.get("POD_NAMESPACE", "default"),
                   service=env.get("ENCLAVE_SWARM_SERVICE", "enclave-swarm"),
                   work_dir=k8s / "jobs", results_dir=k8s / "results")

    def node(self) -> NodeClient:
        return NodeClient(self.data_dir / "control.sock")


# --------------------------------------------------------------------------- EnclaveJob


async def reconcile_job(cfg: OperatorConfig, spec: Mapping[str, Any], status: Mapping[str, Any],
                        *, namespace: str, name: str, uid: str) -> dict[str, Any]:
    """The status fields to write for one ``EnclaveJob`` ({} = nothing changed).

    Raises:
        NodeUnavailable: this pod's node does not answer (retry later).
    """
    workdir = jobs.job_workdir(cfg.work_dir, namespace, name, uid)
    action = jobs.plan(spec, status, workdir=workdir)
    if action.kind == "invalid":
        return jobs.invalid_status(action.reasons)
    if action.kind == "none":
        return {}
    node = cfg.node()
    owner = (status.get("node") or {}).get("pod") if isinstance(status.get("node"), Mapping) else None
    if action.kind != "submit" and owner and owner != cfg.pod:
        return {"reasons": [f"the job was submitted through the node on pod {owner}; this operator "
                            f"runs beside {cfg.pod} and cannot follow it until {owner}'s is active"]}
    if action.kind == "submit":
        assert action.prepared is not None
        return await _submit(cfg, node, workdir, action.prepared)
    out: dict[str, Any] = {}
    if action.kind == "poll":
        reply = await node.call({"cmd": "task-describe", "job_id": action.job_id})
        if not reply.get("ok"):
            return {"reasons": [jobs._clip(f"jobs describe: {reply.get('error')}")]}
        out = jobs.status_from_describe(reply["job"])
        if out["phase"] != jobs.SUCCEEDED:
            return out
    return {**out, **await _export(cfg, node, namespace, name, action.job_id)}


async def _submit(cfg: OperatorConfig, node: NodeClient, workdir: Path,
                  prepared: jobs.Prepared) -> dict[str, Any]:
    st = await node.status()
    marker = workdir / "job-id"
    with contextlib.suppress(OSError):  # submitted before the status was written (a restart)
        job_id = marker.read_text().strip()
        if job_id:
            return jobs.submitted_status(job_id, cfg.pod, str(st["peer_id"]))
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    spec_path = workdir / "job.json"
    _write_private(spec_path, prepared.spec_json.encode())
    if prepared.input_bytes is not None:
        _write_private(workdir / "input", prepared.input_bytes)
    reply = await node.call({"cmd": "task-submit", "spec": str(spec_path), "input": None,
                             "object": None}, timeout_s=SUBMIT_TIMEOUT_S)
    if not reply.get("ok"):
        return jobs.submit_failed_status(str(reply.get("error", "refused")), reply.get("errors") or ())
    job_id = str(reply["job_id"])
    _write_private(marker, job_id.encode())
    return jobs.submitted_status(job_id, cfg.pod, str(st["peer_id"]))


async def _export(cfg: OperatorConfig, node: NodeClient, namespace: str, name: str,
                  job_id: str) -> dict[str, Any]:
    cfg.results_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = jobs.result_path(cfg.results_dir, namespace, name, job_id)
    reply = await node.call({"cmd": "task-result", "job_id": job_id, "out": str(path)},
                            timeout_s=RESULT_TIMEOUT_S)
    if not reply.get("ok"):
        return {"reasons": [jobs._clip(f"result not exported yet: {reply.get('error')}")]}
    described = await node.call({"cmd": "task-describe", "job_id": job_id})
    digest = str((described.get("job") or {}).get("result_hash", ""))
    return jobs.result_status(cfg.pod, str(path), int(reply["bytes"]), digest)


async def forget_job(cfg: OperatorConfig, status: Mapping[str, Any], *, namespace: str, name: str,
                     uid: str) -> None:
    """A deleted resource: cancel its job if it still runs, and drop the files handed over."""
    job_id = status.get("jobId")
    if job_id and status.get("phase") not in jobs.TERMINAL_PHASES:
        await cfg.node().call({"cmd": "task-cancel", "job_id": job_id,
                               "reason": f"EnclaveJob {namespace}/{name} deleted"}, timeout_s=60.0)
    shutil.rmtree(jobs.job_workdir(cfg.work_dir, namespace, name, uid), ignore_errors=True)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


# --------------------------------------------------------------------------- EnclaveFederation


async def reconcile_federation(cfg: OperatorConfig, api: Api, spec: Mapping[str, Any], *,
                               namespace: str) -> dict[str, Any]:
    """Apply an ``EnclaveFederation``: patch its StatefulSet (scale, profile, policy), publish
    this pod's node in the bootstrap ConfigMap, and return the status to write.

    Raises:
        NodeUnavailable: this pod's node does not answer (retry later).
        ApiError: the API server refused a call other than a missing object.
    """
    try:
        p = federation.plan(spec)
    except federation.FederationSpecError as exc:
        return {"phase": "Invalid", "reasons": exc.reasons}
    text = ""
    if p.policy_configmap:
        cm = await api.get("configmaps", namespace, p.policy_configmap)
        if cm is None:
            return {"phase": "Invalid", "reasons": [f"policy: no ConfigMap {p.policy_configmap}"]}
        text = (cm.get("data") or {}).get(p.policy_key, "")
        if not text:
            return {"phase": "Invalid",
                    "reasons": [f"policy: ConfigMap {p.policy_configmap} has no key {p.policy_key}"]}
        reasons = federation.check_policy(text, p.profile)
        if reasons:
            return {"phase": "Invalid", "reasons": reasons}
    digest = federation.policy_sha256(text) if text else ""
    try:
        await api.patch("statefulsets", namespace, p.statefulset,
                        federation.statefulset_patch(p, digest), strategic=True)
    except ApiError as exc:
        if exc.status != 404:
            raise
        return {"phase": "Invalid", "reasons": [f"statefulSet: no StatefulSet {p.statefulset}"]}
    node = await cfg.node().status()
    addr = federation.node_addr(cfg.pod, cfg.service, namespace, str(node["peer_id"]))
    boot_name = f"{p.statefulset}-bootstrap"
    cm = await api.get("configmaps", namespace, boot_name)
    old = ((cm or {}).get("data") or {}).get("addrs", "")
    new = federation.bootstrap_text(old, cfg.pod, addr)
    if new != old:
        await api.put_configmap(namespace, boot_name, {"addrs": new})
    sts = await api.get("statefulsets", namespace, p.statefulset) or {}
    return {**federation.status_from_node(node, sts.get("status") or {}, p),
            "policySha256": digest, "bootstrap": addr}

"""``EnclaveFederation``: scale, profile and attestation policy of a StatefulSet of nodes, and
the bootstrap list its new nodes join through. Pure functions, no kopf and no I/O.

Theory of operation
-------------------
The StatefulSet, its headless Service and PodDisruptionBudget come from deploy/kubernetes/
(Kustomize). An ``EnclaveFederation`` names that StatefulSet and says how many nodes it runs
(``scale``), the profile new data dirs are initialised with (``profile``) and the ConfigMap
holding the attestation policy (``policy.configMapRef``). :func:`plan` checks the spec and the
policy text (the node's own parser, and the profile's rule that only ``local-test`` admits the
simulated TEE); :func:`statefulset_patch` is the strategic-merge patch that applies it: the
replica count, ``ENCLAVE_SWARM_PROFILE``, the policy volume, and a hash of the policy in the
pod template, so that a changed policy rolls the pods one at a time (the PodDisruptionBudget
keeps a Raft quorum meanwhile).

Nodes join with ``--bootstrap <multiaddr>/p2p/<peer id>``, and a peer id exists only once a
node has made its identity. So the operator, which runs beside a node, publishes that node's
stable DNS address (``<pod>.<headless service>.<namespace>.svc.cluster.local``, kept by the
StatefulSet across restarts, with the peer id its PersistentVolume keeps) into the bootstrap
ConfigMap (:func:`bootstrap_text`); every node's entry point passes each line as
``--bootstrap``. Joining one member is enough: the join exchange (docs/architecture.md)
introduces the rest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import tomllib
from collections.abc import Mapping
from typing import Any

from node.attestation.policy import PolicyError, policy_from_mapping

PROFILES = ("lan", "wan", "local-test")
MAX_SCALE = 256
MAX_POLICY_BYTES = 64 * 1024
MAX_BOOTSTRAP_LINES = 8
NODE_PORT = 4001
POLICY_KEY = "policy.toml"
NODE_CONTAINER = "node"
POLICY_VOLUME = "policy"
POLICY_HASH_ANNOTATION = "enclave-swarm.io/policy-sha256"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
_PEER_ID = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{32,128}$")  # base58btc


class FederationSpecError(ValueError):
    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__("; ".join(reasons))


@dataclasses.dataclass(frozen=True)
class FederationPlan:
    statefulset: str
    scale: int
    profile: str
    policy_configmap: str  # "" = the profile's built-in policy
    policy_key: str


def plan(spec: Mapping[str, Any]) -> FederationPlan:
    """Check an ``EnclaveFederation`` spec.

    Raises:
        FederationSpecError: every problem found, one reason each.
    """
    reasons: list[str] = []
    allowed = {"statefulSet", "scale", "profile", "policy"}
    reasons += [f"{k}: unknown key (expected one of {', '.join(sorted(allowed))})"
                for k in sorted(set(spec) - allowed)]
    sts = spec.get("statefulSet", "enclave-swarm")
    if not isinstance(sts, str) or not _DNS_LABEL.match(sts):
        reasons.append("statefulSet: expected the name of a StatefulSet (a DNS label)")
        sts = ""
    scale = spec.get("scale")
    if not isinstance(scale, int) or isinstance(scale, bool) or not 1 <= scale <= MAX_SCALE:
        reasons.append(f"scale: expected an integer 1..{MAX_SCALE}")
        scale = 0
    profile = spec.get("profile", "wan")
    if profile not in PROFILES:
        reasons.append(f"profile: expected one of {', '.join(PROFILES)}")
    name, key = "", POLICY_KEY
    pol = spec.get("policy")
    if pol is not None:
        ref = pol.get("configMapRef") if isinstance(pol, Mapping) else None
        if not isinstance(ref, Mapping) or not isinstance(ref.get("name"), str) \
                or not _DNS_LABEL.match(ref["name"]):
            reasons.append("policy.configMapRef.name: expected the name of a ConfigMap")
        else:
            name = ref["name"]
            key = ref.get("key", POLICY_KEY)
            if not isinstance(key, str) or not _CONFIGMAP_KEY.match(key):
                reasons.append("policy.configMapRef.key: expected a ConfigMap key")
    if reasons:
        raise FederationSpecError(reasons)
    return FederationPlan(str(sts), int(scale), str(profile), name, str(key))


def check_policy(text: str, profile: str) -> list[str]:
    """Why the policy text would stop the nodes from starting ([] = it is fine): the node's
    own checks (node/attestation/policy.py, node/runtime.py's rule for the simulated TEE)."""
    if len(text.encode()) > MAX_POLICY_BYTES:
        return [f"policy: larger than {MAX_POLICY_BYTES} bytes"]
    try:
        data = tomllib.loads(text)
        policy = policy_from_mapping(data)
    except tomllib.TOMLDecodeError as exc:
        return [f"policy: invalid TOML ({exc})"]
    except PolicyError as exc:
        return [f"policy: {exc}"]
    if policy.allow_simulated and profile != "local-test":
        return [f"policy: allow_simulated = true, but profile {profile} does not admit the "
                "simulated TEE (anyone can forge its evidence)"]
    return []


def policy_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def statefulset_patch(p: FederationPlan, policy_hash: str) -> dict[str, Any]:
    """The strategic-merge patch (containers, env and volumes merge by name) for ``p``."""
    volume: dict[str, Any] = {"name": POLICY_VOLUME, "configMap": {
        "name": p.policy_configmap or f"{p.statefulset}-policy", "optional": True,
        "items": [{"key": p.policy_key, "path": POLICY_KEY}]}}
    return {"spec": {
        "replicas": p.scale,
        "template": {
            "metadata": {"annotations": {POLICY_HASH_ANNOTATION: policy_hash or "builtin"}},
            "spec": {
                "containers": [{"name": NODE_CONTAINER,
                                "env": [{"name": "ENCLAVE_SWARM_PROFILE", "value": p.profile}]}],
                "volumes": [volume],
            }}}}


def node_addr(pod: str, service: str, namespace: str, peer_id: str, port: int = NODE_PORT) -> str:
    """A node's bootstrap address by its StatefulSet DNS name (stable across restarts)."""
    for what, v in (("pod", pod), ("service", service), ("namespace", namespace)):
        if not _DNS_LABEL.match(v):
            raise ValueError(f"{what} {v!r} is not a DNS label")
    if not _PEER_ID.match(peer_id):
        raise ValueError(f"{peer_id!r} is not a peer id")
    return f"/dns4/{pod}.{service}.{namespace}.svc.cluster.local/tcp/{port}/p2p/{peer_id}"


def bootstrap_text(existing: str, pod: str, addr: str, max_lines: int = MAX_BOOTSTRAP_LINES) -> str:
    """The bootstrap list with ``addr`` as ``pod``'s line (replacing an older one of the same
    pod: a new identity after its volume was lost), at most ``max_lines``, newest first."""
    mine = f"/dns4/{pod}."
    keep = [ln.strip() for ln in existing.splitlines()
            if ln.strip() and not ln.lstrip().startswith("#") and not ln.strip().startswith(mine)]
    lines = [addr, *keep][:max_lines]
    return "\n".join(lines) + "\n"


def status_from_node(node: Mapping[str, Any], sts: Mapping[str, Any], p: FederationPlan) -> dict[str, Any]:
    """The resource's status from the operator's own node and the StatefulSet's status."""
    ready = int(sts.get("readyReplicas") or 0)
    cons = node.get("consensus")
    cons = cons if isinstance(cons, Mapping) else {}
    members = cons.get("members")
    members = members if isinstance(members, Mapping) else {}
    out: dict[str, Any] = {
        "replicas": p.scale, "readyReplicas": ready,
        "attestedPeers": int(node.get("attested_peers") or 0),
        "manager": node.get("manager") or "", "term": int(node.get("term") or 0),
        "members": int(members.get("admitted") or 0),
        "reasons": [],
    }
    if ready < p.scale:
        out["phase"] = "Scaling"
        out["reasons"].append(f"{ready} of {p.scale} nodes ready")
    elif not out["manager"]:
        out["phase"] = "Forming"
        out["reasons"].append("no manager elected yet")
    else:
        out["phase"] = "Ready"
    return out

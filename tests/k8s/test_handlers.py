"""node/k8s/handlers.py's refusals that come before any node is asked: an EnclaveFederation
whose spec, policy ConfigMap or StatefulSet is wrong gets phase Invalid and its reason, and
nothing is patched (the API is tests/k8s/fakes.py's dict; no node runs: asking one would fail)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from node.k8s import handlers
from node.k8s.nodeclient import NodeUnavailable
from tests.k8s.fakes import DictApi


def _cfg(tmp: Path) -> handlers.OperatorConfig:
    return handlers.OperatorConfig(data_dir=tmp / "no-node", pod="enclave-swarm-0", namespace="ns",
                                   service="enclave-swarm", work_dir=tmp / "jobs", results_dir=tmp / "res")


def _run(tmp: Path, api: DictApi, spec: dict) -> dict:
    return asyncio.run(handlers.reconcile_federation(_cfg(tmp), api, spec, namespace="ns"))


STS = ("statefulsets", "enclave-swarm")


@pytest.mark.parametrize(("objects", "spec", "reason"), [
    ({STS: {}}, {"scale": 0}, "scale: expected an integer"),
    ({STS: {}}, {"scale": 3, "policy": {"configMapRef": {"name": "nope"}}}, "no ConfigMap nope"),
    ({STS: {}, ("configmaps", "p"): {"data": {"other.toml": "x"}}},
     {"scale": 3, "policy": {"configMapRef": {"name": "p"}}}, "has no key policy.toml"),
    ({STS: {}, ("configmaps", "p"): {"data": {"policy.toml": "min_score = 'high'\n"}}},
     {"scale": 3, "policy": {"configMapRef": {"name": "p"}}}, "min_score must be an integer"),
    ({}, {"scale": 3}, "no StatefulSet enclave-swarm"),
])
def test_a_federation_that_cannot_apply_is_invalid_with_its_reason(tmp_path, objects, spec, reason):
    api = DictApi(dict(objects))
    status = _run(tmp_path, api, spec)
    assert status["phase"] == "Invalid" and any(reason in r for r in status["reasons"]), status
    assert api.patches == []


def test_a_valid_federation_needs_its_node(tmp_path):
    """The StatefulSet is patched, then publishing the node needs the node: NodeUnavailable
    (kopf retries), never an Invalid status."""
    api = DictApi({STS: {"spec": {"replicas": 1}}})
    with pytest.raises(NodeUnavailable):
        _run(tmp_path, api, {"scale": 4})
    assert api.objects[STS]["spec"]["replicas"] == 4

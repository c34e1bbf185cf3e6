"""The Kubernetes API as far as node/k8s/handlers.py uses it (node/k8s/kube.py's ``Api``: get,
patch, put_configmap), over a dict, for tests where no API server runs. Patches are recorded,
and applied as a shallow update of ``spec.replicas`` only: no test reads more of them back."""

from __future__ import annotations

import copy
from typing import Any

from node.k8s.kube import ApiError


class DictApi:
    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.objects = objects
        self.patches: list[tuple[str, str, dict[str, Any], bool]] = []

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((plural, name))
        return copy.deepcopy(obj) if obj is not None else None

    async def patch(self, plural: str, namespace: str, name: str, body: dict[str, Any], *,
                    strategic: bool = False) -> dict[str, Any]:
        obj = self.objects.get((plural, name))
        if obj is None:
            raise ApiError(404, f"{plural} {name} not found")
        self.patches.append((plural, name, copy.deepcopy(body), strategic))
        if "replicas" in body.get("spec", {}):
            obj.setdefault("spec", {})["replicas"] = body["spec"]["replicas"]
        return copy.deepcopy(obj)

    async def put_configmap(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self.objects.setdefault(("configmaps", name), {})["data"] = dict(data)

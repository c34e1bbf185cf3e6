"""The few Kubernetes API calls the federation handler makes, over kopf's own HTTP client
library (aiohttp), with the pod's service-account credentials. Nothing else of the API is
wrapped: ``get`` and ``patch`` of a namespaced object, and ``put_configmap``.

The handlers take any object with these three coroutines (:class:`Api`), so that they can be
driven without an API server (tests/k8s/ does, with a dict behind them).
"""

from __future__ import annotations

import json
import os
import ssl
from pathlib import Path
from typing import Any, Protocol

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TIMEOUT_S = 10.0
# the resources the handlers touch: plural -> API path prefix
PATHS = {"configmaps": "/api/v1", "statefulsets": "/apis/apps/v1"}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Api(Protocol):
    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def patch(self, plural: str, namespace: str, name: str, body: dict[str, Any], *,
                    strategic: bool = False) -> dict[str, Any]: ...

    async def put_configmap(self, namespace: str, name: str, data: dict[str, str]) -> None: ...


class InClusterApi:
    """An API server over HTTPS with a bearer token: the cluster this pod runs in
    (:meth:`from_service_account`), or any ``base`` URL, CA context and token file."""

    def __init__(self, base: str, ssl_context: ssl.SSLContext, token_file: Path) -> None:
        self.base, self.ssl, self.token_file = base.rstrip("/"), ssl_context, token_file

    @classmethod
    def from_service_account(cls) -> InClusterApi:
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
        base = f"https://{host}:{port}" if ":" not in host else f"https://[{host}]:{port}"
        return cls(base, ssl.create_default_context(cafile=str(SA_DIR / "ca.crt")), SA_DIR / "token")

    def _headers(self, content_type: str = "application/json") -> dict[str, str]:
        token = self.token_file.read_text().strip()  # re-read: kubelet rotates it
        return {"Authorization": f"Bearer {token}", "Content-Type": content_type,
                "Accept": "application/json"}

    async def _request(self, method: str, path: str, body: Any = None,
                       content_type: str = "application/json") -> tuple[int, Any]:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as s, s.request(
                method, self.base + path, ssl=self.ssl, headers=self._headers(content_type),
                data=None if body is None else json.dumps(body)) as r:
            text = await r.text()
            payload = json.loads(text) if text else {}
            return r.status, payload

    @staticmethod
    def _path(plural: str, namespace: str, name: str = "") -> str:
        tail = f"/{name}" if name else ""
        return f"{PATHS[plural]}/namespaces/{namespace}/{plural}{tail}"

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        status, obj = await self._request("GET", self._path(plural, namespace, name))
        if status == 404:
            return None
        if status >= 300:
            raise ApiError(status, str(obj.get("message", "")))
        return dict(obj)

    async def patch(self, plural: str, namespace: str, name: str, body: dict[str, Any], *,
                    strategic: bool = False) -> dict[str, Any]:
        ctype = "application/strategic-merge-patch+json" if strategic else "application/merge-patch+json"
        status, obj = await self._request("PATCH", self._path(plural, namespace, name), body, ctype)
        if status >= 300:
            raise ApiError(status, str(obj.get("message", "")))
        return dict(obj)

    async def put_configmap(self, namespace: str, name: str, data: dict[str, str]) -> None:
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace}, "data": data}
        status, obj = await self._request("PATCH", self._path("configmaps", namespace, name),
                                          {"data": data}, "application/merge-patch+json")
        if status == 404:
            status, obj = await self._request("POST", self._path("configmaps", namespace), body)
        if status >= 300:
            raise ApiError(status, str(obj.get("message", "")))

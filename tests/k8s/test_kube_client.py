"""node/k8s/kube.py's client against an HTTPS server on loopback that answers the REST paths,
verbs and content types of the Kubernetes API for the three calls the operator makes (no API
server runs here): the URLs, the patch flavours, the bearer token re-read from its file, a
missing object, the create-on-404 of ``put_configmap`` and a refusal."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from node.k8s.kube import ApiError, InClusterApi


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    crt, pem = tmp / "ca.crt", tmp / "key.pem"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


class Server:
    """The API paths the client uses, over a dict of objects; every request recorded."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {
            "/apis/apps/v1/namespaces/ns/statefulsets/enclave-swarm": {"spec": {"replicas": 1}},
        }
        self.requests: list[tuple[str, str, str, str, Any]] = []
        self.forbidden: set[str] = set()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        self.requests.append((request.method, request.path, request.headers.get("Content-Type", ""),
                              request.headers.get("Authorization", ""), json.loads(body) if body else None))
        if request.path in self.forbidden:
            return web.json_response({"kind": "Status", "message": "forbidden"}, status=403)
        obj = self.objects.get(request.path)
        if request.method == "POST":
            new = json.loads(body)
            self.objects[f"{request.path}/{new['metadata']['name']}"] = new
            return web.json_response(new, status=201)
        if obj is None:
            return web.json_response({"kind": "Status", "message": "not found"}, status=404)
        if request.method == "PATCH":
            patch = json.loads(body)
            for k, v in patch.items():
                obj[k] = {**obj.get(k, {}), **v} if isinstance(v, dict) else v
        return web.json_response(obj)


async def _with_server(tmp: Path, server: Server, check) -> None:
    crt, pem = _self_signed(tmp)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(crt, pem)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    token = tmp / "token"
    token.write_text("first-token\n")
    try:
        api = InClusterApi(f"https://127.0.0.1:{port}", ssl.create_default_context(cafile=str(crt)), token)
        await check(api, token)
    finally:
        await runner.cleanup()


def test_the_three_calls(tmp_path):
    server = Server()

    async def check(api: InClusterApi, token: Path) -> None:
        sts = await api.get("statefulsets", "ns", "enclave-swarm")
        assert sts == {"spec": {"replicas": 1}}
        assert await api.get("configmaps", "ns", "missing") is None
        token.write_text("rotated-token\n")  # the kubelet rotates it: read at every request
        await api.patch("statefulsets", "ns", "enclave-swarm", {"spec": {"replicas": 5}}, strategic=True)
        await api.put_configmap("ns", "enclave-swarm-bootstrap", {"addrs": "a\n"})  # 404: created
        await api.put_configmap("ns", "enclave-swarm-bootstrap", {"addrs": "b\n"})  # patched
        server.forbidden.add("/apis/apps/v1/namespaces/ns/statefulsets/other")
        with pytest.raises(ApiError) as e:
            await api.patch("statefulsets", "ns", "other", {"spec": {}})
        assert e.value.status == 403 and "forbidden" in str(e.value)

    asyncio.run(_with_server(tmp_path, server, check))
    r = server.requests
    assert [(m, p) for m, p, *_ in r] == [
        ("GET", "/apis/apps/v1/namespaces/ns/statefulsets/enclave-swarm"),
        ("GET", "/api/v1/namespaces/ns/configmaps/missing"),
        ("PATCH", "/apis/apps/v1/namespaces/ns/statefulsets/enclave-swarm"),
        ("PATCH", "/api/v1/namespaces/ns/configmaps/enclave-swarm-bootstrap"),
        ("POST", "/api/v1/namespaces/ns/configmaps"),
        ("PATCH", "/api/v1/namespaces/ns/configmaps/enclave-swarm-bootstrap"),
        ("PATCH", "/apis/apps/v1/namespaces/ns/statefulsets/other"),
    ]
    assert r[0][3] == "Bearer first-token" and r[2][3] == "Bearer rotated-token"
    assert r[2][2] == "application/strategic-merge-patch+json"
    assert r[3][2] == r[5][2] == "application/merge-patch+json"
    assert r[4][4]["kind"] == "ConfigMap" and r[4][4]["data"] == {"addrs": "a\n"}
    boot = server.objects["/api/v1/namespaces/ns/configmaps/enclave-swarm-bootstrap"]
    assert boot["data"] == {"addrs": "b\n"}
    assert server.objects["/apis/apps/v1/namespaces/ns/statefulsets/enclave-swarm"]["spec"]["replicas"] == 5


def test_an_untrusted_server_is_refused(tmp_path):
    """The CA is the service account's: a server with another certificate is not talked to."""
    server = Server()

    async def check(api: InClusterApi, token: Path) -> None:
        other = InClusterApi(api.base, ssl.create_default_context(), token)  # the system CAs only
        with pytest.raises(Exception) as e:
            await other.get("statefulsets", "ns", "enclave-swarm")
        assert "certificate" in str(e.value).lower() or isinstance(e.value, ssl.SSLError)

    asyncio.run(_with_server(tmp_path, server, check))
    assert server.requests == []

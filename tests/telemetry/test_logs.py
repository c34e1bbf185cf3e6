"""Logs: a short federation of node processes (debug level, half the nodes logging JSON, half
text) stores a file with ``put`` and reads it back with ``get``; then every line they logged,
and everything the CLI printed, is searched for the secrets that run held: each node's identity
key and simulated-TEE host key, each holder's shard-store sealing secret, the object's key
shares and its data key (combined from the shares), and the file's plaintext. None may appear,
in any encoding. The JSON lines all parse, and a JSON line naming another node carries its id
in the ``peer`` field. (There is no PIN anywhere in this build: no component takes one.)

And, in process: both formats render the same records, one line each, the text line naming the
peer a record is about."""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from node.datadir import DataDir
from node.demo import NodeProcess, all_mutually_attested
from node.logs import FIELDS, formatter
from node.shards.gf256 import combine_shares
from node.shards.service import sealing_secret_from_identity
from node.shards.store import ShardStore
from node.testing import federation, fully_attested, poll_until, wait_until

FILE_BYTES = 300_000


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli", *args], capture_output=True, text=True,
                          timeout=180)


def encodings(secret: bytes) -> list[bytes]:
    """The forms a secret could take in a log line."""
    out = [secret, secret.hex().encode(), secret.hex().upper().encode()]
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        out.append(enc(secret).rstrip(b"="))
    out.append(repr(secret).encode()[2:-1])  # bytes' repr, b'...' without the quotes
    return [e for e in out if len(e) >= 16]


def add_object_secrets(secrets: dict[str, bytes], shares: list, plaintext: bytes) -> None:  # type: ignore[type-arg]
    """An object's secrets besides its holders': its data key (rebuilt from two of its three
    key shares) and sixteen 32-byte slices of its plaintext."""
    secrets["object data key"] = combine_shares(shares[:2], 2)
    for off in range(0, len(plaintext) - 32, len(plaintext) // 16):
        secrets[f"plaintext @{off}"] = plaintext[off:off + 32]


def leaked(secrets: dict[str, bytes], corpus: bytes) -> list[tuple[str, bytes]]:
    """(name, first bytes of the form found) of each secret found in ``corpus`` in any of its
    encodings."""
    return [(what, form[:12]) for what, secret in secrets.items() for form in encodings(secret)
            if form in corpus]


def wait_for(pred, timeout_s: float, step_s: float = 0.3, what: str = "condition"):  # type: ignore[no-untyped-def]
    return poll_until(pred, timeout_s, step_s, what)


@pytest.mark.process
@pytest.mark.slow
def test_no_secret_of_a_put_and_get_is_logged(tmp_path: Path) -> None:
    nodes: list[NodeProcess] = []
    printed: list[str] = []
    try:
        for i in range(4):
            fmt = "json" if i % 2 == 0 else "text"
            boot = [nodes[0].addrs[0]] if nodes else None
            p = NodeProcess(tmp_path / f"n{i}", bootstrap=boot,
                            extra=["--log-format", fmt, "--log-level", "debug"])
            nodes.append(p)
            p.wait_listening(60)
        wait_for(lambda: all_mutually_attested([p.status() for p in nodes]), 90)
        owner = nodes[0]
        src, out = tmp_path / "plain.bin", tmp_path / "back.bin"
        plaintext = os.urandom(FILE_BYTES)
        src.write_bytes(plaintext)
        put = cli("put", str(src), "-k", "2", "-n", "3", "--data-dir", str(owner.data_dir))
        printed += [put.stdout, put.stderr]
        assert put.returncode == 0, put.stderr
        oid = put.stdout.strip().split()[-1]
        get = cli("get", oid, "-o", str(out), "--data-dir", str(owner.data_dir))
        printed += [get.stdout, get.stderr]
        assert get.returncode == 0, get.stderr
        assert out.read_bytes() == plaintext
        ls = cli("ls", "--json", "--data-dir", str(owner.data_dir))
        printed += [ls.stdout, ls.stderr]
    finally:
        for p in nodes:
            p.signal(signal.SIGTERM)
        for p in nodes:
            p.wait(20)

    # ---- the secrets this run held
    secrets: dict[str, bytes] = {}
    shares = []
    for p in nodes:
        dd = DataDir(p.data_dir)
        key = dd.load_identity()
        secrets[f"{p.name} identity key"] = key.private_bytes_raw()
        secrets[f"{p.name} identity file"] = dd.identity_path.read_bytes()
        host = serialization.load_pem_private_key((p.data_dir / "sim-tee" / "host.key").read_bytes(), None)
        secrets[f"{p.name} sim host key"] = host.private_bytes_raw()  # type: ignore[union-attr]
        sealing = dd.storage_secret() or sealing_secret_from_identity(key)
        secrets[f"{p.name} store sealing secret"] = sealing
        store = ShardStore(p.data_dir / "shards", sealing, quota_bytes=1 << 40, receipt_key=key,
                           holder_peer_id=p.name)
        for info in store.list_shards():
            if info.object_id.hex() == oid:
                share = store.read_share(info.object_id, info.index)
                shares.append(share)
                secrets[f"{p.name} key share {info.index}"] = share.value
    assert len(shares) == 3, "every holder's share was read back"
    add_object_secrets(secrets, shares, plaintext)

    # ---- everything logged or printed
    logs = {p.name: p.log_path.read_bytes() for p in nodes}
    # the logs cover the run (their size is not the measure: a run on a quiet machine takes
    # seconds and logs a few KiB): every node logged at debug level, and the owner the put
    assert all(b'"level": "debug"' in v or b" DEBUG " in v for v in logs.values()), \
        f"debug records in every log: {({k: len(v) for k, v in logs.items()})}"
    assert f"put {oid}".encode() in logs[owner.name]
    corpus = b"\n".join([*logs.values(), *(s.encode() for s in printed)])
    assert not (found := leaked(secrets, corpus)), f"secrets in the logs: {found}"

    # ---- JSON lines parse, and a line naming another node carries its id as `peer`
    ids = {p.name: _peer_id(p) for p in nodes}
    missing = []
    for i, p in enumerate(nodes):
        if i % 2:
            continue
        for raw in logs[p.name].decode().splitlines():
            rec = json.loads(raw)  # every line: libp2p's warnings included (node/logs.py)
            assert {"ts", "level", "logger", "msg"} <= set(rec)
            others = [pid for name, pid in ids.items() if name != p.name and pid in rec["msg"]]
            named = {rec.get("peer"), *rec.get("peers", ())}
            if others and not set(others) <= named:
                missing.append(rec["msg"])
    assert not missing, "lines naming a peer without the peer field:\n" + "\n".join(missing)


def _peer_id(p: NodeProcess) -> str:
    from overlay.host import peer_id_of

    return str(peer_id_of(DataDir(p.data_dir).load_identity()))


async def test_no_secret_of_an_in_process_put_and_get_is_logged(tmp_path: Path) -> None:
    """The fast twin of the process test above: four in-process nodes with the shard service,
    every record of a put and a get at debug level, formatted as text and as JSON."""
    from node.shards.service import sealing_secret_from_identity as sealing_of
    from tests.shards_net.helpers import shard_federation, write_random

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep(level=logging.DEBUG)
    root = logging.getLogger()
    old = root.level
    root.addHandler(keep)
    root.setLevel(logging.DEBUG)
    secrets: dict[str, bytes] = {}
    try:
        async with shard_federation(tmp_path, 4) as (agents, svcs, _):
            plaintext = write_random(tmp_path / "in.bin", 200_000)
            res = await svcs[0].put(tmp_path / "in.bin", n=3, k=2)
            await svcs[0].get(bytes.fromhex(res["object_id"]), tmp_path / "out.bin")
            assert (tmp_path / "out.bin").read_bytes() == plaintext
            oid = bytes.fromhex(res["object_id"])
            shares = []
            for a, svc in zip(agents, svcs, strict=True):
                secrets[f"{a.peer_id} identity"] = a._identity.private_bytes_raw()
                secrets[f"{a.peer_id} sealing"] = sealing_of(a._identity)
                for info in svc.store.list_shards():
                    if info.object_id == oid:
                        shares.append(svc.store.read_share(oid, info.index))
                        secrets[f"share {info.index}"] = shares[-1].value
    finally:
        root.removeHandler(keep)
        root.setLevel(old)
    assert len(shares) == 3
    add_object_secrets(secrets, shares, plaintext)
    text, js = formatter("text"), formatter("json")
    corpus = "\n".join(f"{text.format(r)}\n{js.format(r)}" for r in records).encode()
    assert len(records) > 50
    assert not (found := leaked(secrets, corpus)), f"secrets in the logs: {found}"


async def test_both_formats_render_the_same_records_one_line_each(tmp_path: Path) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep(level=logging.DEBUG)
    root = logging.getLogger()
    old = root.level
    root.addHandler(keep)
    root.setLevel(logging.DEBUG)
    try:
        async with federation(tmp_path, 3, gossip=True) as agents:
            await wait_until(lambda: fully_attested(agents), 30)
            agents[2].stop()
            await wait_until(lambda: len(agents[0].peers.attested()) == 1, 30)
    finally:
        root.removeHandler(keep)
        root.setLevel(old)
    ours = [r for r in records if r.name.startswith("enclave_swarm")]
    assert len(ours) > 10
    text, js = formatter("text"), formatter("json")
    about_peers = 0
    for r in ours:
        t, j = text.format(r), json.loads(js.format(r))
        assert "\n" not in t or r.exc_info  # one line (a traceback follows on its own lines)
        assert j["msg"] == r.getMessage() and r.getMessage() in t
        assert j["level"] == r.levelname.lower() and j["logger"] == r.name
        for key in FIELDS:
            assert (key in j) == hasattr(r, key)
        if hasattr(r, "peer"):
            about_peers += 1
            assert r.peer in t and j["peer"] == r.peer  # type: ignore[attr-defined]
    assert about_peers >= 4  # attested, member alive, disconnected, ...


def test_text_names_the_peer_a_message_leaves_out() -> None:
    r = logging.LogRecord("enclave_swarm.x", logging.INFO, __file__, 1, "stream refused", None, None)
    r.peer = "12D3KooWExample"
    assert formatter("text").format(r).endswith("stream refused peer=12D3KooWExample")
    assert json.loads(formatter("json").format(r))["peer"] == "12D3KooWExample"


def test_every_log_call_with_a_peer_argument_passes_its_id() -> None:
    """A static guard for the rule above: a log call in node/ or overlay/ that formats a
    peer-ish value (a variable named for a peer, holder, issuer, target, ...) passes
    ``extra={"peer": ...}`` (or ``"peers"``), so JSON lines carry it as a field. This node's own
    id (``self.peer_id``) is not about a peer."""
    import ast
    import re

    root = Path(__file__).resolve().parents[2]
    peerish = re.compile(r"^(pid|peer_id|peer|dest|holder|new_holder|issuer|target|node|from_id|lost|"
                         r"sender|subject)$|\.(holder|new_holder|peer_id|subject|issuer|node|origin)$")
    missing = []
    for path in sorted([*root.glob("node/**/*.py"), *root.glob("overlay/**/*.py")]):
        for n in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                    and isinstance(n.func.value, ast.Name) and n.func.value.id in ("log", "logger")
                    and n.func.attr in ("debug", "info", "warning", "error", "exception", "critical", "log")):
                continue
            extra = next((k.value for k in n.keywords if k.arg == "extra"), None)
            if isinstance(extra, ast.Dict) and {"peer", "peers"} & {
                    k.value for k in extra.keys if isinstance(k, ast.Constant)}:
                continue
            args = n.args[2:] if n.func.attr == "log" else n.args[1:]
            named = [ast.unparse(a) for a in args]
            own = ("self.peer_id", "agent.peer_id", "self.me")
            if any(peerish.search(x) and x not in own for x in named):
                missing.append(f"{path.relative_to(root)}:{n.lineno}")
    assert not missing, f"log calls naming a peer without extra peer: {missing}"

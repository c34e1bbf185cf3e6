"""The shard part of ``enclave-swarm demo``: 3-of-5 storage surviving the loss of two holders.

``run_shard_demo(nodes, console)`` takes a running, mutually attested federation of at least six
node processes (node 0 is the owner; the owner never holds its own shards, so five others are
needed), and, through the real CLI:

1. stores a generated file 3-of-5 (``put``) and shows where the shards went (``ls``);
2. SIGKILLs two holders, waits until the owner sees them gone, reads the file back (``get``) and
   checks it bit for bit;
3. SIGKILLs a third holder and shows the clean refusal: exit code 1, the failed holders named,
   and no output file.

Killed nodes stay dead (their ``NodeProcess.wait`` reports -SIGKILL).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from node.demo import NodeProcess

DEMO_FILE_BYTES = 6 * 1024 * 1024 + 12345
_CLI_TIMEOUT_S = 300.0


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args], capture_output=True, text=True, timeout=_CLI_TIMEOUT_S
    )


def _ls(owner: NodeProcess) -> list[dict[str, Any]]:
    r = _cli("ls", "--json", "--data-dir", str(owner.data_dir))
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip())
    objects: list[dict[str, Any]] = json.loads(r.stdout)
    return objects


def _wait_unattested(owner: NodeProcess, oid: str, dead: set[str], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        obj = next((o for o in _ls(owner) if o["object_id"] == oid), None)
        if obj is not None and not any(h["attested"] for h in obj["holders"] if h["peer_id"] in dead):
            return True
        time.sleep(0.5)
    return False


def run_shard_demo(nodes: list[NodeProcess], console: Console) -> bool:
    """Run the demo on ``nodes`` (≥ 6, attested); True when every step behaved as it should."""
    if len(nodes) < 6:
        console.print("[red]the shard demo needs at least 6 nodes (owner + 5 holders)[/red]")
        return False
    owner = nodes[0]
    by_peer: dict[str, NodeProcess] = {}
    for p in nodes:
        st = p.status()
        if st is not None:
            by_peer[st["peer_id"]] = p
    with tempfile.TemporaryDirectory(prefix="enclave-swarm-shards-") as tmp:
        src, out = Path(tmp) / "original.bin", Path(tmp) / "rebuilt.bin"
        src.write_bytes(os.urandom(DEMO_FILE_BYTES))
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        console.print(
            f"[bold]Data sovereignty[/bold]: storing a {DEMO_FILE_BYTES:,}-byte file 3-of-5 "
            f"(sha256 {digest[:16]}…) from {owner.name}"
        )
        t0 = time.monotonic()
        r = _cli("put", str(src), "--shards", "5", "--threshold", "3", "--data-dir", str(owner.data_dir))
        if r.returncode != 0:
            console.print(f"[red]put failed:[/red] {r.stderr.strip()}")
            return False
        oid = r.stdout.strip()
        console.print(
            f"  object {oid} stored in {time.monotonic() - t0:.1f}s "
            "(AES-256-GCM, zfec 3-of-5, key Shamir-split 3-of-5)"
        )
        obj = next(o for o in _ls(owner) if o["object_id"] == oid)
        holders = [h["peer_id"] for h in obj["holders"]]
        for h in obj["holders"]:
            name = by_peer[h["peer_id"]].name if h["peer_id"] in by_peer else "?"
            console.print(f"  shard {h['index']} → {name} (…{h['peer_id'][-10:]})")

        def kill(pids: list[str]) -> None:
            for pid in pids:
                p = by_peer[pid]
                p.signal(signal.SIGKILL)
                p.wait(10)
                console.print(
                    f"  [red]SIGKILL[/red] {p.name} (holder of shard {holders.index(pid)})"
                )

        first_two = holders[:2]
        kill(first_two)
        if not _wait_unattested(owner, oid, set(first_two), 60):
            console.print("[red]the owner did not notice the lost holders[/red]")
            return False
        t0 = time.monotonic()
        r = _cli("get", oid, "-o", str(out), "--data-dir", str(owner.data_dir))
        if r.returncode != 0:
            console.print(f"[red]get with 3 of 5 holders failed:[/red] {r.stderr.strip()}")
            return False
        same = hashlib.sha256(out.read_bytes()).hexdigest() == digest
        console.print(
            f"  read back from the 3 surviving holders in {time.monotonic() - t0:.1f}s: "
            + ("[green]bit-exact[/green]" if same else "[red]MISMATCH[/red]")
        )
        if not same:
            return False
        out.unlink()
        third = holders[2]
        kill([third])
        if not _wait_unattested(owner, oid, {*first_two, third}, 60):
            console.print("[red]the owner did not notice the third lost holder[/red]")
            return False
        r = _cli("get", oid, "-o", str(out), "--data-dir", str(owner.data_dir))
        named = all(pid in r.stderr for pid in (*first_two, third))
        clean = r.returncode == 1 and named and not out.exists()
        console.print(f"  with only 2 of 5 holders left, get refuses (exit {r.returncode}):")
        console.print(f"    {r.stderr.strip()}", markup=False, highlight=False)
        console.print(
            "  "
            + (
                "[green]clean refusal: every failed holder named, no partial output[/green]"
                if clean
                else "[red]the refusal was not clean[/red]"
            )
        )
        return clean

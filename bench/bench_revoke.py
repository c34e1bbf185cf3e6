"""How long a failed attestation takes to revoke a node everywhere, on node processes, against
a crash's detection measured in the same run.

Five ``enclave-swarm run`` processes on loopback (profile local-test: simulated TEE,
re-attestation every 2 s), formed (one manager, a full council, all mutually attested); then,
on a fresh federation per arm and round, arms interleaved:

- **revoke** (what is measured): a node's simulated TEE starts reporting debug mode, which the
  policy forbids (the debug switch of node/attestation/simulated.py, the chaos ``attest``
  fault's). Figures: the time until the first node's committed state revokes it, and until
  every other node's does (``status``'s ``consensus.revoked``), polled every 50 ms;
- **revoke-manager**: the same, but the node whose TEE fails is the manager itself: it must
  notice (its peers' score records about it), step down, and its successor revoke it;
- **crash** (baseline: a fault the transport shows at once): a node SIGKILLed; the time until
  no other node holds it attested.

The node is never node 0 (it founded the federation); in ``revoke`` and ``crash`` not the
manager either. The docs (docs/reliability.md, finding 8) have what this showed about the
16-64 s the chaos runs saw.

    python -m bench.bench_revoke --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.attestation.simulated import DEBUG_SWITCH
from node.demo import NodeProcess, council_formed, kill_nodes, start_nodes
from node.testing import poll_until

ARMS = ("revoke", "revoke-manager", "crash")
NODES = 5
POLL_S = 0.05


def _wait(pred: Any, timeout_s: float, what: str) -> float:
    """Poll ``pred`` every POLL_S; the monotonic time it first held."""
    poll_until(pred, timeout_s, POLL_S, what)
    return time.monotonic()


def _one(root: Path, arm: str) -> dict[str, float]:
    root.mkdir(parents=True)
    nodes = start_nodes([root / f"node{i}" for i in range(NODES)])
    try:
        _wait(lambda: council_formed([p.status() for p in nodes]), 180, "formation")
        sts = [p.status() for p in nodes]
        manager = sts[0]["manager"] if sts[0] else None
        if arm == "revoke-manager" and sts[0] and manager == sts[0]["peer_id"]:
            # node 0 leads: hand over first, so the manager is a node that can be revoked
            _transfer(nodes[0])
            _wait(lambda: council_formed(s := [p.status() for p in nodes]) and s[0] is not None
                  and s[0]["manager"] != s[0]["peer_id"], 60, "the hand-over")
            sts = [p.status() for p in nodes]
            manager = sts[0]["manager"] if sts[0] else None
        want_manager = arm == "revoke-manager"
        k = next(i for i in range(1, NODES)
                 if sts[i] and (sts[i]["peer_id"] == manager) == want_manager)
        victim, vid = nodes[k], str(sts[k]["peer_id"])  # type: ignore[index]
        others = [p for p in nodes if p is not victim]

        def revoked_at(p: NodeProcess) -> bool:
            s = p.status()
            return s is not None and vid in s["consensus"]["revoked"]

        def unattested(p: NodeProcess) -> bool:
            s = p.status()
            return s is not None and not any(q["peer_id"] == vid and q["attested"] for q in s["peers"])

        t0 = time.monotonic()
        if arm.startswith("revoke"):
            (victim.data_dir / "sim-tee" / DEBUG_SWITCH).write_bytes(b"")
            first = _wait(lambda: any(revoked_at(p) for p in others), 120, "the first revocation")
            every = _wait(lambda: all(revoked_at(p) for p in others), 60, "revoked everywhere")
            cut = _wait(lambda: all(unattested(p) for p in others), 60, "cut off everywhere")
            return {"first_s": first - t0, "every_s": every - t0, "cut_s": cut - t0}
        victim.signal(9)
        victim.wait(10)
        cut = _wait(lambda: all(unattested(p) for p in others), 60, "crash seen everywhere")
        return {"cut_s": cut - t0}
    finally:
        kill_nodes(nodes)


def _transfer(p: NodeProcess) -> None:
    import subprocess

    subprocess.run([sys.executable, "-m", "node.cli", "manager", "transfer", "--data-dir",
                    str(p.data_dir)], capture_output=True, text=True, timeout=60, check=True)


def _line(name: str, xs: list[float]) -> str:
    return (f"{name}: median {statistics.median(xs):.2f} s (min {min(xs):.2f}, max {max(xs):.2f}, "
            f"{len(xs)} rounds)")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench_revoke", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"load average at start {os.getloadavg()[0]:.1f}")
    results: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory(prefix="bench-revoke-") as tmp:
        for r in range(args.rounds):
            for arm in ARMS:  # interleaved: a change of load hits both arms alike
                got = _one(Path(tmp) / f"{arm}{r}", arm)
                results[arm].append(got)
                print(f"  round {r} {arm}: " + ", ".join(f"{k} {v:.2f}" for k, v in got.items()),
                      flush=True)
    rev, crash = results["revoke"], results["crash"]
    print(f"{NODES} node processes, re-attestation every 2 s (local-test):")
    for arm, who in (("revoke", "a council member's"), ("revoke-manager", "the manager's")):
        xs = results[arm]
        print("  " + _line(f"{who} TEE to debug -> the first node's committed state revokes it",
                           [x["first_s"] for x in xs]))
        print("  " + _line("  -> every other node's", [x["every_s"] for x in xs]))
        print("  " + _line("  -> no other node holds it attested", [x["cut_s"] for x in xs]))
    print("  " + _line("baseline: SIGKILL -> no other node holds it attested", [x["cut_s"] for x in crash]))
    ratio = statistics.median([x["every_s"] for x in rev]) / statistics.median([x["cut_s"] for x in crash])
    print(f"  revoked everywhere / crash seen everywhere: {ratio:.2f}x (medians)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

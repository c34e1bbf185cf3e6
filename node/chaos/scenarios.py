"""``make chaos``: a fixed set of seeded chaos scenarios (a few minutes on two cores).

``python -m node.chaos.scenarios [--out DIR] [--only NAME ...]`` runs each scenario of
:data:`SCENARIOS` with ``enclave-swarm chaos``'s machinery and prints one line per checker;
exit 0 only if every scenario's verdict is ok. The seeds are fixed, so a failure here is
replayed with the same command. docs/reliability.md says what each scenario found.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    seed: int
    nodes: int
    duration_s: float
    faults: tuple[str, ...]
    why: str


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("manager-faults", 3, 5, 90.0, ("partition", "kill", "pause"),
             "the manager isolated, SIGKILLed and paused in turn: a new manager each time, no "
             "two in one term, every acknowledged put readable"),
    Scenario("links-clock-disk", 9, 5, 120.0, ("netem", "skew", "disk"),
             "10 % loss and 5 % duplication on three nodes' links (and 20 ms delay where the "
             "kernel has netem), a node whose clock runs behind, a node whose data dir is full"),
    Scenario("slow-nodes", 1, 5, 75.0, ("slow",),
             "a node held to 10 % of one CPU, then the manager to 5 % (cgroup quotas): alive and "
             "attested but late in everything; the federation keeps working around it"),
    Scenario("attestation-failure", 7, 5, 60.0, ("attest",),
             "a node's simulated TEE starts reporting debug mid-run: it must be revoked and "
             "never take part again"),
)


def main(argv: list[str] | None = None) -> int:
    from node.chaos.run import ChaosError, ChaosRun, RunConfig

    p = argparse.ArgumentParser(prog="python -m node.chaos.scenarios", description=__doc__)
    p.add_argument("--out", type=Path, default=None, help="results (default: a new temp dir)")
    p.add_argument("--only", action="append", default=[], choices=[s.name for s in SCENARIOS])
    args = p.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="enclave-swarm-chaos-"))
    failed = []
    for sc in SCENARIOS:
        if args.only and sc.name not in args.only:
            continue
        print(f"== {sc.name}: SEED={sc.seed} nodes={sc.nodes} duration={sc.duration_s:g}s "
              f"faults={','.join(sc.faults)}", flush=True)
        t0 = time.monotonic()
        run = ChaosRun(RunConfig(nodes=sc.nodes, seed=sc.seed, duration_s=sc.duration_s, faults=sc.faults),
                       out / sc.name)
        try:
            verdict = run.run()
        except ChaosError as exc:
            print(f"   could not run: {exc}", flush=True)
            failed.append(sc.name)
            continue
        for ch in verdict["checks"]:
            print(f"   {'ok  ' if ch['ok'] else 'FAIL'} {ch['name']}: {json.dumps(ch['figures'])}")
            for v in ch["violations"][:5]:
                print(f"        {v}")
        print(f"   {'ok' if verdict['ok'] else 'FINDINGS'} in {time.monotonic() - t0:.0f} s "
              f"({out / sc.name})", flush=True)
        if not verdict["ok"]:
            failed.append(sc.name)
    print(f"chaos: {'all scenarios passed' if not failed else 'findings in ' + ', '.join(failed)} ({out})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

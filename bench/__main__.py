"""Run every benchmark module (`bench/bench_*.py`), or those named on the command line.

    python -m bench                  # all
    python -m bench attestation sim  # only bench_attestation.py and bench_sim.py
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def main(argv: list[str]) -> int:
    from node.logs import setup_logging

    setup_logging("text", "error")  # the figures, not the nodes' logs
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    if argv:
        wanted = {f"bench_{a.removeprefix('bench_')}" for a in argv}
        unknown = wanted - set(names)
        if unknown:
            print(f"unknown benchmarks: {', '.join(sorted(unknown))}; have {', '.join(names)}",
                  file=sys.stderr)
            return 2
        names = [n for n in names if n in wanted]
    failed = 0
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        mod = importlib.import_module(f"bench.{name}")
        rc = mod.main([])
        failed += rc != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

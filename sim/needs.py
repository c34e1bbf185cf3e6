"""What the ``sim`` options need, checked before a run starts (issue 17, "fail early").

A run can take hours; an option whose needs are missing must be refused before it starts,
not after. :func:`problems` looks at every option and says what is wrong, in words a user can
act on: a missing optional package (with the install hint), an output file in a directory that
does not exist, an option the chosen scenario family does not take. :mod:`sim.cli` prints them
and exits 2 (a usage error), before the ``SEED=`` line and before any child interpreter or
mypyc build.

Module availability is asked of the import system (``importlib.util.find_spec``), without
importing the module: matplotlib takes half a second to import and is needed only at the end.
"""

from __future__ import annotations

import argparse
import importlib.util
import os

PLOT_HINT = "pip install 'enclave-swarm[plot]'  (or: pip install 'matplotlib>=3.8,<4')"


def module_available(name: str) -> bool:
    """Whether ``import name`` can find the module (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent that fails to import; a blocked module
        return False


def _dir_problem(flag: str, path: str) -> str | None:
    parent = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(parent):
        return f"{flag} {path}: the directory {parent} does not exist"
    if not os.access(parent, os.W_OK):
        return f"{flag} {path}: the directory {parent} is not writable"
    if os.path.isdir(path):
        return f"{flag} {path}: is a directory"
    return None


def problems(args: argparse.Namespace, *, family: str) -> list[str]:
    """Every reason the run described by ``args`` cannot complete as asked (empty: none).

    ``family`` is ``membership``, ``council`` or ``tasks`` (which world runs the scenario)."""
    out: list[str] = []
    plot = getattr(args, "plot", None)
    json_dest = getattr(args, "json", None)
    runs = getattr(args, "runs", 1)
    jobs = getattr(args, "jobs", 1)
    if runs < 1 or jobs < 1:
        out.append("need --runs >= 1 and --jobs >= 1")
    if plot:
        if family == "council":
            out.append("--plot: the council scenarios draw no plot")
        elif runs > 1:
            out.append("--plot draws one run: use it without --runs (or with --runs 1)")
        if not module_available("matplotlib"):
            out.append(f"--plot needs matplotlib, which is not installed: {PLOT_HINT}")
        if (why := _dir_problem("--plot", plot)) is not None:
            out.append(why)
    if json_dest and json_dest != "-" and (why := _dir_problem("--json", json_dest)) is not None:
        out.append(why)
    if family == "tasks" and runs > 1:
        out.append("--runs: the tasks scenario runs one seed at a time")
    return out

"""The manager part of ``enclave-swarm demo``: show the elected manager, SIGKILL it, show its
successor.

``run_manager_demo(nodes, console)`` takes the demo's running federation (node/demo.py
``NodeProcess`` list, every pair attested) and returns True when a successor took over.
The killed node stays down; the caller tears the rest down as usual.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from rich.table import Table

from node.demo import NodeProcess

ELECT_TIMEOUT_S = 60.0
FAILOVER_TIMEOUT_S = 30.0


def _agreed(statuses: list[dict[str, Any] | None], min_council: int = 1) -> str | None:
    """The manager every node agrees on, with at least ``min_council`` voters seated."""
    live = [s for s in statuses if s]
    if not live or len(live) != len(statuses):
        return None
    managers = {s.get("manager") for s in live}
    terms = {s.get("term") for s in live}
    council = set(live[0].get("council") or ())
    seated = all(s.get("role") in ("manager", "council") for s in live if s["peer_id"] in council)
    if len(managers) == 1 and None not in managers and len(terms) == 1 \
            and len(council) >= max(1, min_council) and seated \
            and sum(s.get("role") == "manager" for s in live) == 1:
        return str(managers.pop())
    return None


def council_table(statuses: list[dict[str, Any] | None], title: str,
                  names: list[str] | None = None) -> Table:
    """One row per node; ``names`` labels the rows (default: their positions)."""
    table = Table(title=title)
    for col in ("node", "peer id", "role", "term", "manager", "commit index"):
        table.add_column(col)
    for i, s in enumerate(statuses):
        name = names[i] if names is not None else str(i)
        if s is None:
            table.add_row(name, "-", "[red]down[/red]", "-", "-", "-")
            continue
        role = s.get("role", "-")
        table.add_row(name, "…" + s["peer_id"][-10:],
                      f"[bold green]{role}[/bold green]" if role == "manager" else role,
                      str(s.get("term")), "…" + str(s.get("manager"))[-10:],
                      str(s.get("commit_index")))
    return table


def run_manager_demo(nodes: list[NodeProcess], console: Any) -> bool:
    """Show the manager, SIGKILL it, show the successor. Returns True on success."""
    # A council that can lose its manager and still elect one: three voters (two survive, a
    # majority). The manager seats voters as they catch up, so a young council can be smaller.
    need = min(3, len(nodes))
    console.print(f"[bold]Manager election[/bold]: waiting for the council to agree on a manager "
                  f"with {need} voters seated…")
    deadline = time.monotonic() + ELECT_TIMEOUT_S
    manager = None
    statuses: list[dict[str, Any] | None] = []
    while time.monotonic() < deadline and manager is None:
        statuses = [p.status() for p in nodes]
        manager = _agreed(statuses, need)
        if manager is None:
            time.sleep(0.2)
    if manager is None:
        console.print(f"[red]no manager with {need} council voters agreed on in time[/red]")
        return False
    names = [p.name for p in nodes]
    console.print(council_table(statuses, "council before the crash", names))
    idx = next(i for i, s in enumerate(statuses) if s and s["peer_id"] == manager)
    old_term = statuses[idx]["term"]  # type: ignore[index]
    console.print(f"Manager is {nodes[idx].name} (…{manager[-10:]}, term {old_term}). "
                  f"[bold red]SIGKILL[/bold red] it.")
    t0 = time.monotonic()
    nodes[idx].signal(signal.SIGKILL)
    nodes[idx].wait(10)
    rest = [p for i, p in enumerate(nodes) if i != idx]
    successor = None
    deadline = time.monotonic() + FAILOVER_TIMEOUT_S
    while time.monotonic() < deadline and successor is None:
        sts = [p.status() for p in rest]
        m = _agreed(sts)
        if m is not None and m != manager and all(s and s["term"] > old_term for s in sts):
            successor = m
            elapsed = time.monotonic() - t0
        else:
            time.sleep(0.05)
    statuses = [None if i == idx else p.status() for i, p in enumerate(nodes)]
    if successor is None:
        console.print("[red]no successor took over in time[/red]")
        return False
    j = next(i for i, s in enumerate(statuses) if s and s["peer_id"] == successor)
    console.print(council_table(statuses, "council after the crash", names))
    console.print(f"Successor: {nodes[j].name} (…{successor[-10:]}), term "
                  f"{statuses[j]['term']}, agreed by every survivor "  # type: ignore[index]
                  f"{elapsed:.2f}s after the kill.")
    return True

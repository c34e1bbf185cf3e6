"""``enclave-swarm put | get | ls | rm``: shard commands, done by the running node.

The CLI resolves paths to absolute ones, sends a ``shard-*`` command over the node's control
socket and, for put / get / rm, polls the job it started (``shard-job``) until it ends, drawing
a progress bar on stderr (rich) when the transfer is large. Exit codes: 0 ok, 1 failed, 2 usage;
failures print one line ``enclave-swarm: reason`` on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

PROGRESS_MIN_BYTES = 8 * 1024 * 1024  # smaller transfers finish before a bar is worth drawing
POLL_S = 0.2


def _cli() -> ModuleType:
    """node.cli as it is running (``__main__`` under ``python -m node.cli``), so that the
    CliError raised here is the class its main() catches."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if main is not None and spec is not None and spec.name == "node.cli":
        return main
    return importlib.import_module("node.cli")


def CliError(msg: str, code: int = 1) -> Exception:
    err: Exception = _cli().CliError(msg, code)
    return err


def node_request(args: argparse.Namespace, cmd: dict[str, Any]) -> dict[str, Any]:
    reply: dict[str, Any] = _cli().node_request(args, cmd)
    return reply


def add_parsers(sub: Any) -> dict[str, Any]:
    _data_dir_arg = _cli()._data_dir_arg
    p = sub.add_parser("put", help="store a file k-of-n on attested holders; prints the object id")
    p.add_argument("file", type=Path)
    p.add_argument("--shards", "-n", type=int, default=5, metavar="N", help="number of shards (default 5)")
    p.add_argument(
        "--threshold", "-k", type=int, default=3, metavar="K", help="shards needed to rebuild (default 3)"
    )
    _data_dir_arg(p)
    p = sub.add_parser("get", help="rebuild a stored object into a file")
    p.add_argument("object_id")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT")
    _data_dir_arg(p)
    p = sub.add_parser("ls", help="list stored objects with their holders and health")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _data_dir_arg(p)
    p = sub.add_parser("rm", help="erase an object on every holder (signed receipts)")
    p.add_argument("object_id")
    _data_dir_arg(p)
    return {"put": cmd_put, "get": cmd_get, "ls": cmd_ls, "rm": cmd_rm}


def _wait_job(args: argparse.Namespace, job_id: str, label: str) -> dict[str, Any]:
    """Poll the node's job until it ends; a progress bar on stderr for large transfers."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    progress: Progress | None = None
    task = None
    phase = ""
    try:
        while True:
            st = _job(args, job_id)
            if st["state"] != "running":
                break
            if st["total"] >= PROGRESS_MIN_BYTES:
                if progress is None:
                    progress = Progress(
                        TextColumn("{task.description}"),
                        BarColumn(),
                        DownloadColumn(),
                        TransferSpeedColumn(),
                        TimeRemainingColumn(),
                        console=Console(stderr=True),
                        transient=True,
                    )
                    progress.start()
                if st["phase"] != phase or task is None:
                    phase = st["phase"]
                    if task is not None:
                        progress.update(task, visible=False)
                    task = progress.add_task(f"{label}: {phase}", total=st["total"])
                progress.update(task, completed=st["done"], total=st["total"])
            time.sleep(POLL_S)
    finally:
        if progress is not None:
            progress.stop()
    if st["state"] == "failed":
        raise CliError(st.get("error") or f"{label} failed")
    result: dict[str, Any] = st["result"]
    return result


def _job(args: argparse.Namespace, job_id: str) -> dict[str, Any]:
    return node_request(args, {"cmd": "shard-job", "job": job_id})


def cmd_put(args: argparse.Namespace) -> int:
    path = args.file.expanduser().absolute()
    if not path.is_file():
        raise CliError(f"{args.file}: not a readable file", EXIT_FAIL)
    if not 1 <= args.threshold <= args.shards <= 255:
        raise CliError("need 1 <= --threshold <= --shards <= 255", EXIT_USAGE)
    job = node_request(args, {"cmd": "shard-put", "path": str(path), "n": args.shards, "k": args.threshold})
    res = _wait_job(args, job["job"], "put")
    print(res["object_id"])
    return EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    out = args.output.expanduser().absolute()
    if not out.parent.is_dir():
        raise CliError(f"{out.parent}: no such directory", EXIT_FAIL)
    job = node_request(args, {"cmd": "shard-get", "object_id": args.object_id, "out": str(out)})
    res = _wait_job(args, job["job"], "get")
    print(
        f"{res['size']} bytes written to {res['out']} (from shards {', '.join(map(str, res['from']))})",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_rm(args: argparse.Namespace) -> int:
    job = node_request(args, {"cmd": "shard-rm", "object_id": args.object_id})
    res = _wait_job(args, job["job"], "rm")
    print(f"erased {res['object_id']}: {len(res['receipts'])} signed receipts verified", file=sys.stderr)
    return EXIT_OK


def cmd_ls(args: argparse.Namespace) -> int:
    objects = node_request(args, {"cmd": "shard-ls"})["objects"]
    if args.json:
        print(json.dumps(objects, indent=2, sort_keys=True))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    if not objects:
        console.print("no objects")
        return EXIT_OK
    now = time.time()
    for o in objects:
        colour = {"healthy": "green", "degraded": "yellow"}.get(o["health"], "red")
        console.print(
            f"[bold]{o['object_id']}[/bold]  {o['size']} bytes  {o['k']}-of-{o['n']}  "
            f"revision {o['revision']}  [{colour}]{o['health']}[/{colour}] "
            f"({o['healthy_holders']}/{o['n']} holders attested)"
        )
        table = Table(show_header=True, box=None, padding=(0, 2))
        for col in ("shard", "holder", "attested", "last verified"):
            table.add_column(col)
        for h in o["holders"]:
            lv = h["last_verified"]
            table.add_row(
                str(h["index"]),
                h["peer_id"],
                "yes" if h["attested"] else f"[red]no[/red] ({h['problem']})",
                "never" if lv is None else f"{now - lv:.0f}s ago",
            )
        console.print(table)
    return EXIT_OK

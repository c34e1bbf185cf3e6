"""The shard service's control commands (``shard-put|get|rm|ls|job|placements``, what
``enclave-swarm put|get|rm|ls`` send over the control socket): a node.runtime extension after
``node.shards.service``. put, get and rm run as jobs the CLI follows (``shard-job``).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from node.control import register_command
from node.shards.errors import ShardServiceError
from node.shards.service import MAX_JOBS, Job, ShardService, service_of
from overlay.errors import RemoteProtocolError

log = logging.getLogger("enclave_swarm.shards")

COMMANDS = ("shard-put", "shard-get", "shard-ls", "shard-rm", "shard-job", "shard-placements")


def attach(agent: Any, data_dir: Any = None) -> None:
    """node.runtime extension (after node.shards.service): register the commands."""
    for name in COMMANDS:
        register_command(name, _handler)


def _handler(agent: Any, req: dict[str, Any]) -> dict[str, Any]:
    try:
        svc = service_of(agent)
    except KeyError:
        return {"ok": False, "error": "this node has no shard service"}
    return command(svc, req)


def start_job(svc: ShardService, kind: str, fn: Callable[[Job], Awaitable[dict[str, Any]]]) -> Job:
    if svc._nursery is None:
        raise ShardServiceError("the shard service is not running")
    running = sum(1 for j in svc._jobs.values() if j.state == "running")
    if len(svc._jobs) >= MAX_JOBS or running >= MAX_JOBS // 2:
        raise ShardServiceError("too many shard jobs; try again shortly")
    job = Job(secrets.token_hex(8), kind)
    svc._jobs[job.id] = job

    async def run() -> None:
        try:
            job.result = await fn(job)
            job.state = "done"
        except (ShardServiceError, RemoteProtocolError, OSError) as exc:
            job.state, job.error = "failed", str(exc)
            log.warning("%s failed: %s", kind, exc)
        except Exception as exc:  # a bug of ours: loud, but the node stays up
            job.state, job.error = "failed", f"internal error: {type(exc).__name__}: {exc}"
            svc.agent.counters.inc("internal_error", f"shard-{kind}")
            log.exception("internal error in shard %s", kind)
        finally:
            job.finished_at = time.time()

    svc._nursery.start_soon(run)
    return job


def command(svc: ShardService, req: dict[str, Any]) -> dict[str, Any]:
    cmd = req["cmd"]
    try:
        if cmd == "shard-job":
            job = svc._jobs.get(str(req.get("job")))
            if job is None:
                return {"ok": False, "error": "unknown job"}
            return {"ok": True, **job.to_json()}
        if cmd == "shard-ls":
            return {"ok": True, "objects": svc.ls()}
        if cmd == "shard-placements":
            return {"ok": True, "placements": svc.managed.committed_listing()}
        if cmd == "shard-put":
            path = Path(str(req.get("path", "")))
            n, k = int(req.get("n", 5)), int(req.get("k", 3))
            if not path.is_absolute():
                return {"ok": False, "error": "path must be absolute"}
            job = start_job(svc, "put", lambda j: svc.put(path, n=n, k=k, job=j))
        elif cmd == "shard-get":
            oid, out = _oid(req), Path(str(req.get("out", "")))
            if not out.is_absolute():
                return {"ok": False, "error": "output path must be absolute"}
            job = start_job(svc, "get", lambda j: svc.get(oid, out, job=j))
        elif cmd == "shard-rm":
            oid = _oid(req)
            job = start_job(svc, "rm", lambda j: svc.rm(oid))
        else:
            return {"ok": False, "error": f"unknown command {cmd}"}
    except (ShardServiceError, ValueError, TypeError) as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "job": job.id}



def _oid(req: dict[str, Any]) -> bytes:
    raw = str(req.get("object_id", ""))
    try:
        oid = bytes.fromhex(raw)
    except ValueError:
        raise ValueError(f"object id {raw[:40]!r} is not hex") from None
    if len(oid) != 16:
        raise ValueError("an object id is 32 hex characters")
    return oid

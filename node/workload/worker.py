"""The worker process: ``python -m node.workload.worker``, one fragment at a time.

Started and owned by ``engine.WorkloadEngine``; it is the unit the engine kills (SIGKILL) when a
fragment outlives its deadline plus grace, whatever the worker is doing.

Protocol on the process's own stdin/stdout (which are moved to private descriptors at start, so
that nothing else printed by this process, e.g. wasmtime-py's own diagnostics, can corrupt it):
frames of a 4-byte big-endian length and a CBOR map, at most ``MAX_FRAME`` bytes.

* worker -> engine, once at start: ``{"ready": True}``.
* engine -> worker: ``{"module_sha256", "module", "input_path", "limits": {...}, "grants": {...}}``;
  the engine wrote the fragment to ``input_path`` (in its private directory) and the module reads
  it as its stdin: the fragment is not copied through the pipe nor re-encoded.
  (``"test_hang_s"`` too, honoured only when the environment sets
  ``ENCLAVE_SWARM_WORKLOAD_TEST_HOOKS=1``: it sleeps outside wasm, so that tests can prove
  the kill path).
* worker -> engine: the reply of ``Runner.run`` plus ``"compiled": bool``; or, when the request
  carried ``"module": None`` (the engine believes this worker has it compiled) and the module is
  not in the cache, ``{"need_module": True}`` and the engine sends the request again with it.

The engine is this process's only peer and is trusted; frames are still bounded and checked so
that a bug cannot make the worker allocate without end. A malformed request ends the worker.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from typing import Any, BinaryIO

import cbor2

from node.workload.frames import DIR_ENV, LEN, MAX_FRAME, PARENT_ENV, TEST_HOOKS_ENV, encode_frame

ORPHAN_POLL_S = 0.5


def _read_exact(f: BinaryIO, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = f.read(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _read_frame(f: BinaryIO) -> dict[str, Any] | None:
    head = _read_exact(f, LEN.size)
    if head is None:
        return None
    (n,) = LEN.unpack(head)
    if n > MAX_FRAME:
        raise ValueError(f"frame of {n} bytes exceeds {MAX_FRAME}")
    data = _read_exact(f, n)
    if data is None:
        return None
    body = cbor2.loads(data)
    if not isinstance(body, dict):
        raise ValueError("frame is not a map")
    return body


def _write_all(f: BinaryIO, data: bytes) -> None:
    # A raw (unbuffered) write may be partial; the engine reads exactly one frame's length.
    view = memoryview(data)
    while view:
        view = view[f.write(view) or 0:]


def _die_with_parent() -> None:
    """Exit when the engine's process is gone, so that a worker stuck outside wasm cannot
    outlive an agent that was killed (nobody else would kill it), removing the engine's fragment
    files first (nobody else would remove them). A watchdog thread polls the parent pid:
    PR_SET_PDEATHSIG would fire when the *thread* that spawned us exits, and trio spawns
    processes from its short-lived worker threads."""
    parent = os.environ.get(PARENT_ENV, "")
    if not parent.isdigit():
        return

    # The engine's fragment directory: nobody else is left to remove the fragments in it.
    fragments = os.environ.get(DIR_ENV, "")

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(ORPHAN_POLL_S)
        if fragments and os.path.basename(fragments).startswith("es-workload-"):
            shutil.rmtree(fragments, ignore_errors=True)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def main() -> int:
    _die_with_parent()
    # Take the protocol pipes for ourselves; fd 0 becomes /dev/null, fd 1 goes to stderr.
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
    proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    from node.workload.limits import Grants, Limits
    from node.workload.runner import Runner

    hooks = os.environ.get(TEST_HOOKS_ENV) == "1"
    runner = Runner()
    try:
        _write_all(proto_out, encode_frame({"ready": True}))
        while True:
            req = _read_frame(proto_in)
            if req is None:
                return 0
            if hooks and req.get("test_hang_s"):
                time.sleep(float(req["test_hang_s"]))
            limits = Limits(**req["limits"])
            limits.validate()
            grants = Grants(**req["grants"])
            module_sha256, module, input_path = req["module_sha256"], req["module"], req["input_path"]
            if not (isinstance(module_sha256, bytes) and isinstance(module, bytes | None)
                    and isinstance(input_path, str)):
                raise ValueError("module_sha256 must be bytes, module bytes or None, input_path a str")
            if module is None and not runner.has(module_sha256):
                _write_all(proto_out, encode_frame({"need_module": True}))
                continue
            reply = runner.run(module_sha256, module or b"", input_path, limits, grants)
            reply["compiled"] = reply["compile_s"] > 0
            _write_all(proto_out, encode_frame(reply))
    except (KeyError, TypeError, ValueError) as e:
        print(f"workload worker: malformed request: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0  # the engine went away (or killed us mid-reply): nothing left to answer


if __name__ == "__main__":
    raise SystemExit(main())

"""Node processes on the test hosts of node/chaos/netns.py, and the process-level faults.

Each node ``i`` is an ``enclave-swarm run`` process in namespace ``esc<T>n<i>``, listening on
``/ip4/10.241.0.(10+i)/tcp/4001``, behind a private-network key (the local-test profile admits
the simulated TEE, so it must not be reachable by strangers even inside our namespaces), with
its own data dir on a small tmpfs (the ``disk`` fault fills it). Node 0 founds the federation;
the others bootstrap from the nodes before them, and a restarted node from every other node.
The control socket is a file in the data dir, so clients in the root namespace reach every
node without any route into the namespaces.

Process faults: :meth:`Cluster.kill` (SIGKILL) and :meth:`Cluster.restart`;
:meth:`Cluster.pause` (SIGSTOP) and :meth:`Cluster.resume` (SIGCONT); :meth:`Cluster.skew`
restarts the node under libfaketime with its wall clock offset (libfaketime cannot change the
offset of a running process without also jumping its monotonic clock, which would fire or
stall every timer at once); :meth:`Cluster.fill_disk`; :meth:`Cluster.fail_attestation`
(the simulated TEE's debug switch, node/attestation/simulated.py); :meth:`Cluster.slow` and
:meth:`Cluster.unslow` (a cgroup CPU quota, node/chaos/cpulimit.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from node.attestation.simulated import DEBUG_SWITCH
from node.chaos.cpulimit import CpuLimit
from node.chaos.netns import TestNet
from node.control import NotRunning, request

PORT = 4001
FAKETIME_LIBS = ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                 "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
                 "/usr/lib/faketime/libfaketime.so.1")
# Manager settings of the chaos federation (<data dir>/manager.toml): seven Python processes
# share two loaded cores, so the local-test profile's 0.3 s election timeout would hold
# elections for stalls rather than faults; 2-4 s (as node/testing.py's shard_manager_settings)
# keeps them for real failures and still elects within seconds. No fsync: the data dirs are
# tmpfs anyway.
MANAGER_TOML = ("tick_s = 0.05\nelection_tick = 40\nheartbeat_tick = 4\ncouncil_size = 5\n"
                "reconcile_s = 0.2\nfollow_poll_s = 1.0\nfsync = false\n")
REATTEST_S = 4.0  # local-test's 2 s records (6 s) would expire during ordinary stalls here


def faketime_lib() -> str | None:
    return next((p for p in FAKETIME_LIBS if Path(p).exists()), None)


class Node:
    def __init__(self, index: int, data_dir: Path, ip: str) -> None:
        self.index, self.data_dir, self.ip = index, data_dir, ip
        self.peer_id = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.skew_s = 0.0
        self.log_path = data_dir.parent / f"n{index}.log"

    @property
    def addr(self) -> str:
        return f"/ip4/{self.ip}/tcp/{PORT}/p2p/{self.peer_id}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    """``net.n`` node processes under ``root`` (one data dir each, tmpfs of ``disk_mib``).

    ``env`` is added to every node's environment (the planted-bug flag of a checker test), and
    ``run_args`` to every ``run`` command line (``--log-format json --log-level debug`` for
    bench/bench_fidelity.py, which reads the logs)."""

    def __init__(self, root: Path, net: TestNet, *, disk_mib: int = 96,
                 env: dict[str, str] | None = None, run_args: list[str] | None = None) -> None:
        self.root, self.net, self.disk_mib = root, net, disk_mib
        self.env = dict(env or {})
        self.run_args = list(run_args or [])
        self.nodes = [Node(i, root / f"n{i}", net.ips[i]) for i in range(net.n)]
        self.psk = root / "swarm.key"
        self._mounted: list[Path] = []
        self._limits: dict[int, CpuLimit] = {}

    # ------------------------------------------------------------------ set-up

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.psk.write_text(os.urandom(32).hex() + "\n")
        self.psk.chmod(0o600)
        for n in self.nodes:
            n.data_dir.mkdir(mode=0o700, exist_ok=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.disk_mib}m,mode=0700",
                            "tmpfs", str(n.data_dir)], check=True, capture_output=True)
            self._mounted.append(n.data_dir)
            r = subprocess.run([sys.executable, "-m", "node.cli", "init", "--data-dir", str(n.data_dir),
                                "--profile", "local-test"], capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                raise RuntimeError(f"init node {n.index}: {r.stderr.strip()}")
            m = re.search(r"peer id (\S+)", r.stdout)
            if not m:
                raise RuntimeError(f"init node {n.index}: no peer id in {r.stdout!r}")
            n.peer_id = m.group(1)
            cfg = n.data_dir / "config.toml"
            text = cfg.read_text()
            cfg.write_text(text.replace("reattest_interval_s = 2.0", f"reattest_interval_s = {REATTEST_S}"))
            (n.data_dir / "manager.toml").write_text(MANAGER_TOML)

    def start(self, i: int, *, bootstrap: list[int] | None = None) -> None:
        n = self.nodes[i]
        if bootstrap is None:
            bootstrap = [j for j in range(len(self.nodes)) if j != i]
        cmd = [*self.net.exec_prefix(i), sys.executable, "-m", "node.cli", "run",
               "--data-dir", str(n.data_dir), "--listen", f"/ip4/{n.ip}/tcp/{PORT}",
               "--psk", str(self.psk), "--tee", "sim", *self.run_args]
        for j in bootstrap:
            cmd += ["--bootstrap", self.nodes[j].addr]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        if n.skew_s:
            lib = faketime_lib()
            if lib is None:
                raise RuntimeError("libfaketime is missing (Debian package faketime; "
                                   "`make chaos-deps` installs it)")
            # The offset is fixed for the process's life; monotonic moves by the same constant.
            env.update(LD_PRELOAD=lib, FAKETIME=f"{n.skew_s:+.0f}s")
        log = open(n.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            n.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env,
                                      cwd=str(self.root))
        finally:
            log.close()
        n.paused = False

    def start_all(self) -> None:
        self.start(0, bootstrap=[])
        for i in range(1, len(self.nodes)):
            self.start(i, bootstrap=list(range(i)))

    # ------------------------------------------------------------------ observation

    def status(self, i: int, timeout_s: float = 3.0) -> dict[str, Any] | None:
        n = self.nodes[i]
        if not n.alive() or n.paused:
            return None
        try:
            reply = request(n.data_dir / "control.sock", {"cmd": "status"}, timeout_s=timeout_s)
        except (NotRunning, OSError, ValueError):
            return None
        return reply.get("status") if reply.get("ok") else None

    def ctl(self, i: int, cmd: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
        return request(self.nodes[i].data_dir / "control.sock", cmd, timeout_s=timeout_s)

    # ------------------------------------------------------------------ faults

    def kill(self, i: int) -> None:
        n = self.nodes[i]
        if n.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                n.proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                n.proc.wait(10)
        n.paused = False
        self.unslow(i)

    def restart(self, i: int) -> None:
        self.kill(i)
        self.start(i)

    def pause(self, i: int) -> None:
        n = self.nodes[i]
        if n.alive():
            n.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
            n.paused = True

    def resume(self, i: int) -> None:
        n = self.nodes[i]
        if n.alive():
            n.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        n.paused = False

    def slow(self, i: int, cpu_pct: float) -> None:
        """Node ``i`` gets ``cpu_pct`` percent of one CPU until :meth:`unslow`."""
        n = self.nodes[i]
        if n.alive() and i not in self._limits:
            self._limits[i] = CpuLimit(n.proc.pid, cpu_pct, tag=self.net.tag)  # type: ignore[union-attr]

    def unslow(self, i: int) -> None:
        limit = self._limits.pop(i, None)
        if limit is not None:
            limit.lift()

    def skew(self, i: int, offset_s: float) -> None:
        self.nodes[i].skew_s = offset_s
        self.restart(i)

    def ballast(self, i: int) -> Path:
        return self.nodes[i].data_dir / "chaos-ballast"

    def fill_disk(self, i: int) -> int:
        """Fill node ``i``'s tmpfs data dir to the last byte; returns the bytes written."""
        written = 0
        chunk = b"\0" * (1 << 20)
        with open(self.ballast(i), "ab") as f:
            try:
                while written < (self.disk_mib + 1) << 20:
                    f.write(chunk)
                    f.flush()
                    written += len(chunk)
            except OSError:
                pass
        with contextlib.suppress(OSError), open(self.ballast(i), "ab") as f:  # the last KiBs
            for _ in range(1024):
                f.write(b"\0" * 1024)
                f.flush()
        return written

    def free_disk(self, i: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.ballast(i).unlink()

    def fail_attestation(self, i: int) -> None:
        path = self.nodes[i].data_dir / "sim-tee" / DEBUG_SWITCH
        path.parent.mkdir(mode=0o700, exist_ok=True)
        path.write_bytes(b"")

    # ------------------------------------------------------------------ tear-down

    def stop_all(self, timeout_s: float = 20.0) -> None:
        for i in list(self._limits):  # full speed to shut down in time
            self.unslow(i)
        for n in self.nodes:
            if n.alive():
                with contextlib.suppress(ProcessLookupError):
                    n.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
                    n.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout_s
        for n in self.nodes:
            if n.proc is None:
                continue
            try:
                n.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                n.proc.kill()
                n.proc.wait()

    def keep_logs(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for n in self.nodes:
            with contextlib.suppress(OSError):  # a log that is gone is no reason to skip clean-up
                shutil.copy(n.log_path, dest / n.log_path.name)

    def unmount(self) -> None:
        for path in reversed(self._mounted):
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
        self._mounted.clear()

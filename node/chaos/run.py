"""One chaos run: test hosts, node processes, clients and the nemesis, then the checkers.

Sequence (:meth:`ChaosRun.run`): build the namespaces and start the nodes; wait until the
federation has formed (every node attested by every other, one manager, all admitted); from
then on (time 0 of the history) client workers put, get and submit, a monitor samples every
node's status, and the nemesis plays the seeded schedule (node/chaos/schedule.py). After the
duration everything is healed (links, partitions, paused, killed, skewed and full nodes), the
recovery is timed, every acknowledged object read back, every acknowledged job described,
the nodes stopped and their Raft stores read; then the checkers (node/chaos/checkers.py)
give the verdict. ``out`` receives ``history.jsonl``, ``schedule.json``, ``verdict.json``,
``timeline.png`` and the nodes' logs. The namespaces, mounts and processes are removed in a
``finally``, whatever happened.

Client threads block on the nodes' control sockets (one request at a time per worker); the
history writer serialises their lines under one lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.chaos import checkers
from node.chaos.cluster import Cluster
from node.chaos.cpulimit import unavailable_reason as cpu_limit_unavailable
from node.chaos.history import Event, Recorder, pair, parse_lines
from node.chaos.netns import TestNet, unavailable_reason
from node.chaos.schedule import DEFAULT_FAULTS, MANAGER, Fault, ScheduleConfig, generate, last_heal_s
from node.control import NotRunning
from node.tasks.spec import render_spec

log = logging.getLogger("enclave_swarm.chaos")

EXAMPLES = Path(__file__).resolve().parents[1] / "workload" / "examples"
OP_TIMEOUT_S = 60.0
FORM_TIMEOUT_S = 180.0
FINAL_JOBS_S = 240.0  # the final phase's wait for the jobs' ends, all of them
JOB_WAIT_S = 30.0  # and for one job's


class ChaosError(RuntimeError):
    """The run could not be carried out (not a finding: the verdict says those)."""


def plot_unavailable() -> str | None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "matplotlib is missing: install the plot extra (pip install 'enclave-swarm[plot]')"
    return None


@dataclasses.dataclass
class RunConfig:
    nodes: int = 7
    seed: int = 1
    duration_s: float = 300.0
    faults: tuple[str, ...] = DEFAULT_FAULTS
    clients: int = 3
    recovery_bound_s: float = 60.0
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # test-only: a planted bug
    plot: bool = True
    # A fixed schedule instead of one drawn from the seed (benchmarks, regression tests).
    faults_override: tuple[Fault, ...] | None = None
    # The clients' mix of operations (relative weights; a get needs an object acknowledged
    # through that node, else the client polls status instead).
    mix: tuple[tuple[str, float], ...] = (("put", 0.45), ("get", 0.30), ("submit", 0.10),
                                          ("status", 0.15))


class HistoryWriter:
    def __init__(self, path: Path, t0: float) -> None:
        self.path, self.t0 = path, t0
        self._lock = threading.Lock()
        self._rec = Recorder()
        self._f = open(path, "a")  # noqa: SIM115 - closed in close()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _write(self, e: Event) -> None:
        self._f.write(e.to_line() + "\n")
        self._f.flush()

    def invoke(self, process: str, f: str, node: int | None, value: Any) -> Event:
        with self._lock:
            e = self._rec.invoke(process, f, self.now(), node, value)
            self._write(e)
            return e

    def complete(self, inv: Event, typ: str, value: Any) -> None:
        with self._lock:
            self._write(Recorder.complete(inv, typ, self.now(), value))

    def close(self) -> None:
        with self._lock:
            self._f.close()


def sample_of(st: dict[str, Any]) -> dict[str, Any]:
    """The fields of a status the checkers and the plot use."""
    cons = st.get("consensus") or {}
    return {"peer_id": st.get("peer_id"), "role": st.get("role"), "term": st.get("term"),
            "manager": st.get("manager"), "council": st.get("council") or [],
            "applied_index": cons.get("applied_index"), "digest": cons.get("state_digest"),
            "revoked": cons.get("revoked") or [],
            "attested": sorted(p["peer_id"] for p in st.get("peers", []) if p.get("attested"))}


STATE_LAG_MAX = 10  # applied entries a node may trail by and still count as caught up


def _caught_up(sts: list[dict[str, Any]]) -> bool:
    """The nodes hold one state, or trail each other by a few entries and agree wherever they
    applied the same index (the manager keeps committing -- scores, council upkeep -- so a
    round of status polls seldom catches every node at one index)."""
    if len({s["digest"] for s in sts}) == 1:
        return True
    idx = [s["applied_index"] for s in sts if isinstance(s.get("applied_index"), int)]
    if len(idx) != len(sts) or max(idx) - min(idx) > STATE_LAG_MAX:
        return False
    at: dict[int, set[str]] = {}
    for s in sts:
        at.setdefault(s["applied_index"], set()).add(s["digest"])
    return all(len(d) == 1 for d in at.values())


class ChaosRun:
    def __init__(self, cfg: RunConfig, out: Path) -> None:
        self.cfg, self.out = cfg, out
        self.schedule: tuple[Fault, ...] = (
            cfg.faults_override if cfg.faults_override is not None
            else generate(cfg.seed, cfg.nodes, cfg.duration_s, cfg.faults, cfg.schedule))
        self.rng = random.Random(cfg.seed ^ 0x5EED)
        self.stop = threading.Event()
        self.acked: dict[int, list[tuple[str, str]]] = {}  # node -> [(object id, sha256)]
        self.jobs: list[tuple[int, str, str]] = []  # (node, job id, expected sha256)
        self.revoked_node: int | None = None
        self.unreadable_stores: list[str] = []  # a node's Raft store that would not open
        self.attest_at: float | None = None
        self._lock = threading.Lock()
        self.hist: HistoryWriter | None = None
        self.cluster: Cluster | None = None
        self.net: TestNet | None = None
        self.resolved: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ entry point

    def run(self) -> dict[str, Any]:
        why = unavailable_reason() or ("slow" in self.cfg.faults and cpu_limit_unavailable()) or None
        if why:
            raise ChaosError(why)
        if self.cfg.plot and (why := plot_unavailable()):
            raise ChaosError(why)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "schedule.json").write_text(json.dumps(
            {"seed": self.cfg.seed, "nodes": self.cfg.nodes, "duration_s": self.cfg.duration_s,
             "faults": [f.to_json() for f in self.schedule]}, indent=1))
        work = Path(tempfile.mkdtemp(prefix=f"esc-{self.cfg.seed}-"))  # short: socket paths
        self.net = TestNet(self.cfg.nodes)
        try:
            self.net.create()
            self.cluster = Cluster(work, self.net, env=self.cfg.env)
            self.cluster.prepare()
            self.cluster.start_all()
            formed_s = self._wait_formed()
            if self.cfg.env.get("ENCLAVE_SWARM_TEST_PLANT"):  # arm it now that the federation formed
                for n in self.cluster.nodes:
                    (n.data_dir / "plant-armed").touch()
            self.hist = HistoryWriter(self.out / "history.jsonl", time.monotonic())
            self._drive()
            final = self._final_phase()
            stores = self._read_stores()
            verdict = self._verdict(final, stores, formed_s)
        finally:
            if self.hist is not None:
                self.hist.close()
            try:
                if self.cluster is not None:
                    try:
                        self.cluster.stop_all()
                        self.cluster.keep_logs(self.out / "logs")
                    finally:
                        self.cluster.unmount()
            finally:
                self.net.destroy()
                shutil.rmtree(work, ignore_errors=True)
        (self.out / "verdict.json").write_text(json.dumps(verdict, indent=1, sort_keys=True))
        if self.cfg.plot:
            from node.chaos.plot import timeline

            timeline(self.out / "history.jsonl", self.out / "schedule.json", self.out / "timeline.png")
        return verdict

    # ------------------------------------------------------------------ phases

    def _wait_formed(self) -> float:
        c = self.cluster
        assert c is not None
        t0 = time.monotonic()
        n = self.cfg.nodes
        while time.monotonic() - t0 < FORM_TIMEOUT_S:
            sts = [c.status(i) for i in range(n)]
            if all(s is not None for s in sts):
                managers = {s["manager"] for s in sts if s}
                if (len(managers) == 1 and None not in managers
                        and all(s["attested_peers"] == n - 1 for s in sts if s)
                        and all(s["consensus"]["members"]["admitted"] == n for s in sts if s)):
                    return time.monotonic() - t0
            time.sleep(1.0)
        raise ChaosError(f"the federation did not form within {FORM_TIMEOUT_S:g} s; see the node logs")

    def _drive(self) -> None:
        threads = [threading.Thread(target=self._monitor, name="monitor", daemon=True),
                   threading.Thread(target=self._nemesis, name="nemesis", daemon=True)]
        threads += [threading.Thread(target=self._client, args=(k,), name=f"client{k}", daemon=True)
                    for k in range(self.cfg.clients)]
        for t in threads:
            t.start()
        threads[1].join(self.cfg.duration_s + 120)
        self.stop.set()
        for t in threads:
            t.join(OP_TIMEOUT_S + 10)

    # ------------------------------------------------------------------ nemesis

    def _manager_index(self) -> tuple[int, dict[str, Any]] | None:
        c = self.cluster
        assert c is not None
        by_peer = {n.peer_id: n.index for n in c.nodes}
        for i in range(self.cfg.nodes):
            st = c.status(i)
            if st and st.get("manager") in by_peer:
                return by_peer[st["manager"]], {"peer_id": st["manager"], "term": st.get("term")}
        return None

    def _target(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        c = self.cluster
        assert c is not None
        t = params.get("target")
        if t == MANAGER:
            found = self._manager_index()
            if found is None:  # no manager right now: hit node 0, and say so
                return 0, {"peer_id": c.nodes[0].peer_id, "term": 0, "note": "no manager known"}
            return found
        i = int(str(t))
        return i, {"peer_id": c.nodes[i].peer_id}

    def _sleep_until(self, t: float) -> bool:
        assert self.hist is not None
        while not self.stop.is_set():
            left = t - self.hist.now()
            if left <= 0:
                return True
            time.sleep(min(left, 0.2))
        return False

    def _nemesis(self) -> None:
        hist, c, net = self.hist, self.cluster, self.net
        assert hist is not None and c is not None and net is not None
        for fault in self.schedule:
            if not self._sleep_until(fault.start_s):
                return
            params = dict(fault.params)
            inv = hist.invoke("nemesis", "fault-start", None, fault.to_json())
            try:
                detail = self._start_fault(fault.kind, params)
                params.update(detail)
                hist.complete(inv, "ok", {"kind": fault.kind, "params": params})
            except Exception as exc:
                log.exception("fault %s failed to start", fault.kind)
                hist.complete(inv, "fail", {"kind": fault.kind, "error": str(exc)[:500]})
                continue
            self.resolved.append({**fault.to_json(), "params": params})
            if not self._sleep_until(fault.end_s):
                return
            inv = hist.invoke("nemesis", "fault-stop", None, {"kind": fault.kind})
            try:
                self._heal_fault(fault.kind, params)
                hist.complete(inv, "ok", {"kind": fault.kind})
            except Exception as exc:
                log.exception("fault %s failed to heal", fault.kind)
                hist.complete(inv, "fail", {"kind": fault.kind, "error": str(exc)[:500]})
        self._sleep_until(self.cfg.duration_s)

    def _start_fault(self, kind: str, p: dict[str, Any]) -> dict[str, Any]:
        c, net = self.cluster, self.net
        assert c is not None and net is not None
        if kind == "partition":
            if p["shape"] == "isolate-manager":
                i, who = self._target(p)
                groups = [[i], [j for j in range(self.cfg.nodes) if j != i]]
                net.partition(groups)
                return {"groups": groups, "resolved_target": who, "target_index": i}
            net.partition(p["groups"])
            return {}
        if kind == "netem":
            return {"effect": net.shape(p["nodes"], p)}
        i, who = self._target(p)
        out = {"resolved_target": who, "target_index": i}
        if kind == "kill":
            c.kill(i)
        elif kind == "pause":
            c.pause(i)
        elif kind == "skew":
            c.skew(i, float(p["offset_s"]))
        elif kind == "disk":
            out["ballast_bytes"] = c.fill_disk(i)
        elif kind == "slow":
            c.slow(i, float(p["cpu_pct"]))
        elif kind == "attest":
            c.fail_attestation(i)
            with self._lock:
                self.revoked_node, self.attest_at = i, self.hist.now()  # type: ignore[union-attr]
        return out

    def _heal_fault(self, kind: str, p: dict[str, Any]) -> None:
        c, net = self.cluster, self.net
        assert c is not None and net is not None
        i = p.get("target_index")
        if kind == "partition":
            net.heal_partitions()
        elif kind == "netem":
            net.heal_links()
        elif kind == "kill":
            c.start(int(i))  # type: ignore[arg-type]
        elif kind == "pause":
            c.resume(int(i))  # type: ignore[arg-type]
        elif kind == "skew":
            c.skew(int(i), 0.0)  # type: ignore[arg-type]
        elif kind == "disk":
            c.free_disk(int(i))  # type: ignore[arg-type]
        elif kind == "slow":
            c.unslow(int(i))  # type: ignore[arg-type]
        # attest: never healed

    # ------------------------------------------------------------------ clients

    def _monitor(self) -> None:
        hist, c = self.hist, self.cluster
        assert hist is not None and c is not None
        while not self.stop.is_set():
            for i in range(self.cfg.nodes):
                self._status_op("monitor", i)
            time.sleep(0.5)

    def _status_op(self, process: str, i: int) -> dict[str, Any] | None:
        hist, c = self.hist, self.cluster
        assert hist is not None and c is not None
        n = c.nodes[i]
        inv = hist.invoke(process, "status", i, None)
        if not n.alive():
            hist.complete(inv, "fail", {"error": "not running"})
            return None
        try:
            reply = c.ctl(i, {"cmd": "status"}, timeout_s=3.0)
        except NotRunning as exc:
            hist.complete(inv, "info" if "no answer" in str(exc) else "fail", {"error": str(exc)[:200]})
            return None
        except (OSError, ValueError) as exc:
            hist.complete(inv, "fail", {"error": str(exc)[:200]})
            return None
        if not reply.get("ok"):
            hist.complete(inv, "fail", {"error": str(reply.get("error"))[:200]})
            return None
        s = sample_of(reply["status"])
        hist.complete(inv, "ok", s)
        return s

    def _client(self, k: int) -> None:
        rng = random.Random(self.cfg.seed * 1000 + k)
        payloads = self.cluster.root / f"client{k}"  # type: ignore[union-attr]
        payloads.mkdir(exist_ok=True)
        seq = 0
        while not self.stop.is_set():
            seq += 1
            i = rng.randrange(self.cfg.nodes)
            if i == self.revoked_node:
                i = (i + 1) % self.cfg.nodes
            op = rng.choices([name for name, _ in self.cfg.mix], [w for _, w in self.cfg.mix])[0]
            with self._lock:
                owned = list(self.acked.get(i, ()))
            if op == "put":
                self._put(f"client{k}", i, payloads / f"p{seq}.bin", rng)
            elif op == "get" and owned:
                oid, digest = rng.choice(owned)
                self._get(f"client{k}", i, oid, digest, payloads / f"g{seq}.bin")
            elif op == "submit":
                self._submit(f"client{k}", i, payloads / f"j{seq}", rng)
            else:
                self._status_op(f"client{k}", i)
            time.sleep(rng.uniform(0.2, 1.0))

    def _shard_job(self, process: str, f: str, i: int, cmd: dict[str, Any], arg: Any,
                   done: Callable[[dict[str, Any]], Any]) -> tuple[str, Any]:
        hist, c = self.hist, self.cluster
        assert hist is not None and c is not None
        inv = hist.invoke(process, f, i, arg)
        if not c.nodes[i].alive():
            hist.complete(inv, "fail", {"error": "not running"})
            return "fail", None
        try:
            reply = c.ctl(i, cmd, timeout_s=10.0)
        except NotRunning as exc:  # refused: nothing started; no answer: unknown
            typ = "info" if "no answer" in str(exc) else "fail"
            hist.complete(inv, typ, {"error": str(exc)[:200]})
            return typ, None
        except (OSError, ValueError) as exc:
            hist.complete(inv, "info", {"error": str(exc)[:200]})
            return "info", None
        if not reply.get("ok"):
            hist.complete(inv, "fail", {"error": str(reply.get("error"))[:200]})
            return "fail", None
        job = reply["job"]
        deadline = time.monotonic() + OP_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                st = c.ctl(i, {"cmd": "shard-job", "job": job}, timeout_s=5.0)
            except (NotRunning, OSError, ValueError):
                st = {"ok": True, "state": "running"}  # paused or restarting: keep asking
                if not c.nodes[i].alive():
                    break
            if st.get("ok") is False and st.get("error") == "unknown job":
                break  # the node restarted: the job's fate is unknown
            if st.get("state") == "done":
                value = done(st["result"])
                hist.complete(inv, "ok", value)
                return "ok", value
            if st.get("state") == "failed":
                hist.complete(inv, "fail", {"error": str(st.get("error"))[:300]})
                return "fail", None
            time.sleep(0.3)
        hist.complete(inv, "info", {"error": "no outcome within the operation's time"})
        return "info", None

    def _put(self, process: str, i: int, path: Path, rng: random.Random) -> None:
        data = rng.randbytes(rng.randint(1024, 48 * 1024))
        path.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        # n shards on distinct holders other than the owner, with one spare: 3 of 5 from 7 nodes
        n = max(2, min(5, self.cfg.nodes - 2))
        typ, value = self._shard_job(process, "put", i, {"cmd": "shard-put", "path": str(path), "n": n,
                                                         "k": max(1, n - 2)},
                                     {"bytes": len(data), "sha256": digest},
                                     lambda r: {"object_id": r["object_id"]})
        if typ == "ok":
            with self._lock:
                self.acked.setdefault(i, []).append((value["object_id"], digest))

    def _get(self, process: str, i: int, oid: str, digest: str, out: Path) -> None:
        def done(r: dict[str, Any]) -> dict[str, Any]:
            got = hashlib.sha256(out.read_bytes()).hexdigest() if out.exists() else None
            with contextlib.suppress(OSError):
                out.unlink()
            return {"object_id": oid, "sha256": got, "expected": digest}

        self._shard_job(process, "get", i, {"cmd": "shard-get", "object_id": oid, "out": str(out)},
                        {"object_id": oid}, done)

    def _submit(self, process: str, i: int, base: Path, rng: random.Random) -> None:
        hist, c = self.hist, self.cluster
        assert hist is not None and c is not None
        base.mkdir(exist_ok=True)
        lines = [f"{rng.getrandbits(64):016x} record {n}\n" for n in range(rng.randint(20, 200))]
        data = "".join(lines).encode()
        (base / "input.txt").write_bytes(data)
        spec = base / "job.toml"
        spec.write_text(render_spec(EXAMPLES / "slowcat.wasm", base / "input.txt",
                                    fragments=rng.randint(2, 4), split="records", name="chaos",
                                    top="queue_timeout_s = 120\n"))
        expected = hashlib.sha256(data).hexdigest()  # slowcat copies; concat joins in order
        inv = hist.invoke(process, "submit", i, {"expected_sha256": expected, "bytes": len(data)})
        if not c.nodes[i].alive():
            hist.complete(inv, "fail", {"error": "not running"})
            return
        try:
            reply = c.ctl(i, {"cmd": "task-submit", "spec": str(spec), "input": None, "object": None},
                          timeout_s=30.0)
        except NotRunning as exc:
            hist.complete(inv, "info" if "no answer" in str(exc) else "fail", {"error": str(exc)[:200]})
            return
        except (OSError, ValueError) as exc:
            hist.complete(inv, "info", {"error": str(exc)[:200]})
            return
        if not reply.get("ok"):
            hist.complete(inv, "fail", {"error": str(reply.get("error"))[:200]})
            return
        hist.complete(inv, "ok", {"job_id": reply["job_id"]})
        with self._lock:
            self.jobs.append((i, str(reply["job_id"]), expected))

    # ------------------------------------------------------------------ after the faults

    def _heal_everything(self) -> None:
        c, net = self.cluster, self.net
        assert c is not None and net is not None
        net.heal()
        for n in c.nodes:
            c.free_disk(n.index)
            if n.skew_s:
                c.skew(n.index, 0.0)
            elif n.paused:
                c.resume(n.index)
            elif not n.alive():
                c.start(n.index)

    def _final_phase(self) -> dict[str, Any]:
        hist, c = self.hist, self.cluster
        assert hist is not None and c is not None
        self._heal_everything()
        healed = hist.now()
        live = [i for i in range(self.cfg.nodes) if i != self.revoked_node]
        ids = {c.nodes[i].peer_id for i in live}
        recovered: dict[str, float | None] = {"manager": None, "attested": None, "repairs": None,
                                              "state": None}
        deadline = time.monotonic() + self.cfg.recovery_bound_s * 2
        final: dict[int, dict[str, Any]] = {}
        while time.monotonic() < deadline and None in recovered.values():
            sts = {i: self._status_op("final", i) for i in live}
            now = hist.now()
            if all(sts.values()):
                managers = {(s["manager"], s["term"]) for s in sts.values() if s}
                if recovered["manager"] is None and len(managers) == 1 and next(iter(managers))[0] in ids:
                    recovered["manager"] = now
                if recovered["attested"] is None and all(
                        ids - {s["peer_id"]} <= set(s["attested"]) for s in sts.values() if s):
                    recovered["attested"] = now
                if recovered["state"] is None and _caught_up([s for s in sts.values() if s]):
                    recovered["state"] = now
                if recovered["repairs"] is None and self._repairs_done(live):
                    recovered["repairs"] = now
                final = {i: s for i, s in sts.items() if s}
            time.sleep(1.0)
        # The state keeps moving (scores, council upkeep): the final states are one round in
        # which every node holds the same digest, if such a round comes within the bound.
        deadline = time.monotonic() + self.cfg.recovery_bound_s
        while time.monotonic() < deadline and len({s["digest"] for s in final.values()}) > 1:
            sts = {i: self._status_op("final", i) for i in live}
            if all(sts.values()):
                final = {i: s for i, s in sts.items() if s}
            time.sleep(0.2)
        inv = hist.invoke("final", "recovered", None, {"healed_s": healed})
        hist.complete(inv, "ok", recovered)
        reads = self._final_reads()
        visible = self._visible()
        jobs = self._final_jobs()
        return {"healed_s": healed, "recovered": recovered, "status": final, "reads": reads,
                "visible": visible, "jobs": jobs}

    def _repairs_done(self, live: list[int]) -> bool:
        c = self.cluster
        assert c is not None
        for i in live:
            try:
                r = c.ctl(i, {"cmd": "shard-placements"}, timeout_s=5.0)
            except (NotRunning, OSError, ValueError):
                continue
            if r.get("ok"):
                gone = {c.nodes[self.revoked_node].peer_id} if self.revoked_node is not None else set()
                return all(not h["pending"] and h["peer_id"] not in gone
                           for p in r["placements"] for h in p["holders"])
        return False

    def _final_reads(self) -> dict[str, str | None]:
        hist = self.hist
        assert hist is not None
        reads: dict[str, str | None] = {}
        out = self.cluster.root / "final"  # type: ignore[union-attr]
        out.mkdir(exist_ok=True)
        with self._lock:
            acked = {i: list(v) for i, v in self.acked.items()}
        for i, objs in sorted(acked.items()):
            if i == self.revoked_node:
                continue  # a revoked owner is cut off: its objects are not its to read back
            for oid, digest in objs:
                path = out / f"{oid}.bin"
                typ, value = self._shard_job("final", "final-read", i,
                                             {"cmd": "shard-get", "object_id": oid, "out": str(path)},
                                             {"object_id": oid},
                                             lambda r, p=path, o=oid, d=digest: {  # type: ignore[misc]
                                                 "object_id": o, "expected": d,
                                                 "sha256": hashlib.sha256(p.read_bytes()).hexdigest()})
                reads[oid] = value["sha256"] if typ == "ok" else None
        return reads

    def _visible(self) -> dict[int, list[str]]:
        c = self.cluster
        assert c is not None
        out: dict[int, list[str]] = {}
        for i in range(self.cfg.nodes):
            if i == self.revoked_node:
                continue
            try:
                r = c.ctl(i, {"cmd": "shard-ls"}, timeout_s=10.0)
            except (NotRunning, OSError, ValueError):
                continue
            if r.get("ok"):
                out[i] = [o["object_id"] for o in r["objects"]]
        return out

    def _final_jobs(self) -> dict[str, dict[str, Any]]:
        """Each acknowledged job's end as its owner tells it. A job neither the committed state
        (which keeps the last ``KEEP_FINISHED`` finished jobs) nor its owner's memory (a
        restarted owner's jobs are gone) still knows is ``forgotten``, at once: before, the
        wait for its end ran out the phase's one shared deadline, and every job after it went
        unchecked (seed 9 of links-clock-disk: 44 jobs, 0 checked, the owner of the first
        restarted by the skew fault). Each job waits at most ``JOB_WAIT_S`` of its own."""
        c = self.cluster
        assert c is not None
        jobs: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + FINAL_JOBS_S
        with self._lock:
            todo = list(self.jobs)
        for i, job_id, _expected in todo:
            if i == self.revoked_node:
                continue
            job: dict[str, Any] = {}
            until = min(deadline, time.monotonic() + JOB_WAIT_S)
            while time.monotonic() < until:
                try:
                    r = c.ctl(i, {"cmd": "task-describe", "job_id": job_id}, timeout_s=10.0)
                except (NotRunning, OSError, ValueError):
                    time.sleep(1)
                    continue
                if not r.get("ok") and "known here" in str(r.get("error")):
                    job = {"status": "forgotten"}
                    break
                job = r.get("job") or {}
                if job.get("status") in ("done", "failed", "cancelled"):
                    break
                time.sleep(1)
            entry: dict[str, Any] = {"status": job.get("status"), "fragments": job.get("fragments"),
                                     "done_fragments": [r["fragment"] for r in job.get("replicas", [])
                                                        if r.get("state") == "done"]}
            if job.get("status") == "done":
                path = c.root / f"result-{job_id}"
                try:  # the node waits up to 60 s for a delivery still on its way
                    r = c.ctl(i, {"cmd": "task-result", "job_id": job_id, "out": str(path)}, timeout_s=90.0)
                    if r.get("ok"):
                        entry["result_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
                    else:
                        entry["result_error"] = str(r.get("error"))[:200]
                except (NotRunning, OSError, ValueError) as exc:
                    entry["result_error"] = str(exc)[:200]
            jobs[job_id] = entry
        return jobs

    def _read_stores(self) -> dict[int, list[checkers.StoreEntry]]:
        """Every node's Raft store, read from a copy after the nodes stopped (opening a store
        may repair a torn tail: never on the original)."""
        from consensus.raft import Persisted
        from node.keys.stores import raft_seal_key_offline
        from node.raftstore import RaftStore

        c = self.cluster
        assert c is not None
        c.stop_all()
        stores: dict[int, list[checkers.StoreEntry]] = {}
        for n in c.nodes:
            src = n.data_dir / "raft"
            if not (src / "wal").exists():
                continue
            copy = c.root / f"raft-copy-{n.index}"
            shutil.copytree(src, copy, dirs_exist_ok=True)
            try:
                key = raft_seal_key_offline(n.data_dir)  # the store is sealed (docs/keys.md)
                with RaftStore(copy, Persisted.initial([1]), seal_key=key) as store:
                    commit = store.hard_state.commit
                    stores[n.index] = [checkers.StoreEntry(e.index, e.term, e.kind, e.data, e.index <= commit)
                                       for e in store.entries]
            except Exception as exc:  # a store we cannot read is a finding, not a crash
                log.warning("node %d: raft store unreadable: %s", n.index, exc)
                self.unreadable_stores.append(f"node {n.index}: raft store unreadable: {exc}")
        return stores

    # ------------------------------------------------------------------ verdict

    def _verdict(self, final: dict[str, Any], stores: dict[int, list[checkers.StoreEntry]],
                 formed_s: float) -> dict[str, Any]:
        with open(self.out / "history.jsonl") as fh:
            parsed = parse_lines(fh)
        ops = pair(parsed.events)
        samples = [{**op.result, "time_s": op.complete_s} for op in ops
                   if op.f == "status" and op.type == "ok" and isinstance(op.result, dict)]
        c = self.cluster
        assert c is not None
        target = c.nodes[self.revoked_node].peer_id if self.revoked_node is not None else None
        status = {i: s for i, s in final["status"].items()}
        checks = [
            checkers.check_managers(samples, stores),
            checkers.check_logs(stores),
            # the two checks above see only the stores read: every one must be
            checkers.Check("raft-stores", not self.unreadable_stores, tuple(self.unreadable_stores),
                           {"read": len(stores)}),
            checkers.check_puts([op for op in ops if op.node != self.revoked_node], final["reads"],
                                final["visible"]),
            checkers.check_reads(ops),
            checkers.check_jobs([op for op in ops if op.node != self.revoked_node], final["jobs"]),
            checkers.check_digests(status),
            checkers.check_revoked(target, self.attest_at, samples, status),
            checkers.check_recovery(final["healed_s"], final["recovered"], self.cfg.recovery_bound_s),
        ]
        minority = []
        for fault in self.resolved:
            if fault["kind"] == "partition" and fault["params"].get("shape") in (
                    "majority", "isolate", "isolate-manager"):
                groups: list[list[int]] = fault["params"]["groups"]
                biggest = sorted(groups, key=len)[-1]
                minority.append((fault["start_s"], fault["end_s"], set(biggest)))
        counts: dict[str, dict[str, int]] = {}
        for op in ops:
            counts.setdefault(op.f, {}).setdefault(op.type, 0)
            counts[op.f][op.type] += 1
        return {
            "ok": all(ch.ok for ch in checks),
            "seed": self.cfg.seed, "nodes": self.cfg.nodes, "duration_s": self.cfg.duration_s,
            "faults": list(self.cfg.faults), "formed_s": round(formed_s, 1),
            "planted": self.cfg.env.get("ENCLAVE_SWARM_TEST_PLANT") or None,
            "checks": [ch.to_json() for ch in checks],
            "operations": counts, "history_refused": parsed.refused,
            "figures": {"manager_gaps": checkers.manager_gaps(samples, self.resolved),
                        "majority_availability": checkers.availability(ops, minority),
                        "recovery_s": {k: (None if v is None else round(v - final["healed_s"], 2))
                                       for k, v in final["recovered"].items()}},
            "schedule": self.resolved, "last_heal_s": last_heal_s(self.schedule),
        }

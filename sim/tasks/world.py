"""The tasks world: jobs split into fragments, run by enclaves of mixed capability and price,
with crashes and revocations mid-job (docs/simulator.md, "Tasks"; docs/tasks.md).

Theory of operation
-------------------
A discrete-event loop over virtual seconds (a heap of ``(time, seq, event)``; ``seq`` breaks
ties in insertion order). One master seed derives every sub-seed (:func:`sim.world.derive_seed`):
the nodes (``nodes``), the jobs (``jobs``), the faults (``faults``) and the run times and
traps (``runs``), so changing one stream never shifts another.

The manager (:class:`sim.tasks.driver.Manager`) commits ``SubmitJob``, ``AssignFragments``
(the real scheduler, seed = log index), ``FragmentResult``, ``ReassignFragment``, ``Suspect``,
``Revoke``, ``JobDone`` and ``JobFailed`` through the real state machine. Nodes run their
replicas: a run takes the input transfer (fragment bytes over the measured bandwidth), the work
(core-seconds over the job's cores and the node's core speed; a few nodes are slow) and half an
RTT each way; a few runs trap. Faults, drawn from the seed: crashes (the manager learns after
``detect_s``, commits ``Suspect`` and moves the node's replicas), revocations (``Revoke`` at once,
and every replica the node holds or computed in a live job is moved), and timeouts (a replica
not reported after ``timeout_factor`` times its nominal run time is moved; its late result is
then rejected by the state machine).

Each event is one step; after each step the invariants (:mod:`sim.tasks.invariants`) are
checked. The run ends when every job is done or failed, or at ``duration_s``.

Planted bugs (``bug``), for the tests that show the checker catches them: ``skip-reassign``
(the manager never moves a replica off a dead, revoked or silent node) and ``stale-view``
(the manager schedules on the initial state, blind to suspicions and revocations).
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import random
import time as _wall
from collections.abc import Callable
from typing import Any

from consensus.scheduler import Measurements, Offer, Requirements, Weights
from consensus.state import ADMITTED, REVOKED, Join, Revoke, SetCouncil, Suspect, SwarmState
from consensus.tasks import (
    ASSIGNED,
    LIVE_JOB,
    R_DONE,
    TASK_REGISTRY,
    FragmentResult,
    JobDone,
    JobFailed,
    SubmitJob,
    incomplete,
    job,
    replicas,
)
from sim.tasks.driver import PLACED, REFUSED, Manager
from sim.world import derive_seed

SCENARIOS = ("tasks",)
BUGS = ("", "skip-reassign", "stale-view")
PROVIDERS = ("aws", "azure", "gcp", "hetzner", "ovh", "scaleway")
REGIONS = ("eu-west", "us-east", "ap-south")
TEE_KINDS = ("sgx", "sev-snp", "tdx")
RETRY_S = 10.0  # a job with nothing placeable tries again this long after
QUEUE_S = 300.0  # ... until this long after its submission, then fails


@dataclasses.dataclass(frozen=True)
class TasksConfig:
    """One tasks run. Every field has a default that gives a short, fault-rich run."""

    seed: int = 1
    scenario: str = "tasks"
    nodes: int = 50
    jobs: int = 20
    fragments: int = 8
    redundancy: int = 2
    submit_window_s: float = 120.0  # jobs arrive uniformly over this window
    crashes: int = 3
    revocations: int = 2
    duration_s: float = 3600.0  # a bound: the run stops here even if jobs are left
    detect_s: float = 5.0  # crash to Suspect (the membership layer's detection time)
    timeout_factor: float = 4.0
    trap_probability: float = 0.02
    slow_fraction: float = 0.1
    slow_factor: float = 8.0
    bug: str = ""
    progress: Callable[[float, float], None] | None = None

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if not 4 <= self.nodes <= 5000:
            raise ValueError("nodes outside 4..5000")
        if not 1 <= self.jobs <= 200 or not 1 <= self.fragments <= 256:
            raise ValueError("jobs outside 1..200 or fragments outside 1..256")
        if not 1 <= self.redundancy <= 3:
            raise ValueError("redundancy outside 1..3")
        if self.crashes < 0 or self.revocations < 0 or self.crashes + self.revocations > self.nodes // 2:
            raise ValueError("crashes + revocations must stay within half the nodes")
        if self.duration_s <= 0 or self.detect_s <= 0 or self.timeout_factor <= 1:
            raise ValueError("duration_s, detect_s > 0 and timeout_factor > 1 required")
        if self.bug not in BUGS:
            raise ValueError(f"bug must be one of {BUGS}")


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    node_id: str
    provider: str
    region: str
    tee_kind: str
    score: int
    offer: Offer
    speed: float  # core speed relative to the nominal one
    slow: bool


@dataclasses.dataclass(frozen=True)
class JobSpec:
    job_id: str
    owner: str
    submit_s: float
    work_core_s: float  # per fragment
    command: SubmitJob


def _node_specs(cfg: TasksConfig) -> list[NodeSpec]:
    rng = random.Random(derive_seed(cfg.seed, "nodes"))
    out = []
    for i in range(cfg.nodes):
        cores = rng.choice((2, 4, 8, 16, 32))
        accel = ("gpu",) if rng.random() < 0.2 else ()
        # Price rises with the node's speed: fast nodes cost more per core-second.
        speed = rng.choice((0.75, 1.0, 1.0, 1.5, 2.0))
        offer = Offer(f"node-{i:03d}", cores, cores * rng.choice((1024, 2048, 4096)), accel,
                      int(200 * speed * rng.uniform(0.5, 2.0)) + (300 if accel else 0),
                      rng.randrange(100, 2000))
        out.append(NodeSpec(offer.node_id, PROVIDERS[rng.randrange(len(PROVIDERS))],
                            REGIONS[rng.randrange(len(REGIONS))], TEE_KINDS[rng.randrange(len(TEE_KINDS))],
                            rng.randrange(550, 1000), offer, speed, rng.random() < cfg.slow_fraction))
    return out


def _job_specs(cfg: TasksConfig, owners: list[str]) -> list[JobSpec]:
    rng = random.Random(derive_seed(cfg.seed, "jobs"))
    out = []
    for j in range(cfg.jobs):
        jid = f"job-{j:03d}"
        req = Requirements(
            tee_kinds=rng.choice(((), (), ("sgx", "tdx"), ("sev-snp", "tdx"))),
            min_score=rng.choice((0, 600, 700)),
            cores=rng.choice((1, 1, 2, 4)),
            memory_mib=rng.choice((256, 512, 1024)),
            accelerators=("gpu",) if rng.random() < 0.1 else (),
            max_price_core_s=rng.choice((None, None, 1000)),
        )
        frag_bytes = rng.randrange(1, 64) * 1024 * 1024
        owner = owners[rng.randrange(len(owners))]
        cmd = SubmitJob(jid, owner, hashlib.sha256(f"spec/{jid}".encode()).digest(),
                        hashlib.sha256(f"module/{jid}".encode()).digest(), cfg.fragments,
                        cfg.redundancy, req, Weights(), 0, 3, f"input/{jid}", frag_bytes)
        out.append(JobSpec(jid, owner, rng.uniform(0, cfg.submit_window_s), rng.uniform(5, 60), cmd))
    return sorted(out, key=lambda s: (s.submit_s, s.job_id))


def _measurements(specs: list[NodeSpec], owners: list[str], seed: int) -> Measurements:
    """RTT and bandwidth from every node toward every owner (the scheduler's targets)."""
    rng = random.Random(derive_seed(seed, "measurements"))
    region = {s.node_id: s.region for s in specs}
    rtt: dict[str, dict[str, int]] = {}
    bw: dict[str, dict[str, int]] = {}
    for s in specs:
        for o in owners:
            near = region[o] == s.region
            rtt.setdefault(s.node_id, {})[o] = (2 if near else 60) + rng.randrange(0, 20)
            bw.setdefault(s.node_id, {})[o] = (100 if near else 10) * 1024 + rng.randrange(0, 4096)
    return Measurements(rtt, bw)


def output_hash(job_id: str, fragment: int) -> bytes:
    """What every honest enclave computes for a fragment (replicas of it agree)."""
    return hashlib.sha256(f"out/{job_id}/{fragment}".encode()).digest()


class TasksWorld:
    """One seeded run of the tasks scenario."""

    def __init__(self, cfg: TasksConfig) -> None:
        cfg.validate()
        self.cfg = cfg
        self.specs = _node_specs(cfg)
        self.by_id = {s.node_id: s for s in self.specs}
        owner_rng = random.Random(derive_seed(cfg.seed, "owners"))
        self.owners = sorted(owner_rng.sample([s.node_id for s in self.specs], 3))
        self.meas = _measurements(self.specs, self.owners, cfg.seed)
        self.job_specs = {s.job_id: s for s in _job_specs(cfg, self.owners)}
        self.fault_rng = random.Random(derive_seed(cfg.seed, "faults"))
        self.run_rng = random.Random(derive_seed(cfg.seed, "runs"))
        self.manager = Manager(self._initial_state(), {s.node_id: s.offer for s in self.specs},
                               self.meas)
        if cfg.bug == "stale-view":
            self.manager.stale_view = True
        self.now = 0.0
        self._heap: list[tuple[float, int, str, tuple[Any, ...]]] = []
        self._seq = 0
        self.crashed: dict[str, float] = {}  # node -> crash time
        self.submitted: dict[str, float] = {}
        self.finished: dict[str, tuple[str, float]] = {}  # job -> (status, time)
        self.late_rejected = 0
        self.fault_times: list[tuple[float, str, str]] = []  # (time, crash|revoke, node)
        self.counts = {"reassigned": 0, "timeouts": 0, "traps": 0, "crashes": 0, "revocations": 0}
        # Lazily imported: invariants read the world.
        from sim.tasks.invariants import TaskInvariants

        self.inv = TaskInvariants(self)

    def _initial_state(self) -> SwarmState:
        s = SwarmState()
        for n in self.specs:
            s, r = TASK_REGISTRY.apply(s, Join(n.node_id, n.provider, n.region, n.tee_kind, n.score, True))
            if not r.ok:
                raise AssertionError(r.error)
        s, r = TASK_REGISTRY.apply(s, SetCouncil(5))
        if not r.ok:
            raise AssertionError(r.error)
        return s

    # ----------------------------------------------------------------- events

    def _at(self, t: float, kind: str, *data: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, data))

    def _schedule_faults(self) -> None:
        cfg = self.cfg
        lo, hi = 20.0, cfg.submit_window_s + 120.0
        for _ in range(cfg.crashes):
            self._at(self.fault_rng.uniform(lo, hi), "crash")
        for _ in range(cfg.revocations):
            self._at(self.fault_rng.uniform(lo, hi), "revoke")

    def run(self) -> dict[str, Any]:
        """Run to the end and return the report (:func:`sim.tasks.report.build`)."""
        from sim.tasks.report import build

        # Wall time is only measured for the report (speedup); it never decides anything.
        wall0 = _wall.perf_counter()
        for spec in self.job_specs.values():
            self._at(spec.submit_s, "submit", spec.job_id)
        self._schedule_faults()
        while self._heap and self._heap[0][0] <= self.cfg.duration_s:
            if len(self.finished) == len(self.job_specs):
                break
            t, _, kind, data = heapq.heappop(self._heap)
            self.now = t
            getattr(self, f"_on_{kind}")(*data)
            self.inv.check_step()
            if self.cfg.progress is not None:
                self.cfg.progress(min(t, self.cfg.duration_s), self.cfg.duration_s)
        self.inv.check_end()
        return build(self, _wall.perf_counter() - wall0)

    def _on_submit(self, job_id: str) -> None:
        res = self.manager.propose(self.job_specs[job_id].command, self.now)
        if not res.ok:
            self.inv.violation(f"SubmitJob {job_id} refused: {res.error}")
            return
        self.submitted[job_id] = self.now
        self._try_assign(job_id)

    def _on_retry(self, job_id: str) -> None:
        j = job(self.manager.state, job_id)
        if j is not None and j["status"] in LIVE_JOB:
            self._try_assign(job_id)

    def _try_assign(self, job_id: str) -> None:
        before = self.manager.state
        outcome, why = self.manager.assign(job_id, self.now)
        if outcome == PLACED:
            self._start_new_runs(before, job_id)
            return
        if outcome == REFUSED:
            self.inv.violation(f"AssignFragments for {job_id} refused: {why}")
        if self.now + RETRY_S <= self.submitted[job_id] + QUEUE_S:
            self._at(self.now + RETRY_S, "retry", job_id)
        else:
            self._fail(job_id, f"no placement within {QUEUE_S:.0f}s: {why[:300]}")

    def _start_new_runs(self, before: SwarmState, job_id: str) -> None:
        """Start a run for every replica that gained a node in the last commit."""
        old = {(f, r): (rep["node"], rep["attempts"]) for f, r, rep in replicas(before, job_id)}
        for f, r, rep in replicas(self.manager.state, job_id):
            if rep["st"] == ASSIGNED and old.get((f, r)) != (rep["node"], rep["attempts"]):
                self._start_run(job_id, f, r, rep["node"], rep["attempts"])

    def _start_run(self, job_id: str, f: int, r: int, node: str, attempt: int) -> None:
        spec, n = self.job_specs[job_id], self.by_id[node]
        req = spec.command.requirements
        rtt_s = self.meas.rtt_ms[node][spec.owner] / 1000
        transfer_s = spec.command.fragment_bytes / 1024 / self.meas.bandwidth_kib_s[node][spec.owner]
        nominal = spec.work_core_s / req.cores
        work = nominal / n.speed * (self.cfg.slow_factor if n.slow else 1.0)
        jitter = self.run_rng.uniform(0.9, 1.1)
        trap = self.run_rng.random() < self.cfg.trap_probability
        done_at = self.now + rtt_s + transfer_s + work * jitter
        self._at(done_at, "result", job_id, f, r, node, attempt, trap, self.now)
        deadline = self.now + rtt_s + transfer_s + nominal * self.cfg.timeout_factor + 5.0
        self._at(deadline, "timeout", job_id, f, r, node, attempt)

    def _on_result(self, job_id: str, f: int, r: int, node: str, attempt: int, trap: bool,
                   started_s: float) -> None:
        if node in self.crashed:
            return  # a crashed enclave reports nothing
        s = self.manager.state
        j = job(s, job_id)
        rep = j["frags"][f][r] if j is not None else None
        current = (rep is not None and j is not None and j["status"] == "running"
                   and rep["st"] == ASSIGNED and rep["node"] == node and rep["attempts"] == attempt
                   and s.members[node].status == ADMITTED)
        wall_ms = round((self.now - started_s) * 1000)
        cmd = (FragmentResult(job_id, f, r, node, False, b"", 0, 0, 0, wall_ms, "trap: out of fuel") if trap
               else FragmentResult(job_id, f, r, node, True, output_hash(job_id, f), 4096, 10**6,
                                   2**20, wall_ms))
        res = self.manager.propose(cmd, self.now)
        if current and not res.ok:
            self.inv.violation(f"current result {job_id}/{f}/{r} from {node} refused: {res.error}")
        if not current:
            if res.ok:
                self.inv.violation(f"late result {job_id}/{f}/{r} from {node} accepted")
            else:
                self.late_rejected += 1
            return
        if trap:
            self.counts["traps"] += 1
            self._move(job_id, f, r, node, "failed: trap")
        self._maybe_done(job_id)

    def _on_timeout(self, job_id: str, f: int, r: int, node: str, attempt: int) -> None:
        j = job(self.manager.state, job_id)
        if j is None or j["status"] not in LIVE_JOB:
            return
        rep = j["frags"][f][r]
        if rep["st"] == ASSIGNED and rep["node"] == node and rep["attempts"] == attempt:
            self.counts["timeouts"] += 1
            self._move(job_id, f, r, node, "timed out")

    def _pick_victim(self) -> str | None:
        """A node running a replica now if any (mid-job), else any admitted live node."""
        s = self.manager.state
        busy = sorted({rep["node"] for jid in sorted(self.job_specs) for _, _, rep in replicas(s, jid)
                       if rep["st"] == ASSIGNED and rep["node"] not in self.crashed})
        pool = busy or sorted(n for n, m in s.members.items()
                              if m.status == ADMITTED and n not in self.crashed)
        return pool[self.fault_rng.randrange(len(pool))] if pool else None

    def _on_crash(self) -> None:
        node = self._pick_victim()
        if node is None:
            return
        self.crashed[node] = self.now
        self.fault_times.append((self.now, "crash", node))
        self.counts["crashes"] += 1
        self._at(self.now + self.cfg.detect_s, "detect", node)

    def _on_detect(self, node: str) -> None:
        m = self.manager.state.members[node]
        if m.status == ADMITTED:
            res = self.manager.propose(Suspect(node, "unreachable"), self.now)
            if not res.ok:
                self.inv.violation(f"Suspect {node} refused: {res.error}")
        self._move_all(node, "dead", done_too=False)

    def _on_revoke(self) -> None:
        node = self._pick_victim()
        if node is None:
            return
        res = self.manager.propose(Revoke(node, "attestation revoked"), self.now)
        if not res.ok:
            self.inv.violation(f"Revoke {node} refused: {res.error}")
            return
        self.counts["revocations"] += 1
        self.fault_times.append((self.now, "revoke", node))
        self._move_all(node, "revoked", done_too=True)

    def _move_all(self, node: str, reason: str, *, done_too: bool) -> None:
        s = self.manager.state
        for jid in sorted(self.job_specs):
            j = job(s, jid)
            if j is None or j["status"] not in LIVE_JOB:
                continue
            for f, r, rep in replicas(s, jid):
                if rep["node"] == node and (rep["st"] == ASSIGNED or (done_too and rep["st"] == R_DONE)):
                    self._move(jid, f, r, node, reason)

    def _move(self, job_id: str, f: int, r: int, node: str, reason: str) -> None:
        """Reassign one replica off ``node`` (or fail the job when its attempts are spent)."""
        if self.cfg.bug == "skip-reassign":
            return
        j = job(self.manager.state, job_id)
        if j is None or j["status"] not in LIVE_JOB:
            return
        rep = j["frags"][f][r]
        if rep["attempts"] >= j["max_attempts"]:
            self._fail(job_id, f"fragment {f} replica {r}: {rep['attempts']} attempts spent ({reason})")
            return
        before = self.manager.state
        new, res = self.manager.reassign(job_id, f, r, node, reason, self.now)
        if not res.ok:
            self.inv.violation(f"ReassignFragment {job_id}/{f}/{r} off {node} refused: {res.error}")
            return
        self.counts["reassigned"] += 1
        if new:
            self._start_new_runs(before, job_id)
        else:
            self._at(self.now + RETRY_S, "retry", job_id)

    def _maybe_done(self, job_id: str) -> None:
        s = self.manager.state
        j = job(s, job_id)
        if j is None or j["status"] != "running" or j["done"] != j["n"] * j["r"] or incomplete(s, j):
            return
        agg = hashlib.sha256(b"".join(frag[0]["out"] for frag in j["frags"])).digest()
        res = self.manager.propose(JobDone(job_id, agg, 4096 * j["n"]), self.now)
        if not res.ok:
            self.inv.violation(f"JobDone {job_id} refused: {res.error}")
            return
        self.finished[job_id] = ("done", self.now)

    def _fail(self, job_id: str, reason: str) -> None:
        res = self.manager.propose(JobFailed(job_id, reason), self.now)
        if not res.ok:
            self.inv.violation(f"JobFailed {job_id} refused: {res.error}")
            return
        self.finished[job_id] = ("failed", self.now)

    def trace_digest(self) -> str:
        """SHA-256 (first 32 hex digits) of the committed log: kinds, fields, answers, times."""
        h = hashlib.sha256()
        for e in self.manager.log:
            h.update(repr((e.index, round(e.time_s, 9), TASK_REGISTRY.encode(e.command).hex(),
                           e.ok, e.error)).encode())
        return h.hexdigest()[:32]

    def revoked(self) -> list[str]:
        return sorted(n for n, m in self.manager.state.members.items() if m.status == REVOKED)

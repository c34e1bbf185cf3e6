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
(the manager schedules on the initial state, blind to suspicions and revocations), and
``first-replica`` (the manager combines each fragment's first replica's output, agreed or not).
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import math
import random
import time as _wall
from collections.abc import Callable
from typing import Any

from consensus import integrity
from consensus.scheduler import Measurements, Offer, Requirements, Weights
from consensus.state import ADMITTED, REVOKED, Join, Revoke, SetCouncil, Suspect, SwarmState
from consensus.tasks import (
    AGREED,
    ASSIGNED,
    LIVE_JOB,
    NEEDS_REPLICA,
    NO_QUORUM,
    PENDING,
    R_DONE,
    TASK_REGISTRY,
    AddReplica,
    DropJob,
    FragmentResult,
    JobDone,
    JobFailed,
    SubmitJob,
    finished_to_drop,
    fragment_verdict,
    incomplete,
    job,
    replicas,
)
from sim.tasks.driver import PLACED, REFUSED, Manager
from sim.world import derive_seed

SCENARIOS = ("tasks",)
BUGS = ("", "skip-reassign", "stale-view", "first-replica")
PROVIDERS = ("aws", "azure", "gcp", "hetzner", "ovh", "scaleway")
REGIONS = ("eu-west", "us-east", "ap-south")
TEE_KINDS = ("sgx", "sev-snp", "tdx")
ATTESTATION_SCORES = (100, 100, 100, 100, 100, 95, 95, 90, 85, 75)
MAX_NODES = 20_000  # issue 17: 10,000 nodes with churn (docs/simulator.md, "Tasks at scale")
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
    quorum: int = 0  # agreeing replicas that accept a fragment's output (0: all of them)
    max_replicas: int = 0  # replicas a fragment may reach on disagreement (0: redundancy)
    liar_fraction: float = 0.0  # nodes that return a wrong output hash now and then
    lie_rate: float = 0.1  # the fraction of its runs a liar answers wrong
    collude: bool = True  # liars agree on one wrong output (the worst case for a quorum)
    modules: int = 4  # distinct modules the jobs run (statistics are per module and size)
    wall_noise: float = 0.1  # sigma of every run's lognormal wall-time noise
    tail_probability: float = 0.01  # a run hit by host contention: wall time x U(1.5, tail_max)
    tail_max: float = 3.0
    slow_noise: float = 3.0  # a slow node's noise sigma is this many times wall_noise
    min_score: int = 60  # the policy's minimum score (points): below it, Revoke
    bug: str = ""
    progress: Callable[[float, float], None] | None = None

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if not 4 <= self.nodes <= MAX_NODES:
            raise ValueError(f"nodes outside 4..{MAX_NODES}")
        if not 1 <= self.jobs <= 20_000 or not 1 <= self.fragments <= 256:
            raise ValueError("jobs outside 1..20000 or fragments outside 1..256")
        if not 1 <= self.redundancy <= 3:
            raise ValueError("redundancy outside 1..3")
        if self.crashes < 0 or self.revocations < 0 or self.crashes + self.revocations > self.nodes // 2:
            raise ValueError("crashes + revocations must stay within half the nodes")
        if self.duration_s <= 0 or self.detect_s <= 0 or self.timeout_factor <= 1:
            raise ValueError("duration_s, detect_s > 0 and timeout_factor > 1 required")
        if self.bug not in BUGS:
            raise ValueError(f"bug must be one of {BUGS}")
        q = self.quorum or self.redundancy
        most = self.max_replicas or self.redundancy
        if not 1 <= q <= self.redundancy or 2 * q <= self.redundancy or not self.redundancy <= most <= 3:
            raise ValueError("quorum outside (redundancy/2, redundancy] or max_replicas outside "
                             "redundancy..3")
        if not 0 <= self.liar_fraction <= 0.5 or not 0 <= self.lie_rate <= 1:
            raise ValueError("liar_fraction outside 0..0.5 or lie_rate outside 0..1")
        if not 1 <= self.modules <= 64 or not 0 <= self.min_score <= 100:
            raise ValueError("modules outside 1..64 or min_score outside 0..100")
        if (self.wall_noise < 0 or not 0 <= self.tail_probability <= 1 or self.tail_max < 1.5
                or self.slow_noise < 1 or self.slow_factor < 1):
            raise ValueError("wall_noise >= 0, tail_probability in 0..1, tail_max >= 1.5, "
                             "slow_noise >= 1 and slow_factor >= 1 required")


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
    attestation: int  # attestation score (points, 0..100): what the manager's rule reads


@dataclasses.dataclass(frozen=True)
class ModuleSpec:
    """A module's cost model: what a fragment of ``mib`` MiB costs, deterministically (fuel,
    memory, output) or on a nominal core (work; each run adds its host's noise)."""

    module_hash: bytes
    core_s_per_mib: float
    fuel_per_mib: int
    memory_base: int
    memory_per_mib: int
    output_per_mib: int


def _module_specs(cfg: TasksConfig) -> list[ModuleSpec]:
    rng = random.Random(derive_seed(cfg.seed, "modules"))
    return [ModuleSpec(hashlib.sha256(f"module/{i}".encode()).digest(), rng.uniform(0.3, 1.5),
                       rng.randrange(50, 500) * 10**6, rng.randrange(8, 64) << 20,
                       rng.randrange(1, 4) << 20, rng.randrange(1, 64) << 10)
            for i in range(cfg.modules)]


@dataclasses.dataclass(frozen=True)
class JobSpec:
    job_id: str
    owner: str
    submit_s: float
    work_core_s: float  # per fragment
    command: SubmitJob
    module: ModuleSpec


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
        provider = PROVIDERS[rng.randrange(len(PROVIDERS))]
        region = REGIONS[rng.randrange(len(REGIONS))]
        tee = TEE_KINDS[rng.randrange(len(TEE_KINDS))]
        # Attestation scores as node/attestation/score.py gives them: a healthy hardware node
        # 100, TCB hardening or configuration needed 95 or 90, a missed re-attestation 85 or
        # 75; the manager admits none below the policy's minimum. Committed in permille.
        att = max(cfg.min_score, rng.choice(ATTESTATION_SCORES))
        out.append(NodeSpec(offer.node_id, provider, region, tee, att * 10, offer, speed,
                            rng.random() < cfg.slow_fraction, att))
    return out


def _job_specs(cfg: TasksConfig, owners: list[str]) -> list[JobSpec]:
    rng = random.Random(derive_seed(cfg.seed, "jobs"))
    mods = _module_specs(cfg)
    mod_rng = random.Random(derive_seed(cfg.seed, "job-modules"))
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
        mod = mods[mod_rng.randrange(len(mods))]
        cmd = SubmitJob(jid, owner, hashlib.sha256(f"spec/{jid}".encode()).digest(),
                        mod.module_hash, cfg.fragments, cfg.redundancy, req, Weights(), 0, 3,
                        f"input/{jid}", frag_bytes, quorum=cfg.quorum, max_replicas=cfg.max_replicas)
        work = mod.core_s_per_mib * frag_bytes / 2**20
        out.append(JobSpec(jid, owner, rng.uniform(0, cfg.submit_window_s), work, cmd, mod))
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


def lie_hash(job_id: str, fragment: int, node: str, collude: bool) -> bytes:
    """A liar's output: one shared wrong hash when liars collude, else its own."""
    who = "all" if collude else node
    return hashlib.sha256(f"lie/{who}/{job_id}/{fragment}".encode()).digest()


def truth(job_ids: list[str], fragments: int) -> dict[str, bytes]:
    """Each job's true result hash: the digest of its fragments' honest outputs, in order."""
    return {jid: hashlib.sha256(b"".join(output_hash(jid, f) for f in range(fragments))).digest()
            for jid in job_ids}


def content_factor(job_id: str, fragment: int) -> float:
    """How a fragment's content scales its module's fuel, memory and output (0.95..1.05), a
    pure function of the fragment: every honest replica reports the same profile for it."""
    x = int.from_bytes(hashlib.sha256(f"content/{job_id}/{fragment}".encode()).digest()[:4], "big")
    return 0.95 + 0.1 * x / 2**32


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
        self.lie_rng = random.Random(derive_seed(cfg.seed, "lies"))
        liar_rng = random.Random(derive_seed(cfg.seed, "liars"))
        n_liars = round(cfg.liar_fraction * cfg.nodes)
        self.liars = frozenset(liar_rng.sample([s.node_id for s in self.specs], n_liars))
        self.truth = truth(sorted(self.job_specs), cfg.fragments)
        self.min_score = cfg.min_score * 10  # permille, as ManagerPolicy and Member.score
        # integrity bookkeeping for the report (read from the committed state, never fed back)
        self.first_lie: dict[str, float] = {}  # liar -> time of its first wrong result reported
        self.lies = 0
        self.integrity_revoked: dict[str, float] = {}  # node -> time of its Revoke by the rule
        self.delivered: dict[str, bytes] = {}  # job -> the result hash committed with JobDone
        self.fragments_agreed = 0
        self.findings_seen = 0  # committed findings read so far (integrity.last_id)
        self.findings: list[dict[str, Any]] = []  # (a copy of) every committed finding
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
        self.counts = {"reassigned": 0, "timeouts": 0, "traps": 0, "crashes": 0, "revocations": 0,
                       "replicas_added": 0, "score_records": 0}
        # What the scheduler and the reassignment did, by reason (the report's "scheduler").
        self.reassigned_by: dict[str, int] = {}
        self.failed_by: dict[str, int] = {}
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
            self._fail(job_id, f"no placement within {QUEUE_S:.0f}s: {why[:300]}",
                       "no placement")

    def _start_new_runs(self, before: SwarmState, job_id: str) -> None:
        """Start a run for every replica that gained a node in the last commit."""
        old = {(f, r): (rep["node"], rep["attempts"]) for f, r, rep in replicas(before, job_id)}
        for f, r, rep in replicas(self.manager.state, job_id):
            if rep["st"] == ASSIGNED and old.get((f, r)) != (rep["node"], rep["attempts"]):
                self._start_run(job_id, f, r, rep["node"], rep["attempts"])

    def _start_run(self, job_id: str, f: int, r: int, node: str, attempt: int) -> None:
        spec, n = self.job_specs[job_id], self.by_id[node]
        rtt_s = self.meas.rtt_ms[node][spec.owner] / 1000
        transfer_s = spec.command.fragment_bytes / 1024 / self.meas.bandwidth_kib_s[node][spec.owner]
        # A fragment runs on one core (a WASM instance is single-threaded): the job's cores are
        # its reservation, not a speed-up, so a module's wall time does not depend on them.
        nominal = spec.work_core_s
        work = nominal / n.speed * (self.cfg.slow_factor if n.slow else 1.0)
        work *= self._noise(n.slow)
        trap = self.run_rng.random() < self.cfg.trap_probability
        lie = node in self.liars and self.lie_rng.random() < self.cfg.lie_rate
        done_at = self.now + rtt_s + transfer_s + work
        self._at(done_at, "result", job_id, f, r, node, attempt, trap, lie, round(work * 1000))
        deadline = self.now + rtt_s + transfer_s + nominal * self.cfg.timeout_factor + 5.0
        self._at(deadline, "timeout", job_id, f, r, node, attempt)

    def _noise(self, slow: bool) -> float:
        """A run's wall-time factor on its host: lognormal jitter (sigma ``wall_noise``, wider
        on a slow node), and now and then host contention (x U(1.5, ``tail_max``))."""
        sigma = self.cfg.wall_noise * (self.cfg.slow_noise if slow else 1.0)
        x = math.exp(self.run_rng.gauss(0.0, sigma)) if sigma else 1.0
        if self.run_rng.random() < self.cfg.tail_probability:
            x *= self.run_rng.uniform(1.5, self.cfg.tail_max)
        return x

    def profile(self, job_id: str, f: int) -> tuple[int, int, int]:
        """(fuel, peak memory, output bytes) of fragment ``f``: its module's cost of its size,
        scaled by its content; the same on every honest replica."""
        spec = self.job_specs[job_id]
        mod, mib = spec.module, spec.command.fragment_bytes / 2**20
        c = content_factor(job_id, f)
        return (int(mod.fuel_per_mib * mib * c), int((mod.memory_base + mod.memory_per_mib * mib) * c),
                int(mod.output_per_mib * mib * c) + 1)

    def _on_result(self, job_id: str, f: int, r: int, node: str, attempt: int, trap: bool,
                   lie: bool, wall_ms: int) -> None:
        if node in self.crashed:
            return  # a crashed enclave reports nothing
        s = self.manager.state
        j = job(s, job_id)
        rep = j["frags"][f][r] if j is not None else None
        current = (rep is not None and j is not None and j["status"] == "running"
                   and rep["st"] == ASSIGNED and rep["node"] == node and rep["attempts"] == attempt
                   and s.members[node].status == ADMITTED)
        fuel, mem, out_bytes = self.profile(job_id, f)
        out = lie_hash(job_id, f, node, self.cfg.collude) if lie else output_hash(job_id, f)
        cmd = (FragmentResult(job_id, f, r, node, False, b"", 0, 0, 0, wall_ms, "trap: out of fuel") if trap
               else FragmentResult(job_id, f, r, node, True, out, out_bytes, fuel, mem, wall_ms))
        res = self.manager.propose(cmd, self.now)
        if res.ok and lie and not trap:
            self.lies += 1
            self.first_lie.setdefault(node, self.now)
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
        """An admitted live node running a replica now if any (mid-job), else any admitted live
        node. (A finished job keeps its replicas' last state, so a replica still marked assigned
        may sit on a node revoked since: such a node is no victim; picking it made the Revoke
        refused, seen at 10,000 nodes.)"""
        s = self.manager.state
        members = s.members
        busy = sorted({rep["node"] for jid in sorted(self.job_specs) for _, _, rep in replicas(s, jid)
                       if rep["st"] == ASSIGNED and rep["node"] not in self.crashed
                       and (m := members.get(rep["node"])) is not None and m.status == ADMITTED})
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
            self._fail(job_id, f"fragment {f} replica {r}: {rep['attempts']} attempts spent ({reason})",
                       f"attempts spent ({reason})")
            return
        before = self.manager.state
        new, res = self.manager.reassign(job_id, f, r, node, reason, self.now)
        if not res.ok:
            self.inv.violation(f"ReassignFragment {job_id}/{f}/{r} off {node} refused: {res.error}")
            return
        self.counts["reassigned"] += 1
        self.reassigned_by[reason] = self.reassigned_by.get(reason, 0) + 1
        if new:
            self._start_new_runs(before, job_id)
        else:
            self._at(self.now + RETRY_S, "retry", job_id)

    def _maybe_done(self, job_id: str) -> None:
        """The real manager's close (node/tasks/duty.py ``_finish``): a plain job once every
        replica reported; a quorum job (quorum below r, or room for more replicas) as soon as
        every fragment agrees. A fragment that can no longer reach its quorum gets one more
        replica (``AddReplica``) while under ``max_replicas``, else the job fails with the
        evidence. The result combines each fragment's agreed output."""
        s = self.manager.state
        j = job(s, job_id)
        if j is None or j["status"] != "running":
            return
        plain = j["q"] == j["r"] == j["rmax"]
        if plain and any(rep["st"] in (PENDING, ASSIGNED) for frag in j["frags"] for rep in frag):
            return
        verdicts = [fragment_verdict(s, j, f) for f in range(j["n"])]
        lost = next((v for v in verdicts if v.state == NO_QUORUM), None)
        if lost is not None:
            self._fail(job_id, lost.why, "no quorum")
            return
        short = [f for f, v in enumerate(verdicts) if v.state == NEEDS_REPLICA]
        for f in short:
            res = self.manager.propose(AddReplica(job_id, f), self.now)
            if not res.ok:
                self.inv.violation(f"AddReplica {job_id}/{f} refused: {res.error}")
                return
            self.counts["replicas_added"] += 1
        if short:
            self._try_assign(job_id)
            return
        if incomplete(s, j):
            return
        outs: list[bytes | None] = [v.output for v in verdicts]
        if self.cfg.bug == "first-replica":  # planted: deliver replica 0's output, agreed or not
            outs = [frag[0]["out"] or None for frag in j["frags"]]
        agg = hashlib.sha256(b"".join(o for o in outs if o is not None)).digest()
        res = self.manager.propose(JobDone(job_id, agg, 4096 * j["n"]), self.now)
        if not res.ok:
            self.inv.violation(f"JobDone {job_id} refused: {res.error}")
            return
        self.finished[job_id] = ("done", self.now)
        self.delivered[job_id] = agg
        self.fragments_agreed += sum(1 for v in verdicts if v.state == AGREED)
        self._review(job_id)
        self._drop_finished()

    def _drop_finished(self) -> None:
        """As the real manager does once results are delivered (here at once): forget finished
        jobs beyond the newest ``KEEP_FINISHED``, so the state stays bounded."""
        for jid in finished_to_drop(self.manager.state):
            res = self.manager.propose(DropJob(jid), self.now)
            if not res.ok:
                self.inv.violation(f"DropJob {jid} refused: {res.error}")

    def _review(self, job_id: str) -> None:
        """After a job-done (the only command that moves a penalty): read its new findings, and
        apply the manager's score rule (``consensus.integrity.review_member``, the very function
        node/manager.py's reconcile calls) to every node that ran one of its replicas."""
        s = self.manager.state
        last = integrity.last_id(s)
        for fid in range(self.findings_seen + 1, last + 1):
            got = integrity.finding(s, fid)
            if got is not None:
                self.findings.append({"id": fid, "node": got["node"], "kind": got["kind"],
                                      "job": got["job"], "t": self.now})
        self.findings_seen = last
        nodes = sorted({rep["node"] for _, _, rep in replicas(s, job_id) if rep["node"]})
        for node in nodes:
            cmd = integrity.review_member(self.manager.state, node, self.by_id[node].attestation,
                                          self.min_score)
            if cmd is None:
                continue
            res = self.manager.propose(cmd, self.now)
            if not res.ok:
                self.inv.violation(f"{type(cmd).__name__} {node} refused: {res.error}")
                continue
            if isinstance(cmd, Revoke):
                self.integrity_revoked[node] = self.now
                self.fault_times.append((self.now, "integrity", node))
                self._move_all(node, "revoked", done_too=True)
            else:
                self.counts["score_records"] += 1

    def _fail(self, job_id: str, reason: str, kind: str) -> None:
        """Commit JobFailed; ``kind`` is the reason without the job's particulars (the report
        counts failures by it)."""
        self.failed_by[kind] = self.failed_by.get(kind, 0) + 1
        res = self.manager.propose(JobFailed(job_id, reason), self.now)
        if not res.ok:
            self.inv.violation(f"JobFailed {job_id} refused: {res.error}")
            return
        self.finished[job_id] = ("failed", self.now)
        self._drop_finished()

    def trace_digest(self) -> str:
        """SHA-256 (first 32 hex digits) of the committed log: kinds, fields, answers, times."""
        h = hashlib.sha256()
        for e in self.manager.log:
            h.update(repr((e.index, round(e.time_s, 9), TASK_REGISTRY.encode(e.command).hex(),
                           e.ok, e.error)).encode())
        return h.hexdigest()[:32]

    def honest_output(self, job_id: str, fragment: int) -> bytes:
        return output_hash(job_id, fragment)

    def revoked(self) -> list[str]:
        return sorted(n for n, m in self.manager.state.members.items() if m.status == REVOKED)

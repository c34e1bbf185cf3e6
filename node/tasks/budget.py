"""Privacy budgets on a real node: the manager charges a private job before it commits it,
releases its statistic after its fragments ran, and sets budgets its owners signed; owners ask
for them through the control socket (``enclave-swarm budget show|set``).

Theory of operation
-------------------
- **Charge, then commit.** A submitted private job carries its query (``consensus.tasks.Privacy``).
  The manager recomputes the query's loss with OpenDP (never trusting the client's figure),
  rounds it up to the ledger's unit, and commits a ``charge-budget`` of the job against the
  spent totals it read (compare-and-set, ``consensus/budgets.py``). Only then does it commit the
  job, whose state transition checks that very charge. A query over budget is refused with the
  ledger's reason and nothing is charged; a charge that raced another (the totals moved) is
  read again and retried; a charge already committed for this job (a retried submit, or a
  predecessor that charged and failed over before committing the job) is taken as made.
- **Release once.** When every replica agrees, the manager decodes the fragments' outputs as
  records (lines, UTF-8 with replacement), runs the query through OpenDP's privacy filter
  holding exactly what was charged (:func:`node.tasks.privacy.release`), and commits the release
  bytes with the job's end. The noise is drawn inside the manager's enclave, after aggregation;
  the raw records never leave it. A successor delivers the committed bytes: it never draws the
  noise again (that would spend the budget twice).
- **Set by the owner.** ``set-budget`` commands are signed by the data set's owner with its node
  key over ``budgets.grant_payload`` and checked by the manager before it proposes them (the
  state keeps the signature for audit).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

import trio

from consensus import budgets
from consensus import tasks as ct
from consensus.state import ADMITTED
from node.tasks.private_query import PrivacyError, dataset_problem, decode_query
from node.tasks.wire import BudgetRequest, TaskReply

if TYPE_CHECKING:
    from node.tasks.duty import ManagerDuty
    from node.tasks.service import TaskService

log = logging.getLogger("enclave_swarm.tasks")

CHARGE_TRIES = 5          # compare-and-set retries when another charge moved the totals
FILTER_SLACK = 1e-12      # float room for OpenDP's filter above the charged (rounded-up) units


class BudgetError(ValueError):
    """A budget this node cannot set (the reason says why)."""


def charged_epsilon(units: int) -> float:
    return units * budgets.EPS_UNIT


async def charge(duty: ManagerDuty, pid: str,
                 cmd: ct.SubmitJob) -> tuple[ct.SubmitJob | None, TaskReply | None]:
    """Charge ``cmd``'s private query to its data set (manager side). Returns the command to
    commit (its charge set to the recomputed units) or the refusal to answer."""
    svc = duty.svc
    p = cmd.privacy
    assert p is not None
    try:
        q = decode_query(p.query)
        if q.dataset != p.dataset or q.kind != p.kind:
            raise PrivacyError("the query names another data set or kind than the job")
        from node.tasks.privacy import loss  # OpenDP: only for private jobs

        units, delta = budgets.to_units(await trio.to_thread.run_sync(loss, q))
    except (PrivacyError, ValueError) as exc:
        return None, svc.refuse("task_submit_refused", "privacy", pid, f"private query: {exc}")
    fixed = dataclasses.replace(cmd, privacy=dataclasses.replace(p, epsilon=units))
    for _ in range(CHARGE_TRIES):
        st = svc.role.state
        held = budgets.budget(st, p.dataset)
        if held is None:
            return None, svc.refuse("task_submit_refused", "no-budget", pid,
                                    f"data set {p.dataset} has no privacy budget "
                                    "(its owner sets one: enclave-swarm budget set)")
        if held["owner"] != pid:
            return None, svc.refuse("task_submit_refused", "not-budget-owner", pid,
                                    f"data set {p.dataset} belongs to another owner")
        if budgets.charged(st, p.dataset, cmd.job_id):
            return fixed, None
        ok, err = await svc.role.command(budgets.ChargeBudget(
            p.dataset, cmd.job_id, units, delta, held["spent_eps"], held["spent_delta"]), timeout_s=10.0)
        if ok or budgets.charged(svc.role.state, p.dataset, cmd.job_id):
            svc.agent.counters.inc("privacy_charged")
            log.info("job %s charged epsilon %.6g to %s", cmd.job_id, charged_epsilon(units),
                     p.dataset, extra={"job": cmd.job_id})
            return fixed, None
        if not err.startswith(budgets.MOVED):
            return None, svc.refuse("task_submit_refused", "over-budget" if err.startswith(
                budgets.OVER_BUDGET) else "charge-refused", pid, err)
    return None, svc.refuse("task_submit_refused", "charge-contended", pid,
                            f"the budget of {p.dataset} kept moving: submit again")


def release(j: Any, outputs: list[bytes]) -> bytes:
    """The release document of private job ``j`` over its fragments' ``outputs`` (run in a
    worker thread: OpenDP's search and sampling take milliseconds). Raises PrivacyError."""
    from node.tasks.privacy import release as run
    from node.tasks.privacy import release_document

    q = decode_query(j["dp"]["q"])
    records = "\n".join(o.decode("utf-8", errors="replace").rstrip("\n") for o in outputs if o)
    eps = charged_epsilon(j["dp"]["eps"])
    return release_document(q, run(q, records, eps + FILTER_SLACK), eps)


async def on_budget(duty: ManagerDuty, pid: str, req: BudgetRequest) -> TaskReply:
    """Manager side of ``budget set``: the owner's signed ``set-budget``, checked, then
    committed."""
    svc = duty.svc
    if not duty.active():
        return duty._not_manager()
    try:
        cmd = ct.TASK_REGISTRY.decode(req.command)
    except Exception as exc:  # InvalidCommand: the decoder names the problem
        return svc.refuse("budget_refused", "invalid", pid, f"invalid command: {exc}")
    if not isinstance(cmd, budgets.SetBudget):
        return svc.refuse("budget_refused", "invalid", pid, "not a set-budget command")
    if cmd.owner != pid:
        return svc.refuse("budget_refused", "not-owner", pid, "a budget is set by its owner's node")
    m = svc.role.state.members.get(pid)
    if m is None or m.status != ADMITTED:
        return svc.refuse("budget_refused", "not-admitted", pid, "only an admitted member sets budgets")
    why = budgets.check_grant(cmd, svc.role.public_key_of, svc.role.verify)
    if why is not None:
        return svc.refuse("budget_refused", "signature", pid, why)
    ok, err = await svc.role.command(cmd, timeout_s=10.0)
    if not ok:
        return TaskReply(False, err[:500], "rejected")
    log.info("privacy budget of %s set by %s", cmd.dataset, pid, extra={"peer": pid})
    return TaskReply(True)


# --------------------------------------------------------------------------- owner side


def show(st: Any, dataset: str | None = None) -> list[dict[str, Any]]:
    """The ledger as plain values (every data set, or one), for ``budget show``."""
    names = [dataset] if dataset else budgets.datasets(st)
    out = []
    for name in names:
        rec = budgets.budget(st, name)
        if rec is None:
            continue
        out.append({"dataset": name, "owner": rec["owner"], "version": rec["version"],
                    "epsilon": rec["eps"] * budgets.EPS_UNIT,
                    "spent_epsilon": rec["spent_eps"] * budgets.EPS_UNIT,
                    "remaining_epsilon": (rec["eps"] - rec["spent_eps"]) * budgets.EPS_UNIT,
                    "delta": rec["delta"] * budgets.DELTA_UNIT,
                    "spent_delta": rec["spent_delta"] * budgets.DELTA_UNIT,
                    "charges": rec["n"],
                    "recent": [{"query": q, "epsilon": e * budgets.EPS_UNIT}
                               for q, e, _ in rec["charges"][-10:]]})
    return out


async def set_budget(svc: TaskService, dataset: str, epsilon: float, delta: float) -> None:
    """Sign and send a ``set-budget`` for ``dataset`` owned by this node (raises BudgetError,
    or the owner's TaskError when no manager can be reached)."""
    why = dataset_problem(dataset)
    if why:
        raise BudgetError(why)
    try:
        eps_units, delta_units = budgets.to_units(epsilon, delta)
    except ValueError as exc:
        raise BudgetError(str(exc)) from None
    if eps_units > budgets.MAX_EPSILON or delta_units > budgets.MAX_DELTA:
        raise BudgetError(f"a budget is at most epsilon {budgets.MAX_EPSILON * budgets.EPS_UNIT:g}, "
                        "delta 1")
    held = budgets.budget(svc.view(), dataset)
    version = 0 if held is None else int(held["version"])
    if held is not None and held["owner"] != svc.me:
        raise BudgetError(f"data set {dataset} belongs to another owner")
    sig = svc.agent._identity.sign(budgets.grant_payload(dataset, svc.me, eps_units, delta_units, version))
    cmd = budgets.SetBudget(dataset, svc.me, eps_units, delta_units, version, sig)
    reply = await svc.owner.ask_manager(BudgetRequest(ct.TASK_REGISTRY.encode(cmd)), TaskReply,
                                        timeout_s=30.0)
    if not reply.ok:
        raise BudgetError(f"the manager refused the budget: {reply.error}")

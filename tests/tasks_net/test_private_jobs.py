"""Private jobs on real in-process nodes: a budget set by its owner, queries charged before they
are committed, a query over budget refused with nothing charged and nothing run, the release
drawn once inside the manager and committed, and the attacks on the ledger refused."""

from __future__ import annotations

import json
import statistics

import pytest

from consensus import budgets
from consensus import tasks as ct
from node.tasks import budget
from node.tasks.owner import TaskError
from node.tasks.testing import committed, task_federation, write_job
from node.tasks.wire import BudgetRequest, TaskReply
from node.testing import wait_until

AGES = [(i * 37) % 90 + 5 for i in range(300)]


def _ledger(fed, name):
    state = fed.freshest()
    return budgets.budget(state, name) if state is not None else None


def _spec(tmp, extra: str):
    return write_job(tmp, "slowcat", fragments=3, split="records", extra="[privacy]\n" + extra)


async def _done(owner, job_id):
    await wait_until(lambda: owner.tasks.owner.jobs[job_id].status in ct.TERMINAL_JOB, 90)
    own = owner.tasks.owner.jobs[job_id]
    assert own.status == ct.DONE, own.reason
    return own


async def test_private_queries_spend_the_budget_once_and_are_refused_beyond_it(tmp_path):
    (tmp_path / "input").write_text("".join(f"{a}\n" for a in AGES))
    async with task_federation(tmp_path, 3) as fed:
        owner, other = fed.nodes[1], fed.nodes[2]
        await budget.set_budget(owner.tasks, "ages", 1.0, 0.0)
        await wait_until(lambda: _ledger(fed, "ages") is not None, 10)
        assert _ledger(fed, "ages")["owner"] == owner.peer_id

        # a count at epsilon 0.5: charged before it ran, its noisy answer near the truth
        job = await owner.tasks.owner.submit(str(_spec(tmp_path, 'dataset = "ages"\nkind = "count"\n'
                                                                  'epsilon = 0.5\n')))
        own = await _done(owner, job)
        doc = json.loads(own.result_path.read_bytes())
        assert doc["kind"] == "count" and doc["dataset"] == "ages" and doc["epsilon"] == 0.5
        assert abs(doc["value"] - len(AGES)) < 60  # Laplace scale 2: 30 scales out is p < 1e-13
        j = committed(fed, job)
        assert j["dp"]["eps"] == 500_000 and j["release"] == own.result_path.read_bytes()
        assert j["result"] == own.result_hash
        led = _ledger(fed, "ages")
        assert (led["spent_eps"], led["n"]) == (500_000, 1) and led["charges"][0][0] == job
        assert ct.check_invariants(fed.leader().role.state) == []

        # over budget (0.5 left, 0.6 asked): refused at submit, nothing charged, no job
        with pytest.raises(TaskError, match="over budget"):
            await owner.tasks.owner.submit(str(_spec(tmp_path, 'dataset = "ages"\nkind = "mean"\n'
                                                               'epsilon = 0.6\nlower = 0\nupper = 100\n')))
        assert _ledger(fed, "ages")["spent_eps"] == 500_000
        assert len(ct.jobs(fed.leader().role.state)) == 1
        assert fed.leader().agent.counters.get("task_submit_refused", "over-budget") == 1

        # a mean within what is left: the bounds clamp, the answer is near the true mean
        job2 = await owner.tasks.owner.submit(str(_spec(tmp_path, 'dataset = "ages"\nkind = "mean"\n'
                                                                   'epsilon = 0.5\nlower = 0\n'
                                                                   'upper = 100\n')))
        doc = json.loads((await _done(owner, job2)).result_path.read_bytes())
        assert abs(doc["value"] - statistics.mean(AGES)) < 30 and doc["bounds"] == [0.0, 100.0]
        led = _ledger(fed, "ages")
        assert led["spent_eps"] == led["eps"] == 1_000_000 and led["n"] == 2

        # another node may not spend the owner's data set, nor change its budget
        with pytest.raises(TaskError, match="another owner"):
            await other.tasks.owner.submit(str(_spec(tmp_path, 'dataset = "ages"\nkind = "count"\n'
                                                               'epsilon = 0.1\n')))
        with pytest.raises(budget.BudgetError, match="another owner"):
            await budget.set_budget(other.tasks, "ages", 50.0, 0.0)
        assert _ledger(fed, "ages")["eps"] == 1_000_000


async def test_forged_budget_grants_are_refused_and_counted(tmp_path):
    """A compromised member sends the manager grants it may not make: one naming another
    owner, one signed by the wrong key, one replayed against an older version."""
    (tmp_path / "input").write_text("1\n")
    async with task_federation(tmp_path, 3) as fed:
        owner, attacker = fed.nodes[1], fed.nodes[2]
        # through the control commands `enclave-swarm budget set|show` send
        from node.tasks.cli import budget_table
        from node.tasks.owner import _cmd_budget_set, _cmd_budget_show

        assert (await _cmd_budget_set(owner.agent, {"dataset": "ds", "epsilon": "1"}))["ok"] is False
        bad = await _cmd_budget_set(owner.agent, {"dataset": "bad name", "epsilon": 1.0})
        assert bad["ok"] is False and "dataset" in bad["error"]
        assert (await _cmd_budget_set(owner.agent, {"dataset": "ds", "epsilon": 1.0}))["ok"] is True
        await wait_until(lambda: _ledger(fed, "ds") is not None, 10)
        await wait_until(lambda: budgets.budget(owner.tasks.view(), "ds") is not None, 10)
        shown = await _cmd_budget_show(owner.agent, {"dataset": "ds"})
        assert shown["ok"] and shown["budgets"][0]["remaining_epsilon"] == 1.0
        assert "ds" in budget_table(shown["budgets"])
        missing = await _cmd_budget_show(owner.agent, {"dataset": "nope"})
        assert missing["ok"] is False and "no privacy budget" in missing["error"]
        granted = _ledger(fed, "ds")
        lead = fed.leader()

        async def send(cmd) -> TaskReply:
            reply, _ = await attacker.tasks.request(
                lead.peer_id, BudgetRequest(ct.TASK_REGISTRY.encode(cmd)), TaskReply, timeout_s=10.0)
            return reply

        sig = attacker.agent._identity.sign(budgets.grant_payload("ds", owner.peer_id, 10**8, 0, 1))
        reply = await send(budgets.SetBudget("ds", owner.peer_id, 10**8, 0, 1, sig))
        assert not reply.ok and reply.detail == "not-owner"
        reply = await send(budgets.SetBudget("mine", attacker.peer_id, 10**8, 0, 0, b"\x01" * 64))
        assert not reply.ok and reply.detail == "signature"
        # the owner's own grant, replayed: the ledger moved past its version
        reply, _ = await owner.tasks.request(
            lead.peer_id, BudgetRequest(ct.TASK_REGISTRY.encode(budgets.SetBudget(
                "ds", owner.peer_id, granted["eps"], granted["delta"], 0, granted["sig"]))),
            TaskReply, timeout_s=10.0)
        assert not reply.ok and "version" in reply.error
        assert lead.agent.counters.get("budget_refused", "not-owner") == 1
        assert lead.agent.counters.get("budget_refused", "signature") == 1
        assert _ledger(fed, "ds") == granted
        assert budgets.budget(lead.role.state, "mine") is None


@pytest.mark.slow  # ~13 s: five nodes, a manager crash, a new election
async def test_a_budget_survives_a_manager_failover_and_is_never_spent_twice(tmp_path):
    """The ledger is replicated state: after the manager that charged a query crashes, its
    successor holds the same charge, refuses what would pass the budget and charges the rest
    once."""
    (tmp_path / "input").write_text("".join(f"{a}\n" for a in AGES))
    async with task_federation(tmp_path, 5) as fed:
        old = fed.leader()
        owner = next(n for n in fed.nodes if n is not old)
        await budget.set_budget(owner.tasks, "ages", 1.0, 0.0)
        await wait_until(lambda: _ledger(fed, "ages") is not None, 10)
        job = await owner.tasks.owner.submit(str(_spec(tmp_path, 'dataset = "ages"\nkind = "count"\n'
                                                                  'epsilon = 0.5\n')))
        await _done(owner, job)
        before = _ledger(fed, "ages")
        assert (before["spent_eps"], before["n"]) == (500_000, 1)

        await fed.crash(old)
        await wait_until(lambda: fed.leader() is not None and fed.leader() is not old, 60)
        await wait_until(lambda: owner.tasks.manager_peer() == fed.leader().peer_id, 60)
        assert _ledger(fed, "ages") == before  # the successor's own copy: the same charge
        with pytest.raises(TaskError, match="over budget"):
            await owner.tasks.owner.submit(str(_spec(tmp_path, 'dataset = "ages"\nkind = "count"\n'
                                                               'epsilon = 0.6\n')))
        assert _ledger(fed, "ages")["spent_eps"] == 500_000
        job2 = await owner.tasks.owner.submit(str(_spec(tmp_path, 'dataset = "ages"\nkind = "count"\n'
                                                                   'epsilon = 0.5\n')))
        await _done(owner, job2)
        led = _ledger(fed, "ages")
        assert led["spent_eps"] == led["eps"] == 1_000_000 and led["n"] == 2
        assert [c[0] for c in led["charges"]] == [job, job2]  # each query charged once
        assert ct.check_invariants(fed.leader().role.state) == []

"""A done job whose result has not reached its owner when the manager that held it is no longer
the manager, and a holder of an agreed output can no longer hand it over: the new manager runs
that fragment itself and delivers the committed result. Found by the seeded chaos test
(``tests/chaos/test_chaos_run.py``: the manager, which had run a fragment, revoked between
``job-done`` and the delivery, and another holder restarted; the owner never had the result).
On real in-process nodes; the holder crashes (a revoked holder takes the same path,
``ManagerDuty._lost``, but a successor may still collect its output before it applies the
revocation, which is no fault: the bytes are checked against the committed digests)."""

from __future__ import annotations

import trio

from consensus import tasks as ct
from node.tasks.testing import committed, task_federation, write_job
from node.tasks.wire import FetchReply, FetchRequest, TaskReply
from node.testing import wait_until


def _hold_deliveries(owner) -> list[bool]:
    """The owner turns deliveries away while the returned flag's first item is True (its
    connection to the manager failing, as in the chaos run); each is counted and logged by the
    manager and tried again with its backoff."""
    held = [True]
    real = owner.tasks.owner.on_deliver

    async def on_deliver(pid, req, data):
        if held[0]:
            return TaskReply(False, "the owner is unreachable (held by the test)", "held")
        return await real(pid, req, data)

    owner.tasks.owner.on_deliver = on_deliver
    return held


async def test_a_done_jobs_output_lost_with_its_holder_is_run_again_by_the_new_manager(tmp_path):
    data = bytes(range(256)) * 160  # 40 KiB over 8 fragments
    (tmp_path / "input").write_bytes(data)
    spec = write_job(tmp_path, "slowcat", fragments=8)
    async with task_federation(tmp_path, 4) as fed:
        old = fed.leader()
        owner = next(n for n in fed.nodes if n is not old)
        held = _hold_deliveries(owner)
        job_id = await owner.tasks.owner.submit(str(spec))
        await wait_until(lambda: (committed(fed, job_id) or {}).get("status") == ct.DONE, 120)
        j = committed(fed, job_id)
        holders = {rep["node"] for frag in j["frags"] for rep in frag} - {owner.peer_id}
        assert holders, "every fragment ran on the owner"
        # The old manager if it ran a fragment (its crash also ends its term), else another.
        holder = fed.by_peer(old.peer_id if old.peer_id in holders else sorted(holders)[0])
        lost = [f for f, frag in enumerate(j["frags"]) if frag[0]["node"] == holder.peer_id]

        # An attested council member that is not the manager cannot have a done job's fragment.
        other = next(n for n in fed.alive() if n not in (old, owner, holder))
        reply, blob = await other.tasks.request(owner.peer_id, FetchRequest(job_id, lost[0], 0, True),
                                                FetchReply, timeout_s=30.0)
        assert not reply.ok and blob == b"", reply
        assert owner.agent.counters.get("task_fetch_refused", "not-assigned") >= 1

        await fed.crash(holder)  # its outputs, and the old manager's results, go with it
        if holder is not old:  # the old manager hands over: its successor holds no output
            with trio.fail_after(60):
                while fed.leader() is old:
                    await old.role.transfer(old.role.state.member(other.peer_id).raft_id)
                    await trio.sleep(1.0)
        await wait_until(lambda: fed.leader() is not None and fed.leader() is not old, 60)
        held[0] = False
        await wait_until(lambda: owner.tasks.owner.jobs[job_id].status in ct.TERMINAL_JOB, 120)
        own = owner.tasks.owner.jobs[job_id]
        assert own.status == ct.DONE, own.reason
        assert own.result_path.read_bytes() == data
        # The new manager (or, had the role moved again, its successor too) ran each lost
        # fragment itself, and every run matched the agreed output.
        alive = fed.alive()
        assert sum(n.tasks.duty.stats["recomputed"] for n in alive) >= len(lost)
        assert sum(n.agent.counters.get("task_recomputed") for n in alive) >= len(lost)
        assert all(n.agent.counters.get("task_recompute_failed", "mismatch") == 0 for n in alive)
        # Nothing was moved: an ended job's replicas stay where they ran. The delivery is
        # committed, so a later manager neither delivers it again nor rebuilds it.
        assert committed(fed, job_id)["done"] == 8
        await wait_until(lambda: committed(fed, job_id).get("delivered") is True, 30)

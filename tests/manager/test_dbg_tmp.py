import trio
from tests.manager.helpers import federation, settled, ManagerLog
from tests.manager.test_inprocess import _watch
from tests.netutil import wait_until

async def test_dbg(tmp_path):
    log = ManagerLog()
    async with federation(tmp_path, 5) as fed, trio.open_nursery() as n:
        await n.start(_watch, fed, log)
        await wait_until(lambda: settled(fed, 5), 60)
        old = fed.leaders()[0]
        old_term = old.role.node.raft.term
        await fed.kill(old)
        await wait_until(lambda: len(fed.leaders()) == 1 and fed.leaders()[0].role.node.raft.term > old_term, 30)
        new = fed.leaders()[0]
        try:
            await wait_until(lambda: all(s["manager"] == new.agent.peer_id for s in fed.statuses()), 20)
        except trio.TooSlowError:
            for m in fed.members:
                s = m.role.status()
                print(m.name, s["role"], s["manager"], s["term"], s["consensus"]["voters"], m.role.node.raft.lead if m.role.node else None, m.role._raft_to_peer)
                print({k: v for k, v in m.agent.counters._c.items() if 'raft' in k[0]})
            print("new", new.agent.peer_id)
            raise
        n.cancel_scope.cancel()

"""Peers that come back on new addresses are met again (issue 16: rescheduled pods, restarted
hosts). A node dials the addresses it saved at its last shutdown (``peers.json``) and those its
peers name; when the saved ones are dead, that must cost no more than those dials.

It used to cost a minute: py-libp2p dialled one address per transport class (the oldest it had
stored), and a peer all of whose dialled addresses had failed was refused every dial for 60 s,
whatever new address arrived meanwhile. Two nodes restarted on new ports, each having dialled
the other's saved address first, then learned each other's new address from a third and could
not dial it (overlay/libp2p_fixes.py ``FastDialSwarm``, "stale addresses").

Real in-process nodes on loopback, with data dirs."""

from __future__ import annotations

import socket

import trio

from node.datadir import DataDir
from tests.netutil import fully_attested, make_agent, run_in_process, wait_until

# Well under the 60 s for which py-libp2p 0.8.1 refused every dial to a peer whose dialled
# addresses all failed, well over what meeting through peer exchange takes (about a second).
MEET_S = 25.0


def _port(addr: str) -> int:
    return int(addr.split("/tcp/")[1].split("/")[0])


def _with_data_dir(agent, path):  # type: ignore[no-untyped-def]
    path.mkdir(parents=True, exist_ok=True)
    agent.data_dir = DataDir(path)
    return agent


async def test_nodes_restarted_on_new_ports_meet_again_past_their_saved_dead_addresses(tmp_path):
    async with trio.open_nursery() as nursery:
        first = _with_data_dir(make_agent(tmp_path, "n0", gossip=True), tmp_path / "d0")
        await run_in_process(nursery, first)
        boot = (first.full_addrs()[0],)
        agents = [first]
        for i in (1, 2):
            a = _with_data_dir(make_agent(tmp_path, f"n{i}", bootstrap=boot, gossip=True),
                               tmp_path / f"d{i}")
            await run_in_process(nursery, a)
            agents.append(a)
        await wait_until(lambda: fully_attested(agents), 30)
        old = {a.peer_id: a.full_addrs()[0] for a in agents}
        keys = [a._identity for a in agents]
        for a in agents:  # a graceful stop: each saves the others' addresses
            a.stop()
        for a in agents:
            await a.wait_stopped()
        for a in agents:  # its listener is closed: its saved address is dead now
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", _port(old[a.peer_id]))) != 0
        for a in agents:
            saved = a.data_dir.load_peers()
            assert set(saved) == set(old) - {a.peer_id}, saved

        # Every node comes back on a new port; n1 and n2 know only n0's new address, and each
        # dials the other's saved (dead) address first.
        again = [_with_data_dir(make_agent(tmp_path, "n0", gossip=True, key=keys[0]), tmp_path / "d0")]
        await run_in_process(nursery, again[0])
        boot = (again[0].full_addrs()[0],)
        for i in (1, 2):
            a = _with_data_dir(make_agent(tmp_path, f"n{i}", bootstrap=boot, gossip=True, key=keys[i]),
                               tmp_path / f"d{i}")
            await run_in_process(nursery, a)
            again.append(a)
        assert all(a.full_addrs()[0] != old[a.peer_id] for a in again)
        n1, n2 = again[1], again[2]
        await wait_until(lambda: n1.counters.get("dial_failed", "SwarmDialAllFailedError") >= 1
                         and n2.counters.get("dial_failed", "SwarmDialAllFailedError") >= 1, 20)
        await wait_until(lambda: fully_attested(again), MEET_S)
        # They met by the new address a peer named, not by chance.
        assert n1.counters.get("dial_learned") + n2.counters.get("dial_learned") >= 1
        for a in again:
            a.stop()

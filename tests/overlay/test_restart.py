"""A node that crashed and comes back with its identity (on a new port) is attested again by
every peer, including peers that still hold its old, dead connection: py-libp2p opens new
streams on the connection with the most streams, which is the dead one once streams hang on
it, so the agent closes a peer's older connections when it reconnects after missed
re-attestations (node/agent.py ``_close_stale_connections``)."""

from __future__ import annotations

import trio

from tests.netutil import crash_in_process, fully_attested, make_agent, run_in_process, wait_until


async def test_a_crashed_node_restarted_with_its_identity_is_attested_again_by_all(tmp_path) -> None:
    async with trio.open_nursery() as nursery:
        first = make_agent(tmp_path, "n0")
        await run_in_process(nursery, first)
        agents, scopes = [first], {}
        boot = (first.full_addrs()[0],)
        for i in range(1, 4):
            a = make_agent(tmp_path, f"n{i}", bootstrap=boot)
            scopes[a.peer_id] = await run_in_process(nursery, a)
            agents.append(a)
        await wait_until(lambda: fully_attested(agents), 30)
        victim = agents[3]
        key = victim._identity
        await crash_in_process(victim, scopes[victim.peer_id])
        others = agents[:3]
        # every peer notices: at least one missed re-attestation of the victim
        await wait_until(lambda: all((p := a.peers.get(victim.peer_id)) is not None
                                     and (p.missed >= 1 or not p.connected) for a in others), 30)
        again = make_agent(tmp_path, "n3-again", bootstrap=boot, key=key)
        assert again.peer_id == victim.peer_id
        await run_in_process(nursery, again)
        await wait_until(lambda: fully_attested([*others, again]), 30)
        for a in others:
            p = a.peers.get(again.peer_id)
            assert p is not None and p.attested and p.missed == 0
        for a in [*others, again]:
            a.stop()


async def test_a_node_that_stops_gracefully_stays_gone_in_its_peers_view(tmp_path) -> None:
    """Its goodbye marks it left; the peer then closes its connection. The stopping node must
    not dial that peer again (its bootstrap loop runs until the very end): it would be taken
    for back, attested again, and its departure lost (a fresh-clone run saw exactly that on
    node processes). Its shutdown is slowed after the goodbyes, as a process's is, so that the
    peer closes the connection while the stopping node still runs."""
    for r in range(2):
        await _stop_slowly(tmp_path, r)


async def _stop_slowly(tmp_path, r: int) -> None:  # type: ignore[no-untyped-def]
    async with trio.open_nursery() as nursery:
        a = make_agent(tmp_path, f"a{r}")
        await run_in_process(nursery, a)
        b = make_agent(tmp_path, f"b{r}", bootstrap=(a.full_addrs()[0],))
        await run_in_process(nursery, b)
        await wait_until(lambda: fully_attested([a, b]), 30)
        close = b._close_listeners

        async def slow_close() -> None:  # a shutdown that takes a while after the goodbyes
            await trio.sleep(1.5)         # (a process saves, closes mDNS, its socket...)
            await close()

        b._close_listeners = slow_close  # type: ignore[method-assign]
        b.stop()
        await b.wait_stopped()
        await trio.sleep(0)
        p = a.peers.get(b.peer_id)
        assert p is not None and p.state == "left" and not p.attested, (r, p)
        a.stop()

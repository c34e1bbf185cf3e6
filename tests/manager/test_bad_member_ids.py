"""A committed member id that names no libp2p peer (only a forged or corrupt state holds one)
is dropped and counted by the manager role's Raft outbox, never a crash of the role (found by
the metrics benchmark: ``Join("n0")`` raised ValueError in the sender task, which took the
role's nursery down)."""

from __future__ import annotations

from types import SimpleNamespace

from node.manager import ManagerRole
from node.metrics import Counters


def _role() -> ManagerRole:
    role = ManagerRole.__new__(ManagerRole)  # the outbox only: no node, no nursery needed
    role._senders = {}
    role._raft_to_peer = {2: "n0", 3: "not-base58-0OIl"}
    role.node = None
    role._nursery = None  # starting a sender task would fail: none may be started
    role.agent = SimpleNamespace(counters=Counters(), peer_id="12D3KooWself")
    return role


def test_messages_to_a_member_id_that_names_no_peer_are_dropped_and_counted() -> None:
    role = _role()
    role._send_all((SimpleNamespace(to=2), SimpleNamespace(to=3), SimpleNamespace(to=2)))
    assert role.agent.counters.get("raft_dropped", "bad-peer-id") == 3
    assert role._senders == {}

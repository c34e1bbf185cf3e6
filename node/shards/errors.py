"""The data layer's errors, shared by the owner's service (node/shards/service.py) and the
managed part (node/shards/managed.py) without either importing the other for them."""

from __future__ import annotations

import dataclasses


class ShardServiceError(Exception):
    """A put/get/rm/repair that could not be done; the message says why, for the operator."""


@dataclasses.dataclass
class HolderFailure:
    index: int
    peer_id: str
    reason: str

    def __str__(self) -> str:
        return f"shard {self.index} on {self.peer_id}: {self.reason}"


class FetchFailed(ShardServiceError):
    def __init__(self, index: int, peer_id: str, reason: str) -> None:
        super().__init__(f"shard {index} on {peer_id}: {reason}")
        self.failure = HolderFailure(index, peer_id, reason)


ALREADY_STORED = "already stored (same manifest)"  # a holder's reply to a manifest it holds

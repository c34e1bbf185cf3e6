"""What a node checks of its data dir before it starts: that this release reads every store.

``enclave-swarm run`` calls :func:`check_data_dir` after the config has loaded (its own
version is checked by node/config.py) and before the run lock is taken, so a data dir from a
newer release is refused with one line and left exactly as it was (node/schema.py has the
rules). The stores check again when they open, for callers that build them directly.
"""

from __future__ import annotations

from pathlib import Path

from node.raftstore import check_schema as check_raft
from node.schema import SchemaError
from node.shards.store import check_schema as check_shards

# Where the stores live in a data dir (node/manager.py: raft_dir; node/shards/service.py: the
# shard store under the service's root, which is the data dir).
RAFT_DIR = "raft"
SHARD_STORE_DIR = "shards"

__all__ = ["SchemaError", "check_data_dir", "schema_versions"]


def schema_versions(data_dir: Path) -> dict[str, int]:
    """The version of each store in ``data_dir`` (1 for one written before versions existed
    or not created yet).

    Raises:
        SchemaError: a store is newer than this release reads, or its version is garbled.
    """
    path = Path(data_dir)
    return {"raft": check_raft(path / RAFT_DIR), "shards": check_shards(path / SHARD_STORE_DIR)}


def check_data_dir(data_dir: Path) -> None:
    """Raise :class:`SchemaError` (one line) unless this release reads every store in
    ``data_dir``. Reads only."""
    schema_versions(data_dir)

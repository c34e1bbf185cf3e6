"""What a node checks of its data dir before it starts: that this release reads every store.

``enclave-swarm run`` calls :func:`check_data_dir` after the config has loaded (its own
version is checked by node/config.py) and before the run lock is taken, so a data dir from a
newer release is refused with one line and left exactly as it was (node/schema.py has the
rules). The stores check again when they open, for callers that build them directly.

As a runtime extension (:func:`attach`) it adds ``schema`` to ``status``: each store's version
in this data dir and the newest this release reads, for an operator in the middle of an upgrade.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from node.config import SCHEMA_VERSION as CONFIG_VERSION
from node.raftstore import SCHEMA_VERSION as RAFT_VERSION
from node.raftstore import check_schema as check_raft
from node.schema import SchemaError
from node.shards.store import SCHEMA_VERSION as SHARD_VERSION
from node.shards.store import check_schema as check_shards

# Where the stores live in a data dir (node/manager.py: raft_dir; node/shards/service.py: the
# shard store under the service's root, which is the data dir).
RAFT_DIR = "raft"
SHARD_STORE_DIR = "shards"

__all__ = ["SchemaError", "attach", "check_data_dir", "schema_status", "schema_versions"]


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


def schema_status(data_dir: Path, config_version: int) -> dict[str, Any]:
    """``status["schema"]``: the version of each store (``"unreadable"`` if it no longer
    reads) and the newest this release reads."""
    out: dict[str, Any] = {"config": config_version}
    for name, check in (("raft", check_raft), ("shards", check_shards)):
        sub = RAFT_DIR if name == "raft" else SHARD_STORE_DIR
        try:
            out[name] = check(Path(data_dir) / sub)
        except SchemaError:
            out[name] = "unreadable"
    out["supported"] = {"config": CONFIG_VERSION, "raft": RAFT_VERSION, "shards": SHARD_VERSION}
    return out


def attach(agent: Any, data_dir: Any = None) -> None:
    """Runtime extension hook: ``schema`` in the node's status (nothing without a data dir)."""
    if data_dir is None:
        return
    path = Path(getattr(data_dir, "path", data_dir))
    try:  # read once: the config was loaded (and its version checked) at start
        raw = tomllib.loads((path / "config.toml").read_text(encoding="utf-8"))
        config_version = int(raw.get("schema_version", 1))
    except (OSError, ValueError, TypeError):
        config_version = 1
    agent.add_status("schema", lambda: schema_status(path, config_version))

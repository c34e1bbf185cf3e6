"""The manager role's settings (:class:`ManagerSettings`): per profile, overridable in
``<data dir>/manager.toml`` (docs/consensus.md, "Settings")."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

SETTINGS_FILE = "manager.toml"
ANNOUNCE_TTL_S = 60.0        # an announcement record expires (everywhere) after this long


@dataclasses.dataclass(frozen=True)
class ManagerSettings:
    """Timing and policy of the manager role. Every Raft timeout is ``ticks * tick_s``.

    Attributes:
        tick_s: Raft tick. election_tick / heartbeat_tick: in ticks (election timeout is
            drawn from ``[election_tick, 2 * election_tick)``).
        term_limit_s: how long one manager leads before handing over.
        council_size: voters wanted in the Raft council.
        reconcile_s: period of the manager's council/lifecycle loop.
        follow_poll_s: period of the fallback poll of the committed state by non-voters (and
            voters without a leader), skipped while gossiped announcements keep arriving.
        announce_min_interval_s: the manager announces a new term/commit index by gossip at
            most this often.
        announce_refresh_s: the manager re-announces at least this often when nothing changes.
        certify_interval_s: the manager certifies its applied state (one request per voter,
            node/manager_cert.py) at most this often; followers adopt certified states only.
        snapshot_every: applied entries between two snapshots (log compaction).
        fsync: fsync the Raft log before sending (only a benchmark turns this off).
        founder: "auto" (no Raft state and no bootstrap address), "yes" or "no".
        federation: the federation id (founder's peer id) this node may join; "" = the first
            one whose certified state it is served (trust on first use, see
            docs/architecture.md).
    """

    tick_s: float = 0.05
    election_tick: int = 20
    heartbeat_tick: int = 2
    term_limit_s: float = 600.0
    council_size: int = 5
    reconcile_s: float = 0.5
    follow_poll_s: float = 10.0
    announce_min_interval_s: float = 0.25
    announce_refresh_s: float = 5.0
    certify_interval_s: float = 1.0
    snapshot_every: int = 8192
    fsync: bool = True
    max_entries_per_msg: int = 512
    max_inflight_msgs: int = 64
    founder: str = "auto"
    federation: str = ""

    def validate(self) -> None:
        if not 0.001 <= self.tick_s <= 10:
            raise ValueError("tick_s must be within 0.001..10")
        if self.heartbeat_tick < 1 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("need 1 <= heartbeat_tick < election_tick")
        if self.term_limit_s <= 0 or self.reconcile_s <= 0 or self.follow_poll_s <= 0:
            raise ValueError("term_limit_s, reconcile_s and follow_poll_s must be positive")
        if not 0 < self.announce_min_interval_s <= self.announce_refresh_s <= ANNOUNCE_TTL_S / 4:
            raise ValueError("need 0 < announce_min_interval_s <= announce_refresh_s "
                             f"<= {ANNOUNCE_TTL_S / 4:g}")
        if not self.announce_min_interval_s <= self.certify_interval_s <= self.announce_refresh_s:
            raise ValueError("need announce_min_interval_s <= certify_interval_s <= announce_refresh_s")
        if not 1 <= self.council_size <= 64:
            raise ValueError("council_size must be within 1..64")
        if self.snapshot_every < 16:
            raise ValueError("snapshot_every must be >= 16")
        if self.founder not in ("auto", "yes", "no"):
            raise ValueError("founder must be auto, yes or no")

    @classmethod
    def for_profile(cls, profile: str) -> ManagerSettings:
        if profile == "local_test":
            # Many nodes on one machine: fast elections, short terms.
            return cls(tick_s=0.02, election_tick=15, heartbeat_tick=3, term_limit_s=60.0,
                       reconcile_s=0.2, follow_poll_s=3.0, announce_min_interval_s=0.1,
                       announce_refresh_s=2.0, certify_interval_s=0.5)
        if profile == "wan":
            return cls(tick_s=0.1, election_tick=20, heartbeat_tick=2, term_limit_s=600.0,
                       announce_min_interval_s=0.5, announce_refresh_s=10.0, certify_interval_s=2.0)
        return cls()  # lan: 50 ms ticks, 1-2 s election timeout, 10 min terms

    @classmethod
    def load(cls, data_path: Path, profile: str) -> ManagerSettings:
        """The profile's settings, overridden by ``<data dir>/manager.toml`` if present."""
        base = cls.for_profile(profile)
        path = data_path / SETTINGS_FILE
        if not path.exists():
            return base
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"{path}: {exc}") from None
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kw: dict[str, Any] = {}
        for k, v in raw.items():
            if k not in fields:
                raise ValueError(f"{path}: unknown setting {k!r}")
            default = getattr(base, k)
            if isinstance(default, bool) != isinstance(v, bool) or (
                    isinstance(default, (int, float)) and not isinstance(v, (int, float))) or (
                    isinstance(default, str) and not isinstance(v, str)):
                raise ValueError(f"{path}: {k} must be like {default!r}")
            kw[k] = float(v) if isinstance(default, float) else v
        out = dataclasses.replace(base, **kw)
        out.validate()
        return out

"""The capability record: what a node offers for tasks, signed, gossiped beside its score record.

Rules
-----
- Every field is bounded (wire schema + :meth:`CapabilityRecord.validate`); prices are integers
  in micro-units (1 unit = 1_000_000) per core-second and per GiB moved: no floats reach the
  scheduler, whose decisions every node must reproduce bit for bit.
- ``signature`` is the issuer's Ed25519 signature over the canonical encoding of every other
  field (as the score record's). The receiver must also check that ``issuer`` is the key of
  ``node_id`` (the gossip driver's duty), then keep the record with the highest ``seq`` per node.
- TEE kind, provider and region are *declared* here; the scheduler takes them from the committed
  member record (attested, committed at join), and only cores, memory, accelerators and prices
  from this record (:func:`to_offer`).
- ``links`` are the node's *measurements*: for up to :data:`MAX_LINKS` attested peers, its
  smoothed ping RTT (whole milliseconds) and the transfer rate it observed (KiB/s), as its peer
  table holds them (``overlay/peers.py``). The scheduler reads them as
  ``consensus.scheduler.Measurements`` (:func:`measurements_of`); every node derives the same
  table from the same gossiped records, so a council member re-running a placement uses the
  manager's figures. A link is claimed by its publisher alone: a liar can only make itself look
  nearer or faster, which gets it more work whose results are checked, never trusted.
- :func:`build_capability` is pure: config + detection in, record out. :func:`detect` is the only
  part that reads the host.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consensus.scheduler import MAX_PRICE, Measurements, Offer
from node.config import TasksConfig
from node.keys.base import IdentityKey
from overlay.errors import RemoteProtocolError
from overlay.messages import ED25519_PUBLIC_KEY_BYTES, MAX_PEER_ID_CHARS
from overlay.wire import encode, message

TEE_KINDS = ("sev-snp", "tdx", "sgx", "sim")
MAX_CORES = 1024
MAX_MEMORY_MIB = 16 * 1024 * 1024  # 16 TiB
MAX_ACCELERATORS = 16
MAX_NAME_CHARS = 64
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
MAX_LINKS = 24                 # peers whose RTT/bandwidth one record carries (fits the gossip payload)
MAX_LINK_RTT_MS = 60_000
MAX_LINK_KIB_S = 2**40


@message("capability-link", version=1, max_bytes=128)
@dataclasses.dataclass(frozen=True)
class Link:
    """What the publisher measured toward ``peer``: smoothed ping RTT in whole milliseconds
    and the transfer rate it observed in KiB/s (None when it has not measured that yet)."""

    peer: str = dataclasses.field(metadata={"max_len": MAX_PEER_ID_CHARS})
    rtt_ms: int | None = dataclasses.field(metadata={"min": 0, "max": MAX_LINK_RTT_MS})
    kib_s: int | None = dataclasses.field(metadata={"min": 1, "max": MAX_LINK_KIB_S})


@message("capability-record", version=2, max_bytes=4096)
@dataclasses.dataclass(frozen=True)
class CapabilityRecord:
    """A node's offer: resources for fragments, where it runs, and its prices.

    ``seq`` orders a node's records (the newest wins; e.g. its clock in milliseconds when it
    issued the record). ``cores``/``memory_mib`` are what it gives to fragments in total, not the
    host's size. Prices in micro-units: ``price_core_s`` per core-second, ``price_gib`` per GiB
    of input and output moved. ``links``: the publisher's measurements toward its peers, sorted
    by peer id, distinct, never itself.
    """

    issuer: bytes = dataclasses.field(metadata={"len": ED25519_PUBLIC_KEY_BYTES})
    node_id: str = dataclasses.field(metadata={"max_len": MAX_PEER_ID_CHARS})
    seq: int = dataclasses.field(metadata={"min": 0, "max": 2**63 - 1})
    cores: int = dataclasses.field(metadata={"min": 1, "max": MAX_CORES})
    memory_mib: int = dataclasses.field(metadata={"min": 1, "max": MAX_MEMORY_MIB})
    accelerators: tuple[str, ...] = dataclasses.field(
        metadata={"max_items": MAX_ACCELERATORS, "max_len": MAX_NAME_CHARS})
    tee_kind: str = dataclasses.field(metadata={"max_len": 16})
    region: str = dataclasses.field(metadata={"max_len": MAX_NAME_CHARS})
    provider: str = dataclasses.field(metadata={"max_len": MAX_NAME_CHARS})
    price_core_s: int = dataclasses.field(metadata={"min": 0, "max": MAX_PRICE})
    price_gib: int = dataclasses.field(metadata={"min": 0, "max": MAX_PRICE})
    agent_version: str = dataclasses.field(metadata={"max_len": 32})
    links: tuple[Link, ...] = dataclasses.field(metadata={"max_items": MAX_LINKS})
    signature: bytes = dataclasses.field(metadata={"len": 64})

    def validate(self) -> None:
        """Semantic checks beyond the wire schema (raises RemoteProtocolError "invalid")."""
        problems = capability_problems(self)
        if problems:
            raise RemoteProtocolError("invalid", "capability record: " + "; ".join(problems))


def capability_problems(r: CapabilityRecord) -> list[str]:
    """Every reason ``r`` is not a valid record (empty when valid); signature not checked."""
    out = []
    if not r.node_id:
        out.append("empty node id")
    if not 1 <= r.cores <= MAX_CORES:
        out.append(f"cores {r.cores} outside 1..{MAX_CORES}")
    if not 1 <= r.memory_mib <= MAX_MEMORY_MIB:
        out.append(f"memory_mib {r.memory_mib} outside 1..{MAX_MEMORY_MIB}")
    if r.tee_kind not in TEE_KINDS:
        out.append(f"tee kind {r.tee_kind[:16]!r} not one of {', '.join(TEE_KINDS)}")
    for name in ("region", "provider"):
        v = getattr(r, name)
        if v and (len(v) > MAX_NAME_CHARS or not _NAME.match(v)):
            out.append(f"{name} {v[:MAX_NAME_CHARS]!r}: letters, digits and . _ : / - only")
    if len(r.accelerators) > MAX_ACCELERATORS:
        out.append(f"more than {MAX_ACCELERATORS} accelerators")
    if any(len(a) > MAX_NAME_CHARS or not _NAME.match(a) for a in r.accelerators):
        out.append("accelerator names: letters, digits and . _ : / - only")
    if list(r.accelerators) != sorted(set(r.accelerators)):
        out.append("accelerators must be sorted and distinct")
    for name in ("price_core_s", "price_gib"):
        if not 0 <= getattr(r, name) <= MAX_PRICE:
            out.append(f"{name} outside 0..{MAX_PRICE}")
    if not r.agent_version or not _NAME.match(r.agent_version):
        out.append("bad agent version")
    peers = [lk.peer for lk in r.links]
    if len(peers) > MAX_LINKS:
        out.append(f"more than {MAX_LINKS} links")
    if peers != sorted(set(peers)) or r.node_id in peers or "" in peers:
        out.append("links must name distinct peers other than the publisher, sorted")
    if any(lk.rtt_ms is None and lk.kib_s is None for lk in r.links):
        out.append("a link must carry a rtt or a rate")
    return out


@dataclasses.dataclass(frozen=True)
class Detected:
    """What the host has (from :func:`detect`)."""

    cores: int
    memory_mib: int


def detect() -> Detected:
    """The host's usable cores (this process's CPU affinity) and total memory (/proc/meminfo;
    1 GiB when unreadable)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    mem_mib = 1024
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    mem_mib = int(line.split()[1]) // 1024
                    break
    except (OSError, ValueError):
        pass
    return Detected(max(1, cores), max(1, mem_mib))


def choose_links(node_id: str, measured: Iterable[tuple[str, float | None, float | None]]
                 ) -> tuple[Link, ...]:
    """The links a record carries, from ``(peer, rtt_ms, kib_s)`` measurements: the peers with
    an observed rate first, then the nearest by RTT (ties by peer id), at most
    :data:`MAX_LINKS`, returned sorted by peer id. Values are rounded and clamped to the wire's
    bounds; a peer with neither figure, and the node itself, are left out. Pure."""
    links = []
    for peer, rtt, rate in measured:
        if peer == node_id or not peer:
            continue
        r = None if rtt is None else max(0, min(round(rtt), MAX_LINK_RTT_MS))
        k = None if rate is None else max(1, min(round(rate), MAX_LINK_KIB_S))
        if r is not None or k is not None:
            links.append(Link(peer, r, k))
    links.sort(key=lambda lk: (lk.kib_s is None, MAX_LINK_RTT_MS + 1 if lk.rtt_ms is None
                               else lk.rtt_ms, lk.peer))
    kept = {lk.peer: lk for lk in links[:MAX_LINKS]}
    return tuple(kept[p] for p in sorted(kept))


RTT_FLOOR_MS = 5            # below this, RTTs differ by noise: compared as equal
RATE_FLOOR_KIB_S = 1024      # likewise for rates


def links_moved(published: tuple[Link, ...], now: tuple[Link, ...]) -> bool:
    """Do ``now``'s links differ enough from the ``published`` ones to publish again early?
    Yes when a peer or a figure appeared or went, or a figure doubled or halved against the
    published one (with floors, so loopback noise of a fraction of a millisecond never counts).
    The comparison is always against what was published: a figure drifting slowly across a
    boundary publishes once, not on every wobble. Pure."""
    if [lk.peer for lk in published] != [lk.peer for lk in now]:
        return True

    def moved(a: int | None, b: int | None, floor: int) -> bool:
        if a is None or b is None:
            return a is not b
        a, b = max(a, floor), max(b, floor)
        return a >= 2 * b or b >= 2 * a

    return any(moved(p.rtt_ms, n.rtt_ms, RTT_FLOOR_MS) or moved(p.kib_s, n.kib_s, RATE_FLOOR_KIB_S)
               for p, n in zip(published, now, strict=True))


def measurements_of(records: Iterable[CapabilityRecord]) -> Measurements:
    """The scheduler's measurement table from (verified) capability records."""
    rtt: dict[str, dict[str, int]] = {}
    bw: dict[str, dict[str, int]] = {}
    for rec in records:
        for lk in rec.links:
            if lk.rtt_ms is not None:
                rtt.setdefault(rec.node_id, {})[lk.peer] = lk.rtt_ms
            if lk.kib_s is not None:
                bw.setdefault(rec.node_id, {})[lk.peer] = lk.kib_s
    return Measurements(rtt, bw)


def build_capability(cfg: TasksConfig, detected: Detected, *, node_id: str, tee_kind: str,
                     seq: int, agent_version: str, issuer: bytes = bytes(32),
                     links: tuple[Link, ...] = ()) -> CapabilityRecord:
    """The (unsigned: zero signature) record for this node: configured sizes, or the detected
    ones minus the reserve (at least 1 core and 1 MiB), never more than the host has; ``links``
    from :func:`choose_links`."""
    cores = cfg.cores or detected.cores - cfg.reserve_cores
    mem = cfg.memory_mib or detected.memory_mib - cfg.reserve_memory_mib
    return CapabilityRecord(
        issuer=issuer, node_id=node_id, seq=seq,
        cores=max(1, min(cores, detected.cores, MAX_CORES)),
        memory_mib=max(1, min(mem, detected.memory_mib, MAX_MEMORY_MIB)),
        accelerators=tuple(sorted(set(cfg.accelerators))), tee_kind=tee_kind, region=cfg.region,
        provider=cfg.provider, price_core_s=cfg.price_core_s, price_gib=cfg.price_gib,
        agent_version=agent_version, links=links, signature=bytes(64))


def _signed_bytes(r: CapabilityRecord) -> bytes:
    return encode(dataclasses.replace(r, signature=bytes(64)))


def sign_capability(key: IdentityKey, record: CapabilityRecord) -> CapabilityRecord:
    """``record`` issued and signed by ``key`` (the node's libp2p identity key)."""
    unsigned = dataclasses.replace(record, issuer=key.public_key().public_bytes_raw(), signature=bytes(64))
    return dataclasses.replace(unsigned, signature=key.sign(_signed_bytes(unsigned)))


def verify_capability(record: CapabilityRecord) -> bool:
    """True when the issuer's signature holds over every other field."""
    try:
        Ed25519PublicKey.from_public_bytes(record.issuer).verify(record.signature, _signed_bytes(record))
    except (InvalidSignature, ValueError):
        return False
    return True


def to_offer(record: CapabilityRecord) -> Offer:
    """The scheduler's view of a (verified) record."""
    return Offer(record.node_id, record.cores, record.memory_mib, record.accelerators,
                 record.price_core_s, record.price_gib)

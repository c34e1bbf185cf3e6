"""Test hosts: network namespaces joined by veth pairs to a bridge namespace (root only).

Layout for a run tagged ``T`` (6 hex digits, so concurrent runs never collide)::

    esc<T>br            the bridge namespace: bridge br0, one veth end per node
    esc<T>n<i>          node i's namespace: eth0 = 10.241.0.(10+i)/24, lo

The 10.241.0.0/24 subnet exists only inside these namespaces: nothing is routed anywhere
else, the root namespace never gets an address on it. Faults act inside a node's namespace:

- partitions: an ``inet chaos`` nftables table dropping the other side's addresses in both
  directions (``nft``; without nft, blackhole routes, which drop the outbound half on each
  side -- the same cut, since both sides get one);
- link faults: ``tc qdisc replace dev eth0 root netem ...`` or ``tbf`` (egress of that node);
  on a kernel without sch_netem, loss and duplication through nftables and the rest skipped
  (:meth:`TestNet.shape` says what it applied).

:meth:`TestNet.destroy` deletes every namespace of the run (which removes the veths and the
bridge); it is safe to call twice and after a failed :meth:`TestNet.create`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

SUBNET = "10.241.0"
PREFIX = "esc"
CMD_TIMEOUT_S = 20.0


class NetError(RuntimeError):
    """A namespace command failed (message: the command and its stderr)."""


def unavailable_reason() -> str | None:
    """Why test hosts cannot be built here (None when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    missing = [t for t in ("ip", "tc") if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)} (iproute2; `make chaos` installs it)"
    return None


def _run(*cmd: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=CMD_TIMEOUT_S)
    if check and r.returncode != 0:
        raise NetError(f"{' '.join(cmd)}: {r.stderr.strip() or r.returncode}")
    return r


class TestNet:
    """``n`` node namespaces on one bridge. Use as a context manager, or call ``create`` and
    ``destroy`` (always, in a ``finally``)."""

    __test__ = False  # not a pytest class

    def __init__(self, n: int, tag: str | None = None) -> None:
        if not 1 <= n <= 200:
            raise ValueError("1..200 nodes")
        self.n = n
        self.tag = tag or uuid.uuid4().hex[:6]
        self.bridge_ns = f"{PREFIX}{self.tag}br"
        self.namespaces = [f"{PREFIX}{self.tag}n{i}" for i in range(n)]
        self.ips = [f"{SUBNET}.{10 + i}" for i in range(n)]
        self._created: list[str] = []
        self.use_nft = shutil.which("nft") is not None
        self._partitioned: set[int] = set()
        self._shaped: set[int] = set()
        self._nft_shaped: set[int] = set()
        self._netem: bool | None = None

    def __enter__(self) -> TestNet:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def create(self) -> None:
        try:
            self._add_ns(self.bridge_ns)
            _run("ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
            _run("ip", "-n", self.bridge_ns, "link", "set", "br0", "up")
            _run("ip", "-n", self.bridge_ns, "link", "set", "lo", "up")
            for i, ns in enumerate(self.namespaces):
                self._add_ns(ns)
                port = f"v{self.tag}p{i}"
                _run("ip", "-n", self.bridge_ns, "link", "add", port, "type", "veth",
                     "peer", "name", "eth0", "netns", ns)
                _run("ip", "-n", self.bridge_ns, "link", "set", port, "master", "br0")
                _run("ip", "-n", self.bridge_ns, "link", "set", port, "up")
                _run("ip", "-n", ns, "addr", "add", f"{self.ips[i]}/24", "dev", "eth0")
                _run("ip", "-n", ns, "link", "set", "eth0", "up")
                _run("ip", "-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.destroy()
            raise

    def _add_ns(self, ns: str) -> None:
        _run("ip", "netns", "add", ns)
        self._created.append(ns)

    def destroy(self) -> None:
        for ns in reversed(self._created):
            _run("ip", "netns", "del", ns, check=False)
        self._created.clear()

    def exec_prefix(self, i: int) -> list[str]:
        """Command prefix that runs a program in node ``i``'s namespace."""
        return ["ip", "netns", "exec", self.namespaces[i]]

    def ping(self, i: int, j: int) -> bool:
        """Whether node ``i`` reaches node ``j`` (one ICMP echo, 1 s)."""
        r = _run(*self.exec_prefix(i), "ping", "-c", "1", "-W", "1", self.ips[j], check=False)
        return r.returncode == 0

    # ------------------------------------------------------------------ partitions

    def partition(self, groups: Sequence[Iterable[int]]) -> None:
        """Cut every node of each group off from every node of the other groups (nodes in no
        group, such as a bridge node, keep reaching everyone)."""
        sets = [set(g) for g in groups]
        for gi, g in enumerate(sets):
            others = sorted(set().union(*(s for j, s in enumerate(sets) if j != gi)))
            if not others:
                continue
            for i in g:
                self._drop(i, [self.ips[j] for j in others])

    def _drop(self, i: int, ips: list[str]) -> None:
        ns = self.namespaces[i]
        self._partitioned.add(i)
        if self.use_nft:
            addrs = ", ".join(ips)
            script = (f"table inet chaos {{\n"
                      f"  chain input {{ type filter hook input priority 0; ip saddr {{ {addrs} }} drop; }}\n"
                      f"  chain output {{ type filter hook output priority 0; "
                      f"ip daddr {{ {addrs} }} drop; }}\n"
                      f"}}\n")
            _run("ip", "netns", "exec", ns, "nft", "-f", "-", stdin=script)
        else:
            for ip in ips:
                _run("ip", "-n", ns, "route", "replace", "blackhole", f"{ip}/32")

    def heal_partitions(self) -> None:
        for i in sorted(self._partitioned):
            ns = self.namespaces[i]
            if self.use_nft:
                _run("ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "chaos", check=False)
            else:
                for ip in self.ips:
                    _run("ip", "-n", ns, "route", "del", "blackhole", f"{ip}/32", check=False)
        self._partitioned.clear()

    # ------------------------------------------------------------------ link faults

    def has_netem(self) -> bool:
        """Whether the kernel has sch_netem (probed once on the bridge namespace's lo)."""
        if self._netem is None:
            r = _run("tc", "-n", self.bridge_ns, "qdisc", "add", "dev", "lo", "root", "netem",
                     "delay", "1ms", check=False)
            self._netem = r.returncode == 0
            if self._netem:
                _run("tc", "-n", self.bridge_ns, "qdisc", "del", "dev", "lo", "root", check=False)
        return self._netem

    def shape(self, nodes: Iterable[int], params: dict[str, Any]) -> dict[str, Any]:
        """A link fault on the nodes' eth0: ``tbf`` (rate), or ``netem`` (delay/jitter/loss/
        duplicate/reorder). Returns what was applied and what this kernel cannot do.

        Without sch_netem (some VM kernels), loss and duplication still apply, through
        nftables (``numgen random`` drops, ``dup to`` the same destination), in both
        directions; delay, jitter and reordering are then skipped and said so."""
        nodes = list(nodes)
        applied: dict[str, Any] = {}
        skipped: list[str] = []
        if params.get("qdisc") == "tbf":
            spec = ["tbf", "rate", f"{int(params['rate_kbit'])}kbit", "burst", "32kbit", "latency", "400ms"]
            applied["rate_kbit"] = int(params["rate_kbit"])
        elif self.has_netem():
            delay = int(params.get("delay_ms", 0))
            spec = ["netem"]
            if delay:
                spec += ["delay", f"{delay}ms"]
                if params.get("jitter_ms"):
                    spec += [f"{int(params['jitter_ms'])}ms"]
            if params.get("loss_pct"):
                spec += ["loss", f"{float(params['loss_pct'])}%"]
            if params.get("duplicate_pct"):
                spec += ["duplicate", f"{float(params['duplicate_pct'])}%"]
            if params.get("reorder_pct") and delay:  # netem reorders only delayed packets
                spec += ["reorder", f"{float(params['reorder_pct'])}%", "50%"]
            applied.update({k: params[k] for k in ("delay_ms", "jitter_ms", "loss_pct", "duplicate_pct",
                                                   "reorder_pct") if params.get(k)})
        else:
            spec = []
            for key in ("delay_ms", "jitter_ms", "reorder_pct"):
                if params.get(key):
                    skipped.append(key)
            loss, dup = float(params.get("loss_pct") or 0), float(params.get("duplicate_pct") or 0)
            if loss or dup:
                for i in nodes:
                    self._nft_link(i, loss, dup)
                applied.update({k: v for k, v in (("loss_pct", loss), ("duplicate_pct", dup)) if v})
        if spec:
            for i in nodes:
                _run("tc", "-n", self.namespaces[i], "qdisc", "replace", "dev", "eth0", "root", *spec)
                self._shaped.add(i)
        return {"applied": applied, "skipped": skipped,
                "why_skipped": "kernel without sch_netem" if skipped else ""}

    def _nft_link(self, i: int, loss_pct: float, dup_pct: float) -> None:
        rules = []
        # numgen random mod 1000 <= N-1: a per-packet draw, N in tenths of a percent (1..1000)
        if loss_pct:
            n = min(1000, max(1, round(loss_pct * 10)))
            rules += [f"  chain input {{ type filter hook input priority -10; ip saddr {SUBNET}.0/24 "
                      f"numgen random mod 1000 <= {n - 1} drop; }}",
                      f"  chain output {{ type filter hook output priority -10; ip daddr {SUBNET}.0/24 "
                      f"numgen random mod 1000 <= {n - 1} drop; }}"]
        if dup_pct:
            n = min(1000, max(1, round(dup_pct * 10)))
            rules.append(f"  chain post {{ type filter hook postrouting priority 0; ip daddr {SUBNET}.0/24 "
                         f"numgen random mod 1000 <= {n - 1} dup to ip daddr; }}")
        script = "table ip chaoslink {\n" + "\n".join(rules) + "\n}\n"
        _run("ip", "netns", "exec", self.namespaces[i], "nft", "-f", "-", stdin=script)
        self._nft_shaped.add(i)

    def heal_links(self) -> None:
        for i in sorted(self._shaped):
            _run("tc", "-n", self.namespaces[i], "qdisc", "del", "dev", "eth0", "root", check=False)
        self._shaped.clear()
        for i in sorted(self._nft_shaped):
            _run("ip", "netns", "exec", self.namespaces[i], "nft", "delete", "table", "ip", "chaoslink",
                 check=False)
        self._nft_shaped.clear()

    def heal(self) -> None:
        self.heal_partitions()
        self.heal_links()

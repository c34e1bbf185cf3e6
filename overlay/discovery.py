"""Finding peers: bootstrap addresses with retry and backoff, and mDNS on a LAN.

The backoff schedule is pure (an injected ``random.Random`` gives the jitter); the dial loop
lives in the agent. mDNS uses zeroconf directly: each node registers a
``_enclave-swarm._udp.local.`` service whose TXT record lists its full multiaddrs, and browses
for the others. What mDNS finds is only a hint: the peer still has to attest.
"""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Callable
from typing import Any

import multiaddr

log = logging.getLogger(__name__)

MDNS_SERVICE = "_enclave-swarm._udp.local."


class Backoff:
    """Exponential backoff with ±``jitter`` proportional randomisation.

    ``next_delay()`` gives initial, 2×, 4×, ... capped at ``max_s``; ``reset()`` after success.
    """

    def __init__(self, initial_s: float, max_s: float, *, rng: random.Random,
                 factor: float = 2.0, jitter: float = 0.2) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError("need 0 < initial_s <= max_s")
        if factor < 1 or not 0 <= jitter < 1:
            raise ValueError("need factor >= 1 and 0 <= jitter < 1")
        self.initial_s, self.max_s, self.factor, self.jitter = initial_s, max_s, factor, jitter
        self._rng = rng
        self._current = initial_s
        self.attempts = 0

    def next_delay(self) -> float:
        base = self._current
        self._current = min(self.max_s, self._current * self.factor)
        self.attempts += 1
        return base * (1 + self.jitter * (2 * self._rng.random() - 1))

    def reset(self) -> None:
        self._current = self.initial_s
        self.attempts = 0


class BootstrapAddressError(ValueError):
    pass


# A bootstrap address may name its host (Kubernetes' StatefulSet pods are reached by their
# stable DNS names, their IPs change when rescheduled). The agent resolves the name with the
# system resolver (getaddrinfo: /etc/hosts and the resolv.conf servers, as every program on the
# host) before each attempt and dials the addresses found; py-libp2p's own resolver asks DNS
# servers only, so it cannot resolve a name /etc/hosts holds (localhost).
DNS_FAMILIES = {"dns": socket.AF_UNSPEC, "dns4": socket.AF_INET, "dns6": socket.AF_INET6}
MAX_RESOLVED_ADDRS = 4


def dns_name(transport: str) -> tuple[str, int, str] | None:
    """For ``/dns4/<name>/tcp/4001`` (``dns``, ``dns6`` alike): (name, address family, the
    rest of the address: ``/tcp/4001``); None for an address that names no host."""
    parts = transport.split("/")
    if len(parts) < 3 or parts[0] != "" or parts[1] not in DNS_FAMILIES or not parts[2]:
        return None
    return parts[2], DNS_FAMILIES[parts[1]], "/" + "/".join(parts[3:]) if len(parts) > 3 else ""


def resolved_addrs(found: list[tuple[int, str]], rest: str) -> list[str]:
    """The multiaddrs to dial for the (family, IP) pairs a resolver returned, in its order,
    without duplicates, at most MAX_RESOLVED_ADDRS."""
    out: list[str] = []
    for family, ip in found:
        a = f"/ip4/{ip}{rest}" if family == socket.AF_INET else f"/ip6/{ip}{rest}"
        if family in (socket.AF_INET, socket.AF_INET6) and a not in out:
            out.append(a)
    return out[:MAX_RESOLVED_ADDRS]


def split_p2p_addr(addr: str) -> tuple[str, str]:
    """Split ``/ip4/…/tcp/…/p2p/<id>`` into (transport address, peer id).

    Raises:
        BootstrapAddressError: not a multiaddr, or no /p2p/ component.
    """
    try:
        ma = multiaddr.Multiaddr(addr)
        peer_id = ma.get_peer_id()
    except Exception as exc:  # multiaddr raises several types
        raise BootstrapAddressError(f"invalid multiaddr {addr!r}: {exc}") from None
    if not peer_id:
        raise BootstrapAddressError(f"{addr!r} has no /p2p/<peer id>: the node's identity is needed to "
                                    "join it securely")
    transport = str(ma.decapsulate(multiaddr.Multiaddr(f"/p2p/{peer_id}")))
    return transport, str(peer_id)


class MdnsAdvertiser:
    """Registers this node on mDNS and reports peers it finds through ``on_found``.

    zeroconf runs its own thread; ``on_found(peer_id, addrs)`` is called from it, so the caller
    must hand results to its event loop thread-safely (the agent uses ``trio.from_thread``).
    """

    def __init__(self, peer_id: str, addrs: list[str],
                 on_found: Callable[[str, list[str]], None],
                 interfaces: list[str] | None = None) -> None:
        from zeroconf import InterfaceChoice, IPVersion, ServiceBrowser, ServiceInfo, Zeroconf

        self.peer_id = peer_id
        self._on_found = on_found
        ips = sorted({_ip_of(a) for a in addrs if _ip_of(a)} - {"0.0.0.0", "127.0.0.1"})  # noqa: S104
        # Join the multicast group on the interfaces we listen on (all when unspecified).
        chosen: Any = interfaces or ips or InterfaceChoice.All
        self._zc = Zeroconf(interfaces=chosen, ip_version=IPVersion.V4Only)
        port = next((_port_of(a) for a in addrs if _port_of(a)), 0)
        props = {f"a{i}": a for i, a in enumerate(addrs[:8])}
        props["id"] = peer_id
        self._info = ServiceInfo(
            MDNS_SERVICE,
            f"{peer_id[-20:]}.{MDNS_SERVICE}",
            addresses=[socket.inet_aton(ip) for ip in ips],
            port=port,
            properties=props,
        )
        self._zc.register_service(self._info)
        self._browser = ServiceBrowser(self._zc, MDNS_SERVICE, handlers=[self._on_change])

    def _on_change(self, zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        from zeroconf import ServiceStateChange

        if state_change is not ServiceStateChange.Added and state_change is not ServiceStateChange.Updated:
            return
        info = zeroconf.get_service_info(service_type, name, timeout=2000)
        if info is None:
            return
        props = {k.decode(errors="replace"): (v or b"").decode(errors="replace")
                 for k, v in (info.properties or {}).items() if isinstance(k, bytes)}
        peer_id = props.get("id", "")
        if not peer_id or peer_id == self.peer_id or len(peer_id) > 128:
            return
        addrs = [v for k, v in sorted(props.items()) if k.startswith("a") and len(v) <= 256][:8]
        self._on_found(peer_id, addrs)

    def close(self) -> None:
        try:
            self._zc.unregister_service(self._info)
        finally:
            self._zc.close()


def _ip_of(addr: str) -> str:
    parts = addr.split("/")
    return parts[2] if len(parts) > 2 and parts[1] == "ip4" else ""


def _port_of(addr: str) -> int:
    parts = addr.split("/")
    try:
        return int(parts[4]) if len(parts) > 4 and parts[3] in ("tcp", "udp") else 0
    except ValueError:
        return 0

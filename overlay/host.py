"""The libp2p host factory: our one place that knows how py-libp2p is put together.

We always choose the security transport explicitly: py-libp2p's default list also offers the
deprecated SECIO, which an attested overlay must never negotiate. Noise is the default; TLS 1.3
is selectable. Yamux is the muxer. A pre-shared key (libp2p private networks, XSalsa20) keeps
outsiders from even completing the handshake. QUIC is used when a listen address asks for it
(``/udp/<port>/quic-v1``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import multiaddr
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.security.tls.transport import PROTOCOL_ID as TLS_ID
from libp2p.security.tls.transport import TLSTransport

from overlay.errors import LocalProtocolError

log = logging.getLogger(__name__)


class HostConfigError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class HostOptions:
    listen: tuple[str, ...]
    security: str = "noise"  # noise | tls
    psk_hex: str | None = None  # 64 hex chars
    max_connections: int = 256
    dial_timeout_s: float = 10.0


def libp2p_keypair(key: Ed25519PrivateKey) -> KeyPair:
    """Our Ed25519 identity as a py-libp2p key pair (same key, same peer id)."""
    return create_new_key_pair(key.private_bytes_raw())


def peer_id_of(key: Ed25519PrivateKey) -> str:
    return ID.from_pubkey(libp2p_keypair(key).public_key).to_base58()


def public_key_of_peer(peer_id: Any) -> bytes | None:
    """The raw Ed25519 key embedded in an (identity-multihash) peer id, or None."""
    pid = peer_id if isinstance(peer_id, ID) else ID.from_base58(str(peer_id))
    pub = pid.extract_public_key()
    if pub is None:
        return None
    raw = pub.to_bytes()
    return raw if len(raw) == 32 else None


def read_psk(path: str | Path) -> str:
    """Read a private-network key file: 64 hex characters, or libp2p's swarm.key format."""
    p = Path(path)
    try:
        lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
    except OSError as exc:
        raise HostConfigError(f"{p}: cannot read pre-shared key ({exc.strerror})") from None
    if lines and lines[0].startswith("/key/swarm/psk/"):
        if len(lines) != 3 or lines[1] != "/base16/":
            raise HostConfigError(f"{p}: only /base16/ swarm keys are supported")
        lines = lines[2:]
    if len(lines) != 1 or len(lines[0]) != 64:
        raise HostConfigError(f"{p}: expected 64 hex characters (a 32-byte key)")
    try:
        bytes.fromhex(lines[0])
    except ValueError:
        raise HostConfigError(f"{p}: not hexadecimal") from None
    return lines[0].lower()


def build_host(key: Ed25519PrivateKey, opts: HostOptions) -> IHost:
    """Create (but do not start) a libp2p host with our transport choices.

    Raises:
        HostConfigError: an invalid listen address or option.
    """
    kp = libp2p_keypair(key)
    if opts.security == "noise":
        noise_key = create_x25519_key_pair().private_key
        sec: dict[Any, Any] = {NOISE_ID: NoiseTransport(kp, noise_privkey=noise_key)}
    elif opts.security == "tls":
        sec = {TLS_ID: TLSTransport(kp)}
    else:
        raise LocalProtocolError(f"unknown security {opts.security!r}")
    addrs = parse_multiaddrs(opts.listen)
    quic = any("quic" in str(a) for a in addrs)
    # Watermarks drive libp2p's pruning; min 0 so it never dials on its own: whom we connect
    # to is the agent's decision (bootstrap, peer exchange, mDNS).
    high = max(1, opts.max_connections * 9 // 10)
    conn_cfg = ConnectionConfig(
        max_connections=opts.max_connections,
        min_connections=0,
        low_watermark=max(0, high // 2),
        high_watermark=high,
        dial_timeout=opts.dial_timeout_s,
        max_connections_per_peer=2,
    )
    return new_host(
        key_pair=kp,
        sec_opt=sec,
        listen_addrs=addrs,
        psk=opts.psk_hex,
        connection_config=conn_cfg,
        enable_quic=quic,
    )


def parse_multiaddrs(values: Sequence[str]) -> list[multiaddr.Multiaddr]:
    out = []
    for v in values:
        try:
            out.append(multiaddr.Multiaddr(v))
        except Exception as exc:  # multiaddr raises several types
            raise HostConfigError(f"invalid multiaddr {v!r}: {exc}") from None
    return out


def expand_unspecified(addrs: Sequence[str]) -> list[str]:
    """Replace ``/ip4/0.0.0.0/`` (listen on every interface) by each interface's IPv4 address,
    so what we print and advertise can actually be dialled."""
    out: list[str] = []
    for a in addrs:
        if "/ip4/0.0.0.0/" not in a:
            out.append(a)
            continue
        import ifaddr  # a dependency of zeroconf

        for adapter in ifaddr.get_adapters():
            for ip in adapter.ips:
                if isinstance(ip.ip, str):
                    out.append(a.replace("/ip4/0.0.0.0/", f"/ip4/{ip.ip}/"))
    return list(dict.fromkeys(out))


"""The libp2p host factory: our one place that knows how py-libp2p is put together.

We always choose the security transport explicitly: py-libp2p's default list also offers the
deprecated SECIO, which an attested overlay must never negotiate. Noise is the default; TLS 1.3
is selectable. Yamux is the muxer. A pre-shared key (libp2p private networks, XSalsa20) keeps
outsiders from even completing the handshake. QUIC is used when a listen address asks for it
(``/udp/<port>/quic-v1``).

Identify (``/ipfs/id/1.0.0``) is ours, not py-libp2p's (:func:`install_identify`): its answer
names the agent only as ``enclave-swarm`` (no library or version), and a peer we have not
attested learns nothing it does not need to attest us: our public key (which the secure
channel already gave it) and the protocols open to it (ping, identify, attest). No listen or
observed addresses, no signed peer record, no list of our other protocols. Once we attest a
peer we push it the full answer (``/ipfs/id/push/1.0.0``, :func:`push_identify`), which is how
it learns our listen addresses for peer exchange.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import multiaddr
import multiaddr.protocols
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import Ed25519PublicKey as Libp2pEd25519PublicKey
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair, KeyType, PrivateKey
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.host.ping import ID as PING_ID
from libp2p.identity.identify.identify import ID as IDENTIFY_ID
from libp2p.identity.identify.identify import PROTOCOL_VERSION as IDENTIFY_PROTOCOL_VERSION
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.identity.identify_push.identify_push import ID_PUSH as IDENTIFY_PUSH_ID
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerstore import env_to_send_in_RPC
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.tls.transport import PROTOCOL_ID as TLS_ID
from libp2p.utils.varint import encode_uvarint

from overlay import libp2p_fixes
from overlay.errors import LocalProtocolError, SignerUnavailable
from overlay.messages import ATTEST_PROTOCOL

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


class ExternalEd25519PrivateKey(PrivateKey):
    """A py-libp2p private key whose ``sign`` is delegated: the key lives elsewhere (a PKCS#11
    token, node/keys/pkcs11.py) and never enters this process. The Noise and TLS handshakes
    and the signed peer record only call ``sign`` and ``get_public_key``; exporting it
    (``to_bytes``) is refused."""

    def __init__(self, key: Any) -> None:
        self._key = key
        raw = key.public_key().public_bytes_raw()
        self._public = Libp2pEd25519PublicKey.from_bytes(raw)

    def sign(self, data: bytes) -> bytes:
        sig: bytes = self._key.sign(data)
        return sig

    def get_public_key(self) -> Libp2pEd25519PublicKey:
        return self._public

    def get_type(self) -> KeyType:
        return KeyType.Ed25519

    def to_bytes(self) -> bytes:
        raise LocalProtocolError("this identity key is held in a token and cannot be exported")


def libp2p_keypair(key: Any) -> KeyPair:
    """Our Ed25519 identity as a py-libp2p key pair (same key, same peer id).

    ``key`` is a ``cryptography`` Ed25519 private key, or any object with its ``sign`` and
    ``public_key`` (a token key): then libp2p signs through it."""
    if isinstance(key, Ed25519PrivateKey):
        return create_new_key_pair(key.private_bytes_raw())
    priv = ExternalEd25519PrivateKey(key)
    return KeyPair(priv, priv.get_public_key())


def peer_id_of(key: Any) -> str:
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


def build_host(key: Any, opts: HostOptions) -> IHost:
    """Create (but do not start) a libp2p host with our transport choices.

    Our fixes to py-libp2p (overlay/libp2p_fixes.py) are installed first: the process-wide ones
    by ``libp2p_fixes.apply()`` (idempotent), the per-host ones below.

    Raises:
        HostConfigError: an invalid listen address or option.
    """
    libp2p_fixes.apply()
    kp = libp2p_keypair(key)
    if opts.security == "noise":
        noise_key = create_x25519_key_pair().private_key
        sec: dict[Any, Any] = {NOISE_ID: libp2p_fixes.BufferedNoiseTransport(kp, noise_privkey=noise_key)}
    elif opts.security == "tls":
        sec = {TLS_ID: libp2p_fixes.BufferedTLSTransport(kp)}
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
    host = new_host(
        key_pair=kp,
        sec_opt=sec,
        listen_addrs=addrs,
        psk=opts.psk_hex,
        connection_config=conn_cfg,
        enable_quic=quic,
    )
    libp2p_fixes.fix_host(host)
    return host


# What identify says the agent is, to everyone: no library name or version to fingerprint.
AGENT_VERSION = "enclave-swarm"
# The only protocols an unattested peer hears of: those that answer it (overlay/peers.py).
UNATTESTED_PROTOCOLS = (str(PING_ID), str(IDENTIFY_ID), ATTEST_PROTOCOL)
IDENTIFY_TIMEOUT_S = 5.0


def identify_message(host: IHost, *, attested: bool, observed: multiaddr.Multiaddr | None = None) -> Identify:
    """Our identify answer for a peer: minimal unless ``attested`` (see the module rules)."""
    msg = Identify(
        protocol_version=IDENTIFY_PROTOCOL_VERSION,
        agent_version=AGENT_VERSION,
        public_key=host.get_public_key().serialize(),
    )
    if not attested:
        msg.protocols.extend(UNATTESTED_PROTOCOLS)
        return msg
    msg.protocols.extend(sorted(str(p) for p in host.get_mux().get_protocols() if p is not None))
    msg.listen_addrs.extend(a.decapsulate_code(multiaddr.protocols.P_P2P).to_bytes()
                            for a in host.get_addrs())
    if observed is not None:
        msg.observed_addr = observed.to_bytes()
    try:
        envelope, _ = env_to_send_in_RPC(host)
    except SignerUnavailable:  # our key's token is away: identify goes out without the record
        envelope = None
    if envelope:
        msg.signedPeerRecord = envelope
    return msg


def _observed_addr(stream: Any) -> multiaddr.Multiaddr | None:
    try:
        remote = stream.get_remote_address()
        if not remote:
            return None
        ip, port = remote
        ip = str(ip).removeprefix("::ffff:")
        return multiaddr.Multiaddr(f"/{'ip6' if ':' in ip else 'ip4'}/{ip}/tcp/{int(port)}")
    except Exception:  # transports differ in what they report; the field is optional
        return None


async def _send_identify(stream: Any, msg: Identify) -> None:
    data = msg.SerializeToString()
    with trio.move_on_after(IDENTIFY_TIMEOUT_S):
        try:
            await stream.write(encode_uvarint(len(data)) + data)
            await stream.close()
        except Exception as exc:  # libp2p raises several types for a stream that went away
            log.debug("identify: %s", exc)
            with contextlib.suppress(Exception):
                await stream.reset()


def install_identify(host: IHost, is_attested: Callable[[str], bool]) -> None:
    """Serve identify with :func:`identify_message` and keep libp2p's own pushes (sent when
    our listen addresses change) to attested peers. ``is_attested(peer_id_base58)``."""

    async def handle(stream: Any) -> None:
        pid = str(stream.muxed_conn.peer_id)
        attested = is_attested(pid)
        await _send_identify(stream, identify_message(
            host, attested=attested, observed=_observed_addr(stream) if attested else None))

    host.set_stream_handler(IDENTIFY_ID, handle)

    async def push_to_attested() -> None:
        for peer_id in list(host.get_network().connections):
            if is_attested(str(peer_id)):
                await push_identify(host, peer_id)

    # py-libp2p pushes its full identify to every connected peer when a listen address
    # changes; this instance attribute replaces that with pushes to attested peers only.
    if hasattr(host, "_push_identify_to_all_peers"):
        host._push_identify_to_all_peers = push_to_attested


async def push_identify(host: IHost, peer_id: ID) -> bool:
    """Push our full identify to a peer we have just attested; False if it did not go out."""
    with trio.move_on_after(IDENTIFY_TIMEOUT_S):
        try:
            stream = await host.new_stream(peer_id, [IDENTIFY_PUSH_ID])
        except Exception as exc:  # libp2p raises several types when a peer is gone
            log.debug("identify push to %s: %s", peer_id, exc, extra={"peer": str(peer_id)})
            return False
        try:
            msg = identify_message(host, attested=True)
        except OSError as exc:
            # A listener closed under us (the host is stopping: its socket answers EBADF to
            # getsockname); before, this crashed the agent's nursery (a fresh-clone make test,
            # tests/manager/test_follow_gossip.py, a node stopped mid-push).
            log.debug("identify push to %s: our addresses are gone: %s", peer_id, exc,
                      extra={"peer": str(peer_id)})
            with contextlib.suppress(Exception):
                await stream.reset()
            return False
        await _send_identify(stream, msg)
        return True
    return False


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
        import ifaddr  # declared in pyproject (zeroconf uses it too)

        for adapter in ifaddr.get_adapters():
            for ip in adapter.ips:
                if isinstance(ip.ip, str):
                    out.append(a.replace("/ip4/0.0.0.0/", f"/ip4/{ip.ip}/"))
    return list(dict.fromkeys(out))


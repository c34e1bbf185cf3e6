"""Node configuration: frozen dataclasses, one per component, with three profiles.

- ``lan()``: a federation on one local network. mDNS on; the simulated TEE is accepted when no
  hardware TEE is present (development and on-premise trials).
- ``wan()``: the production profile. Bootstrap only, hardware TEEs only (``allow_simulated``
  false in both the fallback and the policy), longer timeouts.
- ``local_test()``: many nodes on one machine's loopback for tests and ``demo``: ephemeral
  ports, short intervals so behaviour shows within seconds.

``config.toml`` in the data dir holds every field with a comment (see :func:`to_toml`); a key
it does not know is an error, never ignored. Units are in the names.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

PROFILES = ("lan", "wan", "local_test")
SECURITY = ("noise", "tls")
TEE_CHOICES = ("auto", "sim", "sev-snp", "tdx", "sgx")


class ConfigError(ValueError):
    """The configuration is unreadable or invalid (the message names the file and field)."""


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    # Multiaddrs to listen on. /ip4/0.0.0.0/tcp/4001 listens on every interface.
    listen: tuple[str, ...] = ("/ip4/0.0.0.0/tcp/4001",)
    # Multiaddrs (with /p2p/<peer id>) of nodes of the federation to join.
    bootstrap: tuple[str, ...] = ()
    # Channel security: "noise" (default) or "tls" (TLS 1.3).
    security: str = "noise"
    # File holding a 32-byte hex pre-shared key: only nodes with the key can even connect.
    psk_file: str = ""
    # Find peers on the local network by mDNS (zeroconf).
    mdns: bool = True
    # Upper bound on simultaneous connections (inbound + outbound).
    max_connections: int = 256
    # Timeout for one outbound dial, seconds.
    dial_timeout_s: float = 10.0
    # Bootstrap retry: exponential backoff from initial to max, with ±20 % jitter.
    bootstrap_backoff_initial_s: float = 1.0
    bootstrap_backoff_max_s: float = 60.0
    # RTT measurement by libp2p ping, every interval.
    ping_interval_s: float = 15.0
    ping_timeout_s: float = 5.0
    # Ask attested peers for the attested peers they know, every interval (peer exchange).
    peer_exchange_interval_s: float = 30.0
    # Timeout for one request/response on our protocols.
    request_timeout_s: float = 10.0


@dataclasses.dataclass(frozen=True)
class AttestationConfig:
    # TEE backend: auto | sim | sev-snp | tdx | sgx. auto picks the hardware that is present.
    tee: str = "auto"
    # With tee=auto and no hardware TEE: fall back to the simulated TEE (else refuse to start).
    allow_simulated_fallback: bool = True
    # Policy file (TOML, see docs/attestation.md); empty = the profile's built-in policy.
    policy_file: str = ""
    # Re-challenge every connected peer this often. Records expire after 3 intervals.
    reattest_interval_s: float = 60.0
    # One attestation exchange (challenge, evidence, result) must finish within this.
    handshake_timeout_s: float = 10.0
    # A connected peer that has not passed attestation within this is disconnected.
    attest_deadline_s: float = 30.0
    # Consecutive missed re-attestations before a peer is quarantined.
    max_missed_reattestations: int = 2
    # Parallel attestation exchanges (bounds CPU spent on verification).
    max_concurrent: int = 16
    # Simulated TEE only: a build tag mixed into the measurement (models another build).
    sim_build_tag: str = ""
    # Simulated TEE only: report the debug policy bit.
    sim_debug: bool = False


@dataclasses.dataclass(frozen=True)
class NodeConfig:
    profile: str = "lan"
    network: NetworkConfig = dataclasses.field(default_factory=NetworkConfig)
    attestation: AttestationConfig = dataclasses.field(default_factory=AttestationConfig)
    # Log format on stderr: text | json. Level: debug | info | warning | error.
    log_format: str = "text"
    log_level: str = "info"

    # ------------------------------------------------------------------ profiles
    @classmethod
    def lan(cls) -> NodeConfig:
        return cls()

    @classmethod
    def wan(cls) -> NodeConfig:
        return cls(
            profile="wan",
            network=NetworkConfig(mdns=False, dial_timeout_s=20.0, ping_interval_s=30.0,
                                  peer_exchange_interval_s=60.0, request_timeout_s=20.0),
            attestation=AttestationConfig(allow_simulated_fallback=False, reattest_interval_s=300.0,
                                          handshake_timeout_s=20.0, attest_deadline_s=60.0),
        )

    @classmethod
    def local_test(cls) -> NodeConfig:
        return cls(
            profile="local_test",
            network=NetworkConfig(listen=("/ip4/127.0.0.1/tcp/0",), mdns=False,
                                  dial_timeout_s=5.0, bootstrap_backoff_initial_s=0.2,
                                  bootstrap_backoff_max_s=2.0, ping_interval_s=1.0,
                                  ping_timeout_s=2.0, peer_exchange_interval_s=1.0,
                                  request_timeout_s=5.0),
            attestation=AttestationConfig(tee="sim", reattest_interval_s=2.0,
                                          handshake_timeout_s=5.0, attest_deadline_s=10.0),
        )

    @classmethod
    def for_profile(cls, name: str) -> NodeConfig:
        name = name.replace("-", "_")
        if name not in PROFILES:
            raise ConfigError(f"unknown profile {name!r} (choose from {', '.join(PROFILES)})")
        cfg: NodeConfig = getattr(cls, name)()
        return cfg

    def validate(self) -> None:
        n, a = self.network, self.attestation
        if self.profile not in PROFILES:
            raise ConfigError(f"profile: unknown {self.profile!r}")
        if n.security not in SECURITY:
            raise ConfigError(f"network.security: {n.security!r} is not one of {SECURITY}")
        if a.tee not in TEE_CHOICES:
            raise ConfigError(f"attestation.tee: {a.tee!r} is not one of {TEE_CHOICES}")
        if self.log_format not in ("text", "json"):
            raise ConfigError("log_format must be text or json")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError("log_level must be debug, info, warning or error")
        if not n.listen:
            raise ConfigError("network.listen: at least one address is needed")
        for name in ("dial_timeout_s", "bootstrap_backoff_initial_s", "bootstrap_backoff_max_s",
                     "ping_interval_s", "ping_timeout_s", "peer_exchange_interval_s",
                     "request_timeout_s"):
            if getattr(n, name) <= 0:
                raise ConfigError(f"network.{name} must be positive")
        for name in ("reattest_interval_s", "handshake_timeout_s", "attest_deadline_s"):
            if getattr(a, name) <= 0:
                raise ConfigError(f"attestation.{name} must be positive")
        if n.bootstrap_backoff_max_s < n.bootstrap_backoff_initial_s:
            raise ConfigError("network.bootstrap_backoff_max_s < bootstrap_backoff_initial_s")
        if not 1 <= n.max_connections <= 100_000:
            raise ConfigError("network.max_connections must be within 1..100000")
        if not 1 <= a.max_concurrent <= 1024:
            raise ConfigError("attestation.max_concurrent must be within 1..1024")
        if a.max_missed_reattestations < 1:
            raise ConfigError("attestation.max_missed_reattestations must be at least 1")

    # ------------------------------------------------------------------ TOML
    def to_toml(self) -> str:
        """Every field, with the comment that documents it, as a TOML document."""
        out = [
            "# enclave-swarm node configuration. Every key is shown with its default.",
            "# Profiles: lan (default), wan (production: hardware TEEs only), local_test.",
            f'profile = "{self.profile}"',
            "# Log format on stderr: text | json. Level: debug | info | warning | error.",
            f'log_format = "{self.log_format}"',
            f'log_level = "{self.log_level}"',
        ]
        for section in ("network", "attestation"):
            out.append("")
            out.append(f"[{section}]")
            obj = getattr(self, section)
            comments = _field_comments(type(obj))
            for f in dataclasses.fields(obj):
                for c in comments.get(f.name, []):
                    out.append(f"# {c}")
                out.append(f"{f.name} = {_toml_value(getattr(obj, f.name))}")
        return "\n".join(out) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v)} to TOML")


def _field_comments(cls: type) -> dict[str, list[str]]:
    """Read the ``# ...`` comment lines above each field in this file's source."""
    import inspect

    src = inspect.getsource(cls).splitlines()
    comments: dict[str, list[str]] = {}
    pending: list[str] = []
    for line in src:
        s = line.strip()
        if s.startswith("#"):
            pending.append(s.lstrip("# ").rstrip())
        elif ":" in s and not s.startswith(("class", "@", '"')):
            comments[s.split(":", 1)[0].strip()] = pending
            pending = []
        else:
            pending = []
    return comments


def _coerce(section: str, name: str, default: Any, value: Any, where: str) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {section}{name} must be true or false")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {section}{name} must be a number")
        return float(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {section}{name} must be an integer")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {section}{name} must be a string")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise ConfigError(f"{where}: {section}{name} must be a list of strings")
        return tuple(value)
    raise ConfigError(f"{where}: {section}{name} has an unsupported type")


def _merge(obj: Any, data: dict[str, Any], section: str, where: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(obj)}
    unknown = set(data) - set(names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(section + k for k in sorted(unknown))}")
    kw = {}
    for k, v in data.items():
        cur = getattr(obj, k)
        if dataclasses.is_dataclass(cur):
            if not isinstance(v, dict):
                raise ConfigError(f"{where}: [{k}] must be a table")
            kw[k] = _merge(cur, v, f"{k}.", where)
        else:
            kw[k] = _coerce(section, k, cur, v, where)
    return dataclasses.replace(obj, **kw)


def config_from_toml(text: str, *, where: str = "config") -> NodeConfig:
    """Parse a config document over the defaults of the profile it names.

    Raises:
        ConfigError: bad TOML, unknown keys, wrong types or invalid values; names ``where``.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML ({exc})") from None
    profile = data.get("profile", "lan")
    if not isinstance(profile, str):
        raise ConfigError(f"{where}: profile must be a string")
    try:
        base = NodeConfig.for_profile(profile)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    cfg: NodeConfig = _merge(base, data, "", where)
    try:
        cfg.validate()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return cfg


def load_config(path: Path) -> NodeConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return config_from_toml(text, where=str(path))

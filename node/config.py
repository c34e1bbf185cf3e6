"""Node configuration: frozen dataclasses, one per component, with three profiles.

- ``lan()``: a federation on one local network. mDNS on; hardware TEEs only unless the operator
  sets the loudly named ``attestation.insecure_accept_simulated`` (``--insecure-simulated-tee``).
- ``wan()``: the production profile. Bootstrap only, hardware TEEs only (``allow_simulated``
  false in both the fallback and the policy; the insecure option is refused), longer timeouts.
- ``local_test()``: many nodes on one machine's loopback for tests and ``demo``: ephemeral
  ports, short intervals so behaviour shows within seconds, the simulated TEE.

The simulated TEE's root key is in the source, so anyone can forge its evidence. A node that
accepts it (profile ``local_test`` or the insecure option) therefore must not be reachable from
a network it does not control: :func:`exposure_error` refuses a non-loopback listen or
bootstrap address, or mDNS, unless a private-network key (PSK) keeps strangers out.

``config.toml`` in the data dir holds every field with a comment (see :func:`to_toml`); a key
it does not know is an error, never ignored. Units are in the names. Its ``schema_version``
(``SCHEMA_VERSION``; absent in files written before it existed, which are version 1) is
checked first, so a file from a newer release is refused as such, not for its new keys
(node/schema.py).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Any

from node.schema import SchemaError, check_version

PROFILES = ("lan", "wan", "local_test")
SECURITY = ("noise", "tls")
TEE_CHOICES = ("auto", "sim", "sev-snp", "tdx", "sgx")
# The layout of config.toml. Bump it, and read the old one, when a key changes meaning or goes.
SCHEMA_VERSION = 1


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
    # Also ask at once: a peer we have just mutually attested, and one whose gossip names
    # members we do not hold, then dial who they name (the join path: a new node meets the
    # federation in about a second instead of a peer-exchange interval). Off: periodic only.
    join_exchange: bool = True
    # Timeout for one request/response on our protocols.
    request_timeout_s: float = 10.0


# Bounds of what a node may offer for tasks (node/tasks/capability.py enforces the same on the
# wire; tests/tasks check that the two agree).
TASK_MAX_CORES = 1024
TASK_MAX_MEMORY_MIB = 16 * 1024 * 1024
TASK_MAX_PRICE = 2**40
TASK_MAX_ACCELERATORS = 16
_TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")


@dataclasses.dataclass(frozen=True)
class TasksConfig:
    # Cores given to task fragments in total; 0 = the host's cores minus reserve_cores.
    cores: int = 0
    # Memory given to task fragments in total, MiB; 0 = the host's memory minus the reserve.
    memory_mib: int = 0
    # Kept for the agent itself when sizing automatically.
    reserve_cores: int = 1
    reserve_memory_mib: int = 512
    # Declared accelerators (names such as "nvidia-a100"); nothing is detected.
    accelerators: tuple[str, ...] = ()
    # Declared placement labels (the member record committed at join is authoritative).
    region: str = ""
    provider: str = ""
    # Prices in micro-units (1 unit = 1,000,000): per core-second, and per GiB moved.
    price_core_s: int = 0
    price_gib: int = 0

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field."""
        for name, top in (("cores", TASK_MAX_CORES), ("reserve_cores", TASK_MAX_CORES),
                          ("memory_mib", TASK_MAX_MEMORY_MIB),
                          ("reserve_memory_mib", TASK_MAX_MEMORY_MIB),
                          ("price_core_s", TASK_MAX_PRICE), ("price_gib", TASK_MAX_PRICE)):
            if not 0 <= getattr(self, name) <= top:
                raise ConfigError(f"tasks.{name} must be within 0..{top}")
        for name in ("region", "provider"):
            v = getattr(self, name)
            if v and not _TASK_NAME.match(v):
                raise ConfigError(f"tasks.{name}: letters, digits and . _ : / - only, at most 64")
        if len(self.accelerators) > TASK_MAX_ACCELERATORS or any(
                not _TASK_NAME.match(a) for a in self.accelerators):
            raise ConfigError(f"tasks.accelerators: at most {TASK_MAX_ACCELERATORS} names of "
                              "letters, digits and . _ : / -")


@dataclasses.dataclass(frozen=True)
class AttestationConfig:
    # TEE backend: auto | sim | sev-snp | tdx | sgx. auto picks the hardware that is present.
    tee: str = "auto"
    # With tee=auto and no hardware TEE: fall back to the simulated TEE (else refuse to start).
    # Only where the simulated TEE is allowed at all (local_test, or insecure_accept_simulated).
    allow_simulated_fallback: bool = True
    # INSECURE. Outside the local_test profile, admit peers that attest with the SIMULATED TEE
    # (and let this node run it). Its root key is in the source: ANYONE can forge its evidence.
    # Needs a private-network key (network.psk_file) unless every address is loopback and mDNS
    # is off; logs a WARNING at every start; refused by the wan profile.
    insecure_accept_simulated: bool = False
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
    tasks: TasksConfig = dataclasses.field(default_factory=TasksConfig)
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

    @property
    def simulated_allowed(self) -> bool:
        """True when this node may run the simulated TEE and admit peers that do."""
        return self.profile == "local_test" or self.attestation.insecure_accept_simulated

    @classmethod
    def for_profile(cls, name: str) -> NodeConfig:
        name = name.replace("-", "_")
        if name not in PROFILES:
            raise ConfigError(f"unknown profile {name!r} (choose from {', '.join(PROFILES)})")
        cfg: NodeConfig = getattr(cls, name)()
        return cfg

    def validate(self) -> None:
        self.tasks.validate()
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
        if self.profile == "wan" and a.insecure_accept_simulated:
            raise ConfigError("attestation.insecure_accept_simulated: the wan (production) profile "
                              "never accepts the simulated TEE")
        if a.tee == "sim" and not self.simulated_allowed:
            raise ConfigError(
                f"attestation.tee: the simulated TEE is not allowed by profile {self.profile!r} "
                "(anyone can forge its evidence); use profile local_test on loopback, or set "
                "attestation.insecure_accept_simulated = true (--insecure-simulated-tee)")

    # ------------------------------------------------------------------ TOML
    def to_toml(self) -> str:
        """Every field, with the comment that documents it, as a TOML document."""
        out = [
            "# enclave-swarm node configuration. Every key is shown with its default.",
            "# Profiles: lan (hardware TEEs), wan (production: hardware TEEs, bootstrap only),",
            "# local_test (simulated TEE, loopback only).",
            "# The layout of this file; a release refuses a newer one (docs/operations.md, Upgrades).",
            f"schema_version = {SCHEMA_VERSION}",
            f'profile = "{self.profile}"',
            "# Log format on stderr: text | json. Level: debug | info | warning | error.",
            f'log_format = "{self.log_format}"',
            f'log_level = "{self.log_level}"',
        ]
        for section in ("network", "attestation", "tasks"):
            out.append("")
            out.append(f"[{section}]")
            obj = getattr(self, section)
            comments = _field_comments(type(obj))
            for f in dataclasses.fields(obj):
                for c in comments.get(f.name, []):
                    out.append(f"# {c}")
                out.append(f"{f.name} = {_toml_value(getattr(obj, f.name))}")
        return "\n".join(out) + "\n"


def is_loopback_addr(addr: str) -> bool:
    """True when multiaddr ``addr`` names a loopback IP literal (127.0.0.0/8, ::1).

    Names (``/dns4/localhost``), wildcards (``0.0.0.0``) and anything unparsable count as
    reachable from the network: this guards a security rule, so doubt means "not loopback".
    """
    parts = addr.split("/")
    if len(parts) < 3 or parts[0] != "" or parts[1] not in ("ip4", "ip6"):
        return False
    try:
        return ipaddress.ip_address(parts[2]).is_loopback
    except ValueError:
        return False


def exposure_error(cfg: NodeConfig, *, has_psk: bool | None = None) -> str | None:
    """Why ``cfg`` must not start, as one line, or None when it may.

    A node that admits the simulated TEE admits anyone who can connect (its evidence is
    forgeable), so it must keep to loopback, unless a private-network key keeps strangers from
    connecting at all. Pure: looks at the configuration only, binds nothing.

    Args:
        has_psk: whether a private-network key is in use; default: ``network.psk_file`` is set.
    """
    if not cfg.simulated_allowed:
        return None
    if has_psk is None:
        has_psk = bool(cfg.network.psk_file)
    if has_psk:
        return None
    n = cfg.network
    exposed = [f"listen address {a}" for a in n.listen if not is_loopback_addr(a)]
    exposed += [f"bootstrap address {b}" for b in n.bootstrap if not is_loopback_addr(b)]
    if n.mdns:
        exposed.append("mDNS discovery")
    if not exposed:
        return None
    why = ("profile local_test" if cfg.profile == "local_test"
           else "attestation.insecure_accept_simulated")
    return (f"refusing to start: {exposed[0]} reaches beyond loopback, but this node admits the "
            f"simulated TEE ({why}), whose evidence anyone can forge; set a private-network key "
            "(--psk FILE / network.psk_file) or keep to 127.0.0.1 without mDNS")


#: What ``init`` prints for each profile: what it admits.
PROFILE_SUMMARY = {
    "lan": "hardware-attested peers (SEV-SNP, TDX, SGX) only, mDNS discovery on the local network",
    "wan": "production: hardware-attested peers only, bootstrap discovery, longer timeouts",
    "local_test": "the SIMULATED TEE (anyone can forge its evidence), on loopback only",
}


def choose_profile(requested: str | None, hardware_tee: str | None) -> tuple[str, str]:
    """The profile ``init`` uses and why, as ``(name, one-line reason)``.

    An explicit ``--profile`` wins. Otherwise a host with a hardware TEE gets ``lan``, and a
    host without one ``local_test``: the only profile that runs the simulated TEE, and only
    on loopback, so a default install never admits forgeable evidence from the network.

    Raises:
        ConfigError: ``requested`` is not a profile.
    """
    if requested is not None:
        name = NodeConfig.for_profile(requested).profile
        return name, f"chosen with --profile; it admits {PROFILE_SUMMARY[name]}"
    if hardware_tee is not None:
        return "lan", (f"a hardware TEE ({hardware_tee}) was found; lan admits "
                       f"{PROFILE_SUMMARY['lan']} (--profile wan for production)")
    return "local_test", ("no hardware TEE (SEV-SNP, TDX, SGX) was found, and only local_test runs "
                          "the simulated TEE: anyone can forge its evidence, so it stays on "
                          "loopback; on a TEE host choose --profile lan or wan")


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
        ConfigError: bad TOML, a schema version newer than this release reads or garbled,
            unknown keys, wrong types or invalid values; names ``where``.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML ({exc})") from None
    try:  # first: a newer file's new keys must not be the reason given
        check_version(data.pop("schema_version", 1), where=where, what="config",
                      supported=SCHEMA_VERSION)
    except SchemaError as exc:
        raise ConfigError(str(exc)) from None
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

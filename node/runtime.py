"""Assembling a node from its data dir: identity, config, TEE backend, policy, engine, agent."""

from __future__ import annotations

import dataclasses
import importlib
import logging
from typing import TYPE_CHECKING, Any

from node.attestation.base import AttestationUnavailable, EvidenceProvider, TeeKind, Verifier
from node.attestation.engine import AttestationEngine
from node.attestation.policy import Policy, PolicyError, load_policy
from node.attestation.simulated import SimulatedProvider, SimulatedVerifier
from node.config import NodeConfig
from node.control import register_command
from node.datadir import DataDir
from node.measure import agent_measurement

if TYPE_CHECKING:
    from node.agent import Agent

log = logging.getLogger("enclave_swarm.runtime")


# Components that plug into a node: each module has ``attach(agent, data_dir)``, which may add
# services (Agent.add_service), protocol handlers (Agent.set_handler), status fields
# (Agent.add_status) and control commands (node.control.register_command).
EXTENSIONS: list[str] = ["node.keys.watch", "node.gossip", "node.manager", "node.manager_control",
                         "node.shards.service", "node.shards.control", "node.tasks.offers",
                         "node.tasks.service", "node.upgrade"]


class SetupError(Exception):
    """The node cannot start as configured (message says why and what to do)."""


def profile_policy(cfg: NodeConfig) -> Policy:
    """The built-in policy: the simulated TEE is admitted only where the config allows it
    (profile local_test, or the loudly named insecure option); otherwise hardware only."""
    return Policy.development() if cfg.simulated_allowed else Policy.production()


def load_node_policy(cfg: NodeConfig) -> Policy:
    """The profile's policy, overridden by the policy file if one is configured.

    Raises:
        SetupError: the file is invalid, or it admits the simulated TEE where the config does
            not allow it (a policy file must not quietly re-open what the profile closed).
    """
    base = profile_policy(cfg)
    if not cfg.attestation.policy_file:
        return base
    try:
        policy = load_policy(cfg.attestation.policy_file, base=base)
    except PolicyError as exc:
        raise SetupError(str(exc)) from None
    if policy.allow_simulated and not cfg.simulated_allowed:
        raise SetupError(
            f"{cfg.attestation.policy_file}: allow_simulated = true, but profile {cfg.profile!r} "
            "does not admit the simulated TEE (anyone can forge its evidence); set "
            "attestation.insecure_accept_simulated = true (--insecure-simulated-tee) to accept that")
    return policy


def warn_if_simulated(cfg: NodeConfig) -> None:
    """Log, at every start, that this node admits forgeable evidence (if it does)."""
    if cfg.attestation.insecure_accept_simulated:
        log.warning("INSECURE: attestation.insecure_accept_simulated is on: peers attesting with the "
                    "SIMULATED TEE are admitted, and anyone can forge its evidence (its root key is "
                    "in the source); keep this node on loopback or behind a private-network key")
    elif cfg.simulated_allowed:
        log.warning("profile %s admits peers attesting with the SIMULATED TEE, whose evidence "
                    "anyone can forge: for tests on loopback only", cfg.profile)


def build_verifiers() -> dict[TeeKind, Verifier]:
    """A verifier for every TEE kind this build knows."""
    verifiers: dict[TeeKind, Verifier] = {TeeKind.SIM: SimulatedVerifier()}
    verifiers.update(_hardware_verifiers())
    return verifiers


def _hardware_verifiers() -> dict[TeeKind, Verifier]:
    from node.attestation.dcap import DcapVerifier
    from node.attestation.sevsnp import SnpVerifier

    dcap = DcapVerifier()
    return {TeeKind.SEV_SNP: SnpVerifier(), TeeKind.TDX: dcap, TeeKind.SGX: dcap}


def select_provider(cfg: NodeConfig, data_dir: DataDir) -> EvidenceProvider:
    """The evidence provider for ``cfg.attestation.tee``.

    Raises:
        SetupError: the requested TEE is absent, or none is present and the simulated
            fallback is not allowed.
    """
    a = cfg.attestation
    tee = a.tee
    if tee == "auto":
        from node.attestation.providers import detect_tee

        found = detect_tee()
        if found is None:
            if not (a.allow_simulated_fallback and cfg.simulated_allowed):
                raise SetupError(
                    "no hardware TEE found (no SEV-SNP/TDX configfs-tsm, no SGX /dev/attestation) and "
                    f"profile {cfg.profile!r} does not allow the simulated TEE; run on a TEE host, or "
                    "use --profile local-test on loopback (or --insecure-simulated-tee)")
            log.warning("no hardware TEE found: using the SIMULATED TEE (no hardware protection)")
            tee = "sim"
        else:
            tee = str(found)
    if tee == "sim":
        if not cfg.simulated_allowed:
            raise SetupError(f"profile {cfg.profile!r} refuses the simulated TEE (anyone can forge its "
                             "evidence); use --profile local-test, or --insecure-simulated-tee")
        return SimulatedProvider(data_dir.sim_tee_path, agent_measurement(a.sim_build_tag),
                                 debug=a.sim_debug)
    from node.attestation.providers import provider_for

    try:
        provider: EvidenceProvider = provider_for(TeeKind(tee))
        # Fail now, not at the first challenge: a node that cannot attest is useless.
        provider.get_evidence(bytes(64))
    except AttestationUnavailable as exc:
        raise SetupError(f"TEE {tee} unavailable: {exc}") from None
    except (OSError, ValueError) as exc:
        raise SetupError(f"TEE {tee} unavailable: {exc}") from None
    return provider


def build_agent(data_dir: DataDir, cfg: NodeConfig, *, psk_hex: str | None = None) -> Agent:
    from node.agent import Agent
    from node.config import exposure_error

    problem = exposure_error(cfg, has_psk=psk_hex is not None)
    if problem:
        raise SetupError(problem)
    warn_if_simulated(cfg)
    keys = data_dir.key_provider()
    identity = keys.identity
    try:
        provider = select_provider(cfg, data_dir)
    except BaseException:
        keys.close()
        raise
    if keys.backend == "file" and data_dir.identity_sealing() is None:
        log.warning("%s", data_dir.identity_note(str(provider.kind)))
    else:
        log.info("%s", data_dir.identity_note(str(provider.kind)))
    engine = AttestationEngine(
        build_verifiers(),
        load_node_policy(cfg),
        identity_key=identity,
        self_measurement=_self_measurement(provider, cfg),
        record_ttl_s=3 * cfg.attestation.reattest_interval_s,
    )
    agent = Agent(config=cfg, identity=identity, provider=provider, engine=engine, data_dir=data_dir,
                  psk_hex=psk_hex, keys=keys)
    for name in EXTENSIONS:
        importlib.import_module(name).attach(agent, data_dir)
    return agent


def _self_measurement(provider: EvidenceProvider, cfg: NodeConfig) -> bytes | None:
    m = getattr(provider, "measurement", None)
    if isinstance(m, bytes):
        return m
    # Hardware: our launch measurement is in our own evidence.
    try:
        ev = provider.get_evidence(bytes(64))
    except Exception as exc:
        log.warning("could not read our own measurement: %s", exc)
        return None
    v = build_verifiers().get(ev.kind)
    if v is None:
        return None
    from datetime import UTC, datetime

    verdict = v.verify(ev, at=datetime.now(UTC))
    return verdict.claims.measurement if verdict.claims else None


def _cmd_reload_policy(agent: Agent, req: dict[str, Any]) -> dict[str, Any]:
    """Control command ``reload-policy`` (registered below: node/control.py imports nothing
    from here, so agent -> control and runtime -> agent, control form no circle)."""
    try:
        summary = reload_policy(agent)
    except ValueError as exc:
        # The node's log says so too: the operator reading it sees that the old policy holds.
        log.warning("policy reload refused, the current policy stays: %s", exc)
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "policy": summary}


register_command("reload-policy", _cmd_reload_policy)


def reload_policy(agent: Agent) -> dict[str, Any]:
    """Re-read the policy file into the running engine. Raises ValueError if invalid."""
    try:
        policy = load_node_policy(agent.config)
    except SetupError as exc:
        raise ValueError(str(exc)) from None
    agent.engine.policy = policy
    log.info("policy reloaded: %s", policy)
    return dataclasses.asdict(policy)

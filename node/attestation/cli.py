"""``enclave-swarm attest verify``: check one evidence file offline.

    enclave-swarm attest verify EVIDENCE [--vcek FILE] [--chain FILE] [--root FILE]
                                [--collateral DIR] [--policy FILE] [--at ISO8601] [--json]

The kind is detected from the bytes (SEV-SNP report or DCAP quote; see ``detect.py``).
Exit status: 0 accepted (and allowed by the policy, if one is given), 1 rejected, unreadable or
unparsable input, 2 usage error (one line on stderr). Accept and reject both print the verdict: JSON with
``--json`` (``verdict``, ``kind``, ``reason``, ``measurement``, ``report_data``, ``tcb``,
``tcb_status``, ``debug``, ``claims`` and, with ``--policy``, ``policy``), otherwise a short
human summary.

``--root`` adds a pinned AMD ARK for SEV-SNP (the built-in pins stay) or replaces the pinned
Intel SGX Root CA for DCAP: it is a trust decision by whoever runs the command.
"""

from __future__ import annotations

import argparse
import hmac
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from node.attestation import _certs
from node.attestation.base import Evidence, TeeKind, Verdict, Verifier
from node.attestation.detect import detect_kind, verifier_for
from node.measure import agent_measurement
from overlay.handshake import binding

__all__ = ["add_verify_arguments", "cmd_verify", "run_verify"]


class _UsageError(Exception):
    """The command line itself is wrong (a flag, a value, flags that do not go together): exit 2."""


class _Refused(Exception):
    """An input that cannot be read, or was read but does not parse (evidence, a certificate,
    a policy): exit 1, as for any other refused input."""


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise _Refused(f"cannot read {what} {path}: {e.strerror or e}") from e


def _parse_at(at: str | datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    if isinstance(at, datetime):
        dt = at
    else:
        try:
            dt = datetime.fromisoformat(at.strip().replace("Z", "+00:00"))
        except ValueError as e:
            raise _UsageError(f"--at: not an ISO 8601 time: {at!r}") from e
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)  # a bare time on the command line means UTC
    return dt


def _cert_ders(data: bytes, what: str) -> list[bytes]:
    try:
        return [_certs.der(c) for c in _certs.load_any(data)]
    except _certs.CertError as e:
        raise _Refused(f"{what}: {e}") from e


def _build(kind: TeeKind, blob: bytes, *, vcek: str | None, chain: str | None,
           root: str | None, collateral_dir: str | None) -> tuple[Verifier, Evidence]:
    if kind is TeeKind.SEV_SNP:
        from node.attestation.sevsnp import SnpVerifier

        if collateral_dir is not None:
            raise _UsageError("--collateral applies to DCAP quotes only")
        certs: list[bytes] = []
        if vcek is not None:
            certs += _cert_ders(_read(vcek, "VCEK"), "--vcek")
        if chain is not None:
            certs += _cert_ders(_read(chain, "chain"), "--chain")
        extra = [_read(root, "root")] if root is not None else []
        verifier: Verifier
        try:
            verifier = SnpVerifier(extra_arks=extra)
        except (ValueError, _certs.CertError) as e:
            raise _Refused(f"--root: {e}") from e
        return verifier, Evidence(kind, blob, tuple(certs))
    from node.attestation.dcap import Collateral, DcapVerifier

    if vcek is not None or chain is not None:
        raise _UsageError("--vcek/--chain apply to SEV-SNP reports only (DCAP embeds its chain)")
    collateral = None
    if collateral_dir is not None:
        try:
            collateral = Collateral.from_dir(collateral_dir)
        except OSError as e:
            raise _Refused(f"--collateral: {e}") from e
    root_pem = _read(root, "root") if root is not None else None
    try:
        verifier = DcapVerifier(kind, collateral=collateral, root_pem=root_pem)
    except (ValueError, _certs.CertError) as e:
        raise _Refused(f"--root: {e}") from e
    return verifier, Evidence(kind, blob)


def _bundle(blob: bytes, path: str | Path) -> tuple[Evidence, bytes | None]:
    """An evidence bundle as written by ``enclave-swarm attest evidence`` (JSON): the evidence,
    its endorsement certificates, and the nonce and key its report_data must bind."""
    try:
        doc = json.loads(blob)
        kind = TeeKind(doc["kind"])
        evidence = Evidence(kind, bytes.fromhex(doc["evidence"]),
                            tuple(bytes.fromhex(c) for c in doc.get("certs", [])))
        expected = None
        if "nonce" in doc and "public_key" in doc:
            expected = binding(bytes.fromhex(doc["nonce"]), bytes.fromhex(doc["public_key"]))
    except (ValueError, KeyError, TypeError) as e:
        raise _Refused(f"{path}: not a valid evidence bundle ({type(e).__name__}: {e})") from None
    return evidence, expected


def cmd_verify(
    evidence_path: str | Path,
    *,
    vcek: str | None = None,
    chain: str | None = None,
    root: str | None = None,
    collateral_dir: str | None = None,
    policy: str | None = None,
    at: str | datetime | None = None,
    as_json: bool = True,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Verify one evidence file; print the verdict; return the exit status: 0 accepted, 1
    rejected or an input that does not parse, 2 a usage error.

    Args:
        evidence_path: raw SNP report or DCAP quote.
        vcek: SNP: VCEK/VLEK certificate (DER or PEM).
        chain: SNP: ASK/ASVK (+ ARK) certificates (DER or PEM).
        root: extra pinned ARK (SNP) or replacement Intel root (DCAP), PEM/DER.
        collateral_dir: DCAP: directory with TCB info, QE identity, CRLs, TCB signing chain.
        policy: policy file for ``node.attestation.policy.load_policy``.
        at: ISO 8601 time (or datetime) to check validity at; default now. Naive means UTC.
        as_json: print JSON (else a human summary).
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        when = _parse_at(at)
        blob = _read(evidence_path, "evidence")
        bundle = _bundle(blob, evidence_path) if blob[:1] == b"{" else None
        if bundle is not None:
            evidence, expected_rd = bundle
            kind = evidence.kind
            verifier = verifier_for(kind)
        else:
            expected_rd = None
            detected = detect_kind(blob)
            if detected is None and (vcek is not None or chain is not None):
                # The certificates say SEV-SNP: let its parser name what is wrong (a corrupted
                # version, a bad length...) in a REJECT verdict.
                detected = TeeKind.SEV_SNP
            if detected is None:
                raise _Refused(f"{evidence_path}: not an SEV-SNP report, DCAP quote or evidence bundle")
            kind = detected
            verifier, evidence = _build(kind, blob, vcek=vcek, chain=chain, root=root,
                                        collateral_dir=collateral_dir)
        decision = None
        if policy is not None:
            try:
                from node.attestation import policy as policy_mod
            except ImportError as e:
                raise _UsageError(f"--policy: policy support unavailable ({e})") from e
            try:
                pol = policy_mod.load_policy(policy)
            except OSError as e:
                raise _Refused(f"--policy: {e}") from e
            except ValueError as e:
                raise _Refused(f"--policy: {e}") from e
    except _UsageError as e:
        print(f"enclave-swarm: {e}", file=err)
        return 2
    except _Refused as e:
        print(f"enclave-swarm: {e}", file=err)
        return 1
    verdict: Verdict = verifier.verify(evidence, at=when)
    if (expected_rd is not None and verdict.claims is not None
            and not hmac.compare_digest(verdict.claims.report_data, expected_rd)):
        verdict = Verdict.reject(kind, "binding: report_data is not sha512(nonce ‖ public_key) of the bundle",
                                 verdict.claims)
    if policy is not None:
        self_m = agent_measurement() if kind is TeeKind.SIM else None
        decision = policy_mod.evaluate(pol, verdict, at=when, self_measurement=self_m)
    ok = verdict.accepted and (decision is None or decision.allowed)
    result: dict[str, Any] = verdict.to_json()
    result["at"] = when.isoformat()
    if decision is not None:
        result["policy"] = {"allowed": decision.allowed,
                            "failed_rules": list(decision.failed_rules)}
    if as_json:
        print(json.dumps(result, indent=2, sort_keys=False), file=out)
    else:
        c = verdict.claims
        print(f"{'ACCEPT' if verdict.accepted else 'REJECT'} {kind}: {verdict.reason}", file=out)
        if c is not None:
            print(f"  measurement  {c.measurement.hex()}", file=out)
            print(f"  report_data  {c.report_data.hex()}", file=out)
            print(f"  debug        {c.debug}", file=out)
            print(f"  tcb          {dict(c.tcb)}", file=out)
            if c.tcb_status is not None:
                print(f"  tcb_status   {c.tcb_status}", file=out)
        if decision is not None:
            print(f"  policy       {'allowed' if decision.allowed else 'refused'}", file=out)
            for rule in decision.failed_rules:
                print(f"    - {rule}", file=out)
    return 0 if ok else 1


def add_verify_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``attest verify``'s arguments to ``p`` (the lead wires it into the main CLI)."""
    p.add_argument("evidence", help="SEV-SNP report or DCAP quote file")
    p.add_argument("--vcek", metavar="FILE", help="SEV-SNP VCEK/VLEK certificate (DER/PEM)")
    p.add_argument("--chain", metavar="FILE", help="SEV-SNP ASK/ASVK(+ARK) chain (DER/PEM)")
    p.add_argument("--root", metavar="FILE",
                   help="extra pinned AMD ARK, or replacement Intel SGX root (PEM/DER)")
    p.add_argument("--collateral", metavar="DIR", help="DCAP collateral directory")
    p.add_argument("--policy", metavar="FILE", help="attestation policy file")
    p.add_argument("--at", metavar="ISO8601", help="check validity at this time (default now)")
    p.add_argument("--json", action="store_true", help="print JSON")


def run_verify(args: argparse.Namespace) -> int:
    """Run ``cmd_verify`` from parsed :func:`add_verify_arguments` arguments."""
    return cmd_verify(args.evidence, vcek=args.vcek, chain=args.chain, root=args.root,
                      collateral_dir=args.collateral, policy=args.policy, at=args.at,
                      as_json=args.json)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="enclave-swarm attest verify")
    add_verify_arguments(p)
    return run_verify(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

"""Evidence providers for real TEEs: SEV-SNP and TDX via Linux configfs-tsm, SGX via Gramine.

Theory of operation
-------------------
*configfs-tsm* (Linux >= 6.7, ``Documentation/ABI/testing/configfs-tsm``) exposes one
report interface for every confidential-computing guest driver:

1. ``mkdir /sys/kernel/config/tsm/report/<name>`` creates a private request entry;
2. write the 64 report_data bytes to ``<name>/inblob`` (optionally ``privlevel`` first: the
   SNP VMPL), then read ``generation``;
3. read ``<name>/outblob``: the SNP report or the TDX quote, produced on this read; for SNP,
   ``<name>/auxblob`` holds the host-provided certificate table (VCEK/VLEK, ASK, ARK) when the
   host supplies one;
4. read ``generation`` again: if it changed, another writer raced us on the same entry and the
   output may not match our inblob, so the result is discarded;
5. ``<name>/provider`` names the driver (``sev_guest`` / ``tdx_guest``) and must match;
6. ``rmdir`` the entry (always, also on failure).

*Gramine* SGX enclaves write report_data to ``/dev/attestation/user_report_data`` and read the
DCAP quote from ``/dev/attestation/quote``; ``/dev/attestation/attestation_type`` must be
``dcap``.

Every provider double-checks that the evidence it returns carries exactly the requested
report_data, so a misbehaving driver or a race cannot hand out evidence for another challenge.
Failures raise :class:`AttestationUnavailable` with a message naming the path involved; the
node then falls back or refuses to start, as configured. All paths are parameters, so the code
is tested against fake trees in a temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import struct
import uuid
from pathlib import Path

from node.attestation.base import AttestationUnavailable, Evidence, TeeKind

__all__ = [
    "DEFAULT_TSM_ROOT",
    "GramineSgxProvider",
    "TsmProvider",
    "detect_tee",
    "parse_snp_cert_table",
    "provider_for",
]

DEFAULT_TSM_ROOT = Path("/sys/kernel/config/tsm/report")
DEFAULT_GRAMINE_ROOT = Path("/dev/attestation")
REPORT_DATA_SIZE = 64
MAX_OUTBLOB_BYTES = 1 << 20  # an SNP report is 1184 bytes, a TDX quote ~5 KiB

_TSM_PROVIDER_NAME = {TeeKind.SEV_SNP: "sev_guest", TeeKind.TDX: "tdx_guest"}

# GUIDs of the SNP extended-report certificate table (GHCB spec / SNP ABI "CERT_TABLE").
SNP_GUID_ARK = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")
SNP_GUID_ASK = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")
SNP_GUID_VCEK = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
SNP_GUID_VLEK = uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1")


def parse_snp_cert_table(aux: bytes) -> dict[uuid.UUID, bytes]:
    """Decode an SNP certificate table: entries ``(GUID 16, u32 offset, u32 length)`` ended
    by an all-zero entry; offsets are from the start of the table.

    Raises:
        AttestationUnavailable: the table is malformed.
    """
    out: dict[uuid.UUID, bytes] = {}
    pos = 0
    while True:
        if pos + 24 > len(aux):
            raise AttestationUnavailable("SNP certificate table: missing terminator")
        guid_raw = aux[pos:pos + 16]
        off, ln = struct.unpack_from("<II", aux, pos + 16)
        pos += 24
        if not any(guid_raw) and off == 0 and ln == 0:
            return out
        if off + ln > len(aux) or off < pos:
            raise AttestationUnavailable("SNP certificate table: entry out of bounds")
        out[uuid.UUID(bytes_le=guid_raw)] = aux[off:off + ln]
        if len(out) > 16:
            raise AttestationUnavailable("SNP certificate table: too many entries")


class TsmProvider:
    """SEV-SNP or TDX evidence through Linux configfs-tsm.

    Args:
        kind: TeeKind.SEV_SNP or TeeKind.TDX.
        root: the configfs-tsm report directory (default ``/sys/kernel/config/tsm/report``).
        privlevel: SNP only: the VMPL to request (written to ``privlevel``); None = default.
    """

    def __init__(self, kind: TeeKind, *, root: Path = DEFAULT_TSM_ROOT,
                 privlevel: int | None = None) -> None:
        if kind not in _TSM_PROVIDER_NAME:
            raise ValueError(f"configfs-tsm serves SEV-SNP and TDX, not {kind}")
        if privlevel is not None and (kind is not TeeKind.SEV_SNP or not 0 <= privlevel <= 3):
            raise ValueError("privlevel is an SNP VMPL in 0..3")
        self.kind = kind
        self.root = Path(root)
        self.privlevel = privlevel

    def get_evidence(self, report_data: bytes) -> Evidence:
        """Request fresh evidence over ``report_data`` (exactly 64 bytes).

        Raises:
            ValueError: report_data is not 64 bytes (local misuse).
            AttestationUnavailable: configfs-tsm is absent, the provider is another TEE, the
                request raced or failed, or the output does not carry ``report_data``.
        """
        if len(report_data) != REPORT_DATA_SIZE:
            raise ValueError("report_data must be 64 bytes")
        if not self.root.is_dir():
            raise AttestationUnavailable(f"configfs-tsm not available: {self.root} is missing "
                                         "(needs Linux >= 6.7 with configfs mounted)")
        entry = self.root / f"enclave-swarm-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            self._make_entry(entry)
        except OSError as e:
            raise AttestationUnavailable(f"configfs-tsm: cannot create {entry}: {e}") from e
        try:
            provider = self._read(entry / "provider").decode("ascii", "replace").strip()
            want = _TSM_PROVIDER_NAME[self.kind]
            if provider != want:
                raise AttestationUnavailable(
                    f"configfs-tsm provider is {provider!r}, expected {want!r} for {self.kind}")
            if self.privlevel is not None:
                self._write(entry / "privlevel", str(self.privlevel).encode())
            self._write(entry / "inblob", report_data)
            gen_before = self._read(entry / "generation").strip()
            blob = self._read(entry / "outblob")
            aux = b""
            if self.kind is TeeKind.SEV_SNP and (entry / "auxblob").exists():
                aux = self._read(entry / "auxblob")
            gen_after = self._read(entry / "generation").strip()
            if gen_before != gen_after:
                raise AttestationUnavailable(
                    "configfs-tsm: entry generation changed while reading (concurrent writer)")
        except OSError as e:
            raise AttestationUnavailable(f"configfs-tsm request failed: {e}") from e
        finally:
            # Best effort: a leftover entry holds no secret (report_data is public) and only
            # costs a directory; failing the request over it would be worse.
            with contextlib.suppress(OSError):
                os.rmdir(entry)
        if not blob:
            raise AttestationUnavailable("configfs-tsm returned an empty outblob")
        if len(blob) > MAX_OUTBLOB_BYTES:
            raise AttestationUnavailable("configfs-tsm outblob too large")
        self._check_report_data(blob, report_data)
        return Evidence(self.kind, blob, self._certs(aux))

    def _check_report_data(self, blob: bytes, want: bytes) -> None:
        got = blob[0x50:0x90] if self.kind is TeeKind.SEV_SNP else _dcap_report_data(blob)
        if got != want:
            raise AttestationUnavailable("evidence does not carry the requested report_data")

    def _certs(self, aux: bytes) -> tuple[bytes, ...]:
        if self.kind is not TeeKind.SEV_SNP or not aux:
            return ()
        table = parse_snp_cert_table(aux)
        leaf = table.get(SNP_GUID_VCEK) or table.get(SNP_GUID_VLEK)
        if leaf is None:
            return ()
        return tuple(c for c in (leaf, table.get(SNP_GUID_ASK), table.get(SNP_GUID_ARK)) if c)

    # I/O hooks (overridden by tests that emulate the kernel side).
    def _make_entry(self, path: Path) -> None:
        os.mkdir(path)

    def _read(self, path: Path) -> bytes:
        with open(path, "rb") as f:
            return f.read(MAX_OUTBLOB_BYTES + 1)

    def _write(self, path: Path, data: bytes) -> None:
        with open(path, "wb", buffering=0) as f:
            f.write(data)


def _dcap_report_data(quote: bytes) -> bytes:
    """report_data of a DCAP quote body (v3/v4/v5), or b"" if the quote is too short."""
    if len(quote) < 48:
        return b""
    version, _, tee_type = struct.unpack_from("<HHI", quote, 0)
    if version == 5:
        if len(quote) < 54:
            return b""
        body_type, _ = struct.unpack_from("<HI", quote, 48)
        base = 54
        rd = {1: 320, 2: 520, 3: 520}.get(body_type)
    else:
        base = 48
        rd = 520 if tee_type == 0x81 else 320
    if rd is None:
        return b""
    return quote[base + rd:base + rd + 64]


class GramineSgxProvider:
    """SGX DCAP quotes through Gramine's ``/dev/attestation`` pseudo-files.

    Args:
        root: the Gramine attestation directory (default ``/dev/attestation``).
    """

    kind = TeeKind.SGX

    def __init__(self, *, root: Path = DEFAULT_GRAMINE_ROOT) -> None:
        self.root = Path(root)

    def get_evidence(self, report_data: bytes) -> Evidence:
        """Return a DCAP quote over ``report_data`` (64 bytes).

        Raises:
            ValueError: report_data is not 64 bytes.
            AttestationUnavailable: not inside Gramine-SGX, attestation type is not DCAP, or
                the quote does not carry ``report_data``.
        """
        if len(report_data) != REPORT_DATA_SIZE:
            raise ValueError("report_data must be 64 bytes")
        if not (self.root / "quote").exists():
            raise AttestationUnavailable(
                f"Gramine attestation not available: {self.root}/quote is missing "
                "(run inside gramine-sgx with sgx.remote_attestation = \"dcap\")")
        try:
            att_type = (self.root / "attestation_type").read_bytes().strip()
            if att_type != b"dcap":
                raise AttestationUnavailable(
                    f"Gramine attestation type is {att_type.decode('ascii', 'replace')!r}, "
                    "need 'dcap'")
            with open(self.root / "user_report_data", "wb", buffering=0) as f:
                f.write(report_data)
            with open(self.root / "quote", "rb") as f:
                quote = f.read(MAX_OUTBLOB_BYTES + 1)
        except OSError as e:
            raise AttestationUnavailable(f"Gramine attestation failed: {e}") from e
        if not quote or len(quote) > MAX_OUTBLOB_BYTES:
            raise AttestationUnavailable("Gramine returned no usable quote")
        if _dcap_report_data(quote) != report_data:
            raise AttestationUnavailable("quote does not carry the requested report_data")
        return Evidence(TeeKind.SGX, quote, ())


def detect_tee(*, tsm_root: Path = DEFAULT_TSM_ROOT, dev_root: Path = Path("/dev"),
               gramine_root: Path = DEFAULT_GRAMINE_ROOT) -> TeeKind | None:
    """Which real TEE can produce evidence here (for ``--tee auto``), or None.

    Order: Gramine-SGX (``/dev/attestation`` with type ``dcap``), then configfs-tsm together
    with the guest driver's device node (``/dev/sev-guest`` -> SEV-SNP, ``/dev/tdx_guest`` ->
    TDX). Never creates report entries and never raises on an unreadable path.
    """
    try:
        gq = gramine_root / "quote"
        if gq.exists() and (gramine_root / "attestation_type").read_bytes().strip() == b"dcap":
            return TeeKind.SGX
    except OSError:
        pass
    try:
        if Path(tsm_root).is_dir():
            if (dev_root / "sev-guest").exists():
                return TeeKind.SEV_SNP
            if (dev_root / "tdx_guest").exists():
                return TeeKind.TDX
    except OSError:
        pass
    return None


def provider_for(kind: TeeKind, **kw: object) -> TsmProvider | GramineSgxProvider:
    """The provider for a real TEE kind (``kw`` forwarded: ``root``, ``privlevel``).

    Raises:
        ValueError: ``kind`` has no real provider here (e.g. SIM lives in simulated.py).
    """
    if kind in (TeeKind.SEV_SNP, TeeKind.TDX):
        return TsmProvider(kind, **kw)  # type: ignore[arg-type]
    if kind is TeeKind.SGX:
        return GramineSgxProvider(**kw)  # type: ignore[arg-type]
    raise ValueError(f"no hardware evidence provider for {kind}")

"""Keys sealed to the enclave's measurement: the identity key and the shard storage key at rest.

Theory of operation
-------------------
Whoever reads a node's data directory must learn nothing that lets it act as the node: with a
plaintext ``identity.key`` it could relay challenges to the real node and pass attestation with
its key, and unseal every shard. Where the TEE derives a key from the launch measurement, the
secrets on disk are encrypted under that key, so only the same measured code on the same
hardware opens them.

Key sources (a :class:`KeySource` returns raw hardware key bytes and a ``descriptor`` naming
how to get them again, which is written in clear into the sealed file):

* **SEV-SNP** (:class:`SnpDerivedKeySource`): ``MSG_KEY_REQ`` through ``/dev/sev-guest``, the
  ``SNP_GET_DERIVED_KEY`` ioctl of ``<linux/sev-guest.h>``. The request mixes the launch
  MEASUREMENT and the guest POLICY into a key derived from the chip-unique VCEK root
  (``root_key_select = 0``), at VMPL 0 by default: another image, a debug launch of the same
  image (POLICY differs) or another chip gets another key. TCB version and guest SVN are not
  mixed in, so a firmware update does not lock the node out of its own data.
* **SGX under Gramine** (:class:`GramineSealKeySource`): ``/dev/attestation/keys/_sgx_mrenclave``,
  Gramine's 16-byte EGETKEY seal key bound to MRENCLAVE.
* **TDX and the simulated TEE** have no sealing key: :func:`source_for` returns None and the
  caller keeps a plaintext key, with a loud note (see docs/attestation.md for the residual risk).

A sealed file (:func:`seal`)::

    MAGIC (b"enclave-swarm sealed v1\\n") | u16 BE descriptor length | descriptor (JSON)
    | 12-byte nonce | AES-256-GCM(ciphertext || tag)

The AES key is HKDF-SHA256(hardware key, info = label ‖ purpose), so one hardware key yields
independent keys per purpose (``identity``, ``storage``); the additional data is everything
before the nonce plus the purpose, so neither the descriptor nor the purpose can be swapped.
A file that does not open (the tag fails: the measurement, policy or chip changed, or the file
was altered) raises :class:`SealingError` with a message that says so; nothing is rewritten.

The ioctl's request and response are packed and parsed by pure functions checked against the
uapi layout (sizes, offsets) in tests; the device and the ioctl call are parameters, so the
provider is tested end to end with a fake device.
"""

from __future__ import annotations

import ctypes
import dataclasses
import fcntl
import json
import os
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from node.attestation.base import TeeKind

__all__ = [
    "GramineSealKeySource",
    "KeySource",
    "KeySources",
    "SealingError",
    "SnpDerivedKeySource",
    "is_sealed",
    "seal",
    "unseal",
]

MAGIC = b"enclave-swarm sealed v1\n"
NONCE_SIZE = 12
MAX_DESCRIPTOR = 512
_KDF_LABEL = b"enclave-swarm/sealing/v1/"
PURPOSES = ("identity", "storage")

# ---------------------------------------------------------------- <linux/sev-guest.h>

DEFAULT_SNP_DEVICE = Path("/dev/sev-guest")
DEFAULT_GRAMINE_ROOT = Path("/dev/attestation")
GRAMINE_MRENCLAVE_KEY = "_sgx_mrenclave"

#: struct snp_guest_request_ioctl: u8 msg_version, (7 pad), u64 req_data, u64 resp_data,
#: union { u64 exitinfo2; struct { u32 fw_error; u32 vmm_error; } }.
SNP_GUEST_REQUEST_IOCTL = struct.Struct("<B7xQQQ")
#: struct snp_derived_key_req: u32 root_key_select, u32 rsvd, u64 guest_field_select,
#: u32 vmpl, u32 guest_svn, u64 tcb_version.
SNP_DERIVED_KEY_REQ = struct.Struct("<IIQIIQ")
#: struct snp_derived_key_resp: u8 data[64] = the firmware's MSG_KEY_RSP: u32 status,
#: 28 reserved bytes, 32-byte DERIVED_KEY at offset 0x20.
SNP_DERIVED_KEY_RESP_SIZE = 64
SNP_DERIVED_KEY_OFFSET = 0x20
SNP_MSG_VERSION = 1

# GUEST_FIELD_SELECT bits (SEV-SNP firmware ABI, MSG_KEY_REQ).
FIELD_GUEST_POLICY = 1 << 0
FIELD_IMAGE_ID = 1 << 1
FIELD_FAMILY_ID = 1 << 2
FIELD_MEASUREMENT = 1 << 3
FIELD_GUEST_SVN = 1 << 4
FIELD_TCB_VERSION = 1 << 5
#: What we bind to: the launch measurement and the guest policy (a debug launch of the same
#: image has another policy, hence another key).
DEFAULT_FIELDS = FIELD_MEASUREMENT | FIELD_GUEST_POLICY
ROOT_KEY_VCEK = 0
ROOT_KEY_VMRK = 1

_IOC_WRITE, _IOC_READ = 1, 2


def ioc_rw(type_char: str, nr: int, size: int) -> int:
    """Linux ``_IOWR(type, nr, size)`` (x86/arm64 encoding: dir 2 bits, size 14, type 8, nr 8)."""
    if not 0 <= size < (1 << 14):
        raise ValueError("ioctl argument size out of range")
    return ((_IOC_READ | _IOC_WRITE) << 30) | (size << 16) | (ord(type_char) << 8) | nr


SNP_GET_REPORT = ioc_rw("S", 0x0, SNP_GUEST_REQUEST_IOCTL.size)
SNP_GET_DERIVED_KEY = ioc_rw("S", 0x1, SNP_GUEST_REQUEST_IOCTL.size)


class SealingError(Exception):
    """A sealing key is unavailable, or a sealed file cannot be opened (message says why)."""


def pack_snp_derived_key_req(*, root_key_select: int = ROOT_KEY_VCEK,
                             guest_field_select: int = DEFAULT_FIELDS, vmpl: int = 0,
                             guest_svn: int = 0, tcb_version: int = 0) -> bytes:
    """The 32-byte ``struct snp_derived_key_req``.

    Raises:
        ValueError: a field out of range (local misuse).
    """
    if root_key_select not in (ROOT_KEY_VCEK, ROOT_KEY_VMRK):
        raise ValueError("root_key_select is 0 (VCEK) or 1 (VMRK)")
    if not 0 <= guest_field_select < (1 << 6):
        raise ValueError("guest_field_select uses bits 0..5")
    if not 0 <= vmpl <= 3:
        raise ValueError("vmpl is within 0..3")
    if not 0 <= guest_svn < (1 << 32) or not 0 <= tcb_version < (1 << 64):
        raise ValueError("guest_svn / tcb_version out of range")
    return SNP_DERIVED_KEY_REQ.pack(root_key_select, 0, guest_field_select, vmpl, guest_svn,
                                    tcb_version)


def pack_snp_guest_request(req_addr: int, resp_addr: int, *,
                           msg_version: int = SNP_MSG_VERSION) -> bytearray:
    """The 32-byte ``struct snp_guest_request_ioctl`` pointing at the request/response buffers."""
    return bytearray(SNP_GUEST_REQUEST_IOCTL.pack(msg_version, req_addr, resp_addr, 0))


def parse_snp_guest_request_errors(buf: bytes | bytearray) -> tuple[int, int]:
    """``(fw_error, vmm_error)`` from a ``struct snp_guest_request_ioctl`` after the call."""
    if len(buf) != SNP_GUEST_REQUEST_IOCTL.size:
        raise ValueError("snp_guest_request_ioctl is 32 bytes")
    exitinfo2 = SNP_GUEST_REQUEST_IOCTL.unpack(bytes(buf))[3]
    return exitinfo2 & 0xFFFFFFFF, exitinfo2 >> 32


def parse_snp_derived_key_resp(data: bytes) -> bytes:
    """The 32-byte derived key from ``struct snp_derived_key_resp``.

    Raises:
        SealingError: wrong size, a non-zero firmware status, or an all-zero key.
    """
    if len(data) != SNP_DERIVED_KEY_RESP_SIZE:
        raise SealingError(f"SNP derived key response is {len(data)} bytes, expected 64")
    status, = struct.unpack_from("<I", data, 0)
    if status != 0:
        name = {0x16: "INVALID_KEY_SEL"}.get(status, "")
        raise SealingError(f"SNP firmware refused the key request: status {status:#x} {name}".strip())
    key = bytes(data[SNP_DERIVED_KEY_OFFSET:SNP_DERIVED_KEY_OFFSET + 32])
    if not any(key):
        raise SealingError("SNP firmware returned an all-zero derived key")
    return key


# ---------------------------------------------------------------- key sources


class KeySource(Protocol):
    """A TEE key bound to the measurement. ``descriptor`` says how to derive it again."""

    descriptor: Mapping[str, Any]

    def key(self) -> bytes:
        """The raw hardware key (16..64 bytes). Raises SealingError when unavailable."""
        ...


IoctlFn = Callable[[int, int, bytearray, bool], Any]


class SnpDerivedKeySource:
    """SEV-SNP ``MSG_KEY_REQ`` via ``/dev/sev-guest`` (``SNP_GET_DERIVED_KEY``).

    Args:
        device: the guest device node.
        vmpl: the VMPL to derive at (must be >= the guest's own VMPL; 0 without an SVSM).
        guest_field_select: GUEST_FIELD_SELECT bits mixed into the key.
        ioctl: the ioctl call (``fcntl.ioctl`` signature); tests pass a fake device.
    """

    kind = TeeKind.SEV_SNP

    def __init__(self, device: Path = DEFAULT_SNP_DEVICE, *, vmpl: int = 0,
                 guest_field_select: int = DEFAULT_FIELDS, ioctl: IoctlFn | None = None) -> None:
        self.device = Path(device)
        self.request = pack_snp_derived_key_req(guest_field_select=guest_field_select, vmpl=vmpl)
        self.descriptor: Mapping[str, Any] = {"tee": "sev-snp", "root_key": "vcek",
                                              "guest_field_select": guest_field_select, "vmpl": vmpl}
        self._ioctl: IoctlFn = ioctl or fcntl.ioctl

    def key(self) -> bytes:
        try:
            fd = os.open(self.device, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise SealingError(f"{self.device}: cannot open the SEV-SNP guest device "
                               f"({exc.strerror})") from None
        req = ctypes.create_string_buffer(self.request, len(self.request))
        resp = ctypes.create_string_buffer(SNP_DERIVED_KEY_RESP_SIZE)
        arg = pack_snp_guest_request(ctypes.addressof(req), ctypes.addressof(resp))
        try:
            try:
                self._ioctl(fd, SNP_GET_DERIVED_KEY, arg, True)
            except OSError as exc:
                fw, vmm = parse_snp_guest_request_errors(arg)
                raise SealingError(f"{self.device}: SNP_GET_DERIVED_KEY failed ({exc.strerror}; "
                                   f"firmware error {fw:#x}, VMM error {vmm:#x})") from None
            return parse_snp_derived_key_resp(resp.raw)
        finally:
            os.close(fd)
            ctypes.memset(resp, 0, SNP_DERIVED_KEY_RESP_SIZE)  # the key lives in the result only


class GramineSealKeySource:
    """SGX seal key bound to MRENCLAVE, from Gramine's ``/dev/attestation/keys/_sgx_mrenclave``."""

    kind = TeeKind.SGX

    def __init__(self, root: Path = DEFAULT_GRAMINE_ROOT) -> None:
        self.path = Path(root) / "keys" / GRAMINE_MRENCLAVE_KEY
        self.descriptor: Mapping[str, Any] = {"tee": "sgx", "key": GRAMINE_MRENCLAVE_KEY}

    def key(self) -> bytes:
        try:
            with open(self.path, "rb") as f:
                key = f.read(17)
        except OSError as exc:
            raise SealingError(f"{self.path}: cannot read the SGX seal key ({exc.strerror}); "
                               "run inside gramine-sgx") from None
        if len(key) != 16 or not any(key):
            raise SealingError(f"{self.path}: expected a 16-byte seal key, got {len(key)} bytes")
        return key


@dataclasses.dataclass(frozen=True)
class KeySources:
    """Where the key sources live (tests point these at fakes)."""

    snp_device: Path = DEFAULT_SNP_DEVICE
    gramine_root: Path = DEFAULT_GRAMINE_ROOT
    ioctl: IoctlFn | None = None

    def for_kind(self, kind: TeeKind | None) -> KeySource | None:
        """The key source of a TEE kind, or None where there is none (TDX, SIM, no TEE)."""
        if kind is TeeKind.SEV_SNP:
            return SnpDerivedKeySource(self.snp_device, ioctl=self.ioctl)
        if kind is TeeKind.SGX:
            return GramineSealKeySource(self.gramine_root)
        return None

    def from_descriptor(self, desc: Mapping[str, Any]) -> KeySource:
        """The source a sealed file names.

        Raises:
            SealingError: the descriptor names no source this build knows.
        """
        tee = desc.get("tee")
        if tee == "sev-snp" and desc.get("root_key") == "vcek":
            fields, vmpl = desc.get("guest_field_select"), desc.get("vmpl")
            if isinstance(fields, int) and isinstance(vmpl, int):
                try:
                    return SnpDerivedKeySource(self.snp_device, vmpl=vmpl, guest_field_select=fields,
                                               ioctl=self.ioctl)
                except ValueError:
                    pass
        if tee == "sgx" and desc.get("key") == GRAMINE_MRENCLAVE_KEY:
            return GramineSealKeySource(self.gramine_root)
        raise SealingError(f"sealed with an unknown key source {dict(desc)!r}")


def describe(desc: Mapping[str, Any]) -> str:
    """A short human description of a key source descriptor, for messages."""
    if desc.get("tee") == "sev-snp":
        return f"SEV-SNP derived key (measurement+policy, VMPL {desc.get('vmpl')})"
    if desc.get("tee") == "sgx":
        return "SGX seal key (MRENCLAVE, Gramine)"
    return str(desc.get("tee"))


# ---------------------------------------------------------------- the sealed file


def _aead(hw_key: bytes, purpose: str) -> AESGCM:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown sealing purpose {purpose!r}")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=_KDF_LABEL + purpose.encode()).derive(hw_key)
    return AESGCM(key)


def is_sealed(blob: bytes) -> bool:
    return blob.startswith(MAGIC)


def seal(source: KeySource, purpose: str, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` under ``source``'s key for ``purpose``; returns the file contents.

    Raises:
        SealingError: the key is unavailable.
    """
    desc = json.dumps(dict(source.descriptor), sort_keys=True, separators=(",", ":")).encode()
    if len(desc) > MAX_DESCRIPTOR:
        raise ValueError("key source descriptor too long")
    header = MAGIC + struct.pack(">H", len(desc)) + desc
    nonce = os.urandom(NONCE_SIZE)
    ct = _aead(source.key(), purpose).encrypt(nonce, plaintext, header + purpose.encode())
    return header + nonce + ct


def read_descriptor(blob: bytes) -> tuple[dict[str, Any], int]:
    """The descriptor of a sealed file and the offset of its nonce.

    Raises:
        SealingError: not a sealed file of this version, or a damaged header.
    """
    if not is_sealed(blob):
        raise SealingError("not a sealed file (unknown format or version)")
    pos = len(MAGIC)
    if len(blob) < pos + 2:
        raise SealingError("sealed file truncated")
    n, = struct.unpack_from(">H", blob, pos)
    pos += 2
    if n > MAX_DESCRIPTOR or len(blob) < pos + n + NONCE_SIZE + 16:
        raise SealingError("sealed file truncated or damaged")
    try:
        desc = json.loads(blob[pos:pos + n])
    except ValueError:
        raise SealingError("sealed file: damaged key source descriptor") from None
    if not isinstance(desc, dict):
        raise SealingError("sealed file: damaged key source descriptor")
    return desc, pos + n


def unseal(blob: bytes, purpose: str, sources: KeySources | None = None) -> bytes:
    """Open a sealed file with the key source it names.

    Raises:
        SealingError: damaged file, key source unavailable here, or the key does not open it
            (the measurement, guest policy or chip changed, or the file was altered).
    """
    desc, pos = read_descriptor(blob)
    source = (sources or KeySources()).from_descriptor(desc)
    nonce, ct = blob[pos:pos + NONCE_SIZE], blob[pos + NONCE_SIZE:]
    try:
        return _aead(source.key(), purpose).decrypt(nonce, ct, blob[:pos] + purpose.encode())
    except InvalidTag:
        raise SealingError(
            f"sealed to a {describe(desc)} that this enclave does not have: the measurement or "
            "launch policy changed, this is another machine, or the file was altered") from None


"""Keys sealed to the measurement (issue 19, item 5): the SNP_GET_DERIVED_KEY ioctl layout
against <linux/sev-guest.h>, the SEV-SNP and Gramine key sources against fake devices, the
sealed file format, and the data dir's sealed identity and storage secret.

There is no TEE here: the fake ``/dev/sev-guest`` is an ioctl function that reads the request
through the pointers in ``struct snp_guest_request_ioctl`` and writes a response derived from
a fake chip secret, the fake launch MEASUREMENT and POLICY, and the request's fields, as the
firmware mixes them.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import hmac
import os
import stat
import struct

import pytest

from node.attestation import sealing
from node.attestation.base import TeeKind
from node.attestation.sealing import (
    DEFAULT_FIELDS,
    FIELD_GUEST_POLICY,
    FIELD_MEASUREMENT,
    MAGIC,
    SNP_DERIVED_KEY_REQ,
    SNP_GET_DERIVED_KEY,
    SNP_GET_REPORT,
    SNP_GUEST_REQUEST_IOCTL,
    GramineSealKeySource,
    KeySources,
    SealingError,
    SnpDerivedKeySource,
    pack_snp_derived_key_req,
    pack_snp_guest_request,
    parse_snp_derived_key_resp,
    parse_snp_guest_request_errors,
    seal,
    unseal,
)
from node.config import NodeConfig
from node.datadir import DataDir, DataDirError

# ---------------------------------------------------------------- the uapi layout


class CSnpDerivedKeyReq(ctypes.Structure):
    """<linux/sev-guest.h> struct snp_derived_key_req, laid out by the C ABI."""

    _fields_ = [("root_key_select", ctypes.c_uint32), ("rsvd", ctypes.c_uint32),
                ("guest_field_select", ctypes.c_uint64), ("vmpl", ctypes.c_uint32),
                ("guest_svn", ctypes.c_uint32), ("tcb_version", ctypes.c_uint64)]


class CSnpGuestRequestIoctl(ctypes.Structure):
    """<linux/sev-guest.h> struct snp_guest_request_ioctl (exitinfo2 = the fw/vmm error union)."""

    _fields_ = [("msg_version", ctypes.c_uint8), ("req_data", ctypes.c_uint64),
                ("resp_data", ctypes.c_uint64), ("exitinfo2", ctypes.c_uint64)]


def test_derived_key_request_matches_the_c_layout():
    assert SNP_DERIVED_KEY_REQ.size == ctypes.sizeof(CSnpDerivedKeyReq) == 32
    for name, off in (("root_key_select", 0), ("rsvd", 4), ("guest_field_select", 8), ("vmpl", 16),
                      ("guest_svn", 20), ("tcb_version", 24)):
        assert getattr(CSnpDerivedKeyReq, name).offset == off
    raw = pack_snp_derived_key_req(root_key_select=1, guest_field_select=0x2A, vmpl=3,
                                   guest_svn=0x11223344, tcb_version=0x0102030405060708)
    c = CSnpDerivedKeyReq.from_buffer_copy(raw)
    assert (c.root_key_select, c.rsvd, c.guest_field_select, c.vmpl, c.guest_svn, c.tcb_version) == \
        (1, 0, 0x2A, 3, 0x11223344, 0x0102030405060708)
    # Our default binds the measurement and the guest policy, at VMPL 0, to the VCEK root.
    d = CSnpDerivedKeyReq.from_buffer_copy(pack_snp_derived_key_req())
    assert d.guest_field_select == FIELD_MEASUREMENT | FIELD_GUEST_POLICY == 0b1001
    assert (d.root_key_select, d.vmpl, d.guest_svn, d.tcb_version) == (0, 0, 0, 0)


def test_guest_request_ioctl_matches_the_c_layout_and_numbers():
    assert SNP_GUEST_REQUEST_IOCTL.size == ctypes.sizeof(CSnpGuestRequestIoctl) == 32
    assert [getattr(CSnpGuestRequestIoctl, f).offset for f in
            ("msg_version", "req_data", "resp_data", "exitinfo2")] == [0, 8, 16, 24]
    raw = pack_snp_guest_request(0x1000, 0x2000)
    c = CSnpGuestRequestIoctl.from_buffer_copy(raw)
    assert (c.msg_version, c.req_data, c.resp_data, c.exitinfo2) == (1, 0x1000, 0x2000, 0)
    struct.pack_into("<II", raw, 24, 0x16, 0x2)  # fw_error low half, vmm_error high half
    assert parse_snp_guest_request_errors(raw) == (0x16, 0x2)
    # _IOWR('S', 0 / 1, struct snp_guest_request_ioctl) as the kernel defines them.
    assert SNP_GET_REPORT == 0xC0205300 and SNP_GET_DERIVED_KEY == 0xC0205301


@pytest.mark.parametrize("kw", [{"root_key_select": 2}, {"guest_field_select": 1 << 6},
                                {"vmpl": 4}, {"guest_svn": -1}])
def test_bad_request_fields_are_local_errors(kw):
    with pytest.raises(ValueError):
        pack_snp_derived_key_req(**kw)


def test_derived_key_response_parsing():
    good = struct.pack("<I", 0) + bytes(28) + bytes(range(1, 33))
    assert parse_snp_derived_key_resp(good) == bytes(range(1, 33))
    with pytest.raises(SealingError, match="INVALID_KEY_SEL"):
        parse_snp_derived_key_resp(struct.pack("<I", 0x16) + bytes(60))
    with pytest.raises(SealingError, match="all-zero"):
        parse_snp_derived_key_resp(bytes(64))
    with pytest.raises(SealingError, match="expected 64"):
        parse_snp_derived_key_resp(good[:63])


# ---------------------------------------------------------------- a fake /dev/sev-guest


class FakeSevGuest:
    """The firmware side of MSG_KEY_REQ for one chip and one launch."""

    def __init__(self, tmp_path, *, chip: bytes = b"chip-A", measurement: bytes = b"\x01" * 48,
                 policy: int = 0x30000) -> None:
        self.device = tmp_path / "sev-guest"
        self.device.write_bytes(b"")
        self.chip, self.measurement, self.policy = chip, measurement, policy
        self.calls = 0
        self.fail_with: tuple[int, int] | None = None

    def ioctl(self, fd: int, request: int, arg: bytearray, mutate: bool) -> int:
        assert request == SNP_GET_DERIVED_KEY and mutate and len(arg) == 32
        self.calls += 1
        version, req_addr, resp_addr, _ = SNP_GUEST_REQUEST_IOCTL.unpack(bytes(arg))
        assert version == 1
        root, rsvd, fields, vmpl, svn, tcb = SNP_DERIVED_KEY_REQ.unpack(ctypes.string_at(req_addr, 32))
        assert rsvd == 0
        if self.fail_with:
            struct.pack_into("<II", arg, 24, *self.fail_with)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        mix = [self.chip, root.to_bytes(4, "little"), vmpl.to_bytes(4, "little"),
               fields.to_bytes(8, "little")]
        if fields & FIELD_MEASUREMENT:
            mix.append(self.measurement)
        if fields & FIELD_GUEST_POLICY:
            mix.append(self.policy.to_bytes(8, "little"))
        if fields & sealing.FIELD_GUEST_SVN:
            mix.append(svn.to_bytes(4, "little"))
        if fields & sealing.FIELD_TCB_VERSION:
            mix.append(tcb.to_bytes(8, "little"))
        key = hmac.new(b"fake-firmware", b"|".join(mix), hashlib.sha256).digest()
        resp = struct.pack("<I", 0) + bytes(28) + key
        ctypes.memmove(resp_addr, resp, 64)
        struct.pack_into("<Q", arg, 24, 0)
        return 0

    def sources(self) -> KeySources:
        return KeySources(snp_device=self.device, ioctl=self.ioctl)


def test_snp_source_end_to_end_through_the_fake_device(tmp_path):
    dev = FakeSevGuest(tmp_path)
    src = SnpDerivedKeySource(dev.device, ioctl=dev.ioctl)
    k1, k2 = src.key(), src.key()
    assert len(k1) == 32 and k1 == k2 and dev.calls == 2
    # Another VMPL, another launch measurement, a debug policy, another chip: other keys.
    assert SnpDerivedKeySource(dev.device, vmpl=1, ioctl=dev.ioctl).key() != k1
    changes = ({"measurement": b"\x02" * 48}, {"policy": 0x30000 | (1 << 19)}, {"chip": b"chip-B"})
    for i, change in enumerate(changes):
        (tmp_path / str(i)).mkdir()
        other = FakeSevGuest(tmp_path / str(i), **change)  # type: ignore[arg-type]
        assert SnpDerivedKeySource(other.device, ioctl=other.ioctl).key() != k1


def test_snp_source_reports_firmware_errors_and_a_missing_device(tmp_path):
    dev = FakeSevGuest(tmp_path)
    dev.fail_with = (0x16, 0)
    with pytest.raises(SealingError, match=r"SNP_GET_DERIVED_KEY failed.*firmware error 0x16"):
        SnpDerivedKeySource(dev.device, ioctl=dev.ioctl).key()
    with pytest.raises(SealingError, match="cannot open the SEV-SNP guest device"):
        SnpDerivedKeySource(tmp_path / "absent").key()


# ---------------------------------------------------------------- Gramine


def gramine_tree(root, key: bytes = b"\x5a" * 16):
    (root / "keys").mkdir(parents=True, exist_ok=True)
    (root / "keys" / "_sgx_mrenclave").write_bytes(key)
    return root


def test_gramine_seal_key(tmp_path):
    root = gramine_tree(tmp_path / "attestation")
    src = GramineSealKeySource(root)
    assert src.key() == b"\x5a" * 16
    blob = seal(src, "identity", b"secret")
    assert unseal(blob, "identity", KeySources(gramine_root=root)) == b"secret"
    # Another MRENCLAVE (another build of the enclave) has another seal key.
    gramine_tree(root, b"\xa5" * 16)
    with pytest.raises(SealingError, match="measurement"):
        unseal(blob, "identity", KeySources(gramine_root=root))
    gramine_tree(root, b"\x01" * 15)
    with pytest.raises(SealingError, match="16-byte"):
        src.key()
    with pytest.raises(SealingError, match="inside gramine-sgx"):
        GramineSealKeySource(tmp_path / "nothing").key()


# ---------------------------------------------------------------- the sealed file


def test_sealed_file_format_and_integrity(tmp_path):
    dev = FakeSevGuest(tmp_path)
    src = SnpDerivedKeySource(dev.device, ioctl=dev.ioctl)
    blob = seal(src, "identity", b"the identity")
    assert blob.startswith(MAGIC) and b"the identity" not in blob
    desc, _ = sealing.read_descriptor(blob)
    assert desc == {"tee": "sev-snp", "root_key": "vcek", "guest_field_select": DEFAULT_FIELDS, "vmpl": 0}
    assert unseal(blob, "identity", dev.sources()) == b"the identity"
    assert seal(src, "identity", b"the identity") != blob  # fresh nonce
    # The purpose is bound: a storage secret cannot be passed off as an identity.
    with pytest.raises(SealingError):
        unseal(blob, "storage", dev.sources())
    # Every byte after the header is authenticated ...
    for i in (len(blob) - 1, len(blob) - 20):
        bad = bytearray(blob)
        bad[i] ^= 1
        with pytest.raises(SealingError, match="altered"):
            unseal(bytes(bad), "identity", dev.sources())
    # ... and so is the descriptor: naming a weaker derivation does not open it.
    swapped = blob.replace(b'"vmpl":0', b'"vmpl":1')
    with pytest.raises(SealingError):
        unseal(swapped, "identity", dev.sources())
    # Even a descriptor that derives the same key (same fields, other JSON spelling) is bound.
    desc_bytes = blob[len(MAGIC) + 2:len(MAGIC) + 2 + struct.unpack_from(">H", blob, len(MAGIC))[0]]
    respelled = desc_bytes.replace(b",", b", ", 1)
    forged = MAGIC + struct.pack(">H", len(respelled)) + respelled + blob[len(MAGIC) + 2 + len(desc_bytes):]
    assert sealing.read_descriptor(forged)[0] == desc
    with pytest.raises(SealingError, match="altered"):
        unseal(forged, "identity", dev.sources())
    with pytest.raises(SealingError, match="not a sealed file"):
        unseal(b"-----BEGIN PRIVATE KEY-----", "identity", dev.sources())
    with pytest.raises(SealingError, match="truncated"):
        unseal(blob[:len(MAGIC) + 5], "identity", dev.sources())
    with pytest.raises(SealingError, match="unknown key source"):
        unseal(MAGIC + b"\x00\x0e" + b'{"tee":"tdx"}\n' + bytes(40), "identity", dev.sources())


def test_key_sources_per_tee_kind(tmp_path):
    ks = KeySources(snp_device=tmp_path / "d", gramine_root=tmp_path / "g")
    assert isinstance(ks.for_kind(TeeKind.SEV_SNP), SnpDerivedKeySource)
    assert isinstance(ks.for_kind(TeeKind.SGX), GramineSealKeySource)
    # TDX has no sealing key; the simulated TEE's would be as public as its root key.
    assert ks.for_kind(TeeKind.TDX) is None and ks.for_kind(TeeKind.SIM) is None
    assert ks.for_kind(None) is None


# ---------------------------------------------------------------- the data dir


def snp_config() -> NodeConfig:
    import dataclasses

    cfg = NodeConfig.lan()
    return dataclasses.replace(cfg, attestation=dataclasses.replace(cfg.attestation, tee="sev-snp"))


def test_data_dir_seals_identity_and_storage_secret_to_the_measurement(tmp_path):
    dev = FakeSevGuest(tmp_path)
    dd = DataDir(tmp_path / "d", key_sources=dev.sources())
    key = dd.init(snp_config())
    raw = dd.identity_path.read_bytes()
    assert raw.startswith(MAGIC) and b"PRIVATE KEY" not in raw
    assert key.private_bytes_raw() not in raw
    for p in (dd.identity_path, dd.storage_key_path):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert dd.load_identity().private_bytes_raw() == key.private_bytes_raw()
    secret = dd.storage_secret()
    assert secret is not None and len(secret) == 32 and dd.storage_secret() == secret
    assert "sealed to this enclave: SEV-SNP derived key" in dd.identity_note("sev-snp")


def test_copied_data_dir_is_useless_elsewhere_and_a_new_measurement_is_refused(tmp_path):
    """The attack: read the data dir, then use its identity (to relay challenges and pass
    attestation) and its storage secret (to unseal the shards) from another machine, or from
    a modified build on the same machine."""
    import shutil

    dev = FakeSevGuest(tmp_path)
    dd = DataDir(tmp_path / "d", key_sources=dev.sources())
    dd.init(snp_config())
    shutil.copytree(dd.path, tmp_path / "stolen")
    before = dd.identity_path.read_bytes()
    for name, change in (("other-chip", {"chip": b"chip-B"}),
                         ("patched-build", {"measurement": b"\x66" * 48})):
        (tmp_path / name).mkdir()
        thief = DataDir(tmp_path / "stolen", key_sources=FakeSevGuest(tmp_path / name, **change).sources())
        with pytest.raises(DataDirError, match=r"identity\.key: cannot unseal the identity: .*measurement "
                                               r"or launch policy changed.*left untouched"):
            thief.load_identity()
        with pytest.raises(DataDirError, match=r"storage\.key: cannot unseal"):
            thief.storage_secret()
    assert dd.identity_path.read_bytes() == before
    # Without the device at all: refused, and says which key it needs.
    gone = DataDir(tmp_path / "stolen", key_sources=KeySources(snp_device=tmp_path / "none"))
    with pytest.raises(DataDirError, match="SEV-SNP guest device"):
        gone.load_identity()


def test_data_dir_sealed_under_gramine(tmp_path):
    root = gramine_tree(tmp_path / "attestation")
    import dataclasses

    cfg = NodeConfig.lan()
    cfg = dataclasses.replace(cfg, attestation=dataclasses.replace(cfg.attestation, tee="sgx"))
    dd = DataDir(tmp_path / "d", key_sources=KeySources(gramine_root=root))
    key = dd.init(cfg)
    assert dd.load_identity().private_bytes_raw() == key.private_bytes_raw()
    assert "SGX seal key" in dd.identity_note("sgx")


@pytest.mark.parametrize("tee", ["sim", "tdx"])
def test_tees_without_a_sealing_key_keep_a_plaintext_identity_with_a_loud_note(tmp_path, tee):
    import dataclasses

    cfg = NodeConfig.local_test() if tee == "sim" else NodeConfig.lan()
    cfg = dataclasses.replace(cfg, attestation=dataclasses.replace(cfg.attestation, tee=tee))
    dd = DataDir(tmp_path / "d")
    dd.path.mkdir()
    dd.storage_key_path.write_bytes(b"left by an init that crashed")
    key = dd.init(cfg)
    assert dd.identity_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert dd.storage_secret() is None and not dd.storage_key_path.exists()
    assert dd.load_identity().private_bytes_raw() == key.private_bytes_raw()
    note = dd.identity_note(tee)
    assert "PLAINTEXT" in note and "impersonate" in note and tee in note


def test_init_refuses_when_the_sealing_key_is_unavailable(tmp_path):
    dd = DataDir(tmp_path / "d", key_sources=KeySources(snp_device=tmp_path / "none"))
    with pytest.raises(DataDirError, match="cannot seal the new identity"):
        dd.init(snp_config())
    assert not dd.identity_path.exists()


def test_sealed_storage_secret_with_open_permissions_is_refused(tmp_path):
    dev = FakeSevGuest(tmp_path)
    dd = DataDir(tmp_path / "d", key_sources=dev.sources())
    dd.init(snp_config())
    os.chmod(dd.storage_key_path, 0o644)
    with pytest.raises(DataDirError, match="too open"):
        dd.storage_secret()

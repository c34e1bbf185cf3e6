"""Both key backends behind one interface: the same tests for files and a SoftHSM2 token."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from libp2p.peer.id import ID

from consensus.manager import check_decision, sign_decision
from node.attestation.score import sign_record, verify_record
from node.gossip import IdentitySigner
from node.keys.base import IdentityKey, KeyProviderError, KeyUnavailable
from node.keys.pkcs11 import Pkcs11Keys, TokenEd25519Key, mechanism_problem
from node.shards.manifest import raw_public_key
from overlay.host import libp2p_keypair, peer_id_of, public_key_of_peer
from overlay.records import Ed25519Verifier
from tests.keys.conftest import make_provider


def test_identity_signs_ed25519_that_verifies_with_its_public_key(provider):
    key = provider.identity
    assert isinstance(key, IdentityKey)
    sig = key.sign(b"hello")
    assert len(sig) == 64
    key.public_key().verify(sig, b"hello")  # raises if it does not verify
    if provider.backend == "pkcs11":
        assert isinstance(key, TokenEd25519Key) and not hasattr(key, "private_bytes")


def test_libp2p_key_pair_signs_through_the_provider_with_the_same_peer_id(provider):
    kp = libp2p_keypair(provider.identity)
    raw = provider.identity.public_key().public_bytes_raw()
    assert kp.public_key.to_bytes() == raw
    pid = peer_id_of(provider.identity)
    assert public_key_of_peer(pid) == raw
    assert ID.from_pubkey(kp.public_key).to_base58() == pid
    sig = kp.private_key.sign(b"noise static key")
    assert kp.public_key.verify(b"noise static key", sig)


def test_records_and_decisions_signed_by_the_provider_verify_everywhere(provider):
    key = provider.identity
    raw = key.public_key().public_bytes_raw()
    pid = peer_id_of(key)
    # a gossip record
    rec = IdentitySigner(pid, key).sign("score", pid, 1, 10.0, 20.0, b"payload")
    assert Ed25519Verifier(public_key_of_peer)(rec)
    # a score record (attestation)
    sr = sign_record(key, subject=pid, score=90, kind="sim", verdict="ok", evidence_hash=bytes(32),
                     issued_at=10.0, ttl_s=60.0)
    assert sr.issuer == raw and verify_record(sr)
    # a manager decision
    d = sign_decision(key.sign, pid, 3, 7, b"command")

    def verify(pub: bytes, msg: bytes, sig: bytes) -> bool:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
        except Exception:
            return False
        return True

    assert check_decision(d, entry_term=3, entry_data=b"command", manager_of_term=lambda t: pid,
                          public_key_of=lambda p: raw if p == pid else None, verify=verify) is None
    # the data owner's manifest key
    assert raw_public_key(key) == raw


def test_seal_round_trips_and_binds_the_purpose(provider):
    secret = os.urandom(32)
    blob = provider.seal("storage", secret)
    assert secret not in blob
    assert provider.unseal("storage", blob) == secret
    with pytest.raises(KeyProviderError, match="does not open"):
        provider.unseal("identity", blob)
    with pytest.raises(KeyProviderError):
        provider.unseal("storage", blob[:10])
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(KeyProviderError, match="does not open"):
        provider.unseal("storage", tampered)


@pytest.mark.parametrize("backend", ["file", "pkcs11"])
def test_another_key_does_not_open_a_sealed_secret(backend, request):
    if backend == "pkcs11":  # both tokens exist before the module is loaded, as on a real host
        request.getfixturevalue("hsm").init_token("b")
    a = make_provider(backend, request, "a")
    b = make_provider(backend, request, "b")
    blob = a.seal("storage", b"k" * 32)
    with pytest.raises(KeyProviderError, match="does not open"):
        b.unseal("storage", blob)


def test_status_says_backend_and_availability(provider):
    st = provider.status()
    assert st["backend"] == provider.backend and st["available"] is True


# ------------------------------------------------------------------ PKCS#11 only
def test_init_finds_the_keys_it_made_and_run_finds_them_again(hsm, opened):
    t = hsm.init_token("n")
    made = Pkcs11Keys(t, create=True)
    opened.append(made)
    pub = made.identity.public_bytes_raw()
    made.close()
    again = Pkcs11Keys(t)  # run: find only
    opened.append(again)
    assert again.identity.public_bytes_raw() == pub


def test_keys_are_made_sensitive_and_not_extractable(hsm, opened):
    from pkcs11 import Attribute

    k = Pkcs11Keys(hsm.init_token("n"), create=True)
    opened.append(k)
    for obj in (k._priv, k._aes):
        assert obj[Attribute.SENSITIVE] is True and obj[Attribute.EXTRACTABLE] is False


@pytest.mark.parametrize("change, why", [
    ("pin", "wrong PIN"),
    ("token", "no token labelled 'other'"),
    ("module", "no such file"),
    ("pin_file", "cannot read the PIN file"),
])
def test_bad_settings_are_refused_in_one_line(hsm, opened, tmp_path, change, why):
    import dataclasses

    t = hsm.init_token("n", pin="1234")
    if change == "pin":
        bad = tmp_path / "bad.pin"
        bad.write_text("9999\n")
        t = dataclasses.replace(t, pin_file=str(bad))
    elif change == "token":
        t = dataclasses.replace(t, token="other")
    elif change == "module":
        t = dataclasses.replace(t, module=str(tmp_path / "nope.so"))
    else:
        t = dataclasses.replace(t, pin_file=str(tmp_path / "missing.pin"))
    with pytest.raises(KeyProviderError, match=why) as exc:
        opened.append(Pkcs11Keys(t, create=True))
    assert "\n" not in str(exc.value) and "1234" not in str(exc.value)


def test_a_module_that_is_not_pkcs11_does_not_load(hsm, tmp_path):
    import dataclasses

    junk = tmp_path / "junk.so"
    junk.write_bytes(b"not an ELF file")
    with pytest.raises(KeyProviderError, match="does not load"):
        Pkcs11Keys(dataclasses.replace(hsm.init_token("n"), module=str(junk)))


def test_missing_objects_are_refused_and_nothing_is_created(hsm, opened):
    from pkcs11 import ObjectClass

    t = hsm.init_token("empty")
    with pytest.raises(KeyProviderError, match="holds no Ed25519 key pair labelled"):
        opened.append(Pkcs11Keys(t))
    made = Pkcs11Keys(t, create=True)  # the token is still empty: init makes both keys now
    opened.append(made)
    assert len(list(made._session.get_objects({}))) == 3
    assert made._session.get_key(object_class=ObjectClass.SECRET_KEY) is not None


def test_ambiguous_or_half_missing_keys_are_refused_not_guessed_or_remade(hsm, opened):
    """Two AES keys under the sealing label: refused, naming them; an identity whose public
    half is gone: refused (not a second key pair made beside the private key)."""
    from pkcs11 import KeyType, ObjectClass

    t = hsm.init_token("twice")
    made = Pkcs11Keys(t, create=True)
    session = made._session
    session.generate_key(KeyType.AES, 256, label=t.sealing_label, store=True)
    made.close()
    with pytest.raises(KeyProviderError, match="several objects for the AES key labelled"):
        opened.append(Pkcs11Keys(t))

    t = hsm.init_token("half")
    made = Pkcs11Keys(t, create=True)
    made._session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=t.identity_label).destroy()
    made.close()
    with pytest.raises(KeyProviderError, match="holds no Ed25519 key pair labelled"):
        opened.append(Pkcs11Keys(t, create=True))


def test_pin_from_the_environment(hsm, opened, monkeypatch):
    import dataclasses

    t = dataclasses.replace(hsm.init_token("n", pin="4321"), pin_file="")
    monkeypatch.delenv(t.pin_env, raising=False)
    with pytest.raises(KeyProviderError, match="no PIN"):
        Pkcs11Keys(t, create=True)
    monkeypatch.setenv(t.pin_env, "4321")
    k = Pkcs11Keys(t, create=True)
    opened.append(k)
    assert k.status()["available"]


def test_a_token_without_eddsa_is_refused_naming_the_mechanism():
    from pkcs11 import Mechanism

    all_ = {Mechanism.EDDSA, Mechanism.EC_EDWARDS_KEY_PAIR_GEN, Mechanism.AES_GCM, Mechanism.AES_KEY_GEN}
    assert mechanism_problem(all_, create=True, sealing=True) is None
    assert "CKM_EDDSA missing" in mechanism_problem(all_ - {Mechanism.EDDSA}, create=False, sealing=True)
    p = mechanism_problem(all_ - {Mechanism.EC_EDWARDS_KEY_PAIR_GEN}, create=True, sealing=True)
    assert "cannot sign Ed25519" in p and "CKM_EC_EDWARDS_KEY_PAIR_GEN" in p
    assert "CKM_AES_GCM" in mechanism_problem(all_ - {Mechanism.AES_GCM}, create=False, sealing=True)


def test_token_goes_away_signing_stops_and_it_recovers_with_the_same_key(hsm, opened):
    k = Pkcs11Keys(hsm.init_token("n"), create=True)
    opened.append(k)
    pub = k.identity.public_bytes_raw()
    away = hsm.tokens.with_name("tokens.away")
    hsm.tokens.rename(away)
    with pytest.raises(KeyUnavailable):
        k.identity.sign(b"x")
    assert k.status()["available"] is False and k.status()["losses"] == 1
    with pytest.raises(KeyUnavailable):  # stays stopped, no retry inside sign
        k.identity.sign(b"x")
    assert k.check() is False
    away.rename(hsm.tokens)
    assert k.check() is True
    st = k.status()
    assert st["available"] and st["recoveries"] == 1 and st["reason"] == ""
    k.identity.public_key().verify(k.identity.sign(b"back"), b"back")
    assert k.identity.public_bytes_raw() == pub


def test_a_different_token_under_the_same_label_is_not_taken_back(hsm, opened):
    k = Pkcs11Keys(hsm.init_token("n"), create=True)
    opened.append(k)
    hsm.tokens.rename(hsm.tokens.with_name("tokens.old"))
    hsm.tokens.mkdir()
    t = hsm.init_token("n")  # same label, same PIN, no keys yet
    with pytest.raises(KeyUnavailable):
        k.identity.sign(b"x")
    assert k.check() is False
    assert "holds no Ed25519 key pair" in k.status()["reason"]
    other = Pkcs11Keys(t, create=True)  # now other keys under our labels
    other.close()
    assert k.check() is False
    assert "another identity key" in k.status()["reason"]


def test_file_backend_key_is_the_cryptography_key():
    from node.keys.files import FileKeys

    key = Ed25519PrivateKey.generate()
    fk = FileKeys(key)
    assert fk.identity is key and fk.check() and fk.backend == "file"

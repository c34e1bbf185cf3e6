"""``init --keys pkcs11`` and ``run`` with a token: exit codes, one-line reasons, nothing changed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from node.cli import main


def _snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} \
        if root.exists() else None


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("enclave-swarm: ") and err.count("\n") == 1, err
    return err


def test_init_with_a_token_and_with_the_uri_form(tmp_path, hsm, capsys):
    t = hsm.init_token("node-a")
    assert main(["init", "--data-dir", str(tmp_path / "a"), "--keys", "pkcs11", "--token", "node-a",
                 "--pkcs11-module", hsm.module, "--pin-file", t.pin_file]) == 0
    out = capsys.readouterr().out
    assert "keys are in token 'node-a'" in out and "peer id 12D3KooW" in out
    assert not (tmp_path / "a" / "identity.key").exists()
    # the URI form, PIN from the environment, finding the keys made above (init "creates or finds")
    os.environ["ENCLAVE_SWARM_TEST_PIN"] = "1234"
    try:
        uri = f"pkcs11:token=node-a;object=enclave-swarm%20identity?module-path={hsm.module}" \
              "&pin-source=env:ENCLAVE_SWARM_TEST_PIN"
        assert main(["init", "--data-dir", str(tmp_path / "b"), "--keys", uri]) == 0
    finally:
        del os.environ["ENCLAVE_SWARM_TEST_PIN"]
    out_b = capsys.readouterr().out
    pid = [ln for ln in out.splitlines() if ln.startswith("peer id")]
    assert pid and pid[0] in out_b  # the same key in the token: the same peer id
    assert 'pin_env = "ENCLAVE_SWARM_TEST_PIN"' in (tmp_path / "b" / "keys.toml").read_text()


@pytest.mark.parametrize("case, code, why", [
    ("wrong-pin", 1, "wrong PIN"),
    ("no-token", 1, "no token labelled 'nope'"),
    ("bad-module", 1, "no such file"),
    ("no-pin-file", 1, "cannot read the PIN file"),
    ("keys-junk", 2, "--keys must be"),
    ("token-without-keys", 2, "need --keys pkcs11"),
    ("pin-value", 2, "pin-value is refused"),
    ("no-token-label", 2, "needs --token"),
])
def test_init_refuses_bad_input_and_changes_nothing(tmp_path, hsm, capsys, case, code, why):
    t = hsm.init_token("node-a", pin="1234")
    bad = tmp_path / "bad.pin"
    bad.write_text("0000\n")
    dd = tmp_path / "dd"
    base = ["init", "--data-dir", str(dd)]
    argv = {
        "wrong-pin": ["--keys", "pkcs11", "--token", "node-a", "--pin-file", str(bad)],
        "no-token": ["--keys", "pkcs11", "--token", "nope", "--pin-file", t.pin_file],
        "bad-module": ["--keys", "pkcs11", "--token", "node-a", "--pin-file", t.pin_file,
                       "--pkcs11-module", str(tmp_path / "x.so")],
        "no-pin-file": ["--keys", "pkcs11", "--token", "node-a", "--pin-file", str(tmp_path / "none")],
        "keys-junk": ["--keys", "hsm"],
        "token-without-keys": ["--token", "node-a"],
        "pin-value": ["--keys", "pkcs11:token=node-a?pin-value=1234"],
        "no-token-label": ["--keys", "pkcs11", "--pin-file", t.pin_file],
    }[case]
    assert main(base + argv) == code
    err = _one_line(capsys)
    assert why in err and "1234" not in err.replace("pin-value=1234", "")
    assert not dd.exists()


def _run(dd, env, timeout=60):
    return subprocess.run([sys.executable, "-m", "node.cli", "run", "--data-dir", str(dd), "--listen",
                           "/ip4/127.0.0.1/tcp/0", "--tee", "sim"], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **env})


@pytest.mark.process
def test_run_refuses_a_wrong_pin_a_missing_token_object_or_module_and_changes_nothing(tmp_path, hsm):
    t = hsm.init_token("node-a", pin="1234")
    dd = tmp_path / "dd"
    assert main(["init", "--data-dir", str(dd), "--keys", "pkcs11", "--token", "node-a",
                 "--pin-file", t.pin_file]) == 0
    keys_toml = (dd / "keys.toml").read_text()
    before = _snapshot(dd)
    pin = t.pin_file

    def check(why: str) -> None:
        r = _run(dd, hsm.env())
        assert r.returncode == 1, r.stderr
        last = [ln for ln in r.stderr.splitlines() if ln.startswith("enclave-swarm: ")]
        assert len(last) == 1 and why in last[0], r.stderr
        assert "1234" not in r.stderr
        (dd / "keys.toml").write_text(keys_toml)
        assert _snapshot(dd) == before

    Path(pin).write_text("9999\n")
    check("wrong PIN")
    Path(pin).write_text("1234\n")
    (dd / "keys.toml").write_text(keys_toml.replace('token = "node-a"', 'token = "gone"'))
    check("no token labelled 'gone'")
    (dd / "keys.toml").write_text(keys_toml.replace('identity_label = "enclave-swarm identity"',
                                                    'identity_label = "missing"'))
    check("holds no Ed25519 key pair labelled 'missing'")
    (dd / "keys.toml").write_text(keys_toml.replace(hsm.module, str(tmp_path / "nope.so")))
    check("no such file")
    (dd / "keys.toml").write_text(keys_toml.replace('backend = "pkcs11"', 'backend = "vault"'))
    check("backend must be one of")
    hsm.tokens.rename(hsm.tokens.with_name("tokens.away"))  # the token store is gone
    check("cannot initialise (GeneralError): is its token store there?")


def test_federation_owner_key_in_a_token_signs_dissolve_orders_that_verify(tmp_path, hsm, capsys):
    from cryptography.hazmat.primitives import serialization

    from node.manager_checks import check_dissolve_order
    from node.manager_cli import load_owner_private_key
    from node.manager_wire import DissolveOrder, dissolve_payload

    t = hsm.init_token("owner")
    uri = f"pkcs11:token=owner;object=federation-owner?module-path={hsm.module}&pin-source=file:{t.pin_file}"
    pub = tmp_path / "federation-owner.pub"
    assert main(["manager", "owner-key", "--out", uri, "--pub", str(pub)]) == 0
    assert "owner key in token 'owner'" in capsys.readouterr().out
    owner_pub = serialization.load_pem_public_key(pub.read_bytes())
    key = load_owner_private_key(uri)
    fed = "12D3KooWBkYR2uQPvvExzCuDtmggpsiN3YbQL4C6rQbxHmjCMx63"
    assert not hasattr(key, "private_bytes")  # it signs in the token
    order = DissolveOrder(fed, 1000, key.sign(dissolve_payload(fed, 1000)))
    assert check_dissolve_order(order, owner_pub, fed, now=1000) is None
    key.provider.close()
    # a wrong object name in the URI: exit 1, one line
    bad = uri.replace("object=federation-owner", "object=nobody")
    assert main(["dissolve", "--owner-key", bad, "--data-dir", str(tmp_path / "dd")]) == 1
    assert "holds no Ed25519 key pair labelled 'nobody'" in _one_line(capsys)


def test_demo_token_node_made_in_softhsm_or_file_keys_saying_why(tmp_path, hsm, monkeypatch):
    import io

    from rich.console import Console

    import node.keys.softhsm as softhsm_mod
    from node.demo import _token_node

    out = io.StringIO()
    env = _token_node(tmp_path / "demo", "node1", Console(file=out, width=200))
    assert env is not None and env["SOFTHSM2_CONF"].startswith(str(tmp_path))
    assert "node1 keeps its keys in SoftHSM2 token 'node1'" in out.getvalue()
    assert (tmp_path / "demo" / "node1" / "keys.toml").exists()
    # a machine without SoftHSM2: file keys, and the demo says why
    monkeypatch.setattr(softhsm_mod, "softhsm_missing", lambda: "softhsm2-util is not installed")
    out = io.StringIO()
    assert _token_node(tmp_path / "demo2", "node1", Console(file=out, width=200)) is None
    assert "node1 keeps file keys like the others: softhsm2-util is not installed" in out.getvalue()

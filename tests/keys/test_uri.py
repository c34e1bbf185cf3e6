"""RFC 7512 PKCS#11 URIs: parse, format, refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.keys.base import KeyProviderError
from node.keys.config import token_config_from_uri
from node.keys.uri import MAX_URI_CHARS, Pkcs11Uri, UriError, parse_uri


def test_parse_the_rfc_form_with_module_and_pin_source():
    u = parse_uri("pkcs11:token=node%20a;object=enclave-swarm%20identity;type=private;id=%01%02"
                  "?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/pin")
    assert (u.token, u.object, u.type, u.id) == ("node a", "enclave-swarm identity", "private", b"\x01\x02")
    assert u.module_path == "/usr/lib/softhsm/libsofthsm2.so" and u.pin_source == "file:/etc/pin"


@pytest.mark.parametrize("text, why", [
    ("pkcs11:token=a?pin-value=1234", "pin-value is refused"),
    ("pkcs11:token=a;tokn=b", "unknown path attribute"),
    ("pkcs11:token=a;token=b", "given twice"),
    ("pkcs11:type=banana", "type must be"),
    ("pkcs11:slot-id=x", "slot-id"),
    ("pkcs11:token", "malformed"),
    ("pkcs11:token=%ff", "percent-encoded UTF-8"),
    ("file:/x", "not a pkcs11: URI"),
    ("pkcs11:token=" + "a" * MAX_URI_CHARS, "longer than"),
])
def test_hostile_or_wrong_uris_are_refused_with_a_reason(text, why):
    with pytest.raises(UriError, match=why):
        parse_uri(text)


_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)


@given(token=_text, obj=st.none() | _text, ident=st.none() | st.binary(min_size=1, max_size=8),
       module=st.none() | _text, slot=st.none() | st.integers(0, 2**32))
def test_format_round_trips(token, obj, ident, module, slot):
    u = Pkcs11Uri(token=token, object=obj, id=ident, module_path=module, slot_id=slot)
    assert parse_uri(u.format()) == u


@given(st.text(max_size=200))
def test_garbage_gives_a_uri_or_a_uri_error_never_anything_else(text):
    try:
        u = parse_uri("pkcs11:" + text)
    except UriError as exc:
        assert str(exc).startswith("pkcs11 URI")
    else:
        assert isinstance(u, Pkcs11Uri)


def test_token_config_from_uri_reads_pin_sources_and_needs_a_token():
    t = token_config_from_uri("pkcs11:token=n;object=o?pin-source=env:MY_PIN&module-path=/m.so")
    assert (t.token, t.identity_label, t.pin_env, t.pin_file, t.module) == ("n", "o", "MY_PIN", "", "/m.so")
    assert token_config_from_uri("pkcs11:token=n?pin-source=/p").pin_file == "/p"
    with pytest.raises(KeyProviderError, match=r"token=\.\.\. is required"):
        token_config_from_uri("pkcs11:object=o")

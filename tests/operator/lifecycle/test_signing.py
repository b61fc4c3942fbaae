"""signing: in-toto Statement v1, DSSE PAE, Ed25519 envelopes (round trip, tampering, wrong key)."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key

from forgetmi_operator.lifecycle import signing


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def private_pem() -> bytes:
    return _pem(Ed25519PrivateKey.generate())


@pytest.fixture(scope="module")
def public_pem(private_pem: bytes) -> bytes:
    return signing.public_key_pem(private_pem)


PAYLOAD = signing.canonical_json({"b": 1, "a": [1, 2], "é": "ü"})


def test_pae_is_the_exact_dsse_encoding() -> None:
    assert signing.pae("application/vnd.in-toto+json", b"hello") == b"DSSEv1 28 application/vnd.in-toto+json 5 hello"
    assert signing.pae("", b"") == b"DSSEv1 0  0 "
    # lengths count bytes, not characters
    assert signing.pae("t", "é".encode()) == b"DSSEv1 1 t 2 \xc3\xa9"


def test_canonical_json_sorts_keys_without_whitespace() -> None:
    assert PAYLOAD == '{"a":[1,2],"b":1,"é":"ü"}'.encode()
    with pytest.raises(ValueError):
        signing.canonical_json({"x": float("nan")})


def test_statement_is_in_toto_v1() -> None:
    found = signing.statement({"kind": "UnlearnReceipt"}, [("cxr@v7", "a" * 64), ("cxr@v8", "b" * 64)])
    assert found == {"_type": "https://in-toto.io/Statement/v1",
                     "subject": [{"name": "cxr@v7", "digest": {"sha256": "a" * 64}},
                                 {"name": "cxr@v8", "digest": {"sha256": "b" * 64}}],
                     "predicateType": "https://forgetmi.io/unlearn-receipt/v1",
                     "predicate": {"kind": "UnlearnReceipt"}}


def test_sign_and_verify_round_trip(private_pem: bytes, public_pem: bytes) -> None:
    envelope = signing.sign_envelope(PAYLOAD, private_pem)
    assert envelope["payloadType"] == signing.PAYLOAD_TYPE
    assert base64.b64decode(envelope["payload"]) == PAYLOAD
    der = serialization.load_pem_public_key(public_pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert envelope["signatures"][0]["keyid"] == hashlib.sha256(der).hexdigest()
    assert signing.open_envelope(envelope, public_pem) == PAYLOAD
    stored = signing.envelope_json(envelope)
    assert json.loads(stored) == envelope and stored.endswith(b"\n")
    assert signing.envelope_json(signing.sign_envelope(PAYLOAD, private_pem)) == stored  # deterministic
    assert signing.is_envelope(envelope) and not signing.is_envelope({"payload": ""})


def test_a_tampered_payload_fails(private_pem: bytes, public_pem: bytes) -> None:
    envelope = signing.sign_envelope(PAYLOAD, private_pem)
    changed = bytearray(PAYLOAD)
    changed[3] ^= 1
    tampered = {**envelope, "payload": base64.b64encode(bytes(changed)).decode()}
    with pytest.raises(signing.SigningError, match="No signature"):
        signing.open_envelope(tampered, public_pem)
    with pytest.raises(signing.SigningError, match="payloadType"):
        signing.open_envelope({**envelope, "payloadType": "text/plain"}, public_pem)
    with pytest.raises(signing.SigningError, match="base64"):
        signing.open_envelope({**envelope, "payload": "not base64!"}, public_pem)


def test_a_tampered_signature_fails(private_pem: bytes, public_pem: bytes) -> None:
    envelope = signing.sign_envelope(PAYLOAD, private_pem)
    sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    sig[0] ^= 1
    tampered = {**envelope, "signatures": [{**envelope["signatures"][0], "sig": base64.b64encode(bytes(sig)).decode()}]}
    with pytest.raises(signing.SigningError, match="No signature"):
        signing.open_envelope(tampered, public_pem)
    with pytest.raises(signing.SigningError, match="no signature"):
        signing.open_envelope({**envelope, "signatures": []}, public_pem)


def test_the_wrong_key_fails(private_pem: bytes) -> None:
    envelope = signing.sign_envelope(PAYLOAD, private_pem)
    other = signing.public_key_pem(_pem(Ed25519PrivateKey.generate()))
    with pytest.raises(signing.SigningError, match="No signature"):
        signing.open_envelope(envelope, other)
    # a signature whose keyid names another key is not tried against this one
    renamed = {**envelope, "signatures": [{**envelope["signatures"][0], "keyid": "0" * 64}]}
    with pytest.raises(signing.SigningError):
        signing.open_envelope(renamed, signing.public_key_pem(private_pem))


def test_keys_that_are_not_ed25519_pem_are_refused(public_pem: bytes) -> None:
    with pytest.raises(signing.SigningError, match="PKCS#8"):
        signing.load_private_key(b"not a key")
    with pytest.raises(signing.SigningError, match="SubjectPublicKeyInfo"):
        signing.load_public_key(b"not a key")
    with pytest.raises(signing.SigningError, match="PKCS#8"):
        signing.load_private_key(public_pem)
    rsa = generate_private_key(public_exponent=65537, key_size=2048)
    rsa_pem = rsa.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    with pytest.raises(signing.SigningError, match="not an Ed25519"):
        signing.load_private_key(rsa_pem)
    with pytest.raises(signing.SigningError, match="not an Ed25519"):
        signing.load_public_key(rsa.public_key().public_bytes(serialization.Encoding.PEM,
                                                             serialization.PublicFormat.SubjectPublicKeyInfo))

"""Signed receipts (pure): an in-toto Statement v1 in a DSSE envelope, signed with Ed25519.

Anyone holding the operator's public key can check a receipt without trusting the operator:

- :func:`statement` wraps a predicate (the receipt, :mod:`~forgetmi_operator.lifecycle.receipts`) in an
  in-toto Statement v1 (``_type`` :data:`STATEMENT_TYPE`, ``subject`` the models' digests,
  ``predicateType`` :data:`PREDICATE_TYPE`);
- :func:`sign_envelope` signs a payload as a DSSE envelope: Ed25519 over :func:`pae`, the DSSE
  pre-authentication encoding ``DSSEv1 <len(type)> <type> <len(body)> <body>``;
  :func:`open_envelope` checks the signature with a public key and returns the payload.

Keys are PEM: the private key PKCS#8 (``openssl genpkey -algorithm ed25519``), the public key
SubjectPublicKeyInfo (:func:`public_key_pem`). A signature's ``keyid`` is the hex sha256 of the
public key's DER encoding. :func:`canonical_json` (sorted keys, no whitespace, UTF-8) makes the
payload, and so every digest over it, reproducible; Ed25519 signatures are deterministic, so the
same receipt signed with the same key gives the same envelope bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://forgetmi.io/unlearn-receipt/v1"


class SigningError(ValueError):
    """A key cannot be read, or an envelope is malformed or its signature does not verify (one sentence)."""


def canonical_json(data: Any) -> bytes:
    """Sorted keys, ``,``/``:`` separators, UTF-8, NaN refused: the same data always gives the same bytes."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: ``DSSEv1 SP len(type) SP type SP len(body) SP body``
    (lengths in bytes, as ASCII decimal)."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def statement(predicate: Mapping[str, Any], subjects: Sequence[tuple[str, str]],
              predicate_type: str = PREDICATE_TYPE) -> dict[str, Any]:
    """An in-toto Statement v1 of ``predicate`` about ``subjects`` (``(name, sha256)`` pairs)."""
    return {"_type": STATEMENT_TYPE,
            "subject": [{"name": name, "digest": {"sha256": sha256}} for name, sha256 in subjects],
            "predicateType": predicate_type, "predicate": dict(predicate)}


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM PKCS#8 (unencrypted); SigningError otherwise."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as err:
        raise SigningError("The signing key is not an unencrypted PEM PKCS#8 private key.") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"The signing key is a {type(key).__name__}, not an Ed25519 key.")
    return key


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM SubjectPublicKeyInfo; SigningError otherwise."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as err:
        raise SigningError("The public key is not a PEM SubjectPublicKeyInfo key.") from err
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"The public key is a {type(key).__name__}, not an Ed25519 key.")
    return key


def public_key_pem(private_pem: bytes) -> bytes:
    """The PEM SubjectPublicKeyInfo of a PEM PKCS#8 Ed25519 private key."""
    return load_private_key(private_pem).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def keyid(public: Ed25519PublicKey) -> str:
    """Hex sha256 of the public key's DER SubjectPublicKeyInfo."""
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def sign_envelope(payload: bytes, private_pem: bytes, payload_type: str = PAYLOAD_TYPE) -> dict[str, Any]:
    """The DSSE envelope of ``payload``, signed with the Ed25519 key ``private_pem``."""
    key = load_private_key(private_pem)
    signature = key.sign(pae(payload_type, payload))
    return {"payloadType": payload_type, "payload": base64.b64encode(payload).decode("ascii"),
            "signatures": [{"keyid": keyid(key.public_key()), "sig": base64.b64encode(signature).decode("ascii")}]}


def envelope_json(envelope: Mapping[str, Any]) -> bytes:
    """The stored bytes of an envelope: sorted keys, two-space indent, UTF-8, final newline."""
    return (json.dumps(envelope, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def is_envelope(data: Any) -> bool:
    """Whether parsed JSON looks like a DSSE envelope (payloadType, payload, signatures)."""
    return isinstance(data, dict) and {"payloadType", "payload", "signatures"} <= data.keys()


def envelope_payload(envelope: Mapping[str, Any]) -> bytes:
    """The decoded payload, signature unchecked; SigningError when it is not base64."""
    try:
        return base64.b64decode(str(envelope.get("payload", "")), validate=True)
    except (binascii.Error, ValueError) as err:
        raise SigningError("The envelope's payload is not base64.") from err


def open_envelope(envelope: Mapping[str, Any], public_pem: bytes,
                  payload_type: str = PAYLOAD_TYPE) -> bytes:
    """The payload of ``envelope`` once a signature by ``public_pem``'s key verifies over its PAE;
    SigningError saying why not (wrong payload type, no signature by that key, a bad signature)."""
    public = load_public_key(public_pem)
    if envelope.get("payloadType") != payload_type:
        raise SigningError(f"The envelope's payloadType is {envelope.get('payloadType')!r}, not {payload_type!r}.")
    payload = envelope_payload(envelope)
    signed = pae(payload_type, payload)
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise SigningError("The envelope carries no signature.")
    ours = keyid(public)
    for entry in signatures:
        if not isinstance(entry, dict) or entry.get("keyid") not in (ours, None, ""):
            continue
        try:
            public.verify(base64.b64decode(str(entry.get("sig", "")), validate=True), signed)
        except (InvalidSignature, binascii.Error, ValueError):
            continue
        return payload
    raise SigningError(f"No signature of the envelope verifies with the public key {ours[:16]}….")

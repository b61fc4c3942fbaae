"""receipts, signed: the stored receipt is a DSSE envelope of an in-toto Statement with a key, the
plain receipt without one; both read back; the signing key comes from the operator namespace's Secret."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness.reports import BASE_SHA, CANDIDATE_SHA
from test_conclude import FakeKube, _cluster, _no_waiting, world
from test_receipts import KEY, SUBJECTS, _receipt

from forgetmi_operator.api.errors import SecretNotFound, SettingsInvalid
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.lifecycle import receipts, signing
from forgetmi_operator.lifecycle.conclude import conclude
from forgetmi_operator.registry import aliases as registry
from forgetmi_trainer import storage
from forgetmi_trainer.storage import DEFAULT

__all__ = ["_no_waiting", "world"]  # test_conclude's fixtures, shared
PEM = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption())


def test_without_a_key_the_stored_receipt_is_the_plain_receipt() -> None:
    receipt = _receipt(receipts.subjects_hmac(SUBJECTS, KEY))
    data = receipts.stored_receipt(receipt, model="cxr", signing_key=None)
    assert data == receipts.receipt_json(receipt)
    assert hashlib.sha256(data).hexdigest() == receipts.receipt_sha256(receipt)
    stored = receipts.read_stored(data)
    assert stored.receipt == receipt and stored.envelope is None and stored.statement is None


def test_with_a_key_the_stored_receipt_is_a_signed_in_toto_statement() -> None:
    receipt = _receipt(receipts.subjects_hmac(SUBJECTS, KEY))
    data = receipts.stored_receipt(receipt, model="cxr", signing_key=PEM)
    envelope = json.loads(data)
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    payload = signing.open_envelope(envelope, signing.public_key_pem(PEM))
    assert payload == signing.canonical_json(json.loads(payload))  # canonical, so its digest is reproducible
    statement = json.loads(payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://forgetmi.io/unlearn-receipt/v1"
    assert statement["subject"] == [{"name": "cxr@v7", "digest": {"sha256": BASE_SHA}},
                                    {"name": "cxr@v7-unlearned-0b3f9c2e", "digest": {"sha256": CANDIDATE_SHA}}]
    assert statement["predicate"] == json.loads(receipts.receipt_json(receipt))  # today's receipt, HMAC included
    assert statement["predicate"]["subjects"]["hmac"] == receipts.subjects_hmac(SUBJECTS, KEY)
    assert not any(subject.encode() in data or subject.encode() in payload for subject in SUBJECTS)
    assert receipts.stored_receipt(receipt, model="cxr", signing_key=PEM) == data  # reproducible bytes
    stored = receipts.read_stored(data)
    assert stored.receipt == receipt and stored.envelope == envelope and stored.statement == statement


@pytest.mark.parametrize(("data", "match"), [
    (b"not json", "not JSON"),
    (b'{"kind": "Other"}', "not a receipt"),
    (json.dumps({"payloadType": "x", "payload": "!!", "signatures": []}).encode(), "payload"),
    (json.dumps({"payloadType": "x", "payload": base64.b64encode(b'{"_type": "other"}').decode(),
                 "signatures": []}).encode(), "in-toto Statement"),
])
def test_what_is_not_a_receipt_is_refused(data: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        receipts.read_stored(data)


class _Store:
    def __init__(self, secrets: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.secrets = secrets

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.secrets.get((namespace, name))


def _settings(**values: Any) -> Settings:
    return Settings(operator_namespace="forgetmi-system", **values)


def test_the_signing_key_is_read_from_the_operator_namespace() -> None:
    store = _Store({("forgetmi-system", "signing"): {"data": {"key.pem": base64.b64encode(PEM).decode()}}})
    found = asyncio.run(receipts.signing_key(store, _settings(receipt_signing_secret_name="signing")))  # type: ignore[arg-type]
    assert found == PEM
    assert asyncio.run(receipts.signing_key(store, _settings())) is None  # type: ignore[arg-type]


def test_a_missing_or_bad_signing_key_fails_clearly() -> None:
    bad = _Store({("forgetmi-system", "signing"): {"data": {"key.pem": base64.b64encode(b"junk").decode()}}})
    with pytest.raises(SettingsInvalid, match="PKCS#8"):
        asyncio.run(receipts.signing_key(bad, _settings(receipt_signing_secret_name="signing")))  # type: ignore[arg-type]
    with pytest.raises(SecretNotFound, match="does not exist"):
        asyncio.run(receipts.signing_key(_Store({}), _settings(receipt_signing_secret_name="signing")))  # type: ignore[arg-type]
    with pytest.raises(SecretNotFound, match="FORGETMI_OPERATOR_NAMESPACE"):
        asyncio.run(receipts.signing_key(_Store({}), Settings(receipt_signing_secret_name="signing")))  # type: ignore[arg-type]


# ---- through the conclusion (the cluster's ports, a real file:// registry: test_conclude's world) --------------

def _conclude_with(world: dict[str, Any], signing_key: Any) -> Any:
    ports = dataclasses.replace(_cluster(FakeKube()).ports, signing_key=signing_key)
    return asyncio.run(conclude(ports, world["body"]))


def test_a_conclusion_with_a_signing_key_stores_the_signed_receipt(world: dict[str, Any]) -> None:
    async def key() -> bytes:
        return PEM

    result = _conclude_with(world, key)
    assert result.step.status["phase"] == "Promoted"
    data = storage.read_bytes(world["paths"].receipt)
    assert result.step.status["receipt"]["sha256"] == hashlib.sha256(data).hexdigest()  # of the stored bytes
    statement = json.loads(signing.open_envelope(json.loads(data), signing.public_key_pem(PEM)))
    assert [s["name"] for s in statement["subject"]] == ["cxr@v7", f"cxr@{world['candidate']}"]
    assert statement["predicate"]["decision"] == "Promote"
    assert statement["predicate"]["promotion"]["version"] == world["candidate"]


def test_a_bad_signing_key_stops_the_conclusion_before_anything_changes(world: dict[str, Any]) -> None:
    bad = _Store({("forgetmi-system", "signing"): {"data": {"key.pem": base64.b64encode(b"junk").decode()}}})
    settings = _settings(receipt_signing_secret_name="signing")
    result = _conclude_with(world, lambda: receipts.signing_key(bad, settings))  # type: ignore[arg-type]
    promoted = next(c for c in result.step.status["conditions"] if c["type"] == "Promoted")
    assert (promoted["status"], promoted["reason"]) == ("False", "InvalidSettings")
    assert registry.resolve_alias(DEFAULT, world["reg"], "cxr", "production").version == "v7"
    assert not storage.exists(world["paths"].receipt)

"""The chart's receipt signing and ledger key values: the operator's env, the public-key ConfigMap,
the Role that reads those Secrets in an unwatched release namespace, and the values schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_chart import CHART, NAMESPACE, NAMESPACED_VALUES, env_of, only

from forgetmi_operator.api.settings import Settings
from forgetmi_operator.lifecycle import signing

SIGNING = ("--set", "receipt.signing.secret.name=forgetmi-receipt-signing", "--set", "ledger.keySecret.name=ledger-key",
           "--set", "ledger.keySecret.key=hmac")


def _settings(env: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> Settings:
    with monkeypatch.context() as patch:
        for name, value in env.items():
            if isinstance(value, str):
                patch.setenv(name, value)
        return Settings()


def test_by_default_receipts_are_unsigned_and_no_ledger_is_kept(render, monkeypatch: pytest.MonkeyPatch) -> None:
    manifests = render()
    settings = _settings(env_of(manifests), monkeypatch)
    assert (settings.receipt_signing_secret_name, settings.receipt_signing_secret_key) == ("", "key.pem")
    assert (settings.ledger_key_secret_name, settings.ledger_key_secret_key) == ("", "key")
    assert not [m for m in manifests if m["kind"] == "ConfigMap"]


def test_signing_and_ledger_secrets_reach_the_operator(render, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(env_of(render(None, *SIGNING)), monkeypatch)
    assert (settings.receipt_signing_secret_name, settings.receipt_signing_secret_key) == (
        "forgetmi-receipt-signing", "key.pem")
    assert (settings.ledger_key_secret_name, settings.ledger_key_secret_key) == ("ledger-key", "hmac")


def test_the_public_key_is_published_in_a_config_map(helm_cmd, tmp_path: Path) -> None:
    pem = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption())
    public = signing.public_key_pem(pem).decode()
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"receipt": {"signing": {"secret": {"name": "signing"}, "publicKey": public}}}))
    result = helm_cmd("template", "forgetmi", str(CHART), "--namespace", NAMESPACE, "--values", str(values))
    assert result.returncode == 0, result.stderr
    config = only([doc for doc in yaml.safe_load_all(result.stdout) if doc], "ConfigMap")
    assert config["metadata"]["name"] == "forgetmi-forgetmi-operator-receipt-public-key"
    assert config["metadata"]["namespace"] == NAMESPACE
    assert config["data"]["public.pem"] == public  # byte for byte, final newline included
    signing.load_public_key(config["data"]["public.pem"].encode())


def test_an_unwatched_release_namespace_gets_a_role_reading_exactly_those_secrets(render) -> None:
    manifests = render(NAMESPACED_VALUES, *SIGNING)
    (role,) = [m for m in manifests if m["kind"] == "Role" and m["metadata"]["namespace"] == NAMESPACE]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": [
        "forgetmi-receipt-key", "forgetmi-receipt-signing", "ledger-key"]}]
    only_signing = render(None, "--set-json", 'watchNamespaces=["radiology"]', "--set",
                          "receipt.signing.secret.name=signing")
    (role,) = [m for m in only_signing if m["kind"] == "Role" and m["metadata"]["namespace"] == NAMESPACE]
    assert role["rules"][0]["resourceNames"] == ["signing"]
    none = render(None, "--set-json", 'watchNamespaces=["radiology"]')
    assert not [m for m in none if m["kind"] == "Role" and m["metadata"]["namespace"] == NAMESPACE]


@pytest.mark.parametrize(("bad", "complaint"), [
    ("receipt:\n  signing:\n    publicKey: not-a-pem\n", "/receipt/signing/publicKey"),
    ("receipt:\n  signing:\n    secret: {name: Signing_Key}\n", "/receipt/signing/secret/name"),
    ("receipt:\n  signing:\n    secret: {key: 'a b'}\n", "/receipt/signing/secret/key"),
    ("receipt:\n  signing:\n    privateKey: x\n", "privateKey"),
    ("ledger:\n  keySecret: {name: ledger..key}\n", "/ledger/keySecret/name"),
    ("ledger:\n  key: x\n", "key"),
], ids=["public-key-not-pem", "signing-secret-name", "signing-secret-key", "no-private-key-in-values",
        "ledger-secret-name", "ledger-unknown-key"])
def test_values_schema_rejects_bad_signing_and_ledger_values(helm_cmd, tmp_path: Path, bad: str,
                                                             complaint: str) -> None:
    values = tmp_path / "bad-values.yaml"
    values.write_text(bad)
    result = helm_cmd("template", "forgetmi", str(CHART), "--values", str(values))
    assert result.returncode != 0, f"helm accepted {bad!r}"
    assert "schema" in result.stderr.lower() and complaint in result.stderr, result.stderr

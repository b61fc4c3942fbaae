"""``forgetmi receipt verify`` / ``public-key``: one real request through ``forgetmi run`` with a
signing key (and a ledger key), then the receipt is verified from storage alone — untouched it
passes; one changed byte of the receipt, of a candidate model file or of the report fails naming
the check — on the ``file://`` registry and on a copy of it in moto S3 (``--registry``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness.registries import point
from test_run import _request, prepared

from forgetmi_operator.lifecycle import receipts, signing
from forgetmi_operator.local import EXIT_FAILED, EXIT_INVALID, EXIT_OK, cli
from forgetmi_operator.local import run as local
from forgetmi_operator.local.receipt_cli import verify_receipt
from forgetmi_operator.registry.paths import MODEL_FILE, alias_uri
from forgetmi_trainer import storage
from forgetmi_trainer.contract import ModelRef
from forgetmi_trainer.contract.registry import HISTORY_LIMIT, AliasRecord, PreviousVersion, parse_alias_record
from forgetmi_trainer.storage import DEFAULT

pytestmark = pytest.mark.slow
__all__ = ["prepared"]  # the module fixture of test_run, shared
HMAC_KEY = b"auditor-shared-hmac-key"
LEDGER_KEY = b"ledger-key"


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def signed(prepared: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One promoted request, its receipt signed: the receipt URI and the files an auditor holds."""
    original = ModelRef.model_validate(prepared["original"])
    storage.delete(alias_uri(original.registry_uri, original.name, "production"))
    point(original.registry_uri, original.name, "production", original.version)
    folder = tmp_path_factory.mktemp("signed")
    pem = _pem(Ed25519PrivateKey.generate())
    (folder / "key.pem").write_bytes(pem)
    (folder / "public.pem").write_bytes(signing.public_key_pem(pem))
    (folder / "hmac.key").write_bytes(HMAC_KEY)
    request, secrets = _request(prepared, gates=[
        {"metric": "testAUC", "comparator": "maxDrop", "threshold": 0.5, "reference": "original"},
        {"metric": "mia", "comparator": "atMost", "threshold": 1.0, "reference": "absolute"}])
    result = local.run_request(request, workdir=folder / "run", secrets=secrets, hmac_key=HMAC_KEY,
                               signing_key=pem, ledger_key=LEDGER_KEY)
    assert result.status.phase == "Promoted", result.status.message
    assert result.status.receipt is not None
    return {"receipt": result.status.receipt.uri, "sha256": result.status.receipt.sha256, "folder": folder,
            "public": str(folder / "public.pem"), "subjects": prepared["subjects_file"],
            "registry": prepared["registry"], "candidate": result.status.candidate_model}


def _failed(checks: list[Any]) -> list[str]:
    return [check.name for check in checks if check.ok is False]


@contextmanager
def _changed_byte(uri: str, position: int | None = None) -> Iterator[None]:
    """One byte of the object flipped (the middle one by default), restored after."""
    original = DEFAULT.read_bytes(uri)
    at = len(original) // 2 if position is None else position
    DEFAULT.write_bytes(uri, original[:at] + bytes([original[at] ^ 0x01]) + original[at + 1:])
    try:
        yield
    finally:
        DEFAULT.write_bytes(uri, original)


def _receipt_content_changed(data: bytes) -> bytes:
    """The envelope with one byte of its Statement changed (still valid JSON and base64)."""
    envelope = json.loads(data)
    payload = base64.b64decode(envelope["payload"])
    at = payload.index(b'"count":') + len(b'"count":')
    changed = payload[:at] + bytes([payload[at] ^ 0x01]) + payload[at + 1:]  # one digit of subjects.count
    return signing.envelope_json({**envelope, "payload": base64.b64encode(changed).decode()})


def _where(signed: dict[str, Any], registry: str | None) -> tuple[str, dict[str, str]]:
    """The receipt URI and the URIs an attacker would change, in ``registry`` (None: the original one)."""
    root = registry or signed["registry"]

    def rebase(uri: str) -> str:
        return root + uri[len(signed["registry"]):]

    receipt = rebase(signed["receipt"])
    return receipt, {"receipt": receipt, "report": receipt.removesuffix("receipt.json") + "report.json",
                     "candidate": storage.join(rebase(signed["candidate"].uri), MODEL_FILE),
                     "config": storage.join(rebase(signed["candidate"].uri), "config.json")}


def _copy_to(bucket: str, registry: str) -> str:
    """A copy of the file:// registry under ``bucket``; its URI."""
    target = storage.join(bucket, "registry")
    base = Path(registry.removeprefix("file://"))
    for path in base.rglob("*"):
        if path.is_file() and not path.name.startswith("."):  # not the file store's own lock files
            DEFAULT.upload_file(path, storage.join(target, *path.relative_to(base).parts))
    return target


@pytest.fixture(params=["file", "s3"])
def registry(request: pytest.FixtureRequest, signed: dict[str, Any]) -> str | None:
    """None: verify in the registry the receipt names; else the URI of a moto S3 copy (``--registry``)."""
    if request.param == "file":
        return None
    return _copy_to(request.getfixturevalue("s3_bucket"), signed["registry"])


def test_an_untouched_receipt_passes_every_check(signed: dict[str, Any], registry: str | None,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    receipt, _ = _where(signed, registry)
    args = ["receipt", "verify", receipt, "--public-key", signed["public"], "--subjects", signed["subjects"],
            "--hmac-key-file", str(signed["folder"] / "hmac.key")] + (["--registry", registry] if registry else [])
    code = cli.main(args)
    out = capsys.readouterr().out
    assert code == EXIT_OK, out
    lines = out.splitlines()
    names = ["signature", "base-model", "candidate-model", "report", "alias-history", "ledger", "subjects"]
    assert [line.split()[1].rstrip(":") for line in lines] == names
    assert all(line.startswith("ok ") for line in lines), out
    subjects = Path(signed["subjects"]).read_text().split()
    assert not any(subject in out for subject in subjects)


@pytest.mark.parametrize(("target", "where", "checks"), [
    ("receipt", "signature", {"signature"}),
    ("receipt", "middle", {"signature", "receipt"}),  # as the byte falls: a bad signature, or no receipt at all
    ("candidate", "middle", {"candidate-model"}), ("config", "middle", {"candidate-model"}),
    ("report", "middle", {"report"})])
def test_one_changed_byte_fails_naming_the_check(signed: dict[str, Any], registry: str | None, target: str,
                                                 where: str, checks: set[str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    receipt, uris = _where(signed, registry)
    public = Path(signed["public"]).read_bytes()
    assert _failed(verify_receipt(DEFAULT, receipt, public, registry=registry)) == []
    position = DEFAULT.read_bytes(receipt).index(b'"sig": "') + 12 if where == "signature" else None
    with _changed_byte(uris[target], position):
        failed = _failed(verify_receipt(DEFAULT, receipt, public, registry=registry))
        code = cli.main(["receipt", "verify", receipt, "--public-key", signed["public"],
                         *(["--registry", registry] if registry else [])])
    out = capsys.readouterr().out
    assert len(failed) == 1 and failed[0] in checks, failed
    assert code == EXIT_FAILED
    assert f"FAILED {failed[0]}:" in out
    assert _failed(verify_receipt(DEFAULT, receipt, public, registry=registry)) == []  # restored


def test_a_changed_statement_fails_the_signature(signed: dict[str, Any], registry: str | None) -> None:
    receipt, _ = _where(signed, registry)
    original = DEFAULT.read_bytes(receipt)
    DEFAULT.write_bytes(receipt, _receipt_content_changed(original))
    try:
        assert "signature" in _failed(verify_receipt(DEFAULT, receipt, Path(signed["public"]).read_bytes(),
                                                     registry=registry))
    finally:
        DEFAULT.write_bytes(receipt, original)


def test_a_plain_receipt_or_another_key_fails_the_signature(signed: dict[str, Any], tmp_path: Path) -> None:
    data = DEFAULT.read_bytes(signed["receipt"])
    assert DEFAULT.sha256_of(signed["receipt"]) == signed["sha256"]  # status.receipt.sha256: the stored bytes
    plain = tmp_path / "plain.json"
    plain.write_bytes(receipts.receipt_json(receipts.read_stored(data).receipt))
    public = Path(signed["public"]).read_bytes()
    found = verify_receipt(DEFAULT, plain.as_uri(), public)
    assert _failed(found) == ["signature"] and "not signed" in found[0].detail
    other = signing.public_key_pem(_pem(Ed25519PrivateKey.generate()))
    assert _failed(verify_receipt(DEFAULT, signed["receipt"], other)) == ["signature"]
    assert _failed(verify_receipt(DEFAULT, (tmp_path / "missing.json").as_uri(), public)) == ["receipt"]


def test_bad_arguments_exit_2(signed: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "junk.pem").write_text("not a key")
    assert cli.main(["receipt", "verify", signed["receipt"], "--public-key", str(tmp_path / "junk.pem")]) \
        == EXIT_INVALID
    assert cli.main(["receipt", "verify", signed["receipt"], "--public-key", str(tmp_path / "none.pem")]) \
        == EXIT_INVALID
    assert cli.main(["receipt", "verify", signed["receipt"], "--public-key", signed["public"], "--subjects",
                     signed["subjects"]]) == EXIT_INVALID
    assert "cannot be read" in capsys.readouterr().err


def test_public_key_prints_the_pem_public_key(signed: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("FORGETMI_RECEIPT_SIGNING_KEY_FILE", raising=False)
    assert cli.main(["receipt", "public-key", "--signing-key-file", str(signed["folder"] / "key.pem")]) == EXIT_OK
    assert capsys.readouterr().out.encode() == Path(signed["public"]).read_bytes()
    assert cli.main(["receipt", "public-key"]) == EXIT_INVALID
    assert cli.main(["receipt", "public-key", "--signing-key-file", signed["public"]]) == EXIT_INVALID


def test_run_reads_the_signing_key_file(signed: dict[str, Any], prepared: dict[str, Any], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``forgetmi run --signing-key-file`` hands the key's bytes to the run; a file that is not a key stops it."""
    seen: dict[str, Any] = {}

    def fake_run(body: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise SystemExit(0)

    request, secrets = _request(prepared)
    (tmp_path / "request.yaml").write_text(yaml.safe_dump(request))
    (tmp_path / "secrets.yaml").write_text(yaml.safe_dump_all(
        [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": values}
         for name, values in secrets.items()]))
    monkeypatch.setattr(local, "run_request", fake_run)
    argv = ["run", "-f", str(tmp_path / "request.yaml"), "--secrets", str(tmp_path / "secrets.yaml")]
    with pytest.raises(SystemExit):
        cli.main([*argv, "--signing-key-file", str(signed["folder"] / "key.pem")])
    assert seen["signing_key"] == (signed["folder"] / "key.pem").read_bytes()
    assert cli.main([*argv, "--signing-key-file", signed["public"]]) == EXIT_INVALID
    assert "--signing-key-file" in capsys.readouterr().err


@pytest.mark.parametrize(("parent", "entries", "holds"), [("candidate", HISTORY_LIMIT, True),
                                                          ("base", HISTORY_LIMIT, False),
                                                          ("candidate", HISTORY_LIMIT - 1, False)])
def test_a_promotion_older_than_a_full_alias_history_holds_by_the_lineage_of_the_version_named_now(
        signed: dict[str, Any], s3_bucket: str, parent: str, entries: int, holds: bool) -> None:
    copy = _copy_to(s3_bucket, signed["registry"])
    receipt, _ = _where(signed, copy)
    candidate = signed["candidate"]
    name = candidate.uri.rstrip("/").split("/")[-3]
    uri = alias_uri(copy, name, "production")
    record = parse_alias_record(DEFAULT.read_bytes(uri), uri)
    assert record.version == candidate.version
    later = "v-after-many-erasures"
    ancestor = candidate.version if parent == "candidate" else record.previous
    DEFAULT.write_json(storage.join(copy, name, "versions", later, "metadata.json"),
                       {"version": later, "parent": ancestor, "sha256": "a" * 64, "files": {}})
    history = [PreviousVersion(version=f"v-old-{i}", sha256=f"{i % 16:x}" * 64, updated_at="2026-12-01T00:00:00Z")
               for i in range(entries)]  # a hundred later moves pushed this promotion out of the history
    DEFAULT.write_bytes(uri, AliasRecord(version=later, sha256="a" * 64, updated_at="2026-12-02T00:00:00Z",
                                         history=history).to_json_bytes())
    checks = {c.name: c for c in verify_receipt(DEFAULT, receipt, Path(signed["public"]).read_bytes(),
                                                registry=copy)}
    check = checks["alias-history"]
    assert check.ok is holds, check.detail
    if holds:
        assert f"descends from {candidate.version}" in check.detail
    elif entries == HISTORY_LIMIT:
        assert f"history is full ({HISTORY_LIMIT} moves)" in check.detail and "does not descend" in check.detail
    else:
        assert "has no record of request" in check.detail and "descend" not in check.detail

"""registry.aliases on file:// and on a moto S3 server over HTTP: versions hashed byte by byte, aliases
moved with conditional writes."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import boto3
import pytest

from forgetmi_operator.registry import aliases as reg
from forgetmi_operator.registry import paths
from forgetmi_operator.registry.aliases import AliasConflict, ModelNotFound, RegistryError, RequestRef
from forgetmi_trainer import storage
from forgetmi_trainer.errors import PreconditionFailed
from forgetmi_trainer.storage import DEFAULT

REQ_A = RequestRef(namespace="radiology", name="forget-a", uid="uid-a")
REQ_B = RequestRef(namespace="radiology", name="forget-b", uid="uid-b")


@pytest.fixture(params=["s3", "file"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "s3":
        return storage.join(request.getfixturevalue("s3_bucket"), "registry")
    return storage.join(tmp_path.as_uri(), "registry")


ALL_FILES = ("config.json", "model.safetensors")


def _add_version(registry: str, version: str, *, files: tuple[str, ...] = ALL_FILES) -> str:
    """Write a version directory; returns the sha256 of its model file."""
    uri = paths.version_uri(registry, "cxr", version)
    weights = os.urandom(2048)
    for name in files:
        storage.write_bytes(storage.join(uri, name), weights if name == "model.safetensors" else b"{}")
    return hashlib.sha256(weights).hexdigest()


def _verified(registry: str, version: str) -> reg.VerifiedVersion:
    return reg.verify_version(DEFAULT, registry, "cxr", version)


def _promote(registry: str, version: str, *, expected_token: str | None,
             request: RequestRef | None) -> reg.AliasRecord:
    return reg.promote(DEFAULT, registry, "cxr", "production", version=_verified(registry, version),
                       expected_token=expected_token, request=request)


def _token(registry: str) -> str:
    return reg.resolve_alias(DEFAULT, registry, "cxr", "production").token


def _seed(registry: str, version: str = "v1") -> str:
    sha = _add_version(registry, version)
    _promote(registry, version, expected_token=None, request=None)
    return sha


def test_resolve_alias(registry: str) -> None:
    sha = _seed(registry)
    resolved = reg.resolve_alias(DEFAULT, registry, "cxr", "production")
    assert (resolved.version, resolved.sha256) == ("v1", sha)
    assert resolved.uri == paths.version_uri(registry, "cxr", "v1")
    assert resolved.token == storage.read_versioned(paths.alias_uri(registry, "cxr", "production"))[1]
    stored = json.loads(storage.read_bytes(paths.alias_uri(registry, "cxr", "production")))
    assert set(stored) == {"version", "sha256", "previous", "updatedAt", "request", "history"}
    assert stored["previous"] is None and stored["request"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stored["updatedAt"])


def test_missing_alias_and_version_messages(registry: str) -> None:
    with pytest.raises(ModelNotFound) as info:
        reg.resolve_alias(DEFAULT, registry, "cxr", "production")
    assert str(info.value) == f"Model 'cxr' has no alias 'production' in {registry}."
    with pytest.raises(ModelNotFound) as info:
        _verified(registry, "v9")
    assert str(info.value) == f"Model 'cxr' has no version 'v9' in {registry}."
    _add_version(registry, "v2", files=("config.json",))
    with pytest.raises(ModelNotFound) as info:
        _verified(registry, "v2")
    assert str(info.value) == (f"Version 'v2' of model 'cxr' has no model.safetensors in "
                               f"{paths.version_uri(registry, 'cxr', 'v2')}.")
    _add_version(registry, "v3", files=("model.safetensors",))
    with pytest.raises(ModelNotFound, match=r"Version 'v3' of model 'cxr' has no config\.json"):
        _verified(registry, "v3")


def test_resolve_alias_naming_a_version_without_model_file(registry: str) -> None:
    _seed(registry)
    storage.delete(storage.join(paths.version_uri(registry, "cxr", "v1"), "model.safetensors"))
    with pytest.raises(ModelNotFound, match=r"Version 'v1' of model 'cxr', named by alias 'production', "
                                            r"has no model\.safetensors in "):
        reg.resolve_alias(DEFAULT, registry, "cxr", "production")


def test_malformed_alias_record(registry: str) -> None:
    storage.write_json(paths.alias_uri(registry, "cxr", "production"), {"version": "v1", "colour": "red"})
    with pytest.raises(RegistryError, match=r"production\.json is malformed: sha256: Field required\."):
        reg.resolve_alias(DEFAULT, registry, "cxr", "production")


def _publish(registry: str, version: str, files: dict[str, bytes], recorded: dict[str, str] | None = None) -> str:
    """A version as the trainer publishes it: its files, then metadata.json with each file's sha256
    (``recorded`` overrides the digests it records)."""
    uri = paths.version_uri(registry, "cxr", version)
    for name, data in files.items():
        storage.write_bytes(storage.join(uri, name), data)
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    record = {"version": version, "files": {**digests, **(recorded or {})}}
    storage.write_json(storage.join(uri, "metadata.json"), record)
    return digests["model.safetensors"]


def test_a_published_version_is_hashed_file_by_file_against_its_metadata(registry: str) -> None:
    files = {"config.json": b"{}", "model.safetensors": b"real weights", "tokenizer_config.json": b"{}"}
    sha = _publish(registry, "v2", files)
    verified = reg.verify_version(DEFAULT, registry, "cxr", "v2", complete=True)
    assert verified.sha256 == sha and verified.uri == paths.version_uri(registry, "cxr", "v2")
    assert verified.files == {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def test_stored_metadata_is_never_trusted(registry: str) -> None:
    """Forged digests (metadata.json, or S3's x-amz-meta-sha256) never become a version's digest."""
    sha = _publish(registry, "v2", {"config.json": b"{}", "model.safetensors": b"EVIL-WEIGHTS"},
                   recorded={"model.safetensors": "a" * 64})
    with pytest.raises(RegistryError, match=rf"model\.safetensors has sha256 {sha}, but metadata\.json records "
                                            rf"{'a' * 64}"):
        reg.verify_version(DEFAULT, registry, "cxr", "v2")
    weights = storage.join(paths.version_uri(registry, "cxr", "v3"), "model.safetensors")
    _publish(registry, "v3", {"config.json": b"{}", "model.safetensors": b"good weights"})
    if registry.startswith("s3://"):  # an upload with forged object metadata: the bytes decide
        bucket, key = weights.removeprefix("s3://").split("/", 1)
        s3 = boto3.client("s3", endpoint_url=os.environ["FORGETMI_S3_ENDPOINT_URL"], region_name="us-east-1")
        s3.put_object(Bucket=bucket, Key=key, Body=b"EVIL-WEIGHTS", Metadata={"sha256": hashlib.sha256(
            b"good weights").hexdigest()})
        assert storage.sha256_of(weights) == hashlib.sha256(b"good weights").hexdigest()  # what the header says
    else:
        storage.write_bytes(weights, b"EVIL-WEIGHTS")
    with pytest.raises(RegistryError, match=rf"has sha256 {hashlib.sha256(b'EVIL-WEIGHTS').hexdigest()}"):
        reg.verify_version(DEFAULT, registry, "cxr", "v3")


def test_a_file_the_metadata_does_not_list_makes_the_version_unpublished(registry: str) -> None:
    _publish(registry, "v2", {"config.json": b"{}", "model.safetensors": b"w"})
    storage.write_bytes(storage.join(paths.version_uri(registry, "cxr", "v2"), "decoy.bin"), b"x")
    with pytest.raises(RegistryError, match=r"holds files its metadata\.json does not list \(decoy\.bin\)"):
        reg.verify_version(DEFAULT, registry, "cxr", "v2")
    _add_version(registry, "v3")
    with pytest.raises(ModelNotFound, match=r"has no metadata\.json"):  # a candidate must be published
        reg.verify_version(DEFAULT, registry, "cxr", "v3", complete=True)


def test_records_larger_than_the_operator_reads_are_refused_unread(registry: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An alias record or metadata.json of more than RECORD_MAX_BYTES (a registry the request's
    namespace can write) is a RegistryError, never read into memory whole."""
    assert reg.RECORD_MAX_BYTES == 1024 * 1024
    _seed(registry)
    _publish(registry, "v2", {"config.json": b"{}", "model.safetensors": b"w"})
    size = storage.size(storage.join(paths.version_uri(registry, "cxr", "v2"), "metadata.json"))
    monkeypatch.setattr(reg, "RECORD_MAX_BYTES", size)
    assert reg.verify_version(DEFAULT, registry, "cxr", "v2").version == "v2"
    monkeypatch.setattr(reg, "RECORD_MAX_BYTES", size - 1)
    with pytest.raises(RegistryError, match=rf"metadata\.json is larger than {size - 1} bytes; it is not a "
                                            r"registry record\."):
        reg.verify_version(DEFAULT, registry, "cxr", "v2")
    alias = paths.alias_uri(registry, "cxr", "production")
    monkeypatch.setattr(reg, "RECORD_MAX_BYTES", storage.size(alias) - 1)
    with pytest.raises(RegistryError, match=r"Alias record .*production.* is larger than \d+ bytes"):
        reg.resolve_alias(DEFAULT, registry, "cxr", "production")


def test_promote_moves_alias_and_records_previous(registry: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _seed(registry)
    monkeypatch.setattr(reg, "HISTORY_LIMIT", 2)
    for version in ["v2", "v3", "v4"]:
        sha = _add_version(registry, version)
        base = reg.resolve_alias(DEFAULT, registry, "cxr", "production")
        record = _promote(registry, version, expected_token=base.token, request=REQ_A)
        assert record.previous == base.version
    resolved = reg.resolve_alias(DEFAULT, registry, "cxr", "production")
    assert (resolved.version, resolved.sha256, resolved.record) == ("v4", sha, record)
    assert [h.version for h in record.history] == ["v3", "v2"]  # bounded, newest first
    assert record.request == REQ_A
    _promote(registry, "v1", expected_token=resolved.token, request=REQ_B)
    assert reg.resolve_alias(DEFAULT, registry, "cxr", "production").record.previous == "v4"


def test_the_alias_records_the_operators_own_digest(registry: str) -> None:
    _seed(registry)
    sha = _publish(registry, "v2", {"config.json": b"{}", "model.safetensors": b"weights of v2"})
    record = _promote(registry, "v2", expected_token=_token(registry), request=REQ_A)
    assert record.sha256 == sha == hashlib.sha256(b"weights of v2").hexdigest()


def test_concurrent_alias_change_is_detected(registry: str) -> None:
    _seed(registry)
    _add_version(registry, "v2")
    _add_version(registry, "v3")
    mine = reg.resolve_alias(DEFAULT, registry, "cxr", "production")
    theirs = reg.resolve_alias(DEFAULT, registry, "cxr", "production")
    _promote(registry, "v3", expected_token=theirs.token, request=REQ_B)
    with pytest.raises(AliasConflict) as info:
        _promote(registry, "v2", expected_token=mine.token, request=REQ_A)
    assert str(info.value) == ("Alias 'production' of model 'cxr' changed since it was resolved (it now "
                               "names version 'v3'); the promotion was not written.")
    now = reg.resolve_alias(DEFAULT, registry, "cxr", "production")
    assert (now.version, now.record.request) == ("v3", REQ_B)


def test_create_when_alias_already_exists_is_a_conflict(registry: str) -> None:
    _seed(registry)
    _add_version(registry, "v2")
    with pytest.raises(AliasConflict, match="now names version 'v1'"):
        _promote(registry, "v2", expected_token=None, request=REQ_A)


def test_repeated_promotion_is_idempotent(registry: str) -> None:
    _seed(registry)
    _add_version(registry, "v2")
    base = reg.resolve_alias(DEFAULT, registry, "cxr", "production")
    first = _promote(registry, "v2", expected_token=base.token, request=REQ_A)
    token = _token(registry)
    again = _promote(registry, "v2", expected_token=base.token, request=REQ_A)
    assert again == first
    assert _token(registry) == token  # nothing rewritten
    with pytest.raises(AliasConflict):  # the same version from another request is not "already done"
        _promote(registry, "v2", expected_token=base.token, request=REQ_B)


def test_lost_reply_of_a_landed_write_is_not_a_conflict(registry: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The conditional PUT succeeded but its reply was lost, so the retry saw a changed token."""
    _seed(registry)
    _add_version(registry, "v2")
    base = reg.resolve_alias(DEFAULT, registry, "cxr", "production")
    real_write_if = storage.Objects.write_if

    def write_then_lose_reply(self: storage.Objects, uri: str, data: bytes, *, expected_token: str | None) -> str:
        real_write_if(self, uri, data, expected_token=expected_token)
        raise PreconditionFailed(f"The object {uri} changed since it was read; another writer updated it.")

    monkeypatch.setattr(storage.Objects, "write_if", write_then_lose_reply)
    record = _promote(registry, "v2", expected_token=base.token, request=REQ_A)
    assert (record.version, record.previous, record.request) == ("v2", "v1", REQ_A)
    assert reg.resolve_alias(DEFAULT, registry, "cxr", "production").record == record

"""forgetmi_operator.registry on file:// and on a moto S3 server over HTTP."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from forgetmi_operator.registry import aliases as reg
from forgetmi_operator.registry import paths
from forgetmi_operator.registry.aliases import AliasConflict, ModelNotFound, RegistryError, RequestRef
from forgetmi_trainer import storage
from forgetmi_trainer.errors import PreconditionFailed

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


def _seed(registry: str, version: str = "v1") -> str:
    sha = _add_version(registry, version)
    reg.promote(registry, "cxr", "production", new_version=version, new_sha256=sha, expected_token=None,
                request=None)
    return sha


def test_resolve_alias(registry: str) -> None:
    sha = _seed(registry)
    resolved = reg.resolve_alias(registry, "cxr", "production")
    assert (resolved.version, resolved.sha256) == ("v1", sha)
    assert resolved.uri == paths.version_uri(registry, "cxr", "v1")
    assert resolved.token == storage.read_versioned(paths.alias_uri(registry, "cxr", "production"))[1]
    stored = json.loads(storage.read_bytes(paths.alias_uri(registry, "cxr", "production")))
    assert set(stored) == {"version", "sha256", "previous", "updatedAt", "request", "history"}
    assert stored["previous"] is None and stored["request"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stored["updatedAt"])


def test_missing_alias_and_version_messages(registry: str) -> None:
    with pytest.raises(ModelNotFound) as info:
        reg.resolve_alias(registry, "cxr", "production")
    assert str(info.value) == f"Model 'cxr' has no alias 'production' in {registry}."
    with pytest.raises(ModelNotFound) as info:
        reg.check_version(registry, "cxr", "v9")
    assert str(info.value) == f"Model 'cxr' has no version 'v9' in {registry}."
    _add_version(registry, "v2", files=("config.json",))
    with pytest.raises(ModelNotFound) as info:
        reg.check_version(registry, "cxr", "v2")
    assert str(info.value) == (f"Version 'v2' of model 'cxr' has no model.safetensors in "
                               f"{paths.version_uri(registry, 'cxr', 'v2')}.")


def test_resolve_alias_naming_a_version_without_model_file(registry: str) -> None:
    _seed(registry)
    storage.delete(storage.join(paths.version_uri(registry, "cxr", "v1"), "model.safetensors"))
    with pytest.raises(ModelNotFound, match=r"Version 'v1' of model 'cxr', named by alias 'production', "
                                            r"has no model\.safetensors in "):
        reg.resolve_alias(registry, "cxr", "production")


def test_malformed_alias_record(registry: str) -> None:
    storage.write_json(paths.alias_uri(registry, "cxr", "production"), {"version": "v1", "colour": "red"})
    with pytest.raises(RegistryError, match=r"production\.json is malformed: sha256: Field required\."):
        reg.resolve_alias(registry, "cxr", "production")


def test_promote_moves_alias_and_records_previous(registry: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sha1 = _seed(registry)
    monkeypatch.setattr(reg, "HISTORY_LIMIT", 2)
    for version in ["v2", "v3", "v4"]:
        sha = _add_version(registry, version)
        base = reg.resolve_alias(registry, "cxr", "production")
        record = reg.promote(registry, "cxr", "production", new_version=version, new_sha256=sha,
                             expected_token=base.token, request=REQ_A)
        assert record.previous == base.version
    resolved = reg.resolve_alias(registry, "cxr", "production")
    assert (resolved.version, resolved.sha256, resolved.record) == ("v4", sha, record)
    assert [h.version for h in record.history] == ["v3", "v2"]  # bounded, newest first
    assert record.request == REQ_A
    reg.promote(registry, "cxr", "production", new_version="v1", new_sha256=sha1,
                expected_token=resolved.token, request=REQ_B)
    assert reg.resolve_alias(registry, "cxr", "production").record.previous == "v4"


def test_concurrent_alias_change_is_detected(registry: str) -> None:
    _seed(registry)
    sha2, sha3 = _add_version(registry, "v2"), _add_version(registry, "v3")
    mine = reg.resolve_alias(registry, "cxr", "production")
    theirs = reg.resolve_alias(registry, "cxr", "production")
    reg.promote(registry, "cxr", "production", new_version="v3", new_sha256=sha3,
                expected_token=theirs.token, request=REQ_B)
    with pytest.raises(AliasConflict) as info:
        reg.promote(registry, "cxr", "production", new_version="v2", new_sha256=sha2,
                    expected_token=mine.token, request=REQ_A)
    assert str(info.value) == ("Alias 'production' of model 'cxr' changed since it was resolved (it now "
                               "names version 'v3'); the promotion was not written.")
    now = reg.resolve_alias(registry, "cxr", "production")
    assert (now.version, now.record.request) == ("v3", REQ_B)


def test_create_when_alias_already_exists_is_a_conflict(registry: str) -> None:
    _seed(registry)
    sha2 = _add_version(registry, "v2")
    with pytest.raises(AliasConflict, match="now names version 'v1'"):
        reg.promote(registry, "cxr", "production", new_version="v2", new_sha256=sha2, expected_token=None,
                    request=REQ_A)


def test_promote_refuses_broken_versions(registry: str) -> None:
    _seed(registry)
    before = reg.resolve_alias(registry, "cxr", "production")
    sha2 = _add_version(registry, "v2")
    with pytest.raises(RegistryError, match=f"has sha256 {sha2}, expected {'a' * 64}; alias 'production'"):
        reg.promote(registry, "cxr", "production", new_version="v2", new_sha256="a" * 64,
                    expected_token=before.token, request=REQ_A)
    _add_version(registry, "v3", files=("model.safetensors",))
    with pytest.raises(ModelNotFound, match=r"Version 'v3' of model 'cxr' has no config\.json"):
        reg.promote(registry, "cxr", "production", new_version="v3", new_sha256=sha2,
                    expected_token=before.token, request=REQ_A)
    with pytest.raises(ModelNotFound, match="has no version 'v4'"):
        reg.promote(registry, "cxr", "production", new_version="v4", new_sha256=sha2,
                    expected_token=before.token, request=REQ_A)
    after = reg.resolve_alias(registry, "cxr", "production")
    assert (after.version, after.token) == ("v1", before.token)


def test_repeated_promotion_is_idempotent(registry: str) -> None:
    _seed(registry)
    sha2 = _add_version(registry, "v2")
    base = reg.resolve_alias(registry, "cxr", "production")
    first = reg.promote(registry, "cxr", "production", new_version="v2", new_sha256=sha2,
                        expected_token=base.token, request=REQ_A)
    token = reg.resolve_alias(registry, "cxr", "production").token
    again = reg.promote(registry, "cxr", "production", new_version="v2", new_sha256=sha2,
                        expected_token=base.token, request=REQ_A)
    assert again == first
    assert reg.resolve_alias(registry, "cxr", "production").token == token  # nothing rewritten
    with pytest.raises(AliasConflict):  # the same version from another request is not "already done"
        reg.promote(registry, "cxr", "production", new_version="v2", new_sha256=sha2,
                    expected_token=base.token, request=REQ_B)


def test_lost_reply_of_a_landed_write_is_not_a_conflict(registry: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The conditional PUT succeeded but its reply was lost, so the retry saw a changed token."""
    _seed(registry)
    sha2 = _add_version(registry, "v2")
    base = reg.resolve_alias(registry, "cxr", "production")
    real_write_if = storage.write_if

    def write_then_lose_reply(uri: str, data: bytes, *, expected_token: str | None) -> str:
        real_write_if(uri, data, expected_token=expected_token)
        raise PreconditionFailed(f"The object {uri} changed since it was read; another writer updated it.")

    monkeypatch.setattr(storage, "write_if", write_then_lose_reply)
    record = reg.promote(registry, "cxr", "production", new_version="v2", new_sha256=sha2,
                         expected_token=base.token, request=REQ_A)
    assert (record.version, record.previous, record.request) == ("v2", "v1", REQ_A)
    assert reg.resolve_alias(registry, "cxr", "production").record == record

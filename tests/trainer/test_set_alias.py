"""``train --alias`` (``aliases``): the trainer points a registry alias at the version it published,
in the operator's record format, with the same conditional write; on file:// and on moto S3."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from forgetmi_operator.registry import aliases as operator_aliases
from forgetmi_trainer import aliases, storage, synthetic
from forgetmi_trainer.cli import main
from forgetmi_trainer.contract import AliasRecord, RequestRef
from forgetmi_trainer.errors import AliasConflict, ConfigError, InputError

NAME = "cxr"


@pytest.fixture(params=["file", "s3"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "s3":
        return storage.join(request.getfixturevalue("s3_bucket"), "registry")
    return storage.join(tmp_path.as_uri(), "registry")


def _publish(registry: str, version: str) -> str:
    """A published version (weights and the metadata.json recording their sha256); returns the sha256."""
    weights = f"weights of {version}".encode()
    uri = storage.join(registry, NAME, "versions", version)
    sha = storage.write_bytes(storage.join(uri, "model.safetensors"), weights)
    storage.write_bytes(storage.join(uri, "config.json"), b"{}")
    files = {"model.safetensors": sha, "config.json": hashlib.sha256(b"{}").hexdigest()}
    storage.write_json(storage.join(uri, "metadata.json"), {"version": version, "sha256": sha, "files": files})
    return sha


def _stored(registry: str, alias: str = "production") -> AliasRecord:
    return AliasRecord.model_validate_json(storage.read_bytes(storage.join(registry, NAME, "aliases", f"{alias}.json")))


def test_registry_version_is_read_from_the_out_uri() -> None:
    assert aliases.registry_version("s3://bucket/models/cxr/versions/v1") == ("s3://bucket/models", "cxr", "v1")
    assert aliases.registry_version("file:///r/cxr/versions/v2/") == ("file:///r", "cxr", "v2")
    for bad in ("s3://bucket/models/cxr/v1", "file:///r/cxr/versions/", "models/cxr/versions/v1",
                "s3://bucket/cxr/versions/-v1"):
        with pytest.raises(ConfigError, match=r"--alias needs --out to be a registry version "
                                              r"<registry>/<name>/versions/<version>; got "):
            aliases.registry_version(bad)


def test_set_alias_creates_moves_and_keeps_history(registry: str) -> None:
    sha1, sha2, sha3 = (_publish(registry, v) for v in ("v1", "v2", "v3"))
    first = aliases.set_alias(registry, NAME, "production", "v1", sha1)
    assert (first.version, first.sha256, first.previous, first.request, first.history) == ("v1", sha1, None, None, [])
    assert _stored(registry) == first
    aliases.set_alias(registry, NAME, "production", "v2", sha2)
    third = aliases.set_alias(registry, NAME, "production", "v3", sha3)
    assert (third.version, third.previous) == ("v3", "v2")
    assert [(h.version, h.sha256) for h in third.history] == [("v2", sha2), ("v1", sha1)]
    assert _stored(registry) == third
    stored = json.loads(storage.read_bytes(storage.join(registry, NAME, "aliases", "production.json")))
    assert set(stored) == {"version", "sha256", "previous", "updatedAt", "request", "history"}


def test_setting_the_alias_it_already_has_writes_nothing(registry: str) -> None:
    sha = _publish(registry, "v1")
    first = aliases.set_alias(registry, NAME, "staging", "v1", sha)
    uri = storage.join(registry, NAME, "aliases", "staging.json")
    token = storage.read_versioned(uri)[1]
    assert aliases.set_alias(registry, NAME, "staging", "v1", sha) == first
    assert storage.read_versioned(uri)[1] == token


def test_the_operator_reads_and_moves_a_trainer_alias(registry: str) -> None:
    sha1, _ = _publish(registry, "v1"), _publish(registry, "v2")
    aliases.set_alias(registry, NAME, "production", "v1", sha1)
    resolved = operator_aliases.resolve_alias(storage.DEFAULT, registry, NAME, "production")
    assert (resolved.version, resolved.sha256) == ("v1", sha1)
    verified = operator_aliases.verify_version(storage.DEFAULT, registry, NAME, "v2")
    request = RequestRef(namespace="radiology", name="forget-a", uid="uid-a")
    moved = operator_aliases.promote(storage.DEFAULT, registry, NAME, "production", version=verified,
                                     expected_token=resolved.token, request=request)
    assert (moved.previous, moved.history[0].version, moved.request) == ("v1", "v1", request)


def test_an_alias_moved_meanwhile_is_a_conflict(registry: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sha1, sha2, sha3 = (_publish(registry, v) for v in ("v1", "v2", "v3"))
    aliases.set_alias(registry, NAME, "production", "v1", sha1)
    write_if = storage.write_if

    def another_writer_first(uri: str, data: bytes, *, expected_token: str | None) -> str:
        monkeypatch.setattr(storage, "write_if", write_if)
        aliases.set_alias(registry, NAME, "production", "v3", sha3)  # lands between our read and our write
        return write_if(uri, data, expected_token=expected_token)

    monkeypatch.setattr(storage, "write_if", another_writer_first)
    with pytest.raises(AliasConflict, match=r"^Alias 'production' of model 'cxr' changed while it was being set "
                                            r"\(it now names version 'v3'\); it was not moved to version 'v2'\.$"):
        aliases.set_alias(registry, NAME, "production", "v2", sha2)
    assert _stored(registry).version == "v3"


def test_only_a_published_version_with_that_digest_gets_an_alias(registry: str) -> None:
    sha = _publish(registry, "v1")
    with pytest.raises(InputError, match=r"^Version 'v9' of model 'cxr' has no metadata\.json in .*; only a "
                                         r"published version gets an alias\.$"):
        aliases.set_alias(registry, NAME, "production", "v9", sha)
    with pytest.raises(InputError, match=rf"metadata\.json records sha256 {sha}, not {'0' * 64}; the alias was not"):
        aliases.set_alias(registry, NAME, "production", "v1", "0" * 64)
    with pytest.raises(ConfigError, match=r"--alias 'Prod_1' must be a DNS label"):
        aliases.set_alias(registry, NAME, "Prod_1", "v1", sha)
    assert not storage.exists(storage.join(registry, NAME, "aliases", "production.json"))


@pytest.mark.usefixtures("restore_trainer_logging")
def test_train_alias_publishes_then_points_the_alias(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    samples = synthetic.generate(synthetic.SynthParams(patients=6, seed=1))
    manifest = synthetic.write_dataset(samples, (tmp_path / "data").as_uri())
    registry = (tmp_path / "registry").as_uri()
    for version, previous in (("v1", None), ("v2", "v1")):
        out = storage.join(registry, NAME, "versions", version)
        assert main(["train", "--manifest", manifest, "--out", out, "--epochs", "1", "--device", "cpu",
                     "--alias", "production"]) == 0
        printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert printed["alias"] == {"name": "production", "version": version, "previous": previous}
        record = _stored(registry)
        assert (record.version, record.sha256, record.previous) == (version, printed["sha256"], previous)
        assert storage.read_json(storage.join(out, "metadata.json"))["version"] == version
    code = main(["train", "--manifest", str(tmp_path / "absent.csv"), "--out", storage.join(registry, NAME),
                 "--alias", "production"])
    assert code == 2  # refused before anything is read or trained
    assert "--alias needs --out to be a registry version" in capsys.readouterr().err

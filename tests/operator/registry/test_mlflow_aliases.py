"""mlflow_aliases against a real MLflow server (SQLite store, artifacts on the moto S3 server):
resolving an alias, promoting with the checks before and after, the alias record in tags, rollback,
and errors that name the model or alias and never a secret."""

from __future__ import annotations

import sys
import uuid
from typing import Any

import pytest
from harness.mlflowserver import MlflowServer

from forgetmi_operator.registry import mlflow_aliases
from forgetmi_operator.registry.aliases import AliasConflict, ModelNotFound
from forgetmi_operator.registry.mlflow_aliases import Credentials, MlflowUnavailable, Registry
from forgetmi_trainer.contract.registry import AliasRecord, PreviousVersion, RequestRef

pytest.importorskip("mlflow")
pytestmark = pytest.mark.timeout(300)
SHA = {n: f"{n:x}" * 64 for n in range(1, 10)}
REQUEST = RequestRef(namespace="radiology", name="forget-p1", uid="0b3f9c2e-uid")


@pytest.fixture
def server(mlflow_server: MlflowServer) -> MlflowServer:
    return mlflow_server


@pytest.fixture
def registry(server: MlflowServer) -> Registry:
    return Registry(server.registry_uri)


def _model(registry: Registry, versions: int = 3, alias: str = "champion") -> str:
    """A registered model with ``versions`` versions (tagged with their sha256), alias on version 1."""
    from mlflow.entities.model_registry import ModelVersionTag

    name = f"cxr-{uuid.uuid4().hex[:8]}"
    registry.store.create_registered_model(name)
    for n in range(1, versions + 1):
        registry.store.create_model_version(name, f"s3://models/{name}/{n}", tags=[
            ModelVersionTag("forgetmi.sha256", SHA[n])])
    registry.store.set_registered_model_alias(name, alias, "1")
    return name


def test_an_alias_resolves_to_its_version_source_and_declared_digest(registry: Registry) -> None:
    name = _model(registry)
    found = registry.resolve(name, "champion")
    assert (found.version, found.source, found.sha256, found.record) == ("1", f"s3://models/{name}/1", SHA[1], None)


def test_a_missing_model_or_alias_is_named(registry: Registry) -> None:
    with pytest.raises(ModelNotFound, match=r"registered model 'no-such-model'.*does not exist"):
        registry.resolve("no-such-model", "champion")
    name = _model(registry)
    with pytest.raises(ModelNotFound, match=f"Registered model '{name}' has no alias 'staging'"):
        registry.resolve(name, "staging")


def test_an_unreachable_server_is_transient_and_names_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    secret = Credentials(token="tok-3c1d-secret", username="svc", password="pw-9f2a-secret")
    gone = Registry("mlflow+http://127.0.0.1:9/prefix", secret)
    with pytest.raises(MlflowUnavailable, match=r"mlflow\+http://127.0.0.1:9/prefix could not read") as caught:
        gone.resolve("m", "champion")
    text = f"{caught.value} {caught.value!r} {secret!r}"
    assert "tok-3c1d-secret" not in text and "pw-9f2a-secret" not in text


def test_promotion_moves_the_alias_records_it_and_is_idempotent(registry: Registry) -> None:
    name = _model(registry)
    record = mlflow_aliases.promote(registry, name, "champion", base="1", candidate="2", sha256=SHA[2],
                                    request=REQUEST)
    assert registry.current(name, "champion") == "2"
    assert (record.version, record.previous, record.request) == ("2", "1", REQUEST)
    assert registry.resolve(name, "champion").record == record
    again = mlflow_aliases.promote(registry, name, "champion", base="1", candidate="2", sha256=SHA[2],
                                   request=REQUEST)
    assert again == record  # a retried handler finds its promotion done
    later = RequestRef(namespace="radiology", name="forget-p2", uid="uid-2")
    third = mlflow_aliases.promote(registry, name, "champion", base="2", candidate="3", sha256=SHA[3], request=later)
    assert [old.version for old in third.history] == ["2"]
    assert third.history[0].request == REQUEST and third.history[0].sha256 == SHA[2]


def test_an_alias_moved_by_someone_else_since_accept_is_not_overwritten(registry: Registry) -> None:
    name = _model(registry)
    accepted = registry.resolve(name, "champion").version
    registry.store.set_registered_model_alias(name, "champion", "3")  # someone else, between accept and promote
    with pytest.raises(AliasConflict, match="now names version '3'"):
        mlflow_aliases.promote(registry, name, "champion", base=accepted, candidate="2", sha256=SHA[2],
                               request=REQUEST)
    assert registry.current(name, "champion") == "3"
    assert registry.record(name, "champion") is None


def test_a_move_during_the_promotion_is_detected_and_the_record_taken_back(
        registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    name = _model(registry)
    first = mlflow_aliases.promote(registry, name, "champion", base="1", candidate="2", sha256=SHA[2], request=None)
    real_write = registry.write_record
    moves: list[Any] = []

    def write_then_someone_moves(model: str, alias: str, record: AliasRecord) -> None:
        real_write(model, alias, record)
        if not moves:
            moves.append(record)
            registry.store.set_registered_model_alias(model, alias, "1")  # someone else, right after our set

    monkeypatch.setattr(registry, "write_record", write_then_someone_moves)
    with pytest.raises(AliasConflict, match="now names version '1'"):
        mlflow_aliases.promote(registry, name, "champion", base="2", candidate="3", sha256=SHA[3], request=REQUEST)
    assert registry.current(name, "champion") == "1"  # their move stands
    assert registry.record(name, "champion") == first  # our record of version 3 was taken back


def test_a_long_history_is_kept_over_several_tags_and_stale_ones_removed(registry: Registry) -> None:
    name = _model(registry)
    history = [PreviousVersion(version=str(1000 + i), sha256=SHA[1 + i % 9], updated_at="2026-12-01T00:00:00Z",
                               request=REQUEST) for i in range(100)]
    long = AliasRecord(version="1", sha256=SHA[1], updated_at="2026-12-02T00:00:00Z", history=history)
    registry.write_record(name, "champion", long)
    tags = registry.model(name).tags
    chunks = int(tags["forgetmi.alias.champion.chunks"])
    assert chunks > 2 and all(len(tags[f"forgetmi.alias.champion.{i}"]) <= 4000 for i in range(chunks))
    assert registry.record(name, "champion") == long
    short = AliasRecord(version="1", sha256=SHA[1], updated_at="2026-12-02T00:00:00Z")
    registry.write_record(name, "champion", short)
    tags = registry.model(name).tags
    assert tags["forgetmi.alias.champion.chunks"] == "1" and "forgetmi.alias.champion.1" not in tags
    assert registry.record(name, "champion") == short


def test_a_damaged_record_is_named_not_guessed(registry: Registry) -> None:
    from mlflow.entities.model_registry import RegisteredModelTag

    name = _model(registry)
    registry.store.set_registered_model_tag(name, RegisteredModelTag("forgetmi.alias.champion.chunks", "2"))
    registry.store.set_registered_model_tag(name, RegisteredModelTag("forgetmi.alias.champion.0", "{"))
    with pytest.raises(mlflow_aliases.RegistryError, match=r"record of alias 'champion'.*damaged"):
        registry.record(name, "champion")


def test_rollback_moves_back_only_its_own_promotion(registry: Registry) -> None:
    name = _model(registry)
    mlflow_aliases.promote(registry, name, "champion", base="1", candidate="2", sha256=SHA[2], request=REQUEST)
    said = mlflow_aliases.rollback(registry, name, "champion", candidate="2", base="1", base_sha256=SHA[1],
                                   request=REQUEST)
    assert said.endswith("was moved back to version '1'.") and registry.current(name, "champion") == "1"
    record = registry.record(name, "champion")
    assert record is not None and (record.version, record.previous) == ("1", "2")
    registry.store.set_registered_model_alias(name, "champion", "3")
    said = mlflow_aliases.rollback(registry, name, "champion", candidate="3", base="1", base_sha256=SHA[1],
                                   request=REQUEST)
    assert "set by someone else" in said and registry.current(name, "champion") == "3"


@pytest.mark.parametrize(("uri", "tracking"), [("mlflow+http://mlflow.mlops:5000", "http://mlflow.mlops:5000"),
                                               ("mlflow+https://reg.example.org/mlflow/", "https://reg.example.org/mlflow")])
def test_registry_uris_name_the_tracking_server(uri: str, tracking: str) -> None:
    assert mlflow_aliases.is_mlflow(uri) and mlflow_aliases.tracking_uri(uri) == tracking


@pytest.mark.parametrize("uri", ["mlflow+ftp://host", "mlflow+http://user:pw@host", "mlflow+http://host?x=1",
                                 "http://host", "mlflow+http://"])
def test_other_uris_are_refused_with_the_form_expected(uri: str) -> None:
    with pytest.raises(ValueError, match=r"mlflow\+http\(s\)://host\[:port\]\[/path\]"):
        mlflow_aliases.tracking_uri(uri)


def test_without_the_mlflow_extra_a_registry_is_refused_saying_how_to_install_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("mlflow", "mlflow.store.model_registry.rest_store", "mlflow.utils.rest_utils"):
        monkeypatch.setitem(sys.modules, module, None)  # an import of it raises ImportError
    with pytest.raises(mlflow_aliases.RegistryError, match=r"forgetmi-operator\[mlflow\]"):
        Registry("mlflow+http://mlflow.mlops:5000")

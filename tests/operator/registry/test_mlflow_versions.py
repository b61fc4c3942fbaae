"""mlflow_versions against a real MLflow server (SQLite store, artifacts on the moto S3 server): a
version's files in the artifact store, and a candidate registered once as a tagged version with its
report and receipt as run artifacts."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from harness.mlflowserver import MlflowServer

from forgetmi_operator.registry import mlflow_aliases, mlflow_versions
from forgetmi_operator.registry.aliases import ModelNotFound
from forgetmi_operator.registry.mlflow_aliases import Registry
from forgetmi_trainer import storage

pytest.importorskip("mlflow")
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def bucket(mlflow_bucket: str) -> str:
    return mlflow_bucket


@pytest.fixture
def server(mlflow_server: MlflowServer) -> MlflowServer:
    return mlflow_server


def _tags(uid: str, report: bytes, receipt: bytes) -> dict[str, str]:
    return {"forgetmi.request.uid": uid, "forgetmi.parent.version": "1", "forgetmi.method": "forget_mi",
            "forgetmi.report.sha256": hashlib.sha256(report).hexdigest(),
            "forgetmi.receipt.sha256": hashlib.sha256(receipt).hexdigest()}


def test_a_candidate_is_registered_once_with_its_tags_and_artifacts(
        server: MlflowServer, bucket: str, s3_env: str) -> None:
    registry = Registry(server.registry_uri)
    name = f"cxr-{uuid.uuid4().hex[:8]}"
    registry.store.create_registered_model(name)
    registry.store.create_model_version(name, f"{bucket}/models/{name}/1")
    report, receipt = b'{"schemaVersion": 1}\n', b'{"decision": "Promoted"}\n'
    source = f"{bucket}/staging/{name}/v1-fmi-0b3f9c2e"
    storage.write_text(f"{source}/model.safetensors", "weights")
    tags = _tags("uid-0b3f9c2e", report, receipt)
    version = mlflow_versions.register_candidate(
        registry, name, candidate="v1-fmi-0b3f9c2e", source=source, tags=tags,
        artifacts={"report.json": report, "receipt.json": receipt}, write=storage.write_bytes)
    assert version == "2"
    registered = registry.store.get_model_version(name, version)
    assert registered.source == source
    assert {key: registered.tags[key] for key in tags} == tags
    assert registered.tags["forgetmi.candidate"] == "v1-fmi-0b3f9c2e"
    from mlflow.store.tracking.rest_store import RestStore

    run = RestStore(registry.store.get_host_creds).get_run(registered.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["forgetmi.request.uid"] == "uid-0b3f9c2e"
    assert storage.read_bytes(f"{run.info.artifact_uri}/report.json") == report
    assert storage.read_bytes(f"{run.info.artifact_uri}/receipt.json") == receipt
    again = mlflow_versions.register_candidate(
        registry, name, candidate="v1-fmi-0b3f9c2e", source=source, tags=tags,
        artifacts={"report.json": report, "receipt.json": receipt}, write=storage.write_bytes)
    assert again == "2"  # a retried handler finds it
    assert [v.version for v in registry.store.search_model_versions(f"name = '{name}'")] == ["2", "1"]
    assert mlflow_versions.download_uri(registry, name, "2") == source
    registry.store.set_registered_model_alias(name, "champion", "1")
    mlflow_aliases.promote(registry, name, "champion", base="1", candidate=version, sha256="a" * 64, request=None)
    assert registry.current(name, "champion") == "2"


def test_a_candidate_without_every_tag_is_refused_before_anything_is_written(server: MlflowServer) -> None:
    registry = Registry(server.registry_uri)
    with pytest.raises(ValueError, match=r"forgetmi\.receipt\.sha256"):
        mlflow_versions.register_candidate(registry, "any", candidate="c", source="s3://b/c", tags={
            key: "x" for key in mlflow_versions.TAG_KEYS[:-1]}, artifacts={}, write=storage.write_bytes)


def test_the_files_of_a_missing_version_are_not_found(server: MlflowServer) -> None:
    with pytest.raises(ModelNotFound, match="version 7 of registered model 'nope'"):
        mlflow_versions.download_uri(Registry(server.registry_uri), "nope", "7")

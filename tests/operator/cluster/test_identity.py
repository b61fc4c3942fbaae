"""cluster.identity: a request's objects are read with its own namespace's credentials and within its
namespace's reach — never with the operator's identity, never a file:// URI — and a request naming
what it may not reach is refused before anything is read."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest
from harness.clusters import make_cluster

from forgetmi_operator.api.errors import CredentialsMissing, SecretNotFound, UriRefused
from forgetmi_operator.api.settings import NamespacePolicy, Settings
from forgetmi_operator.cluster import identity, launcher
from forgetmi_trainer.errors import OutOfReach
from forgetmi_trainer.storage import Objects, S3Storage

NS = "radiology"


def _secret(name: str, **keys: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in keys.items()}}


class Secrets:
    """The Secrets of the namespace; records every read, and every object create (there must be none)."""

    def __init__(self, *secrets: dict[str, Any]) -> None:
        self.secrets = {s["metadata"]["name"]: s for s in secrets}
        self.reads: list[str] = []
        self.created: list[str] = []

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(name)
        return self.secrets.get(name)

    async def create_or_get_secret(self, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        self.created.append(body["metadata"]["name"])
        return body, True

    async def create_or_get_configmap(self, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        self.created.append(body["metadata"]["name"])
        return body, True

    async def create_or_get_job(self, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        self.created.append(body["metadata"]["name"])
        return body, True

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    async def delete_secret(self, namespace: str, name: str, *, uid: str | None = None) -> bool:
        return False


def _body(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "r1", "namespace": NS, "uid": "u-1", "generation": 1},
            "spec": {"model": {"registryUri": "s3://team-a/registry", "name": "cxr"},
                     "data": {"manifestUri": "s3://team-a/data/manifest.csv"},
                     "forget": {"subjectsUri": "s3://team-a/ids.txt"}, **spec}}


KEYS = {"AWS_ACCESS_KEY_ID": "AKIA-RADIOLOGY", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}


def _storage_for(store: Secrets, settings: Settings, body: dict[str, Any]) -> Objects:
    return asyncio.run(identity.storage_for(store, settings, body))


def _signing_key(objects: Objects) -> str:
    """The access key the S3 client of ``objects`` signs its calls with."""
    client = S3Storage(objects.endpoint_url, objects.settings).client
    return str(client._request_signer._credentials.access_key)


@pytest.mark.parametrize(("spec", "settings", "chosen"), [
    ({"credentialsSecretRef": {"name": "mine"}}, Settings(credentials_secret="default",
                                                          namespace_policies={NS: NamespacePolicy(
                                                              credentials_secret="tenant")}), "mine"),
    ({}, Settings(credentials_secret="default", namespace_policies={NS: NamespacePolicy(credentials_secret="tenant")}),
     "tenant"),
    ({}, Settings(credentials_secret="default"), "default"),
])
def test_the_request_reads_with_its_namespaces_credentials(spec: dict[str, Any], settings: Settings,
                                                           chosen: str) -> None:
    store = Secrets(*(_secret(name, **{**KEYS, "AWS_ACCESS_KEY_ID": f"AKIA-{name}"})
                      for name in ("mine", "tenant", "default")))
    objects = _storage_for(store, settings, _body(**spec))
    assert store.reads == [chosen]
    assert objects.settings is not None and objects.settings.credentials is not None
    assert _signing_key(objects) == f"AKIA-{chosen}"
    assert "s3cr3t" not in repr(objects.settings)  # keys never shown


def test_the_handle_retries_as_the_operators_settings_say() -> None:
    """FORGETMI_S3_RETRY_MODE, _MAX_ATTEMPTS and _RETRY_QUOTA reach every request's S3 client."""
    store = Secrets(_secret("s3", **KEYS))
    settings = Settings(credentials_secret="s3", s3_retry_mode="standard", s3_max_attempts=4, s3_retry_quota=50)
    objects = _storage_for(store, settings, _body())
    assert objects.settings is not None
    assert (objects.settings.retry_mode, objects.settings.max_attempts, objects.settings.retry_quota) == (
        "standard", 4, 50)
    client = S3Storage(objects.endpoint_url, objects.settings).client
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 4}
    default = _storage_for(store, Settings(credentials_secret="s3"), _body()).settings
    assert default is not None
    assert (default.retry_mode, default.max_attempts, default.retry_quota) == ("adaptive", 10, 0)


def test_without_configured_credentials_an_s3_request_is_refused_not_read_as_the_operator() -> None:
    store = Secrets()
    with pytest.raises(CredentialsMissing, match=rf"names s3:// objects, but no S3 credentials are configured for "
                                                 rf"namespace {NS}: set spec\.credentialsSecretRef"):
        _storage_for(store, Settings(), _body())
    assert store.reads == []


def test_a_credentials_secret_without_its_keys_is_named_and_its_values_never_shown() -> None:
    store = Secrets(_secret("s3", AWS_ACCESS_KEY_ID="AKIA-ONLY"))
    with pytest.raises(SecretNotFound) as err:
        _storage_for(store, Settings(credentials_secret="s3"), _body())
    assert err.value.message.endswith(f"Secret {NS}/s3, the S3 credentials of UnlearnRequest {NS}/r1, has no "
                                      "AWS_SECRET_ACCESS_KEY.")
    assert "AKIA-ONLY" not in err.value.message
    with pytest.raises(SecretNotFound, match=rf"Secret {NS}/gone, the S3 credentials .* does not exist"):
        _storage_for(Secrets(), Settings(credentials_secret="gone"), _body())


def test_the_handle_refuses_file_uris_and_uris_outside_the_namespaces_prefixes() -> None:
    store = Secrets(_secret("s3", **KEYS))
    settings = Settings(credentials_secret="s3", namespace_policies={NS: NamespacePolicy(
        allowed_uri_prefixes=["s3://team-a/registry", "s3://team-a/data/"])})
    objects = _storage_for(store, settings, _body())
    objects.reach("s3://team-a/registry/cxr/aliases/production.json")
    for uri in ("file:///etc/hostname", "s3://team-b/ids.txt", "s3://team-a/registry-other/x",
                "s3://team-a/registry/../secrets/x"):
        with pytest.raises(OutOfReach):
            objects.reach(uri)
    with pytest.raises(OutOfReach):
        objects.read_bytes("file:///etc/hostname")


def _launch(store: Secrets, settings: Settings, body: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    touched: list[str] = []
    real = Objects.backend

    def spy(self: Objects, uri: str) -> Any:
        touched.append(uri)
        return real(self, uri)

    monkeypatch.setattr(Objects, "backend", spy)
    cluster = make_cluster(store, settings, storage_for=lambda b: identity.storage_for(store, settings, b))
    return asyncio.run(launcher.start(cluster, body)), touched


@pytest.mark.parametrize(("field", "uri"), [
    ("forget.subjectsUri", "s3://team-b/ids.txt"),
    ("forget.subjectsUri", "file:///etc/hostname"),
    ("data.manifestUri", "s3://team-b/data/manifest.csv"),
    ("model.registryUri", "file:///var/lib/operator/registry"),
])
def test_a_request_naming_what_its_namespace_may_not_reach_is_refused_without_touching_it(
        field: str, uri: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    store = Secrets(_secret("s3", **KEYS))
    settings = Settings(credentials_secret="s3",
                        namespace_policies={NS: NamespacePolicy(allowed_uri_prefixes=["s3://team-a/"])})
    body = _body()
    group, key = field.split(".")
    body["spec"][group] = {**body["spec"][group], key: uri}
    step, touched = _launch(store, settings, body, monkeypatch)
    accepted = next(c for c in step.status["conditions"] if c["type"] == "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", UriRefused.reason)
    assert accepted["message"].startswith(f"spec.{field} is refused: ")
    assert touched == [] and store.created == []  # nothing read, no copy of the list, no Job


def test_a_file_uri_is_refused_in_the_cluster_even_without_prefixes(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("P001\n")
    store = Secrets()
    body = _body(model={"registryUri": (tmp_path / "registry").as_uri(), "name": "cxr"},
                 data={"manifestUri": (tmp_path / "manifest.csv").as_uri()}, forget={"subjectsUri": ids.as_uri()})
    step, touched = _launch(store, Settings(), body, monkeypatch)
    assert step.error is not None and step.error.reason == "UriRefused"
    assert "file:// URI, which is refused here" in step.error.message
    assert touched == [] and store.created == []

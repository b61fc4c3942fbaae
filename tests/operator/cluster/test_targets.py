"""targets: a serving target is patched only when it opted in with its annotations, checked before
the alias moves and again (by the patch's ``test`` operations) when it is patched.

The real :class:`Kube` over fake API classes (no cluster needed)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from forgetmi_operator.api import naming
from forgetmi_operator.api.errors import ServingTargetError
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.api.spec import UnlearnRequestSpec, parse_spec
from forgetmi_operator.cluster.kube import Kube
from forgetmi_operator.cluster.targets import ClusterTargets

NS, URI = "radiology", "s3://models/registry/cxr/versions/v8"
ENV, CONTAINER, STORAGE_URI = (naming.MODEL_ENV_ANNOTATION, naming.MODEL_CONTAINER_ANNOTATION,
                               naming.MODEL_STORAGE_URI_ANNOTATION)
OPTED_IN = {ENV: "FORGETMI_MODEL_URI", CONTAINER: "server"}


class _Api:
    """A generated API class: reads return the objects in ``reads`` in turn (the last one again),
    patches are recorded and answered with the object."""

    def __init__(self, read: str, patch: str, *reads: dict[str, Any]) -> None:
        self.read_name, self.patch_name = read, patch
        self.reads = list(reads)
        self.patches: list[tuple[Any, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        if name == self.read_name:
            return lambda *args, **kwargs: self._response(self.reads.pop(0) if len(self.reads) > 1 else self.reads[0])
        if name == self.patch_name:
            def patch(*args: Any, **kwargs: Any) -> Any:
                self.patches.append((args[-1], kwargs))
                return self._response(self.reads[0])
            return patch
        raise AssertionError(f"unexpected API call {name}")

    @staticmethod
    def _response(body: dict[str, Any]) -> Any:
        return type("Response", (), {"data": json.dumps(body).encode()})()


def _deployment(annotations: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": "cxr-server", "namespace": NS, "annotations": annotations},
            "spec": {"template": {"spec": {"containers": [
                {"name": "sidecar", "env": [{"name": "DATABASE_URL", "value": "postgres://db"}]},
                {"name": "server", "env": [{"name": "KEEP", "value": "1"}]},
            ]}}}}


def _isvc(annotations: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": "cxr", "namespace": NS, "annotations": annotations},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "pytorch"}, "storageUri": "s3://old"}}}}


def _spec(**target: Any) -> UnlearnRequestSpec:
    return parse_spec({"model": {"registryUri": "s3://models/registry", "name": "cxr"},
                       "data": {"manifestUri": "s3://data/manifest.csv"},
                       "forget": {"subjectsUri": "s3://privacy/ids.txt"},
                       "rollout": {"target": {"kind": "Deployment", "name": "cxr-server", **target}}})


def _isvc_spec() -> UnlearnRequestSpec:
    return _spec(kind="InferenceService", name="cxr")


@pytest.fixture
def kube() -> Iterator[Kube]:
    api = Kube(client.ApiClient(client.Configuration()), request_timeout_seconds=1.0)
    yield api
    api.close()


def _apps(kube: Kube, *deployments: dict[str, Any]) -> _Api:
    kube.apps = _Api("read_namespaced_deployment", "patch_namespaced_deployment", *deployments)  # type: ignore[assignment]
    return kube.apps  # type: ignore[return-value]


def _custom(kube: Kube, *objects: dict[str, Any]) -> _Api:
    kube.custom = _Api("get_namespaced_custom_object", "patch_namespaced_custom_object",  # type: ignore[assignment]
                       *objects)
    return kube.custom  # type: ignore[return-value]


def _targets(kube: Kube) -> ClusterTargets:
    return ClusterTargets(kube, Settings(serving_targets_enabled=True))


def _refused(targets: ClusterTargets, spec: UnlearnRequestSpec) -> str:
    """The check's and the patch's message (the same refusal from both)."""
    with pytest.raises(ServingTargetError) as checked:
        asyncio.run(targets.check(spec, NS))
    with pytest.raises(ServingTargetError) as pointed:
        asyncio.run(targets.point(spec, NS, URI))
    assert checked.value.message == pointed.value.message
    return checked.value.message


# ---- Deployments ------------------------------------------------------------------------------------


def test_a_deployment_without_the_annotations_is_never_patched(kube: Kube) -> None:
    apps = _apps(kube, _deployment({}))
    message = _refused(_targets(kube), _spec())
    assert message == (f"Serving target Deployment {NS}/cxr-server has no annotation {ENV}: the operator patches "
                       "only a Deployment that names the env var it may set there (and the container in "
                       f"{CONTAINER}).")
    assert apps.patches == []


def test_a_request_naming_another_env_var_than_the_annotation_is_refused(kube: Kube) -> None:
    """The probe that overwrote DATABASE_URL of an unrelated Deployment."""
    apps = _apps(kube, _deployment({ENV: "FORGETMI_MODEL_URI", CONTAINER: "sidecar"}))
    message = _refused(_targets(kube), _spec(env="DATABASE_URL"))
    assert message == (f"Serving target Deployment {NS}/cxr-server does not let the operator set DATABASE_URL "
                       f"(spec.rollout.target.env): its annotation {ENV} names another env var.")
    assert "FORGETMI_MODEL_URI" not in message  # an annotation's value is not the requester's to read
    assert apps.patches == []


def test_a_deployment_without_the_container_annotation_is_refused(kube: Kube) -> None:
    _apps(kube, _deployment({ENV: "FORGETMI_MODEL_URI"}))
    assert _refused(_targets(kube), _spec(container="server")) == (
        f"Serving target Deployment {NS}/cxr-server has no annotation {CONTAINER} naming the container whose env "
        "var the operator may set.")


def test_a_request_naming_another_container_than_the_annotation_is_refused(kube: Kube) -> None:
    apps = _apps(kube, _deployment(OPTED_IN))
    assert _refused(_targets(kube), _spec(container="sidecar")) == (
        f"Serving target Deployment {NS}/cxr-server does not let the operator patch container sidecar "
        f"(spec.rollout.target.container): its annotation {CONTAINER} names another container.")
    assert apps.patches == []


def test_an_annotated_container_the_deployment_lacks_is_refused(kube: Kube) -> None:
    _apps(kube, _deployment({ENV: "FORGETMI_MODEL_URI", CONTAINER: "gone"}))
    assert _refused(_targets(kube), _spec()) == (
        f"Serving target Deployment {NS}/cxr-server has no container of the name its annotation {CONTAINER} gives.")


@pytest.mark.parametrize("container", [None, "server"])
def test_the_annotated_container_is_patched_with_tests_on_the_annotations(kube: Kube, container: str | None) -> None:
    apps = _apps(kube, _deployment(OPTED_IN))
    targets, spec = _targets(kube), _spec(**({"container": container} if container else {}))
    assert asyncio.run(targets.check(spec, NS)) is None
    asyncio.run(targets.point(spec, NS, URI))
    ((ops, kwargs),) = apps.patches
    assert ops == [
        {"op": "test", "path": "/metadata/annotations/unlearning.forgetmi.io~1model-env",
         "value": "FORGETMI_MODEL_URI"},
        {"op": "test", "path": "/metadata/annotations/unlearning.forgetmi.io~1model-container", "value": "server"},
        {"op": "test", "path": "/spec/template/spec/containers/1/name", "value": "server"},
        {"op": "add", "path": "/spec/template/spec/containers/1/env",
         "value": [{"name": "KEEP", "value": "1"}, {"name": "FORGETMI_MODEL_URI", "value": URI}]},
    ]
    assert kwargs["_content_type"] == "application/json-patch+json"


def test_an_annotation_removed_after_the_check_stops_the_patch(kube: Kube) -> None:
    """The object may change between the check and the patch: the patch reads it again."""
    apps = _apps(kube, _deployment(OPTED_IN), _deployment({}))
    targets, spec = _targets(kube), _spec()
    asyncio.run(targets.check(spec, NS))
    with pytest.raises(ServingTargetError, match=f"has no annotation {ENV}"):
        asyncio.run(targets.point(spec, NS, URI))
    assert apps.patches == []


# ---- InferenceServices ------------------------------------------------------------------------------


@pytest.mark.parametrize("annotations", [{}, {STORAGE_URI: "false"}, {STORAGE_URI: "True"}, {ENV: "X"}])
def test_an_inferenceservice_without_the_annotation_true_is_never_patched(kube: Kube,
                                                                          annotations: dict[str, str]) -> None:
    custom = _custom(kube, _isvc(annotations))
    assert _refused(_targets(kube), _isvc_spec()) == (
        f'Serving target InferenceService {NS}/cxr does not have the annotation {STORAGE_URI}: "true", which lets '
        "the operator set its spec.predictor.model.storageUri.")
    assert custom.patches == []


def test_an_opted_in_inferenceservice_is_patched_with_a_test_on_the_annotation(kube: Kube) -> None:
    custom = _custom(kube, _isvc({STORAGE_URI: "true"}))
    spec, targets = _isvc_spec(), _targets(kube)
    assert asyncio.run(targets.check(spec, NS)) is None
    asyncio.run(targets.point(spec, NS, URI))
    ((ops, kwargs),) = custom.patches
    assert ops == [
        {"op": "test", "path": "/metadata/annotations/unlearning.forgetmi.io~1model-storage-uri", "value": "true"},
        {"op": "add", "path": "/spec/predictor/model/storageUri", "value": URI},
    ]
    assert kwargs["_content_type"] == "application/json-patch+json"

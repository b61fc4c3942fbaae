"""kube: the thin API-client wrapper, exercised with fake API objects (no cluster needed)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from forgetmi_operator.api.errors import ClusterUnavailable, ObjectRejected, SecretNotFound, ServingTargetError
from forgetmi_operator.cluster.apiretry import RetryPolicy
from forgetmi_operator.cluster.kube import Kube
from forgetmi_operator.lifecycle.subjects import read_secret_key


class _Response:
    def __init__(self, body: Any) -> None:
        self.data = json.dumps(body).encode()


def _api_error(status: int) -> ApiException:
    return ApiException(status=status, reason={404: "Not Found", 409: "Conflict"}.get(status, "Internal Error"))


class _Fake:
    """Stands in for a generated API class: each method returns or raises what the test set."""

    def __init__(self, **methods: Callable[..., Any]) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._methods = methods

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            if name not in self._methods:
                raise AssertionError(f"unexpected API call {name}")
            return self._methods[name](*args, **kwargs)

        return call


def _returns(body: Any) -> Callable[..., Any]:
    return lambda *args, **kwargs: _Response(body)


def _raises(err: BaseException) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise err

    return fail


@pytest.fixture
def kube() -> Iterator[Kube]:
    api = Kube(client.ApiClient(client.Configuration()), request_timeout_seconds=7.0,
               retry=RetryPolicy(attempts=4, base_delay_seconds=0.0, max_delay_seconds=0.05))
    yield api
    api.close()


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_calls_pass_the_timeout_and_decode_json(kube: Kube) -> None:
    kube.batch = _Fake(read_namespaced_job=_returns({"metadata": {"name": "j"}}))  # type: ignore[assignment]
    assert _run(kube.get_job("ns", "j")) == {"metadata": {"name": "j"}}
    (name, args, kwargs) = kube.batch.calls[0]  # type: ignore[attr-defined]
    assert (name, args) == ("read_namespaced_job", ("j", "ns"))
    assert kwargs["_request_timeout"] == 7.0
    assert kwargs["_preload_content"] is False


def test_not_found_is_none(kube: Kube) -> None:
    kube.batch = _Fake(read_namespaced_job=_raises(_api_error(404)),  # type: ignore[assignment]
                       delete_namespaced_job=_raises(_api_error(404)))
    assert _run(kube.get_job("ns", "j")) is None
    assert _run(kube.delete_job("ns", "j")) is False


@pytest.mark.parametrize("err", [_api_error(500), ConnectionRefusedError("refused")])
def test_other_failures_are_retryable_cluster_errors(kube: Kube, err: BaseException) -> None:
    kube.batch = _Fake(read_namespaced_job=_raises(err))  # type: ignore[assignment]
    with pytest.raises(ClusterUnavailable, match="read Job ns/j") as caught:
        _run(kube.get_job("ns", "j"))
    assert caught.value.retryable
    assert caught.value.__cause__ is err
    assert len(kube.batch.calls) == 4  # type: ignore[attr-defined]  # every attempt of the policy was made


def test_create_or_get_creates_once_then_finds_the_existing_job(kube: Kube) -> None:
    body = {"metadata": {"name": "forgetmi-r-0b3f9c2e"}}
    kube.batch = _Fake(create_namespaced_job=_returns({**body, "new": True}))  # type: ignore[assignment]
    assert _run(kube.create_or_get_job("ns", body)) == ({**body, "new": True}, True)
    kube.batch = _Fake(create_namespaced_job=_raises(_api_error(409)),  # type: ignore[assignment]
                       read_namespaced_job=_returns({**body, "existing": True}))
    assert _run(kube.create_or_get_job("ns", body)) == ({**body, "existing": True}, False)


def test_a_subjects_secret_is_created_once_then_found_and_deleted_by_name(kube: Kube) -> None:
    body = {"metadata": {"name": "forgetmi-r-0b3f9c2e-subjects"}, "immutable": True}
    kube.core = _Fake(create_namespaced_secret=_returns(body))  # type: ignore[assignment]
    assert _run(kube.create_or_get_secret("ns", body)) == (body, True)
    kube.core = _Fake(create_namespaced_secret=_raises(_api_error(409)),  # type: ignore[assignment]
                      read_namespaced_secret=_returns({**body, "existing": True}))
    assert _run(kube.create_or_get_secret("ns", body)) == ({**body, "existing": True}, False)
    assert [(name, args) for name, args, _ in kube.core.calls] == [  # type: ignore[attr-defined]
        ("create_namespaced_secret", ("ns", body)), ("read_namespaced_secret", ("forgetmi-r-0b3f9c2e-subjects", "ns"))]
    kube.core = _Fake(delete_namespaced_secret=_returns({}))  # type: ignore[assignment]
    assert _run(kube.delete_secret("ns", "s")) is True
    assert _run(kube.delete_secret("ns", "s", uid="secret-uid")) is True
    assert [kwargs["body"] for _, _, kwargs in kube.core.calls] == [  # type: ignore[attr-defined]
        None, {"preconditions": {"uid": "secret-uid"}}]
    kube.core = _Fake(delete_namespaced_secret=_raises(_api_error(404)))  # type: ignore[assignment]
    assert _run(kube.delete_secret("ns", "s")) is False
    kube.core = _Fake(delete_namespaced_secret=_raises(_api_error(403)))  # type: ignore[assignment]
    with pytest.raises(ClusterUnavailable, match="delete Secret ns/s"):
        _run(kube.delete_secret("ns", "s"))


def test_create_failures_other_than_conflict_are_cluster_errors(kube: Kube) -> None:
    kube.core = _Fake(create_namespaced_config_map=_raises(_api_error(403)))  # type: ignore[assignment]
    with pytest.raises(ClusterUnavailable, match=r"create ConfigMap ns/cm .*HTTP 403"):
        _run(kube.create_or_get_configmap("ns", {"metadata": {"name": "cm"}}))


@pytest.mark.parametrize("status", [400, 413, 422])
def test_an_object_the_server_refuses_as_invalid_is_rejected_with_its_message_not_retried(
        kube: Kube, status: int) -> None:
    message = ('Job.batch "forgetmi-r-0b3f9c2e" is invalid: spec.template.spec.nodeSelector: Invalid value: '
               '"bad key!": name part must consist of alphanumeric characters.')
    err = ApiException(status=status, reason="Unprocessable Entity")
    err.body = json.dumps({"kind": "Status", "status": "Failure", "message": message, "code": status})
    kube.batch = _Fake(create_namespaced_job=_raises(err))  # type: ignore[assignment]
    with pytest.raises(ObjectRejected) as caught:
        _run(kube.create_or_get_job("ns", {"metadata": {"name": "forgetmi-r-0b3f9c2e"}}))
    assert not caught.value.retryable
    assert caught.value.reason == "RejectedByApiServer"
    assert caught.value.message == (f"The API server refused to create Job ns/forgetmi-r-0b3f9c2e as invalid "
                                    f"(HTTP {status}): {message.rstrip('.')}.")


def test_a_refusal_message_is_shortened_and_a_body_without_one_is_left_out(kube: Kube) -> None:
    err = ApiException(status=422, reason="Unprocessable Entity")
    err.body = json.dumps({"message": "x" * 1000})
    kube.batch = _Fake(read_namespaced_job=_raises(err))  # type: ignore[assignment]
    with pytest.raises(ObjectRejected) as caught:
        _run(kube.get_job("ns", "j"))
    assert len(caught.value.message) < 500 and caught.value.message.endswith("….")
    err = ApiException(status=500, reason="Internal Error")
    err.body = "<html>not json</html>"
    kube.batch = _Fake(read_namespaced_job=_raises(err))  # type: ignore[assignment]
    with pytest.raises(ClusterUnavailable) as unavailable:
        _run(kube.get_job("ns", "j"))
    assert unavailable.value.message == "The API server refused to read Job ns/j (HTTP 500 Internal Error)."


def test_a_secret_is_read_through_the_store_interface_and_a_missing_one_is_none(kube: Kube) -> None:
    """The Kube is the cluster's SecretStore: subjects.read_secret_key reads through it."""
    secret = {"data": {"subjects": base64.b64encode(b"P-1\nP-2").decode()}}
    kube.core = _Fake(read_namespaced_secret=_returns(secret))  # type: ignore[assignment]
    assert _run(read_secret_key(kube, "ns", "s", "subjects")) == b"P-1\nP-2"
    with pytest.raises(SecretNotFound, match="Secret ns/s has no key 'other'") as caught:
        _run(read_secret_key(kube, "ns", "s", "other"))
    assert "P-1" not in str(caught.value)
    kube.core = _Fake(read_namespaced_secret=_raises(_api_error(404)))  # type: ignore[assignment]
    assert _run(kube.get_secret("ns", "s")) is None
    with pytest.raises(SecretNotFound, match="Secret ns/s does not exist"):
        _run(read_secret_key(kube, "ns", "s", "subjects"))


def test_pods_are_filtered_to_the_job(kube: Kube) -> None:
    pods = {"items": [
        {"metadata": {"name": "a", "labels": {"batch.kubernetes.io/job-name": "j"}}},
        {"metadata": {"name": "b", "labels": {"job-name": "other"}}},
        {"metadata": {"name": "c", "ownerReferences": [{"kind": "Job", "name": "j"}]}},
    ]}
    kube.core = _Fake(list_namespaced_pod=_returns(pods))  # type: ignore[assignment]
    assert [pod["metadata"]["name"] for pod in _run(kube.list_pods_for_job("ns", "j"))] == ["a", "c"]
    assert kube.core.calls[0][2]["label_selector"] == "job-name=j"  # type: ignore[attr-defined]


OPTED_IN = {"metadata": {"annotations": {"unlearning.forgetmi.io/model-env": "FORGETMI_MODEL_URI",
                                          "unlearning.forgetmi.io/model-container": "server"}}}


def test_deployment_env_patch_tests_the_annotations_and_container_and_keeps_other_env(kube: Kube) -> None:
    deployment = {**OPTED_IN, "spec": {"template": {"spec": {"containers": [
        {"name": "sidecar"},
        {"name": "server", "env": [{"name": "KEEP", "value": "1"}, {"name": "FORGETMI_MODEL_URI", "value": "old"}]},
    ]}}}}
    kube.apps = _Fake(read_namespaced_deployment=_returns(deployment),  # type: ignore[assignment]
                      patch_namespaced_deployment=_returns(deployment))
    _run(kube.patch_deployment_env("ns", "d", "server", "FORGETMI_MODEL_URI", "s3://new"))
    name, args, kwargs = kube.apps.calls[1]  # type: ignore[attr-defined]
    assert name == "patch_namespaced_deployment"
    assert args[2] == [
        {"op": "test", "path": "/metadata/annotations/unlearning.forgetmi.io~1model-env",
         "value": "FORGETMI_MODEL_URI"},
        {"op": "test", "path": "/metadata/annotations/unlearning.forgetmi.io~1model-container", "value": "server"},
        {"op": "test", "path": "/spec/template/spec/containers/1/name", "value": "server"},
        {"op": "add", "path": "/spec/template/spec/containers/1/env",
         "value": [{"name": "KEEP", "value": "1"}, {"name": "FORGETMI_MODEL_URI", "value": "s3://new"}]},
    ]
    assert kwargs["_content_type"] == "application/json-patch+json"
    with pytest.raises(ServingTargetError, match="does not let the operator patch container missing"):
        _run(kube.patch_deployment_env("ns", "d", "missing", "FORGETMI_MODEL_URI", "s3://new"))
    assert len(kube.apps.calls) == 3  # type: ignore[attr-defined]  # read, patch, read: no second patch


def test_a_missing_serving_target_is_reported(kube: Kube) -> None:
    kube.apps = _Fake(read_namespaced_deployment=_raises(_api_error(404)))  # type: ignore[assignment]
    with pytest.raises(ServingTargetError, match="Deployment ns/d does not exist"):
        _run(kube.patch_deployment_env("ns", "d", None, "E", "v"))
    kube.custom = _Fake(get_namespaced_custom_object=_raises(_api_error(404)))  # type: ignore[assignment]
    with pytest.raises(ServingTargetError, match="InferenceService ns/isvc does not exist"):
        _run(kube.patch_inferenceservice_storage_uri("ns", "isvc", "s3://new"))
    isvc = {"metadata": {"annotations": {"unlearning.forgetmi.io/model-storage-uri": "true"}},
            "spec": {"predictor": {"model": {}}}}
    kube.custom = _Fake(get_namespaced_custom_object=_returns(isvc),  # type: ignore[assignment]
                        patch_namespaced_custom_object=_raises(_api_error(404)))  # deleted since it was read
    with pytest.raises(ServingTargetError, match="InferenceService ns/isvc does not exist"):
        _run(kube.patch_inferenceservice_storage_uri("ns", "isvc", "s3://new"))


def test_serving_targets_are_checked_without_changing_them(kube: Kube) -> None:
    deployment = {**OPTED_IN, "spec": {"template": {"spec": {"containers": [{"name": "server"}]}}}}
    kube.apps = _Fake(read_namespaced_deployment=_returns(deployment))  # type: ignore[assignment]
    _run(kube.check_deployment("ns", "d", "server", "FORGETMI_MODEL_URI"))
    _run(kube.check_deployment("ns", "d", None, "FORGETMI_MODEL_URI"))
    with pytest.raises(ServingTargetError, match="does not let the operator patch container other"):
        _run(kube.check_deployment("ns", "d", "other", "FORGETMI_MODEL_URI"))
    with pytest.raises(ServingTargetError, match="does not let the operator set OTHER_ENV"):
        _run(kube.check_deployment("ns", "d", None, "OTHER_ENV"))
    assert {name for name, _, _ in kube.apps.calls} == {"read_namespaced_deployment"}  # type: ignore[attr-defined]
    opted_in = {"annotations": {"unlearning.forgetmi.io/model-storage-uri": "true"}}
    isvc = {"metadata": opted_in,
            "spec": {"predictor": {"model": {"modelFormat": {"name": "pytorch"}, "storageUri": "s3://old"}}}}
    kube.custom = _Fake(get_namespaced_custom_object=_returns(isvc))  # type: ignore[assignment]
    _run(kube.check_inferenceservice("ns", "isvc"))
    _, args, _ = kube.custom.calls[0]  # type: ignore[attr-defined]
    assert args == ("serving.kserve.io", "v1beta1", "ns", "inferenceservices", "isvc")
    framework = {"metadata": opted_in, "spec": {"predictor": {"pytorch": {"storageUri": "s3://old"}}}}
    kube.custom = _Fake(get_namespaced_custom_object=_returns(framework))  # type: ignore[assignment]
    with pytest.raises(ServingTargetError, match=r"has no spec\.predictor\.model"):
        _run(kube.check_inferenceservice("ns", "isvc"))
    kube.custom = _Fake(get_namespaced_custom_object=_raises(_api_error(404)))  # type: ignore[assignment]
    with pytest.raises(ServingTargetError, match="InferenceService ns/isvc does not exist"):
        _run(kube.check_inferenceservice("ns", "isvc"))


def test_status_patch_is_a_merge_patch_of_the_status(kube: Kube) -> None:
    kube.custom = _Fake(patch_namespaced_custom_object_status=_returns({"ok": True}))  # type: ignore[assignment]
    assert _run(kube.patch_request_status("ns", "r", {"phase": "Running"})) == {"ok": True}
    _, args, kwargs = kube.custom.calls[0]  # type: ignore[attr-defined]
    assert args == ("unlearning.forgetmi.io", "v1alpha1", "ns", "unlearnrequests", "r",
                    {"status": {"phase": "Running"}})
    assert kwargs["_content_type"] == "application/merge-patch+json"

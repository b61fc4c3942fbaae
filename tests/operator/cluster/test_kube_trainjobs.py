"""kube's TrainJob calls and API discovery, against the emulated API server (with and without Kubeflow
Trainer's resources served) and, for the errors, against fake API objects."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from harness.emulator import TRAINER_RESOURCES, ApiServer
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from forgetmi_operator.api.errors import ClusterUnavailable
from forgetmi_operator.cluster.kube import Kube
from forgetmi_operator.cluster.trainjobs import TRAINJOB_API
from forgetmi_operator.cluster.trainjobstate import JOBSET_NAME_LABEL

PODS = ("", "v1", "pods")
NAMESPACE = "ns"


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def api() -> Iterator[ApiServer]:
    server = ApiServer()
    server.start()
    yield server
    server.stop()


def _kube(api: ApiServer) -> Kube:
    return Kube(client.ApiClient(client.Configuration(host=api.api_url)), request_timeout_seconds=10.0)


def _trainjob(name: str = "forgetmi-r-0b3f9c2e") -> dict[str, Any]:
    return {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"runtimeRef": {"name": "torch-distributed"}, "trainer": {"numNodes": 2}}}


def test_a_cluster_without_trainer_serves_no_trainjobs(api: ApiServer) -> None:
    kube = _kube(api)
    try:
        assert _run(kube.api_available(*TRAINJOB_API)) is False
        assert _run(kube.api_available("batch", "v1", "jobs")) is True  # the same discovery, of a served group
        assert _run(kube.api_available("batch", "v1", "cronjobs")) is False  # a served group without it
    finally:
        kube.close()


def test_trainjobs_are_created_once_read_and_deleted_on_a_cluster_with_trainer(api: ApiServer) -> None:
    api.serve(TRAINJOB_API, TRAINER_RESOURCES[TRAINJOB_API])
    kube = _kube(api)
    try:
        assert _run(kube.api_available(*TRAINJOB_API)) is True
        created, new = _run(kube.create_or_get_trainjob(NAMESPACE, _trainjob()))
        assert new and created["metadata"]["uid"] and created["spec"]["trainer"] == {"numNodes": 2}
        again, new = _run(kube.create_or_get_trainjob(NAMESPACE, _trainjob()))
        assert not new and again["metadata"]["uid"] == created["metadata"]["uid"]
        assert len(api.list(TRAINJOB_API, NAMESPACE)) == 1
        found = _run(kube.get_trainjob(NAMESPACE, "forgetmi-r-0b3f9c2e"))
        assert found["metadata"]["uid"] == created["metadata"]["uid"]
        assert _run(kube.get_trainjob(NAMESPACE, "other")) is None
        assert _run(kube.delete_trainjob(NAMESPACE, "forgetmi-r-0b3f9c2e")) is True
        assert _run(kube.delete_trainjob(NAMESPACE, "forgetmi-r-0b3f9c2e")) is False
        assert _run(kube.get_trainjob(NAMESPACE, "forgetmi-r-0b3f9c2e")) is None
    finally:
        kube.close()


def test_a_trainjobs_pods_are_found_by_their_jobsets_name(api: ApiServer) -> None:
    for pod, labels in {"mine-0": {JOBSET_NAME_LABEL: "tj"}, "mine-1": {JOBSET_NAME_LABEL: "tj", "job-name": "tj-n"},
                        "other": {JOBSET_NAME_LABEL: "tj2"}, "a-job": {"job-name": "tj"}}.items():
        api.create(PODS, NAMESPACE, {"metadata": {"name": pod, "labels": labels}})
    kube = _kube(api)
    try:
        assert sorted(p["metadata"]["name"] for p in _run(kube.list_pods_for_trainjob(NAMESPACE, "tj"))) == [
            "mine-0", "mine-1"]
    finally:
        kube.close()


def test_creating_a_trainjob_where_none_are_served_is_a_retryable_cluster_error(api: ApiServer) -> None:
    kube = _kube(api)
    try:
        with pytest.raises(ClusterUnavailable, match=r"create TrainJob ns/forgetmi-r-0b3f9c2e .*HTTP 404"):
            _run(kube.create_or_get_trainjob(NAMESPACE, _trainjob()))
    finally:
        kube.close()


class _Discovery:
    def __init__(self, err: BaseException) -> None:
        self.err = err

    def get_api_resources(self, *args: Any, **kwargs: Any) -> Any:
        raise self.err


@pytest.mark.parametrize("err", [ApiException(status=503, reason="Service Unavailable"),
                                 ApiException(status=403, reason="Forbidden"), ConnectionRefusedError("refused")])
def test_discovery_that_fails_otherwise_than_not_found_is_retried_never_read_as_absent(err: BaseException) -> None:
    kube = Kube(client.ApiClient(client.Configuration()), request_timeout_seconds=7.0)
    kube.custom = _Discovery(err)  # type: ignore[assignment]
    try:
        with pytest.raises(ClusterUnavailable,
                           match=r"list the resources of API trainer\.kubeflow\.org/v1alpha1") as caught:
            _run(kube.api_available(*TRAINJOB_API))
        assert caught.value.retryable and caught.value.__cause__ is err
    finally:
        kube.close()

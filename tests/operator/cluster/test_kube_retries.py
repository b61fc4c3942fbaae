"""kube: calls retried while the API server is busy or restarting, and only then (fake API objects)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from forgetmi_operator.api.errors import ClusterUnavailable, ObjectRejected
from forgetmi_operator.cluster import kube as kube_module
from forgetmi_operator.cluster.apiretry import RetryPolicy
from forgetmi_operator.cluster.kube import Kube


class _Response:
    def __init__(self, body: Any) -> None:
        self.data = json.dumps(body).encode()


def _error(status: int, retry_after: str | None = None) -> ApiException:
    err = ApiException(status=status, reason="Failure")
    err.headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return err


class _Script:
    """One API method that answers each call with the next outcome: an exception is raised, anything
    else is returned as a JSON response."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        outcome = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        if isinstance(outcome, BaseException):
            raise outcome
        return _Response(outcome)


class _Api:
    def __init__(self, **methods: Callable[..., Any]) -> None:
        self.__dict__.update(methods)


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays the client waited, without waiting them."""
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    monkeypatch.setattr(kube_module.asyncio, "sleep", sleep)
    return delays


@pytest.fixture
def kube() -> Iterator[Kube]:
    api = Kube(client.ApiClient(client.Configuration()), request_timeout_seconds=5.0,
               retry=RetryPolicy(attempts=5, base_delay_seconds=0.5, max_delay_seconds=4.0))
    yield api
    api.close()


@pytest.mark.parametrize("failure", [_error(429), _error(500), _error(502), _error(503), _error(504),
                                     urllib3.exceptions.ProtocolError("connection reset"),
                                     ConnectionRefusedError("refused")])
def test_a_busy_or_unreachable_server_is_tried_again_until_it_answers(
        kube: Kube, slept: list[float], failure: BaseException) -> None:
    read = _Script(failure, failure, {"metadata": {"name": "j"}})
    kube.batch = _Api(read_namespaced_job=read)  # type: ignore[assignment]
    assert asyncio.run(kube.get_job("ns", "j")) == {"metadata": {"name": "j"}}
    assert read.calls == 3
    assert len(slept) == 2
    assert 0.0 <= slept[0] <= 0.5 and 0.0 <= slept[1] <= 1.0  # full jitter over 0.5 s, then 1 s


def test_retry_after_is_waited_at_least_and_capped(kube: Kube, slept: list[float]) -> None:
    read = _Script(_error(429, "3"), _error(429, "120"), {"items": []})
    kube.core = _Api(list_namespaced_pod=read)  # type: ignore[assignment]
    assert asyncio.run(kube.list_pods_for_job("ns", "j")) == []
    assert slept[0] == pytest.approx(3.0)
    assert slept[1] == pytest.approx(4.0)  # the server asked for 120 s: capped at max_delay_seconds


def test_the_attempts_are_bounded_and_the_error_names_the_call(kube: Kube, slept: list[float]) -> None:
    patch = _Script(_error(503))
    kube.custom = _Api(patch_namespaced_custom_object_status=patch)  # type: ignore[assignment]
    with pytest.raises(ClusterUnavailable, match=r"update the status of UnlearnRequest ns/r .*HTTP 503") as caught:
        asyncio.run(kube.patch_request_status("ns", "r", {"phase": "Running"}))
    assert caught.value.retryable
    assert patch.calls == 5 and len(slept) == 4
    assert all(delay <= 4.0 for delay in slept)


@pytest.mark.parametrize("status", [400, 401, 403, 409, 410, 422])
def test_refusals_are_not_retried(kube: Kube, slept: list[float], status: int) -> None:
    delete = _Script(_error(status))
    kube.batch = _Api(delete_namespaced_job=delete)  # type: ignore[assignment]
    with pytest.raises((ClusterUnavailable, ObjectRejected), match=f"delete Job ns/j .*HTTP {status}"):
        asyncio.run(kube.delete_job("ns", "j"))
    assert delete.calls == 1 and slept == []


def test_a_not_found_after_a_lost_answer_is_still_none(kube: Kube, slept: list[float]) -> None:
    delete = _Script(_error(500), _error(404))  # the first delete went through, its answer was lost
    kube.batch = _Api(delete_namespaced_job=delete)  # type: ignore[assignment]
    assert asyncio.run(kube.delete_job("ns", "j")) is False
    assert delete.calls == 2


def test_a_create_whose_answer_was_lost_finds_its_own_object_and_is_not_duplicated(
        kube: Kube, slept: list[float]) -> None:
    body = {"metadata": {"name": "forgetmi-r-0b3f9c2e"}}
    create = _Script(urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"), _error(409))
    read = _Script(_error(500), {**body, "existing": True})
    kube.batch = _Api(create_namespaced_job=create, read_namespaced_job=read)  # type: ignore[assignment]
    assert asyncio.run(kube.create_or_get_job("ns", body)) == ({**body, "existing": True}, False)
    assert (create.calls, read.calls) == (2, 2)


def test_an_event_posted_twice_by_retries_is_reported_as_already_posted(kube: Kube, slept: list[float]) -> None:
    create = _Script(_error(429, "1"), _error(409))
    kube.core = _Api(create_namespaced_event=create)  # type: ignore[assignment]
    assert asyncio.run(kube.create_event("ns", {"metadata": {"name": "e"}})) is False
    assert create.calls == 2


def test_a_single_attempt_policy_does_not_retry(slept: list[float]) -> None:
    api = Kube(client.ApiClient(client.Configuration()), request_timeout_seconds=5.0, retry=RetryPolicy(attempts=1))
    read = _Script(_error(503), {"metadata": {}})
    api.batch = _Api(read_namespaced_job=read)  # type: ignore[assignment]
    with pytest.raises(ClusterUnavailable):
        asyncio.run(api.get_job("ns", "j"))
    assert read.calls == 1 and slept == []
    api.close()


def test_api_discovery_is_retried_too(kube: Kube, slept: list[float]) -> None:
    discover = _Script(_error(503), {"resources": [{"name": "trainjobs"}]})
    kube.custom = _Api(get_api_resources=discover)  # type: ignore[assignment]
    assert asyncio.run(kube.api_available("trainer.kubeflow.org", "v1alpha1", "trainjobs")) is True
    assert discover.calls == 2

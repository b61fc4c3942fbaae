"""The operator's Kubernetes API client: with its TrainJob half (:mod:`~forgetmi_operator.cluster.kube_trainjobs`)
and its serving-target half (:mod:`~forgetmi_operator.cluster.kube_targets`), the only modules that call
the API server (besides Kopf).

A thin async layer over the official ``kubernetes`` client: each call runs in a worker thread
(``asyncio.to_thread``) with an explicit request timeout, and returns plain camelCase dicts as
the API server sends them (no generated model classes), so the pure modules (``jobstate``,
``jobs``) can work on the same shapes Kopf hands to handlers. It is the cluster's
:class:`~forgetmi_operator.lifecycle.ports.SecretStore`.

Errors: a missing object is ``None`` (a missing serving target, or one that did not opt in,
:class:`~forgetmi_operator.api.errors.ServingTargetError`); an object or patch the API server
refuses as invalid (HTTP 400/413/422) is :class:`~forgetmi_operator.api.errors.ObjectRejected` (not
retried, with the server's message); anything else the API server or the network answers
unexpectedly is :class:`~forgetmi_operator.api.errors.ClusterUnavailable` (retryable), after the
call was tried again for what a busy or restarting server answers (429, 5xx, a failed connection:
:mod:`~forgetmi_operator.cluster.apiretry`); a create retried after a lost answer finds its own
object (409) and reads it, a delete finds it gone (404). Secret values
are never logged nor put in messages.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from forgetmi_operator import GROUP, PLURAL, VERSION
from forgetmi_operator.api.errors import ClusterUnavailable, ObjectRejected, OperatorError
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.cluster.apiretry import RetryPolicy, retry_after_seconds
from forgetmi_operator.cluster.jobstate import job_name_of_pod
from forgetmi_operator.cluster.kube_targets import ServingTargetCalls
from forgetmi_operator.cluster.kube_trainjobs import TrainJobCalls

MERGE_PATCH = "application/merge-patch+json"
INVALID_STATUSES = frozenset({400, 413, 422})
"""What the API server answers for an object or patch it will never accept as sent: a bad request,
a body too large, an invalid object."""
SERVER_MESSAGE_LIMIT = 400
POOL_SIZE = 32
"""Kept-alive connections to the API server: calls run in worker threads, one connection each."""

log = logging.getLogger(__name__)


def _server_message(err: ApiException) -> str:
    """The API server's ``Status.message`` of a refusal, shortened; empty when the body has none."""
    try:
        body = json.loads(err.body) if err.body else {}
    except (TypeError, ValueError):
        return ""
    message = str(body.get("message") or "").strip().rstrip(".") if isinstance(body, dict) else ""
    if len(message) > SERVER_MESSAGE_LIMIT:
        message = message[: SERVER_MESSAGE_LIMIT - 1] + "…"
    return f": {message}" if message else ""


def refusal(what: str, err: ApiException) -> OperatorError:
    """The error for an API call the server refused (not 404): invalid (400/413/422) or retryable."""
    detail = _server_message(err)
    if err.status in INVALID_STATUSES:
        return ObjectRejected(f"The API server refused to {what} as invalid (HTTP {err.status}){detail}.")
    return ClusterUnavailable(f"The API server refused to {what} (HTTP {err.status} {err.reason}){detail}.")


def load_api_client() -> client.ApiClient:
    """An API client for the service account when running in a Pod, else for ``$KUBECONFIG``
    (or ``~/.kube/config``), read at call time rather than at import time."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None,
                                client_configuration=configuration, persist_config=False)
    configuration.connection_pool_maxsize = POOL_SIZE
    return client.ApiClient(configuration)


class Kube(TrainJobCalls, ServingTargetCalls):
    """Async calls the operator makes; ``request_timeout_seconds`` bounds every call."""

    def __init__(self, api_client: client.ApiClient, *, request_timeout_seconds: float,
                 retry: RetryPolicy | None = None) -> None:
        self.api_client = api_client
        self.timeout = request_timeout_seconds
        self.retry = retry or RetryPolicy()
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    @classmethod
    def from_settings(cls, settings: Settings) -> Kube:
        retry = RetryPolicy(attempts=settings.api_retry_attempts,
                            max_delay_seconds=settings.api_retry_max_delay_seconds)
        return cls(load_api_client(), request_timeout_seconds=settings.request_timeout_seconds, retry=retry)

    def close(self) -> None:
        self.api_client.close()

    async def _send(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn``'s response, tried again (:class:`RetryPolicy`) while the server answers 429/5xx or
        cannot be reached; other refusals and the last one raise ``ApiException``; a network failure
        that outlasts the attempts is ``ClusterUnavailable`` naming ``what``."""
        kwargs.update(_preload_content=False, _request_timeout=self.timeout)
        for attempt in itertools.count(1):
            try:
                return await asyncio.to_thread(fn, *args, **kwargs)
            except ApiException as err:
                if not self.retry.retries(attempt, err.status):
                    raise
                delay = self.retry.delay(attempt, retry_after_seconds(err.headers))
                cause = f"HTTP {err.status}"
            except (urllib3.exceptions.HTTPError, OSError) as err:
                if not self.retry.retries(attempt, None):
                    raise ClusterUnavailable(
                        f"The API server could not be reached to {what}: {type(err).__name__}.") from err
                delay, cause = self.retry.delay(attempt), type(err).__name__
            log.debug("Attempt %d to %s failed (%s); trying again in %.2f s", attempt, what, cause, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` (:meth:`_send`) and decode its JSON body; ``None`` for 404. Other refusals
        become :func:`refusal`'s error, each naming ``what``."""
        try:
            response = await self._send(what, fn, *args, **kwargs)
        except ApiException as err:
            if err.status == 404:
                return None
            raise refusal(what, err) from err
        data = response.data
        return json.loads(data) if data else {}

    async def _create(self, what: str, create: Callable[..., Any], namespace: str,
                      body: Mapping[str, Any]) -> Any:
        """The created object's response, or ``None`` when one of its name exists (HTTP 409: made by
        an earlier attempt, maybe this call's own retry after a lost answer)."""
        try:
            return await self._send(what, create, namespace, body)
        except ApiException as err:
            if err.status == 409:
                return None
            raise refusal(what, err) from err

    async def _create_or_get(self, what: str, create: Callable[..., Any], read: Callable[..., Any],
                             namespace: str, body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        name = body["metadata"]["name"]
        created = await self._create(f"create {what} {namespace}/{name}", create, namespace, body)
        if created is not None:
            return json.loads(created.data), True
        existing = await self._call(f"read {what} {namespace}/{name}", read, name, namespace)
        if existing is None:
            raise ClusterUnavailable(f"{what} {namespace}/{name} already exists but could not be read.")
        return existing, False

    # ---- Secrets -------------------------------------------------------------------------------

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._call(f"read Secret {namespace}/{name}", self.core.read_namespaced_secret, name, namespace)

    async def create_or_get_secret(self, namespace: str, body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the Secret, or return the existing one of that name; ``(object, created)``."""
        return await self._create_or_get("Secret", self.core.create_namespaced_secret,
                                         self.core.read_namespaced_secret, namespace, body)

    async def delete_secret(self, namespace: str, name: str, *, uid: str | None = None) -> bool:
        """Delete the Secret (only the object with ``uid``, when given: a Secret re-created under that
        name meanwhile is refused by the API server); False when it was already gone."""
        body = {"preconditions": {"uid": uid}} if uid else None
        result = await self._call(f"delete Secret {namespace}/{name}", self.core.delete_namespaced_secret, name,
                                  namespace, body=body)
        return result is not None

    # ---- Events --------------------------------------------------------------------------------

    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> bool:
        """Create the Event; False when one of its name exists (it was posted already)."""
        name = body["metadata"]["name"]
        response = await self._create(f"create Event {namespace}/{name}", self.core.create_namespaced_event,
                                      namespace, body)
        if response is None:
            return False
        _ = response.data  # read: the connection goes back to the pool
        return True

    # ---- ConfigMaps, Jobs, Pods ----------------------------------------------------------------

    async def create_or_get_configmap(self, namespace: str, body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the ConfigMap, or return the existing one of that name; ``(object, created)``."""
        return await self._create_or_get("ConfigMap", self.core.create_namespaced_config_map,
                                         self.core.read_namespaced_config_map, namespace, body)

    async def create_or_get_job(self, namespace: str, body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the Job, or return the existing one of that name (never a duplicate)."""
        return await self._create_or_get("Job", self.batch.create_namespaced_job, self.batch.read_namespaced_job,
                                         namespace, body)

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._call(f"read Job {namespace}/{name}", self.batch.read_namespaced_job, name, namespace)

    async def delete_job(self, namespace: str, name: str) -> bool:
        """Delete the Job and (in the background) its Pods; False when it was already gone."""
        body = {"propagationPolicy": "Background"}
        result = await self._call(f"delete Job {namespace}/{name}", self.batch.delete_namespaced_job, name,
                                  namespace, body=body)
        return result is not None

    async def list_pods_for_job(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        """The Job's Pods (label ``job-name``; filtered here too, so a server ignoring selectors is fine)."""
        listing = await self._call(f"list Pods of Job {namespace}/{job_name}", self.core.list_namespaced_pod,
                                   namespace, label_selector=f"job-name={job_name}")
        pods = (listing or {}).get("items") or []
        return [pod for pod in pods if job_name_of_pod(pod) == job_name]

    # ---- UnlearnRequests -----------------------------------------------------------------------

    async def get_request(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The UnlearnRequest as the API server has it now (None when it is gone)."""
        return await self._call(f"read UnlearnRequest {namespace}/{name}", self.custom.get_namespaced_custom_object,
                                GROUP, VERSION, namespace, PLURAL, name)

    async def present_requests(self, namespace: str, requests: Sequence[tuple[str, str]]) -> set[str]:
        """The uids of ``requests`` (``(name, uid)`` pairs) that still exist as those very objects."""
        present = set()
        for name, uid in requests:
            found = await self.get_request(namespace, name)
            if found is not None and (found.get("metadata") or {}).get("uid") == uid:
                present.add(uid)
        return present

    async def patch_request_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any] | None:
        """Merge-patch ``status`` of an UnlearnRequest (None when it is gone)."""
        return await self._call(f"update the status of UnlearnRequest {namespace}/{name}",
                                self.custom.patch_namespaced_custom_object_status, GROUP, VERSION, namespace,
                                PLURAL, name, {"status": dict(status)}, _content_type=MERGE_PATCH)

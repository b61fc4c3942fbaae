"""The TrainJob half of :class:`~forgetmi_operator.cluster.kube.Kube`: Kubeflow Trainer v2's TrainJobs
(``trainer.kubeflow.org/v1alpha1``, through ``CustomObjectsApi``), their Pods, and API discovery.

A mixin, so that ``kube.py`` and this module stay the only ones that call the API server (besides
Kopf); errors are mapped as for Jobs (a missing TrainJob is ``None``, an invalid one
:class:`~forgetmi_operator.api.errors.ObjectRejected`, anything else unexpected
:class:`~forgetmi_operator.api.errors.ClusterUnavailable`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from forgetmi_operator.api.errors import ClusterUnavailable
from forgetmi_operator.cluster.trainjobs import TRAINJOB_API
from forgetmi_operator.cluster.trainjobstate import JOBSET_NAME_LABEL, trainjob_name_of_pod

TRAINER_GROUP, TRAINER_VERSION, TRAINJOBS = TRAINJOB_API


class TrainJobCalls:
    """TrainJob calls; :class:`~forgetmi_operator.cluster.kube.Kube` provides what is declared here."""

    timeout: float
    core: client.CoreV1Api
    custom: client.CustomObjectsApi
    _send: Callable[..., Any]
    _call: Callable[..., Any]
    _create_or_get: Callable[..., Any]

    async def api_available(self, group: str, version: str, plural: str) -> bool:
        """Whether the API server serves ``plural`` in ``group/version`` (its discovery resource list,
        ``GET /apis/<group>/<version>``): False when the group version is not served (404) or lacks
        the resource; any other answer is ``ClusterUnavailable`` (retryable)."""
        what = f"list the resources of API {group}/{version}"
        try:
            response = await self._send(what, self.custom.get_api_resources, group, version)
        except ApiException as err:
            if err.status == 404:
                return False
            raise ClusterUnavailable(f"The API server refused to {what} (HTTP {err.status} {err.reason}).") from err
        try:
            resources = json.loads(response.data or b"{}").get("resources") or []
        except (AttributeError, TypeError, ValueError) as err:
            raise ClusterUnavailable(f"The API server answered a request to {what} with no resource list.") from err
        return any(isinstance(item, Mapping) and item.get("name") == plural for item in resources)

    def _create_trainjob(self, namespace: str, body: Mapping[str, Any], **kwargs: Any) -> Any:
        return self.custom.create_namespaced_custom_object(TRAINER_GROUP, TRAINER_VERSION, namespace, TRAINJOBS,
                                                           body, **kwargs)

    def _read_trainjob(self, name: str, namespace: str, **kwargs: Any) -> Any:
        return self.custom.get_namespaced_custom_object(TRAINER_GROUP, TRAINER_VERSION, namespace, TRAINJOBS, name,
                                                        **kwargs)

    def _delete_trainjob(self, name: str, namespace: str, **kwargs: Any) -> Any:
        return self.custom.delete_namespaced_custom_object(TRAINER_GROUP, TRAINER_VERSION, namespace, TRAINJOBS,
                                                           name, **kwargs)

    async def create_or_get_trainjob(self, namespace: str, body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the TrainJob, or return the existing one of that name (never a duplicate)."""
        result: tuple[dict[str, Any], bool] = await self._create_or_get(
            "TrainJob", self._create_trainjob, self._read_trainjob, namespace, body)
        return result

    async def get_trainjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self._call(f"read TrainJob {namespace}/{name}", self._read_trainjob,
                                                         name, namespace)
        return result

    async def delete_trainjob(self, namespace: str, name: str) -> bool:
        """Delete the TrainJob and (in the background) its JobSet and Pods; False when it was already gone."""
        result = await self._call(f"delete TrainJob {namespace}/{name}", self._delete_trainjob, name, namespace,
                                  body={"propagationPolicy": "Background"})
        return result is not None

    async def list_pods_for_trainjob(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The TrainJob's Pods (label ``jobset.sigs.k8s.io/jobset-name``; filtered here too)."""
        listing = await self._call(f"list Pods of TrainJob {namespace}/{name}", self.core.list_namespaced_pod,
                                   namespace, label_selector=f"{JOBSET_NAME_LABEL}={name}")
        pods = (listing or {}).get("items") or []
        return [pod for pod in pods if trainjob_name_of_pod(pod) == name]

"""The serving-target half of :class:`~forgetmi_operator.cluster.kube.Kube`: reading and patching the
Deployments and KServe InferenceServices that opted in to the operator's promotions.

A mixin, like :mod:`~forgetmi_operator.cluster.kube_trainjobs`, so that the ``kube`` modules stay the
only ones that call the API server (besides Kopf). Serving targets opt in: a Deployment or
InferenceService is patched only when its annotations allow it (:func:`opted_in_container`,
:func:`opted_in_inferenceservice`), checked on every read and tested again by the JSON patch itself.
A missing target, or one that did not opt in, is
:class:`~forgetmi_operator.api.errors.ServingTargetError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client

from forgetmi_operator.api.errors import ServingTargetError
from forgetmi_operator.api.naming import MODEL_CONTAINER_ANNOTATION, MODEL_ENV_ANNOTATION, MODEL_STORAGE_URI_ANNOTATION
from forgetmi_operator.cluster import optin

KSERVE = ("serving.kserve.io", "v1beta1", "inferenceservices")
JSON_PATCH = "application/json-patch+json"


class ServingTargetCalls:
    """Serving-target calls; :class:`~forgetmi_operator.cluster.kube.Kube` provides what is declared here."""

    apps: client.AppsV1Api
    custom: client.CustomObjectsApi
    _call: Callable[..., Any]


    async def _deployment_container(self, namespace: str, name: str, container: str | None,
                                    env: str) -> tuple[int, Mapping[str, Any]]:
        """Read Deployment ``namespace/name`` and return the index and spec of the container it lets
        the operator patch (:func:`opted_in_container`)."""
        what = f"Deployment {namespace}/{name}"
        deployment = await self._call(f"read {what}", self.apps.read_namespaced_deployment, name, namespace)
        if deployment is None:
            raise ServingTargetError(f"Serving target {what} does not exist.")
        return optin.opted_in_container(deployment, what, container, env)

    async def check_deployment(self, namespace: str, name: str, container: str | None, env: str) -> None:
        """Raise ``ServingTargetError`` unless Deployment ``namespace/name`` exists and lets the
        operator set ``env`` of ``container`` (its annotations, :func:`opted_in_container`)."""
        await self._deployment_container(namespace, name, container, env)

    async def patch_deployment_env(self, namespace: str, name: str, container: str | None, env: str,
                                   value: str) -> None:
        """Set env var ``env`` of the opted-in container of Deployment ``namespace/name``.

        Read and checked again (the Deployment may have changed since :meth:`check_deployment`), then
        a JSON patch that first tests both annotations and the container's name, so a Deployment whose
        annotations were removed or a container reordered meanwhile is refused by the API server
        rather than patched."""
        what = f"Deployment {namespace}/{name}"
        index, spec = await self._deployment_container(namespace, name, container, env)
        current = [dict(e) for e in spec.get("env") or [] if e.get("name") != env]
        base = f"/spec/template/spec/containers/{index}"
        ops = [{"op": "test", "path": optin.annotation_path(MODEL_ENV_ANNOTATION), "value": env},
               {"op": "test", "path": optin.annotation_path(MODEL_CONTAINER_ANNOTATION), "value": spec.get("name")},
               {"op": "test", "path": f"{base}/name", "value": spec.get("name")},
               {"op": "add", "path": f"{base}/env", "value": [*current, {"name": env, "value": value}]}]
        result = await self._call(f"patch {what}", self.apps.patch_namespaced_deployment, name, namespace, ops,
                                  _content_type=JSON_PATCH)
        if result is None:
            raise ServingTargetError(f"Serving target {what} does not exist.")

    async def check_inferenceservice(self, namespace: str, name: str) -> None:
        """Raise ``ServingTargetError`` unless KServe InferenceService ``namespace/name`` exists, lets
        the operator set its storage URI (:func:`opted_in_inferenceservice`) and serves through
        ``spec.predictor.model``."""
        what = f"InferenceService {namespace}/{name}"
        found = await self._call(f"read {what}", self.custom.get_namespaced_custom_object, *KSERVE[:2], namespace,
                                 KSERVE[2], name)
        if found is None:
            raise ServingTargetError(f"Serving target {what} does not exist.")
        optin.opted_in_inferenceservice(found, what)

    async def patch_inferenceservice_storage_uri(self, namespace: str, name: str, uri: str) -> None:
        """Set ``spec.predictor.model.storageUri`` of KServe InferenceService ``namespace/name``.

        Checked again first, then a JSON patch that tests the annotation, so an InferenceService that
        withdrew it since is refused by the API server rather than patched."""
        what = f"InferenceService {namespace}/{name}"
        await self.check_inferenceservice(namespace, name)
        ops = [{"op": "test", "path": optin.annotation_path(MODEL_STORAGE_URI_ANNOTATION), "value": "true"},
               {"op": "add", "path": "/spec/predictor/model/storageUri", "value": uri}]
        result = await self._call(f"patch {what}", self.custom.patch_namespaced_custom_object, *KSERVE[:2],
                                  namespace, KSERVE[2], name, ops, _content_type=JSON_PATCH)
        if result is None:
            raise ServingTargetError(f"Serving target {what} does not exist.")

"""The opt-in of serving objects (pure): which container's env var of a Deployment, or which
InferenceService's ``storageUri``, the operator may set. The object's owner opts in with
annotations (:data:`~forgetmi_operator.api.naming.MODEL_ENV_ANNOTATION`,
:data:`~forgetmi_operator.api.naming.MODEL_CONTAINER_ANNOTATION`,
:data:`~forgetmi_operator.api.naming.MODEL_STORAGE_URI_ANNOTATION`); creating an UnlearnRequest alone
never grants changing serving configuration. :mod:`~forgetmi_operator.cluster.kube` applies these
rules when it checks and when it patches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from forgetmi_operator.api.errors import ServingTargetError
from forgetmi_operator.api.naming import MODEL_CONTAINER_ANNOTATION, MODEL_ENV_ANNOTATION, MODEL_STORAGE_URI_ANNOTATION


def annotation_path(key: str) -> str:
    """The JSON pointer to annotation ``key`` (``~`` and ``/`` escaped, RFC 6901)."""
    return "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")


def opted_in_container(deployment: Mapping[str, Any], what: str, container: str | None,
                       env: str) -> tuple[int, Mapping[str, Any]]:
    """The index and spec of the container whose env var ``env`` the Deployment lets the operator set:
    its annotation ``MODEL_ENV_ANNOTATION`` names exactly ``env`` and ``MODEL_CONTAINER_ANNOTATION``
    the container, which ``container`` (the request's), when given, must be. Else ``ServingTargetError``
    naming the Deployment and the annotation (never an annotation's value: the requester may not read it)."""
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    allowed, allowed_container = annotations.get(MODEL_ENV_ANNOTATION), annotations.get(MODEL_CONTAINER_ANNOTATION)
    if allowed is None:
        raise ServingTargetError(
            f"Serving target {what} has no annotation {MODEL_ENV_ANNOTATION}: the operator patches only a Deployment "
            f"that names the env var it may set there (and the container in {MODEL_CONTAINER_ANNOTATION}).")
    if allowed != env:
        raise ServingTargetError(f"Serving target {what} does not let the operator set {env} "
                                 f"(spec.rollout.target.env): its annotation {MODEL_ENV_ANNOTATION} names another "
                                 "env var.")
    if allowed_container is None:
        raise ServingTargetError(f"Serving target {what} has no annotation {MODEL_CONTAINER_ANNOTATION} naming the "
                                 "container whose env var the operator may set.")
    if container is not None and container != allowed_container:
        raise ServingTargetError(f"Serving target {what} does not let the operator patch container {container} "
                                 f"(spec.rollout.target.container): its annotation {MODEL_CONTAINER_ANNOTATION} "
                                 "names another container.")
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    names = [c.get("name") for c in containers]
    if allowed_container not in names:
        raise ServingTargetError(f"Serving target {what} has no container of the name its annotation "
                                 f"{MODEL_CONTAINER_ANNOTATION} gives.")
    index = names.index(allowed_container)
    return index, containers[index]


def opted_in_inferenceservice(found: Mapping[str, Any], what: str) -> None:
    """Raise ``ServingTargetError`` unless the InferenceService carries ``MODEL_STORAGE_URI_ANNOTATION``
    ``"true"`` and serves through ``spec.predictor.model`` (whose ``storageUri`` the operator sets)."""
    if ((found.get("metadata") or {}).get("annotations") or {}).get(MODEL_STORAGE_URI_ANNOTATION) != "true":
        raise ServingTargetError(f'Serving target {what} does not have the annotation {MODEL_STORAGE_URI_ANNOTATION}: '
                                 '"true", which lets the operator set its spec.predictor.model.storageUri.')
    predictor = (found.get("spec") or {}).get("predictor") or {}
    if not isinstance(predictor.get("model"), Mapping):
        raise ServingTargetError(f"Serving target {what} has no spec.predictor.model, whose storageUri the "
                                 "operator sets.")

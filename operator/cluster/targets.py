"""The cluster's :class:`~forgetmi_operator.lifecycle.ports.ServingTargets`: the Deployment or KServe
InferenceService a request names in ``spec.rollout.target``, checked before the alias moves and
re-pointed at the new model after it moved.

Serving targets are patched only when the operator enables them (chart value
``servingTargets.enabled``); otherwise a request with a target is promoted and says that its target
was not patched. And only a target that opted in is patched: a Deployment whose annotations
``unlearning.forgetmi.io/model-env`` and ``…/model-container`` name the request's env var and
container, an InferenceService with ``unlearning.forgetmi.io/model-storage-uri: "true"``
(:func:`~forgetmi_operator.cluster.optin.opted_in_container`,
:func:`~forgetmi_operator.cluster.optin.opted_in_inferenceservice`). Anything else is a
``ServingTargetError`` from :meth:`ClusterTargets.check`, before the alias moves; the patch checks
again, and its JSON patch tests the annotations once more. A retryable failure of the patch is
tried again (:data:`TARGET_ATTEMPTS`).
"""

from __future__ import annotations

from forgetmi_operator.api.errors import retry
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.api.spec import UnlearnRequestSpec
from forgetmi_operator.cluster.kube import Kube

TARGET_ATTEMPTS = 3
"""Tries of a serving-target patch that fails with a retryable error, after the alias moved."""
TARGET_RETRY_SECONDS = 1.0
"""Wait before the second try; doubled before each further one."""


class ClusterTargets:
    def __init__(self, kube: Kube, settings: Settings) -> None:
        self.kube, self.settings = kube, settings

    async def check(self, spec: UnlearnRequestSpec, namespace: str) -> str | None:
        target = spec.rollout.target
        if target is None:
            return None
        if not self.settings.serving_targets_enabled:
            return (f"Serving target {target.kind} {namespace}/{target.name} was not patched: serving targets are "
                    "disabled in this operator (chart value servingTargets.enabled).")
        if target.kind == "Deployment":
            await self.kube.check_deployment(namespace, target.name, target.container, target.env)
        else:
            await self.kube.check_inferenceservice(namespace, target.name)
        return None

    async def point(self, spec: UnlearnRequestSpec, namespace: str, uri: str) -> None:
        target = spec.rollout.target
        if target is None or not self.settings.serving_targets_enabled:
            return

        async def patch() -> None:
            if target.kind == "Deployment":
                await self.kube.patch_deployment_env(namespace, target.name, target.container, target.env, uri)
            else:
                await self.kube.patch_inferenceservice_storage_uri(namespace, target.name, uri)

        await retry(patch, attempts=TARGET_ATTEMPTS, delay_seconds=TARGET_RETRY_SECONDS)

"""Which engine runs a request's trainer, and the pure builder of a Kubeflow Trainer v2 TrainJob.

One process on one node runs as a ``batch/v1`` Job (:mod:`~forgetmi_operator.cluster.jobs`), as
before; several processes or nodes run as a ``trainer.kubeflow.org/v1alpha1`` TrainJob on a
torch runtime (default ``torch-distributed``), whose controller makes a JobSet of ``numNodes`` Pods
and sets the ``PET_*`` variables torchrun reads. The TrainJob gets what the Job's pod gets
(:mod:`~forgetmi_operator.cluster.pods`): image, command, env and resources through ``spec.trainer``;
volumes, mounts, security contexts, nodeSelector, tolerations and service account through one
``runtimePatches`` entry owned by :data:`PATCH_MANAGER`.

What the TrainJob API (v2.3) cannot carry, and so is left to the runtime: ``priorityClassName``
(:mod:`~forgetmi_operator.cluster.policy` refuses a request naming one that needs a TrainJob; a
runtime the admin allows may set it), ``automountServiceAccountToken``, ``enableServiceLinks``,
``imagePullPolicy``, ``terminationMessagePolicy`` (Kubernetes' default, ``File``, is the Job's),
``backoffLimit``, ``podFailurePolicy`` and ``ttlSecondsAfterFinished`` (the runtime's JobSet
failure policy applies; the TrainJob is deleted with its request, which owns it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from forgetmi_operator.api import naming
from forgetmi_operator.api.naming import JobKind
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.api.spec import UnlearnRequestSpec
from forgetmi_operator.cluster import pods
from forgetmi_operator.cluster.resources import container_resources

Engine = Literal["Job", "TrainJob"]
TRAINER_GROUP = "trainer.kubeflow.org"
TRAINER_VERSION = "v1alpha1"
TRAINJOB_API = (TRAINER_GROUP, TRAINER_VERSION, "trainjobs")
"""(group, version, plural) of Kubeflow Trainer v2's TrainJob."""
TRAINJOB_KIND = "TrainJob"
PATCH_MANAGER = f"{naming.GROUP}/operator"
"""The ``manager`` of the operator's ``runtimePatches`` entry (a domain-prefixed name, as Kueue's)."""
NODE = "node"
"""The replicatedJob and its container in Kubeflow's torch runtimes: ``constants.Node = "node"`` in
kubeflow/trainer v2.3.0 pkg/constants/constants.go ("the name of the Job and container for the
trainer node"), as manifests/base/runtimes/torch_distributed.yaml declares them; its
docs/operator-guides/runtime-patches.md nests patches replicatedJobs[name] → template → spec →
template → spec (PodSpecPatch) → containers[name] (ContainerPatch)."""
MAX_NAME = 63 - len("-node-0-63-abcde")
"""47: JobSet's webhook refuses a JobSet whose longest Pod name, ``<name>-<replicatedJob>-<job
index>-<pod index>-<5 random>``, exceeds 63 characters (kubernetes-sigs/jobset jobset_webhook.go,
podNameTooLongErrorMsg); the TrainJob's JobSet has its name, one ``node`` Job, up to 64 Pods."""


def engine_of(spec: UnlearnRequestSpec) -> Engine:
    """``Job`` for engine Job, ``TrainJob`` for engine TrainJob; Auto: a Job iff one node runs one process."""
    resources = spec.resources
    if resources.engine != "Auto":
        return resources.engine
    return "Job" if resources.nodes == 1 and resources.processes == 1 else "TrainJob"


def trainjob_name(request_name: str, uid: str, *, kind: JobKind = "unlearn", rebase: int = 0) -> str:
    """:func:`naming.job_name` when it has at most :data:`MAX_NAME` characters (RFC 1035), else the same
    name with the request's part cut so that it has; deterministic, so creating it twice finds the first."""
    name = naming.job_name(request_name, uid, kind=kind, rebase=rebase)
    if len(name) <= MAX_NAME:
        return name
    tail = naming.job_name("", uid, kind=kind, rebase=rebase).removeprefix(naming.NAME_PREFIX)  # -<uid8>[-bN][-…]
    middle = name.removeprefix(f"{naming.NAME_PREFIX}-").removesuffix(tail)
    middle = middle[: MAX_NAME - len(naming.NAME_PREFIX) - 1 - len(tail)].strip("-")
    return f"{naming.NAME_PREFIX}-{middle}{tail}" if middle else f"{naming.NAME_PREFIX}{tail}"


def runtime_ref(spec: UnlearnRequestSpec, settings: Settings) -> dict[str, str]:
    """The request's ``spec.runtimeRef``, else the settings' ClusterTrainingRuntime."""
    if spec.runtime_ref is not None:
        return {"apiGroup": TRAINER_GROUP, "kind": spec.runtime_ref.kind, "name": spec.runtime_ref.name}
    return {"apiGroup": TRAINER_GROUP, "kind": "ClusterTrainingRuntime", "name": settings.trainjob_runtime}


def _trainer(spec: UnlearnRequestSpec, settings: Settings) -> dict[str, Any]:
    env = pods.trainer_env(settings)
    secret = pods.credentials_secret(spec, settings)
    if secret:
        env += pods.credential_env(secret)
    return {
        "image": spec.image or settings.trainer_image,
        "command": list(pods.TRAINJOB_COMMAND),
        "env": env,
        "numNodes": spec.resources.nodes,
        "numProcPerNode": spec.resources.processes,
        "resourcesPerNode": container_resources(spec, settings),
    }


def _runtime_patch(spec: UnlearnRequestSpec, settings: Settings, *, configmap: str, subjects_secret: str,
                   pod_labels: Mapping[str, str], previously_forgotten: bool = False) -> dict[str, Any]:
    """The operator's ``runtimePatches`` entry: only fields PodSpecPatch and ContainerPatch (v2.3) have."""
    volumes, mounts = pods.volumes(configmap, subjects_secret, previously_forgotten=previously_forgotten)
    pod_spec: dict[str, Any] = {
        "securityContext": pods.pod_security_context(),
        "containers": [{"name": NODE, "securityContext": pods.container_security_context(), "volumeMounts": mounts}],
        "volumes": volumes,
        **pods.placement(spec, settings, priority=False),
    }
    replicated_job = {"name": NODE, "template": {"spec": {"template": {
        "metadata": {"labels": dict(pod_labels)}, "spec": pod_spec}}}}
    return {"manager": PATCH_MANAGER,
            "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [replicated_job]}}}}


def build_trainjob(spec: UnlearnRequestSpec, settings: Settings, *, name: str, namespace: str, uid: str,
                   owner: Mapping[str, Any] | None = None, configmap_name: str | None = None,
                   kind: JobKind = "unlearn", previously_forgotten: bool = False, rebase: int = 0) -> dict[str, Any]:
    """The TrainJob for request ``namespace/name`` (uid ``uid``), named by :func:`trainjob_name`.

    It carries the request's labels (and Kueue's queue label with ``spec.queueName``), and so do its
    Pods; with a queue it is created suspended, for Kueue to admit (a TrainJob is not suspended by
    Kueue's webhook as a Job is). ``spec.activeDeadlineSeconds`` bounds it as it bounds a Job."""
    ref = naming.owner_reference(owner if owner is not None else {"name": name, "uid": uid})
    configmap = configmap_name or naming.configmap_name(name, uid, kind=kind, rebase=rebase)
    patch = _runtime_patch(spec, settings, configmap=configmap,
                           subjects_secret=naming.subjects_secret_name(name, uid, rebase=rebase),
                           pod_labels=naming.labels_for(name, uid=uid, kind=kind),
                           previously_forgotten=previously_forgotten)
    body: dict[str, Any] = {
        "runtimeRef": runtime_ref(spec, settings),
        "activeDeadlineSeconds": spec.active_deadline_seconds,
        "trainer": _trainer(spec, settings),
        "runtimePatches": [patch],
    }
    if spec.queue_name:
        body["suspend"] = True
    return {
        "apiVersion": f"{TRAINER_GROUP}/{TRAINER_VERSION}",
        "kind": TRAINJOB_KIND,
        "metadata": {
            "name": trainjob_name(name, uid, kind=kind, rebase=rebase),
            "namespace": namespace,
            "labels": naming.labels_for(name, spec.queue_name, uid=uid, kind=kind),
            "ownerReferences": [ref],
        },
        "spec": body,
    }

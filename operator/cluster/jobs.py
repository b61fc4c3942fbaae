"""Pure builders of what a request's run is in a cluster: the ConfigMap holding the trainer's
``JobConfig`` and the ``batch/v1`` Job that mounts it and the request's copy of its forget list.

Nothing here touches the cluster or storage; :mod:`~forgetmi_operator.cluster.launcher` creates
what these return. Where a request and the operator's settings both say something, the request
wins: its nodeSelector or tolerations, when non-empty, replace the settings' defaults; its resource
requests/limits override the defaults key by key (:mod:`~forgetmi_operator.cluster.resources`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from forgetmi_operator.api import naming
from forgetmi_operator.api.naming import TRAINER_CONTAINER, JobKind
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.api.spec import UnlearnRequestSpec
from forgetmi_operator.cluster.resources import container_resources
from forgetmi_operator.lifecycle.jobconfig import build_job_config
from forgetmi_operator.lifecycle.subjects import SUBJECTS_KEY
from forgetmi_trainer import storage
from forgetmi_trainer.contract import FAIL_FAST_EXIT_CODES, JobConfig

CONFIG_DIR = "/etc/forgetmi"
CONFIG_KEY = "job.json"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
SUBJECTS_DIR = "/var/run/forgetmi/subjects"
SUBJECTS_PATH = f"{SUBJECTS_DIR}/{SUBJECTS_KEY}"
TERMINATION_LOG = "/dev/termination-log"
TRAINER_COMMAND = ["python", "-m", "forgetmi_trainer", "run", "--config", CONFIG_PATH]
RUN_AS_ID = 10001
"""The UID and GID of the trainer pod: the trainer image's USER (Dockerfile), as the chart's operator pod."""
SECRET_FILE_MODE = 0o440


def build_configmap(config: JobConfig, *, name: str, namespace: str, owner: Mapping[str, Any],
                    kind: JobKind = "unlearn") -> dict[str, Any]:
    """An immutable ConfigMap ``name`` holding ``job.json``, owned by the request."""
    ref = naming.owner_reference(owner)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": naming.labels_for(ref["name"], uid=ref["uid"], kind=kind),
            "ownerReferences": [ref],
        },
        "immutable": True,
        "data": {CONFIG_KEY: config.model_dump_json(indent=2)},
    }


def _env(settings: Settings) -> list[dict[str, str]]:
    env = [{"name": "PYTHONUNBUFFERED", "value": "1"}, {"name": "HOME", "value": "/tmp"}]
    if settings.s3_endpoint_url:
        env.append({"name": storage.ENDPOINT_ENV, "value": settings.s3_endpoint_url})
    return env


def _volumes(configmap: str, subjects_secret: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": configmap, "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}]}},
        {"name": "subjects", "secret": {"secretName": subjects_secret,
                                        "items": [{"key": SUBJECTS_KEY, "path": SUBJECTS_KEY}],
                                        "defaultMode": SECRET_FILE_MODE}},
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "subjects", "mountPath": SUBJECTS_DIR, "readOnly": True},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    return volumes, mounts


def _container(spec: UnlearnRequestSpec, settings: Settings, image: str,
               mounts: list[dict[str, Any]]) -> dict[str, Any]:
    secret = spec.credentials_secret_ref.name if spec.credentials_secret_ref else settings.credentials_secret
    container: dict[str, Any] = {
        "name": TRAINER_CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(TRAINER_COMMAND),
        "env": _env(settings),
        "resources": container_resources(spec, settings),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",  # never the log tail: a traceback may name a patient
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_ID,
            "runAsGroup": RUN_AS_ID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if secret:
        container["envFrom"] = [{"secretRef": {"name": secret}}]
    return container


def build_job(spec: UnlearnRequestSpec, settings: Settings, *, name: str, namespace: str, uid: str,
              owner: Mapping[str, Any] | None = None, configmap_name: str | None = None,
              image: str | None = None, kind: JobKind = "unlearn") -> dict[str, Any]:
    """The trainer Job for request ``namespace/name`` (uid ``uid``), named by :func:`naming.job_name`.

    With ``spec.queueName`` the Job carries Kueue's queue label; Kueue's admission webhook suspends
    it until the queue admits it (the Job is not created suspended, so a cluster without Kueue still
    runs it). Exit codes 2 (bad config) and 3 (storage/input) fail the Job at once; pod disruptions
    (preemption, node drain) do not count against ``backoffLimit``. The termination message is only
    what the trainer writes to ``/dev/termination-log`` (policy ``File``, never the log tail, which
    may hold a traceback naming a patient); without one the operator says which exit code it was."""
    ref = naming.owner_reference(owner if owner is not None else {"name": name, "uid": uid})
    job = naming.job_name(name, uid, kind=kind)
    volumes, mounts = _volumes(configmap_name or naming.configmap_name(name, uid, kind=kind),
                               naming.subjects_secret_name(name, uid))
    pod_labels = naming.labels_for(name, uid=uid, kind=kind)
    service_account = spec.service_account_name or settings.trainer_service_account
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_ID,
            "runAsGroup": RUN_AS_ID,
            "fsGroup": RUN_AS_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(spec, settings, image or spec.image or settings.trainer_image, mounts)],
        "volumes": volumes,
    }
    node_selector = spec.node_selector or settings.trainer_node_selector
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    tolerations = spec.tolerations or settings.trainer_tolerations
    if tolerations:
        pod_spec["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in tolerations]
    if spec.priority_class_name:
        pod_spec["priorityClassName"] = spec.priority_class_name
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job,
            "namespace": namespace,
            "labels": naming.labels_for(name, spec.queue_name, uid=uid, kind=kind),
            "ownerReferences": [ref],
        },
        "spec": {
            "completions": 1,
            "parallelism": 1,
            "backoffLimit": spec.backoff_limit,
            "activeDeadlineSeconds": spec.active_deadline_seconds,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds_after_finished,
            "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": TRAINER_CONTAINER, "operator": "In",
                                                      "values": [int(code) for code in FAIL_FAST_EXIT_CODES]}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]},
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }


@dataclass(frozen=True)
class Launch:
    """Everything one launch creates: the trainer config, its ConfigMap and the Job."""

    config: JobConfig
    configmap: dict[str, Any]
    job: dict[str, Any]

    @property
    def job_name(self) -> str:
        return str(self.job["metadata"]["name"])


def build_launch(spec: UnlearnRequestSpec, settings: Settings, *, name: str, namespace: str, uid: str,
                 base_version: str, owner: Mapping[str, Any] | None = None, kind: JobKind = "unlearn") -> Launch:
    """:func:`build_job_config` + :func:`build_configmap` + :func:`build_job`, consistently named."""
    config = build_job_config(spec, uid=uid, namespace=namespace, name=name, base_version=base_version, kind=kind,
                              subjects_file=SUBJECTS_PATH, termination_message_path=TERMINATION_LOG)
    ref = owner if owner is not None else {"name": name, "uid": uid}
    configmap_name = naming.configmap_name(name, uid, kind=kind)
    configmap = build_configmap(config, name=configmap_name, namespace=namespace, owner=ref, kind=kind)
    job = build_job(spec, settings, name=name, namespace=namespace, uid=uid, owner=ref,
                    configmap_name=configmap_name, kind=kind)
    return Launch(config=config, configmap=configmap, job=job)

"""Pure builders of what a request's run is in a cluster: the ConfigMap holding the trainer's
``JobConfig`` and the ``batch/v1`` Job that mounts it and the request's copy of its forget list
(:func:`build_launch` builds a TrainJob instead when :func:`~forgetmi_operator.cluster.trainjobs.engine_of`
says so). A Job runs one process, or several of one node under torchrun ``--standalone``.

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
from forgetmi_operator.cluster import pods, trainjobs
from forgetmi_operator.cluster.pods import (
    CONFIG_DIR,
    CONFIG_KEY,
    CONFIG_PATH,
    LAUNCH_COMMAND_STANDALONE,
    PREVIOUSLY_FORGOTTEN_PATH,
    RUN_AS_ID,
    SECRET_FILE_MODE,
    SUBJECTS_DIR,
    SUBJECTS_PATH,
    TERMINATION_LOG,
    TRAINER_COMMAND,
    TRAINJOB_COMMAND,
    standalone_command,
)
from forgetmi_operator.cluster.resources import container_resources
from forgetmi_operator.cluster.trainjobs import Engine
from forgetmi_operator.lifecycle.jobconfig import build_job_config
from forgetmi_trainer.contract import FAIL_FAST_EXIT_CODES, JobConfig

__all__ = ["CONFIG_DIR", "CONFIG_KEY", "CONFIG_PATH", "LAUNCH_COMMAND_STANDALONE", "PREVIOUSLY_FORGOTTEN_PATH",
           "RUN_AS_ID", "SECRET_FILE_MODE", "SUBJECTS_DIR", "SUBJECTS_PATH", "TERMINATION_LOG", "TRAINER_COMMAND",
           "TRAINJOB_COMMAND", "Launch",
           "build_configmap", "build_job", "build_launch", "job_command", "standalone_command"]


def job_command(spec: UnlearnRequestSpec) -> list[str]:
    """A Job's command: the trainer for one process, torchrun ``--standalone`` for several on its one node."""
    processes = spec.resources.processes
    return standalone_command(processes) if processes > 1 else list(TRAINER_COMMAND)


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


def _container(spec: UnlearnRequestSpec, settings: Settings, image: str,
               mounts: list[dict[str, Any]]) -> dict[str, Any]:
    secret = pods.credentials_secret(spec, settings)
    container: dict[str, Any] = {
        "name": TRAINER_CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": job_command(spec),
        "env": pods.trainer_env(settings),
        "resources": container_resources(spec, settings),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",  # never the log tail: a traceback may name a patient
        "securityContext": pods.container_security_context(),
    }
    if secret:
        container["envFrom"] = [{"secretRef": {"name": secret}}]
    return container


def build_job(spec: UnlearnRequestSpec, settings: Settings, *, name: str, namespace: str, uid: str,
              owner: Mapping[str, Any] | None = None, configmap_name: str | None = None,
              image: str | None = None, kind: JobKind = "unlearn",
              previously_forgotten: bool = False, rebase: int = 0) -> dict[str, Any]:
    """The trainer Job for request ``namespace/name`` (uid ``uid``), named by :func:`naming.job_name`.

    With ``spec.queueName`` the Job carries Kueue's queue label; Kueue's admission webhook suspends
    it until the queue admits it (the Job is not created suspended, so a cluster without Kueue still
    runs it). Exit codes 2 (bad config) and 3 (storage/input) fail the Job at once; pod disruptions
    (preemption, node drain) do not count against ``backoffLimit``. The termination message is only
    what the trainer writes to ``/dev/termination-log`` (policy ``File``, never the log tail, which
    may hold a traceback naming a patient); without one the operator says which exit code it was."""
    ref = naming.owner_reference(owner if owner is not None else {"name": name, "uid": uid})
    job = naming.job_name(name, uid, kind=kind, rebase=rebase)
    volumes, mounts = pods.volumes(configmap_name or naming.configmap_name(name, uid, kind=kind, rebase=rebase),
                                   naming.subjects_secret_name(name, uid, rebase=rebase),
                                   previously_forgotten=previously_forgotten)
    pod_labels = naming.labels_for(name, uid=uid, kind=kind)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pods.pod_security_context(),
        "containers": [_container(spec, settings, image or spec.image or settings.trainer_image, mounts)],
        "volumes": volumes,
        **pods.placement(spec, settings),
    }
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
    """Everything one launch creates: the trainer config, its ConfigMap and the workload (``job``): a
    ``batch/v1`` Job or a Kubeflow Trainer TrainJob (:attr:`engine` says which)."""

    config: JobConfig
    configmap: dict[str, Any]
    job: dict[str, Any]

    @property
    def job_name(self) -> str:
        return str(self.job["metadata"]["name"])

    @property
    def engine(self) -> Engine:
        return "TrainJob" if self.job["kind"] == trainjobs.TRAINJOB_KIND else "Job"


def build_launch(spec: UnlearnRequestSpec, settings: Settings, *, name: str, namespace: str, uid: str,
                 base_version: str, owner: Mapping[str, Any] | None = None, kind: JobKind = "unlearn",
                 previously_forgotten: bool = False, rebase: int = 0) -> Launch:
    """:func:`build_job_config` + :func:`build_configmap` + the workload :func:`trainjobs.engine_of` picks
    (:func:`build_job` or :func:`trainjobs.build_trainjob`), consistently named. With ``previously_forgotten``
    the request's copy holds the patients of earlier erasures: the pods mount them and the config names them."""
    config = build_job_config(spec, uid=uid, namespace=namespace, name=name, base_version=base_version, kind=kind,
                              subjects_file=SUBJECTS_PATH, termination_message_path=TERMINATION_LOG, rebase=rebase,
                              previously_forgotten_file=PREVIOUSLY_FORGOTTEN_PATH if previously_forgotten else None)
    ref = owner if owner is not None else {"name": name, "uid": uid}
    configmap_name = naming.configmap_name(name, uid, kind=kind, rebase=rebase)
    configmap = build_configmap(config, name=configmap_name, namespace=namespace, owner=ref, kind=kind)
    if trainjobs.engine_of(spec) == "TrainJob":
        job = trainjobs.build_trainjob(spec, settings, name=name, namespace=namespace, uid=uid, owner=ref,
                                       configmap_name=configmap_name, kind=kind,
                                       previously_forgotten=previously_forgotten, rebase=rebase)
    else:
        job = build_job(spec, settings, name=name, namespace=namespace, uid=uid, owner=ref,
                        configmap_name=configmap_name, kind=kind, previously_forgotten=previously_forgotten,
                        rebase=rebase)
    return Launch(config=config, configmap=configmap, job=job)

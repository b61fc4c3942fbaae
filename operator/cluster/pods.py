"""What every trainer pod of a request gets, whichever workload runs it: its command, environment,
volumes, security contexts and placement.

:mod:`~forgetmi_operator.cluster.jobs` puts these into a ``batch/v1`` Job's pod template and
:mod:`~forgetmi_operator.cluster.trainjobs` into a TrainJob's ``trainer`` and ``runtimePatches``, so
both engines run the trainer the same way. Pure: nothing here touches the cluster.
"""

from __future__ import annotations

from typing import Any

from forgetmi_operator.api.settings import Settings
from forgetmi_operator.api.spec import UnlearnRequestSpec
from forgetmi_operator.cluster.identity import ACCESS_KEY, SECRET_KEY, SESSION_TOKEN
from forgetmi_operator.lifecycle.subjects import PREVIOUSLY_FORGOTTEN_KEY, SUBJECTS_KEY
from forgetmi_trainer import storage

CONFIG_DIR = "/etc/forgetmi"
CONFIG_KEY = "job.json"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
SUBJECTS_DIR = "/var/run/forgetmi/subjects"
SUBJECTS_PATH = f"{SUBJECTS_DIR}/{SUBJECTS_KEY}"
PREVIOUSLY_FORGOTTEN_PATH = f"{SUBJECTS_DIR}/{PREVIOUSLY_FORGOTTEN_KEY}"
"""The manifest's patients of earlier erasures (docs/ledger.md), when the copy holds them."""
TERMINATION_LOG = "/dev/termination-log"
TRAINER_COMMAND = ["python", "-m", "forgetmi_trainer", "run", "--config", CONFIG_PATH]
"""One process: the trainer itself."""
TRAINJOB_COMMAND = ["python", "-m", "forgetmi_trainer", "launch", "--", "run", "--config", CONFIG_PATH]
"""A TrainJob node: ``launch`` is torchrun, whose options come from the ``PET_*`` variables that
Kubeflow's torch runtime sets (``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, …)."""
RUN_AS_ID = 10001
"""The UID and GID of the trainer pod: the trainer image's USER (Dockerfile), as the chart's operator pod."""
SECRET_FILE_MODE = 0o440
ENDPOINT_KEY = "AWS_ENDPOINT_URL"
CREDENTIAL_KEYS = ((ACCESS_KEY, False), (SECRET_KEY, False), (SESSION_TOKEN, True), (ENDPOINT_KEY, True))
"""The credentials Secret's keys a TrainJob passes one by one (its API has no envFrom), and whether optional."""


def standalone_command(processes: int) -> list[str]:
    """One node, ``processes`` ranks: torchrun ``--standalone`` (its own rendezvous) in a ``batch/v1`` Job."""
    return ["python", "-m", "forgetmi_trainer", "launch", "--standalone", "--nnodes", "1",
            "--nproc-per-node", str(processes), "--", "run", "--config", CONFIG_PATH]


LAUNCH_COMMAND_STANDALONE = standalone_command


def pod_security_context() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": RUN_AS_ID, "runAsGroup": RUN_AS_ID, "fsGroup": RUN_AS_ID,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_ID,
        "runAsGroup": RUN_AS_ID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def trainer_env(settings: Settings) -> list[dict[str, str]]:
    """The trainer's environment: unbuffered output, a writable HOME, the operator's S3 retries (read
    by ``S3Settings.from_env``) and its S3 endpoint when one is set."""
    retries = {"retry_mode": settings.s3_retry_mode, "max_attempts": settings.s3_max_attempts,
               "retry_quota": settings.s3_retry_quota}
    env = [{"name": "PYTHONUNBUFFERED", "value": "1"}, {"name": "HOME", "value": "/tmp"},
           *({"name": storage.RETRY_ENV[field], "value": str(value)} for field, value in retries.items())]
    if settings.s3_endpoint_url:
        env.append({"name": storage.ENDPOINT_ENV, "value": settings.s3_endpoint_url})
    return env


def credentials_secret(spec: UnlearnRequestSpec, settings: Settings) -> str:
    """The Secret whose keys the trainer gets as environment; "" for none."""
    return spec.credentials_secret_ref.name if spec.credentials_secret_ref else settings.credentials_secret


def credential_env(secret: str) -> list[dict[str, Any]]:
    """The credentials Secret's keys as single variables (what ``envFrom`` gives a Job's container)."""
    return [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": optional}}}
            for key, optional in CREDENTIAL_KEYS]


def volumes(configmap: str, subjects_secret: str, *, previously_forgotten: bool = False,
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The JobConfig ConfigMap, the request's copy of its forget list (with its previously forgotten
    patients when ``previously_forgotten``), ``/dev/shm`` and ``/tmp``, and their mounts."""
    keys = (SUBJECTS_KEY, PREVIOUSLY_FORGOTTEN_KEY) if previously_forgotten else (SUBJECTS_KEY,)
    items = [{"key": key, "path": key} for key in keys]
    pod_volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": configmap, "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}]}},
        {"name": "subjects", "secret": {"secretName": subjects_secret, "items": items,
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
    return pod_volumes, mounts


def placement(spec: UnlearnRequestSpec, settings: Settings, *, priority: bool = True) -> dict[str, Any]:
    """nodeSelector, tolerations, priorityClassName (unless ``priority`` is false) and serviceAccountName
    of the pod: the request's when it names them, else the settings' defaults."""
    fields: dict[str, Any] = {}
    node_selector = spec.node_selector or settings.trainer_node_selector
    if node_selector:
        fields["nodeSelector"] = dict(node_selector)
    tolerations = spec.tolerations or settings.trainer_tolerations
    if tolerations:
        fields["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in tolerations]
    if priority and spec.priority_class_name:
        fields["priorityClassName"] = spec.priority_class_name
    service_account = spec.service_account_name or settings.trainer_service_account
    if service_account:
        fields["serviceAccountName"] = service_account
    return fields

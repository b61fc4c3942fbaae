"""Pure builders: an UnlearnRequest → the trainer's ``JobConfig``, its ConfigMap, the Secret holding
the accepted forget list, and a ``batch/v1`` Job.

Nothing here touches the cluster or storage; ``handlers``/``flows`` create what these return.
Where a request and the operator's settings both say something, the request wins: its
nodeSelector or tolerations, when non-empty, replace the settings' defaults; its resource
requests/limits override the defaults key by key; its ``resources.gpus``, when set, replaces
``FORGETMI_TRAINER_GPUS`` (the API server fills in the CRD's default ``gpus: 1``, so in a cluster
the setting applies only to requests that reach the operator without defaulting, e.g. local runs).

Per-request artifacts live in ``<registry>/<model>/requests/<uid>/`` (a retrain run's report and
progress in its ``retrain/`` subfolder); the candidate model goes to
``<registry>/<model>/versions/<candidate version>/``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from forgetmi_operator import GROUP, KIND, VERSION, naming
from forgetmi_operator.api import GPU_RESOURCE, UnlearnRequestSpec
from forgetmi_operator.errors import InvalidSpec
from forgetmi_operator.naming import JobKind
from forgetmi_operator.registry import request_dir_uri, version_uri
from forgetmi_operator.settings import Settings
from forgetmi_trainer import storage
from forgetmi_trainer.contract import ExitCode, JobConfig

CONTAINER_NAME = "trainer"
CONFIG_DIR = "/etc/forgetmi"
CONFIG_KEY = "job.json"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
SUBJECTS_DIR = "/var/run/forgetmi/subjects"
SUBJECTS_FILE = "subjects"
SUBJECTS_PATH = f"{SUBJECTS_DIR}/{SUBJECTS_FILE}"
SUBJECTS_COMPONENT = "subjects"
MAX_SUBJECTS_BYTES = 1024 * 1024
"""What a Secret's data may hold (Kubernetes' limit), so the most a forget list's copy may take."""
TERMINATION_LOG = "/dev/termination-log"
TRAINER_COMMAND = ["python", "-m", "forgetmi_trainer", "run", "--config", CONFIG_PATH]
FAIL_FAST_EXIT_CODES = [int(ExitCode.BAD_CONFIG), int(ExitCode.STORAGE_OR_INPUT)]
RUN_AS_ID = 1000
SECRET_FILE_MODE = 0o440
REPORT_FILE = "report.json"
PROGRESS_FILE = "progress.json"
RECEIPT_FILE = "receipt.json"


@dataclass(frozen=True)
class RequestPaths:
    """Where one request's artifacts live in the registry."""

    directory: str
    report: str
    progress: str
    receipt: str


def request_paths(registry_uri: str, model_name: str, uid: str, *, kind: JobKind = "unlearn") -> RequestPaths:
    """``<registry>/<model>/requests/<uid>/{report,progress,receipt}.json`` (retrain: ``…/retrain/``)."""
    top = request_dir_uri(registry_uri, model_name, uid)
    run = storage.join(top, "retrain") if kind == "retrain" else top
    return RequestPaths(directory=top, report=storage.join(run, REPORT_FILE),
                        progress=storage.join(run, PROGRESS_FILE), receipt=storage.join(top, RECEIPT_FILE))


def build_job_config(spec: UnlearnRequestSpec, *, uid: str, namespace: str, name: str, base_version: str,
                     kind: JobKind = "unlearn", subjects_file: str = SUBJECTS_PATH,
                     termination_message_path: str | None = TERMINATION_LOG) -> JobConfig:
    """The trainer's config for the request. Subject IDs never enter it: the trainer reads the
    list the operator accepted from ``forget.file`` (where the Job mounts the request's subjects
    Secret, :func:`build_subjects_secret`; a local run passes its own ``subjects_file``), whether
    the request names a Secret or a URI."""
    registry, model = spec.model.registry_uri, spec.model.name
    version = naming.candidate_version(base_version, uid, kind=kind)
    paths = request_paths(registry, model, uid, kind=kind)
    method = spec.method
    raw: dict[str, Any] = {
        "request": f"{namespace}/{name}",
        "model": {"registry_uri": registry, "name": model, "version": base_version},
        "manifest_uri": spec.data.manifest_uri,
        "forget": {"file": subjects_file},
        "method": {**method.model_dump(exclude={"seed"}), "name": "retrain" if kind == "retrain" else method.name},
        "output_uri": version_uri(registry, model, version),
        "report_uri": paths.report,
        "candidate_version": version,
        "seed": method.seed,
        "progress_uri": paths.progress,
        "termination_message_path": termination_message_path,
    }
    try:
        return JobConfig.model_validate(raw)
    except ValidationError as err:
        first = err.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidSpec(f"UnlearnRequest {namespace}/{name} cannot be turned into a trainer config: "
                          f"{where}: {first['msg']}.") from err


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """A controller ownerReference to the request, from its body (``metadata.name``/``uid``) or
    from a flat ``{name, uid}`` mapping (``apiVersion``/``kind`` default to UnlearnRequest's)."""
    meta = owner.get("metadata", owner)
    return {
        "apiVersion": owner.get("apiVersion", f"{GROUP}/{VERSION}"),
        "kind": owner.get("kind", KIND),
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_configmap(config: JobConfig, *, name: str, namespace: str, owner: Mapping[str, Any],
                    kind: JobKind = "unlearn") -> dict[str, Any]:
    """An immutable ConfigMap ``name`` holding ``job.json``, owned by the request."""
    ref = owner_reference(owner)
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


def subjects_text(subjects: Sequence[str]) -> str:
    """The canonical text of a forget list: one ID per line, in order (what the trainer parses)."""
    return "".join(f"{subject}\n" for subject in subjects)


def build_subjects_secret(subjects: Sequence[str], *, name: str, namespace: str, uid: str,
                          owner: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The immutable Secret holding the forget list as the operator accepted it, owned by the request.

    The Job reads the list from it and the receipt is computed from it, so editing the referenced
    Secret or object after acceptance changes neither what is forgotten nor what the receipt attests."""
    ref = owner_reference(owner if owner is not None else {"name": name, "uid": uid})
    labels = {**naming.labels_for(ref["name"], uid=ref["uid"]), naming.LABEL_COMPONENT: SUBJECTS_COMPONENT}
    encoded = base64.b64encode(subjects_text(subjects).encode("utf-8")).decode("ascii")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": naming.subjects_secret_name(ref["name"], ref["uid"]),
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [ref],
        },
        "type": "Opaque",
        "immutable": True,
        "data": {SUBJECTS_FILE: encoded},
    }


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether ``obj`` names the object with ``uid`` among its ownerReferences."""
    return any(ref.get("uid") == uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])


_BINARY_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_SUFFIX = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def quantity_value(quantity: str) -> Decimal:
    """A Kubernetes quantity (``500m``, ``16Gi``, ``1e3``) as a number, to compare requests and limits."""
    match = re.fullmatch(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))([a-zA-Z]{0,2}|[eE][+-]?[0-9.]+)", quantity)
    if match is None:
        raise ValueError(f"{quantity!r} is not a Kubernetes quantity")
    number, suffix = match.groups()
    try:
        if suffix in _BINARY_SUFFIX:
            return Decimal(number) * _BINARY_SUFFIX[suffix]
        if suffix in _DECIMAL_SUFFIX:
            return Decimal(number).scaleb(_DECIMAL_SUFFIX[suffix])
        return Decimal(quantity)
    except InvalidOperation as err:
        raise ValueError(f"{quantity!r} is not a Kubernetes quantity") from err


def container_resources(spec: UnlearnRequestSpec, settings: Settings) -> dict[str, dict[str, str]]:
    """Settings' requests/limits overridden key by key by the spec's, plus ``nvidia.com/gpu`` (requested
    and limited alike) when GPUs > 0; raises :class:`InvalidSpec` when a request exceeds its limit."""
    requests = {**settings.trainer_resources.requests, **spec.resources.requests}
    limits = {**settings.trainer_resources.limits, **spec.resources.limits}
    gpus = spec.resources.gpus if "gpus" in spec.resources.model_fields_set else settings.trainer_gpus
    if gpus > 0:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(gpus)
    for key in sorted(requests.keys() & limits.keys()):
        if quantity_value(requests[key]) > quantity_value(limits[key]):
            raise InvalidSpec(f"The trainer's {key} request {requests[key]} exceeds its limit {limits[key]} "
                              "(spec.resources merged over the operator's defaults).")
    resources: dict[str, dict[str, str]] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return resources


def _env(settings: Settings) -> list[dict[str, str]]:
    env = [{"name": "PYTHONUNBUFFERED", "value": "1"}, {"name": "HOME", "value": "/tmp"}]
    if settings.s3_endpoint_url:
        env.append({"name": storage.ENDPOINT_ENV, "value": settings.s3_endpoint_url})
    return env


def _volumes(configmap: str, subjects_secret: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": configmap, "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}]}},
        {"name": "subjects", "secret": {"secretName": subjects_secret,
                                        "items": [{"key": SUBJECTS_FILE, "path": SUBJECTS_FILE}],
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
        "name": CONTAINER_NAME,
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
    ref = owner_reference(owner if owner is not None else {"name": name, "uid": uid})
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
                {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER_NAME, "operator": "In",
                                                      "values": list(FAIL_FAST_EXIT_CODES)}},
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
    config = build_job_config(spec, uid=uid, namespace=namespace, name=name, base_version=base_version, kind=kind)
    ref = owner if owner is not None else {"name": name, "uid": uid}
    configmap_name = naming.configmap_name(name, uid, kind=kind)
    configmap = build_configmap(config, name=configmap_name, namespace=namespace, owner=ref, kind=kind)
    job = build_job(spec, settings, name=name, namespace=namespace, uid=uid, owner=ref,
                    configmap_name=configmap_name, kind=kind)
    return Launch(config=config, configmap=configmap, job=job)

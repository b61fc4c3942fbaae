"""Deterministic names and labels of what the operator creates for an UnlearnRequest.

The same request (name + uid) always yields the same Job, ConfigMap and subjects-Secret name, so
a second creation attempt (operator restart, handler retry) meets a name conflict instead of
creating a duplicate. Job names are DNS-1123 labels (≤ 63 characters) because the Job's name
becomes a pod label value and the pods' hostname prefix; the subjects Secret adds ``-subjects``
(a Secret name may be a longer DNS subdomain).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Literal

from forgetmi_operator import GROUP, KIND, VERSION

JobKind = Literal["unlearn", "retrain"]

NAME_PREFIX = "forgetmi"
MAX_LABEL = 63
MAX_VERSION = 128
UID_CHARS = 8
_KIND_SUFFIX: dict[str, str] = {"unlearn": "", "retrain": "-retrain"}
_VERSION_SUFFIX: dict[str, str] = {"unlearn": "unlearned", "retrain": "retrained"}

LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_REQUEST = f"{GROUP}/request"
LABEL_REQUEST_UID = f"{GROUP}/request-uid"
LABEL_QUEUE = "kueue.x-k8s.io/queue-name"

LABEL_VALUE_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"

MODEL_ENV_ANNOTATION = f"{GROUP}/model-env"
"""On a Deployment: the env var the operator may set to the model URI (the request's ``target.env``)."""
MODEL_CONTAINER_ANNOTATION = f"{GROUP}/model-container"
"""On a Deployment: the container whose env var the operator may set."""
MODEL_STORAGE_URI_ANNOTATION = f"{GROUP}/model-storage-uri"
"""On a KServe InferenceService: ``"true"`` lets the operator set ``spec.predictor.model.storageUri``."""

TRAINER_APP = "forgetmi-trainer"
TRAINER_CONTAINER = "trainer"
"""The trainer container's name in every Job."""
MANAGER = "forgetmi-operator"
PART_OF = "forgetmi"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def uid_suffix(uid: str) -> str:
    """The first 8 lowercase alphanumerics of the uid (a Kubernetes uid is a UUID), padded from
    the uid's sha256 when it has fewer."""
    if not uid:
        raise ValueError("A request uid is required to name its objects.")
    clean = re.sub(r"[^a-z0-9]", "", uid.lower())
    return (clean + _digest(uid))[:UID_CHARS]


def _label_safe(name: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", name.lower())


def _run_tail(uid: str, kind: JobKind, rebase: int) -> str:
    if rebase < 0:
        raise ValueError(f"A rebase count is ≥ 0, not {rebase}.")
    return f"-{uid_suffix(uid)}{f'-b{rebase}' if rebase else ''}{_KIND_SUFFIX[kind]}"


def job_name(request_name: str, uid: str, *, kind: JobKind = "unlearn", rebase: int = 0) -> str:
    """``forgetmi-<request name, truncated>-<uid[:8]>``, then ``-b<n>`` for the request's n-th rebase (a
    run on the version its alias was moved on to: docs/rebase.md) and ``-retrain`` for a retrain Job."""
    tail = _run_tail(uid, kind, rebase)
    room = MAX_LABEL - len(NAME_PREFIX) - 1 - len(tail)
    middle = _label_safe(request_name)[:room].strip("-")
    return f"{NAME_PREFIX}-{middle}{tail}" if middle else f"{NAME_PREFIX}{tail}"


def job_run(request_name: str, uid: str, job: str) -> tuple[JobKind, int]:
    """Which of the request's runs the Job (or TrainJob) ``job`` is: its kind (retrain, or else unlearn)
    and its rebase count. Every name ends with the uid's suffix, the rebase's and the kind's (a TrainJob's
    may keep less of the request's name)."""
    found = re.search(rf"-{re.escape(uid_suffix(uid))}(?:-b([1-9][0-9]*))?(-retrain)?$", job)
    if found is None:
        return "unlearn", 0
    return ("retrain" if found.group(2) else "unlearn"), int(found.group(1) or 0)


def job_kind(request_name: str, uid: str, job: str) -> JobKind:
    """The kind of the request's Job ``job`` (:func:`job_run`)."""
    return job_run(request_name, uid, job)[0]


def configmap_name(request_name: str, uid: str, *, kind: JobKind = "unlearn", rebase: int = 0) -> str:
    """The ConfigMap holding a Job's ``job.json`` shares the Job's name."""
    return job_name(request_name, uid, kind=kind, rebase=rebase)


def subjects_secret_name(request_name: str, uid: str, *, rebase: int = 0) -> str:
    """The Secret holding the request's forget list as accepted: the unlearn Job's name plus
    ``-subjects`` (one per request; a retrain Job mounts the same one). The n-th rebase's runs mount a
    copy of their own (``rebase`` n), with the same list and the previously forgotten patients of the
    ledger as it is at that rebase."""
    return f"{job_name(request_name, uid, rebase=rebase)}-subjects"


def batch_subjects_secret_name(leader_name: str, leader_uid: str, *, rebase: int = 0) -> str:
    """The Secret holding the union of a batch's forget lists (docs/coalescing.md): the leader's Job
    name (of the leader's ``rebase``-th rebase) plus ``-batch-subjects``."""
    return f"{job_name(leader_name, leader_uid, rebase=rebase)}-batch-subjects"


def candidate_version(base_version: str, uid: str, *, kind: JobKind = "unlearn", rebase: int = 0) -> str:
    """``<base>-unlearned-<uid[:8]>`` (``-retrained-`` for a retrain; ``-b<n>`` appended for the n-th
    rebase), at most 128 characters."""
    tail = f"-{_VERSION_SUFFIX[kind]}-{uid_suffix(uid)}{f'-b{rebase}' if rebase else ''}"
    base = base_version[: MAX_VERSION - len(tail)].rstrip("-._")
    if not base:
        raise ValueError(f"Base version {base_version!r} cannot name a candidate version.")
    return base + tail


def request_label_value(request_name: str) -> str:
    """The request name as a label value: itself when ≤ 63 characters, else a prefix plus a hash."""
    if len(request_name) <= MAX_LABEL:
        return request_name
    return f"{request_name[: MAX_LABEL - 9].rstrip('-.')}-{_digest(request_name)[:8]}"


def labels_for(request_name: str, queue_name: str | None = None, *, uid: str | None = None,
               kind: JobKind = "unlearn") -> dict[str, str]:
    """Labels of a request's Job, its pods and its ConfigMap; the Kueue queue label only when set."""
    labels = {
        LABEL_NAME: TRAINER_APP,
        LABEL_MANAGED_BY: MANAGER,
        LABEL_PART_OF: PART_OF,
        LABEL_COMPONENT: kind,
        LABEL_REQUEST: request_label_value(request_name),
    }
    if uid:
        if not re.fullmatch(LABEL_VALUE_PATTERN, uid):
            raise ValueError(f"Request uid {uid!r} is not a valid label value.")
        labels[LABEL_REQUEST_UID] = uid
    if queue_name:
        labels[LABEL_QUEUE] = queue_name
    return labels


def describe(body: Mapping[str, Any]) -> str:
    """``UnlearnRequest <namespace>/<name>``: how messages and logs name a request."""
    meta = body.get("metadata") or {}
    return f"UnlearnRequest {meta.get('namespace')}/{meta.get('name')}"


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


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether ``obj`` names the object with ``uid`` among its ownerReferences."""
    return any(ref.get("uid") == uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])

"""Coalesced requests (docs/coalescing.md), as the lifecycle reads them: which requests may share one
trainer run, and whose run a request reads.

With the operator's ``coalesceWindowSeconds`` set, requests in one namespace for the same model and
base version whose specs agree on everything but the forget list (``spec.forget``, ``spec.coalesce``,
``spec.suspend``) and that are accepted within the window share ONE Job whose forget set is the union
of theirs: :func:`coalescible` says whether a request may, :func:`batch_key` which requests may share.
A Manual rollout is never coalesced (an approval is a person's decision about one request; one
approval would otherwise promote a model for requests nobody approved).

A batch's Job, its report and its candidate are its leader's — the first accepted of the requests still
there when the window closed — so :func:`run_owner` names the request whose run a request reads: its
batch's leader, else itself. Each request keeps its own status, Events, copy of its forget list and
receipt. Pure functions only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from forgetmi_operator.api import naming
from forgetmi_operator.api.spec import UnlearnRequestSpec
from forgetmi_operator.api.status import BatchStatus

NOT_SHARED = frozenset({"forget", "coalesce", "suspend"})
"""The spec fields requests of one batch may differ in."""


def coalescible(spec: UnlearnRequestSpec, window_seconds: float) -> bool:
    """Whether the request waits up to ``window_seconds`` for others to share its Job."""
    return window_seconds > 0 and spec.coalesce and spec.rollout.mode != "Manual"


def batch_key(spec: UnlearnRequestSpec, namespace: str, base_version: str) -> str:
    """The sha256 (hex) that requests sharing one Job have in common: the namespace, the base version,
    and the spec but for :data:`NOT_SHARED`."""
    shared = spec.model_dump(mode="json", by_alias=True, exclude=set(NOT_SHARED))
    text = json.dumps({"namespace": namespace, "base": base_version, "spec": shared}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def batch_of(body: Mapping[str, Any]) -> BatchStatus | None:
    """The batch the request runs in (or gathers for), from its status; None when it is not coalesced."""
    batch = (body.get("status") or {}).get("batch")
    return None if not batch else BatchStatus.model_validate(batch)


def run_owner(body: Mapping[str, Any]) -> tuple[str, str]:
    """``(name, uid)`` of the request whose Job, report and candidate this request's run is: its
    batch's leader once the batch's Job exists, else the request itself."""
    batch = batch_of(body)
    if batch is not None and batch.leader is not None:
        return batch.leader.name, batch.leader.uid
    meta = body["metadata"]
    return str(meta["name"]), str(meta["uid"])


def run_rebase(body: Mapping[str, Any]) -> int:
    """Which rebase of its owner (:func:`run_owner`) the request's current run is (0: the first run),
    read from the run's Job name."""
    job = (body.get("status") or {}).get("jobName")
    if not job:
        return int((body.get("status") or {}).get("rebases") or 0)
    return naming.job_run(*run_owner(body), str(job))[1]


def in_shared_run(body: Mapping[str, Any]) -> bool:
    """Whether the request's run is a batch's Job shared with at least one other request."""
    batch = batch_of(body)
    return batch is not None and len(batch.requests) > 1


def order(bodies: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Requests in the order they were accepted into a batch: by creation time, then name (the first
    is the leader)."""
    return sorted(bodies, key=lambda body: (str(body["metadata"].get("creationTimestamp") or ""),
                                            str(body["metadata"]["name"])))


def union(lists: Iterable[Iterable[str]]) -> list[str]:
    """The batch's forget set: every subject of every list, once, sorted."""
    return sorted({subject for subjects in lists for subject in subjects})

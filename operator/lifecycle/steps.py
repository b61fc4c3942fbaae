"""What one step of a request's lifecycle changes, as data: status fields and Events.

A :class:`Step` is applied by whoever runs the lifecycle — as a merge patch of the request's
status and Kopf Events in a cluster, with :func:`merge_patch` and printed lines by ``forgetmi
run``. :func:`with_condition` keeps the conditions and the phase they imply in agreement;
:func:`failure`, :func:`job_running` and :func:`job_failed` are the steps both paths take alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from forgetmi_operator.api import conditions as cond
from forgetmi_operator.api.errors import OperatorError
from forgetmi_operator.api.naming import describe
from forgetmi_operator.api.patterns import ConditionStatus, ConditionType
from forgetmi_trainer.contract import now

Event = tuple[str, str, str]
"""``(type, reason, message)``: ``Normal`` or ``Warning``, a CamelCase reason, a sentence."""
PROMOTION_ERRORS = frozenset({"PromotionConflict", "DigestMismatch", "ServingTargetError"})
"""Errors of the promotion itself: the request is held (Promoted=False), not failed."""


@dataclass
class Step:
    """Status fields (camelCase; None removes a field, as in a merge patch), Events, and the
    non-retryable error that ended the request, if one did."""

    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    error: OperatorError | None = None


def with_condition(body: Mapping[str, Any], step: Step, type: ConditionType, status: ConditionStatus,
                   reason: str, message: str) -> None:
    """Set one condition in ``step.status`` (starting from the object's, or the initial four) and
    re-derive the phase from the conditions."""
    generation = (body.get("metadata") or {}).get("generation")
    current = step.status.get("conditions") or (body.get("status") or {}).get("conditions") or \
        cond.initial_conditions(generation, now(), describe(body))
    step.status["conditions"] = cond.set_condition(current, type, status, reason, message, generation, now())
    step.status["phase"] = cond.phase_for(step.status["conditions"])
    step.status["observedGeneration"] = generation


def failure(body: Mapping[str, Any], err: OperatorError, *, accepting: bool) -> Step:
    """The status of a request that a non-retryable error stopped before its gates were evaluated
    (the conclusion records later errors itself): Accepted=False while ``accepting``, else
    Unlearned=False, or Promoted=False for an error of the promotion itself."""
    step = Step(error=err)
    type: ConditionType = "Accepted" if accepting else "Unlearned"
    if not accepting and err.reason in PROMOTION_ERRORS:
        type = "Promoted"
    with_condition(body, step, type, "False", err.reason, err.message)
    step.status["completionTime"] = now()
    step.events.append(("Warning", err.reason, err.message))
    return step


def job_running(body: Mapping[str, Any], step: Step, job_name: str) -> None:
    """The request's trainer run started."""
    with_condition(body, step, "Unlearned", "Unknown", cond.JOB_RUNNING, f"Job {job_name} is running.")
    step.events.append(("Normal", "JobRunning", f"Job {job_name} started running."))


def job_failed(body: Mapping[str, Any], step: Step, job_name: str, reason: str, message: str) -> None:
    """The request's trainer run failed for good (``reason``: CamelCase; ``message``: a sentence)."""
    with_condition(body, step, "Unlearned", "False", reason, message)
    step.status["completionTime"] = now()
    step.events.append(("Warning", "JobFailed", f"Job {job_name} failed ({reason}): {message}"))


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``target`` with ``patch`` applied as a JSON merge patch (RFC 7386), as the API server applies
    a status patch: mappings merge key by key, None removes a key, anything else replaces."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping):
            current = merged.get(key)
            merged[key] = merge_patch(current if isinstance(current, Mapping) else {}, value)
        else:
            merged[key] = value
    return merged

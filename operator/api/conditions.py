"""Pure helpers on ``status.conditions`` (Kubernetes ``metav1.Condition`` dicts, camelCase keys).

Conditions are set on the first visit, all four ``Unknown`` (Kubebuilder style), then moved one
at a time. ``lastTransitionTime`` changes only when a condition's status changes. Messages are
sentences that name the object. ``phase_for`` derives the printer-column phase from them, so the
phase can never disagree with the conditions.

Reasons used for the non-error states (errors bring their own, see ``errors.py``):

- Accepted: ``Validating`` (Unknown), ``Accepted`` (True);
- Unlearned: ``NotStarted``, ``Coalescing`` (waiting for other requests to share its Job), ``JobPending``,
  ``JobRunning`` (Unknown), ``JobSucceeded`` (True);
- GatesPassed: ``NotEvaluated`` (Unknown), ``GatesPassed`` (True), ``GatesFailed``,
  ``GatesInconclusive`` (False);
- Promoted: ``NotPromoted``, ``AwaitingApproval``, ``Retraining``, ``Rebasing`` (Unknown), ``Promoted``
  (True), ``DryRun``, ``GatesNotPassed`` (False).

While a retrain runs (decision Retrain), Promoted is Unknown/``Retraining`` and Unlearned goes
back to Unknown/``JobPending``/``JobRunning`` for the retrain Job; a rebase (the alias moved on before
the promotion: docs/rebase.md) sets Promoted Unknown/``Rebasing`` and GatesPassed and Unlearned back to
Unknown for the new run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from forgetmi_operator.api.patterns import ConditionStatus, ConditionType, Phase
from forgetmi_operator.api.status import Condition
from forgetmi_trainer.contract import timestamp as contract_timestamp

CONDITION_TYPES: tuple[ConditionType, ...] = ("Accepted", "Unlearned", "GatesPassed", "Promoted")

VALIDATING = "Validating"
ACCEPTED = "Accepted"
NOT_STARTED = "NotStarted"
JOB_PENDING = "JobPending"
COALESCING = "Coalescing"
JOB_RUNNING = "JobRunning"
JOB_SUCCEEDED = "JobSucceeded"
NOT_EVALUATED = "NotEvaluated"
GATES_PASSED = "GatesPassed"
GATES_FAILED = "GatesFailed"
GATES_INCONCLUSIVE = "GatesInconclusive"
NOT_PROMOTED = "NotPromoted"
AWAITING_APPROVAL = "AwaitingApproval"
RETRAINING = "Retraining"
REBASING = "Rebasing"
PROMOTED = "Promoted"
DRY_RUN = "DryRun"
GATES_NOT_PASSED = "GatesNotPassed"

_INITIAL: dict[str, tuple[str, str]] = {
    "Accepted": (VALIDATING, "{} has not been validated yet."),
    "Unlearned": (NOT_STARTED, "{} has not started unlearning yet."),
    "GatesPassed": (NOT_EVALUATED, "{} has no evaluated gates yet."),
    "Promoted": (NOT_PROMOTED, "{} has not been promoted yet."),
}


def timestamp(now: datetime | str) -> str:
    """RFC 3339 UTC with seconds, as Kubernetes writes ``lastTransitionTime`` (a string is kept as it is)."""
    return now if isinstance(now, str) else contract_timestamp(now)


def set_condition(conditions: Sequence[Mapping[str, Any]], type: ConditionType, status: ConditionStatus,
                  reason: str, message: str, generation: int | None, now: datetime | str) -> list[dict[str, Any]]:
    """A new list with condition ``type`` set (others unchanged, order kept, new types appended).
    ``lastTransitionTime`` is ``now`` only when the status changed (or the condition is new)."""
    previous = get_condition(conditions, type)
    changed = previous is None or previous.get("status") != status
    new = Condition(
        type=type, status=status, reason=reason, message=message, observed_generation=generation,
        last_transition_time=timestamp(now) if changed or not previous.get("lastTransitionTime")
        else str(previous["lastTransitionTime"]),
    ).model_dump(by_alias=True, exclude_none=True)
    result = [dict(item) if item.get("type") != type else new for item in conditions]
    if previous is None:
        result.append(new)
    return result


def initial_conditions(generation: int | None, now: datetime | str,
                       request: str = "The UnlearnRequest") -> list[dict[str, Any]]:
    """All four condition types ``Unknown``, for the first visit of ``request`` (as
    :func:`~forgetmi_operator.api.naming.describe` names it)."""
    conditions: list[dict[str, Any]] = []
    for type in CONDITION_TYPES:
        reason, template = _INITIAL[type]
        conditions = set_condition(conditions, type, "Unknown", reason, template.format(request),
                                   generation, now)
    return conditions


def get_condition(conditions: Sequence[Mapping[str, Any]], type: ConditionType) -> Mapping[str, Any] | None:
    return next((item for item in conditions if item.get("type") == type), None)


def status_of(conditions: Sequence[Mapping[str, Any]], type: ConditionType) -> ConditionStatus:
    """The condition's status, ``Unknown`` when absent."""
    found = get_condition(conditions, type)
    return found["status"] if found is not None else "Unknown"


def reason_of(conditions: Sequence[Mapping[str, Any]], type: ConditionType) -> str | None:
    found = get_condition(conditions, type)
    return None if found is None else found.get("reason")


def terminal_condition(conditions: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The condition that ended a request: Promoted when True, else the first of Accepted, Unlearned,
    Promoted that is False (the one :func:`phase_for` reads Failed or Held from); None while it runs."""
    if status_of(conditions, "Promoted") == "True":
        return get_condition(conditions, "Promoted")
    for type in ("Accepted", "Unlearned", "Promoted"):
        if status_of(conditions, type) == "False":
            return get_condition(conditions, type)
    return None


def phase_for(conditions: Sequence[Mapping[str, Any]]) -> Phase:
    """The printer-column phase:

    - Failed: Accepted or Unlearned is False;
    - Promoted: Promoted is True;
    - Held: GatesPassed is False, or Promoted is False (a dry run, or not promotable);
    - Evaluating: Unlearned is True and the rest is undecided (including awaiting approval);
    - Running: the Job runs (Unlearned reason ``JobRunning``), or a retrain does;
    - Pending: anything before that (validating, queued, pod not yet running).
    """
    get = {type: status_of(conditions, type) for type in CONDITION_TYPES}
    if "False" in (get["Accepted"], get["Unlearned"]):
        return "Failed"
    if get["Promoted"] == "True":
        return "Promoted"
    if reason_of(conditions, "Promoted") in (RETRAINING, REBASING):
        return "Running" if reason_of(conditions, "Unlearned") == JOB_RUNNING else "Pending"
    if "False" in (get["GatesPassed"], get["Promoted"]):
        return "Held"
    if get["Unlearned"] == "True":
        return "Evaluating"
    if get["Accepted"] == "True" and reason_of(conditions, "Unlearned") == JOB_RUNNING:
        return "Running"
    return "Pending"


def is_terminal(phase: Phase | None) -> bool:
    """Promoted, Held and Failed end a request (Held waits only for a change of its spec)."""
    return phase in ("Promoted", "Held", "Failed")

"""conditions: metav1.Condition helpers, transition times, and the phase derived from them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from forgetmi_operator.api import conditions as c
from forgetmi_operator.api.status import UnlearnRequestStatus

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def _start() -> list[dict[str, Any]]:
    return c.initial_conditions(1, T0, "UnlearnRequest radiology/forget-request-0042")


def test_initial_conditions_are_all_unknown_with_sentences() -> None:
    conditions = _start()
    assert [item["type"] for item in conditions] == ["Accepted", "Unlearned", "GatesPassed", "Promoted"]
    assert all(item["status"] == "Unknown" for item in conditions)
    assert all(item["lastTransitionTime"] == "2025-01-01T12:00:00Z" for item in conditions)
    assert all(item["observedGeneration"] == 1 for item in conditions)
    assert conditions[0] == {"type": "Accepted", "status": "Unknown", "reason": "Validating",
                             "message": "UnlearnRequest radiology/forget-request-0042 has not been validated yet.",
                             "lastTransitionTime": "2025-01-01T12:00:00Z", "observedGeneration": 1}
    assert c.initial_conditions(None, T0)[1]["message"] == "The UnlearnRequest has not started unlearning yet."


def test_conditions_fit_the_status_model() -> None:
    status = UnlearnRequestStatus.model_validate({"conditions": _start()})
    assert len(status.conditions) == 4


def test_a_status_change_moves_the_transition_time() -> None:
    conditions = c.set_condition(_start(), "Accepted", "True", c.ACCEPTED, "Accepted.", 1, T1)
    accepted = c.get_condition(conditions, "Accepted")
    assert accepted is not None
    assert (accepted["status"], accepted["reason"], accepted["lastTransitionTime"]) == (
        "True", "Accepted", "2025-01-01T12:05:00Z")


def test_an_unchanged_status_keeps_the_transition_time_but_updates_the_rest() -> None:
    running = c.set_condition(_start(), "Unlearned", "Unknown", c.JOB_RUNNING, "Job runs.", 2, T1)
    unlearned = c.get_condition(running, "Unlearned")
    assert unlearned is not None
    assert unlearned["lastTransitionTime"] == "2025-01-01T12:00:00Z"
    assert (unlearned["reason"], unlearned["message"], unlearned["observedGeneration"]) == (
        "JobRunning", "Job runs.", 2)


def test_set_condition_keeps_order_does_not_mutate_and_appends_new_types() -> None:
    start = _start()
    snapshot = [dict(item) for item in start]
    updated = c.set_condition(start, "GatesPassed", "True", c.GATES_PASSED, "All 3 gates passed.", 1, T1)
    assert start == snapshot
    assert [item["type"] for item in updated] == [item["type"] for item in start]
    appended = c.set_condition([], "Promoted", "False", c.DRY_RUN, "Dry run.", None, T1)
    assert appended == [{"type": "Promoted", "status": "False", "reason": "DryRun", "message": "Dry run.",
                         "lastTransitionTime": "2025-01-01T12:05:00Z"}]


def test_a_previous_condition_without_a_time_gets_one() -> None:
    broken = [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "x"}]
    updated = c.set_condition(broken, "Accepted", "True", c.ACCEPTED, "Accepted.", 1, T1)
    assert updated[0]["lastTransitionTime"] == "2025-01-01T12:05:00Z"


def test_condition_fields_are_validated() -> None:
    with pytest.raises(ValidationError):
        c.set_condition([], "Accepted", "Maybe", "x", "m", 1, T0)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        c.set_condition([], "Accepted", "True", "not a reason", "m", 1, T0)
    with pytest.raises(ValidationError):
        c.set_condition([], "Done", "True", "Done", "m", 1, T0)  # type: ignore[arg-type]


def test_timestamps_are_utc_seconds_and_need_a_zone() -> None:
    assert c.timestamp(datetime(2025, 1, 1, 13, 0, 0, 999, tzinfo=timezone(timedelta(hours=1)))) == (
        "2025-01-01T12:00:00Z")
    assert c.timestamp("2025-01-01T12:00:00Z") == "2025-01-01T12:00:00Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        c.timestamp(datetime(2025, 1, 1))


def test_status_and_reason_of_absent_conditions() -> None:
    assert c.status_of([], "Accepted") == "Unknown"
    assert c.reason_of([], "Accepted") is None


def _with(*changes: tuple[str, str, str]) -> list[dict[str, Any]]:
    conditions = _start()
    for type_, status, reason in changes:
        conditions = c.set_condition(conditions, type_, status, reason, "m", 1, T1)  # type: ignore[arg-type]
    return conditions


ACCEPTED = ("Accepted", "True", c.ACCEPTED)
RUNNING = ("Unlearned", "Unknown", c.JOB_RUNNING)
UNLEARNED = ("Unlearned", "True", c.JOB_SUCCEEDED)
PASSED = ("GatesPassed", "True", c.GATES_PASSED)


@pytest.mark.parametrize(("changes", "phase"), [
    ((), "Pending"),
    ((ACCEPTED,), "Pending"),
    ((ACCEPTED, ("Unlearned", "Unknown", c.JOB_PENDING)), "Pending"),
    ((ACCEPTED, RUNNING), "Running"),
    ((ACCEPTED, UNLEARNED), "Evaluating"),
    ((ACCEPTED, UNLEARNED, PASSED, ("Promoted", "Unknown", c.AWAITING_APPROVAL)), "Evaluating"),
    ((ACCEPTED, UNLEARNED, PASSED, ("Promoted", "True", c.PROMOTED)), "Promoted"),
    ((ACCEPTED, UNLEARNED, ("GatesPassed", "False", c.GATES_FAILED)), "Held"),
    ((ACCEPTED, UNLEARNED, PASSED, ("Promoted", "False", c.DRY_RUN)), "Held"),
    ((ACCEPTED, UNLEARNED, ("GatesPassed", "False", c.GATES_FAILED), ("Promoted", "Unknown", c.RETRAINING),
      ("Unlearned", "Unknown", c.JOB_RUNNING)), "Running"),
    ((ACCEPTED, UNLEARNED, ("GatesPassed", "False", c.GATES_FAILED), ("Promoted", "Unknown", c.RETRAINING),
      ("Unlearned", "Unknown", c.JOB_PENDING)), "Pending"),
    ((("Accepted", "False", "InvalidSpec"),), "Failed"),
    ((ACCEPTED, ("Unlearned", "False", "JobFailed")), "Failed"),
])
def test_phase_follows_the_conditions(changes: tuple[tuple[str, str, str], ...], phase: str) -> None:
    assert c.phase_for(_with(*changes)) == phase


def test_terminal_phases() -> None:
    assert [p for p in ("Pending", "Running", "Evaluating", "Promoted", "Held", "Failed", None)
            if c.is_terminal(p)] == ["Promoted", "Held", "Failed"]  # type: ignore[arg-type]

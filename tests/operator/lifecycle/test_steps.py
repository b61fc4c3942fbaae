"""``lifecycle.steps``: failures land on the right condition and phase; a step applies as a merge patch."""

from __future__ import annotations

import pytest

from forgetmi_operator.api.errors import JobFailed, PromotionConflict, SecretNotFound
from forgetmi_operator.lifecycle.steps import Step, failure, job_failed, job_running, merge_patch

BODY = {"metadata": {"name": "r", "namespace": "ns", "uid": "u-1", "generation": 3}, "spec": {}}


@pytest.mark.parametrize(("error", "accepting", "condition", "phase"), [
    (SecretNotFound("Secret ns/x does not exist."), True, "Accepted", "Failed"),
    (JobFailed("The trainer Job no longer exists."), False, "Unlearned", "Failed"),
    (PromotionConflict("Alias moved."), False, "Promoted", "Held"),
])
def test_failure_sets_the_condition_and_phase(error: Exception, accepting: bool, condition: str,
                                              phase: str) -> None:
    step = failure(BODY, error, accepting=accepting)  # type: ignore[arg-type]
    found = next(c for c in step.status["conditions"] if c["type"] == condition)
    assert (found["status"], found["reason"], found["message"]) == ("False", error.reason, error.message)
    assert step.status["phase"] == phase
    assert step.status["observedGeneration"] == 3
    assert {c["type"] for c in step.status["conditions"]} == {"Accepted", "Unlearned", "GatesPassed", "Promoted"}
    assert step.events == [("Warning", error.reason, error.message)]
    assert step.error is error
    first = next(c for c in step.status["conditions"] if c["type"] != condition)
    assert first["message"].startswith("UnlearnRequest ns/r has not")


def test_a_run_that_starts_then_fails_moves_unlearned_and_the_phase() -> None:
    accepted = {**BODY, "status": {"conditions": failure(BODY, SecretNotFound("x"), accepting=False).status[
        "conditions"]}}
    step = Step()
    job_running(BODY, step, "job-1")
    assert step.status["phase"] == "Pending"  # Accepted is not True yet in BODY
    assert step.events == [("Normal", "JobRunning", "Job job-1 started running.")]
    failed = Step()
    job_failed(accepted, failed, "job-1", "Diverged", "The loss became nan at epoch 3.")
    unlearned = next(c for c in failed.status["conditions"] if c["type"] == "Unlearned")
    assert (unlearned["status"], unlearned["reason"]) == ("False", "Diverged")
    assert failed.status["phase"] == "Failed" and failed.status["completionTime"]
    assert failed.events == [("Warning", "JobFailed", "Job job-1 failed (Diverged): The loss became nan at epoch 3.")]


def test_merge_patch_merges_mappings_removes_nulls_and_replaces_the_rest() -> None:
    status = {"phase": "Running", "metrics": {"mia": {"original": 1.0, "unlearned": 0.5}, "testAUC": {"original": 0.8}},
              "gates": [{"metric": "mia"}], "progress": {"epoch": 3}}
    patch = {"phase": "Promoted", "metrics": {"mia": {"unlearned": None}, "forgetAUC": {"original": 1.0}},
             "gates": [{"metric": "testAUC"}], "progress": None}
    assert merge_patch(status, patch) == {
        "phase": "Promoted", "metrics": {"mia": {"original": 1.0}, "testAUC": {"original": 0.8},
                                         "forgetAUC": {"original": 1.0}},
        "gates": [{"metric": "testAUC"}]}
    assert status["phase"] == "Running" and "progress" in status  # the target is not changed

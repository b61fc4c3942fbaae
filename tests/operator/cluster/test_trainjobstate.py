"""trainjobstate: a Kubeflow Trainer v2 TrainJob + its Pods → the Job path's pending/running/succeeded/failed.

Each TrainJob status here validates against ``kubeflow-trainer-api``'s ``TrainerV1alpha1TrainJobStatus``
(and survives its round trip), so the shapes are those Trainer v2.3 writes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from kubeflow_trainer_api.models.trainer_v1alpha1_train_job_status import TrainerV1alpha1TrainJobStatus

from forgetmi_operator.api.patterns import CONDITION_REASON_PATTERN
from forgetmi_operator.cluster import jobstate, trainjobstate
from forgetmi_operator.cluster.jobstate import JobState
from forgetmi_operator.cluster.trainjobstate import trainjob_state
from forgetmi_trainer.contract import ExitCode

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
TIMEOUT = 600.0
NAME = "forgetmi-cxr-abcdef12"


def _condition(type_: str, reason: str, message: str = "", status: str = "True") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2025-01-01T11:00:00Z"}


def _jobs(**counts: int) -> list[dict[str, Any]]:
    return [{"name": "node", **{key: counts.get(key, 0) for key in ("active", "ready", "succeeded", "failed",
                                                                    "suspended")}}]


def _trainjob(conditions: list[dict[str, Any]] | None = None, jobs_status: list[dict[str, Any]] | None = None,
              *, suspend: bool = False) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if conditions is not None:
        status["conditions"] = conditions
    if jobs_status is not None:
        status["jobsStatus"] = jobs_status
    model = TrainerV1alpha1TrainJobStatus.from_dict(status)
    assert model is not None and model.model_dump(mode="json", by_alias=True, exclude_none=True) == status
    return {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": {"name": NAME},
            "spec": {"runtimeRef": {"name": "torch-distributed"}, "suspend": suspend}, "status": status}


def _pod(phase: str = "Pending", *, state: dict[str, Any] | None = None, index: int = 0,
         conditions: list[dict[str, Any]] | None = None, created: str = "2025-01-01T11:00:00Z") -> dict[str, Any]:
    name = f"{NAME}-node-0-{index}-x1y2z"
    return {"metadata": {"name": name, "creationTimestamp": created,
                         "labels": {trainjobstate.JOBSET_NAME_LABEL: NAME, "job-name": f"{NAME}-node-0"}},
            "status": {"phase": phase, "containerStatuses": [{"name": "node", "state": state or {}}],
                       "conditions": conditions or []}}


def _exited(code: int, message: str = "", finished: str = "2025-01-01T11:59:00Z") -> dict[str, Any]:
    return {"terminated": {"exitCode": code, "reason": "Error", "message": message, "finishedAt": finished}}


def _state(trainjob: dict[str, Any] | None, pods: list[dict[str, Any]]) -> JobState:
    return trainjob_state(trainjob, pods, now=NOW, pending_pod_timeout_seconds=TIMEOUT)


def test_complete_is_succeeded() -> None:
    done = _trainjob([_condition("Complete", "AllJobsCompleted", "jobset completed successfully")],
                     _jobs(succeeded=1))
    assert _state(done, []) == JobState("succeeded", "Completed", f"TrainJob {NAME} completed.")


def test_a_failed_trainjob_carries_the_failed_ranks_termination_message_and_its_exit_reason() -> None:
    failed = _trainjob([_condition("Failed", "FailedJobs", "jobset failed due to one or more job failures")],
                       _jobs(failed=1))
    cause = _pod("Failed", index=1, state=_exited(3, "spec.data.manifestUri s3://b/m.csv cannot be read.",
                                                  finished="2025-01-01T11:58:00Z"))
    echo = _pod("Failed", index=0, state=_exited(1, "rank 0: the collective timed out."))
    assert _state(failed, [echo, cause]) == JobState("failed", "StorageOrInputError",
                                                     "spec.data.manifestUri s3://b/m.csv cannot be read.")


def test_a_failed_trainjob_without_a_named_exit_keeps_trainers_reason_and_says_the_exit_code() -> None:
    failed = _trainjob([_condition("Failed", "ReachedMaxRestarts", "jobset failed due to reaching max restarts")])
    crashed = _pod("Failed", state=_exited(1))
    assert _state(failed, [crashed]) == JobState(
        "failed", "ReachedMaxRestarts", f"The trainer in Pod {NAME}-node-0-0-x1y2z exited with code 1.")


def test_without_pods_the_message_is_the_trainjobs_and_an_unknown_reason_is_bounded() -> None:
    failed = _trainjob([_condition("Failed", "SomethingNew", "the JobSet could not be created")])
    assert _state(failed, []) == JobState("failed", "TrainJobFailed", "the JobSet could not be created")
    deadline = _trainjob([_condition("Failed", "DeadlineExceeded", "TrainJob exceeded its activeDeadlineSeconds")])
    terminated = _pod("Failed", state=_exited(143))  # killed at the deadline: its exit code says nothing
    assert _state(deadline, [terminated]) == JobState("failed", "DeadlineExceeded",
                                                      "TrainJob exceeded its activeDeadlineSeconds")
    assert _state(_trainjob([_condition("Failed", "")]), []) == JobState(
        "failed", "TrainJobFailed", f"TrainJob {NAME} failed (TrainJobFailed).")


@pytest.mark.parametrize(("code", "reason"), [(2, "BadConfig"), (3, "StorageOrInputError")])
def test_a_rank_that_exits_with_a_fail_fast_code_fails_at_once(code: int, reason: str) -> None:
    running = _trainjob(None, _jobs(active=1))
    pods = [_pod("Running", index=0, state={"running": {}}), _pod("Failed", index=1, state=_exited(code, "bad"))]
    assert _state(running, pods) == JobState("failed", reason, "bad")


def test_a_suspended_trainjob_waits_for_admission_and_never_times_out() -> None:
    unschedulable = _pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                      "lastTransitionTime": "2025-01-01T10:00:00Z"}])
    for suspended in (_trainjob([_condition("Suspended", "Suspended", "TrainJob is suspended")], suspend=True),
                      _trainjob(None, suspend=True)):
        state = _state(suspended, [unschedulable])
        assert (state.phase, state.reason) == ("pending", "Suspended")
        assert "waits for its queue to admit it" in state.message
    resumed = _trainjob([_condition("Suspended", "Resumed", "TrainJob is resumed", status="False")], _jobs(active=1))
    state = _state(resumed, [unschedulable])  # admitted: its Pods may not wait forever
    assert (state.phase, state.reason) == ("failed", "Unschedulable") and state.never_started


def test_pods_that_never_start_fail_as_for_a_job() -> None:
    active = _trainjob(None, _jobs(active=1))
    pulling = _pod(state={"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}})
    state = _state(active, [pulling])
    assert state == JobState("failed", "ImagePullBackOff",
                             f"The trainer container of Pod {NAME}-node-0-0-x1y2z cannot start: ImagePullBackOff: "
                             "Back-off pulling image")
    assert state.never_started
    waiting = {"waiting": {"reason": "ContainerCreating"}}
    assert _state(active, [_pod(state=waiting, created="2025-01-01T11:55:00Z")]).phase == "pending"  # 300 s
    late = _state(active, [_pod(state=waiting, created="2025-01-01T11:49:00Z")])  # 660 s > the 600 s timeout
    assert (late.phase, late.reason) == ("failed", "ContainerStartTimeout") and late.never_started


def test_a_running_pod_or_a_ready_child_job_is_running_else_pending() -> None:
    assert _state(_trainjob(None, _jobs(active=1)), [_pod("Running", state={"running": {}})]).phase == "running"
    assert _state(_trainjob(None, _jobs(active=1, ready=1)), []).phase == "running"
    assert _state(_trainjob(None, _jobs(active=1)), [_pod()]) == JobState(
        "pending", "Pending", f"TrainJob {NAME} is waiting for its Pods to start.")
    assert _state(_trainjob(), []).phase == "pending"


def test_a_missing_trainjob_is_failed() -> None:
    assert _state(None, []) == JobState("failed", "JobMissing", "The trainer TrainJob no longer exists.")


def test_pods_are_listed_only_once_the_child_jobs_count_some_or_it_finished() -> None:
    assert not trainjobstate.has_pods(None)
    assert not trainjobstate.has_pods(_trainjob())
    assert not trainjobstate.has_pods(_trainjob([_condition("Suspended", "Suspended")], _jobs(suspended=1)))
    assert trainjobstate.has_pods(_trainjob(None, _jobs(active=1)))
    assert trainjobstate.has_pods(_trainjob([_condition("Failed", "FailedJobs")]))
    assert trainjobstate.finished_by_trainer(_trainjob([_condition("Complete", "AllJobsCompleted")]))
    assert not trainjobstate.finished_by_trainer(_trainjob(None, _jobs(active=1)))


def test_a_pod_belongs_to_the_trainjob_its_jobset_names_not_to_its_child_job() -> None:
    pod = _pod()
    assert trainjobstate.trainjob_name_of_pod(pod) == NAME
    assert jobstate.job_name_of_pod(pod) == f"{NAME}-node-0"  # why pod_event reads the JobSet label first
    assert trainjobstate.trainjob_name_of_pod({"metadata": {"labels": {"job-name": "j"}}}) is None


def test_every_trainjob_failure_reason_is_a_valid_condition_reason() -> None:
    exits = {ExitCode.failure_reason(code) for code in (2, 3, 4)}
    reasons = {*trainjobstate.TRAINJOB_FAILURE_REASONS, trainjobstate.TRAINJOB_FAILED, *exits,
               *jobstate.NEVER_STARTED_REASONS, "JobMissing"}
    assert {"FailedJobs", "ReachedMaxRestarts", "DeadlineExceeded"} <= reasons
    assert all(re.fullmatch(CONDITION_REASON_PATTERN, reason) for reason in reasons)

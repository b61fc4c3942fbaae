"""tracking.job_state: Job + Pods → pending/running/succeeded/failed with a reason and a sentence."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from forgetmi_operator.api.patterns import CONDITION_REASON_PATTERN
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.api.spec import UnlearnRequestSpec
from forgetmi_operator.cluster import jobs
from forgetmi_operator.cluster import jobstate as tracking
from forgetmi_operator.cluster.jobstate import JobState, job_state, progress_status
from forgetmi_trainer.contract import FAIL_FAST_EXIT_CODES, ExitCode, Progress

SPEC = {"model": {"registryUri": "s3://bucket/registry", "name": "m"}, "data": {"manifestUri": "s3://bucket/m.csv"},
        "forget": {"subjectsUri": "s3://bucket/s.txt"}}

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
TIMEOUT = 600.0


def _job(status: dict[str, Any] | None = None, *, backoff_limit: int = 2) -> dict[str, Any]:
    return {"metadata": {"name": "forgetmi-cxr-abcdef12"}, "spec": {"backoffLimit": backoff_limit},
            "status": status or {}}


def _pod(phase: str = "Pending", *, state: dict[str, Any] | None = None, last_state: dict[str, Any] | None = None,
         conditions: list[dict[str, Any]] | None = None, name: str = "forgetmi-cxr-abcdef12-x1",
         created: str = "2025-01-01T11:00:00Z") -> dict[str, Any]:
    cs: dict[str, Any] = {"name": "trainer", "state": state or {}}
    if last_state is not None:
        cs["lastState"] = last_state
    return {"metadata": {"name": name, "creationTimestamp": created},
            "status": {"phase": phase, "containerStatuses": [cs], "conditions": conditions or []}}


def _ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def _state(job: dict[str, Any] | None, pods: list[dict[str, Any]]) -> JobState:
    return job_state(job, pods, now=NOW, pending_pod_timeout_seconds=TIMEOUT)


def _terminated(code: int, message: str = "", finished: str = "2025-01-01T11:59:00Z") -> dict[str, Any]:
    return {"terminated": {"exitCode": code, "message": message, "finishedAt": finished}}


def test_new_job_without_pods_is_pending() -> None:
    state = _state(_job(), [])
    assert state == JobState("pending", "Pending", "Job forgetmi-cxr-abcdef12 is waiting for its Pod to start.")


def test_running_pod_makes_the_job_running() -> None:
    state = _state(_job({"active": 1}), [_pod("Running", state={"running": {"startedAt": "2025-01-01T11:58:00Z"}})])
    assert state.phase == "running"


def test_complete_condition_or_succeeded_count_is_success() -> None:
    by_condition = _state(_job({"conditions": [{"type": "Complete", "status": "True"}]}), [])
    by_count = _state(_job({"succeeded": 1}), [])
    assert by_condition.phase == by_count.phase == "succeeded"


def test_false_complete_condition_is_not_success() -> None:
    assert _state(_job({"conditions": [{"type": "Complete", "status": "False"}]}), []).phase == "pending"


def test_pod_failure_policy_carries_the_trainer_termination_message() -> None:
    message = "Bad config: method.epochs must be at least 1."
    job = _job({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                                             "message": "Container trainer for pod x failed with exit code 2"}]})
    state = _state(job, [_pod("Failed", state=_terminated(2, message))])
    assert state == JobState("failed", "BadConfig", message)


def test_exit_code_2_fails_at_once_even_before_the_job_condition() -> None:
    state = _state(_job({"failed": 1}, backoff_limit=6), [_pod("Failed", state=_terminated(2, "Bad config."))])
    assert (state.phase, state.reason, state.message) == ("failed", "BadConfig", "Bad config.")


def test_exit_code_3_fails_at_once_with_a_default_sentence_when_no_message() -> None:
    state = _state(_job({"failed": 1}), [_pod("Failed", state=_terminated(3))])
    assert state.reason == "StorageOrInputError"
    assert state.message == "The trainer in Pod forgetmi-cxr-abcdef12-x1 exited with code 3."


def test_exit_code_4_is_retried_until_the_backoff_limit() -> None:
    diverged = [_pod("Failed", state=_terminated(4, "Diverged."))]
    one_failure = _state(_job({"failed": 1, "active": 1}, backoff_limit=2), diverged)
    assert one_failure.phase == "pending"
    exhausted = _state(_job({"failed": 3}, backoff_limit=2), diverged)
    assert (exhausted.phase, exhausted.reason, exhausted.message) == ("failed", "BackoffLimitExceeded", "Diverged.")


def test_the_most_recent_termination_message_wins() -> None:
    pods = [_pod("Failed", state=_terminated(4, "first", "2025-01-01T11:00:00Z"), name="a"),
            _pod("Failed", state=_terminated(4, "second", "2025-01-01T11:30:00Z"), name="b")]
    job = _job({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]})
    assert _state(job, pods).message == "second"


def test_deadline_exceeded_uses_the_job_message() -> None:
    job = _job({"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                                "message": "Job was active longer than specified deadline"}]})
    state = _state(job, [])
    assert state == JobState("failed", "DeadlineExceeded", "Job was active longer than specified deadline")


def test_unknown_job_failure_reason_is_bounded() -> None:
    job = _job({"conditions": [{"type": "Failed", "status": "True", "reason": "SomethingNew"}]})
    assert _state(job, []).reason == "JobFailed"


@pytest.mark.parametrize(
    "reason", ["ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError",
               "CreateContainerError", "RunContainerError"])
def test_a_container_that_cannot_start_fails_at_once(reason: str) -> None:
    pod = _pod(state={"waiting": {"reason": reason, "message": "Back-off pulling image \"nope:1\""}},
               created=_ago(1))
    state = _state(_job({"active": 1}), [pod])
    assert state.phase == "failed"
    assert state.reason == reason
    assert state.never_started
    assert state.message.startswith(f"The trainer container of Pod forgetmi-cxr-abcdef12-x1 cannot start: {reason}")
    assert "nope:1" in state.message


def test_container_creating_within_the_timeout_is_not_stuck() -> None:
    pod = _pod(state={"waiting": {"reason": "ContainerCreating"}}, created=_ago(TIMEOUT - 1))
    assert _state(_job({"active": 1}), [pod]).phase == "pending"


def _scheduled(seconds_ago: float) -> list[dict[str, Any]]:
    return [{"type": "PodScheduled", "status": "True", "lastTransitionTime": _ago(seconds_ago)}]


def test_a_container_waiting_past_the_timeout_never_started() -> None:
    waiting = {"waiting": {"reason": "ContainerCreating",
                           "message": 'MountVolume.SetUp failed for volume "subjects": secret "ids" not found'}}
    pod = _pod(state=waiting, conditions=_scheduled(TIMEOUT + 1), created=_ago(TIMEOUT + 5))
    state = _state(_job({"active": 1}), [pod])
    assert state == JobState(
        "failed", "ContainerStartTimeout",
        "The trainer container of Pod forgetmi-cxr-abcdef12-x1 has been waiting (ContainerCreating) for more than "
        '600 s since the Pod was scheduled: MountVolume.SetUp failed for volume "subjects": secret "ids" not found')
    assert state.never_started


def test_the_wait_is_counted_from_scheduling_not_creation() -> None:
    # Unschedulable for a while (its own timeout), then scheduled: the container wait starts afresh.
    pod = _pod(state={"waiting": {"reason": "ContainerCreating"}}, conditions=_scheduled(TIMEOUT - 1),
               created=_ago(3 * TIMEOUT))
    assert _state(_job({"active": 1}), [pod]).phase == "pending"


def test_without_a_scheduling_time_the_wait_is_counted_from_creation() -> None:
    pod = _pod(state={"waiting": {}}, created=_ago(TIMEOUT + 1))
    state = _state(_job({"active": 1}), [pod])
    assert state.reason == "ContainerStartTimeout"
    assert state.message == ("The trainer container of Pod forgetmi-cxr-abcdef12-x1 has been waiting (Waiting) for "
                             "more than 600 s since the Pod was created.")


def test_a_waiting_init_container_is_named() -> None:
    pod = _pod(state={"waiting": {"reason": "PodInitializing"}}, created=_ago(TIMEOUT + 1))
    pod["status"]["initContainerStatuses"] = [{"name": "istio-init", "state": {"waiting": {"reason": "Stalled"}}}]
    state = _state(_job({"active": 1}), [pod])
    assert state.reason == "ContainerStartTimeout"
    assert state.message.startswith("Container istio-init of Pod forgetmi-cxr-abcdef12-x1 has been waiting (Stalled)")


def test_a_running_pod_with_a_waiting_sidecar_is_not_stuck() -> None:
    pod = _pod("Running", state={"running": {"startedAt": _ago(TIMEOUT + 1)}}, created=_ago(2 * TIMEOUT))
    pod["status"]["initContainerStatuses"] = [
        {"name": "proxy", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]
    assert _state(_job({"active": 1}), [pod]).phase == "running"


def _unschedulable(seconds_ago: float) -> dict[str, Any]:
    return _pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                             "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                             "lastTransitionTime": _ago(seconds_ago)}])


def test_unschedulable_within_the_timeout_is_still_pending() -> None:
    assert _state(_job({"active": 1}), [_unschedulable(TIMEOUT - 1)]).phase == "pending"


def test_unschedulable_past_the_timeout_fails() -> None:
    state = _state(_job({"active": 1}), [_unschedulable(TIMEOUT + 1)])
    assert state.phase == "failed"
    assert state.reason == "Unschedulable"
    assert "more than 600 s" in state.message
    assert "Insufficient nvidia.com/gpu" in state.message


def test_a_missing_job_is_failed() -> None:
    assert _state(None, []).reason == "JobMissing"


def test_long_termination_messages_are_clipped() -> None:
    state = _state(_job({"failed": 1}), [_pod("Failed", state=_terminated(2, "x" * 5000))])
    assert len(state.message) == 1024
    assert state.message.endswith("…")


def test_progress_status_rounds_percent_and_eta() -> None:
    status = progress_status(Progress(epoch=3, epochs=30, percent=10.04, eta_seconds=123.456, loss=0.5))
    assert status.model_dump(by_alias=True) == {"epoch": 3, "epochs": 30, "percent": 10.0, "etaSeconds": 123.5}


def test_the_job_fails_fast_on_the_contracts_fail_fast_exit_codes() -> None:
    job = jobs.build_job(UnlearnRequestSpec.model_validate(SPEC), Settings(), name="r", namespace="ns", uid="u-1")
    (fail_job,) = [r for r in job["spec"]["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    assert fail_job["onExitCodes"]["values"] == [int(code) for code in FAIL_FAST_EXIT_CODES] == [2, 3]


def test_every_failure_reason_is_a_valid_condition_reason() -> None:
    exits = {ExitCode.failure_reason(code) for code in (2, 3, 4)}
    reasons = {*tracking.NEVER_STARTED_REASONS, *exits, *tracking.JOB_FAILURE_REASONS, "JobMissing", "JobFailed"}
    assert {"Unschedulable", "ContainerStartTimeout"} <= reasons
    assert all(re.fullmatch(CONDITION_REASON_PATTERN, reason) for reason in reasons)


@pytest.mark.parametrize("message", [None, "", "  \n"])
def test_a_crash_without_a_termination_message_says_only_its_exit_code(message: str | None) -> None:
    # With terminationMessagePolicy File an unhandled crash leaves no message (never the log tail).
    crashed = {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2025-01-01T11:59:00Z"}}
    if message is not None:
        crashed["terminated"]["message"] = message
    expected = "The trainer in Pod forgetmi-cxr-abcdef12-x1 exited with code 1."
    exhausted = _job({"failed": 3, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                                   "message": "Job has reached the specified backoff limit"}]})
    assert _state(exhausted, [_pod("Failed", state=crashed)]) == JobState("failed", "BackoffLimitExceeded", expected)
    by_policy = _job({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                                                   "message": "Container trainer for pod x failed with exit code 3"}]})
    exit_3 = {"terminated": {**crashed["terminated"], "exitCode": 3}}
    assert _state(by_policy, [_pod("Failed", state=exit_3)]) == JobState(
        "failed", "StorageOrInputError", "The trainer in Pod forgetmi-cxr-abcdef12-x1 exited with code 3.")


def test_an_out_of_memory_kill_is_named_when_there_is_no_message() -> None:
    oom = {"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "2025-01-01T11:59:00Z"}}
    state = _state(_job({"failed": 3}, backoff_limit=2), [_pod("Failed", state=oom)])
    assert state == JobState("failed", "BackoffLimitExceeded",
                             "The trainer in Pod forgetmi-cxr-abcdef12-x1 exited with code 137 (OOMKilled).")


@pytest.mark.parametrize(("status", "expected"), [
    ({}, False),
    ({"startTime": "2026-01-01T00:00:00Z"}, False),
    ({"active": 1}, True),
    ({"ready": 1, "active": 1}, True),
    ({"failed": 1}, True),
    ({"succeeded": 1}, True),
    ({"conditions": [{"type": "Suspended", "status": "True"}]}, True),
    ({"conditions": [{"type": "Failed", "status": "False"}]}, False),
])
def test_has_pods_follows_the_job_status(status: dict[str, Any], expected: bool) -> None:
    job = {"metadata": {"name": "j"}, "status": status}
    assert tracking.has_pods(job) is expected


def test_has_pods_of_a_missing_job_is_false() -> None:
    assert not tracking.has_pods(None)


def test_job_name_of_pod_reads_the_job_labels_then_the_owner() -> None:
    assert tracking.job_name_of_pod({"metadata": {"labels": {"batch.kubernetes.io/job-name": "j1"}}}) == "j1"
    assert tracking.job_name_of_pod({"metadata": {"labels": {"job-name": "j2"}}}) == "j2"
    owned = {"metadata": {"ownerReferences": [{"kind": "ReplicaSet", "name": "r"}, {"kind": "Job", "name": "j3"}]}}
    assert tracking.job_name_of_pod(owned) == "j3"
    assert tracking.job_name_of_pod({"metadata": {}}) is None


@pytest.mark.parametrize(("state", "expected"), [
    (JobState("failed", "ImagePullBackOff", "m"), True),
    (JobState("failed", "Unschedulable", "m"), True),
    (JobState("failed", "CreateContainerConfigError", "m"), True),
    (JobState("failed", "CreateContainerError", "m"), True),
    (JobState("failed", "RunContainerError", "m"), True),
    (JobState("failed", "ContainerStartTimeout", "m"), True),
    (JobState("failed", "BadConfig", "m"), False),  # the trainer ran and exited 2: keep its Job and logs
    (JobState("failed", "BackoffLimitExceeded", "m"), False),
    (JobState("pending", "Pending", "m"), False),
])
def test_never_started_names_the_failures_of_pods_that_never_ran(state: JobState, expected: bool) -> None:
    assert state.never_started is expected

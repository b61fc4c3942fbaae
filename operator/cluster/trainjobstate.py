"""What a trainer TrainJob is doing, from the TrainJob and its Pods (pure; no API calls).

A TrainJob (Kubeflow Trainer v2, ``trainer.kubeflow.org/v1alpha1``) runs the trainer's nodes as a
JobSet. :func:`trainjob_state` maps it and its Pods onto the :class:`~forgetmi_operator.cluster.jobstate.JobState`
of the ``batch/v1`` Job path, so a request's phases, conditions and ``forgetmi_job_failures_total``
reasons read alike for both engines. In this order:

- condition ``Complete`` True: succeeded;
- condition ``Failed`` True: failed. Trainer sets its own reasons (``DeadlineExceeded`` past
  ``activeDeadlineSeconds``, ``TrainingRuntimeNotSupported``: kubeflow/trainer
  ``pkg/apis/trainer/v1alpha1/trainjob_types.go``) and copies the JobSet's ``Failed`` condition with its
  reason (``pkg/runtime/framework/plugins/jobset/jobset.go``, ``Status``): ``FailedJobs`` (a child Job
  failed, no failure policy), ``ReachedMaxRestarts``, ``FailJobSetFailurePolicyAction``
  (kubernetes-sigs/jobset ``pkg/constants``). Any other reason reads ``TrainJobFailed``. When a trainer
  exited with a code the contract names (2, 3, 4), its reason replaces the JobSet's (not
  ``DeadlineExceeded``). The message is that trainer's termination message, else a sentence with its
  exit code, else the TrainJob's message;
- a trainer that exited 2 (bad config) or 3 (storage/input error): failed at once, as a Job's
  ``podFailurePolicy`` does;
- condition ``Suspended`` True (Trainer's reason ``Suspended``; ``Resumed`` and False once Kueue
  admits it): pending, waiting for admission however long that takes. It never fails by the
  pending-Pod timeout;
- a Pod that never starts (image pull, container config, unschedulable or waiting past the
  pending-Pod timeout): failed exactly as for a Job (:func:`~forgetmi_operator.cluster.jobstate.stuck_pod`);
- a Pod running, or a child Job ready (``status.jobsStatus``): running; else pending.

When several ranks failed, the cause is the earliest failure with a code the contract names, else the
earliest failure: the ranks that failed later usually failed because that one did (a collective that
timed out, a rendezvous closed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from forgetmi_operator.api.errors import InvalidSpec
from forgetmi_operator.api.spec import parse_spec
from forgetmi_operator.cluster import jobstate, trainjobs
from forgetmi_operator.cluster.jobstate import JobState
from forgetmi_trainer.contract import FAIL_FAST_EXIT_CODES, ExitCode

JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
"""The label JobSet puts on its Pods: the JobSet's name, which is the TrainJob's."""
TRAINJOB_FAILURE_REASONS = frozenset(
    {"FailedJobs", "ReachedMaxRestarts", "FailJobSetFailurePolicyAction", "DeadlineExceeded",
     "TrainingRuntimeNotSupported"}
)
"""The ``Failed`` reasons Trainer v2.3 sets or copies from the JobSet; any other reads ``TrainJobFailed``."""
TRAINJOB_FAILED = "TrainJobFailed"
SUSPENDED_REASON = "Suspended"


def trainjob_state(
    trainjob: Mapping[str, Any] | None,
    pods: Iterable[Mapping[str, Any]],
    *,
    now: datetime,
    pending_pod_timeout_seconds: float,
) -> JobState:
    """The state of ``trainjob`` given its ``pods`` at time ``now`` (timezone-aware)."""
    if trainjob is None:
        return JobState("failed", "JobMissing", "The trainer TrainJob no longer exists.")
    pods = list(pods)
    name = jobstate.name_of(trainjob)
    conditions = _true_conditions(trainjob)
    if "Complete" in conditions:
        return JobState("succeeded", "Completed", f"TrainJob {name} completed.")
    failures = sorted(jobstate.terminated_failures(pods), key=lambda item: item.finished_at)
    if "Failed" in conditions:
        return _failed(name, conditions["Failed"], failures)
    for exit_ in failures:
        if exit_.code in FAIL_FAST_EXIT_CODES:
            return JobState("failed", ExitCode(exit_.code).reason, exit_.message or exit_.sentence)
    if SUSPENDED_REASON in conditions or (trainjob.get("spec") or {}).get("suspend") is True:
        return JobState("pending", SUSPENDED_REASON,
                        f"TrainJob {name} is suspended: it waits for its queue to admit it (Kueue).")
    stuck = jobstate.stuck_pod(pods, now=now, pending_pod_timeout_seconds=pending_pod_timeout_seconds)
    if stuck is not None:
        return stuck
    if any(jobstate.pod_phase(p) == "Running" for p in pods) or _count(trainjob, "ready"):
        return JobState("running", "Running", f"TrainJob {name} is running.")
    return JobState("pending", "Pending", f"TrainJob {name} is waiting for its Pods to start.")


def has_pods(trainjob: Mapping[str, Any] | None) -> bool:
    """Whether the TrainJob's child Jobs count any Pod (``status.jobsStatus``) or it finished; a
    TrainJob with none (just created, or suspended by its queue) needs no Pod listing."""
    if trainjob is None:
        return False
    if any(_count(trainjob, count) for count in ("active", "ready", "succeeded", "failed")):
        return True
    return bool(set(_true_conditions(trainjob)) - {SUSPENDED_REASON})


def finished_by_trainer(trainjob: Mapping[str, Any]) -> bool:
    """Whether Kubeflow Trainer itself marked the TrainJob Complete or Failed."""
    return bool({"Complete", "Failed"} & set(_true_conditions(trainjob)))


def trainjob_name_of_pod(pod: Mapping[str, Any]) -> str | None:
    """The TrainJob a Pod belongs to: its JobSet's name (label ``jobset.sigs.k8s.io/jobset-name``)."""
    name = ((pod.get("metadata") or {}).get("labels") or {}).get(JOBSET_NAME_LABEL)
    return str(name) if name else None


def engine_of_request(body: Mapping[str, Any]) -> trainjobs.Engine:
    """The engine of a request's workload (its ``status.jobName`` names a Job or a TrainJob):
    :func:`~forgetmi_operator.cluster.trainjobs.engine_of` its spec; ``Job`` for a spec that does not parse."""
    try:
        return trainjobs.engine_of(parse_spec(body.get("spec") or {}))
    except InvalidSpec:
        return "Job"


def _true_conditions(trainjob: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    conditions = (trainjob.get("status") or {}).get("conditions") or []
    return {str(c.get("type")): c for c in conditions if c.get("status") == "True"}


def _count(trainjob: Mapping[str, Any], count: str) -> int:
    """The sum of ``count`` (active, ready, succeeded, failed) over the TrainJob's child Jobs."""
    return sum(int(job.get(count) or 0) for job in (trainjob.get("status") or {}).get("jobsStatus") or [])


def _failed(name: str, condition: Mapping[str, Any], failures: list[jobstate.Exit]) -> JobState:
    reason = str(condition.get("reason") or "")
    if reason not in TRAINJOB_FAILURE_REASONS:
        reason = TRAINJOB_FAILED
    message = str(condition.get("message") or "").strip()
    named = [item for item in failures if ExitCode.failure_reason(item.code)]
    cause = (named or failures or [None])[0]
    if cause is not None:
        if named and reason != "DeadlineExceeded":
            reason = str(ExitCode.failure_reason(cause.code))
        if cause.message:
            return JobState("failed", reason, cause.message)
        if reason != "DeadlineExceeded":
            return JobState("failed", reason, cause.sentence)
    return JobState("failed", reason, jobstate.clip(message) or f"TrainJob {name} failed ({reason}).")

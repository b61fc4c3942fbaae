"""What a trainer Job is doing, from the Job and its Pods (pure; no API calls).

:func:`job_state` turns a ``batch/v1`` Job and its Pods (plain camelCase dicts, as the API
server returns them) into a :class:`JobState`. It fails fast where a Job would otherwise hang
or retry pointlessly:

- a container waiting with ``ImagePullBackOff``, ``ErrImagePull``, ``InvalidImageName``,
  ``CreateContainerConfigError``, ``CreateContainerError`` or ``RunContainerError`` never starts:
  failed at once, the waiting reason is the reason;
- a Pod ``Unschedulable`` for longer than the pending-pod timeout: failed (``Unschedulable``);
- a Pod still ``Pending`` with a container waiting for any other reason (``ContainerCreating``
  because a Secret or ConfigMap volume cannot be mounted, ``PodInitializing``…) for longer than
  the pending-pod timeout, counted from the Pod's scheduling (else its creation): failed
  (``ContainerStartTimeout``), the message names the waiting reason and its message;
- a trainer that exited 2 (bad config) or 3 (storage/input error) is failed at once, as the
  Job's ``podFailurePolicy`` does, even before the Job controller marks the Job Failed;
- a Job condition ``Failed`` (``PodFailurePolicy``, ``BackoffLimitExceeded``,
  ``DeadlineExceeded``…) is failed with that reason.

The message of a failed state is the trainer's termination message when a container left one
(``state.terminated.message``), else the Kubernetes message; reasons are a small fixed set so
they can label the ``forgetmi_job_failures_total`` metric.

:func:`progress_status` turns the trainer's latest progress line into ``status.progress``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple

from forgetmi_operator.api.naming import TRAINER_CONTAINER
from forgetmi_operator.api.status import ProgressStatus
from forgetmi_trainer.contract import FAIL_FAST_EXIT_CODES, ExitCode, Progress, parse_timestamp

JobPhase = Literal["pending", "running", "succeeded", "failed"]

STUCK_WAITING_REASONS = frozenset({
    "ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError",
    "RunContainerError",
})
START_TIMEOUT_REASON = "ContainerStartTimeout"
NEVER_STARTED_REASONS = STUCK_WAITING_REASONS | {"Unschedulable", START_TIMEOUT_REASON}
JOB_FAILURE_REASONS = frozenset(
    {"BackoffLimitExceeded", "DeadlineExceeded", "PodFailurePolicy", "MaxFailedIndexesExceeded"}
)
MESSAGE_LIMIT = 1024
TRAINER_CONTAINERS = (TRAINER_CONTAINER, "node")
"""The trainer's container: ours in a Job; in a TrainJob's Pods, Kubeflow Trainer's runtimes name it ``node``."""


@dataclass(frozen=True)
class JobState:
    """The Job's phase; for ``failed`` a reason (CamelCase, bounded set) and a sentence."""

    phase: JobPhase
    reason: str = ""
    message: str = ""

    @property
    def never_started(self) -> bool:
        """A failure of a Pod that never ran the trainer (image pull, config error, unschedulable)."""
        return self.phase == "failed" and self.reason in NEVER_STARTED_REASONS


def job_state(
    job: Mapping[str, Any] | None,
    pods: Iterable[Mapping[str, Any]],
    *,
    now: datetime,
    pending_pod_timeout_seconds: float,
) -> JobState:
    """The state of ``job`` given its ``pods`` at time ``now`` (timezone-aware)."""
    if job is None:
        return JobState("failed", "JobMissing", "The trainer Job no longer exists.")
    pods = list(pods)
    name = name_of(job)
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    if "Complete" in conditions or "SuccessCriteriaMet" in conditions or _succeeded_count(job):
        return JobState("succeeded", "Completed", f"Job {name} completed.")
    terminated = terminated_failures(pods)
    failed = conditions.get("Failed") or conditions.get("FailureTarget")
    if failed is not None:
        return _failed_job(name, failed, terminated)
    for exit_ in terminated:
        if exit_.code in FAIL_FAST_EXIT_CODES:
            return JobState("failed", ExitCode(exit_.code).reason, exit_.message or exit_.sentence)
    backoff_limit = (job.get("spec") or {}).get("backoffLimit", 6)
    if int(status.get("failed") or 0) > int(backoff_limit):
        return _failed_job(name, {"reason": "BackoffLimitExceeded", "message": ""}, terminated)
    stuck = stuck_pod(pods, now=now, pending_pod_timeout_seconds=pending_pod_timeout_seconds)
    if stuck is not None:
        return stuck
    if any(pod_phase(p) == "Running" for p in pods):
        return JobState("running", "Running", f"Job {name} is running.")
    return JobState("pending", "Pending", f"Job {name} is waiting for its Pod to start.")


def has_pods(job: Mapping[str, Any] | None) -> bool:
    """Whether the Job controller counts any Pod of ``job`` (active, ready, succeeded or failed) or
    has finished it; a Job with none (just created, or suspended by a queue) needs no Pod listing."""
    if job is None:
        return False
    status = job.get("status") or {}
    return any(int(status.get(count) or 0) > 0 for count in ("active", "ready", "succeeded", "failed")) or any(
        c.get("status") == "True" for c in status.get("conditions") or [])


def finished_by_kubernetes(job: Mapping[str, Any]) -> bool:
    """Whether Kubernetes itself marked the Job Complete or Failed."""
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


def job_name_of_pod(pod: Mapping[str, Any]) -> str | None:
    """The Job a Pod belongs to: its ``job-name`` label, else its Job ownerReference."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    for label in ("batch.kubernetes.io/job-name", "job-name"):
        if labels.get(label):
            return str(labels[label])
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "Job" and ref.get("name"):
            return str(ref["name"])
    return None


def name_of(obj: Mapping[str, Any]) -> str:
    """An object's ``metadata.name`` (``?`` when it has none)."""
    return str((obj.get("metadata") or {}).get("name", "?"))


def pod_phase(pod: Mapping[str, Any]) -> str:
    """A Pod's ``status.phase`` (empty when it has none yet)."""
    return str((pod.get("status") or {}).get("phase", ""))


def _succeeded_count(job: Mapping[str, Any]) -> bool:
    completions = (job.get("spec") or {}).get("completions") or 1
    return int((job.get("status") or {}).get("succeeded") or 0) >= int(completions)


def _container_statuses(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


class Exit(NamedTuple):
    """A container that exited non-zero: its termination message, and a sentence to use without one."""

    finished_at: str
    code: int
    message: str
    sentence: str


def terminated_failures(pods: list[Mapping[str, Any]]) -> list[Exit]:
    """Each container that exited non-zero, most recently finished first."""
    found: list[Exit] = []
    for pod in pods:
        for cs in _container_statuses(pod):
            for state_key in ("state", "lastState"):
                term = (cs.get(state_key) or {}).get("terminated")
                if term and int(term.get("exitCode") or 0) != 0:
                    code = int(term["exitCode"])
                    why = str(term.get("reason") or "")
                    detail = f" ({why})" if why and why != "Error" else ""
                    found.append(Exit(str(term.get("finishedAt") or ""), code,
                                       clip(str(term.get("message") or "").strip()),
                                       f"The trainer in Pod {name_of(pod)} exited with code {code}{detail}."))
    found.sort(key=lambda item: item.finished_at, reverse=True)
    return found


def _failed_job(name: str, condition: Mapping[str, Any], terminated: list[Exit]) -> JobState:
    reason = str(condition.get("reason") or "JobFailed")
    if reason not in JOB_FAILURE_REASONS:
        reason = "JobFailed"
    k8s_message = str(condition.get("message") or "").strip()
    if terminated:
        last = terminated[0]
        if reason == "PodFailurePolicy" and ExitCode.failure_reason(last.code):
            reason = str(ExitCode.failure_reason(last.code))
        if last.message:
            return JobState("failed", reason, last.message)
        if reason != "DeadlineExceeded":
            return JobState("failed", reason, last.sentence)
    return JobState("failed", reason, clip(k8s_message) or f"Job {name} failed ({reason}).")


def _container_label(cs: Mapping[str, Any]) -> str:
    name = str(cs.get("name") or "")
    return "The trainer container" if name in ("", *TRAINER_CONTAINERS) else f"Container {name}"


def _pending_since(pod: Mapping[str, Any]) -> tuple[datetime | None, str]:
    """When the Pod's wait for its containers began: its scheduling, else its creation."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "True":
            scheduled = parse_timestamp(cond.get("lastTransitionTime"))
            if scheduled is not None:
                return scheduled, "scheduled"
    return parse_timestamp((pod.get("metadata") or {}).get("creationTimestamp")), "created"


def stuck_pod(pods: list[Mapping[str, Any]], *, now: datetime, pending_pod_timeout_seconds: float) -> JobState | None:
    """The failed state of the first Pod that will not start (the module docstring's rules), else None."""
    for pod in pods:
        if pod_phase(pod) in ("Succeeded", "Failed"):
            continue
        waiting_containers: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = []
        for cs in _container_statuses(pod):
            state = cs.get("state") or {}
            if "waiting" not in state:
                continue
            waiting = state.get("waiting") or {}
            waiting_containers.append((cs, waiting))
            reason = waiting.get("reason")
            if reason in STUCK_WAITING_REASONS:
                detail = str(waiting.get("message") or "").strip()
                message = f"{_container_label(cs)} of Pod {name_of(pod)} cannot start: {reason}"
                return JobState("failed", str(reason), clip(f"{message}: {detail}" if detail else f"{message}."))
        if waiting_containers and pod_phase(pod) == "Pending":
            since, event = _pending_since(pod)
            if since is not None and (now - since).total_seconds() > pending_pod_timeout_seconds:
                cs, waiting = waiting_containers[0]
                reason = str(waiting.get("reason") or "").strip() or "Waiting"
                detail = str(waiting.get("message") or "").strip()
                message = (f"{_container_label(cs)} of Pod {name_of(pod)} has been waiting ({reason}) for more than "
                           f"{pending_pod_timeout_seconds:g} s since the Pod was {event}")
                return JobState("failed", START_TIMEOUT_REASON,
                                clip(f"{message}: {detail}" if detail else f"{message}."))
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and (
                cond.get("reason") == "Unschedulable"
            ):
                since = parse_timestamp(cond.get("lastTransitionTime")) or parse_timestamp(
                    (pod.get("metadata") or {}).get("creationTimestamp"))
                if since is not None and (now - since).total_seconds() > pending_pod_timeout_seconds:
                    detail = str(cond.get("message") or "").strip()
                    message = (f"Pod {name_of(pod)} could not be scheduled for more than "
                               f"{pending_pod_timeout_seconds:g} s")
                    text = f"{message}: {detail}" if detail else f"{message}."
                    return JobState("failed", "Unschedulable", clip(text))
    return None


def clip(text: str) -> str:
    """``text`` shortened to :data:`MESSAGE_LIMIT` characters (a condition message's bound here)."""
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def progress_status(progress: Progress) -> ProgressStatus:
    """``status.progress`` from the trainer's latest progress line (percent and ETA to 0.1)."""
    return ProgressStatus(epoch=progress.epoch, epochs=progress.epochs, percent=round(progress.percent, 1),
                          eta_seconds=round(progress.eta_seconds, 1))

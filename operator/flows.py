"""The work behind the Kopf handlers, as plain async functions that can run without Kopf.

Each step takes the request (its ``body`` as Kopf hands it) and returns a :class:`Step`: the
status fields to merge-patch and the Events to post. Domain errors are raised unchanged
(``handlers.py`` turns them into conditions, Events and Kopf errors). Storage calls run in
worker threads. Patient IDs are read only to check and count them, to copy them into the
request's own immutable subjects Secret (what its Jobs read, and what the receipt attests), and
to HMAC them into the receipt; they are never logged, stored in status or put in a message.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import ValidationError

from forgetmi_operator import conditions as cond
from forgetmi_operator import gates as gating
from forgetmi_operator import jobs, naming, pipeline, receipts, registry, tracking
from forgetmi_operator.api import ConditionStatus, ConditionType, ModelVersionStatus, UnlearnRequestSpec
from forgetmi_operator.decisions import Decision, decide, is_approved
from forgetmi_operator.errors import (
    InvalidSpec,
    OperatorError,
    RegistryUnavailable,
    ServingTargetError,
    SubjectsError,
)
from forgetmi_operator.kube import Kube
from forgetmi_operator.settings import Settings
from forgetmi_trainer import storage
from forgetmi_trainer.contract import Progress, Report
from forgetmi_trainer.errors import StorageError, StorageUnavailable

T = TypeVar("T")
TARGET_ATTEMPTS = 3
"""Tries of a serving-target patch that fails with a retryable error, after the alias moved."""
TARGET_RETRY_SECONDS = 1.0
"""Wait before the second try; doubled before each further one."""


@dataclass
class Step:
    """What one handler run changes: status fields (camelCase) and Events ``(type, reason, message)``."""

    status: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)


def now() -> str:
    return cond.timestamp(datetime.now(UTC))


def parse_spec(spec: Mapping[str, Any]) -> UnlearnRequestSpec:
    """The spec as the pydantic model; ``InvalidSpec`` names the first bad field (``spec.a.b: …``)."""
    try:
        return UnlearnRequestSpec.model_validate(dict(spec))
    except ValidationError as err:
        problems = []
        for item in err.errors(include_url=False, include_input=False):
            where = ".".join(["spec", *(str(part) for part in item["loc"])])
            problems.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
        raise InvalidSpec(f"The spec is invalid: {'; '.join(problems)}.") from err


def describe(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    return f"UnlearnRequest {meta.get('namespace')}/{meta.get('name')}"


def with_condition(body: Mapping[str, Any], step: Step, type: ConditionType, status: ConditionStatus,
                   reason: str, message: str) -> None:
    """Set one condition in ``step.status`` (starting from the object's, or the initial four) and
    re-derive the phase from the conditions."""
    meta = body.get("metadata") or {}
    generation = meta.get("generation")
    current = step.status.get("conditions") or (body.get("status") or {}).get("conditions") or \
        cond.initial_conditions(generation, now(), f"{meta.get('namespace')}/{meta.get('name')}")
    step.status["conditions"] = cond.set_condition(current, type, status, reason, message, generation, now())
    step.status["phase"] = cond.phase_for(step.status["conditions"])
    step.status["observedGeneration"] = generation


async def read_subjects(kube: Kube, spec: UnlearnRequestSpec, namespace: str) -> tuple[list[str], str]:
    """The subject IDs and where they came from (for messages); never logged."""
    ref = spec.forget.subjects_secret_ref
    if ref is not None:
        raw = await kube.read_secret_key(namespace, ref.name, ref.key)
        where = f"Secret {namespace}/{ref.name} key {ref.key!r}"
        text = raw.decode("utf-8", errors="replace")
    else:
        where = f"spec.forget.subjectsUri {spec.forget.subjects_uri}"
        text = await in_thread(pipeline.read_subjects_uri, spec)
    return pipeline.parse_subject_ids(text, where), where


def _snapshot_where(namespace: str, secret_name: str) -> str:
    return f"Secret {namespace}/{secret_name} (the forget list as accepted)"


async def snapshot_subjects(kube: Kube, body: Mapping[str, Any], subjects: list[str], where: str) -> list[str]:
    """Create the request's subjects Secret from ``subjects`` (just accepted, read from ``where``) and
    return the list the Job will forget: ``subjects``, or the list already snapshotted by an earlier
    attempt (an operator restart or a retried launch), which stays what is forgotten and attested."""
    meta = body["metadata"]
    namespace, uid = meta["namespace"], meta["uid"]
    size = len(jobs.subjects_text(subjects).encode("utf-8"))
    if size > jobs.MAX_SUBJECTS_BYTES:
        raise SubjectsError(f"The forget list in {where} takes {size} bytes as one ID per line ({len(subjects)} "
                            f"subjects), more than the {jobs.MAX_SUBJECTS_BYTES} bytes (1 MiB) a Secret holds, and "
                            "the request's copy of it is a Secret: split it into several requests.")
    secret = jobs.build_subjects_secret(subjects, name=meta["name"], namespace=namespace, uid=uid, owner=body)
    existing, created = await kube.create_or_get_secret(namespace, secret)
    if created:
        return subjects
    return _snapshot_subjects(existing, namespace, uid)


def _snapshot_subjects(secret: Mapping[str, Any], namespace: str, uid: str) -> list[str]:
    name = (secret.get("metadata") or {}).get("name", "")
    where = _snapshot_where(namespace, name)
    if not jobs.owned_by(secret, uid):
        raise SubjectsError(f"Secret {namespace}/{name} exists but is not owned by this UnlearnRequest, so it cannot "
                            "hold its forget list; delete or rename it.")
    encoded = (secret.get("data") or {}).get(jobs.SUBJECTS_FILE)
    if encoded is None:
        raise SubjectsError(f"{where} has no key {jobs.SUBJECTS_FILE!r}.")
    text = base64.b64decode(encoded).decode("utf-8", errors="replace")
    return pipeline.parse_subject_ids(text, where)


async def find_snapshot(kube: Kube, body: Mapping[str, Any]) -> tuple[list[str], str] | None:
    """The request's copy of its forget list and where it is (for messages); None when there is none."""
    meta = body["metadata"]
    namespace, uid = meta["namespace"], meta["uid"]
    name = naming.subjects_secret_name(meta["name"], uid)
    secret = await kube.get_secret(namespace, name)
    if secret is None:
        return None
    return _snapshot_subjects(secret, namespace, uid), _snapshot_where(namespace, name)


async def read_snapshot(kube: Kube, body: Mapping[str, Any], spec: UnlearnRequestSpec, *,
                        copy: bool = False) -> tuple[list[str], str]:
    """The forget list the request's Jobs read (its subjects Secret), and where it is, for messages.

    A request that an operator from before the copy launched (no ``status.subjectsSecretName``:
    its Job mounts the referenced Secret, or reads the URI) has none: its referenced list is read,
    as that operator did, and with ``copy`` (a retrain Job will mount it) copied now."""
    found = await find_snapshot(kube, body)
    if found is not None:
        return found
    meta = body["metadata"]
    namespace, name = meta["namespace"], naming.subjects_secret_name(meta["name"], meta["uid"])
    if not (body.get("status") or {}).get("subjectsSecretName"):
        subjects, where = await read_subjects(kube, spec, namespace)
        if copy:
            await snapshot_subjects(kube, body, subjects, where)
        return subjects, where
    raise SubjectsError(f"{_snapshot_where(namespace, name)} is gone, so the receipt could not attest what was "
                        "forgotten: nothing was promoted. Create a new request.")


async def accept_subjects(kube: Kube, body: Mapping[str, Any],
                          spec: UnlearnRequestSpec) -> tuple[pipeline.Accepted, list[str], str]:
    """Accept the request with its referenced forget list; when that list no longer passes (changed
    to something invalid, or gone), with the copy an earlier attempt at this launch made (a retry,
    or an operator restart mid-launch), which is what that attempt's Job reads. The accepted
    result, the list, and where it was read."""
    try:
        subjects, where = await read_subjects(kube, spec, body["metadata"]["namespace"])
        return await in_thread(pipeline.accept, spec, "\n".join(subjects), where), subjects, where
    except OperatorError as err:
        if err.retryable:
            raise
        found = await find_snapshot(kube, body)
        if found is None:
            raise
    subjects, where = found
    return await in_thread(pipeline.accept, spec, "\n".join(subjects), where), subjects, where


async def launch(kube: Kube, settings: Settings, body: Mapping[str, Any]) -> Step:
    """Accept the request (validate, resolve, count), copy its forget list, and create its
    ConfigMap and Job once. When an earlier attempt already copied the list, that copy is what the
    Job forgets and the receipt attests."""
    meta = body["metadata"]
    name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
    spec = parse_spec(body.get("spec") or {})
    step = Step()
    if spec.suspend:
        message = f"{describe(body)} is suspended; no Job is created while spec.suspend is true."
        with_condition(body, step, "Unlearned", "Unknown", cond.NOT_STARTED, message)
        step.events.append(("Normal", "Suspended", message))
        return step
    accepted, subjects, where = await accept_subjects(kube, body, spec)
    subject_count = len(await snapshot_subjects(kube, body, subjects, where))
    built = jobs.build_launch(spec, settings, name=name, namespace=namespace, uid=uid,
                              base_version=accepted.base.version, owner=body)
    await kube.create_or_get_configmap(namespace, built.configmap)
    _, created = await kube.create_or_get_job(namespace, built.job)
    with_condition(body, step, "Accepted", "True", cond.ACCEPTED,
                   f"{describe(body)} was accepted: {subject_count} subjects to forget from "
                   f"model {spec.model.name} version {accepted.base.version}.")
    with_condition(body, step, "Unlearned", "Unknown", cond.JOB_PENDING,
                   f"Job {built.job_name} was created and waits for its Pod to start.")
    step.status.update(baseModel=accepted.base.model_dump(by_alias=True, exclude_none=True),
                       subjectCount=subject_count, jobName=built.job_name,
                       subjectsSecretName=naming.subjects_secret_name(name, uid),
                       attempts=max(1, int((body.get("status") or {}).get("attempts") or 0)),
                       startTime=(body.get("status") or {}).get("startTime") or now())
    if created:
        step.events.append(("Normal", "JobCreated", f"Created Job {built.job_name} for model {spec.model.name} "
                                                    f"version {accepted.base.version}."))
    return step


def job_kind(body: Mapping[str, Any], job_name: str) -> naming.JobKind:
    meta = body["metadata"]
    return "retrain" if job_name == naming.job_name(meta["name"], meta["uid"], kind="retrain") else "unlearn"


async def read_progress(uri: str) -> dict[str, Any] | None:
    """The trainer's latest progress line as ``status.progress``; None when there is none yet."""
    try:
        text = await asyncio.to_thread(storage.read_text, uri)
        line = [row for row in text.splitlines() if row.strip()][-1]
        return tracking.progress_status(Progress.model_validate_json(line)).model_dump(by_alias=True,
                                                                                        exclude_none=True)
    except (StorageError, IndexError, ValidationError):
        return None


async def track(kube: Kube, settings: Settings, body: Mapping[str, Any],
                job: Mapping[str, Any] | None = None) -> tuple[Step, tracking.JobState]:
    """Look at the Job (``job`` as last seen by the watch, else read) and, when it has any, its Pods;
    copy progress once it runs; on a finished Job the caller evaluates or fails."""
    meta, status = body["metadata"], body.get("status") or {}
    spec = parse_spec(body.get("spec") or {})
    job_name = status["jobName"]
    if job is None:
        job = await kube.get_job(meta["namespace"], job_name)
    paths = jobs.request_paths(spec.model.registry_uri, spec.model.name, meta["uid"], kind=job_kind(body, job_name))
    if job is None and await in_thread(storage.exists, paths.report):
        # The trainer writes its report last, so the Job completed and was removed since (its TTL ran
        # out while the operator was down): evaluate the report rather than fail a finished run.
        state = tracking.JobState("succeeded")
    else:
        pods = await kube.list_pods_for_job(meta["namespace"], job_name) if tracking.has_pods(job) else []
        state = tracking.job_state(job, pods, now=datetime.now(UTC),
                                   pending_pod_timeout_seconds=settings.pending_pod_timeout_seconds)
    step = Step()
    if state.phase in ("running", "succeeded"):
        progress = await read_progress(paths.progress)
        if progress is not None and progress != status.get("progress"):
            step.status["progress"] = progress
    reason = cond.reason_of(status.get("conditions") or [], "Unlearned")
    if state.phase == "running" and reason != cond.JOB_RUNNING:
        with_condition(body, step, "Unlearned", "Unknown", cond.JOB_RUNNING, f"Job {job_name} is running.")
        step.events.append(("Normal", "JobRunning", f"Job {job_name} started running."))
    elif state.phase == "failed":
        with_condition(body, step, "Unlearned", "False", state.reason, state.message)
        step.status["completionTime"] = now()
        step.events.append(("Warning", "JobFailed", f"Job {job_name} failed ({state.reason}): {state.message}"))
        if (job is not None and state.never_started and not _job_finished(job)
                and await kube.delete_job(meta["namespace"], job_name)):
            # A Pod that never started (unschedulable, image pull) would keep its queue slot or GPU.
            step.events.append(("Normal", "JobDeleted", f"Deleted Job {job_name}, whose Pod never started."))
    return step, state


def _job_finished(job: Mapping[str, Any]) -> bool:
    """Whether Kubernetes itself marked the Job Complete or Failed."""
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


@dataclass(frozen=True)
class Evaluation:
    step: Step
    decision: Decision
    gates: list[Any]
    mia: float | None
    test_auc_drop: float | None


async def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a storage step in a worker thread; a transient storage error (``StorageUnavailable``)
    becomes ``RegistryUnavailable``, which is retried."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except StorageUnavailable as err:
        raise RegistryUnavailable(f"The registry's storage did not answer ({err}); trying again later.") from err


async def evaluate(kube: Kube, settings: Settings, body: Mapping[str, Any]) -> Evaluation:
    """Read and verify the report, evaluate the gates, decide, then promote/hold/retrain and write
    the receipt (terminal decisions only).

    Nothing is changed until every check that can fail has passed: the report's lineage, the
    subjects and the HMAC key the receipt needs, and the serving target. A rollout that still
    fails after the alias moved moves the alias back. A non-retryable error after the gates keeps
    the evaluation in status (gates, metrics, candidate) and ends the request not promoted."""
    meta, status = body["metadata"], body.get("status") or {}
    name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
    spec = parse_spec(body.get("spec") or {})
    kind = job_kind(body, status["jobName"])
    paths = jobs.request_paths(spec.model.registry_uri, spec.model.name, uid, kind=kind)
    base = ModelVersionStatus.model_validate(status["baseModel"])
    report = await in_thread(pipeline.load_report, paths.report, request=f"{namespace}/{name}")
    pipeline.check_lineage(report, base, naming.candidate_version(base.version, uid, kind=kind))
    candidate = await in_thread(pipeline.verify_candidate, report)
    report_sha = await in_thread(pipeline.stream_sha256, paths.report)
    statuses = gating.evaluate_gates(gating.effective_gates(spec.gates, settings.default_gates), report)
    decision = decide(spec.rollout.mode, statuses, is_approved(meta.get("annotations")), spec.rollout.on_gate_failure,
                      retrained=kind == "retrain")
    metrics = gating.metrics_status(report)
    step = Step()
    mia = gating.metric_value(report.unlearned, "mia")
    drop = gating.metric_drop(report, "testAUC")
    step.status.update(
        candidateModel=candidate.model_dump(by_alias=True, exclude_none=True),
        # Unmeasured metrics are written as null, which a merge patch removes: a retrain's status
        # never keeps a value from the first attempt's report.
        metrics=metrics.model_dump(by_alias=True),
        gates=[gate.model_dump(by_alias=True, exclude_none=True) for gate in statuses],
        report={"uri": paths.report, "sha256": report_sha}, mia=mia, testAucDrop=drop,
    )
    with_condition(body, step, "Unlearned", "True", cond.JOB_SUCCEEDED, f"Job {status['jobName']} completed.")
    step.events.append(("Normal", cond.JOB_SUCCEEDED, f"Job {status['jobName']} completed."))
    passed = gating.all_passed(statuses)
    inconclusive = any(gate.result == "Inconclusive" for gate in statuses)
    gate_reason = cond.GATES_PASSED if passed else cond.GATES_INCONCLUSIVE if inconclusive else cond.GATES_FAILED
    with_condition(body, step, "GatesPassed", "True" if passed else "False", gate_reason, gating.summary(statuses))
    step.events.append(("Normal" if passed else "Warning", gate_reason, gating.summary(statuses)))
    try:
        await _decide(kube, settings, body, spec, step, decision, statuses, report, base, candidate, report_sha,
                      metrics, paths)
    except OperatorError as err:
        if err.retryable:
            raise
        with_condition(body, step, "Promoted", "False", err.reason, err.message)
        step.status["completionTime"] = now()
        step.events.append(("Warning", err.reason, err.message))
    return Evaluation(step, decision, statuses, mia, drop)


async def _decide(kube: Kube, settings: Settings, body: Mapping[str, Any], spec: UnlearnRequestSpec, step: Step,
                  decision: Decision, statuses: list[Any], report: Report, base: ModelVersionStatus,
                  candidate: ModelVersionStatus, report_sha: str, metrics: Any, paths: jobs.RequestPaths) -> None:
    """Act on ``decision`` into ``step``; raises OperatorError before any change when a check fails."""
    meta, status = body["metadata"], body.get("status") or {}
    name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
    subjects: list[str] = []
    key: bytes | None = None
    if decision.terminal or decision == Decision.RETRAIN:  # what the receipt or the retrain needs, read first
        subjects, where = await read_snapshot(kube, body, spec, copy=decision == Decision.RETRAIN)
        if len(subjects) != report.counts.subjects:
            raise SubjectsError(f"{where} holds {len(subjects)} subjects, but the Job's report counts "
                                f"{report.counts.subjects}: nothing was promoted. Create a new request.")
    if decision.terminal:
        key = await kube.read_hmac_key(settings)
    promotion: receipts.Promotion | None = None
    if decision == Decision.PROMOTE:
        skipped = await check_target(kube, settings, spec, namespace)
        ref = registry.RequestRef(namespace=namespace, name=name, uid=uid)
        record = await in_thread(pipeline.promote_candidate, spec, base, candidate, ref)
        try:
            await patch_target(kube, settings, spec, namespace, candidate.uri)
        except OperatorError as err:
            undone = await asyncio.to_thread(pipeline.rollback_promotion, spec, base, candidate, ref)
            raise ServingTargetError(f"{err.message} The rollout was undone: {undone}") from err
        promotion = receipts.Promotion(alias=spec.model.alias, version=record.version, previous=record.previous)
        message = (f"Alias '{spec.model.alias}' of model {spec.model.name} now names version {candidate.version} "
                   f"(was {base.version}).")
        if skipped:
            message += f" {skipped}"
            step.events.append(("Warning", "ServingTargetSkipped", skipped))
        with_condition(body, step, "Promoted", "True", cond.PROMOTED, message)
        step.events.append(("Normal", cond.PROMOTED, message))
    elif decision == Decision.AWAIT_APPROVAL:
        message = (f"{describe(body)} passed its gates and waits for the annotation "
                   f"unlearning.forgetmi.io/approved=true.")
        with_condition(body, step, "Promoted", "Unknown", cond.AWAITING_APPROVAL, message)
        step.events.append(("Normal", cond.AWAITING_APPROVAL, message))
    elif decision == Decision.DRY_RUN_DONE:
        message = f"{describe(body)} is a dry run; version {candidate.version} was not promoted."
        with_condition(body, step, "Promoted", "False", cond.DRY_RUN, message)
        step.events.append(("Normal", cond.DRY_RUN, message))
    elif decision == Decision.HOLD:
        with_condition(body, step, "Promoted", "False", cond.GATES_NOT_PASSED,
                       f"{describe(body)} is held: {gating.summary(statuses)} Nothing was promoted.")
        step.events.append(("Warning", "Held", f"{describe(body)} is held; alias '{spec.model.alias}' still names "
                                               f"version {base.version}."))
    elif decision == Decision.RETRAIN:
        built = jobs.build_launch(spec, settings, name=name, namespace=namespace, uid=uid,
                                  base_version=base.version, owner=body, kind="retrain")
        await kube.create_or_get_configmap(namespace, built.configmap)
        await kube.create_or_get_job(namespace, built.job)
        step.status.update(jobName=built.job_name, attempts=int(status.get("attempts") or 1) + 1)
        with_condition(body, step, "Promoted", "Unknown", cond.RETRAINING,
                       f"The gates did not pass; retraining without the subjects in Job {built.job_name}.")
        with_condition(body, step, "Unlearned", "Unknown", cond.JOB_PENDING, f"Job {built.job_name} was created.")
        step.events.append(("Normal", "JobCreated", f"Created retrain Job {built.job_name}."))
    if decision.terminal:
        completed = now()
        step.status["completionTime"] = completed
        receipt = receipts.build_receipt(
            uid=uid, name=name, namespace=namespace, subject_count=len(subjects),
            subjects_digest=receipts.subjects_hmac(subjects, key), method=spec.method.name, mode=spec.rollout.mode,
            base=base, candidate=candidate, report={"uri": paths.report, "sha256": report_sha}, metrics=metrics,
            gates=statuses, decision=decision, created=meta.get("creationTimestamp") or completed,
            completed=completed, promotion=promotion)
        try:
            written = await in_thread(pipeline.write_receipt, paths.receipt, receipt)
        except OperatorError as err:
            if err.retryable or promotion is None:
                raise
            # The alias already moved and the rollout is done: the promotion stands, said plainly.
            promoted = cond.get_condition(step.status["conditions"], "Promoted") or {}
            with_condition(body, step, "Promoted", "True", cond.PROMOTED,
                           f"{promoted.get('message', '')} No receipt: {err.message}".strip())
            step.events.append(("Warning", err.reason, err.message))
            return
        step.status["receipt"] = written.model_dump(by_alias=True)


async def check_target(kube: Kube, settings: Settings, spec: UnlearnRequestSpec, namespace: str) -> str | None:
    """Check the serving target before the alias moves (``ServingTargetError`` if it cannot be patched);
    a sentence when a target is set but serving targets are disabled, else None."""
    target = spec.rollout.target
    if target is None:
        return None
    if not settings.serving_targets_enabled:
        return (f"Serving target {target.kind} {namespace}/{target.name} was not patched: serving targets are "
                "disabled in this operator (chart value servingTargets.enabled).")
    if target.kind == "Deployment":
        await kube.check_deployment(namespace, target.name, target.container)
    else:
        await kube.check_inferenceservice(namespace, target.name)
    return None


async def patch_target(kube: Kube, settings: Settings, spec: UnlearnRequestSpec, namespace: str, uri: str) -> None:
    """Point the serving target at ``uri``; a retryable error is tried again, up to TARGET_ATTEMPTS."""
    target = spec.rollout.target
    if target is None or not settings.serving_targets_enabled:
        return
    for attempt in range(TARGET_ATTEMPTS):
        try:
            if target.kind == "Deployment":
                await kube.patch_deployment_env(namespace, target.name, target.container, target.env, uri)
            else:
                await kube.patch_inferenceservice_storage_uri(namespace, target.name, uri)
            return
        except OperatorError as err:
            if not err.retryable or attempt == TARGET_ATTEMPTS - 1:
                raise
            await asyncio.sleep(TARGET_RETRY_SECONDS * 2**attempt)


def failure(body: Mapping[str, Any], err: OperatorError, *, accepting: bool) -> Step:
    """The status of a request that a non-retryable error stopped (before its gates were evaluated:
    :func:`evaluate` records later errors itself)."""
    step = Step()
    type: ConditionType = "Accepted" if accepting else "Unlearned"
    if not accepting and err.reason in ("PromotionConflict", "DigestMismatch", "ServingTargetError"):
        type = "Promoted"
    with_condition(body, step, type, "False", err.reason, err.message)
    step.status["completionTime"] = now()
    step.events.append(("Warning", err.reason, err.message))
    return step

"""A look at an open request in the cluster: what its Job is doing, and what follows from it.

:func:`look` is what the :class:`~forgetmi_operator.cluster.scheduler.LookScheduler` runs for a
request: it reads the Job (as the watch last saw it) and its Pods (:mod:`~forgetmi_operator.cluster.jobstate`)
— or the TrainJob and its Pods (:mod:`~forgetmi_operator.cluster.trainjobstate`) for a request that
runs on several processes or nodes; the trainer's rank 0 writes progress and report as a single
process does — copies the trainer's progress into the status, fails a Job that failed or whose Pod
never starts, and once the Job succeeded concludes the request (:func:`forgetmi_operator.lifecycle.conclude.conclude`:
gates → promote / hold / retrain → receipt) — also when it waits for approval and the approval
came. The status is then written; one that could not be written is kept and written by the next
look before anything is decided again. Once a terminal status is saved, the forget list's copy is
deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from forgetmi_operator.api import conditions as cond
from forgetmi_operator.api import failpoints, naming
from forgetmi_operator.api.errors import OperatorError, storage_call
from forgetmi_operator.api.spec import parse_spec
from forgetmi_operator.cluster import coalescer, jobstate, trainjobstate
from forgetmi_operator.cluster.context import Cluster
from forgetmi_operator.cluster.kube import Kube
from forgetmi_operator.cluster.metrics import METRICS
from forgetmi_operator.cluster.scheduler import Entry, wants_tracking
from forgetmi_operator.lifecycle import batches, subjects
from forgetmi_operator.lifecycle.conclude import conclude
from forgetmi_operator.lifecycle.decisions import Decision, is_approved
from forgetmi_operator.lifecycle.steps import Step, failure, job_failed, job_running
from forgetmi_operator.registry.paths import request_paths
from forgetmi_trainer.contract import Progress
from forgetmi_trainer.errors import StorageError
from forgetmi_trainer.storage import Objects

log = logging.getLogger(__name__)
PROGRESS_MAX_BYTES = 64 * 1024
"""The most of the trainer's progress file the operator reads (it holds one line of ≈ 150 bytes)."""


async def look(cluster: Cluster, entry: Entry) -> None:
    """One look at a request: save what an earlier look could not, else track its Job and save."""
    body = entry.body
    if entry.unsaved is None:
        try:
            step = await _track(cluster, body, entry.evaluated)
        except OperatorError as err:
            METRICS.reconcile_errors_total.labels(handler="track").inc()
            if err.retryable:
                log.warning("Tracking %s will be retried: %s", naming.describe(body), err.message)
                return
            step = failure(body, err, accepting=False)
        except Exception:  # a bug or an unexpected library error: counted, then tried again by the next look
            METRICS.reconcile_errors_total.labels(handler="track").inc()
            raise
        if step is None or not step.status:
            return
        entry.unsaved = step
    step = entry.unsaved
    meta = body["metadata"]
    try:
        patched = await cluster.kube.patch_request_status(meta["namespace"], meta["name"], step.status)
    except OperatorError as err:  # kept: the next look writes it before anything else
        METRICS.reconcile_errors_total.labels(handler="track").inc()
        log.warning("The status of %s will be written again: %s", naming.describe(body), err.message)
        return
    entry.unsaved = None
    if cond.is_terminal(step.status.get("phase")):
        failpoints.reach("after-terminal-status")
    cluster.post(body, step)
    if patched is not None:
        cluster.scheduler.observe(patched)
    if cond.is_terminal(step.status.get("phase")):  # only once the decision is saved: a re-evaluation needs it
        await subjects.release(cluster.kube, body)
        await coalescer.release_when_done(cluster, patched or body)


async def _track(cluster: Cluster, body: Mapping[str, Any], concluded: set[str]) -> Step | None:
    """The step this look takes; ``concluded`` holds the Jobs already acted on (never twice)."""
    if not wants_tracking(body):
        return None
    meta, status = body["metadata"], body.get("status") or {}
    if awaits_approval(body):
        manual = ((body.get("spec") or {}).get("rollout") or {}).get("mode", "Manual") == "Manual"
        return await _conclude(cluster, body) if is_approved(meta.get("annotations")) or not manual else None
    job_name = status["jobName"]
    if job_name in concluded:
        return None
    engine = trainjobstate.engine_of_request(body)
    step, state = await track_job(cluster, body, cluster.scheduler.job(meta["namespace"], job_name, kind=engine))
    if state.phase == "failed":
        METRICS.job_failures_total.labels(reason=state.reason).inc()
        concluded.add(job_name)
    elif state.phase == "succeeded":
        failpoints.reach("on-job-complete")
        result = await _conclude(cluster, body)
        concluded.add(job_name)  # only once acted on: a retryable error tries again
        result.status = {**step.status, **result.status}
        return result
    return step


def awaits_approval(body: Mapping[str, Any]) -> bool:
    """Whether the request passed its gates and waits for the approval annotation (Manual rollout)."""
    return cond.reason_of((body.get("status") or {}).get("conditions") or [], "Promoted") == cond.AWAITING_APPROVAL


async def _conclude(cluster: Cluster, body: Mapping[str, Any]) -> Step:
    """Conclude the request, and count what the dashboard shows of it."""
    outcome = await conclude(cluster.ports, body)
    spec_model = (body.get("spec") or {}).get("model") or {}
    labels = {"namespace": str(body["metadata"]["namespace"]), "model": str(spec_model.get("name"))}
    job = f"{body['metadata']['namespace']}/{(body.get('status') or {}).get('jobName')}"
    if outcome.decision != Decision.AWAIT_APPROVAL and cluster.count_once(job):
        # counted once, when acted on (not again on approval), and once for a batch's shared Job
        for gate in outcome.gates:
            METRICS.gate_evaluations_total.labels(metric=gate.metric, result=gate.result).inc()
    if outcome.mia is not None:
        METRICS.last_mia.labels(**labels).set(outcome.mia)
    if outcome.test_auc_drop is not None:
        METRICS.last_test_auc_drop.labels(**labels).set(outcome.test_auc_drop)
    return outcome.step


async def read_progress(objects: Objects, uri: str) -> dict[str, Any] | None:
    """The trainer's latest progress line as ``status.progress``; None when there is none yet."""
    try:
        data = await storage_call(objects.read_at_most, uri, PROGRESS_MAX_BYTES + 1)
        if len(data) > PROGRESS_MAX_BYTES:  # the trainer writes one short line; this is not its
            return None
        line = [row for row in data.decode("utf-8", errors="replace").splitlines() if row.strip()][-1]
        return jobstate.progress_status(Progress.model_validate_json(line)).model_dump(by_alias=True,
                                                                                        exclude_none=True)
    except (StorageError, OperatorError, IndexError, ValidationError):
        return None


async def track_job(cluster: Cluster, body: Mapping[str, Any],
                    job: Mapping[str, Any] | None = None) -> tuple[Step, jobstate.JobState]:
    """Look at the Job or TrainJob (``job`` as last seen by the watch, else read) and, when it has any,
    its Pods; copy progress once it runs; on a finished one the caller concludes or fails."""
    meta, status = body["metadata"], body.get("status") or {}
    spec, job_name = parse_spec(body.get("spec") or {}), status["jobName"]
    kube, namespace = cluster.kube, meta["namespace"]
    trainjob = trainjobstate.engine_of_request(body) == "TrainJob"
    if job is None:
        job = await (kube.get_trainjob if trainjob else kube.get_job)(namespace, job_name)
    owner_name, owner_uid = batches.run_owner(body)  # a batch's run is its leader's
    kind, rebase = naming.job_run(owner_name, owner_uid, job_name)
    paths = request_paths(spec.model.registry_uri, spec.model.name, owner_uid, kind=kind, rebase=rebase)
    objects = await cluster.ports.storage_for(body)
    if job is None and await storage_call(objects.exists, paths.report):
        # The trainer writes its report last, so the Job completed and was removed since (its TTL ran
        # out while the operator was down): conclude from the report rather than fail a finished run.
        state = jobstate.JobState("succeeded")
    else:
        state = await _state(cluster, job, job_name, namespace, trainjob=trainjob)
    step = Step()
    if state.phase in ("running", "succeeded"):
        progress = await read_progress(objects, paths.progress)
        if progress is not None and progress != status.get("progress"):
            step.status["progress"] = progress
    if state.phase == "running" and cond.reason_of(status.get("conditions") or [], "Unlearned") != cond.JOB_RUNNING:
        job_running(body, step, job_name)
    elif state.phase == "failed":
        job_failed(body, step, job_name, state.reason, state.message)
        if job is not None and state.never_started and await _delete_unstarted(kube, job, namespace, job_name,
                                                                               trainjob=trainjob):
            # A Pod that never started (unschedulable, image pull) would keep its queue slot or GPU.
            what, pods = ("TrainJob", "whose Pods never started") if trainjob else ("Job", "whose Pod never started")
            step.events.append(("Normal", "JobDeleted", f"Deleted {what} {job_name}, {pods}."))
    return step, state


async def _state(cluster: Cluster, job: Mapping[str, Any] | None, job_name: str, namespace: str, *,
                 trainjob: bool) -> jobstate.JobState:
    """The workload's state from it and (when it counts any) its Pods."""
    timeout, now = cluster.settings.pending_pod_timeout_seconds, datetime.now(UTC)
    if trainjob:
        pods = await cluster.kube.list_pods_for_trainjob(namespace, job_name) if trainjobstate.has_pods(job) else []
        return trainjobstate.trainjob_state(job, pods, now=now, pending_pod_timeout_seconds=timeout)
    pods = await cluster.kube.list_pods_for_job(namespace, job_name) if jobstate.has_pods(job) else []
    return jobstate.job_state(job, pods, now=now, pending_pod_timeout_seconds=timeout)


async def _delete_unstarted(kube: Kube, job: Mapping[str, Any], namespace: str, job_name: str, *,
                            trainjob: bool) -> bool:
    """Delete a workload whose Pods never started, unless Kubernetes (or Trainer) finished it already."""
    if trainjob:
        return not trainjobstate.finished_by_trainer(job) and await kube.delete_trainjob(namespace, job_name)
    return not jobstate.finished_by_kubernetes(job) and await kube.delete_job(namespace, job_name)

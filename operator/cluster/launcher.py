"""What the operator creates in the cluster for a request's runs, and deletes again.

:class:`ClusterTrainers` is the cluster's :class:`~forgetmi_operator.lifecycle.ports.Trainers`: a
run is a ConfigMap (the trainer's ``job.json``) and its workload, a ``batch/v1`` Job or, for a
request that needs several processes or nodes, a Kubeflow Trainer v2 TrainJob
(:func:`~forgetmi_operator.cluster.trainjobs.engine_of`, :mod:`~forgetmi_operator.cluster.jobs`), both
with deterministic names and owned by the request, so creating them twice finds the first.
:func:`start` and :func:`unsuspend` launch a request (:func:`forgetmi_operator.lifecycle.launch.launch`).
A request needing a TrainJob on an operator with ``trainJob.enabled`` false, or on a cluster that
serves no TrainJobs, ends ``Accepted=False`` (``EngineUnavailable``) before anything is read or
created. A launch that fails for good leaves nothing running: an earlier attempt (a retry, or one a
restart cut short before its status was saved) may have created the workload and the copy of the
forget list, and both are deleted. :func:`remove` stops the workload of a deleted request at once.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from forgetmi_operator.api import conditions as cond
from forgetmi_operator.api import failpoints, naming
from forgetmi_operator.api.errors import EngineUnavailable, OperatorError
from forgetmi_operator.api.naming import JobKind
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.api.spec import UnlearnRequestSpec, parse_spec
from forgetmi_operator.cluster import coalescer, jobs, policy, trainjobs
from forgetmi_operator.cluster.context import Cluster
from forgetmi_operator.cluster.kube import Kube
from forgetmi_operator.cluster.metrics import METRICS
from forgetmi_operator.cluster.trainjobstate import engine_of_request
from forgetmi_operator.lifecycle import batches, launch, subjects
from forgetmi_operator.lifecycle.ports import Started
from forgetmi_operator.lifecycle.steps import Step, failure
from forgetmi_trainer.contract import parse_timestamp

log = logging.getLogger(__name__)
EVENT_RECOVERY_SECONDS = 3600.0
"""How long after a request ended a restart still posts its terminal Event (Kubernetes keeps Events an hour)."""
ENGINE_UNAVAILABLE = "TrainJob needs Kubeflow Trainer v2; install it or use nodes: 1"


class ClusterTrainers:
    def __init__(self, kube: Kube, settings: Settings) -> None:
        self.kube, self.settings = kube, settings

    async def start(self, body: Mapping[str, Any], spec: UnlearnRequestSpec, base_version: str,
                    kind: JobKind, rebase: int = 0) -> Started:
        if kind == "retrain":  # a first launch was checked before anything was read; a retrain, by today's policy
            policy.check_pod_policy(spec, self.settings)
        meta = body["metadata"]
        built = jobs.build_launch(spec, self.settings, name=meta["name"], namespace=meta["namespace"],
                                  uid=meta["uid"], base_version=base_version, owner=body, kind=kind,
                                  previously_forgotten=await self._previously_forgotten(meta, rebase), rebase=rebase)
        await self.kube.create_or_get_configmap(meta["namespace"], built.configmap)
        if built.engine == "TrainJob":
            _, created = await self.kube.create_or_get_trainjob(meta["namespace"], built.job)
            workload = "TrainJob"
            waits = f"its queue {spec.queue_name} to admit it (Kueue)" if spec.queue_name else "its Pods to start"
        else:
            _, created = await self.kube.create_or_get_job(meta["namespace"], built.job)
            workload, waits = "Job", "its Pod to start"
        if created:
            METRICS.trainer_jobs_total.labels(namespace=meta["namespace"]).inc()
        failpoints.reach("after-job-create")
        what = f"retrain {workload}" if kind == "retrain" else workload
        return Started(job_name=built.job_name, created=created,
                       waiting=f"{workload} {built.job_name} was created and waits for {waits}.",
                       event=f"Created {what} {built.job_name} for model {spec.model.name} version {base_version}.")


    async def _previously_forgotten(self, meta: Mapping[str, Any], rebase: int) -> bool:
        """Whether the request's copy of its forget list holds the patients of earlier erasures (only with a
        forget ledger key: docs/ledger.md), which the run's pods then mount and its config names."""
        if not self.settings.ledger_key_secret_name:
            return False
        copy = await self.kube.get_secret(meta["namespace"],
                                          naming.subjects_secret_name(meta["name"], meta["uid"], rebase=rebase))
        return subjects.has_previously_forgotten(copy)


async def start(cluster: Cluster, body: Mapping[str, Any]) -> Step:
    """Accept and launch a new request (a resumed one that launched already is left to the looks). A
    request found ended when the operator starts (Kopf resumes every request then) gets what a restart
    may have cut short after its terminal status was saved: its copies of the forget list deleted (its
    batch's too), and its terminal condition posted as an Event (once: Events are named for what they say)."""
    status = body.get("status") or {}
    if cond.is_terminal(status.get("phase")):
        cluster.phases.observe(body, status.get("phase"))
        await subjects.release(cluster.kube, body)
        await coalescer.release_when_done(cluster, body)
        return _terminal_event(body)
    if status.get("jobName"):
        cluster.phases.observe(body, status.get("phase"))
        return Step()
    return await _launch(cluster, body)


def _terminal_event(body: Mapping[str, Any]) -> Step:
    """The Event of the condition that ended the request, as the step that ended it posted it, when it
    ended within :data:`EVENT_RECOVERY_SECONDS` (an older one's Events have expired, and are not repeated)."""
    step = Step()
    status = body.get("status") or {}
    ended = cond.terminal_condition(status.get("conditions") or [])
    completed = parse_timestamp(status.get("completionTime"))
    recent = completed is not None and (datetime.now(UTC) - completed).total_seconds() <= EVENT_RECOVERY_SECONDS
    if ended is not None and recent:
        kind = "Normal" if ended.get("status") == "True" else "Warning"
        step.events.append((kind, str(ended.get("reason")), str(ended.get("message"))))
    return step


async def unsuspend(cluster: Cluster, body: Mapping[str, Any], old: Any, new: Any) -> Step:
    """Un-suspending a request that never launched launches it now."""
    status = body.get("status") or {}
    if old is None or new or status.get("jobName") or cond.is_terminal(status.get("phase")):
        return Step()
    return await _launch(cluster, body)


async def _launch(cluster: Cluster, body: Mapping[str, Any]) -> Step:
    try:
        spec = parse_spec(body.get("spec") or {})
        policy.check_pod_policy(spec, cluster.settings)  # before anything is read
        await check_engine(cluster, spec)
        if batches.coalescible(spec, cluster.settings.coalesce_window_seconds):
            return await launch.launch(cluster.ports, body, gather=functools.partial(coalescer.join, cluster))
        return await launch.launch(cluster.ports, body)
    except EngineUnavailable as err:  # decided before anything was read or created: nothing to undo
        return failure(body, err, accepting=True)
    except OperatorError as err:
        if err.retryable:
            raise
        await delete_owned_job(cluster.kube, body)
        await subjects.release(cluster.kube, body)
        return failure(body, err, accepting=True)


async def check_engine(cluster: Cluster, spec: UnlearnRequestSpec) -> None:
    """Raise ``EngineUnavailable`` when ``spec`` needs a TrainJob and the operator may not create one
    (``trainJob.enabled`` false) or the cluster serves none (Kubeflow Trainer v2 is not installed)."""
    if trainjobs.engine_of(spec) != "TrainJob":
        return
    if not cluster.settings.trainjob_enabled:
        why = "the operator runs with trainJob.enabled=false"
    elif not await cluster.kube.api_available(*trainjobs.TRAINJOB_API):
        group, version, plural = trainjobs.TRAINJOB_API
        why = f"the cluster serves no {group}/{version} {plural}: Trainer's CRDs are not installed"
    else:
        return
    resources = spec.resources
    raise EngineUnavailable(f"{ENGINE_UNAVAILABLE} (spec.resources asks for {resources.nodes} node(s) × "
                            f"{resources.processes} process(es), engine {resources.engine}; {why}).")


async def _delete_workload(kube: Kube, body: Mapping[str, Any], namespace: str, name: str) -> bool:
    """Delete the request's Job or TrainJob ``name``; False when it was already gone."""
    if engine_of_request(body) == "TrainJob":
        return await kube.delete_trainjob(namespace, name)
    return await kube.delete_job(namespace, name)


async def delete_owned_job(kube: Kube, body: Mapping[str, Any]) -> None:
    """Delete the unlearn Job (or TrainJob) of a request whose launch failed for good, if an earlier
    attempt created it (only when the request owns it)."""
    meta = body["metadata"]
    what = engine_of_request(body)
    name_of = trainjobs.trainjob_name if what == "TrainJob" else naming.job_name
    namespace, job_name = meta["namespace"], name_of(meta["name"], meta["uid"])
    try:
        job = await (kube.get_trainjob if what == "TrainJob" else kube.get_job)(namespace, job_name)
        if job is not None and naming.owned_by(job, meta["uid"]) and await _delete_workload(
                kube, body, namespace, job_name):
            log.info("Deleted %s %s of %s, whose launch failed", what, job_name, naming.describe(body))
    except OperatorError as err:
        log.warning("%s %s of %s is left to garbage collection: %s", what, job_name, naming.describe(body),
                    err.message)


async def remove(cluster: Cluster, body: Mapping[str, Any]) -> None:
    """A deleted request's Job or TrainJob goes with it (ownerReference); deleting it here too stops it
    at once, and its forget list's copy goes too. A batch's Job, shared with other requests, runs on
    while any of them is still there (their receipts name the deleted one, docs/coalescing.md)."""
    status = body.get("status") or {}
    job_name = status.get("jobName")
    if job_name and not await _shared_with_others(cluster, body):
        what = engine_of_request(body)
        try:
            if await _delete_workload(cluster.kube, body, body["metadata"]["namespace"], job_name):
                log.info("Deleted %s %s of deleted %s", what, job_name, naming.describe(body))
        except OperatorError as err:
            log.warning("%s %s of deleted %s is left to garbage collection: %s", what, job_name,
                        naming.describe(body), err.message)
    await subjects.release(cluster.kube, body)


async def _shared_with_others(cluster: Cluster, body: Mapping[str, Any]) -> bool:
    """Whether another request of the deleted request's batch still exists (then its Job stays); when
    that cannot be read, the Job is left to garbage collection, which deletes it with its last owner."""
    batch = batches.batch_of(body)
    if batch is None or len(batch.requests) < 2:
        return False
    others = [(ref.name, ref.uid) for ref in batch.requests if ref.uid != body["metadata"]["uid"]]
    try:
        return bool(await cluster.kube.present_requests(body["metadata"]["namespace"], others))
    except OperatorError:
        return True

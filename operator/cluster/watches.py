"""What the operator does when it starts and stops, and on every watch event (plain async functions
that Kopf's handlers call).

- :func:`startup` assembles the :class:`~forgetmi_operator.cluster.context.Cluster`: the API client,
  the lifecycle's ports (Secrets, Jobs, serving targets, each request's storage identity, the receipt
  key), the look scheduler and its
  sweep every ``FORGETMI_PROGRESS_INTERVAL_SECONDS``, and the metrics server; :func:`cleanup` stops them;
- :func:`request_event`: every request event updates the phase gauges and the scheduler's copy of
  the request; a request is looked at now when it first shows a Job (new, retrained, or seen again
  after a restart) and whenever it waits for approval (the approval annotation or
  ``spec.rollout.mode`` may have changed; Kopf leaves annotations under its own prefix out of what
  ``on.field`` sees); a deleted request's Job and forget-list copy are deleted;
- :func:`job_event`, :func:`trainjob_event` and :func:`pod_event`: a trainer Job, TrainJob or Pod
  with news gets its request looked at now rather than at the next sweep (a TrainJob's Pods are
  found by their JobSet's name, which is the TrainJob's).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Mapping
from typing import Any

from forgetmi_operator.api.settings import Settings
from forgetmi_operator.cluster import coalescer, identity, jobstate, launcher, outcome, trainjobstate
from forgetmi_operator.cluster.context import Cluster, PostEvent
from forgetmi_operator.cluster.events import EventPoster
from forgetmi_operator.cluster.kube import Kube
from forgetmi_operator.cluster.metrics import METRICS, serve
from forgetmi_operator.cluster.phases import PhaseBook
from forgetmi_operator.cluster.scheduler import LookScheduler, is_open, key_of, owners_of, wants_tracking
from forgetmi_operator.cluster.targets import ClusterTargets
from forgetmi_operator.lifecycle import receipts, subjects
from forgetmi_operator.lifecycle.ports import Ports

log = logging.getLogger(__name__)
LOOK_CONCURRENCY = 8
"""Looks at requests (API reads, conclusions) that run at the same time."""
PHASES = PhaseBook(METRICS)
"""Every request's phase, for the request gauges and counters (one per process, as the metrics are)."""


async def startup(settings: Settings, post_event: PostEvent | None = None) -> Cluster:
    """Connect to the API server and start the looks, their sweep and the metrics server; Events are
    posted by ``post_event`` (default: an :class:`~forgetmi_operator.cluster.events.EventPoster`)."""
    kube = Kube.from_settings(settings)
    if post_event is None:
        post_event = EventPoster(kube)
    ports = Ports(settings=settings, secrets=kube, trainers=launcher.ClusterTrainers(kube, settings),
                  targets=ClusterTargets(kube, settings),
                  storage_for=lambda body: identity.storage_for(kube, settings, body),
                  receipt_key=lambda: subjects.receipt_key(kube, settings),
                  signing_key=lambda: receipts.signing_key(kube, settings),
                  ledger_key=lambda: subjects.ledger_key(kube, settings), present=kube.present_requests)
    cluster = Cluster(settings=settings, kube=kube, ports=ports, phases=PHASES, post_event=post_event,
                      scheduler=LookScheduler(lambda entry: outcome.look(cluster, entry), is_open=is_open,
                                              concurrency=LOOK_CONCURRENCY))
    cluster.ports = dataclasses.replace(ports, gather=functools.partial(coalescer.join, cluster))
    cluster.tasks.append(asyncio.create_task(
        cluster.scheduler.sweep_forever(settings.progress_interval_seconds, wants_tracking), name="forgetmi sweep"))
    cluster.metrics_server = serve(settings.metrics_port)
    log.info("Started the metrics server on port %d", settings.metrics_port)
    return cluster


async def cleanup(cluster: Cluster) -> None:
    """Stop the sweep, the looks in flight, the metrics server and the API client."""
    for task in cluster.tasks:
        task.cancel()
    await asyncio.gather(*cluster.tasks, return_exceptions=True)
    await cluster.gatherings.close()
    await cluster.scheduler.close()
    if isinstance(cluster.post_event, EventPoster):
        await cluster.post_event.close()
    if cluster.metrics_server is not None:
        cluster.metrics_server.shutdown()
        cluster.metrics_server.server_close()
    cluster.kube.close()


async def request_event(cluster: Cluster, body: Mapping[str, Any], *, deleted: bool) -> None:
    """A request was added, changed or deleted (see the module docstring)."""
    scheduler = cluster.scheduler
    if deleted:
        cluster.gatherings.discard(str((body.get("metadata") or {}).get("uid")))
        cluster.phases.forget(body)
        scheduler.observe(body, deleted=True)
        await launcher.remove(cluster, body)
        return
    if scheduler.is_stale(body):  # from before the operator's own patch that closed it: the gauges keep the close
        return
    cluster.phases.observe(body, (body.get("status") or {}).get("phase"))
    before = scheduler.entries.get(key_of(body))
    seen_job = (before.body.get("status") or {}).get("jobName") if before is not None else None
    entry = scheduler.observe(body)
    if entry is None or not wants_tracking(entry.body):
        return
    status = entry.body.get("status") or {}
    awaiting = outcome.awaits_approval(entry.body)
    if awaiting or status.get("jobName") != seen_job:
        scheduler.poke(key_of(body))


def job_event(cluster: Cluster, job: Mapping[str, Any], *, deleted: bool) -> None:
    """A trainer Job changed: keep it, and look at its request when the Job has Pods or finished."""
    cluster.scheduler.job_changed(job, deleted=deleted)
    if deleted or jobstate.has_pods(job):
        for owner in owners_of(job):  # a batch's Job has every request of the batch as owner
            cluster.scheduler.poke(owner)


def trainjob_event(cluster: Cluster, trainjob: Mapping[str, Any], *, deleted: bool) -> None:
    """A trainer TrainJob changed: keep it, and look at its request when it has Pods or finished."""
    cluster.scheduler.job_changed(trainjob, deleted=deleted, kind="TrainJob")
    if deleted or trainjobstate.has_pods(trainjob):
        for owner in owners_of(trainjob):
            cluster.scheduler.poke(owner)


def pod_event(cluster: Cluster, pod: Mapping[str, Any]) -> None:
    """A trainer Pod was scheduled, runs, is stuck pulling its image or terminated: look at its request
    (a TrainJob's Pod by its TrainJob; it carries its child Job's ``job-name`` label too)."""
    namespace = str((pod.get("metadata") or {}).get("namespace"))
    trainjob_name = trainjobstate.trainjob_name_of_pod(pod)
    if trainjob_name is not None:
        owners = cluster.scheduler.requests_of_job(namespace, trainjob_name, kind="TrainJob")
    else:
        job_name = jobstate.job_name_of_pod(pod)
        owners = cluster.scheduler.requests_of_job(namespace, job_name) if job_name is not None else []
    for owner in owners:
        cluster.scheduler.poke(owner)

"""What the operator creates in the cluster for a request's runs, and deletes again.

:class:`ClusterTrainers` is the cluster's :class:`~forgetmi_operator.lifecycle.ports.Trainers`: a
run is a ConfigMap (the trainer's ``job.json``) and a ``batch/v1`` Job (:mod:`~forgetmi_operator.cluster.jobs`),
both with deterministic names and owned by the request, so creating them twice finds the first.
:func:`start` and :func:`unsuspend` launch a request (:func:`forgetmi_operator.lifecycle.launch.launch`);
a launch that fails for good leaves nothing running: an earlier attempt (a retry, or one a restart
cut short before its status was saved) may have created the Job and the copy of the forget list,
and both are deleted. :func:`remove` stops the Job of a deleted request at once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from forgetmi_operator.api import conditions as cond
from forgetmi_operator.api import naming
from forgetmi_operator.api.errors import OperatorError
from forgetmi_operator.api.naming import JobKind
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.api.spec import UnlearnRequestSpec, parse_spec
from forgetmi_operator.cluster import jobs, policy
from forgetmi_operator.cluster.context import Cluster
from forgetmi_operator.cluster.kube import Kube
from forgetmi_operator.lifecycle import launch, subjects
from forgetmi_operator.lifecycle.ports import Started
from forgetmi_operator.lifecycle.steps import Step, failure

log = logging.getLogger(__name__)


class ClusterTrainers:
    def __init__(self, kube: Kube, settings: Settings) -> None:
        self.kube, self.settings = kube, settings

    async def start(self, body: Mapping[str, Any], spec: UnlearnRequestSpec, base_version: str,
                    kind: JobKind) -> Started:
        if kind == "retrain":  # a first launch was checked before anything was read; a retrain, by today's policy
            policy.check_pod_policy(spec, self.settings)
        meta = body["metadata"]
        built = jobs.build_launch(spec, self.settings, name=meta["name"], namespace=meta["namespace"],
                                  uid=meta["uid"], base_version=base_version, owner=body, kind=kind)
        await self.kube.create_or_get_configmap(meta["namespace"], built.configmap)
        _, created = await self.kube.create_or_get_job(meta["namespace"], built.job)
        what = "retrain Job" if kind == "retrain" else "Job"
        return Started(job_name=built.job_name, created=created,
                       waiting=f"Job {built.job_name} was created and waits for its Pod to start.",
                       event=f"Created {what} {built.job_name} for model {spec.model.name} version {base_version}.")


async def start(cluster: Cluster, body: Mapping[str, Any]) -> Step:
    """Accept and launch a new request (a resumed one that launched already is left to the looks)."""
    status = body.get("status") or {}
    if cond.is_terminal(status.get("phase")) or status.get("jobName"):
        cluster.phases.observe(body, status.get("phase"))
        return Step()
    return await _launch(cluster, body)


async def unsuspend(cluster: Cluster, body: Mapping[str, Any], old: Any, new: Any) -> Step:
    """Un-suspending a request that never launched launches it now."""
    status = body.get("status") or {}
    if old is None or new or status.get("jobName") or cond.is_terminal(status.get("phase")):
        return Step()
    return await _launch(cluster, body)


async def _launch(cluster: Cluster, body: Mapping[str, Any]) -> Step:
    try:
        policy.check_pod_policy(parse_spec(body.get("spec") or {}), cluster.settings)  # before anything is read
        return await launch.launch(cluster.ports, body)
    except OperatorError as err:
        if err.retryable:
            raise
        await delete_owned_job(cluster.kube, body)
        await subjects.release(cluster.kube, body)
        return failure(body, err, accepting=True)


async def delete_owned_job(kube: Kube, body: Mapping[str, Any]) -> None:
    """Delete the unlearn Job of a request whose launch failed for good, if an earlier attempt
    created it (only when the request owns it)."""
    meta = body["metadata"]
    namespace, job_name = meta["namespace"], naming.job_name(meta["name"], meta["uid"])
    try:
        job = await kube.get_job(namespace, job_name)
        if job is not None and naming.owned_by(job, meta["uid"]) and await kube.delete_job(namespace, job_name):
            log.info("Deleted Job %s of %s, whose launch failed", job_name, naming.describe(body))
    except OperatorError as err:
        log.warning("Job %s of %s is left to garbage collection: %s", job_name, naming.describe(body), err.message)


async def remove(cluster: Cluster, body: Mapping[str, Any]) -> None:
    """A deleted request's Job goes with it (ownerReference); deleting it here too stops it at once,
    and its forget list's copy goes too."""
    job_name = (body.get("status") or {}).get("jobName")
    if job_name:
        try:
            if await cluster.kube.delete_job(body["metadata"]["namespace"], job_name):
                log.info("Deleted Job %s of deleted %s", job_name, naming.describe(body))
        except OperatorError as err:
            log.warning("Job %s of deleted %s is left to garbage collection: %s", job_name, naming.describe(body),
                        err.message)
    await subjects.release(cluster.kube, body)

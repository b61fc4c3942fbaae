"""Coalescing requests into one trainer Job (docs/coalescing.md).

With ``coalesceWindowSeconds`` set, an accepted request that may be coalesced
(:func:`~forgetmi_operator.lifecycle.batches.coalescible`) does not start a Job: :func:`join` adds it to
the open batch of its key (:mod:`~forgetmi_operator.cluster.gathering`), or opens one closing a window
later, and its status says so (Unlearned ``Coalescing``, ``status.batch`` with the key and closing time).
When the batch closes, :func:`close_batch` reads each request again (one deleted, suspended or ended
meanwhile is out of the batch), takes the first remaining as leader, writes the union of the forget
lists into the batch's Secret (:mod:`~forgetmi_operator.lifecycle.batchlists`; a union too large for one
Secret splits the batch), and creates ONE Job (or TrainJob) as the leader's, whose forget list is that
union, owned by every request of the batch. Every request's status then names the Job, the leader and
the batch. From there each request is tracked and concluded on its own, on the shared report
(:mod:`~forgetmi_operator.lifecycle.conclude`). Creating the Secret, ConfigMap and Job finds those of
an earlier attempt (names follow the leader), so a close retried after an error or a restart creates
nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from forgetmi_operator.api import conditions as cond
from forgetmi_operator.api import failpoints, naming
from forgetmi_operator.api.errors import OperatorError, SubjectsError
from forgetmi_operator.api.spec import UnlearnRequestSpec, parse_spec
from forgetmi_operator.cluster import jobs
from forgetmi_operator.cluster.context import Cluster
from forgetmi_operator.cluster.gathering import Gathering
from forgetmi_operator.cluster.metrics import METRICS
from forgetmi_operator.lifecycle import batches, batchlists, subjects
from forgetmi_operator.lifecycle.launch import Accepted, accepted_step
from forgetmi_operator.lifecycle.steps import Step, failure, with_condition
from forgetmi_trainer.contract import parse_timestamp, timestamp

log = logging.getLogger(__name__)
RETRY_SECONDS = 10.0
"""How long a close that failed on a retryable error waits before it is tried again."""
JOIN_WAIT_SECONDS = 1.0
JOIN_WAIT_ATTEMPTS = 15
"""A request whose status does not show it joined yet (its handler's patch is still on its way) is read
again this often, this far apart, before the batch closes without it (its handler's retry re-joins it)."""


async def join(cluster: Cluster, body: Mapping[str, Any], spec: UnlearnRequestSpec, accepted: Accepted) -> Step:
    """Add the accepted request to its batch (see the module docstring); the step that says it waits."""
    namespace = str(body["metadata"]["namespace"])
    key = batches.batch_key(spec, namespace, accepted.base.version)
    earlier = batches.batch_of(body)  # a restart: re-join with the closing time the request had
    closes_at = parse_timestamp(earlier.closes_at) if earlier is not None and earlier.key == key else None
    if closes_at is None:
        closes_at = datetime.now(UTC) + timedelta(seconds=cluster.settings.coalesce_window_seconds)
    gathering = cluster.gatherings.join(key, namespace, body, closes_at)
    if gathering.task is None:
        gathering.task = asyncio.get_running_loop().create_task(_close_when_due(cluster, gathering))
        cluster.gatherings.track(gathering.task)
    closes = timestamp(gathering.closes_at)
    step = accepted_step(body, spec, accepted)
    message = (f"Waits until {closes} for other requests for model {spec.model.name} version {accepted.base.version} "
               f"to share its Job ({len(gathering.members)} in the batch so far).")
    with_condition(body, step, "Unlearned", "Unknown", cond.COALESCING, message)
    step.status["batch"] = {"key": key, "closesAt": closes}
    step.events.append(("Normal", cond.COALESCING, message))
    return step


async def _close_when_due(cluster: Cluster, gathering: Gathering) -> None:
    """Wait for the batch's window to close, then close it (retried after a retryable error)."""
    await asyncio.sleep(max(0.0, (gathering.closes_at - datetime.now(UTC)).total_seconds()))
    cluster.gatherings.take(gathering.key)
    while True:
        try:
            await close_batch(cluster, list(gathering.members.values()))
            return
        except OperatorError as err:
            log.warning("Closing a batch of %d requests will be retried: %s", len(gathering.members), err.message)
        except Exception:  # a bug or an unexpected library error: logged, then tried again
            log.exception("Closing a batch of %d requests failed", len(gathering.members))
        await asyncio.sleep(RETRY_SECONDS)


async def _still_waiting(cluster: Cluster, body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The request as it is now, when it still waits for its batch (not deleted, re-created, suspended,
    ended or launched), once its status shows it joined."""
    meta = body["metadata"]
    for _ in range(JOIN_WAIT_ATTEMPTS):
        now = await cluster.kube.get_request(meta["namespace"], meta["name"])
        if now is None or (now.get("metadata") or {}).get("uid") != meta["uid"]:
            return None
        status = now.get("status") or {}
        if cond.is_terminal(status.get("phase")) or status.get("jobName") or (now.get("spec") or {}).get("suspend"):
            return None
        if status.get("batch") and status.get("baseModel"):
            return now
        await asyncio.sleep(JOIN_WAIT_SECONDS)
    return None


async def close_batch(cluster: Cluster, members: Sequence[Mapping[str, Any]]) -> None:
    """Create the Job of the batch ``members`` (see the module docstring)."""
    waiting = [found for body in members if (found := await _still_waiting(cluster, body)) is not None]
    if not waiting:
        return
    lists: list[list[str]] = []
    kept: list[Mapping[str, Any]] = []
    for body in batches.order(waiting):
        found = await subjects.find_snapshot(cluster.kube, body)
        if found is None:
            err = SubjectsError(f"The copy of the forget list of {naming.describe(body)} is gone, so it cannot run "
                                "in its batch's Job; create the request again.")
            await _save(cluster, body, failure(body, err, accepting=False))
            continue
        kept.append(body)
        lists.append(found[0])
    if not kept:
        return
    leader = kept[0]["metadata"]
    rebase = int((kept[0].get("status") or {}).get("rebases") or 0)
    leader_copy = await cluster.kube.get_secret(leader["namespace"], naming.subjects_secret_name(
        leader["name"], leader["uid"], rebase=rebase))
    previously = batchlists.previously_forgotten_of(leader_copy)
    for group in batchlists.groups_that_fit(lists, previously):
        await _launch_group(cluster, [kept[i] for i in group], [lists[i] for i in group], previously)


def share(built: jobs.Launch, own_copy: str, secret_name: str,
          owners: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ConfigMap and workload of the leader's launch, made the batch's: owned by every request of
    the batch (``owners``), and mounting the batch's Secret ``secret_name`` wherever they mounted the
    leader's own copy ``own_copy``."""

    def swap(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (secret_name if k == "secretName" and v == own_copy else swap(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [swap(item) for item in node]
        return node

    job, configmap = swap(built.job), dict(built.configmap)
    job["metadata"]["ownerReferences"] = owners
    configmap["metadata"] = {**configmap["metadata"], "ownerReferences": owners}
    return configmap, job


async def _launch_group(cluster: Cluster, group: list[Mapping[str, Any]], lists: list[list[str]],
                        previously: list[str] | None) -> None:
    """Create one group's Secret, ConfigMap and Job, then record the batch in every request's status."""
    kube, leader = cluster.kube, group[0]
    meta, spec = leader["metadata"], parse_spec(leader.get("spec") or {})
    namespace, base = meta["namespace"], leader["status"]["baseModel"]["version"]
    rebase = int(leader["status"].get("rebases") or 0)
    union = batches.union(lists)
    secret = batchlists.build_batch_secret(union, members=group, namespace=namespace, previously_forgotten=previously,
                                           rebase=rebase)
    await kube.create_or_get_secret(namespace, secret)
    built = jobs.build_launch(spec, cluster.settings, name=meta["name"], namespace=namespace, uid=meta["uid"],
                              base_version=base, owner=leader, previously_forgotten=previously is not None,
                              rebase=rebase)
    configmap, job = share(built, naming.subjects_secret_name(meta["name"], meta["uid"], rebase=rebase),
                           secret["metadata"]["name"], batchlists.member_owner_references(group))
    await kube.create_or_get_configmap(namespace, configmap)
    create = kube.create_or_get_trainjob if built.engine == "TrainJob" else kube.create_or_get_job
    _, created = await create(namespace, job)
    failpoints.reach("after-job-create")
    if created:
        METRICS.trainer_jobs_total.labels(namespace=namespace).inc()
        if len(group) > 1:
            METRICS.requests_coalesced_total.labels(namespace=namespace).inc(len(group))
    refs = [{"name": body["metadata"]["name"], "uid": body["metadata"]["uid"]} for body in group]
    for body in group:
        batch = {**(body["status"].get("batch") or {}), "leader": refs[0], "requests": refs,
                 "subjectCount": len(union), "jobName": built.job_name}
        step = Step(status={"jobName": built.job_name, "batch": batch})
        message = (f"{built.engine} {built.job_name} runs the batch of {len(group)} requests for model "
                   f"{spec.model.name} version {base} ({len(union)} subjects in all) and waits for its Pod to start.")
        with_condition(body, step, "Unlearned", "Unknown", cond.JOB_PENDING, message)
        if created or not (body.get("status") or {}).get("jobName"):  # an earlier attempt's may be lost
            step.events.append(("Normal", "JobCreated", f"Created {built.engine} {built.job_name} for the batch of "
                                                        f"{len(group)} requests for model {spec.model.name} "
                                                        f"version {base}."))
        await _save(cluster, body, step)


async def _save(cluster: Cluster, body: Mapping[str, Any], step: Step) -> None:
    """Write a request's step (its status; its Events are posted once written)."""
    meta = body["metadata"]
    patched = await cluster.kube.patch_request_status(meta["namespace"], meta["name"], step.status)
    cluster.post(body, step)
    if patched is not None:
        cluster.scheduler.observe(patched)


async def release_when_done(cluster: Cluster, body: Mapping[str, Any]) -> None:
    """Once a request of a batch ended: delete the batch's Secret if every request of the batch has
    ended or is gone (each request checks after its own terminal status is saved, so the last one does)."""
    batch = batches.batch_of(body)
    if batch is None or batch.leader is None:
        return
    namespace = body["metadata"]["namespace"]
    try:
        for ref in batch.requests:
            if ref.uid == body["metadata"]["uid"]:
                continue
            other = await cluster.kube.get_request(namespace, ref.name)
            if other is not None and other["metadata"].get("uid") == ref.uid and \
                    not cond.is_terminal((other.get("status") or {}).get("phase")):
                return
    except OperatorError as err:
        log.warning("The forget set of the batch of %s is kept for now: %s", naming.describe(body), err.message)
        return
    rebase = naming.job_run(batch.leader.name, batch.leader.uid, batch.job_name)[1] if batch.job_name else 0
    await batchlists.release_batch(cluster.kube, namespace, batch.leader.name, batch.leader.uid, rebase)

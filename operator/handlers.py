"""Kopf handlers for UnlearnRequests and their trainer Jobs and Pods: the only module that uses ``@kopf.*``.

Handlers are thin: the work is in :mod:`forgetmi_operator.flows`; here domain errors become Kopf
errors (retryable → ``kopf.TemporaryError``, others → a False condition, a Warning Event and
``kopf.PermanentError``), steps become status patches and Events, and phases feed the metrics.

- create/resume: accept and launch (idempotent: the Job's name is deterministic, a second
  attempt finds it); un-suspending a request that never launched launches it;
- one :class:`~forgetmi_operator.tracker.Tracker` follows every open request's Job: it looks at a
  request when its Job or Pod has news (watches on the trainer's Jobs and Pods, filtered by label
  on the API server), when the request shows a new Job or waits for approval (the approval
  annotation, a ``spec.rollout.mode`` change), and every
  ``FORGETMI_PROGRESS_INTERVAL_SECONDS`` (progress, Pods that never start); a look copies
  progress, fails a stuck or failed Job, and on success evaluates (gates → promote / hold /
  retrain → receipt);
- delete: the Job is deleted (its ownerReference would too); the registry, and a promoted model,
  stay. No finalizer: nothing has to happen before a request goes, so deleting one never waits
  for the operator.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from typing import Any

import kopf

from forgetmi_operator import GROUP, PLURAL, VERSION, flows, jobs, naming, tracking
from forgetmi_operator import conditions as cond
from forgetmi_operator.decisions import Decision, is_approved
from forgetmi_operator.errors import OperatorError
from forgetmi_operator.kube import Kube
from forgetmi_operator.metrics import METRICS, serve
from forgetmi_operator.phases import PhaseBook
from forgetmi_operator.settings import load_settings
from forgetmi_operator.tracker import Entry, Tracker, key_of

log = logging.getLogger(__name__)
RETRY_DELAY_SECONDS = 10.0
RESOURCE = (GROUP, VERSION, PLURAL)
TRACKING_CONCURRENCY = 8
RELEASE_ATTEMPTS = 3
RELEASE_RETRY_SECONDS = 1.0
"""Deleting a forget-list copy is tried this often on a retryable error, 1 s then 2 s apart."""
TRAINER_SELECTOR = f"{naming.LABEL_MANAGED_BY}={naming.MANAGER}"
"""The label selector of the trainer Jobs and Pods the operator watches."""
"""Looks at requests (API reads, evaluations) that run at the same time."""
PHASES = PhaseBook(METRICS)
"""Every request's phase, for the request gauges and counters."""


class _QuietWatchHandlers(logging.Filter):
    """Drops Kopf's "Handler 'request_event' succeeded." (and 'job_event') line: logged once per watch
    event of every request and trainer Job, it is noise at INFO and costs CPU under load; failures
    of those handlers are still logged."""

    NOISE = frozenset({f"Handler '{name}' succeeded." for name in ("request_event", "job_event", "pod_event")})

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self.NOISE


logging.getLogger("kopf.objects").addFilter(_QuietWatchHandlers())


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The service account in a Pod, else ``$KUBECONFIG`` read now (not at import time)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    ours = load_settings()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    # No handler needs a finalizer; naming the one older versions used makes Kopf remove it.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.watching.server_timeout = ours.watch_timeout_seconds
    settings.watching.client_timeout = ours.watch_timeout_seconds + 30
    settings.networking.request_timeout = ours.request_timeout_seconds
    settings.posting.level = logging.WARNING  # Kopf's own INFO lines are not worth an Event each
    for resource in (("batch", "jobs"), ("", "pods")):  # only the trainer's, filtered by the API server
        settings.watching.label_selectors[resource] = TRAINER_SELECTOR
    memo.settings = ours
    memo.kube = Kube.from_settings(ours)
    memo.tracker = Tracker(lambda entry: _look(memo, entry), is_open=_is_open, concurrency=TRACKING_CONCURRENCY)
    memo.sweeper = asyncio.create_task(memo.tracker.sweep_forever(ours.progress_interval_seconds, _wants_tracking),
                                       name="forgetmi tracker sweep")
    memo.metrics_server = serve(ours.metrics_port)
    log.info("Started the metrics server on port %d", ours.metrics_port)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    sweeper = memo.get("sweeper")
    if sweeper is not None:
        sweeper.cancel()
        await asyncio.gather(sweeper, return_exceptions=True)
    tracker = memo.get("tracker")
    if tracker is not None:
        await tracker.close()
    server = memo.get("metrics_server")
    if server is not None:
        server.shutdown()
        server.server_close()
    kube = memo.get("kube")
    if kube is not None:
        kube.close()


def _post(body: Mapping[str, Any], step: flows.Step) -> None:
    for type, reason, message in step.events:  # posted whatever settings.posting.level (Kopf's own lines)
        kopf.event(body, type=type, reason=reason, message=message)
    PHASES.observe(body, step.status.get("phase"))


def _apply(body: Mapping[str, Any], patch: kopf.Patch, step: flows.Step) -> None:
    for key, value in step.status.items():
        patch.status[key] = value
    _post(body, step)


async def _run(handler: str, body: Mapping[str, Any], work: Awaitable[flows.Step], *,
               accepting: bool) -> flows.Step:
    """Await ``work``; a domain error becomes a failure step or a Kopf retry (the error is raised)."""
    try:
        return await work
    except OperatorError as err:
        METRICS.reconcile_errors_total.labels(handler=handler).inc()
        if err.retryable:
            raise kopf.TemporaryError(err.message, delay=RETRY_DELAY_SECONDS) from err
        raise _Stopped(flows.failure(body, err, accepting=accepting), err) from err
    except Exception:  # a bug or an unexpected library error: counted, then retried by Kopf or the tracker
        METRICS.reconcile_errors_total.labels(handler=handler).inc()
        raise


class _Stopped(Exception):
    """A non-retryable domain error, with the status step that records it."""

    def __init__(self, step: flows.Step, err: OperatorError) -> None:
        super().__init__(err.message)
        self.step = step


async def _launch(handler: str, body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo) -> None:
    """Launch the request. One that fails for good leaves nothing running: an earlier attempt (a
    retry, or one a restart cut short before its status was saved) may have created the Job and
    the copy of the forget list, and both are deleted."""
    try:
        step = await _run(handler, body, flows.launch(memo.kube, memo.settings, body), accepting=True)
    except _Stopped as stop:
        _apply(body, patch, stop.step)
        await _delete_owned_job(memo, body)
        await _release_subjects(memo, body)
        raise kopf.PermanentError(str(stop)) from stop
    _apply(body, patch, step)


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
async def start(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Accept the request and create its Job once (a resumed request that has one is left to the tracker)."""
    status = body.get("status") or {}
    if cond.is_terminal(status.get("phase")) or status.get("jobName"):
        PHASES.observe(body, status.get("phase"))
        return
    await _launch("start", body, patch, memo)


@kopf.on.field(*RESOURCE, field="spec.suspend")
async def suspend_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, old: Any, new: Any,
                          **_: Any) -> None:
    """Un-suspending a request that never launched launches it now."""
    status = body.get("status") or {}
    if old is None or new or status.get("jobName") or cond.is_terminal(status.get("phase")):
        return
    await _launch("suspend", body, patch, memo)


async def _evaluate(body: Mapping[str, Any], memo: kopf.Memo) -> flows.Step:
    evaluation = await flows.evaluate(memo.kube, memo.settings, body)
    spec_model = (body.get("spec") or {}).get("model") or {}
    labels = {"namespace": str(body["metadata"]["namespace"]), "model": str(spec_model.get("name"))}
    if evaluation.decision != Decision.AWAIT_APPROVAL:  # counted once, when acted on (not again on approval)
        for gate in evaluation.gates:
            METRICS.gate_evaluations_total.labels(metric=gate.metric, result=gate.result).inc()
    if evaluation.mia is not None:
        METRICS.last_mia.labels(**labels).set(evaluation.mia)
    if evaluation.test_auc_drop is not None:
        METRICS.last_test_auc_drop.labels(**labels).set(evaluation.test_auc_drop)
    return evaluation.step


async def _track_once(body: Mapping[str, Any], memo: kopf.Memo, evaluated: set[str]) -> flows.Step | None:
    status = body.get("status") or {}
    conditions = status.get("conditions") or []
    if not _wants_tracking(body):
        return None
    if cond.reason_of(conditions, "Promoted") == cond.AWAITING_APPROVAL:
        manual = ((body.get("spec") or {}).get("rollout") or {}).get("mode", "Manual") == "Manual"
        approved = is_approved((body.get("metadata") or {}).get("annotations"))
        return await _evaluate(body, memo) if approved or not manual else None
    if status["jobName"] in evaluated:
        return None
    meta = body["metadata"]
    job = memo.tracker.job(meta["namespace"], status["jobName"])
    step, state = await flows.track(memo.kube, memo.settings, body, job=job)
    if state.phase == "failed":
        METRICS.job_failures_total.labels(reason=state.reason).inc()
        evaluated.add(status["jobName"])
    elif state.phase == "succeeded":
        result = await _evaluate(body, memo)
        evaluated.add(status["jobName"])  # only once acted on: a retryable error tries again
        result.status = {**step.status, **result.status}
        return result
    return step


def _wants_tracking(body: Mapping[str, Any]) -> bool:
    """An open, accepted request with a Job: the tracker looks at it every interval."""
    status = body.get("status") or {}
    return (not cond.is_terminal(status.get("phase")) and bool(status.get("jobName"))
            and cond.status_of(status.get("conditions") or [], "Accepted") == "True")


def _is_open(body: Mapping[str, Any]) -> bool:
    return not cond.is_terminal((body.get("status") or {}).get("phase"))


async def _look(memo: kopf.Memo, entry: Entry) -> None:
    """One look at a request: save what an earlier look could not, else track its Job and save."""
    meta = entry.body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    if entry.unsaved is None:
        try:
            step = await _run("track", entry.body, _track_once(entry.body, memo, entry.evaluated), accepting=False)
        except kopf.TemporaryError as err:
            log.warning("Tracking %s will be retried: %s", flows.describe(entry.body), err)
            return
        except _Stopped as stop:
            step = stop.step
        if step is None or not step.status:
            return
        entry.unsaved = step
    step = entry.unsaved
    try:
        patched = await memo.kube.patch_request_status(namespace, name, step.status)
    except OperatorError as err:  # kept: the next look writes it before anything else
        METRICS.reconcile_errors_total.labels(handler="track").inc()
        log.warning("The status of %s will be written again: %s", flows.describe(entry.body), err.message)
        return
    entry.unsaved = None
    _post(entry.body, step)
    if patched is not None:
        memo.tracker.observe(patched)
    if cond.is_terminal(step.status.get("phase")):  # only once the decision is saved: a re-evaluation needs it
        await _release_subjects(memo, entry.body)


@kopf.on.event(*RESOURCE)
async def request_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Every request event: the phase gauges, and the tracker's copy of the request.

    A request is looked at now when it first shows a Job (new, retrained, or seen again after a
    restart) and whenever it waits for approval (the annotation or ``spec.rollout.mode`` may have
    changed; Kopf leaves annotations under its own prefix out of what ``on.field`` sees)."""
    body = event["object"]
    tracker: Tracker = memo.tracker
    if event.get("type") == "DELETED":
        PHASES.forget(body)
        tracker.observe(body, deleted=True)
        await _delete_job(memo, body)
        await _release_subjects(memo, body)
        return
    if tracker.is_stale(body):  # from before the operator's own patch that closed it: the gauges keep the close
        return
    status = body.get("status") or {}
    PHASES.observe(body, status.get("phase"))
    before = tracker.entries.get(key_of(body))
    seen_job = ((before.body.get("status") or {}).get("jobName") if before is not None else None)
    entry = tracker.observe(body)
    if entry is None or not _wants_tracking(entry.body):
        return
    entry_status = entry.body.get("status") or {}
    awaiting = cond.reason_of(entry_status.get("conditions") or [], "Promoted") == cond.AWAITING_APPROVAL
    if awaiting or entry_status.get("jobName") != seen_job:
        tracker.poke(key_of(body))


@kopf.on.event("batch", "v1", "jobs", labels={naming.LABEL_MANAGED_BY: naming.MANAGER})
async def job_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Every trainer Job event: keep the Job, and look at its request when the Job has news."""
    job = event["object"]
    deleted = event.get("type") == "DELETED"
    owner = memo.tracker.job_changed(job, deleted=deleted)
    if owner is not None and (deleted or tracking.has_news(job)):
        memo.tracker.poke(owner)


@kopf.on.event("", "v1", "pods", labels={naming.LABEL_MANAGED_BY: naming.MANAGER})
async def pod_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Every trainer Pod event (a Pod scheduled, running, stuck pulling its image, terminated):
    look at its request now rather than at the next sweep."""
    pod = event["object"]
    job_name = tracking.job_name_of_pod(pod)
    if job_name is None:
        return
    owner = memo.tracker.request_of_job(str((pod.get("metadata") or {}).get("namespace")), job_name)
    if owner is not None:
        memo.tracker.poke(owner)


async def _delete_job(memo: kopf.Memo, body: Mapping[str, Any]) -> None:
    """A deleted request's Job goes with it (ownerReference); deleting it here too stops it at once."""
    job_name = (body.get("status") or {}).get("jobName")
    if not job_name:
        return
    try:
        if await memo.kube.delete_job(body["metadata"]["namespace"], job_name):
            log.info("Deleted Job %s of deleted %s", job_name, flows.describe(body))
    except OperatorError as err:
        log.warning("Job %s of deleted %s is left to garbage collection: %s", job_name, flows.describe(body),
                    err.message)


async def _delete_owned_job(memo: kopf.Memo, body: Mapping[str, Any]) -> None:
    """Delete the unlearn Job of a request whose launch failed for good, if an earlier attempt
    created it (only when the request owns it)."""
    meta = body["metadata"]
    namespace, job_name = meta["namespace"], naming.job_name(meta["name"], meta["uid"])
    try:
        job = await memo.kube.get_job(namespace, job_name)
        if job is not None and jobs.owned_by(job, meta["uid"]) and await memo.kube.delete_job(namespace, job_name):
            log.info("Deleted Job %s of %s, whose launch failed", job_name, flows.describe(body))
    except OperatorError as err:
        log.warning("Job %s of %s is left to garbage collection: %s", job_name, flows.describe(body), err.message)


async def _release_subjects(memo: kopf.Memo, body: Mapping[str, Any]) -> None:
    """Delete the request's subjects Secret once nothing needs it (the request ended or is gone), so
    the forget list is not kept longer than the work on it. Only a Secret the request owns is
    deleted (one of that name made by someone else is left alone); a failure leaves it to garbage
    collection with the request."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], naming.subjects_secret_name(meta["name"], meta["uid"])
    for attempt in range(RELEASE_ATTEMPTS):
        try:
            secret = await memo.kube.get_secret(namespace, name)
            if secret is None:
                return
            if not jobs.owned_by(secret, meta["uid"]):
                log.warning("Secret %s/%s is not owned by %s and was left alone", namespace, name,
                            flows.describe(body))
                return
            if await memo.kube.delete_secret(namespace, name, uid=secret["metadata"].get("uid")):
                log.info("Deleted Secret %s/%s, the forget list of %s", namespace, name, flows.describe(body))
            return
        except OperatorError as err:
            if not err.retryable or attempt == RELEASE_ATTEMPTS - 1:
                log.warning("Secret %s/%s of %s is left to garbage collection with it: %s", namespace, name,
                            flows.describe(body), err.message)
                return
            await asyncio.sleep(RELEASE_RETRY_SECONDS * 2**attempt)

"""Kopf handlers for UnlearnRequests: the only module that uses ``@kopf.*``.

Handlers are thin: the work is in :mod:`forgetmi_operator.flows`; here domain errors become Kopf
errors (retryable → ``kopf.TemporaryError``, others → a False condition, a Warning Event and
``kopf.PermanentError``), steps become status patches and Events, and phases feed the metrics.

- create/resume: accept and launch (idempotent: the Job's name is deterministic, a second
  attempt finds it); ``spec.suspend`` and ``spec.rollout.mode`` changes re-run what they affect;
- a daemon per request tracks its Job every ``FORGETMI_PROGRESS_INTERVAL_SECONDS``: progress,
  stuck Pods, failure, and on success the evaluation (gates → promote / hold / retrain → receipt);
  it also notices the approval annotation on a request awaiting approval;
- delete: the Job goes (by ownerReference, and explicitly); a promoted model is never deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Mapping
from datetime import datetime
from typing import Any

import kopf

from forgetmi_operator import GROUP, PLURAL, VERSION, flows
from forgetmi_operator import conditions as cond
from forgetmi_operator.decisions import is_approved
from forgetmi_operator.errors import OperatorError
from forgetmi_operator.kube import Kube
from forgetmi_operator.metrics import METRICS, serve
from forgetmi_operator.settings import load_settings

log = logging.getLogger(__name__)
RETRY_DELAY_SECONDS = 10.0
RESOURCE = (GROUP, VERSION, PLURAL)
_open: dict[tuple[str, str], tuple[str, float]] = {}
"""(namespace, name) → (phase, creation time as epoch seconds) of every request seen, for the gauges."""


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
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.watching.server_timeout = ours.watch_timeout_seconds
    settings.watching.client_timeout = ours.watch_timeout_seconds + 30
    settings.networking.request_timeout = ours.request_timeout_seconds
    settings.posting.level = logging.INFO
    memo.settings = ours
    memo.kube = Kube.from_settings(ours)
    memo.metrics_server = serve(ours.metrics_port)
    log.info("Started the metrics server on port %d", ours.metrics_port)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    server = memo.get("metrics_server")
    if server is not None:
        server.shutdown()
        server.server_close()
    kube = memo.get("kube")
    if kube is not None:
        kube.close()


def _created(body: Mapping[str, Any]) -> float:
    stamp = (body.get("metadata") or {}).get("creationTimestamp")
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()


def _observe(body: Mapping[str, Any], phase: str | None) -> None:
    """Record a request's phase; count it and its duration once when it first turns terminal."""
    meta = body.get("metadata") or {}
    key = (str(meta.get("namespace")), str(meta.get("name")))
    before = (body.get("status") or {}).get("phase")
    if phase and cond.is_terminal(phase) and not cond.is_terminal(before):
        METRICS.requests_total.labels(namespace=key[0], outcome=phase).inc()
        METRICS.request_duration_seconds.observe(max(0.0, time.time() - _created(body)))
    if phase:
        _open[key] = (phase, _created(body))
    _refresh_gauges()


def _forget(body: Mapping[str, Any]) -> None:
    meta = body.get("metadata") or {}
    _open.pop((str(meta.get("namespace")), str(meta.get("name"))), None)
    _refresh_gauges()


def _refresh_gauges() -> None:
    METRICS.requests_in_phase.clear()
    for (namespace, _), (phase, _) in _open.items():
        METRICS.requests_in_phase.labels(namespace=namespace, phase=phase).inc()
    ages = [time.time() - created for phase, created in _open.values() if not cond.is_terminal(phase)]
    METRICS.oldest_open_request_age_seconds.set(max(ages, default=0.0))


def _post(body: Mapping[str, Any], step: flows.Step) -> None:
    for type, reason, message in step.events:
        (kopf.warn if type == "Warning" else kopf.info)(body, reason=reason, message=message)
    _observe(body, step.status.get("phase"))


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


class _Stopped(Exception):
    """A non-retryable domain error, with the status step that records it."""

    def __init__(self, step: flows.Step, err: OperatorError) -> None:
        super().__init__(err.message)
        self.step = step


async def _launch(handler: str, body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo) -> None:
    try:
        step = await _run(handler, body, flows.launch(memo.kube, memo.settings, body), accepting=True)
    except _Stopped as stop:
        _apply(body, patch, stop.step)
        raise kopf.PermanentError(str(stop)) from stop
    _apply(body, patch, step)


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
async def start(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Accept the request and create its Job once (a resumed request that has one is left to the daemon)."""
    status = body.get("status") or {}
    if cond.is_terminal(status.get("phase")) or status.get("jobName"):
        _observe(body, status.get("phase"))
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


@kopf.on.field(*RESOURCE, field="spec.rollout.mode")
async def reconsider(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """A request awaiting approval is decided again when switched to another mode.

    The approval annotation is watched by the daemon instead: it lives under the same prefix as
    Kopf's progress annotations, which Kopf leaves out of the diffs that ``on.field`` sees."""
    conditions = (body.get("status") or {}).get("conditions") or []
    if cond.reason_of(conditions, "Promoted") != cond.AWAITING_APPROVAL:
        return
    try:
        evaluation = await _run("approval", body, _evaluate(body, memo), accepting=False)
    except _Stopped as stop:
        evaluation = stop.step
    _apply(body, patch, evaluation)


async def _evaluate(body: Mapping[str, Any], memo: kopf.Memo) -> flows.Step:
    evaluation = await flows.evaluate(memo.kube, memo.settings, body)
    spec_model = (body.get("spec") or {}).get("model") or {}
    labels = {"namespace": str(body["metadata"]["namespace"]), "model": str(spec_model.get("name"))}
    for gate in evaluation.gates:
        METRICS.gate_evaluations_total.labels(metric=gate.metric, result=gate.result).inc()
    if evaluation.mia is not None:
        METRICS.last_mia.labels(**labels).set(evaluation.mia)
    if evaluation.test_auc_drop is not None:
        METRICS.last_test_auc_drop.labels(**labels).set(evaluation.test_auc_drop)
    return evaluation.step


async def _track_once(body: kopf.Body, memo: kopf.Memo, evaluated: set[str]) -> flows.Step | None:
    status = body.get("status") or {}
    conditions = status.get("conditions") or []
    if (cond.is_terminal(status.get("phase")) or not status.get("jobName")
            or cond.status_of(conditions, "Accepted") != "True"):
        return None
    if cond.reason_of(conditions, "Promoted") == cond.AWAITING_APPROVAL:
        manual = ((body.get("spec") or {}).get("rollout") or {}).get("mode", "Manual") == "Manual"
        approved = is_approved((body.get("metadata") or {}).get("annotations"))
        return await _evaluate(body, memo) if manual and approved else None
    if status["jobName"] in evaluated:
        return None
    step, state = await flows.track(memo.kube, memo.settings, body)
    if state.phase == "failed":
        METRICS.job_failures_total.labels(reason=state.reason).inc()
    elif state.phase == "succeeded":
        result = await _evaluate(body, memo)
        evaluated.add(status["jobName"])  # only once acted on: a retryable error tries again
        result.status = {**step.status, **result.status}
        return result
    return step


@kopf.daemon(*RESOURCE, cancellation_timeout=5.0)
async def track(body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """Follow the request's Job until the request is terminal (the body is live)."""
    phase = (body.get("status") or {}).get("phase")
    _observe(body, phase)
    if cond.is_terminal(phase):
        return
    evaluated: set[str] = set()  # Jobs whose result this daemon already acted on
    while not stopped:
        try:
            step = await _run("track", body, _track_once(body, memo, evaluated), accepting=False)
        except kopf.TemporaryError as err:
            log.warning("Tracking %s will be retried: %s", flows.describe(body), err)
            step = None
        except _Stopped as stop:
            step = stop.step
        if step is not None and step.status:
            meta = body["metadata"]
            await memo.kube.patch_request_status(meta["namespace"], meta["name"], step.status)
            _post(body, step)
            if cond.is_terminal(step.status.get("phase")):
                return
        await stopped.wait(memo.settings.progress_interval_seconds)


@kopf.on.delete(*RESOURCE)
async def delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Remove the Job (its ownerReference would too); the registry, and a promoted model, stay."""
    job_name = (body.get("status") or {}).get("jobName")
    _forget(body)
    if job_name:
        try:
            if await memo.kube.delete_job(body["metadata"]["namespace"], job_name):
                log.info("Deleted Job %s", job_name)
        except OperatorError as err:
            raise kopf.TemporaryError(err.message, delay=RETRY_DELAY_SECONDS) from err

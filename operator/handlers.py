"""Kopf handlers for UnlearnRequests and their trainer Jobs and Pods: the only module that uses ``@kopf.*``.

Glue only: each handler names the keyword arguments it uses and calls one plain async function of
:mod:`forgetmi_operator.cluster` (``launcher``, ``watches``), which return the step to apply. Here a
step becomes the status patch and its Events, a retryable domain error a ``kopf.TemporaryError``,
and a request that a non-retryable error stopped a ``kopf.PermanentError`` (after its failure was
recorded).

- create/resume: accept and launch (idempotent: the Job's name is deterministic, a second attempt
  finds it); un-suspending a request that never launched launches it;
- request, Job, TrainJob and Pod events: the look scheduler follows every open request's Job or
  TrainJob (progress, failures, and on success gates → promote / hold / retrain → receipt); a
  cluster without Kubeflow Trainer's CRDs simply has no TrainJobs to watch;
- delete: the Job is deleted (its ownerReference would too); the registry, and a promoted model,
  stay. No finalizer: nothing has to happen before a request goes, so deleting one never waits for
  the operator.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping
from typing import Any

import kopf

from forgetmi_operator import GROUP, PLURAL, VERSION
from forgetmi_operator.api import naming
from forgetmi_operator.api.errors import OperatorError
from forgetmi_operator.api.settings import load_settings
from forgetmi_operator.cluster import launcher, watches
from forgetmi_operator.cluster.apiretry import KopfBackoffs
from forgetmi_operator.cluster.metrics import METRICS
from forgetmi_operator.cluster.trainjobs import TRAINJOB_API as TRAINJOBS
from forgetmi_operator.lifecycle.steps import Step

RESOURCE = (GROUP, VERSION, PLURAL)
RETRY_DELAY_SECONDS = 10.0
TRAINER_LABELS = {naming.LABEL_MANAGED_BY: naming.MANAGER}
"""The labels of the trainer Jobs and Pods the operator watches (filtered by the API server)."""


class _QuietWatchHandlers(logging.Filter):
    """Drops Kopf's "Handler 'request_event' succeeded." (and 'job_event', 'pod_event') line: logged
    once per watch event, it is noise at INFO and costs CPU under load; failures are still logged."""

    NOISE = frozenset({f"Handler '{name}' succeeded."
                       for name in ("request_event", "job_event", "trainjob_event", "pod_event")})

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self.NOISE


logging.getLogger("kopf.objects").addFilter(_QuietWatchHandlers())


async def _apply(handler: str, body: Mapping[str, Any], patch: kopf.Patch, memo: kopf.Memo,
                 work: Awaitable[Step]) -> None:
    """Await ``work`` and apply its step to ``patch``; domain errors become Kopf's."""
    try:
        step = await work
    except OperatorError as err:  # only retryable ones reach here: a failure is a step
        METRICS.reconcile_errors_total.labels(handler=handler).inc()
        raise kopf.TemporaryError(err.message, delay=RETRY_DELAY_SECONDS) from err
    except Exception:  # a bug or an unexpected library error: counted, then retried by Kopf
        METRICS.reconcile_errors_total.labels(handler=handler).inc()
        raise
    for key, value in step.status.items():
        patch.status[key] = value
    memo.cluster.post(body, step)
    if step.error is not None:
        METRICS.reconcile_errors_total.labels(handler=handler).inc()
        raise kopf.PermanentError(step.error.message) from step.error


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
    settings.watching.server_timeout = ours.watch_timeout_seconds
    settings.watching.client_timeout = ours.watch_timeout_seconds + 30
    settings.networking.request_timeout = ours.request_timeout_seconds
    settings.networking.error_backoffs = KopfBackoffs(ours.api_retry_max_delay_seconds)  # outlive any outage
    settings.posting.level = logging.WARNING  # Kopf's own INFO lines are not worth an Event each
    selector = ",".join(f"{key}={value}" for key, value in TRAINER_LABELS.items())
    for resource in (("batch", "jobs"), ("", "pods"), (TRAINJOBS[0], TRAINJOBS[2])):
        settings.watching.label_selectors[resource] = selector
    memo.cluster = await watches.startup(ours)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if memo.get("cluster") is not None:
        await watches.cleanup(memo.cluster)


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
async def start(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Accept the request and create its Job once (a resumed request that has one is left to the looks)."""
    await _apply("start", body, patch, memo, launcher.start(memo.cluster, body))


@kopf.on.field(*RESOURCE, field="spec.suspend")
async def suspend_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, old: Any, new: Any,
                          **_: Any) -> None:
    """Un-suspending a request that never launched launches it now."""
    await _apply("suspend", body, patch, memo, launcher.unsuspend(memo.cluster, body, old, new))


@kopf.on.event(*RESOURCE)
async def request_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    await watches.request_event(memo.cluster, event["object"], deleted=event.get("type") == "DELETED")


@kopf.on.event("batch", "v1", "jobs", labels=TRAINER_LABELS)
async def job_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    watches.job_event(memo.cluster, event["object"], deleted=event.get("type") == "DELETED")


@kopf.on.event(*TRAINJOBS, labels=TRAINER_LABELS)
async def trainjob_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """A TrainJob of ours changed. On a cluster without Kubeflow Trainer's CRDs Kopf finds no such
    resource and watches nothing here (it logs "Unresolved resources cannot be served"); once the
    CRD is created, its watch of CRDs starts this one."""
    watches.trainjob_event(memo.cluster, event["object"], deleted=event.get("type") == "DELETED")


@kopf.on.event("", "v1", "pods", labels=TRAINER_LABELS)
async def pod_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    watches.pod_event(memo.cluster, event["object"])

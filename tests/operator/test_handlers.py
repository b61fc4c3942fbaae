"""The handlers module's own pieces (the e2e tests run its handlers under Kopf)."""

from __future__ import annotations

import asyncio
import logging

import kopf
import pytest

from forgetmi_operator import handlers
from forgetmi_operator.api.errors import ClusterUnavailable, SecretNotFound
from forgetmi_operator.lifecycle.steps import Step, failure


def test_the_watch_handlers_success_lines_are_filtered_and_failures_are_not() -> None:
    noise = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "Handler 'job_event' succeeded.", None, None)
    start = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "Handler 'start' succeeded.", None, None)
    failed = logging.LogRecord("kopf.objects", logging.ERROR, __file__, 1, "Handler 'job_event' failed.", None, None)
    quiet = handlers._QuietWatchHandlers()
    assert not quiet.filter(noise)
    assert quiet.filter(start) and quiet.filter(failed)
    assert any(isinstance(f, handlers._QuietWatchHandlers) for f in logging.getLogger("kopf.objects").filters)


class _Cluster:
    def __init__(self) -> None:
        self.posted: list[Step] = []

    def post(self, body: object, step: Step) -> None:
        self.posted.append(step)


BODY = {"metadata": {"name": "r", "namespace": "ns", "uid": "u-1"}}


def test_a_step_becomes_the_status_patch_and_its_events() -> None:
    async def work() -> Step:
        return Step(status={"phase": "Pending", "jobName": "j"}, events=[("Normal", "JobCreated", "Created Job j.")])

    patch, cluster = kopf.Patch(), _Cluster()
    asyncio.run(handlers._apply("start", BODY, patch, kopf.Memo(cluster=cluster), work()))
    assert patch["status"] == {"phase": "Pending", "jobName": "j"}
    assert [step.events for step in cluster.posted] == [[("Normal", "JobCreated", "Created Job j.")]]


def test_a_failed_step_is_applied_then_stops_kopf_for_good() -> None:
    async def work() -> Step:
        return failure(BODY, SecretNotFound("Secret ns/x does not exist."), accepting=True)

    patch, cluster = kopf.Patch(), _Cluster()
    with pytest.raises(kopf.PermanentError, match=r"Secret ns/x does not exist\."):
        asyncio.run(handlers._apply("start", BODY, patch, kopf.Memo(cluster=cluster), work()))
    assert patch["status"]["phase"] == "Failed" and cluster.posted


def test_a_retryable_error_is_a_temporary_kopf_error_and_nothing_is_applied() -> None:
    async def work() -> Step:
        raise ClusterUnavailable("The API server could not be reached.")

    patch, cluster = kopf.Patch(), _Cluster()
    with pytest.raises(kopf.TemporaryError) as err:
        asyncio.run(handlers._apply("start", BODY, patch, kopf.Memo(cluster=cluster), work()))
    assert err.value.delay == handlers.RETRY_DELAY_SECONDS
    assert "status" not in patch and not cluster.posted

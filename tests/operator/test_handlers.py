"""The handlers module's own pieces (the e2e tests run its handlers under Kopf)."""

from __future__ import annotations

import logging

from forgetmi_operator import handlers


def test_the_watch_handlers_success_lines_are_filtered_and_failures_are_not() -> None:
    noise = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "Handler 'job_event' succeeded.", None, None)
    start = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "Handler 'start' succeeded.", None, None)
    failed = logging.LogRecord("kopf.objects", logging.ERROR, __file__, 1, "Handler 'job_event' failed.", None, None)
    quiet = handlers._QuietWatchHandlers()
    assert not quiet.filter(noise)
    assert quiet.filter(start) and quiet.filter(failed)
    assert any(isinstance(f, handlers._QuietWatchHandlers) for f in logging.getLogger("kopf.objects").filters)


def test_tracked_requests_are_open_accepted_and_have_a_job() -> None:
    accepted = [{"type": "Accepted", "status": "True"}]
    assert handlers._wants_tracking({"status": {"phase": "Running", "jobName": "j", "conditions": accepted}})
    assert not handlers._wants_tracking({"status": {"phase": "Running", "conditions": accepted}})
    assert not handlers._wants_tracking({"status": {"phase": "Held", "jobName": "j", "conditions": accepted}})
    assert not handlers._wants_tracking({"status": {"phase": "Pending", "jobName": "j", "conditions": []}})
    assert handlers._is_open({"status": {}}) and not handlers._is_open({"status": {"phase": "Failed"}})

"""The handlers module's own bookkeeping (the e2e tests run its handlers under Kopf)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from forgetmi_operator import handlers
from forgetmi_operator.metrics import METRICS


def _body(name: str, phase: str | None, namespace: str = "gauges") -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"phase": phase} if phase else {}}


def _in_phase() -> dict[tuple[str, str], float]:
    found = {}
    for metric in METRICS.requests_in_phase.collect():
        for sample in metric.samples:
            if sample.labels["namespace"] == "gauges":
                found[(sample.labels["namespace"], sample.labels["phase"])] = sample.value
    return found


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    yield
    for key in [k for k in handlers._open if k[0] == "gauges"]:
        handlers._forget(_body(key[1], None))


def test_phase_gauges_move_requests_between_phases_and_drop_empty_series() -> None:
    handlers._observe(_body("a", None), "Pending")
    handlers._observe(_body("b", None), "Pending")
    assert _in_phase() == {("gauges", "Pending"): 2}
    handlers._observe(_body("a", "Pending"), "Running")
    handlers._observe(_body("a", "Running"), "Running")  # the same phase again counts once
    assert _in_phase() == {("gauges", "Pending"): 1, ("gauges", "Running"): 1}
    handlers._forget(_body("b", "Pending"))
    assert _in_phase() == {("gauges", "Running"): 1}  # no Pending series left at 0


def test_oldest_open_request_age_ignores_terminal_requests() -> None:
    handlers._observe(_body("old", None), "Running")
    assert handlers._oldest_open_age() > 3600  # created 2026-01-01
    handlers._observe(_body("old", "Running"), "Promoted")
    assert all(phase in ("Promoted", "Held", "Failed") for phase, _ in handlers._open.values()) or \
        handlers._oldest_open_age() >= 0
    ages = [age for (ns, _), (phase, age) in handlers._open.items() if ns == "gauges" and phase == "Running"]
    assert not ages


def test_terminal_outcomes_are_counted_once() -> None:
    counter = METRICS.requests_total.labels(namespace="gauges", outcome="Held")
    before = counter._value.get()
    handlers._observe(_body("held", "Evaluating"), "Held")
    handlers._observe(_body("held", "Held"), "Held")  # its own MODIFIED event: already terminal
    assert counter._value.get() == before + 1


def test_the_watch_handlers_success_lines_are_filtered_and_failures_are_not() -> None:
    noise = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "Handler 'job_event' succeeded.", None, None)
    start = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "Handler 'start' succeeded.", None, None)
    failed = logging.LogRecord("kopf.objects", logging.ERROR, __file__, 1, "Handler 'job_event' failed.", None, None)
    quiet = handlers._QuietWatchHandlers()
    assert not quiet.filter(noise)
    assert quiet.filter(start) and quiet.filter(failed)

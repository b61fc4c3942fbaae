"""Request phases → gauges and counters (operator/phases.py), on a fresh metrics registry."""

from __future__ import annotations

from typing import Any

import pytest

from forgetmi_operator.cluster.metrics import Metrics
from forgetmi_operator.cluster.phases import PhaseBook, created_at


def _body(name: str, phase: str | None, namespace: str = "ns",
          created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name, "creationTimestamp": created},
            "status": {"phase": phase} if phase else {}}


@pytest.fixture
def book() -> PhaseBook:
    return PhaseBook(Metrics())


def _value(book: PhaseBook, name: str, **labels: str) -> float | None:
    return book.metrics.registry.get_sample_value(name, labels)


def _in_phase(book: PhaseBook) -> dict[tuple[str, str], float]:
    found = {}
    for metric in book.metrics.requests_in_phase.collect():
        for sample in metric.samples:
            found[(sample.labels["namespace"], sample.labels["phase"])] = sample.value
    return found


def test_requests_move_between_phases_and_empty_series_go(book: PhaseBook) -> None:
    book.observe(_body("a", None), "Pending")
    book.observe(_body("b", None), "Pending")
    book.observe(_body("c", None, namespace="other"), "Running")
    assert _in_phase(book) == {("ns", "Pending"): 2, ("other", "Running"): 1}
    book.observe(_body("a", "Pending"), "Running")
    book.observe(_body("a", "Running"), "Running")  # the same phase again counts once
    assert _in_phase(book) == {("ns", "Pending"): 1, ("ns", "Running"): 1, ("other", "Running"): 1}
    book.forget(_body("b", "Pending"))
    assert _in_phase(book) == {("ns", "Running"): 1, ("other", "Running"): 1}  # no Pending series at 0
    book.observe(_body("a", "Running"), None)  # no phase: nothing changes
    assert _in_phase(book)[("ns", "Running")] == 1


def test_a_terminal_outcome_is_counted_once_with_its_duration(book: PhaseBook) -> None:
    book.observe(_body("held", "Evaluating"), "Held")
    book.observe(_body("held", "Held"), "Held")  # its own MODIFIED event: already terminal
    assert _value(book, "forgetmi_requests_total", namespace="ns", outcome="Held") == 1
    assert _value(book, "forgetmi_request_duration_seconds_count") == 1
    assert _value(book, "forgetmi_request_duration_seconds_sum") > 3600  # created 2026-01-01


def test_oldest_open_age_is_computed_when_scraped_and_ignores_terminal_requests(book: PhaseBook) -> None:
    assert _value(book, "forgetmi_oldest_open_request_age_seconds") == 0
    book.observe(_body("old", None), "Running")
    assert _value(book, "forgetmi_oldest_open_request_age_seconds") > 3600
    book.observe(_body("old", "Running"), "Promoted")
    assert _value(book, "forgetmi_oldest_open_request_age_seconds") == 0


def test_created_at_reads_the_creation_timestamp() -> None:
    assert created_at(_body("x", None, created="2026-01-01T00:00:10Z")) == 1767225610.0
    assert created_at({"metadata": {}}) > 1767225610.0  # none: now

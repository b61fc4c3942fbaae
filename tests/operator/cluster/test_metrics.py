"""The metrics endpoint: every metric ARCHITECTURE.md lists, with bounded labels only."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from harness.cluster import free_port
from prometheus_client.parser import text_string_to_metric_families

from forgetmi_operator import __version__
from forgetmi_operator.api.spec import UnlearnRequestSpec
from forgetmi_operator.cluster.metrics import DURATION_BUCKETS_SECONDS, Metrics, serve

# ARCHITECTURE.md, "Metrics": the families the operator exports, exactly (the text parser names a
# counter's family without its ``_total`` suffix; a histogram's family has _bucket/_sum/_count samples).
EXPECTED_LABELS = {
    "forgetmi_requests": {"namespace", "outcome"},
    "forgetmi_requests_in_phase": {"namespace", "phase"},
    "forgetmi_request_duration_seconds": set(),
    "forgetmi_oldest_open_request_age_seconds": set(),
    "forgetmi_gate_evaluations": {"metric", "result"},
    "forgetmi_last_mia": {"namespace", "model"},
    "forgetmi_last_test_auc_drop": {"namespace", "model"},
    "forgetmi_job_failures": {"reason"},
    "forgetmi_reconcile_errors": {"handler"},
    "forgetmi_build_info": {"version"},
    "forgetmi_trainer_jobs": {"namespace"},
    "forgetmi_requests_coalesced": {"namespace"},
}
FORBIDDEN_LABELS = {"name", "request", "uid", "subject", "patient", "job"}


@pytest.fixture
def scraped() -> Iterator[str]:
    metrics = Metrics()
    metrics.requests_total.labels(namespace="ns", outcome="Promoted").inc()
    metrics.requests_in_phase.labels(namespace="ns", phase="Running").set(2)
    metrics.request_duration_seconds.observe(42.0)
    metrics.oldest_open_request_age_seconds.set(7.0)
    metrics.gate_evaluations_total.labels(metric="miaAUC", result="Passed").inc()
    metrics.last_mia.labels(namespace="ns", model="cxr").set(0.41)
    metrics.last_test_auc_drop.labels(namespace="ns", model="cxr").set(0.01)
    metrics.job_failures_total.labels(reason="BadConfig").inc()
    metrics.reconcile_errors_total.labels(handler="track").inc()
    metrics.trainer_jobs_total.labels(namespace="ns").inc()
    metrics.requests_coalesced_total.labels(namespace="ns").inc(10)
    port = free_port()
    server = serve(port, addr="127.0.0.1", metrics=metrics)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            yield response.read().decode()
    finally:
        server.shutdown()
        server.server_close()


HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def test_every_metric_is_served_with_its_labels(scraped: str) -> None:
    families = {family.name: family for family in text_string_to_metric_families(scraped)}
    assert set(families) == set(EXPECTED_LABELS)  # exactly the documented families: no *_created series
    for name, labels in EXPECTED_LABELS.items():
        for sample in families[name].samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)
    assert 'forgetmi_requests_total{namespace="ns",outcome="Promoted"} 1.0' in scraped
    assert "forgetmi_request_duration_seconds_count 1.0" in scraped
    assert f'forgetmi_build_info{{version="{__version__}"}} 1.0' in scraped


def test_only_documented_sample_names_are_served(scraped: str) -> None:
    documented = {"forgetmi_requests_total", "forgetmi_requests_in_phase", "forgetmi_oldest_open_request_age_seconds",
                  "forgetmi_gate_evaluations_total", "forgetmi_last_mia", "forgetmi_last_test_auc_drop",
                  "forgetmi_job_failures_total", "forgetmi_reconcile_errors_total", "forgetmi_build_info",
                  "forgetmi_trainer_jobs_total", "forgetmi_requests_coalesced_total",
                  *(f"forgetmi_request_duration_seconds{suffix}" for suffix in HISTOGRAM_SUFFIXES)}
    served = {sample.name for family in text_string_to_metric_families(scraped) for sample in family.samples}
    assert served == documented
    assert "_created" not in scraped


def test_no_per_request_or_per_patient_labels(scraped: str) -> None:
    for family in text_string_to_metric_families(scraped):
        for sample in family.samples:
            assert not set(sample.labels) & FORBIDDEN_LABELS, sample


def test_registries_are_independent() -> None:
    first, second = Metrics(), Metrics()
    first.requests_total.labels(namespace="a", outcome="Held").inc()
    assert second.registry.get_sample_value("forgetmi_requests_total", {"namespace": "a", "outcome": "Held"}) is None
    assert first.registry.get_sample_value("forgetmi_requests_total", {"namespace": "a", "outcome": "Held"}) == 1.0


def _longest_job_deadline() -> int:
    field = UnlearnRequestSpec.model_fields["active_deadline_seconds"]
    (bound,) = [item.le for item in field.metadata if getattr(item, "le", None) is not None]
    return int(bound)


def test_duration_buckets_reach_multi_day_requests() -> None:
    """histogram_quantile never reports more than the top finite bucket: with 86400 on top, the
    dashboard's p95 capped at one day while deadlines of several days are in use."""
    assert list(DURATION_BUCKETS_SECONDS) == sorted(set(DURATION_BUCKETS_SECONDS))
    assert {86400, 172800, 259200, 604800} <= set(DURATION_BUCKETS_SECONDS)
    assert DURATION_BUCKETS_SECONDS[-1] >= _longest_job_deadline()


def test_duration_histogram_serves_the_multi_day_buckets(scraped: str) -> None:
    (family,) = [f for f in text_string_to_metric_families(scraped) if f.name == "forgetmi_request_duration_seconds"]
    bounds = [float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")]
    assert bounds == [*map(float, DURATION_BUCKETS_SECONDS), float("inf")]

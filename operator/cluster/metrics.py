"""The operator's Prometheus metrics (ARCHITECTURE.md "Metrics"): prefix ``forgetmi_``, base units.

Labels are bounded sets only — namespace, model, phase, outcome, metric, result, failure reason,
handler name, version — never a request name or uid, and never anything about a patient.
:class:`Metrics` owns its own :class:`~prometheus_client.CollectorRegistry`, so tests can create
fresh ones; the operator keeps one module-level instance (:data:`METRICS`). prometheus_client's
``*_created`` series are disabled, so ``/metrics`` serves exactly the documented families.
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, start_http_server

from forgetmi_operator import __version__

# Only the documented families: no ``*_created`` series beside counters and histograms. The switch is
# process-wide in prometheus_client and read at scrape time, so it holds for the /metrics endpoint.
disable_created_metrics()

# Up to 7 days (the longest Job deadline, spec.activeDeadlineSeconds), so the dashboard's p95 can show multi-day
# requests rather than capping at the top finite bucket.
DURATION_BUCKETS_SECONDS = (30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 259200,
                            604800)


class Metrics:
    """Every metric the operator exports, registered in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None, *, version: str = __version__) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        self.requests_total = Counter(
            "forgetmi_requests_total", "UnlearnRequests that reached a terminal outcome.",
            ["namespace", "outcome"], registry=reg)
        self.requests_in_phase = Gauge(
            "forgetmi_requests_in_phase", "UnlearnRequests currently in each phase.",
            ["namespace", "phase"], registry=reg)
        self.request_duration_seconds = Histogram(
            "forgetmi_request_duration_seconds", "Time from a request's creation to its terminal phase.",
            buckets=DURATION_BUCKETS_SECONDS, registry=reg)
        self.oldest_open_request_age_seconds = Gauge(
            "forgetmi_oldest_open_request_age_seconds", "Age of the oldest request not yet terminal (0: none).",
            registry=reg)
        self.gate_evaluations_total = Counter(
            "forgetmi_gate_evaluations_total", "Gate evaluations by metric and result.",
            ["metric", "result"], registry=reg)
        self.last_mia = Gauge(
            "forgetmi_last_mia", "MIA score of the latest evaluated candidate of a model.",
            ["namespace", "model"], registry=reg)
        self.last_test_auc_drop = Gauge(
            "forgetmi_last_test_auc_drop", "Test AUC drop (original − unlearned) of the latest candidate of a model.",
            ["namespace", "model"], registry=reg)
        self.trainer_jobs_total = Counter(
            "forgetmi_trainer_jobs_total", "Trainer Jobs and TrainJobs the operator started.",
            ["namespace"], registry=reg)
        self.requests_coalesced_total = Counter(
            "forgetmi_requests_coalesced_total",
            "Requests that ran in a Job shared with other requests (coalesced, docs/coalescing.md).",
            ["namespace"], registry=reg)
        self.job_failures_total = Counter(
            "forgetmi_job_failures_total", "Trainer Jobs that failed, by reason.", ["reason"], registry=reg)
        self.reconcile_errors_total = Counter(
            "forgetmi_reconcile_errors_total", "Handler runs that ended in an error, by handler.",
            ["handler"], registry=reg)
        self.build_info = Gauge(
            "forgetmi_build_info", "The operator's version (value always 1).", ["version"], registry=reg)
        self.build_info.labels(version=version).set(1)


METRICS = Metrics()


def serve(port: int, *, addr: str = "0.0.0.0", metrics: Metrics = METRICS) -> WSGIServer:
    """Serve ``metrics`` on ``http://addr:port/metrics`` from a daemon thread; returns the server
    (``shutdown()`` + ``server_close()`` stop it)."""
    server, _thread = start_http_server(port, addr=addr, registry=metrics.registry)
    return server

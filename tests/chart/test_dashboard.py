"""The Grafana dashboard: valid JSON with the expected panels and variables, every query names
only documented ``forgetmi_*`` metrics, and every query runs on a real Prometheus.

Prometheus (Debian's package) is started on 127.0.0.1 with a temporary TSDB and scrapes a
stand-in exporter that publishes the metric names and labels listed in ARCHITECTURE.md
("Metrics") with prometheus_client. The stand-in is not the operator: it checks that the
dashboard's label names and functions fit the documented metrics. Scraping the real operator
is the e2e suite's job.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from forgetmi_operator.api import conditions, errors
from forgetmi_operator.cluster.metrics import DURATION_BUCKETS_SECONDS

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "forgetmi-operator"
DASHBOARD = CHART / "dashboards" / "forgetmi.json"
DASHBOARD_DOC = ROOT / "docs" / "dashboard.md"
# ARCHITECTURE.md, "Metrics": the only names the operator exports (a histogram adds _bucket/_sum/_count).
DOCUMENTED = {
    "forgetmi_requests_total": ("counter", ["namespace", "outcome"]),
    "forgetmi_requests_in_phase": ("gauge", ["namespace", "phase"]),
    "forgetmi_request_duration_seconds": ("histogram", []),
    "forgetmi_oldest_open_request_age_seconds": ("gauge", []),
    "forgetmi_gate_evaluations_total": ("counter", ["metric", "result"]),
    "forgetmi_last_mia": ("gauge", ["namespace", "model"]),
    "forgetmi_last_test_auc_drop": ("gauge", ["namespace", "model"]),
    "forgetmi_job_failures_total": ("counter", ["reason"]),
    "forgetmi_reconcile_errors_total": ("counter", ["handler"]),
    "forgetmi_build_info": ("gauge", ["version"]),
}
ALLOWED = set(DOCUMENTED) | {f"forgetmi_request_duration_seconds_{s}" for s in ("bucket", "sum", "count")}
# Grafana variables and what the test substitutes for them.
SUBSTITUTIONS = {"$namespace": ".*", "${namespace}": ".*", "$__rate_interval": "1m"}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                   "group_left", "group_right", "inf", "nan"}
EXPECTED_TITLES = {
    "Requests by phase", "Request outcomes (per hour)", "Time to terminal phase (p50 / p95)",
    "Oldest open request age", "Last MIA score per model", "Last test AUC drop per model",
    "Gate results by metric (per hour)", "Trainer Job failures by reason (per hour)", "Reconcile errors",
}


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, expr) for every target of every panel (rows included)."""
    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))
    return [(p["title"], t["expr"]) for p in walk(load_dashboard()["panels"]) for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or labels."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                   # string literals
    text = re.sub(r"\{[^}]*\}", "", text)                              # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)                             # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        if not match.group(2) and match.group(1).lower() not in PROMQL_KEYWORDS:
            names.add(match.group(1))
    return names


def substitute(expr: str) -> str:
    for variable, value in sorted(SUBSTITUTIONS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(variable, value)
    return expr


# ---- static checks ------------------------------------------------------------------------------

def test_dashboard_has_the_panels_and_variables() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "forgetmi-operator" and dashboard["title"]
    titles = [p["title"] for p in dashboard["panels"]]
    assert len(titles) == len(set(titles))
    assert set(titles) >= EXPECTED_TITLES
    assert len({p["id"] for p in dashboard["panels"]}) == len(titles)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    namespace = variables["namespace"]
    assert namespace["type"] == "query" and namespace["includeAll"] and namespace["allValue"] == ".*"
    assert metric_names_in_label_values(namespace["definition"]) <= ALLOWED
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and panel["description"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]


def metric_names_in_label_values(definition: str) -> set[str]:
    match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", definition)
    assert match, definition
    return {match.group(1)}


def test_metric_name_extraction() -> None:
    assert metric_names('sum by (le) (rate(a_bucket{x=~"$n"}[5m])) / on (x) b and c offset 5m') == {
        "a_bucket", "b", "c"}
    assert metric_names("histogram_quantile(0.95, sum by (le) (rate(x[1h])))") == {"x"}


@pytest.mark.parametrize(("title", "expr"), panel_queries(), ids=[t for t, _ in panel_queries()])
def test_every_query_uses_only_documented_forgetmi_metrics(title: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{title}: no metric in {expr!r}"
    assert names <= ALLOWED, f"{title}: undocumented metric(s) {sorted(names - ALLOWED)} in {expr!r}"
    assert "$" not in substitute(expr), f"{title}: unknown Grafana variable in {expr!r}"


def test_duration_panel_can_show_the_deadlines_the_chart_alerts_on() -> None:
    """histogram_quantile cannot exceed the top finite bucket, so the p95 panel must reach every
    ForgetMIRequestOverdue deadline of the chart's defaults and scenarios (e.g. 3 days)."""
    panel_exprs = [expr for title, expr in panel_queries() if title.startswith("Time to terminal phase")]
    assert panel_exprs and all("forgetmi_request_duration_seconds_bucket" in expr for expr in panel_exprs)
    deadlines = []
    for values in [CHART / "values.yaml", *sorted((CHART / "ci").glob("*-values.yaml"))]:
        rule = (yaml.safe_load(values.read_text()) or {}).get("prometheusRule") or {}
        if "openRequestDeadlineSeconds" in rule:
            deadlines.append(rule["openRequestDeadlineSeconds"])
    assert deadlines and max(deadlines) >= 259200
    top = DURATION_BUCKETS_SECONDS[-1]
    assert all(deadline <= top for deadline in deadlines), f"deadlines {deadlines} exceed the top bucket {top}"


def test_docs_say_what_held_covers() -> None:
    """Held is not only a failed gate: a dry run and errors after the gates end Held too, and the
    Promoted condition's reason tells them apart."""
    (row,) = [line for line in DASHBOARD_DOC.read_text().splitlines() if line.startswith("| Request outcomes")]
    assert "Promoted condition" in row
    for reason in (conditions.GATES_NOT_PASSED, conditions.DRY_RUN, errors.ServingTargetError.reason,
                   errors.PromotionConflict.reason, errors.SubjectsError.reason, errors.SecretNotFound.reason):
        assert reason in row, f"docs/dashboard.md: Request outcomes row does not mention {reason}"


# ---- a real Prometheus --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:  # loopback only
        return json.loads(response.read())


@pytest.fixture(scope="module")
def stand_in_exporter() -> Iterator[int]:
    """Publishes every documented metric with its documented labels; yields the port."""
    registry = CollectorRegistry()
    made = {}
    for full_name, (kind, labels) in DOCUMENTED.items():
        if kind == "counter":
            made[full_name] = Counter(full_name.removesuffix("_total"), "stand-in", labels, registry=registry)
        elif kind == "gauge":
            made[full_name] = Gauge(full_name, "stand-in", labels, registry=registry)
        else:
            made[full_name] = Histogram(full_name, "stand-in", labels, registry=registry,
                                        buckets=(60, 600, 3600, 21600, 86400))
    made["forgetmi_requests_total"].labels("radiology", "Promoted").inc(3)
    made["forgetmi_requests_total"].labels("radiology", "Held").inc()
    for phase, count in (("Running", 2), ("Promoted", 3), ("Held", 1)):
        made["forgetmi_requests_in_phase"].labels("radiology", phase).set(count)
    for seconds in (900, 1800, 7200):
        made["forgetmi_request_duration_seconds"].observe(seconds)
    made["forgetmi_oldest_open_request_age_seconds"].set(5400)
    made["forgetmi_gate_evaluations_total"].labels("miaAUC", "Passed").inc(3)
    made["forgetmi_gate_evaluations_total"].labels("testAUC", "Failed").inc()
    made["forgetmi_last_mia"].labels("radiology", "cxr-report").set(0.52)
    made["forgetmi_last_test_auc_drop"].labels("radiology", "cxr-report").set(0.01)
    made["forgetmi_job_failures_total"].labels("ImagePullBackOff").inc()
    made["forgetmi_reconcile_errors_total"].labels("track_job").inc(2)
    made["forgetmi_build_info"].labels("0.1.0").set(1)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def query_result(prometheus: str, query: str) -> list[dict[str, Any]]:
    """The result vector of an instant query; empty while Prometheus is not answering yet."""
    try:
        answer = get_json(f"{prometheus}/api/v1/query?query={urllib.parse.quote(query)}")
    except OSError:
        return []
    return answer["data"]["result"] if answer.get("status") == "success" else []


@contextlib.contextmanager
def running_prometheus(binary: str, folder: Path, job: str, target: str, *, ready: str,
                       honor_labels: bool = False) -> Iterator[str]:
    """A Prometheus on loopback scraping ``target`` every second as ``job``; yields its base URL
    once the instant query ``ready`` returns a series (the first seconds answer nothing)."""
    config = folder / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: {job}\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
        + ("    honor_labels: true\n" if honor_labels else ""))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = folder / "prometheus.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while not query_result(url, ready):
                assert process.poll() is None, f"prometheus exited: {log_path.read_text()}"
                assert time.monotonic() < deadline, f"prometheus never scraped: {log_path.read_text()}"
                time.sleep(0.3)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def prometheus(prometheus_bin: str, stand_in_exporter: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a Prometheus on loopback that has scraped the stand-in exporter at least twice."""
    # Rates need two samples: wait until the target has been scraped twice.
    with running_prometheus(prometheus_bin, tmp_path_factory.mktemp("prometheus"), "forgetmi",
                            f"127.0.0.1:{stand_in_exporter}", honor_labels=True,
                            ready='count_over_time(up{job="forgetmi"}[1m]) >= 2') as url:
        yield url


def test_every_dashboard_query_runs_on_prometheus_and_returns_data(prometheus: str) -> None:
    problems = []
    for title, expr in panel_queries():
        query = substitute(expr)
        try:
            answer = get_json(f"{prometheus}/api/v1/query?query={urllib.parse.quote(query)}")
        except urllib.error.HTTPError as err:  # 400 = the query does not parse
            problems.append(f"{title}: {query!r} → HTTP {err.code}: {err.read().decode()}")
            continue
        if answer["status"] != "success":
            problems.append(f"{title}: {query!r} → {answer}")
        elif not answer["data"]["result"]:
            problems.append(f"{title}: {query!r} returned no series (labels do not match the documented metrics?)")
    assert not problems, "\n".join(problems)


def test_namespace_variable_finds_namespaces(prometheus: str) -> None:
    definition = {v["name"]: v for v in load_dashboard()["templating"]["list"]}["namespace"]["definition"]
    metric, label = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", definition).groups()
    answer = get_json(f"{prometheus}/api/v1/label/{label}/values?match[]={metric}")
    assert answer["status"] == "success" and answer["data"] == ["radiology"]

"""The chart's PrometheusRule: the rendered groups pass `promtool check rules`, and
`promtool test rules` (data/alerts_test.yaml) fires each alert when it should and not before."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ALERTS_TEST = Path(__file__).parent / "data" / "alerts_test.yaml"
ALERTS = {"ForgetMIRequestOverdue", "ForgetMIGateFailures", "ForgetMIJobFailures", "ForgetMIReconcileErrors",
          "ForgetMIOperatorDown"}
METRICS = {"forgetmi_oldest_open_request_age_seconds", "forgetmi_gate_evaluations_total",
           "forgetmi_job_failures_total", "forgetmi_reconcile_errors_total"}


@pytest.fixture(scope="module")
def rules_dir(render, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding rules.yaml (the rendered PrometheusRule's groups) and the unit tests."""
    (rule,) = [m for m in render(None, "--set", "prometheusRule.enabled=true") if m["kind"] == "PrometheusRule"]
    folder = tmp_path_factory.mktemp("rules")
    (folder / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    shutil.copy(ALERTS_TEST, folder / ALERTS_TEST.name)
    return folder


def promtool_run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, check=False)


def test_rendered_rules_pass_promtool_check(promtool: str, rules_dir: Path) -> None:
    result = promtool_run(promtool, "check", "rules", str(rules_dir / "rules.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_rules_cover_the_documented_alerts(rules_dir: Path) -> None:
    groups = yaml.safe_load((rules_dir / "rules.yaml").read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {rule["alert"] for rule in rules} == ALERTS
    exprs = " ".join(rule["expr"] for rule in rules)
    assert all(metric in exprs for metric in METRICS)
    assert 'result="Failed"' in exprs
    for rule in rules:
        assert rule["labels"]["severity"] and rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_alert_unit_tests_pass(promtool: str, rules_dir: Path) -> None:
    tested = {case["alertname"] for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
              for case in test["alert_rule_test"]}
    assert tested == ALERTS, f"alerts without a promtool unit test: {sorted(ALERTS - tested)}"
    result = promtool_run(promtool, "test", "rules", str(rules_dir / ALERTS_TEST.name))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_thresholds_follow_values(render) -> None:
    manifests = render(None, "--set", "prometheusRule.enabled=true", "--set",
                       "prometheusRule.openRequestDeadlineSeconds=3600", "--set", "prometheusRule.window=2h",
                       "--set", "prometheusRule.severity=critical")
    (rule,) = [m for m in manifests if m["kind"] == "PrometheusRule"]
    by_name = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert by_name["ForgetMIRequestOverdue"]["expr"] == "max(forgetmi_oldest_open_request_age_seconds) > 3600"
    assert "[2h]" in by_name["ForgetMIJobFailures"]["expr"]
    assert {r["labels"]["severity"] for r in by_name.values()} == {"critical"}

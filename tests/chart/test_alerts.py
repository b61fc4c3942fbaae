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


def rule_groups(manifests: list[dict]) -> list[dict]:
    (rule,) = [m for m in manifests if m["kind"] == "PrometheusRule"]
    return rule["spec"]["groups"]


def rule_by_name(manifests: list[dict]) -> dict[str, dict]:
    return {r["alert"]: r for r in rule_groups(manifests)[0]["rules"]}


def test_large_thresholds_render_as_integers(render, tmp_path: Path) -> None:
    """Numbers from a values file are floats to Helm: 2592000 would print as 2.592e+06."""
    values = tmp_path / "values.yaml"
    values.write_text("prometheusRule:\n  enabled: true\n  openRequestDeadlineSeconds: 2592000\n"
                      "  reconcileErrorsThreshold: 1000000\n")
    by_name = rule_by_name(render(values))
    overdue = by_name["ForgetMIRequestOverdue"]
    assert overdue["expr"] == "max(forgetmi_oldest_open_request_age_seconds) > 2592000"
    assert "past the 2592000 s deadline" in overdue["annotations"]["description"]
    assert by_name["ForgetMIReconcileErrors"]["expr"].endswith(") > 1000000")
    assert "e+" not in yaml.safe_dump(by_name)


UP_SELECTOR = 'job="kubernetes-pods", namespace="forgetmi-system", app_kubernetes_io_name="forgetmi-operator"'
ANNOTATION_SCRAPE_TEST = {
    "rule_files": ["rules.yaml"],
    "evaluation_interval": "1m",
    "tests": [{
        "name": "an operator scraped through pod annotations",
        "interval": "1m",
        "input_series": [{
            "series": 'up{job="kubernetes-pods", namespace="forgetmi-system", '
                      'app_kubernetes_io_name="forgetmi-operator", instance="10.0.0.7:8080"}',
            "values": "1x15 0x20",
        }],
        "alert_rule_test": [],  # filled per rendering
    }],
}


def operator_down_alerts(promtool: str, folder: Path, groups: list[dict], expected: list[dict]) -> None:
    """Run ANNOTATION_SCRAPE_TEST against ``groups``, expecting ForgetMIOperatorDown at 14m and 40m."""
    (folder / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    test = yaml.safe_load(yaml.safe_dump(ANNOTATION_SCRAPE_TEST))
    test["tests"][0]["alert_rule_test"] = [
        {"eval_time": when, "alertname": "ForgetMIOperatorDown", "exp_alerts": alerts}
        for when, alerts in zip(("14m", "40m"), expected, strict=True)]
    (folder / "test.yaml").write_text(yaml.safe_dump(test, sort_keys=False))
    result = promtool_run(promtool, "test", "rules", str(folder / "test.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_operator_down_selector_defaults_to_the_servicemonitor_job_and_can_be_replaced(
        render, promtool: str, tmp_path: Path) -> None:
    default = rule_groups(render(None, "--set", "prometheusRule.enabled=true"))
    assert default[0]["rules"][-1]["alert"] == "ForgetMIOperatorDown"
    assert default[0]["rules"][-1]["expr"] == (
        'absent(up{job="forgetmi-forgetmi-operator-metrics", namespace="forgetmi-system"} == 1)')

    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"prometheusRule": {"enabled": True, "operatorUpSelector": UP_SELECTOR}}))
    custom = rule_groups(render(values))
    assert custom[0]["rules"][-1]["expr"] == f"absent(up{{{UP_SELECTOR}}} == 1)"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": custom}, sort_keys=False))
    result = promtool_run(promtool, "check", "rules", str(tmp_path / "rules.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr

    firing = [{"exp_labels": {"severity": "warning"}, "exp_annotations": {
        "summary": "The ForgetMI operator is down.",
        "description": "Prometheus has not scraped the ForgetMI operator in forgetmi-system for 10m; "
                       "UnlearnRequests are not being processed."}}]
    # Scraped through pod annotations with the default selector: the ServiceMonitor job never
    # exists, so the alert fires while the operator is up.
    operator_down_alerts(promtool, tmp_path, default, [firing, firing])
    # With the selector naming that scrape: quiet while up, fires once the target is down for 10m.
    operator_down_alerts(promtool, tmp_path, custom, [[], firing])

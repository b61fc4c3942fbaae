"""``python -m forgetmi_operator``: Kopf's ``run`` with the chart's arguments, on the handlers module."""

from __future__ import annotations

import subprocess
import sys

from forgetmi_operator.__main__ import HANDLERS_MODULE, kopf_args


def test_chart_arguments_pass_through_to_kopf_run() -> None:
    args = ["--liveness=http://0.0.0.0:8081/healthz", "--standalone", "--namespace=a", "--namespace=b"]
    assert kopf_args(args) == ["run", *args, "-m", HANDLERS_MODULE]
    assert kopf_args(["run", "--all-namespaces"]) == ["run", "--all-namespaces", "-m", HANDLERS_MODULE]


def test_log_format_setting_becomes_kopf_log_format_unless_given() -> None:
    assert kopf_args(["--standalone"], "json") == ["run", "--log-format=json", "--standalone", "-m", HANDLERS_MODULE]
    assert kopf_args(["--standalone"], "text")[1] == "--log-format=plain"
    assert kopf_args(["--log-format=full"], "json") == ["run", "--log-format=full", "-m", HANDLERS_MODULE]


def test_help_is_kopf_run_help() -> None:
    result = subprocess.run([sys.executable, "-m", "forgetmi_operator", "--help"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    for option in ("--all-namespaces", "--namespace", "--standalone", "--liveness", "--peering"):
        assert option in result.stdout

"""The chart's ``s3.retries`` values: rendered into the operator's FORGETMI_S3_* variables, read by its
Settings, handed on to its trainer pods, and checked by the values schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_chart import CHART, env_of

from forgetmi_operator.api.settings import Settings
from forgetmi_operator.cluster import pods
from forgetmi_trainer.storage import RETRY_ENV, S3Settings

VARIABLES = tuple(RETRY_ENV.values())


def _settings(env: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> Settings:
    with monkeypatch.context() as patch:
        for name, value in env.items():
            if isinstance(value, str):
                patch.setenv(name, value)
        return Settings()


def test_the_defaults_are_the_operators_and_the_storage_layers(render, monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_of(render())
    assert [env[name] for name in VARIABLES] == ["adaptive", "10", "0"]
    settings = _settings(env, monkeypatch)
    defaults = Settings.model_fields
    assert (settings.s3_retry_mode, settings.s3_max_attempts, settings.s3_retry_quota) == (
        defaults["s3_retry_mode"].default, defaults["s3_max_attempts"].default, defaults["s3_retry_quota"].default)
    storage_defaults = S3Settings()
    assert (storage_defaults.retry_mode, storage_defaults.max_attempts, storage_defaults.retry_quota) == (
        settings.s3_retry_mode, settings.s3_max_attempts, settings.s3_retry_quota)


def test_set_values_reach_the_operator_and_its_trainer_pods(render, monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_of(render(None, "--set", "s3.retries.mode=standard", "--set", "s3.retries.maxAttempts=25",
                        "--set", "s3.retries.quota=5000000"))
    assert [env[name] for name in VARIABLES] == ["standard", "25", "5000000"]  # integers, never 5e+06
    settings = _settings(env, monkeypatch)
    assert (settings.s3_retry_mode, settings.s3_max_attempts, settings.s3_retry_quota) == ("standard", 25, 5000000)
    trainer = {e["name"]: e["value"] for e in pods.trainer_env(settings)}
    with monkeypatch.context() as patch:
        for name in VARIABLES:
            patch.setenv(name, trainer[name])
        assert S3Settings.from_env() == S3Settings(retry_mode="standard", max_attempts=25, retry_quota=5000000)


@pytest.mark.parametrize(("bad", "complaint"), [
    ("s3:\n  retries:\n    mode: fast\n", "/s3/retries/mode"),
    ("s3:\n  retries:\n    maxAttempts: 0\n", "/s3/retries/maxAttempts"),
    ("s3:\n  retries:\n    maxAttempts: 2.5\n", "/s3/retries/maxAttempts"),
    ("s3:\n  retries:\n    quota: -1\n", "/s3/retries/quota"),
    ("s3:\n  retries:\n    backoff: 1\n", "backoff"),
], ids=["mode", "zero-attempts", "fractional-attempts", "negative-quota", "unknown-key"])
def test_the_values_schema_refuses_bad_retries(helm_cmd, tmp_path: Path, bad: str, complaint: str) -> None:
    values = tmp_path / "bad-values.yaml"
    values.write_text(bad)
    result = helm_cmd("template", "forgetmi", str(CHART), "--values", str(values))
    assert result.returncode != 0, f"helm accepted {bad!r}"
    assert "schema" in result.stderr.lower() and complaint in result.stderr, result.stderr

"""settings: FORGETMI_* variables, JSON-typed values and one sentence per bad variable."""

from __future__ import annotations

import os
import typing

import pytest

from forgetmi_operator.api.errors import SettingsInvalid
from forgetmi_operator.api.settings import DEFAULT_TRAINER_IMAGE, Settings, default_gates, env_name, load_settings
from forgetmi_trainer.storage import DEFAULT_MAX_ATTEMPTS, DEFAULT_RETRY_MODE, DEFAULT_RETRY_QUOTA, RETRY_MODES


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("FORGETMI_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.trainer_image == DEFAULT_TRAINER_IMAGE
    assert settings.trainer_gpus == 1
    assert settings.trainer_node_selector == {}
    assert settings.default_gates == default_gates()
    assert settings.pending_pod_timeout_seconds == 600.0
    assert not settings.receipt_hmac_enabled


def test_plain_and_json_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGETMI_TRAINER_IMAGE", "registry.local/trainer:2")
    monkeypatch.setenv("FORGETMI_TRAINER_GPUS", "2")
    monkeypatch.setenv("FORGETMI_TRAINER_NODE_SELECTOR", '{"gpu": "a100"}')
    monkeypatch.setenv("FORGETMI_TRAINER_TOLERATIONS",
                       '[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]')
    monkeypatch.setenv("FORGETMI_TRAINER_RESOURCES", '{"requests": {"cpu": "4"}, "limits": {"memory": "32Gi"}}')
    monkeypatch.setenv("FORGETMI_DEFAULT_GATES", '[{"metric": "miaAUC", "comparator": "atMost", "threshold": 0.55}]')
    monkeypatch.setenv("FORGETMI_RECEIPT_HMAC_SECRET_NAME", "receipt-key")
    settings = load_settings()
    assert settings.trainer_image == "registry.local/trainer:2"
    assert settings.trainer_gpus == 2
    assert settings.trainer_node_selector == {"gpu": "a100"}
    assert settings.trainer_tolerations[0].key == "nvidia.com/gpu"
    assert settings.trainer_resources.requests == {"cpu": "4"}
    assert [(g.metric, g.threshold, g.reference) for g in settings.default_gates] == [("miaAUC", 0.55, "absolute")]
    assert settings.receipt_hmac_enabled


def test_an_empty_json_variable_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGETMI_DEFAULT_GATES", "  ")
    monkeypatch.setenv("FORGETMI_TRAINER_TOLERATIONS", "")
    settings = load_settings()
    assert settings.default_gates == default_gates()
    assert settings.trainer_tolerations == []


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGETMI_TRAINER_GPUS", "2")
    assert load_settings(trainer_gpus=0).trainer_gpus == 0


@pytest.mark.parametrize(("name", "value", "message"), [
    ("FORGETMI_TRAINER_GPUS", "many", "FORGETMI_TRAINER_GPUS: Input should be a valid integer"),
    ("FORGETMI_TRAINER_GPUS", "17", "FORGETMI_TRAINER_GPUS: Input should be less than or equal to 16"),
    ("FORGETMI_TRAINER_NODE_SELECTOR", "{gpu: a100}", "FORGETMI_TRAINER_NODE_SELECTOR: not valid JSON"),
    ("FORGETMI_TRAINER_TOLERATIONS", '[{"operator": "Equal"}]',
     "FORGETMI_TRAINER_TOLERATIONS[0]: a toleration without key must use operator: Exists"),
    ("FORGETMI_TRAINER_RESOURCES", '{"limits": {"nvidia.com/gpu": "1"}}',
     "FORGETMI_TRAINER_RESOURCES[limits]: set GPUs with FORGETMI_TRAINER_GPUS"),
    ("FORGETMI_DEFAULT_GATES", "[]", "FORGETMI_DEFAULT_GATES: List should have at least 1 item"),
    ("FORGETMI_DEFAULT_GATES", '[{"metric": "testAUC", "comparator": "maxDrop", "threshold": 0.02}]',
     "FORGETMI_DEFAULT_GATES[0][reference]: maxDrop and minDrop measure a drop"),
    ("FORGETMI_DEFAULT_GATES", '[{"metric": "testAUC", "comparator": "atMost", "threshold": 0.02, '
     '"reference": "retrained"}]', "FORGETMI_DEFAULT_GATES[0]: a default gate cannot use reference: retrained"),
    ("FORGETMI_TRAINER_SERVICE_ACCOUNT", "Not_A_Name", "FORGETMI_TRAINER_SERVICE_ACCOUNT: String should match"),
    ("FORGETMI_LOG_FORMAT", "xml", "FORGETMI_LOG_FORMAT: Input should be 'json' or 'text'"),
    ("FORGETMI_S3_RETRY_MODE", "fast", "FORGETMI_S3_RETRY_MODE: Input should be 'standard', 'adaptive' or 'legacy'"),
    ("FORGETMI_S3_MAX_ATTEMPTS", "0", "FORGETMI_S3_MAX_ATTEMPTS: Input should be greater than or equal to 1"),
    ("FORGETMI_S3_RETRY_QUOTA", "-1", "FORGETMI_S3_RETRY_QUOTA: Input should be greater than or equal to 0"),
])
def test_a_bad_variable_is_named_in_one_sentence(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                                 message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsInvalid) as caught:
        load_settings()
    assert str(caught.value).startswith("Operator settings are invalid: ")
    assert message in str(caught.value)
    assert str(caught.value).endswith(".")
    assert caught.value.reason == "InvalidSettings"


def test_s3_retry_defaults_are_the_storage_layers() -> None:
    settings = load_settings()
    assert (settings.s3_retry_mode, settings.s3_max_attempts, settings.s3_retry_quota) == (
        DEFAULT_RETRY_MODE, DEFAULT_MAX_ATTEMPTS, DEFAULT_RETRY_QUOTA)
    assert typing.get_args(Settings.model_fields["s3_retry_mode"].annotation) == RETRY_MODES


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(SettingsInvalid, match="FORGETMI_NO_SUCH_SETTING"):
        load_settings(no_such_setting=1)


def test_env_name() -> None:
    assert env_name("trainer_gpus") == "FORGETMI_TRAINER_GPUS"


def test_json_strings_passed_directly_are_parsed() -> None:
    settings = Settings(trainer_node_selector='{"a": "b"}')
    assert settings.trainer_node_selector == {"a": "b"}

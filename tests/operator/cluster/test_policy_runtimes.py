"""cluster.policy for TrainJobs: the runtime a request may name (spec.runtimeRef, chart values
trainJob.runtime and trainJob.allowedRuntimes), and spec.priorityClassName, which a TrainJob cannot carry."""

from __future__ import annotations

from typing import Any

import pytest
from harness.examples import minimal_spec

from forgetmi_operator.api.errors import PolicyViolation, SettingsInvalid
from forgetmi_operator.api.settings import Settings, load_settings
from forgetmi_operator.cluster.policy import allowed_runtimes, check_pod_policy

SCALED = {"nodes": 2, "gpus": 4}


def _refusal(settings: Settings, **spec: Any) -> str:
    with pytest.raises(PolicyViolation) as caught:
        check_pod_policy(minimal_spec(**spec), settings)
    assert caught.value.reason == "Forbidden" and not caught.value.retryable
    return caught.value.message


def test_by_default_only_the_default_runtime_may_be_named() -> None:
    check_pod_policy(minimal_spec(resources=SCALED), Settings())
    check_pod_policy(minimal_spec(resources=SCALED, runtimeRef={"name": "torch-distributed"}), Settings())
    message = _refusal(Settings(), resources=SCALED, runtimeRef={"name": "torch-privileged"})
    assert message == ("spec.runtimeRef.name torch-privileged (ClusterTrainingRuntime) is not allowed; the cluster "
                       "admin allows torch-distributed (chart value trainJob.allowedRuntimes, besides "
                       "trainJob.runtime).")


def test_allowed_runtimes_pass_and_others_are_refused_naming_what_is_allowed() -> None:
    settings = Settings(trainjob_runtime="torch-nccl", allowed_runtimes=["torch-ib", "TrainingRuntime/team-torch"])
    assert allowed_runtimes(settings) == ["torch-nccl", "torch-ib", "TrainingRuntime/team-torch"]
    for ref in ({"name": "torch-nccl"}, {"name": "torch-ib"}, {"name": "team-torch", "kind": "TrainingRuntime"}):
        check_pod_policy(minimal_spec(resources=SCALED, runtimeRef=ref), settings)
    message = _refusal(settings, resources=SCALED, runtimeRef={"name": "torch-distributed"})
    assert "spec.runtimeRef.name torch-distributed" in message
    assert "torch-nccl, torch-ib, TrainingRuntime/team-torch" in message


def test_a_namespaces_training_runtime_must_be_allowed_as_such() -> None:
    """A TrainingRuntime is the namespace's own pod template: naming an allowed ClusterTrainingRuntime is not enough."""
    namespaced = {"name": "torch-distributed", "kind": "TrainingRuntime"}
    message = _refusal(Settings(), resources=SCALED, runtimeRef=namespaced)
    assert message.startswith("spec.runtimeRef.name torch-distributed (TrainingRuntime) is not allowed")


def test_a_priority_class_is_refused_for_a_trainjob_only() -> None:
    settings = Settings(trainer_allowed_priority_classes=["batch-high"])
    check_pod_policy(minimal_spec(priorityClassName="batch-high"), settings)
    check_pod_policy(minimal_spec(priorityClassName="batch-high", resources={"gpus": 2, "engine": "Job"}), settings)
    message = _refusal(settings, priorityClassName="batch-high", resources=SCALED)
    assert message.startswith("spec.priorityClassName batch-high cannot be set on a TrainJob")


def test_trainjob_settings_are_read_from_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (Settings().trainjob_enabled, Settings().trainjob_runtime, Settings().allowed_runtimes) == (
        True, "torch-distributed", [])
    monkeypatch.setenv("FORGETMI_TRAINJOB_ENABLED", "false")
    monkeypatch.setenv("FORGETMI_TRAINJOB_RUNTIME", "torch-nccl")
    monkeypatch.setenv("FORGETMI_ALLOWED_RUNTIMES", '["torch-ib", "TrainingRuntime/team-torch"]')
    settings = load_settings()
    assert (settings.trainjob_enabled, settings.trainjob_runtime, settings.allowed_runtimes) == (
        False, "torch-nccl", ["torch-ib", "TrainingRuntime/team-torch"])
    monkeypatch.setenv("FORGETMI_ALLOWED_RUNTIMES", "")
    assert load_settings().allowed_runtimes == []


@pytest.mark.parametrize(("field", "value", "named"), [
    ("trainjob_runtime", "Torch_Distributed", "FORGETMI_TRAINJOB_RUNTIME"),
    ("allowed_runtimes", ["ClusterTrainingRuntime/x"], "FORGETMI_ALLOWED_RUNTIMES[0]"),
    ("allowed_runtimes", "not json", "FORGETMI_ALLOWED_RUNTIMES"),
])
def test_a_bad_runtime_setting_fails_at_startup_naming_the_variable(field: str, value: Any, named: str) -> None:
    with pytest.raises(SettingsInvalid, match=rf"{named.replace('[', '.').replace(']', '.')}"):
        load_settings(**{field: value})

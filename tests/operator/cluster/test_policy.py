"""cluster.policy: the cluster admin's pod policy (chart values trainer.allowed*), checked when a
request is accepted: what a request may name in spec.image, spec.serviceAccountName,
spec.priorityClassName and spec.tolerations; and the settings that carry the allow-lists."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from harness.examples import full_spec, minimal_spec

from forgetmi_operator.api.errors import PolicyViolation, SettingsInvalid
from forgetmi_operator.api.settings import DEFAULT_TRAINER_IMAGE, Settings, load_settings
from forgetmi_operator.cluster.policy import check_pod_policy

GPU = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
DEDICATED = {"key": "dedicated", "value": "training", "effect": "NoExecute", "tolerationSeconds": 60}
ALLOWING = {
    "trainer_allowed_images": ["registry.example/forgetmi-trainer@sha256:" + "a" * 64, "registry.example/t:2"],
    "trainer_allowed_service_accounts": ["forgetmi-trainer"],
    "trainer_allowed_priority_classes": ["batch-high", "batch-low"],
    "trainer_allowed_tolerations": [GPU, {**DEDICATED, "operator": "Equal"}],
}


def _refusal(settings: Settings, **spec: Any) -> str:
    with pytest.raises(PolicyViolation) as caught:
        check_pod_policy(minimal_spec(**spec), settings)
    assert caught.value.reason == "Forbidden" and not caught.value.retryable
    return caught.value.message


# ---- what the defaults refuse -------------------------------------------------------------------

def test_by_default_only_the_default_image_is_allowed() -> None:
    assert _refusal(Settings(), image="registry.example/evil:1") == (
        f"spec.image registry.example/evil:1 is not allowed; the cluster admin allows {DEFAULT_TRAINER_IMAGE} "
        "(chart value trainer.allowedImages).")
    check_pod_policy(minimal_spec(image=DEFAULT_TRAINER_IMAGE), Settings())


def test_by_default_a_request_names_no_service_account_priority_class_or_toleration() -> None:
    settings = Settings(trainer_service_account="forgetmi-trainer", trainer_tolerations=[GPU])
    assert _refusal(settings, serviceAccountName="forgetmi-trainer") == (
        "spec.serviceAccountName forgetmi-trainer is not allowed; the cluster admin allows none "
        "(chart value trainer.allowedServiceAccounts).")
    assert _refusal(settings, priorityClassName="system-node-critical") == (
        "spec.priorityClassName system-node-critical is not allowed; the cluster admin allows none "
        "(chart value trainer.allowedPriorityClasses).")
    assert _refusal(settings, tolerations=[{"operator": "Exists"}]) == (
        "spec.tolerations[0] {operator: Exists} is not allowed; the cluster admin allows none "
        "(chart value trainer.allowedTolerations).")


def test_the_full_example_is_refused_by_default_for_its_service_account_first() -> None:
    with pytest.raises(PolicyViolation, match=r"^spec\.serviceAccountName forgetmi-trainer is not allowed"):
        check_pod_policy(full_spec(), Settings())


def test_a_request_naming_nothing_passes_any_policy() -> None:
    check_pod_policy(minimal_spec(), Settings())
    check_pod_policy(minimal_spec(), Settings(**ALLOWING))


# ---- allow-lists ----------------------------------------------------------------------------------

def test_allowed_values_pass_and_others_are_refused_naming_what_is_allowed() -> None:
    settings = Settings(**ALLOWING)
    check_pod_policy(minimal_spec(image="registry.example/t:2", serviceAccountName="forgetmi-trainer",
                                  priorityClassName="batch-low", tolerations=[DEDICATED, GPU]), settings)
    check_pod_policy(minimal_spec(image=DEFAULT_TRAINER_IMAGE), settings)  # the default image stays allowed
    check_pod_policy(full_spec(), settings)
    digest = "registry.example/forgetmi-trainer@sha256:" + "a" * 64
    assert _refusal(settings, image="registry.example/t:2-evil") == (
        f"spec.image registry.example/t:2-evil is not allowed; the cluster admin allows {DEFAULT_TRAINER_IMAGE}, "
        f"{digest}, registry.example/t:2 (chart value trainer.allowedImages).")
    assert _refusal(settings, serviceAccountName="default") == (
        "spec.serviceAccountName default is not allowed; the cluster admin allows forgetmi-trainer "
        "(chart value trainer.allowedServiceAccounts).")
    assert _refusal(settings, priorityClassName="system-node-critical") == (
        "spec.priorityClassName system-node-critical is not allowed; the cluster admin allows batch-high, "
        "batch-low (chart value trainer.allowedPriorityClasses).")


@pytest.mark.parametrize(("toleration", "shown"), [
    ({"operator": "Exists"}, "{operator: Exists}"),
    ({"key": "nvidia.com/gpu", "operator": "Exists"}, "{key: nvidia.com/gpu, operator: Exists}"),
    ({**GPU, "effect": "NoExecute"}, "{key: nvidia.com/gpu, operator: Exists, effect: NoExecute}"),
    ({**DEDICATED, "tolerationSeconds": 61},
     "{key: dedicated, operator: Equal, value: training, effect: NoExecute, tolerationSeconds: 61}"),
    ({key: value for key, value in DEDICATED.items() if key != "tolerationSeconds"},
     "{key: dedicated, operator: Equal, value: training, effect: NoExecute}"),
], ids=["match-everything", "any-effect", "other-effect", "other-seconds", "forever"])
def test_a_toleration_must_equal_an_allowed_one_exactly(toleration: dict[str, Any], shown: str) -> None:
    message = _refusal(Settings(**ALLOWING), tolerations=[GPU, toleration])
    assert message == (
        f"spec.tolerations[1] {shown} is not allowed; the cluster admin allows "
        "{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}, "
        "{key: dedicated, operator: Equal, value: training, effect: NoExecute, tolerationSeconds: 60} "
        "(chart value trainer.allowedTolerations).")


def test_operator_equal_is_the_default_on_both_sides() -> None:
    """Kubernetes defaults a toleration's operator to Equal: written or not, it is the same toleration."""
    implicit = dict(DEDICATED)
    explicit = {**DEDICATED, "operator": "Equal"}
    check_pod_policy(minimal_spec(tolerations=[implicit]), Settings(trainer_allowed_tolerations=[explicit]))
    check_pod_policy(minimal_spec(tolerations=[explicit]), Settings(trainer_allowed_tolerations=[implicit]))
    check_pod_policy(minimal_spec(tolerations=[{"key": "", "operator": "Exists"}]),
                     Settings(trainer_allowed_tolerations=[{"operator": "Exists"}]))


def test_messages_never_show_a_pattern() -> None:
    message = _refusal(Settings(**ALLOWING), image="x")
    assert not re.search(r"[\^$\\]|\[[^]]*-", message.removesuffix("."))


# ---- settings -----------------------------------------------------------------------------------

def test_the_allow_lists_are_read_as_json_from_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for field, value in ALLOWING.items():
        monkeypatch.setenv(f"FORGETMI_{field.upper()}", json.dumps(value))
    settings = Settings()
    assert settings.trainer_allowed_images == ALLOWING["trainer_allowed_images"]
    assert settings.trainer_allowed_service_accounts == ["forgetmi-trainer"]
    assert settings.trainer_allowed_priority_classes == ["batch-high", "batch-low"]
    assert [t.key for t in settings.trainer_allowed_tolerations] == ["nvidia.com/gpu", "dedicated"]
    empty = Settings(**{field: "" for field in ALLOWING})
    assert not any(getattr(empty, field) for field in ALLOWING)


@pytest.mark.parametrize(("field", "value", "named"), [
    ("trainer_allowed_images", ["ok:1", "has space:1"], "FORGETMI_TRAINER_ALLOWED_IMAGES[1]"),
    ("trainer_allowed_images", [""], "FORGETMI_TRAINER_ALLOWED_IMAGES[0]"),
    ("trainer_allowed_service_accounts", ["Not_A_Name"], "FORGETMI_TRAINER_ALLOWED_SERVICE_ACCOUNTS[0]"),
    ("trainer_allowed_priority_classes", ["ok", "-bad"], "FORGETMI_TRAINER_ALLOWED_PRIORITY_CLASSES[1]"),
    ("trainer_allowed_tolerations", [{"operator": "Equal", "value": "x"}], "FORGETMI_TRAINER_ALLOWED_TOLERATIONS[0]"),
    ("trainer_allowed_tolerations", [{"key": "k", "color": "red"}], "FORGETMI_TRAINER_ALLOWED_TOLERATIONS[0][color]"),
], ids=["whitespace-image", "empty-image", "service-account", "priority-class", "keyless-equal", "unknown-key"])
def test_a_bad_allow_list_fails_at_startup_naming_the_variable(field: str, value: Any, named: str) -> None:
    with pytest.raises(SettingsInvalid) as caught:
        load_settings(**{field: json.dumps(value)})
    assert named in caught.value.message

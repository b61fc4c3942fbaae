"""gates: typed gate evaluation of the trainer's report; unmeasured (None) metrics are Inconclusive.

A NaN or infinite metric never reaches the gates: the contract's Report refuses it (tests/trainer/test_contract.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from harness.reports import make_report
from pydantic import ValidationError

from forgetmi_operator.api.settings import default_gates
from forgetmi_operator.api.spec import GateSpec
from forgetmi_operator.api.status import GateStatus
from forgetmi_operator.lifecycle import gates
from forgetmi_operator.lifecycle.decisions import Decision, decide
from forgetmi_trainer.contract import Report


def _gate(metric: str, comparator: str, threshold: float, reference: str | None = None,
          bound: str = "point") -> GateSpec:
    if reference is None:
        reference = "original" if comparator in ("maxDrop", "minDrop") else "absolute"
    return GateSpec.model_validate({"metric": metric, "comparator": comparator, "threshold": threshold,
                                    "reference": reference, "bound": bound})


def _one(gate: GateSpec, **report: Any) -> GateStatus:
    (status,) = gates.evaluate_gates([gate], make_report(**report))
    return status


def test_at_most_passes_at_or_below_the_threshold() -> None:
    passed = _one(_gate("miaAUC", "atMost", 0.6))
    assert (passed.result, passed.value, passed.threshold) == ("Passed", 0.52, 0.6)
    assert passed.message == "miaAUC is 0.52, at most 0.6."
    assert _one(_gate("miaAUC", "atMost", 0.52)).result == "Passed"
    failed = _one(_gate("miaAUC", "atMost", 0.5))
    assert failed.result == "Failed"
    assert failed.message == "miaAUC is 0.52, above the allowed 0.5."


def test_at_least_passes_at_or_above_the_threshold() -> None:
    assert _one(_gate("testAUC", "atLeast", 0.9)).result == "Passed"
    failed = _one(_gate("testF1", "atLeast", 0.8))
    assert failed.result == "Failed"
    assert failed.message == "testF1 is 0.79, below the required 0.8."


def test_max_drop_compares_original_minus_unlearned() -> None:
    passed = _one(_gate("testAUC", "maxDrop", 0.02))
    assert passed.result == "Passed"
    assert passed.value == pytest.approx(0.01)
    assert passed.message == "testAUC dropped 0.01 (0.91 → 0.9), at most 0.02 allowed."
    failed = _one(_gate("testAUC", "maxDrop", 0.02), unlearned={"test_auc": 0.85})
    assert failed.result == "Failed"
    assert failed.message == "testAUC dropped 0.06 (0.91 → 0.85), more than the 0.02 allowed."


def test_a_drop_of_exactly_the_threshold_passes_max_drop_and_fails_min_drop() -> None:
    report = {"original": {"test_auc": 0.9}, "unlearned": {"test_auc": 0.88}}
    assert _one(_gate("testAUC", "maxDrop", 0.02), **report).result == "Passed"
    assert _one(_gate("testAUC", "minDrop", 0.02), **report).result == "Failed"


def test_min_drop_requires_the_metric_to_fall_by_more_than_the_threshold() -> None:
    passed = _one(_gate("forgetAUC", "minDrop", 0.0))
    assert passed.result == "Passed"
    assert passed.message == "forgetAUC dropped 0.15 (0.95 → 0.8), as required."
    unchanged = _one(_gate("forgetAUC", "minDrop", 0.0), unlearned={"forget_auc": 0.95})
    assert unchanged.result == "Failed"
    assert unchanged.message == "forgetAUC did not change (0.95 → 0.95), but it had to drop."
    rose = _one(_gate("forgetAUC", "minDrop", 0.05), unlearned={"forget_auc": 0.97})
    assert rose.result == "Failed"
    assert rose.value == pytest.approx(-0.02)
    assert rose.message == "forgetAUC rose 0.02 (0.95 → 0.97), but it had to drop by more than 0.05."


def test_a_negative_max_drop_threshold_requires_improvement() -> None:
    assert _one(_gate("testF1", "maxDrop", -0.05)).result == "Failed"
    assert _one(_gate("testF1", "maxDrop", -0.05), unlearned={"test_f1": 0.9}).result == "Passed"


METRIC_KEYS = [("mia", "mia"), ("miaAUC", "mia_auc"), ("attackAUC", "attack_auc"),
               ("logitNormAUC", "logit_norm_auc"), ("liraTPR5", "lira_tpr5"), ("liraAUC", "lira_auc"),
               ("forgetAUC", "forget_auc"), ("forgetF1", "forget_f1"), ("testAUC", "test_auc"), ("testF1", "test_f1")]


@pytest.mark.parametrize(("metric", "key"), METRIC_KEYS)
def test_every_metric_reads_its_own_report_field(metric: str, key: str) -> None:
    status = _one(_gate(metric, "atMost", 0.666), unlearned={key: 0.666, "attack_auc_ci": None})
    assert (status.value, status.result) == (0.666, "Passed")


@pytest.mark.parametrize(("metric", "field"), [
    ("miaAUC", "attack_auc_signed"), ("attackAUC", "attack_auc"), ("logitNormAUC", "logit_norm_auc"),
    ("liraTPR5", "lira_tpr_at_5pct_fpr"), ("liraAUC", "lira_auc")])
def test_each_attack_metric_maps_to_its_report_field(metric: str, field: str) -> None:
    """Set every MiaResult field to a distinct value: the gate must read exactly its own."""
    raw = make_report().model_dump(mode="json")
    mia = raw["unlearned"]["mia"]
    for i, name in enumerate(n for n in mia if not n.endswith("_ci")):
        mia[name] = 0.5 + i / 100
        mia[f"{name}_ci"] = None
    (status,) = gates.evaluate_gates([_gate(metric, "atMost", 1.0)], Report.model_validate(raw))
    assert status.value == mia[field]


def test_mia_auc_keeps_the_signed_meaning_and_attack_auc_is_two_sided() -> None:
    """Over-forgetting (signed 0.3) passes miaAUC atMost 0.6 but is 0.7 two-sided, failing attackAUC."""
    unlearned = {"mia_auc": 0.3, "attack_auc_ci": None}
    assert _one(_gate("miaAUC", "atMost", 0.6), unlearned=unlearned).result == "Passed"
    failed = _one(_gate("attackAUC", "atMost", 0.6), unlearned=unlearned)
    assert (failed.result, failed.message) == ("Failed", "attackAUC is 0.7, above the allowed 0.6.")


def test_an_unmeasured_unlearned_metric_is_inconclusive() -> None:
    status = _one(_gate("miaAUC", "atMost", 0.6), unlearned={"mia_auc": None})
    assert status.result == "Inconclusive"
    assert status.value is None
    assert status.message == "miaAUC of the unlearned model was not measured, so the gate is inconclusive."


def test_a_drop_needs_the_original_metric_too() -> None:
    status = _one(_gate("testAUC", "maxDrop", 0.02), original={"test_auc": None})
    assert status.result == "Inconclusive"
    assert "original model" in status.message
    assert _one(_gate("testAUC", "atLeast", 0.5), original={"test_auc": None}).result == "Passed"


def test_no_report_makes_every_gate_inconclusive() -> None:
    statuses = gates.evaluate_gates(default_gates(), None)
    assert [status.result for status in statuses] == ["Inconclusive"] * 3
    assert not gates.all_passed(statuses)


def test_defaults_apply_only_when_the_request_lists_no_gates() -> None:
    defaults = default_gates()
    custom = [_gate("mia", "atMost", 0.5)]
    assert gates.effective_gates([], defaults) == defaults
    assert gates.effective_gates(custom, defaults) == custom
    assert [(g.metric, g.comparator, g.threshold, g.bound) for g in defaults] == [
        ("testAUC", "maxDrop", 0.02, "point"), ("forgetAUC", "minDrop", 0.0, "point"),
        ("attackAUC", "atMost", 0.6, "upper")]


def test_default_gates_pass_on_a_good_report_and_fail_when_forget_auc_does_not_drop() -> None:
    assert gates.all_passed(gates.evaluate_gates(default_gates(), make_report()))
    bad = gates.evaluate_gates(default_gates(), make_report(unlearned={"forget_auc": 0.95}))
    assert [status.result for status in bad] == ["Passed", "Failed", "Passed"]


def test_all_passed_needs_at_least_one_gate_and_no_inconclusive() -> None:
    passed = _one(_gate("mia", "atMost", 0.5))
    inconclusive = _one(_gate("mia", "atMost", 0.5), unlearned={"mia": None})
    assert gates.all_passed([passed])
    assert not gates.all_passed([])
    assert not gates.all_passed([passed, inconclusive])


def test_status_echoes_the_gate_and_serialises_camel_case() -> None:
    status = _one(_gate("forgetAUC", "minDrop", 0.05))
    assert (status.metric, status.comparator, status.reference) == ("forgetAUC", "minDrop", "original")
    dumped = status.model_dump(by_alias=True)
    assert set(dumped) == {"metric", "comparator", "reference", "bound", "value", "threshold", "result", "message"}
    assert dumped["bound"] == "point"


def test_summary_names_the_first_gate_that_did_not_pass() -> None:
    statuses = gates.evaluate_gates(default_gates(), make_report(unlearned={"mia_auc": None}))
    assert gates.summary(statuses) == ("2 of 3 gates passed; attackAUC inconclusive: attackAUC of the unlearned "
                                       "model was not measured, so the gate is inconclusive.")
    assert gates.summary(gates.evaluate_gates(default_gates(), make_report())) == "All 3 gates passed."
    assert gates.summary([]) == "No gates were evaluated."


def test_metrics_status_pairs_original_and_unlearned() -> None:
    metrics = gates.metrics_status(make_report(unlearned={"mia": None}))
    dumped = metrics.model_dump(by_alias=True)
    assert dumped["testAUC"] == {"original": 0.91, "unlearned": 0.9, "retrained": None}
    assert dumped["miaAUC"] == {"original": 0.7, "unlearned": 0.52, "retrained": None}
    assert dumped["attackAUC"] == {"original": 0.7, "unlearned": 0.52, "retrained": None}
    assert dumped["liraTPR5"] == {"original": 0.33, "unlearned": 0.06, "retrained": None}
    assert dumped["mia"] == {"original": 0.9, "unlearned": None, "retrained": None}
    assert set(dumped) == {"forgetAUC", "forgetF1", "testAUC", "testF1", "mia", "miaAUC", "attackAUC",
                           "logitNormAUC", "liraTPR5", "liraAUC"}
    with_retrained = gates.metrics_status(make_report(unlearned={"mia_auc": 0.3}, retrained={"mia_auc": 0.45}))
    assert with_retrained.model_dump(by_alias=True)["attackAUC"] == {"original": 0.7, "unlearned": 0.7,
                                                                     "retrained": 0.55}


def test_metric_drop() -> None:
    report = make_report()
    assert gates.metric_drop(report, "testAUC") == 0.01
    assert gates.metric_drop(make_report(original={"test_auc": None}), "testAUC") is None


@pytest.mark.parametrize(("value", "text"), [(0.912, "0.912"), (1.0, "1"), (0.0, "0"), (-0.00001, "0"),
                                             (0.123456, "0.1235")])
def test_fmt(value: float, text: str) -> None:
    assert gates.fmt(value) == text


@pytest.mark.parametrize(("metric", "group", "key"), [
    ("attackAUC", "mia", "attack_auc"), ("forgetAUC", "split", "forget_auc"), ("testAUC", "split", "test_auc")])
def test_a_metric_missing_from_report_json_is_inconclusive_and_never_promotes(metric: str, group: str,
                                                                              key: str) -> None:
    raw = make_report().model_dump(mode="json")
    del raw["unlearned"][group][key]
    raw["unlearned"][group].pop(f"{key}_ci")
    report = Report.model_validate_json(json.dumps(raw))  # not ReportInvalid
    statuses = gates.evaluate_gates(default_gates(), report)
    (status,) = [s for s in statuses if s.metric == metric]
    assert (status.result, status.value) == ("Inconclusive", None)
    assert status.message == f"{metric} of the unlearned model was not measured, so the gate is inconclusive."
    assert not gates.all_passed(statuses)
    for mode in ("Automatic", "Manual"):
        assert decide(mode, statuses, approved=True, on_gate_failure="Hold") is Decision.HOLD
    assert gates.all_passed(gates.evaluate_gates(default_gates(), make_report()))  # the same report, complete


def test_a_missing_metric_group_makes_its_gates_inconclusive() -> None:
    raw = make_report().model_dump(mode="json")
    del raw["original"]["split"]
    statuses = gates.evaluate_gates(default_gates(), Report.model_validate(raw))
    assert [s.result for s in statuses] == ["Inconclusive", "Inconclusive", "Passed"]
    assert "original model" in statuses[0].message
    assert decide("Automatic", statuses, approved=False, on_gate_failure="Retrain") is Decision.RETRAIN


# ---- bound: an end of the 95 % interval ------------------------------------------------------------


def test_a_gate_on_the_upper_bound_fails_where_the_point_passes_by_luck() -> None:
    unlearned = {"mia_auc": 0.52, "mia_auc_ci": (0.45, 0.63)}
    point = _one(_gate("miaAUC", "atMost", 0.6), unlearned=unlearned)
    assert (point.result, point.value, point.bound) == ("Passed", 0.52, "point")
    upper = _one(_gate("miaAUC", "atMost", 0.6, bound="upper"), unlearned=unlearned)
    assert (upper.result, upper.value, upper.bound) == ("Failed", 0.63, "upper")
    assert upper.message == "miaAUC's upper bound is 0.63, above the allowed 0.6."
    passed = _one(_gate("miaAUC", "atMost", 0.65, bound="upper"), unlearned=unlearned)
    assert (passed.result, passed.message) == ("Passed", "miaAUC's upper bound is 0.63, at most 0.65.")
    lower = _one(_gate("miaAUC", "atMost", 0.5, bound="lower"), unlearned=unlearned)  # the lenient end
    assert (lower.result, lower.value) == ("Passed", 0.45)


def test_a_gate_on_the_lower_bound_of_at_least() -> None:
    unlearned = {"test_auc": 0.9, "test_auc_ci": (0.86, 0.93)}
    assert _one(_gate("testAUC", "atLeast", 0.88), unlearned=unlearned).result == "Passed"
    lower = _one(_gate("testAUC", "atLeast", 0.88, bound="lower"), unlearned=unlearned)
    assert (lower.result, lower.value) == ("Failed", 0.86)
    assert lower.message == "testAUC's lower bound is 0.86, below the required 0.88."


def test_a_drop_gate_subtracts_the_chosen_end_from_the_originals_figure() -> None:
    unlearned = {"test_auc": 0.9, "test_auc_ci": (0.86, 0.93)}
    assert _one(_gate("testAUC", "maxDrop", 0.02), unlearned=unlearned).result == "Passed"  # 0.91 - 0.9
    lower = _one(_gate("testAUC", "maxDrop", 0.02, bound="lower"), unlearned=unlearned)
    assert (lower.result, lower.value) == ("Failed", pytest.approx(0.05))
    assert lower.message == "testAUC dropped 0.05 (0.91 → lower bound 0.86), more than the 0.02 allowed."
    forget = {"forget_auc": 0.8, "forget_auc_ci": (0.7, 0.97)}
    assert _one(_gate("forgetAUC", "minDrop", 0.0), unlearned=forget).result == "Passed"
    upper = _one(_gate("forgetAUC", "minDrop", 0.0, bound="upper"), unlearned=forget)
    assert (upper.result, upper.value) == ("Failed", pytest.approx(-0.02))
    assert upper.message == "forgetAUC rose 0.02 (0.95 → upper bound 0.97), but it had to drop."


@pytest.mark.parametrize("bound", ["upper", "lower"])
def test_a_gate_on_a_bound_without_an_interval_is_inconclusive_and_never_promotes(bound: str) -> None:
    gate = _gate("miaAUC", "atMost", 0.6, bound=bound)
    status = _one(gate)  # the report has the figure but no interval
    assert (status.result, status.value) == ("Inconclusive", None)
    assert status.message == (f"miaAUC of the unlearned model has no 95 % interval, so the gate on its {bound} "
                              "bound is inconclusive.")
    for mode in ("Automatic", "Manual"):
        assert decide(mode, [status], approved=True, on_gate_failure="Hold") is Decision.HOLD
    unmeasured = _one(gate, unlearned={"mia_auc": None})
    assert unmeasured.message == "miaAUC of the unlearned model was not measured, so the gate is inconclusive."


def test_a_point_gate_ignores_the_interval() -> None:
    assert _one(_gate("mia", "atMost", 0.45), unlearned={"mia": 0.4, "mia_ci": (0.1, 0.9)}).result == "Passed"


@pytest.mark.parametrize(("metric", "key"), [("mia", "mia"), ("miaAUC", "mia_auc"), ("forgetAUC", "forget_auc"),
                                             ("forgetF1", "forget_f1"), ("testAUC", "test_auc"),
                                             ("testF1", "test_f1")])
def test_every_metric_reads_its_own_interval(metric: str, key: str) -> None:
    unlearned = {key: 0.5, f"{key}_ci": (0.25, 0.75)}
    assert _one(_gate(metric, "atMost", 0.8, bound="upper"), unlearned=unlearned).value == 0.75
    assert _one(_gate(metric, "atMost", 0.8, bound="lower"), unlearned=unlearned).value == 0.25


def test_a_gate_bound_is_validated_and_defaults_to_point() -> None:
    assert GateSpec.model_validate({"metric": "mia", "comparator": "atMost", "threshold": 0.5}).bound == "point"
    with pytest.raises(ValidationError) as err:
        GateSpec.model_validate({"metric": "mia", "comparator": "atMost", "threshold": 0.5, "bound": "upperBound"})
    assert [e["loc"] for e in err.value.errors()] == [("bound",)]


# ---- reference: retrained -------------------------------------------------------------------------


def _retrained_gate(metric: str, threshold: float, bound: str = "point") -> GateSpec:
    return _gate(metric, "atMost", threshold, reference="retrained", bound=bound)


def test_a_retrained_gate_passes_within_the_tolerance_of_the_retrained_model() -> None:
    status = _one(_retrained_gate("testAUC", 0.02), unlearned={"test_auc": 0.88}, retrained={"test_auc": 0.895})
    assert (status.result, status.value, status.reference) == ("Passed", 0.015, "retrained")
    assert status.message == "testAUC is 0.88, 0.015 from the retrained model's 0.895, within the 0.02 allowed."


@pytest.mark.parametrize("unlearned", [0.85, 0.95])
def test_a_retrained_gate_fails_on_either_side_of_the_retrained_model(unlearned: float) -> None:
    status = _one(_retrained_gate("forgetAUC", 0.03), unlearned={"forget_auc": unlearned},
                  retrained={"forget_auc": 0.9})
    assert (status.result, status.value) == ("Failed", pytest.approx(0.05))
    assert status.message.endswith("from the retrained model's 0.9, more than the 0.03 allowed.")


def test_a_retrained_gate_applies_the_bound_to_the_unlearned_value() -> None:
    unlearned = {"mia_auc": 0.55, "attack_auc_ci": (0.5, 0.62)}
    point = _one(_retrained_gate("attackAUC", 0.05), unlearned=unlearned, retrained={"mia_auc": 0.52})
    assert (point.result, point.value) == ("Passed", pytest.approx(0.03))
    upper = _one(_retrained_gate("attackAUC", 0.05, bound="upper"), unlearned=unlearned, retrained={"mia_auc": 0.52})
    assert (upper.result, upper.value) == ("Failed", pytest.approx(0.1))
    assert upper.message == ("attackAUC's upper bound is 0.62, 0.1 from the retrained model's 0.52, more than the "
                             "0.05 allowed.")


def test_a_retrained_gate_without_retrained_metrics_is_inconclusive_and_never_promotes() -> None:
    status = _one(_retrained_gate("testAUC", 0.02))
    assert (status.result, status.value) == ("Inconclusive", None)
    assert status.message == ("the report has no retrained model's figures, so the gate on the distance to the "
                              "retrained model is inconclusive (spec.audit.retrainedVersion names the model the "
                              "trainer scores).")
    assert decide("Automatic", [status], approved=False, on_gate_failure="Hold") is Decision.HOLD
    unmeasured = _one(_retrained_gate("liraAUC", 0.05), retrained={"lira_auc": None})
    assert unmeasured.result == "Inconclusive"
    assert unmeasured.message.startswith("liraAUC of the retrained model was not measured")


# ---- what the default gates catch -----------------------------------------------------------------


def _old_default_gates() -> list[GateSpec]:
    """The defaults before the two-sided attack AUC: miaAUC (then the signed AUC) at most 0.6, on the point."""
    return [_gate("testAUC", "maxDrop", 0.02), _gate("forgetAUC", "minDrop", 0.0), _gate("miaAUC", "atMost", 0.6)]


def test_the_default_gates_fail_an_over_forgetting_report_the_old_defaults_passed() -> None:
    """Forget losses far above test losses: the attack ranks forgotten patients as *less* member-like than
    never-seen ones (signed AUC 0.2), which is as distinguishable as 0.8 the other way."""
    over_forgotten = make_report(unlearned={"mia_auc": 0.2, "mia_auc_ci": (0.12, 0.29),
                                            "attack_auc": 0.8, "attack_auc_ci": (0.71, 0.88)})
    old = gates.evaluate_gates(_old_default_gates(), over_forgotten)
    assert [s.result for s in old] == ["Passed", "Passed", "Passed"]
    assert gates.all_passed(old)
    new = gates.evaluate_gates(default_gates(), over_forgotten)
    assert [s.result for s in new] == ["Passed", "Passed", "Failed"]
    assert new[2].message == "attackAUC's upper bound is 0.88, above the allowed 0.6."
    assert not gates.all_passed(new)
    assert decide("Automatic", new, approved=False, on_gate_failure="Hold") is Decision.HOLD


def test_the_default_gates_hold_a_model_whose_interval_reaches_past_0_6_even_if_its_point_does_not() -> None:
    unsure = make_report(unlearned={"mia_auc": 0.57, "attack_auc_ci": (0.5, 0.66)})
    (_, _, attack) = gates.evaluate_gates(default_gates(), unsure)
    assert (attack.result, attack.value) == ("Failed", 0.66)


def test_needs_references_lists_the_lira_metrics_once() -> None:
    listed = [_gate("liraAUC", "atMost", 0.6), _gate("testAUC", "maxDrop", 0.02), _gate("liraTPR5", "atMost", 0.1),
              _gate("liraAUC", "atMost", 0.55, bound="upper")]
    assert gates.needs_references(listed) == ["liraAUC", "liraTPR5"]
    assert gates.needs_references(default_gates()) == []

"""decisions: fail-closed promotion decided from mode, gate results, approval and onGateFailure."""

from __future__ import annotations

from typing import Any

import pytest

from forgetmi_operator.api.status import GateStatus
from forgetmi_operator.lifecycle.decisions import Decision, decide, is_approved


def _status(result: str) -> GateStatus:
    return GateStatus.model_validate({"metric": "miaAUC", "comparator": "atMost", "reference": "absolute",
                                      "value": 0.5, "threshold": 0.6, "result": result, "message": "m"})


PASSED = [_status("Passed"), _status("Passed")]
FAILED = [_status("Passed"), _status("Failed")]
INCONCLUSIVE = [_status("Passed"), _status("Inconclusive")]


def test_automatic_promotes_only_when_every_gate_passed() -> None:
    assert decide("Automatic", PASSED, False, "Hold") is Decision.PROMOTE
    assert decide("Automatic", FAILED, False, "Hold") is Decision.HOLD
    assert decide("Automatic", INCONCLUSIVE, False, "Hold") is Decision.HOLD


def test_no_gates_never_promote() -> None:
    assert decide("Automatic", [], True, "Hold") is Decision.HOLD


def test_manual_waits_for_approval() -> None:
    assert decide("Manual", PASSED, False, "Hold") is Decision.AWAIT_APPROVAL
    assert decide("Manual", PASSED, True, "Hold") is Decision.PROMOTE


def test_an_approval_never_overrides_failing_gates() -> None:
    assert decide("Manual", FAILED, True, "Hold") is Decision.HOLD
    assert decide("Manual", INCONCLUSIVE, True, "Retrain") is Decision.RETRAIN


@pytest.mark.parametrize("statuses", [PASSED, FAILED, INCONCLUSIVE, []])
@pytest.mark.parametrize("on_failure", ["Hold", "Retrain"])
def test_dry_run_never_promotes_nor_launches(statuses: list[GateStatus], on_failure: Any) -> None:
    assert decide("DryRun", statuses, True, on_failure) is Decision.DRY_RUN_DONE


def test_gate_failure_retrains_once_when_asked() -> None:
    assert decide("Automatic", FAILED, False, "Retrain") is Decision.RETRAIN
    assert decide("Automatic", FAILED, False, "Retrain", retrained=True) is Decision.HOLD
    assert decide("Automatic", PASSED, False, "Retrain", retrained=True) is Decision.PROMOTE


def test_unknown_values_are_refused() -> None:
    with pytest.raises(ValueError, match="rollout mode"):
        decide("Sometimes", PASSED, False, "Hold")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="onGateFailure"):
        decide("Automatic", PASSED, False, "Ignore")  # type: ignore[arg-type]


def test_terminal_decisions() -> None:
    assert {d for d in Decision if d.terminal} == {Decision.PROMOTE, Decision.DRY_RUN_DONE, Decision.HOLD}
    assert str(Decision.AWAIT_APPROVAL) == "AwaitApproval"


@pytest.mark.parametrize(("annotations", "approved"), [
    ({"unlearning.forgetmi.io/approved": "true"}, True),
    ({"unlearning.forgetmi.io/approved": " True "}, True),
    ({"unlearning.forgetmi.io/approved": "false"}, False),
    ({"unlearning.forgetmi.io/approved": "yes"}, False),
    ({"other/approved": "true"}, False),
    ({}, False),
    (None, False),
])
def test_is_approved_reads_the_annotation(annotations: dict[str, str] | None, approved: bool) -> None:
    assert is_approved(annotations) is approved

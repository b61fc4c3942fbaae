"""The pure parts of ``flows``: spec errors name the field; failures land on the right condition."""

from __future__ import annotations

import pytest

from forgetmi_operator import flows
from forgetmi_operator.errors import InvalidSpec, JobFailed, PromotionConflict, SecretNotFound

BODY = {"metadata": {"name": "r", "namespace": "ns", "uid": "u-1", "generation": 3}, "spec": {}}


def test_parse_spec_names_the_field() -> None:
    with pytest.raises(InvalidSpec) as err:
        flows.parse_spec({"model": {"registryUri": "http://x", "name": "m"}, "data": {"manifestUri": "s3://b/m.csv"},
                          "forget": {"subjectsUri": "s3://b/s.txt"}})
    assert "spec.model.registryUri" in err.value.message


@pytest.mark.parametrize(("error", "accepting", "condition", "phase"), [
    (SecretNotFound("Secret ns/x does not exist."), True, "Accepted", "Failed"),
    (JobFailed("The trainer Job no longer exists."), False, "Unlearned", "Failed"),
    (PromotionConflict("Alias moved."), False, "Promoted", "Held"),
])
def test_failure_sets_the_condition_and_phase(error: Exception, accepting: bool, condition: str,
                                              phase: str) -> None:
    step = flows.failure(BODY, error, accepting=accepting)  # type: ignore[arg-type]
    found = next(c for c in step.status["conditions"] if c["type"] == condition)
    assert (found["status"], found["reason"], found["message"]) == ("False", error.reason, error.message)
    assert step.status["phase"] == phase
    assert step.status["observedGeneration"] == 3
    assert {c["type"] for c in step.status["conditions"]} == {"Accepted", "Unlearned", "GatesPassed", "Promoted"}
    assert step.events == [("Warning", error.reason, error.message)]

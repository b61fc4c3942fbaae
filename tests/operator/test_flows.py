"""``flows``: spec errors name the field; failures land on the right condition; the forget list
is snapshotted once per request."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from forgetmi_operator import flows, jobs
from forgetmi_operator.errors import InvalidSpec, JobFailed, PromotionConflict, SecretNotFound, SubjectsError

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


class _SecretKube:
    """``create_or_get_secret`` against one stored Secret (None: none yet)."""

    def __init__(self, existing: dict[str, Any] | None = None) -> None:
        self.existing = existing
        self.created: list[dict[str, Any]] = []

    async def create_or_get_secret(self, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        if self.existing is not None:
            return self.existing, False
        self.created.append(body)
        self.existing = body
        return body, True


def _snapshot(kube: _SecretKube, subjects: list[str]) -> list[str]:
    return asyncio.run(flows.snapshot_subjects(kube, BODY, subjects, "Secret ns/ids key 'ids'"))  # type: ignore[arg-type]


def test_the_first_launch_snapshots_the_accepted_list() -> None:
    kube = _SecretKube()
    assert _snapshot(kube, ["P1", "P2"]) == ["P1", "P2"]
    (secret,) = kube.created
    assert secret == jobs.build_subjects_secret(["P1", "P2"], name="r", namespace="ns", uid="u-1", owner=BODY)


def test_a_retried_launch_keeps_the_list_snapshotted_first() -> None:
    """An operator restart between the snapshot and the Job: the list edited meanwhile is not used."""
    first = jobs.build_subjects_secret(["P1", "P2"], name="r", namespace="ns", uid="u-1", owner=BODY)
    kube = _SecretKube(existing=first)
    assert _snapshot(kube, ["P1", "P2", "P3"]) == ["P1", "P2"]
    assert not kube.created


def test_a_secret_of_that_name_another_owner_made_is_refused() -> None:
    foreign = jobs.build_subjects_secret(["P9"], name="r", namespace="ns", uid="u-1")
    foreign["metadata"]["ownerReferences"] = []
    with pytest.raises(SubjectsError, match=r"Secret ns/forgetmi-r-u1\w*-subjects exists but is not owned by this "
                                            r"UnlearnRequest"):
        _snapshot(_SecretKube(existing=foreign), ["P1"])
    broken = jobs.build_subjects_secret(["P1"], name="r", namespace="ns", uid="u-1")
    broken["data"] = {}
    with pytest.raises(SubjectsError, match=r"has no key 'subjects'"):
        _snapshot(_SecretKube(existing=broken), ["P1"])

"""Which requests may share a Job, whose run a request reads, and what a shared run's report must count
(docs/coalescing.md)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from forgetmi_operator.api.errors import SubjectsError
from forgetmi_operator.api.spec import parse_spec
from forgetmi_operator.api.status import BatchStatus
from forgetmi_operator.lifecycle import batches, batchlists, conclude, subjects
from forgetmi_operator.lifecycle.verdict import Verdict

SPEC: dict[str, Any] = {"model": {"registryUri": "s3://bucket/reg", "name": "m"}, "data": {"manifestUri": "s3://bucket/d/m.csv"},
                        "forget": {"subjectsUri": "s3://bucket/d/a.txt"}, "rollout": {"mode": "Automatic"}}


def _spec(**changes: Any) -> Any:
    return parse_spec({**SPEC, **changes})


def test_requests_differing_only_in_their_forget_lists_share_a_key() -> None:
    key = batches.batch_key(_spec(), "ns", "v1")
    assert batches.batch_key(_spec(forget={"subjectsUri": "s3://bucket/d/b.txt"}, suspend=True), "ns", "v1") == key
    assert batches.batch_key(_spec(), "other", "v1") != key
    assert batches.batch_key(_spec(), "ns", "v2") != key
    assert batches.batch_key(_spec(method={"epochs": 3}), "ns", "v1") != key


def test_manual_rollouts_opt_outs_and_a_zero_window_never_coalesce() -> None:
    assert batches.coalescible(_spec(), 5.0)
    assert not batches.coalescible(_spec(), 0.0)
    assert not batches.coalescible(_spec(coalesce=False), 5.0)
    assert not batches.coalescible(_spec(rollout={"mode": "Manual"}), 5.0)


def test_the_run_owner_is_the_leader_once_the_batch_has_one() -> None:
    body: dict[str, Any] = {"metadata": {"name": "b", "uid": "u2"}, "status": {"batch": {"key": "e" * 64,
                                                                                        "closesAt": "t"}}}
    assert batches.run_owner(body) == ("b", "u2")
    body["status"]["batch"].update(leader={"name": "a", "uid": "u1"},
                                   requests=[{"name": "a", "uid": "u1"}, {"name": "b", "uid": "u2"}])
    assert batches.run_owner(body) == ("a", "u1")
    assert batches.in_shared_run(body)


def test_order_is_by_creation_then_name_and_the_union_counts_each_patient_once() -> None:
    bodies = [{"metadata": {"name": n, "creationTimestamp": t}} for n, t in (("c", "2"), ("b", "1"), ("a", "2"))]
    assert [b["metadata"]["name"] for b in batches.order(bodies)] == ["b", "a", "c"]
    assert batches.union([["p2", "p1"], ["p1", "p3"]]) == ["p1", "p2", "p3"]


def test_a_union_too_large_for_one_secret_is_split_in_order() -> None:
    lists = [[f"p{i:07d}" for i in range(70_000)], [f"q{i:07d}" for i in range(70_000)], ["x"]]  # 630 kB each
    assert batchlists.groups_that_fit(lists, None) == [[0], [1, 2]]
    assert batchlists.groups_that_fit([["a"], ["b"], ["a"]], None) == [[0, 1, 2]]


def test_the_batch_secret_is_owned_by_every_request_with_the_leader_as_controller() -> None:
    members = [{"metadata": {"name": n, "uid": u}} for n, u in (("a", "u1"), ("b", "u2"))]
    secret = batchlists.build_batch_secret(["p1", "p2"], members=members, namespace="ns", previously_forgotten=[])
    refs = secret["metadata"]["ownerReferences"]
    assert [(r["uid"], r["controller"]) for r in refs] == [("u1", True), ("u2", False)]
    assert set(secret["data"]) == {subjects.SUBJECTS_KEY, subjects.PREVIOUSLY_FORGOTTEN_KEY}
    assert batchlists.previously_forgotten_of(secret) == []
    assert secret["immutable"] is True


class _Counted:
    """What conclude._check_counts reads of a Verdict: the report's subject count and the batch."""

    def __init__(self, counted: int, batch: BatchStatus | None) -> None:
        self.report = type("R", (), {"counts": type("C", (), {"subjects": counted})()})()
        self.batch = batch

    @property
    def shared(self) -> bool:
        return self.batch is not None and len(self.batch.requests) > 1


def _batch(subject_count: int, members: int) -> BatchStatus:
    refs = [{"name": f"r{i}", "uid": f"u{i}"} for i in range(members)]
    return BatchStatus.model_validate({"key": "e" * 64, "closesAt": "t", "leader": refs[0], "requests": refs,
                                       "subjectCount": subject_count, "jobName": "j"})


def _check(counted: int, batch: BatchStatus | None, forget: list[str]) -> None:
    conclude._check_counts(cast(Verdict, _Counted(counted, batch)), forget, "its copy")


def test_a_shared_run_counts_the_union_and_a_lone_run_its_own_list() -> None:
    _check(2, None, ["a", "b"])
    _check(5, _batch(5, 3), ["a", "b"])  # its own list is part of the batch's union
    _check(2, _batch(5, 1), ["a", "b"])  # a batch of one is a run of its own
    with pytest.raises(SubjectsError, match="holds 2 subjects, but the Job's report counts 3"):
        _check(3, None, ["a", "b"])
    with pytest.raises(SubjectsError, match="batch's forget set holds 5 subjects and its copy 2, but the Job's "
                                            "report counts 4"):
        _check(4, _batch(5, 3), ["a", "b"])
    with pytest.raises(SubjectsError, match="holds 1 subjects and its copy 2"):
        _check(1, _batch(1, 2), ["a", "b"])  # a list larger than the run's union was not what ran

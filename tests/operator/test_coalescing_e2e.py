"""Coalescing through the real operator (Kopf, in a thread) on the emulated API server, with moto S3 and
the Job runner: 10 requests for one model applied within the window run as ONE Job whose forget set is
the union, and end with 10 receipts naming the same candidate and the shared Job; the ledger records
the batch's erasure once. With coalescing off, the same 10 requests make 10 Jobs, as before. A request
deleted while its batch gathers leaves it (its patients are not in the Job); a leader deleted after the
Job was created leaves it running for the others, whose receipts name it as withdrawn. A batch whose
gates fail holds every request, each with a receipt, and is never retrained.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.cluster import JOBS, REQUESTS, SECRETS, operator, start_cluster, wait_for
from harness.jobrunner import JobRunner
from harness.requests import apply_request, secret, train_subjects
from harness.world import fitted_world, seed_model

from forgetmi_operator.lifecycle.subjects import SUBJECTS_KEY
from forgetmi_operator.registry import ledger
from forgetmi_trainer import storage
from forgetmi_trainer.contract import Report
from forgetmi_trainer.storage import DEFAULT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
COUNT = 10


@pytest.fixture(scope="module")
def world(s3_server: str) -> Iterator[dict[str, Any]]:
    with fitted_world(s3_server, prefix="coalesce") as fitted:
        yield fitted


def _all_ended(api: Any, ns: str, names: list[str]) -> list[dict[str, Any]] | None:
    found = [api.get(REQUESTS, ns, name) for name in names]
    done = all((r.get("status") or {}).get("phase") in ("Promoted", "Failed", "Held") for r in found)
    return found if done else None


def test_ten_requests_in_the_window_run_as_one_job_and_end_with_ten_receipts(
        world: dict[str, Any], s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api, ns = start_cluster(tmp_path, monkeypatch.setenv)
    api.create(SECRETS, ns, secret("ledger-key", "key", b"ledger-key-" + b"y" * 24))
    for name, value in {"OPERATOR_NAMESPACE": ns, "LEDGER_KEY_SECRET_NAME": "ledger-key",
                        "COALESCE_WINDOW_SECONDS": "6"}.items():
        monkeypatch.setenv(f"FORGETMI_{name}", value)
    model = "m-batch"
    seed_model(world, model)
    train = train_subjects(world)
    assert len(train) >= COUNT + 2
    names = [f"r{i}" for i in range(COUNT)]
    lists = {name: [train[i]] for i, name in enumerate(names)}
    lists["r1"] = [train[1], train[0]]  # lists may overlap: the union counts each patient once
    (tmp_path / "jobs").mkdir()
    try:
        with JobRunner(api, tmp_path / "jobs") as runner, operator(ns):
            for name in names:
                apply_request(api, ns, world, model, name, lists[name])
            done = wait_for(lambda: _all_ended(api, ns, names), 200.0, "the 10 requests to end")
            jobs = api.list(JOBS, ns)
        assert not runner.errors
    finally:
        api.stop()
    statuses = {r["metadata"]["name"]: r["status"] for r in done}
    assert {s["phase"] for s in statuses.values()} == {"Promoted"}, json.dumps(statuses)[:2000]
    assert len(jobs) == 1
    job = jobs[0]["metadata"]["name"]
    assert len(jobs[0]["metadata"]["ownerReferences"]) == COUNT  # owned by every request of the batch
    assert {s["jobName"] for s in statuses.values()} == {job}
    candidates = {s["candidateModel"]["version"] for s in statuses.values()}
    assert len(candidates) == 1
    union = sorted({s for subjects in lists.values() for s in subjects})
    report = Report.model_validate_json(storage.read_text(statuses["r0"]["report"]["uri"]))
    assert report.counts.subjects == len(union)
    receipts = [json.loads(storage.read_text(s["receipt"]["uri"])) for s in statuses.values()]
    assert len({s["receipt"]["uri"] for s in statuses.values()}) == COUNT  # one receipt each
    for name, receipt in zip(statuses, receipts, strict=True):
        assert receipt["request"]["name"] == name
        assert receipt["subjects"]["count"] == len(lists[name])  # its own list
        assert receipt["candidate"]["version"] in candidates
        assert receipt["batch"]["job"] == job
        assert receipt["batch"]["subjectCount"] == len(union)
        assert len(receipt["batch"]["requests"]) == COUNT
        assert receipt["decision"] == "Promote"
    entries = ledger.read_ledger(DEFAULT, world["registry"], model)
    assert len(entries) == 1 and entries[0].count == len(union)  # the batch's erasure, once
    assert entries[0].candidate_version in candidates


def test_with_coalescing_off_ten_requests_make_ten_jobs(
        world: dict[str, Any], s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api, ns = start_cluster(tmp_path, monkeypatch.setenv)
    monkeypatch.setenv("FORGETMI_COALESCE_WINDOW_SECONDS", "0")
    model = "m-alone"
    seed_model(world, model)
    train = train_subjects(world)
    names = [f"s{i}" for i in range(COUNT)]
    try:
        with operator(ns):  # no Job runner: the Jobs are only created
            for i, name in enumerate(names):
                apply_request(api, ns, world, model, name, [train[i]])
            def all_jobs() -> list[dict[str, Any]] | None:
                found = api.list(JOBS, ns)
                return found if len(found) >= COUNT else None

            jobs = wait_for(all_jobs, 120.0, "10 Jobs")
            statuses = [api.get(REQUESTS, ns, name).get("status") or {} for name in names]
    finally:
        api.stop()
    assert len({j["metadata"]["name"] for j in jobs}) == COUNT
    assert all(len(j["metadata"]["ownerReferences"]) == 1 for j in jobs)
    assert not any("batch" in status for status in statuses)


def _batch_secret(api: Any, ns: str, job: dict[str, Any]) -> list[str]:
    """The forget set in the batch Secret the Job mounts."""
    names = {volume["secret"]["secretName"] for volume in job["spec"]["template"]["spec"].get("volumes") or []
             if "secret" in volume and volume["secret"]["secretName"].endswith("-batch-subjects")}
    assert len(names) == 1, names
    found = api.get(SECRETS, ns, names.pop())
    return base64.b64decode(found["data"][SUBJECTS_KEY]).decode().split()


def _one_job(api: Any, ns: str) -> dict[str, Any] | None:
    found = api.list(JOBS, ns)
    return found[0] if found else None


def test_a_request_deleted_while_its_batch_gathers_leaves_the_batch(
        world: dict[str, Any], s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api, ns = start_cluster(tmp_path, monkeypatch.setenv)
    monkeypatch.setenv("FORGETMI_COALESCE_WINDOW_SECONDS", "8")
    model = "m-leave"
    seed_model(world, model)
    train = train_subjects(world)
    names = ["g0", "g1", "g2"]
    try:
        with operator(ns):  # no Job runner: the batch's Job is only created
            for i, name in enumerate(names):
                apply_request(api, ns, world, model, name, [train[i]])
            wait_for(lambda: "batch" in (api.get(REQUESTS, ns, "g1").get("status") or {}), 30.0, "g1 to join")
            assert _one_job(api, ns) is None  # the window is still open
            api.delete(REQUESTS, ns, "g1")
            wait_for(lambda: api.get(REQUESTS, ns, "g1") is None, 30.0, "g1 to be deleted")
            job = wait_for(lambda: _one_job(api, ns), 60.0, "the batch's Job")
            statuses = {name: api.get(REQUESTS, ns, name)["status"] for name in ("g0", "g2")}
            forget_set = _batch_secret(api, ns, job)
    finally:
        api.stop()
    assert [ref["name"] for ref in job["metadata"]["ownerReferences"]] == ["g0", "g2"]
    assert sorted(forget_set) == sorted([train[0], train[2]])  # g1's patient is not forgotten
    for status in statuses.values():
        assert status["jobName"] == job["metadata"]["name"]
        assert [ref["name"] for ref in status["batch"]["requests"]] == ["g0", "g2"]
        assert status["batch"]["leader"]["name"] == "g0" and status["batch"]["subjectCount"] == 2


def test_a_leader_deleted_after_the_job_was_created_leaves_it_running_for_the_others(
        world: dict[str, Any], s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api, ns = start_cluster(tmp_path, monkeypatch.setenv)
    api.create(SECRETS, ns, secret("ledger-key", "key", b"ledger-key-" + b"z" * 24))
    for name, value in {"OPERATOR_NAMESPACE": ns, "LEDGER_KEY_SECRET_NAME": "ledger-key",
                        "COALESCE_WINDOW_SECONDS": "4"}.items():
        monkeypatch.setenv(f"FORGETMI_{name}", value)
    model = "m-withdraw"
    seed_model(world, model)
    train = train_subjects(world)
    names = ["w0", "w1", "w2"]
    (tmp_path / "jobs").mkdir()
    try:
        with operator(ns):
            for i, name in enumerate(names):
                apply_request(api, ns, world, model, name, [train[i]])
            job = wait_for(lambda: _one_job(api, ns), 60.0, "the batch's Job")
            wait_for(lambda: all((api.get(REQUESTS, ns, n).get("status") or {}).get("jobName") for n in names),
                     30.0, "every request to name the Job")
            api.delete(REQUESTS, ns, "w0")  # the leader: its name is the Job's, its report the batch's
            wait_for(lambda: api.get(REQUESTS, ns, "w0") is None, 30.0, "w0 to be deleted")
            kept = api.get(JOBS, ns, job["metadata"]["name"])
            forget_set = _batch_secret(api, ns, kept)
            with JobRunner(api, tmp_path / "jobs") as runner:
                done = wait_for(lambda: _all_ended(api, ns, ["w1", "w2"]), 200.0, "w1 and w2 to end")

                def batch_secrets() -> list[dict[str, Any]]:
                    return [s for s in api.list(SECRETS, ns) if s["metadata"]["name"].endswith("-batch-subjects")]

                # released once the last request of the batch ended: right after its terminal status is saved
                released = wait_for(lambda: not batch_secrets(), 15.0, "the batch Secret to be released")
            assert not runner.errors
    finally:
        api.stop()
    assert [ref["name"] for ref in kept["metadata"]["ownerReferences"]] == ["w1", "w2"]
    assert sorted(forget_set) == sorted(train[:3])  # the Job forgets what it was created with
    statuses = {r["metadata"]["name"]: r["status"] for r in done}
    assert {s["phase"] for s in statuses.values()} == {"Promoted"}, json.dumps(statuses)[:2000]
    for name, status in statuses.items():
        receipt = json.loads(storage.read_text(status["receipt"]["uri"]))
        assert receipt["request"]["name"] == name
        assert receipt["batch"]["leader"]["name"] == "w0"
        assert [r["name"] for r in receipt["batch"]["withdrawn"]] == ["w0"]
        assert receipt["batch"]["subjectCount"] == 3
    entries = ledger.read_ledger(DEFAULT, world["registry"], model)
    assert len(entries) == 1 and entries[0].count == 3  # the Job's whole forget set, w0's patient too
    assert released


def test_a_batch_whose_gates_fail_holds_every_request_and_is_never_retrained(
        world: dict[str, Any], s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api, ns = start_cluster(tmp_path, monkeypatch.setenv)
    monkeypatch.setenv("FORGETMI_COALESCE_WINDOW_SECONDS", "4")
    model = "m-held"
    seed_model(world, model)
    train = train_subjects(world)
    names = ["h0", "h1", "h2"]
    failing = [{"metric": "testAUC", "comparator": "atLeast", "threshold": 1.0, "reference": "absolute"}]
    (tmp_path / "jobs").mkdir()
    try:
        with JobRunner(api, tmp_path / "jobs") as runner, operator(ns):
            for i, name in enumerate(names):
                apply_request(api, ns, world, model, name, [train[i]], gates=failing,
                              rollout={"mode": "Automatic", "onGateFailure": "Retrain"})
            done = wait_for(lambda: _all_ended(api, ns, names), 200.0, "the 3 requests to end")
            jobs = api.list(JOBS, ns)
        assert not runner.errors
    finally:
        api.stop()
    statuses = {r["metadata"]["name"]: r["status"] for r in done}
    assert {s["phase"] for s in statuses.values()} == {"Held"}, json.dumps(statuses)[:2000]
    assert len(jobs) == 1  # one run, its gates evaluated on its one report; no retrain Job
    assert {s["gates"][0]["result"] for s in statuses.values()} == {"Failed"}
    assert len({s["gates"][0]["value"] for s in statuses.values()}) == 1
    for status in statuses.values():
        receipt = json.loads(storage.read_text(status["receipt"]["uri"]))
        assert receipt["decision"] == "Hold" and receipt["batch"]["job"] == jobs[0]["metadata"]["name"]
    assert ledger.read_ledger(DEFAULT, world["registry"], model) == []  # nothing erased, nothing recorded

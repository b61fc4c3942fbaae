"""Coalescing through the real operator (Kopf, in a thread) on the emulated API server, with moto S3 and
the Job runner: 10 requests for one model applied within the window run as ONE Job whose forget set is
the union, and end with 10 receipts naming the same candidate and the shared Job; the ledger records
the batch's erasure once. With coalescing off, the same 10 requests make 10 Jobs, as before.
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
from harness.world import fitted_world, seed_model

from forgetmi_operator.registry import ledger
from forgetmi_trainer import storage
from forgetmi_trainer.contract import Report
from forgetmi_trainer.manifest import read_manifest
from forgetmi_trainer.storage import DEFAULT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
PASSING_GATES = [{"metric": "testAUC", "comparator": "atLeast", "threshold": 0.0, "reference": "absolute"}]
COUNT = 10


@pytest.fixture(scope="module")
def world(s3_server: str) -> Iterator[dict[str, Any]]:
    with fitted_world(s3_server, prefix="coalesce") as fitted:
        yield fitted


def _secret(name: str, key: str, value: bytes) -> dict[str, Any]:
    return {"metadata": {"name": name}, "type": "Opaque", "data": {key: base64.b64encode(value).decode()}}


def _apply(api: Any, ns: str, world: dict[str, Any], model: str, name: str, subjects: list[str]) -> None:
    api.create(SECRETS, ns, _secret(f"{name}-subjects", "subjects", "\n".join(subjects).encode()))
    api.create(REQUESTS, ns, {"apiVersion": "unlearning.forgetmi.io/v1alpha1", "kind": "UnlearnRequest",
                              "metadata": {"name": name}, "spec": {
        "model": {"registryUri": world["registry"], "name": model, "alias": "production"},
        "data": {"manifestUri": world["manifest"]},
        "forget": {"subjectsSecretRef": {"name": f"{name}-subjects", "key": "subjects"}},
        "method": {"epochs": 2, "batchSize": 16},
        "gates": PASSING_GATES,
        "rollout": {"mode": "Automatic"},
    }})


def _train_subjects(world: dict[str, Any]) -> list[str]:
    manifest = read_manifest(world["manifest"])
    return sorted({s for s, split in zip(manifest.subject_ids, manifest.splits, strict=True) if split == "train"})


def _all_ended(api: Any, ns: str, names: list[str]) -> list[dict[str, Any]] | None:
    found = [api.get(REQUESTS, ns, name) for name in names]
    done = all((r.get("status") or {}).get("phase") in ("Promoted", "Failed", "Held") for r in found)
    return found if done else None


def test_ten_requests_in_the_window_run_as_one_job_and_end_with_ten_receipts(
        world: dict[str, Any], s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api, ns = start_cluster(tmp_path, monkeypatch.setenv)
    api.create(SECRETS, ns, _secret("ledger-key", "key", b"ledger-key-" + b"y" * 24))
    for name, value in {"OPERATOR_NAMESPACE": ns, "LEDGER_KEY_SECRET_NAME": "ledger-key",
                        "COALESCE_WINDOW_SECONDS": "6"}.items():
        monkeypatch.setenv(f"FORGETMI_{name}", value)
    model = "m-batch"
    seed_model(world, model)
    train = _train_subjects(world)
    assert len(train) >= COUNT + 2
    names = [f"r{i}" for i in range(COUNT)]
    lists = {name: [train[i]] for i, name in enumerate(names)}
    lists["r1"] = [train[1], train[0]]  # lists may overlap: the union counts each patient once
    (tmp_path / "jobs").mkdir()
    try:
        with JobRunner(api, tmp_path / "jobs") as runner, operator(ns):
            for name in names:
                _apply(api, ns, world, model, name, lists[name])
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
    train = _train_subjects(world)
    names = [f"s{i}" for i in range(COUNT)]
    try:
        with operator(ns):  # no Job runner: the Jobs are only created
            for i, name in enumerate(names):
                _apply(api, ns, world, model, name, [train[i]])
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

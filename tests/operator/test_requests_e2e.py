"""The real operator (Kopf, in a thread) against the emulated API server over HTTP, with moto S3
over HTTP and a Job runner that runs each created Job's trainer as a local process."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from harness.cluster import (
    EVENTS,
    JOBS,
    REQUESTS,
    SECRETS,
    operator,
    start_cluster,
    wait_for,
)
from harness.jobrunner import JobRunner
from harness.world import fitted_world, seed_model

from forgetmi_operator.api import naming
from forgetmi_operator.api.patterns import APPROVAL_ANNOTATION
from forgetmi_operator.lifecycle import receipts
from forgetmi_operator.registry import aliases as registry
from forgetmi_trainer import storage
from forgetmi_trainer.storage import DEFAULT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
PASSING_GATES = [{"metric": "testAUC", "comparator": "atLeast", "threshold": 0.0, "reference": "absolute"}]
FAILING_GATES = [{"metric": "testAUC", "comparator": "atMost", "threshold": 0.0, "reference": "absolute"}]
RUN_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def world(s3_server: str) -> Iterator[dict[str, Any]]:
    """A bucket with a small dataset and one trained model (version v1), fitted once per module."""
    with fitted_world(s3_server) as fitted:
        yield fitted


@pytest.fixture
def cluster(world: dict[str, Any], s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            caplog: pytest.LogCaptureFixture) -> Iterator[dict[str, Any]]:
    api, namespace = start_cluster(tmp_path, monkeypatch.setenv)
    caplog.set_level(logging.DEBUG)
    with JobRunner(api, tmp_path) as runner:
        try:
            yield {"api": api, "ns": namespace, "runner": runner, "world": world}
        finally:
            api.stop()
    assert not runner.errors


def _apply(cluster: dict[str, Any], name: str, *, gates: list[dict[str, Any]] | None = None,
           mode: str = "Automatic", manifest: str | None = None, suspend: bool = False) -> str:
    world, api, ns = cluster["world"], cluster["api"], cluster["ns"]
    model = f"m-{name}"
    seed_model(world, model)
    secret = f"{name}-subjects"
    api.create(SECRETS, ns, {"metadata": {"name": secret}, "type": "Opaque", "data": {
        "subjects": base64.b64encode("\n".join(world["subjects"]).encode()).decode()}})
    body = {
        "model": {"registryUri": world["registry"], "name": model, "alias": "production"},
        "data": {"manifestUri": manifest or world["manifest"]},
        "forget": {"subjectsSecretRef": {"name": secret, "key": "subjects"}},
        "method": {"epochs": 2, "batchSize": 16},
        "gates": gates or PASSING_GATES,
        "rollout": {"mode": mode},
        "resources": {"gpus": 1},
        **({"suspend": True} if suspend else {}),
    }
    api.create(REQUESTS, ns, {"apiVersion": "unlearning.forgetmi.io/v1alpha1", "kind": "UnlearnRequest",
                              "metadata": {"name": name}, "spec": body})
    return model


def _request(cluster: dict[str, Any], name: str) -> dict[str, Any]:
    found = cluster["api"].get(REQUESTS, cluster["ns"], name)
    assert found is not None
    return found


def _phase_in(cluster: dict[str, Any], name: str, *phases: str) -> dict[str, Any] | None:
    obj = _request(cluster, name)
    return obj if (obj.get("status") or {}).get("phase") in phases else None


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def _jobs(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    return cluster["api"].list(JOBS, cluster["ns"])


def _alias(cluster: dict[str, Any], model: str) -> str:
    world = cluster["world"]
    return registry.resolve_alias(DEFAULT, world["registry"], model, "production").version


def _events_text(cluster: dict[str, Any]) -> str:
    return json.dumps(cluster["api"].list(EVENTS, cluster["ns"]))


def _events(cluster: dict[str, Any], name: str, reason: str) -> list[dict[str, Any]]:
    """The Events about request ``name`` with exactly ``reason`` (``Promoted`` is not ``NotPromoted``)."""
    return [e for e in cluster["api"].list(EVENTS, cluster["ns"])
            if e.get("reason") == reason and (e.get("involvedObject") or {}).get("name") == name]


def _time(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def test_passing_gates_promote_once_with_receipt(cluster: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    with operator(cluster["ns"]):
        model = _apply(cluster, "passes")
        done = wait_for(lambda: _phase_in(cluster, "passes", "Promoted", "Failed", "Held"), RUN_TIMEOUT, "Promoted")

        # Kopf posts Events from a background queue, so the Promoted Event can land just after the status;
        # wait while the operator still runs (a stopped operator drops what is still queued).
        def promoted_event() -> list[dict[str, Any]]:
            return _events(cluster, "passes", "Promoted")

        promoted = wait_for(promoted_event, 15, "the Promoted Event") if done["status"]["phase"] == "Promoted" else []
        events = _events_text(cluster)
    status = done["status"]
    assert status["phase"] == "Promoted", status
    jobs = _jobs(cluster)
    assert len(jobs) == 1
    job = jobs[0]
    assert [(k[0], k[2]) for k in cluster["api"].created if k[0] == JOBS] == [(JOBS, job["metadata"]["name"])]
    assert job["metadata"]["ownerReferences"][0]["uid"] == done["metadata"]["uid"]
    assert job["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "forgetmi-operator"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    fail_fast = [r for r in job["spec"]["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    assert fail_fast == [{"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "In",
                                                              "values": [2, 3]}}]
    candidate = status["candidateModel"]["version"]
    assert _alias(cluster, model) == candidate != "v1"
    receipt_bytes = storage.read_bytes(status["receipt"]["uri"])
    assert hashlib.sha256(receipt_bytes).hexdigest() == status["receipt"]["sha256"]
    assert status["subjectCount"] == len(cluster["world"]["subjects"])
    assert status["gates"] and all(g["result"] == "Passed" for g in status["gates"])
    created = _time(done["metadata"]["creationTimestamp"])
    assert created <= _time(status["startTime"]) <= _time(status["completionTime"])
    assert _condition(done, "Promoted")["status"] == "True"
    assert status["observedGeneration"] == 1
    (event,) = promoted
    assert event["type"] == "Normal"
    assert event["message"] == f"Alias 'production' of model {model} now names version {candidate} (was v1)."
    visible = json.dumps(status) + events + caplog.text + receipt_bytes.decode()
    for subject in cluster["world"]["subjects"]:
        assert subject not in visible


def test_failing_gates_hold_and_keep_alias(cluster: dict[str, Any]) -> None:
    with operator(cluster["ns"]):
        model = _apply(cluster, "fails", gates=FAILING_GATES)
        done = wait_for(lambda: _phase_in(cluster, "fails", "Promoted", "Failed", "Held"), RUN_TIMEOUT, "Held")
    assert done["status"]["phase"] == "Held", done["status"]
    assert _condition(done, "GatesPassed")["status"] == "False"
    assert _alias(cluster, model) == "v1"
    receipt = storage.read_bytes(done["status"]["receipt"]["uri"])
    assert done["status"]["receipt"]["sha256"] == hashlib.sha256(receipt).hexdigest()
    assert json.loads(receipt)["decision"] == "Hold" and json.loads(receipt)["promotion"] is None


def test_dry_run_never_promotes(cluster: dict[str, Any]) -> None:
    with operator(cluster["ns"]):
        model = _apply(cluster, "dry", mode="DryRun")
        done = wait_for(lambda: _phase_in(cluster, "dry", "Promoted", "Failed", "Held"), RUN_TIMEOUT, "DryRun done")
    assert done["status"]["phase"] == "Held"
    assert _condition(done, "Promoted")["reason"] == "DryRun"
    assert _alias(cluster, model) == "v1"


def test_switching_a_request_awaiting_approval_to_automatic_promotes_it(cluster: dict[str, Any]) -> None:
    """A Manual request that passed its gates waits; changing ``spec.rollout.mode`` (the one spec
    field that may change) to Automatic promotes it without an approval annotation."""
    api, ns = cluster["api"], cluster["ns"]
    counted = _gate_evaluations()
    with operator(ns):
        model = _apply(cluster, "switch", mode="Manual")
        waiting = wait_for(lambda: _phase_in(cluster, "switch", "Evaluating", "Promoted", "Failed", "Held"),
                           RUN_TIMEOUT, "Evaluating")
        assert _condition(waiting, "Promoted")["reason"] == "AwaitingApproval", waiting["status"]
        assert _alias(cluster, model) == "v1"
        api.patch(REQUESTS, ns, "switch", {"spec": {"rollout": {"mode": "Automatic"}}})
        done = wait_for(lambda: _phase_in(cluster, "switch", "Promoted", "Failed", "Held"), 30, "Promoted")
    assert done["status"]["phase"] == "Promoted", done["status"]
    assert _alias(cluster, model) == done["status"]["candidateModel"]["version"] != "v1"
    assert APPROVAL_ANNOTATION not in (done["metadata"].get("annotations") or {})
    assert len(_jobs(cluster)) == 1
    # each gate is counted once, when acted on: not at AwaitingApproval and again at promotion
    assert _gate_evaluations() - counted == len(done["status"]["gates"])


def _gate_evaluations() -> float:
    from forgetmi_operator.cluster.metrics import METRICS

    return sum(sample.value for family in METRICS.registry.collect() if family.name == "forgetmi_gate_evaluations"
               for sample in family.samples if sample.name == "forgetmi_gate_evaluations_total")


def test_a_suspended_request_launches_only_when_unsuspended(cluster: dict[str, Any]) -> None:
    api, ns = cluster["api"], cluster["ns"]
    with operator(ns):
        model = _apply(cluster, "paused", suspend=True)
        waiting = wait_for(lambda: _condition(_request(cluster, "paused"), "Unlearned")
                           if (_request(cluster, "paused").get("status") or {}).get("conditions") else None,
                           30, "the suspended request's conditions")
        assert waiting["reason"] == "NotStarted" and "suspended" in waiting["message"]
        time.sleep(2.0)  # a few sweeps: still no Job
        assert not _jobs(cluster) and not _request(cluster, "paused")["status"].get("jobName")
        api.patch(REQUESTS, ns, "paused", {"spec": {"suspend": False}})
        done = wait_for(lambda: _phase_in(cluster, "paused", "Promoted", "Failed", "Held"), RUN_TIMEOUT, "Promoted")
    assert done["status"]["phase"] == "Promoted", done["status"]
    assert len(_jobs(cluster)) == 1 and _alias(cluster, model) != "v1"


def test_trainer_storage_error_fails_with_termination_message(cluster: dict[str, Any]) -> None:
    world = cluster["world"]
    # A manifest whose images are missing: accepted (the manifest exists), the trainer exits 3.
    text = storage.read_text(world["manifest"]).replace("/data/images/", "/gone/images/")
    broken = f"s3://{world['bucket']}/broken/manifest.csv"
    storage.write_text(broken, text)
    with operator(cluster["ns"]):
        _apply(cluster, "broken", manifest=broken)
        done = wait_for(lambda: _phase_in(cluster, "broken", "Promoted", "Failed", "Held"), RUN_TIMEOUT, "Failed")
    assert done["status"]["phase"] == "Failed"
    unlearned = _condition(done, "Unlearned")
    assert unlearned["status"] == "False"
    assert cluster["runner"].exit_codes[done["status"]["jobName"]] == [3]
    assert unlearned["reason"] == "StorageOrInputError"
    assert "could not be read from storage (it does not exist)" in unlearned["message"]
    assert "gone" not in unlearned["message"]  # a sample is named, never an image's path


def test_invalid_spec_is_not_accepted_and_creates_no_job(cluster: dict[str, Any]) -> None:
    world = cluster["world"]
    spec = {
        "model": {"registryUri": world["registry"], "name": "m-invalid"},
        "data": {"manifestUri": world["manifest"]},
        "forget": {"subjectsSecretRef": {"name": "x", "key": "subjects"}},
        "gates": [{"metric": "testAUC", "comparator": "maxDrop", "threshold": 0.02, "reference": "absolute"}],
    }
    with operator(cluster["ns"]):
        cluster["api"].create(REQUESTS, cluster["ns"], {"metadata": {"name": "invalid"}, "spec": spec})
        done = wait_for(lambda: _phase_in(cluster, "invalid", "Failed"), 30, "Failed")
    accepted = _condition(done, "Accepted")
    assert accepted["status"] == "False"
    assert accepted["reason"] == "InvalidSpec"
    assert "spec.gates[0]" in accepted["message"]
    assert not _jobs(cluster)


def test_missing_model_secret_or_patient_fails_acceptance_without_a_job(cluster: dict[str, Any]) -> None:
    world, api, ns = cluster["world"], cluster["api"], cluster["ns"]
    api.create(SECRETS, ns, {"metadata": {"name": "subjects"}, "data": {
        "subjects": base64.b64encode("\n".join(world["subjects"]).encode()).decode()}})
    unknown_patient = "NOT-A-PATIENT-4711"
    api.create(SECRETS, ns, {"metadata": {"name": "unknown"}, "data": {
        "subjects": base64.b64encode("\n".join([*world["subjects"], unknown_patient]).encode()).decode()}})
    base = {"data": {"manifestUri": world["manifest"]}, "method": {"epochs": 2}}
    no_model = {**base, "model": {"registryUri": world["registry"], "name": "nowhere"},
                "forget": {"subjectsSecretRef": {"name": "subjects", "key": "subjects"}}}
    seed_model(world, "m-nosecret")
    no_secret = {**base, "model": {"registryUri": world["registry"], "name": "m-nosecret"},
                 "forget": {"subjectsSecretRef": {"name": "missing", "key": "subjects"}}}
    unknown = {**no_secret, "forget": {"subjectsSecretRef": {"name": "unknown", "key": "subjects"}}}
    with operator(ns):
        api.create(REQUESTS, ns, {"metadata": {"name": "no-model"}, "spec": no_model})
        api.create(REQUESTS, ns, {"metadata": {"name": "no-secret"}, "spec": no_secret})
        api.create(REQUESTS, ns, {"metadata": {"name": "unknown-patient"}, "spec": unknown})
        model_failed = wait_for(lambda: _phase_in(cluster, "no-model", "Failed"), 30, "no-model Failed")
        secret_failed = wait_for(lambda: _phase_in(cluster, "no-secret", "Failed"), 30, "no-secret Failed")
        patient_failed = wait_for(lambda: _phase_in(cluster, "unknown-patient", "Failed"), 30,
                                  "unknown-patient Failed")
        wait_for(lambda: "InputNotFound" in _events_text(cluster), 15, "the InputNotFound Event")
    accepted = _condition(model_failed, "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", "InputNotFound")
    assert "spec.model" in accepted["message"] and "nowhere" in accepted["message"]
    accepted = _condition(secret_failed, "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", "SecretNotFound")
    assert f"Secret {ns}/missing does not exist." == accepted["message"]
    accepted = _condition(patient_failed, "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", "InvalidSubjects")
    total = len(world["subjects"]) + 1
    assert accepted["message"] == (f"1 of {total} forget subjects in Secret {ns}/unknown key 'subjects' have no "
                                   f"training samples in spec.data.manifestUri {world['manifest']}.")
    assert unknown_patient not in json.dumps(patient_failed)  # counted, never echoed
    assert "subjectCount" not in patient_failed["status"]
    assert not _jobs(cluster)


def test_restart_mid_run_creates_no_second_job_and_manual_mode_waits_for_approval(
        cluster: dict[str, Any]) -> None:
    api, ns = cluster["api"], cluster["ns"]
    with operator(ns):
        model = _apply(cluster, "restart", mode="Manual")
        wait_for(lambda: _jobs(cluster), 30, "the Job")
    with operator(ns):
        waiting = wait_for(lambda: _phase_in(cluster, "restart", "Evaluating", "Promoted", "Failed", "Held"),
                           RUN_TIMEOUT, "Evaluating")
        assert waiting["status"]["phase"] == "Evaluating", waiting["status"]
        assert _condition(waiting, "Promoted")["reason"] == "AwaitingApproval"
        assert _alias(cluster, model) == "v1"
        api.patch(REQUESTS, ns, "restart", {"metadata": {"annotations": {APPROVAL_ANNOTATION: "true"}}})
        done = wait_for(lambda: _phase_in(cluster, "restart", "Promoted", "Failed", "Held"), 30, "Promoted")
    assert done["status"]["phase"] == "Promoted", done["status"]
    assert len([k for k in api.created if k[0] == JOBS]) == 1
    assert cluster["runner"].started == [done["status"]["jobName"]]
    assert _alias(cluster, model) == done["status"]["candidateModel"]["version"]
    assert done["status"]["receipt"]["sha256"]


def test_the_receipt_attests_the_list_as_accepted_and_the_snapshot_goes_when_the_request_ends(
        cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The Job reads the request's own immutable copy of the forget list; editing the referenced
    Secret afterwards (same count, other patients) changes neither what is attested nor promoted,
    and the copy is deleted once the request is Promoted."""
    api, ns, world = cluster["api"], cluster["ns"], cluster["world"]
    key = b"receipt-key-" + b"k" * 20
    api.create(SECRETS, ns, {"metadata": {"name": "receipt-key"}, "type": "Opaque",
                             "data": {"key": base64.b64encode(key).decode()}})
    monkeypatch.setenv("FORGETMI_OPERATOR_NAMESPACE", ns)
    monkeypatch.setenv("FORGETMI_RECEIPT_HMAC_SECRET_NAME", "receipt-key")
    with operator(ns):
        _apply(cluster, "attest", mode="Manual")
        waiting = wait_for(lambda: _phase_in(cluster, "attest", "Evaluating", "Promoted", "Failed", "Held"),
                           RUN_TIMEOUT, "Evaluating")
        assert _condition(waiting, "Promoted")["reason"] == "AwaitingApproval", waiting["status"]
        snapshot = naming.subjects_secret_name("attest", waiting["metadata"]["uid"])
        assert waiting["status"]["subjectsSecretName"] == snapshot  # declared in the CRD's status schema
        (job,) = _jobs(cluster)
        volumes = job["spec"]["template"]["spec"]["volumes"]
        assert {"name": "subjects", "secret": {"secretName": snapshot, "defaultMode": 0o440,
                                               "items": [{"key": "subjects", "path": "subjects"}]}} in volumes
        held = api.get(SECRETS, ns, snapshot)
        assert held is not None and held["immutable"] is True
        assert base64.b64decode(held["data"]["subjects"]).decode().split() == world["subjects"]
        edited = [f"{subject}-other" for subject in world["subjects"]]
        api.patch(SECRETS, ns, "attest-subjects",
                  {"data": {"subjects": base64.b64encode("\n".join(edited).encode()).decode()}})
        api.patch(REQUESTS, ns, "attest", {"metadata": {"annotations": {APPROVAL_ANNOTATION: "true"}}})
        done = wait_for(lambda: _phase_in(cluster, "attest", "Promoted", "Failed", "Held"), 30, "Promoted")
        assert done["status"]["phase"] == "Promoted", done["status"]
        wait_for(lambda: api.get(SECRETS, ns, snapshot) is None, 15, "the snapshot to be deleted")
    receipt = json.loads(storage.read_bytes(done["status"]["receipt"]["uri"]))
    assert receipt["subjects"]["count"] == len(world["subjects"])
    assert receipt["subjects"]["hmac"] == receipts.subjects_hmac(world["subjects"], key)
    assert receipt["subjects"]["hmac"] != receipts.subjects_hmac(edited, key)
    assert api.get(SECRETS, ns, "attest-subjects") is not None  # the user's Secret is never touched


def test_deleting_a_running_request_removes_its_job_and_keeps_the_model(cluster: dict[str, Any]) -> None:
    api, ns = cluster["api"], cluster["ns"]
    with operator(ns):
        model = _apply(cluster, "deleted")
        job = wait_for(lambda: _jobs(cluster), 30, "the Job")[0]
        wait_for(lambda: (_request(cluster, "deleted").get("status") or {}).get("jobName"), 30, "status.jobName")
        assert not _request(cluster, "deleted")["metadata"].get("finalizers")  # nothing blocks a deletion
        api.delete(REQUESTS, ns, "deleted")
        assert api.get(REQUESTS, ns, "deleted") is None  # gone at once, operator or not
        wait_for(lambda: not _jobs(cluster), 30, "the Job to go")
        snapshot = f"{job['metadata']['name']}-subjects"
        wait_for(lambda: api.get(SECRETS, ns, snapshot) is None, 15, "the forget-list snapshot to go")
    assert cluster["runner"].started == [job["metadata"]["name"]]
    assert _alias(cluster, model) == "v1"
    assert storage.exists(f"{cluster['world']['registry']}/{model}/versions/v1/model.safetensors")

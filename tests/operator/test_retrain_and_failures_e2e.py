"""More of the real operator (Kopf, in a thread) against the emulated API server and moto S3:
``onGateFailure: Retrain``, a trainer that exits 2, and a Pod that never gets scheduled.

The Job runner of ``tests/harness/jobrunner.py`` runs every Job's trainer for real. Two cases
need a Job to misbehave in a way a valid request cannot cause, so they use a subclass of it:

- exit 2 (bad config): the operator only builds trainer configs that validate (a spec the
  trainer would reject, such as ``selection.epoch > epochs``, is rejected by the CRD and the
  pydantic model first), so :class:`BadConfigRunner` adds an unknown key to the Job's
  ``job.json`` before the real trainer reads it, as a trainer older than the operator would
  see it; the trainer then exits 2 with its own termination message;
- a Pod that stays Pending: :class:`UnschedulableRunner` creates the Job's Pod as the scheduler
  would leave it (``Pending``, ``PodScheduled=False``, reason ``Unschedulable``) and never runs it.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from harness.cluster import (
    JOBS,
    REQUESTS,
    SECRETS,
    operator,
    start_cluster,
    wait_for,
)
from harness.jobrunner import PODS, JobRunner
from harness.world import fitted_world, seed_model

from forgetmi_operator.api import naming
from forgetmi_operator.registry import aliases as registry
from forgetmi_trainer import storage
from forgetmi_trainer.storage import DEFAULT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
FAILING_GATES = [{"metric": "testAUC", "comparator": "atMost", "threshold": 0.0, "reference": "absolute"}]
TERMINAL = ("Promoted", "Failed", "Held")
RUN_TIMEOUT = 120.0


class BadConfigRunner(JobRunner):
    """Runs the real trainer on a ``job.json`` with an unknown key: it exits 2 (bad config)."""

    def _prepare(self, job: dict[str, Any], tmp: Path) -> tuple[Path, dict[str, str]]:
        config_path, env = super()._prepare(job, tmp)
        config = json.loads(config_path.read_text())
        config["from_a_newer_operator"] = True
        config_path.write_text(json.dumps(config))
        return config_path, env


class PodThatNeverRuns(JobRunner):
    """Gives each Job one Pod with :attr:`POD_STATUS` and runs nothing; the Job counts it active
    first (the Pod appears ``DELAY`` seconds later, as the Job controller does it)."""

    POD_STATUS: ClassVar[dict[str, Any]] = {}
    DELAY = 0.0

    def _run_job(self, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        self.started.append(meta["name"])
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"],
                 "controller": True}
        labels = {**(job["spec"]["template"].get("metadata") or {}).get("labels", {}),
                  "job-name": meta["name"], "batch.kubernetes.io/job-name": meta["name"]}
        self.api.patch(JOBS, meta["namespace"], meta["name"], {"status": {"startTime": stamp, "active": 1}},
                       subresource="status")
        time.sleep(self.DELAY)
        status = json.loads(json.dumps(self.POD_STATUS).replace("$NOW", stamp))
        self.api.create(PODS, meta["namespace"], {
            "metadata": {"name": f"{meta['name']}-{uuid.uuid4().hex[:5]}", "labels": labels,
                         "ownerReferences": [owner]},
            "spec": job["spec"]["template"]["spec"],
            "status": status,
        })


class UnschedulableRunner(PodThatNeverRuns):
    """A Pod that the scheduler cannot place."""

    POD_STATUS: ClassVar[dict[str, Any]] = {"phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": "$NOW",
        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}


class ImagePullRunner(PodThatNeverRuns):
    """A Pod whose trainer image cannot be pulled; it appears after the Job counts it, so only the
    Pod's own event tells the operator."""

    DELAY = 0.5
    POD_STATUS: ClassVar[dict[str, Any]] = {"phase": "Pending", "containerStatuses": [{
        "name": "trainer", "ready": False, "restartCount": 0, "image": "ghcr.io/forgetmi/missing:0",
        "state": {"waiting": {"reason": "ImagePullBackOff",
                              "message": 'Back-off pulling image "ghcr.io/forgetmi/missing:0"'}}}]}


@pytest.fixture(scope="module")
def world(s3_server: str) -> Iterator[dict[str, Any]]:
    """A bucket with a small dataset and one trained model (version v1), fitted once per module."""
    with fitted_world(s3_server) as fitted:
        yield fitted


def _cluster(world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             runner: type[JobRunner]) -> Iterator[dict[str, Any]]:
    api, namespace = start_cluster(tmp_path, monkeypatch.setenv)
    monkeypatch.setenv("FORGETMI_PENDING_POD_TIMEOUT_SECONDS", "2")
    with runner(api, tmp_path) as jobs:
        try:
            yield {"api": api, "ns": namespace, "runner": jobs, "world": world}
        finally:
            api.stop()
    assert not jobs.errors


@pytest.fixture
def runner_class() -> type[JobRunner]:
    """The Job runner; a test parametrizes ``runner_class`` to use a subclass."""
    return JobRunner


@pytest.fixture
def cluster(world: dict[str, Any], s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            runner_class: type[JobRunner]) -> Iterator[dict[str, Any]]:
    """The emulator (its URL in ``$KUBECONFIG``) and a running Job runner."""
    yield from _cluster(world, tmp_path, monkeypatch, runner_class)


def _apply(cluster: dict[str, Any], name: str, **spec: Any) -> str:
    """Copy v1 to model ``m-<name>`` (alias production → v1), a subjects Secret, and the request."""
    world, api, ns = cluster["world"], cluster["api"], cluster["ns"]
    model = f"m-{name}"
    seed_model(world, model)
    api.create(SECRETS, ns, {"metadata": {"name": f"{name}-subjects"}, "type": "Opaque", "data": {
        "subjects": base64.b64encode("\n".join(world["subjects"]).encode()).decode()}})
    body = {
        "model": {"registryUri": world["registry"], "name": model, "alias": "production"},
        "data": {"manifestUri": world["manifest"]},
        "forget": {"subjectsSecretRef": {"name": f"{name}-subjects", "key": "subjects"}},
        "method": {"epochs": 2, "batchSize": 16},
        "resources": {"gpus": 1},
        **spec,
    }
    api.create(REQUESTS, ns, {"apiVersion": "unlearning.forgetmi.io/v1alpha1", "kind": "UnlearnRequest",
                              "metadata": {"name": name}, "spec": body})
    return model


def _request(cluster: dict[str, Any], name: str) -> dict[str, Any]:
    found = cluster["api"].get(REQUESTS, cluster["ns"], name)
    assert found is not None
    return found


def _finished(cluster: dict[str, Any], name: str) -> dict[str, Any] | None:
    obj = _request(cluster, name)
    return obj if (obj.get("status") or {}).get("phase") in TERMINAL else None


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def _created_jobs(cluster: dict[str, Any]) -> list[str]:
    return [name for key, _, name in cluster["api"].created if key == JOBS]


def _alias(cluster: dict[str, Any], model: str) -> registry.ResolvedVersion:
    return registry.resolve_alias(DEFAULT, cluster["world"]["registry"], model, "production")


def test_gate_failure_with_retrain_runs_a_retrain_job_then_holds(cluster: dict[str, Any]) -> None:
    """Gates fail → a ``-retrain`` Job (method retrain) → its gates are evaluated; they fail again
    and a retrain run is never retrained (decisions.py), so the request is Held and the alias stays."""
    with operator(cluster["ns"]):
        model = _apply(cluster, "retrains", gates=FAILING_GATES, method={"epochs": 1, "batchSize": 32},
                       rollout={"mode": "Automatic", "onGateFailure": "Retrain"})
        done = wait_for(lambda: _finished(cluster, "retrains"), 2 * RUN_TIMEOUT, "the retrain run to finish")
    status, uid = done["status"], done["metadata"]["uid"]
    unlearn_job = naming.job_name("retrains", uid)
    retrain_job = naming.job_name("retrains", uid, kind="retrain")
    assert retrain_job == f"{unlearn_job}-retrain"
    assert _created_jobs(cluster) == [unlearn_job, retrain_job]
    assert cluster["runner"].exit_codes == {unlearn_job: [0], retrain_job: [0]}
    config = json.loads(cluster["api"].get(("", "v1", "configmaps"), cluster["ns"], retrain_job)["data"]["job.json"])
    assert config["method"]["name"] == "retrain"
    assert status["phase"] == "Held", status
    assert status["jobName"] == retrain_job and status["attempts"] == 2
    assert _condition(done, "GatesPassed")["status"] == "False"
    assert _condition(done, "Promoted")["status"] == "False"
    assert status["gates"] and all(g["result"] == "Failed" for g in status["gates"])
    # The gates in status are the retrain run's, read from its own report.
    assert status["report"]["uri"].endswith(f"/requests/{uid}/retrain/report.json")
    assert status["candidateModel"]["version"] == naming.candidate_version("v1", uid, kind="retrain")
    alias = _alias(cluster, model)
    assert (alias.version, alias.sha256) == ("v1", cluster["world"]["sha"])
    assert alias.record.request is None and alias.record.previous is None
    receipt = json.loads(storage.read_bytes(status["receipt"]["uri"]))
    assert receipt["decision"] == "Hold"


def test_gate_failure_with_retrain_promotes_when_the_retrain_passes(cluster: dict[str, Any]) -> None:
    """The unlearning run barely moves the model (finetune at lr 1e-9: forget AUC does not drop, so
    ``forgetAUC minDrop 0`` fails); the retrain from scratch without the patients does drop it, so
    its gates pass and the retrained version is promoted, with a receipt saying so."""
    gates = [{"metric": "forgetAUC", "comparator": "minDrop", "threshold": 0.0, "reference": "original"}]
    with operator(cluster["ns"]):
        model = _apply(cluster, "retrain-ok", gates=gates,
                       method={"name": "finetune", "epochs": 1, "batchSize": 32, "learningRate": 1e-9},
                       rollout={"mode": "Automatic", "onGateFailure": "Retrain"})
        done = wait_for(lambda: _finished(cluster, "retrain-ok"), 2 * RUN_TIMEOUT, "the retrain run to finish")
    status, uid = done["status"], done["metadata"]["uid"]
    retrain_job = naming.job_name("retrain-ok", uid, kind="retrain")
    assert _created_jobs(cluster) == [naming.job_name("retrain-ok", uid), retrain_job]
    assert status["phase"] == "Promoted", status
    assert status["jobName"] == retrain_job and status["attempts"] == 2
    assert [g["result"] for g in status["gates"]] == ["Passed"]
    candidate = naming.candidate_version("v1", uid, kind="retrain")
    assert status["candidateModel"]["version"] == candidate
    alias = _alias(cluster, model)
    assert alias.version == candidate and alias.record.previous == "v1"
    receipt = json.loads(storage.read_bytes(status["receipt"]["uri"]))
    assert receipt["decision"] == "Promote"


@pytest.mark.parametrize("runner_class", [BadConfigRunner])
def test_trainer_exit_2_fails_the_request_at_once(cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Also: the operator reacts to the Job's own status (the watch on trainer Jobs), not to its
    periodic look, which is made far longer than the wait here."""
    monkeypatch.setenv("FORGETMI_PROGRESS_INTERVAL_SECONDS", "600")
    with operator(cluster["ns"]):
        model = _apply(cluster, "badconfig")
        done = wait_for(lambda: _finished(cluster, "badconfig"), 60, "Failed")
        snapshot = naming.subjects_secret_name("badconfig", done["metadata"]["uid"])
        wait_for(lambda: cluster["api"].get(SECRETS, cluster["ns"], snapshot) is None, 15,
                 "the forget-list snapshot of the failed request to go")
    status = done["status"]
    assert status["phase"] == "Failed", status
    job_name = status["jobName"]
    assert cluster["runner"].exit_codes == {job_name: [2]}  # one Pod: no retry despite backoffLimit
    job = cluster["api"].get(JOBS, cluster["ns"], job_name)
    assert job is not None
    rule = job["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and 2 in rule["onExitCodes"]["values"]
    assert [c["reason"] for c in job["status"]["conditions"]] == ["PodFailurePolicy"]
    unlearned = _condition(done, "Unlearned")
    assert (unlearned["status"], unlearned["reason"]) == ("False", "BadConfig")
    assert "from_a_newer_operator" in unlearned["message"]  # the trainer's termination message
    assert status["completionTime"]
    assert _alias(cluster, model).version == "v1"


@pytest.mark.parametrize("runner_class", [ImagePullRunner])
def test_an_image_that_cannot_be_pulled_fails_the_request_when_the_pod_says_so(
        cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The Pod watch: with the periodic look 600 s apart, only the Pod's own event can fail it in time."""
    monkeypatch.setenv("FORGETMI_PROGRESS_INTERVAL_SECONDS", "600")
    with operator(cluster["ns"]):
        _apply(cluster, "nopull")
        done = wait_for(lambda: _finished(cluster, "nopull"), 30, "Failed")
    unlearned = _condition(done, "Unlearned")
    assert (unlearned["status"], unlearned["reason"]) == ("False", "ImagePullBackOff"), done["status"]
    assert "ghcr.io/forgetmi/missing:0" in unlearned["message"]
    assert cluster["api"].get(JOBS, cluster["ns"], done["status"]["jobName"]) is None  # deleted: never started


@pytest.mark.parametrize("runner_class", [UnschedulableRunner])
def test_pod_pending_past_the_timeout_fails_with_the_scheduler_message(cluster: dict[str, Any]) -> None:
    with operator(cluster["ns"]):
        model = _apply(cluster, "pending")
        job = wait_for(lambda: cluster["api"].list(JOBS, cluster["ns"]), 30, "the Job")[0]
        started = time.monotonic()
        done = wait_for(lambda: _finished(cluster, "pending"), 30, "Failed")
        waited = time.monotonic() - started
    status = done["status"]
    assert status["phase"] == "Failed", status
    assert waited >= 1.0  # not before the 2 s timeout (Kubernetes times are in whole seconds)
    unlearned = _condition(done, "Unlearned")
    assert (unlearned["status"], unlearned["reason"]) == ("False", "Unschedulable")
    assert "could not be scheduled for more than 2 s" in unlearned["message"]
    assert "Insufficient nvidia.com/gpu" in unlearned["message"]
    assert status["completionTime"]
    # A Job whose Pod never started is deleted so it stops holding a queue slot or a GPU; it is
    # not recreated.
    wait_for(lambda: cluster["api"].get(JOBS, cluster["ns"], job["metadata"]["name"]) is None, 30, "Job deleted")
    assert _created_jobs(cluster) == [job["metadata"]["name"]]
    assert _alias(cluster, model).version == "v1"

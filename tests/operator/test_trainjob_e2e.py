"""The TrainJob engine end to end: the real operator (Kopf, in a thread) against the emulated API server,
with Kubeflow Trainer v2 installed on it (``harness.cluster.install_trainer``) and the TrainJob runner of
``tests/harness/trainjobrunner.py`` running each TrainJob's command (``forgetmi_trainer launch``, torchrun)
locally with the ``PET_*`` env Trainer's ``torch-distributed`` runtime sets, over moto S3.

A request asking for 2 processes on one node (CPU, gloo) runs as a TrainJob of ``numProcPerNode: 2`` to
Promoted; one whose ranks fail ends Failed with the failing rank's own sentence; on a cluster without the
Trainer CRDs such a request is refused (``Accepted=False``, ``EngineUnavailable``) before anything is made.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.cluster import JOBS, REQUESTS, SECRETS, TRAINJOBS, operator, start_cluster, wait_for
from harness.jobrunner import CONFIGMAPS, PODS, JobRunner
from harness.trainjobrunner import JOBSET_NAME_LABEL, TrainJobRunner
from harness.world import fitted_world, seed_model
from kubeflow_trainer_api.models.trainer_v1alpha1_train_job import TrainerV1alpha1TrainJob

from forgetmi_operator.registry import aliases as registry
from forgetmi_trainer import storage
from forgetmi_trainer.storage import DEFAULT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
PASSING_GATES = [{"metric": "testAUC", "comparator": "atLeast", "threshold": 0.0, "reference": "absolute"}]
TERMINAL = ("Promoted", "Failed", "Held")
RUN_TIMEOUT = 150.0
TWO_CPU_PROCESSES = {"processesPerNode": 2, "gpus": 0}


@pytest.fixture(scope="module")
def world(s3_server: str) -> Iterator[dict[str, Any]]:
    """A bucket with a small dataset and one trained model (version v1), fitted once per module."""
    with fitted_world(s3_server, prefix="tj") as fitted:
        yield fitted


def _cluster(world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *,
             trainer: bool) -> Iterator[dict[str, Any]]:
    api, namespace = start_cluster(tmp_path, monkeypatch.setenv, trainer=trainer)
    with JobRunner(api, tmp_path / "jobs") as jobs, TrainJobRunner(api, tmp_path / "trainjobs") as trainjobs:
        try:
            yield {"api": api, "ns": namespace, "jobs": jobs, "trainjobs": trainjobs, "world": world}
        finally:
            api.stop()
    assert not jobs.errors and not trainjobs.errors, (jobs.errors, trainjobs.errors)


@pytest.fixture
def cluster(world: dict[str, Any], s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            caplog: pytest.LogCaptureFixture) -> Iterator[dict[str, Any]]:
    """A cluster with Kubeflow Trainer v2 (its CRDs served, ``torch-distributed`` installed)."""
    caplog.set_level(logging.DEBUG)
    for folder in ("jobs", "trainjobs"):
        (tmp_path / folder).mkdir()
    yield from _cluster(world, tmp_path, monkeypatch, trainer=True)


@pytest.fixture
def bare_cluster(world: dict[str, Any], s3_env: str, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A cluster without the Trainer CRDs (``trainer.kubeflow.org`` is not served)."""
    for folder in ("jobs", "trainjobs"):
        (tmp_path / folder).mkdir()
    yield from _cluster(world, tmp_path, monkeypatch, trainer=False)


def _apply(cluster: dict[str, Any], name: str, *, manifest: str | None = None) -> str:
    """Copy v1 to model ``m-<name>``, a subjects Secret, and a request for 2 CPU processes on one node."""
    world, api, ns = cluster["world"], cluster["api"], cluster["ns"]
    model = f"m-{name}"
    seed_model(world, model)
    api.create(SECRETS, ns, {"metadata": {"name": f"{name}-subjects"}, "type": "Opaque", "data": {
        "subjects": base64.b64encode("\n".join(world["subjects"]).encode()).decode()}})
    body = {
        "model": {"registryUri": world["registry"], "name": model, "alias": "production"},
        "data": {"manifestUri": manifest or world["manifest"]},
        "forget": {"subjectsSecretRef": {"name": f"{name}-subjects", "key": "subjects"}},
        "method": {"epochs": 1, "batchSize": 16},
        "gates": PASSING_GATES,
        "rollout": {"mode": "Automatic"},
        "resources": TWO_CPU_PROCESSES,
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


def _created(cluster: dict[str, Any], key: tuple[str, str, str]) -> list[str]:
    return [name for k, _, name in cluster["api"].created if k == key]


def _node_pod(cluster: dict[str, Any], trainjob: str) -> dict[str, Any]:
    (pod,) = [p for p in cluster["api"].list(PODS, cluster["ns"])
              if p["metadata"]["labels"].get(JOBSET_NAME_LABEL) == trainjob]
    return pod


def test_two_processes_run_as_a_trainjob_to_promoted(cluster: dict[str, Any]) -> None:
    api, ns = cluster["api"], cluster["ns"]
    with operator(ns):
        model = _apply(cluster, "ddp")
        done = wait_for(lambda: _finished(cluster, "ddp"), RUN_TIMEOUT, "the request to finish")
    status = done["status"]
    assert status["phase"] == "Promoted", status
    assert _created(cluster, JOBS) == []  # the TrainJob engine, not a batch/v1 Job
    (name,) = _created(cluster, TRAINJOBS)
    assert status["jobName"] == name
    trainjob = api.get(TRAINJOBS, ns, name)
    assert trainjob is not None
    spec = {k: v for k, v in trainjob.items() if k != "status"}
    spec["metadata"] = {k: v for k, v in trainjob["metadata"].items()
                        if k in ("name", "namespace", "labels", "annotations", "ownerReferences")}
    assert TrainerV1alpha1TrainJob.from_dict(spec) is not None
    assert trainjob["metadata"]["ownerReferences"][0]["uid"] == done["metadata"]["uid"]
    assert trainjob["spec"]["trainer"]["numNodes"] == 1 and trainjob["spec"]["trainer"]["numProcPerNode"] == 2
    assert trainjob["spec"]["runtimeRef"]["name"] == "torch-distributed"
    assert trainjob["spec"]["trainer"]["command"][:4] == ["python", "-m", "forgetmi_trainer", "launch"]
    conditions = {c["type"]: c for c in trainjob["status"]["conditions"]}
    assert conditions["Complete"]["status"] == "True" and conditions["Complete"]["reason"] == "AllJobsCompleted"
    assert trainjob["status"]["jobsStatus"] == [{"name": "node", "active": 0, "ready": 0, "succeeded": 1,
                                                 "failed": 0, "suspended": 0}]
    env = cluster["trainjobs"].envs[name]
    assert (env["PET_NNODES"], env["PET_NPROC_PER_NODE"], env["PET_NODE_RANK"]) == ("1", "2", "0")
    assert cluster["trainjobs"].exit_codes[name] == [0]
    pod = _node_pod(cluster, name)
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "forgetmi-operator"
    # both ranks joined one process group; rank 0 wrote the report, and it says so
    report = json.loads(storage.read_text(status["report"]["uri"]))
    assert report["environment"]["world_size"] == 2
    candidate = status["candidateModel"]["version"]
    assert registry.resolve_alias(DEFAULT, cluster["world"]["registry"], model, "production").version == candidate
    assert candidate != "v1"


def test_failing_ranks_fail_the_request_with_the_rank_message(cluster: dict[str, Any]) -> None:
    world = cluster["world"]
    # A manifest whose images are missing: accepted (the manifest exists), every rank exits 3.
    text = storage.read_text(world["manifest"]).replace("/data/images/", "/gone/images/")
    broken = f"s3://{world['bucket']}/broken-tj/manifest.csv"
    storage.write_text(broken, text)
    with operator(cluster["ns"]):
        _apply(cluster, "ranks-fail", manifest=broken)
        done = wait_for(lambda: _finished(cluster, "ranks-fail"), RUN_TIMEOUT, "the request to finish")
    assert done["status"]["phase"] == "Failed", done["status"]
    name = done["status"]["jobName"]
    assert _created(cluster, TRAINJOBS) == [name] and _created(cluster, JOBS) == []
    assert cluster["trainjobs"].exit_codes[name] == [3]  # the rank's exit code, not torchrun's 1
    unlearned = _condition(done, "Unlearned")
    assert unlearned["status"] == "False"
    assert unlearned["reason"] == "StorageOrInputError"
    assert "could not be read from storage (it does not exist)" in unlearned["message"]
    assert "jobset failed" not in unlearned["message"]  # the rank's sentence, not the TrainJob's
    terminated = _node_pod(cluster, name)["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3 and "could not be read from storage" in terminated["message"]
    trainjob = cluster["api"].get(TRAINJOBS, cluster["ns"], name)
    assert trainjob is not None
    failed = next(c for c in trainjob["status"]["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and failed["reason"] == "FailedJobs"


def test_a_cluster_without_trainer_refuses_the_request_and_creates_nothing(bare_cluster: dict[str, Any]) -> None:
    cluster = bare_cluster
    api, ns = cluster["api"], cluster["ns"]
    secrets_before = _created(cluster, SECRETS)
    with operator(ns):
        _apply(cluster, "no-trainer")
        done = wait_for(lambda: _finished(cluster, "no-trainer"), 30, "the request to be refused")
    accepted = _condition(done, "Accepted")
    assert accepted["status"] == "False"
    assert accepted["reason"] == "EngineUnavailable"
    assert accepted["message"].startswith("TrainJob needs Kubeflow Trainer v2; install it or use nodes: 1")
    assert done["status"]["phase"] == "Failed"
    assert not done["status"].get("jobName")
    assert _created(cluster, SECRETS) == [*secrets_before, "no-trainer-subjects"]  # no Secret copy
    assert _created(cluster, CONFIGMAPS) == []
    assert _created(cluster, JOBS) == [] and _created(cluster, TRAINJOBS) == []
    assert api.list(PODS, ns) == []
    assert cluster["trainjobs"].started == [] and cluster["jobs"].started == []

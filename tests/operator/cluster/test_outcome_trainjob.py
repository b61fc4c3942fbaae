"""``cluster.outcome`` for a request that runs as a TrainJob: the look reads the TrainJob (as the watch
kept it, else from the API) and its Pods by their JobSet's name, copies rank 0's progress, fails it
with the failed rank's message, and deletes a TrainJob whose Pods never start — never touching a Job."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from harness.clusters import make_cluster

from forgetmi_operator.cluster import outcome, trainjobs
from forgetmi_operator.cluster.trainjobstate import JOBSET_NAME_LABEL
from forgetmi_operator.registry.paths import request_paths
from forgetmi_trainer import storage
from forgetmi_trainer.contract import Progress

NAMESPACE, NAME, UID = "radiology", "forget-0042", "0b3f9c2e-1111-2222-3333-444455556666"
TRAINJOB = trainjobs.trainjob_name(NAME, UID)


class _Kube:
    """Only the TrainJob calls: a Job call would fail the test (AttributeError)."""

    def __init__(self, trainjob: dict[str, Any] | None, pods: list[dict[str, Any]]) -> None:
        self.trainjob, self.pods = trainjob, pods
        self.calls: list[str] = []

    async def get_trainjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(f"get_trainjob {name}")
        return self.trainjob

    async def list_pods_for_trainjob(self, namespace: str, name: str) -> list[dict[str, Any]]:
        self.calls.append(f"list_pods_for_trainjob {name}")
        return self.pods

    async def delete_trainjob(self, namespace: str, name: str) -> bool:
        self.calls.append(f"delete_trainjob {name}")
        return True


@pytest.fixture
def body(tmp_path: Path) -> dict[str, Any]:
    conditions = [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "ok",
                   "lastTransitionTime": "2025-01-01T10:00:00Z"},
                  {"type": "Unlearned", "status": "Unknown", "reason": "JobPending", "message": "waits",
                   "lastTransitionTime": "2025-01-01T10:00:00Z"}]
    return {"metadata": {"name": NAME, "namespace": NAMESPACE, "uid": UID, "generation": 1},
            "spec": {"model": {"registryUri": (tmp_path / "registry").as_uri(), "name": "cxr"},
                     "data": {"manifestUri": "s3://data/manifest.csv"},
                     "forget": {"subjectsSecretRef": {"name": "ids", "key": "subjects"}},
                     "resources": {"nodes": 2, "gpus": 4}},
            "status": {"phase": "Pending", "jobName": TRAINJOB, "conditions": conditions}}


def _trainjob(status: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
            "metadata": {"name": TRAINJOB, "namespace": NAMESPACE, "resourceVersion": "3",
                         "ownerReferences": [{"kind": "UnlearnRequest", "name": NAME, "uid": UID}]},
            "status": status}


def _pod(phase: str, state: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": f"{TRAINJOB}-node-0-1-abcde", "labels": {JOBSET_NAME_LABEL: TRAINJOB}},
            "status": {"phase": phase, "containerStatuses": [{"name": "node", "state": state}]}}


ACTIVE = {"jobsStatus": [{"name": "node", "active": 1, "ready": 0, "succeeded": 0, "failed": 0, "suspended": 0}]}


def _unlearned(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Unlearned")


def test_a_running_trainjob_marks_the_request_running_with_rank_0s_progress(body: dict[str, Any]) -> None:
    progress = Progress(epoch=1, epochs=4, percent=25.0, eta_seconds=30.0, loss=0.7, phase="unlearn")
    paths = request_paths(body["spec"]["model"]["registryUri"], "cxr", UID)
    storage.write_text(paths.progress, progress.model_dump_json() + "\n")
    kube = _Kube(_trainjob(ACTIVE), [_pod("Running", {"running": {}})])
    step, state = asyncio.run(outcome.track_job(make_cluster(kube), body))
    assert state.phase == "running"
    assert step.status["progress"]["percent"] == 25.0 and step.status["phase"] == "Running"
    assert kube.calls == [f"get_trainjob {TRAINJOB}", f"list_pods_for_trainjob {TRAINJOB}"]


def test_a_failed_trainjob_fails_the_request_with_the_ranks_message_and_is_kept(body: dict[str, Any]) -> None:
    failed = _trainjob({"conditions": [{"type": "Failed", "status": "True", "reason": "FailedJobs",
                                        "message": "jobset failed due to one or more job failures",
                                        "lastTransitionTime": "2025-01-01T11:00:00Z"}]})
    crashed = {"terminated": {"exitCode": 4, "message": "The loss diverged at epoch 2.", "finishedAt": "x"}}
    kube = _Kube(failed, [_pod("Failed", crashed)])
    step, _ = asyncio.run(outcome.track_job(make_cluster(kube), body))
    unlearned = _unlearned(step.status)
    assert (unlearned["status"], unlearned["reason"], unlearned["message"]) == (
        "False", "Diverged", "The loss diverged at epoch 2.")
    assert step.status["phase"] == "Failed"
    assert not [call for call in kube.calls if call.startswith("delete")]  # its Pods and logs stay


def test_a_trainjob_whose_pods_never_start_is_deleted(body: dict[str, Any]) -> None:
    pulling = {"waiting": {"reason": "ErrImagePull", "message": "not found"}}
    kube = _Kube(_trainjob(ACTIVE), [_pod("Pending", pulling)])
    step, state = asyncio.run(outcome.track_job(make_cluster(kube), body))
    assert (state.reason, _unlearned(step.status)["reason"]) == ("ErrImagePull", "ErrImagePull")
    assert kube.calls[-1] == f"delete_trainjob {TRAINJOB}"
    assert ("Normal", "JobDeleted", f"Deleted TrainJob {TRAINJOB}, whose Pods never started.") in step.events


def test_a_suspended_trainjob_is_left_waiting_without_listing_pods(body: dict[str, Any]) -> None:
    suspended = _trainjob({"conditions": [{"type": "Suspended", "status": "True", "reason": "Suspended",
                                           "message": "TrainJob is suspended",
                                           "lastTransitionTime": "2025-01-01T11:00:00Z"}]})
    kube = _Kube(suspended, [])
    step, state = asyncio.run(outcome.track_job(make_cluster(kube), body))
    assert (state.phase, state.reason) == ("pending", "Suspended") and step.status == {}
    assert kube.calls == [f"get_trainjob {TRAINJOB}"]


def test_the_look_uses_the_trainjob_the_watch_kept_not_a_job_of_that_name(body: dict[str, Any]) -> None:
    kube = _Kube(None, [_pod("Running", {"running": {}})])
    cluster = make_cluster(kube)
    job_of_that_name = {"metadata": {"name": TRAINJOB, "namespace": NAMESPACE, "resourceVersion": "1"}}
    cluster.scheduler.job_changed(job_of_that_name)  # kept apart from TrainJobs
    assert cluster.scheduler.job_changed(_trainjob(ACTIVE), kind="TrainJob") == (NAMESPACE, NAME)
    step = asyncio.run(outcome._track(cluster, body, set()))
    assert step is not None and step.status["phase"] == "Running"
    assert kube.calls == [f"list_pods_for_trainjob {TRAINJOB}"]  # no GET: the watch's copy was used

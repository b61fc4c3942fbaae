"""cluster.launcher and the engines: a request that needs a TrainJob on a cluster (or an operator) that
cannot run one ends Accepted=False/EngineUnavailable in one reconcile, having created and read
nothing; where Kubeflow Trainer is served, the TrainJob is created instead of a Job, and deleted as a
Job would be.

A real ``file://`` registry (alias production → v7) and manifest, and a fake ``Kube`` that stores
what is created and records every call.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest
from harness.clusters import make_cluster
from harness.registries import point

from forgetmi_operator.api import naming
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.cluster import launcher, trainjobs
from forgetmi_operator.lifecycle.steps import Step

MODEL, NAMESPACE, NAME = "cxr", "radiology", "forget-0042"
UID = "0b3f9c2e-1111-2222-3333-444455556666"
TRAINJOB = trainjobs.trainjob_name(NAME, UID)


class FakeKube:
    """The calls a launch makes; ``served``: whether the cluster serves TrainJobs."""

    def __init__(self, *, served: bool) -> None:
        self.served = served
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[str] = []

    async def api_available(self, group: str, version: str, plural: str) -> bool:
        self.calls.append(f"api_available {group}/{version}/{plural}")
        return self.served and (group, version, plural) == trainjobs.TRAINJOB_API

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(f"get_secret {name}")
        if name == "ids":
            return {"metadata": {"name": name}, "data": {"subjects": base64.b64encode(b"P001\nP002\n").decode()}}
        return self.objects.get(("Secret", name))

    async def _create(self, kind: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        self.calls.append(f"create {kind}")
        key = (kind, body["metadata"]["name"])
        if key in self.objects:
            return self.objects[key], False
        self.objects[key] = {**body, "metadata": {**body["metadata"], "uid": f"uid-of-{key[1]}"}}
        return self.objects[key], True

    async def create_or_get_secret(self, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        return await self._create("Secret", body)

    async def create_or_get_configmap(self, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        return await self._create("ConfigMap", body)

    async def create_or_get_job(self, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        return await self._create("Job", body)

    async def create_or_get_trainjob(self, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        assert self.served, "a TrainJob was created on a cluster that serves none"
        return await self._create("TrainJob", body)

    async def _get(self, kind: str, name: str) -> dict[str, Any] | None:
        self.calls.append(f"get {kind}")
        return self.objects.get((kind, name))

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get("Job", name)

    async def get_trainjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get("TrainJob", name)

    async def _delete(self, kind: str, name: str) -> bool:
        self.calls.append(f"delete {kind} {name}")
        return self.objects.pop((kind, name), None) is not None

    async def delete_job(self, namespace: str, name: str) -> bool:
        return await self._delete("Job", name)

    async def delete_trainjob(self, namespace: str, name: str) -> bool:
        return await self._delete("TrainJob", name)

    async def delete_secret(self, namespace: str, name: str, *, uid: str | None = None) -> bool:
        return await self._delete("Secret", name)


@pytest.fixture
def body(tmp_path: Path) -> dict[str, Any]:
    root = tmp_path / "registry"
    version = root / MODEL / "versions" / "v7"
    version.mkdir(parents=True)
    (version / "config.json").write_text("{}\n")
    (version / "model.safetensors").write_bytes(b"weights")
    point(f"file://{root}", MODEL, "production", "v7")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("sample_id,subject_id,split\ns0,P001,train\ns1,P002,train\ns2,P003,train\n")
    return {
        "apiVersion": "unlearning.forgetmi.io/v1alpha1", "kind": "UnlearnRequest",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": UID, "generation": 1},
        "spec": {"model": {"registryUri": f"file://{root}", "name": MODEL, "alias": "production"},
                 "data": {"manifestUri": f"file://{manifest}"},
                 "forget": {"subjectsSecretRef": {"name": "ids", "key": "subjects"}},
                 "resources": {"nodes": 2, "gpus": 4}},
    }


def _start(kube: FakeKube, body: dict[str, Any], settings: Settings | None = None) -> Step:
    return asyncio.run(launcher.start(make_cluster(kube, settings), body))


def _condition(step: Step, type_: str) -> dict[str, Any]:
    return next(c for c in step.status["conditions"] if c["type"] == type_)


@pytest.mark.parametrize(("served", "settings", "why"), [
    (False, Settings(), "the cluster serves no trainer.kubeflow.org/v1alpha1 trainjobs: Trainer's CRDs are not "
                        "installed"),
    (True, Settings(trainjob_enabled=False), "the operator runs with trainJob.enabled=false"),
])
def test_a_trainjob_request_where_none_can_run_is_not_accepted_and_creates_nothing(
        body: dict[str, Any], served: bool, settings: Settings, why: str) -> None:
    kube = FakeKube(served=served)
    step = _start(kube, body, settings)
    accepted = _condition(step, "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", "EngineUnavailable")
    assert accepted["message"] == ("TrainJob needs Kubeflow Trainer v2; install it or use nodes: 1 (spec.resources "
                                   f"asks for 2 node(s) × 4 process(es), engine Auto; {why}).")
    assert step.status["phase"] == "Failed" and [r for _, r, _ in step.events] == ["EngineUnavailable"]
    assert step.error is not None and not step.error.retryable and "jobName" not in step.status
    # one reconcile, and nothing read or created: no Secret copy, no ConfigMap, no TrainJob (nor a Job)
    discovery = ["api_available trainer.kubeflow.org/v1alpha1/trainjobs"]
    assert kube.calls == (discovery if settings.trainjob_enabled else [])
    assert not kube.objects


def test_an_explicit_trainjob_engine_on_one_node_needs_trainer_too(body: dict[str, Any]) -> None:
    body["spec"]["resources"] = {"nodes": 1, "engine": "TrainJob"}
    step = _start(FakeKube(served=False), body)
    assert _condition(step, "Accepted")["reason"] == "EngineUnavailable"


def test_a_one_process_request_runs_as_a_job_without_asking_for_trainer(body: dict[str, Any]) -> None:
    """An operator on a cluster without Trainer runs Job requests as before: discovery is never asked."""
    body["spec"]["resources"] = {"gpus": 1}
    kube = FakeKube(served=False)
    step = _start(kube, body)
    assert step.status["phase"] == "Pending" and step.status["jobName"] == naming.job_name(NAME, UID)
    assert [c for c in kube.calls if c.startswith(("create", "api_available"))] == [
        "create Secret", "create ConfigMap", "create Job"]


@pytest.mark.parametrize(("queue", "waits"), [(None, "its Pods to start"),
                                              ("gpu-queue", "its queue gpu-queue to admit it (Kueue)")])
def test_where_trainer_is_served_the_trainjob_is_created_instead_of_a_job(
        body: dict[str, Any], queue: str | None, waits: str) -> None:
    if queue:
        body["spec"]["queueName"] = queue
    kube = FakeKube(served=True)
    step = _start(kube, body)
    assert [c for c in kube.calls if c.startswith("create")] == ["create Secret", "create ConfigMap", "create TrainJob"]
    trainjob = kube.objects[("TrainJob", TRAINJOB)]
    assert trainjob["kind"] == "TrainJob" and step.status["jobName"] == TRAINJOB
    assert _condition(step, "Unlearned")["message"] == f"TrainJob {TRAINJOB} was created and waits for {waits}."
    assert [message for _, reason, message in step.events if reason == "JobCreated"] == [
        f"Created TrainJob {TRAINJOB} for model {MODEL} version v7."]


def test_a_trainjob_launch_that_fails_for_good_deletes_the_trainjob_an_earlier_attempt_made(
        body: dict[str, Any]) -> None:
    kube = FakeKube(served=True)
    _start(kube, body)
    kube.objects[("TrainJob", TRAINJOB)]["metadata"]["ownerReferences"] = [{"uid": UID}]
    body["spec"]["model"]["alias"] = "gone"
    step = _start(kube, body)
    assert [r for _, r, _ in step.events] == ["InputNotFound"]
    assert f"delete TrainJob {TRAINJOB}" in kube.calls and "get Job" not in kube.calls
    assert not {kind for kind, _ in kube.objects} & {"TrainJob", "Secret"}


def test_a_deleted_requests_trainjob_is_deleted_with_it(body: dict[str, Any]) -> None:
    kube = FakeKube(served=True)
    step = _start(kube, body)
    asyncio.run(launcher.remove(make_cluster(kube), {**body, "status": step.status}))
    assert f"delete TrainJob {TRAINJOB}" in kube.calls and not [c for c in kube.calls if c.startswith("delete Job")]
    assert ("TrainJob", TRAINJOB) not in kube.objects

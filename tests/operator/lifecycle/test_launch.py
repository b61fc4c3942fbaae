"""lifecycle.launch (with the cluster's ports) and cluster.launcher: the forget list is read once and
copied; a retried launch uses the copy; a launch that fails for good leaves no Job and no copy.

A real ``file://`` registry (alias production → v7) and manifest, and a fake ``Kube`` that
stores what is created.
"""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from harness.clusters import make_cluster
from harness.registries import point

from forgetmi_operator.api import naming
from forgetmi_operator.api.errors import InputUnreadable, SubjectsError
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.cluster import launcher
from forgetmi_operator.cluster.context import Cluster
from forgetmi_operator.lifecycle import subjects
from forgetmi_operator.lifecycle.launch import launch
from forgetmi_operator.lifecycle.steps import Step
from forgetmi_operator.lifecycle.subjects import build_snapshot_secret
from forgetmi_trainer.contract import now

MODEL, NAMESPACE, NAME = "cxr", "radiology", "forget-0042"
UID = "0b3f9c2e-1111-2222-3333-444455556666"
PATIENTS = ["P001", "P002", "P003", "P004"]
SNAPSHOT = naming.subjects_secret_name(NAME, UID)


class FakeKube:
    """The calls a launch makes; the referenced Secret holds ``referenced`` (None: gone)."""

    def __init__(self, referenced: str | None) -> None:
        self.referenced = referenced
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[str] = []
        self.deleted: list[tuple[str, str]] = []

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        if name == "ids":  # the referenced Secret
            self.calls.append("read referenced")
            if self.referenced is None:
                return None
            encoded = base64.b64encode(self.referenced.encode()).decode()
            return {"metadata": {"name": name}, "data": {"subjects": encoded}}
        self.calls.append("get_secret")
        return self.objects.get(("Secret", name))

    async def _create_or_get(self, kind: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        self.calls.append(f"create {kind}")
        key = (kind, body["metadata"]["name"])
        if key in self.objects:
            return self.objects[key], False
        self.objects[key] = {**body, "metadata": {**body["metadata"], "uid": f"uid-of-{key[1]}"}}
        return self.objects[key], True

    async def create_or_get_secret(self, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        return await self._create_or_get("Secret", body)

    async def create_or_get_configmap(self, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        return await self._create_or_get("ConfigMap", body)

    async def create_or_get_job(self, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        return await self._create_or_get("Job", body)

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append("get_job")
        return self.objects.get(("Job", name))

    async def delete_job(self, namespace: str, name: str) -> bool:
        self.deleted.append(("Job", name))
        return self.objects.pop(("Job", name), None) is not None

    async def delete_secret(self, namespace: str, name: str, *, uid: str | None = None) -> bool:
        self.deleted.append(("Secret", name))
        return self.objects.pop(("Secret", name), None) is not None


@pytest.fixture
def body(tmp_path: Path) -> dict[str, Any]:
    root = tmp_path / "registry"
    version = root / MODEL / "versions" / "v7"
    version.mkdir(parents=True)
    (version / "config.json").write_text("{}\n")
    (version / "model.safetensors").write_bytes(b"weights")
    point(f"file://{root}", MODEL, "production", "v7")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("sample_id,subject_id,split\n" + "".join(f"s{i},{p},train\n" for i, p in enumerate(PATIENTS)))
    return {
        "apiVersion": "unlearning.forgetmi.io/v1alpha1", "kind": "UnlearnRequest",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": UID, "generation": 1},
        "spec": {"model": {"registryUri": f"file://{root}", "name": MODEL, "alias": "production"},
                 "data": {"manifestUri": f"file://{manifest}"},
                 "forget": {"subjectsSecretRef": {"name": "ids", "key": "subjects"}}},
    }


def _cluster(kube: FakeKube) -> Cluster:
    return make_cluster(kube)


def _launch(kube: FakeKube, body: dict[str, Any]) -> Step:
    return asyncio.run(launch(_cluster(kube).ports, body))


def _copied(kube: FakeKube) -> list[str]:
    return base64.b64decode(kube.objects[("Secret", SNAPSHOT)]["data"]["subjects"]).decode().split()


def test_a_first_launch_reads_the_referenced_list_once_and_copies_it_before_the_job(body: dict[str, Any]) -> None:
    kube = FakeKube("P001\nP002\n")
    step = _launch(kube, body)
    assert kube.calls == ["read referenced", "create Secret", "create ConfigMap", "create Job"]  # no extra GET
    assert _copied(kube) == ["P001", "P002"]
    assert step.status["subjectCount"] == 2 and step.status["phase"] == "Pending"
    job = kube.objects[("Job", naming.job_name(NAME, UID))]
    assert {"name": "subjects", "secret": {"secretName": SNAPSHOT, "items": [{"key": "subjects", "path": "subjects"}],
                                           "defaultMode": 0o440}} in job["spec"]["template"]["spec"]["volumes"]


def test_a_launch_tried_again_keeps_the_copy_whatever_the_referenced_list_became(body: dict[str, Any]) -> None:
    """A retry, or a restart that cut the first attempt short after the copy: the copy made first
    is what the Job forgets, whether the referenced list changed, turned invalid or went."""
    kube = FakeKube("P001\nP002\n")
    _launch(kube, body)
    for referenced in ("P003\nP004\nP001\n", "P001\nP999\n", None):
        del kube.objects[("Job", naming.job_name(NAME, UID))]  # the earlier attempt stopped before its Job
        kube.referenced = referenced
        step = _launch(kube, body)
        assert step.status["subjectCount"] == 2 and _copied(kube) == ["P001", "P002"]
        assert step.status["subjectsSecretName"] == SNAPSHOT
        assert ("Job", naming.job_name(NAME, UID)) in kube.objects


def test_without_a_copy_a_referenced_list_that_does_not_pass_fails_the_launch(body: dict[str, Any]) -> None:
    kube = FakeKube("P001\nP999\n")
    with pytest.raises(SubjectsError, match=r"1 of 2 forget subjects in Secret radiology/ids key 'subjects' have no "
                                            r"training samples"):
        _launch(kube, body)
    assert kube.calls == ["read referenced", "get_secret"] and not kube.objects


def test_a_forget_list_too_large_for_a_secret_fails_naming_its_source_and_creates_nothing(
        body: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subjects, "MAX_SUBJECTS_BYTES", 9)
    kube = FakeKube("P001\nP002\n")  # 10 bytes as one ID per line
    with pytest.raises(SubjectsError, match=r"The forget list in Secret radiology/ids key 'subjects' takes 10 bytes "
                                            r"as one ID per line \(2 subjects\), more than the 9 bytes"):
        _launch(kube, body)
    assert not kube.objects


def test_a_manifest_larger_than_the_setting_fails_the_launch_and_creates_nothing(body: dict[str, Any]) -> None:
    """``manifest_max_bytes`` (chart value manifestMaxBytes) is what :func:`accept` reads of a manifest."""
    kube = FakeKube("P001\n")
    cluster = make_cluster(kube, Settings(manifest_max_bytes=1024))
    Path(body["spec"]["data"]["manifestUri"].removeprefix("file://")).write_text(
        "sample_id,subject_id,split\n" + "".join(f"s{i},P001,train\n" for i in range(100)))
    with pytest.raises(InputUnreadable, match=r"spec\.data\.manifestUri .*manifest\.csv is 1[0-9]{3} bytes, "
                                              r"more than the 1024 the operator reads \(manifestMaxBytes\)\."):
        asyncio.run(launch(cluster.ports, body))
    assert not kube.objects


def test_a_launch_that_fails_for_good_leaves_no_job_and_no_copy(body: dict[str, Any]) -> None:
    """An earlier attempt created the copy and the Job but its status was not saved; the retry
    now fails (the model's alias is gone): the request is Failed and nothing of it keeps running."""
    kube = FakeKube("P001\n")
    _launch(kube, body)
    body["spec"]["model"]["alias"] = "gone"
    step = asyncio.run(launcher.start(_cluster(kube), body))
    assert step.status["phase"] == "Failed" and [r for _, r, _ in step.events] == ["InputNotFound"]
    assert step.error is not None and "spec.model" in step.error.message
    assert kube.deleted == [("Job", naming.job_name(NAME, UID)), ("Secret", SNAPSHOT)]
    assert not {kind for kind, _ in kube.objects} & {"Job", "Secret"}


def test_a_failed_launch_never_deletes_a_job_the_request_does_not_own(body: dict[str, Any]) -> None:
    kube = FakeKube(None)
    foreign = {"metadata": {"name": naming.job_name(NAME, UID), "ownerReferences": [{"uid": "another"}]}}
    kube.objects[("Job", naming.job_name(NAME, UID))] = foreign
    step = asyncio.run(launcher.start(_cluster(kube), body))
    assert step.error is not None and "Secret radiology/ids does not exist" in step.error.message
    assert kube.deleted == [] and [r for _, r, _ in step.events] == ["SecretNotFound"]


def test_a_launched_or_ended_request_is_not_launched_again(body: dict[str, Any]) -> None:
    kube = FakeKube("P001\n")
    for status in ({"jobName": "forgetmi-x"}, {"phase": "Held"}):
        assert asyncio.run(launcher.start(_cluster(kube), {**body, "status": status})).status == {}
    assert kube.calls == ["get_secret"]  # the ended one's copy of its list is looked for, nothing is created


def _ended(completed: str) -> dict[str, Any]:
    conditions = [{"type": t, "status": s, "reason": r, "message": m, "lastTransitionTime": completed}
                  for t, s, r, m in (("Accepted", "True", "Accepted", "ok"),
                                     ("Unlearned", "True", "JobSucceeded", "ok"),
                                     ("GatesPassed", "True", "GatesPassed", "ok"),
                                     ("Promoted", "True", "Promoted", "Alias 'production' now names v7-x."))]
    return {"phase": "Promoted", "conditions": conditions, "completionTime": completed, "jobName": "forgetmi-x"}


def test_a_request_that_ended_just_before_a_restart_gets_its_copy_deleted_and_its_event_posted(
        body: dict[str, Any]) -> None:
    """A kill right after the terminal status was saved left the copy of the forget list and lost the
    Event: Kopf resumes the request when the operator starts again, and both are done then."""
    kube = FakeKube("P001\n")
    copy_name = naming.subjects_secret_name(NAME, UID)
    kube.objects[("Secret", copy_name)] = build_snapshot_secret(["P001"], name=NAME, namespace=NAMESPACE, uid=UID)
    kube.objects[("Secret", copy_name)]["metadata"]["uid"] = "copy-uid"
    step = asyncio.run(launcher.start(_cluster(kube), {**body, "status": _ended(now())}))
    assert ("Secret", copy_name) in kube.deleted and ("Secret", copy_name) not in kube.objects
    assert step.events == [("Normal", "Promoted", "Alias 'production' now names v7-x.")] and step.status == {}
    old = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert asyncio.run(launcher.start(_cluster(kube), {**body, "status": _ended(old)})).events == []  # expired


@pytest.mark.parametrize(("field", "value"), [
    ("image", "attacker.example/evil:latest"),
    ("serviceAccountName", "cluster-admin-sa"),
    ("priorityClassName", "system-node-critical"),
    ("tolerations", [{"operator": "Exists"}]),
])
def test_a_request_the_pod_policy_forbids_is_not_accepted_and_creates_nothing(field: str, value: Any) -> None:
    """The cluster admin's pod policy (chart values trainer.allowed*) is checked before anything is
    read or created: the request is Accepted=False, Failed, and no Secret copy, ConfigMap or Job exists."""
    kube = FakeKube("P001\n")
    request = {
        "apiVersion": "unlearning.forgetmi.io/v1alpha1", "kind": "UnlearnRequest",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": UID, "generation": 1},
        "spec": {"model": {"registryUri": "s3://models/registry", "name": MODEL},
                 "data": {"manifestUri": "s3://data/manifest.csv"},
                 "forget": {"subjectsSecretRef": {"name": "ids", "key": "subjects"}},
                 field: value},
    }
    step = asyncio.run(launcher.start(_cluster(kube), request))
    assert step.status["phase"] == "Failed" and [r for _, r, _ in step.events] == ["Forbidden"]
    accepted = next(c for c in step.status["conditions"] if c["type"] == "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", "Forbidden")
    assert accepted["message"].split()[0] in (f"spec.{field}", f"spec.{field}[0]")
    assert "is not allowed; the cluster admin allows" in accepted["message"]
    assert not kube.objects and "read referenced" not in kube.calls
    assert not [call for call in kube.calls if call.startswith("create")]


# ---- reference models (LiRA gates) ----------------------------------------------------------------

LIRA_GATES = [{"metric": "testAUC", "comparator": "maxDrop", "threshold": 0.02, "reference": "original"},
              {"metric": "liraTPR5", "comparator": "atMost", "threshold": 0.1, "bound": "upper"}]


def test_a_lira_gate_without_reference_models_fails_before_anything_is_created(body: dict[str, Any]) -> None:
    kube = FakeKube("P001\n")
    body["spec"]["gates"] = LIRA_GATES
    step = asyncio.run(launcher.start(_cluster(kube), body))
    assert step.status["phase"] == "Failed" and [r for _, r, _ in step.events] == ["ReferencesMissing"]
    registry, manifest = body["spec"]["model"]["registryUri"], body["spec"]["data"]["manifestUri"]
    assert step.error is not None
    assert step.error.message == (
        f"The gates on liraTPR5 need reference models of model {MODEL} version v7, but "
        f"{registry}/{MODEL}/references/v7/meta.json does not exist; nothing was started. Create them with "
        f"`forgetmi-trainer references --model {registry}/{MODEL}/versions/v7 --manifest {manifest} --k 4`, then "
        "create the request again.")
    assert not {kind for kind, _ in kube.objects} & {"Job", "Secret"}


def test_a_lira_gate_with_reference_models_launches(body: dict[str, Any]) -> None:
    kube = FakeKube("P001\n")
    body["spec"]["gates"] = LIRA_GATES
    references = Path(body["spec"]["model"]["registryUri"].removeprefix("file://")) / MODEL / "references" / "v7"
    references.mkdir(parents=True)
    (references / "meta.json").write_text("{}\n")
    step = _launch(kube, body)
    assert step.status["phase"] == "Pending" and ("Job", naming.job_name(NAME, UID)) in kube.objects


def test_default_gates_on_lira_need_the_references_too(body: dict[str, Any]) -> None:
    kube = FakeKube("P001\n")
    settings = Settings(default_gates=[{"metric": "liraAUC", "comparator": "atMost", "threshold": 0.6}])
    step = asyncio.run(launcher.start(make_cluster(kube, settings), body))
    assert [r for _, r, _ in step.events] == ["ReferencesMissing"]
    assert step.error is not None and "The gates on liraAUC need reference models" in step.error.message
    assert not {kind for kind, _ in kube.objects} & {"Job", "Secret"}


def test_a_retrained_version_the_registry_does_not_hold_fails_the_launch(body: dict[str, Any]) -> None:
    kube = FakeKube("P001\n")
    body["spec"]["audit"] = {"retrainedVersion": "v7-retrained"}
    step = asyncio.run(launcher.start(_cluster(kube), body))
    assert [r for _, r, _ in step.events] == ["InputNotFound"]
    assert step.error is not None and step.error.message.startswith(
        "spec.audit.retrainedVersion: version v7-retrained of model cxr has no model.safetensors in the registry")
    assert not {kind for kind, _ in kube.objects} & {"Job", "Secret"}
    retrained = Path(body["spec"]["model"]["registryUri"].removeprefix("file://")) / MODEL / "versions" / "v7-retrained"
    retrained.mkdir()
    (retrained / "model.safetensors").write_bytes(b"retrained weights")
    step = _launch(FakeKube("P001\n"), body)
    assert step.status["phase"] == "Pending"

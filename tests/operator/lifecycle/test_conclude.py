"""lifecycle.conclude with the cluster's ports: nothing changes until every check passed, and a
rollout that fails is undone; cluster.outcome.track_job: a Job gone after its report is concluded.

A real ``file://`` registry (base version, alias, the trainer's candidate and report) and a fake
``Kube`` that records what was patched and fails where a test says so.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from harness.clusters import make_cluster
from harness.registries import point
from harness.reports import make_report
from kubernetes import client

from forgetmi_operator.api import conditions as cond
from forgetmi_operator.api import naming
from forgetmi_operator.api.errors import (
    ClusterUnavailable,
    DigestMismatch,
    ObjectRejected,
    RegistryUnavailable,
    ReportInvalid,
    ServingTargetError,
)
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.cluster import outcome, targets
from forgetmi_operator.cluster.context import Cluster
from forgetmi_operator.cluster.kube import Kube
from forgetmi_operator.lifecycle import receipts
from forgetmi_operator.lifecycle.conclude import Outcome, conclude
from forgetmi_operator.lifecycle.steps import Step, failure
from forgetmi_operator.lifecycle.subjects import build_snapshot_secret
from forgetmi_operator.registry import aliases as registry
from forgetmi_operator.registry.paths import request_paths, version_uri
from forgetmi_trainer import storage
from forgetmi_trainer.contract import Report
from forgetmi_trainer.errors import StorageUnavailable
from forgetmi_trainer.storage import DEFAULT

MODEL, ALIAS, NAMESPACE, NAME = "cxr", "production", "radiology", "forget-0042"
UID = "0b3f9c2e-1111-2222-3333-444455556666"
SUBJECTS = ["P001", "P002", "P003"]
SNAPSHOT = naming.subjects_secret_name(NAME, UID)


class FakeKube:
    """The calls a conclusion makes; ``fail`` maps a method name to the errors it raises, in turn.
    ``snapshot`` is the request's subjects Secret (None: gone); ``hmac_key`` the receipt key."""

    def __init__(self) -> None:
        self.fail: dict[str, list[Exception]] = {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.snapshot: dict[str, Any] | None = build_snapshot_secret(SUBJECTS, name=NAME, namespace=NAMESPACE,
                                                                          uid=UID)
        self.hmac_key: bytes | None = None
        self.job: dict[str, Any] | None = None  # None: gone (deleted, or removed by its TTL)
        self.created: list[dict[str, Any]] = []

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        queue = self.fail.get(name)
        if queue:
            raise queue.pop(0)

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._call("get_secret", namespace, name)
        if (namespace, name) == (NAMESPACE, "subjects"):  # the referenced Secret, edited since acceptance
            return {"data": {"ids": "UDAwOQpQMDA4ClAwMDcK"}}
        return self.snapshot if (namespace, name) == (NAMESPACE, SNAPSHOT) else None

    async def read_hmac_key(self) -> bytes | None:
        self._call("read_hmac_key")
        return self.hmac_key

    async def check_deployment(self, namespace: str, name: str, container: str | None, env: str) -> None:
        self._call("check_deployment", namespace, name, container, env)

    async def patch_deployment_env(self, namespace: str, name: str, container: str | None, env: str,
                                   value: str) -> None:
        self._call("patch_deployment_env", namespace, name, container, env, value)

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._call("get_job", namespace, name)
        return self.job

    async def create_or_get_secret(self, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        self._call("create_or_get_secret", namespace, body["metadata"]["name"])
        self.created.append(body)
        return body, True

    async def create_or_get_configmap(self, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        self._call("create_or_get_configmap", namespace, body["metadata"]["name"])
        return body, True

    async def create_or_get_job(self, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        self._call("create_or_get_job", namespace, body["metadata"]["name"])
        return body, True

    def patched(self) -> list[tuple[Any, ...]]:
        return [args for name, args in self.calls if name == "patch_deployment_env"]


def _version(root: Path, version: str, weights: bytes) -> str:
    """A version as the trainer publishes it (its files, then metadata.json with their digests)."""
    directory = root / MODEL / "versions" / version
    directory.mkdir(parents=True)
    (directory / "config.json").write_text("{}\n")
    (directory / "model.safetensors").write_bytes(weights)
    files = {"config.json": hashlib.sha256(b"{}\n").hexdigest(),
             "model.safetensors": hashlib.sha256(weights).hexdigest()}
    (directory / "metadata.json").write_text(json.dumps({"version": version, "files": files}))
    return files["model.safetensors"]


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    """A registry with alias production → v7, and the trainer's candidate and report for the request."""
    root = tmp_path / "registry"
    reg = f"file://{root}"
    base_sha = _version(root, "v7", b"base weights")
    point(reg, MODEL, ALIAS, "v7")
    candidate_version = naming.candidate_version("v7", UID)
    candidate_sha = _version(root, candidate_version, b"unlearned weights")
    raw = make_report().model_dump()
    raw.update({
        "request": f"{NAMESPACE}/{NAME}", "candidate_version": candidate_version,
        "base": {"uri": version_uri(reg, MODEL, "v7"), "sha256": base_sha},
        "candidate": {"uri": version_uri(reg, MODEL, candidate_version), "sha256": candidate_sha},
    })
    report = Report.model_validate(raw)
    paths = request_paths(reg, MODEL, UID)
    storage.write_bytes(paths.report, report.to_json().encode())
    body = {
        "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": UID, "generation": 1,
                     "creationTimestamp": "2026-12-01T00:00:00Z"},
        "spec": {"model": {"registryUri": reg, "name": MODEL, "alias": ALIAS},
                 "data": {"manifestUri": "file:///data/manifest.csv"},
                 "forget": {"subjectsSecretRef": {"name": "subjects", "key": "ids"}},
                 "rollout": {"mode": "Automatic", "target": {"kind": "Deployment", "name": "cxr-server"}}},
        "status": {"jobName": naming.job_name(NAME, UID), "subjectCount": 3, "subjectsSecretName": SNAPSHOT,
                   "baseModel": {"version": "v7", "uri": version_uri(reg, MODEL, "v7"), "sha256": base_sha}},
    }
    return {"reg": reg, "body": body, "paths": paths, "candidate": candidate_version, "report": report}


def _cluster(kube: FakeKube, **settings: Any) -> Cluster:
    return make_cluster(kube, Settings(**{"serving_targets_enabled": True, **settings}), receipt_key=kube.read_hmac_key)


def _evaluate(world: dict[str, Any], kube: FakeKube, **settings: Any) -> Outcome:
    return asyncio.run(conclude(_cluster(kube, **settings).ports, world["body"]))


def _token(world: dict[str, Any]) -> str:
    return registry.resolve_alias(DEFAULT, world["reg"], MODEL, ALIAS).token


def _alias(world: dict[str, Any]) -> str:
    return registry.resolve_alias(DEFAULT, world["reg"], MODEL, ALIAS).version


def _condition(step: Step, type: str) -> dict[str, Any]:
    return next(c for c in step.status["conditions"] if c["type"] == type)


@pytest.fixture(autouse=True)
def _no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(targets, "TARGET_RETRY_SECONDS", 0.0)


def test_a_passing_request_promotes_patches_the_target_and_writes_the_receipt(world: dict[str, Any]) -> None:
    kube = FakeKube()
    result = _evaluate(world, kube)
    assert _alias(world) == world["candidate"]
    assert [args[-1] for args in kube.patched()] == [version_uri(world["reg"], MODEL, world["candidate"])]
    assert result.step.status["phase"] == "Promoted"
    assert storage.exists(world["paths"].receipt) and result.step.status["receipt"]["uri"] == world["paths"].receipt
    reasons = [reason for _, reason, _ in result.step.events]
    assert reasons == [cond.JOB_SUCCEEDED, cond.GATES_PASSED, cond.PROMOTED]


def test_a_target_that_cannot_be_patched_is_found_before_the_alias_moves(world: dict[str, Any]) -> None:
    kube = FakeKube()
    kube.fail["check_deployment"] = [ServingTargetError("Serving target Deployment radiology/cxr-server has no "
                                                        "container (none).")]
    result = _evaluate(world, kube)
    assert _alias(world) == "v7" and kube.patched() == []
    promoted = _condition(result.step, "Promoted")
    assert (promoted["status"], promoted["reason"]) == ("False", "ServingTargetError")
    assert result.step.status["phase"] == "Held"
    # the evaluation stays in status
    assert result.step.status["gates"] and result.step.status["candidateModel"]["version"] == world["candidate"]
    assert _condition(result.step, "GatesPassed")["status"] == "True"
    receipt = json.loads(storage.read_text(world["paths"].receipt))  # it says why nothing was promoted
    assert receipt["decision"] == "Promote" and receipt.get("promotion") is None
    assert receipt["notPromoted"]["reason"] == "ServingTargetError"


def test_a_rollout_that_fails_after_the_alias_moved_moves_it_back(world: dict[str, Any]) -> None:
    kube = FakeKube()
    kube.fail["patch_deployment_env"] = [ObjectRejected("The API server refused to patch Deployment "
                                                        "radiology/cxr-server as invalid (HTTP 422): denied.")]
    result = _evaluate(world, kube)
    assert _alias(world) == "v7"
    record = registry.resolve_alias(DEFAULT, world["reg"], MODEL, ALIAS).record
    assert record.previous == world["candidate"]  # the history says what happened
    promoted = _condition(result.step, "Promoted")
    assert promoted["reason"] == "ServingTargetError"
    assert "The rollout was undone: Alias 'production' of model 'cxr' was moved back to version 'v7'." in \
        promoted["message"]
    assert result.step.status["phase"] == "Held"


def test_a_transient_target_error_is_tried_again_before_giving_up(world: dict[str, Any]) -> None:
    kube = FakeKube()
    kube.fail["patch_deployment_env"] = [ClusterUnavailable("x"), ClusterUnavailable("y")]
    result = _evaluate(world, kube)
    assert len(kube.patched()) == 3 and _alias(world) == world["candidate"]
    assert result.step.status["phase"] == "Promoted"
    kube = FakeKube()
    world["body"]["metadata"]["uid"] = UID  # same request, alias reset below (a record without its promotion)
    alias = Path(world["reg"].removeprefix("file://")) / MODEL / "aliases" / f"{ALIAS}.json"
    alias.unlink()
    point(world["reg"], MODEL, ALIAS, "v7")
    Path(world["paths"].receipt.removeprefix("file://")).unlink()
    kube.fail["patch_deployment_env"] = [ClusterUnavailable(f"down {i}") for i in range(targets.TARGET_ATTEMPTS)]
    result = _evaluate(world, kube)
    assert len(kube.patched()) == targets.TARGET_ATTEMPTS and _alias(world) == "v7"
    assert _condition(result.step, "Promoted")["reason"] == "ServingTargetError"


def test_the_receipt_attests_the_list_as_accepted_not_the_referenced_secret_edited_since(
        world: dict[str, Any]) -> None:
    kube = FakeKube()
    kube.hmac_key = b"k" * 32
    _evaluate(world, kube)
    assert _alias(world) == world["candidate"]
    assert [args[1] for name, args in kube.calls if name == "get_secret"] == [SNAPSHOT]  # never the edited one
    receipt = json.loads(storage.read_bytes(world["paths"].receipt))
    assert receipt["subjects"]["count"] == 3
    assert receipt["subjects"]["hmac"] == receipts.subjects_hmac(SUBJECTS, kube.hmac_key)


def test_a_snapshot_that_disagrees_with_the_job_report_is_not_promoted(world: dict[str, Any]) -> None:
    kube = FakeKube()
    kube.snapshot = build_snapshot_secret([*SUBJECTS, "P004"], name=NAME, namespace=NAMESPACE, uid=UID)
    result = _evaluate(world, kube)
    assert _alias(world) == "v7" and kube.patched() == []
    promoted = _condition(result.step, "Promoted")
    assert promoted["reason"] == "InvalidSubjects"
    assert f"Secret {NAMESPACE}/{SNAPSHOT} (the forget list as accepted) holds 4 subjects, but the Job's " \
           "report counts 3: nothing was promoted" in promoted["message"]
    assert "P004" not in json.dumps(result.step.status) + repr(result.step.events)


def test_a_snapshot_deleted_after_the_job_leaves_everything_unchanged(world: dict[str, Any]) -> None:
    kube = FakeKube()
    kube.snapshot = None
    result = _evaluate(world, kube)
    assert _alias(world) == "v7" and kube.patched() == []
    promoted = _condition(result.step, "Promoted")
    assert promoted["reason"] == "InvalidSubjects" and "is gone" in promoted["message"]
    assert result.step.status["phase"] == "Held"
    assert not storage.exists(world["paths"].receipt)


def test_a_snapshot_this_request_does_not_own_is_never_trusted(world: dict[str, Any]) -> None:
    kube = FakeKube()
    kube.snapshot = build_snapshot_secret(SUBJECTS, name=NAME, namespace=NAMESPACE, uid=UID)
    kube.snapshot["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    result = _evaluate(world, kube)
    assert _alias(world) == "v7" and kube.patched() == []
    assert "is not owned by this UnlearnRequest" in _condition(result.step, "Promoted")["message"]


@pytest.mark.parametrize("launched_with_copy", [True, False])
def test_a_request_whose_copy_is_gone_is_never_decided_on_the_referenced_list(world: dict[str, Any],
                                                                             launched_with_copy: bool) -> None:
    kube = FakeKube()
    kube.snapshot = None
    if not launched_with_copy:
        del world["body"]["status"]["subjectsSecretName"]
    result = _evaluate(world, kube)
    assert "is gone" in _condition(result.step, "Promoted")["message"] and _alias(world) == "v7"
    assert [args[1] for name, args in kube.calls if name == "get_secret"] == [SNAPSHOT] and not kube.created


def test_an_unreadable_snapshot_is_retried_not_decided(world: dict[str, Any]) -> None:
    kube = FakeKube()
    kube.fail["get_secret"] = [ClusterUnavailable("The API server could not be reached to read Secret x.")]
    with pytest.raises(ClusterUnavailable):
        _evaluate(world, kube)
    assert _alias(world) == "v7" and not storage.exists(world["paths"].receipt)


def test_a_disabled_serving_target_is_said_not_skipped_silently(world: dict[str, Any]) -> None:
    kube = FakeKube()
    result = _evaluate(world, kube, serving_targets_enabled=False)
    assert _alias(world) == world["candidate"] and kube.calls[-1][0] == "read_hmac_key"
    assert "was not patched: serving targets are disabled" in _condition(result.step, "Promoted")["message"]
    assert "ServingTargetSkipped" in [reason for _, reason, _ in result.step.events]


def test_a_report_from_another_base_is_never_promoted(world: dict[str, Any]) -> None:
    world["body"]["status"]["baseModel"]["sha256"] = "d" * 64
    with pytest.raises(ReportInvalid, match=r"request pinned version v7 with sha256 d{64}; nothing was promoted"):
        _evaluate(world, FakeKube())
    assert _alias(world) == "v7"


def test_a_receipt_that_cannot_be_written_yet_is_retried_and_the_retry_completes(
        world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    real = storage.Objects.write_bytes
    calls = {"n": 0}

    def flaky(self: storage.Objects, uri: str, data: bytes) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise StorageUnavailable("S3 answered 503")
        return real(self, uri, data)

    monkeypatch.setattr(storage.Objects, "write_bytes", flaky)
    with pytest.raises(RegistryUnavailable):
        _evaluate(world, FakeKube())
    assert _alias(world) == world["candidate"]  # promoted; the retry repeats it as a no-op
    result = _evaluate(world, FakeKube())
    assert result.step.status["phase"] == "Promoted" and storage.exists(world["paths"].receipt)


def test_unmeasured_metrics_are_written_as_null_so_a_merge_patch_removes_old_values(world: dict[str, Any]) -> None:
    result = _evaluate(world, FakeKube(), serving_targets_enabled=False)
    metrics = result.step.status["metrics"]
    assert set(metrics) == {"forgetAUC", "forgetF1", "testAUC", "testF1", "mia", "miaAUC", "attackAUC",
                            "logitNormAUC", "liraTPR5", "liraAUC"}
    assert all(set(pair) == {"original", "unlearned", "retrained"} for pair in metrics.values())
    assert metrics["liraAUC"]["retrained"] is None  # no retrained model in this report: null, removed by the patch


def test_a_promotion_replaced_before_its_status_was_written_is_promoted_with_the_later_move(
        world: dict[str, Any]) -> None:
    """An operator restart lost the status of a promotion, and another request moved the alias on
    meanwhile: the request is Promoted (its promotion took effect, the alias history shows it), its
    receipt records the later move, and nothing is changed (no target patch to an older model)."""
    assert _evaluate(world, FakeKube(), serving_targets_enabled=False).step.status["phase"] == "Promoted"
    Path(world["paths"].receipt.removeprefix("file://")).unlink()  # the restart came before the receipt
    _version(Path(world["reg"].removeprefix("file://")), "v8", b"newer weights")
    point(world["reg"], MODEL, ALIAS, "v8", expected_token=_token(world))
    kube = FakeKube()
    result = _evaluate(world, kube)
    promoted = _condition(result.step, "Promoted")
    assert (promoted["status"], promoted["reason"]) == ("True", "Promoted")
    assert f"was moved to version {world['candidate']} (was v7) by this request and has since been moved on to v8" \
        in promoted["message"]
    assert _alias(world) == "v8" and kube.patched() == []
    receipt = json.loads(storage.read_text(world["paths"].receipt))
    assert receipt["promotion"] == {"alias": ALIAS, "version": world["candidate"], "previous": "v7",
                                    "movedOnTo": "v8"}


def test_an_alias_moved_by_someone_else_is_a_conflict_and_nothing_is_promoted(world: dict[str, Any]) -> None:
    _version(Path(world["reg"].removeprefix("file://")), "v8", b"newer weights")
    point(world["reg"], MODEL, ALIAS, "v8", expected_token=_token(world))
    kube = FakeKube()
    result = _evaluate(world, kube)
    assert "now names version 'v8', not the base version 'v7'; nothing was promoted" in \
        _condition(result.step, "Promoted")["message"]
    assert _alias(world) == "v8" and kube.patched() == [] and result.step.status["phase"] == "Held"
    # rebasing it was tried: accepting it again on v8 failed (this world has no manifest), so it is held
    assert "Rebasing it on version 'v8' failed: spec.data.manifestUri" in _condition(result.step, "Promoted")["message"]
    receipt = json.loads(storage.read_text(world["paths"].receipt))
    assert receipt["notPromoted"]["reason"] == "PromotionConflict" and receipt["decision"] == "Promote"


@pytest.mark.parametrize(("rollout", "why"), [
    ({"onConflict": "Hold"}, "spec.rollout.onConflict is Hold, so it is held."),
    ({"maxRebases": 0}, "It was rebased 0 times, spec.rollout.maxRebases, so it is held."),
])
def test_a_request_that_may_not_rebase_is_held_with_a_receipt_saying_why(world: dict[str, Any],
                                                                         rollout: dict[str, Any], why: str) -> None:
    _version(Path(world["reg"].removeprefix("file://")), "v8", b"newer weights")
    point(world["reg"], MODEL, ALIAS, "v8", expected_token=_token(world))
    world["body"]["spec"]["rollout"].update(rollout)
    result = _evaluate(world, FakeKube())
    promoted = _condition(result.step, "Promoted")
    assert (promoted["status"], promoted["reason"]) == ("False", "PromotionConflict") and why in promoted["message"]
    assert json.loads(storage.read_text(world["paths"].receipt))["notPromoted"]["message"] == promoted["message"]
    assert _alias(world) == "v8" and "rebases" not in result.step.status


def test_a_job_removed_after_it_wrote_its_report_is_evaluated_not_failed(world: dict[str, Any]) -> None:
    """An operator down for longer than the Job's TTL finds the Job gone: the report (written last)
    says the run finished, so the request is evaluated rather than failed as JobMissing."""
    step, state = asyncio.run(outcome.track_job(_cluster(FakeKube()), world["body"]))
    assert state.phase == "succeeded" and "conditions" not in step.status


def test_a_job_gone_without_a_report_fails_the_request(world: dict[str, Any]) -> None:
    Path(world["paths"].report.removeprefix("file://")).unlink()
    step, state = asyncio.run(outcome.track_job(_cluster(FakeKube()), world["body"]))
    assert (state.phase, state.reason) == ("failed", "JobMissing")
    assert step.status["phase"] == "Failed"


def _report(world: dict[str, Any], **changes: Any) -> None:
    raw = world["report"].model_dump()
    raw.update(changes)
    storage.write_bytes(world["paths"].report, Report.model_validate(raw).to_json().encode())


def test_a_report_naming_any_other_directory_is_invalid_and_nothing_is_promoted(world: dict[str, Any]) -> None:
    """A decoy: a faithful copy of the candidate elsewhere (with the digests the report states), while
    the version directory the operator assigned holds other bytes."""
    root = Path(world["reg"].removeprefix("file://"))
    _version(root, "decoy", b"unlearned weights")
    _report(world, candidate={"uri": version_uri(world["reg"], MODEL, "decoy"),
                              "sha256": world["report"].candidate.sha256})
    with pytest.raises(ReportInvalid, match=r"names candidate .*/versions/decoy, not "
                                            r".*/versions/v7-unlearned-0b3f9c2e, the version directory the "
                                            r"operator assigned to this request"):
        _evaluate(world, FakeKube())
    assert _alias(world) == "v7"


def test_a_report_pointing_at_a_decoy_while_the_assigned_directory_holds_other_bytes_is_held(
        world: dict[str, Any]) -> None:
    """The probe's attack: a faithful copy elsewhere for the report to name, and other weights in the
    directory the operator assigned. The operator hashes its own directory first: DigestMismatch."""
    root = Path(world["reg"].removeprefix("file://"))
    _version(root, "decoy", b"unlearned weights")
    _report(world, candidate={"uri": version_uri(world["reg"], MODEL, "decoy"),
                              "sha256": world["report"].candidate.sha256})
    (root / MODEL / "versions" / world["candidate"] / "model.safetensors").write_bytes(b"EVIL-WEIGHTS")
    kube = FakeKube()
    with pytest.raises(DigestMismatch, match=r"versions/v7-unlearned-0b3f9c2e"):
        _evaluate(world, kube)
    assert _alias(world) == "v7" and kube.patched() == []


@pytest.mark.parametrize("forgery", ["other bytes", "forged metadata", "an extra file"])
def test_a_candidate_whose_bytes_are_not_what_was_reported_is_held_with_digest_mismatch(
        world: dict[str, Any], forgery: str) -> None:
    directory = Path(world["reg"].removeprefix("file://")) / MODEL / "versions" / world["candidate"]
    if forgery == "other bytes":  # new weights and a metadata.json that agrees with them: the report does not
        (directory / "model.safetensors").write_bytes(b"EVIL-WEIGHTS")
        metadata = json.loads((directory / "metadata.json").read_text())
        metadata["files"]["model.safetensors"] = hashlib.sha256(b"EVIL-WEIGHTS").hexdigest()
        (directory / "metadata.json").write_text(json.dumps(metadata))
    elif forgery == "forged metadata":  # new weights, metadata.json left as it was
        (directory / "model.safetensors").write_bytes(b"EVIL-WEIGHTS")
    else:
        (directory / "adapter.safetensors").write_bytes(b"EVIL-ADAPTER")
    kube = FakeKube()
    with pytest.raises(DigestMismatch) as err:
        _evaluate(world, kube)
    assert _alias(world) == "v7" and kube.patched() == []
    step = failure(world["body"], err.value, accepting=False)  # what both paths record for it
    assert step.status["phase"] == "Held"
    promoted = _condition(step, "Promoted")
    assert (promoted["status"], promoted["reason"]) == ("False", "DigestMismatch")


def _report_with(world: dict[str, Any], group: str, key: str, value: float | None) -> None:
    """Rewrite the trainer's report with one unlearned metric replaced, as a trainer could write it."""
    raw = json.loads(world["report"].to_json())
    raw["unlearned"][group][key] = value
    storage.write_bytes(world["paths"].report, json.dumps(raw).encode())  # NaN and Infinity as Python writes them


@pytest.mark.parametrize("value", [1e308, -5.0, float("nan"), float("inf")])
def test_a_report_with_a_metric_out_of_range_is_invalid_and_never_promoted(world: dict[str, Any],
                                                                            value: float) -> None:
    _report_with(world, "split", "test_auc", value)
    kube = FakeKube()
    with pytest.raises(ReportInvalid, match=r"is malformed: unlearned\.split\.test_auc: "):
        _evaluate(world, kube)
    assert _alias(world) == "v7" and kube.patched() == [] and not storage.exists(world["paths"].receipt)


def test_an_unmeasured_metric_is_inconclusive_and_holds_the_request(world: dict[str, Any]) -> None:
    raw = json.loads(world["report"].to_json())
    raw["unlearned"]["mia"].update(attack_auc=None, attack_auc_ci=None)
    storage.write_bytes(world["paths"].report, json.dumps(raw).encode())
    kube = FakeKube()
    result = _evaluate(world, kube)
    assert [gate["result"] for gate in result.step.status["gates"]] == ["Passed", "Passed", "Inconclusive"]
    assert _condition(result.step, "GatesPassed")["reason"] == cond.GATES_INCONCLUSIVE
    assert result.step.status["phase"] == "Held" and _alias(world) == "v7" and kube.patched() == []


class _Deployments:
    """The apps API a real :class:`Kube` calls: reads return ``deployment``, patches are recorded."""

    def __init__(self, deployment: dict[str, Any]) -> None:
        self.deployment, self.patches = deployment, []

    def read_namespaced_deployment(self, *args: Any, **kwargs: Any) -> Any:
        return type("Response", (), {"data": json.dumps(self.deployment).encode()})()

    def patch_namespaced_deployment(self, name: str, namespace: str, body: Any, **kwargs: Any) -> Any:
        self.patches.append(body)
        return self.read_namespaced_deployment()


class TargetKube(FakeKube):
    """FakeKube whose serving-target calls are the real client's, on one Deployment."""

    def __init__(self, deployment: dict[str, Any]) -> None:
        super().__init__()
        self.real = Kube(client.ApiClient(client.Configuration()), request_timeout_seconds=1.0)
        self.real.apps = self.apps = _Deployments(deployment)  # type: ignore[assignment]

    async def check_deployment(self, namespace: str, name: str, container: str | None, env: str) -> None:
        self._call("check_deployment", namespace, name, container, env)
        await self.real.check_deployment(namespace, name, container, env)

    async def patch_deployment_env(self, namespace: str, name: str, container: str | None, env: str,
                                   value: str) -> None:
        self._call("patch_deployment_env", namespace, name, container, env, value)
        await self.real.patch_deployment_env(namespace, name, container, env, value)


def _deployment(annotations: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": "cxr-server", "namespace": NAMESPACE, "annotations": annotations},
            "spec": {"template": {"spec": {"containers": [
                {"name": "server", "env": [{"name": "DATABASE_URL", "value": "postgres://db"}]}]}}}}


@pytest.mark.parametrize(("annotations", "env", "missing"), [
    ({}, None, "unlearning.forgetmi.io/model-env"),
    ({naming.MODEL_ENV_ANNOTATION: "FORGETMI_MODEL_URI", naming.MODEL_CONTAINER_ANNOTATION: "server"},
     "DATABASE_URL", "unlearning.forgetmi.io/model-env"),
    ({naming.MODEL_ENV_ANNOTATION: "FORGETMI_MODEL_URI"}, None, "unlearning.forgetmi.io/model-container"),
])
def test_a_deployment_that_did_not_opt_in_holds_the_request_and_keeps_the_alias(
        world: dict[str, Any], annotations: dict[str, str], env: str | None, missing: str) -> None:
    if env is not None:
        world["body"]["spec"]["rollout"]["target"]["env"] = env
    kube = TargetKube(_deployment(annotations))
    result = _evaluate(world, kube)
    promoted = _condition(result.step, "Promoted")
    assert (promoted["status"], promoted["reason"]) == ("False", "ServingTargetError")
    assert f"Deployment {NAMESPACE}/cxr-server" in promoted["message"] and missing in promoted["message"]
    assert result.step.status["phase"] == "Held" and _alias(world) == "v7"
    assert kube.apps.patches == []
    assert json.loads(storage.read_text(world["paths"].receipt))["notPromoted"]["reason"] == "ServingTargetError"


def test_an_opted_in_deployment_is_patched_with_tests_on_its_annotations(world: dict[str, Any]) -> None:
    kube = TargetKube(_deployment({naming.MODEL_ENV_ANNOTATION: "FORGETMI_MODEL_URI",
                                   naming.MODEL_CONTAINER_ANNOTATION: "server"}))
    result = _evaluate(world, kube)
    assert result.step.status["phase"] == "Promoted" and _alias(world) == world["candidate"]
    (ops,) = kube.apps.patches
    assert {"op": "test", "path": "/metadata/annotations/unlearning.forgetmi.io~1model-env",
            "value": "FORGETMI_MODEL_URI"} in ops
    assert ops[-1]["value"] == [{"name": "DATABASE_URL", "value": "postgres://db"},
                                {"name": "FORGETMI_MODEL_URI", "value": version_uri(world["reg"], MODEL,
                                                                                     world["candidate"])}]


def test_a_retrain_the_pod_policy_no_longer_allows_is_held_and_creates_no_job(world: dict[str, Any]) -> None:
    """The admin narrowed the policy after the request was accepted: its retrain Job is not built."""
    world["body"]["spec"]["priorityClassName"] = "batch-low"
    world["body"]["spec"]["gates"] = [{"metric": "testAUC", "comparator": "atLeast", "threshold": 0.99}]
    world["body"]["spec"]["rollout"] = {"mode": "Automatic", "onGateFailure": "Retrain"}
    kube = FakeKube()
    result = _evaluate(world, kube)
    promoted = _condition(result.step, "Promoted")
    assert (promoted["status"], promoted["reason"]) == ("False", "Forbidden")
    assert "spec.priorityClassName" in promoted["message"] and result.step.status["phase"] == "Held"
    assert not [name for name, _ in kube.calls if name in ("create_or_get_configmap", "create_or_get_job")]
    assert _alias(world) == "v7"


# ---- reference models: retired on promotion --------------------------------------------------------


def _references(world: dict[str, Any], version: str = "v7") -> Path:
    folder = Path(world["reg"].removeprefix("file://")) / MODEL / "references" / version
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text('{"k": 4}\n')
    (folder / "stats.npz").write_bytes(b"per-sample statistics")
    return folder


def test_a_promotion_retires_the_base_versions_reference_models(world: dict[str, Any]) -> None:
    folder = _references(world)
    result = _evaluate(world, FakeKube())
    assert result.step.status["phase"] == "Promoted" and _alias(world) == world["candidate"]
    assert storage.list_uris(f"file://{folder}") == []
    promoted = _condition(result.step, "Promoted")
    assert promoted["message"].endswith(
        f"The reference models of version v7 were retired (2 objects under file://{folder} deleted): they were "
        "trained on the forgotten patients.")
    assert ("Normal", "ReferencesRetired") in [(kind, reason) for kind, reason, _ in result.step.events]
    base = Path(world["reg"].removeprefix("file://")) / MODEL / "versions" / "v7"
    assert (base / "model.safetensors").exists()  # the version itself stays


def test_references_that_cannot_be_retired_never_block_or_undo_the_promotion(world: dict[str, Any],
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _references(world)

    def refuse(self: Any, uri: str) -> None:
        raise StorageUnavailable(f"{uri}: the store did not answer")

    monkeypatch.setattr(type(DEFAULT), "delete", refuse)
    result = _evaluate(world, FakeKube())
    assert result.step.status["phase"] == "Promoted" and _alias(world) == world["candidate"]
    promoted = _condition(result.step, "Promoted")
    assert f"The reference models of version v7 (file://{folder}) were trained on the forgotten patients but " \
        "could not be retired" in promoted["message"]
    assert promoted["message"].endswith("delete them by hand.")
    assert (folder / "meta.json").exists()


def test_a_held_request_keeps_the_reference_models(world: dict[str, Any]) -> None:
    folder = _references(world)
    raw = json.loads(world["report"].to_json())
    raw["unlearned"]["split"]["forget_auc"] = raw["original"]["split"]["forget_auc"]  # forget AUC did not drop
    storage.write_bytes(world["paths"].report, json.dumps(raw).encode())
    result = _evaluate(world, FakeKube())
    assert result.step.status["phase"] == "Held" and (folder / "meta.json").exists()


def test_a_promotion_without_reference_models_says_nothing_about_them(world: dict[str, Any]) -> None:
    result = _evaluate(world, FakeKube())
    assert "reference models" not in _condition(result.step, "Promoted")["message"]
    assert result.step.status["attackAuc"] == 0.52

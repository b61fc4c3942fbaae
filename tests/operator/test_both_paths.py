"""One lifecycle: the same request and the same trainer report, taken through the cluster path
(``cluster.launcher.start`` → a Job → ``cluster.outcome.look``) and through ``forgetmi run``
(``local.run.run_request``), end in the same status, conditions, gate results and receipt.

Both share one real ``file://`` registry and manifest. In the cluster a fake API server keeps
what the operator creates and reports the Job as succeeded; locally the trainer process is
replaced by the same stand-in. The stand-in writes what a trainer writes: the candidate's files
and the report (identical bytes for both paths, so every digest must agree).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness.clusters import make_cluster
from harness.registries import point
from harness.reports import make_report

from forgetmi_operator.api import naming
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.cluster import launcher, outcome
from forgetmi_operator.cluster.scheduler import is_open
from forgetmi_operator.lifecycle.steps import merge_patch
from forgetmi_operator.local import run as local_run
from forgetmi_operator.local.ports import LocalRun, LocalTrainers
from forgetmi_operator.registry import aliases
from forgetmi_operator.registry.paths import alias_uri, request_dir_uri, request_paths, version_uri
from forgetmi_trainer import storage
from forgetmi_trainer.contract import JobConfig, Report
from forgetmi_trainer.storage import DEFAULT

MODEL, NAMESPACE, NAME = "cxr", "radiology", "forget-0042"
UID = "0b3f9c2e-1111-2222-3333-444455556666"
PATIENTS = ["P001", "P002", "P003"]
KEY = b"receipt-key\n"
TIMES = ("lastTransitionTime", "startTime", "completionTime")


@dataclass(frozen=True)
class Case:
    spec: dict[str, Any]
    phase: str
    unlearned: dict[str, float] | None = None
    """The unlearned model's metrics in the report, over harness.reports' defaults."""
    failure: tuple[int, str] | None = None
    """The trainer's exit code and termination message when it fails."""
    base_sha256: str | None = None
    """The base digest the report claims (default: the pinned base's)."""


def _trainer_output(config: JobConfig, case: Case) -> None:
    """What the trainer writes for ``config``: the candidate version's files, then the report."""
    weights = f"weights of {config.candidate_version}".encode()
    files = {"config.json": storage.write_text(storage.join(config.output_uri, "config.json"), "{}\n"),
             "model.safetensors": storage.write_bytes(storage.join(config.output_uri, "model.safetensors"), weights)}
    storage.write_json(storage.join(config.output_uri, "metadata.json"), {"files": files})
    raw = make_report(unlearned=case.unlearned).model_dump()
    base_sha256 = case.base_sha256 or hashlib.sha256(b"base weights").hexdigest()
    raw.update(request=config.request, candidate_version=config.candidate_version, method=config.method.name,
               base={"uri": config.model.uri, "sha256": base_sha256},
               candidate={"uri": config.output_uri, "sha256": hashlib.sha256(weights).hexdigest()})
    raw["counts"]["subjects"] = len(PATIENTS)
    storage.write_text(config.resolved_report_uri, Report.model_validate(raw).to_json())


class FakeApiServer:
    """Secrets, ConfigMaps and Jobs as the API server keeps them; a created Job "runs" the stand-in."""

    def __init__(self, case: Case) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {
            ("Secret", "ids"): {"metadata": {"name": "ids"},
                                "data": {"subjects": base64.b64encode("\n".join(PATIENTS).encode()).decode()}},
            ("Secret", "receipt-key"): {"metadata": {"name": "receipt-key"},
                                        "data": {"key": base64.b64encode(KEY).decode()}},
        }
        self.case, self.failure = case, case.failure
        self.request: dict[str, Any] = {}
        self.version = 1
        self.status: dict[str, Any] = {}

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get(("Secret", name)))

    async def _create(self, kind: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        key = (kind, body["metadata"]["name"])
        if key in self.objects:
            return self.objects[key], False
        self.objects[key] = {**body, "metadata": {**body["metadata"], "uid": f"uid-{key[1]}"}}
        return self.objects[key], True

    async def create_or_get_secret(self, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        return await self._create("Secret", body)

    async def create_or_get_configmap(self, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        return await self._create("ConfigMap", body)

    async def create_or_get_job(self, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        made = await self._create("Job", body)
        configmap = self.objects[("ConfigMap", body["metadata"]["name"])]
        if self.failure is None:
            _trainer_output(JobConfig.model_validate_json(configmap["data"]["job.json"]), self.case)
        return made

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        job = self.objects.get(("Job", name))
        if job is None or self.failure is not None:
            return None if job is None else {**job, "status": {"failed": 1, "conditions": [
                {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": "exit code"}]}}
        return {**job, "status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}}

    async def list_pods_for_job(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        if self.failure is None:
            return []
        code, message = self.failure
        return [{"metadata": {"name": f"{job_name}-x1", "labels": {"job-name": job_name}}, "status": {
            "phase": "Failed", "containerStatuses": [{"name": "trainer", "state": {"terminated": {
                "exitCode": code, "message": message, "finishedAt": "2026-12-01T00:01:00Z"}}}]}}]

    async def delete_job(self, namespace: str, name: str) -> bool:
        return self.objects.pop(("Job", name), None) is not None

    async def delete_secret(self, namespace: str, name: str, *, uid: str | None = None) -> bool:
        return self.objects.pop(("Secret", name), None) is not None

    async def patch_request_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.status = merge_patch(self.status, status)
        self.version += 1
        return {**self.request, "metadata": {**self.request["metadata"], "resourceVersion": str(self.version)},
                "status": copy.deepcopy(self.status)}


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    root = tmp_path / "registry"
    registry = f"file://{root}"
    base = root / MODEL / "versions" / "v7"
    base.mkdir(parents=True)
    (base / "config.json").write_text("{}\n")
    (base / "model.safetensors").write_bytes(b"base weights")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("sample_id,subject_id,split\n" + "".join(f"s{i},{p},train\n" for i, p in
                                                                 enumerate([*PATIENTS, "P004"])))
    return {"registry": registry, "manifest": f"file://{manifest}", "work": tmp_path / "local"}


def _reset(world: dict[str, Any]) -> None:
    """Alias production → v7, and nothing of an earlier request left in the registry."""
    registry = world["registry"]
    try:
        token = aliases.resolve_alias(DEFAULT, registry, MODEL, "production").token
    except aliases.ModelNotFound:
        token = None
    if token is not None:  # a fresh record: the history of an earlier run would show its promotion
        Path(alias_uri(registry, MODEL, "production").removeprefix("file://")).unlink()
    point(registry, MODEL, "production", "v7")
    candidates = [naming.candidate_version("v7", UID, kind=kind) for kind in ("unlearn", "retrain")]
    for uri in (request_dir_uri(registry, MODEL, UID), *(version_uri(registry, MODEL, v) for v in candidates)):
        shutil.rmtree(uri.removeprefix("file://"), ignore_errors=True)


def _request(world: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "unlearning.forgetmi.io/v1alpha1", "kind": "UnlearnRequest",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": UID, "generation": 1,
                     "creationTimestamp": "2026-12-01T00:00:00Z", "annotations": spec.pop("annotations", {})},
        "spec": {"model": {"registryUri": world["registry"], "name": MODEL, "alias": "production"},
                 "data": {"manifestUri": world["manifest"]},
                 "forget": {"subjectsSecretRef": {"name": "ids", "key": "subjects"}}, **spec},
    }


def _through_the_cluster(body: dict[str, Any], case: Case) -> tuple[dict[str, Any], FakeApiServer]:
    settings = Settings(receipt_hmac_secret_name="receipt-key", operator_namespace="forgetmi-system")
    api = FakeApiServer(case)
    api.request = body

    async def scenario() -> None:
        cluster = make_cluster(api, settings)
        api.status = merge_patch({}, (await launcher.start(cluster, body)).status)
        while is_open({"status": api.status}):  # one look per Job, as its watch events would ask
            entry = cluster.scheduler.observe({**body, "metadata": {**body["metadata"], "resourceVersion": "1"},
                                               "status": api.status})  # kept: the newer patch result wins
            assert entry is not None
            before = copy.deepcopy(api.status)
            await outcome.look(cluster, entry)
            if api.status == before:
                break

    asyncio.run(scenario())
    return api.status, api


def _locally(world: dict[str, Any], body: dict[str, Any], case: Case,
             monkeypatch: pytest.MonkeyPatch) -> local_run.LocalResult:
    def stand_in(self: LocalTrainers, run: LocalRun) -> tuple[int, str]:
        assert Path(str(run.config.forget.file)).read_text() == "".join(f"{p}\n" for p in PATIENTS)
        if case.failure is not None:
            return case.failure
        _trainer_output(run.config, case)
        return 0, ""

    monkeypatch.setattr(LocalTrainers, "run", stand_in)
    return local_run.run_request(body, workdir=world["work"], secrets={"ids": {"subjects": "\n".join(PATIENTS)}},
                                 settings=Settings(), hmac_key=KEY)


def _timeless(status: dict[str, Any]) -> dict[str, Any]:
    """The status without its times (and the receipt's digest, which covers its times: see _receipt)."""
    out = {k: v for k, v in status.items() if k not in TIMES}
    if "receipt" in out:
        out["receipt"] = {"uri": out["receipt"]["uri"]}
    out["conditions"] = [{k: v for k, v in c.items() if k not in TIMES} for c in status.get("conditions", [])]
    return out


def _receipt(status: dict[str, Any]) -> dict[str, Any] | None:
    if "receipt" not in status:
        return None
    receipt = json.loads(storage.read_bytes(status["receipt"]["uri"]))
    assert hashlib.sha256(storage.read_bytes(status["receipt"]["uri"])).hexdigest() == status["receipt"]["sha256"]
    receipt.pop("timestamps")
    return receipt


GATE_FAILS = [{"metric": "testAUC", "comparator": "atLeast", "threshold": 0.99, "reference": "absolute"}]
APPROVED = {"unlearning.forgetmi.io/approved": "true"}
CASES = {
    "promoted": Case({}, "Promoted"),
    "held": Case({"gates": GATE_FAILS}, "Held"),
    "dry run": Case({"rollout": {"mode": "DryRun"}}, "Held"),
    "waits for approval": Case({"rollout": {"mode": "Manual"}}, "Evaluating"),
    "approved": Case({"rollout": {"mode": "Manual"}, "annotations": APPROVED}, "Promoted"),
    "retrained": Case({"gates": GATE_FAILS, "rollout": {"onGateFailure": "Retrain"}}, "Held"),
    "inconclusive": Case({}, "Held", unlearned={"mia_auc": None}),
    "neggrad-plus with options": Case({"method": {"name": "neggrad-plus", "options": {"alpha": 0.5, "bound": 2.0}}},
                                      "Promoted"),
    "trainer exits 3": Case({}, "Failed", failure=(3, "Image s1 could not be read: shard-404.npz does not exist.")),
    "another base": Case({}, "Failed", base_sha256="d" * 64),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_cluster_and_forgetmi_run_reach_the_same_status_and_receipt(
        world: dict[str, Any], case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, phase = CASES[case].spec, CASES[case].phase
    _reset(world)
    cluster_status, api = _through_the_cluster(_request(world, **copy.deepcopy(spec)), CASES[case])
    cluster_receipt = _receipt(cluster_status)
    cluster_alias = aliases.resolve_alias(DEFAULT, world["registry"], MODEL, "production").version
    _reset(world)
    result = _locally(world, _request(world, **copy.deepcopy(spec)), CASES[case], monkeypatch)
    local_status = result.status.model_dump(by_alias=True, exclude_none=True, exclude_defaults=False)
    local_status = {k: v for k, v in local_status.items() if v not in ([], None)}
    assert cluster_status["phase"] == phase
    assert _timeless(local_status) == _timeless(json.loads(json.dumps(cluster_status)))
    assert _receipt(local_status) == cluster_receipt
    assert aliases.resolve_alias(DEFAULT, world["registry"], MODEL, "production").version == cluster_alias
    # a receipt for a decision that ends the request; none while it waits, none for a failure
    assert (cluster_receipt is not None) == (phase in ("Promoted", "Held"))
    # the request's copy of its forget list is gone once it ended (a request waiting for approval keeps it in the
    # cluster; a local run ends with its process)
    copy_name = naming.subjects_secret_name(NAME, UID)
    assert (("Secret", copy_name) in api.objects) == (phase == "Evaluating")
    assert not (world["work"] / "secrets" / copy_name).exists()
    assert request_paths(world["registry"], MODEL, UID).receipt.endswith("receipt.json")

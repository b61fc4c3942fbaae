"""The forget ledger in the lifecycle: acceptance fails closed on a base version that predates an erasure
(before any Job) and, with a ledger key, copies the manifest's previously forgotten patients beside the
forget list (a second Secret key the Job mounts and its config names); a promotion appends the request's
entry once, after the alias moved; a dry run, a hold and an undone rollout add nothing."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from harness import versions
from harness.clusters import make_cluster
from harness.registries import point
from harness.reports import make_report

from forgetmi_operator.api import naming
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.cluster import jobs
from forgetmi_operator.lifecycle import subjects
from forgetmi_operator.lifecycle.conclude import conclude
from forgetmi_operator.lifecycle.launch import launch
from forgetmi_operator.lifecycle.ports import Ports
from forgetmi_operator.registry import aliases, ledger
from forgetmi_operator.registry.paths import request_paths, version_uri
from forgetmi_trainer import storage
from forgetmi_trainer.contract import JobConfig, Report
from forgetmi_trainer.contract.registry import RequestRef
from forgetmi_trainer.storage import DEFAULT

MODEL, ALIAS, NAMESPACE, NAME = "cxr", "production", "radiology", "forget-0042"
UID = "0b3f9c2e-1111-2222-3333-444455556666"
KEY = b"ledger key\n"
PATIENTS = ["P001", "P002", "P003", "P004", "P005"]
EARLIER = RequestRef(namespace=NAMESPACE, name="forget-0041", uid="uid-0041")
SNAPSHOT = naming.subjects_secret_name(NAME, UID)


class FakeKube:
    """Secrets, ConfigMaps and Jobs kept in memory; ``ids`` is the referenced list."""

    def __init__(self, referenced: str) -> None:
        self.referenced = referenced
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        if name == "ids":
            encoded = base64.b64encode(self.referenced.encode()).decode()
            return {"metadata": {"name": name}, "data": {"subjects": encoded}}
        return self.objects.get(("Secret", name))

    async def _create(self, kind: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
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

    async def check_deployment(self, *args: Any) -> None:
        return None


def _version(root: Path, version: str, parent: str | None) -> str:
    return versions.make_version(root, MODEL, version, parent)


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    """v1 → v2 (an earlier request's erasure of P004 and P005, in the ledger); alias production → v2."""
    root = tmp_path / "registry"
    reg = f"file://{root}"
    _version(root, "v1", None)
    _version(root, "v2", "v1")
    point(reg, MODEL, ALIAS, "v2")
    ledger.append(DEFAULT, reg, MODEL, request=EARLIER, digests=ledger.digests_of(KEY, ["P004", "P005"]),
                  base_version="v1", candidate_version="v2")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("sample_id,subject_id,split\n" + "".join(f"s{i},{p},train\n" for i, p in enumerate(PATIENTS)))
    body = {"apiVersion": "unlearning.forgetmi.io/v1alpha1", "kind": "UnlearnRequest",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": UID, "generation": 1},
            "spec": {"model": {"registryUri": reg, "name": MODEL, "alias": ALIAS},
                     "data": {"manifestUri": f"file://{manifest}"},
                     "forget": {"subjectsSecretRef": {"name": "ids", "key": "subjects"}}}}
    return {"reg": reg, "root": root, "body": body}


def _ports(kube: FakeKube, key: bytes | None = KEY, **settings: Any) -> Ports:
    ours = Settings(ledger_key_secret_name="ledger-key" if key else "", **settings)

    async def ledger_key() -> bytes | None:
        return key

    async def no_key() -> bytes | None:
        return None

    return dataclasses.replace(make_cluster(kube, ours, receipt_key=no_key).ports, ledger_key=ledger_key)


def _decoded(secret: dict[str, Any], key: str) -> list[str]:
    return base64.b64decode(secret["data"][key]).decode().split()


def test_acceptance_copies_the_previously_forgotten_patients_and_the_job_mounts_them(world: dict[str, Any]) -> None:
    kube = FakeKube("P001\nP004\n")  # P004 was forgotten before: accepted, forgotten again
    step = asyncio.run(launch(_ports(kube), world["body"]))
    assert step.error is None and step.status["subjectCount"] == 2
    copy = kube.objects[("Secret", SNAPSHOT)]
    assert _decoded(copy, "subjects") == ["P001", "P004"]
    assert _decoded(copy, subjects.PREVIOUSLY_FORGOTTEN_KEY) == ["P004", "P005"]
    job = kube.objects[("Job", naming.job_name(NAME, UID))]
    volume = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "subjects")
    assert {"key": "previously-forgotten", "path": "previously-forgotten"} in volume["secret"]["items"]
    config = JobConfig.model_validate_json(kube.objects[("ConfigMap", naming.configmap_name(NAME, UID))]["data"]
                                           ["job.json"])
    assert config.previously_forgotten is not None
    assert config.previously_forgotten.file == "/var/run/forgetmi/subjects/previously-forgotten"
    assert config.previously_forgotten.sha256 is None  # no unkeyed hash of patient IDs in a ConfigMap
    assert "2 of the manifest's patients were forgotten by earlier erasures" in step.status["conditions"][0]["message"]


def test_without_a_ledger_key_nothing_is_copied_or_mounted(world: dict[str, Any]) -> None:
    kube = FakeKube("P001\n")
    asyncio.run(launch(_ports(kube, key=None), world["body"]))
    assert subjects.PREVIOUSLY_FORGOTTEN_KEY not in kube.objects[("Secret", SNAPSHOT)]["data"]
    config = JobConfig.model_validate_json(kube.objects[("ConfigMap", naming.configmap_name(NAME, UID))]["data"]
                                           ["job.json"])
    assert config.previously_forgotten is None


@pytest.mark.parametrize("key", [KEY, None])
def test_a_base_version_that_predates_an_erasure_is_refused_before_any_job(world: dict[str, Any],
                                                                           key: bytes | None) -> None:
    """The alias was moved back to v1 by hand: a request on it would retrain P004 and P005 into the model."""
    token = aliases.resolve_alias(DEFAULT, world["reg"], MODEL, ALIAS).token
    point(world["reg"], MODEL, ALIAS, "v1", expected_token=token)
    kube = FakeKube("P001\n")
    with pytest.raises(Exception) as err:
        asyncio.run(launch(_ports(kube, key=key), world["body"]))
    assert getattr(err.value, "reason", None) == "PreErasureVersion"
    assert "base version 'v1'" in str(err.value) and "erasure 0" in str(err.value)
    assert kube.objects == {}  # no copy, no ConfigMap, no Job


def test_the_copy_holding_both_lists_must_fit_a_secret(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subjects, "MAX_SUBJECTS_BYTES", 12)  # "P001\n" + "P004\nP005\n" = 15 bytes
    kube = FakeKube("P001\n")
    with pytest.raises(Exception) as err:
        asyncio.run(launch(_ports(kube), world["body"]))
    assert getattr(err.value, "reason", None) == "InvalidSubjects" and "earlier erasures" in str(err.value)


def _concluding(world: dict[str, Any], mode: str = "Automatic") -> tuple[dict[str, Any], FakeKube]:
    """The request accepted on v2 (alias production) with its trainer's candidate and report written."""
    reg, root = world["reg"], world["root"]
    candidate = naming.candidate_version("v2", UID)
    base_sha = aliases.verify_version(DEFAULT, reg, MODEL, "v2").sha256
    candidate_sha = _version(root, candidate, "v2")
    raw = make_report().model_dump()
    raw.update({"request": f"{NAMESPACE}/{NAME}", "candidate_version": candidate,
                "base": {"uri": version_uri(reg, MODEL, "v2"), "sha256": base_sha},
                "candidate": {"uri": version_uri(reg, MODEL, candidate), "sha256": candidate_sha}})
    raw["counts"]["subjects"] = 3
    storage.write_bytes(request_paths(reg, MODEL, UID).report, Report.model_validate(raw).to_json().encode())
    kube = FakeKube("")
    kube.objects[("Secret", SNAPSHOT)] = subjects.build_snapshot_secret(["P001", "P002", "P004"], name=NAME,
                                                                        namespace=NAMESPACE, uid=UID)
    body = {**world["body"], "spec": {**world["body"]["spec"], "rollout": {"mode": mode}, "gates": [
        {"metric": "mia", "comparator": "atMost", "threshold": 1.0, "reference": "absolute"}]},
        "status": {"jobName": naming.job_name(NAME, UID), "subjectCount": 3, "subjectsSecretName": SNAPSHOT,
                   "baseModel": {"version": "v2", "uri": version_uri(reg, MODEL, "v2"), "sha256": base_sha}}}
    return body, kube


def test_a_promotion_appends_its_entry_once(world: dict[str, Any]) -> None:
    body, kube = _concluding(world)
    result = asyncio.run(conclude(_ports(kube), body))
    assert result.step.status["phase"] == "Promoted"
    entries = ledger.read_ledger(DEFAULT, world["reg"], MODEL)
    assert [e.request.uid for e in entries] == ["uid-0041", UID]
    assert entries[1].digests == ledger.digests_of(KEY, ["P001", "P002", "P004"]) and entries[1].count == 3
    assert (entries[1].base_version, entries[1].candidate_version) == ("v2", naming.candidate_version("v2", UID))
    promoted = next(c for c in result.step.status["conditions"] if c["type"] == "Promoted")
    assert "Forget ledger entry 1 records its 3 subjects." in promoted["message"]
    again = asyncio.run(conclude(_ports(kube), body))  # a conclusion repeated (its status was lost)
    assert again.step.status["phase"] == "Promoted" and len(ledger.read_ledger(DEFAULT, world["reg"], MODEL)) == 2
    data = "".join(storage.read_text(u) for u in storage.list_uris(ledger.ledger_uri(world["reg"], MODEL)))
    assert not any(p in data for p in PATIENTS)


@pytest.mark.parametrize("mode", ["DryRun", "Manual"])
def test_a_dry_run_or_a_request_awaiting_approval_adds_nothing(world: dict[str, Any], mode: str) -> None:
    body, kube = _concluding(world, mode)
    asyncio.run(conclude(_ports(kube), body))
    assert len(ledger.read_ledger(DEFAULT, world["reg"], MODEL)) == 1


def test_a_promotion_without_a_ledger_key_writes_no_entry(world: dict[str, Any]) -> None:
    body, kube = _concluding(world)
    assert asyncio.run(conclude(_ports(kube, key=None), body)).step.status["phase"] == "Promoted"
    assert len(ledger.read_ledger(DEFAULT, world["reg"], MODEL)) == 1


def test_a_broken_ledger_stops_the_promotion_before_the_alias_moves(world: dict[str, Any]) -> None:
    body, kube = _concluding(world)
    storage.write_bytes(ledger.entry_uri(world["reg"], MODEL, 2), b"{}")  # entry 1 missing: a gap
    result = asyncio.run(conclude(_ports(kube), body))
    promoted = next(c for c in result.step.status["conditions"] if c["type"] == "Promoted")
    assert (promoted["status"], promoted["reason"]) == ("False", "LedgerInvalid")
    assert aliases.resolve_alias(DEFAULT, world["reg"], MODEL, ALIAS).version == "v2"


def test_build_launch_names_the_previously_forgotten_file_only_when_the_copy_holds_it() -> None:
    from forgetmi_operator.api.spec import UnlearnRequestSpec
    spec = UnlearnRequestSpec.model_validate({
        "model": {"registryUri": "s3://bucket/registry", "name": MODEL, "alias": ALIAS},
        "data": {"manifestUri": "s3://bucket/manifest.csv"},
        "forget": {"subjectsSecretRef": {"name": "ids", "key": "subjects"}}})
    for kind in ("unlearn", "retrain"):
        built = jobs.build_launch(spec, Settings(), name=NAME, namespace=NAMESPACE, uid=UID, base_version="v2",
                                  kind=kind, previously_forgotten=True)  # type: ignore[arg-type]
        assert built.config.previously_forgotten is not None
        assert built.config.previously_forgotten.file == jobs.PREVIOUSLY_FORGOTTEN_PATH
    plain = jobs.build_launch(spec, Settings(), name=NAME, namespace=NAMESPACE, uid=UID, base_version="v2")
    assert plain.config.previously_forgotten is None

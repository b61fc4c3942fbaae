"""``forgetmi run`` / ``forgetmi demo``: the whole pipeline on one machine with a real trainer process.

One module fixture prepares a small generated dataset, an original and a retrained model in a
``file://`` registry (``python -m forgetmi_trainer demo-prepare``); each test then runs a request
through :func:`forgetmi_operator.local.run.run_request` and checks the registry afterwards.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.registries import point

from forgetmi_operator.api.settings import Settings
from forgetmi_operator.local import EXIT_INVALID, EXIT_OK, cli, demo
from forgetmi_operator.local import run as local
from forgetmi_operator.local.ports import trainer_command
from forgetmi_operator.registry import aliases as registry
from forgetmi_operator.registry.paths import alias_uri
from forgetmi_trainer import storage
from forgetmi_trainer.contract import COMPARISON_KEYS, JobConfig, ModelRef, Report
from forgetmi_trainer.storage import DEFAULT

pytestmark = pytest.mark.slow
ENV = {**os.environ, "PYTHONSAFEPATH": "1"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("demo")
    out = subprocess.run([sys.executable, "-m", "forgetmi_trainer", "demo-prepare", "--workdir", str(workdir),
                          "--patients", "40", "--seed", "0"], env=ENV, capture_output=True, text=True, check=True)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "seed": 0, "workdir": workdir}


@pytest.fixture
def fresh_alias(prepared: dict[str, Any]) -> ModelRef:
    """Alias ``production`` → v1, whatever an earlier test promoted."""
    original = ModelRef.model_validate(prepared["original"])
    storage.delete(alias_uri(original.registry_uri, original.name, "production"))
    point(original.registry_uri, original.name, "production", original.version)
    return original


def _request(prepared: dict[str, Any], **spec_changes: Any) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    request, secret = demo.demo_request(prepared)
    request = copy.deepcopy(request)
    request["spec"]["method"]["epochs"] = 10
    request["spec"].update(spec_changes)
    return request, local.read_secrets([secret])


def _alias(original: ModelRef) -> str:
    return registry.resolve_alias(DEFAULT, original.registry_uri, original.name, "production").version


def test_passing_gates_promote_and_write_a_receipt(prepared: dict[str, Any], fresh_alias: ModelRef,
                                                   tmp_path: Path) -> None:
    request, secrets = _request(prepared, gates=[
        {"metric": "testAUC", "comparator": "maxDrop", "threshold": 0.5, "reference": "original"},
        {"metric": "mia", "comparator": "atMost", "threshold": 1.0, "reference": "absolute"},
    ])
    result = local.run_request(request, workdir=tmp_path, secrets=secrets)
    status = result.status
    assert status.phase == "Promoted", status.message
    assert status.candidate_model is not None and _alias(fresh_alias) == status.candidate_model.version
    assert status.subject_count == len(Path(prepared["subjects_file"]).read_text().split())
    assert [c.status for c in status.conditions] == ["True"] * 4
    receipt = storage.read_bytes(status.receipt.uri)
    assert hashlib.sha256(receipt).hexdigest() == status.receipt.sha256
    body = json.loads(receipt)
    assert body["decision"] == "Promote" and body["subjects"]["count"] == status.subject_count
    assert body["subjects"].get("hmac") is None and body["subjects"].get("algorithm") is None  # no key given
    subjects = Path(prepared["subjects_file"]).read_text().split()
    dumped = status.model_dump_json() + receipt.decode() + "\n".join(result.events)
    assert not any(s in dumped for s in subjects), "a patient ID leaked into status, receipt or events"
    record = registry.resolve_alias(DEFAULT, fresh_alias.registry_uri, fresh_alias.name, "production").record
    assert record.previous == "v1" and record.request is not None and record.request.name == request["metadata"]["name"]


def test_run_command_signs_the_receipt_with_the_hmac_key_file(prepared: dict[str, Any], fresh_alias: ModelRef,
                                                              tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.HMAC_KEY_FILE_ENV, raising=False)
    request, _ = _request(prepared, rollout={"mode": "DryRun"}, gates=[
        {"metric": "mia", "comparator": "atMost", "threshold": 1.0, "reference": "absolute"}])
    _, secret = demo.demo_request(prepared)
    (tmp_path / "request.yaml").write_text(yaml.safe_dump(request))
    (tmp_path / "secrets.yaml").write_text(yaml.safe_dump(secret))
    key = b"not-a-real-key\n"  # the trailing newline is part of the key, as in a Secret made --from-file
    (tmp_path / "hmac.key").write_bytes(key)
    code = cli.main(["run", "-f", str(tmp_path / "request.yaml"), "--secrets", str(tmp_path / "secrets.yaml"),
                     "--workdir", str(tmp_path / "run"), "--hmac-key-file", str(tmp_path / "hmac.key")])
    out = capsys.readouterr().out
    assert code == EXIT_OK, out
    uri = next(line.split()[1] for line in out.splitlines() if line.startswith("receipt: "))
    receipt = storage.read_bytes(uri)
    subjects = Path(prepared["subjects_file"]).read_text().split()
    message = "\n".join(sorted(set(subjects))).encode("utf-8")
    expected = hmac.new(key, message, hashlib.sha256).hexdigest()
    assert expected != hmac.new(key.strip(), message, hashlib.sha256).hexdigest()
    body = json.loads(receipt)
    assert body["subjects"] == {"count": len(set(subjects)), "hmac": expected, "algorithm": "HMAC-SHA256"}
    assert body["decision"] == "DryRunDone"
    assert not any(s in receipt.decode() for s in subjects), "a patient ID leaked into the receipt"


def test_failing_gate_holds_and_leaves_the_alias(prepared: dict[str, Any], fresh_alias: ModelRef,
                                                 tmp_path: Path) -> None:
    request, secrets = _request(prepared, gates=[
        {"metric": "testAUC", "comparator": "atLeast", "threshold": 0.999, "reference": "absolute"}])
    result = local.run_request(request, workdir=tmp_path, secrets=secrets)
    assert result.status.phase == "Held"
    assert result.status.gates[0].result == "Failed"
    assert _alias(fresh_alias) == "v1"
    assert json.loads(storage.read_bytes(result.status.receipt.uri))["decision"] == "Hold"


def test_dry_run_never_promotes(prepared: dict[str, Any], fresh_alias: ModelRef, tmp_path: Path) -> None:
    request, secrets = _request(prepared, rollout={"mode": "DryRun"}, gates=[
        {"metric": "mia", "comparator": "atMost", "threshold": 1.0, "reference": "absolute"}])
    result = local.run_request(request, workdir=tmp_path, secrets=secrets)
    assert result.status.phase == "Held" and result.status.gates[0].result == "Passed"
    assert _alias(fresh_alias) == "v1"


def test_missing_secret_is_not_accepted_and_runs_nothing(prepared: dict[str, Any], fresh_alias: ModelRef,
                                                         tmp_path: Path) -> None:
    request, _ = _request(prepared)
    result = local.run_request(request, workdir=tmp_path, secrets={})
    assert result.status.phase == "Failed"
    accepted = next(c for c in result.status.conditions if c.type == "Accepted")
    assert accepted.status == "False" and accepted.reason == "SecretNotFound"
    assert "demo-forget-subjects" in accepted.message
    assert not (tmp_path / "unlearn-job.json").exists()


def test_invalid_spec_names_the_field(prepared: dict[str, Any], tmp_path: Path) -> None:
    request, secrets = _request(prepared)
    request["spec"]["method"]["epochs"] = 0
    result = local.run_request(request, workdir=tmp_path, secrets=secrets)
    accepted = next(c for c in result.status.conditions if c.type == "Accepted")
    assert result.status.phase == "Failed" and accepted.reason == "InvalidSpec"
    assert "epochs" in accepted.message


def test_unknown_forget_patient_is_not_accepted_and_runs_nothing(prepared: dict[str, Any], fresh_alias: ModelRef,
                                                                  tmp_path: Path) -> None:
    request, secrets = _request(prepared)
    secrets[demo.DEMO_SECRET]["subjects"] = "P99999\n"  # a patient the manifest does not hold
    result = local.run_request(request, workdir=tmp_path, secrets=secrets)
    accepted = next(c for c in result.status.conditions if c.type == "Accepted")
    assert result.status.phase == "Failed" and accepted.reason == "InvalidSubjects"
    assert "1 of 1 forget subjects" in accepted.message and "P99999" not in accepted.message
    assert not (tmp_path / "unlearn-job.json").exists()


def test_trainer_input_error_fails_with_its_termination_message(prepared: dict[str, Any], fresh_alias: ModelRef,
                                                                tmp_path: Path) -> None:
    manifest = Path(prepared["workdir"]) / "data" / "manifest.csv"
    broken = tmp_path / "manifest-missing-images.csv"
    broken.write_text(manifest.read_text().replace("shard-000.npz", "shard-404.npz"))
    request, secrets = _request(prepared)
    request["spec"]["data"]["manifestUri"] = broken.as_uri()
    result = local.run_request(request, workdir=tmp_path / "run", secrets=secrets)
    unlearned = next(c for c in result.status.conditions if c.type == "Unlearned")
    assert result.status.phase == "Failed" and unlearned.reason == "StorageOrInputError"
    # the trainer's own termination message, as a Job's would be: it names the first sample it could
    # not read, never the patient or the image's path
    assert "could not be read from storage (it does not exist)" in unlearned.message
    assert re.search(r"the sample in manifest row \d+ ", unlearned.message) and "shard-404" not in unlearned.message
    assert not re.search(r"P\d{5}", unlearned.message)  # the sample IDs hold the patients': the row is named
    assert _alias(fresh_alias) == "v1"


def test_a_report_the_operator_refuses_fails_the_run_without_a_crash(prepared: dict[str, Any], fresh_alias: ModelRef,
                                                                      tmp_path: Path) -> None:
    """``forgetmi run`` reads the report only through the lifecycle: one larger than
    ``report_max_bytes`` is ReportInvalid in the status (Failed), as in a cluster, not a traceback."""
    request, secrets = _request(prepared)
    result = local.run_request(request, workdir=tmp_path, secrets=secrets, settings=Settings(report_max_bytes=1024))
    assert result.status.phase == "Failed" and result.report is None and result.decision is None
    conditions = result.status.conditions
    assert any(c.reason == "ReportInvalid" and "more than the 1024 bytes" in c.message for c in conditions)
    assert _alias(fresh_alias) == "v1"


def _move_alias_before_the_first_conclusion(prepared: dict[str, Any], fresh_alias: ModelRef,
                                            monkeypatch: pytest.MonkeyPatch) -> ModelRef:
    """Another promotion moves the alias to the retrained version while the request's first run ran."""
    retrained = ModelRef.model_validate(prepared["retrained"])
    real_conclude = local.conclude
    calls: list[int] = []

    async def move_alias_then_conclude(*args: Any, **kwargs: Any) -> Any:
        if not calls:
            found = registry.resolve_alias(DEFAULT, fresh_alias.registry_uri, fresh_alias.name, "production")
            point(fresh_alias.registry_uri, fresh_alias.name, "production", retrained.version,
                  expected_token=found.token)
        calls.append(1)
        return await real_conclude(*args, **kwargs)

    monkeypatch.setattr(local, "conclude", move_alias_then_conclude)
    return retrained


MIA_GATE = [{"metric": "mia", "comparator": "atMost", "threshold": 1.0, "reference": "absolute"}]


def test_a_concurrent_alias_change_with_on_conflict_hold_is_detected_not_overwritten(
        prepared: dict[str, Any], fresh_alias: ModelRef, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    request, secrets = _request(prepared, gates=MIA_GATE)
    request["spec"]["rollout"]["onConflict"] = "Hold"
    retrained = _move_alias_before_the_first_conclusion(prepared, fresh_alias, monkeypatch)
    result = local.run_request(request, workdir=tmp_path, secrets=secrets)
    promoted = next(c for c in result.status.conditions if c.type == "Promoted")
    assert promoted.status == "False" and promoted.reason == "PromotionConflict"
    assert "onConflict is Hold" in promoted.message
    assert _alias(fresh_alias) == retrained.version
    receipt = json.loads(storage.read_text(result.status.receipt.uri))  # it says why nothing was promoted
    assert receipt["notPromoted"]["reason"] == "PromotionConflict" and receipt.get("promotion") is None


def test_a_request_that_lost_the_promotion_race_is_rebased_on_the_new_version_and_promoted(
        prepared: dict[str, Any], fresh_alias: ModelRef, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    request, secrets = _request(prepared, gates=MIA_GATE)
    retrained = _move_alias_before_the_first_conclusion(prepared, fresh_alias, monkeypatch)
    result = local.run_request(request, workdir=tmp_path, secrets=secrets)
    status = result.status
    assert status.phase == "Promoted" and status.rebases == 1
    assert status.base_model is not None and status.base_model.version == retrained.version
    assert status.candidate_model is not None and status.candidate_model.version.endswith("-b1")
    assert _alias(fresh_alias) == status.candidate_model.version
    found = registry.resolve_alias(DEFAULT, fresh_alias.registry_uri, fresh_alias.name, "production")
    assert found.record.previous == retrained.version  # promoted over the version the alias was moved on to
    receipt = json.loads(storage.read_text(status.receipt.uri))
    assert receipt["rebases"] == 1 and receipt["base"]["version"] == retrained.version
    assert (tmp_path / "unlearn-b1-job.json").exists()


@pytest.mark.timeout(600)
def test_forgetmi_demo_command_runs_end_to_end(tmp_path: Path) -> None:
    """Its run time is a benchmark's figure (bench/demo_time.py), not asserted here."""
    out = subprocess.run([str(Path(sys.executable).parent / "forgetmi"), "demo", "--workdir", str(tmp_path / "d"),
                          "--json"], env=ENV, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["phase"] == "Promoted"
    for row in ("original", "retrained", "forget_mi"):
        assert set(result[row]) == set(COMPARISON_KEYS)
    # the privacy gate is the distance to the retrained model, not the size of the drop
    assert abs(result["forget_mi"]["attack_auc"] - result["retrained"]["attack_auc"]) <= 0.15
    assert [(g["metric"], g["reference"], g["result"]) for g in result["gates"]] == [
        ("testAUC", "original", "Passed"), ("forgetAUC", "original", "Passed"), ("attackAUC", "retrained", "Passed")]


def _run_file(request: dict[str, Any], secret: dict[str, Any], folder: Path,
              capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """``forgetmi run`` on a request file: its exit code, the job config it gave the trainer, and the
    trainer's report (next to the receipt the command prints)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "request.yaml").write_text(yaml.safe_dump_all([request, secret]))
    code = cli.main(["run", "-f", str(folder / "request.yaml"), "--workdir", str(folder / "run")])
    out = capsys.readouterr().out
    receipt = next(line.split()[1] for line in out.splitlines() if line.startswith("receipt: "))
    report = json.loads(storage.read_bytes(receipt.removesuffix("receipt.json") + "report.json"))
    return code, json.loads((folder / "run" / "unlearn-job.json").read_text()), report


def test_a_baselines_options_are_validated_and_reach_the_trainer(prepared: dict[str, Any], fresh_alias: ModelRef,
                                                                 tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``method: {name: neggrad-plus, options: …}`` passes forgetmi run's validation, the trainer is given the
    options, and they change what it does: another alpha trains another candidate."""
    request, secret = demo.demo_request(prepared)
    request["spec"]["method"] = {"name": "neggrad-plus", "epochs": 2, "learningRate": 0.003,
                                 "options": {"alpha": 0.5, "bound": 2.0}}
    request["spec"]["rollout"] = {"mode": "DryRun"}
    code, job, first = _run_file(request, secret, tmp_path / "a", capsys)
    assert code == EXIT_OK
    assert job["method"]["name"] == "neggrad-plus" and job["method"]["options"] == {"alpha": 0.5, "bound": 2.0}
    request["spec"]["method"]["options"]["alpha"] = 0.95
    code, _, second = _run_file(request, secret, tmp_path / "b", capsys)
    assert code == EXIT_OK
    assert first["method"] == second["method"] == "neggrad-plus"
    assert first["candidate"]["sha256"] != second["candidate"]["sha256"]
    # an option the method does not read is refused before anything runs, naming the field
    request["spec"]["method"]["options"] = {"msteps": 2}
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "request.yaml").write_text(yaml.safe_dump_all([request, secret]))
    assert cli.main(["run", "-f", str(tmp_path / "c" / "request.yaml"), "--workdir", str(tmp_path / "c" / "run")]) \
        == EXIT_INVALID
    assert "spec.method.options.msteps: options.msteps applies only to method scrub" in capsys.readouterr().err
    assert not (tmp_path / "c" / "run").exists()


def test_a_manual_request_waits_for_approval_without_a_receipt_and_keeps_no_copy(
        prepared: dict[str, Any], fresh_alias: ModelRef, tmp_path: Path) -> None:
    request, secrets = _request(prepared, rollout={"mode": "Manual"}, gates=[
        {"metric": "mia", "comparator": "atMost", "threshold": 1.0, "reference": "absolute"}])
    request["spec"]["method"]["epochs"] = 2
    result = local.run_request(request, workdir=tmp_path, secrets=secrets)
    promoted = next(c for c in result.status.conditions if c.type == "Promoted")
    assert result.status.phase == "Evaluating" and promoted.reason == "AwaitingApproval"
    assert result.status.receipt is None and _alias(fresh_alias) == "v1"
    job = json.loads((tmp_path / "unlearn-job.json").read_text())
    assert Path(job["forget"]["file"]).is_relative_to(tmp_path / "secrets")  # the request's copy, "mounted"
    assert not Path(job["forget"]["file"]).exists()  # and gone with the run
    request["metadata"]["annotations"] = {"unlearning.forgetmi.io/approved": "true"}
    approved = local.run_request(request, workdir=tmp_path / "again", secrets=secrets)
    assert approved.status.phase == "Promoted" and approved.status.receipt is not None


def test_run_with_two_processes_runs_the_trainer_under_torchrun(prepared: dict[str, Any], fresh_alias: ModelRef,
                                                                tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                                ) -> None:
    """``forgetmi run --processes 2``: the same lifecycle, the trainer data-parallel over two gloo ranks."""
    request, _ = _request(prepared, gates=[
        {"metric": "mia", "comparator": "atMost", "threshold": 1.0, "reference": "absolute"}])
    request["spec"]["method"]["batchSize"] = 16
    _, secret = demo.demo_request(prepared)
    (tmp_path / "request.yaml").write_text(yaml.safe_dump(request))
    (tmp_path / "secrets.yaml").write_text(yaml.safe_dump(secret))
    code = cli.main(["run", "-f", str(tmp_path / "request.yaml"), "--secrets", str(tmp_path / "secrets.yaml"),
                     "--workdir", str(tmp_path / "run"), "--processes", "2"])
    out = capsys.readouterr().out
    assert code == EXIT_OK, out
    config = JobConfig.model_validate_json((tmp_path / "run" / "unlearn-job.json").read_text())
    report = Report.model_validate_json(storage.read_text(config.resolved_report_uri))
    assert report.environment.world_size == 2
    assert _alias(fresh_alias) == report.candidate_version


def test_the_trainer_command_of_a_local_run() -> None:
    assert trainer_command(Path("j.json"), 1) == ["run", "--config", "j.json"]
    assert trainer_command(Path("j.json"), 3) == ["launch", "--standalone", "--nnodes", "1", "--nproc-per-node", "3",
                                                  "--", "run", "--config", "j.json"]

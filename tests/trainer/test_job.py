"""``run`` end to end against the moto S3 server with a tiny model, and with bad configs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from forgetmi_trainer import storage, synthetic
from forgetmi_trainer.cli import main
from forgetmi_trainer.contract import ForgetSubjects, JobConfig, MethodConfig, ModelRef, Progress, Report
from forgetmi_trainer.job import run_job
from forgetmi_trainer.train import TrainConfig, fit_and_publish

S3World = Any  # tests/trainer/conftest.py's S3World (conftest modules are not imported by name)

pytestmark = pytest.mark.usefixtures("restore_trainer_logging")


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _check_success(world: S3World, term: Path, progress: Path, output_uri: str, version: str = "v2") -> Report:
    report = Report.model_validate_json(storage.read_text(storage.join(output_uri, "report.json")))
    weights = storage.read_bytes(storage.join(output_uri, "model.safetensors"))
    assert report.candidate.sha256 == hashlib.sha256(weights).hexdigest()
    assert report.candidate.uri == output_uri
    assert report.base.sha256 == world.model_sha256
    assert report.method == "forget-mi"
    assert report.selection.rule == "FixedEpoch" and report.selection.epoch == 3
    assert report.counts.subjects == len(world.forget) and report.counts.forget_samples > 0
    assert report.environment.device == "cpu" and report.environment.precision == "fp32"
    meta = storage.read_json(storage.join(output_uri, "metadata.json"))
    assert meta["sha256"] == report.candidate.sha256 and meta["parent"] == "v1" and meta["version"] == version
    lines = term.read_text().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["ok"] is True and summary["candidate"] == report.candidate.sha256[:12]
    assert summary["mia"] == [report.original.mia.score, report.unlearned.mia.score]
    records = [Progress.model_validate_json(line) for line in progress.read_text().splitlines()]
    assert [r.epoch for r in records] == [1, 2, 3]
    assert records[-1].percent == 100.0 and all(r.epochs == 3 for r in records)
    for subject in world.forget:  # IDs never leave the subjects file
        assert subject not in term.read_text()
        assert subject not in storage.read_text(storage.join(output_uri, "report.json"))
    return report


def test_run_in_process(s3_world: S3World, s3_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    subjects = _write(tmp_path, "subjects.txt", "\n".join(s3_world.forget) + "\n")
    progress = tmp_path / "progress.jsonl"
    config = s3_world.job_config(subjects, progress_path=str(progress))
    path = _write(tmp_path, "job.json", config.model_dump_json())
    term = tmp_path / "termination-log"
    assert main(["run", "--config", path, "--termination-log", str(term)]) == 0
    report = _check_success(s3_world, term, progress, config.output_uri)
    assert capsys.readouterr().out.strip() == term.read_text().strip()
    assert report.original.split.forget_auc is not None


def test_run_as_subprocess(s3_world: S3World, s3_env: str, tmp_path: Path) -> None:
    subjects = _write(tmp_path, "subjects.json", json.dumps(s3_world.forget))
    progress = tmp_path / "progress.jsonl"
    output = storage.join(s3_world.registry, "m", "versions", "v3")
    config = s3_world.job_config(subjects, progress_path=str(progress), output_uri=output, candidate_version="v3")
    path = _write(tmp_path, "job.json", config.model_dump_json())
    term = tmp_path / "termination-log"
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    assert env["FORGETMI_S3_ENDPOINT_URL"] == s3_env and env["AWS_ACCESS_KEY_ID"]
    proc = subprocess.run(
        [sys.executable, "-m", "forgetmi_trainer", "run", "--config", path, "--termination-log", str(term)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = _check_success(s3_world, term, progress, output, version="v3")
    assert report.candidate_version == "v3"


ONE_SENTENCE = re.compile(r"^\S[^\n]*\.$")


def _run_bad(tmp_path: Path, text: str) -> tuple[int, str]:
    path = _write(tmp_path, "job.json", text)
    term = tmp_path / "termination-log"
    code = main(["run", "--config", path, "--termination-log", str(term)])
    message = term.read_text()
    assert message.endswith("\n") and message.count("\n") == 1, message
    message = message.strip()
    assert ONE_SENTENCE.match(message), message
    assert not re.search(r"\.\s+[A-Z]", message), f"more than one sentence: {message}"
    return code, message


def test_unknown_field_is_exit_2(s3_world: S3World, s3_env: str, tmp_path: Path) -> None:
    subjects = _write(tmp_path, "subjects.txt", "\n".join(s3_world.forget))
    config = json.loads(s3_world.job_config(subjects).model_dump_json())
    config["method"]["learning_rat"] = 0.1
    code, message = _run_bad(tmp_path, json.dumps(config))
    assert code == 2
    assert "method.learning_rat" in message and "Extra inputs are not permitted" in message


def test_malformed_json_is_exit_2(tmp_path: Path) -> None:
    code, message = _run_bad(tmp_path, '{"model": {"registry_uri": ')
    assert code == 2
    assert "job config" in message and "json" in message.lower()


def test_unreadable_config_is_exit_2(tmp_path: Path) -> None:
    term = tmp_path / "termination-log"
    assert main(["run", "--config", str(tmp_path / "absent.json"), "--termination-log", str(term)]) == 2
    assert "absent.json could not be read" in term.read_text()


def test_missing_manifest_is_exit_3(s3_world: S3World, s3_env: str, tmp_path: Path) -> None:
    subjects = _write(tmp_path, "subjects.txt", "\n".join(s3_world.forget))
    missing = storage.join(s3_world.bucket, "nowhere", "manifest.csv")
    code, message = _run_bad(tmp_path, s3_world.job_config(subjects, manifest_uri=missing).model_dump_json())
    assert code == 3
    assert missing in message and "does not exist" in message


def test_missing_model_is_exit_3(s3_world: S3World, s3_env: str, tmp_path: Path) -> None:
    subjects = _write(tmp_path, "subjects.txt", "\n".join(s3_world.forget))
    config = s3_world.job_config(subjects)
    config.model.version = "v9"
    code, message = _run_bad(tmp_path, config.model_dump_json())
    assert code == 3
    assert "versions/v9" in message and "does not exist" in message


@pytest.mark.parametrize("kind", ["unknown", "test-only"])
def test_forget_patient_not_in_manifest_is_exit_3(s3_world: S3World, s3_env: str, tmp_path: Path, kind: str) -> None:
    stranger = "PX-UNKNOWN-7731" if kind == "unknown" else s3_world.test_subjects[0]
    subjects = _write(tmp_path, "subjects.txt", "\n".join([s3_world.forget[0], stranger]))
    code, message = _run_bad(tmp_path, s3_world.job_config(subjects).model_dump_json())
    assert code == 3
    assert "1 of 2 forget subjects have no training samples" in message
    assert stranger not in message and s3_world.forget[0] not in message


def test_empty_forget_set_is_exit_3(s3_world: S3World, s3_env: str, tmp_path: Path) -> None:
    subjects = _write(tmp_path, "subjects.txt", "# nobody\n\n")
    code, message = _run_bad(tmp_path, s3_world.job_config(subjects).model_dump_json())
    assert code == 3
    assert "forget set is empty" in message


def test_missing_subjects_file_is_exit_3(s3_world: S3World, s3_env: str, tmp_path: Path) -> None:
    absent = str(tmp_path / "absent.txt")
    code, message = _run_bad(tmp_path, s3_world.job_config(absent).model_dump_json())
    assert code == 3
    assert "forget subjects file" in message and "absent.txt" in message


def test_selection_epoch_beyond_epochs_is_exit_2(s3_world: S3World, s3_env: str, tmp_path: Path) -> None:
    subjects = _write(tmp_path, "subjects.txt", "\n".join(s3_world.forget))
    config = json.loads(s3_world.job_config(subjects).model_dump_json())
    config["method"]["selection"] = {"rule": "FixedEpoch", "epoch": 5}
    code, message = _run_bad(tmp_path, json.dumps(config))
    assert code == 2
    assert "method.selection.epoch" in message


def test_an_option_the_method_does_not_take_is_exit_2(s3_world: S3World, s3_env: str, tmp_path: Path) -> None:
    subjects = _write(tmp_path, "subjects.txt", "\n".join(s3_world.forget))
    config = json.loads(s3_world.job_config(subjects).model_dump_json())
    config["method"]["options"] = {"alpha": 0.5}  # a neggrad-plus option; forget-mi takes none
    code, message = _run_bad(tmp_path, json.dumps(config))
    assert code == 2
    assert "method.options.alpha: Extra inputs are not permitted" in message and "forget-mi" in message


def test_a_baseline_runs_as_a_job_with_report_and_progress(tmp_path: Path) -> None:
    """``method.name`` selects a baseline on the Job path: report, candidate and progress lines."""
    samples = synthetic.generate(synthetic.SynthParams(patients=12, seed=1))
    manifest_uri = synthetic.write_dataset(samples, (tmp_path / "data").as_uri())
    registry = (tmp_path / "registry").as_uri()
    recipe = TrainConfig(epochs=2, batch_size=32)
    fit_and_publish(manifest_uri, f"{registry}/m/versions/v1", recipe=recipe, seed=0, device="cpu", precision="fp32")
    subjects = tmp_path / "forget.txt"
    subjects.write_text("\n".join(synthetic.choose_forget_subjects(samples, 0.15, seed=0)))
    progress = tmp_path / "progress.jsonl"
    config = JobConfig(
        model=ModelRef(registry_uri=registry, name="m", version="v1"),
        manifest_uri=manifest_uri,
        forget=ForgetSubjects(file=str(subjects)),
        method=MethodConfig(name="scrub", epochs=2, batch_size=16, options={"msteps": 1, "retain_steps": 1}),
        output_uri=f"{registry}/m/versions/v2",
        candidate_version="v2",
        device="cpu",
        precision="fp32",
        progress_path=str(progress),
    )
    report = run_job(config)
    assert report.method == "scrub"
    assert (report.selection.epoch, report.selection.epochs_run) == (2, 2)
    assert report.candidate.sha256 != report.base.sha256
    lines = [json.loads(line) for line in progress.read_text().splitlines()]
    assert [(p["epoch"], p["epochs"], p["phase"]) for p in lines][-1] == (2, 2, "scrub")

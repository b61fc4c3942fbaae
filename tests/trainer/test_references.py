"""Reference models for offline LiRA: made once per version, read by every Job, stale on another manifest."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from forgetmi_trainer import references, storage, synthetic
from forgetmi_trainer.cli import main
from forgetmi_trainer.contract import ForgetSubjects, JobConfig, MethodConfig, ModelRef, Report
from forgetmi_trainer.errors import ConfigError
from forgetmi_trainer.job import run_job
from forgetmi_trainer.manifest import read_manifest
from forgetmi_trainer.train import TrainConfig, fit_and_publish

pytestmark = pytest.mark.usefixtures("restore_trainer_logging")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("refs")
    samples = synthetic.generate(synthetic.SynthParams(patients=40, seed=3))
    manifest_uri = synthetic.write_dataset(samples, (root / "data").as_uri())
    model_uri = (root / "registry" / "m" / "versions" / "v1").as_uri()
    sha, _ = fit_and_publish(manifest_uri, model_uri, recipe=TrainConfig(epochs=3), seed=0, device="cpu")
    forget = synthetic.choose_forget_subjects(samples, 0.1, seed=0)
    (root / "subjects.txt").write_text("\n".join(forget) + "\n")
    return {"root": root, "manifest": manifest_uri, "model": model_uri, "sha": sha, "forget": forget,
            "samples": samples}


def test_references_live_beside_the_version_directory() -> None:
    assert references.references_uri("s3://models/reg/cxr/versions/v3") == "s3://models/reg/cxr/references/v3"
    with pytest.raises(ConfigError, match="registry version"):
        references.references_uri("s3://b/some/model")


def test_assign_puts_every_patient_in_exactly_half_the_references() -> None:
    member = references.assign(101, 4, seed=5)
    assert member.shape == (101, 4) and np.all(member.sum(axis=1) == 2)
    assert 35 < member[:, 0].sum() < 66, "each reference trains on about half the patients"
    assert np.array_equal(member, references.assign(101, 4, seed=5))
    for k in (0, 1, 3):
        with pytest.raises(ConfigError, match="--k must be an even number"):
            references.assign(10, k, seed=0)


def test_references_store_one_confidence_per_sample_and_reference(world: dict, tmp_path: Path) -> None:
    excluded = world["forget"][:1]
    subjects_file = tmp_path / "excluded.txt"
    subjects_file.write_text(excluded[0] + "\n")
    assert main(["references", "--model", world["model"], "--manifest", world["manifest"], "--k", "2",
                 "--exclude-subjects", str(subjects_file), "--device", "cpu"]) == 0
    where = references.references_uri(world["model"])
    meta = storage.read_json(storage.join(where, references.META))
    manifest = read_manifest(world["manifest"])
    assert meta["k"] == 2 and meta["manifest_sha256"] == manifest.sha256 and meta["model_sha256"] == world["sha"]
    assert meta["recipe"]["epochs"] == 3, "the references repeat the original's recorded recipe"
    with np.load(io.BytesIO(storage.read_bytes(storage.join(where, references.STATS)))) as stats:
        ids, phi, member = stats["sample_ids"].tolist(), stats["phi"], stats["member"]
    by_id = {s.sample_id: s for s in world["samples"]}
    assert not any(by_id[i].subject_id in excluded for i in ids), "forgotten patients leave no statistics"
    assert len(ids) == len(manifest) - sum(s == excluded[0] for s in manifest.subject_ids)
    train = np.asarray([by_id[i].split == "train" for i in ids])
    assert np.all(member[train].sum(axis=1) == 1) and not member[~train].any()
    assert phi.shape == (len(ids), 2) and np.isfinite(phi).all()
    patients = {}
    for i, row in zip(ids, member, strict=True):  # a patient's samples share their references
        patients.setdefault(by_id[i].subject_id, set()).add(tuple(row))
    assert all(len(rows) == 1 for rows in patients.values())
    assert excluded[0] not in json.dumps(meta)


def test_load_is_missing_without_references_and_stale_on_another_manifest(world: dict, tmp_path: Path) -> None:
    manifest = read_manifest(world["manifest"])
    rows = np.arange(3)
    lira, info = references.load((tmp_path / "r/m/versions/v9").as_uri(), world["sha"], manifest, rows, rows)
    assert lira is None and info.status == "missing" and "forgetmi-trainer references" in (info.message or "")
    references.make(world["model"], world["manifest"], k=2, device="cpu")
    lira, info = references.load(world["model"], world["sha"], manifest, rows[:2], rows)
    assert info.status == "used" and info.k == 2
    assert lira is not None and lira.forget.phi.shape == (2, 2) and lira.test.member.shape == (3, 2)
    changed = read_manifest(world["manifest"])
    object.__setattr__(changed, "sha256", "0" * 64)
    lira, info = references.load(world["model"], world["sha"], changed, rows, rows)
    assert lira is None and info.status == "stale" and "another version of the manifest" in (info.message or "")
    lira, info = references.load(world["model"], "f" * 64, manifest, rows, rows)
    assert lira is None and info.status == "stale" and "other weights" in (info.message or "")


def test_a_job_on_a_version_with_references_reports_lira(world: dict) -> None:
    references.make(world["model"], world["manifest"], k=2, device="cpu")
    root: Path = world["root"]  # type: ignore[assignment]
    registry = (root / "registry").as_uri()
    config = JobConfig(
        model=ModelRef(registry_uri=registry, name="m", version="v1"), manifest_uri=world["manifest"],
        forget=ForgetSubjects(file=str(root / "subjects.txt")),
        method=MethodConfig(epochs=2, batch_size=8), output_uri=f"{registry}/m/versions/v2", candidate_version="v2",
        device="cpu")
    report = run_job(config)
    assert report.references is not None and report.references.status == "used" and report.references.k == 2
    for model in (report.original, report.unlearned):
        assert model.mia.lira_auc is not None and 0.5 <= model.mia.lira_auc <= 1
        assert model.mia.lira_tpr_at_5pct_fpr is not None and model.mia.patient_lira_auc is not None
    assert report.splits is not None and report.splits.source == "derived"
    assert report.splits.validation_patients >= 1 and report.splits.test_patients >= 1
    assert report.counts.test_samples == report.splits.test_samples
    reread = Report.model_validate_json(storage.read_text(config.resolved_report_uri))
    assert reread.references == report.references
    # the original's V and T logits were cached in the registry: a second Job reads them, same figures
    assert not report.original_cached
    assert list((root / "registry" / "m" / "audit-cache" / "v1").glob("*.npz"))
    again = run_job(config.model_copy(update={"output_uri": f"{registry}/m/versions/v3", "candidate_version": "v3"}))
    assert again.original_cached
    assert again.original.model_dump() == report.original.model_dump()
    assert again.splits == report.splits

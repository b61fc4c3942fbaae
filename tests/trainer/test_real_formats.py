"""A manifest of PNG, JPEG and DICOM files (one format per row, written with Pillow and pydicom)
trains, unlearns and audits end to end, on file:// and on the moto S3 server; an unreadable image
stops the run with exit 3 naming its sample."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from forgetmi_trainer import storage, synthetic
from forgetmi_trainer.cli import main
from forgetmi_trainer.contract import DataConfig, ForgetSubjects, JobConfig, MethodConfig, ModelRef, Report
from forgetmi_trainer.encoders import EncoderChoice
from forgetmi_trainer.images import resolve_image_uri
from forgetmi_trainer.job import run_job
from forgetmi_trainer.manifest import MANIFEST_COLUMNS, read_manifest
from forgetmi_trainer.reading import sample_name
from forgetmi_trainer.train import TrainConfig, fit_and_publish

FORMATS = ("png", "jpeg", "dicom")
pytestmark = pytest.mark.usefixtures("restore_trainer_logging")


def mixed_dataset(root: str) -> tuple[str, list[str]]:
    """The same generated samples written in each format; the manifest at ``root`` takes row i's
    image from format i mod 3 (relative URIs). Returns the manifest URI and the forget subjects."""
    samples = synthetic.generate(synthetic.SynthParams(patients=16, seed=5))
    manifests = [read_manifest(synthetic.write_dataset(samples, storage.join(root, fmt), fmt)) for fmt in FORMATS]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    first = manifests[0]
    for i in range(len(first)):
        fmt = FORMATS[i % 3]
        image = f"{fmt}/{manifests[i % 3].image_uris[i]}"
        writer.writerow((first.sample_ids[i], first.subject_ids[i], image, first.texts[i], first.labels[i],
                         first.splits[i]))
    uri = storage.join(root, "manifest.csv")
    storage.write_text(uri, text.getvalue())
    return uri, synthetic.choose_forget_subjects(samples, 0.15, seed=0)


def run_on(root: str, tmp_path: Path) -> tuple[str, JobConfig]:
    manifest_uri, forget = mixed_dataset(root)
    registry = storage.join(root, "registry")
    fit_and_publish(manifest_uri, storage.join(registry, "m", "versions", "v1"), recipe=TrainConfig(epochs=2),
                    seed=0, device="cpu", precision="fp32", encoders=EncoderChoice(image_size=24))
    subjects = tmp_path / "subjects.txt"
    subjects.write_text("\n".join(forget) + "\n")
    config = JobConfig(
        request="ns/formats", model=ModelRef(registry_uri=registry, name="m", version="v1"),
        manifest_uri=manifest_uri, forget=ForgetSubjects(file=str(subjects)),
        method=MethodConfig(preset="equal", epochs=2, learning_rate=3e-3, batch_size=8, push_bound=1.5),
        data=DataConfig(workers=1), output_uri=storage.join(registry, "m", "versions", "v2"), candidate_version="v2",
        device="cpu", precision="fp32",
    )
    return manifest_uri, config


def check_report(report: Report, manifest_uri: str) -> None:
    manifest = read_manifest(manifest_uri)
    assert {resolve_image_uri(u, manifest_uri).rsplit(".", 1)[1] for u in manifest.image_uris} == {"png", "jpg", "dcm"}
    assert report.counts.forget_samples > 0 and report.counts.audit_retain_samples == report.counts.retain_samples
    for metrics in (report.original, report.unlearned):
        assert metrics.split.test_auc is not None and metrics.split.test_auc_ci is not None
        assert metrics.mia.attack_auc is not None and metrics.mia.attack_auc_ci is not None


def test_a_mixed_format_manifest_on_files_trains_unlearns_and_audits(tmp_path: Path) -> None:
    manifest_uri, config = run_on((tmp_path / "ds").as_uri(), tmp_path)
    check_report(run_job(config), manifest_uri)


def test_a_mixed_format_manifest_on_s3_trains_unlearns_and_audits(s3_bucket: str, tmp_path: Path) -> None:
    manifest_uri, config = run_on(storage.join(s3_bucket, "ds"), tmp_path)
    check_report(run_job(config), manifest_uri)


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_a_corrupt_or_missing_image_exits_3_naming_the_sample_only(tmp_path: Path, damage: str) -> None:
    manifest_uri, config = run_on((tmp_path / "ds").as_uri(), tmp_path)
    manifest = read_manifest(manifest_uri)
    row = next(i for i, s in enumerate(manifest.splits) if s == "test" and manifest.image_uris[i].startswith("dicom"))
    path = Path(storage.base._file_path(resolve_image_uri(manifest.image_uris[row], manifest_uri)))
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:300])
    job = tmp_path / "job.json"
    job.write_text(config.model_dump_json())
    term = tmp_path / "termination-log"
    assert main(["run", "--config", str(job), "--termination-log", str(term)]) == 3
    message = term.read_text()
    assert sample_name(manifest, row) in message
    assert manifest.subject_ids[row] not in message
    assert not storage.exists(storage.join(config.output_uri, "metadata.json"))  # nothing was published

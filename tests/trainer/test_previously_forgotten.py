"""A run after an earlier erasure: the ledger's patients (``previously_forgotten``) are never read into
the retain set, and the report counts them.

The proof that their rows are never read: the dataset has one PNG file per sample, and the earlier
erasure's patients' image files are deleted after the original was trained. A run that names them
as previously forgotten must succeed (no pass of the method or the audit touches those rows); the same
run without that list must fail on the first missing image, which shows the check can fail.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from forgetmi_trainer import synthetic
from forgetmi_trainer.contract import ForgetSubjects, JobConfig, MethodConfig, ModelRef
from forgetmi_trainer.errors import ConfigError, TrainerError
from forgetmi_trainer.job import run_job
from forgetmi_trainer.train import TrainConfig, fit_and_publish


@pytest.fixture(scope="module")
def after_erasure(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, JobConfig, list[str], int]:
    root = tmp_path_factory.mktemp("ledger")
    samples = synthetic.generate(synthetic.SynthParams(patients=24, seed=3))
    manifest = synthetic.write_dataset(samples, (root / "data").as_uri(), "png")
    registry = (root / "registry").as_uri()
    fit_and_publish(manifest, f"{registry}/m/versions/v1", recipe=TrainConfig(epochs=2, batch_size=32), seed=0,
                    device="cpu", precision="fp32")
    train = sorted({s.subject_id for s in samples if s.split == "train"})
    earlier, now = train[:3], train[3:5]  # A: forgotten by an earlier request; B: this request's
    rows_of_a = sum(s.subject_id in earlier for s in samples)
    for subject in earlier:  # A's images are gone: reading any of them fails the run
        shutil.rmtree(root / "data" / "images" / subject)
    (root / "forget.txt").write_text("\n".join(now) + "\n")
    (root / "earlier.txt").write_text("\n".join(earlier) + "\n")
    config = JobConfig(
        model=ModelRef(registry_uri=registry, name="m", version="v1"),
        manifest_uri=manifest,
        forget=ForgetSubjects(file=str(root / "forget.txt")),
        method=MethodConfig(preset="equal", epochs=2, batch_size=8, push_bound=1.5),
        output_uri=f"{registry}/m/versions/v2",
        candidate_version="v2",
        device="cpu",
        precision="fp32",
    )
    return root, config, earlier, rows_of_a


def test_the_ledgers_patients_are_never_read_into_retain(after_erasure: tuple[Path, JobConfig, list[str], int]
                                                         ) -> None:
    root, config, earlier, rows_of_a = after_erasure
    with_ledger = config.model_copy(update={"previously_forgotten": ForgetSubjects(file=str(root / "earlier.txt"))})
    report = run_job(with_ledger)
    assert report is not None
    assert report.counts.previously_forgotten == rows_of_a
    assert report.counts.previously_forgotten_subjects == len(earlier)
    assert report.counts.subjects == 2
    with pytest.raises(TrainerError) as err:  # without the list, A's rows are retain rows, and read
        run_job(config.model_copy(update={"output_uri": config.output_uri.replace("/v2", "/v3"),
                                          "candidate_version": "v3"}))
    assert not isinstance(err.value, ConfigError)



def test_a_retrain_trains_on_neither_the_ledgers_nor_this_requests_patients(
        after_erasure: tuple[Path, JobConfig, list[str], int]) -> None:
    """``onGateFailure: Retrain``'s run (method retrain) trains on D_r only: without A (deleted images, never
    read) and without B (this request's forget set, which only the audit reads)."""
    root, config, _, rows_of_a = after_erasure
    retrain = config.model_copy(update={
        "method": MethodConfig(name="retrain", epochs=1, batch_size=32),
        "previously_forgotten": ForgetSubjects(file=str(root / "earlier.txt")),
        "output_uri": config.output_uri.replace("/v2", "/r2"), "candidate_version": "r2"})
    report = run_job(retrain)
    assert report is not None and report.method == "retrain"
    assert report.counts.previously_forgotten == rows_of_a
    total = sum(1 for _ in (root / "data" / "manifest.csv").read_text().splitlines()) - 1
    assert report.counts.retain_samples == total - rows_of_a - report.counts.forget_samples - (
        report.splits.validation_samples + report.splits.test_samples)

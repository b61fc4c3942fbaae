"""The trainer's demo: generate data, train an original and a retrained model, forget ~8 % of the
patients with Forget-MI through the same ``run_job`` a Job uses, and compare the three."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from forgetmi_trainer import storage, synthetic
from forgetmi_trainer.contract import (
    ForgetSubjects,
    JobConfig,
    MethodConfig,
    ModelRef,
    comparison,
)
from forgetmi_trainer.job import run_job
from forgetmi_trainer.train import fit_and_publish

MODEL = "demo-model"
FORGET_FRACTION = 0.08
# The recipe measured on the generated dataset (docs/methods.md, the demo test): the equal preset with the
# push terms bounded at 0.5 × the original's embedding scale (the median distance between two retain samples'
# image embeddings), so forgetting stops near where retraining lands instead of running past it. The bound
# was chosen on seeds 100-102 (not the benchmark's 0-4) among 0.25, 0.5, 0.75 and 1.0 by the distance to the
# retrained model, avg |x − x_retrained| over forget AUC, forget F1, test AUC and the two-sided attack AUC:
# 0.226 (two seeds), 0.062, 0.087, 0.096; at 1.0 the forget set is pushed past retraining (attack AUC ≈ 0.7).
DEMO_METHOD = MethodConfig(preset="equal", epochs=30, learning_rate=3e-3, batch_size=16, push_bound=0.5)


def prepare(workdir: Path, seed: int, patients: int) -> dict[str, Any]:
    """Dataset, subjects file, original and retrained models under ``workdir``; returns their URIs."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    samples = synthetic.generate(synthetic.SynthParams(patients=patients, seed=seed))
    manifest_uri = synthetic.write_dataset(samples, (workdir / "data").as_uri())
    forget = synthetic.choose_forget_subjects(samples, FORGET_FRACTION, seed)
    subjects_file = workdir / "forget-subjects.txt"
    subjects_file.write_text("\n".join(forget) + "\n")
    registry = (workdir / "registry").as_uri()
    original = ModelRef(registry_uri=registry, name=MODEL, version="v1")
    retrained = ModelRef(registry_uri=registry, name=MODEL, version="v1-retrained")
    _, original_seconds = fit_and_publish(manifest_uri, original.uri, seed=seed, metadata={"version": "v1"})
    _, retrained_seconds = fit_and_publish(
        manifest_uri, retrained.uri, exclude=forget, seed=seed, metadata={"version": "v1-retrained"}
    )
    return {
        "registry": registry,
        "manifest_uri": manifest_uri,
        "subjects_file": str(subjects_file),
        "original": original,
        "retrained": retrained,
        "subjects": len(forget),
        "original_seconds": original_seconds,
        "retrained_seconds": retrained_seconds,
        "method": DEMO_METHOD.model_dump(mode="json"),
    }


def run_demo(workdir: Path, seed: int = 0, patients: int = 150) -> dict[str, dict[str, float | None]]:
    prepared = prepare(workdir, seed, patients)
    registry = prepared["registry"]
    config = JobConfig(
        request="local/demo",
        model=prepared["original"],
        manifest_uri=prepared["manifest_uri"],
        forget=ForgetSubjects(file=prepared["subjects_file"]),
        method=DEMO_METHOD,
        output_uri=storage.join(registry, MODEL, "versions", "v2"),
        candidate_version="v2",
        retrained=prepared["retrained"],
        seed=seed,
        progress_path=str(Path(workdir).resolve() / "progress.jsonl"),
    )
    report = run_job(config)
    return comparison(report, prepared["original_seconds"], prepared["retrained_seconds"])


def to_json(rows: dict[str, dict[str, float | None]]) -> str:
    return json.dumps(rows, sort_keys=True)

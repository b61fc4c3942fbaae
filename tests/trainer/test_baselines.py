"""The baselines (finetune, neggrad-plus, scrub) through the registry, on a tiny trained original."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from forgetmi_trainer import data, methods, synthetic
from forgetmi_trainer.contract import ForgetSubjects, JobConfig, MethodConfig, ModelRef, SelectionRule
from forgetmi_trainer.errors import ConfigError
from forgetmi_trainer.fit import MAX_TOKENS, fit_and_publish
from forgetmi_trainer.job import run_job
from forgetmi_trainer.model import MultimodalClassifier, MultimodalConfig, build_model, tiny_bert_config
from forgetmi_trainer.scrub import distill_kl
from forgetmi_trainer.tokenizer import build_tokenizer, build_vocabulary
from forgetmi_trainer.train import TrainConfig, train_model
from forgetmi_trainer.unlearn import UnlearnInputs, freeze, mean_image_loss

CPU = torch.device("cpu")
BASELINES = ("finetune", "neggrad-plus", "scrub")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The models are tiny: one thread is faster, and far faster on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> tuple[MultimodalClassifier, UnlearnInputs]:
    root = tmp_path_factory.mktemp("baselines")
    samples = synthetic.generate(synthetic.SynthParams(patients=30, seed=0))
    manifest = data.read_manifest(synthetic.write_dataset(samples, (root / "data").as_uri()))
    tokenizer = build_tokenizer(build_vocabulary(manifest.texts), root / "tok", max_length=MAX_TOKENS)
    images = data.load_images(manifest.image_uris)
    encoded = data.encode(images, manifest.texts, manifest.labels, tokenizer, MAX_TOKENS)
    sets = data.split(manifest, synthetic.choose_forget_subjects(samples, 0.15, seed=0))
    config = MultimodalConfig(
        num_labels=int(manifest.labels.max()) + 1,
        image_size=int(images.shape[-1]),
        image_channels=1,
        text_encoder_config=tiny_bert_config(len(tokenizer)),
    )
    original = build_model(config, 0)
    train = np.asarray([i for i, s in enumerate(manifest.splits) if s == "train"])
    train_model(original, encoded.take(train), TrainConfig(epochs=10), generator=_gen(), device=CPU)
    forget, retain, test = (encoded.take(ix) for ix in (sets.forget, sets.retain, sets.test))
    pool = data.noisy_text_pool([manifest.texts[i] for i in sets.forget], 0.5, 2, 0, str(tokenizer.mask_token))
    return original, UnlearnInputs(forget, retain, test, [data.tokenize(tokenizer, p, MAX_TOKENS) for p in pool])


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _run(world: tuple[MultimodalClassifier, UnlearnInputs], method: MethodConfig, on_epoch=None):  # type: ignore[no-untyped-def]
    original, inputs = world
    ctx = methods.MethodContext(
        original=copy.deepcopy(original),
        inputs=inputs,
        method=method,
        generator=_gen(),
        device=CPU,
        precision="fp32",
        seed=0,
        on_epoch=on_epoch,
    )
    before = {k: v.clone() for k, v in ctx.original.state_dict().items()}
    result = methods.get_method(method.name)(ctx)
    assert all(torch.equal(before[k], v) for k, v in ctx.original.state_dict().items()), "original changed"
    assert result.model is not ctx.original
    assert not result.model.training
    assert not any(p.requires_grad for p in result.model.parameters())
    moved = result.model.state_dict()
    assert any(not torch.equal(before[k], moved[k]) for k in before if k.startswith("image_encoder"))
    return result


def test_registry_has_every_method_and_rejects_unknown_names() -> None:
    assert set(methods.METHODS) == {"forget-mi", "retrain", *BASELINES}
    for name in BASELINES:
        assert callable(methods.get_method(name))
    with pytest.raises(ConfigError, match="not available"):
        methods.get_method("cf-k")


def test_finetune_keeps_retain_loss_low_and_reports_progress(world) -> None:  # type: ignore[no-untyped-def]
    original, inputs = world
    seen: list[tuple[int, int, float]] = []
    method = MethodConfig(name="finetune", epochs=2, learning_rate=1e-3, batch_size=32)
    result = _run(world, method, on_epoch=lambda e, n, loss: seen.append((e, n, loss)))
    assert [(e, n) for e, n, _ in seen] == [(1, 2), (2, 2)]
    assert result.selection.epochs_run == 2 and len(result.history) == 2
    assert mean_image_loss(result.model, inputs.retain) <= mean_image_loss(original, inputs.retain) + 0.05


def test_neggrad_plus_raises_the_forget_loss(world) -> None:  # type: ignore[no-untyped-def]
    """Bounded ascent raises the forget loss above the original's; with alpha = 1 (no ascent
    term, retain descent only) it stays lower."""
    original, inputs = world
    method = MethodConfig(name="neggrad-plus", epochs=5, learning_rate=3e-3, batch_size=16, options={"alpha": 0.5})
    ascent = _run(world, method)
    descent = _run(world, method.model_copy(update={"options": {"alpha": 1.0}}))
    forget_loss = mean_image_loss(ascent.model, inputs.forget)
    assert forget_loss > mean_image_loss(original, inputs.forget) + 0.1
    assert forget_loss > mean_image_loss(descent.model, inputs.forget) + 0.1
    assert all(np.isfinite(h["loss"]) for h in ascent.history)


@torch.no_grad()
def _forget_kl(student: MultimodalClassifier, teacher: MultimodalClassifier, data: UnlearnInputs) -> float:
    return float(distill_kl(student.eval(), freeze(copy.deepcopy(teacher)), data.forget, 1.0))


def test_scrub_max_steps_move_the_student_away_on_forget_data(world) -> None:  # type: ignore[no-untyped-def]
    """Against the same run without max steps (msteps = 0), the max steps raise the student's
    KL from the teacher on the forget set, and the forget loss."""
    original, inputs = world
    options = {"msteps": 2.0, "retain_steps": 2.0}
    method = MethodConfig(name="scrub", epochs=2, learning_rate=3e-3, batch_size=16, options=options)
    scrub = _run(world, method)
    min_only = _run(world, method.model_copy(update={"options": {**options, "msteps": 0.0}}))
    assert _forget_kl(scrub.model, original, inputs) > 2 * _forget_kl(min_only.model, original, inputs)
    assert mean_image_loss(scrub.model, inputs.forget) > mean_image_loss(min_only.model, inputs.forget)


def test_forget_reaches_test_rule_is_recorded(world) -> None:  # type: ignore[no-untyped-def]
    rule = SelectionRule(rule="ForgetReachesTest")
    result = _run(world, MethodConfig(name="finetune", epochs=2, batch_size=32, selection=rule))
    assert result.selection.rule == "ForgetReachesTest"
    assert result.selection.epochs_run == len(result.history) <= 2
    assert {"forget_loss", "test_loss"} <= set(result.history[0])


@pytest.mark.parametrize("name", BASELINES)
def test_unknown_option_and_late_fixed_epoch_are_config_errors(world, name: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="not understood"):
        _run(world, MethodConfig(name=name, epochs=1, options={"typo": 1.0}))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="exceeds"):
        _run(world, MethodConfig(name=name, epochs=1, selection=SelectionRule(epoch=2)))  # type: ignore[arg-type]


def test_fixed_epoch_selection_runs_that_many_epochs(world) -> None:  # type: ignore[no-untyped-def]
    method = MethodConfig(name="finetune", epochs=5, batch_size=32, selection=SelectionRule(epoch=2))
    result = _run(world, method)
    assert (result.selection.epoch, result.selection.epochs_run) == (2, 2)


def test_a_baseline_runs_as_a_job_with_report_and_progress(tmp_path: Path, one_thread: None) -> None:
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

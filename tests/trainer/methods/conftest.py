"""Fixtures of the method tests: tiny trained originals on the generated dataset, and a runner that
checks what every method promises (the original unchanged, a frozen model that moved)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from harness.samples import encode_manifest, identity_preprocessing

from forgetmi_trainer import data, synthetic
from forgetmi_trainer.contract import DataConfig, MethodConfig
from forgetmi_trainer.encoders import TINY_TEXT_LENGTH
from forgetmi_trainer.manifest import read_manifest
from forgetmi_trainer.methods import MethodContext, UnlearnInputs, UnlearnResult, get_method
from forgetmi_trainer.methods.base import EpochCallback, mean_image_loss
from forgetmi_trainer.model import MultimodalClassifier, MultimodalConfig, build_model, tiny_bert_config
from forgetmi_trainer.splits import resolve as split
from forgetmi_trainer.streaming import SampleStream
from forgetmi_trainer.tokenizer import build_tokenizer, build_vocabulary
from forgetmi_trainer.train import TrainConfig, train_model

CPU = torch.device("cpu")


@dataclass
class MethodWorld:
    """A trained original and the sets a method unlearns from (forget, retain, test, validation on the CPU)."""

    original: MultimodalClassifier
    inputs: UnlearnInputs
    manifest_uri: str
    tokenizer: object
    rows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    """Manifest rows of forget, retain, test and validation."""

    def stream(self, directory: Path, workers: int = 0) -> SampleStream:
        """A stream over the world's manifest (the small CNN's preprocessing: as stored)."""
        manifest = read_manifest(self.manifest_uri)
        return SampleStream(manifest, self.manifest_uri, identity_preprocessing(manifest, self.manifest_uri),
                            self.tokenizer, max_length=TINY_TEXT_LENGTH, device=CPU,
                            settings=DataConfig(workers=workers), cache_dir=directory)

    def run(self, method: MethodConfig, on_epoch: EpochCallback | None = None,
            inputs: UnlearnInputs | None = None) -> UnlearnResult:
        """Run ``method`` through the registry on a copy of the original (seed 0) and check that
        the original is unchanged and the returned model is a frozen, moved, separate model."""
        ctx = MethodContext(
            original=copy.deepcopy(self.original),
            inputs=inputs or self.inputs,
            method=method,
            generator=torch.Generator().manual_seed(0),
            device=CPU,
            precision="fp32",
            seed=0,
            on_epoch=on_epoch,
        )
        before = {k: v.clone() for k, v in ctx.original.state_dict().items()}
        result = get_method(method.name)(ctx)
        assert all(torch.equal(before[k], v) for k, v in ctx.original.state_dict().items()), "original changed"
        assert result.model is not ctx.original
        assert not result.model.training
        assert not any(p.requires_grad for p in result.model.parameters())
        moved = result.model.state_dict()
        assert any(not torch.equal(before[k], moved[k]) for k in before if k.startswith("image_encoder"))
        return result

    def check_first_crossing(self, result: UnlearnResult, epochs: int) -> None:
        """ForgetReachesTest stopped the run before ``epochs``, at the first epoch of the recorded
        history whose forget-set loss reached the validation-set loss, and returned that epoch's model."""
        history = result.history
        assert result.selection.rule == "ForgetReachesTest"
        assert 1 < result.selection.epochs_run == len(history) < epochs, history
        assert result.selection.epoch == len(history)
        assert [h["epoch"] for h in history] == [float(e) for e in range(1, len(history) + 1)]
        assert all(set(h) == {"epoch", "loss", "forget_loss", "validation_loss"} for h in history), history
        assert all(h["forget_loss"] < h["validation_loss"] for h in history[:-1]), history
        assert history[-1]["forget_loss"] >= history[-1]["validation_loss"], history
        # the losses recorded for the last epoch are those of the model returned
        assert self.inputs.validation is not None
        assert mean_image_loss(result.model, self.inputs.forget) == pytest.approx(history[-1]["forget_loss"], rel=1e-6)
        assert mean_image_loss(result.model, self.inputs.validation) == pytest.approx(
            history[-1]["validation_loss"], rel=1e-6)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The models are tiny: one thread is faster, and far faster on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _world(root: Path, train_epochs: int, sets: Callable[[list[synthetic.Sample], object], tuple],
           cross_modal: float = synthetic.SynthParams().cross_modal) -> MethodWorld:
    """30 generated patients; an original trained ``train_epochs`` epochs on every training sample;
    ``sets(samples, manifest)`` gives the manifest indices of forget, retain, test and validation."""
    samples = synthetic.generate(synthetic.SynthParams(patients=30, seed=0, cross_modal=cross_modal))
    manifest_uri = synthetic.write_dataset(samples, (root / "data").as_uri())
    manifest = read_manifest(manifest_uri)
    tokenizer = build_tokenizer(build_vocabulary(manifest.texts), root / "tok", max_length=TINY_TEXT_LENGTH)
    encoded = encode_manifest(manifest, manifest_uri, tokenizer)
    config = MultimodalConfig(
        num_labels=int(manifest.labels.max()) + 1,
        image_size=int(encoded.pixels.shape[-1]),
        image_channels=1,
        text_encoder_config=tiny_bert_config(len(tokenizer)),
    )
    original = build_model(config, 0)
    train = np.asarray([i for i, s in enumerate(manifest.splits) if s == "train"])
    recipe = TrainConfig(epochs=train_epochs)
    train_model(original, encoded.take(train), recipe, generator=torch.Generator().manual_seed(0), device=CPU)
    forget_ix, retain_ix, test_ix, val_ix = sets(samples, manifest)
    forget, retain, test, validation = (encoded.take(ix) for ix in (forget_ix, retain_ix, test_ix, val_ix))
    pool = data.noisy_text_pool([manifest.texts[i] for i in forget_ix], 0.5, 2, 0, str(tokenizer.mask_token))
    noisy = [data.tokenize(tokenizer, p, TINY_TEXT_LENGTH) for p in pool]
    rows = (np.asarray(forget_ix), np.asarray(retain_ix), np.asarray(test_ix), np.asarray(val_ix))
    inputs = UnlearnInputs(forget, retain, test, noisy, validation=validation)
    return MethodWorld(original, inputs, manifest_uri, tokenizer, rows)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> MethodWorld:
    """The patients to forget are ~15 % of the training samples; the original trained 10 epochs."""

    def by_patient(samples: list[synthetic.Sample], manifest: object) -> tuple:
        sets = split(manifest, synthetic.choose_forget_subjects(samples, 0.15, seed=0))  # type: ignore[arg-type]
        return sets.forget, sets.retain, sets.test, sets.validation

    return _world(tmp_path_factory.mktemp("methods"), 10, by_patient)


@pytest.fixture(scope="module")
def memorised_world(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> MethodWorld:
    """The samples to forget are the training samples with a random label, which an original trained
    40 epochs fits only by memorising them (their loss is far below the test loss); retain is every
    other training sample. Training on retain alone makes the original forget them."""

    def by_memorisation(samples: list[synthetic.Sample], manifest: object) -> tuple:
        train = [i for i, s in enumerate(samples) if s.split == "train"]
        forget = np.asarray([i for i in train if samples[i].memorised])
        retain = np.asarray([i for i in train if not samples[i].memorised])
        sets = split(manifest, [samples[train[0]].subject_id])  # type: ignore[arg-type]  # for its V/T halves
        return forget, retain, sets.test, sets.validation

    # Without cross-modal structure: the class bit of its joint samples is invisible to the image head, so
    # their validation loss grows as the image head fits retain alone, and the forget loss would chase it.
    return _world(tmp_path_factory.mktemp("memorised"), 40, by_memorisation, cross_modal=0.0)

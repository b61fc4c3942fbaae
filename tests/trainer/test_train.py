"""Training (``train``): the training loss, and fitting on a manifest and publishing the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from harness.samples import encode_manifest

from forgetmi_trainer import storage, synthetic
from forgetmi_trainer.checkpoint import fetch_model, load_model
from forgetmi_trainer.encoders import TINY_TEXT_LENGTH, EncoderChoice
from forgetmi_trainer.errors import InputError
from forgetmi_trainer.manifest import read_manifest
from forgetmi_trainer.splits import resolve as split
from forgetmi_trainer.train import TrainConfig, fit_and_publish, train_loss


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[synthetic.Sample], str]:
    samples = synthetic.generate(synthetic.SynthParams(patients=8, seed=2))
    return samples, synthetic.write_dataset(samples, (tmp_path_factory.mktemp("train") / "data").as_uri())


def test_fit_and_publish_leaves_out_the_excluded_subjects(dataset: tuple, tmp_path: Path) -> None:
    samples, manifest_uri = dataset
    exclude = synthetic.choose_forget_subjects(samples, 0.25, seed=0)
    out = (tmp_path / "registry" / "m" / "versions" / "v1").as_uri()
    recipe = TrainConfig(epochs=1, batch_size=32)
    sha, seconds = fit_and_publish(manifest_uri, out, exclude=exclude, recipe=recipe, seed=0, device="cpu",
                                   metadata={"version": "v1"})
    meta = storage.read_json(storage.join(out, "metadata.json"))
    kept = sum(s.split == "train" and s.subject_id not in exclude for s in samples)
    assert meta["version"] == "v1" and meta["sha256"] == sha and seconds > 0
    assert (meta["trained_samples"], meta["excluded_subjects"]) == (str(kept), str(len(exclude)))
    assert fetch_model(out, tmp_path / "fetched") == sha
    model, tokenizer, preprocessing = load_model(tmp_path / "fetched")
    assert tokenizer.model_max_length == TINY_TEXT_LENGTH
    assert (preprocessing.height, preprocessing.num_channels, preprocessing.do_normalize) == (16, 1, False)
    assert model.config.num_labels == 1 + max(s.label for s in samples)


def test_excluding_every_training_subject_is_an_input_error(dataset: tuple, tmp_path: Path) -> None:
    samples, manifest_uri = dataset
    everyone = sorted({s.subject_id for s in samples if s.split == "train"})
    with pytest.raises(InputError, match=r"has no training samples left to train on\."):
        fit_and_publish(manifest_uri, (tmp_path / "m").as_uri(), exclude=everyone, device="cpu")


def test_train_loss_is_three_heads_cross_entropy_plus_weighted_alignment(dataset: tuple, tmp_path: Path) -> None:
    samples, manifest_uri = dataset
    out = (tmp_path / "m").as_uri()
    fit_and_publish(manifest_uri, out, recipe=TrainConfig(epochs=1), seed=0, device="cpu")
    fetch_model(out, tmp_path / "fetched")
    model, tokenizer, preprocessing = load_model(tmp_path / "fetched")
    manifest = read_manifest(manifest_uri)
    a_patient = next(s.subject_id for s in samples if s.split == "train")
    rows = split(manifest, [a_patient]).retain[:8]
    batch = encode_manifest(manifest, manifest_uri, tokenizer, preprocessing, rows)
    with torch.no_grad():
        outputs = model(batch.pixels, batch.input_ids, batch.attention_mask)
        heads = (outputs.image_logits, outputs.text_logits, model.image_head(outputs.joint_embeds))
        ce = sum(F.cross_entropy(logits, batch.labels) for logits in heads)
        align = 1 - F.cosine_similarity(outputs.image_embeds, outputs.text_embeds, dim=-1).mean()
        torch.testing.assert_close(train_loss(model, batch, 0.0), ce)
        torch.testing.assert_close(train_loss(model, batch, 0.5), ce + 0.5 * align)


def test_a_png_dataset_trains_streamed_at_the_size_asked_for(tmp_path: Path) -> None:
    """``train`` reads PNG files through the stream and builds the small CNN at ``image_size``,
    saving the preprocessing that resizes the stored 16 px images to it."""
    samples = synthetic.generate(synthetic.SynthParams(patients=8, seed=4))
    manifest_uri = synthetic.write_dataset(samples, (tmp_path / "data").as_uri(), "png")
    out = (tmp_path / "m").as_uri()
    fit_and_publish(manifest_uri, out, recipe=TrainConfig(epochs=1), seed=0, device="cpu",
                    encoders=EncoderChoice(image_size=24, channels=3))
    fetch_model(out, tmp_path / "fetched")
    model, _, preprocessing = load_model(tmp_path / "fetched")
    assert (preprocessing.height, preprocessing.width, preprocessing.num_channels) == (24, 24, 3)
    assert (model.config.image_size, model.config.image_channels) == (24, 3)

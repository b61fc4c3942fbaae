"""Model directories: save/load round trip, strict loading, publish/fetch through file:// and S3."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from forgetmi_trainer import storage
from forgetmi_trainer.checkpoint import CONFIG, METADATA, WEIGHTS, fetch_model, load_model, publish_model, save_model
from forgetmi_trainer.errors import CheckpointError, StorageError
from forgetmi_trainer.model import MultimodalConfig, build_model, tiny_bert_config
from forgetmi_trainer.preprocess import PREPROCESSOR_FILE, ImagePreprocessing
from forgetmi_trainer.tokenizer import build_tokenizer, build_vocabulary

TEXTS = ["mild edema in the lung", "no effusion seen", "stable heart size"]
PREPROCESSING = ImagePreprocessing(height=16, width=16, num_channels=1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved model directory (never modified; tests copy it)."""
    directory = tmp_path_factory.mktemp("model") / "m"
    tokenizer = build_tokenizer(build_vocabulary(TEXTS), directory, max_length=16)
    config = MultimodalConfig(num_labels=3, embed_dim=16, text_encoder_config=tiny_bert_config(len(tokenizer)))
    save_model(build_model(config, seed=0), tokenizer, PREPROCESSING, directory)
    return directory


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _inputs(tokenizer: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    enc = tokenizer(TEXTS, padding="max_length", truncation=True, max_length=16, return_tensors="pt")  # type: ignore[operator]
    pixels = torch.rand(len(TEXTS), 1, 16, 16, generator=torch.Generator().manual_seed(0))
    return pixels, enc["input_ids"], enc["attention_mask"]


def test_round_trip_gives_identical_outputs(saved: Path, tmp_path: Path) -> None:
    model, tokenizer, preprocessing = load_model(saved)
    assert not model.training and preprocessing == PREPROCESSING
    again_dir = tmp_path / "again"
    save_model(model, tokenizer, preprocessing, again_dir)
    again, tokenizer2, preprocessing2 = load_model(again_dir)
    assert tokenizer2.get_vocab() == tokenizer.get_vocab() and preprocessing2 == PREPROCESSING
    pixels, ids, mask = _inputs(tokenizer)
    with torch.no_grad():
        a, b = model(pixels, ids, mask), again(pixels, ids, mask)
    for name in ("image_logits", "text_logits", "joint_embeds"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    state, state2 = model.state_dict(), again.state_dict()
    assert all(torch.equal(state[k], state2[k]) for k in state)


def _edit_weights(directory: Path, edit: object) -> None:
    state = load_file(str(directory / WEIGHTS))
    edit(state)  # type: ignore[operator]
    save_file(state, str(directory / WEIGHTS), metadata={"format": "pt"})


def test_missing_weight_is_rejected(saved: Path, tmp_path: Path) -> None:
    d = _copy(saved, tmp_path / "m")
    _edit_weights(d, lambda s: s.pop("image_head.weight"))
    with pytest.raises(CheckpointError, match=r"1 missing weight\(s\) \(image_head\.weight\)"):
        load_model(d)


def test_unexpected_weight_is_rejected(saved: Path, tmp_path: Path) -> None:
    d = _copy(saved, tmp_path / "m")
    _edit_weights(d, lambda s: s.__setitem__("extra_head.weight", torch.zeros(2, 2)))
    with pytest.raises(CheckpointError, match=r"1 unexpected weight\(s\) \(extra_head\.weight\)"):
        load_model(d)


def test_wrongly_shaped_weight_is_rejected(saved: Path, tmp_path: Path) -> None:
    d = _copy(saved, tmp_path / "m")
    _edit_weights(d, lambda s: s.__setitem__("image_head.bias", torch.zeros(7)))
    with pytest.raises(CheckpointError, match=r"1 wrongly shaped weight\(s\) \(image_head\.bias\)"):
        load_model(d)


def test_config_that_does_not_match_weights_is_rejected(saved: Path, tmp_path: Path) -> None:
    d = _copy(saved, tmp_path / "m")
    config = json.loads((d / CONFIG).read_text())
    config["embed_dim"] = 20
    (d / CONFIG).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="wrongly shaped"):
        load_model(d)


def test_missing_config_is_rejected(saved: Path, tmp_path: Path) -> None:
    d = _copy(saved, tmp_path / "m")
    (d / CONFIG).unlink()
    with pytest.raises(CheckpointError, match=r"has no config\.json"):
        load_model(d)


def test_unreadable_weights_are_rejected(saved: Path, tmp_path: Path) -> None:
    d = _copy(saved, tmp_path / "m")
    (d / WEIGHTS).write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=r"model\.safetensors could not be read"):
        load_model(d)


def test_missing_preprocessing_is_rejected(saved: Path, tmp_path: Path) -> None:
    d = _copy(saved, tmp_path / "m")
    (d / PREPROCESSOR_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"has no preprocessor_config\.json"):
        load_model(d)


@pytest.mark.parametrize(
    ("preprocessing", "message"),
    [
        (ImagePreprocessing(height=16, width=16, num_channels=3), r"gives 3 channels; the model takes 1"),
        (ImagePreprocessing(height=32, width=32, num_channels=1), r"gives 32x32 images; the model.s small CNN"),
    ],
)
def test_preprocessing_that_does_not_fit_the_model_is_rejected(
    saved: Path, tmp_path: Path, preprocessing: ImagePreprocessing, message: str
) -> None:
    d = _copy(saved, tmp_path / "m")
    preprocessing.save(d)
    with pytest.raises(CheckpointError, match=message):
        load_model(d)


def test_tokenizer_larger_than_the_text_encoder_is_rejected(saved: Path, tmp_path: Path) -> None:
    d = _copy(saved, tmp_path / "m")
    config = json.loads((d / CONFIG).read_text())
    config["text_encoder_config"]["vocab_size"] = 4
    (d / CONFIG).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="wrongly shaped"):
        load_model(d)
    _edit_weights(d, lambda s: s.__setitem__("text_encoder.embeddings.word_embeddings.weight", torch.zeros(4, 32)))
    with pytest.raises(CheckpointError, match=r"The tokenizer in .* has \d+ tokens for a text encoder with 4 token"):
        load_model(d)


@pytest.fixture(params=["file", "s3"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "s3":
        return storage.join(request.getfixturevalue("s3_bucket"), "registry")
    return (tmp_path / "registry").as_uri()


def test_publish_and_fetch_round_trip(saved: Path, registry: str, tmp_path: Path) -> None:
    uri = storage.join(registry, "m", "versions", "v1")
    sha = publish_model(saved, uri, {"version": "v1"})
    assert sha == hashlib.sha256((saved / WEIGHTS).read_bytes()).hexdigest()
    meta = storage.read_json(storage.join(uri, METADATA))
    assert meta["version"] == "v1"
    assert meta["sha256"] == sha
    assert meta["files"][WEIGHTS] == sha
    assert set(meta["files"]) == {p.name for p in saved.iterdir()}
    for name, digest in meta["files"].items():
        assert digest == hashlib.sha256((saved / name).read_bytes()).hexdigest(), name

    fetched = tmp_path / "fetched"
    assert fetch_model(uri, fetched) == sha
    assert (fetched / WEIGHTS).read_bytes() == (saved / WEIGHTS).read_bytes()
    model, _, _ = load_model(fetched)
    original, _, _ = load_model(saved)
    assert all(torch.equal(v, original.state_dict()[k]) for k, v in model.state_dict().items())


def test_fetch_rejects_corrupted_weights(saved: Path, registry: str, tmp_path: Path) -> None:
    uri = storage.join(registry, "m", "versions", "v1")
    publish_model(saved, uri, {})
    data = bytearray(storage.read_bytes(storage.join(uri, WEIGHTS)))
    data[-1] ^= 0xFF
    storage.write_bytes(storage.join(uri, WEIGHTS), bytes(data))
    expected = storage.read_json(storage.join(uri, METADATA))["sha256"]
    with pytest.raises(StorageError, match=rf"model\.safetensors has sha256 [0-9a-f]{{64}}, expected {expected}"):
        fetch_model(uri, tmp_path / "fetched")
    assert not (tmp_path / "fetched" / WEIGHTS).exists()


def test_fetch_missing_model_is_clear(registry: str, tmp_path: Path) -> None:
    uri = storage.join(registry, "m", "versions", "nope")
    with pytest.raises(StorageError, match="does not exist"):
        fetch_model(uri, tmp_path / "fetched")

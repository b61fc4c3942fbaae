"""Pretrained encoders (``encoders``): Hugging Face directories, local or in storage, as the classifier's
image and text encoders; weights carried over, preprocessing and tokenizer taken from them; the saved
classifier is one directory that loads strictly on its own."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    BertConfig,
    BertModel,
    ConvNextImageProcessor,
    ResNetConfig,
    ResNetModel,
    ViTConfig,
    ViTImageProcessor,
    ViTModel,
)

from forgetmi_trainer import storage, synthetic
from forgetmi_trainer.checkpoint import fetch_model, load_model, save_model
from forgetmi_trainer.cli import main
from forgetmi_trainer.encoders import (
    TINY_TEXT_LENGTH,
    Architecture,
    EncoderChoice,
    architecture,
    build_pretrained,
)
from forgetmi_trainer.errors import CheckpointError, ConfigError
from forgetmi_trainer.model import MultimodalConfig, build_model, tiny_bert_config
from forgetmi_trainer.preprocess import ImagePreprocessing
from forgetmi_trainer.tokenizer import build_tokenizer, build_vocabulary

TEXTS = ["mild edema in the lung", "no effusion seen", "stable heart size"]
BERT_POSITIONS = 40


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@dataclass(frozen=True)
class Pretrained:
    """A saved Hugging Face model directory and the weights of the model that was saved there."""

    directory: Path
    state: dict[str, torch.Tensor]


def _save(model: torch.nn.Module, directory: Path) -> Pretrained:
    model.save_pretrained(str(directory))  # type: ignore[operator]
    return Pretrained(directory, {k: v.clone() for k, v in model.state_dict().items()})


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> Pretrained:
    """A tiny random ResNet with a ConvNeXt-style processor (24 px, its own mean/std, bicubic)."""
    directory = tmp_path_factory.mktemp("resnet") / "resnet"
    torch.manual_seed(1)
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    saved = _save(ResNetModel(config), directory)
    ConvNextImageProcessor(size={"shortest_edge": 24}, crop_pct=None, image_mean=[0.4, 0.5, 0.6],
                           image_std=[0.2, 0.25, 0.3]).save_pretrained(str(directory))
    return saved


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> Pretrained:
    """A tiny random one-channel ViT for 16 px images, normalised around 0.5."""
    directory = tmp_path_factory.mktemp("vit") / "vit"
    torch.manual_seed(2)
    config = ViTConfig(image_size=16, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32)
    saved = _save(ViTModel(config), directory)
    ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5], image_std=[0.5]).save_pretrained(
        str(directory))
    return saved


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Pretrained:
    """A tiny random BERT with its own WordPiece tokenizer (words of TEXTS and a few more)."""
    directory = tmp_path_factory.mktemp("bert") / "bert"
    tokenizer = build_tokenizer(build_vocabulary([*TEXTS, "pleural opacity"]), directory, max_length=512)
    torch.manual_seed(3)
    spec = tiny_bert_config(len(tokenizer) + 5, positions=BERT_POSITIONS)
    spec.pop("model_type")
    return _save(BertModel(BertConfig(**spec)), directory)


def _arch(choice: EncoderChoice, workdir: Path, size: tuple[int, int] = (16, 16), channels: int = 1) -> Architecture:
    return architecture(choice, num_labels=3, texts=TEXTS, native_size=size, native_channels=channels, workdir=workdir)


def _copy_dir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _assert_carried(module: torch.nn.Module, pretrained: Pretrained) -> None:
    """Every weight of ``module`` is the pretrained model's (nothing of it is left random)."""
    state = module.state_dict()
    assert set(state) <= set(pretrained.state)  # the text encoder leaves the pooler behind
    for key, value in state.items():
        assert torch.equal(value, pretrained.state[key]), key


def _forward(arch: Architecture, model: torch.nn.Module) -> torch.Tensor:
    p = arch.preprocessing
    enc = arch.tokenizer(TEXTS, padding="max_length", truncation=True, max_length=arch.tokenizer.model_max_length,
                         return_tensors="pt")
    pixels = torch.rand(len(TEXTS), p.num_channels, p.height, p.width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.eval()(p.normalize(pixels), enc["input_ids"], enc["attention_mask"]).image_logits


def test_default_encoders_are_the_demo_model_at_the_images_size(tmp_path: Path) -> None:
    arch = _arch(EncoderChoice(), tmp_path)
    assert arch.preprocessing == ImagePreprocessing(height=16, width=16, num_channels=1)
    assert not arch.preprocessing.do_normalize and (arch.text_weights, arch.image_weights) == (None, None)
    assert arch.tokenizer.model_max_length == TINY_TEXT_LENGTH == 24
    before = MultimodalConfig(num_labels=3, image_size=16, image_channels=1,
                              text_encoder_config=tiny_bert_config(len(arch.tokenizer)))
    assert arch.config.to_dict() == before.to_dict()
    a, b = build_pretrained(arch, seed=5).state_dict(), build_model(before, seed=5).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b) and set(a) == set(b)


def test_small_cnn_flags_override_size_channels_and_text_length(tmp_path: Path) -> None:
    arch = _arch(EncoderChoice(image_size=32, channels=3, max_text_length=80), tmp_path)
    assert arch.preprocessing == ImagePreprocessing(height=32, width=32, num_channels=3)
    assert (arch.config.image_size, arch.config.image_channels) == (32, 3)
    assert arch.tokenizer.model_max_length == 80 and arch.config.text_encoder_config["max_position_embeddings"] == 80
    assert _forward(arch, build_pretrained(arch, 0)).shape == (3, 3)


def test_small_cnn_needs_square_images(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"The images are 16x24 pixels .* pass --image-size\."):
        _arch(EncoderChoice(), tmp_path, size=(16, 24))
    assert _arch(EncoderChoice(image_size=20), tmp_path, size=(16, 24)).preprocessing.height == 20


def test_resnet_image_encoder_carries_its_weights_and_processor(resnet: Pretrained, tmp_path: Path) -> None:
    arch = _arch(EncoderChoice(image_encoder=str(resnet.directory)), tmp_path)
    assert arch.preprocessing == ImagePreprocessing(height=24, width=24, num_channels=3, resample=3, do_normalize=True,
                                                    image_mean=(0.4, 0.5, 0.6), image_std=(0.2, 0.25, 0.3))
    assert arch.config.image_encoder == "transformers" and arch.config.image_encoder_config["model_type"] == "resnet"
    assert (arch.config.image_size, arch.config.image_channels, arch.image_weights) == (24, 3, resnet.directory)
    model = build_pretrained(arch, seed=0)
    _assert_carried(model.image_encoder.backbone, resnet)
    other = build_pretrained(arch, seed=1)
    _assert_carried(other.image_encoder.backbone, resnet)
    assert not torch.equal(model.image_head.weight, other.image_head.weight)  # the new layers follow the seed
    resized = _arch(EncoderChoice(image_encoder=str(resnet.directory), image_size=32), tmp_path)
    assert (resized.preprocessing.height, resized.preprocessing.width, resized.preprocessing.do_normalize) == (
        32, 32, True)
    assert _forward(resized, build_pretrained(resized, 0)).shape == (3, 3)


def test_vit_image_encoder_keeps_its_channels_and_fixed_size(vit: Pretrained, tmp_path: Path) -> None:
    arch = _arch(EncoderChoice(image_encoder=str(vit.directory)), tmp_path, channels=3)
    assert arch.preprocessing == ImagePreprocessing(height=16, width=16, num_channels=1, do_normalize=True,
                                                    image_mean=(0.5,), image_std=(0.5,))
    model = build_pretrained(arch, seed=0)
    _assert_carried(model.image_encoder.backbone, vit)
    assert _forward(arch, model).shape == (3, 3)
    with pytest.raises(ConfigError, match=r"--channels 3 differs from the 1 input channels of --image-encoder"):
        _arch(EncoderChoice(image_encoder=str(vit.directory), channels=3), tmp_path)
    with pytest.raises(ConfigError, match=r"--image-encoder .* takes 16x16 images .* not 32x32; leave out --image"):
        _arch(EncoderChoice(image_encoder=str(vit.directory), image_size=32), tmp_path)


def test_text_encoder_brings_its_tokenizer_and_weights(bert: Pretrained, tmp_path: Path) -> None:
    arch = _arch(EncoderChoice(text_encoder=str(bert.directory)), tmp_path)
    own = build_tokenizer(build_vocabulary([*TEXTS, "pleural opacity"]), tmp_path / "own")
    assert arch.tokenizer.get_vocab() == own.get_vocab()
    assert arch.tokenizer.model_max_length == BERT_POSITIONS  # the default 128, cut to the encoder's positions
    assert arch.config.text_encoder_config["vocab_size"] == len(own) + 5 and arch.text_weights == bert.directory
    _assert_carried(build_pretrained(arch, seed=0).text_encoder, bert)
    short = _arch(EncoderChoice(text_encoder=str(bert.directory), max_text_length=16), tmp_path)
    assert short.tokenizer.model_max_length == 16
    with pytest.raises(ConfigError, match=rf"--max-text-length 41 exceeds the {BERT_POSITIONS} positions"):
        _arch(EncoderChoice(text_encoder=str(bert.directory), max_text_length=41), tmp_path)


@pytest.mark.parametrize("image_model", ["resnet", "vit"])
def test_saved_model_is_one_directory_that_loads_strictly(image_model: str, bert: Pretrained, tmp_path: Path,
                                                          request: pytest.FixtureRequest) -> None:
    pretrained: Pretrained = request.getfixturevalue(image_model)
    image, text = _copy_dir(pretrained.directory, tmp_path / "image"), _copy_dir(bert.directory, tmp_path / "text")
    arch = _arch(EncoderChoice(image_encoder=str(image), text_encoder=str(text), max_text_length=12), tmp_path)
    model = build_pretrained(arch, seed=0)
    saved = tmp_path / "model"
    save_model(model, arch.tokenizer, arch.preprocessing, saved)
    shutil.rmtree(image)
    shutil.rmtree(text)
    config = json.loads((saved / "config.json").read_text())
    assert (config["image_encoder_config"]["model_type"], config["text_encoder_config"]["model_type"]) == (
        image_model, "bert")
    assert "_name_or_path" not in config["text_encoder_config"]
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer_config.json"} <= {
        p.name for p in saved.iterdir()}
    loaded, tokenizer, preprocessing = load_model(saved)
    assert preprocessing == arch.preprocessing and tokenizer.model_max_length == 12
    assert torch.equal(_forward(arch, model), _forward(Architecture(arch.config, tokenizer, preprocessing), loaded))
    state = load_file(str(saved / "model.safetensors"))
    key = next(k for k in state if k.startswith("image_encoder.backbone."))
    state.pop(key)
    save_file(state, str(saved / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=rf"1 missing weight\(s\) \({key}\)"):
        load_model(saved)


def test_encoders_named_by_uri_are_downloaded(resnet: Pretrained, bert: Pretrained, tmp_path: Path) -> None:
    store = (tmp_path / "store").as_uri()
    for name, directory in (("resnet", resnet.directory), ("bert", bert.directory)):
        for path in directory.iterdir():
            storage.upload_file(path, storage.join(store, name, path.name))
    storage.write_text(storage.join(store, "resnet", "onnx", "model.onnx"), "not needed")
    choice = EncoderChoice(image_encoder=storage.join(store, "resnet"), text_encoder=storage.join(store, "bert") + "/")
    arch = _arch(choice, tmp_path / "work")
    assert arch.image_weights == tmp_path / "work" / "image" and arch.text_weights == tmp_path / "work" / "text"
    assert {p.name for p in arch.image_weights.iterdir()} == {p.name for p in resnet.directory.iterdir()}  # no onnx/
    model = build_pretrained(arch, seed=0)
    _assert_carried(model.image_encoder.backbone, resnet)
    _assert_carried(model.text_encoder, bert)
    with pytest.raises(ConfigError, match=r"--text-encoder file:///.*/nothing names no objects in storage\."):
        _arch(EncoderChoice(text_encoder=storage.join(store, "nothing")), tmp_path / "w2")


def test_unusable_encoder_directories_name_the_flag(resnet: Pretrained, bert: Pretrained, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    no_processor = _copy_dir(resnet.directory, tmp_path / "no-processor")
    (no_processor / "preprocessor_config.json").unlink()
    no_tokenizer = _copy_dir(bert.directory, tmp_path / "no-tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (no_tokenizer / name).unlink()
    no_vocabulary = _copy_dir(bert.directory, tmp_path / "no-vocabulary")
    (no_vocabulary / "tokenizer.json").unlink()  # transformers would make an empty tokenizer from its config alone
    cases = [
        (EncoderChoice(image_encoder=str(tmp_path / "absent")), r"--image-encoder .*absent is neither 'small-cnn', a "
                                                                r"directory nor an s3:// or file:// URI\."),
        (EncoderChoice(text_encoder=str(tmp_path / "absent")), r"--text-encoder .*absent is not a directory\."),
        (EncoderChoice(text_encoder=str(empty)), r"--text-encoder .*empty is not a Hugging Face model directory "
                                                 r"\(it has no config\.json\)\."),
        (EncoderChoice(image_encoder=str(no_processor)), r"--image-encoder .*no-processor has no image processor "
                                                         r"\(preprocessor_config\.json\)"),
        (EncoderChoice(text_encoder=str(no_tokenizer)), r"--text-encoder .*no-tokenizer has no tokenizer \(none of "),
        (EncoderChoice(text_encoder=str(no_vocabulary)), r"--text-encoder .*no-vocabulary has a tokenizer with no "
                                                          r"vocabulary beyond its special tokens\."),
        (EncoderChoice(image_encoder=str(bert.directory)), r"--image-encoder .*bert is a bert model, not a vision "),
    ]
    for choice, message in cases:
        with pytest.raises(ConfigError, match=message):
            _arch(choice, tmp_path / "work")


def test_pretrained_weights_that_do_not_fit_their_config_are_refused(resnet: Pretrained, tmp_path: Path) -> None:
    for name, edit, message in (
        ("missing", lambda s: s.pop("embedder.embedder.convolution.weight"),
         r"its weights do not match its config: 1 missing weight\(s\) \(embedder\.embedder\.convolution\.weight\)"),
        ("shaped", lambda s: s.__setitem__("embedder.embedder.convolution.weight", torch.zeros(8, 3, 5, 5)),
         r"its weights"),
    ):
        directory = _copy_dir(resnet.directory, tmp_path / name)
        state = load_file(str(directory / "model.safetensors"))
        edit(state)
        save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
        arch = _arch(EncoderChoice(image_encoder=str(directory)), tmp_path / name / "work")
        with pytest.raises(CheckpointError, match=rf"--image-encoder .*{name}: {message}"):
            build_pretrained(arch, seed=0)


@pytest.mark.usefixtures("restore_trainer_logging")
def test_train_command_builds_on_a_pretrained_image_encoder(resnet: Pretrained, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    samples = synthetic.generate(synthetic.SynthParams(patients=6, seed=1))
    manifest = synthetic.write_dataset(samples, (tmp_path / "data").as_uri())
    out = (tmp_path / "registry" / "m" / "versions" / "v1").as_uri()
    code = main(["train", "--manifest", manifest, "--out", out, "--epochs", "1", "--device", "cpu",
                 "--image-encoder", str(resnet.directory), "--image-size", "16", "--max-text-length", "12"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["uri"] == out and "alias" not in printed
    fetch_model(out, tmp_path / "fetched")
    model, tokenizer, preprocessing = load_model(tmp_path / "fetched")
    assert model.config.image_encoder_config["model_type"] == "resnet" and tokenizer.model_max_length == 12
    assert (preprocessing.height, preprocessing.num_channels, preprocessing.do_normalize) == (16, 3, True)
    code = main(["train", "--manifest", manifest, "--out", out, "--device", "cpu", "--image-encoder",
                 str(tmp_path / "absent")])
    assert code == 2

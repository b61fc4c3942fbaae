"""Choosing the classifier's encoders: the built-in small ones, or pretrained Hugging Face models.

``train --text-encoder DIR|URI`` and ``--image-encoder small-cnn|DIR|URI`` name a Hugging Face
model directory (``config.json``, the weights, and its own tokenizer or image processor), local
or in storage (``s3://``, ``file:///``; downloaded first). Everything is read offline
(``local_files_only``). :func:`architecture` turns an :class:`EncoderChoice` into the
classifier's config, its tokenizer and its image preprocessing; :func:`build_pretrained` builds
the classifier and copies the pretrained weights into its sub-encoders. The saved model is one
directory (:mod:`forgetmi_trainer.checkpoint`) that no longer needs the encoders' directories.

Defaults: no text encoder is the tiny BERT with a vocabulary built from the manifest's reports
(texts cut at :data:`TINY_TEXT_LENGTH` tokens); ``small-cnn`` takes the images at their stored
size and channels, not normalised (the demo's models). A pretrained text encoder brings its
tokenizer (texts cut at :data:`PRETRAINED_TEXT_LENGTH` tokens or its limit); a pretrained image
encoder brings its processor's size and normalisation. ``--image-size``, ``--channels`` and
``--max-text-length`` override them; the text length is saved as the tokenizer's
``model_max_length``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer, PretrainedConfig
from transformers import PreTrainedTokenizerBase as Tokenizer
from transformers.models.auto.modeling_auto import MODEL_MAPPING
from transformers.utils import logging as hf_logging

from forgetmi_trainer import storage
from forgetmi_trainer.errors import CheckpointError, ConfigError
from forgetmi_trainer.model import (
    MultimodalClassifier,
    MultimodalConfig,
    build_model,
    text_encoder_options,
    tiny_bert_config,
)
from forgetmi_trainer.preprocess import ImagePreprocessing
from forgetmi_trainer.tokenizer import build_tokenizer, build_vocabulary

SMALL_CNN = "small-cnn"
TINY_TEXT_LENGTH = 24
"""Tokens per report for the tiny BERT (the demo's models)."""
PRETRAINED_TEXT_LENGTH = 128
"""Tokens per report for a pretrained text encoder, unless its position embeddings allow fewer."""
_DROPPED_KEYS = ("_name_or_path", "transformers_version", "id2label", "label2id")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model",
                    "spiece.model", "sentencepiece.bpe.model")
"""A text encoder's directory has its tokenizer in at least one of these (transformers would make an empty one)."""
_LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError)


class EncoderChoice(BaseModel):
    """The encoders ``train`` builds on (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text_encoder: str | None = Field(default=None, min_length=1)
    image_encoder: str = Field(default=SMALL_CNN, min_length=1)
    image_size: int | None = Field(default=None, ge=4, le=4096)
    channels: Literal[1, 3] | None = None
    max_text_length: int | None = Field(default=None, ge=2, le=8192)


@dataclass
class Architecture:
    """What :func:`build_pretrained` builds: the classifier's config, its tokenizer and image
    preprocessing, and the pretrained directories whose weights its sub-encoders start from."""

    config: MultimodalConfig
    tokenizer: Tokenizer
    preprocessing: ImagePreprocessing
    text_weights: Path | None = None
    image_weights: Path | None = None


def architecture(choice: EncoderChoice, *, num_labels: int, texts: list[str], native_size: tuple[int, int],
                 native_channels: int, workdir: Path) -> Architecture:
    """The classifier for ``choice`` and a dataset whose images are ``native_size`` (H, W) with
    ``native_channels``; pretrained encoders named by URI are downloaded under ``workdir``.
    Raises :class:`ConfigError` naming the flag whose value cannot be used."""
    text_dir = None if choice.text_encoder is None else local_model(choice.text_encoder, workdir / "text",
                                                                       "--text-encoder")
    image_dir = None if choice.image_encoder == SMALL_CNN else local_model(choice.image_encoder, workdir / "image",
                                                                           "--image-encoder")
    if text_dir is None:
        length = choice.max_text_length or TINY_TEXT_LENGTH
        tokenizer = build_tokenizer(build_vocabulary(texts), workdir / "tokenizer", max_length=length)
        text_config = tiny_bert_config(len(tokenizer), positions=max(64, length))
    else:
        tokenizer, text_config = _pretrained_text(text_dir, choice.max_text_length)
    if image_dir is None:
        preprocessing = _small_cnn_input(choice, native_size, native_channels)
        image_fields: dict[str, Any] = {"image_encoder": "cnn"}
    else:
        preprocessing, image_config = _pretrained_image(image_dir, choice)
        image_fields = {"image_encoder": "transformers", "image_encoder_config": image_config}
    config = MultimodalConfig(num_labels=num_labels, image_size=preprocessing.height,
                              image_channels=preprocessing.num_channels, text_encoder_config=text_config,
                              **image_fields)
    return Architecture(config, tokenizer, preprocessing, text_dir, image_dir)


def build_pretrained(arch: Architecture, seed: int) -> MultimodalClassifier:
    """The classifier of ``arch`` (projections, heads and gate initialised from ``seed``) whose
    sub-encoders carry the pretrained weights; :class:`CheckpointError` naming the flag when a
    pretrained directory's weights do not match its config."""
    model = build_model(arch.config, seed)
    if arch.text_weights is not None:
        _carry_weights(model.text_encoder, arch.text_weights, "--text-encoder",
                       text_encoder_options(model.text_encoder.config))
    if arch.image_weights is not None:
        _carry_weights(model.image_encoder.backbone, arch.image_weights, "--image-encoder", {})
    return model


def local_model(spec: str, destination: Path, flag: str) -> Path:
    """The local Hugging Face directory ``spec`` names: a path, or an ``s3://`` / ``file://`` URI
    whose top-level objects are downloaded into ``destination``."""
    if spec.startswith(("s3://", "file://")):
        prefix = spec.rstrip("/") + "/"
        names = [uri[len(prefix):] for uri in storage.list_uris(spec) if "/" not in uri[len(prefix):]]
        if not names:
            raise ConfigError(f"{flag} {spec} names no objects in storage.")
        destination.mkdir(parents=True, exist_ok=True)
        for name in names:
            storage.download_file(prefix + name, destination / name)
        directory = destination
    else:
        directory = Path(spec).expanduser()
        if not directory.is_dir():
            raise ConfigError(f"{flag} {spec} is neither '{SMALL_CNN}', a directory nor an s3:// or file:// URI."
                              if flag == "--image-encoder" else f"{flag} {spec} is not a directory.")
    if not (directory / "config.json").is_file():
        raise ConfigError(f"{flag} {spec} is not a Hugging Face model directory (it has no config.json).")
    return directory


def _encoder_config(directory: Path, flag: str) -> PretrainedConfig:
    try:
        return AutoConfig.from_pretrained(str(directory), local_files_only=True)
    except _LOAD_ERRORS as err:
        raise ConfigError(f"{flag} {directory} has a config.json that transformers cannot read ({err}).") from err


def config_dict(config: PretrainedConfig) -> dict[str, Any]:
    """An encoder's config as the classifier's config.json keeps it (with ``model_type``; no paths,
    versions or label names)."""
    spec = config.to_dict()
    for key in _DROPPED_KEYS:
        spec.pop(key, None)
    return spec


def _pretrained_text(directory: Path, max_length: int | None) -> tuple[Tokenizer, dict[str, Any]]:
    """The text encoder's own tokenizer (cut at ``max_length``) and its config dict."""
    config = _encoder_config(directory, "--text-encoder")
    if MODEL_MAPPING.get(type(config), None) is None:
        raise ConfigError(f"--text-encoder {directory} is a {config.model_type} model without a base model in "
                          "transformers.")
    if not any((directory / name).is_file() for name in _TOKENIZER_FILES):
        raise ConfigError(f"--text-encoder {directory} has no tokenizer (none of {', '.join(_TOKENIZER_FILES)}).")
    try:
        with _quiet():
            tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except _LOAD_ERRORS as err:
        raise ConfigError(f"--text-encoder {directory} has no tokenizer transformers can load ({err}).") from err
    if len(tokenizer) <= len(tokenizer.all_special_tokens):
        raise ConfigError(f"--text-encoder {directory} has a tokenizer with no vocabulary beyond its special tokens.")
    vocab_size = int(getattr(config, "vocab_size", 0) or 0)
    if len(tokenizer) > vocab_size:
        raise ConfigError(f"--text-encoder {directory} has a tokenizer of {len(tokenizer)} tokens for a model with "
                          f"{vocab_size} token embeddings.")
    if tokenizer.pad_token is None or tokenizer.mask_token is None:
        raise ConfigError(f"--text-encoder {directory} has a tokenizer without a pad or mask token; the trainer "
                          "pads reports and masks their keywords.")
    limit = int(getattr(config, "max_position_embeddings", 0) or PRETRAINED_TEXT_LENGTH)
    length = max_length or min(PRETRAINED_TEXT_LENGTH, limit, int(tokenizer.model_max_length or limit))
    if length > limit:
        raise ConfigError(f"--max-text-length {length} exceeds the {limit} positions of --text-encoder {directory}.")
    tokenizer.model_max_length = length
    return tokenizer, config_dict(config)


def _small_cnn_input(choice: EncoderChoice, native_size: tuple[int, int], native_channels: int) -> ImagePreprocessing:
    """The small CNN's input: the images' own size and channels unless the flags say otherwise; not normalised."""
    height, width = (choice.image_size, choice.image_size) if choice.image_size else native_size
    if height != width:
        raise ConfigError(f"The images are {height}x{width} pixels and the small CNN takes square ones; "
                          "pass --image-size.")
    channels = choice.channels or native_channels
    if channels not in (1, 3):
        raise ConfigError(f"The images have {native_channels} channels; pass --channels 1 or 3.")
    return ImagePreprocessing(height=height, width=width, num_channels=channels)  # type: ignore[arg-type]


def _pretrained_image(directory: Path, choice: EncoderChoice) -> tuple[ImagePreprocessing, dict[str, Any]]:
    """The image encoder's preprocessing (its processor's, with the flags' size) and its config dict."""
    config = _encoder_config(directory, "--image-encoder")
    model_class = MODEL_MAPPING.get(type(config), None)
    takes_pixels = model_class is not None and "pixel_values" in inspect.signature(model_class.forward).parameters
    if not takes_pixels or not (getattr(config, "hidden_size", None) or getattr(config, "hidden_sizes", None)):
        raise ConfigError(f"--image-encoder {directory} is a {config.model_type} model, not a vision backbone "
                          "with a hidden size.")
    channels = int(getattr(config, "num_channels", 0) or choice.channels or 3)
    if choice.channels is not None and choice.channels != channels:
        raise ConfigError(f"--channels {choice.channels} differs from the {channels} input channels of "
                          f"--image-encoder {directory}; its first layer is pretrained for {channels}.")
    try:
        with _quiet():
            processor = AutoImageProcessor.from_pretrained(str(directory), local_files_only=True)
        processed = ImagePreprocessing.from_hf_processor(processor, num_channels=channels)
    except _LOAD_ERRORS as err:
        raise ConfigError(f"--image-encoder {directory} has no image processor (preprocessor_config.json) "
                          f"the trainer can use ({err}).") from err
    if choice.image_size:
        processed = ImagePreprocessing(**{**processed.model_dump(), "height": choice.image_size,
                                          "width": choice.image_size})
    fixed = getattr(config, "image_size", None)
    if isinstance(fixed, int) and (processed.height, processed.width) != (fixed, fixed):
        raise ConfigError(f"--image-encoder {directory} takes {fixed}x{fixed} images (its position embeddings are "
                          f"fixed), not {processed.height}x{processed.width}; leave out --image-size.")
    return processed, config_dict(config)


def _carry_weights(module: torch.nn.Module, directory: Path, flag: str, options: dict[str, Any]) -> None:
    """Copy the pretrained weights of ``directory`` into ``module`` (built from the same config);
    weights the module lacks (a pooler, a classification head) are left behind."""
    try:
        with _quiet():
            pretrained, info = AutoModel.from_pretrained(str(directory), local_files_only=True, dtype=torch.float32,
                                                         output_loading_info=True, **options)
    except _LOAD_ERRORS as err:
        raise CheckpointError(f"{flag} {directory}: its weights could not be loaded ({err}).") from err
    found = {"missing": info.get("missing_keys"), "wrongly shaped": info.get("mismatched_keys")}
    names = {label: sorted(str(k[0] if isinstance(k, tuple) else k) for k in keys or ())
             for label, keys in found.items()}
    problems = [f"{len(keys)} {label} weight(s) ({', '.join(keys[:3])})" for label, keys in names.items() if keys]
    if problems:
        raise CheckpointError(f"{flag} {directory}: its weights do not match its config: {'; '.join(problems)}.")
    try:
        module.load_state_dict(pretrained.state_dict(), strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{flag} {directory}: its weights do not fit the classifier's encoder ({err}).") from err


@contextmanager
def _quiet() -> Iterator[None]:
    """transformers' load reports, progress bars and warnings off while a pretrained directory is read."""
    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()

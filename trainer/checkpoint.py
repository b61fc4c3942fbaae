"""Model directories: save, strict load, and transfer to and from the registry.

A model directory is a Hugging Face directory (``config.json`` with the encoders' configs,
``model.safetensors`` with every weight) plus the tokenizer files, the image preprocessing
(``preprocessor_config.json``, :mod:`forgetmi_trainer.preprocess`) and ``metadata.json``. It loads
offline from its own files, whatever pretrained encoders it was built on. Loading is strict: a
missing, unexpected or wrongly shaped weight, or a tokenizer or preprocessing that does not fit
the config, is a :class:`CheckpointError`, never a silent random initialisation. In the registry
``metadata.json`` is written last, so a version directory without it is incomplete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers.utils import logging as hf_logging

from forgetmi_trainer import storage
from forgetmi_trainer.errors import CheckpointError, ObjectNotFound
from forgetmi_trainer.model import MultimodalClassifier, MultimodalConfig
from forgetmi_trainer.preprocess import PREPROCESSOR_FILE, ImagePreprocessing
from forgetmi_trainer.tokenizer import load_tokenizer

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
METADATA = "metadata.json"
REQUIRED = (CONFIG, WEIGHTS, "tokenizer_config.json", PREPROCESSOR_FILE)


def save_model(model: MultimodalClassifier, tokenizer: Any, preprocessing: ImagePreprocessing, directory: Path) -> None:
    """Write config, safetensors weights, tokenizer files and the image preprocessing into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()
    # The weights go out under the model's own state-dict names: ``save_pretrained`` would rename some
    # sub-encoders' weights to their checkpoint names (ViT's, in transformers 5), which a strict load refuses.
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(str(directory))
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(directory / WEIGHTS),
              metadata={"format": "pt"})
    tokenizer.save_pretrained(str(directory))
    preprocessing.save(directory)


def load_model(
    directory: Path, device: str | torch.device = "cpu"
) -> tuple[MultimodalClassifier, Any, ImagePreprocessing]:
    """The model, tokenizer and image preprocessing saved in ``directory``; raises
    :class:`CheckpointError` when the directory is incomplete, its weights do not match its config
    exactly, or its tokenizer or preprocessing do not fit the model."""
    for name in REQUIRED:
        if not (directory / name).is_file():
            raise CheckpointError(f"Model directory {directory} has no {name}.")
    try:
        config = MultimodalConfig.from_json_file(str(directory / CONFIG))
    except (OSError, ValueError, TypeError) as err:
        raise CheckpointError(f"Model config {directory / CONFIG} is invalid: {err}.") from err
    if getattr(config, "model_type", None) != MultimodalConfig.model_type:
        raise CheckpointError(f"Model config {directory / CONFIG} is not a {MultimodalConfig.model_type} config.")
    try:
        state = load_file(str(directory / WEIGHTS), device="cpu")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"Weights {directory / WEIGHTS} could not be read: {err}.") from err
    try:
        model = MultimodalClassifier(config)
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"Model config {directory / CONFIG} does not describe a model ({err}).") from err
    _load_strict(model, state, directory / WEIGHTS)
    tokenizer, preprocessing = _load_tokenizer(directory), ImagePreprocessing.load(directory)
    _check_inputs(model, tokenizer, preprocessing, directory)
    model.to(device)
    model.eval()
    return model, tokenizer, preprocessing


def _load_tokenizer(directory: Path) -> Any:
    try:
        return load_tokenizer(directory)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"The tokenizer in {directory} could not be loaded ({err}).") from err


def _check_inputs(model: MultimodalClassifier, tokenizer: Any, preprocessing: ImagePreprocessing, where: Path) -> None:
    """The tokenizer's ids fit the text encoder, the preprocessed images the image encoder."""
    config = model.config
    embeddings = int(model.text_encoder.get_input_embeddings().num_embeddings)
    if len(tokenizer) > embeddings:
        raise CheckpointError(f"The tokenizer in {where} has {len(tokenizer)} tokens for a text encoder with "
                              f"{embeddings} token embeddings.")
    if preprocessing.num_channels != config.image_channels:
        raise CheckpointError(f"{where / PREPROCESSOR_FILE} gives {preprocessing.num_channels} channels; the model "
                              f"takes {config.image_channels}.")
    if config.image_encoder == "cnn" and (preprocessing.height, preprocessing.width) != (config.image_size,) * 2:
        raise CheckpointError(f"{where / PREPROCESSOR_FILE} gives {preprocessing.height}x{preprocessing.width} "
                              f"images; the model's small CNN takes {config.image_size}x{config.image_size}.")


def _load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrongly shaped", shapes)):
        if keys:
            shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
            problems.append(f"{len(keys)} {label} weight(s) ({shown})")
    if problems:
        raise CheckpointError(f"Checkpoint {where} does not match its config: {'; '.join(problems)}.")
    model.load_state_dict(state, strict=True)


def fetch_model(uri: str, directory: Path) -> str:
    """Download the model directory at ``uri`` into ``directory``; returns the weights' sha256,
    checked against ``metadata.json`` when the registry recorded one."""
    directory.mkdir(parents=True, exist_ok=True)
    metadata: dict[str, Any] = {}
    meta_uri = storage.join(uri, METADATA)
    if storage.exists(meta_uri):
        metadata = storage.read_json(meta_uri)
    elif not storage.exists(storage.join(uri, WEIGHTS)):
        raise ObjectNotFound(uri, f"Model {uri} does not exist (no {METADATA} or {WEIGHTS}).")
    files: dict[str, str | None] = dict(metadata.get("files") or {})
    if not files:
        prefix = uri.rstrip("/") + "/"
        files = {u[len(prefix):]: None for u in storage.list_uris(uri) if "/" not in u[len(prefix):]}
        files.pop(METADATA, None)
    missing = [name for name in REQUIRED if name not in files]
    if missing:
        raise CheckpointError(f"Model {uri} lacks {', '.join(missing)}.")
    sha = ""
    for name, expected in sorted(files.items()):
        digest = storage.download_file(storage.join(uri, name), directory / name, expected_sha256=expected)
        if name == WEIGHTS:
            sha = digest
    return sha


def publish_model(directory: Path, uri: str, metadata: dict[str, Any]) -> str:
    """Upload a saved model directory to ``uri``, ``metadata.json`` (with every file's sha256)
    last; returns the weights' sha256."""
    files = {}
    for path in sorted(p for p in directory.iterdir() if p.is_file() and p.name != METADATA):
        files[path.name] = storage.upload_file(path, storage.join(uri, path.name))
    if WEIGHTS not in files:
        raise CheckpointError(f"Model directory {directory} has no {WEIGHTS} to publish.")
    record = {**metadata, "sha256": files[WEIGHTS], "files": files}
    storage.write_text(storage.join(uri, METADATA), json.dumps(record, indent=2, sort_keys=True))
    return files[WEIGHTS]

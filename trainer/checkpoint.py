"""Model directories: save, strict load, and transfer to and from the registry.

A model directory is a Hugging Face directory (``config.json`` + ``model.safetensors``) plus the
tokenizer files and ``metadata.json``. Loading is strict: a missing, unexpected or wrongly
shaped weight is a :class:`CheckpointError`, never a silent random initialisation. In the
registry ``metadata.json`` is written last, so a version directory without it is incomplete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers.utils import logging as hf_logging

from forgetmi_trainer import storage
from forgetmi_trainer.errors import CheckpointError, ObjectNotFound
from forgetmi_trainer.model import MultimodalClassifier, MultimodalConfig
from forgetmi_trainer.tokenizer import load_tokenizer

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
METADATA = "metadata.json"
REQUIRED = (CONFIG, WEIGHTS, "tokenizer_config.json")


def save_model(model: MultimodalClassifier, tokenizer: Any, directory: Path) -> None:
    """Write config, safetensors weights and tokenizer files into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()
    model.save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))


def load_model(directory: Path, device: str | torch.device = "cpu") -> tuple[MultimodalClassifier, Any]:
    """The model and tokenizer saved in ``directory``; raises :class:`CheckpointError` when the
    directory is incomplete or its weights do not match its config exactly."""
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
    model = MultimodalClassifier(config)
    _load_strict(model, state, directory / WEIGHTS)
    model.to(device)
    model.eval()
    return model, load_tokenizer(directory)


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

"""Fitting a model on a manifest and publishing it: the ``train`` command and the demo.

The tokenizer's vocabulary is built from every report of the manifest and shipped inside the
model directory. ``exclude`` subjects (a retrained reference) are left out of training.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from forgetmi_trainer import data
from forgetmi_trainer.checkpoint import publish_model, save_model
from forgetmi_trainer.errors import InputError
from forgetmi_trainer.model import MultimodalConfig, build_model, tiny_bert_config
from forgetmi_trainer.progress import ProgressReporter
from forgetmi_trainer.runtime import resolve_device, resolve_precision, seed_everything
from forgetmi_trainer.tokenizer import build_tokenizer, build_vocabulary
from forgetmi_trainer.train import TrainConfig, train_model

log = logging.getLogger(__name__)
MAX_TOKENS = 24


def fit_and_publish(
    manifest_uri: str,
    out_uri: str,
    *,
    exclude: list[str] | None = None,
    recipe: TrainConfig | None = None,
    seed: int = 0,
    device: str = "auto",
    precision: str = "auto",
    metadata: dict[str, str] | None = None,
) -> tuple[str, float]:
    """Train on the manifest's training samples (minus ``exclude``d subjects) and publish the
    model directory to ``out_uri``; returns (weights sha256, training seconds)."""
    recipe = recipe or TrainConfig()
    torch_device = resolve_device(device)
    prec = resolve_precision(precision, torch_device)
    manifest = data.read_manifest(manifest_uri)
    excluded = set(exclude or [])
    idx = np.asarray(
        [i for i in range(len(manifest)) if manifest.splits[i] == "train" and manifest.subject_ids[i] not in excluded],
        dtype=np.int64,
    )
    if idx.size == 0:
        raise InputError(f"Manifest {manifest_uri} has no training samples left to train on.")
    images = data.load_images([manifest.image_uris[i] for i in idx])
    with tempfile.TemporaryDirectory(prefix="forgetmi-fit-") as tmp:
        directory = Path(tmp) / "model"
        tokenizer = build_tokenizer(build_vocabulary(manifest.texts), directory, max_length=MAX_TOKENS)
        encoded = data.encode(images, [manifest.texts[i] for i in idx], manifest.labels[idx], tokenizer, MAX_TOKENS)
        config = MultimodalConfig(
            num_labels=int(manifest.labels.max()) + 1,
            image_size=int(images.shape[-1]),
            image_channels=int(images.shape[1]),
            text_encoder_config=tiny_bert_config(len(tokenizer)),
        )
        model = build_model(config, seed)
        generator = seed_everything(seed)
        reporter = ProgressReporter("train" if not excluded else "retrain")
        start = time.perf_counter()
        train_model(
            model,
            encoded,
            recipe,
            generator=generator,
            device=torch_device,
            precision=prec,
            on_epoch=lambda epoch, loss: reporter.update(epoch, recipe.epochs, loss),
        )
        seconds = time.perf_counter() - start
        save_model(model.to(torch.device("cpu")), tokenizer, directory)
        sha = publish_model(
            directory,
            out_uri,
            {
                **(metadata or {}),
                "trained_samples": str(idx.size),
                "excluded_subjects": str(len(excluded)),
            },
        )
    log.info("Trained on %d samples in %.1fs and published %s", idx.size, seconds, out_uri)
    return sha, seconds

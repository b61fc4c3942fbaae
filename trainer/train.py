"""Training an original model, or retraining one from scratch without the forgotten patients,
and fitting one on a manifest and publishing it (the ``train`` command and the demo).

Loss per batch: image-head CE + text-head CE + image-head CE of the joint embedding (trains
the fusion gate) + an alignment term ``1 - cos(a, t)``. The same code runs on CPU and GPU.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from forgetmi_trainer import distributed
from forgetmi_trainer.checkpoint import publish_model, save_model
from forgetmi_trainer.contract import DataConfig
from forgetmi_trainer.data import Encoded, text_length
from forgetmi_trainer.distributed import World
from forgetmi_trainer.encoders import Architecture, EncoderChoice, architecture, build_pretrained
from forgetmi_trainer.errors import DivergedError, InputError
from forgetmi_trainer.manifest import Manifest, read_manifest
from forgetmi_trainer.model import MultimodalClassifier
from forgetmi_trainer.progress import ProgressReporter
from forgetmi_trainer.runtime import adamw, autocast, resolve_device, resolve_precision, seed_everything
from forgetmi_trainer.streaming import Samples, SampleStream, load_batches, native_shape

log = logging.getLogger(__name__)


class TrainConfig(BaseModel):
    """The training recipe; retraining for a comparison uses the same one."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=40, ge=1)
    learning_rate: float = Field(default=3e-3, gt=0)
    batch_size: int = Field(default=64, ge=1)
    weight_decay: float = Field(default=0.01, ge=0)
    align_weight: float = Field(default=0.1, ge=0)


def train_loss(model: MultimodalClassifier, batch: Encoded, align_weight: float) -> torch.Tensor:
    """The scalar training loss of one batch."""
    out = model(batch.pixels, batch.input_ids, batch.attention_mask)
    y = batch.labels
    loss = (
        F.cross_entropy(out.image_logits.float(), y)
        + F.cross_entropy(out.text_logits.float(), y)
        + F.cross_entropy(model.image_head(out.joint_embeds).float(), y)
    )
    align = 1.0 - F.cosine_similarity(out.image_embeds.float(), out.text_embeds.float(), dim=-1).mean()
    return loss + align_weight * align


def train_model(
    model: MultimodalClassifier,
    data: Samples | Encoded,
    config: TrainConfig,
    *,
    generator: torch.Generator,
    device: torch.device,
    precision: str = "fp32",
    on_epoch: Callable[[int, float], None] | None = None,
    world: World = distributed.SINGLE,
    seed: int = 0,
) -> MultimodalClassifier:
    """Train ``model`` in place on ``data`` (in memory or streamed) and return it (in eval mode). In a
    world of several processes each rank trains on its DistributedSampler shard (seeded by ``seed`` and the
    epoch) with batches of ``batch_size / W`` through DistributedDataParallel, and the epoch loss is averaged."""
    model.to(device).train()
    optimizer = adamw(model, config.learning_rate, config.weight_decay)
    replica = distributed.data_parallel(model, world)
    size = distributed.local_batch(config.batch_size, world)
    steps_per_epoch = math.ceil(math.ceil(len(data) / world.size) / size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=config.epochs * steps_per_epoch, pct_start=0.1
    )
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        order = distributed.epoch_order(len(data), world, seed, epoch, generator)
        total = 0.0
        plan = [order[step * size : (step + 1) * size] for step in range(steps_per_epoch)]
        for _, batch in load_batches(data, plan):
            with autocast(device, precision):
                loss = train_loss(replica, batch, config.align_weight)
            if not torch.isfinite(loss):
                raise DivergedError(f"Training loss became {float(loss.detach())} at epoch {epoch}.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
        mean = distributed.all_sum(world, [total / steps_per_epoch])[0] / world.size
        if on_epoch is not None:
            on_epoch(epoch, mean)
    rate = config.epochs * len(data) / max(time.perf_counter() - start, 1e-9)
    log.info("Trained %d epochs on %d samples: final loss %.4f, %.0f samples/s", config.epochs, len(data), mean, rate)
    return model.eval()


# --- the ``train`` command and the demo: fit on a manifest and publish -----------------------


@dataclass
class Fitted:
    """A model trained by :func:`fit` (on the CPU), its architecture and the training seconds."""

    model: MultimodalClassifier
    arch: Architecture
    seconds: float


def fit(
    manifest: Manifest,
    manifest_uri: str,
    rows: np.ndarray,
    workdir: Path,
    *,
    recipe: TrainConfig,
    seed: int,
    device: torch.device,
    precision: str,
    encoders: EncoderChoice,
    settings: DataConfig,
    task: str = "train",
) -> Fitted:
    """Build the model ``encoders`` describe (from the seed) and train it on ``rows`` of the manifest,
    streamed; what ``train``, retraining and the reference models share."""
    cache = workdir / "cache"
    channels, height, width = native_shape(manifest, manifest_uri, int(rows[0]), cache, settings)
    arch = architecture(encoders, num_labels=int(manifest.labels.max()) + 1, texts=manifest.texts,
                        native_size=(height, width), native_channels=channels, workdir=workdir / "encoders")
    model = build_pretrained(arch, seed)
    generator = seed_everything(seed)
    reporter = ProgressReporter(task)
    start = time.perf_counter()
    with SampleStream(manifest, manifest_uri, arch.preprocessing, arch.tokenizer,
                      max_length=text_length(arch.tokenizer), device=device, settings=settings,
                      cache_dir=cache) as stream:
        train_model(model, stream.view(rows), recipe, generator=generator, device=device, precision=precision,
                    on_epoch=lambda epoch, loss: reporter.update(epoch, recipe.epochs, loss))
    return Fitted(model.to(torch.device("cpu")), arch, time.perf_counter() - start)


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
    encoders: EncoderChoice | None = None,
    settings: DataConfig | None = None,
) -> tuple[str, float]:
    """Train on the manifest's training samples (minus ``exclude``d subjects), streamed, and
    publish the model directory to ``out_uri``; returns (weights sha256, training seconds).

    ``encoders`` chooses the encoders (default: the small CNN at the images' size and the tiny
    BERT whose vocabulary is built from every report of the manifest; :mod:`forgetmi_trainer.encoders`);
    the tokenizer and the preprocessing ship inside the model directory. ``exclude`` subjects
    (a retrained reference) are left out of training. The recipe, the encoders and the seed are
    recorded in ``metadata.json`` (``training``), so reference models can repeat them."""
    recipe, settings, encoders = recipe or TrainConfig(), settings or DataConfig(), encoders or EncoderChoice()
    torch_device = resolve_device(device)
    manifest = read_manifest(manifest_uri)
    excluded = set(exclude or [])
    idx = training_rows(manifest, excluded, manifest_uri)
    with tempfile.TemporaryDirectory(prefix="forgetmi-fit-") as tmp:
        fitted = fit(manifest, manifest_uri, idx, Path(tmp), recipe=recipe, seed=seed, device=torch_device,
                     precision=resolve_precision(precision, torch_device), encoders=encoders, settings=settings,
                     task="train" if not excluded else "retrain")
        save_model(fitted.model, fitted.arch.tokenizer, fitted.arch.preprocessing, Path(tmp) / "model")
        counts = {"trained_samples": str(idx.size), "excluded_subjects": str(len(excluded))}
        training = {"recipe": recipe.model_dump(mode="json"), "encoders": encoders.model_dump(mode="json"),
                    "seed": seed}
        sha = publish_model(Path(tmp) / "model", out_uri, {**(metadata or {}), **counts, "training": training})
    log.info("Trained on %d samples in %.1fs and published %s", idx.size, fitted.seconds, out_uri)
    return sha, fitted.seconds


def training_rows(manifest: Manifest, excluded: set[str], uri: str) -> np.ndarray:
    """Indices (N,) of the manifest's training samples whose subject is not ``excluded``."""
    idx = np.asarray(
        [i for i in range(len(manifest)) if manifest.splits[i] == "train" and manifest.subject_ids[i] not in excluded],
        dtype=np.int64,
    )
    if idx.size == 0:
        raise InputError(f"Manifest {uri} has no training samples left to train on.")
    return idx

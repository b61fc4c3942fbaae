"""Training an original model, or retraining one from scratch without the forgotten patients.

Loss per batch: image-head CE + text-head CE + image-head CE of the joint embedding (trains
the fusion gate) + an alignment term ``1 - cos(a, t)``. The same code runs on CPU and GPU.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from forgetmi_trainer.data import Encoded
from forgetmi_trainer.errors import DivergedError
from forgetmi_trainer.model import MultimodalClassifier
from forgetmi_trainer.runtime import adamw, autocast

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
    data: Encoded,
    config: TrainConfig,
    *,
    generator: torch.Generator,
    device: torch.device,
    precision: str = "fp32",
    on_epoch: Callable[[int, float], None] | None = None,
) -> MultimodalClassifier:
    """Train ``model`` in place on ``data`` and return it (in eval mode)."""
    model.to(device).train()
    data = data.to(device)
    optimizer = adamw(model, config.learning_rate, config.weight_decay)
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=config.epochs * steps_per_epoch, pct_start=0.1
    )
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(len(data), generator=generator)
        total = 0.0
        for step in range(steps_per_epoch):
            batch = data.take(order[step * config.batch_size : (step + 1) * config.batch_size].to(device))
            with autocast(device, precision):
                loss = train_loss(model, batch, config.align_weight)
            if not torch.isfinite(loss):
                raise DivergedError(f"Training loss became {float(loss.detach())} at epoch {epoch}.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
        mean = total / steps_per_epoch
        if on_epoch is not None:
            on_epoch(epoch, mean)
    rate = config.epochs * len(data) / max(time.perf_counter() - start, 1e-9)
    log.info("Trained %d epochs on %d samples: final loss %.4f, %.0f samples/s", config.epochs, len(data), mean, rate)
    return model.eval()

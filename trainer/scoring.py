"""Scoring a model: image-head logits on the forget, retain and test sets → AUC/F1 and the MIA."""

from __future__ import annotations

import numpy as np
import torch

from forgetmi_trainer import evaluate, mia
from forgetmi_trainer.contract import ModelMetrics
from forgetmi_trainer.data import Encoded
from forgetmi_trainer.model import MultimodalClassifier
from forgetmi_trainer.runtime import autocast


@torch.no_grad()
def image_logits(
    model: MultimodalClassifier, data: Encoded, *, precision: str = "fp32", batch_size: int = 512
) -> np.ndarray:
    """Image-head logits (N, C) as float64."""
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(data), batch_size):
        b = data.take(torch.arange(start, min(start + batch_size, len(data)))).to(device)
        with autocast(device, precision):
            chunks.append(model(b.pixels, b.input_ids, b.attention_mask).image_logits.float().cpu())
    return torch.cat(chunks).double().numpy()


def model_metrics(
    model: MultimodalClassifier, forget: Encoded, retain: Encoded, test: Encoded, *, seed: int, precision: str = "fp32"
) -> tuple[ModelMetrics, np.ndarray]:
    """AUC/F1 on forget and test and the four MIA numbers; also returns the retain logits."""
    f, r, t = (image_logits(model, d, precision=precision) for d in (forget, retain, test))
    yf, yr, yt = (d.labels.cpu().numpy() for d in (forget, retain, test))
    split = evaluate.split_metrics(f, yf, t, yt)
    audit = mia.audit(
        mia.per_sample_losses(r, yr), yr, mia.per_sample_losses(t, yt), yt, mia.per_sample_losses(f, yf), yf, seed=seed
    )
    return ModelMetrics(split=split, mia=audit), r

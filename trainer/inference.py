"""Running models over a set for the audit: image-head logits, every model in one pass.

The metrics read only the image head, which reads only the image embedding, so the text encoder
is not run (FORGET_MI.md §5). Several models are scored on each batch as it arrives, so a
streamed set is read once however many models are evaluated (the original, the candidate, a
retrained reference).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from forgetmi_trainer.data import Encoded
from forgetmi_trainer.model import MultimodalClassifier
from forgetmi_trainer.runtime import autocast
from forgetmi_trainer.streaming import Samples, chunks


@torch.no_grad()
def image_logits(
    models: Sequence[MultimodalClassifier], data: Encoded | Samples, *, precision: str = "fp32", batch_size: int = 256
) -> list[np.ndarray]:
    """Image-head logits (N, C) float64 of every model on ``data``, in ``data``'s order."""
    for model in models:
        model.eval()
    outputs: list[list[torch.Tensor]] = [[] for _ in models]
    for batch in chunks(data, batch_size, text=False):
        device = batch.pixels.device
        with autocast(device, precision):
            for out, model in zip(outputs, models, strict=True):
                out.append(model.image_head(model.encode_image(batch.pixels)).float().cpu())
    num_labels = [int(m.config.num_labels) for m in models]
    return [torch.cat(out).double().numpy() if out else np.zeros((0, c)) for out, c in zip(outputs, num_labels,
                                                                                        strict=True)]

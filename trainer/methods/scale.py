"""The original model's embedding scale, which makes a method's strength scale-free (docs/methods.md, "Strength").

A push bound in absolute units means nothing across models: on the demo's 32-d model two different
samples' image embeddings sit a median ≈ 21 apart, on a 768-d BERT/ResNet model the figure is another
one. So ``method.push_bound`` is a multiple of that median: the median L2 distance between the image
embeddings of two different retain samples under the original model (eval mode, no gradients),
taken over at most :data:`MAX_PAIRS` pairs of distinct samples drawn with the run's seed, measured
once at the start of the run. The absolute bound is ``push_bound × median``.
"""

from __future__ import annotations

import math

import torch

from forgetmi_trainer.contract import EmbeddingScale
from forgetmi_trainer.data import Encoded, bounded_batch
from forgetmi_trainer.errors import ConfigError, InputError
from forgetmi_trainer.model import MultimodalClassifier
from forgetmi_trainer.runtime import autocast
from forgetmi_trainer.streaming import Samples

MAX_PAIRS = 2000
"""The most pairs of distinct retain samples the median is taken over."""


def sample_pairs(n: int, generator: torch.Generator, max_pairs: int = MAX_PAIRS) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs (i, j) of distinct positions in ``range(n)``: every pair once when there are at most
    ``max_pairs`` of them, else ``max_pairs`` pairs drawn uniformly (i uniform, j uniform among the others).
    Returns two (P,) int64 tensors; no pair when ``n`` < 2."""
    if n * (n - 1) // 2 <= max_pairs:
        i, j = torch.triu_indices(n, n, offset=1)
        return i, j
    i = torch.randint(n, (max_pairs,), generator=generator)
    j = (i + torch.randint(1, n, (max_pairs,), generator=generator)) % n
    return i, j


def median_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """The median of the per-row L2 distances between ``a`` and ``b`` (P, d), in float64 (the lower
    middle value for an even P, as :func:`torch.median` takes it)."""
    if a.shape != b.shape or a.dim() != 2 or len(a) == 0:
        raise ValueError(f"embeddings must be two non-empty (pairs, dim) tensors of one shape; got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    return float(torch.linalg.vector_norm(a.double() - b.double(), dim=1).median())


@torch.no_grad()
def image_embeddings(
    model: MultimodalClassifier, data: Samples | Encoded, positions: torch.Tensor, precision: str = "fp32"
) -> torch.Tensor:
    """``model``'s image embeddings (len(positions), d), float32 on the CPU, of the samples of ``data``
    at ``positions`` (repeats allowed; each distinct sample is read and embedded once), in batches
    of at most 256 images and ``data.BATCH_PIXELS`` pixel values. The model must be in eval mode."""
    unique, inverse = torch.unique(positions.cpu(), return_inverse=True)
    per_image = model.config.image_channels * model.config.image_size * model.config.image_size
    size = bounded_batch(per_image, 256)
    device = next(model.parameters()).device
    parts = []
    for start in range(0, len(unique), size):
        chunk = unique[start : start + size]
        batch = data.take(chunk, text=False) if isinstance(data, Samples) else data.take(chunk.to(data.labels.device))
        with autocast(device, precision):
            parts.append(model.encode_image(batch.pixels.to(device)).float().cpu())
    return torch.cat(parts)[inverse]


def measure(
    original: MultimodalClassifier, retain: Samples | Encoded, seed: int, precision: str = "fp32",
    push_bound: float | None = None,
) -> EmbeddingScale:
    """The embedding scale of ``original`` (put in eval mode; its mode is restored) on ``retain``, and
    the absolute push bound ``push_bound × median`` when a relative one is given. The pairs are drawn
    with a generator of their own seeded ``seed``, so measuring draws nothing from the run's generator.
    Fewer than two retain samples: no scale can be measured, a config error when a bound needs it."""
    n = len(retain)
    if n < 2:
        if push_bound is not None:
            raise ConfigError(f"method.push_bound is relative to the distance between two retain samples' embeddings, "
                              f"but the retain set holds {n}.")
        return EmbeddingScale(median_distance=0.0, pairs=0)
    i, j = sample_pairs(n, torch.Generator().manual_seed(seed))
    was_training = original.training
    original.eval()
    try:
        emb = image_embeddings(original, retain, torch.cat([i, j]), precision)
    finally:
        original.train(was_training)
    median = median_distance(emb[: len(i)], emb[len(i) :])
    if not math.isfinite(median):
        raise InputError(f"The original model's embedding scale is {median}: its image embeddings are not finite.")
    if push_bound is not None and not median > 0:
        raise ConfigError("method.push_bound is relative to the distance between two retain samples' embeddings, "
                          "but the original embeds every sampled pair at distance 0.")
    return EmbeddingScale(median_distance=median, pairs=len(i),
                          push_bound=None if push_bound is None else push_bound * median)

"""The Forget-MI loop (FORGET_MI.md §4).

``F_og`` is frozen (eval mode, no grad); ``F_ul`` starts as its copy with every encoder and
projection trainable. Both models build their joint embeddings with one shared frozen gate,
the original's. One step takes a forget batch x, its aligned noisy copy x̃ (same samples, same
order) and a random retain batch r of the same size, and minimises the weighted four terms;
gradients are clipped to norm 1 and AdamW steps once per batch. One epoch is one pass over D_f.
The heads are never trained. A declared rule selects the checkpoint that is returned.

``method.push_bound`` is relative (docs/methods.md, "Strength"): at the start of the run the
original's embedding scale is measured (:mod:`~forgetmi_trainer.methods.scale`, the median
distance between two different retain samples' image embeddings), and the push terms use the
absolute bound ``push_bound × median``; both go into the result (``embedding_scale``).

Where the time goes (FORGET_MI.md §9). ``F_og`` never changes, so its embeddings are computed in
large batches outside the steps, once per epoch: of the epoch's noisy forget copy x̃, and of the
retain samples the epoch's batches draw that no earlier epoch drew (kept for the rest of the
run). For that, :func:`draw_epoch` makes the epoch's random draws (each step's image noise, then
its retain batch) at the start of the epoch, in the order a step-by-step loop makes them, so the
draws and the result are those of drawing in each step. ``F_ul`` runs in eval mode, where no
layer mixes samples, so x and r go through it as one batch: one forward and one backward per
step instead of two each, with the same result.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from forgetmi_trainer import losses
from forgetmi_trainer.contract import EmbeddingScale, LossWeights, NoiseConfig
from forgetmi_trainer.data import Encoded, bounded_batch, noisy_images
from forgetmi_trainer.methods import scale
from forgetmi_trainer.methods.base import (
    MethodContext,
    MethodOptions,
    UnlearnResult,
    check_selection,
    checked,
    end_epoch,
    epoch_batches,
    finish,
    freeze,
    optimise,
    planned_epochs,
    read_options,
    student_copy,
    take,
)
from forgetmi_trainer.model import MultimodalClassifier
from forgetmi_trainer.preprocess import ImagePreprocessing
from forgetmi_trainer.runtime import adamw, autocast


class ForgetMiOptions(MethodOptions):
    """Forget-MI takes no options: its settings are fields of ``method`` itself (``preset`` or
    ``weights``, ``noise``, ``push_bound``, ``sign``)."""


def run_forget_mi(ctx: MethodContext) -> UnlearnResult:
    """Unlearn ``ctx.inputs.forget`` from ``ctx.original`` (frozen, weights unchanged) and return the selected model."""
    read_options(ctx.method, ForgetMiOptions)
    check_selection(ctx)
    start = time.perf_counter()
    epochs = planned_epochs(ctx.method)
    run = _start(ctx)
    history: list[dict[str, float]] = []
    for epoch in range(1, epochs + 1):
        if end_epoch(ctx, run.f_ul, history, epoch, epochs, _epoch(ctx, run, epoch)):
            break
    return finish(ctx, run.f_ul, history, start, run.scale)


@dataclass
class _Run:
    """One run's state: ``F_og`` (frozen; its gate is the shared one), ``F_ul``, its optimiser, the
    normalised loss weights, ``F_og``'s retain embeddings computed so far and its embedding scale
    (with the absolute push bound, None when unbounded); ``replica`` is what the steps run ``F_ul``
    through (``F_ul`` itself, or its DistributedDataParallel wrapper in a world of several processes)."""

    f_og: MultimodalClassifier
    f_ul: MultimodalClassifier
    replica: torch.nn.Module
    optimizer: torch.optim.Optimizer
    weights: LossWeights
    og_retain: RetainEmbeddings
    scale: EmbeddingScale

    @property
    def gate(self) -> torch.nn.Module:
        return self.f_og.fusion


def _start(ctx: MethodContext) -> _Run:
    """Freeze the original as ``F_og`` and make ``F_ul``: its copy with the encoders and projections
    trainable, the heads and the fusion gate frozen, in eval mode (dropout off; gradients still flow)."""
    weights = losses.resolve_weights(ctx.method.preset, ctx.method.weights)
    f_og = freeze(ctx.original.to(ctx.device))
    embedding_scale = scale.measure(f_og, ctx.inputs.retain, ctx.seed, ctx.precision, ctx.method.push_bound)
    f_ul = student_copy(f_og, ctx.device)
    for p in (*f_ul.fusion.parameters(), *f_ul.image_head.parameters(), *f_ul.text_head.parameters()):
        p.requires_grad_(False)
    f_ul.eval()
    og_retain = RetainEmbeddings(f_og, len(ctx.inputs.retain), f_og.fusion, ctx.precision)
    return _Run(f_og, f_ul, ctx.parallel(f_ul), adamw(f_ul, ctx.method.learning_rate), weights, og_retain,
                embedding_scale)


def _epoch(ctx: MethodContext, run: _Run, epoch: int) -> float:
    """One pass over D_f (this rank's shard of it in a world), one step per forget batch; returns the
    mean loss per forget sample."""
    forget, retain, device = ctx.inputs.forget, ctx.inputs.retain, ctx.device
    plan, generator = epoch_batches(ctx, len(forget), epoch)
    order = torch.cat(plan).to(device) if plan else torch.zeros(0, dtype=torch.long, device=device)
    bs = len(plan[0]) if plan else 1
    n = len(order)
    ids, mask = ctx.inputs.noisy_texts[(epoch - 1) % len(ctx.inputs.noisy_texts)]
    noisy_pixels, retain_ids = draw_epoch(forget.pixels, order, bs, len(retain), ctx.method.noise, generator,
                                          ctx.inputs.preprocessing)
    drawn = take(retain, retain_ids)  # the epoch's retain batches, in step order (read once)
    noisy = Encoded(noisy_pixels, ids[order], mask[order], forget.labels[order])  # in step order
    og_noisy_u, og_noisy_j = frozen_embeddings(run.f_og, noisy, run.gate, ctx.precision)
    run.og_retain.need(retain_ids, drawn)
    total = 0.0
    for s in range(math.ceil(n / bs)):
        rows = slice(s * bs, (s + 1) * bs)
        idx, ridx = order[rows], retain_ids[rows]
        with autocast(device, ctx.precision):
            terms = step_terms(
                run.replica,
                forget.take(idx),
                drawn.take(torch.arange(rows.start, rows.start + len(idx), device=drawn.labels.device)),
                (og_noisy_u[rows], og_noisy_j[rows]),
                run.og_retain.take(ridx),
                run.gate,
                run.scale.push_bound,
            )
            loss = losses.combine(terms, run.weights, ctx.method.sign)
        optimise(run.optimizer, run.replica, checked(loss, "unlearning", epoch))
        total += float(loss.detach()) * len(idx)
    return total / n


def _unimodal(out: object) -> torch.Tensor:
    return torch.cat([out.image_embeds, out.text_embeds], dim=-1)  # type: ignore[attr-defined]


@torch.no_grad()
def frozen_embeddings(
    f_og: MultimodalClassifier, data: Encoded, gate: torch.nn.Module, precision: str = "fp32",
    batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``F_og``'s unimodal (N, 2d) and joint (N, d) embeddings of every sample of ``data``, in float32.

    ``F_og`` is frozen and in eval mode, so these are the embeddings the steps would compute,
    in a few large batches instead of one small one per step (FORGET_MI.md §9); a batch holds at most
    256 images and ``data.BATCH_PIXELS`` pixel values."""
    device = data.labels.device
    batch_size = batch_size or bounded_batch(data.pixels[0].numel() if len(data) else 1, 256)
    units, joints = [], []
    for start in range(0, len(data), batch_size):
        b = data.take(torch.arange(start, min(start + batch_size, len(data)), device=device))
        with autocast(device, precision):
            out = f_og(b.pixels, b.input_ids, b.attention_mask, fusion=gate)
        units.append(_unimodal(out).float())
        joints.append(out.joint_embeds.float())
    return torch.cat(units), torch.cat(joints)


class RetainEmbeddings:
    """``F_og``'s embeddings of the retain samples, computed the first time an epoch needs them
    and kept for the rest of the run.

    A run that stops after a few epochs touches only a few times |D_f| retain samples, far fewer
    than |D_r| when few patients are forgotten, so nothing is computed (or read) for samples no
    step uses; each epoch computes its new ones in one batched pass over the samples it read.
    Memory is one slot index per retain sample plus the embeddings of the samples touched."""

    def __init__(self, f_og: MultimodalClassifier, size: int, gate: torch.nn.Module, precision: str) -> None:
        self.f_og, self.gate, self.precision = f_og, gate, precision
        self.slot = torch.full((size,), -1, dtype=torch.long)
        self.units: torch.Tensor | None = None
        self.joints: torch.Tensor | None = None

    def need(self, idx: torch.Tensor, samples: Encoded) -> None:
        """Make sure the embeddings of the retain samples ``idx`` (B,) are known; ``samples`` are
        those samples, aligned with ``idx``."""
        ids = idx.cpu()
        fresh = self.slot[ids] < 0
        if not bool(fresh.any()):
            return
        new_ids, first = _first_positions(ids[fresh], torch.nonzero(fresh).flatten())
        units, joints = frozen_embeddings(self.f_og, samples.take(first.to(samples.labels.device)), self.gate,
                                          self.precision)
        start = 0 if self.units is None else len(self.units)
        self.units = units if self.units is None else torch.cat([self.units, units])
        self.joints = joints if self.joints is None else torch.cat([self.joints, joints])
        self.slot[new_ids] = torch.arange(start, start + len(new_ids))

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unimodal (B, 2d) and joint (B, d) embeddings of retain samples already asked for by :meth:`need`."""
        slots = self.slot[idx.cpu()]
        if self.units is None or self.joints is None or bool((slots < 0).any()):
            raise RuntimeError("RetainEmbeddings.take() before need() for these samples")
        slots = slots.to(self.units.device)
        return self.units[slots], self.joints[slots]


def _first_positions(ids: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct ``ids`` (sorted) and, for each, the position of its first occurrence."""
    unique, inverse = torch.unique(ids, return_inverse=True)
    first = torch.full((len(unique),), len(ids), dtype=torch.long).scatter_reduce(
        0, inverse, torch.arange(len(ids)), reduce="amin")
    return unique, positions[first]


def draw_epoch(
    pixels: torch.Tensor,
    order: torch.Tensor,
    batch_size: int,
    retain_size: int,
    noise: NoiseConfig,
    generator: torch.Generator,
    preprocessing: ImagePreprocessing | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """An epoch's random draws, made up front in the order the steps use them: for each step the
    noisy copy of its forget batch (``order`` cut into batches), then the indices of its retain
    batch. Returns the noisy pixels (N, C, H, W) and retain indices (N,), both in step order.
    These are the draws a step-by-step loop would make from ``generator``, so ``F_og`` can embed
    the whole epoch's noisy copy in one pass without changing the result."""
    noisy, retain_ids = [], []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size].to(pixels.device)
        noisy.append(noisy_images(pixels[idx], noise.image_mean, noise.image_std, generator, preprocessing))
        retain_ids.append(torch.randint(retain_size, (len(idx),), generator=generator))
    return torch.cat(noisy), torch.cat(retain_ids)


def step_terms(
    f_ul: MultimodalClassifier | torch.nn.Module,
    x: Encoded,
    r: Encoded,
    og_f: tuple[torch.Tensor, torch.Tensor],
    og_r: tuple[torch.Tensor, torch.Tensor],
    gate: torch.nn.Module,
    bound: float | None,
) -> losses.LossTerms:
    """The four terms of one step (each a scalar). ``F_og``'s embeddings (unimodal (B, 2d),
    joint (B, d)) of the noisy forget batch x̃ (``og_f``) and of the retain batch (``og_r``) come
    from :func:`frozen_embeddings`; ``F_ul`` (in eval mode) runs once on x and r together.
    ``bound`` is the absolute push bound (``method.push_bound`` × the embedding scale), None for none."""
    out = f_ul(
        torch.cat([x.pixels, r.pixels]),
        torch.cat([x.input_ids, r.input_ids]),
        torch.cat([x.attention_mask, r.attention_mask]),
        fusion=gate,
    )
    units, joints, n = _unimodal(out), out.joint_embeds, len(x)
    return losses.LossTerms(
        uu=losses.unimodal_unlearning(units[:n], og_f[0], bound),
        mu=losses.multimodal_unlearning(joints[:n], og_f[1], bound),
        ur=losses.unimodal_retention(units[n:], og_r[0]),
        mr=losses.multimodal_retention(joints[n:], og_r[1]),
    )

"""The ``neggrad-plus`` baseline (NegGrad+, Kurmanji et al. 2023): descent on the retain set and
bounded gradient ascent on the forget set, in one loss.

Each step takes a forget batch x (one epoch = one pass over D_f, as for Forget-MI) and a random
retain batch r of the same size (an epoch's retain batches are read together at its start) and
minimises

    alpha · L_train(r) − (1 − alpha) · mean_i Σ_h min(CE_h(x_i), bound · ln C)

where ``L_train`` is the training loss (:func:`forgetmi_trainer.train.train_loss`), CE_h
the per-sample cross-entropy of head h ∈ {image, text, joint (image head on the gate output)}
and C the number of classes. The bound is relative to ln C, the cross-entropy of a uniform
(chance-level) prediction, so one value means the same at any C: 1 stops ascending a sample
once it is as uncertain as chance, the default 3.6 is the former 5 nats at C = 4. The per-sample
bound stops the ascent term once a sample is confidently misclassified (its gradient is zero past
the bound), so the loss cannot run away to −∞; ``bound`` = 0 turns the bound off. Every parameter
trains (heads and gate included); train mode; AdamW with gradients clipped to norm 1.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from pydantic import Field

from forgetmi_trainer.data import Encoded
from forgetmi_trainer.methods.base import (
    MethodContext,
    TrainingLossOptions,
    UnlearnResult,
    check_selection,
    checked,
    end_epoch,
    epoch_batches,
    finish,
    optimise,
    planned_epochs,
    read_options,
    student_copy,
    take,
    task_logits,
)
from forgetmi_trainer.model import MultimodalClassifier
from forgetmi_trainer.runtime import adamw, autocast
from forgetmi_trainer.train import train_loss


class NegGradPlusOptions(TrainingLossOptions):
    """``neggrad-plus``'s options; ``align_weight`` and ``weight_decay`` as for the training loss."""

    alpha: float = Field(
        default=0.9, ge=0, le=1, description="Weight of the retain term; 1 − alpha weighs the forget ascent term."
    )
    bound: float = Field(
        default=3.6,
        ge=0,
        le=100,
        description="Per-sample, per-head cap on the forget cross-entropy, in units of ln C (the chance-level "
        "cross-entropy of C classes); 0 = unbounded.",
    )


def absolute_bound(bound: float, num_classes: int) -> float:
    """The cap in nats made of the relative ``bound``: ``bound · ln C`` (0 stays 0: no bound)."""
    return bound * math.log(num_classes)


def bounded_forget_loss(model: MultimodalClassifier, batch: Encoded, bound: float) -> torch.Tensor:
    """mean_i Σ_h min(CE_h(x_i), bound) with ``bound`` in nats (no bound when ``bound`` <= 0), a scalar."""
    total = torch.zeros((), device=batch.labels.device)
    for logits in task_logits(model, batch):
        ce = F.cross_entropy(logits, batch.labels, reduction="none")
        total = total + (ce.clamp(max=bound) if bound > 0 else ce).mean()
    return total


def run_neggrad_plus(ctx: MethodContext) -> UnlearnResult:
    """Descend on random retain batches and ascend (bounded) on D_f, one pass over D_f per epoch."""
    opts = read_options(ctx.method, NegGradPlusOptions)
    check_selection(ctx)
    epochs = planned_epochs(ctx.method)
    start = time.perf_counter()
    model = student_copy(ctx.original, ctx.device)
    optimizer = adamw(model, ctx.method.learning_rate, opts.weight_decay)
    replica = ctx.parallel(model)
    forget, retain = ctx.inputs.forget.to(ctx.device), ctx.inputs.retain
    cap = absolute_bound(opts.bound, ctx.original.config.num_labels)
    history: list[dict[str, float]] = []
    for epoch in range(1, epochs + 1):
        total = 0.0
        plan, generator = epoch_batches(ctx, len(forget), epoch)
        # Each step's retain batch, drawn in the order a step-by-step loop draws them and read at once.
        draws = [torch.randint(len(retain), (len(idx),), generator=generator) for idx in plan]
        drawn = take(retain, torch.cat(draws))
        offsets = torch.cumsum(torch.tensor([0] + [len(d) for d in draws]), 0).tolist()
        for s, idx in enumerate(plan):
            r = drawn.take(torch.arange(offsets[s], offsets[s + 1], device=drawn.labels.device))
            with autocast(ctx.device, ctx.precision):
                loss = opts.alpha * train_loss(replica, r, opts.align_weight) - (1 - opts.alpha) * bounded_forget_loss(
                    replica, forget.take(idx), cap
                )
            optimise(optimizer, replica, checked(loss, "neggrad-plus", epoch))
            total += float(loss.detach()) * len(idx)
        if end_epoch(ctx, model, history, epoch, epochs, total / max(offsets[-1], 1)):
            break
    return finish(ctx, model, history, start)

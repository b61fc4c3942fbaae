"""The ``scrub`` baseline (SCRUB, Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning").

Teacher = the frozen original (eval mode), student = a trainable copy (train mode; every
parameter trains, heads and gate included). Each epoch is

* a **max step** (only in the first ``msteps`` epochs): one pass over D_f minimising
  ``−KL(teacher ‖ student)`` — the student moves away from the teacher on forget data;
* a **min step**: one pass over D_r (streamed) minimising ``alpha · KL(teacher ‖ student) + gamma · L_train``
  — it stays close to the teacher and keeps its task performance on retain data.

The KL is taken at temperature T on the softened logits of the three heads (image, text and
the image head on the joint embedding), summed, times T² (Hinton distillation scaling), batch
mean. ``L_train`` is the training loss. AdamW, gradients clipped to norm 1. The option defaults
are the authors' code's.
"""

from __future__ import annotations

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
    freeze,
    optimise,
    planned_epochs,
    read_options,
    student_copy,
    task_logits,
)
from forgetmi_trainer.model import MultimodalClassifier
from forgetmi_trainer.runtime import adamw, autocast
from forgetmi_trainer.streaming import load_batches
from forgetmi_trainer.train import train_loss


class ScrubOptions(TrainingLossOptions):
    """``scrub``'s options; ``align_weight`` and ``weight_decay`` as for the training loss."""

    msteps: int = Field(default=3, ge=0, le=1000, description="Epochs that begin with a max step on the forget set.")
    alpha: float = Field(default=0.001, ge=0, le=1, description="Weight of the KL on retain data in the min step.")
    gamma: float = Field(
        default=0.99, ge=0, le=10, description="Weight of the training loss on retain data in the min step."
    )
    temperature: float = Field(default=4.0, gt=0, le=100, description="Distillation temperature T.")
    retain_steps: int = Field(
        default=0, ge=0, le=1_000_000, description="Batches per min step; 0 = a full pass over the retain set."
    )


def distill_kl(
    student: MultimodalClassifier | torch.nn.Module, teacher: MultimodalClassifier, batch: Encoded, temperature: float
) -> torch.Tensor:
    """Σ_heads KL(softmax(t/T) ‖ softmax(s/T)) · T², averaged over the batch (a scalar)."""
    with torch.no_grad():
        targets = [F.softmax(t / temperature, dim=-1) for t in task_logits(teacher, batch)]
    total = torch.zeros((), device=batch.labels.device)
    for s, p in zip(task_logits(student, batch), targets, strict=True):
        total = total + F.kl_div(F.log_softmax(s / temperature, dim=-1), p, reduction="batchmean")
    return total * temperature**2


def run_scrub(ctx: MethodContext) -> UnlearnResult:
    """Max steps on D_f in the first ``msteps`` epochs, then a min step on D_r every epoch."""
    opts = read_options(ctx.method, ScrubOptions)
    check_selection(ctx)
    epochs = planned_epochs(ctx.method)
    start = time.perf_counter()
    teacher = freeze(ctx.original.to(ctx.device))
    student = student_copy(teacher, ctx.device)
    optimizer = adamw(student, ctx.method.learning_rate, opts.weight_decay)
    replica = ctx.parallel(student)
    forget, retain = ctx.inputs.forget.to(ctx.device), ctx.inputs.retain
    temp = opts.temperature
    history: list[dict[str, float]] = []
    for epoch in range(1, epochs + 1):
        total, steps = 0.0, 0
        if epoch <= opts.msteps:
            for idx in epoch_batches(ctx, len(forget), epoch)[0]:
                with autocast(ctx.device, ctx.precision):
                    loss = -distill_kl(replica, teacher, forget.take(idx), temp)
                optimise(optimizer, replica, checked(loss, "scrub max-step", epoch))
                total, steps = total + float(loss.detach()), steps + 1
        plan = epoch_batches(ctx, len(retain), epoch)[0]
        for _, r in load_batches(retain, plan[: opts.retain_steps] if opts.retain_steps > 0 else plan):
            with autocast(ctx.device, ctx.precision):
                loss = opts.alpha * distill_kl(replica, teacher, r, temp) + opts.gamma * train_loss(
                    replica, r, opts.align_weight
                )
            optimise(optimizer, replica, checked(loss, "scrub min-step", epoch))
            total, steps = total + float(loss.detach()), steps + 1
        if end_epoch(ctx, student, history, epoch, epochs, total / max(steps, 1)):
            break
    return finish(ctx, student, history, start)

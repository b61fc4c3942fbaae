"""The ``finetune`` baseline: continue training a copy of the original on the retain set only.

The loss is the training loss of :func:`forgetmi_trainer.train.train_loss` (image, text and
joint CE plus the alignment term). Every parameter trains, heads and fusion gate included
(unlike Forget-MI, which leaves the heads and the gate alone). One epoch is one pass over D_r (streamed);
AdamW (eps 1e-6, no decay on biases and norm weights) at a constant learning rate; gradients
clipped to norm 1; train mode. Checkpoint selection follows ``method.selection``.
"""

from __future__ import annotations

import time

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
)
from forgetmi_trainer.runtime import adamw, autocast
from forgetmi_trainer.streaming import load_batches
from forgetmi_trainer.train import train_loss


class FinetuneOptions(TrainingLossOptions):
    """``finetune``'s options: the training loss's alignment weight and the AdamW weight decay."""


def run_finetune(ctx: MethodContext) -> UnlearnResult:
    """Continue training a copy of the original on D_r for the planned epochs."""
    opts = read_options(ctx.method, FinetuneOptions)
    check_selection(ctx)
    epochs = planned_epochs(ctx.method)
    start = time.perf_counter()
    model = student_copy(ctx.original, ctx.device)
    optimizer = adamw(model, ctx.method.learning_rate, opts.weight_decay)
    replica = ctx.parallel(model)
    retain = ctx.inputs.retain
    history: list[dict[str, float]] = []
    for epoch in range(1, epochs + 1):
        total, steps = 0.0, 0
        for _, batch in load_batches(retain, epoch_batches(ctx, len(retain), epoch)[0]):
            with autocast(ctx.device, ctx.precision):
                loss = checked(train_loss(replica, batch, opts.align_weight), "finetune", epoch)
            optimise(optimizer, replica, loss)
            total, steps = total + float(loss.detach()), steps + 1
        if end_epoch(ctx, model, history, epoch, epochs, total / steps):
            break
    return finish(ctx, model, history, start)

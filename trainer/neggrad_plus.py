"""The ``neggrad-plus`` baseline (NegGrad+, Kurmanji et al. 2023): descent on the retain set and
bounded gradient ascent on the forget set, in one loss.

Each step takes a forget batch x (one epoch = one pass over D_f, as for Forget-MI) and a random
retain batch r of the same size and minimises

    alpha · L_train(r) − (1 − alpha) · mean_i Σ_h min(CE_h(x_i), bound)

where ``L_train`` is the training loss (:func:`forgetmi_trainer.train.train_loss`) and CE_h
the per-sample cross-entropy of head h ∈ {image, text, joint (image head on the gate output)}.
The per-sample bound stops the ascent term once a sample is confidently misclassified (its
gradient is zero past the bound), so the loss cannot run away to −∞; ``bound`` = 0 turns the
bound off. Every parameter trains (heads and gate included); train mode; AdamW with gradients
clipped to norm 1.

Options: ``alpha`` 0.9, ``bound`` 5.0 nats per head and sample (chance level for 4 classes is
1.39), ``align_weight`` 0.1, ``weight_decay`` 0.01.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from forgetmi_trainer.data import Encoded
from forgetmi_trainer.errors import ConfigError
from forgetmi_trainer.finetune import (
    batches,
    checked,
    end_epoch,
    finish,
    optimise,
    planned_epochs,
    random_batch,
    read_options,
    student_copy,
)
from forgetmi_trainer.model import MultimodalClassifier
from forgetmi_trainer.runtime import adamw, autocast
from forgetmi_trainer.train import train_loss
from forgetmi_trainer.unlearn import UnlearnResult

if TYPE_CHECKING:
    from forgetmi_trainer.methods import MethodContext

DEFAULTS = {"alpha": 0.9, "bound": 5.0, "align_weight": 0.1, "weight_decay": 0.01}


def task_logits(model: MultimodalClassifier, batch: Encoded) -> list[torch.Tensor]:
    """Logits of the image head, the text head and the image head on the joint embedding."""
    out = model(batch.pixels, batch.input_ids, batch.attention_mask)
    return [out.image_logits.float(), out.text_logits.float(), model.image_head(out.joint_embeds).float()]


def bounded_forget_loss(model: MultimodalClassifier, batch: Encoded, bound: float) -> torch.Tensor:
    """mean_i Σ_h min(CE_h(x_i), bound) (no bound when ``bound`` <= 0)."""
    total = torch.zeros((), device=batch.labels.device)
    for logits in task_logits(model, batch):
        ce = F.cross_entropy(logits, batch.labels, reduction="none")
        total = total + (ce.clamp(max=bound) if bound > 0 else ce).mean()
    return total


def run_neggrad_plus(ctx: MethodContext) -> UnlearnResult:
    opts = read_options(ctx.method, DEFAULTS)
    alpha = opts["alpha"]
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"method.options.alpha must lie in [0, 1]; got {alpha}.")
    epochs = planned_epochs(ctx.method)
    start = time.perf_counter()
    model = student_copy(ctx.original, ctx.device)
    optimizer = adamw(model, ctx.method.learning_rate, opts["weight_decay"])
    forget, retain = ctx.inputs.forget.to(ctx.device), ctx.inputs.retain.to(ctx.device)
    history: list[dict[str, float]] = []
    for epoch in range(1, epochs + 1):
        total = 0.0
        for idx in batches(len(forget), ctx.method.batch_size, ctx.generator, ctx.device):
            r = random_batch(retain, len(idx), ctx.generator, ctx.device)
            with autocast(ctx.device, ctx.precision):
                loss = alpha * train_loss(model, r, opts["align_weight"]) - (1 - alpha) * bounded_forget_loss(
                    model, forget.take(idx), opts["bound"]
                )
            optimise(optimizer, model, checked(loss, "neggrad-plus", epoch))
            total += float(loss.detach()) * len(idx)
        if end_epoch(ctx, model, history, epoch, epochs, total / len(forget)):
            break
    return finish(ctx, model, history, start)

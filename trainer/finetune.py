"""The ``finetune`` baseline, and the helpers the other baselines share.

``finetune`` continues training a copy of the original on the retain set only, with the
training loss of :func:`forgetmi_trainer.train.train_loss` (image, text and joint CE plus the
alignment term). Every parameter trains, heads and fusion gate included (unlike Forget-MI,
which leaves the heads and the gate alone). One epoch is one pass over D_r; AdamW (eps 1e-6,
no decay on biases and norm weights) at a constant learning rate; gradients clipped to norm 1.

Options (``method.options``): ``align_weight`` (0.1, as in training) and ``weight_decay``
(0.01). Checkpoint selection follows ``method.selection`` as for Forget-MI.
"""

from __future__ import annotations

import copy
import math
import time
from typing import TYPE_CHECKING

import torch

from forgetmi_trainer.contract import MethodConfig, Selection
from forgetmi_trainer.data import Encoded
from forgetmi_trainer.errors import ConfigError, DivergedError
from forgetmi_trainer.model import MultimodalClassifier
from forgetmi_trainer.runtime import adamw, autocast
from forgetmi_trainer.train import train_loss
from forgetmi_trainer.unlearn import UnlearnResult, mean_image_loss

if TYPE_CHECKING:
    from forgetmi_trainer.methods import MethodContext

DEFAULTS = {"align_weight": 0.1, "weight_decay": 0.01}


# --- shared by the baselines ------------------------------------------------------------------


def read_options(method: MethodConfig, defaults: dict[str, float]) -> dict[str, float]:
    """``defaults`` overridden by ``method.options``; an unknown key is a config error."""
    unknown = sorted(set(method.options) - set(defaults))
    if unknown:
        raise ConfigError(
            f"method.options {', '.join(unknown)} not understood by {method.name}; "
            f"it accepts {', '.join(sorted(defaults)) or 'none'}."
        )
    return {**defaults, **method.options}


def planned_epochs(method: MethodConfig) -> int:
    """Epochs to run: ``selection.epoch`` under FixedEpoch when given, else ``method.epochs``."""
    rule, fixed = method.selection.rule, method.selection.epoch
    if rule == "FixedEpoch" and fixed is not None:
        if fixed > method.epochs:
            raise ConfigError(f"method.selection.epoch ({fixed}) exceeds method.epochs ({method.epochs}).")
        return fixed
    return method.epochs


def student_copy(original: MultimodalClassifier, device: torch.device) -> MultimodalClassifier:
    """A trainable copy of ``original`` (which is not modified) in train mode."""
    student = copy.deepcopy(original).to(device)
    for p in student.parameters():
        p.requires_grad_(True)
    return student.train()


def checked(loss: torch.Tensor, what: str, epoch: int) -> torch.Tensor:
    if not torch.isfinite(loss):
        raise DivergedError(f"The {what} loss became {float(loss.detach())} at epoch {epoch}.")
    return loss


def optimise(optimizer: torch.optim.Optimizer, model: torch.nn.Module, loss: torch.Tensor) -> None:
    """One AdamW step with gradients clipped to norm 1."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


def batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> list[torch.Tensor]:
    """A shuffled pass over ``n`` samples in batches of ``batch_size``."""
    order = torch.randperm(n, generator=generator)
    return [order[s * batch_size : (s + 1) * batch_size].to(device) for s in range(math.ceil(n / batch_size))]


def random_batch(data: Encoded, size: int, generator: torch.Generator, device: torch.device) -> Encoded:
    return data.take(torch.randint(len(data), (size,), generator=generator).to(device))


def end_epoch(
    ctx: MethodContext,
    model: MultimodalClassifier,
    history: list[dict[str, float]],
    epoch: int,
    epochs: int,
    loss: float,
) -> bool:
    """Append the epoch to ``history``, report progress; True when ForgetReachesTest stops here."""
    record = {"epoch": float(epoch), "loss": loss}
    reached = False
    if ctx.method.selection.rule == "ForgetReachesTest":
        was_training = model.training
        model.eval()
        record["forget_loss"] = mean_image_loss(model, ctx.inputs.forget)
        record["test_loss"] = mean_image_loss(model, ctx.inputs.test)
        model.train(was_training)
        reached = record["forget_loss"] >= record["test_loss"]
    history.append(record)
    if ctx.on_epoch is not None:
        ctx.on_epoch(epoch, epochs, loss)
    return reached


def finish(
    ctx: MethodContext, model: MultimodalClassifier, history: list[dict[str, float]], start: float
) -> UnlearnResult:
    """Check the weights, freeze the model and build the result (selected = last epoch run)."""
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise DivergedError(f"The {ctx.method.name} model has non-finite weights.")
    for p in model.parameters():
        p.requires_grad_(False)
    ran = len(history)
    return UnlearnResult(
        model=model.eval(),
        selection=Selection(rule=ctx.method.selection.rule, epoch=ran, epochs_run=ran),
        seconds=time.perf_counter() - start,
        history=history,
    )


# --- finetune ---------------------------------------------------------------------------------


def run_finetune(ctx: MethodContext) -> UnlearnResult:
    """Continue training a copy of the original on D_r for ``method.epochs`` epochs."""
    opts = read_options(ctx.method, DEFAULTS)
    epochs = planned_epochs(ctx.method)
    start = time.perf_counter()
    model = student_copy(ctx.original, ctx.device)
    optimizer = adamw(model, ctx.method.learning_rate, opts["weight_decay"])
    retain = ctx.inputs.retain.to(ctx.device)
    history: list[dict[str, float]] = []
    for epoch in range(1, epochs + 1):
        total, steps = 0.0, 0
        for idx in batches(len(retain), ctx.method.batch_size, ctx.generator, ctx.device):
            with autocast(ctx.device, ctx.precision):
                loss = checked(train_loss(model, retain.take(idx), opts["align_weight"]), "finetune", epoch)
            optimise(optimizer, model, loss)
            total, steps = total + float(loss.detach()), steps + 1
        if end_epoch(ctx, model, history, epoch, epochs, total / steps):
            break
    return finish(ctx, model, history, start)

"""Unlearning methods by name: one function per method, all with the same inputs and result.

Adding a method = a function (its own module when it grows) + a line in :data:`METHODS` + a
name in ``contract.MethodName`` + a test. The baselines live in ``finetune.py`` (which also
holds the helpers they share), ``neggrad_plus.py`` and ``scrub.py``; docs/methods.md lists
every method's settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from forgetmi_trainer.contract import MethodConfig, Selection
from forgetmi_trainer.errors import ConfigError
from forgetmi_trainer.finetune import run_finetune
from forgetmi_trainer.model import MultimodalClassifier, build_model
from forgetmi_trainer.neggrad_plus import run_neggrad_plus
from forgetmi_trainer.scrub import run_scrub
from forgetmi_trainer.train import TrainConfig, train_model
from forgetmi_trainer.unlearn import EpochCallback, UnlearnInputs, UnlearnResult, forget_mi


@dataclass
class MethodContext:
    original: MultimodalClassifier
    inputs: UnlearnInputs
    method: MethodConfig
    generator: torch.Generator
    device: torch.device
    precision: str
    seed: int
    on_epoch: EpochCallback | None = None


def run_forget_mi(ctx: MethodContext) -> UnlearnResult:
    return forget_mi(
        ctx.original,
        ctx.inputs,
        ctx.method,
        generator=ctx.generator,
        device=ctx.device,
        precision=ctx.precision,
        on_epoch=ctx.on_epoch,
    )


def run_retrain(ctx: MethodContext) -> UnlearnResult:
    """Train from scratch on the retain set with the method's epochs, learning rate and batch size."""
    start = time.perf_counter()
    model = build_model(ctx.original.config, ctx.seed)
    recipe = TrainConfig(
        epochs=ctx.method.epochs, learning_rate=ctx.method.learning_rate, batch_size=ctx.method.batch_size
    )
    epochs = ctx.method.epochs

    def on_epoch(epoch: int, loss: float) -> None:
        if ctx.on_epoch is not None:
            ctx.on_epoch(epoch, epochs, loss)

    train_model(
        model,
        ctx.inputs.retain,
        recipe,
        generator=ctx.generator,
        device=ctx.device,
        precision=ctx.precision,
        on_epoch=on_epoch,
    )
    return UnlearnResult(
        model=model,
        selection=Selection(rule="FixedEpoch", epoch=epochs, epochs_run=epochs),
        seconds=time.perf_counter() - start,
    )


METHODS: dict[str, Callable[[MethodContext], UnlearnResult]] = {
    "forget-mi": run_forget_mi,
    "retrain": run_retrain,
    "finetune": run_finetune,
    "neggrad-plus": run_neggrad_plus,
    "scrub": run_scrub,
}


def get_method(name: str) -> Callable[[MethodContext], UnlearnResult]:
    if name not in METHODS:
        raise ConfigError(f"method.name {name!r} is not available in this trainer; use one of {', '.join(METHODS)}.")
    return METHODS[name]

"""The ``retrain`` method: train a freshly initialised model from scratch on the retain set.

The gold standard every other method is compared with. The model (built from the original's
config, seeded with ``seed``) trains on D_r with the training loss and the one-cycle schedule of
:func:`forgetmi_trainer.train.train_model`, for ``method.epochs`` epochs at
``method.learning_rate`` and ``method.batch_size``. The selection is always the last epoch;
the model is returned frozen, as every method's is.
"""

from __future__ import annotations

import time

from forgetmi_trainer.contract import Selection
from forgetmi_trainer.methods.base import MethodContext, TrainingLossOptions, UnlearnResult, freeze, read_options
from forgetmi_trainer.model import build_model
from forgetmi_trainer.train import TrainConfig, train_model


class RetrainOptions(TrainingLossOptions):
    """``retrain``'s options: what :class:`~forgetmi_trainer.train.TrainConfig` lets it set beyond
    ``method``'s epochs, learning rate and batch size (its defaults are the training recipe's)."""


def run_retrain(ctx: MethodContext) -> UnlearnResult:
    """Train from scratch on the retain set with the method's epochs, learning rate and batch size."""
    opts = read_options(ctx.method, RetrainOptions)
    start = time.perf_counter()
    model = build_model(ctx.original.config, ctx.seed)
    epochs = ctx.method.epochs
    recipe = TrainConfig(
        epochs=epochs,
        learning_rate=ctx.method.learning_rate,
        batch_size=ctx.method.batch_size,
        weight_decay=opts.weight_decay,
        align_weight=opts.align_weight,
    )

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
        world=ctx.world,
        seed=ctx.seed,
    )
    return UnlearnResult(
        model=freeze(model),
        selection=Selection(rule="FixedEpoch", epoch=epochs, epochs_run=epochs),
        seconds=time.perf_counter() - start,
    )

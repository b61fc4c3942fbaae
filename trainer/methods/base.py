"""What every unlearning method shares: its inputs and result, its options, and the epoch helpers.

A method is a function ``run(ctx: MethodContext) -> UnlearnResult``. Its own settings arrive in
``method.options`` and are read with :func:`read_options` into the method's
:class:`MethodOptions` model, so an unknown key or an out-of-range value is a config error that
names ``method.options.<key>``. The helpers below are the pieces of an epoch loop every method
uses alike: the number of epochs to run, the trainable copy, one optimiser step, batches, the
end of an epoch (history, progress, the ForgetReachesTest rule) and the result.

The selection rule reads the validation set (V, the non-member patients kept for stopping and
tuning) and never the test set (T, which reports and gates): a rule that read T would make the
gated figures depend on the choice they are meant to judge.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from forgetmi_trainer import distributed
from forgetmi_trainer.contract import EmbeddingScale, MethodConfig, Selection, dotted, validation_problems
from forgetmi_trainer.data import Encoded, bounded_batch
from forgetmi_trainer.distributed import World
from forgetmi_trainer.errors import ConfigError, DivergedError
from forgetmi_trainer.model import MultimodalClassifier
from forgetmi_trainer.preprocess import ImagePreprocessing
from forgetmi_trainer.streaming import Samples, chunks, subset

EpochCallback = Callable[[int, int, float], None]
"""Called after every epoch with (epoch, planned epochs, mean loss)."""


@dataclass
class UnlearnInputs:
    """The sets of a run: the forget set in memory on the target device, the retain, test and
    validation sets streamed (:class:`~forgetmi_trainer.streaming.Samples`; in memory too in unit
    tests); ``noisy_texts[k]`` is the k-th perturbed copy of the forget reports as (input_ids,
    attention_mask), each (N_f, L), aligned with ``forget``; ``preprocessing`` is the model's
    (the image noise goes on the [0, 1] image). ``validation`` (V) is what the selection rule
    reads; no method reads ``test`` (T). ForgetReachesTest without a validation set is a config error."""

    forget: Encoded
    retain: Samples | Encoded
    test: Samples | Encoded
    noisy_texts: list[tuple[torch.Tensor, torch.Tensor]]
    preprocessing: ImagePreprocessing | None = None
    validation: Samples | Encoded | None = None


@dataclass
class UnlearnResult:
    """The selected model (frozen: eval mode, no gradients), how it was selected, the method's seconds, one
    history record per epoch run (``epoch``, ``loss``; ``forget_loss``, ``validation_loss`` under
    ForgetReachesTest; empty for ``retrain``) and the original's embedding scale with the absolute
    bound made of ``method.push_bound`` (Forget-MI only; :mod:`~forgetmi_trainer.methods.scale`)."""

    model: MultimodalClassifier
    selection: Selection
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    embedding_scale: EmbeddingScale | None = None


@dataclass
class MethodContext:
    """Everything a method's run function is given; ``original`` must come back unchanged."""

    original: MultimodalClassifier
    inputs: UnlearnInputs
    method: MethodConfig
    generator: torch.Generator
    device: torch.device
    precision: str
    seed: int
    on_epoch: EpochCallback | None = None
    world: World = distributed.SINGLE

    def parallel(self, model: MultimodalClassifier) -> torch.nn.Module:
        """The replica a method trains through: ``model`` wrapped in DistributedDataParallel in a world
        of several processes (each backward averages the gradients over the ranks), else ``model``."""
        return distributed.data_parallel(model, self.world)


# --- options --------------------------------------------------------------------------------


class MethodOptions(BaseModel):
    """A method's own settings (``method.options``); a key it does not declare is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingLossOptions(MethodOptions):
    """The settings of the training loss and its optimiser, for the methods that train with it."""

    align_weight: float = Field(
        default=0.1, ge=0, le=10, description="Weight of the 1 − cos(image, text) alignment term in the training loss."
    )
    weight_decay: float = Field(default=0.01, ge=0, le=1, description="AdamW weight decay.")


OptionsT = TypeVar("OptionsT", bound=MethodOptions)


def read_options(method: MethodConfig, model: type[OptionsT]) -> OptionsT:
    """``method.options`` as ``model``; raises :class:`ConfigError` naming each bad key
    (``method.options.<key>: <message>``) and the keys the method accepts."""
    try:
        return model.model_validate(method.options)
    except ValidationError as err:
        problems = validation_problems(err, lambda loc: dotted(("method", "options", *loc)))
        accepted = f"it accepts {', '.join(model.model_fields)}" if model.model_fields else "it takes no options"
        raise ConfigError(
            f"The options of method {method.name} are invalid: {'; '.join(problems)} ({accepted})."
        ) from err


# --- epoch helpers --------------------------------------------------------------------------


def planned_epochs(method: MethodConfig) -> int:
    """Epochs to run: ``selection.epoch`` under FixedEpoch when given, else ``method.epochs``."""
    rule, fixed = method.selection.rule, method.selection.epoch
    if rule == "FixedEpoch" and fixed is not None:
        if fixed > method.epochs:
            raise ConfigError(f"method.selection.epoch ({fixed}) exceeds method.epochs ({method.epochs}).")
        return fixed
    return method.epochs


def check_selection(ctx: MethodContext) -> None:
    """Refuse, before any epoch, a run whose selection rule needs a set it was not given
    (ForgetReachesTest reads the validation set)."""
    if ctx.method.selection.rule == "ForgetReachesTest":
        _validation(ctx)


def _validation(ctx: MethodContext) -> Samples | Encoded:
    if ctx.inputs.validation is None:
        raise ConfigError(
            "method.selection.rule ForgetReachesTest compares the forget loss with the validation set's, "
            "and this run has no validation set."
        )
    return ctx.inputs.validation


def freeze(model: MultimodalClassifier) -> MultimodalClassifier:
    """Eval mode and no gradients: the state a frozen original (``F_og``, a teacher) keeps throughout."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def student_copy(original: MultimodalClassifier, device: torch.device) -> MultimodalClassifier:
    """A trainable copy of ``original`` (which is not modified) in train mode."""
    student = copy.deepcopy(original).to(device)
    for p in student.parameters():
        p.requires_grad_(True)
    return student.train()


def checked(loss: torch.Tensor, what: str, epoch: int) -> torch.Tensor:
    """``loss`` (a scalar) unchanged; :class:`DivergedError` when it is not finite."""
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
    """A shuffled pass over ``n`` samples: index tensors (B,) of ``batch_size`` (the last may be shorter)."""
    order = torch.randperm(n, generator=generator)
    return [order[s * batch_size : (s + 1) * batch_size].to(device) for s in range(math.ceil(n / batch_size))]


def epoch_batches(ctx: MethodContext, n: int, epoch: int) -> tuple[list[torch.Tensor], torch.Generator]:
    """An epoch's shuffled pass over ``n`` samples as this rank's batches of positions (on the device),
    and the generator of the epoch's other draws. In one process: :func:`batches` from ``ctx.generator``
    and that generator. In a world of W: this rank's DistributedSampler shard in batches of
    ``batch_size / W``, and a generator seeded by (seed, epoch, rank) (:mod:`~forgetmi_trainer.distributed`)."""
    world = ctx.world
    if not world.distributed:
        return batches(n, ctx.method.batch_size, ctx.generator, ctx.device), ctx.generator
    order = distributed.epoch_order(n, world, ctx.seed, epoch, ctx.generator)
    size = distributed.local_batch(ctx.method.batch_size, world)
    plan = [order[s : s + size].to(ctx.device) for s in range(0, len(order), size)]
    return plan, distributed.epoch_generator(world, ctx.seed, epoch, ctx.generator)


def random_batch(data: Samples | Encoded, size: int, generator: torch.Generator, device: torch.device) -> Encoded:
    """``size`` samples of ``data`` drawn uniformly with replacement, on ``device``."""
    return take(data, torch.randint(len(data), (size,), generator=generator))


def take(data: Samples | Encoded, positions: torch.Tensor) -> Encoded:
    """The samples of ``data`` at ``positions`` in memory, on ``data``'s device (read if streamed)."""
    if isinstance(data, Samples):
        return data.take(positions)
    return data.take(positions.to(data.labels.device))


def task_logits(model: MultimodalClassifier, batch: Encoded) -> list[torch.Tensor]:
    """Logits (B, C) of the image head, the text head and the image head on the joint embedding."""
    out = model(batch.pixels, batch.input_ids, batch.attention_mask)
    return [out.image_logits.float(), out.text_logits.float(), model.image_head(out.joint_embeds).float()]


@torch.no_grad()
def mean_image_loss(model: MultimodalClassifier, data: Samples | Encoded, batch_size: int | None = None) -> float:
    """Mean image-head cross-entropy over ``data`` (streamed when it is), in batches of at most 512
    images and ``data.BATCH_PIXELS`` pixel values. The image head reads only the image embedding,
    so the text encoder is not run."""
    total = 0.0
    per_image = model.config.image_channels * model.config.image_size * model.config.image_size
    for b in chunks(data, batch_size or bounded_batch(per_image, 512), text=False):
        logits = model.image_head(model.encode_image(b.pixels)).float()
        total += float(F.cross_entropy(logits, b.labels, reduction="sum"))
    return total / max(len(data), 1)


def selection_loss(ctx: MethodContext, model: MultimodalClassifier, data: Samples | Encoded) -> float:
    """:func:`mean_image_loss` of ``data``; in a world each rank scores its :func:`~forgetmi_trainer.distributed.shard`
    and the sums are all-reduced, so every rank reads the same figure."""
    if not ctx.world.distributed:
        return mean_image_loss(model, data)
    rows = distributed.shard(len(data), ctx.world)
    part = subset(data, rows)
    total = mean_image_loss(model, part) * len(part) if len(part) else 0.0
    summed, count = distributed.all_sum(ctx.world, [total, float(len(part))])
    return summed / max(count, 1.0)


def end_epoch(
    ctx: MethodContext,
    model: MultimodalClassifier,
    history: list[dict[str, float]],
    epoch: int,
    epochs: int,
    loss: float,
) -> bool:
    """Append the epoch to ``history``, report progress; True when ForgetReachesTest stops here
    (the image-head forget-set loss has reached the validation-set loss, both measured in eval
    mode). The test set is never read. In a world ``loss`` (this rank's) is averaged over the ranks
    and the selection losses all-reduced, so every rank stops at the same epoch."""
    if ctx.world.distributed:  # every rank ran as many steps on as many samples: the mean of the means
        loss = distributed.all_sum(ctx.world, [loss])[0] / ctx.world.size
    record = {"epoch": float(epoch), "loss": loss}
    reached = False
    if ctx.method.selection.rule == "ForgetReachesTest":
        validation = _validation(ctx)
        was_training = model.training
        model.eval()
        record["forget_loss"] = selection_loss(ctx, model, ctx.inputs.forget)
        record["validation_loss"] = selection_loss(ctx, model, validation)
        model.train(was_training)
        reached = record["forget_loss"] >= record["validation_loss"]
    history.append(record)
    if ctx.on_epoch is not None:
        ctx.on_epoch(epoch, epochs, loss)
    return reached


def finish(
    ctx: MethodContext, model: MultimodalClassifier, history: list[dict[str, float]], start: float,
    embedding_scale: EmbeddingScale | None = None,
) -> UnlearnResult:
    """Check the weights, freeze the model and build the result (selected = last epoch run)."""
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise DivergedError(f"The {ctx.method.name} model has non-finite weights.")
    ran = len(history)
    return UnlearnResult(
        model=freeze(model),
        selection=Selection(rule=ctx.method.selection.rule, epoch=ran, epochs_run=ran),
        seconds=time.perf_counter() - start,
        history=history,
        embedding_scale=embedding_scale,
    )

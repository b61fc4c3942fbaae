"""The Forget-MI loop (FORGET_MI.md §4).

``F_og`` is frozen (eval mode, no grad); ``F_ul`` starts as its copy with every encoder and
projection trainable. Both models build their joint embeddings with one shared frozen gate,
the original's. One step takes a forget batch x, its aligned noisy copy x̃ (same samples, same
order) and a random retain batch r of the same size, and minimises the weighted four terms;
gradients are clipped to norm 1 and AdamW steps once per batch. One epoch is one pass over D_f.
The heads are never trained. A declared rule selects the checkpoint that is returned.

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

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from forgetmi_trainer import losses
from forgetmi_trainer.contract import MethodConfig, NoiseConfig, Selection
from forgetmi_trainer.data import Encoded, noisy_images
from forgetmi_trainer.errors import ConfigError, DivergedError
from forgetmi_trainer.model import MultimodalClassifier
from forgetmi_trainer.runtime import adamw, autocast

EpochCallback = Callable[[int, int, float], None]


@dataclass
class UnlearnInputs:
    """Encoded sets on the target device; ``noisy_texts[k]`` is the k-th perturbed copy of the
    forget reports as (input_ids, attention_mask), aligned with ``forget``."""

    forget: Encoded
    retain: Encoded
    test: Encoded
    noisy_texts: list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class UnlearnResult:
    model: MultimodalClassifier
    selection: Selection
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def freeze(model: MultimodalClassifier) -> MultimodalClassifier:
    """Eval mode and no gradients: the state ``F_og`` keeps throughout."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _unimodal(out: object) -> torch.Tensor:
    return torch.cat([out.image_embeds, out.text_embeds], dim=-1)  # type: ignore[attr-defined]


@torch.no_grad()
def frozen_embeddings(
    f_og: MultimodalClassifier, data: Encoded, gate: torch.nn.Module, precision: str = "fp32", batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """``F_og``'s unimodal (N, 2d) and joint (N, d) embeddings of every sample of ``data``, in float32.

    ``F_og`` is frozen and in eval mode, so these are the embeddings the steps would compute,
    in a few large batches instead of one small one per step (FORGET_MI.md §9)."""
    device = data.labels.device
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
    than |D_r| when few patients are forgotten, so nothing is computed for samples no step uses;
    each epoch computes its new ones in one batched pass."""

    def __init__(self, f_og: MultimodalClassifier, retain: Encoded, gate: torch.nn.Module, precision: str) -> None:
        self.f_og, self.retain, self.gate, self.precision = f_og, retain, gate, precision
        device = retain.labels.device
        self.known = torch.zeros(len(retain), dtype=torch.bool, device=device)
        self.units: torch.Tensor | None = None
        self.joints: torch.Tensor | None = None

    def need(self, idx: torch.Tensor) -> None:
        """Make sure the embeddings of the retain samples ``idx`` are known."""
        missing = torch.unique(idx)
        missing = missing[~self.known[missing]]
        if len(missing) == 0:
            return
        units, joints = frozen_embeddings(self.f_og, self.retain.take(missing), self.gate, self.precision)
        if self.units is None or self.joints is None:
            self.units = units.new_zeros((len(self.retain), units.shape[1]))
            self.joints = joints.new_zeros((len(self.retain), joints.shape[1]))
        self.units[missing], self.joints[missing] = units, joints
        self.known[missing] = True

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unimodal (B, 2d) and joint (B, d) embeddings of retain samples already asked for by :meth:`need`."""
        if self.units is None or self.joints is None or not bool(self.known[idx].all()):
            raise RuntimeError("RetainEmbeddings.take() before need() for these samples")
        return self.units[idx], self.joints[idx]


def draw_epoch(
    pixels: torch.Tensor,
    order: torch.Tensor,
    batch_size: int,
    retain_size: int,
    noise: NoiseConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """An epoch's random draws, made up front in the order the steps use them: for each step the
    noisy copy of its forget batch (``order`` cut into batches), then the indices of its retain
    batch. Returns the noisy pixels (N, C, H, W) and retain indices (N,), both in step order.
    These are the draws a step-by-step loop would make from ``generator``, so ``F_og`` can embed
    the whole epoch's noisy copy in one pass without changing the result."""
    noisy, retain_ids = [], []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size].to(pixels.device)
        noisy.append(noisy_images(pixels[idx], noise.image_mean, noise.image_std, generator))
        retain_ids.append(torch.randint(retain_size, (len(idx),), generator=generator))
    return torch.cat(noisy), torch.cat(retain_ids)


def step_terms(
    f_ul: MultimodalClassifier,
    x: Encoded,
    r: Encoded,
    og_f: tuple[torch.Tensor, torch.Tensor],
    og_r: tuple[torch.Tensor, torch.Tensor],
    gate: torch.nn.Module,
    bound: float | None,
) -> losses.LossTerms:
    """The four terms of one step (each a scalar). ``F_og``'s embeddings (unimodal (B, 2d),
    joint (B, d)) of the noisy forget batch x̃ (``og_f``) and of the retain batch (``og_r``) come
    from :func:`frozen_embeddings`; ``F_ul`` (in eval mode) runs once on x and r together."""
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


@torch.no_grad()
def mean_image_loss(model: MultimodalClassifier, data: Encoded, batch_size: int = 512) -> float:
    """Mean image-head cross-entropy over ``data``. The image head reads only the image
    embedding, so the text encoder is not run."""
    total = 0.0
    for start in range(0, len(data), batch_size):
        b = data.take(torch.arange(start, min(start + batch_size, len(data)), device=data.labels.device))
        logits = model.image_head(model.encode_image(b.pixels)).float()
        total += float(F.cross_entropy(logits, b.labels, reduction="sum"))
    return total / max(len(data), 1)


def forget_mi(
    original: MultimodalClassifier,
    inputs: UnlearnInputs,
    method: MethodConfig,
    *,
    generator: torch.Generator,
    device: torch.device,
    precision: str = "fp32",
    on_epoch: EpochCallback | None = None,
) -> UnlearnResult:
    """Unlearn ``inputs.forget`` from ``original`` (left unchanged) and return the selected model."""
    start = time.perf_counter()
    rule, fixed = method.selection.rule, method.selection.epoch
    if rule == "FixedEpoch" and fixed is not None and fixed > method.epochs:
        raise ConfigError(f"method.selection.epoch ({fixed}) exceeds method.epochs ({method.epochs}).")
    epochs = fixed if rule == "FixedEpoch" and fixed is not None else method.epochs
    weights = losses.resolve_weights(method.preset, method.weights)
    f_og = freeze(original.to(device))
    gate = f_og.fusion
    f_ul = copy.deepcopy(f_og)
    for p in f_ul.parameters():
        p.requires_grad_(True)
    for p in f_ul.fusion.parameters():
        p.requires_grad_(False)
    for p in (*f_ul.image_head.parameters(), *f_ul.text_head.parameters()):
        p.requires_grad_(False)
    f_ul.eval()  # dropout off; gradients still flow
    optimizer = adamw(f_ul, method.learning_rate)
    forget, retain = inputs.forget, inputs.retain
    n, bs = len(forget), method.batch_size
    noise = method.noise
    history: list[dict[str, float]] = []
    selected = epochs
    og_retain = RetainEmbeddings(f_og, retain, gate, precision)
    for epoch in range(1, epochs + 1):
        order = torch.randperm(n, generator=generator).to(device)
        ids, mask = inputs.noisy_texts[(epoch - 1) % len(inputs.noisy_texts)]
        noisy_pixels, retain_ids = draw_epoch(forget.pixels, order, bs, len(retain), noise, generator)
        retain_ids = retain_ids.to(device)
        noisy = Encoded(noisy_pixels, ids[order], mask[order], forget.labels[order])  # in step order
        og_noisy_u, og_noisy_j = frozen_embeddings(f_og, noisy, gate, precision)
        og_retain.need(retain_ids)
        epoch_loss = 0.0
        for s in range(math.ceil(n / bs)):
            rows = slice(s * bs, (s + 1) * bs)
            idx, ridx = order[rows], retain_ids[rows]
            with autocast(device, precision):
                terms = step_terms(
                    f_ul,
                    forget.take(idx),
                    retain.take(ridx),
                    (og_noisy_u[rows], og_noisy_j[rows]),
                    og_retain.take(ridx),
                    gate,
                    method.push_bound,
                )
                loss = losses.combine(terms, weights, method.sign)
            if not torch.isfinite(loss):
                raise DivergedError(f"The unlearning loss became {float(loss.detach())} at epoch {epoch}.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(f_ul.parameters(), 1.0)
            optimizer.step()
            epoch_loss += float(loss.detach()) * len(idx)
        record = {"epoch": float(epoch), "loss": epoch_loss / n}
        reached = False
        if rule == "ForgetReachesTest":
            record["forget_loss"] = mean_image_loss(f_ul, forget)
            record["test_loss"] = mean_image_loss(f_ul, inputs.test)
            reached = record["forget_loss"] >= record["test_loss"]
        history.append(record)
        if on_epoch is not None:
            on_epoch(epoch, epochs, record["loss"])
        if reached:
            selected = epoch
            break
    if not all(torch.isfinite(p).all() for p in f_ul.parameters()):
        raise DivergedError("The unlearned model has non-finite weights.")
    for p in f_ul.parameters():
        p.requires_grad_(False)
    return UnlearnResult(
        model=f_ul.eval(),
        selection=Selection(rule=rule, epoch=selected, epochs_run=len(history)),
        seconds=time.perf_counter() - start,
        history=history,
    )

"""The four Forget-MI loss terms (FORGET_MI.md §4) as small pure functions.

With ``u_M(x) = [z_img; z_txt]`` the unimodal embedding and ``j_M(x)`` the joint (gate)
embedding of model M, and ``d`` the per-sample Euclidean distance, each term is a batch mean:

======  ==========================  ===================================================
term    meaning                     value
======  ==========================  ===================================================
L_UU    unimodal unlearning (push)  ``-mean d(u_ul(x), u_og(x̃))``, bounded: ``mean relu(m - d)``
L_MU    multimodal unlearning       ``-mean d(j_ul(x), j_og(x̃))``, bounded: ``mean relu(m - d)``
L_UR    unimodal retention (pull)   ``mean d(u_ul(r), u_og(r))``
L_MR    multimodal retention        ``mean d(j_ul(r), j_og(r))``
======  ==========================  ===================================================

The original model's side of every term is detached: ``F_og`` is frozen, so no gradient may
reach it even when a caller forgets ``torch.no_grad()``. Distances are computed in at least
float32, so bf16 embeddings from autocast do not lose the loss in rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from forgetmi_trainer.contract import LossWeights

Sign = Literal["push", "pull"]

PRESETS: dict[str, LossWeights] = {
    # FORGET_MI.md lists the presets as (w_UU, w_UR, w_MU, w_MR).
    "equal": LossWeights(uu=0.25, ur=0.25, mu=0.25, mr=0.25),
    "multimodal": LossWeights(uu=0.1, ur=0.1, mu=0.4, mr=0.4),
    "unimodal": LossWeights(uu=0.4, ur=0.4, mu=0.1, mr=0.1),
    "retention": LossWeights(uu=0.1, ur=0.4, mu=0.1, mr=0.4),
}


def pairwise_distance(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distance per sample: (B, D), (B, D) -> (B,).

    Exactly 0 where ``a == b``, with a finite (zero) gradient there. The result has the
    promoted dtype of the inputs and float32, whichever is wider.
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape != b.shape:
        shapes = f"{tuple(a.shape)} and {tuple(b.shape)}"
        raise ValueError(f"embeddings must both have shape (batch, dim) and match; got {shapes}")
    if a.shape[0] == 0:
        raise ValueError("embeddings must hold at least one sample; got an empty batch")
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    return torch.linalg.vector_norm(a.to(dtype) - b.to(dtype), ord=2, dim=1)


def _push(ul: Tensor, og_noisy: Tensor, bound: float | None) -> Tensor:
    if bound is not None and not bound > 0:
        raise ValueError(f"method.push_bound must be a positive number; got {bound}")
    d = pairwise_distance(ul, og_noisy.detach())
    if bound is None:
        return -d.mean()
    return torch.relu(bound - d).mean()


def unimodal_unlearning(u_ul: Tensor, u_og_noisy: Tensor, bound: float | None = None) -> Tensor:
    """L_UU, a scalar: push the unimodal embeddings of forget data away.

    ``u_ul`` (B, D): ``[z_img; z_txt]`` of ``F_ul`` on the clean forget batch x;
    ``u_og_noisy`` (B, D): the same of ``F_og`` on the aligned noisy copy x̃.
    Unbounded: ``-mean d`` (can decrease without limit). With ``bound`` m > 0:
    ``mean relu(m - d)`` (≥ 0, and 0 with zero gradient once every d ≥ m).
    """
    return _push(u_ul, u_og_noisy, bound)


def multimodal_unlearning(j_ul: Tensor, j_og_noisy: Tensor, bound: float | None = None) -> Tensor:
    """L_MU, a scalar: push the joint embeddings (B, D) of forget data away; see
    :func:`unimodal_unlearning` for the bound."""
    return _push(j_ul, j_og_noisy, bound)


def unimodal_retention(u_ul_r: Tensor, u_og_r: Tensor) -> Tensor:
    """L_UR, a scalar: ``mean d`` between the unimodal embeddings (B, D) of ``F_ul`` and
    ``F_og`` on a retain batch r (keeps them together)."""
    return pairwise_distance(u_ul_r, u_og_r.detach()).mean()


def multimodal_retention(j_ul_r: Tensor, j_og_r: Tensor) -> Tensor:
    """L_MR, a scalar: ``mean d`` between the joint embeddings (B, D) of ``F_ul`` and ``F_og``
    on a retain batch r."""
    return pairwise_distance(j_ul_r, j_og_r.detach()).mean()


def normalised(weights: LossWeights) -> LossWeights:
    """A new :class:`LossWeights` with the same ratios, summing to 1."""
    total = weights.uu + weights.mu + weights.ur + weights.mr
    if not total > 0:
        raise ValueError("method.weights must not all be zero")
    return LossWeights(
        uu=weights.uu / total, mu=weights.mu / total, ur=weights.ur / total, mr=weights.mr / total
    )


def resolve_weights(preset: str, weights: LossWeights | None) -> LossWeights:
    """The normalised weights of a run: explicit ``weights`` win over the named ``preset``."""
    if weights is not None:
        return normalised(weights)
    if preset not in PRESETS:
        raise ValueError(f"method.preset must be one of {', '.join(sorted(PRESETS))}; got {preset!r}")
    return normalised(PRESETS[preset])


@dataclass(frozen=True)
class LossTerms:
    """The four scalar terms of one step, as returned by the functions above."""

    uu: Tensor
    mu: Tensor
    ur: Tensor
    mr: Tensor


def combine(terms: LossTerms, weights: LossWeights, sign: Sign = "push") -> Tensor:
    """The scalar step loss ``w_UU·L_UU + w_MU·L_MU + w_UR·L_UR + w_MR·L_MR`` with the
    weights normalised to sum to 1.

    ``sign="pull"`` multiplies the two unlearning terms by -1 (retention terms unchanged): a
    sanity check that pulls ``F_ul`` towards the original's embeddings of the *noisy* copies
    and so forgets nothing. Unbounded, the pulled term is ``+mean d``. With a bound m it is
    ``-mean relu(m - d) = mean min(d, m) - m``: pulls each sample closer while d < m, no
    gradient beyond (so pull is bounded on both sides, in [-m, 0]).
    """
    if sign not in ("push", "pull"):
        raise ValueError(f"method.sign must be 'push' or 'pull'; got {sign!r}")
    for name in ("uu", "mu", "ur", "mr"):
        shape = tuple(getattr(terms, name).shape)
        if shape:
            raise ValueError(f"loss term {name} must be a scalar; got shape {shape}")
    w = normalised(weights)
    flip = -1.0 if sign == "pull" else 1.0
    return flip * (w.uu * terms.uu + w.mu * terms.mu) + w.ur * terms.ur + w.mr * terms.mr

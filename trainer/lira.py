"""Offline LiRA scoring (Carlini et al., "Membership Inference Attacks From First Principles", 2022),
pure numpy, from the target model's logits and per-sample statistics of K reference models.

Each sample's confidence is the logit-scaled probability of its label, ``phi = z_y - logsumexp_{j != y} z_j``
(= ``log p_y - log(1 - p_y)``, roughly Gaussian over models). A reference model either trained on the
sample's patient (IN) or not (OUT). The offline attack uses the OUT references only: per sample, the
mean of their ``phi``; one global standard deviation of OUT ``phi`` around those per-sample means (the
paper's fixed variance, robust with K = 4). The target's score is ``(phi - mean) / std``: how many
standard deviations more confident the target is on the sample than models that never saw it; higher
is more member-like. It calibrates away how easy each sample is, which the plain loss attack cannot.
``variance="per_sample"`` scales each sample by its own OUT std instead (floored), which ranks samples the
global std cannot separate (a sample whose OUT phi spread widely is not surprising when it moves a lot).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Variance = Literal["global", "per_sample"]
VARIANCE: Variance = "global"
"""The default scale of the offline score: the paper's one global std, or each sample's own OUT std."""
FLOOR = 0.1
"""With ``per_sample``: a sample's std is at least this fraction of the global std (two OUT values can agree)."""


def confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``phi = z_y - logsumexp_{j != y} z_j`` per sample, (N, C) logits, (N,) class indices -> (N,) float64;
    stable for large logits. Needs at least two classes."""
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"logits (N, C) and labels (N,) must match; got shapes {x.shape} and {y.shape}")
    if x.shape[1] < 2:
        raise ValueError(f"LiRA's confidence needs at least 2 classes; got {x.shape[1]}")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= x.shape[1]):
        raise ValueError(f"labels must be integer class indices in [0, {x.shape[1]})")
    if not np.isfinite(x).all():
        raise ValueError("logits hold non-finite values (NaN or inf)")
    rows = np.arange(y.size)
    own = x[rows, y]
    others = x.copy()
    others[rows, y] = -np.inf
    top = others.max(axis=1, keepdims=True)
    rest = top[:, 0] + np.log(np.exp(others - top).sum(axis=1))
    return own - rest


@dataclass(frozen=True)
class ReferenceStats:
    """K reference models' statistics on N samples: ``phi`` (N, K) their confidences and ``member`` (N, K)
    whether reference k trained on the sample's patient."""

    phi: np.ndarray
    member: np.ndarray

    def __post_init__(self) -> None:
        phi, member = np.asarray(self.phi, dtype=np.float64), np.asarray(self.member)
        if phi.ndim != 2 or member.shape != phi.shape:
            raise ValueError(f"reference phi and member must both be (N, K); got {phi.shape} and {member.shape}")
        if member.dtype != np.bool_:
            raise ValueError(f"reference member must be boolean; got dtype {member.dtype}")
        if not np.isfinite(phi).all():
            raise ValueError("reference phi hold non-finite values (NaN or inf)")
        object.__setattr__(self, "phi", phi)
        object.__setattr__(self, "member", member)

    @property
    def samples(self) -> int:
        return int(self.phi.shape[0])


@dataclass(frozen=True)
class OutFit:
    """The offline fit: per-sample mean of the OUT references' phi (N,) and their one global std; with
    ``per_sample`` variance also each sample's own OUT std (N,), floored (:data:`FLOOR`)."""

    mean: np.ndarray
    std: float
    sample_std: np.ndarray | None = None

    def scale(self) -> np.ndarray | float:
        return self.std if self.sample_std is None else self.sample_std


@dataclass(frozen=True)
class LiraInputs:
    """Reference statistics aligned row by row with the forget and the test samples being scored."""

    forget: ReferenceStats
    test: ReferenceStats


def out_fit(stats: ReferenceStats, variance: Variance | None = None) -> OutFit:
    """Per-sample mean of the OUT phi and one global std of the OUT phi around their sample's mean
    (degrees of freedom: OUT values minus samples). A sample with no OUT reference is an error.

    The mean (and a per-sample std) uses the same number m of OUT references for every sample, each
    sample's first m (m = the fewest any sample has: K/2 for a forgotten patient, against K for a test
    patient), so under "no membership" forget and test scores have one distribution; averaging more OUT
    values for test samples would give forget scores wider tails and a TPR above the FPR for a model that
    never saw them. ``variance="per_sample"`` (default :data:`VARIANCE`) adds each sample's own std of those
    m values (ddof 1; the global std when m = 1), at least :data:`FLOOR` times the global std."""
    out = ~stats.member
    n_out = out.sum(axis=1)
    if (missing := int((n_out == 0).sum())) > 0:
        raise ValueError(f"{missing} of {stats.samples} samples have no OUT reference model; offline LiRA "
                         "needs at least one reference that did not train on each sample's patient")
    dof = int(n_out.sum()) - stats.samples
    if dof <= 0:
        raise ValueError("offline LiRA needs at least one sample with two OUT reference models to fit a variance")
    mean, residual = _around_mean(stats.phi, out)
    std = max(float(np.sqrt((residual**2).sum() / dof)), np.finfo(np.float64).tiny)
    m = int(n_out.min())
    used = out & (np.cumsum(out, axis=1) <= m)  # each sample's first m OUT references: alike for all samples
    mean, residual = _around_mean(stats.phi, used)
    if (variance or VARIANCE) == "global":
        return OutFit(mean=mean, std=std)
    own = np.sqrt((residual**2).sum(axis=1) / (m - 1)) if m >= 2 else np.full(stats.samples, std)
    return OutFit(mean=mean, std=std, sample_std=np.maximum(own, FLOOR * std))


def _around_mean(phi: np.ndarray, use: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample mean of the used phi (N,) and the used phi's residuals around it (N, K; 0 where unused)."""
    mean = np.where(use, phi, 0.0).sum(axis=1) / np.maximum(use.sum(axis=1), 1)
    return mean, np.where(use, phi - mean[:, None], 0.0)


def offline_scores(phi_target: np.ndarray, fit: OutFit) -> np.ndarray:
    """``(phi - mean) / std`` per sample (the sample's own std when fitted), (N,) -> (N,): higher = more
    member-like."""
    phi = np.asarray(phi_target, dtype=np.float64)
    if phi.shape != fit.mean.shape:
        raise ValueError(f"target phi {phi.shape} and the OUT fit {fit.mean.shape} must cover the same samples")
    return (phi - fit.mean) / fit.scale()


def scores(inputs: LiraInputs, phi_forget: np.ndarray, phi_test: np.ndarray,
           variance: Variance | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The target's offline scores on forget and test, with one OUT fit over both (so one std scales both)."""
    if inputs.forget.phi.shape[1] != inputs.test.phi.shape[1]:
        raise ValueError("lira.forget and lira.test must come from the same K reference models; got "
                         f"{inputs.forget.phi.shape[1]} and {inputs.test.phi.shape[1]} columns")
    both = ReferenceStats(np.concatenate([inputs.forget.phi, inputs.test.phi]),
                          np.concatenate([inputs.forget.member, inputs.test.member]))
    s = offline_scores(np.r_[phi_forget, phi_test], out_fit(both, variance))
    return s[: inputs.forget.samples], s[inputs.forget.samples:]

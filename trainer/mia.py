"""The membership-inference audit (FORGET_MI.md §5) on per-sample losses of the image head.

Four numbers, all from per-sample cross-entropy losses (never one loss per batch):

- ``paper_score``: the paper's MIA. An SVC (RBF, C=3, gamma="auto") learns to separate retain
  losses (member, 1) from test losses (non-member, 0); the score is the fraction of forget
  samples it labels member. Lower is better.
- the *balanced* score: the same attacker with the member/non-member imbalance removed (see
  :func:`paper_score`); the plain score rises towards 1 whenever retain ≫ test, whatever the
  model has memorised.
- ``attack_auc``: ROC AUC of forget (positive) vs test by negative loss; 0.5 means the
  forgotten patients look exactly like never-seen ones.
- ``tpr_at_fpr``: that attack's true-positive rate at a low false-positive rate.

The SVC is trained on at most :data:`MAX_TRAIN` samples, drawn with the given seed, so one
audit takes well under a second whatever the dataset size.

Each number gets a 95 % interval from a seeded bootstrap over patients (:mod:`~forgetmi_trainer.bootstrap`)
when :func:`audit` is given the forget and test patient codes. The attack AUC and the TPR resample the
forget and the test patients. The two SVC scores keep the attacker trained once per model (on the
retain sample and the test set) and resample the forget patients only: their interval says how much the
score depends on which patients were forgotten, not how much it depends on the attacker's training draw,
and it costs one weighted mean per replicate instead of one SVC fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.svm import SVC

from forgetmi_trainer import bootstrap
from forgetmi_trainer.contract import MiaResult

MAX_TRAIN = 2000


def per_sample_losses(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy of each sample, (N, C) logits and (N,) class indices -> (N,) float64."""
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"logits (N, C) and labels (N,) must match; got shapes {x.shape} and {y.shape}")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= x.shape[1]):
        raise ValueError(f"labels must be integer class indices in [0, {x.shape[1]})")
    if not np.isfinite(x).all():
        raise ValueError("logits hold non-finite values (NaN or inf)")
    if y.size == 0:
        return np.zeros(0)
    shifted = x - x.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    return log_norm - shifted[np.arange(y.size), y]


def paper_score(
    retain_losses: np.ndarray,
    test_losses: np.ndarray,
    forget_losses: np.ndarray,
    seed: int = 0,
    balanced: bool = False,
    *,
    retain_labels: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
) -> float | None:
    """Fraction of forget samples an SVC trained on retain (member) vs test (non-member)
    losses labels member. Losses are (N,) arrays; ``None`` when any of the three is empty.

    Plain (the paper): all retain and test losses, subsampled in proportion to at most
    :data:`MAX_TRAIN` together, so the attacker inherits the retain ≫ test count imbalance.
    ``balanced=True`` trains on equal numbers of members and non-members: for each class label
    y present in both sets (when ``retain_labels`` and ``test_labels`` are given; otherwise
    one group), ``min(#retain_y, #test_y)`` samples are drawn from *each* side, scaled down
    to at most ``MAX_TRAIN // 2`` per side. The attacker then sees neither a membership prior
    nor a label-mix difference (minority classes have higher losses), only how losses of
    seen and unseen samples of the same class differ. ``None`` as well when the labelled
    retain and test sets share no label.
    """
    votes = member_votes(retain_losses, test_losses, forget_losses, seed, balanced,
                         retain_labels=retain_labels, test_labels=test_labels)
    return None if votes is None else float(votes.mean())


def member_votes(
    retain_losses: np.ndarray,
    test_losses: np.ndarray,
    forget_losses: np.ndarray,
    seed: int = 0,
    balanced: bool = False,
    *,
    retain_labels: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
) -> np.ndarray | None:
    """The attacker of :func:`paper_score` (same arguments), trained once: its verdict on each forget
    sample, (Nf,) float64, 1.0 = member; None where :func:`paper_score` is None."""
    r, t, f = _losses(retain_losses, "retain"), _losses(test_losses, "test"), _losses(forget_losses, "forget")
    if r.size == 0 or t.size == 0 or f.size == 0:
        return None
    rng = np.random.default_rng(seed)
    if balanced:
        member, non_member = _balanced_indices(rng, r.size, t.size, retain_labels, test_labels)
        if member.size == 0:
            return None
        r, t = r[member], t[non_member]
    elif r.size + t.size > MAX_TRAIN:
        keep_r = min(MAX_TRAIN - 1, max(1, round(MAX_TRAIN * r.size / (r.size + t.size))))
        r = r[_subsample(rng, r.size, keep_r)]
        t = t[_subsample(rng, t.size, MAX_TRAIN - keep_r)]
    features = np.concatenate([r, t])[:, None]
    membership = np.concatenate([np.ones(r.size), np.zeros(t.size)])
    svc = SVC(kernel="rbf", C=3, gamma="auto", random_state=seed)
    svc.fit(features, membership)
    return (svc.predict(f[:, None]) == 1).astype(np.float64)


def attack_auc(forget_losses: np.ndarray, test_losses: np.ndarray) -> float | None:
    """ROC AUC of forget (positive) vs test (negative) scored by ``-loss`` (a lower loss looks
    more like a member). 1.0: every forget sample looks more seen than every test sample;
    0.5: no signal; ``None`` when either set is empty."""
    f, t = _losses(forget_losses, "forget"), _losses(test_losses, "test")
    if f.size == 0 or t.size == 0:
        return None
    return float(roc_auc_score(np.r_[np.ones(f.size), np.zeros(t.size)], -np.r_[f, t]))


def tpr_at_fpr(forget_losses: np.ndarray, test_losses: np.ndarray, fpr: float = 0.01) -> float | None:
    """TPR of the loss-threshold attack (member iff ``loss <= threshold``) at the best
    threshold whose FPR on the test set is at most ``fpr`` — no interpolation between
    thresholds, so with fewer than ``1/fpr`` test samples only FPR = 0 is admissible.
    ``None`` when either set is empty."""
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must lie in [0, 1]; got {fpr}")
    f, t = _losses(forget_losses, "forget"), _losses(test_losses, "test")
    if f.size == 0 or t.size == 0:
        return None
    fprs, tprs, _ = roc_curve(np.r_[np.ones(f.size), np.zeros(t.size)], -np.r_[f, t], drop_intermediate=False)
    return float(tprs[fprs <= fpr + 1e-12].max())


@dataclass(frozen=True)
class LossAttack:
    """The loss-threshold attack of :func:`attack_auc` and :func:`tpr_at_fpr` for replicate weights of the
    forget (positive) and test (negative) samples, scored by ``-loss`` and sorted once."""

    ranked: bootstrap.Ranked
    forget_below_run: np.ndarray

    @classmethod
    def of(cls, forget_losses: np.ndarray, test_losses: np.ndarray) -> LossAttack:
        f, t = _losses(forget_losses, "forget"), _losses(test_losses, "test")
        ranked = bootstrap.Ranked.of(-np.r_[f, t], np.r_[np.ones(f.size, bool), np.zeros(t.size, bool)])
        return cls(ranked, np.searchsorted(ranked.positives, ranked.run_starts))

    def __call__(self, draws: Mapping[bootstrap.Side, bootstrap.Draw]) -> dict[str, np.ndarray]:
        """``{"attack_auc", "tpr_at_1pct_fpr"}`` replicates (b,) from the forget and test draws."""
        w = draws["forget"].join(draws["test"]).weights(self.ranked.order)
        c = bootstrap.cumulative(w)
        return {"attack_auc": self.ranked.auc(w, c), "tpr_at_1pct_fpr": self.tpr(w, c, 0.01)}

    def tpr(self, weights: np.ndarray, totals: np.ndarray, fpr: float) -> np.ndarray:
        """(b,) weighted TPR at the best threshold (a run of tied scores: member iff score >= it) whose
        weighted FPR is at most ``fpr``, from sorted weights (b, N) and their cumulative (b, N + 1)."""
        forget = bootstrap.cumulative(weights[:, self.ranked.positives])
        forget_below = forget[:, self.forget_below_run]  # (b, G): forget weight scored below each run
        test_below = totals[:, self.ranked.run_starts] - forget_below
        w_forget, w_test = forget[:, -1:], totals[:, -1:] - forget[:, -1:]
        tprs = (w_forget - forget_below) / w_forget
        fprs = (w_test - test_below) / w_test
        return np.where(fprs <= fpr + 1e-12, tprs, 0.0).max(axis=1)


def audit(
    retain_losses: np.ndarray,
    retain_labels: np.ndarray,
    test_losses: np.ndarray,
    test_labels: np.ndarray,
    forget_losses: np.ndarray,
    forget_labels: np.ndarray,
    seed: int = 0,
    *,
    forget_groups: np.ndarray | None = None,
    test_groups: np.ndarray | None = None,
    replicates: int = 0,
) -> MiaResult:
    """All four MIA numbers for one model, from per-sample losses (N,) and class labels (N,).
    Labels stratify the balanced variant; ``forget_labels`` is only checked against its losses.
    With the forget and test patient codes (N,) and ``replicates`` > 0 each number also gets its 95 %
    interval, bootstrapped over patients with ``seed`` (see the module docstring)."""
    for losses, groups, name in ((test_losses, test_groups, "test"), (forget_losses, forget_groups, "forget")):
        if groups is not None and np.shape(losses) != np.shape(groups):
            shapes = f"{np.shape(losses)} and {np.shape(groups)}"
            raise ValueError(f"{name} losses and groups must have the same shape; got {shapes}")
    points, figures = audit_figures(retain_losses, retain_labels, test_losses, test_labels, forget_losses,
                                    forget_labels, seed)
    if forget_groups is None or test_groups is None or replicates == 0:
        return MiaResult.model_validate(points)
    cis = bootstrap.intervals(figures, {"forget": forget_groups, "test": test_groups}, seed=seed,
                              replicates=replicates)
    return MiaResult.model_validate({**points, **{f"{name}_ci": ci for name, ci in cis.items()}})


def audit_figures(
    retain_losses: np.ndarray,
    retain_labels: np.ndarray,
    test_losses: np.ndarray,
    test_labels: np.ndarray,
    forget_losses: np.ndarray,
    forget_labels: np.ndarray,
    seed: int = 0,
) -> tuple[dict[str, float | None], list[bootstrap.Figures]]:
    """:func:`audit`'s four numbers (None where unmeasurable) and, for those measured, what their
    intervals are bootstrapped from: the SVC votes, averaged over resampled forget patients, and the
    loss attack over resampled forget and test patients. The attackers are trained here, once."""
    for losses, labels, name in (
        (retain_losses, retain_labels, "retain"),
        (test_losses, test_labels, "test"),
        (forget_losses, forget_labels, "forget"),
    ):
        if np.shape(losses) != np.shape(labels):
            shapes = f"{np.shape(losses)} and {np.shape(labels)}"
            raise ValueError(f"{name} losses and labels must have the same shape; got {shapes}")
    plain = member_votes(retain_losses, test_losses, forget_losses, seed=seed)
    balanced = member_votes(retain_losses, test_losses, forget_losses, seed=seed, balanced=True,
                            retain_labels=retain_labels, test_labels=test_labels)
    points = {"score": None if plain is None else float(plain.mean()),
              "balanced_score": None if balanced is None else float(balanced.mean()),
              "attack_auc": attack_auc(forget_losses, test_losses),
              "tpr_at_1pct_fpr": tpr_at_fpr(forget_losses, test_losses, 0.01)}
    figures = [bootstrap.Figures({name: point}, ("forget",), partial(_mean_vote, name, votes))
               for name, votes in (("score", plain), ("balanced_score", balanced))
               if votes is not None and (point := points[name]) is not None]
    auc, tpr = points["attack_auc"], points["tpr_at_1pct_fpr"]
    if auc is not None and tpr is not None:
        figures.append(bootstrap.Figures({"attack_auc": auc, "tpr_at_1pct_fpr": tpr}, ("forget", "test"),
                                         LossAttack.of(forget_losses, test_losses)))
    return points, figures


def _mean_vote(name: str, votes: np.ndarray, draws: Mapping[bootstrap.Side, bootstrap.Draw]) -> dict[str, np.ndarray]:
    return {name: bootstrap.weighted_mean(votes, draws["forget"])}


def _losses(values: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name} losses must be a 1-D array of per-sample losses; got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} losses hold non-finite values (NaN or inf)")
    return x


def _subsample(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Sorted indices of ``min(n, k)`` of ``range(n)``, drawn without replacement."""
    return np.arange(n) if k >= n else np.sort(rng.choice(n, size=k, replace=False))


def _balanced_indices(
    rng: np.random.Generator,
    n_retain: int,
    n_test: int,
    retain_labels: np.ndarray | None,
    test_labels: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Retain and test indices with equal counts per label (one group without labels)."""
    if retain_labels is None or test_labels is None:
        groups = [(np.arange(n_retain), np.arange(n_test))]
    else:
        r_lab, t_lab = np.asarray(retain_labels), np.asarray(test_labels)
        if r_lab.shape != (n_retain,) or t_lab.shape != (n_test,):
            raise ValueError("retain_labels and test_labels must be 1-D and as long as their losses")
        shared = np.intersect1d(r_lab, t_lab)
        groups = [(np.flatnonzero(r_lab == y), np.flatnonzero(t_lab == y)) for y in shared]
    counts = np.array([min(rp.size, tp.size) for rp, tp in groups], dtype=np.int64)
    if counts.sum() > MAX_TRAIN // 2:
        counts = np.maximum(1, counts * (MAX_TRAIN // 2) // counts.sum())
    member = [rp[_subsample(rng, rp.size, int(k))] for (rp, _), k in zip(groups, counts, strict=True)]
    non_member = [tp[_subsample(rng, tp.size, int(k))] for (_, tp), k in zip(groups, counts, strict=True)]
    empty = np.zeros(0, dtype=np.int64)
    return np.concatenate([empty, *member]), np.concatenate([empty, *non_member])

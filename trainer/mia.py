"""The membership-inference audit (FORGET_MI.md §5, docs/audit.md) of one model, from its image-head logits.

- ``score``: the paper's MIA. An SVC (RBF, C=3, gamma="auto") learns to separate per-sample losses of
  retain rows (member) from those of the validation patients V (non-member) on a class-balanced sample
  with as many members as non-members of each class (at most :data:`MAX_TRAIN` rows in all, drawn with
  the seed), so it does not depend on the retain size or the label mix; the score is the fraction of
  forget samples it labels member. Kept for comparison with the paper: it is not monotone in the loss.
- the threshold attacks of :mod:`~forgetmi_trainer.attacks`, forget (D_f) against the test patients T:
  the loss attack (signed and two-sided AUC, TPR at 1 % and 5 % FPR), the label-free logit-norm attack
  and the loss attack per patient;
- with reference statistics, offline LiRA (:mod:`~forgetmi_trainer.lira`), per sample and per patient.

Each figure's 95 % interval comes from the patient bootstrap (:mod:`~forgetmi_trainer.bootstrap`): the
threshold attacks resample the forget and the test patients; the SVC score keeps the attacker trained
once per model and resamples the forget patients only (its interval says how much the score depends on
which patients were forgotten, at the cost of one weighted mean per replicate instead of one SVC fit).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Protocol

import numpy as np
from sklearn.svm import SVC

from forgetmi_trainer import attacks, bootstrap, lira

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
    validation_losses: np.ndarray,
    forget_losses: np.ndarray,
    seed: int = 0,
    *,
    retain_labels: np.ndarray | None = None,
    validation_labels: np.ndarray | None = None,
) -> float | None:
    """Fraction of forget samples labelled member by an SVC trained on retain (member) vs validation
    (non-member) losses, (N,) arrays each. The SVC sees a class-balanced 1:1 sample: for each class label
    y present in both sets (when both label arrays are given; otherwise one group), ``min(#retain_y,
    #validation_y)`` rows drawn from *each* side, scaled down to at most ``MAX_TRAIN // 2`` per side. It
    then sees neither a membership prior nor a label-mix difference, only how the losses of seen and
    unseen samples of one class differ. None when any set is empty or the labelled sets share no label."""
    votes = member_votes(retain_losses, validation_losses, forget_losses, seed,
                         retain_labels=retain_labels, validation_labels=validation_labels)
    return None if votes is None else float(votes.mean())


def member_votes(
    retain_losses: np.ndarray,
    validation_losses: np.ndarray,
    forget_losses: np.ndarray,
    seed: int = 0,
    *,
    retain_labels: np.ndarray | None = None,
    validation_labels: np.ndarray | None = None,
) -> np.ndarray | None:
    """The attacker of :func:`paper_score` (same arguments), trained once: its verdict on each forget
    sample, (Nf,) float64, 1.0 = member; None where :func:`paper_score` is None."""
    r, v = _losses(retain_losses, "retain"), _losses(validation_losses, "validation")
    f = _losses(forget_losses, "forget")
    if r.size == 0 or v.size == 0 or f.size == 0:
        return None
    rng = np.random.default_rng(seed)
    member, non_member = _balanced_indices(rng, r.size, v.size, retain_labels, validation_labels)
    if member.size == 0:
        return None
    r, v = r[member], v[non_member]
    features = np.concatenate([r, v])[:, None]
    membership = np.concatenate([np.ones(r.size), np.zeros(v.size)])
    svc = SVC(kernel="rbf", C=3, gamma="auto", random_state=seed)
    svc.fit(features, membership)
    return (svc.predict(f[:, None]) == 1).astype(np.float64)


class Split(Protocol):
    """One scored split (``evaluate.Scored``): image-head logits (N, C), class indices (N,), patient codes (N,)."""

    logits: np.ndarray
    labels: np.ndarray
    groups: np.ndarray


Points = dict[str, float | None]


def audit_figures(forget: Split, retain: Split, test: Split, validation: Split, *, seed: int,
                  references: lira.LiraInputs | None = None) -> tuple[Points, list[bootstrap.Figures]]:
    """Every MIA figure of one model (None where unmeasurable; the LiRA ones without ``references``) and,
    for those measured, what their intervals are bootstrapped from. The SVC is trained here, once."""
    lf, lr, lt, lv = (per_sample_losses(s.logits, s.labels) for s in (forget, retain, test, validation))
    points, figures = _paper(lr, lv, lf, seed, retain.labels, validation.labels)
    by_sample = attacks.patient_max
    runs = [
        (attacks.LOSS, -lf, -lt, False),
        (attacks.LOGIT_NORM, attacks.logit_norms(forget.logits), attacks.logit_norms(test.logits), False),
        (attacks.PATIENT_LOSS, by_sample(-lf, forget.groups), by_sample(-lt, test.groups), True),
    ]
    if references is not None:
        sf, st = _lira_scores(references, forget, test)
        runs += [(attacks.LIRA, sf, st, False),
                 (attacks.PATIENT_LIRA, by_sample(sf, forget.groups), by_sample(st, test.groups), True)]
    else:
        points.update(dict.fromkeys((*attacks.LIRA.all(), *attacks.PATIENT_LIRA.all())))
    for names, f, t, per_patient in runs:
        attack_points, attack_figures = attacks.figures(names, f, t, per_patient=per_patient)
        points.update(attack_points)
        figures += attack_figures
    return points, figures


def _paper(retain: np.ndarray, validation: np.ndarray, forget: np.ndarray, seed: int, retain_labels: np.ndarray,
           validation_labels: np.ndarray) -> tuple[Points, list[bootstrap.Figures]]:
    votes = member_votes(retain, validation, forget, seed, retain_labels=retain_labels,
                         validation_labels=validation_labels)
    if votes is None:
        return {"score": None}, []
    score = float(votes.mean())
    return {"score": score}, [bootstrap.Figures({"score": score}, ("forget",), partial(_mean_vote, votes))]


def _lira_scores(references: lira.LiraInputs, forget: Split, test: Split) -> tuple[np.ndarray, np.ndarray]:
    for name, stats, split in (("forget", references.forget, forget), ("test", references.test, test)):
        if stats.samples != np.shape(split.labels)[0]:
            raise ValueError(f"lira.{name} holds {stats.samples} rows but the {name} split has "
                             f"{np.shape(split.labels)[0]} samples; the reference statistics must be aligned with it")
    phi_forget = lira.confidence(forget.logits, forget.labels)
    return lira.scores(references, phi_forget, lira.confidence(test.logits, test.labels))


def _mean_vote(votes: np.ndarray, draws: Mapping[bootstrap.Side, bootstrap.Draw]) -> dict[str, np.ndarray]:
    return {"score": bootstrap.weighted_mean(votes, draws["forget"])}


def _losses(values: np.ndarray, name: str) -> np.ndarray:
    return attacks.per_sample(values, f"{name} losses")


def _subsample(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Sorted indices of ``min(n, k)`` of ``range(n)``, drawn without replacement."""
    return np.arange(n) if k >= n else np.sort(rng.choice(n, size=k, replace=False))


def _balanced_indices(
    rng: np.random.Generator,
    n_retain: int,
    n_validation: int,
    retain_labels: np.ndarray | None,
    validation_labels: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Retain and validation indices with equal counts per label (one group without labels)."""
    if retain_labels is None or validation_labels is None:
        groups = [(np.arange(n_retain), np.arange(n_validation))]
    else:
        r_lab, t_lab = np.asarray(retain_labels), np.asarray(validation_labels)
        if r_lab.shape != (n_retain,) or t_lab.shape != (n_validation,):
            raise ValueError("retain_labels and validation_labels must be 1-D and as long as their losses")
        shared = np.intersect1d(r_lab, t_lab)
        groups = [(np.flatnonzero(r_lab == y), np.flatnonzero(t_lab == y)) for y in shared]
    counts = np.array([min(rp.size, tp.size) for rp, tp in groups], dtype=np.int64)
    if counts.sum() > MAX_TRAIN // 2:
        counts = np.maximum(1, counts * (MAX_TRAIN // 2) // counts.sum())
    member = [rp[_subsample(rng, rp.size, int(k))] for (rp, _), k in zip(groups, counts, strict=True)]
    non_member = [tp[_subsample(rng, tp.size, int(k))] for (_, tp), k in zip(groups, counts, strict=True)]
    empty = np.zeros(0, dtype=np.int64)
    return np.concatenate([empty, *member]), np.concatenate([empty, *non_member])

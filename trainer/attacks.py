"""Threshold membership attacks: forget (D_f, positive) against the test patients (T, negative), each
sample scored so that a higher score looks more like a member (docs/audit.md, "The attacks").

An attack's figures are its **signed** ROC AUC (> 0.5: the forgotten look more seen than the never-seen;
< 0.5: less, i.e. over-forgotten), its **two-sided** AUC ``0.5 + |signed - 0.5|`` (how far from "cannot
tell", in either direction) and its TPR at a low FPR (member iff score >= a threshold whose FPR on T is at
most the target, no interpolation). A per-patient attack scores each patient by the maximum of its
samples' scores (a patient is as exposed as its most exposed sample) and ranks patients.

:class:`ThresholdAttack` gives the replicates of all of an attack's figures for the patient bootstrap of
:mod:`~forgetmi_trainer.bootstrap`; the two-sided interval is taken from the two-sided replicates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from forgetmi_trainer import bootstrap


@dataclass(frozen=True)
class Names:
    """The report fields of one attack's figures: the two-sided AUC, the signed AUC (None: not reported)
    and ``(field, fpr)`` for each TPR reported."""

    two_sided: str
    signed: str | None = None
    tprs: tuple[tuple[str, float], ...] = ()

    def all(self) -> tuple[str, ...]:
        signed = () if self.signed is None else (self.signed,)
        return (self.two_sided, *signed, *(name for name, _ in self.tprs))


LOSS = Names("attack_auc", "attack_auc_signed", (("tpr_at_1pct_fpr", 0.01), ("tpr_at_5pct_fpr", 0.05)))
LOGIT_NORM = Names("logit_norm_auc", "logit_norm_auc_signed")
PATIENT_LOSS = Names("patient_attack_auc")
LIRA = Names("lira_auc", "lira_auc_signed", (("lira_tpr_at_1pct_fpr", 0.01), ("lira_tpr_at_5pct_fpr", 0.05)))
PATIENT_LIRA = Names("patient_lira_auc")


def two_sided(auc: float | np.ndarray) -> float | np.ndarray:
    """``0.5 + |auc - 0.5|``: 0.5 = no signal, 1.0 = perfect separation in either direction (NaN stays NaN)."""
    return 0.5 + np.abs(auc - 0.5)


def auc(member_scores: np.ndarray, non_member_scores: np.ndarray) -> float | None:
    """Signed ROC AUC of members (positive) vs non-members scored higher = more member-like, ties half;
    None when either set is empty."""
    m, n = _scores(member_scores, "member"), _scores(non_member_scores, "non-member")
    if m.size == 0 or n.size == 0:
        return None
    return float(roc_auc_score(np.r_[np.ones(m.size), np.zeros(n.size)], np.r_[m, n]))


def tpr_at_fpr(member_scores: np.ndarray, non_member_scores: np.ndarray, fpr: float) -> float | None:
    """TPR of "member iff score >= threshold" at the best threshold whose FPR on the non-members is at
    most ``fpr``: no interpolation, so with fewer than ``1/fpr`` non-members only FPR = 0 is admissible.
    None when either set is empty."""
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must lie in [0, 1]; got {fpr}")
    m, n = _scores(member_scores, "member"), _scores(non_member_scores, "non-member")
    return None if m.size == 0 or n.size == 0 else _tpr(m, n, fpr)


def _tpr(members: np.ndarray, non_members: np.ndarray, fpr: float) -> float:
    labels = np.r_[np.ones(members.size), np.zeros(non_members.size)]
    fprs, tprs, _ = roc_curve(labels, np.r_[members, non_members], drop_intermediate=False)
    return float(tprs[fprs <= fpr + 1e-12].max())


def patient_max(scores: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each patient's highest sample score, (N,), (N,) codes -> (P,), patients in sorted code order (the
    order of :class:`~forgetmi_trainer.bootstrap.PatientResampler`)."""
    s, g = _scores(scores, "sample"), np.asarray(groups)
    if g.shape != s.shape:
        raise ValueError(f"scores and patient codes must have the same shape; got {s.shape} and {g.shape}")
    codes, inverse = np.unique(g, return_inverse=True)
    out = np.full(codes.size, -np.inf)
    np.maximum.at(out, inverse.reshape(-1), s)
    return out


def figures(names: Names, forget_scores: np.ndarray, test_scores: np.ndarray, *,
            per_patient: bool = False) -> tuple[dict[str, float | None], list[bootstrap.Figures]]:
    """One attack's figures (None where unmeasurable) and what their intervals are bootstrapped from.
    Scores are per sample, or per patient (:func:`patient_max`) when ``per_patient``."""
    signed = auc(forget_scores, test_scores)
    if signed is None:
        return dict.fromkeys(names.all()), []
    points: dict[str, float] = {names.two_sided: float(two_sided(signed))}
    if names.signed is not None:
        points[names.signed] = signed
    f, t = _scores(forget_scores, "forget"), _scores(test_scores, "test")
    points.update({name: _tpr(f, t, fpr) for name, fpr in names.tprs})
    attack = ThresholdAttack.of(names, f, t, per_patient=per_patient)
    return dict(points), [bootstrap.Figures(points, ("forget", "test"), attack)]


@dataclass(frozen=True)
class ThresholdAttack:
    """An attack's figures for replicate weights of the forget (positive) and test (negative) samples, or
    patients when ``per_patient``, ranked once by score."""

    names: Names
    ranked: bootstrap.Ranked
    forget_below_run: np.ndarray
    per_patient: bool = False

    @classmethod
    def of(cls, names: Names, forget_scores: np.ndarray, test_scores: np.ndarray, *,
           per_patient: bool = False) -> ThresholdAttack:
        f, t = _scores(forget_scores, "forget"), _scores(test_scores, "test")
        ranked = bootstrap.Ranked.of(np.r_[f, t], np.r_[np.ones(f.size, bool), np.zeros(t.size, bool)])
        return cls(names, ranked, np.searchsorted(ranked.positives, ranked.run_starts), per_patient)

    def __call__(self, draws: Mapping[bootstrap.Side, bootstrap.Draw]) -> dict[str, np.ndarray]:
        """Every figure's (b,) replicates from the forget and test draws."""
        forget, test = draws["forget"], draws["test"]
        if self.per_patient:
            forget, test = forget.by_patient(), test.by_patient()
        w = forget.join(test).weights(self.ranked.order)
        c = bootstrap.cumulative(w)
        signed = self.ranked.auc(w, c)
        out: dict[str, np.ndarray] = {self.names.two_sided: np.asarray(two_sided(signed))}
        if self.names.signed is not None:
            out[self.names.signed] = signed
        if self.names.tprs:
            tprs, fprs = self.roc(w, c)
            for name, fpr in self.names.tprs:
                out[name] = np.where(fprs <= fpr + 1e-12, tprs, 0.0).max(axis=1)
        return out

    def roc(self, weights: np.ndarray, totals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(b, G) weighted TPR and FPR of "member iff score >= the start of run g" for each run of tied
        scores, from sorted weights (b, N) and their :func:`~forgetmi_trainer.bootstrap.cumulative`."""
        forget = bootstrap.cumulative(weights[:, self.ranked.positives])
        forget_below = forget[:, self.forget_below_run]  # (b, G): forget weight scored below each run
        test_below = totals[:, self.ranked.run_starts] - forget_below
        w_forget, w_test = forget[:, -1:], totals[:, -1:] - forget[:, -1:]
        return (w_forget - forget_below) / w_forget, (w_test - test_below) / w_test


def logit_norms(logits: np.ndarray) -> np.ndarray:
    """L2 norm of each sample's logits, (N, C) -> (N,): the label-free attack's score."""
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"logits must be a 2-D array (samples, classes); got shape {x.shape}")
    return np.linalg.norm(x, axis=1)


def per_sample(values: np.ndarray, what: str) -> np.ndarray:
    """``values`` as a finite (N,) float64 array, one per sample; a ValueError naming ``what`` otherwise."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array, one per sample; got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} hold non-finite values (NaN or inf)")
    return x


def _scores(values: np.ndarray, name: str) -> np.ndarray:
    return per_sample(values, f"{name} scores")

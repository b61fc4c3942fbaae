"""One model's audited figures in the report: split metrics and membership attacks, each with its interval.

Every attack compares the forget set D_f (positive) with the held-out test patients T (never the
validation patients V, which chose the checkpoint and trained the attackers: docs/audit.md, "Splits").
An AUC named ``*_signed`` is directional (> 0.5: the forgotten samples look *more* like members than
never-seen ones; < 0.5: less, i.e. over-forgotten); the plain name is its **two-sided** value
``0.5 + |signed - 0.5|`` in [0.5, 1], the one a gate reads, so forgetting too much fails like forgetting
too little.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
"""An AUC, an F1 or a fraction of samples: finite, in [0, 1]."""
Distance = Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)]
"""``1 - mean cosine``: finite, in [0, 2]."""
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
"""A duration: finite, not negative."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Interval(_Model):
    """A 95 % interval of a figure in [0, 1]: the 2.5th and 97.5th percentiles of a seeded bootstrap that
    resamples patients (with replacement, within each split), widened where needed to contain the figure
    itself, so ``low <= value <= high`` always holds (docs/audit.md)."""

    low: Fraction
    high: Fraction

    @model_validator(mode="after")
    def _ordered(self) -> Interval:
        if self.low > self.high:
            raise ValueError(f"an interval's low ({self.low}) must not exceed its high ({self.high})")
        return self


class _WithIntervals(_Model):
    """Metrics whose ``<name>_ci`` field is the 95 % interval of ``<name>``: None where the figure is None
    (or could not be resampled), and otherwise containing it."""

    @model_validator(mode="after")
    def _intervals_hold_their_figures(self) -> _WithIntervals:
        for name in type(self).model_fields:
            ci = getattr(self, name) if name.endswith("_ci") else None
            if ci is None:
                continue
            point = getattr(self, name.removesuffix("_ci"))
            if point is None:
                raise ValueError(f"{name} is set but {name.removesuffix('_ci')} is not")
            if not ci.low <= point <= ci.high:
                raise ValueError(f"{name} [{ci.low}, {ci.high}] does not contain {name.removesuffix('_ci')} {point}")
        return self


class SplitMetrics(_WithIntervals):
    """Macro one-vs-rest AUC and macro F1 of the image head on D_f and T, each in [0, 1]; None when
    unmeasurable or missing (a gate on a None metric is Inconclusive, so it never promotes). NaN, an
    infinity or a value outside [0, 1] makes the report invalid: the trainer writes None for what it
    cannot measure. ``*_f1`` averages over the classes present in the labels or the predictions
    (scikit-learn's default); ``*_f1_all_classes`` over all C classes, an absent class scoring 0."""

    forget_auc: Fraction | None = None
    forget_auc_ci: Interval | None = None
    forget_f1: Fraction | None = None
    forget_f1_ci: Interval | None = None
    forget_f1_all_classes: Fraction | None = None
    test_auc: Fraction | None = None
    test_auc_ci: Interval | None = None
    test_f1: Fraction | None = None
    test_f1_ci: Interval | None = None
    test_f1_all_classes: Fraction | None = None


class MiaResult(_WithIntervals):
    """Membership-inference results, each in [0, 1]; None when unmeasurable or missing (as for
    :class:`SplitMetrics`, anything else makes the report invalid). Per-sample figures unless named
    ``patient_*``: a patient is as exposed as its most exposed sample (the maximum of its samples'
    membership scores)."""

    score: Fraction | None = Field(default=None, description=(
        "The paper's MIA: fraction of forget samples an SVC on losses labels member, the SVC trained on a "
        "class-balanced sample of as many retain (member) as validation (non-member) rows."))
    score_ci: Interval | None = None
    attack_auc: Fraction | None = Field(default=None, description=(
        "Two-sided AUC of the loss attack, forget vs test: 0.5 + |attack_auc_signed - 0.5|; 0.5 = no signal."))
    attack_auc_ci: Interval | None = None
    attack_auc_signed: Fraction | None = Field(default=None, description=(
        "AUC of forget (positive) vs test scored by -loss; < 0.5: the forgotten look less seen than the unseen."))
    attack_auc_signed_ci: Interval | None = None
    tpr_at_1pct_fpr: Fraction | None = Field(default=None, description="Loss attack's TPR at 1 % FPR on test.")
    tpr_at_1pct_fpr_ci: Interval | None = None
    tpr_at_5pct_fpr: Fraction | None = Field(default=None, description="Loss attack's TPR at 5 % FPR on test.")
    tpr_at_5pct_fpr_ci: Interval | None = None
    logit_norm_auc: Fraction | None = Field(default=None, description=(
        "Two-sided AUC of forget vs test scored by the L2 norm of the image logits (needs no label)."))
    logit_norm_auc_ci: Interval | None = None
    logit_norm_auc_signed: Fraction | None = Field(default=None, description=(
        "AUC of forget (positive) vs test scored by the logit norm; > 0.5: forgotten samples have larger norms."))
    logit_norm_auc_signed_ci: Interval | None = None
    patient_attack_auc: Fraction | None = Field(default=None, description=(
        "Two-sided AUC of the loss attack per patient (a patient scores its lowest loss)."))
    patient_attack_auc_ci: Interval | None = None
    lira_auc: Fraction | None = Field(default=None, description=(
        "Two-sided AUC of offline LiRA (reference models), forget vs test; None without references."))
    lira_auc_ci: Interval | None = None
    lira_auc_signed: Fraction | None = None
    lira_auc_signed_ci: Interval | None = None
    lira_tpr_at_1pct_fpr: Fraction | None = None
    lira_tpr_at_1pct_fpr_ci: Interval | None = None
    lira_tpr_at_5pct_fpr: Fraction | None = None
    lira_tpr_at_5pct_fpr_ci: Interval | None = None
    patient_lira_auc: Fraction | None = Field(default=None, description=(
        "Two-sided AUC of offline LiRA per patient (a patient scores its highest LiRA score)."))
    patient_lira_auc_ci: Interval | None = None


class ModelMetrics(_Model):
    """One model's metrics; a missing group or key reads as None (unmeasured), an unknown key is rejected."""

    split: SplitMetrics = Field(default_factory=SplitMetrics)
    mia: MiaResult = Field(default_factory=MiaResult)

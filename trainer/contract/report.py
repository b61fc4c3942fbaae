"""The report: what the trainer Job hands back (``report.json``), its progress lines and summaries."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from forgetmi_trainer.contract.config import MethodName, SelectionRuleName
from forgetmi_trainer.contract.formats import SCHEMA_VERSION, SHA256_PATTERN


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
"""An AUC, an F1 or a fraction of samples: finite, in [0, 1]."""
Distance = Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)]
"""``1 - mean cosine``: finite, in [0, 2]."""
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
"""A duration: finite, not negative."""


class Artifact(_Model):
    uri: str
    sha256: str = Field(pattern=SHA256_PATTERN)


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
    """Macro one-vs-rest AUC and macro F1 of the image head, each in [0, 1]; None when unmeasurable or
    missing (a gate on a None metric is Inconclusive, so it never promotes). NaN, an infinity or a
    value outside [0, 1] makes the report invalid: the trainer writes None for what it cannot measure."""

    forget_auc: Fraction | None = None
    forget_auc_ci: Interval | None = None
    forget_f1: Fraction | None = None
    forget_f1_ci: Interval | None = None
    test_auc: Fraction | None = None
    test_auc_ci: Interval | None = None
    test_f1: Fraction | None = None
    test_f1_ci: Interval | None = None


class MiaResult(_WithIntervals):
    """Membership-inference results, each in [0, 1]; None when unmeasurable or missing (as for
    :class:`SplitMetrics`, anything else makes the report invalid)."""

    score: Fraction | None = Field(default=None, description="Paper MIA: fraction of forget samples labelled member.")
    score_ci: Interval | None = None
    balanced_score: Fraction | None = Field(default=None, description="Same, with a class-balanced attacker.")
    balanced_score_ci: Interval | None = None
    attack_auc: Fraction | None = Field(
        default=None, description="AUC of forget (positive) vs test by loss; 0.5 = no signal.")
    attack_auc_ci: Interval | None = None
    tpr_at_1pct_fpr: Fraction | None = None
    tpr_at_1pct_fpr_ci: Interval | None = None


class ModelMetrics(_Model):
    """One model's metrics; a missing group or key reads as None (unmeasured), an unknown key is rejected."""

    split: SplitMetrics = Field(default_factory=SplitMetrics)
    mia: MiaResult = Field(default_factory=MiaResult)


class Selection(_Model):
    rule: SelectionRuleName
    epoch: int = Field(ge=0)
    epochs_run: int = Field(ge=0)


class Timings(_Model):
    load_seconds: Seconds
    unlearn_seconds: Seconds
    eval_seconds: Seconds
    total_seconds: Seconds


class Environment(_Model):
    device: str
    precision: str
    torch_version: str
    transformers_version: str
    trainer_version: str


class Counts(_Model):
    subjects: int = Field(ge=0)
    forget_samples: int = Field(ge=0)
    retain_samples: int = Field(ge=0)
    test_samples: int = Field(ge=0)
    audit_retain_samples: int | None = Field(
        default=None, ge=0,
        description="Retain rows in the audit's sample (at most audit.retain_samples); None in reports written "
        "before the audit sampled the retain set.")


class Report(_Model):
    """What the trainer writes as report.json; the operator's gates read only this. Every float in it
    is finite and within its range, so a report that parses holds no number that means nothing."""

    schema_version: Literal["forgetmi.io/v1alpha1"] = SCHEMA_VERSION
    request: str
    method: MethodName
    base: Artifact
    candidate: Artifact
    candidate_version: str
    original: ModelMetrics
    unlearned: ModelMetrics
    retrained: ModelMetrics | None = None
    retrained_logit_distance: Distance | None = Field(
        default=None, description="1 - mean cos(logits_ul, logits_re) on retain data, when retrained given."
    )
    selection: Selection
    counts: Counts
    timings: Timings
    environment: Environment
    started_at: str
    finished_at: str

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


class Progress(_Model):
    """One JSON line of the progress file."""

    epoch: int = Field(ge=0)
    epochs: int = Field(ge=1)
    percent: float = Field(ge=0, le=100)
    eta_seconds: float = Field(ge=0)
    loss: float | None = None
    phase: str = "unlearn"


def summary_line(report: Report) -> str:
    """The one-line termination message of a successful run (kept well under 4 KiB)."""
    o, u = report.original, report.unlearned
    return json.dumps(
        {
            "ok": True,
            "candidate": report.candidate.sha256[:12],
            "mia": [o.mia.score, u.mia.score],
            "forgetAUC": [o.split.forget_auc, u.split.forget_auc],
            "testAUC": [o.split.test_auc, u.split.test_auc],
            "seconds": round(report.timings.total_seconds, 1),
        },
        separators=(",", ":"),
    )


COMPARISON_KEYS = ("forget_auc", "forget_f1", "test_auc", "test_f1", "mia", "mia_auc", "seconds")
Row = dict[str, float | None]


def comparison(report: Report, original_seconds: float, retrained_seconds: float) -> dict[str, Row]:
    """The demo's before/after rows ``{"original", "retrained", "forget_mi"}`` from a report with a
    retrained reference; ``seconds`` is training time for the first two, unlearning time for the last."""
    if report.retrained is None:
        raise ValueError("the report has no retrained reference to compare with")

    def row(metrics: ModelMetrics, seconds: float) -> Row:
        s, m = metrics.split, metrics.mia
        return {"forget_auc": s.forget_auc, "forget_f1": s.forget_f1, "test_auc": s.test_auc,
                "test_f1": s.test_f1, "mia": m.score, "mia_auc": m.attack_auc, "seconds": round(seconds, 2)}

    return {"original": row(report.original, original_seconds),
            "retrained": row(report.retrained, retrained_seconds),
            "forget_mi": row(report.unlearned, report.timings.unlearn_seconds)}


def format_comparison(rows: dict[str, Row]) -> str:
    """The rows of :func:`comparison` as a fixed-width table."""
    line = "{:<10} {:>10} {:>9} {:>8} {:>7} {:>6} {:>7} {:>8}"
    lines = [line.format("model", "forget AUC", "forget F1", "test AUC", "test F1", "MIA", "miaAUC", "seconds")]
    for key, label in (("original", "original"), ("retrained", "retrained"), ("forget_mi", "Forget-MI")):
        cells = ["-" if rows[key][k] is None else f"{rows[key][k]:.1f}" if k == "seconds" else f"{rows[key][k]:.3f}"
                 for k in COMPARISON_KEYS]
        lines.append(line.format(label, *cells))
    return "\n".join(lines)

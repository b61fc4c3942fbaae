"""The report: what the trainer Job hands back (``report.json``), its progress lines and summaries."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from forgetmi_trainer.contract.config import MethodName, SelectionRuleName
from forgetmi_trainer.contract.formats import SCHEMA_VERSION, SHA256_PATTERN
from forgetmi_trainer.contract.metrics import Distance, ModelMetrics, Seconds


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")




class Artifact(_Model):
    uri: str
    sha256: str = Field(pattern=SHA256_PATTERN)


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
    world_size: int = Field(default=1, ge=1, description="Processes the run was data-parallel over (torchrun).")


class Counts(_Model):
    subjects: int = Field(ge=0)
    forget_samples: int = Field(ge=0)
    retain_samples: int = Field(ge=0)
    test_samples: int = Field(ge=0)
    audit_retain_samples: int | None = Field(
        default=None, ge=0,
        description="Retain rows in the audit's sample (at most audit.retain_samples); None in reports written "
        "before the audit sampled the retain set.")
    previously_forgotten: int = Field(
        default=0, ge=0, description="Manifest rows of patients of earlier promoted erasures (the forget ledger) "
        "left out of the retain set; rows of such patients that this request forgets again count as forget.")
    previously_forgotten_subjects: int = Field(
        default=0, ge=0, description="Patients of the ledger found in the manifest (those this request names too "
        "included).")


class SplitInfo(_Model):
    """The non-member patients' split into V (validation: the selection rule, the attackers' non-members,
    any tuning) and T (test: every reported and gated figure). ``digest`` is the sha256 of the V and T
    sample IDs (docs/audit.md, "Splits"); ``source`` says whether V came from ``split=val`` rows of the
    manifest or was drawn from its test patients (by patient, stratified by class, seeded by the
    manifest's digest, so one manifest version always splits the same way)."""

    digest: str = Field(pattern=SHA256_PATTERN)
    source: Literal["manifest", "derived"]
    validation_patients: int = Field(ge=0)
    validation_samples: int = Field(ge=0)
    test_patients: int = Field(ge=0)
    test_samples: int = Field(ge=0)


class EmbeddingScale(_Model):
    """The original model's embedding scale, measured at the start of the run (docs/methods.md, "Strength"):
    the median L2 distance between the image embeddings of two different retain samples, and the absolute
    bounds it made of the method's relative ones."""

    median_distance: float = Field(ge=0, allow_inf_nan=False)
    pairs: int = Field(ge=0, description="Pairs of distinct retain samples the median was taken over.")
    push_bound: float | None = Field(default=None, ge=0, allow_inf_nan=False,
                                     description="Forget-MI's bound m, absolute: method.push_bound × median_distance.")


class ReferencesInfo(_Model):
    """The reference models behind LiRA (docs/audit.md, "Reference models"): ``used`` when the version's
    references were read and matched the manifest; ``missing`` or ``stale`` otherwise (LiRA figures None)."""

    status: Literal["used", "missing", "stale"]
    uri: str
    k: int | None = Field(default=None, ge=1)
    message: str | None = None


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
    splits: SplitInfo | None = Field(default=None, description="V/T split; None in reports from before it.")
    embedding_scale: EmbeddingScale | None = None
    references: ReferencesInfo | None = None
    original_cached: bool = Field(default=False, description=(
        "True when the original's test and validation figures were read from the registry's audit cache."))
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


COMPARISON_KEYS = ("forget_auc", "forget_f1", "test_auc", "test_f1", "mia", "attack_auc", "logit_norm_auc", "seconds")
Row = dict[str, float | None]


def comparison(report: Report, original_seconds: float, retrained_seconds: float) -> dict[str, Row]:
    """The demo's before/after rows ``{"original", "retrained", "forget_mi"}`` from a report with a
    retrained reference; ``seconds`` is training time for the first two, unlearning time for the last."""
    if report.retrained is None:
        raise ValueError("the report has no retrained reference to compare with")

    def row(metrics: ModelMetrics, seconds: float) -> Row:
        s, m = metrics.split, metrics.mia
        return {"forget_auc": s.forget_auc, "forget_f1": s.forget_f1, "test_auc": s.test_auc,
                "test_f1": s.test_f1, "mia": m.score, "attack_auc": m.attack_auc, "logit_norm_auc": m.logit_norm_auc,
                "seconds": round(seconds, 2)}

    return {"original": row(report.original, original_seconds),
            "retrained": row(report.retrained, retrained_seconds),
            "forget_mi": row(report.unlearned, report.timings.unlearn_seconds)}


def format_comparison(rows: dict[str, Row]) -> str:
    """The rows of :func:`comparison` as a fixed-width table."""
    line = "{:<10} {:>10} {:>9} {:>8} {:>7} {:>6} {:>10} {:>9} {:>8}"
    lines = [line.format("model", "forget AUC", "forget F1", "test AUC", "test F1", "MIA", "attack AUC", "norm AUC",
                         "seconds")]
    for key, label in (("original", "original"), ("retrained", "retrained"), ("forget_mi", "Forget-MI")):
        cells = ["-" if rows[key][k] is None else f"{rows[key][k]:.1f}" if k == "seconds" else f"{rows[key][k]:.3f}"
                 for k in COMPARISON_KEYS]
        lines.append(line.format(label, *cells))
    return "\n".join(lines)

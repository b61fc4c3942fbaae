"""The contract between the operator and the trainer Job (torch-free).

The operator writes a :class:`JobConfig` into a ConfigMap; the trainer reads it with
``python -m forgetmi_trainer run --config job.json``, writes the candidate model and a
:class:`Report` (``report.json``), and a one-line summary to the termination-message path.
Both sides import only this module, so the operator image never needs torch.
"""

from __future__ import annotations

import json
import re
from enum import IntEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = "forgetmi.io/v1alpha1"
URI_PATTERN = r"^(s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?|file:///.*)$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$"

MethodName = Literal["forget-mi", "retrain", "finetune", "neggrad-plus", "scrub"]
PresetName = Literal["equal", "multimodal", "unimodal", "retention"]
SelectionRuleName = Literal["FixedEpoch", "ForgetReachesTest"]


class ExitCode(IntEnum):
    """Exit codes of ``python -m forgetmi_trainer run`` (the Job's podFailurePolicy uses 2, 3)."""

    OK = 0
    BAD_CONFIG = 2
    STORAGE_OR_INPUT = 3
    DIVERGED = 4


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class ModelRef(_Model):
    """A model version in the registry: ``<registry_uri>/<name>/versions/<version>/``."""

    registry_uri: str = Field(pattern=URI_PATTERN, description="s3:// or file:// root of the registry.")
    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9\-_.]{0,61}[a-z0-9])?$")
    version: str = Field(pattern=VERSION_PATTERN)

    @property
    def uri(self) -> str:
        return f"{self.registry_uri.rstrip('/')}/{self.name}/versions/{self.version}"


class ForgetSubjects(_Model):
    """Where the patient IDs to forget are read from: exactly one of ``file`` or ``uri``.

    ``file`` is a path inside the container (the operator mounts the referenced Secret key
    there); ``uri`` is a storage object. The file holds one subject ID per line (or a JSON
    list). IDs never appear in the config itself.
    """

    file: str | None = None
    uri: str | None = Field(default=None, pattern=URI_PATTERN)
    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)

    @model_validator(mode="after")
    def _exactly_one(self) -> ForgetSubjects:
        if (self.file is None) == (self.uri is None):
            raise ValueError("exactly one of forget.file or forget.uri must be set")
        return self


class LossWeights(_Model):
    """Weights of the four Forget-MI terms; normalised to sum to 1 before use."""

    uu: float = Field(ge=0, description="Unimodal unlearning (push).")
    mu: float = Field(ge=0, description="Multimodal unlearning (push).")
    ur: float = Field(ge=0, description="Unimodal retention (pull).")
    mr: float = Field(ge=0, description="Multimodal retention (pull).")

    @model_validator(mode="after")
    def _positive_sum(self) -> LossWeights:
        if self.uu + self.mu + self.ur + self.mr <= 0:
            raise ValueError("method.weights must not all be zero")
        return self


class NoiseConfig(_Model):
    image_mean: float = Field(default=0.0, ge=-1.0, le=1.0)
    image_std: float = Field(default=0.1, ge=0.0, le=1.0)
    text_level: float = Field(default=0.5, ge=0.0, le=1.0)


class SelectionRule(_Model):
    """Checkpoint selection: a fixed epoch (default: the last), or the first epoch whose
    forget-set loss reaches the test-set loss (falls back to the last epoch)."""

    rule: SelectionRuleName = "FixedEpoch"
    epoch: int | None = Field(default=None, ge=1)


class MethodConfig(_Model):
    name: MethodName = "forget-mi"
    preset: PresetName = "unimodal"
    weights: LossWeights | None = None
    noise: NoiseConfig = NoiseConfig()
    epochs: int = Field(default=30, ge=1, le=1000)
    learning_rate: float = Field(default=1e-3, gt=0, le=1.0)
    batch_size: int = Field(default=16, ge=1, le=4096)
    push_bound: float | None = Field(default=None, gt=0, description="Bound m of relu(m - d) on push terms.")
    sign: Literal["push", "pull"] = Field(
        default="push", description="'pull' flips the unlearning terms (a sanity check: forgets nothing)."
    )
    selection: SelectionRule = SelectionRule()
    options: dict[str, float] = Field(default_factory=dict, description="Method-specific settings.")


class JobConfig(_Model):
    """Everything one trainer run needs. Written by the operator, read by the Job."""

    schema_version: Literal["forgetmi.io/v1alpha1"] = SCHEMA_VERSION
    request: str = Field(default="local", description="namespace/name of the UnlearnRequest, for logs.")
    model: ModelRef
    manifest_uri: str = Field(pattern=URI_PATTERN)
    forget: ForgetSubjects
    method: MethodConfig = MethodConfig()
    output_uri: str = Field(pattern=URI_PATTERN, description="Where the candidate model directory is written.")
    report_uri: str | None = Field(
        default=None, pattern=URI_PATTERN, description="report.json location; default <output_uri>/report.json."
    )
    candidate_version: str = Field(pattern=VERSION_PATTERN)
    retrained: ModelRef | None = Field(default=None, description="A retrained reference model to compare with.")
    seed: int = Field(default=0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    progress_path: str | None = Field(default=None, description="File that receives JSON-lines progress.")
    progress_uri: str | None = Field(
        default=None, pattern=URI_PATTERN, description="Storage object overwritten with the latest progress line."
    )
    termination_message_path: str | None = None

    @property
    def resolved_report_uri(self) -> str:
        return self.report_uri or f"{self.output_uri.rstrip('/')}/report.json"

    @classmethod
    def from_file(cls, path: str | Path) -> JobConfig:
        return cls.model_validate_json(Path(path).read_text())


class Artifact(_Model):
    uri: str
    sha256: str = Field(pattern=SHA256_PATTERN)


class SplitMetrics(_Model):
    """Macro one-vs-rest AUC and macro F1 of the image head; None when unmeasurable or missing
    (a gate on a None metric is Inconclusive, so it never promotes)."""

    forget_auc: float | None = None
    forget_f1: float | None = None
    test_auc: float | None = None
    test_f1: float | None = None


class MiaResult(_Model):
    """Membership-inference results; None when unmeasurable or missing."""

    score: float | None = Field(default=None, description="Paper MIA: fraction of forget samples labelled member.")
    balanced_score: float | None = Field(default=None, description="Same, with a class-balanced attacker.")
    attack_auc: float | None = Field(
        default=None, description="AUC of forget (positive) vs test by loss; 0.5 = no signal.")
    tpr_at_1pct_fpr: float | None = None


class ModelMetrics(_Model):
    """One model's metrics; a missing group or key reads as None (unmeasured), an unknown key is rejected."""

    split: SplitMetrics = Field(default_factory=SplitMetrics)
    mia: MiaResult = Field(default_factory=MiaResult)


class Selection(_Model):
    rule: SelectionRuleName
    epoch: int = Field(ge=0)
    epochs_run: int = Field(ge=0)


class Timings(_Model):
    load_seconds: float = Field(ge=0)
    unlearn_seconds: float = Field(ge=0)
    eval_seconds: float = Field(ge=0)
    total_seconds: float = Field(ge=0)


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


class Report(_Model):
    """What the trainer writes as report.json; the operator's gates read only this."""

    schema_version: Literal["forgetmi.io/v1alpha1"] = SCHEMA_VERSION
    request: str
    method: MethodName
    base: Artifact
    candidate: Artifact
    candidate_version: str
    original: ModelMetrics
    unlearned: ModelMetrics
    retrained: ModelMetrics | None = None
    retrained_logit_distance: float | None = Field(
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


def parse_subjects(text: str) -> list[str]:
    """Subject IDs from a file's text: a JSON list of strings, or one ID per line
    (blank lines and ``#`` comments ignored). Duplicates are dropped, order kept."""
    stripped = text.strip()
    if stripped.startswith("["):
        raw = json.loads(stripped)
        if not isinstance(raw, list) or not all(isinstance(x, str | int) for x in raw):
            raise ValueError("the subjects file must hold a JSON list of strings")
        items = [str(x).strip() for x in raw]
    else:
        items = [line.split("#", 1)[0].strip() for line in stripped.splitlines()]
    seen: dict[str, None] = {}
    for item in items:
        if item:
            if not re.fullmatch(r"[A-Za-z0-9._:\-]{1,128}", item):
                raise ValueError("the subjects file holds an ID with characters outside [A-Za-z0-9._:-]")
            seen.setdefault(item, None)
    return list(seen)

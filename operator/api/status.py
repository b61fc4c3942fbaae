"""The UnlearnRequest status as pydantic models (mirrors the CRD's status schema).

The operator writes status as camelCase dicts (merge patches); these models read them back, e.g.
``forgetmi run``'s result and the tests.
"""

from __future__ import annotations

from pydantic import Field

from forgetmi_operator.api.patterns import (
    CONDITION_REASON_PATTERN,
    Bound,
    Camel,
    Comparator,
    ConditionStatus,
    ConditionType,
    GateMetric,
    GateResult,
    Phase,
    Reference,
)


class Condition(Camel):
    """The standard ``metav1.Condition`` shape."""

    type: ConditionType
    status: ConditionStatus
    reason: str = Field(min_length=1, max_length=1024, pattern=CONDITION_REASON_PATTERN)
    message: str = Field(max_length=32768)
    last_transition_time: str
    observed_generation: int | None = Field(default=None, ge=0)


class ModelVersionStatus(Camel):
    version: str
    uri: str
    sha256: str | None = None


class ProgressStatus(Camel):
    epoch: int = Field(ge=0)
    epochs: int | None = Field(default=None, ge=1)
    percent: float = Field(ge=0, le=100)
    eta_seconds: float | None = Field(default=None, ge=0)


class MetricPair(Camel):
    original: float | None = None
    unlearned: float | None = None
    retrained: float | None = Field(default=None, description="Set when the request names spec.audit.retrainedVersion.")


class MetricsStatus(Camel):
    forget_auc: MetricPair = Field(default_factory=MetricPair, alias="forgetAUC")
    forget_f1: MetricPair = Field(default_factory=MetricPair, alias="forgetF1")
    test_auc: MetricPair = Field(default_factory=MetricPair, alias="testAUC")
    test_f1: MetricPair = Field(default_factory=MetricPair, alias="testF1")
    mia: MetricPair = Field(default_factory=MetricPair)
    mia_auc: MetricPair = Field(default_factory=MetricPair, alias="miaAUC")
    attack_auc: MetricPair = Field(default_factory=MetricPair, alias="attackAUC")
    logit_norm_auc: MetricPair = Field(default_factory=MetricPair, alias="logitNormAUC")
    lira_tpr5: MetricPair = Field(default_factory=MetricPair, alias="liraTPR5")
    lira_auc: MetricPair = Field(default_factory=MetricPair, alias="liraAUC")


class GateStatus(Camel):
    metric: GateMetric
    comparator: Comparator
    reference: Reference
    bound: Bound = "point"
    value: float | None = None
    threshold: float
    result: GateResult
    message: str


class ArtifactStatus(Camel):
    uri: str
    sha256: str


class RequestRefStatus(Camel):
    name: str
    uid: str


class BatchStatus(Camel):
    """The batch of coalesced requests this request runs in (docs/coalescing.md): while it gathers,
    ``key`` and ``closesAt``; once its Job is created, the leader (whose Job, report and candidate the
    batch shares), its requests and the size of the union of their forget lists."""

    key: str = Field(pattern=r"^[0-9a-f]{64}$")
    closes_at: str
    leader: RequestRefStatus | None = None
    requests: list[RequestRefStatus] = Field(default_factory=list)
    subject_count: int | None = Field(default=None, ge=0)
    job_name: str | None = None


class UnlearnRequestStatus(Camel):
    phase: Phase | None = None
    observed_generation: int | None = Field(default=None, ge=0)
    conditions: list[Condition] = Field(default_factory=list)
    base_model: ModelVersionStatus | None = None
    candidate_model: ModelVersionStatus | None = None
    job_name: str | None = None
    attempts: int = Field(default=0, ge=0)
    rebases: int | None = Field(default=None, ge=0, description=(
        "Times the request ran again on the version its alias was moved on to (docs/rebase.md)."))
    progress: ProgressStatus | None = None
    metrics: MetricsStatus | None = None
    mia: float | None = Field(default=None, description="Unlearned MIA (printer column).")
    attack_auc: float | None = Field(default=None, description="Unlearned two-sided attack AUC (printer column).")
    test_auc_drop: float | None = Field(default=None, description="Original − unlearned test AUC (printer column).")
    gates: list[GateStatus] = Field(default_factory=list)
    report: ArtifactStatus | None = None
    receipt: ArtifactStatus | None = None
    subject_count: int | None = Field(default=None, ge=0)
    subjects_secret_name: str | None = Field(default=None, max_length=253)
    batch: BatchStatus | None = None
    start_time: str | None = None
    completion_time: str | None = None

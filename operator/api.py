"""Pydantic models of the UnlearnRequest spec and status (mirrors crds/…yaml exactly).

Field names are the CRD's camelCase names (aliases); Python code uses snake_case
attributes. ``tests/operator/test_api_crd.py`` keeps this module and the CRD in agreement
(every field, enum, bound and default) and ``tests/operator/test_cel.py`` checks that the
validators below reject what the CRD's CEL rules reject, with the same message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import InitErrorDetails, PydanticCustomError

from forgetmi_trainer.contract import SHA256_PATTERN, URI_PATTERN

GateMetric = Literal["mia", "miaAUC", "forgetAUC", "forgetF1", "testAUC", "testF1"]
Comparator = Literal["atMost", "atLeast", "maxDrop", "minDrop"]
Reference = Literal["absolute", "original"]
RolloutMode = Literal["Automatic", "Manual", "DryRun"]
OnGateFailure = Literal["Hold", "Retrain"]
Phase = Literal["Pending", "Running", "Evaluating", "Promoted", "Held", "Failed"]
GateResult = Literal["Passed", "Failed", "Inconclusive"]
ConditionType = Literal["Accepted", "Unlearned", "GatesPassed", "Promoted"]
ConditionStatus = Literal["True", "False", "Unknown"]
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
URI_MAX_LENGTH = 2048
GPU_RESOURCE = "nvidia.com/gpu"
DROP_COMPARATORS = ("maxDrop", "minDrop")
APPROVAL_ANNOTATION = "unlearning.forgetmi.io/approved"
INT64_MAX = 2**63 - 1
OBJECT_URI_PATTERN = r"^(s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/.+|file:///.*)$"
"""An object (not a bucket root): the contract's URI pattern with a key required after an s3 bucket."""
OBJECT_URI_MESSAGE = "must be an s3://bucket/key or file:///... URI: an object, with a key after the bucket"
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LABEL_KEY_CHARS = (r"([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                   r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
LABEL_KEY_LENGTHS = r"([^/]{1,253}/)?[^/]{1,63}"
"""A label key (Kubernetes qualified name) is both: the characters, and a prefix ≤ 253 and a name ≤ 63."""
LABEL_KEY_MESSAGE = ("must be a label key: an optional DNS subdomain prefix and '/', then a name of at most 63 "
                     "letters, digits, '-', '_' and '.' that starts and ends with a letter or digit")
IMAGE_PATTERN = r"^[!-~]*$"
"""An image reference is printable ASCII without whitespace (the kubelet cannot pull anything else)."""


def is_label_key(key: str) -> bool:
    """A valid label (or taint) key, as the CRD's rule and the API server check it."""
    return bool(re.fullmatch(LABEL_KEY_CHARS, key) and re.fullmatch(LABEL_KEY_LENGTHS, key))


def _label_key(key: str) -> str:
    if key and not is_label_key(key):
        raise ValueError(LABEL_KEY_MESSAGE)
    return key


def _raise_at(model: BaseModel, problems: Sequence[tuple[tuple[str, ...], Any, str]]) -> None:
    """Raise ``(loc, value, message)`` problems at fields below ``model``, as a CRD rule's ``fieldPath`` does."""
    if problems:
        raise ValidationError.from_exception_data(type(model).__name__, [
            InitErrorDetails(type=PydanticCustomError("value_error", "Value error, {error}", {"error": message}),
                             loc=loc, input=value)
            for loc, value, message in problems])


def _int_to_str(value: Any) -> Any:
    """Kubernetes quantities are int-or-string (``cpu: 2``); the models keep them as strings."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise ValueError("must fit in a 64-bit integer")
        return str(value)
    return value


Uri = Annotated[str, Field(pattern=URI_PATTERN, max_length=URI_MAX_LENGTH)]
ObjectUri = Annotated[str, Field(pattern=OBJECT_URI_PATTERN, max_length=URI_MAX_LENGTH)]
Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=64), BeforeValidator(_int_to_str)]


class _Camel(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class _Spec(_Camel):
    """Spec models are strict like the API server: ``"30"`` is not an integer, ``"yes"`` not a boolean.
    Any mapping is accepted as an object (Kopf hands handlers a read-only ``Spec`` view)."""

    model_config = ConfigDict(strict=True)

    @model_validator(mode="before")
    @classmethod
    def _any_mapping(cls, data: Any) -> Any:
        return dict(data) if isinstance(data, Mapping) and not isinstance(data, dict) else data


class ModelSpec(_Spec):
    registry_uri: Uri = Field(description="s3:// or file:// root of the model registry.")
    name: str = Field(pattern=DNS_LABEL, max_length=63, description="Model name in the registry.")
    alias: str = Field(default="production", pattern=DNS_LABEL, max_length=63,
                       description="Alias resolved to a version at start and pinned in status.")


class DataSpec(_Spec):
    manifest_uri: ObjectUri = Field(description="Dataset manifest (CSV or Parquet).")


class SecretKeyRef(_Spec):
    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253, description="Secret in the request's namespace.")
    key: str = Field(pattern=SECRET_KEY_PATTERN, max_length=253, description="Key within the Secret.")


class ForgetSpec(_Spec):
    subjects_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the patient IDs (one per line or a JSON list).")
    subjects_uri: ObjectUri | None = Field(default=None, description="Storage object holding the patient IDs.")
    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN, max_length=64,
                               description="Expected sha256 of the subjectsUri object.")

    @model_validator(mode="after")
    def _exactly_one(self) -> ForgetSpec:
        if (self.subjects_secret_ref is None) == (self.subjects_uri is None):
            raise ValueError("set exactly one of subjectsSecretRef or subjectsUri")
        if self.sha256 is not None and self.subjects_uri is None:
            raise ValueError("sha256 applies only to subjectsUri")
        return self


class WeightsSpec(_Spec):
    uu: float = Field(ge=0, le=1, description="Unimodal unlearning weight.")
    mu: float = Field(ge=0, le=1, description="Multimodal unlearning weight.")
    ur: float = Field(ge=0, le=1, description="Unimodal retention weight.")
    mr: float = Field(ge=0, le=1, description="Multimodal retention weight.")

    @model_validator(mode="after")
    def _positive_sum(self) -> WeightsSpec:
        if self.uu + self.mu + self.ur + self.mr <= 0:
            raise ValueError("at least one weight must be greater than 0")
        return self


class NoiseSpec(_Spec):
    image_mean: float = Field(default=0.0, ge=-1, le=1, description="Mean of the image Gaussian noise.")
    image_std: float = Field(default=0.1, ge=0, le=1, description="Std of the image Gaussian noise.")
    text_level: float = Field(default=0.5, ge=0, le=1, description="Word/char noise probability.")


class SelectionSpec(_Spec):
    rule: Literal["FixedEpoch", "ForgetReachesTest"] = Field(default="FixedEpoch",
                                                             description="Checkpoint selection rule.")
    epoch: int | None = Field(default=None, ge=1, le=1000, description="Epoch for FixedEpoch (default last).")

    @model_validator(mode="after")
    def _epoch_for_fixed(self) -> SelectionSpec:
        if self.epoch is not None and self.rule != "FixedEpoch":
            raise ValueError("epoch applies only to rule FixedEpoch")
        return self


class MethodSpec(_Spec):
    name: Literal["forget-mi", "retrain", "finetune", "neggrad-plus", "scrub"] = Field(
        default="forget-mi", description="Unlearning method.")
    preset: Literal["equal", "multimodal", "unimodal", "retention"] = Field(
        default="unimodal", description="Loss-weight preset; ignored when weights are given.")
    weights: WeightsSpec | None = Field(default=None, description="Explicit loss weights.")
    noise: NoiseSpec = Field(default_factory=NoiseSpec, description="Perturbation of the forget inputs.")
    epochs: int = Field(default=30, ge=1, le=1000, description="Unlearning epochs.")
    learning_rate: float = Field(default=1e-3, gt=0, le=1, description="AdamW learning rate.")
    batch_size: int = Field(default=16, ge=1, le=4096, description="Forget/retain batch size.")
    push_bound: float | None = Field(default=None, gt=0, le=1000,
                                     description="Bound m of relu(m - d) on the push terms; unset: unbounded.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Random seed.")
    selection: SelectionSpec = Field(default_factory=SelectionSpec, description="Checkpoint selection.")

    @model_validator(mode="after")
    def _epoch_within_epochs(self) -> MethodSpec:
        if self.selection.epoch is not None and self.selection.epoch > self.epochs:
            _raise_at(self, [(("selection", "epoch"), self.selection.epoch, "selection.epoch must not exceed epochs")])
        return self


class GateSpec(_Spec):
    """One promotion gate. atMost/atLeast compare the unlearned value with an absolute threshold;
    maxDrop/minDrop compare the drop (original − unlearned) with it: maxDrop passes when the drop
    is ≤ threshold, minDrop when it is > threshold."""

    metric: GateMetric = Field(description="Metric of the unlearned model the gate checks.")
    comparator: Comparator = Field(description="atMost/atLeast compare the value; maxDrop/minDrop the drop.")
    threshold: float = Field(ge=-1, le=1, description="Threshold in the metric's units.")
    reference: Reference = Field(default="absolute", description="absolute for atMost/atLeast, original for drops.")

    @model_validator(mode="after")
    def _well_formed(self) -> GateSpec:
        problems: list[tuple[tuple[str, ...], Any, str]] = []
        if self.comparator in DROP_COMPARATORS and self.reference != "original":
            problems.append((("reference",), self.reference,
                             "maxDrop and minDrop measure a drop from the original model: set reference: original"))
        if self.comparator not in DROP_COMPARATORS and self.reference != "absolute":
            problems.append((("reference",), self.reference,
                             "atMost and atLeast compare with an absolute value: set reference: absolute"))
        if self.reference == "absolute" and self.threshold < 0:
            problems.append((("threshold",), self.threshold, "an absolute threshold must be between 0 and 1"))
        _raise_at(self, problems)
        return self


class TargetSpec(_Spec):
    kind: Literal["Deployment", "InferenceService"] = Field(description="Kind of the serving object to patch.")
    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253, description="Name in the request's namespace.")
    container: str | None = Field(default=None, pattern=DNS_LABEL, max_length=63,
                                  description="Deployment container (default: the first).")
    env: str = Field(default="FORGETMI_MODEL_URI", pattern=ENV_NAME_PATTERN, max_length=253,
                     description="Deployment env var that receives the model URI.")

    @model_validator(mode="after")
    def _container_for_deployment(self) -> TargetSpec:
        if self.container is not None and self.kind != "Deployment":
            raise ValueError("container applies only to kind Deployment")
        return self


class RolloutSpec(_Spec):
    mode: RolloutMode = Field(default="Automatic", description="Automatic, Manual (approval) or DryRun.")
    target: TargetSpec | None = Field(default=None, description="Serving object patched on promotion.")
    on_gate_failure: OnGateFailure = Field(default="Hold", description="Hold, or Retrain without the patients.")


class ResourcesSpec(_Spec):
    gpus: int = Field(default=1, ge=0, le=16, description="nvidia.com/gpu per trainer pod.")
    requests: dict[str, Quantity] = Field(default_factory=dict, max_length=16,
                                          description="Container resource requests.")
    limits: dict[str, Quantity] = Field(default_factory=dict, max_length=16, description="Container resource limits.")

    @model_validator(mode="after")
    def _gpus_in_one_place(self) -> ResourcesSpec:
        if GPU_RESOURCE in self.requests or GPU_RESOURCE in self.limits:
            raise ValueError("set GPUs with resources.gpus, not in requests or limits")
        return self


class Toleration(_Spec):
    key: Annotated[str, AfterValidator(_label_key)] | None = Field(default=None, max_length=317,
                                                                    description="Taint key (a label key).")
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="Exists or Equal.")
    value: str | None = Field(default=None, max_length=63, pattern=LABEL_VALUE_PATTERN,
                              description="Taint value (a label value).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(default=None,
                                                                                    description="Taint effect.")
    toleration_seconds: int | None = Field(default=None, ge=0, le=INT64_MAX, description="For NoExecute.")

    @model_validator(mode="after")
    def _well_formed(self) -> Toleration:
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("value must be empty when operator is Exists")
        if not self.key and self.operator != "Exists":
            raise ValueError("a toleration without key must use operator: Exists")
        return self


class LocalObjectRef(_Spec):
    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253, description="Object name in the request's namespace.")


class UnlearnRequestSpec(_Spec):
    model: ModelSpec = Field(description="The registered model to unlearn from.")
    data: DataSpec = Field(description="The training data manifest.")
    forget: ForgetSpec = Field(description="The patients to forget, by reference only.")
    method: MethodSpec = Field(default_factory=MethodSpec, description="Unlearning method and settings.")
    gates: list[GateSpec] = Field(default_factory=list, max_length=16,
                                  description="Promotion gates; defaults apply when empty.")
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, description="How the result is rolled out.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Trainer resources.")
    node_selector: dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]] = Field(
        default_factory=dict, max_length=32, description="Trainer pod nodeSelector (label keys and values).")
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32, description="Trainer pod tolerations.")
    priority_class_name: str | None = Field(default=None, pattern=DNS_SUBDOMAIN, max_length=253,
                                            description="PriorityClass.")
    queue_name: str | None = Field(default=None, pattern=DNS_SUBDOMAIN, max_length=63,
                                   description="Kueue LocalQueue (label kueue.x-k8s.io/queue-name).")
    image: str | None = Field(default=None, min_length=1, max_length=512, pattern=IMAGE_PATTERN,
                              description="Trainer image (default from operator).")
    service_account_name: str | None = Field(default=None, pattern=DNS_SUBDOMAIN, max_length=253,
                                             description="Trainer pod service account.")
    credentials_secret_ref: LocalObjectRef | None = Field(default=None,
                                                          description="Secret with S3 keys/endpoint.")
    active_deadline_seconds: int = Field(default=21600, ge=60, le=604800, description="Job deadline.")
    backoff_limit: int = Field(default=2, ge=0, le=10, description="Job retries.")
    suspend: bool = Field(default=False, description="Pause: no new Job while true.")

    @field_validator("node_selector")
    @classmethod
    def _label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        if not all(is_label_key(key) for key in value):
            raise ValueError(f"every key {LABEL_KEY_MESSAGE}")
        return value


# ---- status -------------------------------------------------------------------------------


class Condition(_Camel):
    """The standard ``metav1.Condition`` shape."""

    type: ConditionType
    status: ConditionStatus
    reason: str = Field(min_length=1, max_length=1024, pattern=CONDITION_REASON_PATTERN)
    message: str = Field(max_length=32768)
    last_transition_time: str
    observed_generation: int | None = Field(default=None, ge=0)


class ModelVersionStatus(_Camel):
    version: str
    uri: str
    sha256: str | None = None


class ProgressStatus(_Camel):
    epoch: int = Field(ge=0)
    epochs: int | None = Field(default=None, ge=1)
    percent: float = Field(ge=0, le=100)
    eta_seconds: float | None = Field(default=None, ge=0)


class MetricPair(_Camel):
    original: float | None = None
    unlearned: float | None = None


class MetricsStatus(_Camel):
    forget_auc: MetricPair = Field(default_factory=MetricPair, alias="forgetAUC")
    forget_f1: MetricPair = Field(default_factory=MetricPair, alias="forgetF1")
    test_auc: MetricPair = Field(default_factory=MetricPair, alias="testAUC")
    test_f1: MetricPair = Field(default_factory=MetricPair, alias="testF1")
    mia: MetricPair = Field(default_factory=MetricPair)
    mia_auc: MetricPair = Field(default_factory=MetricPair, alias="miaAUC")


class GateStatus(_Camel):
    metric: GateMetric
    comparator: Comparator
    reference: Reference
    value: float | None = None
    threshold: float
    result: GateResult
    message: str


class ArtifactStatus(_Camel):
    uri: str
    sha256: str


class UnlearnRequestStatus(_Camel):
    phase: Phase | None = None
    observed_generation: int | None = Field(default=None, ge=0)
    conditions: list[Condition] = Field(default_factory=list)
    base_model: ModelVersionStatus | None = None
    candidate_model: ModelVersionStatus | None = None
    job_name: str | None = None
    attempts: int = Field(default=0, ge=0)
    progress: ProgressStatus | None = None
    metrics: MetricsStatus | None = None
    mia: float | None = Field(default=None, description="Unlearned MIA (printer column).")
    test_auc_drop: float | None = Field(default=None, description="Original − unlearned test AUC (printer column).")
    gates: list[GateStatus] = Field(default_factory=list)
    report: ArtifactStatus | None = None
    receipt: ArtifactStatus | None = None
    subject_count: int | None = Field(default=None, ge=0)
    subjects_secret_name: str | None = Field(default=None, max_length=253)
    start_time: str | None = None
    completion_time: str | None = None
    message: str | None = None

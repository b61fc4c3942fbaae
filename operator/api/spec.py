"""The UnlearnRequest spec as pydantic models (mirrors the CRD exactly).

Field names are the CRD's camelCase names (aliases); Python code uses snake_case attributes.
``tests/operator/api/test_api_crd.py`` keeps these models and the CRD in agreement (every field,
enum, bound and default) and ``tests/operator/local/test_cel.py`` checks that the validators below
reject what the CRD's CEL rules reject, with the same message. :func:`parse_spec` is how the
operator reads a request's spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator

from forgetmi_operator.api.errors import InvalidSpec
from forgetmi_operator.api.method import MethodSpec
from forgetmi_operator.api.naming import MODEL_CONTAINER_ANNOTATION, MODEL_ENV_ANNOTATION
from forgetmi_operator.api.patterns import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    DROP_COMPARATORS,
    ENV_NAME_PATTERN,
    GPU_RESOURCE,
    IMAGE_PATTERN,
    INT64_MAX,
    LABEL_KEY_MESSAGE,
    LABEL_VALUE_PATTERN,
    SECRET_KEY_PATTERN,
    SHA256_PATTERN,
    VERSION_PATTERN,
    Bound,
    Comparator,
    GateMetric,
    ObjectUri,
    OnConflict,
    OnGateFailure,
    Quantity,
    Reference,
    RolloutMode,
    Spec,
    Uri,
    is_label_key,
    label_key,
    problem_message,
    raise_at,
)
from forgetmi_trainer.contract import RETAIN_SAMPLES_DEFAULT, RETAIN_SAMPLES_MAX


class ModelSpec(Spec):
    registry_uri: Uri = Field(description="s3:// or file:// root of the model registry.")
    name: str = Field(pattern=DNS_LABEL, max_length=63, description="Model name in the registry.")
    alias: str = Field(default="production", pattern=DNS_LABEL, max_length=63,
                       description="Alias resolved to a version at start and pinned in status.")


class DataSpec(Spec):
    manifest_uri: ObjectUri = Field(description="Dataset manifest (CSV or Parquet).")


class SecretKeyRef(Spec):
    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253, description="Secret in the request's namespace.")
    key: str = Field(pattern=SECRET_KEY_PATTERN, max_length=253, description="Key within the Secret.")


class ForgetSpec(Spec):
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


class GateSpec(Spec):
    """One promotion gate. atMost/atLeast compare the unlearned value with an absolute threshold;
    maxDrop/minDrop compare the drop (original − unlearned) with it: maxDrop passes when the drop
    is ≤ threshold, minDrop when it is > threshold; atMost with reference retrained compares the
    distance |unlearned − retrained| with it. ``bound`` picks the unlearned value compared: the
    figure (point) or an end of its 95 % interval (upper, lower); the original's and the retrained
    model's are always the figure."""

    metric: GateMetric = Field(description="Metric of the unlearned model the gate checks.")
    comparator: Comparator = Field(description="atMost/atLeast compare the value; maxDrop/minDrop the drop.")
    threshold: float = Field(ge=-1, le=1, description="Threshold in the metric's units.")
    reference: Reference = Field(default="absolute", description=(
        "absolute for atMost/atLeast, original for drops, retrained (atMost only) for the distance to the "
        "retrained model."))
    bound: Bound = Field(default="point", description=(
        "The unlearned value compared: point (the figure), or the upper or lower end of its 95 % interval."))

    @model_validator(mode="after")
    def _well_formed(self) -> GateSpec:
        problems: list[tuple[tuple[str, ...], Any, str]] = []
        if self.comparator in DROP_COMPARATORS and self.reference != "original":
            problems.append((("reference",), self.reference,
                             "maxDrop and minDrop measure a drop from the original model: set reference: original"))
        if self.comparator not in DROP_COMPARATORS and self.reference == "original":
            problems.append((("reference",), self.reference,
                             "atMost and atLeast compare with an absolute value: set reference: absolute"))
        if self.comparator == "atLeast" and self.reference == "retrained":
            problems.append((("reference",), self.reference, RETRAINED_AT_MOST))
        if self.reference != "original" and self.threshold < 0:
            problems.append((("threshold",), self.threshold, "an absolute threshold must be between 0 and 1"))
        raise_at(self, problems)
        return self


RETRAINED_AT_MOST = "reference: retrained bounds the distance to the retrained model: use comparator: atMost"
RETRAINED_NEEDS_VERSION = ("reference: retrained compares with the retrained model: set spec.audit.retrainedVersion "
                           "to its version")


class AuditSpec(Spec):
    retain_samples: int = Field(default=RETAIN_SAMPLES_DEFAULT, ge=1, le=RETAIN_SAMPLES_MAX, description=(
        "At most this many retain rows (a seeded, class-stratified sample) train the membership attack."))
    retrained_version: str | None = Field(default=None, pattern=VERSION_PATTERN, max_length=128, description=(
        "A version of spec.model.name in the registry, retrained without the patients: scored beside the "
        "candidate, and what gates with reference: retrained compare with."))


class TargetSpec(Spec):
    """The serving object patched on promotion; it must opt in with annotations (a Deployment:
    ``model-env`` naming ``env`` and ``model-container`` naming the container; an InferenceService:
    ``model-storage-uri: "true"``), checked by :mod:`forgetmi_operator.cluster.targets`."""

    kind: Literal["Deployment", "InferenceService"] = Field(description="Kind of the serving object to patch.")
    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253, description="Name in the request's namespace.")
    container: str | None = Field(default=None, pattern=DNS_LABEL, max_length=63, description=(
        f"Deployment container; must be the one its annotation {MODEL_CONTAINER_ANNOTATION} names (the default)."))
    env: str = Field(default="FORGETMI_MODEL_URI", pattern=ENV_NAME_PATTERN, max_length=253, description=(
        f"Deployment env var that receives the model URI; its annotation {MODEL_ENV_ANNOTATION} must name it."))

    @model_validator(mode="after")
    def _container_for_deployment(self) -> TargetSpec:
        if self.container is not None and self.kind != "Deployment":
            raise ValueError("container applies only to kind Deployment")
        return self


class RolloutSpec(Spec):
    mode: RolloutMode = Field(default="Automatic", description="Automatic, Manual (approval) or DryRun.")
    target: TargetSpec | None = Field(default=None, description="Serving object patched on promotion.")
    on_gate_failure: OnGateFailure = Field(default="Hold", description="Hold, or Retrain without the patients.")
    on_conflict: OnConflict = Field(default="Rebase", description=(
        "Rebase (run again on the version the alias names now) or Hold, when the alias moved on."))
    max_rebases: int = Field(default=3, ge=0, le=100, description="How many times a request is rebased at most.")


Engine = Literal["Auto", "Job", "TrainJob"]
"""How the trainer runs: Auto picks a ``batch/v1`` Job for one process on one node, else a TrainJob."""
PROCESSES_PER_GPU = "processesPerNode must equal gpus (one process per GPU) when gpus > 0"
NODES_NEED_TRAINJOB = "nodes > 1 requires the TrainJob engine"
BATCH_PER_WORLD = "method.batchSize must be a multiple of the world size, nodes × processesPerNode"


class ResourcesSpec(Spec):
    """Per trainer node (pod): its GPUs, processes and container resources; ``nodes`` such pods."""

    gpus: int = Field(default=1, ge=0, le=16, description="nvidia.com/gpu per trainer pod.")
    nodes: int = Field(default=1, ge=1, le=64, description="Trainer nodes (pods); more than 1 needs a TrainJob.")
    processes_per_node: int | None = Field(default=None, ge=1, le=64, description=(
        "Trainer processes per node (torchrun ranks); default gpus, or 1 without GPUs."))
    engine: Engine = Field(default="Auto", description="Auto, Job (one node) or TrainJob (Kubeflow Trainer v2).")
    requests: dict[str, Quantity] = Field(default_factory=dict, max_length=16,
                                          description="Container resource requests.")
    limits: dict[str, Quantity] = Field(default_factory=dict, max_length=16, description="Container resource limits.")

    @property
    def processes(self) -> int:
        """Processes per node: ``processesPerNode``, else one per GPU, else 1."""
        if self.processes_per_node is not None:
            return self.processes_per_node
        return self.gpus if self.gpus >= 1 else 1

    @property
    def world_size(self) -> int:
        """Trainer processes in all: nodes × processes per node."""
        return self.nodes * self.processes

    @model_validator(mode="after")
    def _consistent(self) -> ResourcesSpec:
        if GPU_RESOURCE in self.requests or GPU_RESOURCE in self.limits:
            raise ValueError("set GPUs with resources.gpus, not in requests or limits")
        problems: list[tuple[tuple[str | int, ...], Any, str]] = []
        if self.gpus > 0 and self.processes_per_node is not None and self.processes_per_node != self.gpus:
            problems.append((("processesPerNode",), self.processes_per_node, PROCESSES_PER_GPU))
        if self.engine == "Job" and self.nodes != 1:
            problems.append((("nodes",), self.nodes, NODES_NEED_TRAINJOB))
        raise_at(self, problems)
        return self


class Toleration(Spec):
    key: Annotated[str, AfterValidator(label_key)] | None = Field(default=None, max_length=317,
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


class LocalObjectRef(Spec):
    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253, description="Object name in the request's namespace.")


class RuntimeRef(Spec):
    """The Kubeflow Trainer runtime a TrainJob runs on (the cluster admin allows which)."""

    name: str = Field(pattern=DNS_LABEL, max_length=63, description="Name of the runtime.")
    kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = Field(
        default="ClusterTrainingRuntime", description="ClusterTrainingRuntime, or TrainingRuntime (the namespace's).")


class UnlearnRequestSpec(Spec):
    model: ModelSpec = Field(description="The registered model to unlearn from.")
    data: DataSpec = Field(description="The training data manifest.")
    forget: ForgetSpec = Field(description="The patients to forget, by reference only.")
    method: MethodSpec = Field(default_factory=MethodSpec, description="Unlearning method and settings.")
    gates: list[GateSpec] = Field(default_factory=list, max_length=16,
                                  description="Promotion gates; defaults apply when empty.")
    audit: AuditSpec = Field(default_factory=AuditSpec, description="How the candidate is audited.")
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
    coalesce: bool = Field(default=True, description=(
        "May share one Job with other requests for the same model and base version (docs/coalescing.md)."))
    runtime_ref: RuntimeRef | None = Field(default=None, description=(
        "Kubeflow Trainer runtime of a TrainJob (default from the operator)."))

    @model_validator(mode="after")
    def _cross_field(self) -> UnlearnRequestSpec:
        problems: list[tuple[tuple[str | int, ...], Any, str]] = []
        if self.audit.retrained_version is None:
            problems += [(("gates", i, "reference"), gate.reference, RETRAINED_NEEDS_VERSION)
                         for i, gate in enumerate(self.gates) if gate.reference == "retrained"]
        if self.method.batch_size % self.resources.world_size:
            problems.append((("method", "batchSize"), self.method.batch_size, BATCH_PER_WORLD))
        raise_at(self, problems)
        return self

    @field_validator("node_selector")
    @classmethod
    def _label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        if not all(is_label_key(key) for key in value):
            raise ValueError(f"every key {LABEL_KEY_MESSAGE}")
        return value


def _field_path(loc: tuple[int | str, ...]) -> str:
    """``("gates", 0, "threshold")`` → ``spec.gates[0].threshold``, as ``forgetmi validate`` writes it."""
    return "spec" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def parse_spec(spec: Mapping[str, Any]) -> UnlearnRequestSpec:
    """The spec as the pydantic model; ``InvalidSpec`` names every bad field (``spec.a[0].b: …``) and
    says what it must be, in the sentences ``forgetmi validate`` uses (never a regex nor the value)."""
    try:
        return UnlearnRequestSpec.model_validate(dict(spec))
    except ValidationError as err:
        problems = [f"{_field_path(error['loc'])}: {problem_message(error)}"
                    for error in err.errors(include_url=False, include_input=False)]
        raise InvalidSpec(f"The spec is invalid: {'; '.join(problems)}.") from err

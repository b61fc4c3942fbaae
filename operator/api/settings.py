"""The operator's settings: one pydantic-settings class read from ``FORGETMI_*`` variables.

Units are in the field names. JSON-typed variables (node selector, tolerations, resources,
default gates) are parsed here and validated with the same models as the request's spec, so a
bad value fails at startup with one sentence naming the variable::

    FORGETMI_TRAINER_NODE_SELECTOR='{"gpu": "a100"}'
    FORGETMI_TRAINER_TOLERATIONS='[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]'
    FORGETMI_TRAINER_RESOURCES='{"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "32Gi"}}'
    FORGETMI_DEFAULT_GATES='[{"metric": "attackAUC", "comparator": "atMost", "threshold": 0.55, "bound": "upper"}]'

Watched namespaces are Kopf's command-line arguments, not settings.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from forgetmi_operator.api.errors import SettingsInvalid
from forgetmi_operator.api.patterns import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    GPU_RESOURCE,
    IMAGE_PATTERN,
    SECRET_KEY_PATTERN,
    Quantity,
)
from forgetmi_operator.api.spec import GateSpec, Toleration
from forgetmi_trainer.contract import Location, validation_problems
from forgetmi_trainer.storage import DEFAULT_MAX_ATTEMPTS, DEFAULT_RETRY_MODE, DEFAULT_RETRY_QUOTA

ENV_PREFIX = "FORGETMI_"
DEFAULT_TRAINER_IMAGE = "ghcr.io/forgetmi/forgetmi-trainer:0.1.0"
REPORT_MAX_BYTES = 8 * 1024 * 1024
"""The default of ``report_max_bytes`` (chart value ``reportMaxBytes``)."""
MANIFEST_MAX_BYTES = 2 * 1024**3
"""The default of ``manifest_max_bytes`` (chart value ``manifestMaxBytes``)."""
_JSON_FIELDS = ("trainer_node_selector", "trainer_tolerations", "trainer_resources", "default_gates",
                "namespace_policies", "trainer_allowed_images", "trainer_allowed_service_accounts",
                "trainer_allowed_priority_classes", "trainer_allowed_tolerations", "allowed_runtimes")
DEFAULT_TRAINJOB_RUNTIME = "torch-distributed"
"""Kubeflow Trainer v2's built-in ClusterTrainingRuntime for PyTorch (chart value ``trainJob.runtime``)."""
RUNTIME_ENTRY_PATTERN = r"^(TrainingRuntime/)?[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""An allowed runtime: a ClusterTrainingRuntime's name, or ``TrainingRuntime/<name>`` for a namespace's."""


def default_gates() -> list[GateSpec]:
    """The gates applied when a request lists none: test AUC may drop at most 0.02, forget AUC must
    drop (strictly more than 0), and the loss attack's two-sided AUC must be within 0.1 of 0.5 (no
    signal) at the upper end of its 95 % interval, so forgetting too much fails like too little."""
    return [
        GateSpec(metric="testAUC", comparator="maxDrop", threshold=0.02, reference="original"),
        GateSpec(metric="forgetAUC", comparator="minDrop", threshold=0.0, reference="original"),
        GateSpec(metric="attackAUC", comparator="atMost", threshold=0.6, reference="absolute", bound="upper"),
    ]


def _no_retrained_reference(gate: GateSpec) -> GateSpec:
    if gate.reference == "retrained":
        raise ValueError("a default gate cannot use reference: retrained (a request names its retrained model "
                         "in spec.audit.retrainedVersion; list such a gate in spec.gates)")
    return gate


class ContainerResources(BaseModel):
    """Default ``requests``/``limits`` of the trainer container (GPUs come from ``trainer_gpus``)."""

    model_config = ConfigDict(extra="forbid")

    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)

    @field_validator("requests", "limits")
    @classmethod
    def _no_gpus(cls, value: dict[str, str]) -> dict[str, str]:
        if GPU_RESOURCE in value:
            raise ValueError(f"set GPUs with FORGETMI_TRAINER_GPUS, not {GPU_RESOURCE}")
        return value


class NamespacePolicy(BaseModel):
    """What the cluster admin decides for the requests of one namespace (chart value ``tenants``)."""

    model_config = ConfigDict(extra="forbid")

    credentials_secret: str = Field(default="", pattern=r"^$|" + DNS_SUBDOMAIN, max_length=253, description=(
        "Secret in that namespace with its S3 keys, when a request names none (spec.credentialsSecretRef)."))
    allowed_uri_prefixes: list[Annotated[str, Field(min_length=1, max_length=2048)]] = Field(
        default_factory=list, max_length=64, description=(
            "URI prefixes the namespace's requests may name (registry, manifest, forget list); none: any its "
            "credentials can read."))


def env_name(field: str) -> str:
    """``trainer_gpus`` → ``FORGETMI_TRAINER_GPUS``."""
    return ENV_PREFIX + field.upper()


class Settings(BaseSettings):
    """Every ``FORGETMI_*`` variable the operator reads; see ARCHITECTURE.md and the chart's values."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", case_sensitive=False)

    trainer_image: str = Field(default=DEFAULT_TRAINER_IMAGE, min_length=1, max_length=512)
    trainer_gpus: int = Field(default=1, ge=0, le=16, description="nvidia.com/gpu per trainer pod by default.")
    trainer_node_selector: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    trainer_tolerations: Annotated[list[Toleration], NoDecode] = Field(default_factory=list)
    trainer_service_account: str = Field(default="", pattern=r"^$|" + DNS_SUBDOMAIN, max_length=253)
    trainer_resources: Annotated[ContainerResources, NoDecode] = Field(default_factory=ContainerResources)
    trainer_allowed_images: Annotated[list[Annotated[str, Field(min_length=1, max_length=512, pattern=IMAGE_PATTERN)]],
                                      NoDecode] = Field(default_factory=list, description=(
        "Images a request may name in spec.image besides trainer_image (exact references or digests)."))
    trainer_allowed_service_accounts: Annotated[list[Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)]],
                                                NoDecode] = Field(default_factory=list, description=(
        "ServiceAccounts a request may name in spec.serviceAccountName; none: it may name none."))
    trainer_allowed_priority_classes: Annotated[list[Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)]],
                                                NoDecode] = Field(default_factory=list, description=(
        "PriorityClasses a request may name in spec.priorityClassName; none: it may name none."))
    trainer_allowed_tolerations: Annotated[list[Toleration], NoDecode] = Field(default_factory=list, description=(
        "Tolerations a request may carry, each equal to one of these (operator defaulting to Equal)."))
    trainjob_enabled: bool = Field(default=True, description=(
        "Whether requests needing several processes or nodes may run as Kubeflow Trainer v2 TrainJobs."))
    trainjob_runtime: str = Field(default=DEFAULT_TRAINJOB_RUNTIME, pattern=DNS_LABEL, max_length=63, description=(
        "The ClusterTrainingRuntime of a TrainJob whose request names no spec.runtimeRef (always allowed)."))
    allowed_runtimes: Annotated[list[Annotated[str, Field(pattern=RUNTIME_ENTRY_PATTERN, max_length=80)]],
                                NoDecode] = Field(default_factory=list, description=(
        "Runtimes a request may name in spec.runtimeRef besides trainjob_runtime: ClusterTrainingRuntime "
        "names, or TrainingRuntime/<name> for a TrainingRuntime in the request's namespace."))
    s3_endpoint_url: str = Field(default="", description="S3 endpoint for the operator and its Jobs.")
    s3_retry_mode: Literal["standard", "adaptive", "legacy"] = Field(default=DEFAULT_RETRY_MODE, description=(
        "botocore's retry mode of the operator's and its trainers' S3 calls; adaptive also slows a client "
        "down after S3 answers 503 SlowDown."))
    s3_max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1, le=100, description=(
        "Attempts per S3 call, the first included, before it fails with StorageUnavailable."))
    s3_retry_quota: int = Field(default=DEFAULT_RETRY_QUOTA, ge=0, description=(
        "Retry quota units per S3 client (botocore's own is 500; a retry costs 14, one after throttling 5); "
        "0: unlimited, as a store failing a steady fraction of requests spends a finite quota for good."))
    credentials_secret: str = Field(default="", pattern=r"^$|" + DNS_SUBDOMAIN, max_length=253, description=(
        "Secret (in the request's namespace) with that namespace's S3 keys, when neither the request nor its "
        "namespace's policy names one: the operator reads the request's objects with it, its Jobs get it."))
    namespace_policies: Annotated[dict[str, NamespacePolicy], NoDecode] = Field(default_factory=dict, description=(
        "Per namespace: its credentials Secret and the URI prefixes its requests may name."))
    default_gates: Annotated[list[Annotated[GateSpec, AfterValidator(_no_retrained_reference)]], NoDecode] = Field(
        default_factory=default_gates, min_length=1)
    metrics_port: int = Field(default=8080, ge=1, le=65535)
    pending_pod_timeout_seconds: float = Field(default=600.0, gt=0)
    watch_timeout_seconds: int = Field(default=300, ge=1)
    request_timeout_seconds: float = Field(default=30.0, gt=0)
    api_retry_attempts: int = Field(default=6, ge=1, le=100, description=(
        "Attempts of one Kubernetes API call of the operator's own client while the server answers 429/5xx "
        "or cannot be reached (1: no retry); then the handler fails and Kopf retries it."))
    api_retry_max_delay_seconds: float = Field(default=10.0, gt=0, le=300, description=(
        "The longest wait between two attempts of an API call, a 429's Retry-After included; Kopf's own "
        "calls and watches back off up to this long and never give up."))
    progress_interval_seconds: float = Field(default=15.0, gt=0)
    operator_namespace: str = Field(default="", pattern=r"^$|" + DNS_SUBDOMAIN, max_length=63,
                                    description="From the downward API; empty outside a cluster.")
    receipt_hmac_secret_name: str = Field(default="", pattern=r"^$|" + DNS_SUBDOMAIN, max_length=253,
                                          description="Secret (operator namespace) with the receipt HMAC key.")
    receipt_hmac_secret_key: str = Field(default="key", pattern=SECRET_KEY_PATTERN, max_length=253)
    receipt_signing_secret_name: str = Field(default="", pattern=r"^$|" + DNS_SUBDOMAIN, max_length=253, description=(
        "Secret (operator namespace) with the Ed25519 receipt signing key (PEM PKCS#8); empty: unsigned receipts."))
    receipt_signing_secret_key: str = Field(default="key.pem", pattern=SECRET_KEY_PATTERN, max_length=253)
    ledger_key_secret_name: str = Field(default="", pattern=r"^$|" + DNS_SUBDOMAIN, max_length=253, description=(
        "Secret (operator namespace) with the forget ledger's HMAC key; empty: no ledger is written or read."))
    ledger_key_secret_key: str = Field(default="key", pattern=SECRET_KEY_PATTERN, max_length=253)
    coalesce_window_seconds: float = Field(default=0.0, ge=0, le=3600, description=(
        "Requests for the same model and base version accepted within this many seconds run as one Job "
        "(docs/coalescing.md); 0: never coalesced."))
    serving_targets_enabled: bool = False
    log_format: Literal["json", "text"] = "json"
    job_ttl_seconds_after_finished: int = Field(default=86400, ge=0)
    report_max_bytes: int = Field(default=REPORT_MAX_BYTES, ge=1024, description=(
        "The largest trainer report.json the operator reads; a larger one is ReportInvalid, unread."))
    manifest_max_bytes: int = Field(default=MANIFEST_MAX_BYTES, ge=1024, description=(
        "The largest manifest the operator downloads to check the forget list; a larger one is "
        "InputUnreadable, unread. Its scratch volume must hold one this large."))

    @field_validator(*_JSON_FIELDS, mode="before")
    @classmethod
    def _parse_json(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str):
            return value
        if not value.strip():
            return cls.model_fields[info.field_name].get_default(call_default_factory=True)
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"not valid JSON ({err.msg} at position {err.pos})") from err

    @property
    def receipt_hmac_enabled(self) -> bool:
        return bool(self.receipt_hmac_secret_name)


def _variable(loc: Location) -> str:
    """``("trainer_tolerations", 0, "key")`` → ``FORGETMI_TRAINER_TOLERATIONS[0][key]``."""
    field, *rest = [str(part) for part in loc] or ["settings"]
    return env_name(field) + "".join(f"[{part}]" for part in rest)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment (``overrides`` win); raises :class:`SettingsInvalid`
    with one sentence naming each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as err:
        problems = "; ".join(validation_problems(err, _variable))
        raise SettingsInvalid(f"Operator settings are invalid: {problems}.") from err
    except SettingsError as err:
        raise SettingsInvalid(f"Operator settings could not be read: {err}.") from err

"""The job config: what the operator hands the trainer Job (``job.json`` in a ConfigMap)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from forgetmi_trainer.contract.formats import SCHEMA_VERSION, SHA256_PATTERN, URI_PATTERN, VERSION_PATTERN

MethodName = Literal["forget-mi", "retrain", "finetune", "neggrad-plus", "scrub"]
PresetName = Literal["equal", "multimodal", "unimodal", "retention"]
SelectionRuleName = Literal["FixedEpoch", "ForgetReachesTest"]


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
    push_bound: float | None = Field(default=None, gt=0, description=(
        "Bound m of relu(m - d) on the push terms, relative: a multiple of the original's embedding scale "
        "(the median distance between two different retain samples' image embeddings, measured at the start "
        "of the run); unset: unbounded."))
    sign: Literal["push", "pull"] = Field(
        default="push", description="'pull' flips the unlearning terms (a sanity check: forgets nothing)."
    )
    selection: SelectionRule = SelectionRule()
    options: dict[str, float] = Field(default_factory=dict, description="Method-specific settings.")


class DataConfig(_Model):
    """How the trainer streams the manifest's samples (docs/data.md, "Streaming")."""

    workers: int | None = Field(
        default=None, ge=0, le=64,
        description="DataLoader worker processes that read and preprocess images; 0 = in the main process; "
        "unset = half the CPUs, at most 4.")
    prefetch_batches: int = Field(default=2, ge=1, le=64, description="Batches each worker reads ahead.")
    fetch_threads: int = Field(default=4, ge=1, le=64, description="Concurrent image reads per worker.")
    cache_mib: int = Field(
        default=1024, ge=16, le=1_048_576,
        description="Most MiB of S3 images kept on local disk (least recently used go first).")
    memory_cache_mib: int = Field(
        default=32, ge=0, le=1_048_576,
        description="Most MiB of preprocessed images kept in memory between passes (0 = none).")
    max_image_mib: int = Field(default=256, ge=1, le=4096, description="Largest image file read, MiB.")
    eval_batch_size: int | None = Field(
        default=None, ge=1, le=65_536,
        description="Batch size of the audit's passes; unset: as many images as hold 4 Mi pixel values, at most "
        "256 (256 at 64 px, 16 at 512 px grey), so activations stay bounded at any image size.")


RETAIN_SAMPLES_DEFAULT = 5000
RETAIN_SAMPLES_MAX = 1_000_000
BOOTSTRAP_DEFAULT = 1000


class AuditConfig(_Model):
    """How the models are audited. Forget and test are scored in full; the retain side (the MIA
    attacker's members and the distance to a retrained reference) is a seeded, class-stratified sample
    of at most ``retain_samples`` retain rows, drawn once per run and the same for every model, so the
    audit's cost does not grow with the training set. Every AUC, F1 and MIA figure gets a 95 %
    percentile interval from ``bootstrap`` replicates that resample patients (seeded by the job's seed)."""

    retain_samples: int = Field(default=RETAIN_SAMPLES_DEFAULT, ge=1, le=RETAIN_SAMPLES_MAX,
                                description="At most this many retain rows are scored (class-stratified sample).")
    bootstrap: int = Field(default=BOOTSTRAP_DEFAULT, ge=100, le=20_000,
                           description="Bootstrap replicates (over patients) behind each 95 % interval.")
    cache: bool = Field(default=True, description=(
        "Read the original's validation and test logits from the registry's audit cache, and write them there."))


class JobConfig(_Model):
    """Everything one trainer run needs. Written by the operator, read by the Job."""

    schema_version: Literal["forgetmi.io/v1alpha1"] = SCHEMA_VERSION
    request: str = Field(default="local", description="namespace/name of the UnlearnRequest, for logs.")
    model: ModelRef
    manifest_uri: str = Field(pattern=URI_PATTERN)
    forget: ForgetSubjects
    method: MethodConfig = MethodConfig()
    data: DataConfig = DataConfig()
    output_uri: str = Field(pattern=URI_PATTERN, description="Where the candidate model directory is written.")
    report_uri: str | None = Field(
        default=None, pattern=URI_PATTERN, description="report.json location; default <output_uri>/report.json."
    )
    candidate_version: str = Field(pattern=VERSION_PATTERN)
    retrained: ModelRef | None = Field(default=None, description="A retrained reference model to compare with.")
    previously_forgotten: ForgetSubjects | None = Field(
        default=None, description="The manifest's patients of earlier promoted erasures of the model (the forget "
        "ledger names them by keyed digest; the operator matches the manifest's subjects against it), in a file "
        "or object like the forget list: their rows are left out of the retain set.")
    audit: AuditConfig = AuditConfig()
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

"""The ``spec.method`` models: which unlearning method runs, and its settings (mirrors the CRD).

Forget-MI's settings are fields of their own (preset or weights, noise, push bound, sign); the
baselines' settings are ``options`` (docs/methods.md), each read by the methods
:data:`METHOD_OPTIONS` names for it. ``tests/operator/api/test_method_options.py`` keeps
``options`` in agreement with the trainer's options models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from forgetmi_operator.api.patterns import Spec, raise_at


class WeightsSpec(Spec):
    uu: float = Field(ge=0, le=1, description="Unimodal unlearning weight.")
    mu: float = Field(ge=0, le=1, description="Multimodal unlearning weight.")
    ur: float = Field(ge=0, le=1, description="Unimodal retention weight.")
    mr: float = Field(ge=0, le=1, description="Multimodal retention weight.")

    @model_validator(mode="after")
    def _positive_sum(self) -> WeightsSpec:
        if self.uu + self.mu + self.ur + self.mr <= 0:
            raise ValueError("at least one weight must be greater than 0")
        return self


class NoiseSpec(Spec):
    image_mean: float = Field(default=0.0, ge=-1, le=1, description="Mean of the image Gaussian noise.")
    image_std: float = Field(default=0.1, ge=0, le=1, description="Std of the image Gaussian noise.")
    text_level: float = Field(default=0.5, ge=0, le=1, description="Word/char noise probability.")


class SelectionSpec(Spec):
    rule: Literal["FixedEpoch", "ForgetReachesTest"] = Field(default="FixedEpoch",
                                                             description="Checkpoint selection rule.")
    epoch: int | None = Field(default=None, ge=1, le=1000, description="Epoch for FixedEpoch (default last).")

    @model_validator(mode="after")
    def _epoch_for_fixed(self) -> SelectionSpec:
        if self.epoch is not None and self.rule != "FixedEpoch":
            raise ValueError("epoch applies only to rule FixedEpoch")
        return self


MethodName = Literal["forget-mi", "retrain", "finetune", "neggrad-plus", "scrub"]


class MethodOptionsSpec(Spec):
    """The baselines' own settings (docs/methods.md). Each applies to the methods
    :data:`METHOD_OPTIONS` names for it; one left out takes the trainer's default for that method."""

    align_weight: float | None = Field(default=None, ge=0, le=10, description=(
        "Weight of the image-text alignment term in the training loss (retrain, finetune, neggrad-plus, scrub; "
        "default 0.1)."))
    weight_decay: float | None = Field(default=None, ge=0, le=1, description=(
        "AdamW weight decay (retrain, finetune, neggrad-plus, scrub; default 0.01)."))
    alpha: float | None = Field(default=None, ge=0, le=1, description=(
        "neggrad-plus: weight of the retain loss against the forget ascent (default 0.9); scrub: weight of the "
        "distillation term on retain data (default 0.001)."))
    bound: float | None = Field(default=None, ge=0, le=100, description=(
        "neggrad-plus: per-sample cap on each head's forget cross-entropy in units of ln C (the chance-level "
        "cross-entropy of C classes), 0 for none (default 3.6)."))
    msteps: int | None = Field(default=None, ge=0, le=1000, description=(
        "scrub: epochs that begin with a max step on the forget set (default 3)."))
    gamma: float | None = Field(default=None, ge=0, le=10, description=(
        "scrub: weight of the training loss in the min step (default 0.99)."))
    temperature: float | None = Field(default=None, gt=0, le=100, description=(
        "scrub: distillation temperature (default 4)."))
    retain_steps: int | None = Field(default=None, ge=0, le=1000000, description=(
        "scrub: batches per min step, 0 for a full pass over the retain set (default 0)."))

    def trainer_options(self) -> dict[str, float]:
        """The options set, as the trainer's job config names them (snake_case)."""
        return {key: float(value) for key, value in self.model_dump(exclude_none=True).items()}


METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "forget-mi": (),
    "retrain": ("alignWeight", "weightDecay"),
    "finetune": ("alignWeight", "weightDecay"),
    "neggrad-plus": ("alpha", "bound", "alignWeight", "weightDecay"),
    "scrub": ("msteps", "alpha", "gamma", "temperature", "retainSteps", "alignWeight", "weightDecay"),
}
"""The ``options`` each method reads (camelCase, as a request writes them)."""


def options_message(key: str) -> str:
    """The refusal of option ``key`` for a method that does not read it (the CRD's rule says the same)."""
    methods = [name for name, keys in METHOD_OPTIONS.items() if key in keys]
    return f"options.{key} applies only to method {' and '.join(methods)}"


class MethodSpec(Spec):
    name: MethodName = Field(default="forget-mi", description="Unlearning method.")
    preset: Literal["equal", "multimodal", "unimodal", "retention"] = Field(
        default="unimodal", description="Loss-weight preset; ignored when weights are given.")
    weights: WeightsSpec | None = Field(default=None, description="Explicit loss weights.")
    noise: NoiseSpec = Field(default_factory=NoiseSpec, description="Perturbation of the forget inputs.")
    epochs: int = Field(default=30, ge=1, le=1000, description="Unlearning epochs.")
    learning_rate: float = Field(default=1e-3, gt=0, le=1, description="AdamW learning rate.")
    batch_size: int = Field(default=16, ge=1, le=4096, description="Forget/retain batch size.")
    push_bound: float | None = Field(default=None, gt=0, le=1000,
                                     description=("Bound m of relu(m - d) on the push terms, as a multiple of the "
                                                  "original's embedding scale (the median distance between two "
                                                  "retain samples' embeddings); unset: unbounded."))
    sign: Literal["push", "pull"] = Field(default="push", description=(
        "forget-mi: push (forget), or pull, a negative control that flips the unlearning terms and forgets nothing."))
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Random seed.")
    selection: SelectionSpec = Field(default_factory=SelectionSpec, description="Checkpoint selection.")
    options: MethodOptionsSpec = Field(default_factory=MethodOptionsSpec,
                                       description="The method's own settings (see each field).")

    @model_validator(mode="after")
    def _consistent(self) -> MethodSpec:
        problems: list[tuple[tuple[str, ...], Any, str]] = []
        if self.selection.epoch is not None and self.selection.epoch > self.epochs:
            problems.append((("selection", "epoch"), self.selection.epoch, "selection.epoch must not exceed epochs"))
        if self.sign != "push" and self.name != "forget-mi":
            problems.append((("sign",), self.sign, "sign applies only to method forget-mi"))
        allowed = METHOD_OPTIONS[self.name]
        for field, value in self.options:
            key = MethodOptionsSpec.model_fields[field].alias or field
            if value is not None and key not in allowed:
                problems.append((("options", key), value, options_message(key)))
        raise_at(self, problems)
        return self

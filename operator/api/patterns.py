"""The vocabulary of the UnlearnRequest API: enumerations, patterns and the small types built on them.

Every pattern here is the CRD's (``crds/…yaml``); :mod:`forgetmi_operator.api.spec` and
:mod:`forgetmi_operator.api.status` build the models on them. :data:`PATTERN_HINTS` turns each
pattern into the sentence a user sees (:func:`problem_message`), for the operator's ``InvalidSpec``
and for ``forgetmi validate`` alike: a message never prints a regex.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from forgetmi_trainer.contract import SHA256_PATTERN, URI_PATTERN, VERSION_PATTERN

__all__ = ["SHA256_PATTERN", "URI_PATTERN", "VERSION_PATTERN"]

GateMetric = Literal["mia", "miaAUC", "attackAUC", "logitNormAUC", "liraTPR5", "liraAUC", "forgetAUC", "forgetF1",
                     "testAUC", "testF1"]
LIRA_METRICS = ("liraTPR5", "liraAUC")
"""Gate metrics that need the base version's reference models (``forgetmi-trainer references``)."""
Comparator = Literal["atMost", "atLeast", "maxDrop", "minDrop"]
Reference = Literal["absolute", "original", "retrained"]
"""What a gate's threshold is compared with: an absolute value, the drop from the original model, or
(``atMost`` only) the distance to the retrained reference model named by ``spec.audit.retrainedVersion``."""
Bound = Literal["point", "upper", "lower"]
"""Which value of the unlearned model a gate compares: the figure itself, or an end of its 95 % interval."""
RolloutMode = Literal["Automatic", "Manual", "DryRun"]
OnGateFailure = Literal["Hold", "Retrain"]
OnConflict = Literal["Rebase", "Hold"]
Phase = Literal["Pending", "Running", "Evaluating", "Promoted", "Held", "Failed"]
GateResult = Literal["Passed", "Failed", "Inconclusive"]
ConditionType = Literal["Accepted", "Unlearned", "GatesPassed", "Promoted"]
ConditionStatus = Literal["True", "False", "Unknown"]
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""DNS labels joined by dots: no empty label (``a..b``), none starting or ending with ``-``."""
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
"""A Kubernetes quantity that is not negative (a leading ``+`` is allowed; ``-`` is not)."""
QUANTITY_MESSAGE = "must be a resource quantity that is not negative, such as 500m, 4 or 16Gi"
"""Also the CRD's message for a negative integer quantity, which its pattern (for strings) cannot see."""
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
URI_MAX_LENGTH = 2048
GPU_RESOURCE = "nvidia.com/gpu"
DROP_COMPARATORS = ("maxDrop", "minDrop")
APPROVAL_ANNOTATION = "unlearning.forgetmi.io/approved"
INT64_MAX = 2**63 - 1
OBJECT_URI_PATTERN = r"^(s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/.+|file:///.*)$"
"""An object (not a bucket root): the contract's URI pattern with a key required after an s3 bucket."""
OBJECT_URI_MESSAGE = "must be an s3://bucket/key or file:///... URI: an object, with a key after the bucket"
URI_MESSAGE = "must be an s3://bucket/... or file:///... URI"
"""The CRD's message for a URI that fails its CEL rule; pydantic's pattern error is shown the same way."""
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LABEL_KEY_CHARS = (r"([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                   r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
LABEL_KEY_LENGTHS = r"([^/]{1,253}/)?[^/]{1,63}"
"""A label key (Kubernetes qualified name) is both: the characters, and a prefix ≤ 253 and a name ≤ 63."""
LABEL_KEY_MESSAGE = ("must be a label key: an optional DNS subdomain prefix and '/', then a name of at most 63 "
                     "letters, digits, '-', '_' and '.' that starts and ends with a letter or digit")
IMAGE_PATTERN = r"^[!-~]*$"
"""An image reference is printable ASCII without whitespace (the kubelet cannot pull anything else)."""
PATTERN_HINTS = {
    DNS_LABEL: "must be a lowercase DNS label (a-z, 0-9 and '-', starting and ending with a letter or digit)",
    DNS_SUBDOMAIN: "must be a lowercase DNS subdomain: labels of a-z, 0-9 and '-' that start and end with a letter "
    "or digit, joined by '.'",
    SHA256_PATTERN: "must be a sha256 digest (64 lowercase hex digits)",
    VERSION_PATTERN: "must be a model version: a letter or digit, then at most 127 letters, digits, '.', '_' and '-'",
    SECRET_KEY_PATTERN: "must be a Secret key (letters, digits, '-', '_' and '.')",
    ENV_NAME_PATTERN: "must be an environment variable name",
    QUANTITY_PATTERN: QUANTITY_MESSAGE,
    URI_PATTERN: URI_MESSAGE,
    OBJECT_URI_PATTERN: OBJECT_URI_MESSAGE,
    LABEL_VALUE_PATTERN: "must be a label value: empty, or at most 63 letters, digits, '-', '_' and '.' that starts "
    "and ends with a letter or digit",
    IMAGE_PATTERN: "must be an image reference: printable ASCII without whitespace",
}
"""What a value that fails each pattern must be, as the end of a sentence that names the field."""
INVALID_FORMAT = "has an invalid format"
"""For a pattern without a sentence: the regex itself is never shown."""


def pattern_message(pattern: str) -> str:
    """The sentence for a value failing ``pattern`` (also in the JSON Schema spelling, ``\\Z`` for ``$``)."""
    original = pattern.removesuffix(r"\Z") + "$" if pattern.endswith(r"\Z") else pattern
    return PATTERN_HINTS.get(original, INVALID_FORMAT)


def problem_message(error: ErrorDetails) -> str:
    """One pydantic error as the user reads it: a validator's own sentence, a pattern's sentence, or
    pydantic's message (the input is never part of it)."""
    ctx = error.get("ctx") or {}
    if error["type"] == "value_error" and ctx.get("error"):
        return str(ctx["error"])
    if error["type"] == "string_pattern_mismatch":
        return pattern_message(str(ctx.get("pattern", "")))
    return error["msg"]


def is_label_key(key: str) -> bool:
    """A valid label (or taint) key, as the CRD's rule and the API server check it."""
    return bool(re.fullmatch(LABEL_KEY_CHARS, key) and re.fullmatch(LABEL_KEY_LENGTHS, key))


def label_key(key: str) -> str:
    if key and not is_label_key(key):
        raise ValueError(LABEL_KEY_MESSAGE)
    return key


def raise_at(model: BaseModel, problems: Sequence[tuple[tuple[str | int, ...], Any, str]]) -> None:
    """Raise ``(loc, value, message)`` problems at fields below ``model``, as a CRD rule's ``fieldPath`` does."""
    if problems:
        raise ValidationError.from_exception_data(type(model).__name__, [
            InitErrorDetails(type=PydanticCustomError("value_error", "Value error, {error}", {"error": message}),
                             loc=loc, input=value)
            for loc, value, message in problems])


def int_to_str(value: Any) -> Any:
    """Kubernetes quantities are int-or-string (``cpu: 2``); the models keep them as strings."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise ValueError("must fit in a 64-bit integer")
        return str(value)
    return value


Uri = Annotated[str, Field(pattern=URI_PATTERN, max_length=URI_MAX_LENGTH)]
ObjectUri = Annotated[str, Field(pattern=OBJECT_URI_PATTERN, max_length=URI_MAX_LENGTH)]
Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=64), BeforeValidator(int_to_str)]


class Camel(BaseModel):
    """The API's models: camelCase names, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class Spec(Camel):
    """Spec models are strict like the API server: ``"30"`` is not an integer, ``"yes"`` not a boolean.
    Any mapping is accepted as an object (Kopf hands handlers a read-only ``Spec`` view)."""

    model_config = ConfigDict(strict=True)

    @model_validator(mode="before")
    @classmethod
    def _any_mapping(cls, data: Any) -> Any:
        return dict(data) if isinstance(data, Mapping) and not isinstance(data, dict) else data

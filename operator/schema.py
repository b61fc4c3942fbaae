"""Validate an UnlearnRequest against the CRD the way ``kubectl apply`` would, plus the pydantic model.

The CRD (``crds/unlearnrequests.unlearning.forgetmi.io.yaml``; a byte-identical copy ships in this
package) is the single source of truth. :func:`validate_request` emulates the API server: it drops
``status`` (a subresource), prunes nulls, applies the schema's defaults, validates the result with
the openAPIV3Schema converted to JSON Schema (unknown fields rejected, as with kubectl's strict
field validation), evaluates the CEL rules, and finally re-validates ``spec`` with
:class:`~forgetmi_operator.api.UnlearnRequestSpec`. Every problem comes back as a
:class:`Problem` (field path, message); messages never echo the offending value, which could be a
patient ID or a credential.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import jsonschema
import yaml
from pydantic import ValidationError

from forgetmi_operator import GROUP, KIND, VERSION
from forgetmi_operator.api import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    ENV_NAME_PATTERN,
    IMAGE_PATTERN,
    LABEL_VALUE_PATTERN,
    OBJECT_URI_MESSAGE,
    OBJECT_URI_PATTERN,
    QUANTITY_PATTERN,
    SECRET_KEY_PATTERN,
    UnlearnRequestSpec,
)
from forgetmi_operator.cel import UNEVALUABLE, Parts, is_int64, rule_problems
from forgetmi_trainer.contract import SHA256_PATTERN, URI_PATTERN

CRD_FILENAME = f"unlearnrequests.{GROUP}.yaml"
API_VERSION = f"{GROUP}/{VERSION}"
_REPO_CRD = Path(__file__).resolve().parent.parent / "crds" / CRD_FILENAME
URI_MESSAGE = "must be an s3://bucket/... or file:///... URI"
"""The CRD's message for a URI that fails its CEL rule; pydantic's pattern error is shown the same way."""
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PATIENT_HINT = re.compile(r"subject|patient", re.IGNORECASE)
_PATTERN_HINTS = {
    DNS_LABEL: "must be a lowercase DNS label (a-z, 0-9 and '-', starting and ending with a letter or digit)",
    DNS_SUBDOMAIN: "must be a lowercase DNS subdomain (a-z, 0-9, '-' and '.', starting and ending with a letter "
    "or digit)",
    SHA256_PATTERN: "must be a sha256 digest (64 lowercase hex digits)",
    SECRET_KEY_PATTERN: "must be a Secret key (letters, digits, '-', '_' and '.')",
    ENV_NAME_PATTERN: "must be an environment variable name",
    QUANTITY_PATTERN: "must be a resource quantity, such as 500m, 4 or 16Gi",
    URI_PATTERN: URI_MESSAGE,
    OBJECT_URI_PATTERN: OBJECT_URI_MESSAGE,
    LABEL_VALUE_PATTERN: "must be a label value: empty, or at most 63 letters, digits, '-', '_' and '.' that starts "
    "and ends with a letter or digit",
    IMAGE_PATTERN: "must be an image reference: printable ASCII without whitespace",
}
_TYPE_NAMES = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "a boolean",
               "object": "a mapping", "array": "a list"}
_TYPE_CHECKER = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
)
_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=_TYPE_CHECKER)


class Problem(NamedTuple):
    """One reason a request is invalid: a field path such as ``spec.gates[0].threshold`` and a message."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def format_path(parts: Parts) -> str:
    """``("spec", "gates", 0, "threshold")`` → ``spec.gates[0].threshold``; odd keys in brackets."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part):
            text += f".{part}" if text else part
        else:
            text += f"[{part}]"
    return text or "(document)"


@functools.cache
def load_crd() -> dict[str, Any]:
    """The CRD: from the repository checkout when there is one, else from this package."""
    if _REPO_CRD.is_file():
        return yaml.safe_load(_REPO_CRD.read_text(encoding="utf-8"))
    return yaml.safe_load(resources.files("forgetmi_operator").joinpath(CRD_FILENAME).read_text(encoding="utf-8"))


@functools.cache
def _openapi() -> dict[str, Any]:
    (version,) = [v for v in load_crd()["spec"]["versions"] if v["name"] == VERSION]
    return version["schema"]["openAPIV3Schema"]


def openapi_schema() -> dict[str, Any]:
    """The openAPIV3Schema of the served version (a fresh copy each call)."""
    return copy.deepcopy(_openapi())


def to_json_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Convert a structural OpenAPI v3 schema to JSON Schema 2020-12 (unknown fields rejected)."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key in ("description", "default", "nullable", "format"):
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, Mapping):
            out[key] = to_json_schema(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [to_json_schema(child) for child in value]
        elif key == "pattern":
            # Go's regexp (the API server) ends "$" at the end of text; Python's "$" also matches
            # before a final newline, "\Z" does not.
            out[key] = value[:-1] + r"\Z" if value.endswith("$") and not value.endswith(r"\$") else value
        elif key not in ("exclusiveMinimum", "exclusiveMaximum"):
            out[key] = value
    if schema.get("exclusiveMinimum"):
        out["exclusiveMinimum"] = out.pop("minimum")
    if schema.get("exclusiveMaximum"):
        out["exclusiveMaximum"] = out.pop("maximum")
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def apply_defaults(value: Any, schema: Mapping[str, Any]) -> Any:
    """Prune null fields and apply defaults like the API server (a new object; input untouched)."""
    if isinstance(value, Mapping) and schema.get("type") == "object":
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        out: dict[str, Any] = {}
        for key, child in value.items():
            child_schema = properties.get(key, additional if isinstance(additional, Mapping) else None)
            if child is None and child_schema is not None and not child_schema.get("nullable"):
                continue
            out[key] = apply_defaults(child, child_schema) if child_schema is not None else copy.deepcopy(child)
        for key, child_schema in properties.items():
            if key not in out and "default" in child_schema:
                out[key] = apply_defaults(copy.deepcopy(child_schema["default"]), child_schema)
        return out
    if isinstance(value, list) and schema.get("type") == "array":
        return [apply_defaults(item, schema.get("items", {})) for item in value]
    return copy.deepcopy(value)


def _number(value: float) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


def _pattern_message(pattern: str) -> str:
    original = pattern[:-2] + "$" if pattern.endswith(r"\Z") else pattern
    return _PATTERN_HINTS.get(original, f"must match the pattern {original}")


def _unknown_field_message(parts: Parts, key: str) -> str:
    if parts[:2] == ("spec", "forget") or _PATIENT_HINT.search(key):
        return "unknown field; patient IDs are never inlined: reference them with subjectsSecretRef or subjectsUri"
    return "unknown field"


def _error_problems(error: jsonschema.ValidationError) -> Iterator[Problem]:
    parts: Parts = tuple(error.absolute_path)
    kind, expected, instance = error.validator, error.validator_value, error.instance
    if kind == "required":
        for name in expected:
            if isinstance(instance, Mapping) and name not in instance:
                yield Problem(format_path((*parts, name)), "required field is missing")
        return
    if kind == "additionalProperties":
        known = error.schema.get("properties", {})
        for key in instance:
            if key not in known:
                yield Problem(format_path((*parts, str(key))), _unknown_field_message(parts, str(key)))
        return
    messages = {
        "type": lambda: f"must be {_TYPE_NAMES.get(expected, expected)}",
        "enum": lambda: "must be one of: " + ", ".join(str(v) for v in expected),
        "minimum": lambda: f"must be ≥ {_number(expected)}",
        "maximum": lambda: f"must be ≤ {_number(expected)}",
        "exclusiveMinimum": lambda: f"must be > {_number(expected)}",
        "exclusiveMaximum": lambda: f"must be < {_number(expected)}",
        "minLength": lambda: "must not be empty" if expected == 1 else f"must be at least {expected} characters",
        "maxLength": lambda: f"must be at most {expected} characters",
        "maxItems": lambda: f"must have at most {expected} items",
        "maxProperties": lambda: f"must have at most {expected} entries",
        "pattern": lambda: _pattern_message(expected),
        "anyOf": lambda: "must be an integer or a string" if len(expected) == 2 else "has an invalid value",
    }
    message = messages.get(kind, lambda: f"is invalid ({kind})")()
    yield Problem(format_path(parts), message)


@functools.cache
def _validator() -> Any:
    return _Validator(to_json_schema(_openapi()))


def schema_problems(obj: Mapping[str, Any]) -> list[Problem]:
    """OpenAPI-schema problems of a whole (defaulted) object."""
    problems: list[Problem] = []
    for error in _validator().iter_errors(obj):
        problems.extend(_error_problems(error))
    return problems


def _metadata_problems(obj: Mapping[str, Any]) -> list[Problem]:
    problems = []
    if obj.get("apiVersion") != API_VERSION:
        problems.append(Problem("apiVersion", f"must be {API_VERSION}"))
    if obj.get("kind") != KIND:
        problems.append(Problem("kind", f"must be {KIND}"))
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        return [*problems, Problem("metadata", "must be a mapping with a name")]
    name = metadata.get("name")
    if name is None and metadata.get("generateName") is None:
        problems.append(Problem("metadata.name", "required field is missing"))
    elif name is not None and (not isinstance(name, str) or len(name) > 253 or not re.fullmatch(DNS_SUBDOMAIN, name)):
        problems.append(Problem("metadata.name", _PATTERN_HINTS[DNS_SUBDOMAIN] + ", at most 253 characters"))
    return problems


def _pydantic_problems(spec: Any) -> list[Problem]:
    try:
        UnlearnRequestSpec.model_validate(spec)
    except ValidationError as err:
        problems = []
        for item in err.errors(include_url=False, include_input=False):
            ctx = item.get("ctx") or {}
            if item["type"] == "value_error" and ctx.get("error"):
                message = str(ctx["error"])
            elif item["type"] == "string_pattern_mismatch":
                message = _PATTERN_HINTS.get(ctx.get("pattern", ""), item["msg"])
            else:
                message = item["msg"]
            problems.append(Problem(format_path(("spec", *item["loc"])), message))
        return problems
    return []


def _covered(path: str, seen: set[str]) -> bool:
    return any(path == s or path.startswith((s + ".", s + "[")) or s.startswith((path + ".", path + "["))
               for s in seen)


def defaulted(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object as the API server would store it: no status, nulls pruned, defaults applied."""
    return apply_defaults({k: v for k, v in obj.items() if k != "status"}, _openapi())


def _encoding_problems(value: Any, parts: Parts = ()) -> Iterator[Problem]:
    """Values JSON (and so the API server) cannot carry: NaN, infinities, integers beyond int64."""
    if isinstance(value, Mapping):
        for key, child in value.items():
            yield from _encoding_problems(child, (*parts, str(key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _encoding_problems(child, (*parts, index))
    elif isinstance(value, float) and not math.isfinite(value):
        yield Problem(format_path(parts), "must be a finite number")
    elif isinstance(value, int) and not isinstance(value, bool) and not is_int64(value):
        yield Problem(format_path(parts), "must fit in a 64-bit integer")


def crd_problems(obj: Mapping[str, Any], *, old: Mapping[str, Any] | None = None) -> list[Problem]:
    """What the API server would refuse: encoding, the openAPIV3Schema and the CEL rules (not metadata)."""
    body = defaulted(obj)
    problems = list(_encoding_problems(body))
    problems += schema_problems(body)
    seen = {p.path for p in problems}
    kwargs = {"old": defaulted(old)} if isinstance(old, Mapping) else {}
    for parts, message in rule_problems(body, _openapi(), **kwargs):
        path = format_path(parts)
        if not (message.startswith(UNEVALUABLE) and _covered(path, seen)):
            problems.append(Problem(path, message))
    return problems


def validate_request(obj: Any, *, old: Mapping[str, Any] | None = None) -> list[Problem]:
    """Every problem of an UnlearnRequest (an update when ``old`` is given), sorted by path."""
    if not isinstance(obj, Mapping):
        return [Problem("(document)", "must be a Kubernetes object (a mapping)")]
    problems = _metadata_problems(obj) + crd_problems(obj, old=old)
    spec = defaulted(obj).get("spec")
    if isinstance(spec, Mapping):
        seen = {p.path for p in problems}
        problems += [p for p in _pydantic_problems(spec) if not _covered(p.path, seen)]
    return sorted(dict.fromkeys(problems), key=lambda p: p.path)

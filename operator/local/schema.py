"""Validate an UnlearnRequest against the CRD the way ``kubectl apply`` would, plus the pydantic model.

The CRD (:mod:`~forgetmi_operator.local.crd`) is the single source of truth. :func:`validate_request`
emulates the API server: it drops
``status`` (a subresource), prunes nulls, applies the schema's defaults, validates the result with
the openAPIV3Schema converted to JSON Schema (unknown fields rejected, as with kubectl's strict
field validation), evaluates the CEL rules, and finally re-validates ``spec`` with
:class:`~forgetmi_operator.api.spec.UnlearnRequestSpec`. Every problem comes back as a
:class:`Problem` (field path, message); messages never echo the offending value, which could be a
patient ID or a credential.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import jsonschema
from pydantic import ValidationError

from forgetmi_operator import KIND
from forgetmi_operator.api.patterns import DNS_SUBDOMAIN, PATTERN_HINTS, pattern_message, problem_message
from forgetmi_operator.api.spec import UnlearnRequestSpec
from forgetmi_operator.local.cel import UNEVALUABLE, Parts, is_int64, rule_problems
from forgetmi_operator.local.crd import API_VERSION, defaulted, openapi, to_json_schema

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PATIENT_HINT = re.compile(r"subject|patient", re.IGNORECASE)
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


def _number(value: float) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


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
        "pattern": lambda: pattern_message(expected),
        "anyOf": lambda: "must be an integer or a string" if len(expected) == 2 else "has an invalid value",
    }
    message = messages.get(kind, lambda: f"is invalid ({kind})")()
    yield Problem(format_path(parts), message)


@functools.cache
def _validator() -> Any:
    return _Validator(to_json_schema(openapi()))


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
        problems.append(Problem("metadata.name", PATTERN_HINTS[DNS_SUBDOMAIN] + ", at most 253 characters"))
    return problems


def _pydantic_problems(spec: Any) -> list[Problem]:
    try:
        UnlearnRequestSpec.model_validate(spec)
    except ValidationError as err:
        return [Problem(format_path(("spec", *item["loc"])), problem_message(item))
                for item in err.errors(include_url=False, include_input=False)]
    return []


def _covered(path: str, seen: set[str]) -> bool:
    return any(path == s or path.startswith((s + ".", s + "[")) or s.startswith((path + ".", path + "["))
               for s in seen)


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
    for parts, message in rule_problems(body, openapi(), **kwargs):
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

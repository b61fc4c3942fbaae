"""Evaluate a CRD's ``x-kubernetes-validations`` CEL rules the way the API server does (cel-python).

Values are converted with the schema's types (a ``number`` is a CEL double even when the YAML
says ``1``); a rule that mentions ``oldSelf`` is a transition rule, evaluated only when an old
object is given and the node exists in both (object properties and map keys correlate; list
items correlate only in ``x-kubernetes-list-type: map`` lists, by their keys). A node whose
value does not have the schema's type is skipped: schema validation reports it; so is an integer
outside int64, which JSON (and so the API server) cannot carry. A failed rule is reported at its
``fieldPath`` when it has one; a rule that cannot be evaluated (a field it reads is missing) is
reported at its own node, where the schema problem that caused it is reported too.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Mapping
from typing import Any

import celpy
from celpy import celtypes

from forgetmi_operator.api.patterns import INT64_MAX

Parts = tuple[str | int, ...]
RuleProblem = tuple[Parts, str]

UNEVALUABLE = "could not evaluate the rule"
_MISSING: Any = object()
_OLD_SELF = re.compile(r"\boldSelf\b")


class _TypeMismatch(Exception):
    """The value does not have the type its schema declares."""


@functools.cache
def _environment() -> celpy.Environment:
    limit = sys.getrecursionlimit()
    env = celpy.Environment()  # raises the process-wide recursion limit; our rules are shallow
    sys.setrecursionlimit(limit)
    return env


@functools.cache
def compile_rule(rule: str) -> Any:
    """A runnable program for one rule; raises ``celpy.CELParseError`` for a malformed rule."""
    env = _environment()
    return env.program(env.compile(rule))


def is_transition_rule(rule: str) -> bool:
    return bool(_OLD_SELF.search(rule))


def is_int64(value: Any) -> bool:
    """An integer (not a bool) that JSON, as the API server decodes it, can carry."""
    return isinstance(value, int) and not isinstance(value, bool) and -INT64_MAX - 1 <= value <= INT64_MAX


def to_cel(value: Any, schema: Mapping[str, Any]) -> Any:
    """Convert a JSON value to a CEL value using its schema's types; raises ``_TypeMismatch``.

    An integer outside int64 is a mismatch for ``integer`` and ``number`` alike: CEL cannot hold it
    and the API server's JSON decoder refuses it before any rule runs.
    """
    if schema.get("x-kubernetes-int-or-string"):
        # The server types these as dyn and compares int with string as unequal; cel-python raises on
        # such comparisons, so both become strings here (only ``4`` vs ``"4"`` is judged differently).
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise _TypeMismatch
        return celtypes.StringType(str(value))
    kind = schema.get("type")
    if kind == "string" and isinstance(value, str):
        return celtypes.StringType(value)
    if kind == "boolean" and isinstance(value, bool):
        return celtypes.BoolType(value)
    if kind == "integer" and is_int64(value):
        return celtypes.IntType(value)
    if kind == "number" and (isinstance(value, float) or is_int64(value)):
        return celtypes.DoubleType(float(value))
    if kind == "array" and isinstance(value, list):
        items = schema.get("items", {})
        return celtypes.ListType([to_cel(item, items) for item in value])
    if kind == "object" and isinstance(value, Mapping):
        properties = schema.get("properties")
        if properties is not None:
            return celtypes.MapType(
                {celtypes.StringType(k): to_cel(v, properties[k]) for k, v in value.items() if k in properties}
            )
        values = schema.get("additionalProperties", {})
        if isinstance(values, Mapping):
            return celtypes.MapType({celtypes.StringType(str(k)): to_cel(v, values) for k, v in value.items()})
        return celtypes.MapType({})
    raise _TypeMismatch


def evaluate_rule(rule: str, value: Any, schema: Mapping[str, Any], old: Any = _MISSING) -> bool | None:
    """True/False for a rule at one node; None when the value has the wrong type for its schema.

    Raises ``celpy.CELEvalError`` when the rule cannot be evaluated (a rule bug, as on a server).
    """
    try:
        activation = {"self": to_cel(value, schema)}
        if old is not _MISSING:
            activation["oldSelf"] = to_cel(old, schema)
    except _TypeMismatch:
        return None
    result = compile_rule(rule).evaluate(activation)
    if isinstance(result, celpy.CELEvalError):
        raise result
    if not isinstance(result, celtypes.BoolType):
        raise celpy.CELEvalError(f"rule {rule!r} did not return a bool")
    return bool(result)


def _field_path(field_path: str | None) -> Parts:
    return tuple(part for part in (field_path or "").split(".") if part)


def _correlate_item(item: Any, old: Any, schema: Mapping[str, Any]) -> Any:
    keys = schema.get("x-kubernetes-list-map-keys")
    if schema.get("x-kubernetes-list-type") != "map" or not keys or not isinstance(old, list):
        return _MISSING
    if not isinstance(item, Mapping):
        return _MISSING
    for candidate in old:
        if isinstance(candidate, Mapping) and all(candidate.get(k) == item.get(k) for k in keys):
            return candidate
    return _MISSING


def rule_problems(
    value: Any, schema: Mapping[str, Any], *, old: Any = _MISSING, parts: Parts = ()
) -> list[RuleProblem]:
    """Every failed rule in ``value`` and below, as (path parts, message)."""
    problems: list[RuleProblem] = []
    for entry in schema.get("x-kubernetes-validations", []):
        rule = entry["rule"]
        transition = is_transition_rule(rule)
        if transition and old is _MISSING:
            continue
        try:
            passed = evaluate_rule(rule, value, schema, old if transition else _MISSING)
        except celpy.CELEvalError:
            problems.append((parts, f"{UNEVALUABLE} {rule!r}"))
            continue
        if passed is False:
            where = parts + _field_path(entry.get("fieldPath"))
            problems.append((where, entry.get("message") or f"failed rule: {rule}"))
    kind = schema.get("type")
    if kind == "object" and isinstance(value, Mapping):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        for key, child in value.items():
            child_schema = properties.get(key) if properties is not None else additional
            if not isinstance(child_schema, Mapping):
                continue
            child_old = old.get(key, _MISSING) if isinstance(old, Mapping) else _MISSING
            problems += rule_problems(child, child_schema, old=child_old, parts=(*parts, key))
    elif kind == "array" and isinstance(value, list):
        items = schema.get("items", {})
        for index, item in enumerate(value):
            item_old = _correlate_item(item, old, schema)
            problems += rule_problems(item, items, old=item_old, parts=(*parts, index))
    return problems

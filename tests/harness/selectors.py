"""Label and field selectors as the Kubernetes API server parses them.

Label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, ``a in (x,y)``, ``a notin (x,y)``,
comma-separated (all must hold). Field selectors: ``path=value``, ``path==value``,
``path!=value`` where the path is a dotted field path (``metadata.name``, ``status.phase``,
``involvedObject.name``); a missing field compares as the empty string.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Predicate = Callable[[Mapping[str, Any]], bool]

_LABEL_TERM = re.compile(
    r"""^\s*(?:
        (?P<not>!)\s*(?P<nkey>[^\s!=(),]+)
      | (?P<skey>[^\s!=(),]+)\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\)
      | (?P<key>[^\s!=(),]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s!=(),]*)
      | (?P<exists>[^\s!=(),]+)
    )\s*$""",
    re.VERBOSE,
)


class SelectorError(ValueError):
    """A selector string that the API server would reject (answered with 400 BadRequest)."""


def _split_terms(selector: str) -> list[str]:
    """Split on commas that are not inside ``(...)`` value sets."""
    terms, depth, current = [], 0, []
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    terms.append("".join(current))
    return [term for term in terms if term.strip()]


def parse_label_selector(selector: str | None) -> Predicate:
    """Compile ``labelSelector`` into a predicate over an object (``metadata.labels``)."""
    checks: list[Callable[[Mapping[str, str]], bool]] = []
    for term in _split_terms(selector or ""):
        match = _LABEL_TERM.match(term)
        if match is None:
            raise SelectorError(f"unable to parse requirement: {term.strip()!r}")
        if match["not"]:
            checks.append(lambda labels, key=match["nkey"]: key not in labels)
        elif match["setop"]:
            values = {value.strip() for value in match["values"].split(",") if value.strip()}
            if match["setop"] == "in":
                checks.append(lambda labels, key=match["skey"], vs=values: labels.get(key) in vs)
            else:
                checks.append(lambda labels, key=match["skey"], vs=values: labels.get(key) not in vs)
        elif match["op"] in ("=", "=="):
            checks.append(lambda labels, key=match["key"], v=match["value"]: labels.get(key) == v)
        elif match["op"] == "!=":
            checks.append(lambda labels, key=match["key"], v=match["value"]: labels.get(key) != v)
        else:
            checks.append(lambda labels, key=match["exists"]: key in labels)

    def predicate(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(check(labels) for check in checks)

    return predicate


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The string form of a dotted field path, as field selectors compare it ('' if missing)."""
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return ""
        value = value[part]
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def parse_field_selector(selector: str | None) -> Predicate:
    """Compile ``fieldSelector`` into a predicate over an object."""
    checks: list[tuple[str, bool, str]] = []
    for term in _split_terms(selector or ""):
        match = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if match is None:
            raise SelectorError(f"invalid field selector: {term.strip()!r}")
        path, op, value = match.groups()
        checks.append((path, op != "!=", value))

    def predicate(obj: Mapping[str, Any]) -> bool:
        return all((field_value(obj, path) == value) == equal for path, equal, value in checks)

    return predicate


def selected_name(selector: str | None) -> str | None:
    """The ``metadata.name=X`` value of a field selector, if it pins one name (a fast path)."""
    for term in _split_terms(selector or ""):
        match = re.match(r"^\s*metadata\.name\s*==?\s*(.*?)\s*$", term)
        if match:
            return match.group(1)
    return None

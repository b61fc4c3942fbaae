"""Test helper: every CEL rule of a CRD schema, with where it sits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Parts = tuple[str | int, ...]


def all_rules(schema: Mapping[str, Any], parts: Parts = ()) -> list[tuple[Parts, dict[str, Any]]]:
    """Every rule in a schema with the path of its node (``"*"`` for list items and map values)."""
    found = [(parts, dict(entry)) for entry in schema.get("x-kubernetes-validations", [])]
    for key, child in schema.get("properties", {}).items():
        found += all_rules(child, (*parts, key))
    if isinstance(schema.get("items"), Mapping):
        found += all_rules(schema["items"], (*parts, "*"))
    if isinstance(schema.get("additionalProperties"), Mapping):
        found += all_rules(schema["additionalProperties"], (*parts, "*"))
    return found

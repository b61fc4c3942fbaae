"""The UnlearnRequest CRD as the API server reads it: its openAPIV3Schema, as JSON Schema, and its defaults.

The CRD (``crds/unlearnrequests.unlearning.forgetmi.io.yaml``; a byte-identical copy ships in the
package) is the single source of truth for what a request may say.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from forgetmi_operator import GROUP, VERSION

CRD_FILENAME = f"unlearnrequests.{GROUP}.yaml"
API_VERSION = f"{GROUP}/{VERSION}"
_REPO_CRD = Path(__file__).resolve().parents[2] / "crds" / CRD_FILENAME


@functools.cache
def load_crd() -> dict[str, Any]:
    """The CRD: from the repository checkout when there is one, else from this package."""
    if _REPO_CRD.is_file():
        return yaml.safe_load(_REPO_CRD.read_text(encoding="utf-8"))
    return yaml.safe_load(resources.files("forgetmi_operator").joinpath(CRD_FILENAME).read_text(encoding="utf-8"))


@functools.cache
def openapi() -> dict[str, Any]:
    (version,) = [v for v in load_crd()["spec"]["versions"] if v["name"] == VERSION]
    return version["schema"]["openAPIV3Schema"]


def openapi_schema() -> dict[str, Any]:
    """The openAPIV3Schema of the served version (a fresh copy each call)."""
    return copy.deepcopy(openapi())


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


def defaulted(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object as the API server would store it: no status, nulls pruned, defaults applied."""
    return apply_defaults({k: v for k, v in obj.items() if k != "status"}, openapi())

"""Server-side printing for the emulated API server: ``meta.k8s.io/v1`` Tables built from a CRD's
``additionalPrinterColumns``, as the real API server answers ``kubectl get`` (which asks with
``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``). Without it kubectl shows only NAME
and AGE for custom resources.

Like the API server: a ``Name`` column first, cells from simple ``.a.b.c`` JSONPaths (``None``
when absent, kubectl prints ``<none>``), ``date`` columns as human-readable ages; every column's
``priority`` is passed on so kubectl shows the priority > 0 ones only with ``-o wide``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

NAME_COLUMN = {"name": "Name", "type": "string", "format": "name", "priority": 0,
               "description": "Name must be unique within a namespace."}


def human_duration(seconds: float) -> str:
    """Kubernetes' ``duration.HumanDuration`` (k8s.io/apimachinery), to the day."""
    if seconds < 0:
        return "0s"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def lookup(obj: Mapping[str, Any], json_path: str) -> Any:
    """The value at a simple ``.a.b.c`` JSONPath, or None."""
    value: Any = obj
    for part in json_path.strip().lstrip(".").split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def cell(column: Mapping[str, Any], obj: Mapping[str, Any]) -> Any:
    value = lookup(obj, str(column["jsonPath"]))
    if value is None or isinstance(value, (dict, list)):
        return None if value is None else str(value)
    if column.get("type") == "date":
        try:
            then = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return "<unknown>"
        return human_duration((datetime.now(UTC) - then).total_seconds())
    return value


def table(columns: Sequence[Mapping[str, Any]], objects: Sequence[Mapping[str, Any]],
          resource_version: str) -> dict[str, Any]:
    definitions = [NAME_COLUMN] + [
        {"name": c["name"], "type": c.get("type", "string"), "format": c.get("format", ""),
         "description": c.get("description", ""), "priority": int(c.get("priority", 0))} for c in columns]
    return {
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": [{"cells": [obj["metadata"]["name"], *(cell(c, obj) for c in columns)], "object": dict(obj)}
                 for obj in objects],
    }

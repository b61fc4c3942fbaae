"""Test helper: the specs of the shipped example requests (``examples/*.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from forgetmi_operator.api.spec import UnlearnRequestSpec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example_spec(file: str) -> dict[str, Any]:
    docs = list(yaml.safe_load_all((EXAMPLES / file).read_text()))
    return next(doc for doc in docs if doc["kind"] == "UnlearnRequest")["spec"]


def full_spec() -> UnlearnRequestSpec:
    return UnlearnRequestSpec.model_validate(example_spec("unlearnrequest-full.yaml"))


def minimal_spec(**changes: Any) -> UnlearnRequestSpec:
    return UnlearnRequestSpec.model_validate({**example_spec("unlearnrequest-minimal.yaml"), **changes})

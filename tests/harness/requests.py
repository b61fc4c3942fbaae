"""UnlearnRequests for the operator's end-to-end tests: a forget-list Secret and a request on a model of
the fitted world (:mod:`harness.world`), applied straight to the emulated API server."""

from __future__ import annotations

import base64
from typing import Any

from forgetmi_trainer.manifest import read_manifest
from harness.cluster import REQUESTS, SECRETS

PASSING_GATES = [{"metric": "testAUC", "comparator": "atLeast", "threshold": 0.0, "reference": "absolute"}]
"""A gate every run passes: the tests that use it are about what happens around the decision."""


def secret(name: str, key: str, value: bytes) -> dict[str, Any]:
    """An Opaque Secret holding ``value`` under ``key``."""
    return {"metadata": {"name": name}, "type": "Opaque", "data": {key: base64.b64encode(value).decode()}}


def apply_request(api: Any, ns: str, world: dict[str, Any], model: str, name: str, subjects: list[str],
                  **changes: Any) -> None:
    """Create the Secret ``<name>-subjects`` with ``subjects`` and an Automatic request ``name`` (2 epochs,
    gates that pass, unless ``changes`` replace spec fields) to forget them from ``model``'s ``production``
    alias."""
    api.create(SECRETS, ns, secret(f"{name}-subjects", "subjects", "\n".join(subjects).encode()))
    api.create(REQUESTS, ns, {"apiVersion": "unlearning.forgetmi.io/v1alpha1", "kind": "UnlearnRequest",
                              "metadata": {"name": name}, "spec": {
        "model": {"registryUri": world["registry"], "name": model, "alias": "production"},
        "data": {"manifestUri": world["manifest"]},
        "forget": {"subjectsSecretRef": {"name": f"{name}-subjects", "key": "subjects"}},
        "method": {"epochs": 2, "batchSize": 16},
        "gates": PASSING_GATES,
        "rollout": {"mode": "Automatic"},
        **changes,
    }})


def train_subjects(world: dict[str, Any]) -> list[str]:
    """The world's training patients, sorted."""
    manifest = read_manifest(world["manifest"])
    return sorted({s for s, split in zip(manifest.subject_ids, manifest.splits, strict=True) if split == "train"})

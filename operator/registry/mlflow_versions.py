"""Versions of an MLflow Model Registry: where a version's files are, and registering a candidate.

- :func:`download_uri`: the storage location of a version's files (MLflow's
  ``get_model_version_download_uri``: a ``models:/`` or ``runs:/`` source resolved to the artifact
  store, e.g. ``s3://…/artifacts/model``), which the operator pins at accept and the trainer reads
  through the same storage settings as any other model (its files are a model directory as the
  trainer writes it, checked against the sha256 the operator pinned).
- :func:`register_candidate`: a verified candidate becomes a new version of the same registered
  model: a run under the experiment :data:`EXPERIMENT`, with the report and receipt among its
  artifacts, and the version (source: the candidate's files) tagged with the request's uid, the
  parent version, the method and the report's and receipt's sha256 (:data:`TAG_KEYS`). A retried
  handler finds the version it registered (by the request's tag) instead of registering another.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from forgetmi_operator.registry.mlflow_aliases import Registry

EXPERIMENT = "forgetmi-operator"
"""The MLflow experiment the operator's runs (one per registered candidate) are logged under."""
TAG_KEYS = ("forgetmi.request.uid", "forgetmi.parent.version", "forgetmi.method", "forgetmi.report.sha256",
            "forgetmi.receipt.sha256")
CANDIDATE_TAG = "forgetmi.candidate"
"""The version tag naming the candidate (the operator's version name, e.g. ``v1-fmi-0b3f9c2e``)."""


def download_uri(registry: Registry, name: str, version: str) -> str:
    """Where version ``version`` of ``name`` keeps its files, in the artifact store."""
    uri = registry.call(f"find the files of version {version} of registered model '{name}'",
                         registry.store.get_model_version_download_uri, name, version)
    return str(uri).rstrip("/")


def _tracking_store(registry: Registry) -> Any:
    from mlflow.store.tracking.rest_store import RestStore

    return RestStore(registry.store.get_host_creds)  # the same server, with the same credentials


def find_candidate(registry: Registry, name: str, candidate: str) -> str | None:
    """The version number already registered for ``candidate`` (None when there is none)."""
    found = registry.call(f"search the versions of registered model '{name}'", registry.store.search_model_versions,
                           f"name = '{name}' and tags.`{CANDIDATE_TAG}` = '{candidate}'")
    versions = sorted(int(v.version) for v in found)
    return str(versions[0]) if versions else None


def _experiment_id(registry: Registry, tracking: Any) -> str:
    found = registry.call(f"read experiment '{EXPERIMENT}'", tracking.get_experiment_by_name, EXPERIMENT)
    if found is not None:
        return str(found.experiment_id)
    return str(registry.call(f"create experiment '{EXPERIMENT}'", tracking.create_experiment, EXPERIMENT))


def register_candidate(registry: Registry, name: str, *, candidate: str, source: str, tags: Mapping[str, str],
                       artifacts: Mapping[str, bytes], write: Callable[[str, bytes], object]) -> str:
    """Register the candidate whose files are at ``source`` as a new version of ``name``; returns its
    version number. ``artifacts`` (file name → bytes: the report, the receipt) are written with
    ``write(uri, data)`` under the run's artifact location; ``tags`` must hold :data:`TAG_KEYS`."""
    from mlflow.entities import RunStatus, RunTag
    from mlflow.entities.model_registry import ModelVersionTag

    missing = [key for key in TAG_KEYS if key not in tags]
    if missing:
        raise ValueError(f"a candidate's version needs the tags {', '.join(missing)}")
    if (existing := find_candidate(registry, name, candidate)) is not None:
        return existing
    tracking = _tracking_store(registry)
    run = registry.call(f"start a run in experiment '{EXPERIMENT}'", tracking.create_run,
                         _experiment_id(registry, tracking), "forgetmi-operator", int(time.time() * 1000),
                         [RunTag(key, value) for key, value in tags.items()], candidate)
    for file_name, data in artifacts.items():
        write(f"{run.info.artifact_uri.rstrip('/')}/{file_name}", data)
    registry.call(f"end run {run.info.run_id}", tracking.update_run_info, run.info.run_id,
                   RunStatus.to_string(RunStatus.FINISHED), int(time.time() * 1000), candidate)
    version_tags = [ModelVersionTag(key, value) for key, value in {**tags, CANDIDATE_TAG: candidate}.items()]
    created = registry.call(f"register a version of registered model '{name}'", registry.store.create_model_version,
                             name, source, run.info.run_id, version_tags)
    return str(created.version)

"""An accepted request → the trainer's ``JobConfig`` (pure), for a Job and for a local run alike.

Subject IDs never enter it: the trainer reads the request's copy of its forget list from
``forget.file`` (where the Job mounts the copy, or where a local run keeps it). The method's
``options`` go in snake_case, as the trainer's options models name them. ``spec.audit.retrainedVersion``
becomes ``retrained``: that version of the same model, in the same registry, scored beside the candidate.
``previously_forgotten_file`` (where the copy's previously forgotten patients are, when the forget
ledger named any: docs/ledger.md) becomes ``previously_forgotten``; it carries no sha256, as ``forget``
does not: the config is a ConfigMap, and an unkeyed hash of a few patient IDs can be reversed by guessing.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from forgetmi_operator.api import naming
from forgetmi_operator.api.errors import InvalidSpec
from forgetmi_operator.api.naming import JobKind
from forgetmi_operator.api.spec import UnlearnRequestSpec
from forgetmi_operator.registry.paths import request_paths, version_uri
from forgetmi_trainer.contract import JobConfig, validation_problems


def build_job_config(spec: UnlearnRequestSpec, *, uid: str, namespace: str, name: str, base_version: str,
                     subjects_file: str, termination_message_path: str | None, kind: JobKind = "unlearn",
                     progress_path: str | None = None, previously_forgotten_file: str | None = None,
                     rebase: int = 0) -> JobConfig:
    """The trainer's config for the request's ``kind`` run from ``base_version``; raises InvalidSpec
    naming the field when the request cannot become one."""
    registry, model = spec.model.registry_uri, spec.model.name
    version = naming.candidate_version(base_version, uid, kind=kind, rebase=rebase)
    paths = request_paths(registry, model, uid, kind=kind, rebase=rebase)
    method = spec.method
    settings = method.model_dump(exclude={"seed", "options", "name"})
    raw: dict[str, Any] = {
        "request": f"{namespace}/{name}",
        "model": {"registry_uri": registry, "name": model, "version": base_version},
        "manifest_uri": spec.data.manifest_uri,
        "forget": {"file": subjects_file},
        "previously_forgotten": None if previously_forgotten_file is None else {"file": previously_forgotten_file},
        "method": {**settings, "name": "retrain" if kind == "retrain" else method.name,
                   "options": method.options.trainer_options() if kind == "unlearn" else {}},
        "output_uri": version_uri(registry, model, version),
        "report_uri": paths.report,
        "candidate_version": version,
        "seed": method.seed,
        "audit": {"retain_samples": spec.audit.retain_samples},
        "retrained": None if spec.audit.retrained_version is None else
        {"registry_uri": registry, "name": model, "version": spec.audit.retrained_version},
        "progress_uri": paths.progress,
        "progress_path": progress_path,
        "termination_message_path": termination_message_path,
    }
    try:
        return JobConfig.model_validate(raw)
    except ValidationError as err:
        raise InvalidSpec(f"UnlearnRequest {namespace}/{name} cannot be turned into a trainer config: "
                          f"{validation_problems(err)[0]}.") from err

"""Where things live in the model registry (ARCHITECTURE.md "Model registry layout"), as pure functions::

    <registry>/<name>/versions/<version>/{config.json, model.safetensors, metadata.json}
    <registry>/<name>/references/<version>/{meta.json, stats.npz}   (forgetmi-trainer references)
    <registry>/<name>/aliases/<alias>.json
    <registry>/<name>/requests/<request-uid>/{report.json, progress.json, receipt.json}

A retrain run's report and progress go to the request folder's ``retrain/`` subfolder, and the n-th
rebase's run's to ``rebase-<n>/`` (its retrain's to ``rebase-<n>/retrain/``); the receipt, one per
request, stays at its top.
"""

from __future__ import annotations

from dataclasses import dataclass

from forgetmi_operator.api.naming import JobKind
from forgetmi_trainer import storage
from forgetmi_trainer.contract.registry import alias_path, references_path, version_path

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
REPORT_FILE = "report.json"
PROGRESS_FILE = "progress.json"
RECEIPT_FILE = "receipt.json"
REFERENCES_META = "meta.json"


def version_uri(registry: str, name: str, version: str) -> str:
    return storage.join(registry, version_path(name, version))


def references_uri(registry: str, name: str, version: str) -> str:
    """The folder of a version's reference models (LiRA), beside the version directory:
    ``<registry>/<name>/references/<version>``."""
    return storage.join(registry, references_path(name, version))


def alias_uri(registry: str, name: str, alias: str) -> str:
    return storage.join(registry, alias_path(name, alias))


def request_dir_uri(registry: str, name: str, uid: str) -> str:
    return storage.join(registry, name, "requests", uid)


@dataclass(frozen=True)
class RequestPaths:
    """Where one request's artifacts live in the registry."""

    directory: str
    report: str
    progress: str
    receipt: str


def request_paths(registry_uri: str, model_name: str, uid: str, *, kind: JobKind = "unlearn",
                  rebase: int = 0) -> RequestPaths:
    """``<registry>/<model>/requests/<uid>/{report,progress,receipt}.json`` (the n-th rebase's run:
    ``…/rebase-<n>/``; a retrain's: ``…/retrain/`` below that)."""
    top = request_dir_uri(registry_uri, model_name, uid)
    run = storage.join(top, f"rebase-{rebase}") if rebase else top
    run = storage.join(run, "retrain") if kind == "retrain" else run
    return RequestPaths(directory=top, report=storage.join(run, REPORT_FILE),
                        progress=storage.join(run, PROGRESS_FILE), receipt=storage.join(top, RECEIPT_FILE))

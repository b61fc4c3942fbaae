"""A request's artifacts in the registry: the trainer's report and candidate, read and verified
byte by byte, and the receipt written next to them (blocking storage calls; run them through
:func:`~forgetmi_operator.api.errors.storage_call`).

- :func:`load_report` reads ``report.json`` as the contract's Report;
- :func:`check_lineage` makes sure the report comes from the Job this request launched;
- :func:`verify_candidate` re-hashes the candidate's weights, so a truncated or swapped upload is
  never promoted (stored metadata is never trusted);
- :func:`write_receipt` writes the receipt's bytes and returns their digest.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from pydantic import ValidationError

from forgetmi_operator.api.errors import DigestMismatch, ReportInvalid
from forgetmi_operator.api.status import ArtifactStatus, ModelVersionStatus
from forgetmi_operator.registry.paths import MODEL_FILE
from forgetmi_trainer import storage
from forgetmi_trainer.contract import Report, validation_problems
from forgetmi_trainer.errors import ObjectNotFound, StorageError, StorageUnavailable

CHUNK = 1024 * 1024


def load_report(uri: str, *, request: str | None = None) -> Report:
    """``report.json`` as the contract's Report; ``request`` (namespace/name) must match when given."""
    try:
        report = Report.model_validate_json(storage.read_bytes(uri))
    except ObjectNotFound as err:
        raise ReportInvalid(f"The trainer's report {uri} does not exist.") from err
    except ValidationError as err:
        raise ReportInvalid(f"The trainer's report {uri} is malformed: {validation_problems(err)[0]}.") from err
    if request is not None and report.request != request:
        raise ReportInvalid(f"The trainer's report {uri} belongs to {report.request}, not {request}.")
    return report


def stream_sha256(uri: str) -> str:
    """The sha256 of an object's bytes, read through (never trusting stored metadata)."""
    with tempfile.TemporaryDirectory(prefix="forgetmi-verify-") as tmp:
        path = Path(tmp) / "object"
        storage.download_file(uri, path)
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(CHUNK), b""):
                digest.update(block)
        return digest.hexdigest()


def verify_candidate(report: Report) -> ModelVersionStatus:
    """Re-hash the candidate's weights; raises DigestMismatch when they differ from the report."""
    weights = storage.join(report.candidate.uri, MODEL_FILE)
    try:
        actual = stream_sha256(weights)
    except ObjectNotFound as err:
        raise ReportInvalid(f"The candidate model {weights} named by the report does not exist.") from err
    if actual != report.candidate.sha256:
        raise DigestMismatch(f"The candidate model {weights} has sha256 {actual}, but the report says "
                             f"{report.candidate.sha256}; it was not promoted.")
    return ModelVersionStatus(version=report.candidate_version, uri=report.candidate.uri, sha256=actual)


def check_lineage(report: Report, base: ModelVersionStatus, candidate_version: str) -> None:
    """The report must come from the Job this request launched: trained from the base version pinned
    in status and named as that Job's candidate. Raises ReportInvalid otherwise, so a model built
    from another base (e.g. a Job created before an operator restart re-resolved the alias) is
    never promoted."""
    if report.base.sha256 != base.sha256:
        raise ReportInvalid(f"The trainer's report says its base model has sha256 {report.base.sha256}, but the "
                            f"request pinned version {base.version} with sha256 {base.sha256}; nothing was promoted.")
    if report.candidate_version != candidate_version:
        raise ReportInvalid(f"The trainer's report names candidate version {report.candidate_version}, but this "
                            f"request's Job builds {candidate_version}; nothing was promoted.")


def write_receipt(uri: str, data: bytes) -> ArtifactStatus:
    """Write the receipt's canonical bytes to ``uri``; returns its URI and sha256. A transient storage
    error (``StorageUnavailable``) passes through to be retried; others are ReportInvalid."""
    try:
        storage.write_bytes(uri, data)
    except StorageUnavailable:
        raise
    except StorageError as err:
        raise ReportInvalid(f"The receipt {uri} could not be written: {err}") from err
    return ArtifactStatus(uri=uri, sha256=hashlib.sha256(data).hexdigest())

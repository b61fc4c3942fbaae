"""A request's artifacts in the registry: the trainer's report and candidate, read and verified
byte by byte, and the receipt written next to them (blocking storage calls through the request's
:class:`~forgetmi_trainer.storage.Objects` handle; run them through
:func:`~forgetmi_operator.api.errors.storage_call`).

- :func:`load_report` reads ``report.json`` as the contract's Report, with the digest of the very
  bytes it parsed, and refuses one larger than the operator reads (``report_max_bytes``) unread;
- :func:`check_lineage` makes sure the report comes from the Job this request launched;
- :func:`verify_candidate` checks that the report names the version directory the operator assigned
  to this request, and hashes every file of it (:func:`~forgetmi_operator.registry.aliases.verify_version`),
  so a truncated, swapped or decoy upload is never promoted (stored metadata is never trusted);
- :func:`write_receipt` writes the receipt's bytes and returns their digest.
"""

from __future__ import annotations

import hashlib

from pydantic import ValidationError

from forgetmi_operator.api.errors import DigestMismatch, ReportInvalid
from forgetmi_operator.api.settings import REPORT_MAX_BYTES
from forgetmi_operator.api.status import ArtifactStatus, ModelVersionStatus
from forgetmi_operator.registry import aliases
from forgetmi_operator.registry.paths import MODEL_FILE, version_uri
from forgetmi_trainer.contract import Report, validation_problems
from forgetmi_trainer.errors import ObjectNotFound, StorageError, StorageUnavailable
from forgetmi_trainer.storage import Objects


def load_report(objects: Objects, uri: str, *, request: str | None = None,
                max_bytes: int = REPORT_MAX_BYTES) -> tuple[Report, ArtifactStatus]:
    """``report.json`` as the contract's Report, and the URI and sha256 of the bytes parsed;
    ``request`` (namespace/name) must match when given. A report over ``max_bytes`` is refused
    before it is read (its size from a HEAD), and the read itself stops one byte past the cap, so a
    report that grows in between is refused too: the operator never holds more than that."""
    too_large = (f"more than the {max_bytes} bytes the operator reads (chart value reportMaxBytes); nothing "
                 "was promoted.")
    try:
        size = objects.size(uri)
        if size > max_bytes:
            raise ReportInvalid(f"The trainer's report {uri} is {size} bytes, {too_large}")
        data = objects.read_at_most(uri, max_bytes + 1)
        if len(data) > max_bytes:
            raise ReportInvalid(f"The trainer's report {uri} is {too_large}")
        report = Report.model_validate_json(data)
    except ObjectNotFound as err:
        raise ReportInvalid(f"The trainer's report {uri} does not exist.") from err
    except ValidationError as err:
        raise ReportInvalid(f"The trainer's report {uri} is malformed: {validation_problems(err)[0]}.") from err
    if request is not None and report.request != request:
        raise ReportInvalid(f"The trainer's report {uri} belongs to {report.request}, not {request}.")
    return report, ArtifactStatus(uri=uri, sha256=hashlib.sha256(data).hexdigest())


def verify_candidate(objects: Objects, report: Report, *, registry: str, model: str) -> aliases.VerifiedVersion:
    """The candidate version, hashed file by file; the report must name the directory of the version
    the request's run builds (``report.candidate_version``, checked by :func:`check_lineage`) and the
    digest of its weights. Raises ReportInvalid or DigestMismatch, naming the file.

    The operator's own directory is hashed first, whatever the report names, so bytes in it that are
    not what the report states are DigestMismatch (Held) even when the report points at a decoy."""
    expected = version_uri(registry, model, report.candidate_version)
    try:
        verified = aliases.verify_version(objects, registry, model, report.candidate_version, complete=True)
    except aliases.ModelNotFound as err:
        raise ReportInvalid(f"The candidate named by the report is incomplete: {err}") from err
    except aliases.RegistryError as err:
        raise DigestMismatch(f"The candidate {expected} does not match its own record: {err} It was not "
                             "promoted.") from err
    if verified.sha256 != report.candidate.sha256:
        raise DigestMismatch(f"The candidate model {expected}/{MODEL_FILE} has sha256 {verified.sha256}, "
                             f"but the report says {report.candidate.sha256}; it was not promoted.")
    if report.candidate.uri.rstrip("/") != expected:
        raise ReportInvalid(f"The trainer's report names candidate {report.candidate.uri}, not {expected}, the "
                            "version directory the operator assigned to this request; nothing was promoted.")
    return verified


def candidate_status(verified: aliases.VerifiedVersion) -> ModelVersionStatus:
    """``status.candidateModel`` of a verified candidate."""
    return ModelVersionStatus(version=verified.version, uri=verified.uri, sha256=verified.sha256)


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


def write_receipt(objects: Objects, uri: str, data: bytes) -> ArtifactStatus:
    """Write the receipt's canonical bytes to ``uri``; returns its URI and sha256. A transient storage
    error (``StorageUnavailable``) passes through to be retried; others are ReportInvalid."""
    try:
        objects.write_bytes(uri, data)
    except StorageUnavailable:
        raise
    except StorageError as err:
        raise ReportInvalid(f"The receipt {uri} could not be written: {err}") from err
    return ArtifactStatus(uri=uri, sha256=hashlib.sha256(data).hexdigest())

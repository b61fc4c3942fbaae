"""The lifecycle steps that touch storage, shared by the Kopf handlers and ``forgetmi run``.

Each step is a plain synchronous function (handlers call them through ``asyncio.to_thread``)
that raises a domain error from :mod:`forgetmi_operator.errors` with one sentence naming the
field or object at fault:

- :func:`accept`: resolve the alias to a version (pinned from then on), check the manifest and
  the subjects object exist and every subject has training rows in the manifest (whose subject
  set :mod:`forgetmi_operator.manifests` keeps per version of the object), count the subjects
  (never logged, never stored — only the count);
- :func:`load_report` and :func:`verify_candidate`: read ``report.json`` and re-hash the
  candidate's weights, so a truncated or swapped upload is never promoted;
- :func:`promote_candidate`: move the alias with a conditional write, only while it still names
  the base version the request was accepted against;
- :func:`write_receipt`: the receipt next to the report, returning its digest.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass

from pydantic import ValidationError

from forgetmi_operator import manifests, registry
from forgetmi_operator.api import ArtifactStatus, ModelVersionStatus, UnlearnRequestSpec
from forgetmi_operator.errors import DigestMismatch, InputNotFound, PromotionConflict, ReportInvalid, SubjectsError
from forgetmi_operator.receipts import Receipt, receipt_json, receipt_sha256
from forgetmi_trainer import storage
from forgetmi_trainer.contract import Report, parse_subjects
from forgetmi_trainer.errors import ObjectNotFound, StorageError, StorageUnavailable

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Accepted:
    """What accepting a request pins: the base version and how many subjects it forgets."""

    base: ModelVersionStatus
    subject_count: int


def parse_subject_ids(text: str, where: str) -> list[str]:
    """Subject IDs from a Secret key's or object's text; the error never quotes an ID."""
    try:
        subjects = parse_subjects(text)
    except ValueError as err:
        raise SubjectsError(f"The forget subjects in {where} are malformed: {err}.") from err
    if not subjects:
        raise SubjectsError(f"The forget subjects in {where} list no patient.")
    return subjects


def read_subjects_uri(spec: UnlearnRequestSpec) -> str:
    """The text of ``forget.subjectsUri``, checked against ``forget.sha256`` when given."""
    uri = spec.forget.subjects_uri
    assert uri is not None
    try:
        raw = storage.read_bytes(uri)
    except ObjectNotFound as err:
        raise InputNotFound(f"spec.forget.subjectsUri {uri} does not exist.") from err
    if spec.forget.sha256 and hashlib.sha256(raw).hexdigest() != spec.forget.sha256:
        raise DigestMismatch(f"spec.forget.subjectsUri {uri} does not match spec.forget.sha256.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SubjectsError(f"spec.forget.subjectsUri {uri} is not UTF-8 text.") from err


def accept(spec: UnlearnRequestSpec, subjects_text: str, subjects_where: str) -> Accepted:
    """Resolve and check every input of the request; raises InputNotFound/SubjectsError."""
    model = spec.model
    try:
        resolved = registry.resolve_alias(model.registry_uri, model.name, model.alias)
    except registry.ModelNotFound as err:
        raise InputNotFound(f"spec.model: {err}") from err
    except registry.RegistryError as err:
        raise InputNotFound(f"spec.model: {err}") from err
    try:
        trained = TRAINING_SUBJECTS.get(spec.data.manifest_uri)
    except manifests.ManifestMissing as err:
        raise InputNotFound(f"spec.data.manifestUri {spec.data.manifest_uri} does not exist.") from err
    subjects = parse_subject_ids(subjects_text, subjects_where)
    if trained is not None:
        unknown = sum(1 for s in subjects if s not in trained)
        if unknown:
            raise SubjectsError(f"{unknown} of {len(subjects)} forget subjects in {subjects_where} have no training "
                                f"samples in spec.data.manifestUri {spec.data.manifest_uri}.")
    base = ModelVersionStatus(version=resolved.version, uri=resolved.uri, sha256=resolved.sha256)
    return Accepted(base=base, subject_count=len(subjects))


def training_subjects(manifest_uri: str) -> set[str] | None:
    """The subject IDs of the manifest's training rows; None when the operator cannot read the format
    (Parquet without pyarrow in the operator image: the trainer then checks, and exits 3)."""
    data = storage.read_bytes(manifest_uri)
    try:
        if manifest_uri.endswith(".parquet"):
            try:
                import pyarrow.parquet as pq
            except ImportError:
                return None
            table = pq.read_table(io.BytesIO(data), columns=["subject_id", "split"]).to_pydict()
            rows = zip(table["subject_id"], table["split"], strict=True)
        else:
            reader = csv.DictReader(io.StringIO(data.decode("utf-8")))
            missing = {"subject_id", "split"} - set(reader.fieldnames or [])
            if missing:
                raise InputNotFound(f"spec.data.manifestUri {manifest_uri} lacks the column(s) "
                                    f"{', '.join(sorted(missing))}.")
            rows = ((row["subject_id"], row["split"]) for row in reader)
        return {str(subject).strip() for subject, split in rows if str(split).strip() == "train"}
    except (UnicodeDecodeError, csv.Error, ValueError, KeyError, OSError) as err:
        raise InputNotFound(f"spec.data.manifestUri {manifest_uri} is not a readable manifest ({err}).") from err


TRAINING_SUBJECTS = manifests.TrainingSubjects(training_subjects)


def load_report(uri: str, *, request: str | None = None) -> Report:
    """``report.json`` as the contract's Report; ``request`` (namespace/name) must match when given."""
    try:
        report = Report.model_validate_json(storage.read_bytes(uri))
    except ObjectNotFound as err:
        raise ReportInvalid(f"The trainer's report {uri} does not exist.") from err
    except ValidationError as err:
        first = err.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "report"
        raise ReportInvalid(f"The trainer's report {uri} is malformed: {where}: {first['msg']}.") from err
    if request is not None and report.request != request:
        raise ReportInvalid(f"The trainer's report {uri} belongs to {report.request}, not {request}.")
    return report


def stream_sha256(uri: str) -> str:
    """The sha256 of an object's bytes, read through (never trusting stored metadata)."""
    import tempfile
    from pathlib import Path

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
    weights = storage.join(report.candidate.uri, registry.MODEL_FILE)
    try:
        actual = stream_sha256(weights)
    except ObjectNotFound as err:
        raise ReportInvalid(f"The candidate model {weights} named by the report does not exist.") from err
    if actual != report.candidate.sha256:
        raise DigestMismatch(f"The candidate model {weights} has sha256 {actual}, but the report says "
                             f"{report.candidate.sha256}; it was not promoted.")
    return ModelVersionStatus(version=report.candidate_version, uri=report.candidate.uri, sha256=actual)


def promote_candidate(spec: UnlearnRequestSpec, base: ModelVersionStatus, candidate: ModelVersionStatus,
                      request: registry.RequestRef) -> registry.AliasRecord:
    """Move ``spec.model.alias`` from ``base`` to ``candidate``; a repeat of a promotion that already
    took effect returns its record. Raises PromotionConflict when the alias names anything else."""
    model = spec.model
    try:
        current = registry.resolve_alias(model.registry_uri, model.name, model.alias)
    except registry.RegistryError as err:
        raise PromotionConflict(f"Alias '{model.alias}' of model '{model.name}' cannot be read: {err}") from err
    if current.version == candidate.version and current.record.request == request:
        return current.record
    if current.version != base.version:
        if any(old.version == candidate.version and old.request == request for old in current.record.history):
            # This request's promotion took effect (before a restart lost its status) and was then replaced.
            raise PromotionConflict(f"Alias '{model.alias}' of model '{model.name}' was moved to version "
                                    f"'{candidate.version}' by this request and has since been moved on to "
                                    f"'{current.version}'; nothing more was changed.")
        raise PromotionConflict(f"Alias '{model.alias}' of model '{model.name}' now names version "
                                f"'{current.version}', not the base version '{base.version}'; nothing was promoted.")
    try:
        return registry.promote(model.registry_uri, model.name, model.alias, new_version=candidate.version,
                                new_sha256=candidate.sha256, expected_token=current.token, request=request)
    except registry.AliasConflict as err:
        raise PromotionConflict(str(err)) from err
    except registry.RegistryError as err:
        raise DigestMismatch(str(err)) from err


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


def rollback_promotion(spec: UnlearnRequestSpec, base: ModelVersionStatus, candidate: ModelVersionStatus,
                       request: registry.RequestRef) -> str:
    """Move the alias back from ``candidate`` to ``base`` after ``request`` promoted it and the rollout
    failed; never raises. Returns a sentence saying what the alias names now."""
    model = spec.model
    where = f"Alias '{model.alias}' of model '{model.name}'"
    try:
        current = registry.resolve_alias(model.registry_uri, model.name, model.alias)
        if current.version != candidate.version or current.record.request != request:
            return f"{where} names version '{current.version}', set by someone else; it was left as it is."
        registry.promote(model.registry_uri, model.name, model.alias, new_version=base.version,
                         new_sha256=base.sha256, expected_token=current.token, request=request)
    except (registry.RegistryError, StorageError) as err:
        return f"{where} could not be moved back to version '{base.version}' ({err}); it names '{candidate.version}'."
    return f"{where} was moved back to version '{base.version}'."


def write_receipt(uri: str, receipt: Receipt) -> ArtifactStatus:
    """Write the canonical receipt bytes to ``uri``; returns its URI and sha256. A transient storage
    error (``StorageUnavailable``) passes through to be retried; others are ReportInvalid."""
    try:
        storage.write_bytes(uri, receipt_json(receipt))
    except StorageUnavailable:
        raise
    except StorageError as err:
        raise ReportInvalid(f"The receipt {uri} could not be written: {err}") from err
    return ArtifactStatus(uri=uri, sha256=receipt_sha256(receipt))

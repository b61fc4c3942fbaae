"""The unlearning receipt: a canonical JSON record of what was forgotten, how, and what was decided.

It names the request, counts the subjects and — when the operator has a key — carries an
HMAC-SHA256 of their sorted IDs, so an auditor holding the key and the list can check which
patients a receipt covers while the receipt itself reveals none (a plain hash of low-entropy
patient IDs could be reversed by trying them all, so without a key there is no digest at all).
``receipt_json`` is canonical (sorted keys, fixed separators, UTF-8), so its sha256 is
reproducible from the same inputs.

With a signing key (:func:`signing_key`: the operator namespace's Secret ``receipt_signing_secret_name``,
or ``forgetmi run --signing-key-file``) the stored receipt is a DSSE envelope around an in-toto
Statement whose predicate is the receipt and whose subjects are the base and candidate models'
digests (:func:`stored_receipt`, :mod:`~forgetmi_operator.lifecycle.signing`); without one, the
plain receipt JSON as before. Either way ``status.receipt.sha256`` is the sha256 of the stored
bytes, and :func:`read_stored` reads both back.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from forgetmi_operator import __version__
from forgetmi_operator.api.errors import SecretNotFound, SettingsInvalid
from forgetmi_operator.api.patterns import RolloutMode
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.api.status import GateStatus, MetricsStatus
from forgetmi_operator.lifecycle import signing
from forgetmi_operator.lifecycle.decisions import Decision
from forgetmi_operator.lifecycle.ports import SecretStore
from forgetmi_operator.lifecycle.subjects import read_secret_key
from forgetmi_trainer.contract import SCHEMA_VERSION, SHA256_PATTERN, validation_problems

HMAC_ALGORITHM = "HMAC-SHA256"
Digested = BaseModel | Mapping[str, Any]
"""A model with ``uri``/``sha256`` (and ``version`` for models), e.g. ``api.ModelVersionStatus``, or such a mapping."""
RECEIPT_KIND = "UnlearnReceipt"


def subjects_hmac(subjects: Sequence[str], key: bytes | None) -> str | None:
    """Hex HMAC-SHA256 over the sorted, de-duplicated subject IDs joined by ``\\n`` (UTF-8);
    None without a key (or with an empty one)."""
    if not key:
        return None
    message = "\n".join(sorted(set(subjects))).encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True,
                              from_attributes=True, frozen=True)


class RequestInfo(_Record):
    uid: str
    name: str
    namespace: str


class SubjectsInfo(_Record):
    count: int = Field(ge=0)
    hmac: str | None = Field(default=None, pattern=SHA256_PATTERN)
    algorithm: str | None = None


class ModelDigest(_Record):
    version: str
    uri: str
    sha256: str = Field(pattern=SHA256_PATTERN)


class ArtifactDigest(_Record):
    uri: str
    sha256: str = Field(pattern=SHA256_PATTERN)


class Promotion(_Record):
    """The alias move, when the decision was Promote."""

    alias: str
    version: str
    previous: str | None = None
    moved_on_to: str | None = Field(default=None, description=(
        "The version the alias named when the receipt was written, when another promotion had moved it on "
        "since this one (an operator restart came between this promotion and its receipt)."))


class BatchInfo(_Record):
    """The batch of coalesced requests the request ran in (docs/coalescing.md): the Job, report and
    candidate are the leader's, shared by every request of the batch."""

    job: str
    own_count: int = Field(ge=0, exclude=True, description="Subjects of the request's own list (its receipt's count).")
    leader: RequestInfo
    requests: list[RequestInfo]
    subject_count: int = Field(ge=0, description="Subjects of the union of the batch's forget lists.")
    withdrawn: list[RequestInfo] = Field(default_factory=list, description=(
        "Requests of the batch deleted after its Job was created: their patients are in the forget set still."))


class NotPromoted(_Record):
    """Why a request ended without its candidate promoted: the condition reason and its sentence."""

    reason: str
    message: str


class Timestamps(_Record):
    created: str = Field(description="When the request was created (RFC 3339).")
    completed: str = Field(description="When the decision was taken (RFC 3339).")


class Receipt(_Record):
    schema_version: str = SCHEMA_VERSION
    kind: str = RECEIPT_KIND
    request: RequestInfo
    subjects: SubjectsInfo
    method: str
    mode: RolloutMode
    base: ModelDigest
    candidate: ModelDigest
    report: ArtifactDigest
    metrics: MetricsStatus
    gates: list[GateStatus]
    decision: Decision
    promotion: Promotion | None = None
    timestamps: Timestamps
    operator_version: str
    batch: BatchInfo | None = None
    not_promoted: NotPromoted | None = None
    rebases: int = Field(default=0, ge=0, description="Times the request was rebased before this decision.")


def build_receipt(*, uid: str, name: str, namespace: str, subject_count: int, subjects_digest: str | None,
                  method: str, mode: RolloutMode, base: Digested, candidate: Digested, report: Digested,
                  metrics: MetricsStatus, gates: Sequence[GateStatus], decision: Decision, created: str,
                  completed: str, promotion: Promotion | None = None,
                  operator_version: str = __version__, batch: BatchInfo | None = None,
                  not_promoted: NotPromoted | None = None, rebases: int = 0) -> Receipt:
    """The receipt of one request. ``base``/``candidate`` are anything with ``version``, ``uri`` and
    ``sha256`` (e.g. ``api.ModelVersionStatus``) or such a mapping; ``report`` likewise with ``uri``
    and ``sha256``. ``subjects_digest`` is :func:`subjects_hmac`'s result."""
    return Receipt(
        request=RequestInfo(uid=uid, name=name, namespace=namespace),
        subjects=SubjectsInfo(count=subject_count, hmac=subjects_digest,
                              algorithm=HMAC_ALGORITHM if subjects_digest else None),
        method=method,
        mode=mode,
        base=ModelDigest.model_validate(base),
        candidate=ModelDigest.model_validate(candidate),
        report=ArtifactDigest.model_validate(report),
        metrics=metrics,
        gates=list(gates),
        decision=decision,
        promotion=promotion,
        timestamps=Timestamps(created=created, completed=completed),
        operator_version=operator_version,
        batch=batch,
        not_promoted=not_promoted,
        rebases=rebases,
    )


def receipt_json(receipt: Receipt) -> bytes:
    """Canonical bytes: camelCase keys sorted, two-space indent, UTF-8, NaN as null, final newline."""
    data = json.loads(receipt.model_dump_json(by_alias=True))
    for key, absent in (("batch", None), ("notPromoted", None), ("rebases", 0)):
        if data.get(key) == absent:  # a field a receipt without it never had: left out, as before it existed
            data.pop(key, None)
    if isinstance(data.get("promotion"), dict) and data["promotion"].get("movedOnTo") is None:
        data["promotion"].pop("movedOnTo", None)
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def receipt_sha256(receipt: Receipt) -> str:
    """sha256 of :func:`receipt_json` (what ``status.receipt.sha256`` records)."""
    return hashlib.sha256(receipt_json(receipt)).hexdigest()


def statement_subjects(receipt: Receipt, model: str) -> list[tuple[str, str]]:
    """The Statement's subjects: ``<model>@<version>`` of the base, then of the candidate, with their sha256."""
    return [(f"{model}@{receipt.base.version}", receipt.base.sha256),
            (f"{model}@{receipt.candidate.version}", receipt.candidate.sha256)]


def receipt_statement(receipt: Receipt, model: str) -> dict[str, Any]:
    """The in-toto Statement v1 of a receipt (predicate: the receipt's JSON)."""
    return signing.statement(json.loads(receipt_json(receipt)), statement_subjects(receipt, model))


def stored_receipt(receipt: Receipt, *, model: str, signing_key: bytes | None) -> bytes:
    """The bytes written to ``receipt.json``: the DSSE envelope of :func:`receipt_statement` signed
    with ``signing_key`` (PEM PKCS#8 Ed25519), or :func:`receipt_json` without a key."""
    if not signing_key:
        return receipt_json(receipt)
    payload = signing.canonical_json(receipt_statement(receipt, model))
    return signing.envelope_json(signing.sign_envelope(payload, signing_key))


class StoredReceipt(BaseModel):
    """A stored receipt read back (signature unchecked): the receipt, and for a signed one its
    envelope and Statement."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    receipt: Receipt
    envelope: dict[str, Any] | None = None
    statement: dict[str, Any] | None = None


def read_stored(data: bytes) -> StoredReceipt:
    """Parse a stored receipt, signed or plain; ValueError with one sentence when it is neither."""
    try:
        parsed = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"it is not JSON ({err})") from err
    envelope = statement = None
    predicate = parsed
    if signing.is_envelope(parsed):
        envelope = parsed
        try:
            statement = json.loads(signing.envelope_payload(parsed))
        except (signing.SigningError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"its envelope's payload is not a JSON Statement ({err})") from err
        if not isinstance(statement, dict) or statement.get("_type") != signing.STATEMENT_TYPE:
            raise ValueError(f"its payload is not an in-toto Statement ({signing.STATEMENT_TYPE})")
        if statement.get("predicateType") != signing.PREDICATE_TYPE:
            raise ValueError(f"its predicateType is {statement.get('predicateType')!r}, not {signing.PREDICATE_TYPE}")
        predicate = statement.get("predicate")
    try:
        receipt = Receipt.model_validate(predicate)
    except ValidationError as err:
        raise ValueError(f"it is not a receipt: {validation_problems(err)[0]}") from err
    return StoredReceipt(receipt=receipt, envelope=envelope, statement=statement)


async def signing_key(store: SecretStore, settings: Settings) -> bytes | None:
    """The receipt signing key (PEM PKCS#8 Ed25519) from the operator namespace's Secret, checked to
    load; None when none is configured."""
    if not settings.receipt_signing_secret_name:
        return None
    name, key = settings.receipt_signing_secret_name, settings.receipt_signing_secret_key
    if not settings.operator_namespace:
        raise SecretNotFound(f"FORGETMI_OPERATOR_NAMESPACE is empty, so the receipt signing Secret {name} cannot "
                             "be located.")
    pem = await read_secret_key(store, settings.operator_namespace, name, key)
    try:
        signing.load_private_key(pem)
    except signing.SigningError as err:
        raise SettingsInvalid(f"Secret {settings.operator_namespace}/{name} key {key!r}: {err}") from err
    return pem

"""The unlearning receipt: a canonical JSON record of what was forgotten, how, and what was decided.

It names the request, counts the subjects and — when the operator has a key — carries an
HMAC-SHA256 of their sorted IDs, so an auditor holding the key and the list can check which
patients a receipt covers while the receipt itself reveals none (a plain hash of low-entropy
patient IDs could be reversed by trying them all, so without a key there is no digest at all).
``receipt_json`` is canonical (sorted keys, fixed separators, UTF-8), so its sha256 is
reproducible from the same inputs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from forgetmi_operator import __version__
from forgetmi_operator.api.patterns import RolloutMode
from forgetmi_operator.api.status import GateStatus, MetricsStatus
from forgetmi_operator.lifecycle.decisions import Decision
from forgetmi_trainer.contract import SCHEMA_VERSION, SHA256_PATTERN

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


def build_receipt(*, uid: str, name: str, namespace: str, subject_count: int, subjects_digest: str | None,
                  method: str, mode: RolloutMode, base: Digested, candidate: Digested, report: Digested,
                  metrics: MetricsStatus, gates: Sequence[GateStatus], decision: Decision, created: str,
                  completed: str, promotion: Promotion | None = None,
                  operator_version: str = __version__) -> Receipt:
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
    )


def receipt_json(receipt: Receipt) -> bytes:
    """Canonical bytes: camelCase keys sorted, two-space indent, UTF-8, NaN as null, final newline."""
    data = json.loads(receipt.model_dump_json(by_alias=True))
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def receipt_sha256(receipt: Receipt) -> str:
    """sha256 of :func:`receipt_json` (what ``status.receipt.sha256`` records)."""
    return hashlib.sha256(receipt_json(receipt)).hexdigest()

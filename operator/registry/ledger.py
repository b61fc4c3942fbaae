"""The forget ledger of a model (docs/ledger.md): one entry per promoted erasure, append-only, hash-chained::

    <registry>/<name>/ledger/00000000.json, 00000001.json, ...

Entry N is written with a create-only conditional write (``Objects.write_if`` with no expected token:
S3 ``If-None-Match: *``, a locked create on file://), so two writers can never both write N: the one
that loses re-reads the ledger and appends at the next number (:func:`append`). Each entry records
the sha256 of the previous entry's bytes (``previous_sha256``), so an entry that is edited, removed
or inserted breaks the chain, and :func:`read_ledger` refuses the whole ledger naming the entry.

Patients appear only as keyed digests: HMAC-SHA256 of each subject ID under the ledger key
(:func:`subject_digest`), never a raw ID and never an unkeyed hash (a patient ID is short and
guessable, so a plain sha256 of one can be reversed by trying them all).

Reads are bounded, so a ledger cannot exhaust the operator: at most :data:`MAX_ENTRIES` entries,
:data:`ENTRY_MAX_BYTES` each and :data:`LEDGER_MAX_BYTES` in all; a larger ledger is refused
(:class:`LedgerError`), never read in part. Blocking storage calls, through the caller's
:class:`~forgetmi_trainer.storage.Objects` handle.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from forgetmi_operator.registry.aliases import RegistryError
from forgetmi_trainer import storage
from forgetmi_trainer.contract import now, validation_problems
from forgetmi_trainer.contract.formats import SHA256_PATTERN, VERSION_PATTERN
from forgetmi_trainer.contract.registry import RequestRef
from forgetmi_trainer.errors import PreconditionFailed
from forgetmi_trainer.storage import Objects

LEDGER_DIR = "ledger"
ENTRY_NAME = re.compile(r"^(\d{8})\.json$")
MAX_ENTRIES = 10_000
"""The most entries the operator reads of one model's ledger (one per promoted erasure)."""
ENTRY_MAX_BYTES = 40 * 1024 * 1024
"""The most bytes of one entry: a forget list fills at most a 1 MiB Secret (≤ 524,288 IDs), and an
entry spends 67 bytes per digest, so any list the operator accepts fits."""
LEDGER_MAX_BYTES = 64 * 1024 * 1024
"""The most bytes the operator reads of one ledger in all (≈ 1M digests, ≈ 150 MB held in memory)."""
APPEND_ATTEMPTS = 8
"""Appends tried at successive numbers when other writers take them first."""


class LedgerError(RegistryError):
    """The ledger is malformed, its chain is broken, or it is larger than the operator reads."""


class LedgerEntry(BaseModel):
    """One promoted erasure: who asked, which patients (keyed digests), from which version to which."""

    model_config = ConfigDict(extra="forbid")

    seq: int = Field(ge=0)
    request: RequestRef
    digests: list[str] = Field(description="HMAC-SHA256 (hex) of each subject ID under the ledger key, sorted.")
    count: int = Field(ge=0)
    base_version: str = Field(pattern=VERSION_PATTERN)
    candidate_version: str = Field(pattern=VERSION_PATTERN)
    time: str
    previous_sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)

    @model_validator(mode="after")
    def _canonical(self) -> LedgerEntry:
        if any(not re.fullmatch(SHA256_PATTERN, digest) for digest in self.digests):
            raise ValueError("digests must be hex HMAC-SHA256 values")
        if self.digests != sorted(set(self.digests)) or self.count != len(self.digests):
            raise ValueError("digests must be sorted and unique, and count their number")
        return self

    def to_json_bytes(self) -> bytes:
        return (self.model_dump_json(by_alias=True) + "\n").encode("utf-8")


def subject_digest(key: bytes, subject_id: str) -> str:
    """The ledger's name for a patient: HMAC-SHA256 of the subject ID (UTF-8) under ``key``, hex."""
    if not key:
        raise ValueError("the ledger key must not be empty")
    return hmac.new(key, subject_id.encode("utf-8"), hashlib.sha256).hexdigest()


def digests_of(key: bytes, subjects: Iterable[str]) -> list[str]:
    """The sorted, unique digests of ``subjects`` under ``key`` (what an entry records)."""
    return sorted({subject_digest(key, subject) for subject in subjects})


def ledger_uri(registry: str, name: str) -> str:
    return storage.join(registry, name, LEDGER_DIR)


def entry_uri(registry: str, name: str, seq: int) -> str:
    return storage.join(ledger_uri(registry, name), f"{seq:08d}.json")


def _entry_numbers(objects: Objects, registry: str, name: str) -> list[int]:
    folder = ledger_uri(registry, name)
    numbers = []
    for uri in objects.list_uris(folder):
        match = ENTRY_NAME.match(uri[len(folder):].lstrip("/"))
        if match is None:
            raise LedgerError(f"The ledger of model '{name}' ({folder}) holds {uri}, which is not a ledger entry.")
        numbers.append(int(match.group(1)))
    numbers.sort()
    if len(numbers) > MAX_ENTRIES:
        raise LedgerError(f"The ledger of model '{name}' holds {len(numbers)} entries, more than the {MAX_ENTRIES} "
                          "the operator reads; nothing was read.")
    for expected, number in enumerate(numbers):
        if number != expected:
            raise LedgerError(f"The ledger of model '{name}' has no entry {expected:08d} (the next is {number:08d}): "
                              "an entry was removed; its chain is broken.")
    return numbers


def _parse(data: bytes, uri: str, seq: int, previous: str | None) -> LedgerEntry:
    if len(data) > ENTRY_MAX_BYTES:
        raise LedgerError(f"Ledger entry {uri} is larger than {ENTRY_MAX_BYTES} bytes; it is not a ledger entry.")
    try:
        entry = LedgerEntry.model_validate_json(data)
    except ValidationError as err:
        raise LedgerError(f"Ledger entry {uri} is malformed: {validation_problems(err)[0]}.") from err
    if entry.seq != seq:
        raise LedgerError(f"Ledger entry {uri} records seq {entry.seq}; it was moved or copied: the chain is broken.")
    if entry.previous_sha256 != previous:
        raise LedgerError(f"Ledger entry {uri} does not chain to the entry before it (previous_sha256 differs): an "
                          "entry was edited or replaced; the chain is broken.")
    return entry


def _read(objects: Objects, registry: str, name: str) -> tuple[list[LedgerEntry], str | None]:
    """The entries, checked, and the sha256 of the last one's bytes (None for an empty ledger)."""
    entries: list[LedgerEntry] = []
    previous: str | None = None
    total = 0
    for seq in _entry_numbers(objects, registry, name):
        uri = entry_uri(registry, name, seq)
        data = objects.read_at_most(uri, ENTRY_MAX_BYTES + 1)
        total += len(data)
        if total > LEDGER_MAX_BYTES:
            raise LedgerError(f"The ledger of model '{name}' is larger than {LEDGER_MAX_BYTES} bytes, more than the "
                              "operator reads; nothing was used.")
        entries.append(_parse(data, uri, seq, previous))
        previous = hashlib.sha256(data).hexdigest()
    return entries, previous


def read_ledger(objects: Objects, registry: str, name: str) -> list[LedgerEntry]:
    """Every entry of the model's ledger in order ([] when it has none); LedgerError naming the entry
    when one is malformed, missing, edited or out of place (the chain is broken), or the ledger is
    larger than the operator reads."""
    return _read(objects, registry, name)[0]


def forgotten_digests(entries: Iterable[LedgerEntry]) -> frozenset[str]:
    """Every patient digest the ledger records as forgotten."""
    return frozenset(digest for entry in entries for digest in entry.digests)


def holds_request(entries: Iterable[LedgerEntry], uid: str) -> bool:
    """Whether the request with ``uid`` has its entry."""
    return any(entry.request.uid == uid for entry in entries)


def entry_of(entries: Iterable[LedgerEntry], uid: str) -> LedgerEntry | None:
    return next((entry for entry in entries if entry.request.uid == uid), None)


def append(objects: Objects, registry: str, name: str, *, request: RequestRef, digests: Sequence[str],
           base_version: str, candidate_version: str) -> LedgerEntry:
    """Append the entry of ``request`` (its subjects' digests, from ``subject_digest``) and return it.
    Once per request: when the ledger holds it already (a repeated conclusion, or a write whose reply
    was lost) that entry is returned. Another writer taking the next number first makes this one re-read
    and try the number after (at most :data:`APPEND_ATTEMPTS` times)."""
    unique = sorted(set(digests))
    for _ in range(APPEND_ATTEMPTS):
        entries, previous = _read(objects, registry, name)
        if (found := entry_of(entries, request.uid)) is not None:
            return found
        entry = LedgerEntry(seq=len(entries), request=request, digests=unique, count=len(unique),
                            base_version=base_version, candidate_version=candidate_version, time=now(),
                            previous_sha256=previous)
        data = entry.to_json_bytes()
        if len(data) > ENTRY_MAX_BYTES:
            raise LedgerError(f"The ledger entry of {request.namespace}/{request.name} takes {len(data)} bytes, more "
                              f"than the {ENTRY_MAX_BYTES} a ledger entry may.")
        try:
            objects.write_if(entry_uri(registry, name, entry.seq), data, expected_token=None)
        except PreconditionFailed:
            continue  # another writer took this number: read again, append after it
        return entry
    raise LedgerError(f"The ledger of model '{name}' kept changing: {APPEND_ATTEMPTS} attempts to append the entry "
                      f"of {request.namespace}/{request.name} found their number taken.")


def undescended(lineage: Sequence[str], entries: Iterable[LedgerEntry]) -> LedgerEntry | None:
    """The first erasure whose candidate is not in ``lineage`` (a version and its ancestors,
    :func:`~forgetmi_operator.registry.aliases.lineage`): a version with that lineage predates it or
    branches off before it, so it was trained on the patients that erasure forgot. None when it
    descends from every one."""
    ancestors = set(lineage)
    return next((entry for entry in entries if entry.candidate_version not in ancestors), None)

"""registry.ledger: the per-model forget ledger — append and read back, a lost race appends at the next
number, a request is recorded once, an edited / removed / reordered entry breaks the chain, and the bytes
hold keyed digests only (never an ID, never an unkeyed hash); on file:// and on moto S3."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from forgetmi_operator.registry import ledger
from forgetmi_trainer import storage
from forgetmi_trainer.contract.registry import RequestRef
from forgetmi_trainer.storage import DEFAULT

KEY = b"ledger-test-key\n"
MODEL = "cxr"
PATIENTS = ["P001", "P002", "P003"]


def _ref(name: str) -> RequestRef:
    return RequestRef(namespace="radiology", name=name, uid=f"uid-{name}")


def _append(registry: str, name: str, subjects: list[str], base: str, candidate: str) -> ledger.LedgerEntry:
    return ledger.append(DEFAULT, registry, MODEL, request=_ref(name), digests=ledger.digests_of(KEY, subjects),
                         base_version=base, candidate_version=candidate)


@pytest.fixture(params=["file", "s3"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return f"file://{tmp_path}/registry"
    bucket = request.getfixturevalue("s3_bucket")
    return f"{bucket}/registry"


def test_entries_append_in_order_and_chain(registry: str) -> None:
    first = _append(registry, "a", PATIENTS[:2], "v1", "v1-a")
    second = _append(registry, "b", PATIENTS[1:], "v1-a", "v1-a-b")
    entries = ledger.read_ledger(DEFAULT, registry, MODEL)
    assert entries == [first, second] and [e.seq for e in entries] == [0, 1]
    assert first.previous_sha256 is None
    first_bytes = storage.read_bytes(ledger.entry_uri(registry, MODEL, 0))
    assert second.previous_sha256 == hashlib.sha256(first_bytes).hexdigest()
    assert first.count == 2 and first.digests == sorted(ledger.subject_digest(KEY, p) for p in PATIENTS[:2])
    assert ledger.forgotten_digests(entries) == {ledger.subject_digest(KEY, p) for p in PATIENTS}
    assert ledger.holds_request(entries, "uid-a") and not ledger.holds_request(entries, "uid-c")


def test_a_request_is_appended_once(registry: str) -> None:
    first = _append(registry, "a", PATIENTS, "v1", "v1-a")
    again = _append(registry, "a", PATIENTS, "v1", "v1-a")
    assert again == first and len(ledger.read_ledger(DEFAULT, registry, MODEL)) == 1


def test_a_writer_that_loses_the_number_appends_at_the_next(registry: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between this writer's read and its create-only write, another writer takes entry 0."""
    real_read = ledger._read
    raced = []

    def read_then_race(objects: storage.Objects, reg: str, name: str) -> tuple[list[ledger.LedgerEntry], str | None]:
        found = real_read(objects, reg, name)
        if not raced:
            raced.append(True)
            monkeypatch.setattr(ledger, "_read", real_read)
            _append(reg, "other", ["P009"], "v1", "v1-other")  # lands at 0 first
        return found

    monkeypatch.setattr(ledger, "_read", read_then_race)
    mine = _append(registry, "a", PATIENTS, "v1", "v1-a")
    entries = ledger.read_ledger(DEFAULT, registry, MODEL)
    assert mine.seq == 1 and [e.request.name for e in entries] == ["other", "a"]
    assert entries[1].previous_sha256 == hashlib.sha256(
        storage.read_bytes(ledger.entry_uri(registry, MODEL, 0))).hexdigest()


def test_an_edited_entry_breaks_the_chain(registry: str) -> None:
    _append(registry, "a", PATIENTS[:1], "v1", "v1-a")
    _append(registry, "b", PATIENTS[1:], "v1-a", "v1-a-b")
    uri = ledger.entry_uri(registry, MODEL, 0)
    edited = json.loads(storage.read_bytes(uri))
    edited["candidate_version"] = "v1"  # still a valid entry, but not the one entry 1 chained to
    storage.write_bytes(uri, (json.dumps(edited) + "\n").encode())
    with pytest.raises(ledger.LedgerError, match=r"00000001\.json does not chain"):
        ledger.read_ledger(DEFAULT, registry, MODEL)


def test_a_removed_entry_breaks_the_chain(registry: str) -> None:
    for name in "abc":
        _append(registry, name, PATIENTS, "v1", f"v1-{name}")
    storage.delete(ledger.entry_uri(registry, MODEL, 1))
    with pytest.raises(ledger.LedgerError, match="no entry 00000001"):
        ledger.read_ledger(DEFAULT, registry, MODEL)
    storage.delete(ledger.entry_uri(registry, MODEL, 2))  # removing the last entry: the chain cannot tell,
    assert [e.seq for e in ledger.read_ledger(DEFAULT, registry, MODEL)] == [0]  # the alias history does (verify)


def test_a_moved_entry_and_a_stray_object_are_refused(registry: str) -> None:
    _append(registry, "a", PATIENTS, "v1", "v1-a")
    storage.write_bytes(ledger.entry_uri(registry, MODEL, 1), storage.read_bytes(ledger.entry_uri(registry, MODEL, 0)))
    with pytest.raises(ledger.LedgerError, match="records seq 0"):
        ledger.read_ledger(DEFAULT, registry, MODEL)
    storage.delete(ledger.entry_uri(registry, MODEL, 1))
    storage.write_bytes(storage.join(ledger.ledger_uri(registry, MODEL), "notes.txt"), b"x")
    with pytest.raises(ledger.LedgerError, match="not a ledger entry"):
        ledger.read_ledger(DEFAULT, registry, MODEL)


def test_an_empty_ledger_reads_as_no_entries(registry: str) -> None:
    assert ledger.read_ledger(DEFAULT, registry, MODEL) == []


def test_the_bytes_hold_keyed_digests_only(registry: str) -> None:
    _append(registry, "a", PATIENTS, "v1", "v1-a")
    data = storage.read_bytes(ledger.entry_uri(registry, MODEL, 0)).decode()
    assert not any(p in data for p in PATIENTS)
    assert not any(hashlib.sha256(p.encode()).hexdigest() in data for p in PATIENTS)  # no unkeyed hash
    assert not any(hashlib.sha256(f"{p}\n".encode()).hexdigest() in data for p in PATIENTS)
    assert ledger.subject_digest(KEY, "P001") in data
    assert ledger.subject_digest(b"another key", "P001") != ledger.subject_digest(KEY, "P001")


def test_an_oversized_ledger_is_refused_unread(registry: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _append(registry, "a", PATIENTS, "v1", "v1-a")
    _append(registry, "b", PATIENTS, "v1-a", "v1-a-b")
    monkeypatch.setattr(ledger, "MAX_ENTRIES", 1)
    with pytest.raises(ledger.LedgerError, match="more than the 1"):
        ledger.read_ledger(DEFAULT, registry, MODEL)
    monkeypatch.setattr(ledger, "MAX_ENTRIES", 10)
    monkeypatch.setattr(ledger, "LEDGER_MAX_BYTES", 500)
    with pytest.raises(ledger.LedgerError, match="larger than 500 bytes"):
        ledger.read_ledger(DEFAULT, registry, MODEL)


def test_an_entry_must_be_canonical() -> None:
    digest = ledger.subject_digest(KEY, "P001")
    fields = {"seq": 0, "request": _ref("a"), "base_version": "v1", "candidate_version": "v2", "time": "t"}
    with pytest.raises(ValueError, match="sorted and unique"):
        ledger.LedgerEntry(**fields, digests=[digest, digest], count=2)
    with pytest.raises(ValueError, match="hex HMAC"):
        ledger.LedgerEntry(**fields, digests=["P001"], count=1)

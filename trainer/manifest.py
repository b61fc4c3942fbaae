"""Dataset manifests: the schema, parsing and validation, and the forget/retain/test split.

A manifest (CSV or Parquet) has the columns ``sample_id, subject_id, image_uri, report_text,
label, split``; ``split`` is ``train`` or ``test``. Selection is by patient: the forget set is
every training sample of the given subjects. Images are read by :mod:`forgetmi_trainer.data`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from forgetmi_trainer import storage
from forgetmi_trainer.errors import InputError

MANIFEST_COLUMNS = ("sample_id", "subject_id", "image_uri", "report_text", "label", "split")
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Manifest:
    sample_ids: list[str]
    subject_ids: list[str]
    image_uris: list[str]
    texts: list[str]
    labels: np.ndarray  # (N,) int64
    splits: list[str]

    def __len__(self) -> int:
        return len(self.sample_ids)


def parse_manifest(data: bytes, uri: str) -> Manifest:
    """Validate a manifest's bytes; every error names the column or row at fault."""
    rows = _parquet_rows(data, uri) if uri.endswith(".parquet") else _csv_rows(data, uri)
    if not rows:
        raise InputError(f"Manifest {uri} has no rows.")
    columns: dict[str, list[str]] = {c: [] for c in MANIFEST_COLUMNS}
    for i, row in enumerate(rows, start=1):
        for column in MANIFEST_COLUMNS:
            value = str(row.get(column) if row.get(column) is not None else "").strip()
            if not value and column != "report_text":
                raise InputError(f"Manifest {uri} row {i} has an empty {column}.")
            columns[column].append(value)
    try:
        labels = np.asarray([int(v) for v in columns["label"]], dtype=np.int64)
    except ValueError as err:
        raise InputError(f"Manifest {uri} column label must hold integers ({err}).") from err
    if labels.min() < 0:
        raise InputError(f"Manifest {uri} column label holds a negative class.")
    bad_split = next((i for i, s in enumerate(columns["split"], start=1) if s not in SPLITS), None)
    if bad_split is not None:
        raise InputError(
            f"Manifest {uri} row {bad_split} has split {columns['split'][bad_split - 1]!r}; expected train or test."
        )
    if len(set(columns["sample_id"])) != len(rows):
        raise InputError(f"Manifest {uri} column sample_id holds duplicates.")
    return Manifest(
        sample_ids=columns["sample_id"],
        subject_ids=columns["subject_id"],
        image_uris=columns["image_uri"],
        texts=columns["report_text"],
        labels=labels,
        splits=columns["split"],
    )


def _csv_rows(data: bytes, uri: str) -> list[dict[str, str]]:
    try:
        reader = csv.DictReader(io.StringIO(data.decode("utf-8")))
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"Manifest {uri} lacks the column(s) {', '.join(missing)}.")
        return list(reader)
    except (UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"Manifest {uri} is not a readable CSV file ({err}).") from err


def _parquet_rows(data: bytes, uri: str) -> list[dict[str, str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"Manifest {uri} is not a readable Parquet file ({err}).") from err
    missing = [c for c in MANIFEST_COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(f"Manifest {uri} lacks the column(s) {', '.join(missing)}.")
    return table.select(list(MANIFEST_COLUMNS)).to_pylist()


def read_manifest(uri: str) -> Manifest:
    return parse_manifest(storage.read_bytes(uri), uri)


@dataclass(frozen=True)
class Split:
    """Indices into the manifest of the forget (D_f), retain (D_r) and test (D_t) sets."""

    forget: np.ndarray
    retain: np.ndarray
    test: np.ndarray
    subjects: int


def split(manifest: Manifest, forget_subjects: list[str]) -> Split:
    """Resolve the sets by patient. Raises :class:`InputError` (without naming any patient) when
    forget subjects have no training samples or the forget set is empty."""
    train_subjects = {s for s, sp in zip(manifest.subject_ids, manifest.splits, strict=True) if sp == "train"}
    unknown = [s for s in forget_subjects if s not in train_subjects]
    if unknown:
        raise InputError(
            f"{len(unknown)} of {len(forget_subjects)} forget subjects have no training samples in the manifest."
        )
    if not forget_subjects:
        raise InputError("The forget set is empty: the subjects file lists no patient.")
    forget_set = set(forget_subjects)
    subj, splits = manifest.subject_ids, manifest.splits
    forget = np.asarray([i for i in range(len(manifest)) if splits[i] == "train" and subj[i] in forget_set])
    retain = np.asarray([i for i in range(len(manifest)) if splits[i] == "train" and subj[i] not in forget_set])
    test = np.asarray([i for i in range(len(manifest)) if splits[i] == "test"])
    if retain.size == 0 or test.size == 0:
        raise InputError("The manifest needs training samples of other patients and test samples.")
    return Split(forget=forget.astype(np.int64), retain=retain, test=test, subjects=len(forget_subjects))

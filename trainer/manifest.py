"""Dataset manifests: the schema, parsing and validation, and the forget/retain/test split.

A manifest (CSV or Parquet) has the columns ``sample_id, subject_id, image_uri, report_text,
label, split``; ``split`` is ``train``, ``val`` or ``test`` (a patient's rows all in one of train or
val/test). Selection is by patient: the forget set is every training sample of the given subjects; the
non-member patients split into validation and test as :mod:`forgetmi_trainer.splits` says. Images are
read by :mod:`forgetmi_trainer.reading`.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass

import numpy as np

from forgetmi_trainer import storage
from forgetmi_trainer.errors import InputError

MANIFEST_COLUMNS = ("sample_id", "subject_id", "image_uri", "report_text", "label", "split")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Manifest:
    sample_ids: list[str]
    subject_ids: list[str]
    image_uris: list[str]
    texts: list[str]
    labels: np.ndarray  # (N,) int64
    splits: list[str]
    sha256: str = ""  # of the manifest's bytes: its version

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
            f"Manifest {uri} row {bad_split} has split {columns['split'][bad_split - 1]!r}; "
            "expected train, val or test."
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
        sha256=hashlib.sha256(data).hexdigest(),
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



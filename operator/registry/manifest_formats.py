"""The two manifest formats the operator reads, as batches of their ``subject_id`` and ``split`` columns.

CSV (``.csv``: UTF-8, a header row, quoted fields as RFC 4180 writes them, newlines within them
included) or Parquet (``.parquet``; other column types are read as text), read with pyarrow in
batches from a local file. A file either format cannot read raises
:class:`~forgetmi_operator.api.errors.InputUnreadable` naming ``spec.data.manifestUri``; messages
never quote a row (it could hold patient IDs), though Arrow's own messages do.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from forgetmi_operator.api.errors import InputUnreadable

COLUMNS = ("subject_id", "split")
BATCH_ROWS = 16 * 1024  # Parquet rows per batch
CSV_BLOCK_BYTES = 64 * 1024  # CSV bytes per batch (the reader reads up to 32 blocks ahead)
HEADER_BYTES = 1024 * 1024  # how much of a CSV is read to name its missing columns

Batches = Iterator[tuple[pa.Array, pa.Array]]
"""``(subject_id, split)`` text columns, one pair per batch."""


def unreadable(uri: str, why: str) -> InputUnreadable:
    return InputUnreadable(f"spec.data.manifestUri {uri} {why}.")


def _text(column: pa.Array, name: str, uri: str) -> pa.Array:
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    try:
        text = pc.cast(column, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise unreadable(uri, f"is not a readable Parquet file (column {name} is {column.type}, not text)") from err
    try:
        text.validate(full=True)  # a Parquet string column's bytes are not checked when read
    except pa.ArrowInvalid as err:
        raise unreadable(uri, f"is not a readable Parquet file (column {name} is not UTF-8 text)") from err
    return text


def _csv_header(path: Path) -> list[str] | None:
    """The CSV's column names, from its first bytes; None when they are not UTF-8 text."""
    with open(path, "rb") as fh:
        head = fh.read(HEADER_BYTES)
    try:
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
        return next(csv.reader(io.StringIO(text)), [])
    except (UnicodeDecodeError, csv.Error):
        return None


def _csv_problem(err: pa.ArrowException, path: Path, uri: str) -> InputUnreadable:
    """One sentence for a CSV pyarrow cannot read; never the row's content that Arrow quotes."""
    message = str(err)
    if isinstance(err, pa.ArrowKeyError):  # a column of include_columns is not in the header
        names = _csv_header(path)
        if names is None:
            return unreadable(uri, "is not UTF-8 text")
        missing = sorted(set(COLUMNS) - set(names))
        if missing:
            return unreadable(uri, f"lacks the column(s) {', '.join(missing)}")
    if "invalid UTF8" in message:
        return unreadable(uri, "is not UTF-8 text")
    counts = re.search(r"Expected (\d+) columns, got (\d+)", message)
    if counts:
        return unreadable(uri, f"is not a readable CSV file (a row has {counts[2]} fields, the header {counts[1]})")
    return unreadable(uri, "is not a readable CSV file")


def _csv_batches(path: Path, uri: str) -> Batches:
    if path.stat().st_size == 0:
        raise unreadable(uri, "is empty")
    try:
        reader = pa_csv.open_csv(
            path, read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=False),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(include_columns=list(COLUMNS),
                                                  column_types={name: pa.string() for name in COLUMNS}))
        for batch in reader:
            yield batch.column("subject_id"), batch.column("split")
    except pa.ArrowException as err:
        raise _csv_problem(err, path, uri) from err


def _parquet_batches(path: Path, uri: str) -> Batches:
    try:
        manifest = pq.ParquetFile(path, buffer_size=1024 * 1024, pre_buffer=False)  # a column chunk read in parts
        missing = sorted(set(COLUMNS) - set(manifest.schema_arrow.names))
        if missing:
            raise unreadable(uri, f"lacks the column(s) {', '.join(missing)}")
        for batch in manifest.iter_batches(batch_size=BATCH_ROWS, columns=list(COLUMNS), use_threads=False):
            yield (_text(batch.column("subject_id"), "subject_id", uri), _text(batch.column("split"), "split", uri))
    except (pa.ArrowException, OSError) as err:
        raise unreadable(uri, "is not a readable Parquet file") from err


READERS: dict[str, Callable[[Path, str], Batches]] = {
    ".csv": _csv_batches, ".parquet": _parquet_batches}

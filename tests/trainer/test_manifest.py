"""Manifests: parsing and validation (CSV and Parquet); the sets of a run are tests/trainer/test_splits.py's."""

from __future__ import annotations

import io

import numpy as np
import pytest

from forgetmi_trainer.errors import InputError
from forgetmi_trainer.manifest import MANIFEST_COLUMNS, parse_manifest

HEADER = ",".join(MANIFEST_COLUMNS)
ROWS = [
    "s1,A,file:///x.npz#s1,edema lung,0,train",
    "s2,A,file:///x.npz#s2,clear,1,train",
    "s3,B,file:///x.npz#s3,clear,2,train",
    "s4,C,file:///x.npz#s4,clear,1,test",
    "s5,A,file:///x.npz#s5,clear,0,test",
]


def _csv(rows: list[str], header: str = HEADER) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


def test_parse_manifest_csv() -> None:
    m = parse_manifest(_csv(ROWS), "file:///m.csv")
    assert len(m) == 5
    assert m.sample_ids == ["s1", "s2", "s3", "s4", "s5"]
    assert m.labels.dtype == np.int64 and m.labels.tolist() == [0, 1, 2, 1, 0]
    assert m.splits == ["train", "train", "train", "test", "test"]


def test_parse_manifest_parquet() -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "sample_id": ["s1", "s2", "s3"],
            "subject_id": ["A", "B", "C"],
            "image_uri": ["file:///a.npy"] * 3,
            "report_text": ["edema", "clear", "lung"],
            "label": [0, 1, 2],
            "split": ["train", "train", "test"],
            "extra": [1, 2, 3],
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    m = parse_manifest(buffer.getvalue(), "file:///m.parquet")
    assert m.subject_ids == ["A", "B", "C"]
    assert m.labels.tolist() == [0, 1, 2]
    table = table.drop_columns(["split"])
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    with pytest.raises(InputError, match="split"):
        parse_manifest(buffer.getvalue(), "file:///m.parquet")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (_csv(ROWS, HEADER.replace(",label", "")), r"lacks the column\(s\) label"),
        (_csv([*ROWS[:2], "s3,B,file:///x.npz#s3,clear,two,train"]), "column label must hold integers"),
        (_csv([*ROWS[:2], "s3,B,file:///x.npz#s3,clear,1,validation"]), "row 3 has split 'validation'"),
        (_csv([*ROWS[:2], "s1,B,file:///x.npz#s3,clear,1,train"]), "column sample_id holds duplicates"),
        (_csv([]), "has no rows"),
        (b"", r"lacks the column\(s\)|has no rows"),
        (_csv([*ROWS[:1], ",B,file:///x.npz#s3,clear,1,train"]), "row 2 has an empty sample_id"),
        (_csv([*ROWS[:1], "s9,B,file:///x.npz#s3,clear,-1,train"]), "column label holds a negative class"),
    ],
    ids=[
        "missing-column",
        "non-integer-label",
        "bad-split",
        "duplicate-id",
        "empty",
        "no-header",
        "empty-cell",
        "negative-label",
    ],
)
def test_parse_manifest_errors_name_the_fault(content: bytes, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        parse_manifest(content, "file:///m.csv")
    assert "file:///m.csv" in str(info.value)


def test_parse_manifest_rejects_non_utf8() -> None:
    with pytest.raises(InputError, match="not a readable CSV"):
        parse_manifest(b"\xff\xfe\x00bad", "file:///m.csv")



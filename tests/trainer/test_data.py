"""Manifests, the forget/retain/test split and the perturbations of FORGET_MI.md §3."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from forgetmi_trainer import data
from forgetmi_trainer.errors import InputError
from forgetmi_trainer.synthetic import CLINICAL_KEYWORDS, MANIFEST_COLUMNS

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
    m = data.parse_manifest(_csv(ROWS), "file:///m.csv")
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
    m = data.parse_manifest(buffer.getvalue(), "file:///m.parquet")
    assert m.subject_ids == ["A", "B", "C"]
    assert m.labels.tolist() == [0, 1, 2]
    table = table.drop_columns(["split"])
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    with pytest.raises(InputError, match="split"):
        data.parse_manifest(buffer.getvalue(), "file:///m.parquet")


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
        data.parse_manifest(content, "file:///m.csv")
    assert "file:///m.csv" in str(info.value)


def test_parse_manifest_rejects_non_utf8() -> None:
    with pytest.raises(InputError, match="not a readable CSV"):
        data.parse_manifest(b"\xff\xfe\x00bad", "file:///m.csv")


@pytest.fixture
def manifest() -> data.Manifest:
    return data.parse_manifest(_csv(ROWS), "file:///m.csv")


def test_split_forget_is_all_train_samples_of_subjects(manifest: data.Manifest) -> None:
    s = data.split(manifest, ["A"])
    assert s.forget.tolist() == [0, 1]  # s5 of A is a test sample: never in forget
    assert s.retain.tolist() == [2]
    assert s.test.tolist() == [3, 4]
    assert s.subjects == 1
    assert s.forget.dtype == np.int64


def test_split_unknown_subject_does_not_leak_the_id(manifest: data.Manifest) -> None:
    with pytest.raises(InputError, match="1 of 2 forget subjects have no training samples") as info:
        data.split(manifest, ["A", "SECRET-PATIENT-42"])
    assert "SECRET-PATIENT-42" not in str(info.value)
    with pytest.raises(InputError) as info:  # a test-only patient is not forgettable either
        data.split(manifest, ["C"])
    assert "C" not in str(info.value).split()


def test_split_empty_forget_list(manifest: data.Manifest) -> None:
    with pytest.raises(InputError, match="forget set is empty"):
        data.split(manifest, [])
    assert data.split(manifest, [], allow_empty=True).forget.size == 0


def test_split_needs_retain_and_test(manifest: data.Manifest) -> None:
    with pytest.raises(InputError, match="training samples of other patients"):
        data.split(manifest, ["A", "B"])


def test_noisy_images_clip_and_redraw() -> None:
    pixels = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    pixels[0] = 0.0
    pixels[1] = 1.0
    gen = torch.Generator().manual_seed(1)
    a = data.noisy_images(pixels, 0.0, 0.5, gen)
    b = data.noisy_images(pixels, 0.0, 0.5, gen)
    assert a.shape == pixels.shape
    assert float(a.min()) == 0.0 and float(a.max()) == 1.0
    assert not torch.equal(a, b)  # a new draw on every call
    again = data.noisy_images(pixels, 0.0, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(a, again)  # but seeded
    assert torch.equal(data.noisy_images(pixels, 0.0, 0.0, gen), pixels)
    small = data.noisy_images(torch.full((1, 1, 64, 64), 0.5), 0.0, 0.1, gen)
    assert abs(float(small.std()) - 0.1) < 0.02 and abs(float(small.mean()) - 0.5) < 0.02


def test_noisy_images_draw_from_the_generators_stream() -> None:
    # The noise is the generator's own draw (on its device), moved to the pixels afterwards: what
    # lets a CPU generator feed CUDA pixels (tests/trainer/test_gpu.py checks that on a GPU).
    pixels = torch.full((2, 1, 8, 8), 0.5)
    expected = (pixels + torch.randn(pixels.shape, generator=torch.Generator().manual_seed(3)) * 0.1).clamp(0.0, 1.0)
    assert torch.equal(data.noisy_images(pixels, 0.0, 0.1, torch.Generator().manual_seed(3)), expected)


TEXT = "mild edema in both lungs with pleural effusion and atelectasis near heart size stable"


def test_perturb_text_masks_at_most_two_keywords() -> None:
    n_keywords = sum(w in CLINICAL_KEYWORDS for w in TEXT.split())
    assert n_keywords >= 4
    for seed in range(30):
        # level 0: only the masking happens, so it can be checked exactly
        out = data.perturb_text(TEXT, 0.0, random.Random(seed))
        words = out.split()
        assert words.count("[MASK]") == 2
        assert len(words) == len(TEXT.split())
        masked = [w for w, o in zip(TEXT.split(), words, strict=True) if o == "[MASK]"]
        assert all(w in CLINICAL_KEYWORDS for w in masked)
        assert sum(w in CLINICAL_KEYWORDS for w in words) == n_keywords - 2
    assert data.perturb_text("one edema only", 0.0, random.Random(0)).split().count("[MASK]") == 1
    assert data.perturb_text("no keywords here", 0.0, random.Random(0)) == "no keywords here"


def test_perturb_text_is_deterministic_per_seed_and_noisy() -> None:
    outs = [data.perturb_text(TEXT, 0.5, random.Random(seed), mask_token="<m>") for seed in range(10)]
    again = [data.perturb_text(TEXT, 0.5, random.Random(seed), mask_token="<m>") for seed in range(10)]
    assert outs == again
    assert len(set(outs)) > 5
    assert all(1 <= o.split().count("<m>") <= 2 for o in outs)
    assert all(o.replace("<m>", "") != TEXT for o in outs)


def test_noisy_text_pool_is_deterministic() -> None:
    texts = [TEXT, "clear lungs no effusion", "stable"]
    pool = data.noisy_text_pool(texts, 0.5, 3, seed=4, mask_token="[MASK]")
    assert pool == data.noisy_text_pool(texts, 0.5, 3, seed=4, mask_token="[MASK]")
    assert len(pool) == 3 and all(len(copy) == 3 for copy in pool)
    assert pool != data.noisy_text_pool(texts, 0.5, 3, seed=5, mask_token="[MASK]")
    assert len({copy[0] for copy in pool}) > 1  # copies differ


def test_load_images_errors(tmp_path) -> None:
    path = tmp_path / "img.npz"
    np.savez(path, a=np.zeros((4, 4), dtype=np.uint8))
    uri = path.as_uri()
    images = data.load_images([f"{uri}#a"])
    assert images.shape == (1, 1, 4, 4) and images.dtype == np.float32
    with pytest.raises(InputError, match="has no array 'b'"):
        data.load_images([f"{uri}#b"])
    (tmp_path / "img.png").write_bytes(b"x")
    with pytest.raises(InputError, match="unsupported format"):
        data.load_images([(tmp_path / "img.png").as_uri()])

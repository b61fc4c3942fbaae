"""Dataset manifests, the forget/retain/test split, tokenisation and the perturbations of §3.

A manifest (CSV or Parquet) has the columns ``sample_id, subject_id, image_uri, report_text,
label, split``; ``split`` is ``train`` or ``test``. An ``image_uri`` is a ``.npy`` file or an
array in an ``.npz`` archive (``.../shard-000.npz#sample_id``); images are scaled to [0, 1].
Selection is by patient: the forget set is every training sample of the given subjects.
"""

from __future__ import annotations

import csv
import io
import random
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from forgetmi_trainer import storage
from forgetmi_trainer.errors import InputError
from forgetmi_trainer.synthetic import CLINICAL_KEYWORDS, MANIFEST_COLUMNS
from forgetmi_trainer.tokenizer import words

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


def load_images(uris: list[str]) -> np.ndarray:
    """Images (N, C, H, W) float32 in [0, 1]; each archive is read once."""
    by_archive: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for i, uri in enumerate(uris):
        base, _, key = uri.partition("#")
        by_archive[base].append((i, key))
    images: list[np.ndarray | None] = [None] * len(uris)
    for base, items in by_archive.items():
        raw = storage.read_bytes(base)
        try:
            if base.endswith(".npz"):
                with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
                    for i, key in items:
                        if key not in archive.files:
                            raise InputError(f"Image archive {base} has no array {key!r}.")
                        images[i] = archive[key]
            elif base.endswith(".npy"):
                array = np.load(io.BytesIO(raw), allow_pickle=False)
                for i, _ in items:
                    images[i] = array
            else:
                raise InputError(f"Image {base} has an unsupported format; use .npy or .npz#<key>.")
        except (ValueError, OSError) as err:
            raise InputError(f"Image {base} could not be decoded ({err}).") from err
    return np.stack([_to_unit(img, uris[i]) for i, img in enumerate(images)])  # type: ignore[arg-type]


def _to_unit(image: np.ndarray, uri: str) -> np.ndarray:
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise InputError(f"Image {uri} has shape {image.shape}; expected (H, W) or (C, H, W).")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return np.clip(image.astype(np.float32), 0.0, 1.0)


@dataclass(frozen=True)
class Split:
    """Indices into the manifest of the forget (D_f), retain (D_r) and test (D_t) sets."""

    forget: np.ndarray
    retain: np.ndarray
    test: np.ndarray
    subjects: int


def split(manifest: Manifest, forget_subjects: list[str], *, allow_empty: bool = False) -> Split:
    """Resolve the sets by patient. Raises :class:`InputError` (without naming any patient) when
    forget subjects have no training samples or the forget set is empty."""
    train_subjects = {s for s, sp in zip(manifest.subject_ids, manifest.splits, strict=True) if sp == "train"}
    unknown = [s for s in forget_subjects if s not in train_subjects]
    if unknown:
        raise InputError(
            f"{len(unknown)} of {len(forget_subjects)} forget subjects have no training samples in the manifest."
        )
    if not forget_subjects and not allow_empty:
        raise InputError("The forget set is empty: the subjects file lists no patient.")
    forget_set = set(forget_subjects)
    subj, splits = manifest.subject_ids, manifest.splits
    forget = np.asarray([i for i in range(len(manifest)) if splits[i] == "train" and subj[i] in forget_set])
    retain = np.asarray([i for i in range(len(manifest)) if splits[i] == "train" and subj[i] not in forget_set])
    test = np.asarray([i for i in range(len(manifest)) if splits[i] == "test"])
    if retain.size == 0 or test.size == 0:
        raise InputError("The manifest needs training samples of other patients and test samples.")
    return Split(forget=forget.astype(np.int64), retain=retain, test=test, subjects=len(forget_subjects))


@dataclass
class Encoded:
    """Model inputs for a set of samples: pixels (N, C, H, W), ids and mask (N, L), labels (N,)."""

    pixels: Tensor
    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, idx: Tensor | np.ndarray) -> Encoded:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return Encoded(self.pixels[idx], self.input_ids[idx], self.attention_mask[idx], self.labels[idx])

    def to(self, device: torch.device | str) -> Encoded:
        return Encoded(*(t.to(device) for t in (self.pixels, self.input_ids, self.attention_mask, self.labels)))


def tokenize(tokenizer: object, texts: list[str], max_length: int = 32) -> tuple[Tensor, Tensor]:
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")  # type: ignore[operator]
    return enc["input_ids"], enc["attention_mask"]


def encode(
    images: np.ndarray, texts: list[str], labels: np.ndarray, tokenizer: object, max_length: int = 32
) -> Encoded:
    ids, mask = tokenize(tokenizer, texts, max_length)
    return Encoded(torch.from_numpy(images).float(), ids, mask, torch.from_numpy(labels).long())


# --- perturbations (FORGET_MI.md §3): forget inputs only -------------------------------------


def noisy_images(pixels: Tensor, mean: float, std: float, generator: torch.Generator) -> Tensor:
    """i.i.d. Gaussian noise per pixel, then clip to [0, 1]; a new draw on every call.

    The noise is drawn on the generator's device and then moved to the pixels' (torch refuses a
    CPU generator for a CUDA draw), so a seed gives the same noise on CPU and GPU."""
    noise = torch.randn(pixels.shape, generator=generator, device=generator.device).to(pixels.device) * std + mean
    return (pixels + noise).clamp(0.0, 1.0)


def perturb_text(text: str, level: float, rng: random.Random, mask_token: str = "[MASK]") -> str:
    """Mask up to two clinical keywords, then with probability 1/2 word noise (delete, repeat or
    swap each word with probability ``level``) or else character noise (insert, delete,
    substitute or transpose one character of each word with probability ``level``)."""
    tokens = words(text)
    keyword_positions = [i for i, w in enumerate(tokens) if w in CLINICAL_KEYWORDS]
    for i in rng.sample(keyword_positions, k=min(2, len(keyword_positions))):
        tokens[i] = mask_token
    if rng.random() < 0.5:
        tokens = _word_noise(tokens, level, rng, mask_token)
    else:
        tokens = [_char_noise(w, rng) if w != mask_token and rng.random() < level else w for w in tokens]
    return " ".join(tokens)


def _word_noise(tokens: list[str], level: float, rng: random.Random, mask_token: str) -> list[str]:
    out: list[str] = []
    for w in tokens:
        if w == mask_token or rng.random() >= level:
            out.append(w)
            continue
        op = rng.choice(("delete", "repeat", "swap"))
        if op == "repeat":
            out += [w, w]
        elif op == "swap" and out:
            out.insert(len(out) - 1, w)
    return out or tokens[:1]


def _char_noise(word: str, rng: random.Random) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    i = rng.randrange(len(word))
    op = rng.choice(("insert", "delete", "substitute", "transpose"))
    if op == "insert":
        return word[:i] + rng.choice(letters) + word[i:]
    if op == "delete" and len(word) > 1:
        return word[:i] + word[i + 1 :]
    if op == "transpose" and len(word) > 1:
        i = min(i, len(word) - 2)
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word[:i] + rng.choice(letters) + word[i + 1 :]


def noisy_text_pool(texts: list[str], level: float, copies: int, seed: int, mask_token: str) -> list[list[str]]:
    """``copies`` seeded perturbations of every text: pool[k][i] is copy k of text i."""
    rng = random.Random(seed)
    return [[perturb_text(t, level, rng, mask_token) for t in texts] for _ in range(copies)]

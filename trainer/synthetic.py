"""The generated image+text dataset of FORGET_MI.md §7, where forgetting is measurable on a CPU.

Every sample's image and report carry a shared class signal (so test utility is measurable),
its patient's private fingerprint (an image pattern and two private report tokens) and a
sample-specific pattern. A fraction of the labels is random: the original model can only fit
those by memorising the samples, which is what a membership-inference attack detects and what
unlearning must remove. Splits are patient-disjoint: ``train``, ``test`` and, with ``val_fraction``
> 0, ``val`` patients (drawn from the non-test ones with a generator of their own).

Cross-modal structure (``cross_modal`` S in [0, 1], default 0.5), so that what binds image and report
matters, as in a real study where one finding shows in both (:mod:`~forgetmi_trainer.synthetic_cross`):

- a per-patient latent shared by the modalities: a sample shows its patient's fingerprint with a sign
  s = ±1, and its report's second private token is the one of the patient's two state tokens that
  names s, with probability (1 + S) / 2. The image tells which patient, the pair which state.
- class evidence only in the combination: the class's low bit (0 vs 1, 2 vs 3) is the product of an
  image sign a = ±1 (a global pattern times a, a a fair coin) and a report word (``SIGN_WORDS``,
  "left" −1, "right" +1); either alone is a fair coin. For a share S of the samples ("joint") the
  unimodal class evidence names only the class pair (the pair's mean image pattern, two of the pair's
  words), so their bit is in the image×text combination and nowhere else.

S = 0 generates earlier versions' dataset draw for draw (the cross-modal draws have their own generator).

Images are written as sharded ``.npz`` archives (the default, the fastest to read; ``image_uri`` names
the archive and the array, ``images/shard-000.npz#<sample_id>``) or one file per sample
(``images/<subject_id>/<sample_id>.png|jpg|dcm``), relative to the manifest: 8- or 16-bit grey PNG,
JPEG (quality 95), or a 16-bit DICOM Secondary Capture whose Rescale Slope/Intercept and window map
its stored values back to the generated pixels.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from forgetmi_trainer import storage
from forgetmi_trainer.manifest import MANIFEST_COLUMNS
from forgetmi_trainer.synthetic_cross import Draws, draw

CLASS_WORDS = (
    ("clear", "normal", "unremarkable"),
    ("congestion", "vascular", "cephalization"),
    ("interstitial", "kerley", "septal"),
    ("alveolar", "consolidation", "airspace"),
)
FILLER = (
    "portable", "chest", "view", "compared", "prior", "study", "lung", "lungs", "heart", "size",
    "stable", "mediastinal", "contours", "no", "pleural", "effusion", "pneumothorax", "seen",
    "there", "is", "mild", "moderate", "edema", "atelectasis", "bibasilar", "opacity", "tubes",
    "lines", "unchanged", "cardiomegaly", "the", "and", "with", "of",
)
_SYLLABLES = ("ka", "zu", "mi", "ro", "te", "qu", "vo", "li", "xa", "be", "no", "sy")
SHARD_SIZE = 512
ImageFormat = Literal["npz", "png", "jpeg", "dicom"]
IMAGE_FORMATS: tuple[ImageFormat, ...] = ("npz", "png", "jpeg", "dicom")
_EXTENSION = {"png": "png", "jpeg": "jpg", "dicom": "dcm"}
DICOM_INTERCEPT = -1024.0  # stored = pixel * 257 (16 bit); value = stored + intercept; the window maps it back


class SynthParams(BaseModel):
    """Knobs of the generated dataset (defaults: the measured example of FORGET_MI.md §7)."""

    model_config = ConfigDict(extra="forbid")

    patients: int = Field(default=150, ge=4, le=100_000)
    min_samples: int = Field(default=3, ge=1)
    max_samples: int = Field(default=8, ge=1)
    image_size: int = Field(default=16, ge=4, le=2048)
    num_classes: int = Field(default=4, ge=2, le=len(CLASS_WORDS))
    memorised_fraction: float = Field(default=0.35, ge=0.0, le=1.0)
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    report_words: int = Field(default=12, ge=6, le=64)
    class_strength: float = Field(default=0.22, ge=0.0)
    patient_strength: float = Field(default=0.12, ge=0.0)
    sample_strength: float = Field(default=0.2, ge=0.0)
    cross_modal: float = Field(default=0.5, ge=0.0, le=1.0, description=(
        "Cross-modal structure S: how often the report's state token matches the image's fingerprint sign "
        "((1 + S) / 2) and the share of samples whose class bit is only in the image×text combination; 0: none."))
    val_fraction: float = Field(default=0.0, ge=0.0, lt=1.0, description="Share of patients written as split=val.")
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _room_for_training(self) -> SynthParams:
        if self.test_fraction + self.val_fraction >= 1.0:
            raise ValueError("test_fraction + val_fraction must leave training patients (sum below 1)")
        return self


@dataclass(frozen=True)
class Sample:
    sample_id: str
    subject_id: str
    image: np.ndarray  # (1, H, W) uint8
    report_text: str
    label: int
    split: str
    memorised: bool
    joint: bool = False  # the class bit is only in the image×text combination (cross_modal > 0)


def _smooth_pattern(rng: np.random.Generator, size: int) -> np.ndarray:
    """A zero-mean, unit-std low-frequency pattern (H, W)."""
    coarse = rng.standard_normal((4, 4))
    pattern = np.kron(coarse, np.ones((size // 4 + 1, size // 4 + 1)))[:size, :size]
    return (pattern - pattern.mean()) / (pattern.std() + 1e-8)


def _private_token(rng: np.random.Generator) -> str:
    return "".join(rng.choice(_SYLLABLES, size=3)) + str(int(rng.integers(10, 99)))


def generate(params: SynthParams) -> list[Sample]:
    """Every sample of the dataset, deterministic in ``params.seed``."""
    if params.max_samples < params.min_samples:
        raise ValueError("max_samples must be at least min_samples")
    rng = np.random.default_rng(params.seed)
    size, c = params.image_size, params.num_classes
    class_patterns = [_smooth_pattern(rng, size) for _ in range(c)]
    n_test = max(1, round(params.patients * params.test_fraction))
    test_patients = set(rng.choice(params.patients, size=n_test, replace=False).tolist())
    splits = _splits(params, test_patients)
    cross = np.random.default_rng([params.seed, 1]) if params.cross_modal > 0 else None  # its own draws
    sign_pattern = _smooth_pattern(cross, size) if cross is not None else np.zeros((size, size))
    samples: list[Sample] = []
    for p in range(params.patients):
        subject = f"P{p:05d}"
        fingerprint = rng.choice([-1.0, 1.0], size=(size, size))
        private = [_private_token(rng), _private_token(rng)]
        tokens = (_private_token(cross), _private_token(cross)) if cross is not None else ("", "")
        for s in range(int(rng.integers(params.min_samples, params.max_samples + 1))):
            signal = int(rng.integers(c))
            memorised = bool(rng.random() < params.memorised_fraction)
            label = int(rng.integers(c)) if memorised else signal
            draws = None if cross is None else draw(cross, params.cross_modal, signal, tokens, class_patterns,
                                                     CLASS_WORDS)
            image = (
                0.5
                + params.class_strength * (class_patterns[signal] if draws is None else draws.class_pattern)
                + params.patient_strength * fingerprint * (1.0 if draws is None else draws.state)
                + params.sample_strength * rng.standard_normal((size, size))
            )
            if draws is not None:
                image = image + params.class_strength * draws.sign * sign_pattern
            pixels = np.clip(np.round(np.clip(image, 0.0, 1.0) * 255), 0, 255).astype(np.uint8)[None]
            samples.append(Sample(
                sample_id=f"{subject}-S{s:02d}", subject_id=subject, image=pixels,
                report_text=_report(rng, signal, private, params.report_words, draws), label=label,
                split=splits[p], memorised=memorised, joint=draws is not None and draws.joint,
            ))
    return samples


def _splits(params: SynthParams, test_patients: set[int]) -> list[str]:
    """Each patient's split: ``test`` as drawn, ``val`` for ``val_fraction`` of the patients (drawn from the
    others with a generator of their own, so no other draw changes), ``train`` for the rest."""
    val: set[int] = set()
    n_val = round(params.patients * params.val_fraction)
    others = [p for p in range(params.patients) if p not in test_patients]
    if n_val:
        if n_val >= len(others):
            raise ValueError("val_fraction leaves no training patient")
        val = set(np.random.default_rng([params.seed, 2]).choice(others, size=n_val, replace=False).tolist())
    return ["test" if p in test_patients else "val" if p in val else "train" for p in range(params.patients)]


def _report(rng: np.random.Generator, signal: int, private: list[str], n_words: int, draws: Draws | None) -> str:
    class_words = list(rng.choice(CLASS_WORDS[signal], size=2, replace=False))
    words = class_words + private + list(rng.choice(FILLER, size=n_words - 4))
    order = rng.permutation(len(words))
    if draws is not None:  # after the draws above, so that the main generator's stream is unchanged
        words[:2] = draws.class_words or words[:2]
        words[3] = draws.token
        words[-1] = draws.word
    return " ".join(str(words[i]) for i in order)


def write_dataset(samples: list[Sample], out_uri: str, fmt: ImageFormat = "npz", *, bit_depth: int = 8) -> str:
    """Write the images and ``manifest.csv`` under ``out_uri``; returns the manifest's URI.

    ``npz``: shards of ``SHARD_SIZE`` arrays (``images/shard-<k>.npz#<sample>``); else one file per sample
    (``images/<subject>/<sample>.<ext>``). Relative ``image_uri``s keep the manifest's bytes (its version, which
    seeds the V/T split) the same wherever it is written. ``bit_depth`` 16 is for PNG only."""
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"Image format {fmt!r} is not one of {', '.join(IMAGE_FORMATS)}.")
    if bit_depth not in (8, 16) or (bit_depth == 16 and fmt != "png"):
        raise ValueError(f"Bit depth {bit_depth} is not available for {fmt}: use 8, or 16 with png.")
    rows = _write_shards(samples, out_uri) if fmt == "npz" else _write_files(samples, out_uri, fmt, bit_depth)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    writer.writerows(rows)
    manifest_uri = storage.join(out_uri, "manifest.csv")
    storage.write_text(manifest_uri, text.getvalue())
    return manifest_uri


Row = tuple[str, str, str, str, int, str]


def _write_shards(samples: list[Sample], out_uri: str) -> list[Row]:
    rows: list[Row] = []
    for start in range(0, len(samples), SHARD_SIZE):
        chunk = samples[start : start + SHARD_SIZE]
        shard = f"images/shard-{start // SHARD_SIZE:03d}.npz"
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **{s.sample_id: s.image for s in chunk})
        storage.write_bytes(storage.join(out_uri, shard), buffer.getvalue())
        rows += [
            (s.sample_id, s.subject_id, f"{shard}#{s.sample_id}", s.report_text, s.label, s.split) for s in chunk
        ]
    return rows


def _write_files(samples: list[Sample], out_uri: str, fmt: str, bit_depth: int) -> list[Row]:
    rows: list[Row] = []
    for s in samples:
        relative = f"images/{s.subject_id}/{s.sample_id}.{_EXTENSION[fmt]}"
        pixels = s.image[0]
        if fmt == "png":
            data = encode_png(pixels, bit_depth)
        elif fmt == "jpeg":
            data = encode_jpeg(pixels)
        else:
            data = encode_dicom(pixels, s.sample_id, s.subject_id)
        storage.write_bytes(storage.join(out_uri, relative), data)
        rows.append((s.sample_id, s.subject_id, relative, s.report_text, s.label, s.split))
    return rows


def encode_png(pixels: np.ndarray, bit_depth: int = 8) -> bytes:
    """A grey (H, W) uint8 image as a PNG; at 16 bits each value v is stored as v * 257 (so v/255 decodes exactly)."""
    from PIL import Image

    array = pixels.astype(np.uint16) * 257 if bit_depth == 16 else pixels
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_jpeg(pixels: np.ndarray, quality: int = 95) -> bytes:
    """A grey (H, W) uint8 image as a baseline JPEG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_dicom(pixels: np.ndarray, sample_id: str, subject_id: str) -> bytes:
    """A grey (H, W) uint8 image as a 16-bit MONOCHROME2 Secondary Capture file (Explicit VR Little Endian).

    Stored values are ``pixel * 257``; Rescale Slope 1 / Intercept ``DICOM_INTERCEPT`` give the modality values,
    and the window (center ``intercept + 32768``, width 65536, LINEAR) maps them onto exactly ``pixel / 255``.
    UIDs derive from the sample ID, so the file is the same on every run."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    def uid(role: str) -> str:
        return str(generate_uid(entropy_srcs=["forgetmi-synthetic", role, sample_id]))

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, uid("sop")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid(f"study-{subject_id}"), uid("series")
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "", subject_id, "", ""
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "20240101", "", "", "", ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.ConversionType = "OT", 1, 1, "WSD"
    ds.set_pixel_data(pixels.astype(np.uint16) * 257, "MONOCHROME2", 16, generate_instance_uid=False)
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, DICOM_INTERCEPT, "US"
    ds.WindowCenter, ds.WindowWidth = DICOM_INTERCEPT + 32768, 65536
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def choose_forget_subjects(samples: list[Sample], fraction: float, seed: int) -> list[str]:
    """Training patients whose samples make up about ``fraction`` of the training samples."""
    rng = np.random.default_rng(seed + 7919)
    train_subjects = sorted({s.subject_id for s in samples if s.split == "train"})
    counts = {sub: 0 for sub in train_subjects}
    for s in samples:
        if s.split == "train":
            counts[s.subject_id] += 1
    target = fraction * sum(counts.values())
    chosen: list[str] = []
    total = 0
    for sub in rng.permutation(train_subjects):
        if total >= target:
            break
        chosen.append(str(sub))
        total += counts[str(sub)]
    return sorted(chosen)

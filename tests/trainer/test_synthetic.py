"""The generated dataset: deterministic, patient-disjoint, partly memorised, manifest round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from harness.samples import encode_manifest

from forgetmi_trainer import synthetic
from forgetmi_trainer.data import CLINICAL_KEYWORDS
from forgetmi_trainer.manifest import Manifest, read_manifest
from forgetmi_trainer.synthetic import SynthParams, choose_forget_subjects, generate, write_dataset
from forgetmi_trainer.tokenizer import build_tokenizer, build_vocabulary


def test_generate_is_deterministic_per_seed() -> None:
    a, b = generate(SynthParams(patients=20, seed=3)), generate(SynthParams(patients=20, seed=3))
    c = generate(SynthParams(patients=20, seed=4))
    assert [s.sample_id for s in a] == [s.sample_id for s in b]
    for x, y in zip(a, b, strict=True):
        assert (x.report_text, x.label, x.split, x.memorised) == (y.report_text, y.label, y.split, y.memorised)
        assert np.array_equal(x.image, y.image)
    assert [(s.report_text, s.label) for s in a] != [(s.report_text, s.label) for s in c]


def test_shapes_counts_and_patient_disjoint_splits() -> None:
    params = SynthParams(patients=40, min_samples=2, max_samples=5, image_size=12, num_classes=3, seed=1)
    samples = generate(params)
    subjects = {s.subject_id for s in samples}
    assert len(subjects) == 40
    per_subject = {sub: sum(s.subject_id == sub for s in samples) for sub in subjects}
    assert all(2 <= n <= 5 for n in per_subject.values())
    assert len({s.sample_id for s in samples}) == len(samples)
    train = {s.subject_id for s in samples if s.split == "train"}
    test = {s.subject_id for s in samples if s.split == "test"}
    assert train and test and not train & test
    assert len(test) == round(40 * params.test_fraction)
    assert all(s.image.shape == (1, 12, 12) and s.image.dtype == np.uint8 for s in samples)
    assert all(0 <= s.label < 3 for s in samples)
    assert all(len(s.report_text.split()) == params.report_words for s in samples)


@pytest.mark.parametrize("fraction", [0.0, 0.35, 1.0])
def test_memorised_fraction(fraction: float) -> None:
    samples = generate(SynthParams(patients=300, memorised_fraction=fraction, seed=2))
    share = np.mean([s.memorised for s in samples])
    assert abs(share - fraction) < 0.05
    if fraction == 0.0:
        # without memorised samples the report carries the label's class words
        assert all(any(w in synthetic.CLASS_WORDS[s.label] for w in s.report_text.split()) for s in samples)


def test_max_below_min_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_samples"):
        generate(SynthParams(patients=10, min_samples=4, max_samples=2))


def test_write_dataset_round_trips_through_manifest(tmp_path: Path) -> None:
    samples = generate(SynthParams(patients=12, seed=5))
    uri = write_dataset(samples, (tmp_path / "ds").as_uri())
    assert uri.endswith("/manifest.csv")
    manifest = read_manifest(uri)
    assert manifest.sample_ids == [s.sample_id for s in samples]
    assert manifest.subject_ids == [s.subject_id for s in samples]
    assert manifest.texts == [s.report_text for s in samples]
    assert manifest.splits == [s.split for s in samples]
    assert manifest.labels.tolist() == [s.label for s in samples]
    images = encode_manifest(manifest, uri, _tokenizer(manifest, tmp_path)).pixels.numpy()
    expected = np.stack([s.image for s in samples]).astype(np.float32) / 255.0
    np.testing.assert_array_equal(images, expected)


def test_write_dataset_to_s3(s3_bucket: str, tmp_path: Path) -> None:
    samples = generate(SynthParams(patients=6, seed=0))
    uri = write_dataset(samples, f"{s3_bucket}/ds")
    manifest = read_manifest(uri)
    assert len(manifest) == len(samples)
    images = encode_manifest(manifest, uri, _tokenizer(manifest, tmp_path), rows=np.arange(2)).pixels
    assert images.shape == (2, 1, 16, 16)


def _tokenizer(manifest: Manifest, directory: Path) -> object:
    return build_tokenizer(build_vocabulary(manifest.texts), directory / "tok")


def test_choose_forget_subjects_are_train_patients_near_fraction() -> None:
    samples = generate(SynthParams(patients=150, seed=0))
    chosen = choose_forget_subjects(samples, 0.08, seed=0)
    assert chosen == choose_forget_subjects(samples, 0.08, seed=0)
    train_subjects = {s.subject_id for s in samples if s.split == "train"}
    assert set(chosen) <= train_subjects
    n_train = sum(s.split == "train" for s in samples)
    n_forget = sum(s.split == "train" and s.subject_id in set(chosen) for s in samples)
    assert 0.08 <= n_forget / n_train < 0.08 + 10 / n_train


def test_every_class_word_is_a_clinical_keyword_the_perturbation_masks() -> None:
    """The text perturbation masks the class words of the reports (FORGET_MI.md §3, §7)."""
    class_words = {w for words in synthetic.CLASS_WORDS for w in words}
    assert class_words <= CLINICAL_KEYWORDS

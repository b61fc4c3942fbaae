"""The generated dataset: deterministic, patient-disjoint, partly memorised, cross-modal, manifest round trip."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from harness.samples import encode_manifest

from forgetmi_trainer import synthetic, synthetic_cross
from forgetmi_trainer.data import CLINICAL_KEYWORDS
from forgetmi_trainer.manifest import Manifest, read_manifest
from forgetmi_trainer.synthetic import SynthParams, choose_forget_subjects, generate, write_dataset
from forgetmi_trainer.synthetic_cross import SIGN_WORDS
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
        # without memorised samples the report carries the label's class words (a joint sample's: its pair's)
        def named(s: synthetic.Sample) -> set[str]:
            pair = synthetic_cross.class_pair(s.label, len(synthetic.CLASS_WORDS)) if s.joint else [s.label]
            return {w for k in pair for w in synthetic.CLASS_WORDS[k]}

        assert all(any(w in named(s) for w in s.report_text.split()) for s in samples)


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


def _digest(samples: list[synthetic.Sample]) -> str:
    h = hashlib.sha256()
    for s in samples:
        h.update(f"{s.sample_id}|{s.subject_id}|{s.report_text}|{s.label}|{s.split}|{s.memorised}".encode())
        h.update(s.image.tobytes())
    return h.hexdigest()


def test_without_cross_modal_structure_the_generator_is_that_of_earlier_versions() -> None:
    """cross_modal = 0 writes the dataset the generator wrote before it had cross-modal structure (the
    digest was taken with that generator), so earlier benchmark figures can be reproduced."""
    old = generate(SynthParams(patients=20, seed=3, cross_modal=0.0))
    assert _digest(old) == "eab13efb8976a4bbaa41bbcaf73499a04c873bdc12133abab74bea6facd9e810"
    assert not any(s.joint for s in old) and not any(w in SIGN_WORDS for s in old for w in s.report_text.split())
    new = generate(SynthParams(patients=20, seed=3))
    assert SynthParams().cross_modal > 0
    # the cross-modal draws come from their own generator: patients, labels and splits are the same
    assert [(s.sample_id, s.label, s.split, s.memorised) for s in new] == [
        (s.sample_id, s.label, s.split, s.memorised) for s in old]
    assert [s.report_text for s in new] != [s.report_text for s in old]


def _features(samples: list[synthetic.Sample]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample: the centred pixels (N, H·W), the bag of report words (N, V) and the report's sign (N,)."""
    pixels = np.stack([s.image.reshape(-1).astype(np.float64) / 255 - 0.5 for s in samples])
    vocabulary = sorted({w for s in samples for w in s.report_text.split()})
    index = {w: i for i, w in enumerate(vocabulary)}
    words = np.zeros((len(samples), len(vocabulary)))
    for row, s in enumerate(samples):
        for w in s.report_text.split():
            words[row, index[w]] = 1.0
    sign = np.asarray([1.0 if SIGN_WORDS[1] in s.report_text.split() else -1.0 for s in samples])
    return pixels, words, sign


def _accuracy(features: np.ndarray, target: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    return float(cross_val_score(LogisticRegression(C=0.1, max_iter=2000), features, target, cv=5).mean())


def test_cross_modal_class_evidence_is_only_in_the_combination() -> None:
    """On the joint samples the class's low bit is not in the image (a logistic regression on the pixels
    is at chance), not in the report (nor on its words), but in the image × report-sign product."""
    samples = generate(SynthParams(patients=400, memorised_fraction=0.0, cross_modal=1.0, seed=4))
    joint = [s for s in samples if s.joint]
    assert len(joint) == len(samples)  # S = 1: every sample
    bit = np.asarray([s.label % 2 for s in joint])
    pixels, words, sign = _features(joint)
    assert abs(bit.mean() - 0.5) < 0.05
    image_alone, report_alone = _accuracy(pixels, bit), _accuracy(words, bit)
    combined = _accuracy(pixels * sign[:, None], bit)
    assert image_alone < 0.56 and report_alone < 0.56, (image_alone, report_alone)
    assert combined > 0.8, combined
    # and the unimodal evidence still names the class pair: high bit from the pixels alone
    assert _accuracy(pixels, np.asarray([s.label // 2 for s in joint])) > 0.8


def test_cross_modal_share_of_joint_samples_and_report_shape() -> None:
    samples = generate(SynthParams(patients=300, cross_modal=0.3, seed=5))
    assert abs(np.mean([s.joint for s in samples]) - 0.3) < 0.04
    for s in samples:
        words = s.report_text.split()
        assert len(words) == SynthParams().report_words
        assert sum(w in SIGN_WORDS for w in words) == 1
    non_joint = [s for s in samples if not s.joint and not s.memorised]
    # a non-joint sample's report names its own class (two of its class words)
    assert all(sum(w in synthetic.CLASS_WORDS[s.label] for w in s.report_text.split()) >= 2 for s in non_joint)


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_the_state_token_names_the_fingerprint_sign_with_probability_one_plus_s_over_two(strength: float) -> None:
    """A sample's fingerprint sign (``state``) and its report's state token are drawn together: the token
    is the patient's token for that sign with probability (1 + S) / 2; the image sign and sign word
    multiply to the class's low bit on every sample; a share S of the samples is joint."""
    rng = np.random.default_rng(0)
    patterns = [np.random.default_rng(k).standard_normal((4, 4)) for k in range(4)]
    draws = [synthetic_cross.draw(rng, strength, k % 4, ("minus", "plus"), patterns, synthetic.CLASS_WORDS)
             for k in range(4000)]
    agree = np.mean([d.token == ("plus" if d.state > 0 else "minus") for d in draws])
    assert abs(agree - (1 + strength) / 2) < 0.03
    word_sign = [1.0 if d.word == SIGN_WORDS[1] else -1.0 for d in draws]
    assert all((d.sign * w > 0) == (k % 2 == 1) for k, (d, w) in enumerate(zip(draws, word_sign, strict=True)))
    assert abs(np.mean([d.joint for d in draws]) - strength) < 0.03
    joint = next(k for k, d in enumerate(draws) if d.joint and k % 4 == 3)
    assert set(draws[joint].class_words or []) <= set(synthetic.CLASS_WORDS[2] + synthetic.CLASS_WORDS[3])
    mean = (patterns[2] + patterns[3]) / 2  # the pair's mean pattern, zero-mean and unit-std
    np.testing.assert_allclose(draws[joint].class_pattern, (mean - mean.mean()) / mean.std(), atol=1e-6)
    assert all(d.class_words is None and d.class_pattern is patterns[k % 4] for k, d in enumerate(draws)
               if not d.joint)


@pytest.mark.parametrize("fraction", [0.0, 0.2])
def test_val_fraction_writes_patient_disjoint_val_rows(fraction: float, tmp_path: Path) -> None:
    samples = generate(SynthParams(patients=50, val_fraction=fraction, seed=7))
    splits = {s.subject_id: s.split for s in samples}
    assert all(splits[s.subject_id] == s.split for s in samples)  # a patient's rows share one split
    assert sum(v == "val" for v in splits.values()) == round(50 * fraction)
    assert sum(v == "test" for v in splits.values()) == round(50 * SynthParams().test_fraction)
    baseline = generate(SynthParams(patients=50, seed=7))
    assert [s.split for s in samples if s.split == "test"] == [s.split for s in baseline if s.split == "test"]
    assert [s.label for s in samples] == [s.label for s in baseline]  # only the split changes
    manifest = read_manifest(write_dataset(samples, (tmp_path / "ds").as_uri()))
    assert manifest.splits.count("val") == sum(s.split == "val" for s in samples)


def test_fractions_must_leave_training_patients() -> None:
    with pytest.raises(ValueError, match="test_fraction \\+ val_fraction"):
        SynthParams(test_fraction=0.5, val_fraction=0.5)

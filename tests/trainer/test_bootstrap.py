"""The patient bootstrap behind the audit's intervals: weighted figures equal the plain figures on repeated
samples, replicates resample patients (seeded, chunking-proof), and the percentile interval's rules."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from forgetmi_trainer import bootstrap, evaluate


def _draw(counts: np.ndarray, patient: np.ndarray | None = None) -> bootstrap.Draw:
    counts = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    return bootstrap.Draw(counts, np.arange(counts.shape[1]) if patient is None else patient)


def test_weighted_auc_is_the_auc_of_the_repeated_samples_ties_included() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 80).astype(float)  # many ties
    positive = rng.random(80) < 0.4
    counts = rng.integers(0, 4, (5, 80)).astype(float)
    ranked = bootstrap.Ranked.of(scores, positive)
    got = ranked.auc(_draw(counts).weights(ranked.order))
    for row, value in zip(counts.astype(int), got, strict=True):
        assert value == pytest.approx(roc_auc_score(np.repeat(positive, row), np.repeat(scores, row)), abs=1e-12)
    ones = ranked.auc(_draw(np.ones(80)).weights(ranked.order))
    assert ones[0] == pytest.approx(roc_auc_score(positive, scores), abs=1e-12)


def test_weighted_auc_is_nan_without_positives_or_negatives() -> None:
    ranked = bootstrap.Ranked.of(np.array([0.1, 0.2, 0.3]), np.array([True, False, False]))
    got = ranked.auc(_draw([[0, 1, 1], [1, 0, 0], [1, 1, 0]]).weights(ranked.order))
    assert np.isnan(got[0]) and np.isnan(got[1]) and got[2] == 0.0  # the positive scores below the negative


def test_macro_auc_replicates_skip_classes_a_replicate_does_not_draw() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2], 10)
    probs = evaluate.softmax(rng.normal(size=(30, 3)) + np.eye(3)[labels])
    macro = bootstrap.MacroAuc.of(labels, probs)
    no_class_2 = np.r_[np.ones(20), np.zeros(10)]
    only_class_0 = np.r_[np.ones(10), np.zeros(20)]
    got = macro(_draw(np.stack([np.ones(30), no_class_2, only_class_0])))
    assert got[0] == pytest.approx(evaluate.macro_auc(labels, probs), abs=1e-12)
    assert got[1] == pytest.approx(evaluate.macro_auc(labels[:20], probs[:20]), abs=1e-12)
    assert np.isnan(got[2])


def test_weighted_macro_f1_and_mean_are_those_of_the_repeated_samples() -> None:
    rng = np.random.default_rng(2)
    labels, preds = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    patient = rng.integers(0, 10, 50)
    counts = rng.integers(0, 3, (4, 10)).astype(float)
    draw = _draw(counts, patient)
    f1 = bootstrap.macro_f1(labels, preds, 5, draw)
    values = rng.random(50)
    means = bootstrap.weighted_mean(values, draw)
    for b in range(4):
        reps = counts[b, patient].astype(int)
        # over the classes the replicate holds in its labels or predictions (class 4 never; others by chance)
        expected = f1_score(np.repeat(labels, reps), np.repeat(preds, reps), average="macro", zero_division=0)
        assert f1[b] == pytest.approx(expected, abs=1e-12)
        assert means[b] == pytest.approx(np.repeat(values, reps).mean(), abs=1e-12)


def test_weighted_macro_f1_skips_a_class_the_replicate_does_not_draw() -> None:
    labels, preds = np.array([0, 0, 1, 2]), np.array([0, 0, 1, 1])
    draw = _draw([[1, 1, 1, 0], [1, 1, 1, 1]])  # the first replicate leaves out the only sample of class 2
    got = bootstrap.macro_f1(labels, preds, 6, draw)
    assert got[0] == pytest.approx(1.0)  # classes 0 and 1, both perfect
    assert got[1] == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_a_replicate_draws_patients_and_weights_their_samples_alike() -> None:
    groups = np.array([7, 7, 7, 3, 3, 9, 12, 12])
    resampler = bootstrap.PatientResampler(groups, seed=0, side="test")
    assert (resampler.patients, resampler.samples) == (4, 8)
    draw = resampler.draw(500)
    assert draw.counts.shape == (500, 4) and np.all(draw.counts.sum(axis=1) == 4)
    weights = draw.weights()
    for code in np.unique(groups):
        same = weights[:, groups == code]
        assert np.all(same == same[:, :1])  # one patient, one weight
    assert draw.counts.mean() == pytest.approx(1.0, abs=0.05)


def test_replicates_are_seeded_per_split_and_do_not_depend_on_the_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    groups = np.repeat(np.arange(30), 3)
    a = bootstrap.PatientResampler(groups, seed=5, side="test").draw(50).counts
    np.testing.assert_array_equal(bootstrap.PatientResampler(groups, seed=5, side="test").draw(50).counts, a)
    assert not np.array_equal(bootstrap.PatientResampler(groups, seed=6, side="test").draw(50).counts, a)
    assert not np.array_equal(bootstrap.PatientResampler(groups, seed=5, side="forget").draw(50).counts, a)
    rng = np.random.default_rng(3)
    scores = rng.random(90)
    macro = bootstrap.MacroAuc.of(rng.integers(0, 2, 90), np.c_[1 - scores, scores])
    figures = [bootstrap.Figures({"auc": 0.5}, ("test",), lambda draws: {"auc": macro(draws["test"])})]
    whole = bootstrap.intervals(figures, {"test": groups}, seed=0, replicates=200)
    monkeypatch.setattr(bootstrap, "CHUNK_ELEMENTS", 7 * groups.size)  # 7 replicates per chunk
    assert bootstrap.intervals(figures, {"test": groups}, seed=0, replicates=200) == whole


def test_percentile_interval_holds_the_point_and_needs_enough_measured_replicates() -> None:
    values = np.linspace(0.2, 0.6, 1001)
    ci = bootstrap.percentile_interval(values, 0.4)
    assert ci is not None and (ci.low, ci.high) == pytest.approx((0.21, 0.59))
    widened = bootstrap.percentile_interval(values, 0.65)  # a point beyond the replicates: the interval reaches it
    assert widened is not None and (widened.low, widened.high) == pytest.approx((0.21, 0.65))
    some_nan = np.where(np.arange(1000) < 40, np.nan, 0.5)  # 4 % unmeasured: fine
    assert bootstrap.percentile_interval(some_nan, 0.5) is not None
    too_many = np.where(np.arange(1000) < 60, np.nan, 0.5)  # 6 % unmeasured: no interval
    assert bootstrap.percentile_interval(too_many, 0.5) is None
    assert bootstrap.percentile_interval(np.zeros(0), 0.5) is None


def test_intervals_need_two_patients_and_replicates() -> None:
    calls: list[int] = []

    def count(draws: dict) -> dict[str, np.ndarray]:
        calls.append(draws["forget"].counts.shape[0])
        return {"x": np.full(draws["forget"].counts.shape[0], 0.5)}

    figures = [bootstrap.Figures({"x": 0.5}, ("forget",), count)]
    assert bootstrap.intervals(figures, {"forget": np.zeros(5, int)}, seed=0, replicates=100) == {"x": None}
    assert bootstrap.intervals(figures, {"forget": np.arange(5)}, seed=0, replicates=0) == {"x": None}
    assert calls == []
    got = bootstrap.intervals(figures, {"forget": np.arange(2)}, seed=0, replicates=100)["x"]
    assert got is not None and (got.low, got.high) == (0.5, 0.5) and sum(calls) == 100
    with pytest.raises(ValueError, match="must not be negative"):
        bootstrap.intervals(figures, {"forget": np.arange(2)}, seed=0, replicates=-1)

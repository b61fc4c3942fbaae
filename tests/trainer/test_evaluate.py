"""Scoring (FORGET_MI.md §5): AUC/F1 of the image head against hand-computed cases, the retain sample, and a
model's metrics with their intervals (the bootstrap itself: tests/trainer/test_bootstrap.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from forgetmi_trainer import attacks, bootstrap, evaluate, mia
from forgetmi_trainer.contract import MiaResult, ModelMetrics, SplitMetrics

# One sample per class; per-class one-vs-rest AUCs worked out by hand:
# class 0: 0.7 beats 0.2, 0.1, 0.1 -> 1; class 1: 0.5 beats 0.1, 0.1, loses to 0.6 -> 2/3;
# class 2: 0.2 beats 0.1, ties 0.2, loses to 0.35 -> 1.5/3; class 3: 0.45 beats all -> 1.
FOUR_CLASS_LABELS = np.array([0, 1, 2, 3])
FOUR_CLASS_PROBS = np.array(
    [
        [0.7, 0.1, 0.1, 0.1],
        [0.2, 0.5, 0.2, 0.1],
        [0.1, 0.6, 0.2, 0.1],
        [0.1, 0.1, 0.35, 0.45],
    ]
)
FOUR_CLASS_AUC = (1 + 2 / 3 + 0.5 + 1) / 4


def test_softmax_rows_sum_to_one_and_match_the_definition() -> None:
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    probs = evaluate.softmax(logits)
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(probs[0], e / e.sum(), rtol=1e-12)
    np.testing.assert_allclose(probs[1], [1 / 3] * 3, rtol=1e-12)


def test_softmax_is_stable_for_huge_logits() -> None:
    probs = evaluate.softmax(np.array([[1000.0, 1001.0], [-1000.0, -1000.0]]))
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs[0], evaluate.softmax(np.array([[0.0, 1.0]]))[0], rtol=1e-12)
    np.testing.assert_allclose(probs[1], [0.5, 0.5])


def test_binary_auc_of_three_samples_by_hand() -> None:
    # positives score 0.5 and 0.9, the negative 0.5: one tie (1/2) and one win -> 0.75
    probs = np.array([[0.5, 0.5], [0.5, 0.5], [0.1, 0.9]])
    assert evaluate.macro_auc(np.array([0, 1, 1]), probs) == pytest.approx(0.75)


def test_four_class_macro_auc_by_hand() -> None:
    assert evaluate.macro_auc(FOUR_CLASS_LABELS, FOUR_CLASS_PROBS) == pytest.approx(FOUR_CLASS_AUC)


def test_macro_auc_equals_sklearn_ovr_when_every_class_is_present() -> None:
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(4), 10)
    probs = evaluate.softmax(rng.normal(size=(40, 4)) + np.eye(4)[labels])
    expected = roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    assert evaluate.macro_auc(labels, probs) == pytest.approx(expected, rel=1e-12)


def test_macro_auc_skips_classes_absent_from_the_labels() -> None:
    # only classes 0 and 2 present: class 0 -> 3/4 (0.3 loses to 0.4), class 2 -> 1
    labels = np.array([0, 0, 2, 2])
    probs = np.array([[0.5, 0.2, 0.2, 0.1], [0.3, 0.3, 0.3, 0.1], [0.4, 0.1, 0.4, 0.1], [0.1, 0.2, 0.6, 0.1]])
    assert evaluate.macro_auc(labels, probs) == pytest.approx((0.75 + 1.0) / 2)


def test_macro_auc_is_none_with_fewer_than_two_classes() -> None:
    assert evaluate.macro_auc(np.array([1, 1, 1]), FOUR_CLASS_PROBS[:3]) is None
    assert evaluate.macro_auc(np.array([], dtype=int), np.zeros((0, 4))) is None


@pytest.mark.parametrize(
    "labels, match",
    [
        (FOUR_CLASS_LABELS[:, None], "1-D"),  # the reference code's (N, 1) labels
        (np.eye(4, dtype=int), "1-D"),  # one-hot labels
        (FOUR_CLASS_LABELS.astype(float), "integer"),
        (np.array([0, 1, 2, 4]), r"\[0, 4\)"),
        (np.array([0, 1, 2]), "3 samples"),
    ],
)
def test_macro_auc_rejects_malformed_labels(labels: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        evaluate.macro_auc(labels, FOUR_CLASS_PROBS)


def test_non_finite_scores_are_rejected() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        evaluate.macro_auc(FOUR_CLASS_LABELS, np.full((4, 4), np.nan))


def test_macro_f1_by_hand() -> None:
    labels, preds = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2])
    # class 0: P 1, R 1/2 -> 2/3; class 1: P 1/2, R 1 -> 2/3; class 2: 1
    assert evaluate.macro_f1(labels, preds, 3) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    # a fourth class absent from labels and predictions is not averaged in, unless all C classes are asked for
    assert evaluate.macro_f1(labels, preds, 4) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert evaluate.macro_f1_all_classes(labels, preds, 4) == pytest.approx((2 / 3 + 2 / 3 + 1 + 0) / 4)
    # a class only predicted counts (F1 0): the present classes are those of labels and predictions
    assert evaluate.macro_f1(np.array([0, 0, 1]), np.array([0, 3, 1]), 4) == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_a_class_a_small_forget_set_lacks_no_longer_costs_one_in_c() -> None:
    """Two classes of six held by a perfectly predicted forget set: F1 1 over the classes present, 1/3 over C."""
    labels = np.array([0, 0, 1, 1])
    assert evaluate.macro_f1(labels, labels, 6) == 1.0
    assert evaluate.macro_f1_all_classes(labels, labels, 6) == pytest.approx(2 / 6)


def test_macro_f1_is_none_for_an_empty_set_and_guards_shapes() -> None:
    assert evaluate.macro_f1(np.array([], dtype=int), np.array([], dtype=int), 4) is None
    assert evaluate.macro_f1_all_classes(np.array([], dtype=int), np.array([], dtype=int), 4) is None
    with pytest.raises(ValueError, match="preds hold 2 samples"):
        evaluate.macro_f1(np.array([0, 1, 1]), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="1-D"):
        evaluate.macro_f1(np.array([[0], [1]]), np.array([0, 1]), 2)


def test_split_metrics_on_hand_computed_splits() -> None:
    test_logits = np.log(FOUR_CLASS_PROBS)  # softmax gives the probabilities back
    forget_logits = np.log(np.array([[0.1, 0.7, 0.1, 0.1], [0.6, 0.2, 0.1, 0.1]]))
    metrics = evaluate.split_metrics(forget_logits, np.array([1, 1]), test_logits, FOUR_CLASS_LABELS)
    assert isinstance(metrics, SplitMetrics)
    assert metrics.test_auc == pytest.approx(FOUR_CLASS_AUC)
    # argmax [0, 1, 1, 3] against [0, 1, 2, 3]: F1 per class 1, 2/3, 0, 1 (all four present)
    assert metrics.test_f1 == metrics.test_f1_all_classes == pytest.approx((1 + 2 / 3 + 0 + 1) / 4)
    assert metrics.forget_auc is None  # one class only
    # argmax [1, 0] against [1, 1]: class 1 has P 1, R 1/2 -> 2/3; class 0 (predicted only) 0; 2 and 3 absent
    assert metrics.forget_f1 == pytest.approx((2 / 3) / 2)
    assert metrics.forget_f1_all_classes == pytest.approx((2 / 3) / 4)


def test_split_metrics_of_an_empty_forget_split_are_none() -> None:
    metrics = evaluate.split_metrics(
        np.zeros((0, 4)), np.array([], dtype=int), np.log(FOUR_CLASS_PROBS), FOUR_CLASS_LABELS
    )
    assert metrics.forget_auc is None and metrics.forget_f1 is None and metrics.forget_f1_all_classes is None
    assert metrics.test_auc is not None


def test_logit_distance_by_hand() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [3.0, 4.0]])
    b = np.array([[2.0, 0.0], [-1.0, -1.0], [5.0, 0.0], [4.0, 3.0]])
    # cosines: 1 (same direction), -1 (opposite), 0 (orthogonal), 24/25
    assert evaluate.logit_distance(a, b) == pytest.approx(1 - (1 - 1 + 0 + 24 / 25) / 4)
    assert evaluate.logit_distance(a, a) == pytest.approx(0.0, abs=1e-12)
    assert evaluate.logit_distance(a, -a) == pytest.approx(2.0)


def test_logit_distance_treats_zero_vectors_as_orthogonal_and_guards_shapes() -> None:
    assert evaluate.logit_distance(np.zeros((2, 3)), np.ones((2, 3))) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same shape"):
        evaluate.logit_distance(np.ones((2, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="at least one sample"):
        evaluate.logit_distance(np.zeros((0, 3)), np.zeros((0, 3)))


# ---- the retain sample ---------------------------------------------------------------------------


def _labels(counts: list[int], seed: int = 0) -> np.ndarray:
    """Class indices with the given count of each class, shuffled."""
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(len(counts)), counts))


@pytest.mark.parametrize(("counts", "k", "expected"), [
    ([700, 200, 90, 10], 100, [70, 20, 9, 1]),  # exact shares
    ([500, 300, 200], 7, [4, 2, 1]),  # quotas 3.5, 2.1, 1.4: largest remainders
    ([9990, 5, 5], 10, [8, 1, 1]),  # a class whose share rounds to 0 keeps one row
    ([985, 10, 5], 50, [48, 1, 1]),
    ([6, 1, 1, 1, 1], 5, [1, 1, 1, 1, 1]),
])
def test_retain_sample_keeps_class_proportions_and_every_class(counts: list[int], k: int,
                                                                expected: list[int]) -> None:
    labels = _labels(counts)
    rows = evaluate.retain_sample(labels, k, seed=3)
    assert rows.size == k and np.all(np.diff(rows) > 0)  # sorted, distinct positions
    assert np.bincount(labels[rows], minlength=len(counts)).tolist() == expected


def test_retain_sample_with_fewer_rows_than_classes_takes_one_of_each_most_frequent_class() -> None:
    labels = _labels([5, 50, 20, 1])
    rows = evaluate.retain_sample(labels, 2, seed=0)
    assert sorted(labels[rows].tolist()) == [1, 2]


def test_retain_sample_is_every_row_when_k_covers_the_set() -> None:
    labels = _labels([3, 4])
    np.testing.assert_array_equal(evaluate.retain_sample(labels, 7, seed=0), np.arange(7))
    np.testing.assert_array_equal(evaluate.retain_sample(labels, 5000, seed=0), np.arange(7))
    assert evaluate.retain_sample(np.array([], dtype=int), 5, seed=0).size == 0


def test_retain_sample_is_seeded_and_depends_on_nothing_else() -> None:
    labels = _labels([800, 150, 50])
    first = evaluate.retain_sample(labels, 100, seed=11)
    np.testing.assert_array_equal(evaluate.retain_sample(labels.copy(), 100, seed=11), first)
    assert not np.array_equal(evaluate.retain_sample(labels, 100, seed=12), first)


def test_retain_sample_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        evaluate.retain_sample(np.array([0, 1]), 0, seed=0)
    with pytest.raises(ValueError, match="class indices"):
        evaluate.retain_sample(np.array([0.5, 1.0]), 1, seed=0)


# ---- a model's metrics and their intervals -------------------------------------------------------


def _split(rng: np.random.Generator, patients: int, per_patient: int, shift: float, classes: int = 3,
           first_code: int = 0) -> evaluate.Scored:
    """``patients`` patients with one class each and ``per_patient`` samples, logits ``shift`` towards the truth."""
    patient_labels = rng.integers(0, classes, patients)
    labels = np.repeat(patient_labels, per_patient)
    logits = rng.normal(size=(labels.size, classes)) + shift * np.eye(classes)[labels]
    return evaluate.Scored(logits, labels, np.repeat(np.arange(patients) + first_code, per_patient))


def _sets(seed: int = 0, forget_patients: int = 20, test_patients: int = 100) -> tuple[evaluate.Scored, ...]:
    rng = np.random.default_rng(seed)
    return (_split(rng, forget_patients, 5, 3.0), _split(rng, 300, 4, 2.5, first_code=10_000),
            _split(rng, test_patients, 5, 1.0, first_code=20_000))


def _validation(classes: int = 3) -> evaluate.Scored:
    """A fixed validation split (the SVC's non-members), apart from the test split."""
    return _split(np.random.default_rng(99), 80, 5, 1.0, classes=classes, first_code=50_000)


def _metrics(forget: evaluate.Scored, retain: evaluate.Scored, test: evaluate.Scored, *, seed: int,
             bootstrap: int) -> ModelMetrics:
    validation = _validation(forget.logits.shape[1])
    return evaluate.model_metrics(forget, retain, test, validation=validation, seed=seed, bootstrap=bootstrap)


MIA_FIGURES = [name for name in MiaResult.model_fields if not name.endswith("_ci") and not name.startswith(
    ("lira", "patient_lira"))]
FIGURES = [("split", "forget_auc"), ("split", "forget_f1"), ("split", "test_auc"), ("split", "test_f1"),
           *(("mia", name) for name in MIA_FIGURES)]


def test_model_metrics_give_every_figure_an_interval_that_contains_it() -> None:
    forget, retain, test = _sets()
    metrics = _metrics(forget, retain, test, seed=0, bootstrap=500)
    assert isinstance(metrics, ModelMetrics)
    points = evaluate.split_metrics(forget.logits, forget.labels, test.logits, test.labels)
    assert metrics.split.model_dump(exclude={k for k in SplitMetrics.model_fields if k.endswith("_ci")}) == \
        points.model_dump(exclude_none=True)
    validation = _validation()
    lf, lr, lt, lv = (mia.per_sample_losses(s.logits, s.labels) for s in (forget, retain, test, validation))
    assert metrics.mia.attack_auc_signed == attacks.auc(-lf, -lt)
    assert metrics.mia.score == mia.paper_score(lr, lv, lf, seed=0, retain_labels=retain.labels,
                                                validation_labels=validation.labels)
    for group, name in FIGURES:
        point, ci = getattr(getattr(metrics, group), name), getattr(getattr(metrics, group), f"{name}_ci")
        assert point is not None and ci is not None, name
        assert ci.low <= point <= ci.high, name
    assert metrics.split.test_auc_ci is not None and metrics.split.test_auc_ci.high > metrics.split.test_auc_ci.low


def test_without_bootstrap_there_are_no_intervals() -> None:
    metrics = _metrics(*_sets(), seed=0, bootstrap=0)
    dumped = metrics.model_dump()
    assert all(dumped[group][f"{name}_ci"] is None for group, name in FIGURES)
    assert metrics.split.test_auc is not None


def test_intervals_are_seeded_and_the_same_resamples_serve_every_model() -> None:
    forget, retain, test = _sets()
    first = _metrics(forget, retain, test, seed=4, bootstrap=300)
    assert _metrics(forget, retain, test, seed=4, bootstrap=300) == first
    assert _metrics(forget, retain, test, seed=5, bootstrap=300).split.test_auc_ci != \
        first.split.test_auc_ci
    # another model (other test logits, same patients): the forget figures are resampled exactly alike
    other_test = evaluate.Scored(test.logits[::-1].copy(), test.labels[::-1].copy(), test.groups)
    other = _metrics(forget, retain, other_test, seed=4, bootstrap=300)
    assert other.split.forget_auc_ci == first.split.forget_auc_ci
    assert other.split.forget_f1_ci == first.split.forget_f1_ci


def test_an_interval_narrows_with_more_patients() -> None:
    def width(patients: int) -> float:
        forget, retain, test = _sets(seed=1, test_patients=patients)
        ci = _metrics(forget, retain, test, seed=0, bootstrap=400).split.test_auc_ci
        assert ci is not None
        return ci.high - ci.low

    assert width(400) < 0.6 * width(40)


def test_the_bootstrap_resamples_patients_not_samples() -> None:
    """Ten identical copies of each patient's one sample carry no more evidence than the sample itself:
    the intervals are exactly those of the one-sample set, and only a per-sample bootstrap (each copy its
    own 'patient') would narrow them."""
    rng = np.random.default_rng(2)
    forget, retain = _split(rng, 12, 1, 2.0), _split(rng, 200, 2, 2.0, first_code=1000)
    test = _split(rng, 60, 1, 1.0, first_code=5000)
    copies = evaluate.Scored(np.repeat(test.logits, 10, axis=0), np.repeat(test.labels, 10),
                             np.repeat(test.groups, 10))
    once = _metrics(forget, retain, test, seed=0, bootstrap=400)
    tenfold = _metrics(forget, retain, copies, seed=0, bootstrap=400)
    for key in ("test_auc_ci", "test_f1_ci"):
        a, b = getattr(once.split, key), getattr(tenfold.split, key)
        assert (b.low, b.high) == pytest.approx((a.low, a.high), abs=1e-12), key
    per_sample = evaluate.Scored(copies.logits, copies.labels, np.arange(copies.labels.size))
    narrow = _metrics(forget, retain, per_sample, seed=0, bootstrap=400).split.test_auc_ci
    assert narrow is not None and once.split.test_auc_ci is not None
    assert narrow.high - narrow.low < 0.6 * (once.split.test_auc_ci.high - once.split.test_auc_ci.low)


def test_an_interval_is_none_where_it_cannot_be_resampled_or_measured() -> None:
    rng = np.random.default_rng(3)
    _, retain, test = _sets()
    one_patient = _split(rng, 1, 6, 2.0, first_code=90_000)  # one patient: nothing to resample
    metrics = _metrics(one_patient, retain, test, seed=0, bootstrap=300)
    assert metrics.split.forget_f1 is not None and metrics.split.forget_f1_ci is None
    assert metrics.mia.attack_auc is not None and metrics.mia.attack_auc_ci is None
    assert metrics.split.forget_auc is None and metrics.split.forget_auc_ci is None  # one class: no point
    assert metrics.split.test_auc_ci is not None  # the test patients are still resampled
    # two patients of class 0 and one of class 1: ~30 % of the resamples hold one class only
    three = evaluate.Scored(rng.normal(size=(6, 3)), np.array([0, 0, 0, 0, 1, 1]), np.array([0, 0, 1, 1, 2, 2]))
    metrics = _metrics(three, retain, test, seed=0, bootstrap=300)
    assert metrics.split.forget_auc is not None and metrics.split.forget_auc_ci is None
    assert metrics.split.forget_f1_ci is not None


def test_scored_sets_are_validated() -> None:
    with pytest.raises(ValueError, match="integer patient codes"):
        evaluate.Scored(np.zeros((2, 3)), np.array([0, 1]), np.array(["P1", "P2"]))
    with pytest.raises(ValueError, match="2 integer patient codes"):
        evaluate.Scored(np.zeros((2, 3)), np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        evaluate.Scored(np.zeros((2, 3)), np.array([0, 3]), np.array([0, 1]))
    forget, retain, test = _sets()
    narrow = evaluate.Scored(test.logits[:, :2], test.labels.clip(0, 1), test.groups)
    with pytest.raises(ValueError, match="as many classes"):
        _metrics(forget, retain, narrow, seed=0, bootstrap=0)


def test_all_intervals_of_one_model_take_well_under_a_second() -> None:
    """The audit's size (5,000 retain, 2,000 test and validation, 100 forget samples; 1,000 replicates,
    4 classes): the bootstrap of all twelve figures, without the SVC fit that the points need anyway."""
    rng = np.random.default_rng(0)
    forget, retain, test = _split(rng, 20, 5, 3.0, 4), _split(rng, 1000, 5, 2.0, 4), _split(rng, 400, 5, 1.0, 4)
    validation = _split(rng, 400, 5, 1.0, 4)
    split = evaluate.split_metrics(forget.logits, forget.labels, test.logits, test.labels)
    _, mia_figures = mia.audit_figures(forget, retain, test, validation, seed=0)
    figures = [*evaluate._split_figures(split, forget, test), *mia_figures]
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        cis = bootstrap.intervals(figures, {"forget": forget.groups, "test": test.groups}, seed=0, replicates=1000)
        seconds.append(time.perf_counter() - start)
    assert len(cis) == 12 and all(ci is not None for ci in cis.values())
    assert min(seconds) < 1.0


def test_an_empty_split_leaves_its_figures_and_intervals_unmeasured() -> None:
    forget, retain, test = _sets()
    empty = evaluate.Scored(np.zeros((0, 3)), np.zeros(0, dtype=int), np.zeros(0, dtype=int))
    no_test = _metrics(forget, retain, empty, seed=0, bootstrap=200)
    assert no_test.split.test_auc is None and no_test.split.test_auc_ci is None
    assert all(getattr(no_test.mia, name) is None for name in MIA_FIGURES if name != "score")
    assert no_test.mia.score_ci is not None  # the SVC trains on retain and validation, never on test
    assert no_test.split.forget_auc_ci is not None
    no_retain = _metrics(forget, empty, test, seed=0, bootstrap=200)
    assert no_retain.mia.score is None and no_retain.mia.score_ci is None  # the attacker has no members
    assert no_retain.mia.attack_auc_ci is not None
    no_validation = evaluate.model_metrics(forget, retain, test, validation=empty, seed=0, bootstrap=200)
    assert no_validation.mia.score is None and no_validation.mia.score_ci is None  # nor non-members
    assert no_validation.mia.attack_auc_ci is not None

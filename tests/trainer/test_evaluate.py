"""Scoring (FORGET_MI.md §5): AUC/F1 of the image head against hand-computed cases, and a model's logits and metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from forgetmi_trainer import evaluate
from forgetmi_trainer.contract import SplitMetrics
from forgetmi_trainer.data import Encoded
from forgetmi_trainer.model import MultimodalClassifier, MultimodalConfig, build_model, tiny_bert_config

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
    # a fourth class absent from labels and predictions counts as 0
    assert evaluate.macro_f1(labels, preds, 4) == pytest.approx((2 / 3 + 2 / 3 + 1 + 0) / 4)


def test_macro_f1_is_none_for_an_empty_set_and_guards_shapes() -> None:
    assert evaluate.macro_f1(np.array([], dtype=int), np.array([], dtype=int), 4) is None
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
    # argmax [0, 1, 1, 3] against [0, 1, 2, 3]: F1 per class 1, 2/3, 0, 1
    assert metrics.test_f1 == pytest.approx((1 + 2 / 3 + 0 + 1) / 4)
    assert metrics.forget_auc is None  # one class only
    # argmax [1, 0] against [1, 1]: class 1 has P 1, R 1/2 -> 2/3; the rest 0
    assert metrics.forget_f1 == pytest.approx((2 / 3) / 4)


def test_split_metrics_of_an_empty_forget_split_are_none() -> None:
    metrics = evaluate.split_metrics(
        np.zeros((0, 4)), np.array([], dtype=int), np.log(FOUR_CLASS_PROBS), FOUR_CLASS_LABELS
    )
    assert metrics.forget_auc is None and metrics.forget_f1 is None
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


def _tiny_model_and_data(n: int = 13) -> tuple[MultimodalClassifier, Encoded]:
    """An untrained small model with 3 classes and ``n`` random samples."""
    model = build_model(MultimodalConfig(num_labels=3, image_size=16, text_encoder_config=tiny_bert_config(40)), 0)
    g = torch.Generator().manual_seed(0)
    pixels, ids = torch.rand(n, 1, 16, 16, generator=g), torch.randint(5, 40, (n, 8), generator=g)
    return model, Encoded(pixels, ids, torch.ones(n, 8, dtype=torch.long), torch.arange(n) % 3)


def test_image_logits_are_the_image_heads_in_float64_whatever_the_batch_size() -> None:
    model, data = _tiny_model_and_data()
    logits = evaluate.image_logits(model, data, batch_size=4)
    with torch.no_grad():
        expected = model.eval()(data.pixels, data.input_ids, data.attention_mask).image_logits
    assert logits.dtype == np.float64 and logits.shape == (13, 3)
    np.testing.assert_allclose(logits, expected.double().numpy(), rtol=1e-5, atol=1e-6)


def test_model_metrics_score_forget_and_test_and_return_the_retain_logits() -> None:
    model, data = _tiny_model_and_data()
    metrics, retain_logits = evaluate.model_metrics(model, data, data, data, seed=0)
    np.testing.assert_array_equal(retain_logits, evaluate.image_logits(model, data))
    labels = data.labels.numpy()
    assert metrics.split == evaluate.split_metrics(retain_logits, labels, retain_logits, labels)
    assert metrics.split.forget_auc == metrics.split.test_auc

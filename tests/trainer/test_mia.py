"""The membership-inference audit on constructed member/non-member losses (FORGET_MI.md §5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.svm import SVC

from forgetmi_trainer import evaluate, mia
from forgetmi_trainer.contract import MiaResult


def _members(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.exponential(0.02, n)  # memorised: near-zero loss


def _non_members(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(3.0, 0.3, n).clip(1.5)  # never seen: large loss


class _RecordingSVC(SVC):
    """An SVC that remembers what it was trained on."""

    fits: list[tuple[np.ndarray, np.ndarray]] = []  # noqa: RUF012 (reset per test)

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> _RecordingSVC:
        _RecordingSVC.fits.append((np.asarray(X).ravel().copy(), np.asarray(y).copy()))
        return super().fit(X, y, sample_weight)


@pytest.fixture
def recording_svc(monkeypatch: pytest.MonkeyPatch) -> list[tuple[np.ndarray, np.ndarray]]:
    _RecordingSVC.fits = []
    monkeypatch.setattr(mia, "SVC", _RecordingSVC)
    return _RecordingSVC.fits


def test_per_sample_losses_match_a_loop_reference() -> None:
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(6, 4)) * 3, np.array([0, 1, 2, 3, 3, 1])
    expected = [
        -math.log(math.exp(row[y]) / sum(math.exp(v) for v in row))
        for row, y in zip(logits.tolist(), labels.tolist(), strict=True)
    ]
    got = mia.per_sample_losses(logits, labels)
    assert got.shape == (6,)  # one loss per sample, never one per batch
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_per_sample_losses_are_stable_and_validated() -> None:
    got = mia.per_sample_losses(np.array([[1000.0, 0.0], [0.0, 1000.0]]), np.array([0, 0]))
    np.testing.assert_allclose(got, [0.0, 1000.0], atol=1e-9)
    assert mia.per_sample_losses(np.zeros((0, 3)), np.array([], dtype=int)).shape == (0,)
    with pytest.raises(ValueError, match="must match"):
        mia.per_sample_losses(np.zeros((3, 2)), np.zeros((3, 1), dtype=int))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        mia.per_sample_losses(np.zeros((2, 2)), np.array([0, 2]))
    with pytest.raises(ValueError, match="non-finite"):
        mia.per_sample_losses(np.array([[np.nan, 0.0]]), np.array([0]))


def test_paper_score_labels_member_like_forget_samples_as_members() -> None:
    rng = np.random.default_rng(1)
    retain, validation = _members(rng, 400), _non_members(rng, 100)
    like_members = mia.paper_score(retain, validation, _members(rng, 80))
    like_non_members = mia.paper_score(retain, validation, _non_members(rng, 80))
    assert like_members is not None and like_members >= 0.95
    assert like_non_members is not None and like_non_members <= 0.05


def test_paper_score_is_none_when_a_set_is_empty() -> None:
    losses = np.array([0.1, 0.2, 3.0])
    empty = np.zeros(0)
    assert mia.paper_score(empty, losses, losses) is None
    assert mia.paper_score(losses, empty, losses) is None
    assert mia.paper_score(losses, losses, empty) is None
    no_shared_label = mia.paper_score(losses, losses, losses, retain_labels=np.array([0, 0, 0]),
                                      validation_labels=np.array([1, 1, 1]))
    assert no_shared_label is None


def test_the_score_does_not_follow_the_member_to_non_member_ratio() -> None:
    """Overlapping losses, 25x more members than non-members: an attacker trained on that ratio says
    "member" almost everywhere; the 1:1 sample leaves forget samples drawn like non-members as non-members."""
    rng = np.random.default_rng(2)
    retain, validation = rng.normal(1.0, 0.5, 1500).clip(0), rng.normal(1.5, 0.5, 60).clip(0)
    forget = rng.normal(1.5, 0.5, 200).clip(0)
    score = mia.paper_score(retain, validation, forget)
    assert score is not None and score <= 0.5


def test_the_svc_sample_matches_the_label_mix(recording_svc: list[tuple[np.ndarray, np.ndarray]]) -> None:
    rng = np.random.default_rng(3)

    # no membership signal at all: the loss depends on the label only, and retain is 90 %
    # label 0 (low loss) while validation is 50 % label 0
    def draw(labels: np.ndarray) -> np.ndarray:
        return np.where(labels == 0, rng.exponential(0.2, labels.size), rng.exponential(2.0, labels.size) + 1)

    retain_labels, validation_labels = (rng.random(1000) < 0.1).astype(int), (rng.random(400) < 0.5).astype(int)
    retain, validation = draw(retain_labels), draw(validation_labels)
    forget = draw(np.zeros(200, dtype=int))  # label 0: looks "member" only through the label mix
    label_of = dict(zip(np.r_[retain, validation].tolist(), np.r_[retain_labels, validation_labels].tolist(),
                        strict=True))
    unstratified, stratified = [], []
    for seed in range(5):
        unstratified.append(mia.paper_score(retain, validation, forget, seed=seed))
        stratified.append(mia.paper_score(retain, validation, forget, seed=seed, retain_labels=retain_labels,
                                          validation_labels=validation_labels))
        features, membership = recording_svc[-1]
        for label in (0, 1):
            of_label = np.array([label_of[v] == label for v in features.tolist()])
            assert (of_label & (membership == 1)).sum() == (of_label & (membership == 0)).sum() > 0
    assert np.mean(unstratified) >= 0.95  # learnt the label mix
    assert np.mean(stratified) <= 0.8


def test_training_set_is_one_to_one_capped_and_seeded(recording_svc: list[tuple[np.ndarray, np.ndarray]]) -> None:
    rng = np.random.default_rng(4)
    retain, validation, forget = rng.normal(1.0, 0.5, 9000), rng.normal(1.5, 0.5, 3000), rng.normal(1.2, 0.5, 500)
    first = mia.paper_score(retain, validation, forget, seed=7)
    x, y = recording_svc[-1]
    assert x.size == mia.MAX_TRAIN and y.sum() == mia.MAX_TRAIN // 2  # as many members as non-members
    assert mia.paper_score(retain, validation, forget, seed=7) == first
    np.testing.assert_array_equal(recording_svc[-1][0], x)
    mia.paper_score(retain, validation, forget, seed=8)
    assert not np.array_equal(recording_svc[-1][0], x)  # the seed picks the sample
    mia.paper_score(retain[:600], validation[:150], forget, seed=7)
    _, small_y = recording_svc[-1]
    assert small_y.size == 300 and small_y.sum() == 150  # never more members than non-members


def test_losses_are_validated() -> None:
    losses = np.array([0.1, 0.2])
    with pytest.raises(ValueError, match="1-D"):
        mia.paper_score(losses[:, None], losses, losses)
    with pytest.raises(ValueError, match="validation losses hold non-finite"):
        mia.paper_score(losses, np.array([np.inf]), losses)
    with pytest.raises(ValueError, match="as long as their losses"):
        mia.paper_score(losses, losses, losses, retain_labels=np.array([0]), validation_labels=np.array([0, 1]))


def test_member_votes_are_the_paper_scores_per_forget_sample() -> None:
    rng = np.random.default_rng(7)
    retain, validation = _members(rng, 300), _non_members(rng, 100)
    forget = np.r_[_members(rng, 30), _non_members(rng, 10)]
    votes = mia.member_votes(retain, validation, forget, seed=2)
    assert votes is not None and votes.shape == (40,) and set(np.unique(votes)) <= {0.0, 1.0}
    assert votes.mean() == mia.paper_score(retain, validation, forget, seed=2)
    assert votes[:30].mean() >= 0.95 and votes[30:].mean() <= 0.05
    assert mia.member_votes(retain, validation, np.zeros(0)) is None


# ---- the whole audit of one model ----------------------------------------------------------------


def _scored(losses: np.ndarray, groups: np.ndarray, classes: int = 3, seed: int = 0) -> evaluate.Scored:
    """Logits whose per-sample loss is ``losses``: the label's logit 0, the others equal and set to match."""
    labels = np.random.default_rng(seed).integers(0, classes, losses.size)
    other = np.log(np.expm1(losses) / (classes - 1))  # loss = log(1 + (C - 1) e^other)
    logits = np.repeat(other[:, None], classes, axis=1)
    logits[np.arange(losses.size), labels] = 0.0
    return evaluate.Scored(logits, labels, groups)


def test_the_svc_trains_on_retain_and_validation_once_whatever_the_replicates(
        recording_svc: list[tuple[np.ndarray, np.ndarray]]) -> None:
    rng = np.random.default_rng(10)
    retain = _scored(rng.normal(1.0, 0.3, 800).clip(0.05), np.arange(800), seed=1)
    validation = _scored(rng.normal(1.5, 0.3, 300).clip(0.05), np.arange(300), seed=2)
    test = _scored(rng.normal(1.5, 0.3, 300).clip(0.05), np.repeat(np.arange(100), 3), seed=3)
    forget = _scored(rng.normal(1.2, 0.3, 60).clip(0.05), np.repeat(np.arange(20), 3), seed=4)
    result = evaluate.model_metrics(forget, retain, test, validation=validation, seed=1, bootstrap=1000).mia
    assert len(recording_svc) == 1
    features, membership = recording_svc[0]
    lr, lv = (mia.per_sample_losses(s.logits, s.labels) for s in (retain, validation))
    assert np.isin(features[membership == 1], lr).all() and np.isin(features[membership == 0], lv).all()
    expected = mia.paper_score(lr, lv, mia.per_sample_losses(forget.logits, forget.labels), seed=1,
                               retain_labels=retain.labels, validation_labels=validation.labels)
    assert result.score == expected
    assert result.score_ci is not None and result.score_ci.low <= result.score <= result.score_ci.high
    # the test patients never reach the SVC: other test losses leave the score as it was
    other_test = _scored(rng.normal(0.2, 0.1, 300).clip(0.05), test.groups, seed=3)
    assert evaluate.model_metrics(forget, retain, other_test, validation=validation, seed=1,
                                  bootstrap=0).mia.score == result.score


def test_audit_figures_name_every_mia_field() -> None:
    rng = np.random.default_rng(11)
    splits = [_scored(rng.gamma(2.0, 0.5, n), np.arange(n), seed=n) for n in (40, 200, 100, 100)]
    points, _ = mia.audit_figures(*splits, seed=0)
    assert set(points) == {name for name in MiaResult.model_fields if not name.endswith("_ci")}

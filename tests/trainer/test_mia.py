"""The membership-inference audit on constructed member/non-member losses (FORGET_MI.md §5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.svm import SVC

from forgetmi_trainer import bootstrap, mia
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


@pytest.mark.parametrize("balanced", [False, True])
def test_paper_score_labels_member_like_forget_samples_as_members(balanced: bool) -> None:
    rng = np.random.default_rng(1)
    retain, test = _members(rng, 400), _non_members(rng, 100)
    like_members = mia.paper_score(retain, test, _members(rng, 80), balanced=balanced)
    like_non_members = mia.paper_score(retain, test, _non_members(rng, 80), balanced=balanced)
    assert like_members is not None and like_members >= 0.95
    assert like_non_members is not None and like_non_members <= 0.05


def test_paper_score_is_none_when_a_set_is_empty() -> None:
    losses = np.array([0.1, 0.2, 3.0])
    empty = np.zeros(0)
    for balanced in (False, True):
        assert mia.paper_score(empty, losses, losses, balanced=balanced) is None
        assert mia.paper_score(losses, empty, losses, balanced=balanced) is None
        assert mia.paper_score(losses, losses, empty, balanced=balanced) is None
    no_shared_label = mia.paper_score(
        losses,
        losses,
        losses,
        balanced=True,
        retain_labels=np.array([0, 0, 0]),
        test_labels=np.array([1, 1, 1]),
    )
    assert no_shared_label is None


def test_balanced_variant_corrects_the_count_imbalance_that_biases_the_paper_score() -> None:
    rng = np.random.default_rng(2)
    # overlapping losses, 25x more members than non-members: the plain attacker says "member"
    # almost everywhere, even for forget samples drawn exactly like the non-members
    retain, test = rng.normal(1.0, 0.5, 1500).clip(0), rng.normal(1.5, 0.5, 60).clip(0)
    forget = rng.normal(1.5, 0.5, 200).clip(0)
    plain = mia.paper_score(retain, test, forget)
    balanced = mia.paper_score(retain, test, forget, balanced=True)
    assert plain is not None and plain >= 0.9
    assert balanced is not None and balanced <= 0.5


def test_balanced_variant_matches_label_mix(recording_svc: list[tuple[np.ndarray, np.ndarray]]) -> None:
    rng = np.random.default_rng(3)

    # no membership signal at all: the loss depends on the label only, and retain is 90 %
    # label 0 (low loss) while test is 50 % label 0
    def draw(labels: np.ndarray) -> np.ndarray:
        return np.where(labels == 0, rng.exponential(0.2, labels.size), rng.exponential(2.0, labels.size) + 1)

    retain_labels, test_labels = (rng.random(1000) < 0.1).astype(int), (rng.random(400) < 0.5).astype(int)
    retain, test = draw(retain_labels), draw(test_labels)
    forget = draw(np.zeros(200, dtype=int))  # label 0: looks "member" only through the label mix
    label_of = dict(
        zip(np.r_[retain, test].tolist(), np.r_[retain_labels, test_labels].tolist(), strict=True)
    )
    unstratified, stratified = [], []
    for seed in range(5):
        unstratified.append(mia.paper_score(retain, test, forget, seed=seed, balanced=True))
        stratified.append(
            mia.paper_score(
                retain,
                test,
                forget,
                seed=seed,
                balanced=True,
                retain_labels=retain_labels,
                test_labels=test_labels,
            )
        )
        features, membership = recording_svc[-1]
        for label in (0, 1):
            of_label = np.array([label_of[v] == label for v in features.tolist()])
            assert (of_label & (membership == 1)).sum() == (of_label & (membership == 0)).sum() > 0
    assert np.mean(unstratified) >= 0.95  # learnt the label mix
    assert np.mean(stratified) <= 0.8


def test_training_set_is_capped_and_seeded(recording_svc: list[tuple[np.ndarray, np.ndarray]]) -> None:
    rng = np.random.default_rng(4)
    retain, test, forget = rng.normal(1.0, 0.5, 9000), rng.normal(1.5, 0.5, 3000), rng.normal(1.2, 0.5, 500)
    first = mia.paper_score(retain, test, forget, seed=7)
    plain_x, plain_y = recording_svc[-1]
    assert plain_x.size == mia.MAX_TRAIN and plain_y.mean() == pytest.approx(0.75, abs=0.01)
    assert mia.paper_score(retain, test, forget, seed=7) == first
    np.testing.assert_array_equal(recording_svc[-1][0], plain_x)
    mia.paper_score(retain, test, forget, seed=8)
    assert not np.array_equal(recording_svc[-1][0], plain_x)  # the seed picks the subsample
    mia.paper_score(retain, test, forget, seed=7, balanced=True)
    _, balanced_y = recording_svc[-1]
    assert balanced_y.size == mia.MAX_TRAIN and balanced_y.sum() == mia.MAX_TRAIN // 2


def test_attack_auc_separated_identical_and_reversed() -> None:
    rng = np.random.default_rng(5)
    members, non_members = _members(rng, 50), _non_members(rng, 70)
    assert mia.attack_auc(members, non_members) == 1.0
    assert mia.attack_auc(non_members, non_members) == 0.5
    assert mia.attack_auc(non_members, members) == 0.0
    assert mia.attack_auc(np.zeros(0), non_members) is None
    assert mia.attack_auc(members, np.zeros(0)) is None


def test_tpr_at_fpr_on_a_hand_built_case() -> None:
    test = np.arange(1.0, 101.0)  # 100 never-seen samples with losses 1..100
    forget = np.array([0.5, 0.6, 1.5, 50.0, 200.0])
    # threshold below 1: no false positive, 2 of 5 forget samples caught;
    # threshold in [1.5, 2): one false positive (FPR 0.01), 3 of 5 caught
    assert mia.tpr_at_fpr(forget, test, 0.01) == pytest.approx(0.6)
    assert mia.tpr_at_fpr(forget, test, 0.0) == pytest.approx(0.4)
    assert mia.tpr_at_fpr(forget, test, 0.005) == pytest.approx(0.4)  # no interpolation
    assert mia.tpr_at_fpr(forget, test, 1.0) == 1.0
    assert mia.tpr_at_fpr(forget, np.zeros(0)) is None
    with pytest.raises(ValueError, match="fpr"):
        mia.tpr_at_fpr(forget, test, 1.5)


def test_audit_combines_the_four_numbers_deterministically() -> None:
    rng = np.random.default_rng(6)
    retain, test, forget = _members(rng, 300), _non_members(rng, 100), _members(rng, 40)
    labels = {n: rng.integers(0, 4, n) for n in (300, 100, 40)}
    result = mia.audit(retain, labels[300], test, labels[100], forget, labels[40], seed=3)
    assert isinstance(result, MiaResult)
    assert result.score == mia.paper_score(retain, test, forget, seed=3)
    assert result.score is not None and result.score >= 0.95
    assert result.balanced_score is not None and result.balanced_score >= 0.95
    assert result.attack_auc == 1.0 and result.tpr_at_1pct_fpr == 1.0
    assert mia.audit(retain, labels[300], test, labels[100], forget, labels[40], seed=3) == result


def test_audit_and_losses_reject_malformed_input() -> None:
    losses = np.array([0.1, 0.2])
    with pytest.raises(ValueError, match="forget losses and labels"):
        mia.audit(losses, np.array([0, 1]), losses, np.array([0, 1]), losses, np.array([0]))
    with pytest.raises(ValueError, match="1-D"):
        mia.attack_auc(losses[:, None], losses)
    with pytest.raises(ValueError, match="non-finite"):
        mia.paper_score(np.array([np.inf]), losses, losses)


# ---- intervals -----------------------------------------------------------------------------------


def _unit(n: int) -> bootstrap.Draw:
    return bootstrap.Draw(np.ones((1, n)), np.arange(n))


def test_member_votes_are_the_paper_scores_per_forget_sample() -> None:
    rng = np.random.default_rng(7)
    retain, test, forget = _members(rng, 300), _non_members(rng, 100), np.r_[_members(rng, 30), _non_members(rng, 10)]
    votes = mia.member_votes(retain, test, forget, seed=2)
    assert votes is not None and votes.shape == (40,) and set(np.unique(votes)) <= {0.0, 1.0}
    assert votes.mean() == mia.paper_score(retain, test, forget, seed=2)
    assert votes[:30].mean() >= 0.95 and votes[30:].mean() <= 0.05
    assert mia.member_votes(retain, test, np.zeros(0)) is None


def test_the_loss_attack_replicates_are_attack_auc_and_tpr_for_unit_weights() -> None:
    test = np.arange(1.0, 101.0)
    forget = np.array([0.5, 0.6, 1.5, 50.0, 200.0, 1.0])  # 1.0 ties a test loss
    attack = mia.LossAttack.of(forget, test)
    got = attack({"forget": _unit(6), "test": _unit(100)})
    assert got["attack_auc"][0] == pytest.approx(mia.attack_auc(forget, test), abs=1e-12)
    assert got["tpr_at_1pct_fpr"][0] == pytest.approx(mia.tpr_at_fpr(forget, test, 0.01))
    rng = np.random.default_rng(8)
    for _ in range(5):
        f, t = rng.integers(0, 30, 40).astype(float), rng.integers(5, 60, 300).astype(float)  # ties everywhere
        got = mia.LossAttack.of(f, t)({"forget": _unit(40), "test": _unit(300)})
        assert got["attack_auc"][0] == pytest.approx(mia.attack_auc(f, t), abs=1e-12)
        assert got["tpr_at_1pct_fpr"][0] == pytest.approx(mia.tpr_at_fpr(f, t, 0.01), abs=1e-12)


def test_the_loss_attack_replicates_are_those_of_the_repeated_samples() -> None:
    rng = np.random.default_rng(9)
    f, t = rng.gamma(1.0, 1.0, 30).round(1), rng.gamma(2.0, 1.0, 400).round(1)
    f_patient, t_patient = rng.integers(0, 8, 30), rng.integers(0, 90, 400)
    f_counts, t_counts = rng.integers(0, 3, (4, 8)).astype(float), rng.integers(0, 3, (4, 90)).astype(float)
    f_counts[:, 0] += 1
    got = mia.LossAttack.of(f, t)({"forget": bootstrap.Draw(f_counts, f_patient),
                                   "test": bootstrap.Draw(t_counts, t_patient)})
    for b in range(4):
        rf, rt = np.repeat(f, f_counts[b, f_patient].astype(int)), np.repeat(t, t_counts[b, t_patient].astype(int))
        assert got["attack_auc"][b] == pytest.approx(mia.attack_auc(rf, rt), abs=1e-12)
        assert got["tpr_at_1pct_fpr"][b] == pytest.approx(mia.tpr_at_fpr(rf, rt, 0.01), abs=1e-12)


def test_audit_intervals_contain_the_numbers_and_the_attacker_is_trained_once(
        recording_svc: list[tuple[np.ndarray, np.ndarray]]) -> None:
    rng = np.random.default_rng(10)
    retain, test = rng.normal(1.0, 0.5, 800).clip(0), rng.normal(1.5, 0.5, 300).clip(0)
    forget = rng.normal(1.2, 0.5, 60).clip(0)
    labels = {n: rng.integers(0, 3, n) for n in (800, 300, 60)}
    groups = {"forget_groups": np.repeat(np.arange(20), 3), "test_groups": np.repeat(np.arange(100), 3)}
    result = mia.audit(retain, labels[800], test, labels[300], forget, labels[60], seed=1, **groups, replicates=1000)
    assert len(recording_svc) == 2  # plain and balanced, whatever the number of replicates
    plain = mia.audit(retain, labels[800], test, labels[300], forget, labels[60], seed=1)
    assert result.model_dump(include={"score", "balanced_score", "attack_auc", "tpr_at_1pct_fpr"}) == \
        plain.model_dump(include={"score", "balanced_score", "attack_auc", "tpr_at_1pct_fpr"})
    assert plain.score_ci is None and plain.attack_auc_ci is None
    for name in ("score", "balanced_score", "attack_auc", "tpr_at_1pct_fpr"):
        point, ci = getattr(result, name), getattr(result, f"{name}_ci")
        assert ci is not None and ci.low <= point <= ci.high and ci.high > ci.low, name


def test_audit_checks_the_groups_against_the_losses() -> None:
    losses, labels = np.array([0.1, 0.2]), np.array([0, 1])
    with pytest.raises(ValueError, match="forget losses and groups"):
        mia.audit(losses, labels, losses, labels, losses, labels, forget_groups=np.array([0]),
                  test_groups=np.array([0, 1]), replicates=10)

"""Offline LiRA (docs/audit.md, "LiRA"): the confidence, the OUT fit, the scores, and what the audit reports
with reference statistics, against the loss attack on the same data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from forgetmi_trainer import evaluate, lira


def test_confidence_is_the_logit_of_the_labels_probability() -> None:
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(20, 4)) * 3, rng.integers(0, 4, 20)
    p = evaluate.softmax(logits)[np.arange(20), labels]
    np.testing.assert_allclose(lira.confidence(logits, labels), np.log(p) - np.log1p(-p), rtol=1e-9)


def test_confidence_is_stable_and_validated() -> None:
    got = lira.confidence(np.array([[1000.0, 0.0, 0.0], [0.0, 1000.0, 999.0]]), np.array([0, 2]))
    np.testing.assert_allclose(got, [1000.0 - math.log(2), 999.0 - 1000.0], atol=1e-9)
    with pytest.raises(ValueError, match="at least 2 classes"):
        lira.confidence(np.zeros((2, 1)), np.array([0, 0]))
    with pytest.raises(ValueError, match="must match"):
        lira.confidence(np.zeros((2, 3)), np.array([0]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        lira.confidence(np.zeros((2, 3)), np.array([0, 3]))


def test_reference_stats_are_validated() -> None:
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        lira.ReferenceStats(np.zeros((3, 4)), np.zeros((3, 2), bool))
    with pytest.raises(ValueError, match="boolean"):
        lira.ReferenceStats(np.zeros((3, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        lira.ReferenceStats(np.full((1, 2), np.inf), np.zeros((1, 2), bool))


def test_out_fit_by_hand_and_the_scores() -> None:
    stats = lira.ReferenceStats(np.array([[1.0, 2.0, 3.0], [4.0, 6.0, 100.0]]),
                                np.array([[False, False, True], [False, False, True]]))
    fit = lira.out_fit(stats)
    np.testing.assert_allclose(fit.mean, [1.5, 5.0])  # the IN references (3, 100) are left out
    assert fit.std == pytest.approx(math.sqrt((0.25 + 0.25 + 1 + 1) / (4 - 2)))
    np.testing.assert_allclose(lira.offline_scores(np.array([1.5, 7.0]), fit), [0.0, 2.0 / fit.std])
    with pytest.raises(ValueError, match="same samples"):
        lira.offline_scores(np.zeros(3), fit)


def test_every_sample_is_calibrated_on_as_many_out_references_and_may_have_its_own_std() -> None:
    # OUT counts 2, 2 and 3: every mean uses its sample's first two OUT values (the third sample's 4 and 0)
    stats = lira.ReferenceStats(np.array([[1.0, 3.0, 9.0], [5.0, 5.0, 0.0], [4.0, 0.0, 5.0]]),
                                np.array([[False, False, True], [False, False, True], [False, False, False]]))
    fit = lira.out_fit(stats)
    np.testing.assert_allclose(fit.mean, [2.0, 5.0, 2.0])
    # the global std: all OUT values around their sample's mean of all OUT: 2 + 0 + (1 + 9 + 4), 7 - 3 dof
    assert fit.std == pytest.approx(2.0) and fit.sample_std is None
    own = lira.out_fit(stats, "per_sample")
    assert own.sample_std is not None
    np.testing.assert_allclose(own.sample_std, [math.sqrt(2.0), lira.FLOOR * 2.0, math.sqrt(8.0)])  # 5, 5: floored
    np.testing.assert_allclose(lira.offline_scores(np.array([3.0, 5.2, 2.0]), own), [1 / math.sqrt(2.0), 1.0, 0.0])


def test_a_sample_without_an_out_reference_is_an_error_that_counts_them() -> None:
    stats = lira.ReferenceStats(np.zeros((3, 2)), np.array([[True, True], [False, True], [True, True]]))
    with pytest.raises(ValueError, match="2 of 3 samples have no OUT reference"):
        lira.out_fit(stats)
    with pytest.raises(ValueError, match="two OUT reference models"):
        lira.out_fit(lira.ReferenceStats(np.zeros((2, 2)), np.array([[False, True], [True, False]])))


# ---- LiRA in the audit ---------------------------------------------------------------------------

K = 4


def _split(phi: np.ndarray, rng: np.random.Generator, first: int) -> evaluate.Scored:
    """Two-class logits whose confidence is ``phi`` (the label's logit ``phi``, the other 0); 2 samples per patient."""
    labels = rng.integers(0, 2, phi.size)
    logits = np.zeros((phi.size, 2))
    logits[np.arange(phi.size), labels] = phi
    return evaluate.Scored(logits, labels, np.arange(phi.size) // 2 + first)


World = tuple[evaluate.Scored, evaluate.Scored, evaluate.Scored, evaluate.Scored, lira.LiraInputs]


def _world(target_saw_forget: bool, seed: int = 0) -> World:
    """Samples of very different difficulty (a per-sample offset, SD 2) that every model shares, and a
    membership effect of +1 on phi that only a model trained on the sample's patient has: the loss attack
    sees the effect through the difficulty, LiRA subtracts the difficulty out with the OUT references."""
    rng = np.random.default_rng(seed)
    n = 300
    difficulty = {side: rng.normal(0.0, 2.0, n) for side in ("forget", "test")}
    halves = np.array([rng.permutation([True, True, False, False]) for _ in range(n // 2)])
    member = {"forget": np.repeat(halves, 2, axis=0), "test": np.zeros((n, K), bool)}  # each patient IN K/2
    stats = {side: lira.ReferenceStats(difficulty[side][:, None] + 1.0 * member[side] + rng.normal(0, 0.3, (n, K)),
                                       member[side]) for side in ("forget", "test")}
    shift = 1.0 if target_saw_forget else 0.0
    forget = _split(difficulty["forget"] + shift + rng.normal(0, 0.3, n), rng, 0)
    test = _split(difficulty["test"] + rng.normal(0, 0.3, n), rng, 10_000)
    retain = _split(rng.normal(1.0, 2.0, 400), rng, 20_000)
    validation = _split(rng.normal(0.0, 2.0, 200), rng, 30_000)
    return forget, retain, test, validation, lira.LiraInputs(forget=stats["forget"], test=stats["test"])


def test_lira_finds_members_the_loss_attack_misses() -> None:
    forget, retain, test, validation, references = _world(target_saw_forget=True)
    m = evaluate.model_metrics(forget, retain, test, validation=validation, seed=0, bootstrap=400,
                               lira=references).mia
    assert m.attack_auc is not None and m.lira_auc is not None and m.lira_auc_signed is not None
    assert m.lira_auc_signed == m.lira_auc > m.attack_auc + 0.2
    assert m.lira_tpr_at_5pct_fpr is not None and m.tpr_at_5pct_fpr is not None
    assert m.lira_tpr_at_5pct_fpr >= 3 * m.tpr_at_5pct_fpr and m.lira_tpr_at_5pct_fpr > 0.5
    assert m.lira_tpr_at_1pct_fpr is not None and m.lira_tpr_at_1pct_fpr > 0.2
    assert m.patient_lira_auc is not None and m.patient_lira_auc > 0.9
    for name in ("lira_auc", "lira_auc_signed", "lira_tpr_at_1pct_fpr", "lira_tpr_at_5pct_fpr", "patient_lira_auc"):
        ci = getattr(m, f"{name}_ci")
        assert ci is not None and ci.low <= getattr(m, name) <= ci.high, name
    assert m.lira_auc_ci is not None and m.lira_auc_ci.low > m.attack_auc


@pytest.mark.parametrize("variance", ["global", "per_sample"])
def test_lira_on_a_model_that_never_saw_the_forget_patients_is_at_chance(variance: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget samples have K/2 OUT references, test samples K: calibrated on as many, both score alike."""
    monkeypatch.setattr(lira, "VARIANCE", variance)
    forget, retain, test, validation, references = _world(target_saw_forget=False)
    m = evaluate.model_metrics(forget, retain, test, validation=validation, seed=0, bootstrap=400,
                               lira=references).mia
    assert m.lira_auc_signed_ci is not None and m.lira_auc_signed_ci.low <= 0.5 <= m.lira_auc_signed_ci.high
    assert m.lira_auc is not None and m.lira_auc < 0.56
    assert m.lira_tpr_at_5pct_fpr_ci is not None
    assert m.lira_tpr_at_5pct_fpr_ci.low <= 0.05 <= m.lira_tpr_at_5pct_fpr_ci.high


def test_reference_stats_must_be_aligned_with_the_scored_rows() -> None:
    forget, retain, test, validation, references = _world(target_saw_forget=True)
    short = lira.LiraInputs(forget=lira.ReferenceStats(references.forget.phi[:-1], references.forget.member[:-1]),
                            test=references.test)
    with pytest.raises(ValueError, match=r"lira\.forget holds 299 rows but the forget split has 300"):
        evaluate.model_metrics(forget, retain, test, validation=validation, seed=0, bootstrap=0, lira=short)
    other_k = lira.LiraInputs(forget=references.forget,
                              test=lira.ReferenceStats(references.test.phi[:, :2], references.test.member[:, :2]))
    with pytest.raises(ValueError, match="same K reference models"):
        evaluate.model_metrics(forget, retain, test, validation=validation, seed=0, bootstrap=0, lira=other_k)

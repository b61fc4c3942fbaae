"""The threshold attacks (docs/audit.md, "The attacks"): signed and two-sided AUCs, the strict TPR at a low
FPR, per-patient maxima, their bootstrap replicates, and what the audit reports on signal-free and on
over-forgotten models."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from forgetmi_trainer import attacks, bootstrap, evaluate

C = 4


def _unit(n: int) -> bootstrap.Draw:
    return bootstrap.Draw(np.ones((1, n)), np.arange(n))


def test_auc_separated_identical_and_reversed_and_its_two_sided_value() -> None:
    members, non_members = np.arange(50.0) + 100, np.arange(70.0)
    assert attacks.auc(members, non_members) == 1.0
    assert attacks.auc(non_members, non_members) == 0.5
    assert attacks.auc(non_members, members) == 0.0
    assert attacks.auc(np.zeros(0), non_members) is None and attacks.auc(members, np.zeros(0)) is None
    assert [attacks.two_sided(a) for a in (0.0, 0.2, 0.5, 0.8, 1.0)] == pytest.approx([1.0, 0.8, 0.5, 0.8, 1.0])


def test_tpr_at_fpr_on_a_hand_built_case() -> None:
    test = -np.arange(1.0, 101.0)  # 100 never-seen samples with losses 1..100, scored by -loss
    forget = -np.array([0.5, 0.6, 1.5, 50.0, 200.0])
    # threshold above -1: no false positive, 2 of 5 caught; in (-2, -1.5]: one false positive (1 %), 3 of 5
    assert attacks.tpr_at_fpr(forget, test, 0.01) == pytest.approx(0.6)
    assert attacks.tpr_at_fpr(forget, test, 0.0) == pytest.approx(0.4)
    assert attacks.tpr_at_fpr(forget, test, 0.005) == pytest.approx(0.4)  # no interpolation
    assert attacks.tpr_at_fpr(forget, test, 0.05) == pytest.approx(0.6)  # 5 false positives buy nothing more
    assert attacks.tpr_at_fpr(forget, test, 1.0) == 1.0
    assert attacks.tpr_at_fpr(forget, np.zeros(0), 0.01) is None
    with pytest.raises(ValueError, match="fpr"):
        attacks.tpr_at_fpr(forget, test, 1.5)


def test_patient_max_takes_each_patients_highest_score_in_code_order() -> None:
    got = attacks.patient_max(np.array([0.1, 0.9, 0.3, -2.0, 0.5]), np.array([7, 7, 3, 12, 3]))
    np.testing.assert_array_equal(got, [0.5, 0.9, -2.0])  # codes 3, 7, 12
    with pytest.raises(ValueError, match="same shape"):
        attacks.patient_max(np.zeros(3), np.zeros(2, int))


def test_scores_and_logits_are_validated() -> None:
    with pytest.raises(ValueError, match="1-D"):
        attacks.auc(np.zeros((2, 1)), np.zeros(2))
    with pytest.raises(ValueError, match="non-finite"):
        attacks.auc(np.array([np.nan]), np.zeros(2))
    with pytest.raises(ValueError, match="2-D"):
        attacks.logit_norms(np.zeros(3))
    np.testing.assert_allclose(attacks.logit_norms(np.array([[3.0, 4.0], [0.0, 0.0]])), [5.0, 0.0])


def test_replicates_for_unit_weights_are_the_plain_figures() -> None:
    rng = np.random.default_rng(8)
    for _ in range(5):
        f, t = rng.integers(0, 30, 40).astype(float), rng.integers(5, 60, 300).astype(float)  # ties everywhere
        got = attacks.ThresholdAttack.of(attacks.LOSS, f, t)({"forget": _unit(40), "test": _unit(300)})
        signed = attacks.auc(f, t)
        assert signed is not None
        assert got["attack_auc_signed"][0] == pytest.approx(signed, abs=1e-12)
        assert got["attack_auc"][0] == pytest.approx(0.5 + abs(signed - 0.5), abs=1e-12)
        for name, fpr in attacks.LOSS.tprs:
            assert got[name][0] == pytest.approx(attacks.tpr_at_fpr(f, t, fpr), abs=1e-12)


def test_replicates_are_those_of_the_repeated_samples_and_patients() -> None:
    rng = np.random.default_rng(9)
    f, t = rng.gamma(1.0, 1.0, 30).round(1), rng.gamma(2.0, 1.0, 400).round(1)
    f_patient, t_patient = rng.integers(0, 8, 30), rng.integers(0, 90, 400)
    f_patient[:8], t_patient[:90] = np.arange(8), np.arange(90)  # every patient has a sample
    f_counts, t_counts = rng.integers(0, 3, (4, 8)).astype(float), rng.integers(0, 3, (4, 90)).astype(float)
    f_counts[:, 0] += 1
    draws = {"forget": bootstrap.Draw(f_counts, f_patient), "test": bootstrap.Draw(t_counts, t_patient)}
    per_sample = attacks.ThresholdAttack.of(attacks.LOSS, -f, -t)(draws)
    pf, pt = attacks.patient_max(-f, f_patient), attacks.patient_max(-t, t_patient)
    per_patient = attacks.ThresholdAttack.of(attacks.PATIENT_LOSS, pf, pt, per_patient=True)(draws)
    assert set(per_patient) == {"patient_attack_auc"}
    for b in range(4):
        rf, rt = np.repeat(f, f_counts[b, f_patient].astype(int)), np.repeat(t, t_counts[b, t_patient].astype(int))
        assert per_sample["attack_auc_signed"][b] == pytest.approx(attacks.auc(-rf, -rt), abs=1e-12)
        assert per_sample["tpr_at_5pct_fpr"][b] == pytest.approx(attacks.tpr_at_fpr(-rf, -rt, 0.05), abs=1e-12)
        patients = np.r_[np.repeat(pf, f_counts[b].astype(int)), np.repeat(pt, t_counts[b].astype(int))]
        positive = np.r_[np.ones(int(f_counts[b].sum())), np.zeros(int(t_counts[b].sum()))]
        signed = roc_auc_score(positive, patients)
        assert per_patient["patient_attack_auc"][b] == pytest.approx(0.5 + abs(signed - 0.5), abs=1e-12)


# ---- what the audit reports ----------------------------------------------------------------------


def _null(rng: np.random.Generator, n: int, first: int) -> evaluate.Scored:
    """``n`` samples of patients with 1-3 samples each, every split drawn from one distribution: no
    membership signal in the losses, the logit norms or the per-patient maxima."""
    labels = rng.integers(0, C, n)
    groups = np.repeat(np.arange(n), rng.integers(1, 4, n))[:n] + first
    return evaluate.Scored(rng.normal(size=(n, C)) + 1.5 * np.eye(C)[labels], labels, groups)


@pytest.mark.parametrize(("retain", "test"), [(626, 166), (5_900, 531)])
def test_signal_free_losses_give_chance_attacks_with_intervals_that_say_so(retain: int, test: int) -> None:
    """The audit's MUST-SHOW: members and non-members from one distribution, over ten worlds."""
    results = []
    for seed in range(10):
        rng = np.random.default_rng([seed, retain])
        forget, kept, held, validation = (_null(rng, n, k * 10**5) for k, n in enumerate((120, retain, test, test)))
        results.append(evaluate.model_metrics(forget, kept, held, validation=validation, seed=seed,
                                              bootstrap=500).mia)

    def covered(name: str, value: float) -> int:
        return sum(getattr(m, f"{name}_ci").low <= value <= getattr(m, f"{name}_ci").high for m in results)

    for name in ("attack_auc_signed", "logit_norm_auc_signed"):
        assert covered(name, 0.5) >= 8, name
        assert np.mean([getattr(m, name) for m in results]) == pytest.approx(0.5, abs=0.03), name
    for name in ("attack_auc", "logit_norm_auc", "patient_attack_auc"):  # two-sided: the low end near 0.5
        assert sum(getattr(m, f"{name}_ci").low < 0.52 for m in results) >= 8, name
    assert covered("tpr_at_5pct_fpr", 0.05) >= 8
    assert np.mean([m.tpr_at_5pct_fpr for m in results]) == pytest.approx(0.05, abs=0.025)
    scores = [m.score for m in results]  # the paper's score is reported, and no longer pinned near 1
    assert all(s is not None for s in scores) and 0.25 <= np.mean(scores) <= 0.75  # type: ignore[arg-type]
    assert all(m.lira_auc is None for m in results)  # no reference models given


def test_over_forgetting_is_far_from_chance_two_sided() -> None:
    """Forget losses far above the test losses: the signed AUC is far below 0.5, which a one-sided gate
    ``<= 0.6`` would pass; the two-sided AUC, and its whole interval, is far above 0.6."""
    rng = np.random.default_rng(0)
    forget, retain, test, validation = (_null(rng, n, k * 10**5) for k, n in enumerate((120, 626, 166, 166)))
    pushed = forget.logits - 4.0 * np.eye(C)[forget.labels]  # the true class driven down: high losses
    over = evaluate.Scored(pushed, forget.labels, forget.groups)
    m = evaluate.model_metrics(over, retain, test, validation=validation, seed=0, bootstrap=500).mia
    assert m.attack_auc_signed is not None and m.attack_auc_signed < 0.2
    assert m.attack_auc is not None and m.attack_auc > 0.8
    assert m.attack_auc_ci is not None and m.attack_auc_ci.low > 0.7
    assert m.attack_auc_signed_ci is not None and m.attack_auc_signed_ci.high < 0.3
    assert m.patient_attack_auc is not None and m.patient_attack_auc > 0.7


def test_the_logit_norm_sees_what_the_losses_cannot() -> None:
    """Adding one constant to every logit of a sample leaves its softmax and loss unchanged, but not its norm."""
    rng = np.random.default_rng(1)
    forget, retain, test, validation = (_null(rng, n, k * 10**5) for k, n in enumerate((120, 626, 166, 166)))
    shifted = evaluate.Scored(forget.logits + 3.0, forget.labels, forget.groups)
    plain = evaluate.model_metrics(forget, retain, test, validation=validation, seed=0, bootstrap=300).mia
    m = evaluate.model_metrics(shifted, retain, test, validation=validation, seed=0, bootstrap=300).mia
    assert m.attack_auc_signed == pytest.approx(plain.attack_auc_signed, abs=1e-12)  # the losses did not move
    assert m.logit_norm_auc_signed is not None and m.logit_norm_auc_signed > 0.9
    assert m.logit_norm_auc_ci is not None and m.logit_norm_auc_ci.low > 0.8

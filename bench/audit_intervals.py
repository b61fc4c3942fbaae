"""The audit's 95 % intervals: what they cost, and how often a gate passes by luck without them.

1. Cost: all twelve intervals of one model (AUC and F1 on forget and test, the eight MIA figures without
   LiRA) at the audit's size (5,000 retain, 2,000 test and validation and 100 forget samples of 400 + 20
   patients, 4 classes, 1,000 replicates), the bootstrap alone and the whole ``evaluate.model_metrics``
   (with its SVC fit).
2. Luck: a simulated attack on per-sample losses with a patient effect (loss = 1 + patient + sample,
   both N(0, 0.5); 4 samples per patient; 400 test patients). A model that forgot nothing has true
   attack AUC 0.70 (its forget losses are 0.52 lower); one that forgot has 0.50. For forget sets of
   3 to 100 patients, ``--trials`` draws each: how often the gate ``miaAUC atMost 0.6`` passes on the
   point and on the upper bound, and how often the interval holds the true AUC (its coverage).

Usage::

    PYTHONSAFEPATH=1 .venv/bin/python bench/audit_intervals.py [--trials 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from forgetmi_trainer import attacks, bootstrap, evaluate, mia

PER_PATIENT = 4
SHIFT = 0.5244  # Phi(SHIFT / sqrt(2 * (0.5**2 + 0.5**2))) = 0.70
THRESHOLD = 0.6


def _scored(rng: np.random.Generator, patients: int, per_patient: int, shift: float, first: int) -> evaluate.Scored:
    labels = np.repeat(rng.integers(0, 4, patients), per_patient)
    logits = rng.normal(size=(labels.size, 4)) + shift * np.eye(4)[labels]
    return evaluate.Scored(logits, labels, np.repeat(np.arange(patients) + first, per_patient))


def cost(repeats: int = 3) -> dict[str, float]:
    """Best-of-``repeats`` seconds of the bootstrap alone and of the whole model_metrics."""
    rng = np.random.default_rng(0)
    forget, retain, test = _scored(rng, 20, 5, 3.0, 0), _scored(rng, 1000, 5, 2.0, 100), _scored(rng, 400, 5, 1.0, 9000)
    validation = _scored(rng, 400, 5, 1.0, 20000)
    split = evaluate.split_metrics(forget.logits, forget.labels, test.logits, test.labels)
    _, mia_figures = mia.audit_figures(forget, retain, test, validation, seed=0)
    figures = [*evaluate._split_figures(split, forget, test), *mia_figures]
    groups = {"forget": forget.groups, "test": test.groups}
    out = {"intervals_seconds": float("inf"), "model_metrics_seconds": float("inf")}
    for _ in range(repeats):
        start = time.perf_counter()
        bootstrap.intervals(figures, groups, seed=0, replicates=1000)
        out["intervals_seconds"] = min(out["intervals_seconds"], time.perf_counter() - start)
        start = time.perf_counter()
        evaluate.model_metrics(forget, retain, test, validation=validation, seed=0, bootstrap=1000)
        out["model_metrics_seconds"] = min(out["model_metrics_seconds"], time.perf_counter() - start)
    return out


def _losses(rng: np.random.Generator, patients: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    effect = np.repeat(rng.normal(0, 0.5, patients), PER_PATIENT)
    return 1.0 - shift + effect + rng.normal(0, 0.5, effect.size), np.repeat(np.arange(patients), PER_PATIENT)


def luck(trials: int, sizes: tuple[int, ...] = (3, 10, 30, 100)) -> list[dict[str, Any]]:
    """Pass rates of ``miaAUC atMost 0.6`` on the point and the upper bound, and the interval's coverage."""
    rows = []
    for forgot, shift, true_auc in ((False, SHIFT, 0.70), (True, 0.0, 0.50)):
        for patients in sizes:
            point = upper = covered = 0
            for trial in range(trials):
                rng = np.random.default_rng([patients, trial, forgot])
                f, f_groups = _losses(rng, patients, shift)
                t, t_groups = _losses(rng, 400, 0.0)
                points, figures = attacks.figures(attacks.Names("attack_auc", "attack_auc_signed"), -f, -t)
                auc = points["attack_auc_signed"]
                assert auc is not None
                ci = bootstrap.intervals(figures, {"forget": f_groups, "test": t_groups + patients}, seed=trial,
                                         replicates=1000)["attack_auc_signed"]
                point += auc <= THRESHOLD
                upper += ci is not None and ci.high <= THRESHOLD
                covered += ci is not None and ci.low <= true_auc <= ci.high
            rows.append({"forgot": forgot, "true_auc": true_auc, "patients": patients, "pass_point": point / trials,
                         "pass_upper": upper / trials, "coverage": covered / trials})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = {"cost": cost(), "luck": luck(args.trials)}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"all intervals {result['cost']['intervals_seconds']:.3f} s; "
          f"model_metrics {result['cost']['model_metrics_seconds']:.3f} s")
    print(f"{'model':<14} {'patients':>8} {'pass point':>10} {'pass upper':>10} {'coverage':>8}")
    for row in result["luck"]:
        model = f"{'forgot' if row['forgot'] else 'kept'} ({row['true_auc']:.2f})"
        print(f"{model:<14} {row['patients']:>8} {row['pass_point']:>10.2f} {row['pass_upper']:>10.2f} "
              f"{row['coverage']:>8.2f}")


if __name__ == "__main__":
    main()

"""``bench/unlearn_vs_retrain.py --tune``: the same tuning budget for every method, and the rule that picks.

Every tuned method (forget-mi, neggrad-plus, scrub, finetune) gets :data:`GRID_SIZE` = 8
configurations, 2 learning rates × 4 strengths (:func:`grid`), each run under the bench's
``--selection`` rule (which reads the validation patients V only; its forward passes count in the
method's budget). On each validation seed (:data:`VALIDATION_SEED_START` on: never a reported seed)
every configuration is scored by its avg gap to that seed's retrained model, measured with V as the
non-member side; :func:`select` keeps the configuration with the lowest mean gap over the
validation seeds. A configuration that diverged on any validation seed is out. The chosen settings
then run unchanged on the held-out seeds 0..N-1, reported on the test patients T.

The strengths are in the trainer's scale-free units: Forget-MI's ``push_bound`` is a multiple of the
original's embedding scale (the median distance between two different retain samples' image
embeddings), NegGrad+'s ``bound`` a multiple of ln(C). This module is pure Python (no torch), so the
grid and the rule are tested alone (tests/bench/test_tune.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from forgetmi_trainer.contract import MethodConfig

GRID_SIZE = 8
VALIDATION_SEED_START = 100
TUNED_METHODS = ("forget-mi", "neggrad-plus", "scrub", "finetune")

# (learning rates, strengths): a strength is the settings it changes on the base MethodConfig,
# ``options`` merged into the base's options. Fixed before the first tuning run.
_SPACE: dict[str, tuple[tuple[float, ...], tuple[dict[str, Any], ...]]] = {
    # push_bound relative to the embedding scale: 0.25 .. 2 (2 is about the old, unbinding 30 on the toy)
    "forget-mi": ((1e-3, 3e-3), tuple({"push_bound": b} for b in (0.25, 0.5, 1.0, 2.0))),
    # alpha weighs the retain term; bound caps each forget CE at a multiple of ln(C) (the old 5 nats ≈ 3.6)
    "neggrad-plus": (
        (1e-3, 3e-3),
        tuple({"options": {"alpha": a, "bound": b}} for a in (0.7, 0.9) for b in (1.0, 3.6)),
    ),
    # msteps: epochs that start with a max step on D_f; alpha: the KL weight on D_r in the min step
    "scrub": (
        (1e-3, 3e-3),  # the rates every other method tunes over (a first run used 5e-4 and 1e-3: RESULTS.md)
        tuple({"options": {"msteps": m, "alpha": a}} for m in (1, 3) for a in (0.001, 0.1)),
    ),
    # how long to keep training on D_r
    "finetune": ((1e-3, 3e-3), tuple({"epochs": e} for e in (2, 5, 10, 20))),
}


@dataclass(frozen=True)
class Candidate:
    """One configuration of the grid: a short label (``lr=0.001 push_bound=0.5``) and the full settings."""

    label: str
    method: MethodConfig


def grid(name: str, base: MethodConfig) -> list[Candidate]:
    """The :data:`GRID_SIZE` configurations of method ``name``: ``base`` with each learning rate × strength."""
    if name not in _SPACE:
        raise ValueError(f"no tuning grid for method {name!r}; tuned methods: {', '.join(TUNED_METHODS)}")
    rates, strengths = _SPACE[name]
    out = []
    for lr in rates:
        for strength in strengths:
            update: dict[str, Any] = {"learning_rate": lr, **strength}
            if "options" in strength:
                update["options"] = {**base.options, **strength["options"]}
            flat = {k: v for k, v in strength.items() if k != "options"} | strength.get("options", {})
            label = " ".join([f"lr={lr:g}", *(f"{k}={v:g}" for k, v in flat.items())])
            out.append(Candidate(label, MethodConfig.model_validate({**base.model_dump(), **update})))
    assert len(out) == GRID_SIZE, f"the {name} grid has {len(out)} configurations, not {GRID_SIZE}"
    return out


def validation_seeds(count: int) -> list[int]:
    """The seeds tuning runs on: :data:`VALIDATION_SEED_START` on, disjoint from the reported 0..N-1."""
    if count < 1:
        raise ValueError(f"--tune-seeds must be at least 1; got {count}")
    return list(range(VALIDATION_SEED_START, VALIDATION_SEED_START + count))


def select(gaps: Sequence[Sequence[float]]) -> int:
    """Index of the configuration with the lowest mean avg gap; ``gaps[i][s]`` = configuration i's gap on
    validation seed s (NaN: it diverged, which rules it out). Ties go to the lower index (grid order).
    ValueError when every configuration diverged or the seeds disagree in number."""
    if not gaps:
        raise ValueError("nothing to select from: the grid is empty")
    seeds = {len(g) for g in gaps}
    if len(seeds) != 1 or 0 in seeds:
        raise ValueError(f"every configuration needs a gap on each validation seed; got counts {sorted(seeds)}")
    means = [math.fsum(g) / len(g) if all(math.isfinite(x) for x in g) else math.inf for g in gaps]
    best = min(range(len(means)), key=lambda i: (means[i], i))
    if not math.isfinite(means[best]):
        raise ValueError("every configuration diverged on some validation seed; nothing to select")
    return best


def tuned_record(candidates: Sequence[Candidate], gaps: Sequence[Sequence[float]],
                 passes: Sequence[float]) -> dict[str, Any]:
    """What ``--json`` reports under ``tuned.<method>``: the chosen settings, its validation gap, and every
    configuration tried with its mean gap (None where it diverged) and the sample-passes the tuning spent."""
    best = select(gaps)
    tried = [{"label": c.label, "validation_avg_gap": _mean_or_none(g)} for c, g in zip(candidates, gaps, strict=True)]
    chosen = candidates[best].method
    return {
        "label": candidates[best].label,
        "settings": _settings(chosen),
        "validation_avg_gap": _mean_or_none(gaps[best]),
        "tried": tried,
        "tuning_sample_passes": float(math.fsum(p for p in passes if math.isfinite(p))),
    }


def chosen(candidates: Sequence[Candidate], gaps: Sequence[Sequence[float]]) -> MethodConfig:
    return candidates[select(gaps)].method


def _settings(method: MethodConfig) -> Mapping[str, Any]:
    keys = ("learning_rate", "epochs", "batch_size", "push_bound", "options", "selection")
    dumped = method.model_dump(mode="json")
    return {k: dumped[k] for k in keys}


def _mean_or_none(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values and all(math.isfinite(x) for x in values) else None

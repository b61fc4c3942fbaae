"""bench/tune.py: every method gets the same 8 configurations, and the pick is the lowest mean validation gap."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from forgetmi_trainer.contract import MethodConfig, SelectionRule

BENCH = Path(__file__).resolve().parents[2] / "bench"
_spec = importlib.util.spec_from_file_location("bench_tune", BENCH / "tune.py")
assert _spec is not None and _spec.loader is not None
tune = importlib.util.module_from_spec(_spec)
sys.modules["bench_tune"] = tune  # dataclasses resolve their module by name
_spec.loader.exec_module(tune)

NAN = math.nan
RULE = SelectionRule(rule="ForgetReachesTest")
BASES = {
    "forget-mi": MethodConfig(preset="equal", epochs=30, learning_rate=3e-3, batch_size=16, push_bound=1.0,
                              selection=RULE),
    "neggrad-plus": MethodConfig(name="neggrad-plus", epochs=30, batch_size=16, options={"weight_decay": 0.02},
                                 selection=RULE),
    "scrub": MethodConfig(name="scrub", epochs=5, batch_size=16, selection=RULE),
    "finetune": MethodConfig(name="finetune", epochs=5, batch_size=64, selection=RULE),
}


def test_the_lowest_mean_gap_wins_not_the_best_single_seed_nor_the_first() -> None:
    gaps = [
        [0.30, 0.31],  # first in the grid, worst
        [0.02, 0.40],  # the best single seed, mean 0.21
        [0.10, 0.12],  # the lowest mean: 0.11
        [0.15, 0.15],
    ]
    assert tune.select(gaps) == 2


def test_a_configuration_that_diverged_on_any_seed_is_out_and_ties_go_to_grid_order() -> None:
    assert tune.select([[0.2, 0.2], [0.01, NAN], [0.1, 0.25], [0.2, 0.2]]) == 2
    assert tune.select([[0.2, 0.2], [0.1, 0.1], [0.1, 0.1]]) == 1


@pytest.mark.parametrize("gaps", [[[NAN], [NAN]], [], [[0.1, 0.2], [0.1]], [[], []]])
def test_nothing_to_select_is_an_error(gaps: list[list[float]]) -> None:
    with pytest.raises(ValueError):
        tune.select(gaps)


@pytest.mark.parametrize("name", tune.TUNED_METHODS)
def test_every_method_gets_eight_distinct_configurations_over_rate_and_strength(name: str) -> None:
    base = BASES[name]
    candidates = tune.grid(name, base)
    assert len(candidates) == tune.GRID_SIZE == 8
    settings = {c.method.model_dump_json() for c in candidates}
    assert len(settings) == 8
    assert len({c.label for c in candidates}) == 8
    assert len({c.method.learning_rate for c in candidates}) == 2
    for c in candidates:
        # the selection rule, the method and the batch stay the base's: only rate and strength vary
        assert c.method.name == base.name
        assert c.method.selection == base.selection
        assert c.method.batch_size == base.batch_size
        assert {k: v for k, v in base.options.items() if k not in c.method.options} == {}


def test_the_strength_axis_is_the_one_each_method_has() -> None:
    assert {c.method.push_bound for c in tune.grid("forget-mi", BASES["forget-mi"])} == {0.25, 0.5, 1.0, 2.0}
    neggrad = tune.grid("neggrad-plus", BASES["neggrad-plus"])
    assert {(c.method.options["alpha"], c.method.options["bound"]) for c in neggrad} == {
        (0.7, 1.0), (0.7, 3.6), (0.9, 1.0), (0.9, 3.6)}
    assert all(c.method.options["weight_decay"] == 0.02 for c in neggrad)  # the base's options are kept
    assert {c.method.options["msteps"] for c in tune.grid("scrub", BASES["scrub"])} == {1, 3}
    assert {c.method.epochs for c in tune.grid("finetune", BASES["finetune"])} == {2, 5, 10, 20}
    with pytest.raises(ValueError, match="retrain"):
        tune.grid("retrain", MethodConfig(name="retrain"))


def test_the_record_names_the_chosen_settings_and_every_configuration_tried() -> None:
    candidates = tune.grid("forget-mi", BASES["forget-mi"])
    gaps = [[0.2, 0.2]] * 8
    gaps = [*gaps[:5], [0.05, 0.07], *gaps[6:]]
    gaps[3] = [NAN, 0.0]
    record = tune.tuned_record(candidates, gaps, passes=[100.0] * 15 + [NAN])
    assert record["label"] == candidates[5].label
    assert record["settings"]["push_bound"] == candidates[5].method.push_bound
    assert record["settings"]["learning_rate"] == candidates[5].method.learning_rate
    assert record["validation_avg_gap"] == pytest.approx(0.06)
    assert [t["label"] for t in record["tried"]] == [c.label for c in candidates]
    assert record["tried"][3]["validation_avg_gap"] is None
    assert record["tuning_sample_passes"] == 1500.0
    assert tune.chosen(candidates, gaps) == candidates[5].method


def test_validation_seeds_never_overlap_the_reported_seeds() -> None:
    assert tune.validation_seeds(2) == [100, 101]
    assert not set(tune.validation_seeds(50)) & set(range(100))
    with pytest.raises(ValueError, match="--tune-seeds"):
        tune.validation_seeds(0)


def test_every_method_tunes_over_the_same_learning_rates() -> None:
    rates = {name: {c.method.learning_rate for c in tune.grid(name, BASES[name])} for name in tune.TUNED_METHODS}
    assert all(r == {1e-3, 3e-3} for r in rates.values()), rates

"""bench/unlearn_vs_retrain.py's options and output: --tune's seeds and LiRA default, and the "se" beside each mean."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
_spec = importlib.util.spec_from_file_location("unlearn_vs_retrain", BENCH / "unlearn_vs_retrain.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules["unlearn_vs_retrain"] = bench
_spec.loader.exec_module(bench)
output = sys.modules["bench_output"]


def test_tune_quick_reports_five_held_out_seeds_with_lira_and_plain_quick_keeps_three_without() -> None:
    tuned = bench.parse_args(["--tune", "--quick"])
    assert (tuned.seeds, tuned.patients, tuned.fraction_list, tuned.lira, tuned.tune_seeds) == (5, 150, [0.1], True, 2)
    plain = bench.parse_args(["--quick"])
    assert (plain.seeds, plain.lira, plain.tune) == (3, False, False)
    assert bench.parse_args(["--tune", "--quick", "--no-lira"]).lira is False


@pytest.mark.parametrize(("argv", "message"), [
    (["--tune", "--time-budget", "60"], "--time-budget cannot be combined with --tune"),
    (["--tune", "--tune-seeds", "0"], "--tune-seeds must be at least 1"),
])
def test_options_that_cannot_run_are_refused(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(argv)
    assert message in capsys.readouterr().err


def test_each_row_holds_its_standard_error_over_seeds_beside_its_means() -> None:
    seeds = [{"retrain": {"avg_gap": 0.0}, "forget-mi": {"avg_gap": g, "mia": m}}
             for g, m in ((0.10, 0.5), (0.20, math.nan), (0.30, 0.7))]
    rows = output.mean_rows(seeds)
    assert rows["forget-mi"]["avg_gap"] == pytest.approx(0.2)
    assert rows["forget-mi"]["se"]["avg_gap"] == pytest.approx(0.1 / math.sqrt(3))  # SD 0.1 over 3 seeds
    assert rows["forget-mi"]["mia"] == pytest.approx(0.6)  # a NaN seed (diverged) is left out
    assert rows["forget-mi"]["se"]["mia"] == pytest.approx(0.1)  # SD 0.141 over the 2 seeds measured
    assert math.isnan(output.mean_rows(seeds[:1])["forget-mi"]["se"]["avg_gap"])  # one seed: no SE
    assert output.json_safe(output.mean_rows(seeds[:1]))["forget-mi"]["se"]["avg_gap"] is None


def test_the_table_shows_the_gap_with_its_error_and_the_tuned_settings() -> None:
    row = {"avg_gap": 0.058, "se": {"avg_gap": 0.01}, "seconds": 1.0}
    result = {"config": {"seeds": 5}, "fractions": {"0.10": {
        "original": {"avg_gap": 0.3}, "methods": {"forget-mi": row, "retrain": {"avg_gap": 0.0}},
        "tuned": {"forget-mi": {"label": "lr=0.001 push_bound=0.5", "validation_avg_gap": 0.05}}}}}
    table = output.format_tables(result)
    assert "| 0.058 ± 0.010 |" in table
    assert "tuned forget-mi: lr=0.001 push_bound=0.5 (validation avg gap 0.050)" in table

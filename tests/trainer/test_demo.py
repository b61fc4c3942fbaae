"""The issue's acceptance on the generated dataset: Forget-MI lands close to the model retrained
without the forgotten patients (the distance to retraining, not the size of the drop: a method that
forgets more than retraining would is as far off as one that forgets less), averaged over seeds 0-2;
and the ``demo --json`` CLI's output. ``DEMO_METHOD`` was tuned on seeds 100-102, so seeds 0-2 are
held out.

Seed 0 runs through the CLI in a subprocess (its JSON is both checked and counted in the
average); seeds 1 and 2 run in-process. Each run takes ~40 s on 2 cores; how long the CLI takes
is measured by ``bench/demo_time.py`` (a benchmark, not a test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from forgetmi_trainer.contract import COMPARISON_KEYS as METRIC_KEYS
from forgetmi_trainer.demo import run_demo

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
SEEDS = (0, 1, 2)


class DemoRuns:
    def __init__(self) -> None:
        self.rows: dict[int, dict[str, dict[str, float]]] = {}
        self.cli_stdout = ""


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory: pytest.TempPathFactory) -> DemoRuns:
    runs = DemoRuns()
    workdir = tmp_path_factory.mktemp("demo-cli")
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "forgetmi_trainer", "demo", "--workdir", str(workdir), "--seed", "0", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs.cli_stdout = proc.stdout
    runs.rows[0] = json.loads(proc.stdout.strip().splitlines()[-1])
    for seed in SEEDS[1:]:
        runs.rows[seed] = run_demo(tmp_path_factory.mktemp(f"demo-{seed}"), seed=seed)  # type: ignore[assignment]
    return runs


def test_demo_json_has_every_metric(demo_runs: DemoRuns) -> None:
    lines = [line for line in demo_runs.cli_stdout.splitlines() if line.strip()]
    assert len(lines) == 1, "demo --json prints exactly one JSON object on stdout"
    rows = json.loads(lines[0])
    assert set(rows) == {"original", "retrained", "forget_mi"}
    for name, row in rows.items():
        assert set(row) == set(METRIC_KEYS), name
        for key in METRIC_KEYS:
            assert isinstance(row[key], int | float) and not isinstance(row[key], bool), (name, key, row[key])
            if key != "seconds":
                assert 0.0 <= row[key] <= 1.0, (name, key, row[key])
        assert row["seconds"] > 0


GAP_KEYS = ("forget_auc", "forget_f1", "test_auc", "attack_auc")
"""The figures the distance to retraining averages: forget AUC and F1, test AUC, the two-sided attack AUC."""


def _gap(row: dict[str, float], reference: dict[str, float]) -> float:
    """avg |x − x_retrained| over :data:`GAP_KEYS`."""
    return sum(abs(row[k] - reference[k]) for k in GAP_KEYS) / len(GAP_KEYS)


def test_forget_mi_lands_close_to_the_retrained_model(demo_runs: DemoRuns) -> None:
    rows = demo_runs.rows
    table = {s: {m: {k: round(rows[s][m][k], 3) for k in GAP_KEYS} for m in rows[s]} for s in SEEDS}
    forget_mi = sum(_gap(rows[s]["forget_mi"], rows[s]["retrained"]) for s in SEEDS) / len(SEEDS)
    original = sum(_gap(rows[s]["original"], rows[s]["retrained"]) for s in SEEDS) / len(SEEDS)
    # the original is far from retraining (it memorised the forgotten patients); Forget-MI closes most of it
    assert original >= 0.15, table
    assert forget_mi <= 0.1, (forget_mi, original, table)
    assert forget_mi <= original / 2, (forget_mi, original, table)
    # and it does not buy that with utility: test AUC within 0.05 of the retrained model's on average
    test_gap = sum(rows[s]["retrained"]["test_auc"] - rows[s]["forget_mi"]["test_auc"] for s in SEEDS) / len(SEEDS)
    assert test_gap <= 0.05, table

"""How long the demos take: wall-clock of the whole process, imports included, per seed, and the
trainer's own timings of each step (from their JSON).

- ``python -m forgetmi_trainer demo --json`` (the trainer alone): target 60 s on an idle 2-core
  machine such as CI's (measured 36-43 s there);
- ``forgetmi demo --json`` (what ``make demo`` runs: the dataset, both models, and one request
  through the operator's lifecycle): target 90 s on an idle 2-core machine.

This prints the figures; it asserts nothing (the demos' behaviour is tested by
tests/trainer/test_demo.py and tests/operator/local/test_run.py, which no longer time them: a shared
machine's load is not the code's doing).

    PYTHONSAFEPATH=1 .venv/bin/python bench/demo_time.py --seeds 0 1 2 [--demo trainer|operator|both]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = {"trainer": 60.0, "operator": 90.0}
COMMANDS = {"trainer": [sys.executable, "-m", "forgetmi_trainer", "demo"],
            "operator": [str(Path(sys.executable).with_name("forgetmi")), "demo"]}


def time_demo(demo: str, seed: int, patients: int, workdir: Path) -> tuple[float, dict[str, dict[str, float]]]:
    """Wall-clock seconds of one demo process and its comparison rows (original, retrained, forget_mi)."""
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    command = [*COMMANDS[demo], "--workdir", str(workdir / "demo"), "--seed", str(seed), "--patients", str(patients),
               "--json"]
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"The {demo} demo with seed {seed} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return seconds, json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one demo process per seed")
    parser.add_argument("--patients", type=int, default=150, help="patients of the generated dataset")
    parser.add_argument("--demo", choices=("trainer", "operator", "both"), default="both", help="which demo to time")
    args = parser.parse_args(argv)
    for demo in ("trainer", "operator") if args.demo == "both" else (args.demo,):
        walls = []
        print(f"{demo} demo")
        print(f"{'seed':>4} {'wall s':>7} {'original s':>10} {'retrained s':>11} {'forget-mi s':>11}")
        for seed in args.seeds:
            with tempfile.TemporaryDirectory(prefix="forgetmi-demo-time-") as tmp:
                wall, rows = time_demo(demo, seed, args.patients, Path(tmp))
            walls.append(wall)
            seconds = [rows[name]["seconds"] for name in ("original", "retrained", "forget_mi")]
            print(f"{seed:>4} {wall:>7.1f} {seconds[0]:>10.1f} {seconds[1]:>11.1f} {seconds[2]:>11.1f}")
        print(f"mean wall-clock {statistics.mean(walls):.1f} s over {len(walls)} run(s) on {os.cpu_count()} CPUs "
              f"(target {TARGET_SECONDS[demo]:.0f} s on an idle 2-core machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

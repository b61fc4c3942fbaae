"""bench/operator_latency.py: the capacity search finds the highest rate at which every target holds."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "operator_latency.py"
_spec = importlib.util.spec_from_file_location("operator_latency", BENCH)
assert _spec is not None and _spec.loader is not None
latency = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(latency)


def fake_run(saturation: float, rss_mb: float = 120.0) -> Any:
    """A probe whose latency is a few ms below ``saturation`` req/s and grows past it."""

    def probe(rate: float) -> Mapping[str, Any]:
        over = max(0.0, rate - saturation)
        return {"requests": 500, "rate_per_s": rate, "p50_ms": 6.0 + 20 * over, "p99_ms": 30.0 + 60 * over,
                "throughput_per_s": min(rate, saturation), "operator_cpu_ms_per_request": 7.0,
                "rss_peak_mb": rss_mb}

    return probe


def test_the_search_ends_within_one_step_below_the_first_rate_that_misses() -> None:
    best, probes = latency.find_capacity(fake_run(saturation=117.0), 25.0, 200.0, 5.0)
    # p50 passes 100 ms at 117 + 4.7 req/s: 120 holds, 125 misses.
    assert best == 120.0
    rates = [p["rate_per_s"] for p in probes]
    assert rates[:2] == [25.0, 200.0]
    assert all(latency.targets_met(p)["p50"] == (p["rate_per_s"] <= 121.7) for p in probes)
    assert 125.0 in rates


def test_no_capacity_when_the_lowest_rate_misses_and_the_top_when_the_highest_holds() -> None:
    best, probes = latency.find_capacity(fake_run(saturation=10.0), 25.0, 200.0, 5.0)
    assert best is None and len(probes) == 1
    best, probes = latency.find_capacity(fake_run(saturation=500.0), 25.0, 200.0, 5.0)
    assert best == 200.0 and len(probes) == 2


def test_memory_over_target_fails_a_probe_whatever_its_latency() -> None:
    best, _ = latency.find_capacity(fake_run(saturation=500.0, rss_mb=250.0), 25.0, 200.0, 5.0)
    assert best is None


@pytest.mark.parametrize(("low", "high", "step"), [(0.0, 100.0, 5.0), (50.0, 50.0, 5.0), (25.0, 200.0, 0.0)])
def test_a_range_that_cannot_be_searched_is_refused(low: float, high: float, step: float) -> None:
    with pytest.raises(ValueError, match="--capacity"):
        latency.find_capacity(fake_run(saturation=100.0), low, high, step)


@pytest.mark.parametrize(("argv", "message"), [
    (["--capacity", "fast"], "--capacity takes LO:HI"),
    (["--capacity", "25:200:5"], "--capacity takes LO:HI"),
    (["--capacity", "200:25"], "--capacity needs 0 < LO < HI"),
    (["--capacity", "25:200", "--rate", "10"], "leave out --rate"),
])
def test_the_command_line_rejects_what_it_cannot_search(argv: list[str], message: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        latency.main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err

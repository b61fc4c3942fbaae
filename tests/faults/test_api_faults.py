"""Kubernetes API faults between the operator (a subprocess) and the emulated API server
(:class:`harness.apifaults.ApiFaultProxy`, seeded): a fraction of its non-watch calls answered 429 (with
Retry-After) or 500 from its start on, then, once the first Job exists, a watch outage (every watch
stream cut, every new watch refused with 503). Requests on their own models, with real trainer runs, are
all decided (Promoted, with receipts), no Job is created twice, each alias names a complete version with
the digest it records, and the operator never exits.

Two cases: 20 % faults and a 10 s outage; 50 % faults and a 60 s outage, longer than the 54 s Kopf's
default backoffs last (with those the watchers give up and the operator exits; with the operator's own
client not retrying, a launch of ≈ 10 calls at 50 % all succeeding is ≈ 0.1 % per attempt).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness.faultcluster import FaultCluster
from harness.invariants import TERMINAL, AliasMonitor
from harness.warmtrainer import ForkServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]
COUNT = 3


def _faults_then_outage(world: dict[str, Any], trainer_server: ForkServer, tmp_path: Path, *, tag: str,
                        fraction: float, outage: float, env: dict[str, str] | None = None) -> None:
    names = [f"api{tag}-{i}" for i in range(COUNT)]
    models = [f"m-apifaults{tag}-{i}" for i in range(COUNT)]
    with FaultCluster(tmp_path, world, trainer_server, api_proxy=True, api_seed=20261202, env=env) as cluster, \
            AliasMonitor(str(world["registry"]), models) as monitor:
        proxy = cluster.proxy
        assert proxy is not None
        for model in models:
            cluster.seed(model)
        proxy.fraction = fraction
        cluster.operator.start()
        for name, model in zip(names, models, strict=True):
            cluster.apply(name, model)
        cluster.wait(lambda: cluster.job_names(), 90, "a first Job")
        proxy.outage(outage)
        open_in_outage = [name for name in names if cluster.status(name).get("phase") not in TERMINAL]
        ended = cluster.wait_ended(names, 240 + outage)
        proxy.fraction = 0.0
        figures = cluster.figures(scenario=f"api faults {fraction:.0%} + {outage:g} s watch outage")
        alive = cluster.operator.alive
    assert alive, "the operator ended during the faults"
    assert {name: obj["status"]["phase"] for name, obj in ended.items()} == dict.fromkeys(names, "Promoted")
    assert figures.problems() == [], "\n".join(figures.problems())
    assert monitor.problems == [], "\n".join(monitor.problems)
    assert figures.jobs_created == COUNT
    counts = proxy.counts
    assert counts["429"] > 0 and counts["500"] > 0, counts
    assert counts["watch-cut"] >= 3 and counts["watch-refused"] > 0, counts  # requests, Jobs and Pods at least
    assert open_in_outage, "every request was decided before the outage began"


def test_requests_are_decided_through_throttling_errors_and_a_watch_outage(
        world: dict[str, Any], trainer_server: ForkServer, s3_env: str, tmp_path: Path) -> None:
    _faults_then_outage(world, trainer_server, tmp_path, tag="", fraction=0.2, outage=10.0)


def test_half_the_calls_failing_and_an_outage_longer_than_kopfs_backoffs_are_waited_out(
        world: dict[str, Any], trainer_server: ForkServer, s3_env: str, tmp_path: Path) -> None:
    _faults_then_outage(world, trainer_server, tmp_path, tag="h", fraction=0.5, outage=60.0,
                        env={"FORGETMI_API_RETRY_MAX_DELAY_SECONDS": "3"})

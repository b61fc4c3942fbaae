"""Kubernetes API faults between the operator (a subprocess) and the emulated API server
(:class:`harness.apifaults.ApiFaultProxy`, seeded): 20 % of its non-watch calls answered 429 (with
Retry-After) or 500 from its start on, then, once the first Job exists, a watch outage of 10 s (every
watch stream cut, every new watch refused with 503). Five requests on five models, with real trainer runs, are
all decided (Promoted, with receipts), no Job is created twice, each alias names a complete version with
the digest it records, and no forgotten patient ID leaves the requests' Secrets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness.faultcluster import FaultCluster
from harness.invariants import TERMINAL, AliasMonitor
from harness.warmtrainer import ForkServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
COUNT = 3
FRACTION = 0.2
OUTAGE_SECONDS = 10.0


def test_requests_are_decided_through_throttling_errors_and_a_watch_outage(
        world: dict[str, Any], trainer_server: ForkServer, s3_env: str, tmp_path: Path) -> None:
    names = [f"api-{i}" for i in range(COUNT)]
    models = [f"m-apifaults-{i}" for i in range(COUNT)]
    with FaultCluster(tmp_path, world, trainer_server, api_proxy=True, api_seed=20261202) as cluster, \
            AliasMonitor(str(world["registry"]), models) as monitor:
        proxy = cluster.proxy
        assert proxy is not None
        for model in models:
            cluster.seed(model)
        proxy.fraction = FRACTION
        cluster.operator.start()
        for name, model in zip(names, models, strict=True):
            cluster.apply(name, model)
        cluster.wait(lambda: cluster.job_names(), 60, "a first Job")
        proxy.outage(OUTAGE_SECONDS)
        open_in_outage = [name for name in names if cluster.status(name).get("phase") not in TERMINAL]
        ended = cluster.wait_ended(names, 240)
        proxy.fraction = 0.0
        figures = cluster.figures(scenario="api faults 20 % + 10 s watch outage")
        alive = cluster.operator.alive
    assert {name: obj["status"]["phase"] for name, obj in ended.items()} == dict.fromkeys(names, "Promoted")
    assert figures.problems() == [], "\n".join(figures.problems())
    assert monitor.problems == [], "\n".join(monitor.problems)
    assert figures.jobs_created == COUNT
    assert alive, "the operator ended during the faults"
    counts = proxy.counts
    assert counts["429"] > 0 and counts["500"] > 0, counts
    assert counts["watch-cut"] >= 3 and counts["watch-refused"] > 0, counts  # requests, Jobs and Pods at least
    assert open_in_outage, "every request was decided before the outage began"

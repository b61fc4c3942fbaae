"""S3 faults between the operator (and its Jobs' trainers) and the registry: 20 % of their S3 requests answered
500 or 503, forwarded and then answered 500, or dropped unanswered (``harness.s3faults.S3FaultProxy``, seeded).
Five requests on five models, through the real operator (a subprocess) and real trainer runs, all end
Promoted with receipts, each alias names a complete version with the digest it records (checked every
time it changed), no Job is created twice, and no forgotten patient ID leaves the requests' Secrets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness.faultcluster import FaultCluster
from harness.invariants import AliasMonitor
from harness.s3faults import S3FaultProxy
from harness.warmtrainer import ForkServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
COUNT = 5
FRACTION = 0.2


def test_five_requests_all_promote_through_twenty_percent_s3_faults(
        world: dict[str, Any], trainer_server: ForkServer, s3_server: str, s3_env: str, tmp_path: Path) -> None:
    names = [f"s3-{i}" for i in range(COUNT)]
    models = [f"m-s3faults-{i}" for i in range(COUNT)]
    with S3FaultProxy(s3_server, fraction=0.0, seed=20261202) as proxy, \
            FaultCluster(tmp_path, world, trainer_server, s3_endpoint=proxy.url) as cluster, \
            AliasMonitor(str(world["registry"]), models) as monitor:
        for model in models:
            cluster.seed(model)
        proxy.fraction = FRACTION
        cluster.operator.start()
        for name, model in zip(names, models, strict=True):
            cluster.apply(name, model)
        ended = cluster.wait_ended(names, 180)
        proxy.fraction = 0.0
        figures = cluster.figures(scenario="s3 faults 20 %")
    assert {name: obj["status"]["phase"] for name, obj in ended.items()} == dict.fromkeys(names, "Promoted")
    assert figures.problems() == [], "\n".join(figures.problems())
    assert monitor.problems == [], "\n".join(monitor.problems)
    assert all(len(seen) == 2 for seen in monitor.versions.values()), monitor.versions  # v1, then the candidate
    assert figures.jobs_created == COUNT
    assert proxy.requests > 100 and set(proxy.faults) == {"500", "503", "forwarded-500", "drop"}, proxy.faults

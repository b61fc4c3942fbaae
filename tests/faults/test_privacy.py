"""The privacy sweep after a promoted run and failed ones, through the real operator (a subprocess logging at
DEBUG), the emulated API server, moto S3 and real trainer runs.

No forgotten patient ID may be anywhere but the request's own Secrets (the referenced forget list and the
copies the request owns) and the file its Job mounts: not in the operator's log (Kopf, the operator, boto
at DEBUG), the trainers' logs and termination messages, the Events, the requests' status and annotations,
any other object of the namespace (ConfigMaps, Jobs, Pods: every version the emulator held), the
operator's metrics, or the registry (reports, progress, receipts, aliases, the candidate versions).

Three requests in one namespace, each forgetting patients of its own, so a leak is traced to its request:
``ok`` is promoted; ``broken``'s trainer fails reading its images (its manifest's images are gone, and the
trainer names the sample it could not read); ``refused`` is refused at acceptance (its list names a
patient the manifest lacks, which is counted, never echoed).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from harness.faultcluster import FaultCluster
from harness.invariants import Figures
from harness.requests import train_subjects
from harness.warmtrainer import ForkServer

from forgetmi_trainer import storage

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def swept(world: dict[str, Any], trainer_server: ForkServer,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The three requests run to their ends; their phases, each one's figures, and the operator's log."""
    text = storage.read_text(world["manifest"]).replace("/data/images/", "/gone/images/")
    broken = f"s3://{world['bucket']}/privacy-broken/manifest.csv"
    storage.write_text(broken, text)
    others = [s for s in train_subjects(world) if s not in world["subjects"]]
    lists = {"ok": list(world["subjects"]), "broken": others[:3], "refused": [*others[3:5], "P99999"]}
    with FaultCluster(tmp_path_factory.mktemp("privacy"), world, trainer_server) as cluster:
        for name in lists:
            cluster.seed(f"m-privacy-{name}")
        cluster.operator.start()
        cluster.apply("ok", "m-privacy-ok", lists["ok"])
        cluster.apply("broken", "m-privacy-broken", lists["broken"], data={"manifestUri": broken})
        cluster.apply("refused", "m-privacy-refused", lists["refused"])
        ended = cluster.wait_ended(list(lists), 120)
        figures = {name: cluster.figures([name], scenario=f"privacy {name}") for name in lists}
        yield {"phases": {name: obj["status"]["phase"] for name, obj in ended.items()}, "figures": figures,
               "log": cluster.operator.log_text(), "status": {name: obj["status"] for name, obj in ended.items()}}


def test_the_sweep_read_a_debug_log_and_the_requests_ended_as_expected(swept: dict[str, Any]) -> None:
    assert swept["phases"] == {"ok": "Promoted", "broken": "Failed", "refused": "Failed"}
    assert "[DEBUG" in swept["log"] and "Merge-patching the status with" in swept["log"]


@pytest.mark.parametrize("name", ["ok", "refused", "broken"])
def test_no_forgotten_patient_id_leaves_the_requests_secrets(swept: dict[str, Any], name: str) -> None:
    figures: Figures = swept["figures"][name]
    assert figures.leaks == [], "\n".join(figures.leaks)
    assert figures.problems() == [], "\n".join(figures.problems())

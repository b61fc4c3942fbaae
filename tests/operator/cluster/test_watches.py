"""cluster.watches for TrainJobs: a TrainJob event keeps it and looks at its request when it has Pods
or went; a TrainJob's Pod (labelled with its child Job's name too) gets its TrainJob's request looked at."""

from __future__ import annotations

import asyncio
from typing import Any

from harness.clusters import make_cluster

from forgetmi_operator.cluster import watches
from forgetmi_operator.cluster.scheduler import Entry, LookScheduler, is_open
from forgetmi_operator.cluster.trainjobstate import JOBSET_NAME_LABEL

NS = "ns"


def _request(name: str, job_name: str) -> dict[str, Any]:
    return {"metadata": {"namespace": NS, "name": name, "uid": f"u-{name}", "resourceVersion": "1"},
            "status": {"phase": "Pending", "jobName": job_name}}


def _trainjob(name: str, owner: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"kind": "TrainJob", "metadata": {"namespace": NS, "name": name, "resourceVersion": "2",
                                             "ownerReferences": [{"kind": "UnlearnRequest", "name": owner}]},
            "status": status or {}}


def _pod(trainjob: str) -> dict[str, Any]:
    return {"metadata": {"namespace": NS, "name": f"{trainjob}-node-0-0-abcde",
                         "labels": {JOBSET_NAME_LABEL: trainjob, "job-name": f"{trainjob}-node-0",
                                    "batch.kubernetes.io/job-name": f"{trainjob}-node-0"}}}


def _looked_at(events: list[tuple[str, dict[str, Any], bool]]) -> list[str]:
    """The requests looked at after feeding ``events`` (``trainjob``/``pod``, object, deleted)."""
    looked: list[str] = []

    async def scenario() -> None:
        async def look(entry: Entry) -> None:
            looked.append(entry.body["metadata"]["name"])

        cluster = make_cluster(object())
        cluster.scheduler = LookScheduler(look, is_open=is_open)
        for request in (_request("r1", "tj-1"), _request("r2", "tj-2")):
            cluster.scheduler.observe(request)
        for kind, obj, deleted in events:
            if kind == "trainjob":
                watches.trainjob_event(cluster, obj, deleted=deleted)
            else:
                watches.pod_event(cluster, obj)
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)

    asyncio.run(scenario())
    return looked


ACTIVE = {"jobsStatus": [{"name": "node", "active": 1, "ready": 0, "succeeded": 0, "failed": 0, "suspended": 0}]}


def test_a_trainjob_with_pods_or_gone_gets_its_request_looked_at() -> None:
    assert _looked_at([("trainjob", _trainjob("tj-1", "r1"), False)]) == []  # just created: nothing to see yet
    assert _looked_at([("trainjob", _trainjob("tj-1", "r1", ACTIVE), False)]) == ["r1"]
    assert _looked_at([("trainjob", _trainjob("tj-2", "r2"), True)]) == ["r2"]


def test_a_trainjob_pod_is_mapped_to_its_trainjobs_request_not_to_its_child_job() -> None:
    assert _looked_at([("pod", _pod("tj-2"), False)]) == ["r2"]  # not seen yet: by status.jobName
    assert _looked_at([("trainjob", _trainjob("tj-1", "r1"), False), ("pod", _pod("tj-1"), False)]) == ["r1"]
    assert _looked_at([("pod", _pod("tj-9"), False)]) == []

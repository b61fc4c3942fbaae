"""``cluster.outcome.look``: a status a look could not write is written by the next look, without
deciding (or promoting) again; the forget list's copy goes only once a terminal status is saved."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from forgetmi_operator.api import naming
from forgetmi_operator.api.errors import ClusterUnavailable
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.cluster import outcome
from forgetmi_operator.cluster.context import Cluster
from forgetmi_operator.cluster.metrics import Metrics
from forgetmi_operator.cluster.phases import PhaseBook
from forgetmi_operator.cluster.scheduler import LookScheduler, is_open
from forgetmi_operator.lifecycle.steps import Step
from forgetmi_operator.lifecycle.subjects import build_snapshot_secret
from forgetmi_trainer import storage
from forgetmi_trainer.contract import Progress
from forgetmi_trainer.storage import DEFAULT


class _FlakyKube:
    """A status patch that fails (API server unavailable) the first ``failures`` times."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.patches: list[dict[str, object]] = []
        self.deleted_secrets: list[tuple[str, str, int]] = []  # (namespace, name, status patches made before)

    async def patch_request_status(self, namespace: str, name: str, status: dict[str, object]) -> dict[str, object]:
        if self.failures:
            self.failures -= 1
            raise ClusterUnavailable("The API server could not be reached to update the status.")
        self.patches.append(status)
        return {"metadata": {"namespace": namespace, "name": name, "uid": "u-1", "resourceVersion": "9"},
                "status": {**status}}

    async def get_secret(self, namespace: str, name: str) -> dict[str, object]:
        return build_snapshot_secret(["P1"], name="r1", namespace=namespace, uid="u-1")

    async def delete_secret(self, namespace: str, name: str, *, uid: str | None = None) -> bool:
        self.deleted_secrets.append((namespace, name, len(self.patches)))
        return True


def test_a_status_a_look_could_not_write_is_written_by_the_next_look_not_decided_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A look that promoted but could not write the status must not promote (or decide) twice:
    the next look writes the kept status first and posts its Events once."""
    decided: list[str] = []
    posted: list[str] = []
    promoted = Step(status={"phase": "Promoted"}, events=[("Normal", "Promoted", "Alias moved.")])

    async def track(cluster: Any, body: Any, concluded: set[str]) -> Step:
        decided.append(body["metadata"]["name"])
        return promoted

    monkeypatch.setattr(outcome, "_track", track)
    body = {"metadata": {"namespace": "ns", "name": "r1", "uid": "u-1", "resourceVersion": "5"},
            "status": {"phase": "Evaluating", "jobName": "j"}}

    async def scenario() -> tuple[_FlakyKube, LookScheduler]:
        kube = _FlakyKube(failures=1)
        cluster = Cluster(settings=Settings(), kube=kube, ports=None, phases=PhaseBook(Metrics()),  # type: ignore[arg-type]
                          post_event=lambda body, type, reason, message: posted.append(reason),
                          scheduler=LookScheduler(lambda entry: outcome.look(cluster, entry), is_open=is_open))
        entry = cluster.scheduler.observe(body)
        assert entry is not None
        await outcome.look(cluster, entry)  # decided, the write failed: kept
        assert entry.unsaved is promoted and not posted
        assert not kube.deleted_secrets  # a re-evaluation may still need the forget list
        await outcome.look(cluster, entry)  # written now, without deciding again
        assert entry.unsaved is None
        return kube, cluster.scheduler

    kube, scheduler = asyncio.run(scenario())
    assert decided == ["r1"]
    assert kube.patches == [{"phase": "Promoted"}]
    assert posted == ["Promoted"]
    # the forget list goes once the terminal status is saved, not before
    assert kube.deleted_secrets == [("ns", naming.subjects_secret_name("r1", "u-1"), 1)]
    assert ("ns", "r1") not in scheduler.entries  # the written status is terminal: no longer tracked


def test_a_request_waiting_for_approval_is_recognised() -> None:
    waiting = {"status": {"conditions": [{"type": "Promoted", "status": "Unknown", "reason": "AwaitingApproval"}]}}
    assert outcome.awaits_approval(waiting)
    assert not outcome.awaits_approval({"status": {"conditions": [{"type": "Promoted", "reason": "NotPromoted"}]}})
    assert not outcome.awaits_approval({})


def test_progress_is_the_trainers_last_line_and_an_oversized_file_is_ignored(tmp_path: Path) -> None:
    """The trainer's progress (advisory) is read with a bounded read: a file larger than
    PROGRESS_MAX_BYTES gives no progress rather than a copy of it in the operator's memory."""
    uri = (tmp_path / "progress.jsonl").as_uri()
    line = Progress(epoch=2, epochs=5, percent=40.0, eta_seconds=3.0, loss=0.5, phase="unlearn").model_dump_json()
    storage.write_text(uri, line + "\n")
    assert asyncio.run(outcome.read_progress(DEFAULT, uri))["percent"] == 40.0
    storage.write_text(uri, " " * outcome.PROGRESS_MAX_BYTES + "\n" + line + "\n")
    assert asyncio.run(outcome.read_progress(DEFAULT, uri)) is None
    assert asyncio.run(outcome.read_progress(DEFAULT, (tmp_path / "none.jsonl").as_uri())) is None
    assert outcome.PROGRESS_MAX_BYTES == 64 * 1024

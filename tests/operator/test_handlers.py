"""The handlers module's own pieces (the e2e tests run its handlers under Kopf)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
import pytest

from forgetmi_operator import flows, handlers, jobs, naming
from forgetmi_operator.errors import ClusterUnavailable
from forgetmi_operator.tracker import Tracker


def test_the_watch_handlers_success_lines_are_filtered_and_failures_are_not() -> None:
    noise = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "Handler 'job_event' succeeded.", None, None)
    start = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "Handler 'start' succeeded.", None, None)
    failed = logging.LogRecord("kopf.objects", logging.ERROR, __file__, 1, "Handler 'job_event' failed.", None, None)
    quiet = handlers._QuietWatchHandlers()
    assert not quiet.filter(noise)
    assert quiet.filter(start) and quiet.filter(failed)
    assert any(isinstance(f, handlers._QuietWatchHandlers) for f in logging.getLogger("kopf.objects").filters)


def test_tracked_requests_are_open_accepted_and_have_a_job() -> None:
    accepted = [{"type": "Accepted", "status": "True"}]
    assert handlers._wants_tracking({"status": {"phase": "Running", "jobName": "j", "conditions": accepted}})
    assert not handlers._wants_tracking({"status": {"phase": "Running", "conditions": accepted}})
    assert not handlers._wants_tracking({"status": {"phase": "Held", "jobName": "j", "conditions": accepted}})
    assert not handlers._wants_tracking({"status": {"phase": "Pending", "jobName": "j", "conditions": []}})
    assert handlers._is_open({"status": {}}) and not handlers._is_open({"status": {"phase": "Failed"}})


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
        return jobs.build_subjects_secret(["P1"], name="r1", namespace=namespace, uid="u-1")

    async def delete_secret(self, namespace: str, name: str, *, uid: str | None = None) -> bool:
        self.deleted_secrets.append((namespace, name, len(self.patches)))
        return True


def test_a_status_a_look_could_not_write_is_written_by_the_next_look_not_decided_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A look that promoted but could not write the status must not promote (or decide) twice:
    the next look writes the kept status first and posts its Events once."""
    decided: list[str] = []
    posted: list[str] = []
    promoted = flows.Step(status={"phase": "Promoted"}, events=[("Normal", "Promoted", "Alias moved.")])

    async def track_once(body: Any, memo: Any, evaluated: set[str]) -> flows.Step:
        decided.append(body["metadata"]["name"])
        return promoted

    monkeypatch.setattr(handlers, "_track_once", track_once)
    monkeypatch.setattr(handlers, "_post", lambda body, step: posted.extend(r for _, r, _ in step.events))
    body = {"metadata": {"namespace": "ns", "name": "r1", "uid": "u-1", "resourceVersion": "5"},
            "status": {"phase": "Evaluating", "jobName": "j"}}

    async def scenario() -> tuple[_FlakyKube, Tracker]:
        kube = _FlakyKube(failures=1)
        memo = kopf.Memo(kube=kube)
        memo.tracker = Tracker(lambda entry: handlers._look(memo, entry), is_open=handlers._is_open)
        entry = memo.tracker.observe(body)
        assert entry is not None
        await handlers._look(memo, entry)  # decided, the write failed: kept
        assert entry.unsaved is promoted and not posted
        assert not kube.deleted_secrets  # a re-evaluation may still need the forget list
        await handlers._look(memo, entry)  # written now, without deciding again
        assert entry.unsaved is None
        return kube, memo.tracker

    kube, tracker = asyncio.run(scenario())
    assert decided == ["r1"]
    assert kube.patches == [{"phase": "Promoted"}]
    assert posted == ["Promoted"]
    # the forget list goes once the terminal status is saved, not before
    assert kube.deleted_secrets == [("ns", naming.subjects_secret_name("r1", "u-1"), 1)]
    assert ("ns", "r1") not in tracker.entries  # the written status is terminal: no longer tracked


class _SecretsKube:
    """One stored Secret (None: none), the deletions asked for, and reads that fail first."""

    def __init__(self, secret: dict[str, Any] | None, failures: list[Exception] | None = None) -> None:
        self.secret = secret
        self.deleted: list[tuple[str, str, str | None]] = []
        self.failures = failures or []

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.failures:
            raise self.failures.pop(0)
        return self.secret

    async def delete_secret(self, namespace: str, name: str, *, uid: str | None = None) -> bool:
        self.deleted.append((namespace, name, uid))
        return True


RELEASED = {"metadata": {"namespace": "ns", "name": "r1", "uid": "u-1"}}


def _release(secret: dict[str, Any] | None, failures: list[Exception] | None = None) -> _SecretsKube:
    kube = _SecretsKube(secret, failures)
    asyncio.run(handlers._release_subjects(kopf.Memo(kube=kube), RELEASED))
    return kube


def test_the_forget_list_copy_is_deleted_only_if_the_request_owns_it(caplog: pytest.LogCaptureFixture) -> None:
    ours = jobs.build_subjects_secret(["P1"], name="r1", namespace="ns", uid="u-1")
    ours["metadata"]["uid"] = "secret-uid-7"
    name = naming.subjects_secret_name("r1", "u-1")
    # deleted with a precondition on the Secret's own uid: a Secret re-created meanwhile stays
    assert _release(ours).deleted == [("ns", name, "secret-uid-7")]
    assert _release(None).deleted == []
    foreign = jobs.build_subjects_secret(["P1"], name="r1", namespace="ns", uid="u-1")
    foreign["metadata"]["ownerReferences"] = []
    with caplog.at_level(logging.WARNING):
        assert _release(foreign).deleted == []
    assert f"Secret ns/{name} is not owned by" in caplog.text


def test_deleting_the_copy_is_tried_again_on_a_retryable_error(monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(handlers, "RELEASE_RETRY_SECONDS", 0.0)
    ours = jobs.build_subjects_secret(["P1"], name="r1", namespace="ns", uid="u-1")
    unavailable = ClusterUnavailable("The API server could not be reached to read Secret ns/x.")
    assert len(_release(ours, [unavailable, unavailable]).deleted) == 1
    with caplog.at_level(logging.WARNING):
        assert _release(ours, [unavailable] * 3).deleted == []
    assert "is left to garbage collection" in caplog.text

"""The look scheduler that follows every open request's Job (operator/cluster/scheduler.py), without Kopf."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import pytest

from forgetmi_operator.cluster.scheduler import (
    Entry,
    LookScheduler,
    is_newer,
    is_open,
    key_of,
    owner_of,
    wants_tracking,
)


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop (no pytest asyncio plugin in this project)."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return wrapper


CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="none")


def _request(name: str, rv: str, phase: str | None = "Running", job: str | None = "job-a") -> dict[str, Any]:
    status = {"phase": phase, "jobName": job} if phase else {}
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": rv}, "status": status}


def _job(name: str, rv: str, owner: str | None = "r1", **status: Any) -> dict[str, Any]:
    refs = [{"kind": "UnlearnRequest", "name": owner, "uid": "u"}] if owner else []
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": rv, "ownerReferences": refs},
            "status": status}


def _open(body: Mapping[str, Any]) -> bool:
    return (body.get("status") or {}).get("phase") not in ("Promoted", "Held", "Failed")


class Looks:
    """A look that records what it saw, can be held open, and tracks how many run at once."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []
        self.running = 0
        self.most = 0
        self.release = asyncio.Event()
        self.release.set()
        self.fail_next = False

    async def __call__(self, entry: Entry) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            self.seen.append((entry.body["metadata"]["name"], entry.body["metadata"]["resourceVersion"], CALLER.get()))
            await self.release.wait()
            if self.fail_next:
                self.fail_next = False
                raise RuntimeError("a look failed")
        finally:
            self.running -= 1


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_is_newer_compares_integer_resource_versions_and_else_prefers_the_arrival() -> None:
    assert is_newer(_request("r", "10"), _request("r", "9"))
    assert not is_newer(_request("r", "9"), _request("r", "10"))
    assert is_newer(_request("r", "10"), _request("r", "10"))
    assert is_newer(_request("r", "b"), _request("r", "a"))


def test_owner_of_reads_the_unlearnrequest_owner_reference() -> None:
    assert owner_of(_job("j", "1", owner="r7")) == ("ns", "r7")
    assert owner_of(_job("j", "1", owner=None)) is None
    other = _job("j", "1")
    other["metadata"]["ownerReferences"][0]["kind"] = "CronJob"
    assert owner_of(other) is None


@run_async
async def test_observe_keeps_the_newest_body_and_drops_closed_requests() -> None:
    scheduler = LookScheduler(Looks(), is_open=_open)
    scheduler.observe(_request("r1", "5"))
    scheduler.observe(_request("r1", "4"))  # an older event after a newer patch result: ignored
    assert scheduler.entries[("ns", "r1")].body["metadata"]["resourceVersion"] == "5"
    scheduler.observe(_request("r1", "6"))
    assert scheduler.entries[("ns", "r1")].body["metadata"]["resourceVersion"] == "6"
    assert scheduler.observe(_request("r1", "7", phase="Promoted")) is None
    assert ("ns", "r1") not in scheduler.entries  # memory follows the open requests only
    scheduler.observe(_request("r2", "3"))
    assert scheduler.observe(_request("r2", "3"), deleted=True) is None
    assert not scheduler.entries


@run_async
async def test_a_watch_event_older_than_the_close_does_not_reopen_the_request() -> None:
    """The operator's own status patch closes a request (rv 9, Promoted); the watch then delivers
    the events before it (rv 8, still Evaluating): they must not start another look."""
    scheduler = LookScheduler(Looks(), is_open=_open)
    scheduler.observe(_request("r1", "7", phase="Evaluating"))
    assert scheduler.observe(_request("r1", "9", phase="Promoted")) is None
    late = _request("r1", "8", phase="Evaluating")
    assert scheduler.is_stale(late) and scheduler.is_stale(_request("r1", "9", phase="Promoted"))
    assert scheduler.observe(late) is None and ("ns", "r1") not in scheduler.entries
    recreated = _request("r1", "3", phase="Pending")  # deleted and created again: another uid
    recreated["metadata"]["uid"] = "another"
    assert not scheduler.is_stale(recreated)
    assert scheduler.observe(recreated) is not None and ("ns", "r1") not in scheduler.closed
    scheduler.observe(_request("r2", "5", phase="Held"))
    assert scheduler.observe(_request("r2", "5", phase="Held"), deleted=True) is None
    assert not scheduler.closed  # deleted: nothing is kept for it
    assert not scheduler.is_stale(_request("r2", "4"))


@run_async
async def test_closed_requests_remembered_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deletion the watch missed never comes as an event; the oldest closes are forgotten first."""
    monkeypatch.setattr("forgetmi_operator.cluster.scheduler.MAX_CLOSED", 2)
    scheduler = LookScheduler(Looks(), is_open=_open)
    for name in ("a", "b", "c"):
        scheduler.observe(_request(name, "5", phase="Held"))
    assert list(scheduler.closed) == [("ns", "b"), ("ns", "c")]


@run_async
async def test_job_changed_keeps_the_latest_job_and_names_its_owner() -> None:
    scheduler = LookScheduler(Looks(), is_open=_open)
    assert scheduler.job_changed(_job("j", "2", active=1)) == ("ns", "r1")
    scheduler.job_changed(_job("j", "1"))  # older: ignored
    assert scheduler.job("ns", "j")["status"] == {"active": 1}
    assert scheduler.job_changed(_job("j", "3", succeeded=1), deleted=True) == ("ns", "r1")
    assert scheduler.job("ns", "j") is None


@run_async
async def test_a_poke_during_a_look_runs_one_more_look_after_it_never_two_at_once() -> None:
    looks = Looks()
    scheduler = LookScheduler(looks, is_open=_open)
    scheduler.observe(_request("r1", "1"))
    looks.release.clear()
    assert scheduler.poke(("ns", "r1"))
    await _settle()
    scheduler.observe(_request("r1", "2"))
    for _ in range(3):  # pokes while the first look runs coalesce into one more look
        scheduler.poke(("ns", "r1"))
    looks.release.set()
    await _settle()
    assert [rv for _, rv, _ in looks.seen] == ["1", "2"]
    assert looks.most == 1


@run_async
async def test_a_request_that_closes_during_its_look_is_not_looked_at_again() -> None:
    """The look that promoted a request must not run again on the pre-promotion body because a
    poke (the spec change that triggered it, a sweep) arrived meanwhile."""
    looks = Looks()
    scheduler = LookScheduler(looks, is_open=_open)
    scheduler.observe(_request("r1", "1"))
    looks.release.clear()
    assert scheduler.poke(("ns", "r1"))
    await _settle()
    scheduler.poke(("ns", "r1"))
    scheduler.observe(_request("r1", "2", phase="Promoted"))  # what the look wrote
    looks.release.set()
    await _settle()
    assert [rv for _, rv, _ in looks.seen] == ["1"]


@run_async
async def test_poking_an_unknown_or_closed_request_does_nothing() -> None:
    looks = Looks()
    scheduler = LookScheduler(looks, is_open=_open)
    assert not scheduler.poke(("ns", "nobody"))
    scheduler.observe(_request("done", "1", phase="Held"))
    assert not scheduler.poke(("ns", "done"))
    await _settle()
    assert looks.seen == []


@run_async
async def test_at_most_concurrency_looks_run_together() -> None:
    looks = Looks()
    scheduler = LookScheduler(looks, is_open=_open, concurrency=3)
    looks.release.clear()
    for i in range(10):
        scheduler.observe(_request(f"r{i}", "1"))
        scheduler.poke(("ns", f"r{i}"))
    await _settle()
    assert looks.running == 3
    looks.release.set()
    await _settle()
    assert len(looks.seen) == 10 and looks.most == 3


@run_async
async def test_a_failing_look_is_logged_and_the_next_poke_looks_again(caplog: pytest.LogCaptureFixture) -> None:
    looks = Looks()
    scheduler = LookScheduler(looks, is_open=_open)
    scheduler.observe(_request("r1", "1"))
    looks.fail_next = True
    scheduler.poke(("ns", "r1"))
    await _settle()
    assert "Looking at UnlearnRequest ns/r1 failed" in caplog.text
    scheduler.poke(("ns", "r1"))
    await _settle()
    assert len(looks.seen) == 2


@run_async
async def test_a_look_runs_in_the_context_of_the_handler_that_last_saw_the_request() -> None:
    looks = Looks()
    scheduler = LookScheduler(looks, is_open=_open)

    def seen_by(caller: str, rv: str) -> None:
        CALLER.set(caller)
        scheduler.observe(_request("r1", rv))

    contextvars.copy_context().run(seen_by, "first handler", "1")
    contextvars.copy_context().run(seen_by, "second handler", "2")
    scheduler.poke(("ns", "r1"))  # poked from here (no caller set), looks as the second handler
    await _settle()
    assert looks.seen == [("r1", "2", "second handler")]


@run_async
async def test_the_sweep_pokes_the_wanted_open_requests_every_interval() -> None:
    looks = Looks()
    scheduler = LookScheduler(looks, is_open=_open)
    scheduler.observe(_request("with-job", "1"))
    scheduler.observe(_request("no-job", "1", job=None))
    sweep = asyncio.create_task(scheduler.sweep_forever(0.01, lambda body: bool(body["status"].get("jobName"))))
    await asyncio.sleep(0.08)
    sweep.cancel()
    await asyncio.gather(sweep, return_exceptions=True)
    names = {name for name, _, _ in looks.seen}
    assert names == {"with-job"} and len(looks.seen) >= 3


@run_async
async def test_close_cancels_the_looks_in_flight() -> None:
    looks = Looks()
    scheduler = LookScheduler(looks, is_open=_open)
    looks.release.clear()
    scheduler.observe(_request("r1", "1"))
    scheduler.poke(("ns", "r1"))
    await _settle()
    task = scheduler.entries[("ns", "r1")].task
    await scheduler.close()
    assert task is not None and task.cancelled()


@run_async
async def test_request_of_job_uses_the_jobs_owner_then_the_requests_job_names() -> None:
    scheduler = LookScheduler(Looks(), is_open=_open)
    scheduler.observe(_request("r2", "1", job="job-b"))
    assert scheduler.request_of_job("ns", "job-b") == ("ns", "r2")  # not seen yet: by status.jobName
    scheduler.job_changed(_job("job-b", "3", owner="r2"))
    assert scheduler.request_of_job("ns", "job-b") == ("ns", "r2")
    assert scheduler.request_of_job("other", "job-b") is None
    assert scheduler.request_of_job("ns", "job-z") is None


def test_key_of() -> None:
    assert key_of(_request("r9", "1")) == ("ns", "r9")


def test_tracked_requests_are_open_accepted_and_have_a_job() -> None:
    accepted = [{"type": "Accepted", "status": "True"}]
    assert wants_tracking({"status": {"phase": "Running", "jobName": "j", "conditions": accepted}})
    assert not wants_tracking({"status": {"phase": "Running", "conditions": accepted}})
    assert not wants_tracking({"status": {"phase": "Held", "jobName": "j", "conditions": accepted}})
    assert not wants_tracking({"status": {"phase": "Pending", "jobName": "j", "conditions": []}})
    assert is_open({"status": {}}) and not is_open({"status": {"phase": "Failed"}})

"""When to look at a request: one scheduler for every open UnlearnRequest's trainer Job, instead
of a daemon per request.

The watches (:mod:`~forgetmi_operator.cluster.watches`) feed it and it decides when a request is
looked at (the look itself, :func:`forgetmi_operator.cluster.outcome.look`, is given to it):

- :meth:`LookScheduler.observe` keeps the latest body of each open request (from its watch events and
  from the operator's own status patches, whichever is newer); a terminal or deleted request is
  dropped, so memory follows the open requests only. A closed request's uid and resourceVersion
  are remembered until it is deleted, so a watch event older than the close (the watch lags
  behind the operator's own patch) does not open it again for another look. Bodies are kept as
  given, not copied:
  each watch event and each patch result is a fresh dict that nobody changes afterwards (Kopf
  replaces, never mutates, the raw bodies it hands out; the looks only read them);
- :meth:`LookScheduler.job_changed` keeps the latest trainer Job or TrainJob (so a look needs no GET of
  it) and says which request owns it; :meth:`LookScheduler.request_of_job` finds the request of a
  trainer Pod's Job or TrainJob. Jobs and TrainJobs are kept apart (a request's TrainJob has the name
  its Job would have);
- :meth:`LookScheduler.poke` asks for one request to be looked at now (a Job or Pod with news, a new
  Job name, an approval); :meth:`LookScheduler.sweep_forever` pokes every open request every interval
  (progress, Pods that never start, retries after an error).

A request is never looked at twice at once: a poke while it is being looked at runs the look
once more afterwards. At most ``concurrency`` looks run together. Each runs in the context of the
Kopf handler that last saw the request, so Events posted from it are posted as from a handler.

No finalizer is needed for this: nothing has to happen before a request goes — its Job and
ConfigMap are owned by it and garbage-collected with it — so deleting a request never waits for
the operator.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from forgetmi_operator.api import conditions as cond

log = logging.getLogger(__name__)
Key = tuple[str, str]
"""(namespace, name)."""
OWNER_KIND = "UnlearnRequest"
WorkloadKind = Literal["Job", "TrainJob"]
MAX_CLOSED = 100_000
"""Closed requests remembered (≈ 200 bytes each); the oldest close is forgotten beyond this."""


def key_of(body: Mapping[str, Any]) -> Key:
    meta = body.get("metadata") or {}
    return str(meta.get("namespace")), str(meta.get("name"))


def is_newer(candidate: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """Whether ``candidate`` is at least as new as ``current``: by resourceVersion when both are
    integers (as etcd's are), else the one that arrived last."""
    new = (candidate.get("metadata") or {}).get("resourceVersion")
    old = (current.get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(new)) >= int(str(old))
    except ValueError:
        return True


def _strictly_newer(candidate: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """Whether ``candidate``'s integer resourceVersion is greater than ``current``'s (False when
    either is not an integer: then nothing says it is newer)."""
    try:
        return int(str((candidate.get("metadata") or {}).get("resourceVersion"))) > \
            int(str((current.get("metadata") or {}).get("resourceVersion")))
    except ValueError:
        return False


def owner_of(job: Mapping[str, Any]) -> Key | None:
    """The request that owns ``job`` (its controller ownerReference of kind UnlearnRequest)."""
    meta = job.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == OWNER_KIND and ref.get("name"):
            return str(meta.get("namespace")), str(ref["name"])
    return None


def owners_of(job: Mapping[str, Any]) -> list[Key]:
    """Every request that owns ``job`` (a batch's Job is owned by each request of the batch)."""
    meta = job.get("metadata") or {}
    return [(str(meta.get("namespace")), str(ref["name"])) for ref in meta.get("ownerReferences") or []
            if ref.get("kind") == OWNER_KIND and ref.get("name")]


@dataclass(eq=False)
class Entry:
    """One open request: its latest body, and what the looks at it remember."""

    body: dict[str, Any]
    context: contextvars.Context
    evaluated: set[str] = field(default_factory=set)
    """Jobs whose result was already acted on (promoted, held, retrained, failed)."""
    unsaved: Any = None
    """What a look decided but could not write yet (the next look writes it first)."""
    task: asyncio.Task[None] | None = None
    again: bool = False


Look = Callable[[Entry], Awaitable[None]]


class LookScheduler:
    """The open requests, their Jobs, and the looks at them; see the module docstring."""

    def __init__(self, look: Look, *, is_open: Callable[[Mapping[str, Any]], bool], concurrency: int = 8) -> None:
        self.entries: dict[Key, Entry] = {}
        self.closed: dict[Key, dict[str, Any]] = {}
        """The metadata (uid, resourceVersion) of each closed request's newest body, until it is deleted."""
        self.jobs: dict[Key, dict[str, Any]] = {}
        self.trainjobs: dict[Key, dict[str, Any]] = {}
        self._look = look
        self._is_open = is_open
        self._slots = asyncio.Semaphore(concurrency)

    # ---- what Kopf sees --------------------------------------------------------------------------

    def is_stale(self, body: Mapping[str, Any]) -> bool:
        """Whether ``body`` is an older (or the same) version of a request already closed."""
        closed = self.closed.get(key_of(body))
        if closed is None:
            return False
        if (body.get("metadata") or {}).get("uid") != closed["metadata"].get("uid"):
            return False  # a new request of the same name
        return not _strictly_newer(body, closed)

    def observe(self, body: Mapping[str, Any], *, deleted: bool = False) -> Entry | None:
        """Keep ``body`` if it is newer than what is kept; the entry, or None once it is closed."""
        key = key_of(body)
        if deleted:
            self.entries.pop(key, None)
            self.closed.pop(key, None)
            return None
        if self.is_stale(body):
            return None
        entry = self.entries.get(key)
        if entry is not None and not is_newer(body, entry.body):
            return entry
        if not self._is_open(body):
            self.entries.pop(key, None)
            meta = body.get("metadata") or {}
            self.closed.pop(key, None)
            self.closed[key] = {"metadata": {"uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")}}
            if len(self.closed) > MAX_CLOSED:  # a deletion the watch missed (a gap before a re-list)
                del self.closed[next(iter(self.closed))]
            return None
        self.closed.pop(key, None)
        if entry is None:
            entry = self.entries[key] = Entry(dict(body), contextvars.copy_context())
        else:
            entry.body, entry.context = dict(body), contextvars.copy_context()
        return entry

    def _kept(self, kind: WorkloadKind) -> dict[Key, dict[str, Any]]:
        return self.trainjobs if kind == "TrainJob" else self.jobs

    def job_changed(self, job: Mapping[str, Any], *, deleted: bool = False, kind: WorkloadKind = "Job") -> Key | None:
        """Keep (or forget) the latest ``job`` (a Job, or a TrainJob); the key of the request that owns it."""
        meta = job.get("metadata") or {}
        job_key = (str(meta.get("namespace")), str(meta.get("name")))
        kept = self._kept(kind)
        if deleted:
            kept.pop(job_key, None)
        elif job_key not in kept or is_newer(job, kept[job_key]):
            kept[job_key] = dict(job)
        return owner_of(job)

    def request_of_job(self, namespace: str, job_name: str, *, kind: WorkloadKind = "Job") -> Key | None:
        """The open request whose Job (or TrainJob) is ``job_name``: by its owner when it was seen,
        else by the requests' ``status.jobName``."""
        job = self._kept(kind).get((namespace, job_name))
        if job is not None:
            return owner_of(job)
        for key, entry in self.entries.items():
            if key[0] == namespace and (entry.body.get("status") or {}).get("jobName") == job_name:
                return key
        return None

    def requests_of_job(self, namespace: str, job_name: str, *, kind: WorkloadKind = "Job") -> list[Key]:
        """Every open request whose run is the Job (or TrainJob) ``job_name``: its owners when it was
        seen, else the requests whose ``status.jobName`` names it."""
        job = self._kept(kind).get((namespace, job_name))
        if job is not None:
            return owners_of(job)
        return [key for key, entry in self.entries.items()
                if key[0] == namespace and (entry.body.get("status") or {}).get("jobName") == job_name]

    def job(self, namespace: str, name: str, *, kind: WorkloadKind = "Job") -> dict[str, Any] | None:
        """The latest Job (or TrainJob) seen by the watch, or None when none was (then read it from the API)."""
        return self._kept(kind).get((namespace, name))

    # ---- looking ---------------------------------------------------------------------------------

    def poke(self, key: Key) -> bool:
        """Look at request ``key`` now (or once more after the running look); False if it is not open."""
        entry = self.entries.get(key)
        if entry is None:
            return False
        if entry.task is not None and not entry.task.done():
            entry.again = True
        else:
            entry.task = asyncio.get_running_loop().create_task(self._run(entry), context=entry.context)
        return True

    async def _run(self, entry: Entry) -> None:
        while True:
            entry.again = False
            async with self._slots:
                try:
                    await self._look(entry)
                except asyncio.CancelledError:
                    raise
                except Exception:  # the next poke or sweep tries again; never kill the tracker
                    log.exception("Looking at UnlearnRequest %s/%s failed", *key_of(entry.body))
            if not entry.again or self.entries.get(key_of(entry.body)) is not entry:
                return  # nothing new, or the request closed meanwhile (its last look acted on it)

    async def sweep_forever(self, interval_seconds: float, wants: Callable[[Mapping[str, Any]], bool]) -> None:
        """Every ``interval_seconds``, poke each open request for which ``wants(body)`` is true."""
        while True:
            await asyncio.sleep(interval_seconds)
            for key, entry in list(self.entries.items()):
                if wants(entry.body):
                    self.poke(key)

    async def close(self) -> None:
        """Cancel the looks in flight (at shutdown)."""
        tasks = [e.task for e in self.entries.values() if e.task is not None and not e.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def wants_tracking(body: Mapping[str, Any]) -> bool:
    """An open, accepted request with a Job: it is looked at every interval."""
    status = body.get("status") or {}
    return (not cond.is_terminal(status.get("phase")) and bool(status.get("jobName"))
            and cond.status_of(status.get("conditions") or [], "Accepted") == "True")


def is_open(body: Mapping[str, Any]) -> bool:
    """Not terminal: the scheduler keeps the request."""
    return not cond.is_terminal((body.get("status") or {}).get("phase"))

"""The batches of coalesced requests still gathering (docs/coalescing.md): in memory, one per batch key.

A batch opens with its first request and closes ``coalesceWindowSeconds`` later
(:mod:`~forgetmi_operator.cluster.coalescer` then creates its Job). Each request's status records its
batch's key and closing time, so after a restart the requests re-join a batch with the same key and
closing time (``closes_at`` of the first to re-join) and nothing is lost; a request deleted while its
batch gathers leaves it (:meth:`Gatherings.discard`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(eq=False)
class Gathering:
    """One open batch: its key, namespace, when it closes, and its requests by uid (as accepted)."""

    key: str
    namespace: str
    closes_at: datetime
    members: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None


class Gatherings:
    """The open batches; see the module docstring."""

    def __init__(self) -> None:
        self.open: dict[str, Gathering] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        """The timers of the open batches and the closes in progress."""

    def track(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def join(self, key: str, namespace: str, body: Mapping[str, Any], closes_at: datetime) -> Gathering:
        """Add the request to the open batch ``key`` (opened now, closing at ``closes_at``, when there is none)."""
        gathering = self.open.get(key)
        if gathering is None:
            gathering = self.open[key] = Gathering(key=key, namespace=namespace, closes_at=closes_at)
        gathering.members[str(body["metadata"]["uid"])] = body
        return gathering

    def take(self, key: str) -> Gathering | None:
        """Close the batch ``key``: it no longer takes requests (a later one opens a new batch)."""
        return self.open.pop(key, None)

    def discard(self, uid: str) -> None:
        """The request ``uid`` was deleted: it leaves the batch it gathers in."""
        for gathering in self.open.values():
            gathering.members.pop(uid, None)

    async def close(self) -> None:
        """Cancel the batches' timers (at shutdown; their requests re-join after a restart)."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

"""The operator's view of the cluster while it runs: one :class:`Cluster`, made at startup
(:func:`forgetmi_operator.cluster.watches.startup`) and handed to every plain function Kopf's
handlers call. It holds no logic of its own beyond posting a step's Events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIServer

from forgetmi_operator.api.settings import Settings
from forgetmi_operator.cluster.gathering import Gatherings
from forgetmi_operator.cluster.kube import Kube
from forgetmi_operator.cluster.phases import PhaseBook
from forgetmi_operator.cluster.scheduler import LookScheduler
from forgetmi_operator.lifecycle.ports import Ports
from forgetmi_operator.lifecycle.steps import Step

MAX_COUNTED_JOBS = 10_000
PostEvent = Callable[[Mapping[str, Any], str, str, str], None]
"""Posts one Event ``(body, type, reason, message)`` about a request
(:class:`~forgetmi_operator.cluster.events.EventPoster`: once, whatever restarts come between)."""


@dataclass
class Cluster:
    settings: Settings
    kube: Kube
    ports: Ports
    scheduler: LookScheduler
    phases: PhaseBook
    post_event: PostEvent
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    metrics_server: WSGIServer | None = None
    gatherings: Gatherings = field(default_factory=Gatherings)
    """The batches of coalesced requests still gathering (docs/coalescing.md)."""
    counted_jobs: dict[str, None] = field(default_factory=dict)
    """The Jobs whose gate evaluations were counted (a batch's are counted once, not once per request)."""

    def count_once(self, job: str) -> bool:
        """Whether ``job``'s gate evaluations are still to be counted (then they are, from now on)."""
        if job in self.counted_jobs:
            return False
        self.counted_jobs[job] = None
        if len(self.counted_jobs) > MAX_COUNTED_JOBS:
            del self.counted_jobs[next(iter(self.counted_jobs))]
        return True

    def post(self, body: Mapping[str, Any], step: Step) -> None:
        """Post the step's Events and count the request in the phase it now has."""
        for type, reason, message in step.events:
            self.post_event(body, type, reason, message)
        self.phases.observe(body, step.status.get("phase"))

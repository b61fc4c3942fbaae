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
from forgetmi_operator.cluster.kube import Kube
from forgetmi_operator.cluster.phases import PhaseBook
from forgetmi_operator.cluster.scheduler import LookScheduler
from forgetmi_operator.lifecycle.ports import Ports
from forgetmi_operator.lifecycle.steps import Step

PostEvent = Callable[[Mapping[str, Any], str, str, str], None]
"""Posts one Event ``(body, type, reason, message)`` about a request (Kopf's ``kopf.event``)."""


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

    def post(self, body: Mapping[str, Any], step: Step) -> None:
        """Post the step's Events and count the request in the phase it now has."""
        for type, reason, message in step.events:
            self.post_event(body, type, reason, message)
        self.phases.observe(body, step.status.get("phase"))

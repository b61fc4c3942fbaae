"""The Events the operator posts on UnlearnRequests, each named for what it says (the request's uid,
the reason and the message), so that posting it again creates nothing: a step whose Events were lost to
a restart (docs/operator.md "Restarts") posts them again, and a retried step does not repeat them.

:func:`build_event` is the pure builder (a ``core/v1`` Event); :class:`EventPoster` posts in the
background, as Kopf's poster does, so a slow API server never holds up a reconcile: a refused Event is
logged, never retried for ever (Events are best-effort in Kubernetes).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from typing import Any

from forgetmi_operator import GROUP, KIND, VERSION
from forgetmi_operator.api import naming
from forgetmi_operator.api.errors import OperatorError
from forgetmi_operator.cluster.kube import Kube
from forgetmi_trainer.contract import now

log = logging.getLogger(__name__)
MESSAGE_LIMIT = 1024
"""The most of a message an Event holds (Kubernetes' limit for the ``note`` of an events.k8s.io Event)."""
COMPONENT = naming.MANAGER
ATTEMPTS = 3
RETRY_SECONDS = 1.0


def event_name(body: Mapping[str, Any], reason: str, message: str) -> str:
    """``<request name, cut>.<16 hex of sha256(uid, reason, message)>``: the same Event, the same name."""
    meta = body.get("metadata") or {}
    digest = hashlib.sha256("\n".join((str(meta.get("uid")), reason, message)).encode("utf-8")).hexdigest()
    return f"{str(meta.get('name'))[:200]}.{digest[:16]}"


def build_event(body: Mapping[str, Any], type: str, reason: str, message: str, at: str) -> dict[str, Any]:
    """The Event about the request in ``body`` (``type`` Normal or Warning) posted at ``at`` (RFC 3339)."""
    meta = body.get("metadata") or {}
    text = message if len(message) <= MESSAGE_LIMIT else message[: MESSAGE_LIMIT - 1] + "…"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name(body, reason, message), "namespace": meta.get("namespace")},
        "involvedObject": {"apiVersion": body.get("apiVersion") or f"{GROUP}/{VERSION}",
                           "kind": body.get("kind") or KIND, "name": meta.get("name"),
                           "namespace": meta.get("namespace"), "uid": meta.get("uid")},
        "type": type,
        "reason": reason,
        "message": text,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": at,
        "lastTimestamp": at,
        "count": 1,
    }


class EventPoster:
    """Posts Events in the background (a ``PostEvent``); :meth:`close` waits for those in flight."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.pending: set[asyncio.Task[None]] = set()
        self.closed = False

    def __call__(self, body: Mapping[str, Any], type: str, reason: str, message: str) -> None:
        if self.closed:  # the operator stops: its API client is closing
            log.info("Event %s on %s was not posted: the operator stops.", reason, naming.describe(body))
            return
        event = build_event(body, type, reason, message, now())
        task = asyncio.get_running_loop().create_task(self._post(event))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _post(self, event: dict[str, Any]) -> None:
        namespace = event["metadata"]["namespace"]
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await self.kube.create_event(namespace, event)
                return
            except OperatorError as err:
                if not err.retryable or attempt == ATTEMPTS:
                    log.warning("Event %s (%s) was not posted: %s", event["metadata"]["name"], event["reason"],
                                err.message)
                    return
            await asyncio.sleep(RETRY_SECONDS * attempt)

    async def close(self) -> None:
        """Post no more; wait for the Events in flight (their API calls must end before the client closes)."""
        self.closed = True
        if self.pending:  # each is bounded: ATTEMPTS calls, each within the API client's request timeout
            await asyncio.gather(*self.pending, return_exceptions=True)

"""The phase of every request the operator has seen, for the request gauges and counters.

:class:`PhaseBook` keeps (namespace, name) → (phase, creation time) of each request and the
count per (namespace, phase), so each event costs O(1): ``forgetmi_requests_in_phase`` is set
from the counts (a series that drops to 0 is removed), ``forgetmi_oldest_open_request_age_seconds``
is computed when Prometheus scrapes, and a request that first turns terminal is counted once in
``forgetmi_requests_total`` with its duration in ``forgetmi_request_duration_seconds``. Only
namespaces and phases become labels, never a request's name.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from forgetmi_operator.api import conditions as cond
from forgetmi_operator.cluster.metrics import Metrics
from forgetmi_trainer.contract import parse_timestamp

Key = tuple[str, str]


def created_at(body: Mapping[str, Any]) -> float:
    """The request's ``creationTimestamp`` as epoch seconds (now when it has none)."""
    stamp = (body.get("metadata") or {}).get("creationTimestamp")
    parsed = parse_timestamp(stamp)
    return parsed.timestamp() if parsed is not None else time.time()


def _key(body: Mapping[str, Any]) -> Key:
    meta = body.get("metadata") or {}
    return str(meta.get("namespace")), str(meta.get("name"))


class PhaseBook:
    """Phases of the requests seen, feeding ``metrics``; see the module docstring."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.requests: dict[Key, tuple[str, float]] = {}
        self.counts: Counter[Key] = Counter()
        metrics.oldest_open_request_age_seconds.set_function(self.oldest_open_age)

    def observe(self, body: Mapping[str, Any], phase: str | None) -> None:
        """Record that the request in ``body`` is now in ``phase`` (None: unknown, nothing changes);
        count it once when it turns terminal from the phase ``body`` shows."""
        key = _key(body)
        before = (body.get("status") or {}).get("phase")
        if phase and cond.is_terminal(phase) and not cond.is_terminal(before):
            self.metrics.requests_total.labels(namespace=key[0], outcome=phase).inc()
            self.metrics.request_duration_seconds.observe(max(0.0, time.time() - created_at(body)))
        if phase:
            self._move(key, phase, created_at(body))

    def forget(self, body: Mapping[str, Any]) -> None:
        """The request is gone."""
        self._move(_key(body), None, 0.0)

    def oldest_open_age(self) -> float:
        """Seconds since the oldest non-terminal request was created (0 when there is none)."""
        now = time.time()
        return max((now - created for phase, created in list(self.requests.values()) if not cond.is_terminal(phase)),
                   default=0.0)

    def _move(self, key: Key, phase: str | None, created: float) -> None:
        old = self.requests.pop(key, None)
        if old is not None:
            self._count(key[0], old[0], -1)
        if phase is not None:
            self.requests[key] = (phase, created)
            self._count(key[0], phase, +1)

    def _count(self, namespace: str, phase: str, delta: int) -> None:
        left = self.counts[(namespace, phase)] + delta
        if left > 0:
            self.counts[(namespace, phase)] = left
            self.metrics.requests_in_phase.labels(namespace=namespace, phase=phase).set(left)
            return
        del self.counts[(namespace, phase)]
        try:
            self.metrics.requests_in_phase.remove(namespace, phase)
        except KeyError:
            pass

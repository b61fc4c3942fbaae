"""When and how long the operator waits before trying a Kubernetes API call again (pure).

Two clients talk to the API server: the operator's own (:mod:`~forgetmi_operator.cluster.kube`),
and Kopf's (watches, status patches of handlers, Events). Both retry what a busy or restarting API
server answers, and nothing else:

- HTTP 429 (Too Many Requests: API priority and fairness shedding load) and 500/502/503/504 (a
  server error, an apiserver restarting behind its load balancer), and a connection that failed;
- a 429's ``Retry-After`` is honoured (never waited less), capped at :attr:`RetryPolicy.max_delay_seconds`.

The operator's client makes :attr:`RetryPolicy.attempts` attempts with exponential backoff and full
jitter, then raises ``ClusterUnavailable`` (retryable: the handler is retried by Kopf); a refusal
such as 403 or 409 is never retried here. Kopf's watch streams must outlive an API server outage of
any length, as a Deployment's controller should, so :class:`KopfBackoffs` never runs out: Kopf's own
schedule (1, 1, 2, 3, 5, 8 …) capped at the same maximum, then the maximum forever.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Answers of an API server that is overloaded or briefly unavailable: worth the same call again."""
KOPF_SCHEDULE = (1.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0)
"""Kopf's default ``networking.error_backoffs``."""


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all (1: no retry); the n-th retry waits up to
    ``base_delay_seconds * 2**(n-1)``, never more than ``max_delay_seconds``."""

    attempts: int = 6
    base_delay_seconds: float = 0.25
    max_delay_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")
        if self.base_delay_seconds < 0 or self.max_delay_seconds < self.base_delay_seconds:
            raise ValueError("need 0 <= base_delay_seconds <= max_delay_seconds")

    def retries(self, attempt: int, status: int | None) -> bool:
        """Whether attempt number ``attempt`` (from 1), which failed with HTTP ``status`` (None: no
        answer, the connection failed), is tried again."""
        return attempt < self.attempts and (status is None or status in RETRYABLE_STATUSES)

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt``: full jitter over the exponential step,
        at least the server's ``retry_after``, at most ``max_delay_seconds``."""
        step = min(self.max_delay_seconds, self.base_delay_seconds * 2 ** (attempt - 1))
        jittered = (rng or random).uniform(0.0, step)
        return min(self.max_delay_seconds, max(jittered, retry_after or 0.0))


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The ``Retry-After`` header in seconds (its delta-seconds form; an HTTP date is ignored)."""
    if not headers:
        return None
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None


class KopfBackoffs:
    """Kopf's ``networking.error_backoffs`` that never run out: iterated afresh for every request
    (an iterator would be spent by the first), and not ``Sized``, so Kopf retries until it works."""

    def __init__(self, max_delay_seconds: float) -> None:
        if max_delay_seconds <= 0:
            raise ValueError(f"max_delay_seconds must be positive, not {max_delay_seconds}")
        self.max_delay_seconds = max_delay_seconds

    def __iter__(self) -> Iterator[float]:
        for step in KOPF_SCHEDULE:
            yield min(step, self.max_delay_seconds)
        while True:
            yield self.max_delay_seconds

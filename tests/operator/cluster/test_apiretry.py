"""apiretry: which answers are retried, how long to wait, and Kopf's never-ending backoffs."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sized

import pytest

from forgetmi_operator.cluster.apiretry import KOPF_SCHEDULE, KopfBackoffs, RetryPolicy, retry_after_seconds


@pytest.mark.parametrize("status", [None, 429, 500, 502, 503, 504])
def test_busy_and_unreachable_answers_are_retried_until_the_last_attempt(status: int | None) -> None:
    policy = RetryPolicy(attempts=3)
    assert policy.retries(1, status) and policy.retries(2, status)
    assert not policy.retries(3, status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 413, 422, 501])
def test_refusals_are_never_retried(status: int) -> None:
    assert not RetryPolicy(attempts=10).retries(1, status)


def test_the_delay_grows_exponentially_with_full_jitter_and_is_capped() -> None:
    policy = RetryPolicy(attempts=10, base_delay_seconds=0.5, max_delay_seconds=3.0)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (9, 3.0)]:
        delays = [policy.delay(attempt, rng=rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.8 * ceiling  # jitter spans the step, it is not a constant
    assert policy.delay(1, retry_after=2.5, rng=rng) == pytest.approx(2.5)
    assert policy.delay(1, retry_after=60.0, rng=rng) == pytest.approx(3.0)


@pytest.mark.parametrize(("kwargs", "message"), [({"attempts": 0}, "attempts"),
                                                 ({"base_delay_seconds": 5.0, "max_delay_seconds": 1.0}, "delay")])
def test_a_policy_that_makes_no_sense_is_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("headers", "seconds"), [({"Retry-After": "7"}, 7.0), ({"retry-after": "0.5"}, 0.5),
                                                  ({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, None),
                                                  ({"Retry-After": "-3"}, None), ({}, None), (None, None)])
def test_retry_after_is_read_in_seconds(headers: dict[str, str] | None, seconds: float | None) -> None:
    assert retry_after_seconds(headers) == seconds


def test_kopf_backoffs_follow_kopfs_schedule_capped_then_never_run_out() -> None:
    backoffs = KopfBackoffs(10.0)
    assert not isinstance(backoffs, Sized)  # Kopf counts attempts only of a sized schedule
    first = list(itertools.islice(backoffs, 1000))
    assert first[:6] == list(KOPF_SCHEDULE[:6])
    assert first[6:] == [10.0] * 994
    assert list(itertools.islice(backoffs, 3)) == [1.0, 1.0, 2.0]  # each request starts afresh
    with pytest.raises(ValueError, match="positive"):
        KopfBackoffs(0)

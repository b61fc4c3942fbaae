"""Retries of the S3 clients: botocore's retry mode and attempts, a retry quota that is a setting,
and the number of attempts a failed call really made.

**The retry quota.** botocore's ``standard`` and ``adaptive`` modes give each client one
:class:`botocore.retries.quota.RetryQuota` (500 units; in botocore 1.44 a retry costs 14, a retry
after throttling 5, and a call that succeeds gives back 1, or what its last retry cost). It is
fleet-level protection against retry storms: once it is spent, a call is no longer retried at all,
whatever ``max_attempts`` says. Our clients live for the whole process (one per endpoint and
identity), so a store that fails a steady fraction of requests drains it for good: an independent
probe with 30 % faulted requests saw calls make one or two attempts while our messages said five,
and at 50 % 2 of 20 requests decided in 120 s. botocore has no option for the quota's size
(:func:`botocore.retries.standard.register_retry_handler` makes ``RetryQuota()`` itself), so
:func:`install_retries` replaces the retry handler that function registered (``needs-retry.<service>``,
unique id ``retry-config-<service>``) by one built from the same public classes of
:mod:`botocore.retries.standard` (``RetryHandler``, ``RetryPolicy``, ``StandardRetryConditions``,
``ExponentialBackoff``, ``RetryQuotaChecker``) around a quota of ``S3Settings.retry_quota`` units,
or :class:`UnlimitedQuota` for 0 — our default: our callers are closed loops (each thread waits for
its call, with backoff between attempts, and gives up after ``max_attempts``), so retries cannot
multiply the load beyond ``max_attempts`` times the callers' concurrency. The adaptive mode's rate
limiter (``before-send``/``needs-retry``) is untouched. The legacy mode has no quota.

**Attempts.** ``max_attempts`` counts every attempt, the first included (botocore's
``total_max_attempts``; its ``max_attempts`` counts retries, so our old setting of 5 allowed 6).
A ``ClientError`` carries the attempts made as ``ResponseMetadata.RetryAttempts`` (retries:
attempts − 1); a connection error carries nothing, so :func:`install_retries` registers an
``after-call-error`` handler that copies the endpoint's ``context["retries"]["attempt"]`` onto the
exception; :func:`attempts_made` reads either.
"""

from __future__ import annotations

from typing import Any

ATTEMPTS_ATTRIBUTE = "forgetmi_attempts"
"""The attribute :func:`install_retries`'s ``after-call-error`` handler sets on a failed call's exception."""


class UnlimitedQuota:
    """A retry quota that is never spent (``retry_quota`` 0): what ``RetryQuotaChecker`` calls of
    a :class:`botocore.retries.quota.RetryQuota`."""

    available_capacity = float("inf")

    def acquire(self, capacity_amount: int) -> bool:
        return True

    def release(self, capacity_amount: int) -> None:
        return None


def retries_config(mode: str, max_attempts: int) -> dict[str, Any]:
    """``botocore.config.Config(retries=...)``: ``max_attempts`` attempts in all, the first included."""
    return {"mode": mode, "total_max_attempts": max_attempts}


def _replace_retry_handler(client: Any, capacity: int, max_backoff_seconds: float) -> None:
    from botocore.retries import quota, standard

    service = client.meta.service_model.service_id.hyphenize()
    max_attempts = client.meta.config.retries["total_max_attempts"]
    adapter = standard.RetryEventAdapter()
    detector = standard.ThrottlingErrorDetector(adapter)
    retry_quota = standard.RetryQuotaChecker(quota.RetryQuota(capacity) if capacity else UnlimitedQuota(), detector)
    handler = standard.RetryHandler(
        retry_policy=standard.RetryPolicy(
            retry_checker=standard.StandardRetryConditions(max_attempts=max_attempts),
            retry_backoff=standard.ExponentialBackoff(max_backoff=max_backoff_seconds, service_name=service,
                                                      throttling_detector=detector)),
        retry_event_adapter=adapter, retry_quota=retry_quota, service_name=service)
    unique_id = f"retry-config-{service}"
    client.meta.events.unregister(f"needs-retry.{service}", unique_id=unique_id)
    client.meta.events.register(f"needs-retry.{service}", handler.needs_retry, unique_id=unique_id)
    # The replaced quota's own after-call handler stays registered; it refills a quota no one reads.
    client.meta.events.register(f"after-call.{service}", retry_quota.release_retry_quota)


def _record_attempts(exception: BaseException, context: dict[str, Any], **_: Any) -> None:
    attempt = (context.get("retries") or {}).get("attempt")
    if isinstance(attempt, int):
        setattr(exception, ATTEMPTS_ATTRIBUTE, attempt)


def install_retries(client: Any, mode: str, retry_quota: int, max_backoff_seconds: float) -> None:
    """Give ``client`` (made with :func:`retries_config`) a retry quota of ``retry_quota`` units
    (0: unlimited) and backoff capped at ``max_backoff_seconds`` (not in the legacy mode, which has
    no quota and its own backoff), and record on each failed call's exception the attempts it made."""
    if mode != "legacy":
        _replace_retry_handler(client, retry_quota, max_backoff_seconds)
    service = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register(f"after-call-error.{service}", _record_attempts,
                                unique_id="forgetmi-record-attempts")


def attempts_made(err: BaseException) -> int | None:
    """The attempts the failed call behind ``err`` made (a ClientError's response metadata, or what
    :func:`install_retries` recorded on a connection error); None when unknown."""
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        retries = response.get("ResponseMetadata", {}).get("RetryAttempts")
        if isinstance(retries, int):
            return retries + 1
    attempts = getattr(err, ATTEMPTS_ATTRIBUTE, None)
    return attempts if isinstance(attempts, int) else None


def quota_reached(err: BaseException) -> bool:
    """Whether botocore stopped retrying ``err``'s call because the retry quota was spent."""
    response = getattr(err, "response", None)
    return isinstance(response, dict) and bool(response.get("ResponseMetadata", {}).get("RetryQuotaReached"))

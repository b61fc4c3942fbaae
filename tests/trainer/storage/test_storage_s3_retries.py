"""S3 retries (``storage.s3_client``, ``storage.s3_retries``): the settings reach the botocore client
and come from the FORGETMI_S3_* variables; a failed call says how many attempts it made — as many as
the fault proxy saw; the retry quota is a setting, and botocore's own starves retries."""

from __future__ import annotations

import re

import pytest

from forgetmi_trainer import storage
from forgetmi_trainer.errors import StorageError, StorageUnavailable
from forgetmi_trainer.storage import RETRY_ENV, S3Settings, S3Storage

CODES = {"500": "InternalError", "forwarded-500": "InternalError", "503": "ServiceUnavailable"}
SHORT = {"retry_max_backoff_seconds": 0.05, "connect_timeout_seconds": 2, "read_timeout_seconds": 2}


def _attempts_in(message: str) -> int:
    found = re.search(r" after (\d+) attempts?[ .]", message)
    assert found, message
    return int(found.group(1))


def test_the_settings_reach_the_botocore_client() -> None:
    client = S3Storage("http://127.0.0.1:9", S3Settings(retry_mode="standard", max_attempts=7)).client
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 7}
    defaults = S3Storage("http://127.0.0.1:9", S3Settings()).client.meta.config.retries
    assert defaults == {"mode": "adaptive", "total_max_attempts": 10}
    assert (S3Settings().retry_quota, storage.DEFAULT_RETRY_QUOTA) == (0, 0)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("retry_mode", "fast", "retry_mode must be one of standard, adaptive, legacy"),
    ("max_attempts", 0, "max_attempts must be between 1 and 100"),
    ("retry_quota", -1, "retry_quota must be 0 (unlimited) or more"),
    ("retry_max_backoff_seconds", 0, "retry_max_backoff_seconds must be above 0"),
])
def test_bad_settings_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        S3Settings(**{field: value})  # type: ignore[arg-type]


def test_the_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """How the trainer gets the operator's retries: the variables on its pod, read wherever no
    settings are passed (the module-level functions, ``open_storage``)."""
    for name, value in zip(RETRY_ENV.values(), ("legacy", "3", "200"), strict=True):
        monkeypatch.setenv(name, value)
    wanted = S3Settings(retry_mode="legacy", max_attempts=3, retry_quota=200)
    assert S3Settings.from_env() == wanted
    assert S3Settings.from_env(max_attempts=4).max_attempts == 4  # a field passed wins
    assert S3Storage("http://127.0.0.1:9").settings == wanted
    assert storage.open_storage("s3://models/x", endpoint_url="http://127.0.0.1:9").settings == wanted
    assert storage.DEFAULT.backend("s3://models/x").settings == wanted
    monkeypatch.setenv("FORGETMI_S3_MAX_ATTEMPTS", " ")
    assert S3Settings.from_env().max_attempts == storage.DEFAULT_MAX_ATTEMPTS


@pytest.mark.parametrize(("name", "value", "message"), [
    ("FORGETMI_S3_RETRY_MODE", "fast", "FORGETMI_S3_RETRY_MODE='fast' is not valid: retry_mode must be one of"),
    ("FORGETMI_S3_MAX_ATTEMPTS", "many", "FORGETMI_S3_MAX_ATTEMPTS='many' is not valid: it must be a whole number."),
    ("FORGETMI_S3_MAX_ATTEMPTS", "0", "FORGETMI_S3_MAX_ATTEMPTS='0' is not valid: max_attempts must be between"),
    ("FORGETMI_S3_RETRY_QUOTA", "-5", "FORGETMI_S3_RETRY_QUOTA='-5' is not valid: it must be a whole number."),
])
def test_a_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(StorageError, match=re.escape(message)):
        S3Settings.from_env()


@pytest.mark.parametrize(("kind", "mode", "attempts"), [
    ("500", "adaptive", 2), ("503", "standard", 2), ("drop", "adaptive", 2), ("forwarded-500", "standard", 3),
    ("500", "legacy", 2), ("drop", "legacy", 2),
])
def test_a_failed_call_says_how_many_attempts_it_made(faulty_s3, s3_bucket: str, kind: str, mode: str,
                                                      attempts: int) -> None:
    """Every request faulted: the message's "after N attempts" is what the proxy saw for the call
    (the message used to print the setting, whatever was made)."""
    proxy = faulty_s3(1.0, kinds=(kind,))
    settings = S3Settings(retry_mode=mode, max_attempts=attempts, **SHORT)  # type: ignore[arg-type]
    backend = storage.open_storage(s3_bucket, endpoint_url=proxy.url, settings=settings)
    with pytest.raises(StorageUnavailable) as caught:
        backend.read_bytes(storage.join(s3_bucket, "model.json"))
    assert _attempts_in(str(caught.value)) == proxy.requests == attempts
    bucket = s3_bucket[len("s3://"):]
    assert str(caught.value) == (
        f"S3 endpoint {proxy.url} for bucket '{bucket}' could not be reached after {attempts} attempts."
        if kind == "drop" else f"S3 endpoint {proxy.url} kept failing for bucket '{bucket}' ({CODES[kind]}) after "
        f"{attempts} attempts.")


def test_a_small_quota_stops_retries_and_the_message_says_so(faulty_s3, s3_bucket: str) -> None:
    """A retry costs 14 units, one after throttling 5: a quota of 10 pays no retry after a 500 and
    two after SlowDown (botocore gives no unit back for a call that fails)."""
    proxy = faulty_s3(1.0, kinds=("500",))
    backend = storage.open_storage(s3_bucket, endpoint_url=proxy.url,
                                   settings=S3Settings(retry_quota=10, max_attempts=5, **SHORT))
    uri = storage.join(s3_bucket, "model.json")
    with pytest.raises(StorageUnavailable, match=r"\(InternalError\) after 1 attempt \(the client's retry quota "
                                                 r"was spent\)\.$"):
        backend.write_bytes(uri, b"{}")
    assert proxy.requests == 1

    throttled = faulty_s3(1.0, kinds=("slowdown",))
    backend = storage.open_storage(s3_bucket, endpoint_url=throttled.url,
                                   settings=S3Settings(retry_quota=10, max_attempts=5, **SHORT))
    with pytest.raises(StorageUnavailable, match=r"\(SlowDown\) after 3 attempts \(the client's retry quota"):
        backend.read_bytes(uri)
    assert throttled.requests == 3


@pytest.mark.parametrize(("quota", "attempts"), [(500, [10, 10, 10, 9, 1, 1]), (0, [10] * 6)],
                         ids=["botocore-500", "unlimited"])
def test_botocores_quota_starves_a_client_that_meets_steady_faults(faulty_s3, s3_bucket: str, quota: int,
                                                                   attempts: list[int]) -> None:
    """The probe's finding, made exact: with botocore's 500 units, three calls that fail after ten
    attempts spend 378 of them, and from the fifth call on none is retried. Unlimited: every call
    makes its ten attempts."""
    proxy = faulty_s3(1.0, kinds=("500",))
    backend = storage.open_storage(s3_bucket, endpoint_url=proxy.url,
                                   settings=S3Settings(retry_quota=quota, **SHORT))
    made = []
    for i in range(len(attempts)):
        proxy.reset_counts()
        with pytest.raises(StorageUnavailable) as caught:
            backend.read_bytes(storage.join(s3_bucket, f"{i}.json"))
        assert _attempts_in(str(caught.value)) == proxy.requests
        made.append(proxy.requests)
    assert made == attempts

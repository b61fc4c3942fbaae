"""The ``s3://`` backend through a fault-injecting proxy (``harness.s3faults``) in front of moto: with
the production defaults every operation of a mixed load succeeds under 30 % faulted requests, 50 %
with more attempts, throttling in the adaptive mode; a conditional write whose answer was lost
counts as its own success, never someone else's. The figures are printed (``pytest -s``)."""

from __future__ import annotations

import time
from collections import Counter

import boto3
import pytest

from forgetmi_trainer import storage
from forgetmi_trainer.errors import PreconditionFailed
from forgetmi_trainer.storage import Objects, S3Settings, join

OPERATIONS = ("put", "get", "create", "update")
CALLS = {"put": 1, "get": 1, "create": 2, "update": 3}
"""S3 calls per operation: PUT; GET; HEAD + conditional PUT; GET + HEAD + conditional PUT."""


def _payload(i: int, version: str = "") -> bytes:
    return f"object {i}{version} ".encode() * (1 + i % 7)


def _mixed_operations(objects: Objects, bucket: str, count: int) -> Counter[str]:
    """``count`` operations in turn: put an object, get it back, create a record with
    ``write_if(expected_token=None)``, update it with the token ``read_versioned`` gave. Every result
    is checked; returns the operations done per kind."""
    done: Counter[str] = Counter()
    for i in range(count):
        kind, n = OPERATIONS[i % 4], i // 4
        obj, record = join(bucket, "objects", str(n)), join(bucket, "records", f"{n}.json")
        if kind == "put":
            objects.write_bytes(obj, _payload(n))
        elif kind == "get":
            assert objects.read_bytes(obj) == _payload(n)
        elif kind == "create":
            objects.write_if(record, _payload(n, "v1"), expected_token=None)
        else:
            data, token = objects.read_versioned(record)
            assert data == _payload(n, "v1")
            objects.write_if(record, _payload(n, "v2"), expected_token=token)
        done[kind] += 1
    return done


def _check_stored(s3_server: str, bucket: str, count: int) -> None:
    """What moto holds, read directly: every object and every record's second version."""
    client, name = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1"), bucket[len("s3://"):]
    for n in range(count // 4):
        assert client.get_object(Bucket=name, Key=f"objects/{n}")["Body"].read() == _payload(n)
        assert client.get_object(Bucket=name, Key=f"records/{n}.json")["Body"].read() == _payload(n, "v2")


def _report(label: str, done: Counter[str], proxy: object, elapsed: float) -> str:
    calls = sum(CALLS[kind] * n for kind, n in done.items())
    requests, faults = proxy.requests, proxy.faults  # type: ignore[attr-defined]
    return (f"{label}: {sum(done.values())} operations ({calls} S3 calls) succeeded in {elapsed:.1f} s; the proxy "
            f"saw {requests} attempts ({requests / calls:.2f} per call) and injected {sum(faults.values())} faults "
            f"({', '.join(f'{k} {v}' for k, v in sorted(faults.items()))})")


def test_every_operation_succeeds_under_30_percent_faults_with_the_default_settings(
        faulty_s3, s3_bucket: str, s3_server: str) -> None:
    """The probe's load: 30 % of requests answered 500 or 503, forwarded then answered 500, or
    dropped. With botocore's retry quota (500 units per client, 14 a retry) calls were soon made
    with one or two attempts and failed; a create whose answer was lost failed as if another writer
    had made the object."""
    proxy = faulty_s3(0.3, seed=30)
    objects = Objects(endpoint_url=proxy.url, settings=S3Settings())
    started = time.monotonic()
    done = _mixed_operations(objects, s3_bucket, 200)
    elapsed = time.monotonic() - started
    print(_report("30 % faults, default settings", done, proxy, elapsed))
    assert sum(done.values()) == 200
    assert proxy.faults["forwarded-500"] > 0 and proxy.injected >= 0.25 * proxy.requests
    _check_stored(s3_server, s3_bucket, 200)


FIFTY_PERCENT = S3Settings(max_attempts=20, retry_max_backoff_seconds=0.05)
"""At 50 % a call fails 20 times in a row once in a million; the waits are capped low for the test."""
FIFTY_PERCENT_BOUND_SECONDS = 30
"""Measured: 100 operations (175 calls, 358 attempts) in ≈ 6 s on 2 cores."""


def test_every_operation_succeeds_under_50_percent_faults_and_at_full_speed_once_they_stop(
        faulty_s3, s3_bucket: str, s3_server: str) -> None:
    proxy = faulty_s3(0.5, seed=50)
    objects = Objects(endpoint_url=proxy.url, settings=FIFTY_PERCENT)
    started = time.monotonic()
    done = _mixed_operations(objects, s3_bucket, 100)
    elapsed = time.monotonic() - started
    print(_report("50 % faults, 20 attempts", done, proxy, elapsed))
    assert sum(done.values()) == 100 and elapsed < FIFTY_PERCENT_BOUND_SECONDS
    assert proxy.injected >= 0.4 * proxy.requests
    _check_stored(s3_server, s3_bucket, 100)

    proxy.fraction = 0  # the store recovers: the same client is not slowed by what it went through
    proxy.reset_counts()
    started = time.monotonic()
    after = _mixed_operations(objects, join(s3_bucket, "after"), 40)
    elapsed = time.monotonic() - started
    print(_report("after the faults stopped", after, proxy, elapsed))
    assert proxy.requests == sum(CALLS[kind] * n for kind, n in after.items()) and proxy.injected == 0
    assert elapsed < 5


def test_the_adaptive_mode_rides_out_throttling(faulty_s3, s3_bucket: str, s3_server: str) -> None:
    """30 % of requests answered 503 SlowDown: botocore backs off longer (1 s · 2**i, capped here)
    and the adaptive mode's limiter lowers the client's request rate, for a sequential client down
    to its floor of 0.5 requests/s (measured, default waits: 24 operations in ≈ 38 s; the standard
    mode ≈ 16 s). Every operation still succeeds."""
    proxy = faulty_s3(0.3, seed=36, kinds=("slowdown",))
    objects = Objects(endpoint_url=proxy.url, settings=S3Settings(retry_max_backoff_seconds=0.05))
    started = time.monotonic()
    done = _mixed_operations(objects, s3_bucket, 8)
    elapsed = time.monotonic() - started
    print(_report("30 % SlowDown, adaptive", done, proxy, elapsed))
    assert sum(done.values()) == 8 and proxy.faults["slowdown"] > 0
    _check_stored(s3_server, s3_bucket, 8)


FAST = S3Settings(retry_max_backoff_seconds=0.05)


@pytest.mark.parametrize("update", [False, True], ids=["create", "update"])
def test_a_conditional_write_whose_answer_was_lost_is_its_own_success(
        faulty_s3, s3_bucket: str, update: bool) -> None:
    """The PUT reaches the store but its answer is a 500: botocore retries it, and the retry is
    refused (412) because of the object the first attempt wrote. That is the caller's own write."""
    proxy = faulty_s3(0)
    uri = join(s3_bucket, "aliases", "production.json")
    token = storage.write_if(uri, b"v1", expected_token=None) if update else None
    objects = Objects(endpoint_url=proxy.url, settings=FAST)
    proxy.plan([None, "forwarded-500"])  # the HEAD passes, the first PUT is written then answered 500
    written = objects.write_if(uri, b"v2", expected_token=token)
    assert storage.read_versioned(uri) == (b"v2", written)
    assert proxy.faults == {"forwarded-500": 1} and proxy.requests == 4  # HEAD, PUT, PUT (412), GET


def test_a_retried_conditional_write_refused_for_another_writers_object_still_fails(
        faulty_s3, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer creates the object between our HEAD and our PUT, whose first attempt is
    answered 500 unwritten: the retry's 412 is that writer's object, not ours."""
    proxy = faulty_s3(0)
    uri = join(s3_bucket, "aliases", "production.json")
    store = Objects(endpoint_url=proxy.url, settings=FAST).backend(uri)
    real_head = store._head

    def head_then_other_writer(bucket: str, key: str) -> object:
        seen = real_head(bucket, key)
        storage.write_bytes(uri, b"other writer")  # directly on moto, not through the proxy
        return seen

    monkeypatch.setattr(store, "_head", head_then_other_writer)
    proxy.plan([None, "500"])
    with pytest.raises(PreconditionFailed, match="already exists; another writer created it"):
        store.write_if(uri, b"mine", expected_token=None)
    assert storage.read_bytes(uri) == b"other writer"
    assert proxy.faults == {"500": 1}

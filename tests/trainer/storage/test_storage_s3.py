"""The ``s3://`` backend (``storage.s3``) against a moto S3 server over HTTP: buckets, multipart uploads,
sha256 metadata, conditional writes, endpoints and an unreachable server."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path

import boto3
import pytest

from forgetmi_trainer import storage
from forgetmi_trainer.errors import ObjectNotFound, PreconditionFailed, StorageError, StorageUnavailable
from forgetmi_trainer.storage import MIB, S3Settings, join, open_storage


def _s3_client(endpoint: str) -> object:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def test_missing_bucket_raises_object_not_found(s3_env: str, tmp_path: Path) -> None:
    uri = "s3://no-such-bucket-forgetmi/k.json"
    with pytest.raises(ObjectNotFound, match=r"^Object s3://no-such-bucket-forgetmi/k\.json does not exist"):
        storage.read_bytes(uri)
    (tmp_path / "f").write_bytes(b"x")
    for write in (lambda: storage.write_bytes(uri, b"x"), lambda: storage.upload_file(tmp_path / "f", uri)):
        with pytest.raises(ObjectNotFound, match="bucket 'no-such-bucket-forgetmi' does not exist"):
            write()


def test_bucket_without_key_is_not_an_object(s3_bucket: str) -> None:
    with pytest.raises(StorageError, match="names a bucket, not an object"):
        storage.read_bytes(s3_bucket)


def test_multipart_upload_records_sha256(s3_bucket: str, s3_env: str, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(11 * MIB))
    expected = hashlib.sha256(src.read_bytes()).hexdigest()
    uri = join(s3_bucket, "m", "versions", "v1", "model.safetensors")
    settings = S3Settings(multipart_threshold_bytes=5 * MIB, multipart_chunk_bytes=5 * MIB)
    store = open_storage(uri, settings=settings)
    assert store.upload_file(src, uri) == expected
    head = _s3_client(s3_env).head_object(Bucket=s3_bucket[5:], Key="m/versions/v1/model.safetensors")
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 5 + 5 + 1 MiB
    assert head["Metadata"]["sha256"] == expected
    assert store.sha256_of(uri) == expected
    assert store.download_file(uri, tmp_path / "back.bin", expected_sha256=expected) == expected


def test_sha256_of_streams_when_metadata_is_absent(s3_bucket: str, s3_env: str) -> None:
    data = os.urandom(3 * MIB + 7)
    _s3_client(s3_env).put_object(Bucket=s3_bucket[5:], Key="foreign.bin", Body=data)
    assert storage.sha256_of(join(s3_bucket, "foreign.bin")) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("create", [True, False])
def test_s3_server_enforces_condition_after_the_head_check(
        s3_bucket: str, monkeypatch: pytest.MonkeyPatch, create: bool) -> None:
    """Another writer lands between our HEAD and our PUT: the If-(None-)Match header catches it."""
    uri = join(s3_bucket, "aliases", "production.json")
    token = None if create else storage.write_if(uri, b"v1", expected_token=None)
    store = open_storage(uri)
    real_head = store._head

    def head_then_other_writer(bucket: str, key: str) -> object:
        seen = real_head(bucket, key)
        storage.write_bytes(uri, b"other writer")
        return seen

    monkeypatch.setattr(store, "_head", head_then_other_writer)
    with pytest.raises(PreconditionFailed):
        store.write_if(uri, b"mine", expected_token=token)
    assert storage.read_bytes(uri) == b"other writer"


def test_endpoint_resolution_order(monkeypatch: pytest.MonkeyPatch, s3_server: str) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert storage.S3Storage().endpoint_url == "http://127.0.0.1:9"
    monkeypatch.setenv("FORGETMI_S3_ENDPOINT_URL", s3_server)
    assert storage.S3Storage().endpoint_url == s3_server
    assert storage.S3Storage("http://127.0.0.1:8").endpoint_url == "http://127.0.0.1:8"


def test_unreachable_endpoint_is_storage_unavailable_quickly(s3_server: str) -> None:
    with socket.socket() as sock:  # a port that was just free: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    fast = S3Settings(max_attempts=2, connect_timeout_seconds=1, read_timeout_seconds=1)
    store = open_storage("s3://models/x", endpoint_url=endpoint, settings=fast)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as info:
        store.read_bytes("s3://models/reg/x.json")
    assert time.monotonic() - started < 10
    assert str(info.value) == (f"S3 endpoint {endpoint} for bucket 'models' could not be reached after "
                               "2 attempts.")
    assert "testing" not in str(info.value)  # never the credentials

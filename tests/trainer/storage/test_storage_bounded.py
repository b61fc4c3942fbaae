"""``read_at_most``: an object's first bytes, never more than asked for in memory, on both backends
(a moto S3 server over HTTP with a ranged GET, and ``file://`` paths)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from forgetmi_trainer import storage
from forgetmi_trainer.errors import ObjectNotFound, OutOfReach
from forgetmi_trainer.storage import Objects, join


@pytest.fixture(params=["s3", "file"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "s3":
        return join(request.getfixturevalue("s3_bucket"), "data")
    return join(tmp_path.as_uri(), "data")


def test_read_at_most_returns_the_first_bytes(root: str) -> None:
    uri = join(root, "blob.bin")
    data = os.urandom(10_000)
    storage.write_bytes(uri, data)
    assert storage.read_at_most(uri, 1) == data[:1]
    assert storage.read_at_most(uri, 4096) == data[:4096]
    assert storage.read_at_most(uri, 10_000) == data
    assert storage.read_at_most(uri, 10_001) == data  # a smaller object: all of it
    assert storage.read_at_most(uri, 0) == b""
    assert storage.DEFAULT.read_at_most(uri, 3) == data[:3]


def test_read_at_most_of_an_empty_object_is_empty(root: str) -> None:
    uri = join(root, "empty.bin")
    storage.write_bytes(uri, b"")
    assert storage.read_at_most(uri, 100) == b""


def test_read_at_most_of_a_missing_object_is_object_not_found(root: str) -> None:
    for limit in (0, 10):
        with pytest.raises(ObjectNotFound):
            storage.read_at_most(join(root, "missing.bin"), limit)


def test_read_at_most_needs_a_non_negative_limit(root: str) -> None:
    uri = join(root, "blob.bin")
    storage.write_bytes(uri, b"abc")
    with pytest.raises(ValueError, match="max_bytes"):
        storage.read_at_most(uri, -1)


def test_read_at_most_keeps_the_handle_s_reach(tmp_path: Path) -> None:
    uri = join(tmp_path.as_uri(), "blob.bin")
    storage.write_bytes(uri, b"abc")
    with pytest.raises(OutOfReach):
        Objects(allow_files=False).read_at_most(uri, 2)


def test_an_s3_store_that_ignores_the_range_still_gives_at_most_the_limit(s3_bucket: str) -> None:
    uri = join(s3_bucket, "big.bin")
    data = os.urandom(100_000)
    storage.write_bytes(uri, data)
    backend = storage.open_storage(uri)
    real = backend.client.get_object

    def ignoring_range(**kwargs: object) -> object:
        kwargs.pop("Range", None)
        return real(**kwargs)

    backend.client.get_object = ignoring_range  # type: ignore[method-assign]
    try:
        assert backend.read_at_most(uri, 1000) == data[:1000]
    finally:
        del backend.client.get_object  # the client is shared: restore its own method


def test_a_download_can_be_held_to_one_stream(s3_bucket: str, s3_env: str, tmp_path: Path) -> None:
    """``max_concurrency`` caps the parallel ranged GETs of a multipart download (each one's buffers
    cost memory: the operator downloads a manifest with one); the bytes and digest are the same."""
    objects = Objects(endpoint_url=s3_env, settings=storage.S3Settings(
        multipart_threshold_bytes=5 * storage.MIB, multipart_chunk_bytes=5 * storage.MIB))
    uri = join(s3_bucket, "large.bin")
    data = os.urandom(12 * storage.MIB)
    digest = objects.write_bytes(uri, data)
    backend = objects.backend(uri)
    real, seen = backend.client.download_file, []

    def recording(*args: object, Config: object, **kwargs: object) -> object:
        seen.append(Config.max_request_concurrency)  # type: ignore[attr-defined]
        return real(*args, Config=Config, **kwargs)

    backend.client.download_file = recording  # type: ignore[method-assign]
    try:
        assert objects.download_file(uri, tmp_path / "one", max_concurrency=1) == digest
        assert objects.download_file(uri, tmp_path / "default", digest) == digest
    finally:
        del backend.client.download_file  # the client is shared: restore its own method
    assert (tmp_path / "one").read_bytes() == (tmp_path / "default").read_bytes() == data
    assert seen == [1, 10]
    assert storage.download_file(join(tmp_path.as_uri(), "one"), tmp_path / "copy", max_concurrency=1) == digest


def test_read_versioned_at_most_returns_the_first_bytes_and_the_token_writes_compare(root: str) -> None:
    """A bounded ``read_versioned`` (how the operator reads alias records): at most ``max_bytes``;
    an object read whole by it has the token a conditional write expects."""
    uri = join(root, "alias.json")
    token = storage.write_if(uri, b"0123456789", expected_token=None)
    assert storage.read_versioned(uri, 100) == (b"0123456789", token)
    assert storage.read_versioned(uri, 4)[0] == b"0123"
    assert storage.read_versioned(uri, 0)[0] == b""
    written = storage.write_if(uri, b"next", expected_token=storage.read_versioned(uri, 11)[1])
    assert storage.read_versioned(uri, 5) == storage.read_versioned(uri) == (b"next", written)
    empty = join(root, "empty.json")
    storage.write_bytes(empty, b"")
    assert storage.read_versioned(empty, 10)[0] == b""
    with pytest.raises(ObjectNotFound):
        storage.read_versioned(join(root, "missing.json"), 10)


def test_the_s3_client_cache_keeps_the_most_recently_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """One client per namespace's credentials, at most CACHED_CLIENTS of them."""
    from forgetmi_trainer.storage import s3_client

    assert s3_client.CACHED_CLIENTS == 64
    monkeypatch.setattr(s3_client, "_CLIENTS", type(s3_client._CLIENTS)())
    monkeypatch.setattr(s3_client, "CACHED_CLIENTS", 2)
    settings = [s3_client.S3Settings(credentials=s3_client.S3Credentials(f"key-{i}", "secret")) for i in range(3)]
    first = s3_client.s3_client("http://127.0.0.1:9", settings[0])
    s3_client.s3_client("http://127.0.0.1:9", settings[1])
    assert s3_client.s3_client("http://127.0.0.1:9", settings[0]) is first  # kept, now the most recent
    s3_client.s3_client("http://127.0.0.1:9", settings[2])  # drops settings[1]'s
    assert [key[1] for key in s3_client._CLIENTS] == [settings[0], settings[2]]
    assert first.meta.endpoint_url == "http://127.0.0.1:9"

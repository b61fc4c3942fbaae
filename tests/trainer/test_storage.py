"""forgetmi_trainer.storage against a moto S3 server over HTTP and against file:// paths."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from pathlib import Path

import boto3
import pytest

from forgetmi_trainer import storage
from forgetmi_trainer.errors import ObjectNotFound, PreconditionFailed, StorageError, StorageUnavailable
from forgetmi_trainer.storage import S3Settings, join, open_storage

MIB = 1024 * 1024


@pytest.fixture(params=["s3", "file"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A writable directory URI on each backend."""
    if request.param == "s3":
        return join(request.getfixturevalue("s3_bucket"), "data")
    return join(tmp_path.as_uri(), "data")


def _s3_client(endpoint: str) -> object:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def test_bytes_round_trip_returns_sha256(root: str) -> None:
    uri = join(root, "a", "b.bin")
    data = os.urandom(4096)
    digest = storage.write_bytes(uri, data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert storage.read_bytes(uri) == data
    assert storage.sha256_of(uri) == digest
    assert storage.exists(uri)
    assert not storage.exists(join(root, "a", "other.bin"))
    storage.write_bytes(uri, b"second")
    assert storage.read_bytes(uri) == b"second"
    assert storage.sha256_of(uri) == hashlib.sha256(b"second").hexdigest()


def test_text_and_json_round_trip(root: str) -> None:
    text = "héllo\n"
    assert storage.write_text(join(root, "t.txt"), text) == hashlib.sha256(text.encode()).hexdigest()
    assert storage.read_text(join(root, "t.txt")) == "héllo\n"
    obj = {"version": "v2", "metrics": {"auc": 0.91}, "ids": [1, 2]}
    digest = storage.write_json(join(root, "o.json"), obj)
    assert storage.read_json(join(root, "o.json")) == obj
    assert digest == hashlib.sha256(storage.read_bytes(join(root, "o.json"))).hexdigest()


def test_invalid_json_and_text_are_clear_errors(root: str) -> None:
    storage.write_bytes(join(root, "bad.json"), b"{not json")
    with pytest.raises(StorageError, match=r"bad\.json is not valid JSON"):
        storage.read_json(join(root, "bad.json"))
    storage.write_bytes(join(root, "bin.txt"), b"\xff\xfe\x00")
    with pytest.raises(StorageError, match=r"bin\.txt is not UTF-8 text\."):
        storage.read_text(join(root, "bin.txt"))


def test_missing_object_raises_object_not_found_with_sentence(root: str, tmp_path: Path) -> None:
    uri = join(root, "missing", "model.safetensors")
    calls = [storage.read_bytes, storage.sha256_of, storage.read_versioned,
             lambda u: storage.download_file(u, tmp_path / "out.bin")]
    for call in calls:
        with pytest.raises(ObjectNotFound) as info:
            call(uri)
        assert str(info.value) == f"Object {uri} does not exist."
        assert info.value.uri == uri
    assert not (tmp_path / "out.bin").exists()


def test_missing_bucket_raises_object_not_found(s3_env: str, tmp_path: Path) -> None:
    uri = "s3://no-such-bucket-forgetmi/k.json"
    with pytest.raises(ObjectNotFound, match=r"^Object s3://no-such-bucket-forgetmi/k\.json does not exist"):
        storage.read_bytes(uri)
    (tmp_path / "f").write_bytes(b"x")
    for write in (lambda: storage.write_bytes(uri, b"x"), lambda: storage.upload_file(tmp_path / "f", uri)):
        with pytest.raises(ObjectNotFound, match="bucket 'no-such-bucket-forgetmi' does not exist"):
            write()


@pytest.mark.parametrize("uri", ["", "bucket/key", "http://host/key", "gs://b/k", "s3:///key", "s3://Bad_Bucket/k",
                                 "file://relative/path", "file:/tmp/x"])
def test_malformed_uri_names_uri_and_accepted_schemes(uri: str) -> None:
    with pytest.raises(StorageError) as info:
        storage.read_bytes(uri)
    assert not isinstance(info.value, ObjectNotFound)
    assert f"Storage URI '{uri}' is not valid" in str(info.value)
    assert "expected s3://bucket/key or file:///absolute/path." in str(info.value)


def test_malformed_uri_message_drops_query_string() -> None:
    with pytest.raises(StorageError) as info:
        storage.read_bytes("https://b.s3.amazonaws.com/k?X-Amz-Signature=SECRETSIG")
    assert "SECRETSIG" not in str(info.value)
    assert "https://b.s3.amazonaws.com/k" in str(info.value)


def test_bucket_without_key_is_not_an_object(s3_bucket: str) -> None:
    with pytest.raises(StorageError, match="names a bucket, not an object"):
        storage.read_bytes(s3_bucket)


def test_join() -> None:
    assert join("s3://bkt", "m", "versions/v1", "model.safetensors") == "s3://bkt/m/versions/v1/model.safetensors"
    assert join("s3://bkt/reg/", "/m/") == "s3://bkt/reg/m"
    assert join("file:///", "tmp", "x") == "file:///tmp/x"
    assert join("file:///srv/reg") == "file:///srv/reg"
    with pytest.raises(StorageError, match=r"'\.' or '\.\.'"):
        join("file:///srv/reg", "../etc")
    with pytest.raises(StorageError, match="is not valid"):
        join("ftp://x", "y")


def test_list_uris_is_recursive_sorted_and_directory_scoped(root: str) -> None:
    for name in ["a/2.bin", "a/1.bin", "a/sub/3.bin", "ab/4.bin"]:
        storage.write_bytes(join(root, name), b"x")
    expected = [join(root, n) for n in ["a/1.bin", "a/2.bin", "a/sub/3.bin"]]
    assert storage.list_uris(join(root, "a")) == expected
    assert storage.list_uris(join(root, "a") + "/") == storage.list_uris(join(root, "a"))
    assert len(storage.list_uris(root)) == 4
    assert storage.list_uris(join(root, "nothing")) == []


def test_delete_is_idempotent(root: str) -> None:
    uri = join(root, "d.bin")
    storage.write_bytes(uri, b"x")
    storage.delete(uri)
    assert not storage.exists(uri)
    storage.delete(uri)
    assert storage.list_uris(root) == []


def test_upload_and_download_verify_sha256(root: str, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(100_000))
    expected = hashlib.sha256(src.read_bytes()).hexdigest()
    uri = join(root, "up", "model.safetensors")
    assert storage.upload_file(src, uri) == expected
    assert storage.sha256_of(uri) == expected
    dest = tmp_path / "dl" / "model.safetensors"
    assert storage.download_file(uri, dest, expected_sha256=expected) == expected
    assert dest.read_bytes() == src.read_bytes()
    wrong = tmp_path / "wrong.bin"
    with pytest.raises(StorageError, match=f"has sha256 {expected}, expected {'0' * 64}"):
        storage.download_file(uri, wrong, expected_sha256="0" * 64)
    assert not wrong.exists()
    assert [p.name for p in tmp_path.rglob("*forgetmi-tmp")] == []


def test_upload_of_missing_local_file_names_the_file(root: str, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound, match=r"nope\.bin does not exist\."):
        storage.upload_file(tmp_path / "nope.bin", join(root, "x"))


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


def test_conditional_write_create_stale_and_fresh_tokens(root: str) -> None:
    uri = join(root, "aliases", "production.json")
    token1 = storage.write_if(uri, b"v1", expected_token=None)
    with pytest.raises(PreconditionFailed, match="already exists; another writer created it"):
        storage.write_if(uri, b"v1-again", expected_token=None)
    assert storage.read_versioned(uri) == (b"v1", token1)
    token2 = storage.write_if(uri, b"v2", expected_token=token1)
    assert token2 != token1
    with pytest.raises(PreconditionFailed, match="changed since it was read; another writer updated it"):
        storage.write_if(uri, b"v3", expected_token=token1)
    assert storage.read_versioned(uri) == (b"v2", token2)
    storage.write_bytes(uri, b"other")  # a writer that bypasses write_if still changes the token
    with pytest.raises(PreconditionFailed):
        storage.write_if(uri, b"v3", expected_token=token2)
    storage.delete(uri)
    with pytest.raises(PreconditionFailed, match="was deleted since it was read"):
        storage.write_if(uri, b"v3", expected_token=token2)


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


def test_file_conditional_write_has_one_winner_under_contention(tmp_path: Path) -> None:
    uri = join(tmp_path.as_uri(), "alias.json")
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def contender(i: int) -> None:
        barrier.wait()
        try:
            storage.write_if(uri, f"writer-{i}".encode(), expected_token=None)
            outcomes.append(f"writer-{i}")
        except PreconditionFailed:
            outcomes.append("lost")

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if o != "lost"]
    assert len(winners) == 1 and len(outcomes) == 8
    assert storage.read_bytes(uri).decode() == winners[0]
    assert storage.list_uris(tmp_path.as_uri()) == [uri]  # no temp or lock files listed


def test_file_readers_see_old_or_new_never_partial(tmp_path: Path) -> None:
    uri = join(tmp_path.as_uri(), "model.bin")
    versions = [b"a" * MIB, b"b" * (2 * MIB)]
    storage.write_bytes(uri, versions[0])
    stop = threading.Event()
    bad: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            data = storage.read_bytes(uri)
            if data not in versions:
                bad.append(len(data))

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(30):
        storage.write_bytes(uri, versions[i % 2])
    stop.set()
    thread.join()
    assert bad == []


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


def test_change_token_changes_with_the_object_and_is_none_when_missing(root: str) -> None:
    uri = join(root, "manifest.csv")
    assert storage.change_token(uri) is None
    storage.write_text(uri, "subject_id,split\nP1,train\n")
    first = storage.change_token(uri)
    assert first is not None and storage.change_token(uri) == first  # reading it changes nothing
    storage.write_text(uri, "subject_id,split\nP2,train\n")  # same size, new content
    assert storage.change_token(uri) not in (None, first)
    storage.delete(uri)
    assert storage.change_token(uri) is None


def test_file_change_token_sees_an_in_place_append(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("subject_id,split\nP1,train\n")
    before = storage.change_token(path.as_uri())
    with open(path, "a") as fh:
        fh.write("P2,train\n")
    assert storage.change_token(path.as_uri()) != before
    assert storage.change_token(tmp_path.as_uri()) is None  # a directory is not an object

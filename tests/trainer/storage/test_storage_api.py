"""The public storage functions on both backends: a moto S3 server over HTTP and ``file://`` paths."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from forgetmi_trainer import storage
from forgetmi_trainer.errors import ObjectNotFound, PreconditionFailed, StorageError
from forgetmi_trainer.storage import join


@pytest.fixture(params=["s3", "file"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A writable directory URI on each backend."""
    if request.param == "s3":
        return join(request.getfixturevalue("s3_bucket"), "data")
    return join(tmp_path.as_uri(), "data")


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

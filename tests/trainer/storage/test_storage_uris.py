"""Storage URIs (``storage.base``): the accepted grammar, joining, and messages that never leak a query string."""

from __future__ import annotations

import pytest

from forgetmi_trainer import storage
from forgetmi_trainer.errors import ObjectNotFound, StorageError
from forgetmi_trainer.storage import join


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


def test_join() -> None:
    assert join("s3://bkt", "m", "versions/v1", "model.safetensors") == "s3://bkt/m/versions/v1/model.safetensors"
    assert join("s3://bkt/reg/", "/m/") == "s3://bkt/reg/m"
    assert join("file:///", "tmp", "x") == "file:///tmp/x"
    assert join("file:///srv/reg") == "file:///srv/reg"
    with pytest.raises(StorageError, match=r"'\.' or '\.\.'"):
        join("file:///srv/reg", "../etc")
    with pytest.raises(StorageError, match="is not valid"):
        join("ftp://x", "y")

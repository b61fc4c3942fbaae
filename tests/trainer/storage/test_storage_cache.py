"""The on-disk object cache: reads once, serves file:// in place, stays under its bound, survives
eviction by another process, refuses an oversized object."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from forgetmi_trainer import storage
from forgetmi_trainer.errors import InputError, ObjectNotFound, OutOfReach
from forgetmi_trainer.storage import Objects
from forgetmi_trainer.storage.cache import ObjectCache


class CountingObjects(Objects):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def read_at_most(self, uri: str, max_bytes: int) -> bytes:
        self.reads.append(uri)
        return super().read_at_most(uri, max_bytes)


def test_an_s3_object_is_read_once_and_then_served_from_disk(s3_bucket: str, tmp_path: Path) -> None:
    uri = storage.join(s3_bucket, "images", "a.png")
    storage.write_bytes(uri, b"pixels" * 100)
    objects = CountingObjects()
    cache = ObjectCache(tmp_path / "cache", 1 << 20, max_object_bytes=1 << 20, objects=objects)
    first = cache.fetch(uri)
    second = cache.fetch(uri)
    assert first == second and first.read_bytes() == b"pixels" * 100
    assert objects.reads == [uri]
    assert first.parent == tmp_path / "cache"


def test_a_file_object_is_its_own_file_and_is_not_copied(tmp_path: Path) -> None:
    source = tmp_path / "data" / "b.png"
    source.parent.mkdir()
    source.write_bytes(b"x")
    cache = ObjectCache(tmp_path / "cache", 1 << 20, max_object_bytes=1 << 20)
    assert cache.fetch(source.as_uri()) == source
    assert cache.size() == 0


def test_a_file_object_outside_the_handles_reach_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "c.png"
    source.write_bytes(b"x")
    cache = ObjectCache(tmp_path / "cache", 1 << 20, max_object_bytes=1 << 20, objects=Objects(allow_files=False))
    with pytest.raises(OutOfReach):
        cache.fetch(source.as_uri())


def test_the_cache_stays_under_its_bound_and_drops_the_least_recently_used(s3_bucket: str, tmp_path: Path) -> None:
    uris = [storage.join(s3_bucket, f"img-{i}.bin") for i in range(12)]
    for uri in uris:
        storage.write_bytes(uri, os.urandom(1000))
    cache = ObjectCache(tmp_path / "cache", 4000, max_object_bytes=2000)
    for uri in uris:
        cache.fetch(uri)
        time.sleep(0.01)  # distinct modification times
    assert cache.evict() <= 4000
    kept = {p.name for p in (tmp_path / "cache").iterdir()}
    assert len(kept) == 4
    newest = {cache.fetch(u).name for u in uris[-4:]}
    assert newest == kept


def test_a_hit_refreshes_an_entry_so_it_outlives_older_ones(s3_bucket: str, tmp_path: Path) -> None:
    uris = [storage.join(s3_bucket, f"hot-{i}.bin") for i in range(3)]
    for uri in uris:
        storage.write_bytes(uri, os.urandom(1000))
    cache = ObjectCache(tmp_path / "cache", 2000, max_object_bytes=2000)
    hot = cache.fetch(uris[0])
    time.sleep(0.01)
    cache.fetch(uris[1])
    time.sleep(0.01)
    cache.fetch(uris[0])  # a hit: now the newest
    time.sleep(0.01)
    cache.fetch(uris[2])
    cache.evict()
    assert hot.exists()


def test_an_entry_evicted_by_another_process_is_fetched_again(s3_bucket: str, tmp_path: Path) -> None:
    uri = storage.join(s3_bucket, "gone.bin")
    storage.write_bytes(uri, b"abc")
    cache = ObjectCache(tmp_path / "cache", 1 << 20, max_object_bytes=1 << 20)
    cache.fetch(uri).unlink()
    assert cache.fetch(uri).read_bytes() == b"abc"


def test_an_object_larger_than_allowed_is_an_input_error_and_is_not_kept(s3_bucket: str, tmp_path: Path) -> None:
    uri = storage.join(s3_bucket, "huge.bin")
    storage.write_bytes(uri, b"0" * 5000)
    cache = ObjectCache(tmp_path / "cache", 1 << 20, max_object_bytes=4096)
    with pytest.raises(InputError, match="larger than"):
        cache.fetch(uri)
    assert cache.size() == 0


def test_a_missing_object_raises_object_not_found(s3_bucket: str, tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path / "cache", 1 << 20, max_object_bytes=1 << 20)
    with pytest.raises(ObjectNotFound):
        cache.fetch(storage.join(s3_bucket, "nothing.png"))
    assert cache.size() == 0


def test_holds_tells_whether_a_read_needs_the_network(s3_bucket: str, tmp_path: Path) -> None:
    uri = storage.join(s3_bucket, "held.bin")
    storage.write_bytes(uri, b"abc")
    cache = ObjectCache(tmp_path / "cache", 1 << 20, max_object_bytes=1 << 20)
    assert cache.holds((tmp_path / "any.png").as_uri())
    assert not cache.holds(uri)
    cache.fetch(uri)
    assert cache.holds(uri)

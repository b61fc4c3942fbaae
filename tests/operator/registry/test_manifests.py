"""The manifest cache: one read per version of a manifest, never a stale subject set."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest

from forgetmi_operator.api.errors import InputNotFound, SubjectsError
from forgetmi_operator.api.spec import UnlearnRequestSpec
from forgetmi_operator.lifecycle.launch import check_inputs
from forgetmi_operator.registry import aliases as registry
from forgetmi_operator.registry import manifests
from forgetmi_trainer import storage
from forgetmi_trainer.storage import join

HEADER = "sample_id,subject_id,split\n"


def _manifest(uri: str, train: list[str], test: tuple[str, ...] = ("T1",)) -> None:
    rows = [f"s-{p},{p},train\n" for p in train] + [f"s-{p},{p},test\n" for p in test]
    storage.write_text(uri, HEADER + "".join(rows))


class Counting:
    """``manifests.training_subjects`` that counts its calls and can run a hook mid-read."""

    def __init__(self, during: object = None, delay: float = 0.0) -> None:
        self.calls = 0
        self.during = during
        self.delay = delay
        self._lock = threading.Lock()

    def __call__(self, uri: str) -> set[str] | None:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        subjects = manifests.training_subjects(uri)
        if callable(self.during):
            self.during()
        return subjects


@pytest.fixture(params=["file", "s3"])
def uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    root = request.getfixturevalue("s3_bucket") if request.param == "s3" else tmp_path.as_uri()
    return join(root, "data", "manifest.csv")


def test_a_manifest_is_read_once_per_version(uri: str) -> None:
    _manifest(uri, ["P1", "P2"])
    parse = Counting()
    cache = manifests.TrainingSubjects(parse)
    assert cache.get(uri) == {"P1", "P2"}
    assert cache.get(uri) == {"P1", "P2"}
    assert parse.calls == 1
    _manifest(uri, ["P1", "P3"])  # a new version: P2 gone, P3 new
    assert cache.get(uri) == {"P1", "P3"}
    assert parse.calls == 2
    storage.delete(uri)
    with pytest.raises(manifests.ManifestMissing):
        cache.get(uri)


def test_concurrent_acceptances_share_one_read(tmp_path: Path) -> None:
    uri = join(tmp_path.as_uri(), "m.csv")
    _manifest(uri, ["P1"])
    parse = Counting(delay=0.3)
    cache = manifests.TrainingSubjects(parse)
    results: list[frozenset[str] | None] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(uri))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [frozenset({"P1"})] * 8
    assert parse.calls == 1


def test_a_manifest_that_changes_while_read_is_used_but_not_kept(tmp_path: Path) -> None:
    uri = join(tmp_path.as_uri(), "m.csv")
    _manifest(uri, ["P1"])
    parse = Counting(during=lambda: _manifest(uri, ["P1", "P2"]))
    cache = manifests.TrainingSubjects(parse)
    assert cache.get(uri) == {"P1"}
    parse.during = None
    assert cache.get(uri) == {"P1", "P2"}  # not served from the read that raced the write
    assert parse.calls == 2
    assert cache.get(uri) == {"P1", "P2"}
    assert parse.calls == 2


def test_the_least_recently_used_manifest_is_dropped(tmp_path: Path) -> None:
    uris = [join(tmp_path.as_uri(), f"m{i}.csv") for i in range(3)]
    for i, u in enumerate(uris):
        _manifest(u, [f"P{i}"])
    parse = Counting()
    cache = manifests.TrainingSubjects(parse, size=2)
    cache.get(uris[0])
    cache.get(uris[1])
    cache.get(uris[0])  # m0 is now the most recent
    cache.get(uris[2])  # drops m1
    assert parse.calls == 3
    cache.get(uris[0])
    assert parse.calls == 3
    cache.get(uris[1])
    assert parse.calls == 4


def test_an_unreadable_format_is_cached_as_unknown(tmp_path: Path) -> None:
    uri = join(tmp_path.as_uri(), "m.parquet")
    storage.write_bytes(uri, b"not read by this parser")
    calls = []
    cache = manifests.TrainingSubjects(lambda u: calls.append(u) or None)  # type: ignore[func-returns-value]
    assert cache.get(uri) is None
    assert cache.get(uri) is None
    assert len(calls) == 1


def test_a_broken_manifest_is_an_input_error_every_time(tmp_path: Path) -> None:
    uri = join(tmp_path.as_uri(), "m.csv")
    storage.write_text(uri, "sample_id,label\ns1,0\n")
    cache = manifests.TrainingSubjects(manifests.training_subjects)
    for _ in range(2):
        with pytest.raises(InputNotFound, match="lacks the column"):
            cache.get(uri)


def test_acceptance_checks_subjects_against_the_current_manifest(tmp_path: Path) -> None:
    reg = join(tmp_path.as_uri(), "registry")
    weights = b"weights"
    storage.write_text(join(reg, "m", "versions", "v1", "config.json"), "{}\n")
    storage.write_bytes(join(reg, "m", "versions", "v1", "model.safetensors"), weights)
    registry.promote(reg, "m", "production", new_version="v1", new_sha256=hashlib.sha256(weights).hexdigest(),
                     expected_token=None, request=None)
    manifest = join(tmp_path.as_uri(), "data", "manifest.csv")
    _manifest(manifest, ["P1", "P2"])
    spec = UnlearnRequestSpec.model_validate({
        "model": {"registryUri": reg, "name": "m", "alias": "production"},
        "data": {"manifestUri": manifest},
        "forget": {"subjectsSecretRef": {"name": "s", "key": "subjects"}},
    })
    reads = manifests.TRAINING_SUBJECTS.reads
    assert check_inputs(spec, ["P2"], "Secret ns/s").version == "v1"
    assert check_inputs(spec, ["P1", "P2"], "Secret ns/s").version == "v1"
    assert manifests.TRAINING_SUBJECTS.reads == reads + 1
    _manifest(manifest, ["P1", "P3"])  # P2's rows removed from the manifest
    with pytest.raises(SubjectsError, match="1 of 1 forget subjects in Secret ns/s have no training samples"):
        check_inputs(spec, ["P2"], "Secret ns/s")
    assert manifests.TRAINING_SUBJECTS.reads == reads + 2
    storage.delete(manifest)
    with pytest.raises(InputNotFound, match=r"spec.data.manifestUri .* does not exist"):
        check_inputs(spec, ["P1"], "Secret ns/s")

"""The ``file://`` backend (``storage.file``): one winner among conditional writers, atomic replacement,
change tokens of in-place edits."""

from __future__ import annotations

import threading
from pathlib import Path

from forgetmi_trainer import storage
from forgetmi_trainer.errors import PreconditionFailed
from forgetmi_trainer.storage import MIB, join


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


def test_file_change_token_sees_an_in_place_append(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("subject_id,split\nP1,train\n")
    before = storage.change_token(path.as_uri())
    with open(path, "a") as fh:
        fh.write("P2,train\n")
    assert storage.change_token(path.as_uri()) != before
    assert storage.change_token(tmp_path.as_uri()) is None  # a directory is not an object

"""Open .npz archives are kept per process: a shard is opened once for all its members, a replaced
file is opened afresh, at most OPEN_ARCHIVES stay open, and a broken file leaves no handle open."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from forgetmi_trainer import archives
from forgetmi_trainer.images import ImageError, decode_image


@pytest.fixture(autouse=True)
def no_open_archives() -> None:
    archives._forget_after_fork()


def test_a_shard_is_opened_once_for_all_its_members(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shard = tmp_path / "shard.npz"
    np.savez(shard, **{f"S{i}": np.full((4, 4), i, dtype=np.uint8) for i in range(5)})
    loads: list[object] = []
    real = np.load
    monkeypatch.setattr(archives.np, "load", lambda *a, **k: loads.append(a) or real(*a, **k))
    values = [float(decode_image(shard, f"{shard.as_uri()}#S{i}")[0, 0, 0]) * 255 for i in range(5)]
    assert values == pytest.approx([0, 1, 2, 3, 4])
    assert len(loads) == 1


def test_a_replaced_shard_is_opened_afresh(tmp_path: Path) -> None:
    shard = tmp_path / "shard.npz"
    np.savez(shard, S=np.zeros((2, 2), dtype=np.uint8))
    assert float(decode_image(shard, "x.npz#S").max()) == 0.0
    time.sleep(0.01)
    np.savez(tmp_path / "new.npz", S=np.full((2, 2), 255, dtype=np.uint8))
    os.replace(tmp_path / "new.npz", shard)
    assert float(decode_image(shard, "x.npz#S").max()) == 1.0


def test_at_most_open_archives_stay_open_and_a_broken_file_leaves_none(tmp_path: Path) -> None:
    for i in range(archives.OPEN_ARCHIVES + 3):
        np.savez(tmp_path / f"{i}.npz", S=np.zeros((2, 2), dtype=np.uint8))
        decode_image(tmp_path / f"{i}.npz", f"{i}.npz#S")
    assert len(archives._ARCHIVES) == archives.OPEN_ARCHIVES
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ImageError):
        decode_image(broken, "broken.npz#S")
    assert len(archives._ARCHIVES) == archives.OPEN_ARCHIVES


def test_touching_a_shard_as_the_disk_cache_does_keeps_it_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shard = tmp_path / "shard.npz"
    np.savez(shard, A=np.zeros((2, 2), dtype=np.uint8), B=np.ones((2, 2), dtype=np.uint8))
    loads: list[object] = []
    real = np.load
    monkeypatch.setattr(archives.np, "load", lambda *a, **k: loads.append(a) or real(*a, **k))
    decode_image(shard, "x.npz#A")
    time.sleep(0.01)
    os.utime(shard)  # ObjectCache.fetch refreshes a hit's modification time
    decode_image(shard, "x.npz#B")
    assert len(loads) == 1

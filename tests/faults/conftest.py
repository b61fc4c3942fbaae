"""Fixtures of the fault suite (tests/faults/): one fitted world and one warm trainer for the whole folder,
and moto's conditional writes made atomic as S3's are (:mod:`harness.motolocks`: the suite's promotion
races would otherwise hit a window moto has and S3 does not).

All are package-scoped: fitting the world (≈ 10 s) and importing the trainer (≈ 6 s) once for all the
folder's modules keeps it within its time budget. Each test seeds models of its own in the world's
registry, so nothing it does reaches another test.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.motolocks import atomic_conditional_writes
from harness.warmtrainer import ForkServer
from harness.world import fitted_world


@pytest.fixture(scope="package", autouse=True)
def atomic_s3() -> Iterator[None]:
    with atomic_conditional_writes():
        yield


@pytest.fixture(scope="package")
def world(s3_server: str) -> Iterator[dict[str, Any]]:
    """The small dataset and trained v1 of :func:`harness.world.fitted_world`, once for the folder."""
    with fitted_world(s3_server, prefix="faults") as fitted:
        yield fitted


@pytest.fixture(scope="package")
def trainer_server() -> Iterator[ForkServer]:
    """The warm trainer every fault scenario's Jobs are forked from."""
    with ForkServer() as server:
        yield server

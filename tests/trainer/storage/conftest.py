"""Fixtures of the storage tests: ``tests/`` on ``sys.path`` (for ``harness.s3faults``), and a bucket
on the moto server behind a fault-injecting proxy.

- ``faulty_s3``: ``faulty_s3(fraction, seed=…, kinds=…)`` starts an
  :class:`~harness.s3faults.S3FaultProxy` in front of the moto server (stopped after the test) and
  returns it. Buckets are made directly on moto (``s3_bucket``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness.s3faults import S3FaultProxy

FaultyS3 = Callable[..., S3FaultProxy]


@pytest.fixture
def faulty_s3(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultyS3]:
    """A factory of fault proxies in front of the moto server; the FORGETMI_S3_* retry variables
    are unset, so clients get :class:`S3Settings`' own defaults."""
    for variable in ("FORGETMI_S3_RETRY_MODE", "FORGETMI_S3_MAX_ATTEMPTS", "FORGETMI_S3_RETRY_QUOTA"):
        monkeypatch.delenv(variable, raising=False)
    with ExitStack() as stack:

        def start(fraction: float, **options: Any) -> S3FaultProxy:
            return stack.enter_context(S3FaultProxy(s3_server, fraction=fraction, **options))

        yield start

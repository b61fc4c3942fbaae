"""Fixtures of the registry tests: one real MLflow server (:mod:`harness.mlflowserver`) for the folder,
its artifacts in a bucket of their own on the session's moto S3 server."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness.mlflowserver import MlflowServer


@pytest.fixture(scope="package")
def mlflow_bucket(s3_server: str) -> str:
    name = f"mlflow-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="package")
def mlflow_server(s3_server: str, mlflow_bucket: str, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[MlflowServer]:
    """``mlflow server`` with a SQLite store and artifacts on moto, started once for the folder."""
    pytest.importorskip("mlflow")
    with MlflowServer(tmp_path_factory.mktemp("mlflow"), s3_server, mlflow_bucket) as running:
        yield running

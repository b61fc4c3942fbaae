"""Shared fixtures: a real S3 server (moto, over HTTP on 127.0.0.1) and fresh buckets.

- ``s3_server`` (session): the endpoint URL (``http://127.0.0.1:PORT``) of an in-process moto
  server. For the session, dummy AWS credentials and region are set in ``os.environ`` (and the
  user's ~/.aws files and the instance-metadata lookup are switched off); all restored after.
- ``s3_env`` (function): sets ``FORGETMI_S3_ENDPOINT_URL`` to that server, so code under test
  (and subprocesses inheriting ``os.environ``) reaches it without an explicit endpoint.
- ``s3_bucket`` (function): creates a uniquely named bucket and yields ``"s3://<name>"``;
  it uses ``s3_env``, so ``forgetmi_trainer.storage`` calls on it need no endpoint argument.

Other fixtures belong in a conftest of their own test folder or in ``tests/harness/``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

S3_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
}
S3_UNSET_ENV = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Endpoint URL of a moto S3 server running in this process for the whole session."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in S3_TEST_ENV.items():
            env.setenv(name, value)
        for name in S3_UNSET_ENV:
            env.delenv(name, raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point ``FORGETMI_S3_ENDPOINT_URL`` at the moto server for this test; returns the URL."""
    monkeypatch.setenv("FORGETMI_S3_ENDPOINT_URL", s3_server)
    return s3_server


@pytest.fixture
def s3_bucket(s3_env: str) -> str:
    """A fresh, empty bucket on the moto server, as ``s3://<name>``."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=s3_env, region_name="us-east-1").create_bucket(Bucket=name)
    return f"s3://{name}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu``-marked tests unless torch is importable and sees a CUDA device (torch is
    imported only when such tests were collected)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    try:
        import torch
    except ImportError:
        reason = "needs torch with CUDA (torch is not installed)"
    else:
        if torch.cuda.is_available():
            return
        reason = "needs a CUDA device (torch.cuda.is_available() is False)"
    for item in gpu_items:
        item.add_marker(pytest.mark.skip(reason=reason))

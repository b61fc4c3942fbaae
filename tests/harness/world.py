"""A model registry in moto S3 for the operator's end-to-end tests: a bucket with a small generated
dataset and one trained model (``registry/base/versions/v1``), and copies of it under other
model names with alias ``production`` → v1 (each test gets a model of its own)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from forgetmi_trainer import storage, synthetic
from harness.registries import point


@contextlib.contextmanager
def fitted_world(s3_server: str, prefix: str = "e2e") -> Iterator[dict[str, Any]]:
    """Yields ``{bucket, s3, manifest, subjects, sha, registry}`` with the endpoint set for storage."""
    from forgetmi_trainer.train import TrainConfig, fit_and_publish

    with pytest.MonkeyPatch.context() as env:
        env.setenv(storage.ENDPOINT_ENV, s3_server)
        bucket = f"{prefix}-{uuid.uuid4().hex[:12]}"
        s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
        s3.create_bucket(Bucket=bucket)
        samples = synthetic.generate(synthetic.SynthParams(patients=30, seed=0))
        manifest = synthetic.write_dataset(samples, f"s3://{bucket}/data")
        subjects = synthetic.choose_forget_subjects(samples, 0.1, 0)
        sha, _ = fit_and_publish(manifest, f"s3://{bucket}/registry/base/versions/v1", recipe=TrainConfig(epochs=3),
                                 seed=0)
        yield {"bucket": bucket, "s3": s3, "manifest": manifest, "subjects": subjects, "sha": sha,
               "registry": f"s3://{bucket}/registry"}


def seed_model(world: dict[str, Any], name: str) -> None:
    """Copy the fitted v1 to model ``name`` and point its alias ``production`` at it."""
    s3, bucket = world["s3"], world["bucket"]
    for item in s3.list_objects_v2(Bucket=bucket, Prefix="registry/base/versions/v1/")["Contents"]:
        s3.copy_object(Bucket=bucket, Key=item["Key"].replace("registry/base/", f"registry/{name}/", 1),
                       CopySource={"Bucket": bucket, "Key": item["Key"]})
    point(world["registry"], name, "production", "v1")

"""Fixtures of the trainer tests: a small dataset and a tiny trained model on the moto S3 server."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest

from forgetmi_trainer import storage, synthetic
from forgetmi_trainer.contract import ForgetSubjects, JobConfig, MethodConfig, ModelRef
from forgetmi_trainer.train import TrainConfig, fit_and_publish

MODEL = "m"


@dataclass(frozen=True)
class S3World:
    """A bucket holding a generated dataset and a tiny original model ``<registry>/m/versions/v1``."""

    endpoint: str
    bucket: str
    registry: str
    manifest_uri: str
    model_sha256: str
    forget: list[str]
    train_subjects: list[str]
    test_subjects: list[str]

    def job_config(self, subjects_file: str, **overrides: object) -> JobConfig:
        fields: dict[str, object] = {
            "request": "ns/test",
            "model": ModelRef(registry_uri=self.registry, name=MODEL, version="v1"),
            "manifest_uri": self.manifest_uri,
            "forget": ForgetSubjects(file=subjects_file),
            "method": MethodConfig(preset="equal", epochs=3, learning_rate=3e-3, batch_size=16, push_bound=1.5),
            "output_uri": storage.join(self.registry, MODEL, "versions", "v2"),
            "candidate_version": "v2",
            "seed": 0,
            "device": "cpu",
            "precision": "fp32",
        }
        fields.update(overrides)
        return JobConfig(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def s3_world(s3_server: str) -> Iterator[S3World]:
    """Module-scoped: the dataset and the original model are built once per test module."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FORGETMI_S3_ENDPOINT_URL", s3_server)
        name = f"world-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=name)
        bucket = f"s3://{name}"
        samples = synthetic.generate(synthetic.SynthParams(patients=20, seed=0))
        manifest_uri = synthetic.write_dataset(samples, storage.join(bucket, "data"))
        registry = storage.join(bucket, "registry")
        sha, _ = fit_and_publish(
            manifest_uri,
            storage.join(registry, MODEL, "versions", "v1"),
            recipe=TrainConfig(epochs=3, batch_size=32),
            seed=0,
            device="cpu",
            precision="fp32",
            metadata={"version": "v1"},
        )
        yield S3World(
            endpoint=s3_server,
            bucket=bucket,
            registry=registry,
            manifest_uri=manifest_uri,
            model_sha256=sha,
            forget=synthetic.choose_forget_subjects(samples, 0.15, seed=0),
            train_subjects=sorted({s.subject_id for s in samples if s.split == "train"}),
            test_subjects=sorted({s.subject_id for s in samples if s.split == "test"}),
        )


@pytest.fixture
def restore_trainer_logging() -> Iterator[None]:
    """``cli.main`` configures the ``forgetmi_trainer`` logger; put it back afterwards."""
    logger = logging.getLogger("forgetmi_trainer")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]

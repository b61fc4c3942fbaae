"""The GPU path: ``run`` on CUDA with bf16 autocast (skipped without CUDA; see tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from forgetmi_trainer import data, storage
from forgetmi_trainer.cli import main
from forgetmi_trainer.contract import Report

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("restore_trainer_logging")]


def test_run_on_cuda_with_bf16(s3_world: Any, s3_env: str, tmp_path: Path) -> None:
    subjects = tmp_path / "subjects.txt"
    subjects.write_text("\n".join(s3_world.forget) + "\n")
    output = storage.join(s3_world.registry, "m", "versions", "gpu")
    config = s3_world.job_config(
        str(subjects), device="cuda", precision="bf16", output_uri=output, candidate_version="gpu"
    )
    path = tmp_path / "job.json"
    path.write_text(config.model_dump_json())
    term = tmp_path / "termination-log"
    assert main(["run", "--config", str(path), "--termination-log", str(term)]) == 0, term.read_text()
    report = Report.model_validate_json(storage.read_text(storage.join(output, "report.json")))
    assert report.environment.device.startswith("cuda")
    assert report.environment.precision == "bf16"
    assert report.selection.epochs_run == 3
    for metrics in (report.original, report.unlearned):
        assert metrics.split.test_auc is not None and 0.0 <= metrics.split.test_auc <= 1.0
    assert term.read_text().startswith('{"ok":true')


def test_noisy_images_on_cuda_with_a_cpu_generator() -> None:
    # Forget-MI seeds one CPU generator and perturbs forget images that live on the GPU.
    pixels = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    on_cpu = data.noisy_images(pixels, 0.0, 0.3, torch.Generator().manual_seed(5))
    on_gpu = data.noisy_images(pixels.cuda(), 0.0, 0.3, torch.Generator().manual_seed(5))
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=0, atol=1e-6)


def test_a_streamed_png_set_arrives_on_cuda_as_on_the_cpu(s3_bucket: str, tmp_path: Path) -> None:
    """The DataLoader path on CUDA: PNG files read from S3 by two workers, pinned and copied
    non-blocking, arrive on the GPU holding exactly what the CPU stream holds."""
    import numpy as np

    from forgetmi_trainer import synthetic
    from forgetmi_trainer.contract import DataConfig
    from forgetmi_trainer.manifest import read_manifest
    from forgetmi_trainer.preprocess import ImagePreprocessing
    from forgetmi_trainer.streaming import SampleStream
    from forgetmi_trainer.tokenizer import build_tokenizer, build_vocabulary

    samples = synthetic.generate(synthetic.SynthParams(patients=10, seed=0))
    uri = synthetic.write_dataset(samples, storage.join(s3_bucket, "gpu-png"), "png")
    manifest = read_manifest(uri)
    tokenizer = build_tokenizer(build_vocabulary(manifest.texts), tmp_path / "tok", max_length=16)
    prep = ImagePreprocessing(height=32, width=32, num_channels=3, do_normalize=True, image_mean=(0.5,) * 3,
                              image_std=(0.25,) * 3)
    got = {}
    for device, workers in (("cuda", 2), ("cpu", 0)):
        with SampleStream(manifest, uri, prep, tokenizer, max_length=16, device=torch.device(device),
                          settings=DataConfig(workers=workers), cache_dir=tmp_path / device) as stream:
            batches = list(stream.view(np.arange(len(manifest))).in_order(8))
        assert all(b.pixels.device.type == device and b.input_ids.device.type == device for b in batches)
        got[device] = torch.cat([b.pixels for b in batches]).cpu()
    assert torch.equal(got["cuda"], got["cpu"])


def test_two_ranks_on_two_gpus_with_nccl(s3_world: Any, s3_env: str, tmp_path: Path) -> None:
    """``launch`` with one rank per GPU: NCCL, bf16, rank 0's report says world size 2 (needs 2 GPUs)."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices (NCCL refuses two ranks on one GPU)")
    subjects = tmp_path / "subjects.txt"
    subjects.write_text("\n".join(s3_world.forget) + "\n")
    output = storage.join(s3_world.registry, "m", "versions", "gpu-ddp")
    config = s3_world.job_config(str(subjects), device="cuda", precision="bf16", output_uri=output,
                                 candidate_version="gpu-ddp")
    path = tmp_path / "job.json"
    path.write_text(config.model_dump_json())
    term = tmp_path / "termination-log"
    code = main(["launch", "--standalone", "--nnodes", "1", "--nproc-per-node", "2", "--",
                 "run", "--config", str(path), "--termination-log", str(term)])
    assert code == 0, term.read_text() if term.exists() else ""
    report = Report.model_validate_json(storage.read_text(storage.join(output, "report.json")))
    assert report.environment.world_size == 2 and report.environment.device.startswith("cuda")

"""Reading a manifest's samples into memory for tests, through the trainer's own stream."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from forgetmi_trainer.contract import DataConfig
from forgetmi_trainer.data import Encoded, text_length
from forgetmi_trainer.manifest import Manifest
from forgetmi_trainer.preprocess import ImagePreprocessing
from forgetmi_trainer.streaming import SampleStream

CPU = torch.device("cpu")


def identity_preprocessing(manifest: Manifest, manifest_uri: str) -> ImagePreprocessing:
    """The small CNN's preprocessing for this dataset: its stored size and channels, not normalised."""
    from forgetmi_trainer.streaming import native_shape

    with tempfile.TemporaryDirectory() as tmp:
        c, h, w = native_shape(manifest, manifest_uri, 0, Path(tmp), DataConfig())
    return ImagePreprocessing(height=h, width=w, num_channels=c)  # type: ignore[arg-type]


def encode_manifest(manifest: Manifest, manifest_uri: str, tokenizer: object,
                    preprocessing: ImagePreprocessing | None = None, rows: np.ndarray | None = None) -> Encoded:
    """The samples at ``rows`` (default: all) in memory on the CPU, as the trainer reads them."""
    prep = preprocessing or identity_preprocessing(manifest, manifest_uri)
    picked = np.arange(len(manifest)) if rows is None else np.asarray(rows, dtype=np.int64)
    with tempfile.TemporaryDirectory() as tmp, SampleStream(
        manifest, manifest_uri, prep, tokenizer, max_length=text_length(tokenizer), device=CPU,
        settings=DataConfig(workers=0), cache_dir=Path(tmp),
    ) as stream:
        return stream.view(picked).all()

"""ImagePreprocessing: preprocessor_config.json (HF keys), HF processors, resize/channels/normalisation, memory."""

from __future__ import annotations

import gc
import io
import json
import logging
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, BitImageProcessor, ConvNextImageProcessor, ViTImageProcessor

from forgetmi_trainer.errors import CheckpointError
from forgetmi_trainer.images import decode_image
from forgetmi_trainer.preprocess import PREPROCESSOR_FILE, ImagePreprocessing

RNG = np.random.default_rng(0)
NORMALISED = ImagePreprocessing(height=32, width=24, num_channels=3, resample=3, do_normalize=True,
                                image_mean=(0.5,), image_std=(0.25, 0.5, 0.3))


@pytest.fixture(autouse=True)
def _quiet_transformers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="transformers")  # "requires torchvision, falling back to ...Pil"


def test_json_round_trip_and_hf_keys(tmp_path: Path) -> None:
    NORMALISED.save(tmp_path)
    written = json.loads((tmp_path / PREPROCESSOR_FILE).read_text())
    assert ImagePreprocessing.load(tmp_path) == NORMALISED
    vit_keys = set(ViTImageProcessor().to_dict())
    assert vit_keys <= set(written) and set(written) - vit_keys == {"num_channels"}
    assert written["size"] == {"height": 32, "width": 24} and written["image_processor_type"] == "ViTImageProcessor"
    assert written["image_mean"] == [0.5, 0.5, 0.5] and written["rescale_factor"] == pytest.approx(1 / 255)


def test_a_single_mean_and_std_apply_to_every_channel() -> None:
    grey = ImagePreprocessing(height=4, width=4, num_channels=1)
    assert grey.image_mean == (0.0,) and grey.image_std == (1.0,)
    assert ImagePreprocessing(height=4, width=4, num_channels=3, image_mean=(0.2,)).image_mean == (0.2, 0.2, 0.2)
    with pytest.raises(ValueError, match="image_mean"):
        ImagePreprocessing(height=4, width=4, num_channels=3, image_mean=(0.1, 0.2))
    with pytest.raises(ValueError, match="image_std"):
        ImagePreprocessing(height=4, width=4, num_channels=1, image_std=(0.0,))
    with pytest.raises(ValueError, match="extra"):
        ImagePreprocessing(height=4, width=4, num_channels=1, crop=True)  # type: ignore[call-arg]


def test_hf_processor_loaded_from_our_file_computes_the_same_input(tmp_path: Path) -> None:
    image8 = RNG.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    unit = image8.transpose(2, 0, 1).astype(np.float32) / 255
    same_size = NORMALISED.model_copy(update={"height": 40, "width": 50})
    for ours, tolerance in ((same_size, 1e-6), (NORMALISED, 2.5 / 255 / 0.25)):  # HF resizes 8-bit, we resize floats
        ours.save(tmp_path)
        hf = AutoImageProcessor.from_pretrained(tmp_path)
        theirs = hf(images=image8, return_tensors="np")["pixel_values"][0]
        assert theirs.shape == (3, ours.height, ours.width)
        np.testing.assert_allclose(ours.apply(unit), theirs, atol=tolerance)


def test_from_hf_processor_reads_vit_convnext_and_bit() -> None:
    vit = ViTImageProcessor(size={"height": 64, "width": 48}, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.4])
    assert ImagePreprocessing.from_hf_processor(vit) == ImagePreprocessing(
        height=64, width=48, num_channels=3, resample=2, do_normalize=True, image_mean=(0.4, 0.5, 0.6),
        image_std=(0.2, 0.3, 0.4))
    convnext = ImagePreprocessing.from_hf_processor(ConvNextImageProcessor(size={"shortest_edge": 224}))
    assert (convnext.height, convnext.width, convnext.resample) == (224, 224, 3)
    bit = ImagePreprocessing.from_hf_processor(BitImageProcessor())
    assert (bit.height, bit.width, bit.num_channels) == (224, 224, 3)  # the crop size is the input size
    grey = ImagePreprocessing.from_hf_processor(ViTImageProcessor(image_mean=[0.5], image_std=[0.5]), num_channels=1)
    assert grey.num_channels == 1 and grey.image_mean == (0.5,)
    with pytest.raises(ValueError, match="image_mean"):
        ImagePreprocessing.from_hf_processor(ViTImageProcessor(), num_channels=1)  # three means for one channel


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"do_rescale": False}, "do_rescale"),
        ({"rescale_factor": 1 / 127.5}, "rescale_factor"),
        ({"do_resize": False}, "do_resize"),
        ({"size": {"longest_edge": 512}}, "size"),
        ({"do_reduce_labels": True}, "do_reduce_labels"),
        ({"resample": 9}, "resample"),
    ],
)
def test_from_hf_dict_refuses_what_it_cannot_reproduce(change: dict[str, object], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        ImagePreprocessing.from_hf_dict({**NORMALISED.to_hf_dict(), **change})


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=f"has no {PREPROCESSOR_FILE}"):
        ImagePreprocessing.load(tmp_path)
    (tmp_path / PREPROCESSOR_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ImagePreprocessing.load(tmp_path)
    (tmp_path / PREPROCESSOR_FILE).write_text(json.dumps({**NORMALISED.to_hf_dict(), "image_std": [1, 0, 1]}))
    with pytest.raises(CheckpointError, match=r"preprocessor_config\.json is invalid: image_std"):
        ImagePreprocessing.load(tmp_path)


def test_apply_resizes_and_converts_channels() -> None:
    rgb = RNG.random((3, 20, 30), dtype=np.float32)
    grey = ImagePreprocessing(height=10, width=15, num_channels=1)
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    box = grey.model_copy(update={"resample": 4})
    expected = luma.reshape(10, 2, 15, 2).mean(axis=(1, 3))  # a 2x box downscale is the 2x2 block mean
    np.testing.assert_allclose(box.apply(rgb)[0], expected, atol=1e-6)
    assert grey.apply(rgb).shape == (1, 10, 15)
    to_rgb = ImagePreprocessing(height=20, width=30, num_channels=3).apply(rgb[:1])
    assert to_rgb.shape == (3, 20, 30) and np.array_equal(to_rgb[0], to_rgb[2])
    np.testing.assert_array_equal(to_rgb[1], rgb[0])  # same size: no resize, values untouched
    np.testing.assert_allclose(ImagePreprocessing(height=7, width=5, num_channels=1, resample=3).apply(
        np.full((1, 33, 21), 0.37, np.float32)), 0.37, atol=1e-6)
    with pytest.raises(ValueError, match="not \\(C, H, W\\)"):
        grey.apply(np.zeros((2, 4, 4), np.float32))


def test_resize_keeps_16_bit_precision() -> None:
    levels = (np.arange(64 * 64, dtype=np.float32).reshape(1, 64, 64) % 4096) / 65535  # all below 1/16
    out = ImagePreprocessing(height=32, width=32, num_channels=1, resample=4).apply(levels)
    np.testing.assert_allclose(out[0], levels[0].reshape(32, 2, 32, 2).mean(axis=(1, 3)), atol=1e-7)
    assert np.unique(out).size > 500  # an 8-bit round trip would leave at most 17 levels


def test_apply_normalises_and_torch_normalize_round_trips() -> None:
    unit = RNG.random((3, 32, 24), dtype=np.float32)
    mean, std = np.array([0.5, 0.5, 0.5])[:, None, None], np.array([0.25, 0.5, 0.3])[:, None, None]
    np.testing.assert_allclose(NORMALISED.apply(unit), (unit - mean) / std, atol=1e-5)
    batch = torch.from_numpy(np.stack([unit, unit[::-1].copy()]))
    model_input = NORMALISED.normalize(batch)
    torch.testing.assert_close(model_input[0], torch.from_numpy(NORMALISED.apply(unit)))
    torch.testing.assert_close(NORMALISED.unnormalize(model_input), batch)
    plain = NORMALISED.model_copy(update={"do_normalize": False})
    assert plain.normalize(batch) is batch and plain.unnormalize(batch) is batch
    np.testing.assert_array_equal(plain.apply(unit), unit)


def test_a_2048_px_16_bit_png_decodes_and_resizes_within_a_few_image_copies() -> None:
    big = (np.add.outer(np.arange(2048), np.arange(2048)) * 16 % 65536).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, format="PNG")
    data = buffer.getvalue()
    del big, buffer
    preprocessing = ImagePreprocessing(height=224, width=224, num_channels=3, do_normalize=True,
                                       image_mean=(0.5,), image_std=(0.5,))
    one_image = 2048 * 2048 * 4  # float32
    gc.collect()
    tracemalloc.start()
    try:
        unit = decode_image(data, "big.png", target=(224, 224))
        assert unit.shape == (1, 2048, 2048) and unit.dtype == np.float32
        out = preprocessing.apply(unit)
        del unit
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == (3, 224, 224) and out.dtype == np.float32 and out.base is None
    assert peak < 2 * one_image, f"peak {peak / 2**20:.0f} MiB"  # the uint16 decode and one float32 copy
    assert current < one_image / 8, f"{current / 2**20:.1f} MiB still held"

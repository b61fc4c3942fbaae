"""The generated dataset written as PNG, JPEG, DICOM or npz: manifests whose images decode to the generated pixels."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from forgetmi_trainer import storage, synthetic
from forgetmi_trainer.cli import main
from forgetmi_trainer.images import decode_image, resolve_image_uri
from forgetmi_trainer.manifest import read_manifest
from forgetmi_trainer.synthetic import SynthParams, generate, write_dataset

SAMPLES = generate(SynthParams(patients=5, seed=1))
TOLERANCE = {"npz": 0.0, "png": 1e-7, "dicom": 1e-6, "jpeg": 0.06}  # JPEG (quality 95) on per-pixel noise


def _decoded(manifest_uri: str) -> tuple[list[str], np.ndarray]:
    manifest = read_manifest(manifest_uri)
    uris = [resolve_image_uri(u, manifest_uri) for u in manifest.image_uris]
    return manifest.image_uris, np.stack([decode_image(storage.read_bytes(u.partition("#")[0]), u) for u in uris])


@pytest.mark.parametrize(("cross_modal", "expected"), [
    (0.0, "8573e4fb6227bce885af8e1bda559d138ef9284407cfa6ed91ad76958430ba50"),  # the stream before cross-modal data
    (0.5, "5a199ae84d79db19ade8b84de904742dd7991d91873d89174aa039536a675dfb"),  # the default since
])
def test_generate_keeps_its_random_stream(cross_modal: float, expected: str) -> None:
    """The demo's numbers rest on this stream: any change to ``generate`` shows here."""
    digest = hashlib.sha256()
    for s in generate(SynthParams(patients=8, cross_modal=cross_modal)):
        digest.update(s.image.tobytes())
        digest.update(f"{s.sample_id}|{s.report_text}|{s.label}|{s.split}".encode())
    assert digest.hexdigest() == expected


@pytest.mark.parametrize(("fmt", "bit_depth"), [("npz", 8), ("png", 8), ("png", 16), ("jpeg", 8), ("dicom", 8)])
def test_each_format_writes_a_manifest_whose_images_decode(fmt: str, bit_depth: int, tmp_path: Path) -> None:
    out = (tmp_path / "ds").as_uri()
    uris, images = _decoded(write_dataset(SAMPLES, out, fmt, bit_depth=bit_depth))  # type: ignore[arg-type]
    expected = np.stack([s.image for s in SAMPLES]).astype(np.float32) / 255.0
    assert images.shape == expected.shape and images.dtype == np.float32
    error = np.abs(images - expected)
    assert error.max() <= TOLERANCE[fmt]
    if fmt == "jpeg":
        assert error.mean() < 0.01
    if fmt == "npz":
        assert all(u.startswith("images/shard-000.npz#") for u in uris)  # relative: the bytes do not depend on out
    else:
        ext = {"png": "png", "jpeg": "jpg", "dicom": "dcm"}[fmt]
        assert uris == [f"images/{s.subject_id}/{s.sample_id}.{ext}" for s in SAMPLES]
        assert (tmp_path / "ds" / uris[0]).is_file()


def test_dicom_files_are_valid_16_bit_secondary_capture_and_deterministic() -> None:
    pixels = SAMPLES[0].image[0]
    data = synthetic.encode_dicom(pixels, SAMPLES[0].sample_id, SAMPLES[0].subject_id)
    assert data == synthetic.encode_dicom(pixels, SAMPLES[0].sample_id, SAMPLES[0].subject_id)
    ds = pydicom.dcmread(io.BytesIO(data))
    assert data[128:132] == b"DICM" and ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert (ds.BitsAllocated, ds.BitsStored, ds.PhotometricInterpretation) == (16, 16, "MONOCHROME2")
    assert float(ds.RescaleIntercept) == synthetic.DICOM_INTERCEPT and float(ds.RescaleSlope) == 1.0
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    np.testing.assert_array_equal(ds.pixel_array, pixels.astype(np.uint16) * 257)


def test_write_dataset_refuses_unknown_formats_and_bit_depths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tiff"):
        write_dataset(SAMPLES, tmp_path.as_uri(), "tiff")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Bit depth 16"):
        write_dataset(SAMPLES, tmp_path.as_uri(), "jpeg", bit_depth=16)


def test_synth_cli_writes_each_format_at_the_asked_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = (tmp_path / "dicom").as_uri()
    assert main(["synth", "--out", out, "--patients", "4", "--format", "dicom", "--image-size", "40"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["format"], printed["image_size"], printed["patients"]) == ("dicom", 40, 4)
    _, images = _decoded(printed["manifest_uri"])
    assert images.shape[1:] == (1, 40, 40)
    assert main(["synth", "--out", (tmp_path / "png").as_uri(), "--patients", "4", "--format", "png",
                 "--bit-depth", "16"]) == 0
    png = json.loads(capsys.readouterr().out)
    first = read_manifest(png["manifest_uri"]).image_uris[0]
    assert first.endswith(".png") and decode_image(tmp_path / "png" / first, first).shape == (1, 16, 16)
    assert main(["synth", "--out", (tmp_path / "x").as_uri(), "--patients", "4", "--format", "jpeg",
                 "--bit-depth", "16"]) == 2


def test_synth_cli_default_is_the_npz_demo_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "--out", (tmp_path / "ds").as_uri(), "--patients", "5", "--seed", "1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["format"] == "npz" and printed["image_size"] == 16
    _, images = _decoded(printed["manifest_uri"])
    np.testing.assert_array_equal(images, np.stack([s.image for s in SAMPLES]).astype(np.float32) / 255.0)


def test_relative_png_dataset_on_s3(s3_bucket: str) -> None:
    manifest_uri = write_dataset(SAMPLES[:4], f"{s3_bucket}/ds", "png")
    uris, images = _decoded(manifest_uri)
    assert uris[0].startswith("images/") and images.shape == (4, 1, 16, 16)
    np.testing.assert_allclose(images[:, 0], np.stack([s.image[0] for s in SAMPLES[:4]]) / 255.0, atol=1e-7)


def test_synth_cli_writes_val_rows_and_names_a_bad_cross_modal_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["synth", "--out", (tmp_path / "ds").as_uri(), "--patients", "20"]
    assert main([*args, "--val-fraction", "0.2", "--cross-modal", "0.3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["cross_modal"], printed["val_fraction"]) == (0.3, 0.2)
    manifest = read_manifest(printed["manifest_uri"])
    assert len({manifest.subject_ids[i] for i, s in enumerate(manifest.splits) if s == "val"}) == 4
    assert main([*args, "--cross-modal", "1.5"]) == 2
    assert "--cross-modal: Input should be less than or equal to 1" in capsys.readouterr().err

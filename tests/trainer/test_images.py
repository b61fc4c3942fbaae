"""Image decoding (PNG, JPEG, DICOM, .npy, .npz#key) to [0, 1] pixels, and image_uri resolution."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage, generate_uid

from forgetmi_trainer import storage
from forgetmi_trainer.images import ImageError, decode_image, resolve_image_uri, split_fragment, window

RNG = np.random.default_rng(0)
GREY8 = RNG.integers(0, 256, (12, 10), dtype=np.uint8)
GREY16 = RNG.integers(0, 65536, (12, 10), dtype=np.uint16)
RGB8 = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)


def _pil_bytes(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _smooth(h: int, w: int, channels: int = 1) -> np.ndarray:
    """A smooth uint8 image (JPEG keeps it within a few levels)."""
    y, x = np.mgrid[0:h, 0:w]
    base = 128 + 90 * np.sin(x / w * 3.0) * np.cos(y / h * 2.0)
    image = np.stack([base + 10 * c for c in range(channels)], axis=-1).clip(0, 255).astype(np.uint8)
    return image[..., 0] if channels == 1 else image


# --- PNG -------------------------------------------------------------------------------------------------------------


def test_png_8_bit_grey_decodes_to_unit_values() -> None:
    out = decode_image(_pil_bytes(Image.fromarray(GREY8)), "images/a.png")
    assert out.shape == (1, 12, 10) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], GREY8 / 255.0, atol=1e-7)


def test_png_16_bit_grey_keeps_every_level() -> None:
    data = _pil_bytes(Image.fromarray(GREY16))
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    out = decode_image(data, "a.png")
    np.testing.assert_allclose(out[0], GREY16 / 65535.0, atol=1e-7)
    assert np.unique(np.round(out * 65535)).size == np.unique(GREY16).size  # no 8-bit quantisation


def test_png_rgb_rgba_and_grey_alpha_drop_alpha() -> None:
    rgb = decode_image(_pil_bytes(Image.fromarray(RGB8)), "a.png")
    np.testing.assert_allclose(rgb, RGB8.transpose(2, 0, 1) / 255.0, atol=1e-7)
    rgba = np.concatenate([RGB8, np.full((12, 10, 1), 7, np.uint8)], axis=-1)
    np.testing.assert_allclose(decode_image(_pil_bytes(Image.fromarray(rgba)), "a.png"), rgb)
    la = Image.fromarray(GREY8).convert("LA")
    np.testing.assert_allclose(decode_image(_pil_bytes(la), "a.png")[0], GREY8 / 255.0, atol=1e-7)


def test_png_palette_becomes_rgb() -> None:
    palette_image = Image.fromarray(RGB8).quantize(colors=16)
    expected = np.asarray(palette_image.convert("RGB")).transpose(2, 0, 1) / 255.0
    out = decode_image(_pil_bytes(palette_image), "a.png")
    assert out.shape == (3, 12, 10)
    np.testing.assert_allclose(out, expected, atol=1e-7)


# --- JPEG ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_round_trips_within_a_few_levels(channels: int) -> None:
    image = _smooth(64, 48, channels)
    out = decode_image(_pil_bytes(Image.fromarray(image), "JPEG", quality=95), "x.jpg")
    expected = (image if channels == 1 else image.transpose(2, 0, 1)) / 255.0
    assert out.shape == (channels, 64, 48)
    assert np.abs(out.reshape(expected.shape) - expected).max() < 6 / 255


def test_jpeg_with_a_target_decodes_reduced_but_not_below_the_target() -> None:
    data = _pil_bytes(Image.fromarray(_smooth(2000, 3000)), "JPEG", quality=90)
    assert decode_image(data, "big.jpg").shape == (1, 2000, 3000)
    reduced = decode_image(data, "big.jpg", target=(224, 224))
    assert reduced.shape == (1, 250, 375)  # 1/8 scale: the largest reduction that keeps >= 224 on both sides
    assert decode_image(data, "big.jpg", target=(1200, 1200)).shape == (1, 2000, 3000)


# --- DICOM -----------------------------------------------------------------------------------------------------------


def _dicom(pixels: np.ndarray, *, photometric: str = "MONOCHROME2", bits: int = 16, preamble: bool = True,
           **elements: object) -> bytes:
    """A Secondary Capture file of ``pixels`` ((H, W), (frames, H, W) or (H, W, 3)) with extra elements."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality = "P00042", "OT"
    ds.set_pixel_data(pixels, photometric, bits)
    for name, value in elements.items():
        setattr(ds, name, value)
    buffer = io.BytesIO()
    if preamble:
        ds.save_as(buffer, enforce_file_format=True)
    else:
        pydicom.dcmwrite(buffer, ds, enforce_file_format=False)
    return buffer.getvalue()


STORED = np.array([[0, 100, 200, 300], [400, 500, 600, 4095]], dtype=np.uint16)
VALUES = STORED.astype(np.float64)


def test_dicom_without_a_window_scales_modality_values_min_to_max() -> None:
    out = decode_image(_dicom(STORED, bits=12), "a.dcm")
    np.testing.assert_allclose(out[0], STORED / 4095.0, atol=1e-6)


def test_dicom_rescale_slope_and_intercept_come_before_the_window() -> None:
    data = _dicom(STORED, bits=12, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=0, WindowWidth=801)
    values = STORED * 2.0 - 1000.0  # -1000 ... 7190
    expected = np.clip((values - (0 - 0.5)) / 800 + 0.5, 0, 1)  # LINEAR, PS3.3 C.11.2.1.2.1
    out = decode_image(data, "a.dcm")[0]
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out[0, 2] == 0.0 and 0 < out[0, 3] < 0.01 and out[1, 3] == 1.0  # stored 200 -> -600, 300 -> -400
    assert abs(out[1, 1] - 0.5) < 0.001  # stored 500 -> 0, the window's centre


def test_dicom_window_uses_the_first_of_several_values() -> None:
    data = _dicom(STORED, bits=12, WindowCenter=[300, 2000], WindowWidth=[401, 100])
    np.testing.assert_allclose(decode_image(data, "a.dcm")[0], window(STORED, 300, 401), atol=1e-7)
    np.testing.assert_allclose(window(np.array([99.5, 100.0, 300.0, 500.5]), 300, 401), [0, 0.00125, 0.50125, 1],
                               atol=1e-6)


def test_dicom_linear_exact_and_sigmoid_windows() -> None:
    exact = _dicom(STORED, bits=12, WindowCenter=300, WindowWidth=400, VOILUTFunction="LINEAR_EXACT")
    np.testing.assert_allclose(decode_image(exact, "a.dcm")[0], np.clip((VALUES - 300) / 400 + 0.5, 0, 1), atol=1e-6)
    sigmoid = _dicom(STORED, bits=12, WindowCenter=300, WindowWidth=400, VOILUTFunction="SIGMOID")
    expected = 1 / (1 + np.exp(-4 * (VALUES - 300) / 400))
    np.testing.assert_allclose(decode_image(sigmoid, "a.dcm")[0], expected, atol=1e-6)


def test_dicom_voi_lut_sequence_is_preferred_to_the_window() -> None:
    item = Dataset()
    item.LUTDescriptor = [4, 100, 8]  # 4 entries, first mapped value 100, 8-bit output
    item.add_new(0x00283006, "US", [0, 51, 153, 255])  # LUT Data
    data = _dicom(STORED, bits=12, VOILUTSequence=Sequence([item]), WindowCenter=0, WindowWidth=2)
    out = decode_image(data, "a.dcm")[0]
    # 0 -> below first map -> entry 0; 100 -> entry 0; 200 -> entry 3 (clipped); others clipped to the last entry
    np.testing.assert_allclose(out, [[0, 0, 1, 1], [1, 1, 1, 1]], atol=1e-7)
    three = decode_image(_dicom(np.array([[100, 101, 102, 103]], np.uint16), bits=12,
                                VOILUTSequence=Sequence([item])), "a.dcm")[0]
    np.testing.assert_allclose(three, [[0, 0.2, 0.6, 1.0]], atol=1e-7)


def test_dicom_monochrome1_is_inverted() -> None:
    mono2 = decode_image(_dicom(STORED, bits=12, WindowCenter=2048, WindowWidth=4096), "a.dcm")
    mono1 = decode_image(_dicom(STORED, bits=12, photometric="MONOCHROME1", WindowCenter=2048, WindowWidth=4096),
                         "a.dcm")
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-7)
    assert mono1[0, 0, 0] == 1.0  # stored 0 is white in MONOCHROME1


def test_dicom_multi_frame_gives_the_first_frame() -> None:
    frames = np.stack([STORED, STORED[::-1], STORED * 0 + 7]).astype(np.uint16)
    data = _dicom(frames, bits=12, WindowCenter=2048, WindowWidth=4096)
    assert pydicom.dcmread(io.BytesIO(data)).NumberOfFrames == 3
    out = decode_image(data, "a.dcm")
    assert out.shape == (1, 2, 4)
    np.testing.assert_allclose(out[0], window(STORED, 2048, 4096), atol=1e-7)


def test_dicom_signed_rgb_compressed_and_preamble_free_files() -> None:
    signed = np.array([[-1000, 0], [500, 1000]], dtype=np.int16)
    out = decode_image(_dicom(signed, WindowCenter=0, WindowWidth=2001, RescaleSlope=1, RescaleIntercept=0), "a")
    np.testing.assert_allclose(out[0], np.clip((signed + 0.5) / 2000 + 0.5, 0, 1), atol=1e-6)
    rgb = decode_image(_dicom(RGB8, photometric="RGB", bits=8), "a.dcm")
    np.testing.assert_allclose(rgb, RGB8.transpose(2, 0, 1) / 255.0, atol=1e-7)
    ds = pydicom.dcmread(io.BytesIO(_dicom(STORED, bits=12)))
    ds.compress(RLELossless)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    np.testing.assert_allclose(decode_image(buffer.getvalue(), "a.dcm")[0], STORED / 4095.0, atol=1e-6)
    bare = _dicom(STORED, bits=12, preamble=False)
    assert bare[128:132] != b"DICM"
    np.testing.assert_allclose(decode_image(bare, "s3://b/x/a.dcm")[0], STORED / 4095.0, atol=1e-6)


def test_dicom_without_pixels_or_with_a_bad_window_is_an_image_error() -> None:
    ds = pydicom.dcmread(io.BytesIO(_dicom(STORED, bits=12)))
    del ds.PixelData
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with pytest.raises(ImageError, match="no Pixel Data"):
        decode_image(buffer.getvalue(), "a.dcm")
    with pytest.raises(ImageError, match="Window Width"):
        decode_image(_dicom(STORED, bits=12, WindowCenter=10, WindowWidth=0.5), "a.dcm")


# --- NumPy -----------------------------------------------------------------------------------------------------------


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_npy_dtypes_and_shapes() -> None:
    np.testing.assert_array_equal(decode_image(_npy(GREY8), "a.npy")[0], GREY8.astype(np.float32) / 255.0)
    np.testing.assert_allclose(decode_image(_npy(GREY16), "a.npy")[0], GREY16 / 65535.0, atol=1e-7)
    floats = np.array([[[-0.5, 0.25], [0.75, 2.0]]] * 3, dtype=np.float64)
    np.testing.assert_allclose(decode_image(_npy(floats), "a.npy"), np.clip(floats, 0, 1))
    with pytest.raises(ImageError, match="shape"):
        decode_image(_npy(np.zeros((4, 5, 5), np.uint8)), "a.npy")
    with pytest.raises(ImageError, match="NaN"):
        decode_image(_npy(np.full((2, 2), np.nan, np.float32)), "a.npy")


def test_npz_member_from_bytes_and_from_a_lazily_read_file(tmp_path: Path) -> None:
    path = tmp_path / "shard-000.npz"
    np.savez_compressed(path, **{"S1": GREY8, "S2": GREY8[::-1].copy()})
    from_file = decode_image(path, "file:///x/shard-000.npz#S2")
    np.testing.assert_array_equal(from_file[0], GREY8[::-1].astype(np.float32) / 255.0)
    np.testing.assert_array_equal(decode_image(path.read_bytes(), "shard.npz#S1")[0], GREY8 / np.float32(255))
    with pytest.raises(ImageError, match="no array 'S3'"):
        decode_image(path, "shard.npz#S3")
    with pytest.raises(ImageError, match="#key"):
        decode_image(path, "shard.npz")


# --- failures --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["png", "jpeg", "dicom", "npy", "npz"])
def test_truncated_files_are_image_errors_without_the_uri(name: str, tmp_path: Path) -> None:
    whole = {
        "png": _pil_bytes(Image.fromarray(GREY16)),
        "jpeg": _pil_bytes(Image.fromarray(_smooth(64, 64)), "JPEG"),
        "dicom": _dicom(STORED, bits=12),
        "npy": _npy(GREY8),
        "npz": (np.savez(tmp_path / "a.npz", S1=GREY8), (tmp_path / "a.npz").read_bytes())[1],
    }[name]
    uri = f"s3://bucket/images/P00042/P00042-S00.{name}" + ("#S1" if name == "npz" else "")
    path = tmp_path / "P00042-S00.bin"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    for source in (whole[: len(whole) * 2 // 3], path):
        with pytest.raises(ImageError) as caught:
            decode_image(source, uri)
        assert "P00042" not in str(caught.value) and str(tmp_path) not in str(caught.value)


def test_corrupt_unknown_and_empty_inputs_are_image_errors() -> None:
    noise = RNG.integers(0, 256, 500, dtype=np.uint8).tobytes()
    with pytest.raises(ImageError, match="png file could not be decoded"):
        decode_image(noise, "a.png")
    with pytest.raises(ImageError, match=r"not recognised.*'\.tif'"):
        decode_image(noise, "a.tif")
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"", "a.png")
    with pytest.raises(ImageError, match="fragment"):
        decode_image(_pil_bytes(Image.fromarray(GREY8)), "a.png#S1")
    with pytest.raises(ImageError, match="png file could not be decoded"):
        decode_image(b"\x89PNG\r\n\x1a\n" + noise, "no-extension")


def test_a_missing_local_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        decode_image(tmp_path / "gone.png", "a.png")


# --- image_uri resolution --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image_uri", "manifest_uri", "expected"),
    [
        ("images/P1/a.png", "s3://bucket/data/v1/manifest.csv", "s3://bucket/data/v1/images/P1/a.png"),
        ("../shared/b.dcm", "s3://bucket/data/v1/manifest.csv", "s3://bucket/data/shared/b.dcm"),
        ("./x/../y//c.jpg", "s3://bucket/m.csv", "s3://bucket/y/c.jpg"),
        ("shard-000.npz#S1", "file:///tmp/ds/manifest.parquet", "file:///tmp/ds/shard-000.npz#S1"),
        ("../../data/shard.npz#P1-S00", "file:///tmp/ds/sub/manifest.csv", "file:///tmp/data/shard.npz#P1-S00"),
        ("s3://other/abs.png", "file:///tmp/m.csv", "s3://other/abs.png"),
        ("file:///abs/shard.npz#k", "s3://bucket/m.csv", "file:///abs/shard.npz#k"),
    ],
)
def test_resolve_image_uri(image_uri: str, manifest_uri: str, expected: str) -> None:
    assert resolve_image_uri(image_uri, manifest_uri) == expected


@pytest.mark.parametrize(
    ("image_uri", "manifest_uri", "reason"),
    [
        ("../../x.png", "s3://bucket/data/m.csv", "climbs above"),
        ("../x.png", "file:///m.csv", "climbs above"),
        ("http://host/x.png", "s3://bucket/m.csv", "scheme"),
        ("file://relative/x.png", "s3://bucket/m.csv", "scheme"),
        ("/abs/x.png", "s3://bucket/m.csv", "absolute path"),
        ("images/", "s3://bucket/m.csv", "directory"),
        ("a.png", "relative/m.csv", "manifest"),
    ],
)
def test_resolve_image_uri_refusals(image_uri: str, manifest_uri: str, reason: str) -> None:
    with pytest.raises(ImageError, match=reason):
        resolve_image_uri(image_uri, manifest_uri)


def test_split_fragment() -> None:
    assert split_fragment("s3://b/shard.npz#S1") == ("s3://b/shard.npz", "S1")
    assert split_fragment("s3://b/a.png") == ("s3://b/a.png", "")


def test_relative_png_on_s3_resolves_reads_and_decodes(s3_bucket: str) -> None:
    storage.write_bytes(f"{s3_bucket}/ds/images/P1/S1.png", _pil_bytes(Image.fromarray(GREY16)))
    uri = resolve_image_uri("images/P1/S1.png", f"{s3_bucket}/ds/manifest.csv")
    np.testing.assert_allclose(decode_image(storage.read_bytes(uri), uri)[0], GREY16 / 65535.0, atol=1e-7)

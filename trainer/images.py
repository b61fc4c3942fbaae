"""Image files to pixels: an ``image_uri`` resolved against its manifest, its bytes decoded to float32 (C, H, W).

The format is told by magic bytes (PNG, JPEG, DICOM's ``DICM`` at byte 128, ``.npy``, ``.npz`` zip), else by the
extension (``.dcm`` without a preamble). Values are in [0, 1], C is 1 (grey) or 3 (RGB):
PNG 8/16-bit grey (/255, /65535), RGB, alpha dropped, palette to RGB (Pillow reads 16-bit RGB as 8-bit); JPEG /255,
decoded in draft mode at the smallest power-of-two reduction at least ``target``; DICOM (pydicom) first frame,
modality LUT (Rescale Slope/Intercept or Modality LUT Sequence), then the VOI LUT Sequence (/ (2^bits - 1)), else the
first Window Center/Width (LINEAR, LINEAR_EXACT, SIGMOID of PS3.3 C.11.2.1) onto [0, 1], else the frame's min..max,
MONOCHROME1 inverted, colour by its bit depth; ``.npy``/``.npz#key`` uint8 /255, uint16 /65535, else clipped.
Every failure is an :class:`ImageError` naming neither the URI nor the patient (callers name the sample); a missing
``Path`` source raises ``FileNotFoundError`` unchanged (an evicted cache file; the caller retries). No torch here.
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from forgetmi_trainer.archives import open_npz
from forgetmi_trainer.image_uris import ImageError, resolve_image_uri, split_fragment

__all__ = ["ImageError", "decode_image", "resolve_image_uri", "split_fragment", "window"]

Target = tuple[int, int]  # (height, width)
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"\x93NUMPY", "npy"), (b"PK", "npz"))
_EXTENSIONS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".dcm": "dicom", ".dicom": "dicom", ".npy": "npy",
               ".npz": "npz"}
_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")


def decode_image(source: bytes | Path, uri: str, *, target: Target | None = None) -> np.ndarray:
    """The image in ``source`` (its bytes, or a local file read lazily) as float32 (C, H, W) in [0, 1], C in {1, 3}.

    ``uri`` gives the extension (when the magic bytes are unknown) and the ``#key`` of an ``.npz`` member;
    ``target`` (height, width) lets a JPEG decode at a reduced size at least that large."""
    base, key = split_fragment(uri)
    if isinstance(source, Path) and key and base.lower().endswith(".npz"):
        return _finish(_npz_member(source, key, base), "npz")
    with _opened(source) as fh:
        fmt = _sniff(fh.read(132), base)
        fh.seek(0)
        if key and fmt != "npz":
            raise ImageError(f"a '#key' fragment names an array of an .npz archive, but this is a {fmt} file")
        try:
            array = _DECODERS[fmt](fh, key, target)
        except (ImageError, FileNotFoundError):
            raise
        except _FAILURES as err:
            detail = _scrub(err, str(source) if isinstance(source, Path) else "", base)
            raise ImageError(f"the {fmt} file could not be decoded ({type(err).__name__}: {detail})") from err
    return _finish(array, fmt)


def _opened(source: bytes | Path) -> IO[bytes]:
    if isinstance(source, Path):
        return open(source, "rb")  # FileNotFoundError propagates: the caller may retry an evicted cache file
    return io.BytesIO(source)


def _sniff(head: bytes, base: str) -> str:
    if not head:
        raise ImageError("the file is empty")
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    if head[128:132] == b"DICM":
        return "dicom"
    suffix = Path(base.rpartition("/")[2]).suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    raise ImageError(f"its format is not recognised (extension {suffix or 'none'!r}; expected PNG, JPEG, DICOM, "
                     ".npy or .npz#key)")


def _scrub(err: BaseException, *names: str) -> str:
    """The error's first line, without the file's path or URI (they may hold a patient ID)."""
    text = (str(err).splitlines() or ["no detail"])[0]
    for name in sorted({n for full in names if full for n in (full, full.rpartition("/")[2])}, key=len, reverse=True):
        text = text.replace(name, "…")
    return text[:200]


def _finish(array: np.ndarray, fmt: str) -> np.ndarray:
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] not in (1, 3) or 0 in array.shape:
        raise ImageError(f"the {fmt} image has shape {tuple(array.shape)}; expected (H, W) or (C, H, W) with C 1 or 3")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ImageError(f"the {fmt} image holds NaN or infinite values")
    return array


# --- Pillow: PNG and JPEG ------------------------------------------------------------------------------------------


def _decode_pil(fh: IO[bytes], _key: str, target: Target | None) -> np.ndarray:
    with Image.open(fh) as img:
        if target is not None and img.format == "JPEG":
            img.draft(img.mode if img.mode in ("L", "RGB") else None, (target[1], target[0]))
        img.load()
        return _pil_array(img)


def _pil_array(img: Image.Image) -> np.ndarray:
    """A loaded Pillow image as float32 (H, W) or (3, H, W) in [0, 1]."""
    mode = img.mode
    if mode.startswith("I;16"):
        return _scaled(np.asarray(img), 65535.0)
    if mode == "I":  # 32-bit integers: how older Pillow read 16-bit grey PNGs
        return np.clip(_scaled(np.asarray(img), 65535.0), 0.0, 1.0)
    if mode == "F":
        return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
    if mode in ("1", "L", "LA", "La"):
        return _scaled(np.asarray(img.convert("L")), 255.0)
    if mode in ("P", "PA"):
        img = img.convert("RGBA")
    return _scaled(np.asarray(img.convert("RGB")), 255.0).transpose(2, 0, 1)


def _scaled(array: np.ndarray, full_scale: float) -> np.ndarray:
    """``array / full_scale`` as float32, dividing in place (one float copy of a large image, not two)."""
    out = array.astype(np.float32)
    out /= np.float32(full_scale)
    return out


# --- DICOM -----------------------------------------------------------------------------------------------------------


def _decode_dicom(fh: IO[bytes], _key: str, _target: Target | None) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_color_lut, pixel_array

    has_preamble = fh.read(132)[128:132] == b"DICM"
    fh.seek(0)
    ds = pydicom.dcmread(fh, force=not has_preamble)
    if "PixelData" not in ds:
        raise ImageError("the DICOM file has no Pixel Data")
    frame = pixel_array(ds, index=0)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(frame, ds)
        return (rgb.astype(np.float32) / float(np.iinfo(rgb.dtype).max)).transpose(2, 0, 1)
    if photometric not in _MONOCHROME:
        scale = float(2 ** int(ds.get("BitsStored", 8)) - 1)
        return (np.clip(frame.astype(np.float32) / scale, 0.0, 1.0)).transpose(2, 0, 1)
    unit = _voi_unit(_modality(frame, ds), ds)
    return 1.0 - unit if photometric == "MONOCHROME1" else unit


def _modality(frame: np.ndarray, ds: Any) -> np.ndarray:
    """Stored values → modality values: the Modality LUT Sequence (pydicom), else ``stored * slope + intercept``
    (in float32, exact for 16-bit data)."""
    if ds.get("ModalityLUTSequence"):
        from pydicom.pixels import apply_modality_lut

        return apply_modality_lut(frame, ds)
    values = frame.astype(np.float32)
    if ds.get("RescaleSlope") is not None and ds.get("RescaleIntercept") is not None:
        values *= np.float32(float(ds.RescaleSlope))
        values += np.float32(float(ds.RescaleIntercept))
    return values


def _voi_unit(values: np.ndarray, ds: Any) -> np.ndarray:
    """Modality values → [0, 1]: VOI LUT Sequence, else the first window, else the frame's min..max."""
    lut = ds.get("VOILUTSequence")
    if lut and lut[0].get("LUTDescriptor") is not None and lut[0].get("LUTData") is not None:
        from pydicom.pixels import apply_voi

        depth = int(lut[0].LUTDescriptor[2])
        integers = np.rint(values).astype(np.int64) if values.dtype.kind == "f" else values
        return apply_voi(integers, ds).astype(np.float32) / float(2**depth - 1)
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        function = str(ds.get("VOILUTFunction", "LINEAR")).strip().upper() or "LINEAR"
        return window(values, _first(ds.WindowCenter), _first(ds.WindowWidth), function)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    unit = values.astype(np.float32)
    unit -= np.float32(low)
    unit /= np.float32(high - low)
    return unit


def _first(value: Any) -> float:
    """The first value of a multi-valued DICOM element (Window Center/Width may hold several views)."""
    return float(value) if isinstance(value, int | float) else float(value[0])


def window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM windowing (PS3.3 C.11.2.1.2 and C.11.2.1.3) onto [0, 1] instead of the output bit range."""
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        raise ImageError(f"the DICOM VOI LUT Function {function!r} is not supported")
    if function == "LINEAR":
        if width < 1:
            raise ImageError(f"the DICOM Window Width {width} is below 1, which LINEAR windowing needs")
        center, width = center - 0.5, width - 1.0
        if width == 0:
            return (values > center).astype(np.float32)
    elif width <= 0:
        raise ImageError(f"the DICOM Window Width {width} is not positive")
    y = values.astype(np.float32)  # a copy, changed in place below
    y -= np.float32(center)
    y /= np.float32(width)
    if function == "SIGMOID":
        with np.errstate(over="ignore"):
            y = (1.0 / (1.0 + np.exp(np.float32(-4.0) * y))).astype(np.float32)
    else:
        y += np.float32(0.5)
    return np.clip(y, 0.0, 1.0, out=y)


# --- NumPy -----------------------------------------------------------------------------------------------------------


def _decode_npy(fh: IO[bytes], _key: str, _target: Target | None) -> np.ndarray:
    return _array_unit(np.load(fh, allow_pickle=False))


def _decode_npz(fh: IO[bytes], key: str, _target: Target | None) -> np.ndarray:
    if not key:
        raise ImageError("an .npz image_uri needs a '#key' naming the array (…/shard.npz#<key>)")
    with np.load(fh, allow_pickle=False) as archive:
        if key not in archive.files:
            raise ImageError(f"the .npz archive has no array {key!r}")
        return _array_unit(archive[key])


def _npz_member(path: Path, key: str, base: str) -> np.ndarray:
    """Member ``key`` of the archive at ``path`` in [0, 1]; the archive stays open for the next member."""
    try:
        with open_npz(path) as archive:  # FileNotFoundError propagates (an evicted cache file is fetched again)
            if key not in archive.files:
                raise ImageError(f"the .npz archive has no array {key!r}")
            return _array_unit(archive[key])
    except (ImageError, FileNotFoundError):
        raise
    except _FAILURES as err:
        raise ImageError(f"the npz file could not be decoded ({type(err).__name__}: {_scrub(err, str(path), base)})"
                         ) from err


def _array_unit(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return _scaled(array, 255.0)
    if array.dtype == np.uint16:
        return _scaled(array, 65535.0)
    if array.dtype.kind not in "biuf":
        raise ImageError(f"the array has dtype {array.dtype}; expected a numeric dtype")
    return np.clip(array.astype(np.float32), 0.0, 1.0)


_DECODERS: dict[str, Callable[[IO[bytes], str, Target | None], np.ndarray]] = {
    "png": _decode_pil, "jpeg": _decode_pil, "dicom": _decode_dicom, "npy": _decode_npy, "npz": _decode_npz,
}
_FAILURES: tuple[type[BaseException], ...] = (
    OSError, ValueError, EOFError, KeyError, IndexError, TypeError, AttributeError, NotImplementedError, RuntimeError,
    SyntaxError, MemoryError, struct.error, zipfile.BadZipFile, UnidentifiedImageError, Image.DecompressionBombError)

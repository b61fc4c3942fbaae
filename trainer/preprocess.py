"""How a decoded image becomes a model's input: size, channels, normalisation; saved as ``preprocessor_config.json``.

The file follows the Hugging Face image-processor convention (the keys of ``ViTImageProcessor``: ``do_resize``,
``size {height, width}``, ``resample``, ``do_rescale``/``rescale_factor`` 1/255, ``do_normalize``, ``image_mean``,
``image_std``; plus ``num_channels``), so ``AutoImageProcessor.from_pretrained(model_dir)`` gives a processor doing the
same to an 8-bit image, and a pretrained model's own ``preprocessor_config.json`` (ViT, ConvNeXt, BiT, ...) reads
back here. Aspect-preserving resizes (``shortest_edge``) and centre crops are replaced by one resize (a warp) to the
model's input size, the crop size where there is one.

:meth:`ImagePreprocessing.apply` turns the [0, 1] (C, H, W) array of :func:`forgetmi_trainer.images.decode_image`
into the model input: channels (1 -> 3 repeated, 3 -> 1 ITU-R 601 luma), a per-channel resize through Pillow's
32-bit float mode (exact for 16-bit sources, no 8-bit round trip), clipping to [0, 1], then ``(x - mean) / std``
when ``do_normalize``. :meth:`~ImagePreprocessing.normalize` / :meth:`~ImagePreprocessing.unnormalize` do the last
step on torch batches (the Forget-MI noise is added to the [0, 1] image between them).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from forgetmi_trainer.errors import CheckpointError

if TYPE_CHECKING:
    import torch

PREPROCESSOR_FILE = "preprocessor_config.json"
RESCALE_FACTOR = 1 / 255
HF_PROCESSOR_TYPE = "ViTImageProcessor"
LUMA = (0.299, 0.587, 0.114)
# Keys of HF image-processor configs that do not change the result here (the size they imply is read from ``size``).
_IGNORED_KEYS = frozenset({
    "image_processor_type", "processor_class", "feature_extractor_type", "default_to_square", "crop_pct",
    "return_tensors", "data_format", "input_data_format", "device", "disable_grouping", "auto_map", "do_pad",
    "pad_size", "do_center_crop", "crop_size", "do_convert_rgb",
})
_READ_KEYS = frozenset({"do_resize", "size", "resample", "do_rescale", "rescale_factor", "do_normalize", "image_mean",
                        "image_std", "num_channels"})


class ImagePreprocessing(BaseModel):
    """The model input's size, channels and normalisation (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    height: int = Field(ge=1, le=16384)
    width: int = Field(ge=1, le=16384)
    num_channels: Literal[1, 3]
    resample: int = Field(default=2, ge=0, le=5)  # PIL codes as in HF: 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic
    do_normalize: bool = False
    image_mean: tuple[float, ...] = (0.0,)
    image_std: tuple[float, ...] = (1.0,)

    @model_validator(mode="before")
    @classmethod
    def _per_channel(cls, data: Any) -> Any:
        """A single mean/std applies to every channel: stored once per channel."""
        if isinstance(data, dict) and data.get("num_channels") in (1, 3):
            data = dict(data)
            for key, default in (("image_mean", 0.0), ("image_std", 1.0)):
                value = data.get(key, (default,))
                value = (value,) if isinstance(value, int | float) else tuple(value)
                data[key] = value * data["num_channels"] if len(value) == 1 else value
        return data

    @field_validator("image_std")
    @classmethod
    def _positive(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not math.isfinite(s) or s <= 0 for s in value):
            raise ValueError("every image_std must be a positive number")
        return value

    @model_validator(mode="after")
    def _lengths(self) -> ImagePreprocessing:
        for key in ("image_mean", "image_std"):
            if len(getattr(self, key)) != self.num_channels:
                raise ValueError(f"{key} needs 1 or num_channels ({self.num_channels}) values")
        return self

    # --- the HF file -----------------------------------------------------------------------------------------------

    def to_hf_dict(self) -> dict[str, Any]:
        """The ``preprocessor_config.json`` contents (ViTImageProcessor keys plus ``num_channels``)."""
        return {
            "image_processor_type": HF_PROCESSOR_TYPE,
            "do_resize": True,
            "size": {"height": self.height, "width": self.width},
            "resample": self.resample,
            "do_rescale": True,
            "rescale_factor": RESCALE_FACTOR,
            "do_normalize": self.do_normalize,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "num_channels": self.num_channels,
        }

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> ImagePreprocessing:
        """Read an HF image-processor config; ``ValueError`` naming the key for anything this cannot reproduce."""
        unknown = sorted(k for k, v in d.items() if k not in _READ_KEYS | _IGNORED_KEYS and v is not None
                         and not k.startswith("_"))
        if unknown:
            raise ValueError(f"the image-processor key(s) {', '.join(unknown)} are not supported")
        if d.get("do_resize", True) is not True:
            raise ValueError("do_resize must be true: the model takes one input size")
        if d.get("do_rescale", True) is not True or not math.isclose(float(d.get("rescale_factor", RESCALE_FACTOR)),
                                                                      RESCALE_FACTOR, rel_tol=1e-6):
            raise ValueError("do_rescale must be true with rescale_factor 1/255 (pixels scaled to [0, 1])")
        height, width = _input_size(d)
        mean = d.get("image_mean", (0.0,))
        fields = {
            "height": height, "width": width, "num_channels": d.get("num_channels", _channels(d, mean)),
            "resample": int(d.get("resample", 2)), "do_normalize": bool(d.get("do_normalize", False)),
            "image_mean": mean, "image_std": d.get("image_std", (1.0,)),
        }
        try:
            return cls.model_validate(fields)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in err.errors())
            raise ValueError(problems) from None

    @classmethod
    def from_hf_processor(cls, processor: Any, *, num_channels: int | None = None) -> ImagePreprocessing:
        """From an HF image processor (ViT, ConvNeXt, BiT, what ``AutoImageProcessor`` returns, or its dict);
        ``num_channels`` overrides the channel count the processor implies."""
        d = dict(processor.to_dict() if hasattr(processor, "to_dict") else processor)
        if num_channels is not None:
            d["num_channels"] = num_channels
        return cls.from_hf_dict(d)

    def save(self, directory: Path) -> None:
        Path(directory, PREPROCESSOR_FILE).write_text(json.dumps(self.to_hf_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, directory: Path) -> ImagePreprocessing:
        """Read ``directory/preprocessor_config.json``; :class:`CheckpointError` naming the file when it is missing,
        unreadable or invalid."""
        path = Path(directory, PREPROCESSOR_FILE)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as err:
            raise CheckpointError(f"Model directory {directory} has no {PREPROCESSOR_FILE}.") from err
        except OSError as err:
            raise CheckpointError(f"{path} could not be read ({err.strerror}).") from err
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{path} is not valid JSON ({err}).") from err
        if not isinstance(data, dict):
            raise CheckpointError(f"{path} must hold a JSON object.")
        try:
            return cls.from_hf_dict(data)
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"{path} is invalid: {err}.") from err

    # --- pixels ----------------------------------------------------------------------------------------------------

    def fit(self, unit: np.ndarray) -> np.ndarray:
        """float32 (C, H, W) in [0, 1], C 1 or 3, any size -> (num_channels, height, width) in [0, 1]."""
        if unit.ndim != 3 or unit.shape[0] not in (1, 3):
            raise ValueError(f"an image of shape {tuple(unit.shape)} is not (C, H, W) with C 1 or 3")
        unit = np.asarray(unit, dtype=np.float32)
        if unit.shape[0] == 3 and self.num_channels == 1:
            unit = np.tensordot(np.asarray(LUMA, dtype=np.float32), unit, axes=1)[None]
        if unit.shape[1:] != (self.height, self.width):
            unit = np.stack([self._resize(channel) for channel in unit])
        if unit.shape[0] == 1 and self.num_channels == 3:
            unit = np.repeat(unit, 3, axis=0)
        return np.ascontiguousarray(unit, dtype=np.float32)

    def _resize(self, channel: np.ndarray) -> np.ndarray:
        image = Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32))  # mode "F"
        resized = image.resize((self.width, self.height), resample=Image.Resampling(self.resample))
        return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)

    def apply(self, unit: np.ndarray) -> np.ndarray:
        """:meth:`fit`, then ``(x - mean) / std`` per channel when ``do_normalize``: the model's input (C, H, W)."""
        fitted = self.fit(unit)
        if not self.do_normalize:
            return fitted
        mean = np.asarray(self.image_mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.image_std, dtype=np.float32)[:, None, None]
        return ((fitted - mean) / std).astype(np.float32)

    def normalize(self, unit: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> model input (unchanged without ``do_normalize``)."""
        if not self.do_normalize:
            return unit
        mean, std = self._stats(unit)
        return (unit - mean) / std

    def unnormalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Model input (B, C, H, W) -> the [0, 1] image it came from."""
        if not self.do_normalize:
            return pixels
        mean, std = self._stats(pixels)
        return pixels * std + mean

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        def column(values: tuple[float, ...]) -> torch.Tensor:
            return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)

        return column(self.image_mean), column(self.image_std)


def _input_size(d: dict[str, Any]) -> tuple[int, int]:
    """The model's input (height, width): the crop size when centre-cropping, else ``size``."""
    crop = d.get("crop_size") if d.get("do_center_crop") else None
    size = crop if crop is not None else d.get("size")
    if isinstance(size, int):
        return size, size
    if isinstance(size, dict):
        if size.get("height") and size.get("width"):
            return int(size["height"]), int(size["width"])
        if size.get("shortest_edge") and not any(size.get(k) for k in ("longest_edge", "max_height", "max_width")):
            return int(size["shortest_edge"]), int(size["shortest_edge"])
    raise ValueError(f"size {size!r} does not give one input size (use {{'height': H, 'width': W}})")


def _channels(d: dict[str, Any], mean: Any) -> int:
    if d.get("do_convert_rgb"):
        return 3
    if isinstance(mean, list | tuple) and len(mean) in (1, 3):
        return len(mean)
    return 3

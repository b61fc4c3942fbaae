"""Reading one manifest row's image as the model's input, in a DataLoader worker.

:class:`ImageReader` resolves the row's ``image_uri`` against the manifest, fetches the file (from
``file://`` in place, from S3 through the run's :class:`~forgetmi_trainer.storage.cache.ObjectCache`),
decodes it (:func:`~forgetmi_trainer.images.decode_image`) and preprocesses it
(:class:`~forgetmi_trainer.preprocess.ImagePreprocessing`). :class:`RowImages` is the Dataset the
run's DataLoader reads: a batch's objects are fetched ``threads`` at a time, and a row that cannot be
read comes back as its error message (raised in the main process as an :class:`InputError` naming
the ``sample_id``, never the patient, whose ID may be part of the image's path). :class:`PixelCache`
keeps what was read in the main process, bounded.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from forgetmi_trainer.contract import DataConfig
from forgetmi_trainer.errors import InputError, StorageError
from forgetmi_trainer.images import ImageError, decode_image, resolve_image_uri, split_fragment
from forgetmi_trainer.manifest import Manifest
from forgetmi_trainer.preprocess import ImagePreprocessing
from forgetmi_trainer.storage.cache import ObjectCache

MIB = 1024 * 1024


@dataclass(frozen=True)
class ImageReader:
    """Reads one manifest row's image as the model's input (C, H, W) float32."""

    manifest: Manifest
    manifest_uri: str
    preprocessing: ImagePreprocessing
    cache: ObjectCache

    def pixels(self, row: int) -> np.ndarray:
        """The model's input for ``row``: its image decoded and preprocessed."""
        unit = self.unit(row, target=(self.preprocessing.height, self.preprocessing.width))
        try:
            return self.preprocessing.apply(unit)
        except (ImageError, ValueError) as err:
            raise InputError(f"The image of {sample_name(self.manifest, row)} could not be preprocessed: "
                             f"{err}.") from err

    def object_uri(self, row: int) -> str | None:
        """The storage object holding ``row``'s image (an .npz shard for a member), None when its
        ``image_uri`` cannot be resolved (reading it reports why)."""
        try:
            return split_fragment(resolve_image_uri(self.manifest.image_uris[row], self.manifest_uri))[0]
        except ImageError:
            return None

    def unit(self, row: int, target: tuple[int, int] | None = None) -> np.ndarray:
        """``row``'s image as decoded, (C, H, W) float32 in [0, 1] (``target``: a size hint for JPEG)."""
        sample = sample_name(self.manifest, row)
        try:
            uri = resolve_image_uri(self.manifest.image_uris[row], self.manifest_uri)
            base, _ = split_fragment(uri)
            try:
                return decode_image(self.cache.fetch(base), uri, target=target)
            except FileNotFoundError:  # evicted by another worker between fetch and open: once more
                return decode_image(self.cache.fetch(base), uri, target=target)
        except (ImageError, ValueError) as err:
            raise InputError(f"The image of {sample} could not be decoded: {err}.") from err
        except StorageError as err:
            raise InputError(f"The image of {sample} could not be read from storage ({_kind(err)}).") from err
        except (InputError, OSError) as err:
            raise InputError(f"The image of {sample} could not be read: {_reason(err)}.") from err


def sample_name(manifest: Manifest, row: int) -> str:
    """How a message names ``row``'s sample: ``sample <sample_id>``, or its manifest row when the sample
    ID holds the patient's ID (``P00012-S01``), which a message (a Job's termination message, an Event,
    the request's status) must never carry."""
    sample, subject = manifest.sample_ids[row], manifest.subject_ids[row]
    if subject and subject.lower() in sample.lower():
        return f"the sample in manifest row {row + 1}"
    return f"sample {sample}"


def native_shape(manifest: Manifest, manifest_uri: str, row: int, cache_dir: Path, settings: DataConfig
                 ) -> tuple[int, int, int]:
    """(C, H, W) of ``row``'s image as stored (what a model built for this dataset takes by default)."""
    cache = ObjectCache(cache_dir, settings.cache_mib * MIB, max_object_bytes=settings.max_image_mib * MIB)
    identity = ImagePreprocessing(height=1, width=1, num_channels=1)
    c, h, w = ImageReader(manifest, manifest_uri, identity, cache).unit(row).shape
    return int(c), int(h), int(w)


def _kind(err: StorageError) -> str:
    name = type(err).__name__
    return {"ObjectNotFound": "it does not exist", "StorageUnavailable": "storage unavailable",
            "OutOfReach": "outside what this run may read"}.get(name, name)


def _reason(err: Exception) -> str:
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)


class RowImages(Dataset):
    """Manifest row -> (row, pixels) or (row, error message); a batch is read ``threads`` at a time."""

    def __init__(self, reader: ImageReader, threads: int) -> None:
        self.reader, self.threads = reader, threads
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0

    def __len__(self) -> int:
        return len(self.reader.manifest)

    def __getitem__(self, row: int) -> tuple[int, np.ndarray | str]:
        try:
            return row, self.reader.pixels(row)
        except InputError as err:
            return row, str(err)

    def __getitems__(self, rows: list[int]) -> list[tuple[int, np.ndarray | str]]:
        """The batch's objects not yet on local disk are fetched ``threads`` at a time (network
        latency overlaps); decoding then runs in this thread (threads would only contend for the
        GIL: local files decode about twice as fast this way)."""
        cache = self.reader.cache
        remote = [u for u in dict.fromkeys(self.reader.object_uri(r) for r in rows) if u and not cache.holds(u)]
        if self.threads > 1 and len(remote) > 1:
            if self._pool is None or self._pid != os.getpid():  # a pool per process (workers are forked)
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="forgetmi-read")
                self._pid = os.getpid()
            list(self._pool.map(self._warm, remote))
        return [self[r] for r in rows]

    def _warm(self, uri: str) -> None:
        try:
            self.reader.cache.fetch(uri)
        except Exception:  # reading the row reports the error, naming its sample
            return


def collate(items: list[tuple[int, np.ndarray | str]]) -> tuple[torch.Tensor, torch.Tensor] | str:
    """(rows (B,), pixels (B, C, H, W)), or the first error message of the batch."""
    for _, value in items:
        if isinstance(value, str):
            return value
    rows = torch.tensor([row for row, _ in items], dtype=torch.long)
    return rows, torch.from_numpy(np.stack([value for _, value in items]))  # type: ignore[misc]


class PixelCache:
    """Tensors of recently read rows kept in memory, at most ``max_bytes`` (least recently used go
    first; 0 keeps nothing): later epochs over a small set read (and tokenise) nothing again. The
    stream keeps the model inputs in one and the reports' tokens in another (an eighth as large)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.bytes = max_bytes, 0
        self._rows: OrderedDict[int, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, row: int) -> torch.Tensor | None:
        pixels = self._rows.get(row)
        if pixels is not None:
            self._rows.move_to_end(row)
        return pixels

    def put(self, read: dict[int, torch.Tensor]) -> None:
        if self.max_bytes <= 0:
            return
        for row, pixels in read.items():
            if row in self._rows:
                continue
            size = pixels.numel() * pixels.element_size()
            if size > self.max_bytes:
                return
            self._rows[row] = pixels.clone()  # its own storage, not a view of the batch
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, dropped = self._rows.popitem(last=False)
                self.bytes -= dropped.numel() * dropped.element_size()

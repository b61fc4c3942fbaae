"""Streaming a manifest's samples to the device, so memory does not grow with the dataset.

One :class:`SampleStream` per run owns a ``torch.utils.data.DataLoader`` over every row of the
manifest; a :class:`Samples` is one set's view of it (the retain set, the test set, the audit's
retain sample), and :meth:`Samples.take` loads a few rows into memory (the forget set, an
epoch's retain draws). Images are read only when a batch asks for them: ``file://`` images from
their files, S3 images through a bounded on-disk cache
(:class:`~forgetmi_trainer.storage.cache.ObjectCache`), ``fetch_threads`` at a time in each
worker; each is decoded (:func:`~forgetmi_trainer.images.decode_image`) and preprocessed
(:class:`~forgetmi_trainer.preprocess.ImagePreprocessing`) in the worker; the main process keeps
the most recently read model inputs in a bounded memory cache (:class:`PixelCache`,
``memory_cache_mib``), so the epochs over a small set read each image once. Reports are tokenised
in the main process, one batch at a time. On CUDA the batches are pinned and copied
``non_blocking``. At most ``workers × prefetch_batches`` batches are in flight, so the process
holds the current batches, the forget set, the memory cache and the disk cache's files (on disk),
whatever the size of the manifest. A sample that cannot be read is an :class:`InputError` naming its ``sample_id``
(never its patient, whose ID may be part of the image's path).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from forgetmi_trainer.contract import DataConfig
from forgetmi_trainer.data import Encoded, bounded_batch, tokenize
from forgetmi_trainer.errors import InputError
from forgetmi_trainer.manifest import Manifest
from forgetmi_trainer.preprocess import ImagePreprocessing
from forgetmi_trainer.reading import MIB, ImageReader, PixelCache, RowImages, collate, native_shape
from forgetmi_trainer.storage.cache import ObjectCache

__all__ = ["PixelCache", "SampleStream", "Samples", "chunks", "default_workers", "eval_batch_size", "load_batches",
           "native_shape"]
Positions = torch.Tensor | np.ndarray | Sequence[int]


def eval_batch_size(settings: DataConfig, preprocessing: ImagePreprocessing) -> int:
    """``settings.eval_batch_size``, else as many images as hold ``data.BATCH_PIXELS`` values (1 to 256)."""
    if settings.eval_batch_size is not None:
        return settings.eval_batch_size
    return bounded_batch(preprocessing.num_channels * preprocessing.height * preprocessing.width, 256)


def default_workers() -> int:
    """Half the CPUs this process may use, at most 4 (0 on a single CPU)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(4, cpus // 2)


class _Plan:
    """The DataLoader's batch sampler: the batches (lists of manifest rows) of the current pass."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(list(self.batches))

    def __len__(self) -> int:
        return len(self.batches)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # a worker decodes; the main process computes


class SampleStream:
    """The run's DataLoader over every row of ``manifest`` (use as a context manager; see the module doc)."""

    def __init__(self, manifest: Manifest, manifest_uri: str, preprocessing: ImagePreprocessing, tokenizer: object,
                 *, max_length: int, device: torch.device, settings: DataConfig, cache_dir: Path) -> None:
        self.manifest, self.tokenizer, self.max_length, self.device = manifest, tokenizer, max_length, device
        self.settings = settings
        cache = ObjectCache(cache_dir, settings.cache_mib * MIB, max_object_bytes=settings.max_image_mib * MIB)
        self.reader = ImageReader(manifest, manifest_uri, preprocessing, cache)
        self.workers = default_workers() if settings.workers is None else settings.workers
        self._plan = _Plan()
        self._busy = self._stop_prefetch = False
        self._prefetch: threading.Thread | None = None
        self._labels = torch.as_tensor(manifest.labels, dtype=torch.long)
        self._memory = PixelCache(settings.memory_cache_mib * MIB)
        self._tokens = PixelCache(settings.memory_cache_mib * MIB // 8)
        extra = {"prefetch_factor": settings.prefetch_batches, "persistent_workers": True,
                 "worker_init_fn": _worker_init, "multiprocessing_context": "fork"} if self.workers else {}
        self.loader = DataLoader(RowImages(self.reader, settings.fetch_threads), batch_sampler=self._plan,
                                 num_workers=self.workers, collate_fn=collate, pin_memory=device.type == "cuda",
                                 **extra)

    def __enter__(self) -> SampleStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def prefetch(self, rows: np.ndarray) -> None:
        """Start copying the S3 images of manifest ``rows`` into the disk cache in the background
        (``fetch_threads`` at a time, at most half the cache), so a later pass over them reads local
        files: the audit's images arrive while the method computes. Errors are left for that pass."""
        self._prefetch = threading.Thread(target=self._fetch_all, args=(np.asarray(rows).tolist(),),
                                          name="forgetmi-prefetch", daemon=True)
        self._prefetch.start()

    def _fetch_all(self, rows: list[int]) -> None:
        cache, budget = self.reader.cache, self.reader.cache.max_bytes // 2
        uris = dict.fromkeys(self.reader.object_uri(r) for r in rows)
        todo = [u for u in uris if u is not None and not u.startswith("file:")]

        def fetch(uri: str) -> int:
            if self._stop_prefetch:
                return 0
            try:
                return cache.fetch(uri).stat().st_size
            except Exception:  # the pass that needs the image reports its error
                return 0

        with ThreadPoolExecutor(self.settings.fetch_threads, thread_name_prefix="forgetmi-prefetch") as pool:
            fetched = 0
            for size in pool.map(fetch, todo):
                fetched += size
                if fetched > budget:
                    self._stop_prefetch = True
                    break

    def close(self) -> None:
        """Stop the workers (a persistent DataLoader keeps them until its iterator goes) and the prefetch."""
        self._stop_prefetch = True
        if self._prefetch is not None:
            self._prefetch.join()
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self.loader._iterator = None

    def view(self, rows: np.ndarray) -> Samples:
        """The samples at manifest ``rows`` (N,), in that order."""
        return Samples(self, np.asarray(rows, dtype=np.int64))

    def load(self, batches: list[list[int]], *, text: bool) -> Iterator[tuple[list[int], Encoded]]:
        """Each batch of manifest rows as an :class:`Encoded` on the device, in order; rows held in
        the memory cache are not read again."""
        if self._busy:
            raise RuntimeError("SampleStream.load() while another pass is running")
        if not batches:
            return
        held = [[self._memory.get(r) for r in batch] for batch in batches]
        misses = [[r for r, h in zip(batch, hb, strict=True) if h is None] for batch, hb in zip(batches, held,
                                                                                            strict=True)]
        self._busy, self._plan.batches = True, [m for m in misses if m]
        try:
            fresh = iter(self.loader) if self._plan.batches else iter(())
            for i, batch in enumerate(batches):
                read: dict[int, torch.Tensor] = {}
                pixels = None
                if misses[i]:
                    out = next(fresh)
                    if isinstance(out, str):
                        raise InputError(out)
                    rows, pixels = out
                    read = dict(zip(rows.tolist(), pixels, strict=True))
                    self._memory.put(read)
                if len(misses[i]) < len(batch):  # some rows came from memory: assemble the batch in order
                    pixels = torch.stack([h if h is not None else read[r] for r, h in zip(batch, held[i], strict=True)])
                held[i] = []  # release what this batch held
                yield batch, self._encode(torch.tensor(batch, dtype=torch.long), pixels, text)  # type: ignore[arg-type]
            next(fresh, None)
        finally:
            self._busy = False

    def _encode(self, rows: torch.Tensor, pixels: torch.Tensor, text: bool) -> Encoded:
        blocking = {"non_blocking": True} if self.device.type == "cuda" else {}
        if text:
            ids, mask = self._tokens_of(rows.tolist())
        else:
            ids = mask = torch.zeros((len(rows), 0), dtype=torch.long)
        return Encoded(pixels.to(self.device, **blocking), ids.to(self.device, **blocking),
                       mask.to(self.device, **blocking), self._labels[rows].to(self.device, **blocking))

    def _tokens_of(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and mask (B, L) of the rows' reports; each row is tokenised alone (padded to
        ``max_length``), so a row's tokens do not depend on its batch and are kept in memory."""
        held = [self._tokens.get(r) for r in rows]
        missing = [r for r, h in zip(rows, held, strict=True) if h is None]
        fresh: dict[int, torch.Tensor] = {}
        if missing:
            ids, mask = tokenize(self.tokenizer, [self.manifest.texts[r] for r in missing], self.max_length)
            fresh = dict(zip(missing, torch.stack([ids, mask], dim=1), strict=True))
            self._tokens.put(fresh)
        both = torch.stack([h if h is not None else fresh[r] for r, h in zip(rows, held, strict=True)])
        return both[:, 0], both[:, 1]


class Samples:
    """One set of a :class:`SampleStream`: manifest ``rows`` (N,) read on demand; positions index ``rows``."""

    def __init__(self, stream: SampleStream, rows: np.ndarray) -> None:
        self.stream, self.rows = stream, rows

    def __len__(self) -> int:
        return int(self.rows.size)

    @property
    def labels(self) -> np.ndarray:
        """Class labels (N,), known without reading any image."""
        return self.stream.manifest.labels[self.rows]

    def subset(self, positions: Positions) -> Samples:
        return Samples(self.stream, self.rows[_positions(positions)])

    def batches(self, plan: Sequence[Positions], *, text: bool = True) -> Iterator[tuple[torch.Tensor, Encoded]]:
        """For each batch of positions in ``plan``: (positions (B,), the samples on the device)."""
        pos = [_positions(p) for p in plan]
        for p, (_, encoded) in zip(pos, self.stream.load([self.rows[p].tolist() for p in pos], text=text),
                                   strict=True):
            yield torch.from_numpy(p), encoded

    def in_order(self, batch_size: int, *, text: bool = True) -> Iterator[Encoded]:
        """Every sample once, in order, ``batch_size`` at a time."""
        plan = [np.arange(s, min(s + batch_size, len(self))) for s in range(0, len(self), batch_size)]
        for _, encoded in self.batches(plan, text=text):
            yield encoded

    def take(self, positions: Positions, *, text: bool = True, batch_size: int = 256) -> Encoded:
        """The samples at ``positions`` (repeats allowed) in memory on the device, in that order;
        each distinct sample is read once."""
        pos = _positions(positions)
        unique, inverse = np.unique(pos, return_inverse=True)
        parts = [e for _, e in self.batches([unique[s:s + batch_size] for s in range(0, unique.size, batch_size)],
                                            text=text)]
        if not parts:
            raise InputError("No samples to load.")
        loaded = Encoded(*(torch.cat([getattr(p, f) for p in parts]) for f in Encoded.FIELDS))
        return loaded.take(torch.from_numpy(inverse.reshape(-1)).to(self.stream.device))

    def all(self, *, text: bool = True) -> Encoded:
        return self.take(np.arange(len(self)), text=text)


def _positions(positions: Positions) -> np.ndarray:
    if isinstance(positions, torch.Tensor):
        positions = positions.detach().cpu().numpy()
    return np.asarray(positions, dtype=np.int64).reshape(-1)


def subset(data: Encoded | Samples, positions: np.ndarray) -> Encoded | Samples:
    """The samples of ``data`` at ``positions``: a streamed set stays streamed, an in-memory one is indexed."""
    return data.subset(positions) if isinstance(data, Samples) else data.take(torch.from_numpy(positions))


def chunks(data: Encoded | Samples, batch_size: int, *, text: bool = True) -> Iterator[Encoded]:
    """``data`` in order, ``batch_size`` samples at a time, whether in memory or streamed."""
    if isinstance(data, Samples):
        yield from data.in_order(batch_size, text=text)
        return
    for start in range(0, len(data), batch_size):
        yield data.take(torch.arange(start, min(start + batch_size, len(data)), device=data.labels.device))


def load_batches(data: Encoded | Samples, plan: Sequence[torch.Tensor]) -> Iterator[tuple[torch.Tensor, Encoded]]:
    """(positions, samples) for each batch of positions in ``plan``, whether in memory or streamed."""
    if isinstance(data, Samples):
        yield from data.batches(plan)
        return
    for idx in plan:
        yield idx, data.take(idx.to(data.labels.device))

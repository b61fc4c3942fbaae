"""The training subjects of a manifest, read once per version of the manifest, in bounded memory.

Accepting a request checks every forget subject against the training rows of
``spec.data.manifestUri``. A manifest of a real archive is large (MIMIC-CXR: 377,110 samples; a
multi-site archive millions), and every request of a model names the same one, so reading and
parsing it for each request would cost CPU per request and a copy of the manifest in memory per
concurrent acceptance (bench/RESULTS.md, "A MIMIC-sized manifest").

Reading: :func:`training_subjects` downloads the object to a temporary file in one stream (never
into memory whole; parallel ranged GETs would cost ≈ 10 MB of buffers each) and reads only its
``subject_id`` and ``split`` columns in batches with pyarrow, CSV or Parquet
(:mod:`~forgetmi_operator.registry.manifest_formats`). The IDs of the rows whose ``split`` is ``train``
(whitespace trimmed, as the trainer reads them) are made distinct batch by batch and kept as one
sorted Arrow string array, a :class:`SubjectSet`: the IDs' bytes and a 4-byte offset each, where a
Python set of the same strings costs ≈ 80–100 bytes per ID. A 2.5M-row manifest of 65,000
patients raises the operator's peak RSS by ≈ 20–40 MB (``bench/operator_memory.py``), where reading
it whole took ≈ 500–900 MB. A manifest the operator cannot read (another extension, a corrupt
Parquet file, a CSV without the two columns, text that is not UTF-8) fails the request with
:class:`~forgetmi_operator.api.errors.InputUnreadable` naming ``spec.data.manifestUri``: the check is
never skipped, and a failure is never cached. Messages never quote a row (it could hold patient IDs).
So that no request can fill the operator's scratch disk or memory (and crash-loop it for every
tenant), a manifest larger than :class:`Limits` ``max_bytes`` (the setting ``manifest_max_bytes``) is
InputUnreadable before it is downloaded, and one whose distinct training IDs exceed
``max_id_bytes`` once they are read.

Caching: :class:`TrainingSubjects` keeps the subject sets of the last :data:`CACHED_MANIFESTS`
manifests, keyed by the object's change token (S3 ETag, or size/mtime/inode of a file), which a HEAD
request reads without the body. A manifest that changes is read again; one whose token changes while
it is being read is used but not kept. Concurrent acceptances of the same manifest wait for one read
instead of each reading it, and different manifests are read one at a time (:data:`READS_AT_ONCE`),
so the peak memory and temporary disk space are those of the largest one. Every acceptance first
reads the object's change token with its own request's :class:`~forgetmi_trainer.storage.Objects`
handle, so a cached result serves only a caller who can read the manifest itself.
"""

from __future__ import annotations

import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from forgetmi_operator.api.settings import MANIFEST_MAX_BYTES
from forgetmi_operator.registry.manifest_formats import BATCH_ROWS, READERS, unreadable
from forgetmi_trainer.errors import ObjectNotFound
from forgetmi_trainer.storage import Objects

CACHED_MANIFESTS = 8
READS_AT_ONCE = 1  # manifests parsed at the same time (each takes its own memory and temporary file)
COMPACT_IDS = 64 * 1024  # per-batch IDs gathered (at least) before they are deduplicated together
MAX_ID_BYTES = 64 * 1024**2
"""The most bytes of distinct training subject IDs (and their offsets) a manifest may hold: 2M
patients with 28-character IDs; MIMIC-CXR's 65,379 take 0.8 MB."""


@dataclass(frozen=True)
class Limits:
    """What the operator reads of one manifest, so one request can neither fill its scratch disk nor
    its memory: the object's size (the download's temporary file) and its subject set's bytes."""

    max_bytes: int = MANIFEST_MAX_BYTES
    max_id_bytes: int = MAX_ID_BYTES


DEFAULT_LIMITS = Limits()


class ManifestMissing(Exception):
    """The manifest object does not exist."""


class SubjectSet:
    """An immutable set of subject IDs held as one sorted, deduplicated Arrow string array."""

    __slots__ = ("_ids",)

    def __init__(self, ids: pa.Array) -> None:
        self._ids = ids

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self._ids), BATCH_ROWS):
            yield from self._ids.slice(start, BATCH_ROWS).to_pylist()

    def __contains__(self, subject: object) -> bool:
        return isinstance(subject, str) and self.unknown([subject]) == 0

    @property
    def nbytes(self) -> int:
        """The bytes the set holds (the IDs, their offsets)."""
        return int(self._ids.nbytes)

    def unknown(self, subjects: Sequence[str]) -> int:
        """How many entries of ``subjects`` are not in the set, each entry counted as the list holds
        it. Only ``subjects`` is hashed; the set is scanned once."""
        if not subjects:
            return 0
        wanted = pa.array(subjects, pa.string())
        present = self._ids.filter(pc.is_in(self._ids, value_set=wanted))  # at most len(subjects) IDs
        found = pc.sum(pc.is_in(wanted, value_set=present)).as_py() or 0
        return len(subjects) - int(found)


def _distinct(ids: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``ids`` sorted, each once. A sort, not a hash table: Arrow's ``unique`` peaks at ≈ 90 bytes per
    string, this at the strings' bytes twice plus an 8-byte index each."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    ordered = ids.take(pc.array_sort_indices(ids))
    if len(ordered) < 2:
        return ordered
    first = pc.not_equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))
    return pa.concat_arrays([ordered.slice(0, 1), ordered.slice(1).filter(first)])


class _Collector:
    """The training IDs of a manifest's batches: made distinct per batch, then together whenever the
    gathered batches hold more IDs than the kept set, so memory stays within a few times the final
    set's size however the rows are ordered."""

    def __init__(self, uri: str, max_id_bytes: int) -> None:
        self._uri, self._max_id_bytes = uri, max_id_bytes
        self._kept: pa.Array = pa.array([], pa.string())
        self._batches: list[pa.Array] = []
        self._gathered = 0

    def add(self, subject: pa.Array, split: pa.Array) -> None:
        train = pc.equal(pc.utf8_trim_whitespace(split), "train")
        ids = _distinct(pc.drop_null(pc.utf8_trim_whitespace(subject.filter(train))))
        self._batches.append(ids)
        self._gathered += len(ids)
        if self._gathered > max(COMPACT_IDS, len(self._kept)):
            self._compact()

    def _compact(self) -> None:
        if self._batches:
            batches, self._batches, self._gathered = self._batches, [], 0
            self._kept = _distinct(pa.chunked_array([self._kept, *batches], pa.string()))
            if self._kept.nbytes > self._max_id_bytes:
                raise unreadable(self._uri, f"holds more than {self._max_id_bytes} bytes of distinct training "
                                            "subject IDs, more than the operator reads")

    def subjects(self) -> SubjectSet:
        self._compact()
        return SubjectSet(self._kept)


def _check_size(uri: str, size: int, limits: Limits) -> None:
    if size > limits.max_bytes:
        raise unreadable(uri, f"is {size} bytes, more than the {limits.max_bytes} the operator reads "
                              "(manifestMaxBytes)")


def training_subjects(objects: Objects, manifest_uri: str, limits: Limits = DEFAULT_LIMITS) -> SubjectSet:
    """The subject IDs of the manifest's training rows (see the module docstring); raises
    InputUnreadable when the operator cannot read the manifest (or it exceeds ``limits``),
    ObjectNotFound when it is gone."""
    name = manifest_uri.rsplit("/", 1)[-1]
    suffix = next((s for s in READERS if name.endswith(s)), None)
    if suffix is None:
        raise unreadable(manifest_uri, "ends neither in .csv nor in .parquet, the formats the operator reads")
    _check_size(manifest_uri, objects.size(manifest_uri), limits)
    with tempfile.TemporaryDirectory(prefix="forgetmi-manifest-") as tmp:
        path = Path(tmp) / f"manifest{suffix}"
        objects.download_file(manifest_uri, path, max_concurrency=1)  # parallel parts cost ≈ 10 MB each
        _check_size(manifest_uri, path.stat().st_size, limits)  # replaced by a larger one since
        collected = _Collector(manifest_uri, limits.max_id_bytes)
        try:
            for subject, split in READERS[suffix](path, manifest_uri):
                collected.add(subject, split)
        except pa.ArrowException as err:  # values Arrow cannot compute on (e.g. Parquet text that is not UTF-8)
            raise unreadable(manifest_uri, f"is not a readable {suffix[1:].upper()} manifest") from err
        return collected.subjects()


@dataclass(frozen=True)
class _Entry:
    token: str
    subjects: SubjectSet


class TrainingSubjects:
    """``get(objects, uri)`` → the manifest's training subject IDs, parsed by ``parse`` once per
    version of the object; a manifest ``parse`` cannot read raises every time (nothing is cached).
    At most ``reads_at_once`` manifests are parsed at a time, so requests naming many different
    large manifests at once queue instead of adding up their memory and temporary files."""

    def __init__(self, parse: Callable[[Objects, str, Limits], SubjectSet], size: int = CACHED_MANIFESTS,
                 reads_at_once: int = READS_AT_ONCE) -> None:
        self._parse = parse
        self._size = size
        self._slots = threading.BoundedSemaphore(reads_at_once)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._guard = threading.Lock()
        self._reading: dict[str, threading.Lock] = {}
        self.reads = 0  # manifests parsed since start (for tests and the curious)

    def _cached(self, uri: str, token: str) -> _Entry | None:
        with self._guard:
            entry = self._entries.get(uri)
            if entry is not None and entry.token == token:
                self._entries.move_to_end(uri)
                return entry
            return None

    def get(self, objects: Objects, uri: str, limits: Limits = DEFAULT_LIMITS) -> SubjectSet:
        token = objects.change_token(uri)
        if token is None:
            raise ManifestMissing(uri)
        entry = self._cached(uri, token)
        if entry is not None:
            return entry.subjects
        with self._guard:
            lock = self._reading.setdefault(uri, threading.Lock())
        with lock:  # one read per manifest at a time; the others find its result
            entry = self._cached(uri, token)
            if entry is not None:
                return entry.subjects
            try:
                with self._slots:
                    subjects = self._parse(objects, uri, limits)
            except ObjectNotFound as err:  # deleted since its token was read
                raise ManifestMissing(uri) from err
            unchanged = objects.change_token(uri) == token
            with self._guard:
                self.reads += 1
                if unchanged:
                    self._entries[uri] = _Entry(token, subjects)
                    self._entries.move_to_end(uri)
                    while len(self._entries) > self._size:
                        self._entries.popitem(last=False)
            return subjects


TRAINING_SUBJECTS = TrainingSubjects(training_subjects)
"""The operator's one cache of manifests' training subjects."""

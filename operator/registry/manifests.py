"""The training subjects of a manifest, read once per version of the manifest.

Accepting a request checks every forget subject against the training rows of
``spec.data.manifestUri``. A manifest of a real archive is large (MIMIC-CXR: 377,110 samples,
tens of MB of CSV), and every request of a model names the same one, so reading and parsing it
for each request would cost about half a second of CPU per request and a copy of the manifest in
memory per concurrent acceptance (bench/RESULTS.md, "A MIMIC-sized manifest"). This cache keeps
the parsed subject set of the last :data:`CACHED_MANIFESTS` manifests, keyed by the object's
change token (S3 ETag, or size/mtime/inode of a file), which a HEAD request reads without the
body. A manifest that changes is read again; one whose token changes while it is being read is
used but not kept. Concurrent acceptances of the same manifest wait for one read instead of each
reading it.
"""

from __future__ import annotations

import csv
import io
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from forgetmi_operator.api.errors import InputNotFound
from forgetmi_trainer import storage
from forgetmi_trainer.errors import ObjectNotFound

CACHED_MANIFESTS = 8


class ManifestMissing(Exception):
    """The manifest object does not exist."""


@dataclass(frozen=True)
class _Entry:
    token: str
    subjects: frozenset[str] | None


class TrainingSubjects:
    """``get(uri)`` → the manifest's training subject IDs (None: a format the operator cannot read),
    parsed by ``parse`` once per version of the object."""

    def __init__(self, parse: Callable[[str], set[str] | None], size: int = CACHED_MANIFESTS) -> None:
        self._parse = parse
        self._size = size
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

    def get(self, uri: str) -> frozenset[str] | None:
        token = storage.change_token(uri)
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
                parsed = self._parse(uri)
            except ObjectNotFound as err:  # deleted since its token was read
                raise ManifestMissing(uri) from err
            subjects = None if parsed is None else frozenset(parsed)
            unchanged = storage.change_token(uri) == token
            with self._guard:
                self.reads += 1
                if unchanged:
                    self._entries[uri] = _Entry(token, subjects)
                    self._entries.move_to_end(uri)
                    while len(self._entries) > self._size:
                        self._entries.popitem(last=False)
            return subjects


def training_subjects(manifest_uri: str) -> set[str] | None:
    """The subject IDs of the manifest's training rows; None when the operator cannot read the format
    (Parquet without pyarrow in the operator image: the trainer then checks, and exits 3)."""
    data = storage.read_bytes(manifest_uri)
    try:
        if manifest_uri.endswith(".parquet"):
            try:
                import pyarrow.parquet as pq
            except ImportError:
                return None
            table = pq.read_table(io.BytesIO(data), columns=["subject_id", "split"]).to_pydict()
            rows = zip(table["subject_id"], table["split"], strict=True)
        else:
            reader = csv.DictReader(io.StringIO(data.decode("utf-8")))
            missing = {"subject_id", "split"} - set(reader.fieldnames or [])
            if missing:
                raise InputNotFound(f"spec.data.manifestUri {manifest_uri} lacks the column(s) "
                                    f"{', '.join(sorted(missing))}.")
            rows = ((row["subject_id"], row["split"]) for row in reader)
        return {str(subject).strip() for subject, split in rows if str(split).strip() == "train"}
    except (UnicodeDecodeError, csv.Error, ValueError, KeyError, OSError) as err:
        raise InputNotFound(f"spec.data.manifestUri {manifest_uri} is not a readable manifest ({err}).") from err


TRAINING_SUBJECTS = TrainingSubjects(training_subjects)
"""The operator's one cache of manifests' training subjects."""

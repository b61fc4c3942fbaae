"""A bounded on-disk cache of storage objects, shared by the processes of one run (torch-free).

:meth:`ObjectCache.fetch` returns a local file holding the object: a ``file://`` object is its own
file (nothing is copied); any other object is read once (at most ``max_object_bytes``) and kept
under the cache directory as ``<sha256 of the URI>``, written to a temporary name and renamed
into place, so a reader never sees half a file and several processes (a DataLoader's workers)
can fill the same directory. A hit refreshes the file's modification time. When the files this
process added since its last look exceed an eighth of ``max_bytes``, it lists the directory and
deletes the least recently used files until the whole is under ``max_bytes`` — so the directory
holds at most about ``max_bytes`` plus what the workers add between two looks. A file another
process deletes between :meth:`ObjectCache.fetch` and its opening raises FileNotFoundError there:
callers fetch once more (the next fetch reads the object again).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from forgetmi_trainer.errors import InputError, ObjectNotFound
from forgetmi_trainer.storage.base import _file_path, _scheme
from forgetmi_trainer.storage.objects import Objects

_TMP_PREFIX = ".part-"


class ObjectCache:
    """Objects of ``objects``'s storage kept as files under ``directory``, at most ``max_bytes`` in all."""

    def __init__(self, directory: Path, max_bytes: int, *, max_object_bytes: int,
                 objects: Objects | None = None) -> None:
        if max_bytes < 1 or max_object_bytes < 1:
            raise ValueError("max_bytes and max_object_bytes must be positive")
        self.directory = directory
        self.max_bytes = max_bytes
        self.max_object_bytes = max_object_bytes
        self.objects = objects or Objects()
        self._added = 0
        directory.mkdir(parents=True, exist_ok=True)

    def fetch(self, uri: str) -> Path:
        """A local file holding the object at ``uri`` (``file://`` objects are not copied).

        Raises the storage errors of the read, and :class:`InputError` for an object larger than
        ``max_object_bytes``."""
        if _scheme(uri) == "file":
            self.objects.reach(uri)
            path = _file_path(uri)
            if not path.is_file():
                raise ObjectNotFound(uri)
            return path
        path = self._entry(uri)
        try:
            os.utime(path)
            return path
        except FileNotFoundError:
            pass
        data = self.objects.read_at_most(uri, self.max_object_bytes + 1)
        if len(data) > self.max_object_bytes:
            raise InputError(f"an object is larger than the {self.max_object_bytes // (1024 * 1024)} MiB allowed")
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=_TMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self._added += len(data)
        if self._added > self.max_bytes // 8:
            self.evict()
        return path

    def holds(self, uri: str) -> bool:
        """True when reading ``uri`` needs no network: a ``file://`` object, or one already cached."""
        return uri.startswith("file:") or self._entry(uri).exists()

    def _entry(self, uri: str) -> Path:
        """The cache file of a non-``file://`` object."""
        return self.directory / hashlib.sha256(uri.encode()).hexdigest()

    def evict(self) -> int:
        """Delete the least recently used files until the directory is under ``max_bytes``; returns its size."""
        self._added = 0
        entries = []
        with os.scandir(self.directory) as it:
            for entry in it:
                if entry.name.startswith(_TMP_PREFIX):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    stat = entry.stat()
                    entries.append((stat.st_mtime, stat.st_size, entry.path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                total -= size
        return total

    def size(self) -> int:
        """Bytes held in the cache directory now."""
        total = 0
        with os.scandir(self.directory) as it:
            for entry in it:
                with contextlib.suppress(FileNotFoundError):
                    total += entry.stat().st_size
        return total

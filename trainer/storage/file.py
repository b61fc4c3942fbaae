"""The ``file:///`` storage backend: atomic writes (temp file + rename) and ``flock``-guarded
conditional writes. Callers reach it through :func:`forgetmi_trainer.storage.open_storage`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from forgetmi_trainer.errors import ObjectNotFound
from forgetmi_trainer.storage.base import (
    _CHUNK,
    _TMP_SUFFIX,
    Storage,
    _changed,
    _file_errors,
    _file_path,
    _file_uri,
    _limit,
    _sha256_file,
    _verify,
)

_LOCK_SUFFIX = ".forgetmi-lock"


class FileStorage(Storage):
    """``file:///`` backend: temp file + ``os.replace`` for every write."""

    @staticmethod
    def _atomic_write(path: Path, chunks: Iterator[bytes], verify: Callable[[str], None] | None = None,
                      ) -> str:
        """Write ``chunks`` to a temp file beside ``path``, check its sha256, rename it into place."""
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    digest.update(chunk)
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            if verify is not None:
                verify(digest.hexdigest())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return digest.hexdigest()

    @staticmethod
    def _read_chunks(path: Path) -> Iterator[bytes]:
        with open(path, "rb") as fh:
            yield from iter(lambda: fh.read(_CHUNK), b"")

    def read_bytes(self, uri: str) -> bytes:
        with _file_errors(uri):
            return _file_path(uri).read_bytes()

    def write_bytes(self, uri: str, data: bytes) -> str:
        with _file_errors(uri):
            return self._atomic_write(_file_path(uri), iter([data]))

    def read_at_most(self, uri: str, max_bytes: int) -> bytes:
        limit = _limit(max_bytes)
        with _file_errors(uri), open(_file_path(uri), "rb") as fh:
            return fh.read(limit)

    def exists(self, uri: str) -> bool:
        return _file_path(uri).is_file()

    def upload_file(self, path: str | Path, uri: str) -> str:
        if not Path(path).is_file():
            raise ObjectNotFound(Path(path).resolve().as_uri())
        with _file_errors(uri):
            return self._atomic_write(_file_path(uri), self._read_chunks(Path(path)))

    def download_file(self, uri: str, path: str | Path, expected_sha256: str | None = None, *,
                      max_concurrency: int | None = None) -> str:
        source = _file_path(uri)
        if not source.is_file():
            raise ObjectNotFound(uri)
        with _file_errors(uri):
            return self._atomic_write(Path(path), self._read_chunks(source),
                                      lambda digest: _verify(uri, digest, expected_sha256))

    def list_uris(self, prefix_uri: str) -> list[str]:
        root = _file_path(prefix_uri)
        if not root.is_dir():
            return []
        with _file_errors(prefix_uri):
            return sorted(
                _file_uri(p) for p in root.rglob("*")
                if p.is_file() and not p.name.endswith((_TMP_SUFFIX, _LOCK_SUFFIX))
            )

    def sha256_of(self, uri: str) -> str:
        with _file_errors(uri):
            return _sha256_file(_file_path(uri))

    def size(self, uri: str) -> int:
        with _file_errors(uri):
            return _file_path(uri).stat().st_size

    def delete(self, uri: str) -> None:
        with _file_errors(uri):
            _file_path(uri).unlink(missing_ok=True)

    @staticmethod
    def _versioned(path: Path, max_bytes: int = -1) -> tuple[bytes, str] | None:
        try:
            with open(path, "rb") as fh:
                data, mtime_ns = fh.read(max_bytes), os.fstat(fh.fileno()).st_mtime_ns
        except FileNotFoundError:
            return None
        return data, f"{hashlib.sha256(data).hexdigest()}:{mtime_ns}"

    def change_token(self, uri: str) -> str | None:
        path = _file_path(uri)
        with _file_errors(uri):
            try:
                st = path.stat()
            except FileNotFoundError:
                return None
        if not stat.S_ISREG(st.st_mode):
            return None
        # a rewrite through _atomic_write replaces the inode; an in-place edit changes mtime or size
        return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"

    def read_versioned(self, uri: str, max_bytes: int | None = None) -> tuple[bytes, str]:
        """A file cut short by ``max_bytes`` has a token no write matches (it hashes what was read)."""
        with _file_errors(uri):
            found = self._versioned(_file_path(uri), -1 if max_bytes is None else _limit(max_bytes))
        if found is None:
            raise ObjectNotFound(uri)
        return found

    def write_if(self, uri: str, data: bytes, *, expected_token: str | None) -> str:
        path = _file_path(uri)
        with _file_errors(uri):
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path.with_name(f".{path.name}{_LOCK_SUFFIX}"), "ab") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the lock file is closed
                found = self._versioned(path)
                current = found[1] if found else None
                if current != expected_token:
                    raise _changed(uri, expected_token, current)
                digest = self._atomic_write(path, iter([data]))
                return f"{digest}:{path.stat().st_mtime_ns}"

"""What both storage backends share: URI parsing and joining, the ``Storage`` interface, checks.

Owns the ``s3://bucket/key`` / ``file:///absolute/path`` grammar (:func:`join`, scheme and bucket
validation), the abstract :class:`Storage` with its text and JSON helpers, sha256 checking, the
conflict message of a failed conditional write, and the mapping of local file errors to
:mod:`forgetmi_trainer.errors`. Callers import :mod:`forgetmi_trainer.storage`, not this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from forgetmi_trainer.errors import ObjectNotFound, PreconditionFailed, StorageError

ACCEPTED = "s3://bucket/key or file:///absolute/path"
MIB = 1024 * 1024
_CHUNK = MIB
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_TMP_SUFFIX = ".forgetmi-tmp"


def _redact(uri: str) -> str:
    return uri.partition("?")[0]


def _bad_uri(uri: str, why: str = "") -> StorageError:
    return StorageError(f"Storage URI '{_redact(uri)}' is not valid{why}: expected {ACCEPTED}.")


def _scheme(uri: str) -> str:
    if uri.startswith("file:///"):
        return "file"
    if uri.startswith("s3://"):
        _split_s3(uri)
        return "s3"
    raise _bad_uri(uri)


def _split_s3(uri: str, *, need_key: bool = False) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not _BUCKET.match(bucket):
        raise _bad_uri(uri, f" (bucket name '{bucket}' is empty or malformed)")
    if need_key and not key:
        raise _bad_uri(uri, " (it names a bucket, not an object)")
    return bucket, key


def _file_path(uri: str) -> Path:
    if not uri.startswith("file:///"):
        raise _bad_uri(uri)
    return Path(unquote(uri[len("file://"):]))


def _file_uri(path: Path) -> str:
    return "file://" + quote(str(path))


def join(uri: str, *parts: str) -> str:
    """``join("s3://b/models", "m", "versions/v1")`` → ``"s3://b/models/m/versions/v1"``."""
    _scheme(uri)
    segments = [s for part in parts for s in part.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise StorageError(f"Path parts {list(parts)} may not contain '.' or '..' segments.")
    base = uri.rstrip("/")
    base = "file://" if base == "file:" else base
    return "/".join([base, *segments]) if segments else uri


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _limit(max_bytes: int) -> int:
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be 0 or more, not {max_bytes}.")
    return max_bytes


def _verify(uri: str, actual: str, expected: str | None) -> None:
    if expected is not None and actual != expected:
        raise StorageError(f"Object {_redact(uri)} has sha256 {actual}, expected {expected}.")


def _changed(uri: str, expected: str | None, current: str | None) -> PreconditionFailed:
    if expected is None:
        return PreconditionFailed(f"The object {uri} already exists; another writer created it.")
    if current is None:
        return PreconditionFailed(f"The object {uri} was deleted since it was read; another writer "
                                  "removed it.")
    return PreconditionFailed(f"The object {uri} changed since it was read; another writer updated it.")


class Storage(ABC):
    """A backend; every method takes a full URI of this backend's scheme."""

    @abstractmethod
    def read_bytes(self, uri: str) -> bytes: ...
    @abstractmethod
    def write_bytes(self, uri: str, data: bytes) -> str: ...
    @abstractmethod
    def exists(self, uri: str) -> bool: ...
    @abstractmethod
    def upload_file(self, path: str | Path, uri: str) -> str: ...
    @abstractmethod
    def download_file(self, uri: str, path: str | Path, expected_sha256: str | None = None, *,
                      max_concurrency: int | None = None) -> str:
        """Copy the object to ``path``; ``max_concurrency`` caps the parallel ranged GETs of a large
        S3 object (each one's buffers cost memory; None: the transfer's default)."""
    @abstractmethod
    def list_uris(self, prefix_uri: str) -> list[str]:
        """Every object under the directory ``prefix_uri`` (recursive, sorted)."""
    @abstractmethod
    def sha256_of(self, uri: str) -> str: ...
    @abstractmethod
    def size(self, uri: str) -> int:
        """The object's size in bytes, read without reading the object."""
    @abstractmethod
    def delete(self, uri: str) -> None:
        """Delete an object; deleting a missing object is not an error."""
    @abstractmethod
    def read_versioned(self, uri: str, max_bytes: int | None = None) -> tuple[bytes, str]:
        """The object's bytes (at most ``max_bytes`` of them, from its start) and its version token,
        the one :meth:`write_if` compares (S3: the ETag; a ranged read returns the object's own)."""
    @abstractmethod
    def change_token(self, uri: str) -> str | None:
        """A string that changes whenever the object changes, read without reading the object
        (S3: its ETag; file: size, mtime and inode); None when the object does not exist."""
    @abstractmethod
    def write_if(self, uri: str, data: bytes, *, expected_token: str | None) -> str:
        """Write only if the object still has ``expected_token`` (None: must not exist)."""

    def read_at_most(self, uri: str, max_bytes: int) -> bytes:
        """The object's first ``max_bytes`` bytes (all of it when it is smaller), never holding more
        in memory. Both backends read only that much; this default, for other backends, reads the
        whole object first."""
        return self.read_bytes(uri)[:_limit(max_bytes)]

    def read_text(self, uri: str) -> str:
        try:
            return self.read_bytes(uri).decode("utf-8")
        except UnicodeDecodeError as err:
            raise StorageError(f"Object {uri} is not UTF-8 text.") from err

    def write_text(self, uri: str, text: str) -> str:
        return self.write_bytes(uri, text.encode("utf-8"))

    def read_json(self, uri: str) -> Any:
        try:
            return json.loads(self.read_text(uri))
        except json.JSONDecodeError as err:
            raise StorageError(f"Object {uri} is not valid JSON ({err.msg} at line {err.lineno}).") from err

    def write_json(self, uri: str, obj: Any) -> str:
        return self.write_text(uri, json.dumps(obj, indent=2) + "\n")


@contextlib.contextmanager
def _file_errors(uri: str) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError as err:
        raise ObjectNotFound(uri) from err
    except IsADirectoryError as err:
        raise StorageError(f"Object {uri} is a directory, not a file.") from err
    except PermissionError as err:
        raise StorageError(f"Permission denied for {uri}.") from err
    except OSError as err:
        raise StorageError(f"Could not access {uri}: {err.strerror or err}.") from err


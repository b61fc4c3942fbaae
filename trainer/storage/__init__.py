"""One storage interface for ``s3://bucket/key`` and ``file:///absolute/path`` (torch-free).

Both the trainer and the operator use it; boto3 is imported only when an ``s3://`` URI is
first used. Every function takes a full URI; ``open_storage(uri)`` returns the backend.

Guarantees:

- sha256: writes and uploads return the sha256 of the bytes written; on S3 it is also stored
  as object metadata ``sha256`` so :func:`sha256_of` need not re-download the object.
- Atomic for readers: ``file://`` writes go to a temporary file in the same directory and are
  renamed into place; an S3 PUT (single or multipart) replaces an object atomically. A
  *directory* of objects (a model version) is not atomic: readers must reach it through the
  registry alias, which is written last (see ``forgetmi_operator.registry``).
- Conditional writes (:func:`read_versioned` / :func:`write_if`) detect a concurrent change.
  S3: ``If-Match``/``If-None-Match`` on PutObject (atomic on AWS S3 and stores that honour
  them), preceded by a HEAD comparison so stores that ignore the headers still catch a stale
  token, except in the short window between that HEAD and the PUT. ``file://``: an exclusive
  ``flock`` on a sidecar lock file around compare-and-replace (every conditional writer of
  that object must use :func:`write_if`).
- Errors are :mod:`forgetmi_trainer.errors` exceptions with one sentence naming the URI.
  Credentials and query strings (presigned URLs) never appear in messages.
- S3: credentials from boto3's default chain; endpoint from the argument, else
  ``FORGETMI_S3_ENDPOINT_URL``, else ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``; region from
  the AWS config, else us-east-1; standard-mode retries with backoff.

Layout: this package's top level is the one to import; it picks the backend and re-exports the
public names. URI parsing, the :class:`Storage` interface and shared checks live in
:mod:`~forgetmi_trainer.storage.base`, the ``file://`` backend in :mod:`~forgetmi_trainer.storage.file`,
the ``s3://`` backend and its client cache in :mod:`~forgetmi_trainer.storage.s3`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forgetmi_trainer.storage.base import ACCEPTED, MIB, Storage, _scheme, join
from forgetmi_trainer.storage.file import FileStorage
from forgetmi_trainer.storage.s3 import ENDPOINT_ENV, S3Settings, S3Storage

__all__ = [
    "ACCEPTED",
    "ENDPOINT_ENV",
    "MIB",
    "FileStorage",
    "S3Settings",
    "S3Storage",
    "Storage",
    "change_token",
    "delete",
    "download_file",
    "exists",
    "join",
    "list_uris",
    "open_storage",
    "read_bytes",
    "read_json",
    "read_text",
    "read_versioned",
    "sha256_of",
    "upload_file",
    "write_bytes",
    "write_if",
    "write_json",
    "write_text",
]

_FILE = FileStorage()


def open_storage(uri: str, *, endpoint_url: str | None = None, settings: S3Settings | None = None) -> Storage:
    """The backend for ``uri``'s scheme (raises :class:`StorageError` for any other URI)."""
    if _scheme(uri) == "file":
        return _FILE
    return S3Storage(endpoint_url, settings)


def read_bytes(uri: str, *, endpoint_url: str | None = None) -> bytes:
    return open_storage(uri, endpoint_url=endpoint_url).read_bytes(uri)


def write_bytes(uri: str, data: bytes, *, endpoint_url: str | None = None) -> str:
    return open_storage(uri, endpoint_url=endpoint_url).write_bytes(uri, data)


def read_text(uri: str, *, endpoint_url: str | None = None) -> str:
    return open_storage(uri, endpoint_url=endpoint_url).read_text(uri)


def write_text(uri: str, text: str, *, endpoint_url: str | None = None) -> str:
    return open_storage(uri, endpoint_url=endpoint_url).write_text(uri, text)


def read_json(uri: str, *, endpoint_url: str | None = None) -> Any:
    return open_storage(uri, endpoint_url=endpoint_url).read_json(uri)


def write_json(uri: str, obj: Any, *, endpoint_url: str | None = None) -> str:
    return open_storage(uri, endpoint_url=endpoint_url).write_json(uri, obj)


def exists(uri: str, *, endpoint_url: str | None = None) -> bool:
    return open_storage(uri, endpoint_url=endpoint_url).exists(uri)


def upload_file(path: str | Path, uri: str, *, endpoint_url: str | None = None) -> str:
    return open_storage(uri, endpoint_url=endpoint_url).upload_file(path, uri)


def download_file(uri: str, path: str | Path, expected_sha256: str | None = None, *,
                  endpoint_url: str | None = None) -> str:
    return open_storage(uri, endpoint_url=endpoint_url).download_file(uri, path, expected_sha256)


def list_uris(prefix_uri: str, *, endpoint_url: str | None = None) -> list[str]:
    return open_storage(prefix_uri, endpoint_url=endpoint_url).list_uris(prefix_uri)


def sha256_of(uri: str, *, endpoint_url: str | None = None) -> str:
    return open_storage(uri, endpoint_url=endpoint_url).sha256_of(uri)


def delete(uri: str, *, endpoint_url: str | None = None) -> None:
    open_storage(uri, endpoint_url=endpoint_url).delete(uri)


def change_token(uri: str, *, endpoint_url: str | None = None) -> str | None:
    return open_storage(uri, endpoint_url=endpoint_url).change_token(uri)


def read_versioned(uri: str, *, endpoint_url: str | None = None) -> tuple[bytes, str]:
    return open_storage(uri, endpoint_url=endpoint_url).read_versioned(uri)


def write_if(uri: str, data: bytes, *, expected_token: str | None, endpoint_url: str | None = None) -> str:
    return open_storage(uri, endpoint_url=endpoint_url).write_if(uri, data, expected_token=expected_token)

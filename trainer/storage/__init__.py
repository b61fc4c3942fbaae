"""One storage interface for ``s3://bucket/key`` and ``file:///absolute/path`` (torch-free).

Both the trainer and the operator use it; boto3 is imported only when an ``s3://`` URI is
first used. Every function takes a full URI; ``open_storage(uri)`` returns the backend. The
module-level functions use boto3's default identity; an :class:`Objects` handle makes the same
calls with other credentials (:class:`S3Credentials`) and within a reach (no ``file://``, allowed
prefixes), as the operator does for each request's namespace.

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
- Bounded reads: :func:`read_at_most` holds at most the bytes asked for (S3: a ranged GET; the
  body is read only that far even where a store ignores the range), so an object of unknown
  size can be read without trusting it.
- Errors are :mod:`forgetmi_trainer.errors` exceptions with one sentence naming the URI.
  Credentials and query strings (presigned URLs) never appear in messages.
- S3: credentials from boto3's default chain (or a handle's); endpoint from the argument, else
  ``FORGETMI_S3_ENDPOINT_URL``, else ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``; region from
  the AWS config, else us-east-1; botocore's retries with backoff (mode, attempts and retry quota
  in :class:`S3Settings`; its defaults take ``FORGETMI_S3_RETRY_MODE``, ``FORGETMI_S3_MAX_ATTEMPTS``
  and ``FORGETMI_S3_RETRY_QUOTA`` from the environment, see :meth:`S3Settings.from_env`). An error
  after retries says how many attempts the call made.

Layout: this package's top level is the one to import; it picks the backend and re-exports the
public names. URI parsing, the :class:`Storage` interface and shared checks live in
:mod:`~forgetmi_trainer.storage.base`, the ``file://`` backend in :mod:`~forgetmi_trainer.storage.file`,
the ``s3://`` backend and its client cache in :mod:`~forgetmi_trainer.storage.s3` and
:mod:`~forgetmi_trainer.storage.s3_client`, botocore's retry handling in
:mod:`~forgetmi_trainer.storage.s3_retries`, the
:class:`Objects` handle in :mod:`~forgetmi_trainer.storage.objects`.
"""

from __future__ import annotations

from forgetmi_trainer.storage.base import ACCEPTED, MIB, Storage, _scheme, join
from forgetmi_trainer.storage.file import FileStorage
from forgetmi_trainer.storage.objects import Objects, within
from forgetmi_trainer.storage.s3 import S3Storage
from forgetmi_trainer.storage.s3_client import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_RETRY_MODE,
    DEFAULT_RETRY_QUOTA,
    ENDPOINT_ENV,
    RETRY_ENV,
    RETRY_MODES,
    S3Credentials,
    S3Settings,
)

__all__ = [
    "ACCEPTED",
    "DEFAULT",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_RETRY_MODE",
    "DEFAULT_RETRY_QUOTA",
    "ENDPOINT_ENV",
    "MIB",
    "RETRY_ENV",
    "RETRY_MODES",
    "FileStorage",
    "Objects",
    "S3Credentials",
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
    "read_at_most",
    "read_bytes",
    "read_json",
    "read_text",
    "read_versioned",
    "sha256_of",
    "size",
    "upload_file",
    "within",
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


DEFAULT = Objects()
"""boto3's default identity, everything in reach: what the module-level functions use."""
read_bytes = DEFAULT.read_bytes
read_at_most = DEFAULT.read_at_most
write_bytes = DEFAULT.write_bytes
read_text = DEFAULT.read_text
write_text = DEFAULT.write_text
read_json = DEFAULT.read_json
write_json = DEFAULT.write_json
exists = DEFAULT.exists
size = DEFAULT.size
upload_file = DEFAULT.upload_file
download_file = DEFAULT.download_file
list_uris = DEFAULT.list_uris
sha256_of = DEFAULT.sha256_of
delete = DEFAULT.delete
change_token = DEFAULT.change_token
read_versioned = DEFAULT.read_versioned
write_if = DEFAULT.write_if

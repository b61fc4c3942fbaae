"""Storage with one identity and one reach: :class:`Objects`.

Every call goes through one set of S3 client settings — their ``credentials`` included, so an
operator reads a request's objects as the request's namespace, never as itself — and only to URIs
within its reach: ``file://`` URIs can be refused (in a cluster, the operator's own filesystem is
not a request's to name) and ``s3://`` URIs limited to allowed prefixes. A URI out of reach raises
:class:`~forgetmi_trainer.errors.OutOfReach` before anything is touched. The package's module-level
functions are those of one default handle (boto3's default identity, everything in reach).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from forgetmi_trainer.errors import OutOfReach
from forgetmi_trainer.storage.base import Storage, _redact, _scheme
from forgetmi_trainer.storage.file import FileStorage
from forgetmi_trainer.storage.s3 import S3Storage
from forgetmi_trainer.storage.s3_client import S3Settings

_FILE = FileStorage()


def within(uri: str, prefix: str) -> bool:
    """Whether ``uri`` is ``prefix`` or lies below it (``s3://b/team`` covers ``s3://b/team/x``, not
    ``s3://b/team-x``); a URI with a ``.`` or ``..`` segment is never within a prefix."""
    if any(part in (".", "..") for part in uri.split("/")[3:]):
        return False
    base = prefix.rstrip("/")
    return uri.rstrip("/") == base or uri.startswith(base + "/")


class Objects:
    """All storage calls as one identity, within one reach (see the module docstring)."""

    def __init__(self, *, endpoint_url: str | None = None, settings: S3Settings | None = None,
                 allow_files: bool = True, prefixes: Sequence[str] = ()) -> None:
        self.endpoint_url, self.settings = endpoint_url, settings
        self.allow_files, self.prefixes = allow_files, tuple(prefixes)

    def reach(self, uri: str) -> None:
        """Raise :class:`OutOfReach` unless ``uri`` may be used through this handle."""
        scheme = _scheme(uri)
        if scheme == "file" and not self.allow_files:
            raise OutOfReach(f"{_redact(uri)} is a file:// URI, which is refused here: name an s3:// object.")
        if self.prefixes and not any(within(uri, prefix) for prefix in self.prefixes):
            raise OutOfReach(f"{_redact(uri)} is outside the URI prefixes allowed here "
                             f"({', '.join(self.prefixes)}).")

    def backend(self, uri: str) -> Storage:
        self.reach(uri)
        return _FILE if _scheme(uri) == "file" else S3Storage(self.endpoint_url, self.settings)

    def read_bytes(self, uri: str) -> bytes:
        return self.backend(uri).read_bytes(uri)

    def read_at_most(self, uri: str, max_bytes: int) -> bytes:
        """The object's first ``max_bytes`` bytes (all of it when smaller), never more in memory."""
        return self.backend(uri).read_at_most(uri, max_bytes)

    def write_bytes(self, uri: str, data: bytes) -> str:
        return self.backend(uri).write_bytes(uri, data)

    def read_text(self, uri: str) -> str:
        return self.backend(uri).read_text(uri)

    def write_text(self, uri: str, text: str) -> str:
        return self.backend(uri).write_text(uri, text)

    def read_json(self, uri: str) -> Any:
        return self.backend(uri).read_json(uri)

    def write_json(self, uri: str, obj: Any) -> str:
        return self.backend(uri).write_json(uri, obj)

    def exists(self, uri: str) -> bool:
        return self.backend(uri).exists(uri)

    def size(self, uri: str) -> int:
        return self.backend(uri).size(uri)

    def upload_file(self, path: str | Path, uri: str) -> str:
        return self.backend(uri).upload_file(path, uri)

    def download_file(self, uri: str, path: str | Path, expected_sha256: str | None = None, *,
                      max_concurrency: int | None = None) -> str:
        return self.backend(uri).download_file(uri, path, expected_sha256, max_concurrency=max_concurrency)

    def list_uris(self, prefix_uri: str) -> list[str]:
        return self.backend(prefix_uri).list_uris(prefix_uri)

    def sha256_of(self, uri: str) -> str:
        return self.backend(uri).sha256_of(uri)

    def delete(self, uri: str) -> None:
        self.backend(uri).delete(uri)

    def change_token(self, uri: str) -> str | None:
        return self.backend(uri).change_token(uri)

    def read_versioned(self, uri: str, max_bytes: int | None = None) -> tuple[bytes, str]:
        return self.backend(uri).read_versioned(uri, max_bytes)

    def write_if(self, uri: str, data: bytes, *, expected_token: str | None) -> str:
        return self.backend(uri).write_if(uri, data, expected_token=expected_token)

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
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from forgetmi_trainer.errors import ObjectNotFound, PreconditionFailed, StorageError, StorageUnavailable

ENDPOINT_ENV = "FORGETMI_S3_ENDPOINT_URL"
ACCEPTED = "s3://bucket/key or file:///absolute/path"
MIB = 1024 * 1024
_CHUNK = MIB
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TMP_SUFFIX = ".forgetmi-tmp"
_LOCK_SUFFIX = ".forgetmi-lock"
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_CONFLICT = {"412", "PreconditionFailed", "ConditionalRequestConflict"}
_DENIED = {"403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


@dataclass(frozen=True)
class S3Settings:
    """Client tuning; the defaults suit production, tests lower the retries and timeouts."""

    max_attempts: int = 5
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 60.0
    multipart_threshold_bytes: int = 64 * MIB
    multipart_chunk_bytes: int = 16 * MIB


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
    def download_file(self, uri: str, path: str | Path, expected_sha256: str | None = None) -> str: ...
    @abstractmethod
    def list_uris(self, prefix_uri: str) -> list[str]:
        """Every object under the directory ``prefix_uri`` (recursive, sorted)."""
    @abstractmethod
    def sha256_of(self, uri: str) -> str: ...
    @abstractmethod
    def delete(self, uri: str) -> None:
        """Delete an object; deleting a missing object is not an error."""
    @abstractmethod
    def read_versioned(self, uri: str) -> tuple[bytes, str]: ...
    @abstractmethod
    def write_if(self, uri: str, data: bytes, *, expected_token: str | None) -> str:
        """Write only if the object still has ``expected_token`` (None: must not exist)."""

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

    def exists(self, uri: str) -> bool:
        return _file_path(uri).is_file()

    def upload_file(self, path: str | Path, uri: str) -> str:
        if not Path(path).is_file():
            raise ObjectNotFound(Path(path).resolve().as_uri())
        with _file_errors(uri):
            return self._atomic_write(_file_path(uri), self._read_chunks(Path(path)))

    def download_file(self, uri: str, path: str | Path, expected_sha256: str | None = None) -> str:
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

    def delete(self, uri: str) -> None:
        with _file_errors(uri):
            _file_path(uri).unlink(missing_ok=True)

    @staticmethod
    def _versioned(path: Path) -> tuple[bytes, str] | None:
        try:
            with open(path, "rb") as fh:
                data, mtime_ns = fh.read(), os.fstat(fh.fileno()).st_mtime_ns
        except FileNotFoundError:
            return None
        return data, f"{hashlib.sha256(data).hexdigest()}:{mtime_ns}"

    def read_versioned(self, uri: str) -> tuple[bytes, str]:
        with _file_errors(uri):
            found = self._versioned(_file_path(uri))
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


_CLIENTS: dict[tuple[str | None, S3Settings], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _resolve_endpoint(endpoint_url: str | None) -> str | None:
    for value in (endpoint_url, os.environ.get(ENDPOINT_ENV), os.environ.get("AWS_ENDPOINT_URL_S3"),
                  os.environ.get("AWS_ENDPOINT_URL")):
        if value:
            return value
    return None


def _s3_client(endpoint_url: str | None, settings: S3Settings) -> Any:
    with _CLIENTS_LOCK:
        client = _CLIENTS.get((endpoint_url, settings))
        if client is None:
            import boto3
            from botocore.config import Config

            session = boto3.session.Session()
            config = Config(
                region_name=session.region_name or "us-east-1",
                retries={"mode": "standard", "max_attempts": settings.max_attempts},
                connect_timeout=settings.connect_timeout_seconds,
                read_timeout=settings.read_timeout_seconds,
                s3={"addressing_style": "path"} if endpoint_url else {},
            )
            client = session.client("s3", endpoint_url=endpoint_url, config=config)
            _CLIENTS[(endpoint_url, settings)] = client
        return client


class S3Storage(Storage):
    """``s3://`` backend over boto3 (one cached, thread-safe client per endpoint and settings)."""

    def __init__(self, endpoint_url: str | None = None, settings: S3Settings | None = None) -> None:
        self.settings = settings or S3Settings()
        self.endpoint_url = _resolve_endpoint(endpoint_url)
        self.client = _s3_client(self.endpoint_url, self.settings)

    def _endpoint(self) -> str:
        return _redact(str(self.client.meta.endpoint_url))

    def _client_error(self, uri: str, err: Any) -> StorageError:
        bucket = _split_s3(uri)[0]
        code = str(err.response.get("Error", {}).get("Code", ""))
        status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code == "NoSuchBucket":
            return ObjectNotFound(uri, f"Object {uri} does not exist (bucket '{bucket}' does not exist).")
        if code in _NOT_FOUND:
            return ObjectNotFound(uri)
        if code in _DENIED:
            return StorageError(f"Access to {uri} was denied; check the credentials' permissions on bucket "
                                f"'{bucket}'.")
        if status >= 500 or code in {"SlowDown", "RequestTimeout", "ServiceUnavailable"}:
            return StorageUnavailable(f"S3 endpoint {self._endpoint()} kept failing for bucket '{bucket}' "
                                      f"({code or status}) after {self.settings.max_attempts} attempts.")
        return StorageError(f"S3 request for {uri} failed ({code or status}).")

    @contextlib.contextmanager
    def _errors(self, uri: str) -> Iterator[None]:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
        from botocore.exceptions import ConnectionError as BotoConnectionError

        bucket = _split_s3(uri)[0]
        try:
            yield
        except ClientError as err:
            raise self._client_error(uri, err) from err
        except S3UploadFailedError as err:
            cause = err.__context__
            raise (self._client_error(uri, cause) if isinstance(cause, ClientError)
                   else StorageError(f"Upload to {uri} failed.")) from err
        except NoCredentialsError as err:
            raise StorageError(f"No S3 credentials were found for bucket '{bucket}' in boto3's default chain "
                               "(environment, shared config, web identity, instance profile).") from err
        except (BotoConnectionError, HTTPClientError) as err:
            raise StorageUnavailable(f"S3 endpoint {self._endpoint()} for bucket '{bucket}' could not be "
                                     f"reached after {self.settings.max_attempts} attempts.") from err
        except BotoCoreError as err:
            raise StorageError(f"S3 request for {uri} failed ({type(err).__name__}).") from err

    def _transfer(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=self.settings.multipart_threshold_bytes,
                              multipart_chunksize=self.settings.multipart_chunk_bytes)

    def _head(self, bucket: str, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as err:
            if str(err.response.get("Error", {}).get("Code", "")) in _NOT_FOUND:
                return None
            raise

    def read_bytes(self, uri: str) -> bytes:
        return self.read_versioned(uri)[0]

    def write_bytes(self, uri: str, data: bytes) -> str:
        bucket, key = _split_s3(uri, need_key=True)
        digest = hashlib.sha256(data).hexdigest()
        with self._errors(uri):
            self.client.put_object(Bucket=bucket, Key=key, Body=data, Metadata={"sha256": digest})
        return digest

    def exists(self, uri: str) -> bool:
        bucket, key = _split_s3(uri, need_key=True)
        with self._errors(uri):
            return self._head(bucket, key) is not None

    def upload_file(self, path: str | Path, uri: str) -> str:
        bucket, key = _split_s3(uri, need_key=True)
        with _file_errors(Path(path).resolve().as_uri()):
            digest = _sha256_file(Path(path))
        with self._errors(uri):
            self.client.upload_file(str(path), bucket, key, ExtraArgs={"Metadata": {"sha256": digest}},
                                    Config=self._transfer())
        return digest

    def download_file(self, uri: str, path: str | Path, expected_sha256: str | None = None) -> str:
        bucket, key = _split_s3(uri, need_key=True)
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=_TMP_SUFFIX)
        os.close(fd)
        try:
            with self._errors(uri):
                self.client.download_file(bucket, key, tmp, Config=self._transfer())
            digest = _sha256_file(Path(tmp))
            _verify(uri, digest, expected_sha256)
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return digest

    def list_uris(self, prefix_uri: str) -> list[str]:
        bucket, key = _split_s3(prefix_uri)
        prefix = key if not key or key.endswith("/") else key + "/"
        with self._errors(prefix_uri):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
        return sorted(f"s3://{bucket}/{k}" for k in keys if not k.endswith("/"))

    def sha256_of(self, uri: str) -> str:
        bucket, key = _split_s3(uri, need_key=True)
        with self._errors(uri):
            head = self._head(bucket, key)
            if head is None:
                raise ObjectNotFound(uri)
            recorded = head.get("Metadata", {}).get("sha256", "")
            if _HEX64.match(recorded):
                return recorded
            digest = hashlib.sha256()
            for block in self.client.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(_CHUNK):
                digest.update(block)
        return digest.hexdigest()

    def delete(self, uri: str) -> None:
        bucket, key = _split_s3(uri, need_key=True)
        with self._errors(uri):
            self.client.delete_object(Bucket=bucket, Key=key)

    def read_versioned(self, uri: str) -> tuple[bytes, str]:
        bucket, key = _split_s3(uri, need_key=True)
        with self._errors(uri):
            response = self.client.get_object(Bucket=bucket, Key=key)
            return response["Body"].read(), str(response["ETag"])

    def write_if(self, uri: str, data: bytes, *, expected_token: str | None) -> str:
        from botocore.exceptions import ClientError

        bucket, key = _split_s3(uri, need_key=True)
        condition = {"IfNoneMatch": "*"} if expected_token is None else {"IfMatch": expected_token}
        with self._errors(uri):
            head = self._head(bucket, key)
            current = None if head is None else str(head["ETag"])
            if current != expected_token:
                raise _changed(uri, expected_token, current)
            try:
                response = self.client.put_object(
                    Bucket=bucket, Key=key, Body=data,
                    Metadata={"sha256": hashlib.sha256(data).hexdigest()}, **condition)
            except ClientError as err:
                code = str(err.response.get("Error", {}).get("Code", ""))
                if code in _CONFLICT or (expected_token is not None and code in _NOT_FOUND):
                    raise _changed(uri, expected_token, None if code in _NOT_FOUND else "") from err
                raise
        return str(response["ETag"])


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


def read_versioned(uri: str, *, endpoint_url: str | None = None) -> tuple[bytes, str]:
    return open_storage(uri, endpoint_url=endpoint_url).read_versioned(uri)


def write_if(uri: str, data: bytes, *, expected_token: str | None, endpoint_url: str | None = None) -> str:
    return open_storage(uri, endpoint_url=endpoint_url).write_if(uri, data, expected_token=expected_token)

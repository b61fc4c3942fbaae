"""The ``s3://`` storage backend over boto3, :class:`S3Storage`; its clients come from
:mod:`~forgetmi_trainer.storage.s3_client`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from forgetmi_trainer.errors import ObjectNotFound, StorageError, StorageUnavailable
from forgetmi_trainer.storage.base import (
    _CHUNK,
    _TMP_SUFFIX,
    Storage,
    _changed,
    _file_errors,
    _limit,
    _redact,
    _sha256_file,
    _split_s3,
    _verify,
)
from forgetmi_trainer.storage.s3_client import S3Settings, resolve_endpoint, s3_client
from forgetmi_trainer.storage.s3_retries import attempts_made, quota_reached

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_CONFLICT = {"412", "PreconditionFailed", "ConditionalRequestConflict"}
_DENIED = {"403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


def _after(err: BaseException) -> str:
    """The words ' after N attempts' with the attempts the failed call made (and why it stopped
    early), or nothing when they are unknown."""
    attempts = attempts_made(err)
    if attempts is None:
        return ""
    spent = " (the client's retry quota was spent)" if quota_reached(err) else ""
    return f" after {attempts} attempt{'' if attempts == 1 else 's'}{spent}"


def _retried(err: Any) -> bool:
    return int(err.response.get("ResponseMetadata", {}).get("RetryAttempts") or 0) > 0


class S3Storage(Storage):
    """``s3://`` backend over boto3 (one cached, thread-safe client per endpoint and settings)."""

    def __init__(self, endpoint_url: str | None = None, settings: S3Settings | None = None) -> None:
        self.settings = settings or S3Settings.from_env()
        self.endpoint_url = resolve_endpoint(endpoint_url)
        self.client = s3_client(self.endpoint_url, self.settings)

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
                                      f"({code or status}){_after(err)}.")
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
                                     f"reached{_after(err)}.") from err
        except BotoCoreError as err:
            raise StorageError(f"S3 request for {uri} failed ({type(err).__name__}).") from err

    def _transfer(self, max_concurrency: int | None = None) -> Any:
        from boto3.s3.transfer import TransferConfig

        threads = {} if max_concurrency is None else {"max_concurrency": max(1, max_concurrency)}
        return TransferConfig(**threads, multipart_threshold=self.settings.multipart_threshold_bytes,
                              multipart_chunksize=self.settings.multipart_chunk_bytes)

    def _head(self, bucket: str, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as err:
            if str(err.response.get("Error", {}).get("Code", "")) in _NOT_FOUND:
                return None
            raise

    def _get(self, uri: str, max_bytes: int | None) -> tuple[bytes, str]:
        """The object's first ``max_bytes`` bytes (None: all) and its ETag, from one GET (ranged when
        bounded), of which at most that many bytes are read even from a store that ignores the range."""
        from botocore.exceptions import ClientError

        if max_bytes is not None and _limit(max_bytes) == 0:
            return b"", self._etag(uri)
        bucket, key = _split_s3(uri, need_key=True)
        ranged = {} if max_bytes is None else {"Range": f"bytes=0-{max_bytes - 1}"}
        with self._errors(uri):
            try:
                response = self.client.get_object(Bucket=bucket, Key=key, **ranged)
            except ClientError as err:
                if ranged and str(err.response.get("Error", {}).get("Code", "")) == "InvalidRange":
                    return b"", self._etag(uri)  # an empty object has no first byte to start the range at
                raise
            body = response["Body"]
            try:
                return bytes(body.read() if max_bytes is None else body.read(max_bytes)), str(response["ETag"])
            finally:
                body.close()

    def _etag(self, uri: str) -> str:
        token = self.change_token(uri)
        if token is None:
            raise ObjectNotFound(uri)
        return token

    def read_bytes(self, uri: str) -> bytes:
        return self._get(uri, None)[0]

    def read_at_most(self, uri: str, max_bytes: int) -> bytes:
        return self._get(uri, max_bytes)[0]

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

    def download_file(self, uri: str, path: str | Path, expected_sha256: str | None = None, *,
                      max_concurrency: int | None = None) -> str:
        bucket, key = _split_s3(uri, need_key=True)
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=_TMP_SUFFIX)
        os.close(fd)
        try:
            with self._errors(uri):
                self.client.download_file(bucket, key, tmp, Config=self._transfer(max_concurrency))
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

    def size(self, uri: str) -> int:
        bucket, key = _split_s3(uri, need_key=True)
        with self._errors(uri):
            head = self._head(bucket, key)
        if head is None:
            raise ObjectNotFound(uri)
        return int(head.get("ContentLength") or 0)

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

    def change_token(self, uri: str) -> str | None:
        bucket, key = _split_s3(uri, need_key=True)
        with self._errors(uri):
            head = self._head(bucket, key)
        return None if head is None else str(head["ETag"])

    def read_versioned(self, uri: str, max_bytes: int | None = None) -> tuple[bytes, str]:
        return self._get(uri, max_bytes)

    def _own_write(self, uri: str, data: bytes) -> str | None:
        """After a conditional PUT was refused on a retry: the object's ETag if it holds exactly
        ``data`` — an earlier attempt of that PUT wrote it and its answer was lost (a 5xx or a dropped
        connection after the write) — else None. Without a retry the refusal is another writer's."""
        try:
            current, token = self._get(uri, len(data) + 1)
        except ObjectNotFound:
            return None
        return token if current == data else None

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
                own = self._own_write(uri, data) if code in _CONFLICT and _retried(err) else None
                if own is not None:
                    return own
                if code in _CONFLICT or (expected_token is not None and code in _NOT_FOUND):
                    raise _changed(uri, expected_token, None if code in _NOT_FOUND else "") from err
                raise
        return str(response["ETag"])

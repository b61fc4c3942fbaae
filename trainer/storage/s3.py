"""The ``s3://`` storage backend over boto3: client settings, the per-endpoint client cache and
:class:`S3Storage`. boto3 is imported only when the first client is made, so importing this
module (the operator does, through :mod:`forgetmi_trainer.storage`) stays cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgetmi_trainer.errors import ObjectNotFound, StorageError, StorageUnavailable
from forgetmi_trainer.storage.base import (
    _CHUNK,
    _TMP_SUFFIX,
    MIB,
    Storage,
    _changed,
    _file_errors,
    _redact,
    _sha256_file,
    _split_s3,
    _verify,
)

ENDPOINT_ENV = "FORGETMI_S3_ENDPOINT_URL"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
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

    def change_token(self, uri: str) -> str | None:
        bucket, key = _split_s3(uri, need_key=True)
        with self._errors(uri):
            head = self._head(bucket, key)
        return None if head is None else str(head["ETag"])

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

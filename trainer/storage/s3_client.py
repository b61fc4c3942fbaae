"""S3 client settings, identities and the client cache. boto3 is imported only when the first
client is made, so importing this module (the operator does, through
:mod:`forgetmi_trainer.storage`) stays cheap.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from forgetmi_trainer.storage.base import MIB

ENDPOINT_ENV = "FORGETMI_S3_ENDPOINT_URL"


@dataclass(frozen=True)
class S3Credentials:
    """An S3 identity (the keys of one Secret); never shown in a repr or a message."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class S3Settings:
    """Client tuning, and the identity (``credentials``; None: boto3's default chain). The defaults
    suit production; tests lower the retries and timeouts."""

    max_attempts: int = 5
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 60.0
    multipart_threshold_bytes: int = 64 * MIB
    multipart_chunk_bytes: int = 16 * MIB
    credentials: S3Credentials | None = None


CACHED_CLIENTS = 64
"""boto3 clients kept (each ≈ 1–2 MB): the operator makes one per namespace's credentials."""
_CLIENTS: OrderedDict[tuple[str | None, S3Settings], Any] = OrderedDict()
_CLIENTS_LOCK = threading.Lock()


def _forget_clients_after_fork() -> None:
    """A forked child (a DataLoader worker) makes its own clients: a boto3 client's connection pool
    and the lock are not safe to share across a fork."""
    global _CLIENTS_LOCK
    _CLIENTS_LOCK = threading.Lock()
    _CLIENTS.clear()


os.register_at_fork(after_in_child=_forget_clients_after_fork)


def resolve_endpoint(endpoint_url: str | None) -> str | None:
    for value in (endpoint_url, os.environ.get(ENDPOINT_ENV), os.environ.get("AWS_ENDPOINT_URL_S3"),
                  os.environ.get("AWS_ENDPOINT_URL")):
        if value:
            return value
    return None


def s3_client(endpoint_url: str | None, settings: S3Settings) -> Any:
    """The client for ``endpoint_url`` and ``settings``, made once and kept among the
    :data:`CACHED_CLIENTS` most recently used (a client is thread-safe)."""
    with _CLIENTS_LOCK:
        client = _CLIENTS.get((endpoint_url, settings))
        if client is not None:
            _CLIENTS.move_to_end((endpoint_url, settings))
        else:
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
            keys = settings.credentials
            identity = {} if keys is None else {"aws_access_key_id": keys.access_key_id,
                                                "aws_secret_access_key": keys.secret_access_key,
                                                "aws_session_token": keys.session_token}
            client = session.client("s3", endpoint_url=endpoint_url, config=config, **identity)
            _CLIENTS[(endpoint_url, settings)] = client
            while len(_CLIENTS) > CACHED_CLIENTS:
                _CLIENTS.popitem(last=False)
        return client

"""S3 client settings, identities and the client cache. boto3 is imported only when the first
client is made, so importing this module (the operator does, through
:mod:`forgetmi_trainer.storage`) stays cheap.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from forgetmi_trainer.errors import StorageError
from forgetmi_trainer.storage.base import MIB
from forgetmi_trainer.storage.s3_retries import install_retries, retries_config

ENDPOINT_ENV = "FORGETMI_S3_ENDPOINT_URL"
RETRY_MODES = ("standard", "adaptive", "legacy")
"""botocore's retry modes (``adaptive`` is ``standard`` plus a client-side rate limiter that slows
down after throttling answers such as S3's ``503 SlowDown``)."""
DEFAULT_RETRY_MODE = "adaptive"
DEFAULT_MAX_ATTEMPTS = 10
"""Attempts per call, the first included. With a store failing 30 % of requests at random a call
still fails once in 170,000 (0.3**10); the backoff between them (botocore: a random fraction of
50 ms · 2**i, 1 s · 2**i after throttling, at most 20 s) adds at most ≈ 26 s, ≈ 111 s when throttled."""
DEFAULT_RETRY_QUOTA = 0
"""Retry quota units per client; 0: unlimited (see :mod:`~forgetmi_trainer.storage.s3_retries`)."""
RETRY_ENV = {"retry_mode": "FORGETMI_S3_RETRY_MODE", "max_attempts": "FORGETMI_S3_MAX_ATTEMPTS",
             "retry_quota": "FORGETMI_S3_RETRY_QUOTA"}
"""The variables :meth:`S3Settings.from_env` reads (the operator sets them on its trainer pods)."""


@dataclass(frozen=True)
class S3Credentials:
    """An S3 identity (the keys of one Secret); never shown in a repr or a message."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class S3Settings:
    """Client tuning, and the identity (``credentials``; None: boto3's default chain). The defaults
    suit production; tests lower the retries and timeouts.

    ``retry_mode``: one of :data:`RETRY_MODES`. ``max_attempts``: attempts per call, the first
    included. ``retry_quota``: the size of the client's retry quota, spent by retries and refilled
    by successes, after which botocore stops retrying; 0 (the default): unlimited, because
    botocore's 500 units are spent for good by a store that keeps failing a fraction of requests
    (see :mod:`~forgetmi_trainer.storage.s3_retries`). ``retry_max_backoff_seconds``: the longest
    wait between two attempts (botocore's 20 s; tests lower it). The last two are ignored in the
    legacy mode. A bad value raises ValueError.
    """

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 60.0
    multipart_threshold_bytes: int = 64 * MIB
    multipart_chunk_bytes: int = 16 * MIB
    credentials: S3Credentials | None = None
    retry_mode: str = DEFAULT_RETRY_MODE
    retry_quota: int = DEFAULT_RETRY_QUOTA
    retry_max_backoff_seconds: float = 20.0

    def __post_init__(self) -> None:
        if self.retry_mode not in RETRY_MODES:
            raise ValueError(f"retry_mode must be one of {', '.join(RETRY_MODES)}, not {self.retry_mode!r}")
        if not 1 <= self.max_attempts <= 100:
            raise ValueError(f"max_attempts must be between 1 and 100, not {self.max_attempts}")
        if self.retry_quota < 0:
            raise ValueError(f"retry_quota must be 0 (unlimited) or more, not {self.retry_quota}")
        if not self.retry_max_backoff_seconds > 0:
            raise ValueError(f"retry_max_backoff_seconds must be above 0, not {self.retry_max_backoff_seconds}")

    @classmethod
    def from_env(cls, **fields: Any) -> S3Settings:
        """The settings with the retries of :data:`RETRY_ENV` where those variables are set (the
        trainer's case: the operator passes its own), ``fields`` for the rest; raises StorageError
        naming a variable whose value is not valid."""
        for field_name, variable in RETRY_ENV.items():
            value = os.environ.get(variable, "").strip()
            if value and field_name not in fields:
                fields[field_name] = _from_variable(variable, field_name, value)
        return cls(**fields)


def _from_variable(variable: str, field_name: str, value: str) -> str | int:
    if field_name == "retry_mode":
        parsed: str | int = value
    elif re.fullmatch(r"[0-9]+", value):
        parsed = int(value)
    else:
        raise StorageError(f"{variable}={value!r} is not valid: it must be a whole number.")
    try:
        S3Settings(**{field_name: parsed})  # type: ignore[arg-type]
    except ValueError as err:
        raise StorageError(f"{variable}={value!r} is not valid: {err}.") from err
    return parsed


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
                retries=retries_config(settings.retry_mode, settings.max_attempts),
                connect_timeout=settings.connect_timeout_seconds,
                read_timeout=settings.read_timeout_seconds,
                s3={"addressing_style": "path"} if endpoint_url else {},
            )
            keys = settings.credentials
            identity = {} if keys is None else {"aws_access_key_id": keys.access_key_id,
                                                "aws_secret_access_key": keys.secret_access_key,
                                                "aws_session_token": keys.session_token}
            client = session.client("s3", endpoint_url=endpoint_url, config=config, **identity)
            install_retries(client, settings.retry_mode, settings.retry_quota, settings.retry_max_backoff_seconds)
            _CLIENTS[(endpoint_url, settings)] = client
            while len(_CLIENTS) > CACHED_CLIENTS:
                _CLIENTS.popitem(last=False)
        return client

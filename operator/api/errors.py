"""Domain errors of the operator.

Each error carries a ``reason`` (a CamelCase condition reason, e.g. ``SecretNotFound``) and a
one-sentence ``message`` naming the object or field at fault; a failed step records them as a
condition (``reason``/``message``) and an Event, and ``handlers.py`` as a Kopf error. ``retryable``
says whether trying again later can help (Kopf ``TemporaryError``) or not (``PermanentError``).
Raise them ``from`` the underlying exception. Add new error kinds at the end of this module.

Two helpers apply ``retryable``: :func:`retry` tries a call again on a retryable error, and
:func:`storage_call` runs a blocking storage call in a worker thread, a transient storage error
becoming the retryable :class:`RegistryUnavailable`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from forgetmi_operator.api.patterns import CONDITION_REASON_PATTERN
from forgetmi_trainer.errors import OutOfReach, StorageUnavailable

T = TypeVar("T")


class OperatorError(Exception):
    """Base class of every error the operator reports on an UnlearnRequest."""

    reason: str = "OperatorError"
    retryable: bool = False

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        if reason is not None and not re.fullmatch(CONDITION_REASON_PATTERN, reason):
            raise ValueError(f"Condition reason {reason!r} is not CamelCase.")
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason

    def __str__(self) -> str:
        return self.message


class InvalidSpec(OperatorError):
    """The request's spec fails validation (the message names the field)."""

    reason = "InvalidSpec"


class InputNotFound(OperatorError):
    """The model, its alias or version, or the data manifest does not exist."""

    reason = "InputNotFound"


class ReferencesMissing(InputNotFound):
    """A gate needs the base version's reference models (LiRA) and the registry has none."""

    reason = "ReferencesMissing"


class SecretNotFound(OperatorError):
    """A referenced Secret, or the key within it, does not exist."""

    reason = "SecretNotFound"


class SubjectsError(OperatorError):
    """The forget subjects cannot be read, are malformed, empty, or name unknown patients."""

    reason = "InvalidSubjects"


class JobFailed(OperatorError):
    """The trainer Job failed, or its pod never started (the reason says which)."""

    reason = "JobFailed"


class ReportInvalid(OperatorError):
    """``report.json`` is missing, malformed or belongs to another request."""

    reason = "ReportInvalid"


class DigestMismatch(OperatorError):
    """An artifact's sha256 differs from the one recorded for it."""

    reason = "DigestMismatch"


class PromotionConflict(OperatorError):
    """The alias moved since it was resolved; nothing was promoted. ``current`` is the version the
    alias names now, when it was read (a rebase starts from it)."""

    reason = "PromotionConflict"

    def __init__(self, message: str, *, current: str | None = None) -> None:
        super().__init__(message)
        self.current = current


class SettingsInvalid(OperatorError):
    """An operator setting (a ``FORGETMI_*`` environment variable) is malformed."""

    reason = "InvalidSettings"


class ClusterUnavailable(OperatorError):
    """The Kubernetes API server could not be reached or refused a call; trying later can help."""

    reason = "ClusterUnavailable"
    retryable = True


class ObjectRejected(OperatorError):
    """The API server refused an object or patch the operator sent as invalid (HTTP 400 or 422), e.g. a
    Job whose nodeSelector key is not a label key; sending it again cannot help."""

    reason = "RejectedByApiServer"


class RegistryUnavailable(OperatorError):
    """The registry's storage did not answer (a transient S3 or network error); trying later can help."""

    reason = "RegistryUnavailable"
    retryable = True


class ServingTargetError(OperatorError):
    """The serving target (Deployment or InferenceService) is missing or has no such container."""

    reason = "ServingTargetError"


class PolicyViolation(OperatorError):
    """The request asks for what the cluster admin's policy does not allow it (an image, a service
    account, a priority class, a toleration)."""

    reason = "Forbidden"


class UriRefused(OperatorError):
    """The request names an object its namespace may not reach (a file:// URI in the cluster, or one
    outside the namespace's allowed prefixes)."""

    reason = "UriRefused"


class CredentialsMissing(OperatorError):
    """No S3 credentials are configured for the request's namespace, so its objects cannot be read."""

    reason = "CredentialsMissing"


class InputUnreadable(OperatorError):
    """An input exists but cannot be read as what it must be (a manifest in a format the operator
    cannot parse, a report over the size the operator reads)."""

    reason = "InputUnreadable"


class EngineUnavailable(OperatorError):
    """The request needs a TrainJob (more than one node or process) and the cluster serves no Kubeflow
    Trainer v2 TrainJobs, or the operator runs with ``trainJob.enabled`` false; nothing was created."""

    reason = "EngineUnavailable"


class PreErasureVersion(OperatorError):
    """The alias would name a version that does not descend from the candidate of a promoted erasure in the
    model's forget ledger: it was trained on patients that erasure forgot (docs/ledger.md); nothing moved."""

    reason = "PreErasureVersion"


class LedgerInvalid(OperatorError):
    """The model's forget ledger cannot be used: an entry is malformed, missing or edited (its hash chain is
    broken), or the ledger is larger than the operator reads; nothing that depends on it was done."""

    reason = "LedgerInvalid"


async def retry(call: Callable[[], Awaitable[T]], *, attempts: int, delay_seconds: float) -> T:
    """``await call()``, tried again after a retryable :class:`OperatorError` up to ``attempts`` times in
    all, waiting ``delay_seconds`` before the second try and twice as long before each further one;
    the last error, or any non-retryable one, is raised."""
    for attempt in range(attempts):
        try:
            return await call()
        except OperatorError as err:
            if not err.retryable or attempt == attempts - 1:
                raise
            await asyncio.sleep(delay_seconds * 2**attempt)
    raise ValueError("retry() needs at least one attempt")


async def storage_call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking storage call in a worker thread; a transient storage error (``StorageUnavailable``)
    becomes :class:`RegistryUnavailable`, which is retried, and a URI out of the handle's reach
    (``OutOfReach``) :class:`UriRefused`."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except StorageUnavailable as err:
        raise RegistryUnavailable(f"The registry's storage did not answer ({err}); trying again later.") from err
    except OutOfReach as err:
        raise UriRefused(str(err)) from err

"""Domain errors of the trainer (and of the storage layer the operator shares).

Each message is one sentence naming the object or field at fault; callers raise these
``from`` the underlying exception. Add new error kinds at the end of this module.
"""

from __future__ import annotations


class TrainerError(Exception):
    """Base class of every error the trainer reports to its user."""


class StorageError(TrainerError):
    """A storage URI is malformed, or an object could not be read or written."""


class ObjectNotFound(StorageError):
    """The object (or its bucket/directory) named by ``uri`` does not exist."""

    def __init__(self, uri: str, message: str | None = None) -> None:
        self.uri = uri
        super().__init__(message or f"Object {uri} does not exist.")


class PreconditionFailed(StorageError):
    """A conditional write found the object changed since it was read."""


class StorageUnavailable(StorageError):
    """The storage endpoint could not be reached (after retries)."""

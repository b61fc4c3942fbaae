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


class OutOfReach(StorageError):
    """A URI outside what a storage handle may reach (a ``file://`` URI where files are refused, or
    one outside its allowed prefixes); the object is never touched."""


class StorageUnavailable(StorageError):
    """The storage endpoint could not be reached (after retries)."""


class ConfigError(TrainerError):
    """The job configuration or a command-line argument is invalid (exit code 2)."""


class InputError(TrainerError):
    """An input exists but cannot be used: a bad manifest, an unknown patient, an empty forget set
    (exit code 3)."""


class CheckpointError(InputError):
    """A model directory is incomplete or does not match its config (missing/unexpected weights)."""


class DivergedError(TrainerError):
    """Training produced a non-finite loss or weights (exit code 4)."""


class AliasConflict(StorageError):
    """A registry alias changed between reading it and writing it (``train --alias``); nothing was written."""

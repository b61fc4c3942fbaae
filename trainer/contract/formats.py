"""The formats both sides write and read: URIs, digests, versions, the forget list, timestamps,
exit codes and the wording of a validation error (torch-free)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from enum import IntEnum

from pydantic import ValidationError

SCHEMA_VERSION = "forgetmi.io/v1alpha1"
URI_PATTERN = r"^(s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?|file:///.*)$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$"
SUBJECT_ID_PATTERN = r"[A-Za-z0-9._:\-]{1,128}"


class ExitCode(IntEnum):
    """Exit codes of ``python -m forgetmi_trainer run`` (the Job's podFailurePolicy uses 2, 3)."""

    OK = 0
    BAD_CONFIG = 2
    STORAGE_OR_INPUT = 3
    DIVERGED = 4

    @property
    def reason(self) -> str:
        """The CamelCase reason a failure with this code gets (a condition reason and a metric label)."""
        return _EXIT_REASONS[self]

    @classmethod
    def failure_reason(cls, code: int) -> str | None:
        """The reason of a failed run's exit ``code`` when the contract names it (2, 3, 4), else None."""
        return cls(code).reason if code in cls.__members__.values() and code != cls.OK else None


_EXIT_REASONS = {ExitCode.OK: "Completed", ExitCode.BAD_CONFIG: "BadConfig",
                 ExitCode.STORAGE_OR_INPUT: "StorageOrInputError", ExitCode.DIVERGED: "Diverged"}
FAIL_FAST_EXIT_CODES = (ExitCode.BAD_CONFIG, ExitCode.STORAGE_OR_INPUT)
"""Exit codes that trying the run again cannot fix: the Job fails at once, without retries."""


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with whole seconds (``2026-12-01T21:01:42Z``): every time in the contract,
    the request's status and the receipt. ``moment`` must be timezone-aware."""
    if moment.tzinfo is None:
        raise ValueError("Timestamps need a timezone-aware time.")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: object) -> datetime | None:
    """An RFC 3339 time as written by :func:`timestamp` or the Kubernetes API server (``Z`` or an
    offset, fractions allowed) as a timezone-aware datetime; None when ``value`` is empty or is no time
    (a time without a timezone is read as UTC)."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def now() -> str:
    """The current time as :func:`timestamp` writes it."""
    return timestamp(datetime.now(UTC))


Location = Sequence[str | int]


def dotted(loc: Location) -> str:
    """``("method", "options", "alpha")`` → ``method.options.alpha``."""
    return ".".join(str(part) for part in loc)


def validation_problems(err: ValidationError, where: Callable[[Location], str] = dotted) -> list[str]:
    """``"<field>: <message>"`` for each error of ``err``; ``where`` names the field from its location
    (default: dotted). Pydantic's ``Value error, `` prefix is dropped; inputs are never shown, as
    they may be a patient ID or a credential."""
    problems = []
    for item in err.errors(include_url=False, include_input=False):
        problems.append(f"{where(item['loc'])}: {item['msg'].removeprefix('Value error, ')}")
    return problems


def parse_subjects(text: str) -> list[str]:
    """Subject IDs from a file's text: a JSON list of strings, or one ID per line
    (blank lines and ``#`` comments ignored). Duplicates are dropped, order kept."""
    stripped = text.strip()
    if stripped.startswith("["):
        raw = json.loads(stripped)
        if not isinstance(raw, list) or not all(isinstance(x, str | int) for x in raw):
            raise ValueError("the subjects file must hold a JSON list of strings")
        items = [str(x).strip() for x in raw]
    else:
        items = [line.split("#", 1)[0].strip() for line in stripped.splitlines()]
    seen: dict[str, None] = {}
    for item in items:
        if item:
            if not re.fullmatch(SUBJECT_ID_PATTERN, item):
                raise ValueError("the subjects file holds an ID with characters outside [A-Za-z0-9._:-]")
            seen.setdefault(item, None)
    return list(seen)


def subjects_text(subjects: Sequence[str]) -> str:
    """The canonical text of a forget list: one ID per line, in order (what :func:`parse_subjects` reads)."""
    return "".join(f"{subject}\n" for subject in subjects)

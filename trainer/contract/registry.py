"""The model registry's layout and its alias record (torch-free), written alike by the operator's
promotion and the trainer's ``train --alias``::

    <registry>/<name>/versions/<version>/{config.json, model.safetensors, metadata.json, ...}
    <registry>/<name>/aliases/<alias>.json        an :class:`AliasRecord`

An alias record names one version and its weights' sha256, the version it named before and the
earlier ones (newest first, at most :data:`HISTORY_LIMIT`). :func:`next_record` is the one rule
both writers follow when they move an alias; each writes the record with a conditional write
(``storage.write_if``) against the token it read, so a concurrent change is detected, never lost.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from forgetmi_trainer.contract.formats import SHA256_PATTERN, VERSION_PATTERN, validation_problems

HISTORY_LIMIT = 100
"""How many earlier versions an alias record remembers (newest first)."""
RECORD_MAX_BYTES = 1024 * 1024
"""The most either side reads of an alias record or a version's metadata.json (each a few kB)."""
ALIAS_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""An alias is a DNS label (the UnlearnRequest's ``spec.model.alias``), at most 63 characters."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class RequestRef(_Record):
    """The UnlearnRequest that moved an alias."""

    namespace: str
    name: str
    uid: str


class PreviousVersion(_Record):
    """A version an alias named before, with when and by whom it had been set."""

    version: str = Field(pattern=VERSION_PATTERN)
    sha256: str = Field(pattern=SHA256_PATTERN)
    updated_at: str
    request: RequestRef | None = None


class AliasRecord(_Record):
    """``aliases/<alias>.json``: the version an alias names, its digest and its history."""

    version: str = Field(pattern=VERSION_PATTERN)
    sha256: str = Field(pattern=SHA256_PATTERN, description="sha256 of the version's model.safetensors.")
    previous: str | None = Field(default=None, description="The version the alias named before this one.")
    updated_at: str = Field(description="RFC 3339 UTC time the alias was written.")
    request: RequestRef | None = Field(default=None, description="The request that wrote it (none: seeded).")
    history: list[PreviousVersion] = Field(default_factory=list,
                                           description=f"Earlier versions, newest first (≤ {HISTORY_LIMIT}).")

    def to_json_bytes(self) -> bytes:
        return (self.model_dump_json(by_alias=True, indent=2) + "\n").encode("utf-8")


def next_record(current: AliasRecord | None, *, version: str, sha256: str, updated_at: str,
                request: RequestRef | None, limit: int = HISTORY_LIMIT) -> AliasRecord:
    """The record that moves an alias from ``current`` (None: a new alias) to ``version``: the
    current version becomes ``previous`` and the newest entry of the history (at most ``limit``)."""
    history: list[PreviousVersion] = []
    if current is not None:
        history = [PreviousVersion(version=current.version, sha256=current.sha256, updated_at=current.updated_at,
                                   request=current.request), *current.history][:limit]
    return AliasRecord(version=version, sha256=sha256, previous=current.version if current else None,
                       updated_at=updated_at, request=request, history=history)


def parse_alias_record(data: bytes, uri: str, max_bytes: int = RECORD_MAX_BYTES) -> AliasRecord:
    """The alias record in ``data`` (read from ``uri``, at most ``max_bytes + 1`` of it); a
    ``ValueError`` with one sentence naming ``uri`` when it is too large or malformed (each reader
    raises it as its own error)."""
    if len(data) > max_bytes:
        raise ValueError(f"Alias record {uri} is larger than {max_bytes} bytes; it is not an alias record.")
    try:
        return AliasRecord.model_validate_json(data)
    except ValidationError as err:
        raise ValueError(f"Alias record {uri} is malformed: {validation_problems(err)[0]}.") from err


def version_path(name: str, version: str) -> str:
    """``<name>/versions/<version>``: a model version's directory, relative to the registry."""
    return f"{name}/versions/{version}"


def references_path(name: str, version: str) -> str:
    """``<name>/references/<version>``: the reference models' statistics of a version (LiRA), beside its
    directory, not in it (a version directory holds exactly the files its metadata.json lists)."""
    return f"{name}/references/{version}"


def alias_path(name: str, alias: str) -> str:
    """``<name>/aliases/<alias>.json``: an alias record, relative to the registry."""
    return f"{name}/aliases/{alias}.json"

"""Model versions and aliases in the registry's object storage (torch-free).

A model version is a directory of several objects (:mod:`~forgetmi_operator.registry.paths`), so
it is never atomic by itself; readers reach models only through an alias, and the alias record
(one object) is written last, with a conditional write, after the version's files were checked.
A reader therefore sees the old or the new version, never a half-written one, and a concurrent
change of the alias is detected (:class:`AliasConflict`) rather than overwritten.

Errors: :class:`ModelNotFound`, :class:`AliasConflict` and :class:`RegistryError` carry one sentence
naming the model, alias or version (the lifecycle turns them into the request's errors);
``forgetmi_trainer.errors.StorageUnavailable`` (transient) and other ``StorageError`` pass through
unchanged so callers can retry them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from forgetmi_operator.registry.paths import CONFIG_FILE, MODEL_FILE, alias_uri, version_uri
from forgetmi_trainer import storage
from forgetmi_trainer.contract import SHA256_PATTERN, VERSION_PATTERN, now, validation_problems
from forgetmi_trainer.errors import ObjectNotFound, PreconditionFailed

HISTORY_LIMIT = 20
"""How many earlier versions an alias record remembers (newest first)."""


class RegistryError(Exception):
    """A registry object is malformed or inconsistent (e.g. a version's sha256 differs)."""


class ModelNotFound(RegistryError):
    """A model, alias, version or one of a version's files does not exist."""


class AliasConflict(RegistryError):
    """The alias moved since it was resolved; the caller's promotion was not written."""


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


_Found = tuple[AliasRecord, str] | None
"""An alias record with its storage token, or None when the alias does not exist."""


@dataclass(frozen=True)
class ResolvedVersion:
    """An alias resolved to a version; ``token`` is what :func:`promote` must be given."""

    version: str
    uri: str
    sha256: str
    token: str
    record: AliasRecord


def _read_alias(registry: str, name: str, alias: str) -> _Found:
    uri = alias_uri(registry, name, alias)
    try:
        data, token = storage.read_versioned(uri)
    except ObjectNotFound:
        return None
    try:
        return AliasRecord.model_validate_json(data), token
    except ValidationError as err:
        raise RegistryError(f"Alias record {uri} is malformed: {validation_problems(err)[0]}.") from err


def resolve_alias(registry: str, name: str, alias: str) -> ResolvedVersion:
    """The version ``alias`` names, after checking that its model file exists."""
    found = _read_alias(registry, name, alias)
    if found is None:
        raise ModelNotFound(f"Model '{name}' has no alias '{alias}' in {registry}.")
    record, token = found
    uri = version_uri(registry, name, record.version)
    if not storage.exists(storage.join(uri, MODEL_FILE)):
        raise ModelNotFound(f"Version '{record.version}' of model '{name}', named by alias '{alias}', "
                            f"has no {MODEL_FILE} in {uri}.")
    return ResolvedVersion(version=record.version, uri=uri, sha256=record.sha256, token=token, record=record)


def check_version(registry: str, name: str, version: str) -> str:
    """The sha256 of the version's model file, after checking config.json and the model file exist."""
    uri = version_uri(registry, name, version)
    missing = [f for f in (CONFIG_FILE, MODEL_FILE) if not storage.exists(storage.join(uri, f))]
    if len(missing) == 2:
        raise ModelNotFound(f"Model '{name}' has no version '{version}' in {registry}.")
    if missing:
        raise ModelNotFound(f"Version '{version}' of model '{name}' has no {missing[0]} in {uri}.")
    try:
        return storage.sha256_of(storage.join(uri, MODEL_FILE))
    except ObjectNotFound as err:  # deleted between the two calls
        raise ModelNotFound(f"Version '{version}' of model '{name}' has no {MODEL_FILE} in {uri}.") from err


def _done(found: _Found, version: str, request: RequestRef | None) -> AliasRecord | None:
    """The current record if it already is this promotion (same version, same request)."""
    if found is not None and found[0].version == version and found[0].request == request:
        return found[0]
    return None


def _conflict(name: str, alias: str, found: _Found) -> AliasConflict:
    state = "was deleted" if found is None else f"now names version '{found[0].version}'"
    return AliasConflict(f"Alias '{alias}' of model '{name}' changed since it was resolved (it {state}); "
                         "the promotion was not written.")


def promote(registry: str, name: str, alias: str, *, new_version: str, new_sha256: str,
            expected_token: str | None, request: RequestRef | None) -> AliasRecord:
    """Point ``alias`` at ``new_version`` if it still has ``expected_token`` (None: create it).

    The version's files and sha256 are checked first, so the alias never names a broken
    version. Repeating a promotion that already took effect (same version, same request)
    returns the existing record, so a retried handler does not fail.
    """
    actual = check_version(registry, name, new_version)
    if actual != new_sha256:
        raise RegistryError(f"Version '{new_version}' of model '{name}' has sha256 {actual}, expected "
                            f"{new_sha256}; alias '{alias}' was not moved.")
    found = _read_alias(registry, name, alias)
    if (done := _done(found, new_version, request)) is not None:
        return done
    if (found[1] if found else None) != expected_token:
        raise _conflict(name, alias, found)
    history: list[PreviousVersion] = []
    if found is not None:
        old = found[0]
        history = [PreviousVersion(version=old.version, sha256=old.sha256, updated_at=old.updated_at,
                                   request=old.request), *old.history][:HISTORY_LIMIT]
    record = AliasRecord(version=new_version, sha256=new_sha256, previous=found[0].version if found else None,
                         updated_at=now(), request=request, history=history)
    try:
        storage.write_if(alias_uri(registry, name, alias), record.to_json_bytes(),
                         expected_token=expected_token)
    except PreconditionFailed as err:
        after = _read_alias(registry, name, alias)
        if (done := _done(after, new_version, request)) is not None:  # our write landed, its reply was lost
            return done
        raise _conflict(name, alias, after) from err
    return record

"""Model versions and aliases in the registry's object storage (torch-free).

A model version is a directory of several objects (:mod:`~forgetmi_operator.registry.paths`), so
it is never atomic by itself; readers reach models only through an alias, and the alias record
(one object) is written last, with a conditional write, after the version's files were checked.
A reader therefore sees the old or the new version, never a half-written one, and a concurrent
change of the alias is detected (:class:`AliasConflict`) rather than overwritten.

Digests are the operator's own: :func:`verify_version` hashes a version's files byte by byte as it
reads them and checks them against the version's ``metadata.json``; stored object metadata
(``x-amz-meta-sha256``) is never trusted, and :func:`promote` records only a digest that
:func:`verify_version` computed. Every call takes the :class:`~forgetmi_trainer.storage.Objects`
handle to read and write with (a request's namespace's identity, in a cluster).

Errors: :class:`ModelNotFound`, :class:`AliasConflict` and :class:`RegistryError` carry one sentence
naming the model, alias or version (the lifecycle turns them into the request's errors);
``forgetmi_trainer.errors.StorageUnavailable`` (transient) and other ``StorageError`` pass through
unchanged so callers can retry them. The record's models live in the shared contract
(:mod:`forgetmi_trainer.contract.registry`), as the trainer's ``train --alias`` writes them too.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from forgetmi_operator.registry.paths import CONFIG_FILE, METADATA_FILE, MODEL_FILE, alias_uri, version_uri
from forgetmi_trainer import storage
from forgetmi_trainer.contract import now
from forgetmi_trainer.contract.registry import HISTORY_LIMIT, AliasRecord, RequestRef, next_record, parse_alias_record
from forgetmi_trainer.contract.registry import RECORD_MAX_BYTES as _RECORD_MAX_BYTES
from forgetmi_trainer.contract.registry import PreviousVersion as PreviousVersion  # re-exported
from forgetmi_trainer.errors import ObjectNotFound, PreconditionFailed
from forgetmi_trainer.storage import Objects

RECORD_MAX_BYTES = _RECORD_MAX_BYTES
"""The most the operator reads of an alias record or a version's metadata.json (each a few kB)."""


class RegistryError(Exception):
    """A registry object is malformed or inconsistent (e.g. a version's sha256 differs)."""


class ModelNotFound(RegistryError):
    """A model, alias, version or one of a version's files does not exist."""


class AliasConflict(RegistryError):
    """The alias moved since it was resolved; the caller's promotion was not written."""


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


@dataclass(frozen=True)
class VerifiedVersion:
    """A version whose files the operator hashed itself (:func:`verify_version`): the weights'
    sha256, and every file's."""

    version: str
    uri: str
    sha256: str
    files: dict[str, str] = field(default_factory=dict)


def _read_small(objects: Objects, uri: str) -> bytes:
    """A registry record's bytes; one larger than :data:`RECORD_MAX_BYTES` is refused unread."""
    data = objects.read_at_most(uri, RECORD_MAX_BYTES + 1)
    if len(data) > RECORD_MAX_BYTES:
        raise RegistryError(f"{uri} is larger than {RECORD_MAX_BYTES} bytes; it is not a registry record.")
    return data


def _read_alias(objects: Objects, registry: str, name: str, alias: str) -> _Found:
    uri = alias_uri(registry, name, alias)
    try:
        data, token = objects.read_versioned(uri, RECORD_MAX_BYTES + 1)
    except ObjectNotFound:
        return None
    try:
        return parse_alias_record(data, uri, RECORD_MAX_BYTES), token
    except ValueError as err:
        raise RegistryError(str(err)) from err


def resolve_alias(objects: Objects, registry: str, name: str, alias: str) -> ResolvedVersion:
    """The version ``alias`` names, after checking that its model file exists."""
    found = _read_alias(objects, registry, name, alias)
    if found is None:
        raise ModelNotFound(f"Model '{name}' has no alias '{alias}' in {registry}.")
    record, token = found
    uri = version_uri(registry, name, record.version)
    if not objects.exists(storage.join(uri, MODEL_FILE)):
        raise ModelNotFound(f"Version '{record.version}' of model '{name}', named by alias '{alias}', "
                            f"has no {MODEL_FILE} in {uri}.")
    return ResolvedVersion(version=record.version, uri=uri, sha256=record.sha256, token=token, record=record)


def digest(objects: Objects, uri: str) -> str:
    """The sha256 of an object's bytes, hashed as they are read (into a temporary file, never into memory)."""
    with tempfile.TemporaryDirectory(prefix="forgetmi-verify-") as tmp:
        return objects.download_file(uri, Path(tmp) / "object")


def has_version(objects: Objects, registry: str, name: str, version: str) -> bool:
    """True when the version directory holds its weights (nothing is hashed)."""
    return objects.exists(storage.join(version_uri(registry, name, version), MODEL_FILE))


def verify_version(objects: Objects, registry: str, name: str, version: str, *,
                   complete: bool = False) -> VerifiedVersion:
    """Hash every file of a version directory and check the digests against its ``metadata.json``:
    each file it lists must exist with that digest and no other file may be there. Without
    ``metadata.json`` (a version not published by the trainer) only config.json and the weights are
    hashed, unless ``complete`` requires it. Raises ModelNotFound or RegistryError naming the file."""
    uri = version_uri(registry, name, version)
    present = {item[len(uri) + 1:] for item in objects.list_uris(uri)}
    if not present:
        raise ModelNotFound(f"Model '{name}' has no version '{version}' in {registry}.")
    for required in (CONFIG_FILE, MODEL_FILE, *((METADATA_FILE,) if complete else ())):
        if required not in present:
            raise ModelNotFound(f"Version '{version}' of model '{name}' has no {required} in {uri}.")
    listed: dict[str, str] = {}
    if METADATA_FILE in present:
        try:
            listed = dict(json.loads(_read_small(objects, storage.join(uri, METADATA_FILE))).get("files") or {})
        except (ValueError, AttributeError, TypeError) as err:
            raise RegistryError(f"{storage.join(uri, METADATA_FILE)} is not a metadata record.") from err
        unlisted = sorted(present - set(listed) - {METADATA_FILE})
        if unlisted or MODEL_FILE not in listed:
            raise RegistryError(f"Version '{version}' of model '{name}' holds files its {METADATA_FILE} does not "
                                f"list ({', '.join(unlisted) or MODEL_FILE}); it is not a published version.")
    files = {}
    for file in sorted(listed or {CONFIG_FILE: "", MODEL_FILE: ""}):
        try:
            files[file] = digest(objects, storage.join(uri, file))
        except ObjectNotFound as err:
            raise ModelNotFound(f"Version '{version}' of model '{name}' has no {file} in {uri}.") from err
        if listed and files[file] != listed[file]:
            raise RegistryError(f"{storage.join(uri, file)} has sha256 {files[file]}, but {METADATA_FILE} records "
                                f"{listed[file]}.")
    return VerifiedVersion(version=version, uri=uri, sha256=files[MODEL_FILE], files=files)


def _done(found: _Found, version: str, request: RequestRef | None) -> AliasRecord | None:
    """The current record if it already is this promotion (same version, same request)."""
    if found is not None and found[0].version == version and found[0].request == request:
        return found[0]
    return None


def _conflict(name: str, alias: str, found: _Found) -> AliasConflict:
    state = "was deleted" if found is None else f"now names version '{found[0].version}'"
    return AliasConflict(f"Alias '{alias}' of model '{name}' changed since it was resolved (it {state}); "
                         "the promotion was not written.")


def promote(objects: Objects, registry: str, name: str, alias: str, *, version: VerifiedVersion,
            expected_token: str | None, request: RequestRef | None) -> AliasRecord:
    """Point ``alias`` at ``version`` if it still has ``expected_token`` (None: create it).

    ``version`` is what :func:`verify_version` hashed, and its digest is what the record keeps: the
    alias never names a version the operator did not read byte by byte. Repeating a promotion that
    already took effect (same version, same request) returns the existing record, so a retried
    handler does not fail.
    """
    found = _read_alias(objects, registry, name, alias)
    if (done := _done(found, version.version, request)) is not None:
        return done
    if (found[1] if found else None) != expected_token:
        raise _conflict(name, alias, found)
    record = next_record(found[0] if found else None, version=version.version, sha256=version.sha256,
                         updated_at=now(), request=request, limit=HISTORY_LIMIT)
    try:
        objects.write_if(alias_uri(registry, name, alias), record.to_json_bytes(), expected_token=expected_token)
    except PreconditionFailed as err:
        after = _read_alias(objects, registry, name, alias)
        if (done := _done(after, version.version, request)) is not None:  # our write landed, its reply was lost
            return done
        raise _conflict(name, alias, after) from err
    return record


LINEAGE_MAX = 1000
"""The most versions :func:`lineage` follows up a ``parent`` chain (one per promoted erasure of the model)."""


def version_metadata(objects: Objects, registry: str, name: str, version: str) -> dict[str, object]:
    """A version's ``metadata.json`` ({} when it has none); RegistryError when it is not a metadata record."""
    uri = storage.join(version_uri(registry, name, version), METADATA_FILE)
    try:
        meta = json.loads(_read_small(objects, uri))
    except ObjectNotFound:
        return {}
    except ValueError as err:
        raise RegistryError(f"{uri} is not a metadata record.") from err
    if not isinstance(meta, dict):
        raise RegistryError(f"{uri} is not a metadata record.")
    return meta


def parent_of(objects: Objects, registry: str, name: str, version: str) -> str | None:
    """The ``parent`` its ``metadata.json`` records (the version a candidate was made from); None for a
    version without one (trained, or seeded without metadata)."""
    uri = storage.join(version_uri(registry, name, version), METADATA_FILE)
    parent = version_metadata(objects, registry, name, version).get("parent")
    if parent is not None and not isinstance(parent, str):
        raise RegistryError(f"{uri} records a parent that is not a version name.")
    return parent


def lineage(objects: Objects, registry: str, name: str, version: str) -> list[str]:
    """``version`` and the versions it descends from, nearest first, by the ``parent`` of each one's
    ``metadata.json``; RegistryError when the chain loops or is longer than :data:`LINEAGE_MAX`."""
    chain = [version]
    while (parent := parent_of(objects, registry, name, chain[-1])) is not None:
        if parent in chain or len(chain) >= LINEAGE_MAX:
            raise RegistryError(f"The parent chain of version '{version}' of model '{name}' loops or is longer "
                                f"than {LINEAGE_MAX} versions; its lineage cannot be established.")
        chain.append(parent)
    return chain

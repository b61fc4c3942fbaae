"""``train --alias``: point a registry alias at the version just published, as the operator's
promotion does it (the record format, history and conditional write of
:mod:`forgetmi_trainer.contract.registry`).

The alias is read with its storage token and written with ``storage.write_if`` against that
token (created when absent), so an alias that another writer moved in between is never
overwritten: that is an :class:`~forgetmi_trainer.errors.AliasConflict` and nothing is written.
The version the alias names must have been published (its ``metadata.json`` records the weights'
sha256 given here).
"""

from __future__ import annotations

import re

from forgetmi_trainer import storage
from forgetmi_trainer.contract import VERSION_PATTERN, now
from forgetmi_trainer.contract.registry import (
    ALIAS_PATTERN,
    RECORD_MAX_BYTES,
    AliasRecord,
    alias_path,
    next_record,
    parse_alias_record,
    version_path,
)
from forgetmi_trainer.errors import AliasConflict, ConfigError, InputError, ObjectNotFound, PreconditionFailed

_VERSION_URI = re.compile(r"^(?P<registry>.+)/(?P<name>[^/]+)/versions/(?P<version>[^/]+)/?$")

_Found = tuple[AliasRecord, str] | None


def registry_version(out_uri: str) -> tuple[str, str, str]:
    """(registry, model name, version) of ``<registry>/<name>/versions/<version>``; a
    :class:`ConfigError` for any other URI (``--alias`` needs a registry version)."""
    match = _VERSION_URI.match(out_uri)
    if match is None or "://" not in match["registry"] or not re.match(VERSION_PATTERN, match["version"]):
        raise ConfigError(f"--alias needs --out to be a registry version <registry>/<name>/versions/<version>; "
                          f"got {out_uri}.")
    return match["registry"], match["name"], match["version"]


def set_alias(registry: str, name: str, alias: str, version: str, sha256: str) -> AliasRecord:
    """Point ``alias`` of model ``name`` at ``version`` (whose weights have ``sha256``): create
    it, or move it keeping its history; returns the record written (or the existing one when it
    already names this version). Raises AliasConflict when the alias changed meanwhile."""
    if not re.match(ALIAS_PATTERN, alias) or len(alias) > 63:
        raise ConfigError(f"--alias {alias!r} must be a DNS label: lower-case letters, digits and '-', at most 63.")
    _check_published(registry, name, version, sha256)
    uri = storage.join(registry, alias_path(name, alias))
    found = _read(uri)
    if _names(found, version, sha256):
        return found[0]  # type: ignore[index]
    record = next_record(found[0] if found else None, version=version, sha256=sha256, updated_at=now(), request=None)
    try:
        storage.write_if(uri, record.to_json_bytes(), expected_token=found[1] if found else None)
    except PreconditionFailed as err:
        after = _read(uri)
        if _names(after, version, sha256):  # our write landed, its reply was lost
            return after[0]  # type: ignore[index]
        state = "was deleted" if after is None else f"now names version '{after[0].version}'"
        raise AliasConflict(f"Alias '{alias}' of model '{name}' changed while it was being set (it {state}); "
                            f"it was not moved to version '{version}'.") from err
    return record


def _names(found: _Found, version: str, sha256: str) -> bool:
    """Whether the alias record already names ``version`` with ``sha256`` (set by a trainer, not a request)."""
    return found is not None and (found[0].version, found[0].sha256, found[0].request) == (version, sha256, None)


def _read(uri: str) -> _Found:
    try:
        data, token = storage.read_versioned(uri, RECORD_MAX_BYTES + 1)
    except ObjectNotFound:
        return None
    try:
        return parse_alias_record(data, uri), token
    except ValueError as err:
        raise InputError(str(err)) from err


def _check_published(registry: str, name: str, version: str, sha256: str) -> None:
    """The version's metadata.json exists and records ``sha256`` for its weights."""
    uri = storage.join(registry, version_path(name, version), "metadata.json")
    try:
        recorded = storage.read_json(uri).get("sha256") if storage.size(uri) <= RECORD_MAX_BYTES else None
    except ObjectNotFound as err:
        raise InputError(f"Version '{version}' of model '{name}' has no metadata.json in {registry}; "
                         "only a published version gets an alias.") from err
    except (ValueError, AttributeError) as err:
        raise InputError(f"{uri} is not a metadata record.") from err
    if recorded != sha256:
        raise InputError(f"{uri} records sha256 {recorded}, not {sha256}; the alias was not set.")

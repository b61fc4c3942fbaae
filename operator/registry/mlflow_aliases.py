"""Aliases of an MLflow Model Registry (``registryUri: mlflow+http(s)://host[:port][/path]``).

A registered model's versions and aliases live in MLflow; an alias names a version number. What
MLflow does not keep, the operator keeps as tags of the registered model, the same record the S3
backend writes to ``aliases/<alias>.json`` (:class:`~forgetmi_trainer.contract.registry.AliasRecord`:
the version, its sha256, the one before, when and by which request, and up to
:data:`~forgetmi_trainer.contract.registry.HISTORY_LIMIT` earlier versions; MLflow keeps no alias
history itself, mlflow#2169). The record is JSON split over tags ``forgetmi.alias.<alias>.<i>`` of
at most :data:`TAG_CHUNK` characters (SQL stores hold 5,000 per tag), counted by
``forgetmi.alias.<alias>.chunks``.

MLflow has no compare-and-set on aliases, so :func:`promote` narrows the window instead: it reads
the alias right before setting it and refuses unless it names the base version; sets it; reads it
back; writes the record; and reads the alias once more. If the alias named anything else at either
read-back, someone moved it meanwhile: their move is left in place, the record is restored, and
:class:`~forgetmi_operator.registry.aliases.AliasConflict` says what the alias names now, exactly as
the S3 backend reports a lost conditional write. What remains is the time between the read and the
set (one HTTP round trip): a move made by someone else in it is overwritten, and only the record's
``previous`` shows it. docs/mlflow.md says so to users.

Credentials are the request's (a token, or a username and password), handed to MLflow's REST store
for each call and never put in a message; errors are the registry's own
(:class:`~forgetmi_operator.registry.aliases.ModelNotFound`,
:class:`~forgetmi_operator.registry.aliases.RegistryError`), or :class:`MlflowUnavailable` when the
server cannot be reached or answers 5xx (transient). ``mlflow-skinny`` is the ``[mlflow]`` extra;
without it an MLflow registry is refused with one sentence saying how to install it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from forgetmi_operator.registry.aliases import AliasConflict, ModelNotFound, RegistryError
from forgetmi_trainer.contract import now
from forgetmi_trainer.contract.registry import HISTORY_LIMIT, AliasRecord, RequestRef, next_record

SCHEME = "mlflow+"
URI_PATTERN = re.compile(r"^mlflow\+(https?)://([^/\s?#@]+)(/[^\s?#]*)?$")
TAG_PREFIX = "forgetmi.alias."
TAG_CHUNK = 4000
"""Characters of the record per tag (SQL stores hold 5,000 per registered-model tag value)."""
_MISSING = "RESOURCE_DOES_NOT_EXIST"


class MlflowUnavailable(RegistryError):
    """The MLflow server could not be reached or failed the call (retryable)."""


@dataclass(frozen=True)
class Credentials:
    """How to authenticate to the MLflow server: a bearer token, or a username and password."""

    token: str | None = None
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:  # never print a secret
        return f"Credentials(token={'***' if self.token else None}, username={self.username!r})"


@dataclass(frozen=True)
class MlflowAlias:
    """An alias resolved in MLflow: the version number, its source (where its files are), the
    sha256 the version's ``forgetmi.sha256`` tag declares (empty when it has none) and the record."""

    version: str
    source: str
    sha256: str
    record: AliasRecord | None


def is_mlflow(registry_uri: str) -> bool:
    return registry_uri.startswith(SCHEME)


def tracking_uri(registry_uri: str) -> str:
    """``mlflow+https://host:port/path`` → ``https://host:port/path``; a ValueError names what is wrong."""
    match = URI_PATTERN.match(registry_uri)
    if match is None:
        raise ValueError(f"'{registry_uri}' is not an MLflow registry URI: mlflow+http(s)://host[:port][/path], "
                         "with no user, query or fragment")
    scheme, host, path = match.groups()
    return f"{scheme}://{host}{(path or '').rstrip('/')}"


def _store(registry_uri: str, credentials: Credentials) -> Any:
    try:
        from mlflow.store.model_registry.rest_store import RestStore
        from mlflow.utils.rest_utils import MlflowHostCreds
    except ImportError as err:
        raise RegistryError("An MLflow registry needs mlflow-skinny in the operator: install "
                            "'forgetmi-operator[mlflow]' (chart value mlflow.enabled).") from err
    host = tracking_uri(registry_uri)
    creds = MlflowHostCreds(host, username=credentials.username, password=credentials.password,
                            token=credentials.token)
    return RestStore(lambda: creds)


class Registry:
    """One MLflow registry, reached with one request's credentials."""

    def __init__(self, registry_uri: str, credentials: Credentials | None = None) -> None:
        self.uri = registry_uri
        self.store = _store(registry_uri, credentials or Credentials())

    def call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args)
        except MlflowException as err:
            code = getattr(err, "error_code", "")
            status = int(getattr(err, "get_http_status_code", lambda: 500)())
            if code == _MISSING:
                raise ModelNotFound(f"{what} in MLflow registry {self.uri}: it does not exist.") from err
            if status >= 500 or code in ("INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"):
                raise MlflowUnavailable(f"MLflow registry {self.uri} could not {what} (it failed or could not "
                                        "be reached); it will be tried again.") from err
            raise RegistryError(f"MLflow registry {self.uri} refused to {what} ({code}).") from err

    def model(self, name: str) -> Any:
        return self.call(f"read registered model '{name}'", self.store.get_registered_model, name)

    def record(self, name: str, alias: str, tags: dict[str, str] | None = None) -> AliasRecord | None:
        """The alias record kept in the registered model's tags (None when there is none)."""
        tags = self.model(name).tags if tags is None else tags
        base = TAG_PREFIX + alias
        count = tags.get(f"{base}.chunks")
        if count is None:
            return None
        try:
            text = "".join(tags[f"{base}.{i}"] for i in range(int(count)))
            return AliasRecord.model_validate(json.loads(text))
        except (KeyError, ValueError) as err:
            raise RegistryError(f"The record of alias '{alias}' of registered model '{name}' in MLflow registry "
                                f"{self.uri} is damaged ({type(err).__name__}); tags {base}.* must be restored "
                                "or removed.") from err

    def write_record(self, name: str, alias: str, record: AliasRecord) -> None:
        """Write ``record`` over the tags (chunks first, the count last; stale chunks removed)."""
        from mlflow.entities.model_registry import RegisteredModelTag

        base, text = TAG_PREFIX + alias, record.model_dump_json(by_alias=True, exclude_none=True)
        chunks = [text[i:i + TAG_CHUNK] for i in range(0, len(text), TAG_CHUNK)] or [""]
        old = self.model(name).tags
        for i, chunk in enumerate(chunks):
            self.call(f"tag registered model '{name}'", self.store.set_registered_model_tag, name,
                       RegisteredModelTag(f"{base}.{i}", chunk))
        self.call(f"tag registered model '{name}'", self.store.set_registered_model_tag, name,
                   RegisteredModelTag(f"{base}.chunks", str(len(chunks))))
        for i in range(len(chunks), int(old.get(f"{base}.chunks", "0"))):
            self.call(f"untag registered model '{name}'", self.store.delete_registered_model_tag, name, f"{base}.{i}")

    def resolve(self, name: str, alias: str) -> MlflowAlias:
        """The version ``alias`` names (ModelNotFound naming the model or the alias when missing)."""
        model = self.model(name)
        if alias not in model.aliases:
            raise ModelNotFound(f"Registered model '{name}' has no alias '{alias}' in MLflow registry {self.uri}.")
        version = self.call(f"read version {model.aliases[alias]} of registered model '{name}'",
                             self.store.get_model_version, name, model.aliases[alias])
        return MlflowAlias(version=str(version.version), source=str(version.source),
                           sha256=str((version.tags or {}).get("forgetmi.sha256", "")),
                           record=self.record(name, alias, model.tags))

    def current(self, name: str, alias: str) -> str | None:
        """The version number ``alias`` names now (None when it names none)."""
        return self.model(name).aliases.get(alias)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.call(f"set alias '{alias}' of registered model '{name}'", self.store.set_registered_model_alias,
                   name, alias, version)


def _conflict(name: str, alias: str, version: str | None) -> AliasConflict:
    state = "was deleted" if version is None else f"now names version '{version}'"
    return AliasConflict(f"Alias '{alias}' of registered model '{name}' changed since it was resolved (it {state}); "
                         "the promotion was not written.")


def _next(record: AliasRecord | None, before: str, *, version: str, sha256: str,
          request: RequestRef | None) -> AliasRecord:
    """The record after moving the alias from ``before`` to ``version``. When the record does not
    describe ``before`` (the alias was set in MLflow by hand since), ``previous`` is still ``before``
    (with no digest, so not in the history), and the old record's versions stay in the history."""
    if record is not None and record.version == before:
        return next_record(record, version=version, sha256=sha256, updated_at=now(), request=request,
                           limit=HISTORY_LIMIT)
    history = next_record(record, version=version, sha256=sha256, updated_at=now(), request=request,
                          limit=HISTORY_LIMIT).history if record is not None else []
    return AliasRecord(version=version, sha256=sha256, previous=before, updated_at=now(), request=request,
                       history=history)


def promote(registry: Registry, name: str, alias: str, *, base: str, candidate: str, sha256: str,
            request: RequestRef | None) -> AliasRecord:
    """Move ``alias`` from version ``base`` to ``candidate`` (checked before and after: module doc).

    A repeat of a promotion that took effect (the alias and its record name ``candidate`` as set by
    ``request``) returns the record; anything else the alias names is AliasConflict, not overwritten."""
    model = registry.model(name)
    before, record = model.aliases.get(alias), registry.record(name, alias, model.tags)
    if before == candidate and record is not None and record.version == candidate and record.request == request:
        return record
    if before != base:
        raise _conflict(name, alias, before)
    registry.set_alias(name, alias, candidate)
    if (after := registry.current(name, alias)) != candidate:
        raise _conflict(name, alias, after)  # moved between our set and the read-back: theirs stands
    written = _next(record, before, version=candidate, sha256=sha256, request=request)
    registry.write_record(name, alias, written)
    if (after := registry.current(name, alias)) != candidate:
        if record is not None:
            registry.write_record(name, alias, record)  # theirs stands: our record is taken back
        raise _conflict(name, alias, after)
    return written


def rollback(registry: Registry, name: str, alias: str, *, candidate: str, base: str, base_sha256: str,
             request: RequestRef | None) -> str:
    """Move ``alias`` back from ``candidate`` to ``base`` after ``request`` promoted it and the
    rollout failed; never raises. Returns a sentence saying what the alias names now."""
    where = f"Alias '{alias}' of registered model '{name}'"
    try:
        model = registry.model(name)
        now_names, record = model.aliases.get(alias), registry.record(name, alias, model.tags)
        if now_names != candidate or record is None or record.version != candidate or record.request != request:
            return f"{where} names version '{now_names}', set by someone else; it was left as it is."
        registry.set_alias(name, alias, base)
        if (after := registry.current(name, alias)) != base:
            return f"{where} was moved on to version '{after}' while it was moved back; it was left as it is."
        registry.write_record(name, alias, _next(record, candidate, version=base, sha256=base_sha256,
                                                 request=request))
    except RegistryError as err:
        return f"{where} could not be moved back to version '{base}' ({err}); it names '{candidate}'."
    return f"{where} was moved back to version '{base}'."

"""The forget list: the one place that reads, checks, copies, finds and deletes a request's patient IDs.

A request references its list (``spec.forget.subjectsSecretRef`` or ``subjectsUri``); it is read
once, at acceptance (:func:`read_referenced`), and copied into the request's own immutable Secret
(:func:`snapshot`, named by :func:`~forgetmi_operator.api.naming.subjects_secret_name`, owned by
the request, one ID per line; with a forget ledger, a second key :data:`PREVIOUSLY_FORGOTTEN_KEY` holds
the manifest's patients of earlier erasures, :mod:`~forgetmi_operator.lifecycle.erasures`). Every
trainer run of the request reads that copy and the receipt attests it (:func:`read_snapshot`), so
editing the referenced list afterwards changes neither;
:func:`release` deletes the copy once the request ended. Secrets are reached through a
:class:`~forgetmi_operator.lifecycle.ports.SecretStore`. Patient IDs are read only to check,
count, copy and HMAC them: they never reach a log, a status field or a message, and an error
never quotes one.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from forgetmi_operator.api import naming
from forgetmi_operator.api.errors import (
    DigestMismatch,
    InputNotFound,
    OperatorError,
    SecretNotFound,
    SubjectsError,
    retry,
    storage_call,
)
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.api.spec import ForgetSpec, UnlearnRequestSpec
from forgetmi_operator.lifecycle.ports import SecretStore
from forgetmi_trainer.contract import parse_subjects, subjects_text
from forgetmi_trainer.errors import ObjectNotFound
from forgetmi_trainer.storage import Objects

log = logging.getLogger(__name__)
SUBJECTS_KEY = "subjects"
"""The key of the copy's forget list (and the file name a Job mounts it as)."""
PREVIOUSLY_FORGOTTEN_KEY = "previously-forgotten"
"""The copy's key (and mounted file) of the manifest's patients that earlier erasures forgot; only with a ledger."""
SUBJECTS_COMPONENT = "subjects"
MAX_SUBJECTS_BYTES = 1024 * 1024
"""What a Secret's data may hold (Kubernetes' limit), so the most a forget list's copy may take."""
MAX_LIST_FILE_BYTES = 8 * MAX_SUBJECTS_BYTES
"""The most of ``spec.forget.subjectsUri`` the operator reads: the list with the comments, blank
lines and repeats its copy drops; a larger object is refused unread."""
RELEASE_ATTEMPTS = 3
RELEASE_RETRY_SECONDS = 1.0
"""Deleting the copy is tried this often on a retryable error, 1 s then 2 s apart."""
Found = tuple[list[str], str]
"""A forget list and where it was read (for messages)."""


def parse(text: str, where: str) -> list[str]:
    """Subject IDs from a Secret key's or object's text; the error never quotes an ID."""
    try:
        subjects = parse_subjects(text)
    except ValueError as err:
        raise SubjectsError(f"The forget subjects in {where} are malformed: {err}.") from err
    if not subjects:
        raise SubjectsError(f"The forget subjects in {where} list no patient.")
    return subjects


async def read_secret_key(store: SecretStore, namespace: str, name: str, key: str) -> bytes:
    """The decoded value of ``key`` in Secret ``namespace/name``; ``SecretNotFound`` otherwise."""
    secret = await store.get_secret(namespace, name)
    if secret is None:
        raise SecretNotFound(f"Secret {namespace}/{name} does not exist.")
    data = secret.get("data") or {}
    if key in data:
        return base64.b64decode(data[key])
    string_data = secret.get("stringData") or {}
    if key in string_data:
        return str(string_data[key]).encode()
    raise SecretNotFound(f"Secret {namespace}/{name} has no key {key!r}.")


def read_uri(objects: Objects, forget: ForgetSpec) -> str:
    """The text of ``forget.subjectsUri``, checked against ``forget.sha256`` when given (blocking)."""
    uri = str(forget.subjects_uri)
    try:
        raw = objects.read_at_most(uri, MAX_LIST_FILE_BYTES + 1)
    except ObjectNotFound as err:
        raise InputNotFound(f"spec.forget.subjectsUri {uri} does not exist.") from err
    if len(raw) > MAX_LIST_FILE_BYTES:
        raise SubjectsError(f"spec.forget.subjectsUri {uri} is larger than {MAX_LIST_FILE_BYTES} bytes, more than "
                            "the operator reads of a forget list: split it into several requests.")
    if forget.sha256 and hashlib.sha256(raw).hexdigest() != forget.sha256:
        raise DigestMismatch(f"spec.forget.subjectsUri {uri} does not match spec.forget.sha256.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SubjectsError(f"spec.forget.subjectsUri {uri} is not UTF-8 text.") from err


async def read_referenced(store: SecretStore, objects: Objects, spec: UnlearnRequestSpec, namespace: str) -> Found:
    """The list the spec references (its Secret key, or its object read through ``objects``)."""
    ref = spec.forget.subjects_secret_ref
    if ref is not None:
        raw = await read_secret_key(store, namespace, ref.name, ref.key)
        where = f"Secret {namespace}/{ref.name} key {ref.key!r}"
        return parse(raw.decode("utf-8", errors="replace"), where), where
    where = f"spec.forget.subjectsUri {spec.forget.subjects_uri}"
    return parse(await storage_call(read_uri, objects, spec.forget), where), where


def _snapshot_where(namespace: str, name: str) -> str:
    return f"Secret {namespace}/{name} (the forget list as accepted)"


def encoded_list(subjects: Sequence[str]) -> str:
    """A forget list as a Secret's ``data`` value: the contract's text form, base64-encoded."""
    return base64.b64encode(subjects_text(subjects).encode("utf-8")).decode("ascii")


def build_snapshot_secret(subjects: Sequence[str], *, name: str, namespace: str, uid: str,
                          owner: Mapping[str, Any] | None = None,
                          previously_forgotten: Sequence[str] | None = None, rebase: int = 0) -> dict[str, Any]:
    """The immutable Secret holding the forget list as accepted, owned by the request ``name``/``uid``,
    and the previously forgotten patients (:data:`PREVIOUSLY_FORGOTTEN_KEY`) when given; the copy of the
    ``rebase``-th rebase's runs when ``rebase`` > 0."""
    ref = naming.owner_reference(owner if owner is not None else {"name": name, "uid": uid})
    labels = {**naming.labels_for(ref["name"], uid=ref["uid"]), naming.LABEL_COMPONENT: SUBJECTS_COMPONENT}
    data = {SUBJECTS_KEY: encoded_list(subjects)}
    if previously_forgotten is not None:
        data[PREVIOUSLY_FORGOTTEN_KEY] = encoded_list(previously_forgotten)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": naming.subjects_secret_name(ref["name"], ref["uid"], rebase=rebase),
                     "namespace": namespace,
                     "labels": labels, "ownerReferences": [ref]},
        "type": "Opaque",
        "immutable": True,
        "data": data,
    }


def has_previously_forgotten(secret: Mapping[str, Any] | None) -> bool:
    """Whether the request's copy holds the previously forgotten patients (its runs then read them)."""
    return secret is not None and PREVIOUSLY_FORGOTTEN_KEY in (secret.get("data") or {})


def _from_snapshot(secret: Mapping[str, Any], namespace: str, uid: str) -> list[str]:
    name = (secret.get("metadata") or {}).get("name", "")
    if not naming.owned_by(secret, uid):
        raise SubjectsError(f"Secret {namespace}/{name} exists but is not owned by this UnlearnRequest, so it cannot "
                            "hold its forget list; delete or rename it.")
    encoded = (secret.get("data") or {}).get(SUBJECTS_KEY)
    if encoded is None:
        raise SubjectsError(f"{_snapshot_where(namespace, name)} has no key {SUBJECTS_KEY!r}.")
    return parse(base64.b64decode(encoded).decode("utf-8", errors="replace"), _snapshot_where(namespace, name))


async def snapshot(store: SecretStore, body: Mapping[str, Any], subjects: list[str], where: str,
                   previously_forgotten: Sequence[str] | None = None, rebase: int = 0) -> list[str]:
    """Copy ``subjects`` (just accepted, read from ``where``) into the request's Secret, with
    ``previously_forgotten`` when given, and return the list its runs will forget: ``subjects``, or
    the list an earlier attempt copied (an operator restart, a retried launch, a rebase), which stays
    what is forgotten and attested (with the previously forgotten list that attempt copied). For the
    ``rebase``-th rebase (> 0), that list is copied again with ``previously_forgotten`` as the ledger has
    it now, into the copy that rebase's runs mount."""
    meta = body["metadata"]
    namespace, uid = meta["namespace"], meta["uid"]
    size = len(subjects_text(subjects).encode("utf-8"))
    earlier = len(subjects_text(previously_forgotten or ()).encode("utf-8"))
    if size + earlier > MAX_SUBJECTS_BYTES:
        also = (f" and the {len(previously_forgotten or ())} patients of earlier erasures its runs leave out of "
                f"training take {earlier} more") if earlier else ""
        raise SubjectsError(f"The forget list in {where} takes {size} bytes as one ID per line ({len(subjects)} "
                            f"subjects){also}, more than the {MAX_SUBJECTS_BYTES} bytes (1 MiB) a Secret holds, and "
                            "the request's copy of it is a Secret: split it into several requests.")
    secret = build_snapshot_secret(subjects, name=meta["name"], namespace=namespace, uid=uid, owner=body,
                                   previously_forgotten=previously_forgotten)
    existing, created = await store.create_or_get_secret(namespace, secret)
    accepted = subjects if created else _from_snapshot(existing, namespace, uid)
    if rebase:
        again = build_snapshot_secret(accepted, name=meta["name"], namespace=namespace, uid=uid, owner=body,
                                      previously_forgotten=previously_forgotten, rebase=rebase)
        found, made = await store.create_or_get_secret(namespace, again)
        if not made:
            _from_snapshot(found, namespace, uid)  # one made by someone else is never mounted
    return accepted


async def find_snapshot(store: SecretStore, body: Mapping[str, Any]) -> Found | None:
    """The request's copy of its forget list and where it is; None when there is none."""
    meta = body["metadata"]
    namespace, uid = meta["namespace"], meta["uid"]
    name = naming.subjects_secret_name(meta["name"], uid)
    secret = await store.get_secret(namespace, name)
    if secret is None:
        return None
    return _from_snapshot(secret, namespace, uid), _snapshot_where(namespace, name)


async def read_snapshot(store: SecretStore, body: Mapping[str, Any]) -> Found:
    """The list the request's runs forgot and its receipt attests; SubjectsError when the copy is gone."""
    found = await find_snapshot(store, body)
    if found is None:
        meta = body["metadata"]
        name = naming.subjects_secret_name(meta["name"], meta["uid"])
        raise SubjectsError(f"{_snapshot_where(meta['namespace'], name)} is gone, so the receipt could not attest "
                            "what was forgotten: nothing was promoted. Create a new request.")
    return found


async def release(store: SecretStore, body: Mapping[str, Any]) -> None:
    """Delete the request's copy once nothing needs it (the request ended or is gone), so the list is
    not kept longer than the work on it. Only a copy the request owns is deleted, with a precondition
    on its uid (one of that name made by someone else, or made again meanwhile, is left alone); a
    failure leaves it to garbage collection with the request."""
    meta = body["metadata"]
    rebases = int((body.get("status") or {}).get("rebases") or 0)
    for rebase in range(rebases, -1, -1):  # the rebases' copies, then the request's own
        await _release_one(store, body, naming.subjects_secret_name(meta["name"], meta["uid"], rebase=rebase))


async def _release_one(store: SecretStore, body: Mapping[str, Any], name: str) -> None:
    meta = body["metadata"]
    namespace = meta["namespace"]

    async def delete() -> None:
        secret = await store.get_secret(namespace, name)
        if secret is None:
            return
        if not naming.owned_by(secret, meta["uid"]):
            log.warning("Secret %s/%s is not owned by %s and was left alone", namespace, name, naming.describe(body))
            return
        if await store.delete_secret(namespace, name, uid=secret["metadata"].get("uid")):
            log.info("Deleted Secret %s/%s, the forget list of %s", namespace, name, naming.describe(body))

    try:
        await retry(delete, attempts=RELEASE_ATTEMPTS, delay_seconds=RELEASE_RETRY_SECONDS)
    except OperatorError as err:
        log.warning("Secret %s/%s of %s is left to garbage collection with it: %s", namespace, name,
                    naming.describe(body), err.message)


async def receipt_key(store: SecretStore, settings: Settings) -> bytes | None:
    """The receipt HMAC key from the operator namespace's Secret; None when none is configured."""
    if not settings.receipt_hmac_enabled:
        return None
    if not settings.operator_namespace:
        raise SecretNotFound("FORGETMI_OPERATOR_NAMESPACE is empty, so the receipt HMAC Secret "
                             f"{settings.receipt_hmac_secret_name} cannot be located.")
    return await read_secret_key(store, settings.operator_namespace, settings.receipt_hmac_secret_name,
                                 settings.receipt_hmac_secret_key)


async def ledger_key(store: SecretStore, settings: Settings) -> bytes | None:
    """The forget ledger's HMAC key from the operator namespace's Secret; None when none is configured."""
    if not settings.ledger_key_secret_name:
        return None
    if not settings.operator_namespace:
        raise SecretNotFound("FORGETMI_OPERATOR_NAMESPACE is empty, so the forget ledger key Secret "
                             f"{settings.ledger_key_secret_name} cannot be located.")
    key = await read_secret_key(store, settings.operator_namespace, settings.ledger_key_secret_name,
                                settings.ledger_key_secret_key)
    if not key:
        raise SecretNotFound(f"Secret {settings.operator_namespace}/{settings.ledger_key_secret_name} key "
                             f"{settings.ledger_key_secret_key!r} is empty; the forget ledger needs a key.")
    return key

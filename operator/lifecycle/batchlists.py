"""The forget set of a batch of coalesced requests (docs/coalescing.md): the union of its requests'
forget lists, in one immutable Secret the batch's Job mounts in place of a single request's copy.

The Secret (:func:`build_batch_secret`, named by :func:`~forgetmi_operator.api.naming.batch_subjects_secret_name`)
is owned by every request of the batch (the leader as controller), so Kubernetes deletes it only once
all of them are gone; the operator deletes it (:func:`release_batch`) once every request of the batch
ended. Each request keeps its own copy (:mod:`~forgetmi_operator.lifecycle.subjects`), which its
receipt attests. :func:`groups_that_fit` splits a batch whose union would not fit in one Secret.
Patient IDs are handled as in :mod:`~forgetmi_operator.lifecycle.subjects`: never logged, never quoted.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from forgetmi_operator.api import naming
from forgetmi_operator.api.errors import OperatorError, SubjectsError
from forgetmi_operator.lifecycle import batches, subjects
from forgetmi_operator.lifecycle.ports import SecretStore
from forgetmi_trainer.contract import subjects_text

log = logging.getLogger(__name__)


def _size(values: Sequence[str]) -> int:
    return len(subjects_text(values).encode("utf-8"))


def groups_that_fit(lists: Sequence[Sequence[str]], previously_forgotten: Sequence[str] | None) -> list[list[int]]:
    """The batch's requests (by index, in order) in groups whose union, with the previously forgotten
    patients, fits in one Secret: a request is added to the current group while the union still fits."""
    room = subjects.MAX_SUBJECTS_BYTES - _size(previously_forgotten or ())
    groups: list[list[int]] = []
    current: list[int] = []
    for index in range(len(lists)):
        if current and _size(batches.union([*(lists[i] for i in current), lists[index]])) > room:
            groups.append(current)
            current = []
        current.append(index)
    if current:
        groups.append(current)
    return groups


def member_owner_references(members: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One ownerReference per request of the batch; only the first (the leader) is the controller."""
    refs = [naming.owner_reference(member) for member in members]
    for ref in refs[1:]:
        ref["controller"] = False
    return refs


def build_batch_secret(union: Sequence[str], *, members: Sequence[Mapping[str, Any]], namespace: str,
                       previously_forgotten: Sequence[str] | None = None, rebase: int = 0) -> dict[str, Any]:
    """The immutable Secret with the batch's forget set (and the previously forgotten patients when
    given), under the keys a request's own copy uses, owned by every request of ``members`` (named for
    the leader's ``rebase``-th rebase)."""
    leader = members[0]["metadata"]
    labels = {**naming.labels_for(leader["name"], uid=leader["uid"]),
              naming.LABEL_COMPONENT: subjects.SUBJECTS_COMPONENT}
    data = {subjects.SUBJECTS_KEY: subjects.encoded_list(union)}
    if previously_forgotten is not None:
        data[subjects.PREVIOUSLY_FORGOTTEN_KEY] = subjects.encoded_list(previously_forgotten)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": naming.batch_subjects_secret_name(leader["name"], leader["uid"], rebase=rebase),
                     "namespace": namespace, "labels": labels, "ownerReferences": member_owner_references(members)},
        "type": "Opaque",
        "immutable": True,
        "data": data,
    }


def previously_forgotten_of(secret: Mapping[str, Any] | None) -> list[str] | None:
    """The previously forgotten patients a request's copy holds (None: it holds none, no ledger key)."""
    encoded = ((secret or {}).get("data") or {}).get(subjects.PREVIOUSLY_FORGOTTEN_KEY)
    if encoded is None:
        return None
    text = base64.b64decode(encoded).decode("utf-8", errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]  # may be empty: none forgotten yet


async def read_union(store: SecretStore, body: Mapping[str, Any]) -> list[str]:
    """The batch's forget set, from its Secret; SubjectsError when it is gone or not the batch's."""
    leader_name, leader_uid = batches.run_owner(body)
    namespace = body["metadata"]["namespace"]
    rebase = batches.run_rebase(body)
    name = naming.batch_subjects_secret_name(leader_name, leader_uid, rebase=rebase)
    secret = await store.get_secret(namespace, name)
    where = f"Secret {namespace}/{name} (the forget set of the batch)"
    if secret is None or not naming.owned_by(secret, body["metadata"]["uid"]):
        raise SubjectsError(f"{where} is gone or not owned by this request, so the forget ledger could not record "
                            "the batch's erasure: nothing more was changed.")
    encoded = (secret.get("data") or {}).get(subjects.SUBJECTS_KEY)
    if encoded is None:
        raise SubjectsError(f"{where} has no key {subjects.SUBJECTS_KEY!r}.")
    return subjects.parse(base64.b64decode(encoded).decode("utf-8", errors="replace"), where)


async def release_batch(store: SecretStore, namespace: str, leader_name: str, leader_uid: str,
                        rebase: int = 0) -> None:
    """Delete the batch's Secret (every request of the batch ended); a failure leaves it to garbage collection."""
    name = naming.batch_subjects_secret_name(leader_name, leader_uid, rebase=rebase)
    try:
        secret = await store.get_secret(namespace, name)
        if secret is not None and await store.delete_secret(namespace, name, uid=secret["metadata"].get("uid")):
            log.info("Deleted Secret %s/%s, the forget set of a finished batch", namespace, name)
    except OperatorError as err:
        log.warning("Secret %s/%s is left to garbage collection: %s", namespace, name, err.message)

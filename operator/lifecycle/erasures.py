"""What the model's forget ledger (:mod:`~forgetmi_operator.registry.ledger`, docs/ledger.md) means for a
request, alike in a cluster and in ``forgetmi run``.

- At acceptance, :func:`earlier_erasures` fails closed: the base version must descend from the candidate
  of every promoted erasure of the model (else ``PreErasureVersion``, before any Job), and, with a ledger
  key, it names the manifest's training patients whose keyed digest the ledger holds — the patients of
  earlier erasures, which the trainer leaves out of the retain set (and so out of a retrain). The list
  is kept with the request's copy of its forget list, never anywhere else.
- At promotion, :func:`record_erasure` appends the request's entry (its subjects' digests) once.

Without a ledger key no entry is written and no list is computed; the fail-closed check still reads the
versions the ledger records (they need no key). Blocking: run these through ``storage_call``.
"""

from __future__ import annotations

from collections.abc import Sequence

from forgetmi_operator.api.errors import LedgerInvalid
from forgetmi_operator.api.spec import ModelSpec, UnlearnRequestSpec
from forgetmi_operator.registry import ledger, manifests, promotion
from forgetmi_operator.registry.ledger import LedgerEntry
from forgetmi_trainer.contract.registry import RequestRef
from forgetmi_trainer.storage import Objects


def read_erasures(objects: Objects, model: ModelSpec) -> list[LedgerEntry]:
    """The model's ledger; LedgerInvalid (one sentence naming the entry) when it cannot be used."""
    try:
        return ledger.read_ledger(objects, model.registry_uri, model.name)
    except ledger.LedgerError as err:
        raise LedgerInvalid(f"The forget ledger of model '{model.name}' cannot be used: {err} Nothing was "
                            "changed; `forgetmi ledger verify` reports every problem.") from err


def earlier_erasures(objects: Objects, spec: UnlearnRequestSpec, base_version: str, key: bytes | None,
                     limits: manifests.Limits = manifests.DEFAULT_LIMITS) -> list[str] | None:
    """Check ``base_version`` descends from every erasure in the ledger (PreErasureVersion otherwise);
    with ``key``, the manifest's training patients the ledger names as forgotten (sorted), else None."""
    erasures = read_erasures(objects, spec.model)
    promotion.check_erasures(objects, spec.model, base_version, erasures, "base version")
    if key is None:
        return None
    forgotten = ledger.forgotten_digests(erasures)
    if not forgotten:
        return []
    trained = manifests.TRAINING_SUBJECTS.get(objects, spec.data.manifest_uri, limits)
    return sorted(subject for subject in trained if ledger.subject_digest(key, subject) in forgotten)


def record_erasure(objects: Objects, model: ModelSpec, request: RequestRef, subjects: Sequence[str], key: bytes,
                   base_version: str, candidate_version: str) -> LedgerEntry:
    """Append the promoted request's entry (once: a repeat returns the entry already there)."""
    try:
        return ledger.append(objects, model.registry_uri, model.name, request=request,
                             digests=ledger.digests_of(key, subjects), base_version=base_version,
                             candidate_version=candidate_version)
    except ledger.LedgerError as err:
        raise LedgerInvalid(f"The forget ledger of model '{model.name}' could not record the erasure: {err}") from err

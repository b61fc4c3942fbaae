"""Moving a request's alias: from the base version it was accepted against to its verified
candidate, and back when the rollout after it fails (blocking storage calls through the request's
:class:`~forgetmi_trainer.storage.Objects` handle).

Both raise or report in the request's own terms: :class:`~forgetmi_operator.api.errors.PromotionConflict`
when the alias names anything else, so nothing is ever overwritten. Both fail closed across requests
(:func:`check_erasures`): the alias is never moved to a version that does not descend, by the
``parent`` chain of its ``metadata.json``, from the candidate of every promoted erasure in the model's
forget ledger (:mod:`~forgetmi_operator.registry.ledger`); such a version was trained on patients an
erasure forgot, and :class:`~forgetmi_operator.api.errors.PreErasureVersion` names it and the erasure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from forgetmi_operator.api.errors import DigestMismatch, PreErasureVersion, PromotionConflict
from forgetmi_operator.api.spec import ModelSpec
from forgetmi_operator.api.status import ModelVersionStatus
from forgetmi_operator.registry import aliases
from forgetmi_operator.registry.ledger import LedgerEntry, undescended
from forgetmi_trainer.errors import StorageError
from forgetmi_trainer.storage import Objects


def check_erasures(objects: Objects, model: ModelSpec, version: str, erasures: Sequence[LedgerEntry],
                   what: str = "version") -> None:
    """Raise PreErasureVersion when ``version`` does not descend from the candidate of every entry of
    ``erasures`` (the model's ledger); ``what`` says what the version is, for the message."""
    if not erasures:
        return
    try:
        chain = aliases.lineage(objects, model.registry_uri, model.name, version)
    except aliases.RegistryError as err:
        raise PreErasureVersion(f"The lineage of {what} '{version}' of model '{model.name}' cannot be read ({err}), "
                                "so it cannot be shown to descend from the model's erasures; nothing was "
                                "promoted.") from err
    missed = undescended(chain, erasures)
    if missed is not None:
        request = missed.request
        raise PreErasureVersion(
            f"The {what} '{version}' of model '{model.name}' does not descend from version "
            f"'{missed.candidate_version}', the candidate of erasure {missed.seq} in the forget ledger (request "
            f"{request.namespace}/{request.name}, {missed.count} subjects, promoted over '{missed.base_version}'): "
            "it was trained on patients that erasure forgot, so the alias is not moved to it.")


@dataclass(frozen=True)
class Promoted:
    """A promotion that took effect: the alias record it wrote, and ``moved_on_to``, the version the
    alias names now when someone moved it on since (None: it still names the candidate)."""

    record: aliases.AliasRecord
    moved_on_to: str | None = None


def own_promotion(current: aliases.ResolvedVersion, base: ModelVersionStatus, candidate: aliases.VerifiedVersion,
                  request: aliases.RequestRef) -> Promoted | None:
    """This request's promotion of ``candidate`` over ``base``, when the alias record ``current`` shows it
    took effect: the alias names it, or its history does (the alias was moved on since: a restart lost
    the request's status after the alias write, and another promotion came after). None otherwise."""
    if current.version == candidate.version and current.record.request == request:
        return Promoted(current.record)
    for old in current.record.history:
        if old.version == candidate.version and old.request == request and old.sha256 == candidate.sha256:
            record = aliases.AliasRecord(version=old.version, sha256=old.sha256, previous=base.version,
                                         updated_at=old.updated_at, request=old.request)
            return Promoted(record, moved_on_to=current.version)
    return None


def promote_candidate(objects: Objects, model: ModelSpec, base: ModelVersionStatus,
                      candidate: aliases.VerifiedVersion, request: aliases.RequestRef,
                      erasures: Sequence[LedgerEntry] = ()) -> Promoted:
    """Move ``model.alias`` from ``base`` to ``candidate``; a repeat of a promotion that already took
    effect returns it (:func:`own_promotion`: also when the alias was moved on since). Raises
    PromotionConflict when the alias names anything else, and PreErasureVersion when the candidate
    does not descend from every one of ``erasures``."""
    try:
        current = aliases.resolve_alias(objects, model.registry_uri, model.name, model.alias)
    except aliases.RegistryError as err:
        raise PromotionConflict(f"Alias '{model.alias}' of model '{model.name}' cannot be read: {err}") from err
    done = own_promotion(current, base, candidate, request)
    if done is not None:
        return done
    if current.version != base.version:
        raise PromotionConflict(f"Alias '{model.alias}' of model '{model.name}' now names version "
                                f"'{current.version}', not the base version '{base.version}'; nothing was promoted.",
                                current=current.version)
    check_erasures(objects, model, candidate.version, erasures, "candidate")
    try:
        return Promoted(aliases.promote(objects, model.registry_uri, model.name, model.alias, version=candidate,
                                        expected_token=current.token, request=request))
    except aliases.AliasConflict as err:
        raise PromotionConflict(str(err)) from err
    except aliases.RegistryError as err:
        raise DigestMismatch(str(err)) from err


def rollback_promotion(objects: Objects, model: ModelSpec, base: ModelVersionStatus,
                       candidate: aliases.VerifiedVersion, request: aliases.RequestRef,
                       erasures: Sequence[LedgerEntry] = ()) -> str:
    """Move the alias back from ``candidate`` to ``base`` (hashed again) after ``request`` promoted it
    and the rollout failed; never raises, and never moves it to a ``base`` that does not descend from
    every one of ``erasures``. Returns a sentence saying what the alias names now."""
    where = f"Alias '{model.alias}' of model '{model.name}'"
    try:
        current = aliases.resolve_alias(objects, model.registry_uri, model.name, model.alias)
        if current.version != candidate.version or current.record.request != request:
            return f"{where} names version '{current.version}', set by someone else; it was left as it is."
        check_erasures(objects, model, base.version, erasures, "base version")
        verified = aliases.verify_version(objects, model.registry_uri, model.name, base.version)
        if verified.sha256 != base.sha256:
            return (f"{where} was not moved back: version '{base.version}' no longer has the sha256 it was "
                    f"accepted with; it names '{candidate.version}'.")
        aliases.promote(objects, model.registry_uri, model.name, model.alias, version=verified,
                        expected_token=current.token, request=request)
    except PreErasureVersion as err:
        return f"{where} was not moved back: {err.message} It names '{candidate.version}'."
    except (aliases.RegistryError, StorageError) as err:
        return f"{where} could not be moved back to version '{base.version}' ({err}); it names '{candidate.version}'."
    return f"{where} was moved back to version '{base.version}'."

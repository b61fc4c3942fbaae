"""Promoting a request's verified candidate (:mod:`~forgetmi_operator.lifecycle.conclude` decided to):
the alias, the serving target, the forget ledger's entry, and the retirement of the base version's
reference models. Nothing is changed until the checks that can fail have passed; a rollout that fails
after the alias moved moves it back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from forgetmi_operator.api import conditions as cond
from forgetmi_operator.api import failpoints
from forgetmi_operator.api.errors import OperatorError, ServingTargetError, storage_call
from forgetmi_operator.lifecycle import erasures, receipts
from forgetmi_operator.lifecycle.ports import Ports
from forgetmi_operator.lifecycle.steps import Step, with_condition
from forgetmi_operator.lifecycle.verdict import Verdict
from forgetmi_operator.registry import promotion, references
from forgetmi_operator.registry.aliases import RequestRef
from forgetmi_operator.registry.paths import references_uri
from forgetmi_trainer.errors import StorageError

log = logging.getLogger(__name__)


async def promote(ports: Ports, body: Mapping[str, Any], verdict: Verdict, step: Step,
                  forget: list[str]) -> receipts.Promotion:
    """Move the alias to the candidate and re-point the serving target (undo the alias if that fails),
    then record the erasure of ``forget`` in the model's forget ledger (docs/ledger.md). A request of a
    batch moves the alias, and records the erasure, as its batch's leader (``verdict.owner``): the batch's
    first request to conclude does both, the others find them done (docs/coalescing.md).

    The ledger key and the ledger are read, the ledger's chain checked and the candidate's descent from
    every earlier erasure verified (PreErasureVersion) before the alias moves; the entry is appended only
    after the rollout succeeded, so every entry is a promotion that took effect. A crash in between
    leaves the request unconcluded: its conclusion runs again, finds the promotion done, and appends the
    entry, once (a request's uid is never appended twice); until then `forgetmi ledger verify` reports
    the alias record whose request has no entry."""
    meta, spec, base, candidate = body["metadata"], verdict.spec, verdict.base, verdict.candidate
    skipped = await ports.targets.check(spec, meta["namespace"])
    key = await ports.ledger_key()
    earlier = await storage_call(erasures.read_erasures, verdict.objects, spec.model)
    ref = verdict.owner
    failpoints.reach("before-alias-write")
    done = await storage_call(promotion.promote_candidate, verdict.objects, spec.model, base, candidate, ref,
                              earlier)
    failpoints.reach("after-alias-write")
    record = done.record
    if done.moved_on_to is None:
        try:
            await ports.targets.point(spec, meta["namespace"], candidate.uri)
        except OperatorError as err:
            undone = await storage_call(promotion.rollback_promotion, verdict.objects, spec.model, base, candidate,
                                        ref, earlier)
            raise ServingTargetError(f"{err.message} The rollout was undone: {undone}") from err
        message = f"Alias '{spec.model.alias}' of model {spec.model.name} now names version {candidate.version} " \
                  f"(was {base.version})."
    else:  # promoted before a restart, then moved on by another promotion: the target is left to that one
        skipped = None
        message = (f"Alias '{spec.model.alias}' of model {spec.model.name} was moved to version {candidate.version} "
                   f"(was {base.version}) by this request and has since been moved on to {done.moved_on_to}; "
                   "the serving target was left as that later promotion set it.")
    message += await _record_erasure(key, verdict, ref, forget, step)
    retired = await _retire_references(verdict)
    if retired:
        message += f" {retired}"
        step.events.append(("Normal", "ReferencesRetired", retired))
    if skipped:
        message += f" {skipped}"
        step.events.append(("Warning", "ServingTargetSkipped", skipped))
    with_condition(body, step, "Promoted", "True", cond.PROMOTED, message)
    step.events.append(("Normal", cond.PROMOTED, message))
    return receipts.Promotion(alias=spec.model.alias, version=record.version, previous=record.previous,
                              moved_on_to=done.moved_on_to)


async def _record_erasure(key: bytes | None, verdict: Verdict, ref: RequestRef, forget: list[str],
                          step: Step) -> str:
    """Append the request's ledger entry after its promotion took effect; a sentence for the Promoted
    condition. Without a ledger key nothing is written (a warning is logged). An entry that cannot be
    written for good does not undo the promotion: it stands, and the condition says so."""
    model = verdict.spec.model
    if key is None:
        log.warning("%s/%s promoted version %s of model %s without a forget ledger key: no ledger entry was written, "
                    "so later runs cannot leave its patients out of training.", ref.namespace, ref.name,
                    verdict.candidate.version, model.name)
        return ""
    try:
        entry = await storage_call(erasures.record_erasure, verdict.objects, model, ref, forget, key,
                                   verdict.base.version, verdict.candidate.version)
    except OperatorError as err:
        if err.retryable:
            raise
        step.events.append(("Warning", err.reason, err.message))
        return f" No forget ledger entry: {err.message}"
    return f" Forget ledger entry {entry.seq} records its {entry.count} subjects."


async def _retire_references(verdict: Verdict) -> str | None:
    """After a promotion: delete the base version's reference models, trained on the patients just
    forgotten (best effort: a failure is logged and said, never undoes the promotion). A sentence
    for the Promoted condition, None when the base version had none."""
    model, version = verdict.spec.model, verdict.base.version
    where = references_uri(model.registry_uri, model.name, version)
    try:
        count = await storage_call(references.retire_references, verdict.objects, model.registry_uri, model.name,
                                   version)
    except (OperatorError, StorageError) as err:
        log.warning("The reference models in %s could not be retired: %s", where, err)
        return (f"The reference models of version {version} ({where}) were trained on the forgotten patients but "
                f"could not be retired ({err}); delete them by hand.")
    if not count:
        return None
    log.info("Retired %d reference objects in %s after promoting past version %s.", count, where, version)
    return (f"The reference models of version {version} were retired ({count} objects under {where} deleted): "
            "they were trained on the forgotten patients.")

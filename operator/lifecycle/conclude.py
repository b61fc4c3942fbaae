"""The second half of a request's lifecycle, alike in a cluster and in ``forgetmi run``: once a
trainer run wrote its report, verify it, evaluate the gates, decide, act, and write the receipt.

:func:`conclude` reads the report (it must come from this request's run: the pinned base, the
candidate version its run builds), re-hashes the candidate, evaluates every gate and decides
(:mod:`~forgetmi_operator.lifecycle.decisions`); then it promotes (the alias with a conditional
write, then the serving target through the :class:`~forgetmi_operator.lifecycle.ports.ServingTargets`
port; the base version's reference models are retired, as they were trained on the patients just
forgotten; the erasure is appended to the model's forget ledger, docs/ledger.md), waits for
approval, ends a dry run, holds, or starts a retrain run through the
:class:`~forgetmi_operator.lifecycle.ports.Trainers` port; a decision that ends the request writes
its receipt (:mod:`~forgetmi_operator.lifecycle.receipts`) next to the report.

Nothing is changed until every check that can fail has passed: the report's lineage, the forget
list, the HMAC and signing keys the receipt needs, and the serving target. A rollout that still fails after
the alias moved moves the alias back. A non-retryable error after the gates keeps the evaluation in
the status (gates, metrics, candidate) and ends the request not promoted; a retryable one is raised,
and the whole conclusion is tried again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from forgetmi_operator.api import conditions as cond
from forgetmi_operator.api import naming
from forgetmi_operator.api.errors import OperatorError, ServingTargetError, SubjectsError, storage_call
from forgetmi_operator.api.spec import UnlearnRequestSpec, parse_spec
from forgetmi_operator.api.status import ArtifactStatus, GateStatus, MetricsStatus, ModelVersionStatus
from forgetmi_operator.lifecycle import erasures, gates, receipts, subjects
from forgetmi_operator.lifecycle.decisions import Decision, decide, is_approved
from forgetmi_operator.lifecycle.ports import Ports
from forgetmi_operator.lifecycle.steps import Step, with_condition
from forgetmi_operator.registry import artifacts, promotion, references
from forgetmi_operator.registry.aliases import RequestRef, VerifiedVersion
from forgetmi_operator.registry.paths import RequestPaths, references_uri, request_paths
from forgetmi_trainer.contract import Report, now
from forgetmi_trainer.errors import StorageError
from forgetmi_trainer.storage import Objects

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """A conclusion: the step to apply, and what the metrics of the operator count."""

    step: Step
    decision: Decision
    gates: list[GateStatus]
    mia: float | None
    test_auc_drop: float | None
    report: Report


@dataclass(frozen=True)
class _Verdict:
    """What a verified report says about a request, and what was decided."""

    objects: Objects
    spec: UnlearnRequestSpec
    base: ModelVersionStatus
    candidate: VerifiedVersion
    report: Report
    report_ref: ArtifactStatus
    paths: RequestPaths
    gates: list[GateStatus]
    metrics: MetricsStatus
    decision: Decision


async def conclude(ports: Ports, body: Mapping[str, Any]) -> Outcome:
    """Conclude the run named by ``status.jobName`` of the request in ``body`` (see the module docstring)."""
    verdict = await _verdict(ports, body)
    step = Step()
    mia = gates.metric_value(verdict.report.unlearned, "mia")
    drop = gates.metric_drop(verdict.report, "testAUC")
    job = (body.get("status") or {})["jobName"]
    step.status.update(
        candidateModel=artifacts.candidate_status(verdict.candidate).model_dump(by_alias=True, exclude_none=True),
        # Unmeasured metrics are written as null, which a merge patch removes: a retrain's status
        # never keeps a value from the first attempt's report.
        metrics=verdict.metrics.model_dump(by_alias=True),
        gates=[gate.model_dump(by_alias=True, exclude_none=True) for gate in verdict.gates],
        report=verdict.report_ref.model_dump(by_alias=True), mia=mia, testAucDrop=drop,
        attackAuc=gates.metric_value(verdict.report.unlearned, "attackAUC"),
    )
    with_condition(body, step, "Unlearned", "True", cond.JOB_SUCCEEDED, f"Job {job} completed.")
    step.events.append(("Normal", cond.JOB_SUCCEEDED, f"Job {job} completed."))
    passed = gates.all_passed(verdict.gates)
    inconclusive = any(gate.result == "Inconclusive" for gate in verdict.gates)
    reason = cond.GATES_PASSED if passed else cond.GATES_INCONCLUSIVE if inconclusive else cond.GATES_FAILED
    with_condition(body, step, "GatesPassed", "True" if passed else "False", reason, gates.summary(verdict.gates))
    step.events.append(("Normal" if passed else "Warning", reason, gates.summary(verdict.gates)))
    try:
        await _act(ports, body, verdict, step)
    except OperatorError as err:
        if err.retryable:
            raise
        with_condition(body, step, "Promoted", "False", err.reason, err.message)
        step.status["completionTime"] = now()
        step.events.append(("Warning", err.reason, err.message))
    return Outcome(step, verdict.decision, verdict.gates, mia, drop, verdict.report)


async def _verdict(ports: Ports, body: Mapping[str, Any]) -> _Verdict:
    """Read and verify the report of the request's current run, evaluate the gates and decide."""
    meta, status = body["metadata"], body.get("status") or {}
    spec = parse_spec(body.get("spec") or {})
    kind = naming.job_kind(meta["name"], meta["uid"], status["jobName"])
    paths = request_paths(spec.model.registry_uri, spec.model.name, meta["uid"], kind=kind)
    base = ModelVersionStatus.model_validate(status["baseModel"])
    objects = await ports.storage_for(body)
    report, report_ref = await storage_call(artifacts.load_report, objects, paths.report,
                                            request=f"{meta['namespace']}/{meta['name']}",
                                            max_bytes=ports.settings.report_max_bytes)
    artifacts.check_lineage(report, base, naming.candidate_version(base.version, meta["uid"], kind=kind))
    candidate = await storage_call(artifacts.verify_candidate, objects, report, registry=spec.model.registry_uri,
                                   model=spec.model.name)
    statuses = gates.evaluate_gates(gates.effective_gates(spec.gates, ports.settings.default_gates), report)
    decision = decide(spec.rollout.mode, statuses, is_approved(meta.get("annotations")), spec.rollout.on_gate_failure,
                      retrained=kind == "retrain")
    return _Verdict(objects, spec, base, candidate, report, report_ref, paths, statuses, gates.metrics_status(report),
                    decision)


async def _act(ports: Ports, body: Mapping[str, Any], verdict: _Verdict, step: Step) -> None:
    """Act on the decision into ``step``; raises OperatorError before any change when a check fails."""
    decision = verdict.decision
    forget: list[str] = []
    if decision.terminal or decision == Decision.RETRAIN:  # what the receipt or the retrain needs, read first
        forget, where = await subjects.read_snapshot(ports.secrets, body)
        if len(forget) != verdict.report.counts.subjects:
            raise SubjectsError(f"{where} holds {len(forget)} subjects, but the Job's report counts "
                                f"{verdict.report.counts.subjects}: nothing was promoted. Create a new request.")
    key = await ports.receipt_key() if decision.terminal else None
    signing_key = await ports.signing_key() if decision.terminal else None  # a bad key fails before any change
    moved: receipts.Promotion | None = None
    if decision == Decision.PROMOTE:
        moved = await _promote(ports, body, verdict, step, forget)
    elif decision == Decision.RETRAIN:
        await _retrain(ports, body, verdict, step)
    else:
        _announce(body, verdict, step)
    if decision.terminal:
        await _write_receipt(body, verdict, step, receipts.subjects_hmac(forget, key), moved, signing_key)


async def _promote(ports: Ports, body: Mapping[str, Any], verdict: _Verdict, step: Step,
                   forget: list[str]) -> receipts.Promotion:
    """Move the alias to the candidate and re-point the serving target (undo the alias if that fails),
    then record the erasure of ``forget`` in the model's forget ledger (docs/ledger.md).

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
    ref = RequestRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])
    record = await storage_call(promotion.promote_candidate, verdict.objects, spec.model, base, candidate, ref,
                                earlier)
    try:
        await ports.targets.point(spec, meta["namespace"], candidate.uri)
    except OperatorError as err:
        undone = await storage_call(promotion.rollback_promotion, verdict.objects, spec.model, base, candidate, ref,
                                    earlier)
        raise ServingTargetError(f"{err.message} The rollout was undone: {undone}") from err
    message = (f"Alias '{spec.model.alias}' of model {spec.model.name} now names version {candidate.version} "
               f"(was {base.version}).{await _record_erasure(key, verdict, ref, forget, step)}")
    retired = await _retire_references(verdict)
    if retired:
        message += f" {retired}"
        step.events.append(("Normal", "ReferencesRetired", retired))
    if skipped:
        message += f" {skipped}"
        step.events.append(("Warning", "ServingTargetSkipped", skipped))
    with_condition(body, step, "Promoted", "True", cond.PROMOTED, message)
    step.events.append(("Normal", cond.PROMOTED, message))
    return receipts.Promotion(alias=spec.model.alias, version=record.version, previous=record.previous)


async def _record_erasure(key: bytes | None, verdict: _Verdict, ref: RequestRef, forget: list[str],
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


async def _retire_references(verdict: _Verdict) -> str | None:
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


def _announce(body: Mapping[str, Any], verdict: _Verdict, step: Step) -> None:
    """The decisions that change nothing: await approval, end a dry run, hold."""
    request = naming.describe(body)
    if verdict.decision == Decision.AWAIT_APPROVAL:
        message = f"{request} passed its gates and waits for the annotation unlearning.forgetmi.io/approved=true."
        with_condition(body, step, "Promoted", "Unknown", cond.AWAITING_APPROVAL, message)
        step.events.append(("Normal", cond.AWAITING_APPROVAL, message))
    elif verdict.decision == Decision.DRY_RUN_DONE:
        message = f"{request} is a dry run; version {verdict.candidate.version} was not promoted."
        with_condition(body, step, "Promoted", "False", cond.DRY_RUN, message)
        step.events.append(("Normal", cond.DRY_RUN, message))
    else:
        with_condition(body, step, "Promoted", "False", cond.GATES_NOT_PASSED,
                       f"{request} is held: {gates.summary(verdict.gates)} Nothing was promoted.")
        step.events.append(("Warning", "Held", f"{request} is held; alias '{verdict.spec.model.alias}' still names "
                                               f"version {verdict.base.version}."))


async def _retrain(ports: Ports, body: Mapping[str, Any], verdict: _Verdict, step: Step) -> None:
    """Start the retrain run without the patients (``onGateFailure: Retrain``)."""
    started = await ports.trainers.start(body, verdict.spec, verdict.base.version, "retrain")
    step.status.update(jobName=started.job_name, attempts=int((body.get("status") or {}).get("attempts") or 1) + 1)
    with_condition(body, step, "Promoted", "Unknown", cond.RETRAINING,
                   f"The gates did not pass; retraining without the subjects in Job {started.job_name}.")
    with_condition(body, step, "Unlearned", "Unknown", cond.JOB_PENDING, started.waiting)
    if started.created:
        step.events.append(("Normal", "JobCreated", started.event))


async def _write_receipt(body: Mapping[str, Any], verdict: _Verdict, step: Step, digest: str | None,
                         moved: receipts.Promotion | None, signing_key: bytes | None = None) -> None:
    """Write the receipt of a decision that ends the request (signed, a DSSE envelope, with
    ``signing_key``). When the alias already moved, a receipt that cannot be written does not undo
    the promotion: it stands, and the condition says so."""
    meta = body["metadata"]
    completed = now()
    step.status["completionTime"] = completed
    receipt = receipts.build_receipt(
        uid=meta["uid"], name=meta["name"], namespace=meta["namespace"], subject_count=verdict.report.counts.subjects,
        subjects_digest=digest, method=verdict.report.method, mode=verdict.spec.rollout.mode, base=verdict.base,
        candidate=artifacts.candidate_status(verdict.candidate), report=verdict.report_ref, metrics=verdict.metrics,
        gates=verdict.gates,
        decision=verdict.decision, created=meta.get("creationTimestamp") or completed, completed=completed,
        promotion=moved)
    try:
        written = await storage_call(artifacts.write_receipt, verdict.objects, verdict.paths.receipt,
                                     receipts.stored_receipt(receipt, model=verdict.spec.model.name,
                                                             signing_key=signing_key))
    except OperatorError as err:
        if err.retryable or moved is None:
            raise
        promoted = cond.get_condition(step.status["conditions"], "Promoted") or {}
        with_condition(body, step, "Promoted", "True", cond.PROMOTED,
                       f"{promoted.get('message', '')} No receipt: {err.message}".strip())
        step.events.append(("Warning", err.reason, err.message))
        return
    step.status["receipt"] = written.model_dump(by_alias=True)

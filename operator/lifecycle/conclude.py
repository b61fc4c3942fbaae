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
from forgetmi_operator.api import failpoints, naming
from forgetmi_operator.api.errors import OperatorError, PromotionConflict, SubjectsError, storage_call
from forgetmi_operator.api.spec import parse_spec
from forgetmi_operator.api.status import GateStatus, ModelVersionStatus
from forgetmi_operator.lifecycle import batches, batchlists, gates, rebase, receipts, subjects
from forgetmi_operator.lifecycle.decisions import Decision, decide, is_approved
from forgetmi_operator.lifecycle.ports import Ports
from forgetmi_operator.lifecycle.promote import promote
from forgetmi_operator.lifecycle.steps import Step, with_condition
from forgetmi_operator.lifecycle.verdict import Verdict
from forgetmi_operator.registry import artifacts
from forgetmi_operator.registry.aliases import RequestRef
from forgetmi_operator.registry.paths import request_paths
from forgetmi_trainer.contract import Report, now

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


async def _verdict(ports: Ports, body: Mapping[str, Any]) -> Verdict:
    """Read and verify the report of the request's current run (its batch's, for a coalesced request),
    evaluate the gates and decide. A batch's gates fail into Held: a shared run is never retrained."""
    meta, status = body["metadata"], body.get("status") or {}
    spec = parse_spec(body.get("spec") or {})
    owner_name, owner_uid = batches.run_owner(body)
    kind, rebase = naming.job_run(owner_name, owner_uid, status["jobName"])
    paths = request_paths(spec.model.registry_uri, spec.model.name, owner_uid, kind=kind, rebase=rebase)
    base = ModelVersionStatus.model_validate(status["baseModel"])
    objects = await ports.storage_for(body)
    report, report_ref = await storage_call(artifacts.load_report, objects, paths.report,
                                            request=f"{meta['namespace']}/{owner_name}",
                                            max_bytes=ports.settings.report_max_bytes)
    artifacts.check_lineage(report, base, naming.candidate_version(base.version, owner_uid, kind=kind,
                                                                   rebase=rebase))
    candidate = await storage_call(artifacts.verify_candidate, objects, report, registry=spec.model.registry_uri,
                                   model=spec.model.name)
    statuses = gates.evaluate_gates(gates.effective_gates(spec.gates, ports.settings.default_gates), report)
    shared = batches.in_shared_run(body)
    decision = decide(spec.rollout.mode, statuses, is_approved(meta.get("annotations")),
                      "Hold" if shared else spec.rollout.on_gate_failure, retrained=kind == "retrain")
    receipt_uri = request_paths(spec.model.registry_uri, spec.model.name, meta["uid"], kind=kind).receipt
    return Verdict(objects, spec, base, candidate, report, report_ref, paths, receipt_uri,
                   RequestRef(namespace=meta["namespace"], name=owner_name, uid=owner_uid), batches.batch_of(body),
                   statuses, gates.metrics_status(report), decision)


def _check_counts(verdict: Verdict, forget: list[str], where: str) -> None:
    """The report must count the subjects the request's run forgot: its own list, or its batch's union
    (which holds its list); SubjectsError, before anything changes, otherwise."""
    counted = verdict.report.counts.subjects
    batch = verdict.batch
    if verdict.shared and batch is not None:
        if batch.subject_count != counted or len(forget) > counted:
            raise SubjectsError(f"The batch's forget set holds {batch.subject_count} subjects and {where} "
                                f"{len(forget)}, but the Job's report counts {counted}: nothing was promoted. "
                                "Create a new request.")
    elif len(forget) != counted:
        raise SubjectsError(f"{where} holds {len(forget)} subjects, but the Job's report counts "
                            f"{counted}: nothing was promoted. Create a new request.")


async def _act(ports: Ports, body: Mapping[str, Any], verdict: Verdict, step: Step) -> None:
    """Act on the decision into ``step``; raises OperatorError before any change when a check fails."""
    decision = verdict.decision
    forget: list[str] = []
    if decision.terminal or decision == Decision.RETRAIN:  # what the receipt or the retrain needs, read first
        forget, where = await subjects.read_snapshot(ports.secrets, body)
        _check_counts(verdict, forget, where)
    key = await ports.receipt_key() if decision.terminal else None
    signing_key = await ports.signing_key() if decision.terminal else None  # a bad key fails before any change
    moved: receipts.Promotion | None = None
    held: OperatorError | None = None
    if decision == Decision.PROMOTE:
        erased = await batchlists.read_union(ports.secrets, body) if verdict.shared else forget
        try:
            moved = await promote(ports, body, verdict, step, erased)
        except PromotionConflict as err:
            if await rebase.rebase(ports, body, verdict, step, err):
                return
            held = err
        except OperatorError as err:
            if err.retryable:
                raise
            held = err
    elif decision == Decision.RETRAIN:
        await _retrain(ports, body, verdict, step)
    else:
        _announce(body, verdict, step)
    if decision.terminal:
        batch = await _batch_info(ports, body, verdict, forget)
        await _write_receipt(body, verdict, step, receipts.subjects_hmac(forget, key), moved, signing_key, batch,
                             _not_promoted(verdict, step, held))
    if held is not None:  # the receipt says why; the conclusion records it as the request's end
        raise held


def _not_promoted(verdict: Verdict, step: Step, held: OperatorError | None) -> receipts.NotPromoted | None:
    """Why a request that ends here was not promoted (the receipt says it): the error that stopped its
    promotion, else its Promoted condition (held on its gates, a dry run)."""
    if held is not None:
        return receipts.NotPromoted(reason=held.reason, message=held.message)
    if verdict.decision == Decision.PROMOTE:
        return None
    promoted = cond.get_condition(step.status.get("conditions") or [], "Promoted") or {}
    return receipts.NotPromoted(reason=str(promoted.get("reason") or verdict.decision.value),
                                message=str(promoted.get("message") or ""))


async def _batch_info(ports: Ports, body: Mapping[str, Any], verdict: Verdict,
                      forget: list[str]) -> receipts.BatchInfo | None:
    """What the receipt of a request that shared its run says of the batch: the shared Job, its leader,
    its requests, the size of their union, and those deleted since its Job was created."""
    batch = verdict.batch
    if not verdict.shared or batch is None or batch.leader is None:
        return None
    namespace = body["metadata"]["namespace"]
    present = await ports.present(namespace, [(ref.name, ref.uid) for ref in batch.requests])

    def info(name: str, uid: str) -> receipts.RequestInfo:
        return receipts.RequestInfo(uid=uid, name=name, namespace=namespace)

    return receipts.BatchInfo(own_count=len(forget), job=batch.job_name or body["status"]["jobName"],
                              leader=info(batch.leader.name, batch.leader.uid),
                              requests=[info(ref.name, ref.uid) for ref in batch.requests],
                              subject_count=batch.subject_count or 0,
                              withdrawn=[info(ref.name, ref.uid) for ref in batch.requests if ref.uid not in present])


def _announce(body: Mapping[str, Any], verdict: Verdict, step: Step) -> None:
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


async def _retrain(ports: Ports, body: Mapping[str, Any], verdict: Verdict, step: Step) -> None:
    """Start the retrain run without the patients (``onGateFailure: Retrain``)."""
    started = await ports.trainers.start(body, verdict.spec, verdict.base.version, "retrain")
    step.status.update(jobName=started.job_name, attempts=int((body.get("status") or {}).get("attempts") or 1) + 1)
    with_condition(body, step, "Promoted", "Unknown", cond.RETRAINING,
                   f"The gates did not pass; retraining without the subjects in Job {started.job_name}.")
    with_condition(body, step, "Unlearned", "Unknown", cond.JOB_PENDING, started.waiting)
    if started.created:
        step.events.append(("Normal", "JobCreated", started.event))


async def _write_receipt(body: Mapping[str, Any], verdict: Verdict, step: Step, digest: str | None,
                         moved: receipts.Promotion | None, signing_key: bytes | None = None,
                         batch: receipts.BatchInfo | None = None,
                         not_promoted: receipts.NotPromoted | None = None) -> None:
    """Write the receipt of a decision that ends the request (signed, a DSSE envelope, with
    ``signing_key``). When the alias already moved, a receipt that cannot be written does not undo
    the promotion: it stands, and the condition says so."""
    meta = body["metadata"]
    completed = now()
    step.status["completionTime"] = completed
    receipt = receipts.build_receipt(
        uid=meta["uid"], name=meta["name"], namespace=meta["namespace"],
        subject_count=batch.own_count if batch is not None else verdict.report.counts.subjects,
        subjects_digest=digest, method=verdict.report.method, mode=verdict.spec.rollout.mode, base=verdict.base,
        candidate=artifacts.candidate_status(verdict.candidate), report=verdict.report_ref, metrics=verdict.metrics,
        gates=verdict.gates,
        decision=verdict.decision, created=meta.get("creationTimestamp") or completed, completed=completed,
        promotion=moved, batch=batch, not_promoted=not_promoted,
        rebases=int((body.get("status") or {}).get("rebases") or 0))
    try:
        written = await storage_call(artifacts.write_receipt, verdict.objects, verdict.receipt_uri,
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
    failpoints.reach("after-receipt")
    step.status["receipt"] = written.model_dump(by_alias=True)

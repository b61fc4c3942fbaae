"""Rebasing a request that lost the promotion race (docs/rebase.md), alike in a cluster and in
``forgetmi run``.

A request's candidate is built from the base version its alias named when it was accepted; the alias
moves with a conditional write, so when another promotion moved it on meanwhile, this promotion is
refused (``PromotionConflict``) and nothing is overwritten. With ``spec.rollout.onConflict: Rebase``
(the default) the request is then run again on the version the alias names now, up to
``spec.rollout.maxRebases`` times: it is accepted again on that version (the forget list is its copy,
never the referenced list read again; the forget ledger as it is now, so the patients the winning
request erased are left out of this run's training too), and its next run is started — or joins a
batch where coalescing is on — under names of its own (``-b<n>``: Job, ConfigMap, copy of the list,
candidate version, report folder). ``status.rebases`` counts them; the Promoted condition says
``Rebasing`` and a ``Rebased`` Event is posted. The lost run's evaluation is removed from the status;
its candidate stays in the registry, never named by an alias. A request that may not rebase (Hold, the
limit reached, or accepting it again failed) ends held with a receipt saying why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from forgetmi_operator.api import conditions as cond
from forgetmi_operator.api import naming
from forgetmi_operator.api.errors import OperatorError, PromotionConflict
from forgetmi_operator.lifecycle import batches, launch
from forgetmi_operator.lifecycle.ports import Ports
from forgetmi_operator.lifecycle.steps import Step, merge_patch, with_condition
from forgetmi_operator.lifecycle.verdict import Verdict

STALE = ("candidateModel", "report", "gates", "metrics", "mia", "testAucDrop", "attackAuc")
"""Status fields of the run that lost the race: removed, the next run's evaluation replaces them."""
BATCH_OF_A_RUN = ("leader", "requests", "subjectCount", "jobName")


def may_rebase(verdict: Verdict, rebases: int, err: PromotionConflict) -> str | None:
    """None when the request may be rebased after ``err``, else why not (a sentence)."""
    rollout = verdict.spec.rollout
    if rollout.on_conflict != "Rebase":
        return "spec.rollout.onConflict is Hold, so it is held."
    if rebases >= rollout.max_rebases:
        return f"It was rebased {rebases} times, spec.rollout.maxRebases, so it is held."
    return None


def _moved_to(err: PromotionConflict) -> str:
    return f"version '{err.current}'" if err.current else "the version the alias names now"


async def rebase(ports: Ports, body: Mapping[str, Any], verdict: Verdict, step: Step, err: PromotionConflict) -> bool:
    """Rebase the request after ``err`` into ``step`` (see the module docstring); False, with why not
    added to ``err``'s message, when it may not be or accepting it again failed for good."""
    done = int((body.get("status") or {}).get("rebases") or 0)
    refused = may_rebase(verdict, done, err)
    if refused is not None:
        err.message = f"{err.message} {refused}"
        return False
    spec = verdict.spec
    view = merge_patch(body, {"status": step.status})  # the conditions as the conclusion left them
    gather = ports.gather if batches.coalescible(spec, ports.settings.coalesce_window_seconds) else None
    try:
        launched = await launch.launch(ports, view, gather, rebase=done + 1)
    except OperatorError as failed:
        if failed.retryable:
            raise
        err.message = f"{err.message} Rebasing it on {_moved_to(err)} failed: {failed.message}"
        return False
    step.status.update(dict.fromkeys(STALE))
    step.status.update(launched.status)
    earlier = batches.batch_of(body)
    if "batch" in launched.status:  # gathering with others: no Job of its own yet
        step.status["jobName"] = None
        step.status["batch"] = {**dict.fromkeys(BATCH_OF_A_RUN), **launched.status["batch"]}
    elif earlier is not None:
        step.status["batch"] = None
    new_base = (launched.status.get("baseModel") or {}).get("version", err.current)
    message = (f"{naming.describe(body)} lost the promotion race: alias '{spec.model.alias}' of model "
               f"{spec.model.name} was moved on to version {new_base}, so it runs again on that version "
               f"(rebase {done + 1} of at most {spec.rollout.max_rebases}).")
    with_condition(body, step, "GatesPassed", "Unknown", cond.NOT_EVALUATED,
                   f"{naming.describe(body)} evaluates its gates again on its rebased run.")
    with_condition(body, step, "Promoted", "Unknown", cond.REBASING, message)
    step.events.extend(launched.events)
    step.events.append(("Normal", "Rebased", message))
    return True

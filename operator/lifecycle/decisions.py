"""What to do once the gates are evaluated: a pure function of the rollout mode, the gate
results, the approval annotation and ``onGateFailure``.

Fail closed: only a request whose every gate Passed (and at least one gate exists) can promote.

=============================  ==========================================================
gates all Passed, Automatic    ``Promote``
gates all Passed, Manual       ``Promote`` when approved, else ``AwaitApproval``
gates all Passed, DryRun       ``DryRunDone`` (never promotes)
a gate Failed/Inconclusive     ``Retrain`` when ``onGateFailure: Retrain`` (once: a retrain
                               run's own failing gates give ``Hold``), else ``Hold``;
                               in DryRun ``DryRunDone`` (a dry run launches nothing)
=============================  ==========================================================

An approval never overrides failing gates. A request is approved when its annotation
``unlearning.forgetmi.io/approved`` is ``"true"`` (see :func:`is_approved`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum

from forgetmi_operator.api.patterns import APPROVAL_ANNOTATION, OnGateFailure, RolloutMode
from forgetmi_operator.api.status import GateStatus
from forgetmi_operator.lifecycle.gates import all_passed


class Decision(StrEnum):
    PROMOTE = "Promote"
    AWAIT_APPROVAL = "AwaitApproval"
    DRY_RUN_DONE = "DryRunDone"
    HOLD = "Hold"
    RETRAIN = "Retrain"

    @property
    def terminal(self) -> bool:
        """Whether the request ends here (Promote ends once the promotion is written)."""
        return self in (Decision.PROMOTE, Decision.DRY_RUN_DONE, Decision.HOLD)


def decide(mode: RolloutMode, gate_statuses: Sequence[GateStatus], approved: bool,
           on_gate_failure: OnGateFailure, *, retrained: bool = False) -> Decision:
    """The decision for a request (see the module docstring); ``retrained`` is True when the gate
    results come from a retrain run, which is never retrained again."""
    if mode not in ("Automatic", "Manual", "DryRun"):
        raise ValueError(f"Unknown rollout mode {mode!r}.")
    if on_gate_failure not in ("Hold", "Retrain"):
        raise ValueError(f"Unknown onGateFailure {on_gate_failure!r}.")
    if mode == "DryRun":
        return Decision.DRY_RUN_DONE
    if not all_passed(gate_statuses):
        return Decision.RETRAIN if on_gate_failure == "Retrain" and not retrained else Decision.HOLD
    if mode == "Manual" and not approved:
        return Decision.AWAIT_APPROVAL
    return Decision.PROMOTE


def is_approved(annotations: Mapping[str, str] | None) -> bool:
    """Whether the approval annotation is set to ``"true"`` (case-insensitive, surrounding spaces ignored)."""
    value = (annotations or {}).get(APPROVAL_ANNOTATION)
    return isinstance(value, str) and value.strip().lower() == "true"

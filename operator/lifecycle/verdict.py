"""What a verified report says about a request, and what was decided: the data the conclusion
(:mod:`~forgetmi_operator.lifecycle.conclude`) and the promotion (:mod:`~forgetmi_operator.lifecycle.promote`)
share."""

from __future__ import annotations

from dataclasses import dataclass

from forgetmi_operator.api.spec import UnlearnRequestSpec
from forgetmi_operator.api.status import ArtifactStatus, BatchStatus, GateStatus, MetricsStatus, ModelVersionStatus
from forgetmi_operator.lifecycle.decisions import Decision
from forgetmi_operator.registry.aliases import RequestRef, VerifiedVersion
from forgetmi_operator.registry.paths import RequestPaths
from forgetmi_trainer.contract import Report
from forgetmi_trainer.storage import Objects


@dataclass(frozen=True)
class Verdict:
    """A request's verified report, its gates and decision. ``paths`` are those of the run's owner (the
    request, or its batch's leader: :func:`~forgetmi_operator.lifecycle.batches.run_owner`), whose
    ``owner`` moves the alias and is recorded in the ledger; ``receipt_uri`` is the request's own."""

    objects: Objects
    spec: UnlearnRequestSpec
    base: ModelVersionStatus
    candidate: VerifiedVersion
    report: Report
    report_ref: ArtifactStatus
    paths: RequestPaths
    receipt_uri: str
    owner: RequestRef
    batch: BatchStatus | None
    gates: list[GateStatus]
    metrics: MetricsStatus
    decision: Decision

    @property
    def shared(self) -> bool:
        """Whether the run was a batch's Job shared with other requests."""
        return self.batch is not None and len(self.batch.requests) > 1

"""Promotion gates: pure evaluation of the trainer's report against the request's gates.

Metrics (of the original, the unlearned or the retrained model, from ``report.json``; docs/gates.md
says how to read each):

============  =========================================================================
mia           ``<model>.mia.score`` (the paper's SVC score)
miaAUC        ``<model>.mia.attack_auc_signed`` (loss attack, signed: < 0.5 = over-forgotten)
attackAUC     ``<model>.mia.attack_auc`` (loss attack, two-sided: 0.5 + |signed − 0.5|)
logitNormAUC  ``<model>.mia.logit_norm_auc`` (label-free logit-norm attack, two-sided)
liraTPR5      ``<model>.mia.lira_tpr_at_5pct_fpr`` (offline LiRA, TPR at 5 % FPR)
liraAUC       ``<model>.mia.lira_auc`` (offline LiRA, two-sided)
forgetAUC     ``<model>.split.forget_auc``
forgetF1      ``<model>.split.forget_f1``
testAUC       ``<model>.split.test_auc``
testF1        ``<model>.split.test_f1``
============  =========================================================================

Comparators (``drop`` = original − unlearned, so a positive drop means the metric fell):

- ``atMost`` (reference ``absolute``): passes when unlearned ≤ threshold;
- ``atLeast`` (``absolute``): passes when unlearned ≥ threshold;
- ``maxDrop`` (``original``): passes when drop ≤ threshold ("may drop at most");
- ``minDrop`` (``original``): passes when drop > threshold ("must drop by more than"); with
  threshold 0 the metric must fall at all. maxDrop and minDrop with the same threshold are exact
  complements;
- ``atMost`` with reference ``retrained``: passes when |unlearned − retrained| ≤ threshold, the
  unlearned model's value chosen by ``bound``, the retrained model's its figure. A report without a
  retrained model's figures (``report.retrained``) makes it ``Inconclusive``.

``bound`` picks the unlearned model's value: ``point`` (the default) is the figure itself; ``upper``
and ``lower`` are the ends of its 95 % interval (``<field>_ci`` in the report: a seeded bootstrap over
patients, docs/audit.md). For a drop, the original's figure minus the unlearned model's chosen end.
The conservative end fails a gate a small forget set would pass by luck: ``upper`` for atMost and
minDrop, ``lower`` for atLeast and maxDrop. A gate on a bound whose interval the report lacks (None:
too few patients to resample, or a report from before the intervals) is ``Inconclusive``.

Comparisons allow ``TOLERANCE`` (1e-9) for floating-point rounding, so a drop of exactly the
threshold passes maxDrop and fails minDrop. A metric that was not measured (None, of either model
where needed), or a missing report, makes the gate ``Inconclusive``; Inconclusive never passes, and
an empty list of gates never passes. A report never holds NaN, an infinity or a value outside the
metric's range: the contract's :class:`~forgetmi_trainer.contract.Report` refuses it, so such a
report is ``ReportInvalid`` before any gate sees it.
"""

from __future__ import annotations

from collections.abc import Sequence

from forgetmi_operator.api.patterns import LIRA_METRICS, Bound, GateMetric, GateResult
from forgetmi_operator.api.spec import GateSpec
from forgetmi_operator.api.status import GateStatus, MetricPair, MetricsStatus
from forgetmi_trainer.contract import ModelMetrics, Report

TOLERANCE = 1e-9
METRIC_PATHS: dict[str, tuple[str, str]] = {
    "mia": ("mia", "score"),
    "miaAUC": ("mia", "attack_auc_signed"),
    "attackAUC": ("mia", "attack_auc"),
    "logitNormAUC": ("mia", "logit_norm_auc"),
    "liraTPR5": ("mia", "lira_tpr_at_5pct_fpr"),
    "liraAUC": ("mia", "lira_auc"),
    "forgetAUC": ("split", "forget_auc"),
    "forgetF1": ("split", "forget_f1"),
    "testAUC": ("split", "test_auc"),
    "testF1": ("split", "test_f1"),
}


def metric_value(metrics: ModelMetrics | None, metric: GateMetric, bound: Bound = "point") -> float | None:
    """One metric of one model, or an end of its 95 % interval; None when it was not measured."""
    if metrics is None:
        return None
    group, field = METRIC_PATHS[metric]
    values = getattr(metrics, group)
    if bound == "point":
        value: float | None = getattr(values, field)
        return value
    interval = getattr(values, f"{field}_ci")
    return None if interval is None else float(interval.high if bound == "upper" else interval.low)


def fmt(value: float) -> str:
    """Up to 4 decimals, trailing zeros dropped: 0.9120 → ``0.912``, 1.0 → ``1``."""
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def effective_gates(spec_gates: Sequence[GateSpec], defaults: Sequence[GateSpec]) -> list[GateSpec]:
    """The request's gates, or the operator's defaults when it lists none."""
    return list(spec_gates) if spec_gates else list(defaults)


def needs_references(gates: Sequence[GateSpec]) -> list[str]:
    """The metrics among ``gates`` that need the base version's reference models (LiRA), in order, once."""
    return list(dict.fromkeys(gate.metric for gate in gates if gate.metric in LIRA_METRICS))


def _status(gate: GateSpec, value: float | None, result: GateResult, message: str) -> GateStatus:
    return GateStatus(metric=gate.metric, comparator=gate.comparator, reference=gate.reference, bound=gate.bound,
                      value=None if value is None else round(value, 6), threshold=gate.threshold,
                      result=result, message=message)


def _inconclusive(gate: GateSpec, message: str) -> GateStatus:
    return _status(gate, None, "Inconclusive", message)


def _moved(gate: GateSpec, drop: float, original: float, unlearned: float) -> str:
    metric, to = gate.metric, fmt(unlearned) if gate.bound == "point" else f"{gate.bound} bound {fmt(unlearned)}"
    if abs(drop) <= TOLERANCE:
        return f"{metric} did not change ({fmt(original)} → {to})"
    verb = "dropped" if drop > 0 else "rose"
    return f"{metric} {verb} {fmt(abs(drop))} ({fmt(original)} → {to})"


def _compare_value(gate: GateSpec, unlearned: float) -> GateStatus:
    t, name = gate.threshold, gate.metric if gate.bound == "point" else f"{gate.metric}'s {gate.bound} bound"
    if gate.comparator == "atMost":
        ok = unlearned <= t + TOLERANCE
        tail = "at most" if ok else "above the allowed"
    else:
        ok = unlearned >= t - TOLERANCE
        tail = "at least" if ok else "below the required"
    return _status(gate, unlearned, _result(ok), f"{name} is {fmt(unlearned)}, {tail} {fmt(t)}.")


def _compare_retrained(gate: GateSpec, retrained: ModelMetrics | None, unlearned: float) -> GateStatus:
    reference = metric_value(retrained, gate.metric)
    if reference is None:
        why = ("the report has no retrained model's figures" if retrained is None
               else f"{gate.metric} of the retrained model was not measured")
        return _inconclusive(gate, f"{why}, so the gate on the distance to the retrained model is inconclusive "
                                   "(spec.audit.retrainedVersion names the model the trainer scores).")
    t, distance = gate.threshold, abs(unlearned - reference)
    name = gate.metric if gate.bound == "point" else f"{gate.metric}'s {gate.bound} bound"
    ok = distance <= t + TOLERANCE
    tail = f"within the {fmt(t)} allowed" if ok else f"more than the {fmt(t)} allowed"
    return _status(gate, distance, _result(ok), f"{name} is {fmt(unlearned)}, {fmt(distance)} from the retrained "
                                                f"model's {fmt(reference)}, {tail}.")


def _compare_drop(gate: GateSpec, original: float, unlearned: float) -> GateStatus:
    t, drop = gate.threshold, original - unlearned
    moved = _moved(gate, drop, original, unlearned)
    if gate.comparator == "maxDrop":
        ok = drop <= t + TOLERANCE
        tail = f"at most {fmt(t)} allowed" if ok else f"more than the {fmt(t)} allowed"
    else:
        ok = drop > t + TOLERANCE
        if t == 0:
            tail = "as required" if ok else "but it had to drop"
        else:
            tail = f"more than the required {fmt(t)}" if ok else f"but it had to drop by more than {fmt(t)}"
    return _status(gate, drop, _result(ok), f"{moved}, {tail}.")


def evaluate_gate(gate: GateSpec, report: Report | None) -> GateStatus:
    """One gate against the report (see the module docstring for the exact rules)."""
    if report is None:
        return _inconclusive(gate, f"No report was read, so the {gate.metric} gate is inconclusive.")
    unlearned = metric_value(report.unlearned, gate.metric, gate.bound)
    if unlearned is None and metric_value(report.unlearned, gate.metric) is not None:
        return _inconclusive(gate, f"{gate.metric} of the unlearned model has no 95 % interval, "
                                   f"so the gate on its {gate.bound} bound is inconclusive.")
    if unlearned is None:
        return _inconclusive(gate, f"{gate.metric} of the unlearned model was not measured, "
                                   "so the gate is inconclusive.")
    if gate.reference == "retrained":
        return _compare_retrained(gate, report.retrained, unlearned)
    if gate.comparator in ("atMost", "atLeast"):
        return _compare_value(gate, unlearned)
    original = metric_value(report.original, gate.metric)
    if original is None:
        return _inconclusive(gate, f"{gate.metric} of the original model was not measured, "
                                   "so the gate is inconclusive.")
    return _compare_drop(gate, original, unlearned)


def _result(ok: bool) -> GateResult:
    return "Passed" if ok else "Failed"


def evaluate_gates(gates: Sequence[GateSpec], report: Report | None) -> list[GateStatus]:
    """Every gate, in order, against the report (None: no report, every gate Inconclusive)."""
    return [evaluate_gate(gate, report) for gate in gates]


def all_passed(statuses: Sequence[GateStatus]) -> bool:
    """True only when there is at least one gate and every gate Passed (Inconclusive never passes)."""
    return bool(statuses) and all(status.result == "Passed" for status in statuses)


def summary(statuses: Sequence[GateStatus]) -> str:
    """One sentence for a condition message: how many gates passed and the first that did not."""
    passed = sum(status.result == "Passed" for status in statuses)
    if not statuses:
        return "No gates were evaluated."
    if passed == len(statuses):
        return f"All {passed} gates passed."
    first = next(status for status in statuses if status.result != "Passed")
    return f"{passed} of {len(statuses)} gates passed; {first.metric} {first.result.lower()}: {first.message}"


def metrics_status(report: Report) -> MetricsStatus:
    """The report's metrics as ``status.metrics`` (original vs unlearned, and the retrained model's
    when the report has one; an unmeasured one is null)."""
    pairs = {
        metric: MetricPair(original=metric_value(report.original, metric),
                           unlearned=metric_value(report.unlearned, metric),
                           retrained=metric_value(report.retrained, metric))
        for metric in METRIC_PATHS
    }
    return MetricsStatus.model_validate(pairs)


def metric_drop(report: Report, metric: GateMetric) -> float | None:
    """Original − unlearned value of a metric (``testAUC``: the printer column and the dashboard
    gauge), rounded to 6 decimals; None unless both were measured."""
    original = metric_value(report.original, metric)
    unlearned = metric_value(report.unlearned, metric)
    return None if original is None or unlearned is None else round(original - unlearned, 6)

"""A small factory for trainer ``Report`` objects used by the gate, decision and receipt tests."""

from __future__ import annotations

from typing import Any

from forgetmi_trainer.contract import Report

BASE_SHA = "b" * 64
CANDIDATE_SHA = "c" * 64

ORIGINAL = {"forget_auc": 0.95, "forget_f1": 0.90, "test_auc": 0.91, "test_f1": 0.80,
            "mia": 0.90, "mia_auc": 0.70, "logit_norm_auc": 0.66, "lira_tpr5": 0.33, "lira_auc": 0.75}
UNLEARNED = {"forget_auc": 0.80, "forget_f1": 0.70, "test_auc": 0.90, "test_f1": 0.79,
             "mia": 0.40, "mia_auc": 0.52, "logit_norm_auc": 0.53, "lira_tpr5": 0.06, "lira_auc": 0.54}


Values = dict[str, Any]
"""Metric values by key and ``<key>_ci`` intervals as ``(low, high)``: ``mia`` (the SVC score), ``mia_auc``
(the loss attack's signed AUC), ``attack_auc`` (its two-sided value; by default 0.5 + |mia_auc − 0.5|),
``logit_norm_auc``, ``lira_tpr5``, ``lira_auc`` or a split key. ``attack_auc`` gets an interval of
[value − 0.02, value + 0.06] (within [0.5, 1]) unless ``attack_auc_ci`` is given (``None``: none)."""
SPLIT_KEYS = ("forget_auc", "forget_f1", "test_auc", "test_f1")
MIA_FIELDS = {"mia": "score", "mia_auc": "attack_auc_signed", "attack_auc": "attack_auc",
              "logit_norm_auc": "logit_norm_auc", "lira_tpr5": "lira_tpr_at_5pct_fpr", "lira_auc": "lira_auc"}
"""Values key → MiaResult field."""


def _interval(values: Values, key: str) -> dict[str, float] | None:
    ci = values.get(f"{key}_ci")
    return None if ci is None else {"low": ci[0], "high": ci[1]}


def two_sided(signed: float | None) -> float | None:
    return None if signed is None else round(0.5 + abs(signed - 0.5), 12)


def _model(values: Values) -> dict[str, object]:
    values = {"attack_auc": two_sided(values.get("mia_auc")), **values}
    if "attack_auc_ci" not in values and values["attack_auc"] is not None:  # the default gate reads its upper end
        values["attack_auc_ci"] = (max(0.5, values["attack_auc"] - 0.02), min(1.0, values["attack_auc"] + 0.06))
    split = {key: values[key] for key in SPLIT_KEYS} | {f"{key}_ci": _interval(values, key) for key in SPLIT_KEYS}
    mia: dict[str, object] = {"tpr_at_1pct_fpr": 0.01}
    for key, field in MIA_FIELDS.items():
        mia |= {field: values.get(key), f"{field}_ci": _interval(values, key)}
    return {"split": split, "mia": mia}


def make_report(original: Values | None = None, unlearned: Values | None = None,
                retrained: Values | None = None) -> Report:
    """A report whose metrics are ``ORIGINAL``/``UNLEARNED`` updated with the given values; ``<key>_ci``
    (a ``(low, high)`` pair) adds the 95 % interval of ``<key>`` (none by default). ``retrained`` adds a
    retrained model's metrics (``UNLEARNED`` updated with it); without it the report has none."""
    return Report.model_validate({
        "request": "radiology/forget-request-0042",
        "method": "forget-mi",
        "base": {"uri": "s3://models/registry/cxr/versions/v7", "sha256": BASE_SHA},
        "candidate": {"uri": "s3://models/registry/cxr/versions/v7-unlearned-0b3f9c2e", "sha256": CANDIDATE_SHA},
        "candidate_version": "v7-unlearned-0b3f9c2e",
        "original": _model({**ORIGINAL, **(original or {})}),
        "unlearned": _model({**UNLEARNED, **(unlearned or {})}),
        "retrained": None if retrained is None else _model({**UNLEARNED, **retrained}),
        "selection": {"rule": "FixedEpoch", "epoch": 30, "epochs_run": 30},
        "counts": {"subjects": 3, "forget_samples": 12, "retain_samples": 400, "test_samples": 100},
        "timings": {"load_seconds": 1.0, "unlearn_seconds": 20.0, "eval_seconds": 5.0, "total_seconds": 26.0},
        "environment": {"device": "cpu", "precision": "fp32", "torch_version": "2.13.0",
                        "transformers_version": "4.50.0", "trainer_version": "0.1.0"},
        "started_at": "2025-01-01T12:00:00Z",
        "finished_at": "2025-01-01T12:00:26Z",
    })

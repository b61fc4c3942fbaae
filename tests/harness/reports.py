"""A small factory for trainer ``Report`` objects used by the gate, decision and receipt tests."""

from __future__ import annotations

from typing import Any

from forgetmi_trainer.contract import Report

BASE_SHA = "b" * 64
CANDIDATE_SHA = "c" * 64

ORIGINAL = {"forget_auc": 0.95, "forget_f1": 0.90, "test_auc": 0.91, "test_f1": 0.80,
            "mia": 0.90, "mia_auc": 0.70}
UNLEARNED = {"forget_auc": 0.80, "forget_f1": 0.70, "test_auc": 0.90, "test_f1": 0.79,
             "mia": 0.40, "mia_auc": 0.52}


Values = dict[str, Any]
"""Metric values by key (``mia``, ``mia_auc`` or a split key), and ``<key>_ci`` intervals as ``(low, high)``."""
SPLIT_KEYS = ("forget_auc", "forget_f1", "test_auc", "test_f1")


def _interval(values: Values, key: str) -> dict[str, float] | None:
    ci = values.get(f"{key}_ci")
    return None if ci is None else {"low": ci[0], "high": ci[1]}


def _model(values: Values) -> dict[str, object]:
    split = {key: values[key] for key in SPLIT_KEYS} | {f"{key}_ci": _interval(values, key) for key in SPLIT_KEYS}
    return {
        "split": split,
        "mia": {"score": values["mia"], "score_ci": _interval(values, "mia"), "balanced_score": values["mia"],
                "attack_auc": values["mia_auc"], "attack_auc_ci": _interval(values, "mia_auc"),
                "tpr_at_1pct_fpr": 0.01},
    }


def make_report(original: Values | None = None, unlearned: Values | None = None) -> Report:
    """A report whose metrics are ``ORIGINAL``/``UNLEARNED`` updated with the given values; ``<key>_ci``
    (a ``(low, high)`` pair) adds the 95 % interval of ``<key>`` (none by default)."""
    return Report.model_validate({
        "request": "radiology/forget-request-0042",
        "method": "forget-mi",
        "base": {"uri": "s3://models/registry/cxr/versions/v7", "sha256": BASE_SHA},
        "candidate": {"uri": "s3://models/registry/cxr/versions/v7-unlearned-0b3f9c2e", "sha256": CANDIDATE_SHA},
        "candidate_version": "v7-unlearned-0b3f9c2e",
        "original": _model({**ORIGINAL, **(original or {})}),
        "unlearned": _model({**UNLEARNED, **(unlearned or {})}),
        "selection": {"rule": "FixedEpoch", "epoch": 30, "epochs_run": 30},
        "counts": {"subjects": 3, "forget_samples": 12, "retain_samples": 400, "test_samples": 100},
        "timings": {"load_seconds": 1.0, "unlearn_seconds": 20.0, "eval_seconds": 5.0, "total_seconds": 26.0},
        "environment": {"device": "cpu", "precision": "fp32", "torch_version": "2.13.0",
                        "transformers_version": "4.50.0", "trainer_version": "0.1.0"},
        "started_at": "2025-01-01T12:00:00Z",
        "finished_at": "2025-01-01T12:00:26Z",
    })

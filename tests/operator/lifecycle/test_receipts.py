"""receipts: canonical JSON receipt, keyed HMAC of the subject list (never the IDs), sha256."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from harness.reports import BASE_SHA, CANDIDATE_SHA, make_report
from pydantic import ValidationError

from forgetmi_operator import __version__
from forgetmi_operator.api.settings import default_gates
from forgetmi_operator.api.status import ModelVersionStatus
from forgetmi_operator.lifecycle import gates, receipts
from forgetmi_operator.lifecycle.decisions import Decision

SUBJECTS = ["P-0003", "P-0001", "P-0002"]
KEY = b"receipt-key"
REPORT_SHA = "d" * 64


def _receipt(subjects_digest: str | None = None, **changes: Any) -> receipts.Receipt:
    report = make_report()
    kwargs: dict[str, Any] = {
        "uid": "0b3f9c2e-1d4a-4c7e-9a51-7f2d3e4b5c6d", "name": "forget-request-0042", "namespace": "radiology",
        "subject_count": len(SUBJECTS), "subjects_digest": subjects_digest, "method": "forget-mi",
        "mode": "Automatic",
        "base": ModelVersionStatus(version="v7", uri=report.base.uri, sha256=BASE_SHA),
        "candidate": {"version": "v7-unlearned-0b3f9c2e", "uri": report.candidate.uri, "sha256": CANDIDATE_SHA},
        "report": {"uri": "s3://models/registry/cxr/requests/u/report.json", "sha256": REPORT_SHA},
        "metrics": gates.metrics_status(report),
        "gates": gates.evaluate_gates(default_gates(), report),
        "decision": Decision.PROMOTE,
        "created": "2025-01-01T11:59:00Z", "completed": "2025-01-01T12:01:00Z",
        "promotion": receipts.Promotion(alias="production", version="v7-unlearned-0b3f9c2e", previous="v7"),
    }
    return receipts.build_receipt(**{**kwargs, **changes})


def test_hmac_is_over_the_sorted_unique_ids() -> None:
    expected = hmac.new(KEY, b"P-0001\nP-0002\nP-0003", hashlib.sha256).hexdigest()
    assert receipts.subjects_hmac(SUBJECTS, KEY) == expected
    assert receipts.subjects_hmac([*reversed(SUBJECTS), "P-0001"], KEY) == expected
    assert receipts.subjects_hmac(SUBJECTS, b"other-key") != expected
    assert receipts.subjects_hmac(SUBJECTS[:2], KEY) != expected


def test_without_a_key_there_is_no_digest() -> None:
    assert receipts.subjects_hmac(SUBJECTS, None) is None
    assert receipts.subjects_hmac(SUBJECTS, b"") is None


def test_receipt_with_a_key_carries_count_and_hmac_but_no_ids() -> None:
    digest = receipts.subjects_hmac(SUBJECTS, KEY)
    data = json.loads(receipts.receipt_json(_receipt(digest)))
    assert data["subjects"] == {"count": 3, "hmac": digest, "algorithm": "HMAC-SHA256"}
    text = receipts.receipt_json(_receipt(digest)).decode()
    assert all(subject not in text for subject in SUBJECTS)


def test_receipt_without_a_key_carries_only_the_count() -> None:
    data = json.loads(receipts.receipt_json(_receipt(None)))
    assert data["subjects"] == {"count": 3, "hmac": None, "algorithm": None}


def test_receipt_records_request_digests_metrics_gates_decision_and_version() -> None:
    data = json.loads(receipts.receipt_json(_receipt()))
    assert data["kind"] == "UnlearnReceipt"
    assert data["schemaVersion"] == "forgetmi.io/v1alpha1"
    assert data["request"] == {"uid": "0b3f9c2e-1d4a-4c7e-9a51-7f2d3e4b5c6d", "name": "forget-request-0042",
                               "namespace": "radiology"}
    assert data["base"]["sha256"] == BASE_SHA
    assert data["candidate"] == {"version": "v7-unlearned-0b3f9c2e", "sha256": CANDIDATE_SHA,
                                 "uri": "s3://models/registry/cxr/versions/v7-unlearned-0b3f9c2e"}
    assert data["report"]["sha256"] == REPORT_SHA
    assert data["metrics"]["testAUC"] == {"original": 0.91, "unlearned": 0.9, "retrained": None}
    assert [gate["result"] for gate in data["gates"]] == ["Passed"] * 3
    assert data["decision"] == "Promote"
    assert data["mode"] == "Automatic"
    assert data["promotion"] == {"alias": "production", "version": "v7-unlearned-0b3f9c2e", "previous": "v7"}
    assert data["timestamps"] == {"created": "2025-01-01T11:59:00Z", "completed": "2025-01-01T12:01:00Z"}
    assert data["operatorVersion"] == __version__


def test_receipt_json_is_canonical_and_its_sha256_reproducible() -> None:
    first, second = _receipt(), _receipt()
    raw = receipts.receipt_json(first)
    assert raw == receipts.receipt_json(second)
    assert raw.endswith(b"\n")
    data = json.loads(raw)
    assert list(data) == sorted(data)
    assert receipts.receipt_sha256(first) == hashlib.sha256(raw).hexdigest()
    held = _receipt(decision=Decision.HOLD, promotion=None)
    assert receipts.receipt_sha256(held) != receipts.receipt_sha256(first)


def test_a_candidate_without_a_digest_is_refused() -> None:
    with pytest.raises(ValidationError, match="sha256"):
        _receipt(candidate=ModelVersionStatus(version="v8", uri="s3://m/v8"))


def test_a_malformed_hmac_is_refused() -> None:
    with pytest.raises(ValidationError, match="hmac"):
        _receipt("not-a-digest")


def test_the_receipt_is_immutable() -> None:
    receipt = _receipt()
    with pytest.raises(ValidationError):
        receipt.method = "retrain"  # type: ignore[misc]

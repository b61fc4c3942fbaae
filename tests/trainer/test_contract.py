"""The torch-free contract: JSON round trips, unknown fields rejected, subjects parsing, the demo's rows."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from forgetmi_trainer.contract import (
    COMPARISON_KEYS,
    AuditConfig,
    Counts,
    Interval,
    JobConfig,
    MiaResult,
    ModelMetrics,
    Report,
    SplitMetrics,
    comparison,
    format_comparison,
    parse_subjects,
    parse_timestamp,
    summary_line,
    timestamp,
)

CONFIG = {
    "model": {"registry_uri": "s3://models/registry", "name": "cxr", "version": "v1"},
    "manifest_uri": "s3://data/manifest.csv",
    "forget": {"uri": "s3://privacy/request.txt"},
    "output_uri": "s3://models/registry/cxr/versions/v2",
    "candidate_version": "v2",
}


def _metrics(forget_auc: float | None, mia: float) -> dict[str, object]:
    return {"split": {"forget_auc": forget_auc, "forget_f1": 0.5, "test_auc": 0.8, "test_f1": 0.6},
            "mia": {"score": mia, "attack_auc": 0.5, "attack_auc_signed": 0.5, "tpr_at_1pct_fpr": 0.0}}


def _report(retrained: bool) -> Report:
    sha = "a" * 64
    return Report.model_validate({
        "request": "ns/r", "method": "forget-mi", "base": {"uri": "s3://b/v1", "sha256": sha},
        "candidate": {"uri": "s3://b/v2", "sha256": sha}, "candidate_version": "v2",
        "original": _metrics(1.0, 1.0), "unlearned": _metrics(0.75, 0.4),
        "retrained": _metrics(None, 0.5) if retrained else None,
        "selection": {"rule": "FixedEpoch", "epoch": 30, "epochs_run": 30},
        "counts": {"subjects": 3, "forget_samples": 12, "retain_samples": 100, "test_samples": 30},
        "timings": {"load_seconds": 1, "unlearn_seconds": 4.256, "eval_seconds": 1, "total_seconds": 6},
        "environment": {"device": "cpu", "precision": "fp32", "torch_version": "2", "transformers_version": "5",
                        "trainer_version": "0.1.0"},
        "started_at": "2026-11-28T00:00:00Z", "finished_at": "2026-11-28T00:00:06Z",
    })


def test_job_config_round_trips_and_rejects_unknown_fields() -> None:
    config = JobConfig.model_validate(CONFIG)
    assert JobConfig.model_validate_json(config.model_dump_json()) == config
    assert config.resolved_report_uri == "s3://models/registry/cxr/versions/v2/report.json"
    with pytest.raises(ValidationError, match=r"extra_forbidden|Extra inputs"):
        JobConfig.model_validate({**CONFIG, "patients": ["P1"]})
    with pytest.raises(ValidationError, match=r"exactly one of forget\.file or forget\.uri"):
        JobConfig.model_validate({**CONFIG, "forget": {"uri": "s3://privacy/x", "file": "/x"}})


def test_report_round_trips_and_summary_fits_a_termination_message() -> None:
    report = _report(retrained=True)
    assert Report.model_validate_json(report.to_json()) == report
    line = summary_line(report)
    assert len(line) < 4096 and json.loads(line)["mia"] == [1.0, 0.4]


def test_subjects_parse_lines_or_json_and_reject_odd_characters() -> None:
    assert parse_subjects("P1\n# comment\n\nP2  # trailing\nP1\n") == ["P1", "P2"]
    assert parse_subjects('["P3", "P4"]') == ["P3", "P4"]
    with pytest.raises(ValueError, match="outside"):
        parse_subjects("P1; DROP TABLE")


def test_comparison_rows_and_table() -> None:
    rows = comparison(_report(retrained=True), 12.345, 10.0)
    assert set(rows) == {"original", "retrained", "forget_mi"}
    assert all(set(row) == set(COMPARISON_KEYS) for row in rows.values())
    assert rows["forget_mi"]["seconds"] == 4.26 and rows["forget_mi"]["forget_auc"] == 0.75
    table = format_comparison(rows).splitlines()
    assert table[0].split()[:3] == ["model", "forget", "AUC"]
    assert table[2].split()[:2] == ["retrained", "-"]  # an unmeasured metric prints as "-"
    assert table[3].startswith("Forget-MI") and "0.750" in table[3] and "4.3" in table[3]
    with pytest.raises(ValueError, match="no retrained reference"):
        comparison(_report(retrained=False), 1.0, 1.0)
    assert isinstance(_report(True).original, ModelMetrics)


def test_a_report_missing_a_metric_parses_with_none() -> None:
    raw = json.loads(_report(retrained=False).to_json())
    del raw["unlearned"]["mia"]["attack_auc"]
    del raw["unlearned"]["split"]["test_f1"]
    del raw["original"]["mia"]
    report = Report.model_validate_json(json.dumps(raw))
    assert report.unlearned.mia.attack_auc is None and report.unlearned.split.test_f1 is None
    assert report.unlearned.mia.score == 0.4 and report.unlearned.split.forget_auc == 0.75
    assert report.original.mia.model_dump() == dict.fromkeys(MiaResult.model_fields)
    assert "lira_auc" in MiaResult.model_fields and "balanced_score" not in MiaResult.model_fields
    assert ModelMetrics.model_validate({}).split.forget_auc is None
    assert json.loads(summary_line(report))["mia"] == [None, 0.4]


def test_metric_fields_still_reject_unknown_keys() -> None:
    raw = json.loads(_report(retrained=False).to_json())
    raw["unlearned"]["mia"]["patient_id"] = "P1"
    with pytest.raises(ValidationError, match=r"extra_forbidden|Extra inputs"):
        Report.model_validate(raw)
    with pytest.raises(ValidationError, match=r"extra_forbidden|Extra inputs"):
        ModelMetrics.model_validate({"split": {"forget_acc": 0.5}})


FRACTIONS = [("split", "forget_auc"), ("split", "forget_f1"), ("split", "test_auc"), ("split", "test_f1"),
             ("mia", "score"), ("mia", "attack_auc"), ("mia", "attack_auc_signed"), ("mia", "tpr_at_1pct_fpr"),
             ("mia", "tpr_at_5pct_fpr"), ("mia", "logit_norm_auc"), ("mia", "lira_auc"),
             ("mia", "lira_tpr_at_5pct_fpr")]
OUT_OF_RANGE = [1e308, -5.0, 1.0000001, -1e-9, math.nan, math.inf, -math.inf]
NOT_FINITE = [math.nan, math.inf, -math.inf]


def _with(path: tuple[str, ...], value: object) -> str:
    """The report's JSON with one value replaced (``json.dumps`` writes NaN and Infinity as Python does)."""
    raw = json.loads(_report(retrained=True).to_json())
    node = raw
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return json.dumps(raw)


@pytest.mark.parametrize("model", ["original", "unlearned", "retrained"])
@pytest.mark.parametrize(("group", "key"), FRACTIONS)
@pytest.mark.parametrize("value", OUT_OF_RANGE)
def test_a_metric_outside_zero_to_one_makes_the_report_invalid(model: str, group: str, key: str,
                                                                value: float) -> None:
    with pytest.raises(ValidationError) as err:
        Report.model_validate_json(_with((model, group, key), value))
    assert [e["loc"] for e in err.value.errors()] == [(model, group, key)]


@pytest.mark.parametrize(("group", "key"), FRACTIONS)
@pytest.mark.parametrize("value", [0, 0.0, 0.5, 1, 1.0, None])
def test_a_metric_in_zero_to_one_or_unmeasured_is_kept(group: str, key: str, value: float | None) -> None:
    report = Report.model_validate_json(_with(("unlearned", group, key), value))
    assert getattr(getattr(report.unlearned, group), key) == value


@pytest.mark.parametrize(("value", "valid"), [(0.0, True), (2.0, True), (None, True), (2.0000001, False),
                                              (-0.1, False), (1e308, False), *[(v, False) for v in NOT_FINITE]])
def test_the_logit_distance_lies_in_zero_to_two(value: float | None, valid: bool) -> None:
    text = _with(("retrained_logit_distance",), value)
    if valid:
        assert Report.model_validate_json(text).retrained_logit_distance == value
    else:
        with pytest.raises(ValidationError, match="retrained_logit_distance"):
            Report.model_validate_json(text)


@pytest.mark.parametrize("key", ["load_seconds", "unlearn_seconds", "eval_seconds", "total_seconds"])
@pytest.mark.parametrize("value", [-1.0, *NOT_FINITE])
def test_timings_are_finite_and_not_negative(key: str, value: float) -> None:
    with pytest.raises(ValidationError, match=f"timings.{key}"):
        Report.model_validate_json(_with(("timings", key), value))
    assert Report.model_validate_json(_with(("timings", key), 1e6)).timings.model_dump()[key] == 1e6


def test_metrics_built_in_python_are_checked_too() -> None:
    """The trainer builds these models from its measurements: an impossible value fails there, not in the operator."""
    with pytest.raises(ValidationError, match="test_auc"):
        SplitMetrics(test_auc=math.nan)
    with pytest.raises(ValidationError, match="attack_auc"):
        MiaResult(attack_auc=1.5)
    assert MiaResult(attack_auc=None).attack_auc is None


# ---- the audit: its config, its sample size and the intervals ------------------------------------------


def test_the_audit_config_defaults_and_bounds() -> None:
    assert JobConfig.model_validate(CONFIG).audit == AuditConfig(retain_samples=5000, bootstrap=1000)
    config = JobConfig.model_validate({**CONFIG, "audit": {"retain_samples": 1}})
    assert config.audit.retain_samples == 1 and config.audit.bootstrap == 1000
    for audit in ({"retain_samples": 0}, {"retain_samples": 1_000_001}, {"bootstrap": 99}, {"bootstrap": 20_001},
                  {"retain_samples": 10, "patients": 3}):
        with pytest.raises(ValidationError, match=r"audit\."):
            JobConfig.model_validate({**CONFIG, "audit": audit})


def test_counts_record_the_audit_sample_and_older_reports_still_parse() -> None:
    raw = json.loads(_report(retrained=False).to_json())
    assert Report.model_validate(raw).counts.audit_retain_samples is None
    raw["counts"]["audit_retain_samples"] = 100
    assert Report.model_validate(raw).counts.audit_retain_samples == 100
    with pytest.raises(ValidationError, match="audit_retain_samples"):
        Counts(subjects=1, forget_samples=1, retain_samples=1, test_samples=1, audit_retain_samples=-1)


CIS = [(group, f"{key}_ci") for group, key in FRACTIONS]


@pytest.mark.parametrize(("group", "key"), CIS)
def test_every_figure_has_an_interval_that_round_trips(group: str, key: str) -> None:
    point = key.removesuffix("_ci")
    raw = json.loads(_with(("unlearned", group, point), 0.5))
    raw["unlearned"][group][key] = {"low": 0.25, "high": 0.75}
    report = Report.model_validate(raw)
    assert getattr(getattr(report.unlearned, group), key) == Interval(low=0.25, high=0.75)
    assert Report.model_validate_json(report.to_json()) == report


@pytest.mark.parametrize(("group", "key"), CIS)
@pytest.mark.parametrize(("interval", "point", "problem"), [
    ({"low": 0.6, "high": 0.4}, 0.5, "must not exceed"),
    ({"low": 0.6, "high": 0.8}, 0.5, "does not contain"),
    ({"low": 0.1, "high": 0.4}, 0.5, "does not contain"),
    ({"low": 0.1, "high": 0.9}, None, "is set but"),
    ({"low": -0.1, "high": 0.9}, 0.5, "greater than or equal"),
    ({"low": 0.1, "high": math.inf}, 0.5, "finite"),
    ({"low": 0.1}, 0.5, "high"),
    ({"low": 0.1, "high": 0.9, "level": 0.95}, 0.5, "Extra inputs"),
])
def test_an_impossible_interval_makes_the_report_invalid(group: str, key: str, interval: dict, point: float | None,
                                                         problem: str) -> None:
    raw = json.loads(_with(("unlearned", group, key.removesuffix("_ci")), point))
    raw["unlearned"][group][key] = interval
    with pytest.raises(ValidationError, match=problem) as err:
        Report.model_validate_json(json.dumps(raw))
    assert all(e["loc"][:2] == ("unlearned", group) for e in err.value.errors())


def test_timestamps_written_and_as_the_api_server_writes_them_read_back_as_the_same_moment() -> None:
    moment = datetime(2026, 12, 1, 21, 1, 42, tzinfo=UTC)
    assert parse_timestamp(timestamp(moment)) == moment
    assert parse_timestamp("2026-12-01T22:01:42+01:00") == moment
    assert parse_timestamp("2026-12-01T21:01:42.250000Z") == moment + timedelta(milliseconds=250)
    assert parse_timestamp("2026-12-01T21:01:42") == moment  # no timezone: UTC
    assert parse_timestamp(datetime(2026, 12, 1, 22, 1, 42, tzinfo=timezone(timedelta(hours=1)))) == moment
    for nothing in (None, "", "yesterday"):
        assert parse_timestamp(nothing) is None

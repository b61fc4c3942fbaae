"""registry.artifacts.load_report: a report whose metric lies outside its range is ReportInvalid,
naming the field, so the gates never see it; an unmeasured (null) metric is read as None; a report
larger than the operator reads (``report_max_bytes``) is ReportInvalid without being read."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from pathlib import Path

import pytest
from harness.reports import make_report

from forgetmi_operator.api import naming
from forgetmi_operator.api.errors import ReportInvalid, SettingsInvalid
from forgetmi_operator.api.settings import Settings, load_settings
from forgetmi_operator.lifecycle.conclude import conclude
from forgetmi_operator.lifecycle.ports import Ports
from forgetmi_operator.registry import artifacts
from forgetmi_operator.registry.paths import request_paths
from forgetmi_trainer.storage import DEFAULT, Objects


def _write(tmp_path: Path, group: str, key: str, value: float | None) -> str:
    raw = json.loads(make_report().to_json())
    raw["unlearned"][group][key] = value
    path = tmp_path / "report.json"
    path.write_text(json.dumps(raw))  # NaN and Infinity as Python's json writes them
    return f"file://{path}"


@pytest.mark.parametrize(("group", "key", "value"), [
    ("split", "test_auc", 1e308), ("split", "test_auc", -5.0), ("split", "test_auc", math.nan),
    ("split", "test_auc", math.inf), ("mia", "attack_auc", -5.0), ("mia", "attack_auc", 1.5),
    ("mia", "score", -math.inf), ("split", "forget_f1", math.nan),
])
def test_a_metric_outside_its_range_is_report_invalid_naming_the_field(tmp_path: Path, group: str, key: str,
                                                                       value: float) -> None:
    uri = _write(tmp_path, group, key, value)
    with pytest.raises(ReportInvalid, match=rf"The trainer's report {uri} is malformed: unlearned\.{group}\.{key}: "):
        artifacts.load_report(DEFAULT, uri)


def test_an_unmeasured_metric_is_read_as_none(tmp_path: Path) -> None:
    report, _ = artifacts.load_report(DEFAULT, _write(tmp_path, "split", "test_auc", None))
    assert report.unlearned.split.test_auc is None


# ---- the report's size is capped (chart value reportMaxBytes) ----------------------------------

def _sized_report(tmp_path: Path, size: int) -> str:
    """A valid report padded with trailing whitespace (still valid JSON) to exactly ``size`` bytes."""
    data = make_report().to_json().encode()
    assert size >= len(data)
    path = tmp_path / "report.json"
    path.write_bytes(data + b" " * (size - len(data)))
    return f"file://{path}"


class Reads(Objects):
    """A storage handle that records every read and refuses to read an object whole."""

    def __init__(self, *, size: int | None = None) -> None:
        super().__init__()
        self.reported_size, self.bounded = size, []

    def size(self, uri: str) -> int:
        return super().size(uri) if self.reported_size is None else self.reported_size

    def read_bytes(self, uri: str) -> bytes:
        raise AssertionError(f"the whole of {uri} was read")

    def read_versioned(self, uri: str) -> tuple[bytes, str]:
        raise AssertionError(f"the whole of {uri} was read")

    def read_at_most(self, uri: str, max_bytes: int) -> bytes:
        self.bounded.append(max_bytes)
        return super().read_at_most(uri, max_bytes)


def test_a_report_over_the_cap_is_refused_without_being_read(tmp_path: Path) -> None:
    uri = _sized_report(tmp_path, 4096)
    objects = Reads()
    with pytest.raises(ReportInvalid) as caught:
        artifacts.load_report(objects, uri, max_bytes=4095)
    assert caught.value.message == (f"The trainer's report {uri} is 4096 bytes, more than the 4095 bytes the operator "
                                    "reads (chart value reportMaxBytes); nothing was promoted.")
    assert objects.bounded == []


def test_a_report_at_the_cap_is_read_with_a_bounded_read(tmp_path: Path) -> None:
    uri = _sized_report(tmp_path, 4096)
    objects = Reads()
    report, ref = artifacts.load_report(objects, uri, max_bytes=4096)
    assert report == make_report()
    assert ref.sha256 == hashlib.sha256((tmp_path / "report.json").read_bytes()).hexdigest()
    assert objects.bounded == [4097]  # one byte more than the cap: a report that grew is seen


def test_a_report_that_grows_after_its_size_was_read_is_refused(tmp_path: Path) -> None:
    uri = _sized_report(tmp_path, 8192)
    objects = Reads(size=2048)  # what a HEAD said before the object was replaced by a larger one
    with pytest.raises(ReportInvalid, match=(rf"^The trainer's report {uri} is more than the 4096 bytes the operator "
                                             r"reads \(chart value reportMaxBytes\); nothing was promoted\.$")):
        artifacts.load_report(objects, uri, max_bytes=4096)
    assert objects.bounded == [4097]


def test_the_default_cap_is_eight_mebibytes(tmp_path: Path) -> None:
    assert artifacts.REPORT_MAX_BYTES == 8 * 1024 * 1024 == Settings().report_max_bytes
    uri = _sized_report(tmp_path, 8 * 1024 * 1024 + 1)
    with pytest.raises(ReportInvalid, match=r"is 8388609 bytes, more than the 8388608 bytes the operator reads"):
        artifacts.load_report(DEFAULT, uri)
    report, _ = artifacts.load_report(DEFAULT, _sized_report(tmp_path, 8 * 1024 * 1024))
    assert report == make_report()


def test_a_missing_report_is_still_report_invalid(tmp_path: Path) -> None:
    uri = (tmp_path / "none" / "report.json").as_uri()
    with pytest.raises(ReportInvalid, match=r"The trainer's report .* does not exist\."):
        artifacts.load_report(DEFAULT, uri)


def test_the_cap_is_the_setting_report_max_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGETMI_REPORT_MAX_BYTES", "65536")
    assert load_settings().report_max_bytes == 65536
    monkeypatch.setenv("FORGETMI_REPORT_MAX_BYTES", "1023")
    with pytest.raises(SettingsInvalid, match="FORGETMI_REPORT_MAX_BYTES"):
        load_settings()


def test_conclusion_reads_the_report_with_the_settings_cap(tmp_path: Path) -> None:
    """``conclude`` refuses a report over ``report_max_bytes`` before anything else is read."""
    registry, name, uid = tmp_path.as_uri() + "/registry", "forget-0001", "0b3f9c2e-0000-4000-8000-000000000001"
    report_uri = request_paths(registry, "cxr", uid).report
    Path(report_uri.removeprefix("file://")).parent.mkdir(parents=True)
    Path(report_uri.removeprefix("file://")).write_bytes(make_report().to_json().encode().ljust(4096))
    body = {"metadata": {"name": name, "namespace": "radiology", "uid": uid},
            "spec": {"model": {"registryUri": registry, "name": "cxr", "alias": "production"},
                     "data": {"manifestUri": tmp_path.as_uri() + "/manifest.csv"},
                     "forget": {"subjectsSecretRef": {"name": "s", "key": "subjects"}}},
            "status": {"jobName": naming.job_name(name, uid),
                       "baseModel": {"version": "v7", "uri": registry + "/cxr/versions/v7", "sha256": "b" * 64}}}

    async def identity(body: object) -> Objects:
        return DEFAULT

    async def no_key() -> None:
        return None

    ports = Ports(settings=Settings(report_max_bytes=2048), secrets=None, trainers=None,  # type: ignore[arg-type]
                  targets=None, storage_for=identity, receipt_key=no_key)  # type: ignore[arg-type]
    with pytest.raises(ReportInvalid, match=r"is 4096 bytes, more than the 2048 bytes the operator reads"):
        asyncio.run(conclude(ports, body))

"""The forget ledger and signed receipts through the real operator (Kopf, in a thread) on the emulated API
server, with moto S3 and the Job runner: two requests in sequence on one model (patients A, then B).

The second run leaves A out of its retain set (its report counts A's patients), both receipts are
DSSE envelopes that ``forgetmi receipt verify`` accepts with the published public key, the ledger holds
both erasures, and no raw patient ID is in the ledger, the receipts, the requests' status, the Events,
the operator's and the trainers' logs, or the metrics.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness.cluster import EVENTS, REQUESTS, SECRETS, operator, start_cluster, wait_for
from harness.jobrunner import JobRunner
from harness.requests import apply_request, secret, train_subjects
from harness.world import fitted_world, seed_model
from prometheus_client import generate_latest

from forgetmi_operator.cluster.metrics import METRICS
from forgetmi_operator.local import cli
from forgetmi_operator.registry import ledger
from forgetmi_trainer import storage
from forgetmi_trainer.contract import Report
from forgetmi_trainer.manifest import read_manifest
from forgetmi_trainer.storage import DEFAULT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
RUN_TIMEOUT = 120.0
MODEL = "m-ledger"


@pytest.fixture(scope="module")
def world(s3_server: str) -> Iterator[dict[str, Any]]:
    with fitted_world(s3_server, prefix="ledger") as fitted:
        yield fitted


def _finished(api: Any, ns: str, name: str) -> dict[str, Any] | None:
    found = api.get(REQUESTS, ns, name)
    return found if (found.get("status") or {}).get("phase") in ("Promoted", "Failed", "Held") else None


def _wait(api: Any, ns: str, name: str) -> dict[str, Any]:
    try:
        return wait_for(lambda: _finished(api, ns, name), RUN_TIMEOUT, f"request {name} to end")
    except AssertionError as err:  # say where it stopped
        raise AssertionError(f"{err} Its status: {api.get(REQUESTS, ns, name).get('status')}") from None


def test_a_second_request_never_retains_the_first_ones_patients_and_both_receipts_verify(
        world: dict[str, Any], s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api, ns = start_cluster(tmp_path, monkeypatch.setenv)
    signing = Ed25519PrivateKey.generate()
    pem = signing.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = tmp_path / "public.pem"
    public.write_bytes(signing.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
    api.create(SECRETS, ns, secret("ledger-key", "key", b"ledger-key-" + b"x" * 24))
    api.create(SECRETS, ns, secret("signing-key", "key.pem", pem))
    for name, value in {"OPERATOR_NAMESPACE": ns, "LEDGER_KEY_SECRET_NAME": "ledger-key",
                        "RECEIPT_SIGNING_SECRET_NAME": "signing-key"}.items():
        monkeypatch.setenv(f"FORGETMI_{name}", value)
    manifest = read_manifest(world["manifest"])
    first = list(world["subjects"])
    train = train_subjects(world)
    second = [s for s in train if s not in first][:2]
    seed_model(world, MODEL)
    (tmp_path / "jobs").mkdir()
    try:
        with JobRunner(api, tmp_path / "jobs") as runner, operator(ns):
            apply_request(api, ns, world, MODEL, "first", first)
            a = _wait(api, ns, "first")
            assert a["status"]["phase"] == "Promoted", a["status"]
            apply_request(api, ns, world, MODEL, "second", second)
            b = _wait(api, ns, "second")
            assert b["status"]["phase"] == "Promoted", b["status"]
            events = json.dumps(api.list(EVENTS, ns))
        assert not runner.errors
    finally:
        api.stop()
    report = Report.model_validate_json(storage.read_text(b["status"]["report"]["uri"]))
    patients_of_a = {s for s in manifest.subject_ids if s in set(first)}
    assert report.counts.previously_forgotten_subjects == len(patients_of_a)
    assert report.counts.previously_forgotten == sum(s in patients_of_a for s in manifest.subject_ids)
    entries = ledger.read_ledger(DEFAULT, world["registry"], MODEL)
    assert [e.request.name for e in entries] == ["first", "second"]
    assert [e.count for e in entries] == [len(set(first)), len(second)]
    receipts_text = ""
    for done in (a, b):
        uri = done["status"]["receipt"]["uri"]
        receipts_text += storage.read_text(uri)
        assert json.loads(storage.read_text(uri))["payloadType"] == "application/vnd.in-toto+json"
        assert cli.main(["receipt", "verify", uri, "--public-key", str(public)]) == 0
    ledger_uris = storage.list_uris(storage.join(world["registry"], MODEL, "ledger"))
    assert len(ledger_uris) == 2
    ledger_text = "".join(storage.read_text(uri) for uri in ledger_uris)
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "jobs").rglob("trainer.log"))
    visible = (ledger_text + receipts_text + json.dumps([a["status"], b["status"]]) + events + caplog.text + logs
               + generate_latest(METRICS.registry).decode())
    assert logs and caplog.text  # there were logs to search
    for subject in {*first, *second}:
        assert subject not in visible, "a patient ID leaked"

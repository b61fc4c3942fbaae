"""Two requests in sequence on one model through ``forgetmi run`` with a ledger key (docs/ledger.md):
request A (the demo's patients) is promoted and the ledger records its keyed digests; request B (other
patients) runs on A's candidate, its JobConfig names A's patients as previously forgotten and its report
counts them; a request on the pre-erasure version is refused before its Job; no raw patient ID is in the
ledger, the receipts, the status or the Events. Its own registry (the ledger would bind other modules'
tests to A's erasure)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from harness.registries import point

from forgetmi_operator.local import EXIT_OK, cli, demo
from forgetmi_operator.local import run as local
from forgetmi_operator.registry import aliases, ledger
from forgetmi_trainer import storage
from forgetmi_trainer.contract import JobConfig, ModelRef
from forgetmi_trainer.storage import DEFAULT

pytestmark = pytest.mark.slow
ENV = {**os.environ, "PYTHONSAFEPATH": "1"}
KEY = b"a ledger key for tests\n"
GATES = [{"metric": "testAUC", "comparator": "maxDrop", "threshold": 0.5, "reference": "original"},
         {"metric": "mia", "comparator": "atMost", "threshold": 1.0, "reference": "absolute"}]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("ledger-demo")
    out = subprocess.run([sys.executable, "-m", "forgetmi_trainer", "demo-prepare", "--workdir", str(workdir),
                          "--patients", "40", "--seed", "0"], env=ENV, capture_output=True, text=True, check=True)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "seed": 0, "workdir": workdir}


def _request(prepared: dict[str, Any], name: str, patients: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    request, secret = demo.demo_request(prepared)
    request["metadata"] = {"name": name, "namespace": "demo", "uid": f"uid-{name}"}
    request["spec"].update(gates=GATES, audit={})
    request["spec"]["method"]["epochs"] = 5
    return request, local.read_secrets([{**secret, "stringData": {"subjects": "".join(f"{p}\n" for p in patients)}}])


def _train_patients(prepared: dict[str, Any]) -> list[str]:
    with open(Path(prepared["workdir"]) / "data" / "manifest.csv", newline="") as fh:
        return sorted({row["subject_id"] for row in csv.DictReader(fh) if row["split"] == "train"})


def test_a_second_request_leaves_the_first_ones_patients_out_and_a_pre_erasure_base_is_refused(
        prepared: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    original = ModelRef.model_validate(prepared["original"])
    registry, model = original.registry_uri, original.name
    first = Path(prepared["subjects_file"]).read_text().split()
    second = [p for p in _train_patients(prepared) if p not in first][:3]
    assert first and len(second) == 3
    point(registry, model, "production", original.version)

    request, secrets = _request(prepared, "forget-a", first)
    a = local.run_request(request, workdir=tmp_path / "a", secrets=secrets, ledger_key=KEY)
    assert a.status.phase == "Promoted", a.events
    entries = ledger.read_ledger(DEFAULT, registry, model)
    assert [e.request.name for e in entries] == ["forget-a"]
    assert entries[0].digests == ledger.digests_of(KEY, first) and entries[0].count == len(set(first))
    assert entries[0].candidate_version == a.status.candidate_model.version
    config = JobConfig.model_validate_json((tmp_path / "a" / "unlearn-job.json").read_text())
    assert config.previously_forgotten is not None  # with a key the copy always holds the list: empty before A
    assert a.report is not None and a.report.counts.previously_forgotten_subjects == 0

    request, secrets = _request(prepared, "forget-b", second + first[:1])  # one of A's again: accepted, counted
    b = local.run_request(request, workdir=tmp_path / "b", secrets=secrets, ledger_key=KEY)
    assert b.status.phase == "Promoted", b.events
    assert b.status.base_model.version == a.status.candidate_model.version
    config = JobConfig.model_validate_json((tmp_path / "b" / "unlearn-job.json").read_text())
    assert config.previously_forgotten is not None and config.previously_forgotten.file is not None
    assert b.report is not None and b.report.counts.previously_forgotten_subjects == len(set(first))
    assert b.report.counts.subjects == len(second) + 1
    entries = ledger.read_ledger(DEFAULT, registry, model)
    assert [e.request.name for e in entries] == ["forget-a", "forget-b"]
    assert not Path(config.previously_forgotten.file).exists()  # the copy went with the request

    # The alias moved back to v1 by hand; a new request on it is refused before its Job.
    current = aliases.resolve_alias(DEFAULT, registry, model, "production")
    aliases.promote(DEFAULT, registry, model, "production", version=aliases.verify_version(
        DEFAULT, registry, model, original.version), expected_token=current.token, request=None)
    request, secrets = _request(prepared, "forget-c", second[:1])
    c = local.run_request(request, workdir=tmp_path / "c", secrets=secrets, ledger_key=KEY)
    accepted = next(cond for cond in c.status.conditions if cond.type == "Accepted")
    assert c.status.phase == "Failed" and accepted.reason == "PreErasureVersion", c.events
    assert not (tmp_path / "c" / "unlearn-job.json").exists()
    code = cli.main(["ledger", "verify", "--registry", registry, "--model", model])
    out = capsys.readouterr().out
    assert code == 1 and "manual edit" in out and "does not descend" in out

    written = [storage.read_text(u) for u in storage.list_uris(ledger.ledger_uri(registry, model))]
    written += [storage.read_text(r.status.receipt.uri) for r in (a, b) if r.status.receipt]
    written += [r.status.model_dump_json() + "\n".join(r.events) for r in (a, b, c)]
    leaked = [p for p in set(first) | set(second) if any(p in text for text in written)]
    assert not leaked, "a patient ID is in the ledger, a receipt, a status or an Event"
    assert code != EXIT_OK

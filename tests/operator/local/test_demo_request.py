"""``forgetmi demo``'s request, without running it: valid, its privacy gate on the distance to the retrained model
(``spec.audit.retrainedVersion``), with the trainer's demo recipe when ``demo-prepare`` names one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forgetmi_operator.api.spec import parse_spec
from forgetmi_operator.lifecycle.jobconfig import build_job_config
from forgetmi_operator.local import demo
from forgetmi_operator.local.schema import validate_request


def _prepared(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    (tmp_path / "subjects.txt").write_text("P001\nP002\n")
    registry = f"file://{tmp_path}/registry"
    return {"registry": registry, "manifest_uri": f"file://{tmp_path}/manifest.csv",
            "subjects_file": str(tmp_path / "subjects.txt"), "seed": 3,
            "original": {"registry_uri": registry, "name": demo.DEMO_MODEL, "version": "v1"},
            "retrained": {"registry_uri": registry, "name": demo.DEMO_MODEL, "version": "v1-retrained"}, **changes}


def test_the_demo_request_is_valid_and_gates_on_the_distance_to_the_retrained_model(tmp_path: Path) -> None:
    request, secret = demo.demo_request(_prepared(tmp_path))
    assert validate_request(request) == []
    assert secret["stringData"]["subjects"] == "P001\nP002\n"
    spec = parse_spec(request["spec"])
    assert spec.audit.retrained_version == "v1-retrained"
    assert [(g.metric, g.comparator, g.reference) for g in spec.gates] == [
        ("testAUC", "maxDrop", "original"), ("forgetAUC", "minDrop", "original"), ("attackAUC", "atMost", "retrained")]
    config = build_job_config(spec, uid="0b3f9c2e-0000-0000-0000-000000000000", namespace="demo", name="d",
                              base_version="v1", subjects_file="/tmp/s", termination_message_path=None)
    assert config.retrained is not None and config.retrained.uri.endswith("/demo-model/versions/v1-retrained")
    assert spec.method.seed == 3


def test_the_demo_takes_the_trainers_recipe_when_demo_prepare_names_one(tmp_path: Path) -> None:
    recipe = {"name": "forget-mi", "preset": "equal", "epochs": 12, "learning_rate": 0.002, "batch_size": 8,
              "push_bound": 0.5, "noise": {"image_std": 0.1}}
    request, _ = demo.demo_request(_prepared(tmp_path, method=recipe))
    method = request["spec"]["method"]
    assert (method["epochs"], method["learningRate"], method["batchSize"], method["pushBound"]) == (12, 0.002, 8, 0.5)
    assert validate_request(request) == []
    default, _ = demo.demo_request(_prepared(tmp_path))
    assert default["spec"]["method"] == {**demo.DEMO_METHOD, "seed": 3}

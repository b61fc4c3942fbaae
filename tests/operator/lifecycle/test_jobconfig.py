"""lifecycle.jobconfig: an accepted request → the trainer's JobConfig, for a Job and a local run alike."""

from __future__ import annotations

from typing import Any

import pytest
from harness.examples import example_spec, full_spec, minimal_spec

from forgetmi_operator.api.errors import InvalidSpec
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.api.spec import UnlearnRequestSpec, parse_spec
from forgetmi_operator.cluster import jobs
from forgetmi_operator.lifecycle.jobconfig import build_job_config
from forgetmi_trainer.contract import JobConfig

UID = "0b3f9c2e-1d4a-4c7e-9a51-7f2d3e4b5c6d"
NAME = "forget-request-0117"
NAMESPACE = "radiology"




def _config(spec: UnlearnRequestSpec, **kwargs: Any) -> JobConfig:
    kwargs = {"subjects_file": jobs.SUBJECTS_PATH, "termination_message_path": jobs.TERMINATION_LOG, **kwargs}
    return build_job_config(spec, uid=UID, namespace=NAMESPACE, name=NAME, **kwargs)


def test_job_config_pins_the_base_version_and_writes_under_the_request_folder() -> None:
    config = _config(full_spec(), base_version="v7")
    registry = "s3://hospital-models/registry/cxr-report-classifier"
    assert config.request == "radiology/forget-request-0117"
    assert config.model.uri == f"{registry}/versions/v7"
    assert config.candidate_version == "v7-unlearned-0b3f9c2e"
    assert config.output_uri == f"{registry}/versions/v7-unlearned-0b3f9c2e"
    assert config.report_uri == f"{registry}/requests/{UID}/report.json"
    assert config.progress_uri == f"{registry}/requests/{UID}/progress.json"
    assert config.manifest_uri == "s3://hospital-datasets/cxr-reports/manifest.parquet"
    assert config.termination_message_path == "/dev/termination-log"


def test_job_config_copies_the_method_settings() -> None:
    config = _config(full_spec(), base_version="v7")
    assert config.seed == 7
    assert config.method.name == "forget-mi"
    assert config.method.selection.rule == "ForgetReachesTest"
    assert (config.method.epochs, config.method.learning_rate, config.method.batch_size) == (30, 0.001, 16)
    assert config.method.noise.image_std == 0.1


def test_the_trainer_reads_the_accepted_list_from_the_mounted_file_never_the_ids_or_the_source() -> None:
    by_uri = minimal_spec(forget={"subjectsUri": "s3://privacy/r.txt", "sha256": "a" * 64})
    for spec in (full_spec(), by_uri):
        config = jobs.build_launch(spec, Settings(), name=NAME, namespace=NAMESPACE, uid=UID, base_version="v7").config
        assert (config.forget.file, config.forget.uri, config.forget.sha256) == (jobs.SUBJECTS_PATH, None, None)
    local = _config(full_spec(), base_version="v7", subjects_file="/tmp/subjects.txt")
    assert local.forget.file == "/tmp/subjects.txt"


def test_the_audit_sample_size_reaches_the_trainer_on_every_path() -> None:
    assert _config(minimal_spec(), base_version="v7").audit.retain_samples == 5000  # the default
    spec = minimal_spec(audit={"retainSamples": 1200})
    cluster = jobs.build_launch(spec, Settings(), name=NAME, namespace=NAMESPACE, uid=UID, base_version="v7").config
    local = _config(spec, base_version="v7", subjects_file="/tmp/subjects.txt")
    retrain = _config(spec, base_version="v7", kind="retrain")
    assert cluster.audit.retain_samples == local.audit.retain_samples == retrain.audit.retain_samples == 1200
    assert cluster.audit.bootstrap == 1000  # the trainer's default; not a request field


def test_a_retrain_config_uses_the_retrain_method_and_its_own_folder() -> None:
    config = _config(full_spec(), base_version="v7", kind="retrain")
    assert config.method.name == "retrain"
    assert config.candidate_version == "v7-retrained-0b3f9c2e"
    assert config.report_uri is not None and config.report_uri.endswith(f"/requests/{UID}/retrain/report.json")


def test_a_base_version_the_trainer_would_reject_is_an_invalid_spec() -> None:
    with pytest.raises(InvalidSpec, match=r"radiology/forget-request-0117.*model\.version"):
        _config(full_spec(), base_version="bad version!")


def test_the_method_options_reach_the_trainer_in_its_own_names() -> None:
    spec = minimal_spec(method={"name": "neggrad-plus", "options": {"alpha": 0.7, "alignWeight": 0.2}})
    config = _config(spec, base_version="v7")
    assert config.method.name == "neggrad-plus" and config.method.options == {"alpha": 0.7, "align_weight": 0.2}
    assert _config(minimal_spec(), base_version="v7").method.options == {}
    # a retrain run takes the trainer's own recipe, not the unlearning method's options
    assert _config(spec, base_version="v7", kind="retrain").method.options == {}
    assert _config(minimal_spec(method={"sign": "pull"}), base_version="v7").method.sign == "pull"


def test_the_retrained_version_reaches_the_trainer_as_a_model_of_the_same_registry() -> None:
    spec = minimal_spec(audit={"retrainedVersion": "v7-retrained-ref"},
                        gates=[{"metric": "testAUC", "comparator": "atMost", "threshold": 0.02,
                                "reference": "retrained"}])
    cluster = jobs.build_launch(spec, Settings(), name=NAME, namespace=NAMESPACE, uid=UID, base_version="v7").config
    local = _config(spec, base_version="v7", subjects_file="/tmp/subjects.txt")
    retrain = _config(spec, base_version="v7", kind="retrain")
    for config in (cluster, local, retrain):
        assert config.retrained is not None
        assert (config.retrained.registry_uri, config.retrained.name, config.retrained.version) == (
            spec.model.registry_uri, spec.model.name, "v7-retrained-ref")
    assert _config(minimal_spec(), base_version="v7").retrained is None


def test_a_retrained_gate_without_a_retrained_version_is_an_invalid_spec_naming_the_gate() -> None:
    spec = {**example_spec("unlearnrequest-minimal.yaml"),
            "gates": [{"metric": "testAUC", "comparator": "maxDrop", "threshold": 0.02, "reference": "original"},
                      {"metric": "testAUC", "comparator": "atMost", "threshold": 0.02, "reference": "retrained"}]}
    with pytest.raises(InvalidSpec) as caught:
        parse_spec(spec)
    assert str(caught.value) == ("The spec is invalid: spec.gates[1].reference: reference: retrained compares with "
                                 "the retrained model: set spec.audit.retrainedVersion to its version.")

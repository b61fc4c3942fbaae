"""jobs: the pure builders of the trainer's JobConfig, its ConfigMap and the batch/v1 Job."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

from forgetmi_operator import jobs, naming
from forgetmi_operator.api import UnlearnRequestSpec
from forgetmi_operator.errors import InvalidSpec
from forgetmi_operator.settings import Settings
from forgetmi_trainer.contract import JobConfig, parse_subjects

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
UID = "0b3f9c2e-1d4a-4c7e-9a51-7f2d3e4b5c6d"
NAME = "forget-request-0117"
NAMESPACE = "radiology"
JOB_NAME = "forgetmi-forget-request-0117-0b3f9c2e"


def _example(file: str) -> dict[str, Any]:
    docs = list(yaml.safe_load_all((EXAMPLES / file).read_text()))
    return next(doc for doc in docs if doc["kind"] == "UnlearnRequest")["spec"]


def _full() -> UnlearnRequestSpec:
    return UnlearnRequestSpec.model_validate(_example("unlearnrequest-full.yaml"))


def _minimal(**changes: Any) -> UnlearnRequestSpec:
    return UnlearnRequestSpec.model_validate({**_example("unlearnrequest-minimal.yaml"), **changes})


def _settings(**values: Any) -> Settings:
    return Settings(**values)


def _job(spec: UnlearnRequestSpec, settings: Settings | None = None, **kwargs: Any) -> dict[str, Any]:
    return jobs.build_job(spec, settings or _settings(), name=NAME, namespace=NAMESPACE, uid=UID, **kwargs)


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def _container(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = _pod(job)["containers"]
    return container


# ---- JobConfig ----------------------------------------------------------------------------------


def test_job_config_pins_the_base_version_and_writes_under_the_request_folder() -> None:
    config = jobs.build_job_config(_full(), uid=UID, namespace=NAMESPACE, name=NAME, base_version="v7")
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
    config = jobs.build_job_config(_full(), uid=UID, namespace=NAMESPACE, name=NAME, base_version="v7")
    assert config.seed == 7
    assert config.method.name == "forget-mi"
    assert config.method.selection.rule == "ForgetReachesTest"
    assert (config.method.epochs, config.method.learning_rate, config.method.batch_size) == (30, 0.001, 16)
    assert config.method.noise.image_std == 0.1


def test_the_trainer_reads_the_accepted_list_from_the_mounted_file_never_the_ids_or_the_source() -> None:
    by_uri = _minimal(forget={"subjectsUri": "s3://privacy/r.txt", "sha256": "a" * 64})
    for spec in (_full(), by_uri):
        config = jobs.build_job_config(spec, uid=UID, namespace=NAMESPACE, name=NAME, base_version="v7")
        assert (config.forget.file, config.forget.uri, config.forget.sha256) == (jobs.SUBJECTS_PATH, None, None)
    local = jobs.build_job_config(_full(), uid=UID, namespace=NAMESPACE, name=NAME, base_version="v7",
                                  subjects_file="/tmp/subjects.txt")
    assert local.forget.file == "/tmp/subjects.txt"


def test_a_retrain_config_uses_the_retrain_method_and_its_own_folder() -> None:
    config = jobs.build_job_config(_full(), uid=UID, namespace=NAMESPACE, name=NAME, base_version="v7",
                                   kind="retrain")
    assert config.method.name == "retrain"
    assert config.candidate_version == "v7-retrained-0b3f9c2e"
    assert config.report_uri is not None and config.report_uri.endswith(f"/requests/{UID}/retrain/report.json")


def test_a_base_version_the_trainer_would_reject_is_an_invalid_spec() -> None:
    with pytest.raises(InvalidSpec, match=r"radiology/forget-request-0117.*model\.version"):
        jobs.build_job_config(_full(), uid=UID, namespace=NAMESPACE, name=NAME, base_version="bad version!")


def test_request_paths_keep_the_receipt_at_the_top() -> None:
    paths = jobs.request_paths("file:///reg", "m", "u", kind="retrain")
    assert paths.directory == "file:///reg/m/requests/u"
    assert paths.report == "file:///reg/m/requests/u/retrain/report.json"
    assert paths.receipt == "file:///reg/m/requests/u/receipt.json"


# ---- ConfigMap ------------------------------------------------------------------------------------


def test_configmap_holds_the_job_config_and_is_owned_by_the_request() -> None:
    launch = jobs.build_launch(_full(), _settings(), name=NAME, namespace=NAMESPACE, uid=UID, base_version="v7")
    configmap = launch.configmap
    assert configmap["metadata"]["name"] == JOB_NAME
    assert configmap["metadata"]["namespace"] == NAMESPACE
    assert configmap["immutable"] is True
    assert JobConfig.model_validate_json(configmap["data"]["job.json"]) == launch.config
    (owner,) = configmap["metadata"]["ownerReferences"]
    assert owner == {"apiVersion": "unlearning.forgetmi.io/v1alpha1", "kind": "UnlearnRequest", "name": NAME,
                     "uid": UID, "controller": True, "blockOwnerDeletion": True}
    assert configmap["metadata"]["labels"]["unlearning.forgetmi.io/request"] == NAME


def test_configmap_never_contains_subject_ids() -> None:
    launch = jobs.build_launch(_full(), _settings(), name=NAME, namespace=NAMESPACE, uid=UID, base_version="v7")
    assert "FAKE-PATIENT" not in json.dumps(launch.configmap)
    assert "FAKE-PATIENT" not in json.dumps(launch.job)


def test_owner_reference_from_a_request_body() -> None:
    body = {"apiVersion": "unlearning.forgetmi.io/v1alpha1", "kind": "UnlearnRequest",
            "metadata": {"name": "r", "uid": "u", "namespace": "ns"}}
    assert jobs.owner_reference(body)["name"] == "r"
    assert jobs.owner_reference(body)["uid"] == "u"


# ---- Job ------------------------------------------------------------------------------------------


def test_job_identity_labels_and_owner() -> None:
    job = _job(_full())
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    meta = job["metadata"]
    assert (meta["name"], meta["namespace"]) == (JOB_NAME, NAMESPACE)
    assert meta["ownerReferences"][0]["uid"] == UID
    assert meta["ownerReferences"][0]["controller"] is True
    labels = meta["labels"]
    assert labels["app.kubernetes.io/name"] == "forgetmi-trainer"
    assert labels["app.kubernetes.io/managed-by"] == "forgetmi-operator"
    assert labels["unlearning.forgetmi.io/request"] == NAME
    assert labels["kueue.x-k8s.io/queue-name"] == "gpu-training"
    assert "kueue.x-k8s.io/queue-name" not in job["spec"]["template"]["metadata"]["labels"]
    assert job["spec"]["template"]["metadata"]["labels"]["unlearning.forgetmi.io/request-uid"] == UID


def test_job_without_a_queue_has_no_kueue_label_and_is_not_suspended() -> None:
    job = _job(_minimal())
    assert "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]
    assert job["spec"].get("suspend", False) is False


def test_job_runs_the_trainer_with_its_config() -> None:
    job = _job(_full())
    container = _container(job)
    assert container["command"] == ["python", "-m", "forgetmi_trainer", "run", "--config", "/etc/forgetmi/job.json"]
    assert {"name": "config", "mountPath": "/etc/forgetmi", "readOnly": True} in container["volumeMounts"]
    config_volume = next(v for v in _pod(job)["volumes"] if v["name"] == "config")
    assert config_volume["configMap"]["name"] == JOB_NAME
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["image"] == "ghcr.io/forgetmi/forgetmi-trainer:0.1.0"


@pytest.mark.parametrize("kind", ["unlearn", "retrain"])
def test_the_termination_message_is_never_the_log_tail(kind: str) -> None:
    # FallbackToLogsOnError would copy a crash's traceback (which may name a patient) into the
    # request's condition and an Event; File keeps only what the trainer writes itself.
    assert _container(_job(_full(), kind=kind))["terminationMessagePolicy"] == "File"


def test_job_scheduling_fields_come_from_the_spec() -> None:
    pod = _pod(_job(_full()))
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["priorityClassName"] == "batch-high"
    assert pod["serviceAccountName"] == "forgetmi-trainer"
    assert pod["restartPolicy"] == "Never"


def test_scheduling_defaults_come_from_the_settings_when_the_spec_has_none() -> None:
    settings = _settings(trainer_node_selector={"pool": "gpu"},
                         trainer_tolerations=[{"key": "gpu", "operator": "Exists"}],
                         trainer_service_account="trainer-sa", trainer_image="registry.local/trainer:1")
    pod = _pod(_job(_minimal(), settings))
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert pod["serviceAccountName"] == "trainer-sa"
    assert "priorityClassName" not in pod
    assert pod["containers"][0]["image"] == "registry.local/trainer:1"
    assert _job(_minimal(image="mine:2"), settings)["spec"]["template"]["spec"]["containers"][0]["image"] == "mine:2"


def test_gpu_resources_and_the_spec_overriding_default_requests() -> None:
    settings = _settings(trainer_resources={"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "64Gi"}})
    resources = _container(_job(_full(), settings))["resources"]
    assert resources["requests"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
    assert resources["limits"] == {"memory": "32Gi", "nvidia.com/gpu": "1"}


def test_gpus_from_the_spec_win_and_zero_gpus_means_none() -> None:
    settings = _settings(trainer_gpus=4)
    assert _container(_job(_minimal(), settings))["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert _container(_job(_minimal(resources={"gpus": 2}), settings))["resources"]["limits"] == {
        "nvidia.com/gpu": "2"}
    assert _container(_job(_minimal(resources={"gpus": 0}), settings))["resources"] == {}


def test_a_request_above_its_limit_is_an_invalid_spec() -> None:
    spec = _minimal(resources={"requests": {"memory": "64Gi"}, "limits": {"memory": "32Gi"}})
    with pytest.raises(InvalidSpec, match="memory request 64Gi exceeds its limit 32Gi"):
        _job(spec)


@pytest.mark.parametrize(("quantity", "value"), [("500m", "0.5"), ("2", "2"), ("1Ki", "1024"), ("1e3", "1000"),
                                                 ("1.5G", "1500000000"), (".5", "0.5")])
def test_quantity_values(quantity: str, value: str) -> None:
    assert jobs.quantity_value(quantity) == Decimal(value)


def test_a_malformed_quantity_is_refused() -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        jobs.quantity_value("lots")


def test_credentials_come_from_the_referenced_secret() -> None:
    container = _container(_job(_full(), _settings(credentials_secret="operator-default")))
    assert container["envFrom"] == [{"secretRef": {"name": "hospital-models-s3"}}]
    fallback = _container(_job(_minimal(), _settings(credentials_secret="operator-default")))
    assert fallback["envFrom"] == [{"secretRef": {"name": "operator-default"}}]
    assert "envFrom" not in _container(_job(_minimal()))


def test_s3_endpoint_is_passed_to_the_trainer() -> None:
    env = _container(_job(_minimal(), _settings(s3_endpoint_url="http://minio:9000")))["env"]
    assert {"name": "FORGETMI_S3_ENDPOINT_URL", "value": "http://minio:9000"} in env
    assert all(item["name"] != "FORGETMI_S3_ENDPOINT_URL" for item in _container(_job(_minimal()))["env"])


def test_every_job_mounts_the_requests_own_subjects_secret_read_only() -> None:
    snapshot = naming.subjects_secret_name(NAME, UID)
    assert snapshot == f"{JOB_NAME}-subjects"
    by_uri = _minimal(forget={"subjectsUri": "s3://privacy/r.txt"})
    for job in (_job(_full()), _job(by_uri), _job(_full(), kind="retrain")):
        volume = next(v for v in _pod(job)["volumes"] if v["name"] == "subjects")
        assert volume["secret"] == {"secretName": snapshot, "items": [{"key": "subjects", "path": "subjects"}],
                                    "defaultMode": 0o440}
        mount = next(m for m in _container(job)["volumeMounts"] if m["name"] == "subjects")
        assert mount == {"name": "subjects", "mountPath": "/var/run/forgetmi/subjects", "readOnly": True}
        # the Secret the request names (forget-request-0117-subjects) is never mounted: it may change
        assert "forget-request-0117-subjects" not in json.dumps(job)


def test_the_subjects_secret_is_immutable_owned_by_the_request_and_holds_only_the_list() -> None:
    owner = {"apiVersion": "unlearning.forgetmi.io/v1alpha1", "kind": "UnlearnRequest",
             "metadata": {"name": NAME, "uid": UID}}
    secret = jobs.build_subjects_secret(["P-001", "P-002"], name=NAME, namespace=NAMESPACE, uid=UID, owner=owner)
    assert secret["metadata"]["name"] == naming.subjects_secret_name(NAME, UID)
    assert secret["metadata"]["namespace"] == NAMESPACE
    assert (secret["type"], secret["immutable"]) == ("Opaque", True)
    assert secret["metadata"]["ownerReferences"] == [jobs.owner_reference(owner)]
    assert secret["metadata"]["labels"]["app.kubernetes.io/component"] == "subjects"
    assert secret["metadata"]["labels"]["unlearning.forgetmi.io/request-uid"] == UID
    assert list(secret["data"]) == ["subjects"]
    text = base64.b64decode(secret["data"]["subjects"]).decode()
    assert text == "P-001\nP-002\n" and parse_subjects(text) == ["P-001", "P-002"]
    assert jobs.owned_by(secret, UID) and not jobs.owned_by(secret, "another-uid")
    assert not jobs.owned_by({"metadata": {}}, UID)
    kubernetes_validate.validate(secret, kubernetes_validate.utils.latest_version(), strict=True)


def test_dev_shm_is_a_memory_backed_empty_dir() -> None:
    job = _job(_minimal())
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in _pod(job)["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in _container(job)["volumeMounts"]


def test_deadline_retries_and_fail_fast_exit_codes() -> None:
    spec = _job(_full())["spec"]
    assert spec["activeDeadlineSeconds"] == 7200
    assert spec["backoffLimit"] == 1
    rules = spec["podFailurePolicy"]["rules"]
    fail_job = [rule for rule in rules if rule["action"] == "FailJob"]
    assert fail_job == [{"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "In",
                                                             "values": [2, 3]}}]
    defaults = _job(_minimal())["spec"]
    assert (defaults["activeDeadlineSeconds"], defaults["backoffLimit"]) == (21600, 2)


def test_restricted_security_context() -> None:
    job = _job(_minimal())
    pod_security = _pod(job)["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    security = _container(job)["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert _pod(job)["automountServiceAccountToken"] is False


def test_build_job_is_pure_and_deterministic() -> None:
    spec = _full()
    before = spec.model_dump()
    assert _job(spec) == _job(spec)
    assert spec.model_dump() == before


def test_launch_names_agree() -> None:
    launch = jobs.build_launch(_full(), _settings(), name=NAME, namespace=NAMESPACE, uid=UID, base_version="v7",
                               kind="retrain")
    assert launch.job_name == JOB_NAME + "-retrain"
    assert launch.configmap["metadata"]["name"] == launch.job_name
    volume = next(v for v in _pod(launch.job)["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == launch.job_name
    assert launch.config.method.name == "retrain"


@pytest.mark.parametrize("example", ["unlearnrequest-minimal.yaml", "unlearnrequest-full.yaml"])
def test_manifests_pass_the_kubernetes_schema(example: str) -> None:
    spec = UnlearnRequestSpec.model_validate(_example(example))
    launch = jobs.build_launch(spec, _settings(), name=NAME, namespace=NAMESPACE, uid=UID, base_version="v7")
    for manifest in (launch.configmap, launch.job):
        kubernetes_validate.validate(manifest, kubernetes_validate.utils.latest_version(), strict=True)


def test_the_schema_check_catches_a_broken_job() -> None:
    job = _job(_minimal())
    job["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, kubernetes_validate.utils.latest_version(), strict=True)

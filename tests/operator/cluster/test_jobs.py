"""cluster.jobs: the pure builders of the ConfigMap holding the trainer's JobConfig and the batch/v1 Job."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import pytest
from harness.examples import example_spec, full_spec, minimal_spec

from forgetmi_operator.api import naming
from forgetmi_operator.api.errors import InvalidSpec
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.api.spec import UnlearnRequestSpec
from forgetmi_operator.cluster import jobs
from forgetmi_operator.cluster.resources import quantity_value
from forgetmi_operator.lifecycle.subjects import build_snapshot_secret
from forgetmi_trainer.contract import JobConfig, parse_subjects
from forgetmi_trainer.storage import RETRY_ENV, S3Settings

UID = "0b3f9c2e-1d4a-4c7e-9a51-7f2d3e4b5c6d"
NAME = "forget-request-0117"
NAMESPACE = "radiology"
JOB_NAME = "forgetmi-forget-request-0117-0b3f9c2e"




def _settings(**values: Any) -> Settings:
    return Settings(**values)


def _job(spec: UnlearnRequestSpec, settings: Settings | None = None, **kwargs: Any) -> dict[str, Any]:
    return jobs.build_job(spec, settings or _settings(), name=NAME, namespace=NAMESPACE, uid=UID, **kwargs)


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def _container(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = _pod(job)["containers"]
    return container


# ---- ConfigMap ------------------------------------------------------------------------------------


def test_configmap_holds_the_job_config_and_is_owned_by_the_request() -> None:
    launch = jobs.build_launch(full_spec(), _settings(), name=NAME, namespace=NAMESPACE, uid=UID, base_version="v7")
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
    launch = jobs.build_launch(full_spec(), _settings(), name=NAME, namespace=NAMESPACE, uid=UID, base_version="v7")
    assert "FAKE-PATIENT" not in json.dumps(launch.configmap)
    assert "FAKE-PATIENT" not in json.dumps(launch.job)


# ---- Job ------------------------------------------------------------------------------------------


def test_job_identity_labels_and_owner() -> None:
    job = _job(full_spec())
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
    job = _job(minimal_spec())
    assert "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]
    assert job["spec"].get("suspend", False) is False


def test_job_runs_the_trainer_with_its_config() -> None:
    job = _job(full_spec())
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
    assert _container(_job(full_spec(), kind=kind))["terminationMessagePolicy"] == "File"


def test_job_scheduling_fields_come_from_the_spec() -> None:
    pod = _pod(_job(full_spec()))
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["priorityClassName"] == "batch-high"
    assert pod["serviceAccountName"] == "forgetmi-trainer"
    assert pod["restartPolicy"] == "Never"


def test_scheduling_defaults_come_from_the_settings_when_the_spec_has_none() -> None:
    settings = _settings(trainer_node_selector={"pool": "gpu"},
                         trainer_tolerations=[{"key": "gpu", "operator": "Exists"}],
                         trainer_service_account="trainer-sa", trainer_image="registry.local/trainer:1")
    pod = _pod(_job(minimal_spec(), settings))
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert pod["serviceAccountName"] == "trainer-sa"
    assert "priorityClassName" not in pod
    assert pod["containers"][0]["image"] == "registry.local/trainer:1"
    assert _container(_job(minimal_spec(image="mine:2"), settings))["image"] == "mine:2"


def test_gpu_resources_and_the_spec_overriding_default_requests() -> None:
    settings = _settings(trainer_resources={"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "64Gi"}})
    resources = _container(_job(full_spec(), settings))["resources"]
    assert resources["requests"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
    assert resources["limits"] == {"memory": "32Gi", "nvidia.com/gpu": "1"}


def test_gpus_from_the_spec_win_and_zero_gpus_means_none() -> None:
    settings = _settings(trainer_gpus=4)
    assert _container(_job(minimal_spec(), settings))["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert _container(_job(minimal_spec(resources={"gpus": 2}), settings))["resources"]["limits"] == {
        "nvidia.com/gpu": "2"}
    assert _container(_job(minimal_spec(resources={"gpus": 0}), settings))["resources"] == {}


def test_a_request_above_its_limit_is_an_invalid_spec() -> None:
    spec = minimal_spec(resources={"requests": {"memory": "64Gi"}, "limits": {"memory": "32Gi"}})
    with pytest.raises(InvalidSpec, match="memory request 64Gi exceeds its limit 32Gi"):
        _job(spec)


@pytest.mark.parametrize(("quantity", "value"), [("500m", "0.5"), ("2", "2"), ("1Ki", "1024"), ("1e3", "1000"),
                                                 ("1.5G", "1500000000"), (".5", "0.5")])
def test_quantity_values(quantity: str, value: str) -> None:
    assert quantity_value(quantity) == Decimal(value)


def test_a_malformed_quantity_is_refused() -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        quantity_value("lots")


def test_credentials_come_from_the_referenced_secret() -> None:
    container = _container(_job(full_spec(), _settings(credentials_secret="operator-default")))
    assert container["envFrom"] == [{"secretRef": {"name": "hospital-models-s3"}}]
    fallback = _container(_job(minimal_spec(), _settings(credentials_secret="operator-default")))
    assert fallback["envFrom"] == [{"secretRef": {"name": "operator-default"}}]
    assert "envFrom" not in _container(_job(minimal_spec()))


def test_s3_endpoint_is_passed_to_the_trainer() -> None:
    env = _container(_job(minimal_spec(), _settings(s3_endpoint_url="http://minio:9000")))["env"]
    assert {"name": "FORGETMI_S3_ENDPOINT_URL", "value": "http://minio:9000"} in env
    assert all(item["name"] != "FORGETMI_S3_ENDPOINT_URL" for item in _container(_job(minimal_spec()))["env"])


def test_s3_retries_are_passed_to_the_trainer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer's storage reads the operator's retry settings from its environment."""
    settings = _settings(s3_retry_mode="legacy", s3_max_attempts=3, s3_retry_quota=100)
    env = {e["name"]: e["value"] for e in _container(_job(minimal_spec(), settings))["env"] if "value" in e}
    assert {name: env[name] for name in RETRY_ENV.values()} == {
        "FORGETMI_S3_RETRY_MODE": "legacy", "FORGETMI_S3_MAX_ATTEMPTS": "3", "FORGETMI_S3_RETRY_QUOTA": "100"}
    defaults = {e["name"]: e["value"] for e in _container(_job(minimal_spec()))["env"] if "value" in e}
    assert [defaults[name] for name in RETRY_ENV.values()] == ["adaptive", "10", "0"]
    for name in RETRY_ENV.values():
        monkeypatch.setenv(name, env[name])
    assert S3Settings.from_env() == S3Settings(retry_mode="legacy", max_attempts=3, retry_quota=100)


def test_every_job_mounts_the_requests_own_subjects_secret_read_only() -> None:
    snapshot = naming.subjects_secret_name(NAME, UID)
    assert snapshot == f"{JOB_NAME}-subjects"
    by_uri = minimal_spec(forget={"subjectsUri": "s3://privacy/r.txt"})
    for job in (_job(full_spec()), _job(by_uri), _job(full_spec(), kind="retrain")):
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
    secret = build_snapshot_secret(["P-001", "P-002"], name=NAME, namespace=NAMESPACE, uid=UID, owner=owner)
    assert secret["metadata"]["name"] == naming.subjects_secret_name(NAME, UID)
    assert secret["metadata"]["namespace"] == NAMESPACE
    assert (secret["type"], secret["immutable"]) == ("Opaque", True)
    assert secret["metadata"]["ownerReferences"] == [naming.owner_reference(owner)]
    assert secret["metadata"]["labels"]["app.kubernetes.io/component"] == "subjects"
    assert secret["metadata"]["labels"]["unlearning.forgetmi.io/request-uid"] == UID
    assert list(secret["data"]) == ["subjects"]
    text = base64.b64decode(secret["data"]["subjects"]).decode()
    assert text == "P-001\nP-002\n" and parse_subjects(text) == ["P-001", "P-002"]
    assert naming.owned_by(secret, UID) and not naming.owned_by(secret, "another-uid")
    kubernetes_validate.validate(secret, kubernetes_validate.utils.latest_version(), strict=True)


def test_dev_shm_is_a_memory_backed_empty_dir() -> None:
    job = _job(minimal_spec())
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in _pod(job)["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in _container(job)["volumeMounts"]


def test_deadline_retries_and_fail_fast_exit_codes() -> None:
    spec = _job(full_spec())["spec"]
    assert spec["activeDeadlineSeconds"] == 7200
    assert spec["backoffLimit"] == 1
    rules = spec["podFailurePolicy"]["rules"]
    fail_job = [rule for rule in rules if rule["action"] == "FailJob"]
    assert fail_job == [{"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "In",
                                                             "values": [2, 3]}}]
    defaults = _job(minimal_spec())["spec"]
    assert (defaults["activeDeadlineSeconds"], defaults["backoffLimit"]) == (21600, 2)


def test_restricted_security_context() -> None:
    job = _job(minimal_spec())
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
    spec = full_spec()
    before = spec.model_dump()
    assert _job(spec) == _job(spec)
    assert spec.model_dump() == before


def test_launch_names_agree() -> None:
    launch = jobs.build_launch(full_spec(), _settings(), name=NAME, namespace=NAMESPACE, uid=UID, base_version="v7",
                               kind="retrain")
    assert launch.job_name == JOB_NAME + "-retrain"
    assert launch.configmap["metadata"]["name"] == launch.job_name
    volume = next(v for v in _pod(launch.job)["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == launch.job_name
    assert launch.config.method.name == "retrain"


@pytest.mark.parametrize("example", ["unlearnrequest-minimal.yaml", "unlearnrequest-full.yaml"])
def test_manifests_pass_the_kubernetes_schema(example: str) -> None:
    spec = UnlearnRequestSpec.model_validate(example_spec(example))
    launch = jobs.build_launch(spec, _settings(), name=NAME, namespace=NAMESPACE, uid=UID, base_version="v7")
    for manifest in (launch.configmap, launch.job):
        kubernetes_validate.validate(manifest, kubernetes_validate.utils.latest_version(), strict=True)


def test_the_schema_check_catches_a_broken_job() -> None:
    job = _job(minimal_spec())
    job["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, kubernetes_validate.utils.latest_version(), strict=True)

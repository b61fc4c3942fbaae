"""cluster.trainjobs: the engine a request runs on, and the Kubeflow Trainer v2 TrainJob built for it.

Every TrainJob built here is checked against ``kubeflow-trainer-api`` (the published models of
Trainer v2.3): its models accept unknown keys, so a TrainJob passes only when parsing it and writing
it back gives the very same dict (a misplaced or unknown field is dropped and the two differ).
"""

from __future__ import annotations

import copy
import re
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import pytest
from harness.examples import full_spec, minimal_spec
from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

from forgetmi_operator.api import naming
from forgetmi_operator.api.settings import Settings
from forgetmi_operator.api.spec import UnlearnRequestSpec
from forgetmi_operator.cluster import jobs, pods, trainjobs

UID = "0b3f9c2e-1d4a-4c7e-9a51-7f2d3e4b5c6d"
NAME = "forget-request-0117"
NAMESPACE = "radiology"
RFC_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
SCALED = {"nodes": 2, "processesPerNode": 4, "gpus": 4}


def _spec(resources: dict[str, Any] | None = None, **changes: Any) -> UnlearnRequestSpec:
    return minimal_spec(**({"resources": resources} if resources is not None else {}), **changes)


def _trainjob(spec: UnlearnRequestSpec, settings: Settings | None = None, **kwargs: Any) -> dict[str, Any]:
    return trainjobs.build_trainjob(spec, settings or Settings(), name=kwargs.pop("name", NAME), namespace=NAMESPACE,
                                    uid=UID, **kwargs)


def _launch(spec: UnlearnRequestSpec, settings: Settings | None = None) -> jobs.Launch:
    return jobs.build_launch(spec, settings or Settings(), name=NAME, namespace=NAMESPACE, uid=UID, base_version="v7")


def _validated(trainjob: dict[str, Any]) -> TrainerV1alpha1TrainJob:
    model = TrainerV1alpha1TrainJob.from_dict(copy.deepcopy(trainjob))
    assert model is not None
    assert model.to_dict() == trainjob
    return model


def _patch_pod(trainjob: dict[str, Any]) -> dict[str, Any]:
    (patch,) = trainjob["spec"]["runtimePatches"]
    (replicated,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert replicated["name"] == "node"
    return replicated["template"]["spec"]["template"]


# ---- the engine ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("resources", "engine"), [
    ({}, "Job"), ({"gpus": 1}, "Job"), ({"gpus": 0}, "Job"), ({"gpus": 2}, "TrainJob"),
    ({"gpus": 0, "processesPerNode": 2}, "TrainJob"), ({"nodes": 2, "gpus": 1}, "TrainJob"),
    ({"gpus": 2, "engine": "Job"}, "Job"), ({"gpus": 1, "engine": "TrainJob"}, "TrainJob"), (SCALED, "TrainJob"),
])
def test_one_process_on_one_node_is_a_job_anything_more_a_trainjob(resources: dict[str, Any], engine: str) -> None:
    spec = _spec(resources)
    assert trainjobs.engine_of(spec) == engine
    launch = _launch(spec)
    assert launch.engine == engine
    assert (launch.job["apiVersion"], launch.job["kind"]) == (
        ("batch/v1", "Job") if engine == "Job" else ("trainer.kubeflow.org/v1alpha1", "TrainJob"))


def test_one_gpu_on_one_node_is_still_the_batch_job_of_before() -> None:
    spec = _spec({"nodes": 1, "gpus": 1})
    launch = _launch(spec)
    assert launch.engine == "Job"
    assert launch.job == jobs.build_job(spec, Settings(), name=NAME, namespace=NAMESPACE, uid=UID)
    (container,) = launch.job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "forgetmi_trainer", "run", "--config", jobs.CONFIG_PATH]


def test_engine_job_runs_several_processes_under_torchrun_standalone() -> None:
    launch = _launch(_spec({"gpus": 2, "engine": "Job"}))
    assert launch.engine == "Job"
    (container,) = launch.job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "forgetmi_trainer", "launch", "--standalone", "--nnodes", "1",
                                    "--nproc-per-node", "2", "--", "run", "--config", jobs.CONFIG_PATH]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    kubernetes_validate.validate(launch.job, kubernetes_validate.utils.latest_version(), strict=True)


# ---- the TrainJob -------------------------------------------------------------------------------


def test_trainjob_for_two_nodes_of_four_gpus_validates_and_waits_for_its_kueue_queue() -> None:
    spec = _spec(SCALED, queueName="gpu-training")
    trainjob = _launch(spec).job
    model = _validated(trainjob)
    assert (trainjob["apiVersion"], trainjob["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert trainjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-training"
    assert trainjob["spec"]["suspend"] is True and model.spec.suspend is True
    trainer = trainjob["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 4)
    assert trainer["resourcesPerNode"]["requests"]["nvidia.com/gpu"] == "4"
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "4"
    assert trainer["command"] == ["python", "-m", "forgetmi_trainer", "launch", "--", "run", "--config",
                                  jobs.CONFIG_PATH]
    assert trainer["image"] == Settings().trainer_image
    assert trainjob["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                                              "name": "torch-distributed"}


def test_trainjob_without_a_queue_has_no_kueue_label_and_is_not_suspended() -> None:
    trainjob = _trainjob(_spec(SCALED))
    _validated(trainjob)
    assert "kueue.x-k8s.io/queue-name" not in trainjob["metadata"]["labels"]
    assert "suspend" not in trainjob["spec"]


def test_the_full_example_scaled_out_validates() -> None:
    spec = full_spec().model_copy(update={"priority_class_name": None, "resources": _spec(SCALED).resources})
    _validated(_trainjob(spec))


def test_the_round_trip_catches_a_field_the_api_does_not_have() -> None:
    trainjob = _trainjob(_spec(SCALED))
    _patch_pod(trainjob)["spec"]["priorityClassName"] = "batch-high"
    assert TrainerV1alpha1TrainJob.from_dict(copy.deepcopy(trainjob)).to_dict() != trainjob
    trainjob = _trainjob(_spec(SCALED))
    _patch_pod(trainjob)["spec"]["containers"][0]["terminationMessagePolicy"] = "File"
    assert TrainerV1alpha1TrainJob.from_dict(copy.deepcopy(trainjob)).to_dict() != trainjob


def test_name_is_deterministic_rfc_1035_and_leaves_room_for_jobsets_pod_names() -> None:
    assert _trainjob(_spec(SCALED))["metadata"]["name"] == naming.job_name(NAME, UID)
    long_name = "r" * 100 + "." + "x" * 152
    assert len(long_name) == 253
    names = set()
    for kind in ("unlearn", "retrain"):
        name = _trainjob(_spec(SCALED), name=long_name, kind=kind)["metadata"]["name"]
        assert name == _trainjob(_spec(SCALED), name=long_name, kind=kind)["metadata"]["name"]
        assert RFC_1035.fullmatch(name) and len(name) <= trainjobs.MAX_NAME <= 63
        assert len(f"{name}-node-0-63-abcde") <= 63  # JobSet's longest Pod name with 64 nodes
        assert naming.uid_suffix(UID) in name
        names.add(name)
    assert len(names) == 2


def test_trainjob_is_owned_by_the_request_and_bounded_by_its_deadline() -> None:
    body = {"apiVersion": "unlearning.forgetmi.io/v1alpha1", "kind": "UnlearnRequest",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": UID}}
    trainjob = _trainjob(_spec(SCALED, activeDeadlineSeconds=7200), owner=body)
    _validated(trainjob)
    assert trainjob["metadata"]["ownerReferences"] == [
        {"apiVersion": "unlearning.forgetmi.io/v1alpha1", "kind": "UnlearnRequest", "name": NAME, "uid": UID,
         "controller": True, "blockOwnerDeletion": True}]
    assert trainjob["spec"]["activeDeadlineSeconds"] == 7200
    assert trainjob["metadata"]["labels"] == naming.labels_for(NAME, uid=UID)


def test_runtime_patch_mounts_config_and_forget_list_like_the_job() -> None:
    spec = _spec(SCALED)
    trainjob = _trainjob(spec)
    job = jobs.build_job(spec.model_copy(update={"resources": _spec({"gpus": 1}).resources}), Settings(), name=NAME,
                         namespace=NAMESPACE, uid=UID)
    job_pod = job["spec"]["template"]
    (patch,) = trainjob["spec"]["runtimePatches"]
    assert patch["manager"] == "unlearning.forgetmi.io/operator"
    pod = _patch_pod(trainjob)
    assert pod["metadata"] == {"labels": job_pod["metadata"]["labels"]}
    assert pod["spec"]["volumes"] == job_pod["spec"]["volumes"]
    assert {v["name"]: v.get("secret", v.get("configMap")) for v in pod["spec"]["volumes"]}["subjects"][
        "secretName"] == naming.subjects_secret_name(NAME, UID)
    assert pod["spec"]["securityContext"] == job_pod["spec"]["securityContext"]
    (container,) = pod["spec"]["containers"]
    (job_container,) = job_pod["spec"]["containers"]
    assert container == {"name": "node", "securityContext": job_container["securityContext"],
                         "volumeMounts": job_container["volumeMounts"]}
    assert trainjob["spec"]["trainer"]["env"] == job_container["env"]


def test_credentials_reach_every_node_as_single_variables() -> None:
    trainjob = _trainjob(_spec(SCALED, credentialsSecretRef={"name": "s3-keys"}), Settings(s3_endpoint_url="http://s3"))
    _validated(trainjob)
    env = {e["name"]: e for e in trainjob["spec"]["trainer"]["env"]}
    assert env["FORGETMI_S3_ENDPOINT_URL"]["value"] == "http://s3"
    for key, optional in (("AWS_ACCESS_KEY_ID", False), ("AWS_SECRET_ACCESS_KEY", False),
                          ("AWS_SESSION_TOKEN", True), ("AWS_ENDPOINT_URL", True)):
        assert env[key]["valueFrom"] == {"secretKeyRef": {"name": "s3-keys", "key": key, "optional": optional}}
    assert "AWS_ACCESS_KEY_ID" not in {e["name"] for e in _trainjob(_spec(SCALED))["spec"]["trainer"]["env"]}


def test_placement_lands_in_the_runtime_patch() -> None:
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    spec = _spec(SCALED, nodeSelector={"nvidia.com/gpu.product": "H100"}, tolerations=[toleration],
                 serviceAccountName="forgetmi-trainer")
    trainjob = _trainjob(spec)
    _validated(trainjob)
    pod = _patch_pod(trainjob)["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    assert pod["tolerations"] == [toleration]
    assert pod["serviceAccountName"] == "forgetmi-trainer"
    defaults = _patch_pod(_trainjob(_spec(SCALED), Settings(trainer_node_selector={"pool": "gpu"},
                                                            trainer_service_account="sa")))["spec"]
    assert (defaults["nodeSelector"], defaults["serviceAccountName"]) == ({"pool": "gpu"}, "sa")
    assert "tolerations" not in defaults


def test_a_priority_class_is_not_put_where_the_trainjob_api_has_none() -> None:
    trainjob = _trainjob(_spec(SCALED, priorityClassName="batch-high"))
    _validated(trainjob)
    assert "batch-high" not in str(trainjob)


def test_cpu_processes_without_gpus() -> None:
    trainjob = _trainjob(_spec({"gpus": 0, "processesPerNode": 2, "requests": {"cpu": "4"}}))
    _validated(trainjob)
    trainer = trainjob["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (1, 2)
    assert trainer["resourcesPerNode"] == {"requests": {"cpu": "4"}}


def test_runtime_from_the_settings_or_the_request() -> None:
    settings = Settings(trainjob_runtime="torch-nccl")
    assert _trainjob(_spec(SCALED), settings)["spec"]["runtimeRef"]["name"] == "torch-nccl"
    named = _trainjob(_spec(SCALED, runtimeRef={"name": "torch-ib", "kind": "TrainingRuntime"}), settings)
    _validated(named)
    assert named["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "TrainingRuntime",
                                           "name": "torch-ib"}
    defaulted_kind = _trainjob(_spec(SCALED, runtimeRef={"name": "torch-ib"}))
    assert defaulted_kind["spec"]["runtimeRef"]["kind"] == "ClusterTrainingRuntime"


def test_the_launch_names_the_configmap_the_trainjob_mounts() -> None:
    launch = _launch(_spec(SCALED))
    volume = next(v for v in _patch_pod(launch.job)["spec"]["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == launch.configmap["metadata"]["name"]
    assert launch.job_name == launch.job["metadata"]["name"]
    assert launch.config.termination_message_path == pods.TERMINATION_LOG


def test_api_coordinates() -> None:
    assert trainjobs.TRAINJOB_API == ("trainer.kubeflow.org", "v1alpha1", "trainjobs")

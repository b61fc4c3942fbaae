"""The operator running for real (Kopf, in a thread) against the emulated API server."""

from __future__ import annotations

import base64
import contextlib
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from kopf.testing import KopfRunner

from harness.emulator import TRAINER_RESOURCES, ApiServer

REQUESTS = ("unlearning.forgetmi.io", "v1alpha1", "unlearnrequests")
JOBS = ("batch", "v1", "jobs")
SECRETS = ("", "v1", "secrets")
EVENTS = ("", "v1", "events")
NAMESPACES = ("", "v1", "namespaces")
CRDS = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
TRAINJOBS = ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
CLUSTER_TRAINING_RUNTIMES = ("trainer.kubeflow.org", "v1alpha1", "clustertrainingruntimes")
CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "unlearnrequests.unlearning.forgetmi.io.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_kubeconfig(path: Path, url: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "tester", "user": {"token": "test-token"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester",
                                                      "namespace": "default"}}],
    }))
    return path


def install_crd(api: ApiServer) -> None:
    api.create(CRDS, None, yaml.safe_load(CRD_FILE.read_text()))


def _trainer_crd(group: str, version: str, plural: str, kind: str, namespaced: bool) -> dict[str, Any]:
    columns = ([{"name": "State", "type": "string", "jsonPath": ".status.conditions[-1:].type"}]
               if kind == "TrainJob" else [])
    columns.append({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
    return {"metadata": {"name": f"{plural}.{group}"}, "spec": {
        "group": group, "scope": "Namespaced" if namespaced else "Cluster",
        "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "listKind": f"{kind}List"},
        "versions": [{"name": version, "served": True, "storage": True,
                      "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                      "subresources": {"status": {}} if kind == "TrainJob" else {},
                      "additionalPrinterColumns": columns}]}}


def install_trainer(api: ApiServer, runtimes: tuple[str, ...] = ("torch-distributed",)) -> None:
    """Kubeflow Trainer v2 on the emulator: its resources served (API discovery included), their
    CRDs stored (``kubectl get trainjob`` prints Trainer's columns), and the ClusterTrainingRuntimes
    ``runtimes`` (the default install's ``torch-distributed``). A cluster without this call has no
    Trainer: creating a TrainJob there answers 404, as a real API server does."""
    for (group, version, plural), info in TRAINER_RESOURCES.items():
        api.serve((group, version, plural), info)
        api.create(CRDS, None, _trainer_crd(group, version, plural, info["kind"], info.get("namespaced", True)))
    for name in runtimes:
        api.create(CLUSTER_TRAINING_RUNTIMES, None, {"metadata": {"name": name}, "spec": {
            "mlPolicy": {"numNodes": 1, "torch": {"numProcPerNode": "auto"}},
            "template": {"spec": {"replicatedJobs": [{"name": "node", "template": {
                "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                "spec": {"template": {"spec": {"containers": [
                    {"name": "node", "image": "pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime"}]}}}}}]}}}})


CREDENTIALS_SECRET = "s3-credentials"
"""The S3 keys of each test namespace (moto checks no signature): the operator reads a request's
objects with its namespace's Secret, never with its own identity."""


def credentials_secret() -> dict[str, Any]:
    keys = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    return {"metadata": {"name": CREDENTIALS_SECRET}, "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in keys.items()}}


def start_cluster(tmp_path: Path, setenv: Callable[[str, str], None], *,
                  trainer: bool = False) -> tuple[ApiServer, str]:
    """A started emulator with the CRD and a fresh namespace holding its S3 credentials Secret, and the
    operator's environment for it (``$KUBECONFIG``, free ports, short intervals and timeouts, the
    credentials Secret's name) set with ``setenv``; (api, namespace). With ``trainer``, Kubeflow
    Trainer v2 is installed too (:func:`install_trainer`; run its TrainJobs with
    ``harness.trainjobrunner.TrainJobRunner``)."""
    api = ApiServer()
    api.start()
    install_crd(api)
    if trainer:
        install_trainer(api)
    return api, join_cluster(api, tmp_path, setenv)


def join_cluster(api: ApiServer, tmp: Path, setenv: Callable[[str, str], None]) -> str:
    """A fresh namespace in a started emulator, with its S3 credentials Secret, and the operator's
    environment for it set with ``setenv`` (``$KUBECONFIG``, free ports, short intervals and timeouts,
    the credentials Secret's name); the namespace."""
    setenv("KUBECONFIG", str(write_kubeconfig(tmp / "kubeconfig", api.api_url)))
    setenv("FORGETMI_PROGRESS_INTERVAL_SECONDS", "0.5")
    setenv("FORGETMI_METRICS_PORT", str(free_port()))
    setenv("FORGETMI_REQUEST_TIMEOUT_SECONDS", "10")
    setenv("FORGETMI_WATCH_TIMEOUT_SECONDS", "60")
    setenv("FORGETMI_CREDENTIALS_SECRET", CREDENTIALS_SECRET)
    namespace = f"ns-{uuid.uuid4().hex[:6]}"
    api.create(NAMESPACES, None, {"metadata": {"name": namespace}})
    api.create(SECRETS, namespace, credentials_secret())
    return namespace


@contextlib.contextmanager
def operator(namespace: str) -> Iterator[KopfRunner]:
    """The operator (``python -m forgetmi_operator`` arguments) watching ``namespace``."""
    import forgetmi_operator.handlers  # noqa: F401  (registers the handlers once per process)

    args = ["run", "--standalone", f"--namespace={namespace}", "-m", "forgetmi_operator.handlers"]
    with KopfRunner(args, timeout=60) as runner:
        yield runner


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"Timed out after {timeout:g} s waiting for {what}.")

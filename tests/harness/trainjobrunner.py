"""Kubeflow Trainer v2's controllers (TrainJob → JobSet → Job → Pod) and the kubelet, for the emulator.

For every TrainJob (``trainer.kubeflow.org/v1alpha1``) created in an emulator that serves them
(``harness.cluster.install_trainer``), :class:`TrainJobRunner` does what the ``torch-distributed``
ClusterTrainingRuntime would make happen on one node:

- a suspended TrainJob (Kueue has not admitted it) gets the ``Suspended`` condition and is left
  alone until ``spec.suspend`` turns false;
- it creates the node's Pod as JobSet would (``<name>-node-0-0-xxxxx``; the pod template labels of
  the TrainJob's ``runtimePatches`` plus ``jobset.sigs.k8s.io/jobset-name`` and
  ``batch.kubernetes.io/job-name=<name>-node-0``; owned by the TrainJob, since the emulator has no
  JobSet or Job in between), marks it Running;
- copies the JobConfig ConfigMap and the forget-list Secret that the patches' volumes name, as
  :class:`~harness.jobrunner.JobRunner` does for a Job, and runs ``spec.trainer.command`` +
  ``args`` locally (``python`` → this interpreter; ``--config`` → the copy; ``--termination-log
  <tmp>`` right after the ``run`` subcommand) with the env of ``spec.trainer.env``, the patches'
  ``node`` container env, and the ``PET_*`` variables the torch plugin sets (``PET_NNODES=1``,
  ``PET_NPROC_PER_NODE=numProcPerNode``, ``PET_NODE_RANK=0``, ``PET_MASTER_ADDR=127.0.0.1``,
  ``PET_MASTER_PORT=<free port>``), which torchrun reads as its defaults;
- writes back the Pod's terminated state (exit code, termination message) and phase, and the
  TrainJob's ``status`` as Trainer v2.3 copies it from its JobSet: ``Complete`` (reason
  ``AllJobsCompleted``) or ``Failed`` (reason ``FailedJobs``; ``DeadlineExceeded`` past
  ``activeDeadlineSeconds``) and ``jobsStatus`` ``[{name: node, active, ready, succeeded, failed,
  suspended}]``.

Only ``numNodes: 1`` runs here (one machine); a TrainJob asking for more is refused with an error
the test sees (:attr:`TrainJobRunner.errors`). The node's Job is not retried (the fail-fast
behaviour a ``backoffLimit: 0`` runtime gives).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.cluster import free_port
from harness.emulator import ApiServer
from harness.jobrunner import (
    PODS,
    WorkloadRunner,
    literal_env,
    run_trainer,
    running_pod_status,
    terminated_pod_status,
    write_job_config,
)

TRAINJOBS = ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
NODE = "node"
"""The torch-distributed runtime's replicated Job and trainer container name."""
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
MASTER_PORT = "29500"
"""Trainer's ``ContainerTrainerPort``: the ``PET_MASTER_PORT`` a real node Pod gets."""

SUSPENDED = ("Suspended", "TrainJob is suspended")
RESUMED = ("Resumed", "TrainJob is resumed")
COMPLETED = ("AllJobsCompleted", "jobset completed successfully")
FAILED_JOBS = ("FailedJobs", "jobset failed due to one or more job failures")
DEADLINE_EXCEEDED = ("DeadlineExceeded", "TrainJob was active longer than specified deadline")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def condition(type_: str, status: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": type_, "status": "True" if status else "False", "reason": reason, "message": message,
            "lastTransitionTime": _now()}


def jobs_status(*, active: int = 0, ready: int = 0, succeeded: int = 0, failed: int = 0,
                suspended: int = 0) -> list[dict[str, Any]]:
    """``status.jobsStatus`` of a TrainJob with its one ``node`` Job."""
    return [{"name": NODE, "active": active, "ready": ready, "succeeded": succeeded, "failed": failed,
             "suspended": suspended}]


def node_template(trainjob: Mapping[str, Any]) -> dict[str, Any]:
    """The node Pod template the TrainJob's ``runtimePatches`` give, merged in order:
    ``{"metadata": {labels, annotations}, "spec": {volumes, ..., "containers": [node container]}}``
    (the container: its ``env`` and ``volumeMounts``)."""
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    spec: dict[str, Any] = {}
    container: dict[str, Any] = {"name": NODE, "env": [], "volumeMounts": []}
    for patch in trainjob["spec"].get("runtimePatches") or []:
        jobset = ((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec") or {}
        for replicated in jobset.get("replicatedJobs") or []:
            if replicated.get("name") != NODE:
                continue
            pod = (((replicated.get("template") or {}).get("spec") or {}).get("template")) or {}
            meta = pod.get("metadata") or {}
            labels.update(meta.get("labels") or {})
            annotations.update(meta.get("annotations") or {})
            for key, value in (pod.get("spec") or {}).items():
                if key == "containers":
                    for patched in value:
                        if patched.get("name") == NODE:
                            container["env"] += patched.get("env") or []
                            container["volumeMounts"] += patched.get("volumeMounts") or []
                elif isinstance(value, list):
                    spec[key] = [*spec.get(key, []), *value]
                else:
                    spec[key] = value
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": {**spec, "containers": [container]}}


def local_command(command: Sequence[str], config_path: Path, termination: Path) -> list[str]:
    """``command`` as this machine runs it: ``python`` is this interpreter (``torchrun`` its
    ``torch.distributed.run``), the ``--config`` value is ``config_path``, and ``--termination-log
    termination`` follows the ``run`` subcommand (the first ``run`` after ``--``, if there is one)."""
    argv = list(command)
    if argv and Path(argv[0]).name in ("python", "python3"):
        argv[:1] = [sys.executable]
    elif argv and Path(argv[0]).name == "torchrun":
        argv[:1] = [sys.executable, "-m", "torch.distributed.run"]
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            argv[i + 1] = str(config_path)
        elif arg.startswith("--config="):
            argv[i] = f"--config={config_path}"
    start = argv.index("--") if "--" in argv else 0
    if "run" not in argv[start:]:
        raise ValueError(f"spec.trainer.command {list(command)} runs no 'run' subcommand")
    at = argv.index("run", start) + 1
    argv[at:at] = ["--termination-log", str(termination)]
    return argv


class TrainJobRunner(WorkloadRunner):
    """Runs each new, admitted TrainJob of ``api`` once, in a thread of its own (see the module)."""

    RESOURCE = TRAINJOBS

    def __init__(self, api: ApiServer, workdir: Path, *, timeout_seconds: float = 240.0) -> None:
        super().__init__(api, workdir, timeout_seconds=timeout_seconds)
        self.suspended: set[str] = set()
        """uids of the TrainJobs seen suspended (their status says so)."""
        self.commands: dict[str, list[str]] = {}
        """name → the command line run locally."""
        self.envs: dict[str, dict[str, str]] = {}
        """name → the env of the workload (spec.trainer.env, the patches' and the ``PET_*`` variables)."""

    def __enter__(self) -> TrainJobRunner:
        super().__enter__()
        return self

    def _ready(self, obj: dict[str, Any]) -> bool:
        if not obj["spec"].get("suspend"):
            return True
        meta = obj["metadata"]
        if meta["uid"] not in self.suspended:
            self.suspended.add(meta["uid"])
            self._status(meta["namespace"], meta["name"], [condition("Suspended", True, *SUSPENDED)],
                         jobs_status(suspended=1))
        return False

    def _status(self, ns: str, name: str, conditions: list[dict[str, Any]], jobs: list[dict[str, Any]]) -> None:
        """Set the conditions of ``conditions``' types (others kept, as meta.SetStatusCondition does)."""
        current = (self.api.get(TRAINJOBS, ns, name) or {}).get("status") or {}
        types = {c["type"] for c in conditions}
        kept = [c for c in current.get("conditions") or [] if c["type"] not in types]
        self.api.patch(TRAINJOBS, ns, name, {"status": {"conditions": kept + conditions, "jobsStatus": jobs}},
                       subresource="status")

    # ---- one TrainJob --------------------------------------------------------------------------

    def _prepare(self, trainjob: dict[str, Any], tmp: Path) -> tuple[list[str], dict[str, str]]:
        """(the local command line, its env)."""
        trainer = trainjob["spec"].get("trainer") or {}
        template = node_template(trainjob)
        container = template["spec"]["containers"][0]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        config_path = write_job_config(self.api, trainjob["metadata"]["namespace"],
                                       template["spec"].get("volumes") or [], mounts, tmp)
        argv = local_command([*(trainer.get("command") or []), *(trainer.get("args") or [])], config_path,
                             tmp / "termination-log")
        env = {**os.environ, **literal_env(trainer.get("env")), **literal_env(container["env"]),
               **self._pet_env(trainjob, master_addr="127.0.0.1", master_port=str(free_port()))}
        return argv, env

    @staticmethod
    def _pet_env(trainjob: Mapping[str, Any], *, master_addr: str, master_port: str) -> dict[str, str]:
        trainer = trainjob["spec"].get("trainer") or {}
        nodes = int(trainer.get("numNodes") or 1)
        if nodes != 1:
            raise ValueError(f"TrainJob {trainjob['metadata']['name']}: spec.trainer.numNodes is {nodes}; the "
                             f"harness runs one node on this machine (numNodes: 1)")
        return {"PET_NNODES": "1", "PET_NPROC_PER_NODE": str(int(trainer.get("numProcPerNode") or 1)),
                "PET_NODE_RANK": "0", "PET_MASTER_ADDR": master_addr, "PET_MASTER_PORT": master_port}

    def _run_job(self, trainjob: dict[str, Any]) -> None:
        meta = trainjob["metadata"]
        ns, name = meta["namespace"], meta["name"]
        self.started.append(name)
        tmp = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.workdir))
        argv, env = self._prepare(trainjob, tmp)
        self.commands[name], self.envs[name] = argv, env
        resumed = [condition("Suspended", False, *RESUMED)] if meta["uid"] in self.suspended else []
        self._status(ns, name, resumed, jobs_status(active=1))
        pod = self._create_pod(trainjob)
        self._status(ns, name, [], jobs_status(active=1, ready=1))
        deadline = trainjob["spec"].get("activeDeadlineSeconds")
        limit = min(self.timeout, float(deadline)) if deadline else self.timeout
        began = time.monotonic()
        code, message = run_trainer(argv, env, tmp, gone=lambda: self._gone(ns, name), timeout=limit)
        self.exit_codes.setdefault(name, []).append(code)
        if self.api.get(TRAINJOBS, ns, name) is None:
            return
        self.api.patch(PODS, ns, pod, terminated_pod_status(NODE, code, message), subresource="status")
        if code == 0:
            self._status(ns, name, [condition("Complete", True, *COMPLETED)], jobs_status(succeeded=1))
        elif deadline and time.monotonic() - began >= float(deadline):
            self._status(ns, name, [condition("Failed", True, *DEADLINE_EXCEEDED)], jobs_status(failed=1))
        else:
            reason, text = FAILED_JOBS
            self._status(ns, name, [condition("Failed", True, reason, f"{text} (first failed job: {name}-node-0)")],
                         jobs_status(failed=1))

    def _create_pod(self, trainjob: dict[str, Any]) -> str:
        """The node Pod JobSet's Job ``<name>-node-0`` would create, Running."""
        meta, trainer = trainjob["metadata"], trainjob["spec"].get("trainer") or {}
        name = meta["name"]
        template = node_template(trainjob)
        job = f"{name}-{NODE}-0"
        labels = {**template["metadata"]["labels"], JOBSET_NAME_LABEL: name,
                  "jobset.sigs.k8s.io/replicatedjob-name": NODE, "jobset.sigs.k8s.io/job-index": "0",
                  "trainer.kubeflow.org/trainjob-ancestor-step": "trainer",
                  JOB_NAME_LABEL: job, "job-name": job}
        patched = template["spec"]["containers"][0]
        pet = self._pet_env(trainjob, master_addr=f"{name}-{NODE}-0-0.{name}", master_port=MASTER_PORT)
        container = {"name": NODE, "image": trainer.get("image", ""), "command": trainer.get("command") or [],
                     "args": trainer.get("args") or [], "resources": trainer.get("resourcesPerNode") or {},
                     "env": [*(trainer.get("env") or []), *patched["env"],
                             *({"name": k, "value": v} for k, v in pet.items())],
                     "volumeMounts": patched["volumeMounts"], "ports": [{"containerPort": int(MASTER_PORT)}]}
        owner = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "name": name,
                 "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}
        pod_name = f"{job}-0-{uuid.uuid4().hex[:5]}"
        self.api.create(PODS, meta["namespace"], {
            "metadata": {"name": pod_name, "labels": labels, "annotations": template["metadata"]["annotations"],
                         "ownerReferences": [owner]},
            "spec": {**template["spec"], "containers": [container]},
            "status": running_pod_status(NODE),
        })
        return pod_name

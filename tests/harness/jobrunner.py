"""The Job controller and kubelet the emulated API server lacks.

For every Job created in the emulator, :class:`JobRunner` creates a Pod, marks it Running, runs
the trainer container's command as a local process (``python -m forgetmi_trainer run --config
<tmp>/job.json --termination-log <tmp>/termination-log``) with the container's env, and writes
the outcome back as Kubernetes would: the Pod's ``Succeeded``/``Failed`` phase with the
container's terminated state and termination message, and the Job's ``succeeded``/``failed``
counts and ``Complete``/``Failed`` condition (``PodFailurePolicy`` for the fail-fast exit codes,
``BackoffLimitExceeded`` once retries are spent).

The ConfigMap's ``job.json`` is copied to a temp file; the forget subjects Secret the Job mounts
is written to a temp file and ``forget.file`` rewritten to point at it.

The pieces any workload runner needs (the polling loop, :func:`write_job_config`,
:func:`run_trainer`, :func:`terminated_pod_status`) are shared with
:mod:`harness.trainjobrunner`.
"""

from __future__ import annotations

import abc
import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.emulator import ApiServer, Key

JOBS = ("batch", "v1", "jobs")
PODS = ("", "v1", "pods")
CONFIGMAPS = ("", "v1", "configmaps")
SECRETS = ("", "v1", "secrets")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_job_config(api: ApiServer, namespace: str, volumes: Sequence[Mapping[str, Any]],
                     mounts: Mapping[str, str], tmp: Path) -> Path:
    """``tmp/job.json``: the ``job.json`` of the ConfigMap among ``volumes``, with the mounted Secret
    items written under ``tmp`` and ``forget.file`` (and ``previously_forgotten.file``) pointed at their copies;
    ``mounts`` maps volume
    name → mount path (of the trainer container)."""
    config: dict[str, Any] | None = None
    subjects: dict[str, Path] = {}
    for volume in volumes:
        if "configMap" in volume:
            cm = api.get(CONFIGMAPS, namespace, volume["configMap"]["name"])
            assert cm is not None, "the workload's ConfigMap does not exist"
            config = json.loads(cm["data"]["job.json"])
        elif "secret" in volume and volume["name"] in mounts:
            secret = api.get(SECRETS, namespace, volume["secret"]["secretName"]) or {"data": {}}
            for item in volume["secret"].get("items") or [{"key": k, "path": k} for k in secret["data"]]:
                path = tmp / f"secret-{volume['name']}-{item['path']}"
                if item["key"] in (secret.get("data") or {}):
                    path.write_bytes(base64.b64decode(secret["data"][item["key"]]))
                subjects[f"{mounts[volume['name']]}/{item['path']}"] = path
    assert config is not None, "the workload mounts no ConfigMap"
    for field in ("forget", "previously_forgotten"):  # the lists a Job reads from its mounted Secret
        source = config.get(field) or {}
        if source.get("file") in subjects:
            source["file"] = str(subjects[source["file"]])
    config["termination_message_path"] = str(tmp / "termination-log")
    config_path = tmp / "job.json"
    config_path.write_text(json.dumps(config))
    return config_path


def literal_env(env: Sequence[Mapping[str, Any]] | None) -> dict[str, str]:
    """The ``value`` entries of a container's ``env`` (``valueFrom`` ones need a kubelet)."""
    return {e["name"]: e["value"] for e in env or [] if "value" in e}


def run_trainer(argv: Sequence[str], env: Mapping[str, str], tmp: Path, *, gone: Callable[[], bool],
                timeout: float) -> tuple[int, str]:
    """Run ``argv`` (its own process group, output in ``tmp/trainer.log``) to its end: (exit code,
    the termination message it left in ``tmp/termination-log``). The whole group is killed (exit
    137) when ``gone()`` turns true (the workload was deleted, the harness stops) or after
    ``timeout`` seconds, as the kubelet kills a Pod's processes."""
    termination = tmp / "termination-log"
    termination.unlink(missing_ok=True)
    deadline = time.monotonic() + timeout
    with open(tmp / "trainer.log", "ab") as log, subprocess.Popen(
        list(argv), env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    ) as process:
        while process.poll() is None:
            if gone() or time.monotonic() > deadline:
                _kill_group(process)
                return 137, "The trainer was killed."
            time.sleep(0.1)
        _kill_group(process)  # a rank torchrun left behind must not outlive its Pod
        code = process.returncode
    return code, termination.read_text().strip() if termination.exists() else ""


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def terminated_pod_status(container: str, code: int, message: str) -> dict[str, Any]:
    """The status patch of a Pod whose only container ``container`` exited with ``code``."""
    terminated = {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "message": message,
                  "startedAt": _now(), "finishedAt": _now()}
    return {"status": {"phase": "Succeeded" if code == 0 else "Failed",
                       "containerStatuses": [{"name": container, "ready": False, "restartCount": 0,
                                              "state": {"terminated": terminated}}]}}


def running_pod_status(container: str) -> dict[str, Any]:
    """The status of a started Pod whose only container ``container`` runs."""
    return {"phase": "Running", "startTime": _now(), "containerStatuses": [
        {"name": container, "ready": True, "restartCount": 0, "state": {"running": {"startedAt": _now()}}}]}


class WorkloadRunner(abc.ABC):
    """Runs each new, unsuspended object of :attr:`RESOURCE` in ``api`` once, in a thread of its own
    (:meth:`_run_job`, to be written by subclasses); a suspended one is left until it is resumed."""

    RESOURCE: Key = JOBS

    def __init__(self, api: ApiServer, workdir: Path, *, timeout_seconds: float = 240.0) -> None:
        self.api = api
        self.workdir = workdir
        self.timeout = timeout_seconds
        self.started: list[str] = []
        self.exit_codes: dict[str, list[int]] = {}
        self.errors: list[Exception] = []
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._poller = threading.Thread(target=self._poll, daemon=True, name=f"{self.RESOURCE[2]}-runner")

    def __enter__(self) -> WorkloadRunner:
        self._poller.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._poller.join(5)
        for thread in self._threads:
            thread.join(self.timeout)

    def _poll(self) -> None:
        while not self._stop.is_set():
            for obj in self.api.list(self.RESOURCE):
                uid = obj["metadata"]["uid"]
                if uid not in self._seen and self._ready(obj):
                    self._seen.add(uid)
                    thread = threading.Thread(target=self._guarded, args=(obj,), daemon=True)
                    self._threads.append(thread)
                    thread.start()
            self._stop.wait(0.1)

    def _ready(self, obj: dict[str, Any]) -> bool:
        """Whether ``obj`` is to be run now (it is not suspended)."""
        return not obj["spec"].get("suspend")

    def _gone(self, namespace: str, name: str) -> bool:
        """The workload was deleted, or the harness stops."""
        return self._stop.is_set() or self.api.get(self.RESOURCE, namespace, name) is None

    def _guarded(self, obj: dict[str, Any]) -> None:
        try:
            self._run_job(obj)
        except Exception as err:  # a workload deleted under us is fine; anything else is a harness bug
            if self.api.get(self.RESOURCE, obj["metadata"]["namespace"], obj["metadata"]["name"]) is not None:
                self.errors.append(err)

    @abc.abstractmethod
    def _run_job(self, obj: dict[str, Any]) -> None:
        """Run one workload to its end and write its outcome back, as its controller and kubelet would."""


class JobRunner(WorkloadRunner):
    """Runs each new Job of ``api`` once, in a thread of its own."""

    RESOURCE = JOBS

    def __enter__(self) -> JobRunner:
        super().__enter__()
        return self

    # ---- one Job -------------------------------------------------------------------------------

    def _prepare(self, job: dict[str, Any], tmp: Path) -> tuple[Path, dict[str, str]]:
        pod_spec = job["spec"]["template"]["spec"]
        container = pod_spec["containers"][0]
        mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts") or []}
        config_path = write_job_config(self.api, job["metadata"]["namespace"], pod_spec.get("volumes") or [],
                                       mounts, tmp)
        return config_path, {**os.environ, **literal_env(container.get("env"))}

    def _run_job(self, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        ns, name = meta["namespace"], meta["name"]
        self.started.append(name)
        tmp = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.workdir))
        config_path, env = self._prepare(job, tmp)
        spec = job["spec"]
        backoff = int(spec.get("backoffLimit", 6))
        fail_fast = {code for rule in (spec.get("podFailurePolicy") or {}).get("rules") or []
                     if rule.get("action") == "FailJob"
                     for code in (rule.get("onExitCodes") or {}).get("values") or []}
        failed = 0
        self.api.patch(JOBS, ns, name, {"status": {"startTime": _now(), "active": 1}}, subresource="status")
        while True:
            pod = self._create_pod(job)
            code, message = self._run_pod(ns, name, config_path, env, tmp)
            self.exit_codes.setdefault(name, []).append(code)
            if self.api.get(JOBS, ns, name) is None:
                return
            self._finish_pod(ns, pod, code, message)
            if code == 0:
                self._finish_job(ns, name, {"succeeded": 1, "active": 0}, "Complete", "Completed", "")
                return
            failed += 1
            if code in fail_fast:
                self._finish_job(ns, name, {"failed": failed, "active": 0}, "Failed", "PodFailurePolicy",
                                 f"Container trainer for pod {ns}/{pod} failed with exit code {code} matching "
                                 f"FailJob rule at index 0")
                return
            if failed > backoff:
                self._finish_job(ns, name, {"failed": failed, "active": 0}, "Failed", "BackoffLimitExceeded",
                                 "Job has reached the specified backoff limit")
                return
            self.api.patch(JOBS, ns, name, {"status": {"failed": failed}}, subresource="status")

    def _create_pod(self, job: dict[str, Any]) -> str:
        meta = job["metadata"]
        pod_name = f"{meta['name']}-{uuid.uuid4().hex[:5]}"
        labels = {**(job["spec"]["template"].get("metadata") or {}).get("labels", {}),
                  "job-name": meta["name"], "batch.kubernetes.io/job-name": meta["name"]}
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"],
                 "controller": True}
        self.api.create(PODS, meta["namespace"], {
            "metadata": {"name": pod_name, "labels": labels, "ownerReferences": [owner]},
            "spec": job["spec"]["template"]["spec"],
            "status": running_pod_status("trainer"),
        })
        return pod_name

    def _run_pod(self, ns: str, job_name: str, config_path: Path, env: dict[str, str],
                 tmp: Path) -> tuple[int, str]:
        """Run the trainer; killed (exit 137) when its Job is deleted or the harness stops."""
        argv = [sys.executable, "-m", "forgetmi_trainer", "run", "--config", str(config_path),
                "--termination-log", str(tmp / "termination-log")]
        return run_trainer(argv, env, tmp, gone=lambda: self._gone(ns, job_name), timeout=self.timeout)

    def _finish_pod(self, ns: str, pod: str, code: int, message: str) -> None:
        self.api.patch(PODS, ns, pod, terminated_pod_status("trainer", code, message), subresource="status")

    def _finish_job(self, ns: str, name: str, counts: dict[str, int], type_: str, reason: str,
                    message: str) -> None:
        condition = {"type": type_, "status": "True", "reason": reason, "message": message,
                     "lastTransitionTime": _now()}
        self.api.patch(JOBS, ns, name, {"status": {**counts, "completionTime": _now(),
                                                   "conditions": [condition]}}, subresource="status")

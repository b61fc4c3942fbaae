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
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from harness.emulator import ApiServer

JOBS = ("batch", "v1", "jobs")
PODS = ("", "v1", "pods")
CONFIGMAPS = ("", "v1", "configmaps")
SECRETS = ("", "v1", "secrets")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class JobRunner:
    """Runs each new Job of ``api`` once, in a thread of its own."""

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
        self._poller = threading.Thread(target=self._poll, daemon=True, name="job-runner")

    def __enter__(self) -> JobRunner:
        self._poller.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._poller.join(5)
        for thread in self._threads:
            thread.join(self.timeout)

    def _poll(self) -> None:
        while not self._stop.is_set():
            for job in self.api.list(JOBS):
                uid = job["metadata"]["uid"]
                if uid not in self._seen and not job["spec"].get("suspend"):
                    self._seen.add(uid)
                    thread = threading.Thread(target=self._guarded, args=(job,), daemon=True)
                    self._threads.append(thread)
                    thread.start()
            self._stop.wait(0.1)

    # ---- one Job -------------------------------------------------------------------------------

    def _prepare(self, job: dict[str, Any], tmp: Path) -> tuple[Path, dict[str, str]]:
        ns = job["metadata"]["namespace"]
        pod_spec = job["spec"]["template"]["spec"]
        container = pod_spec["containers"][0]
        mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts") or []}
        config: dict[str, Any] | None = None
        subjects: dict[str, Path] = {}
        for volume in pod_spec.get("volumes") or []:
            if "configMap" in volume:
                cm = self.api.get(CONFIGMAPS, ns, volume["configMap"]["name"])
                assert cm is not None, "the Job's ConfigMap does not exist"
                config = json.loads(cm["data"]["job.json"])
            elif "secret" in volume and volume["name"] in mounts:
                secret = self.api.get(SECRETS, ns, volume["secret"]["secretName"]) or {"data": {}}
                for item in volume["secret"].get("items") or [{"key": k, "path": k} for k in secret["data"]]:
                    path = tmp / f"secret-{volume['name']}-{item['path']}"
                    if item["key"] in (secret.get("data") or {}):
                        path.write_bytes(base64.b64decode(secret["data"][item["key"]]))
                    subjects[f"{mounts[volume['name']]}/{item['path']}"] = path
        assert config is not None, "the Job mounts no ConfigMap"
        forget = config.get("forget") or {}
        if forget.get("file") in subjects:
            forget["file"] = str(subjects[forget["file"]])
        config["termination_message_path"] = str(tmp / "termination-log")
        config_path = tmp / "job.json"
        config_path.write_text(json.dumps(config))
        env = dict(os.environ)
        env.update({e["name"]: e["value"] for e in container.get("env") or [] if "value" in e})
        return config_path, env

    def _guarded(self, job: dict[str, Any]) -> None:
        try:
            self._run_job(job)
        except Exception as err:  # a Job deleted under us is fine; anything else is a harness bug
            if self.api.get(JOBS, job["metadata"]["namespace"], job["metadata"]["name"]) is not None:
                self.errors.append(err)

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
            "status": {"phase": "Running", "startTime": _now(), "containerStatuses": [
                {"name": "trainer", "ready": True, "restartCount": 0,
                 "state": {"running": {"startedAt": _now()}}}]},
        })
        return pod_name

    def _run_pod(self, ns: str, job_name: str, config_path: Path, env: dict[str, str],
                 tmp: Path) -> tuple[int, str]:
        """Run the trainer; killed (exit 137) when its Job is deleted or the harness stops."""
        termination = tmp / "termination-log"
        termination.unlink(missing_ok=True)
        deadline = time.monotonic() + self.timeout
        with open(tmp / "trainer.log", "ab") as log, subprocess.Popen(
            [sys.executable, "-m", "forgetmi_trainer", "run", "--config", str(config_path),
             "--termination-log", str(termination)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        ) as process:
            while process.poll() is None:
                gone = self.api.get(JOBS, ns, job_name) is None
                if gone or self._stop.is_set() or time.monotonic() > deadline:
                    process.kill()
                    process.wait()
                    return 137, "The trainer was killed."
                time.sleep(0.1)
            code = process.returncode
        return code, termination.read_text().strip() if termination.exists() else ""

    def _finish_pod(self, ns: str, pod: str, code: int, message: str) -> None:
        terminated = {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "message": message,
                      "startedAt": _now(), "finishedAt": _now()}
        self.api.patch(PODS, ns, pod, {"status": {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [{"name": "trainer", "ready": False, "restartCount": 0,
                                   "state": {"terminated": terminated}}]}}, subresource="status")

    def _finish_job(self, ns: str, name: str, counts: dict[str, int], type_: str, reason: str,
                    message: str) -> None:
        condition = {"type": type_, "status": "True", "reason": reason, "message": message,
                     "lastTransitionTime": _now()}
        self.api.patch(JOBS, ns, name, {"status": {**counts, "completionTime": _now(),
                                                   "conditions": [condition]}}, subresource="status")

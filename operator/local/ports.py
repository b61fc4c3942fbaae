"""The lifecycle's ports on one machine (:mod:`forgetmi_operator.lifecycle.ports`): what ``forgetmi run``
does where a cluster has an API server and a kubelet.

- :class:`LocalSecrets`: the Secrets of the ``--secrets`` file, and the request's copy of its forget
  list, kept in memory and "mounted" as a file (mode 0600) in the work folder, where its trainer
  run reads it — as a kubelet mounts it for a Job — and deleted with it (the copy's previously
  forgotten patients, with a forget ledger, are a second file beside it: docs/ledger.md);
- :class:`LocalTrainers`: a trainer run is a ``python -m forgetmi_trainer run`` process (``launch``, torchrun on
  this machine, with ``--processes N``); ``start``
  writes its ``job.json`` and queues it, and :meth:`LocalTrainers.run` runs it;
- :class:`LocalTargets`: a serving target is never patched here, and the promotion says so.

No torch is imported here: the trainer always runs in its own process.
"""

from __future__ import annotations

import base64
import copy
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgetmi_operator.api import naming
from forgetmi_operator.api.naming import JobKind
from forgetmi_operator.api.spec import UnlearnRequestSpec
from forgetmi_operator.lifecycle.jobconfig import build_job_config
from forgetmi_operator.lifecycle.ports import Started
from forgetmi_operator.lifecycle.subjects import PREVIOUSLY_FORGOTTEN_KEY, SUBJECTS_KEY, has_previously_forgotten
from forgetmi_trainer.contract import JobConfig, ModelRef


class LocalSecrets:
    """Secrets by name: ``given`` (``{name: {key: text}}``, from ``--secrets``) and those made here."""

    def __init__(self, given: Mapping[str, Mapping[str, str]], folder: Path) -> None:
        self.given = {name: dict(values) for name, values in given.items()}
        self.made: dict[str, dict[str, Any]] = {}
        self.folder = folder

    def mounted(self, name: str, key: str) -> Path:
        """Where the value of ``key`` of a Secret made here is (the path a Job's volume would give it)."""
        return self.folder / "secrets" / name / key

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        if name in self.made:
            return copy.deepcopy(self.made[name])
        if name not in self.given:
            return None
        data = {key: base64.b64encode(text.encode("utf-8")).decode("ascii") for key, text in self.given[name].items()}
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
                "data": data}

    async def create_or_get_secret(self, namespace: str, body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        name = body["metadata"]["name"]
        existing = await self.get_secret(namespace, name)
        if existing is not None:
            return existing, False
        self.made[name] = {**copy.deepcopy(dict(body)),
                           "metadata": {**body["metadata"], "uid": f"local-{name}"}}
        for key, encoded in (body.get("data") or {}).items():
            path = self.mounted(name, key)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(base64.b64decode(encoded))
        return copy.deepcopy(self.made[name]), True

    async def delete_secret(self, namespace: str, name: str, *, uid: str | None = None) -> bool:
        if name not in self.made or (uid is not None and self.made[name]["metadata"].get("uid") != uid):
            return False
        del self.made[name]
        shutil.rmtree(self.mounted(name, SUBJECTS_KEY).parent, ignore_errors=True)
        return True


@dataclass(frozen=True)
class LocalRun:
    """A trainer run waiting to run: its Job's name, kind and config, and where the config is written."""

    job_name: str
    kind: JobKind
    config: JobConfig
    config_path: Path


def trainer_command(config: Path, processes: int) -> list[str]:
    """The ``forgetmi_trainer`` arguments of one run: ``run`` in one process, else ``launch`` (torchrun on
    this machine, ``processes`` ranks data-parallel over gloo, or NCCL with a GPU each)."""
    run = ["run", "--config", str(config)]
    if processes <= 1:
        return run
    return ["launch", "--standalone", "--nnodes", "1", "--nproc-per-node", str(processes), "--", *run]


class LocalTrainers:
    """Trainer runs as local processes, with ``retrained`` (a reference model) passed to each."""

    def __init__(self, workdir: Path, secrets: LocalSecrets, retrained: ModelRef | None = None,
                 processes: int = 1) -> None:
        self.workdir, self.secrets, self.retrained, self.processes = workdir, secrets, retrained, processes
        self.queued: list[LocalRun] = []

    async def start(self, body: Mapping[str, Any], spec: UnlearnRequestSpec, base_version: str,
                    kind: JobKind, rebase: int = 0) -> Started:
        meta = body["metadata"]
        name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
        job_name = naming.job_name(name, uid, kind=kind, rebase=rebase)
        run = f"{kind}-b{rebase}" if rebase else kind
        copy_name = naming.subjects_secret_name(name, uid, rebase=rebase)
        earlier = has_previously_forgotten(await self.secrets.get_secret(namespace, copy_name))
        earlier_file = self.secrets.mounted(copy_name, PREVIOUSLY_FORGOTTEN_KEY)
        config = build_job_config(spec, uid=uid, namespace=namespace, name=name, base_version=base_version, kind=kind,
                                  rebase=rebase,
                                  subjects_file=str(self.secrets.mounted(copy_name, SUBJECTS_KEY)),
                                  previously_forgotten_file=str(earlier_file) if earlier else None,
                                  termination_message_path=str(self.workdir / f"{run}-termination-log"),
                                  progress_path=str(self.workdir / f"{run}-progress.jsonl"))
        if self.retrained is not None:
            config = config.model_copy(update={"retrained": self.retrained})
        path = self.workdir / f"{run}-job.json"
        path.write_text(config.model_dump_json(indent=2))
        self.queued.append(LocalRun(job_name, kind, config, path))
        return Started(job_name=job_name, created=True, waiting=f"Job {job_name} waits to run as a local process.",
                       event=f"Prepared Job {job_name} for model {spec.model.name} version {base_version} "
                             "to run as a local process.")

    def run(self, run: LocalRun) -> tuple[int, str]:
        """Run the trainer on ``run``'s config: its exit code and its termination message."""
        termination = Path(str(run.config.termination_message_path))
        termination.unlink(missing_ok=True)
        proc = subprocess.run([sys.executable, "-m", "forgetmi_trainer", *trainer_command(
                                  run.config_path, self.processes)],
                              env={**os.environ, "PYTHONSAFEPATH": "1"}, check=False)
        return proc.returncode, termination.read_text().strip() if termination.exists() else ""


class LocalTargets:
    async def check(self, spec: UnlearnRequestSpec, namespace: str) -> str | None:
        target = spec.rollout.target
        if target is None:
            return None
        return (f"Serving target {target.kind} {namespace}/{target.name} was not patched: forgetmi run does not "
                "patch serving targets.")

    async def point(self, spec: UnlearnRequestSpec, namespace: str, uri: str) -> None:
        return None

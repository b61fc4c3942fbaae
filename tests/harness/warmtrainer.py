"""The real trainer without its 6 s of imports per run: a fork server for the fault suite's many Jobs.

``python -m forgetmi_trainer run`` spends ≈ 6 s of a 2-core machine importing torch, transformers and
sklearn before it reads its config, more than the small runs of tests/faults/ take. :class:`ForkServer`
is one process that imports the trainer's modules once and forks a child per run; the child takes the
Job's environment, output file and session, and runs ``forgetmi_trainer.cli.main`` with the Job's
arguments, as the container would (every trainer variable is read at call time, none at import). A run
is killed as a Pod's processes are (SIGKILL to its session) when its Job goes.

:class:`WarmJobRunner` is :class:`harness.jobrunner.JobRunner` with its trainers started this way::

    with ForkServer() as server, WarmJobRunner(api, tmp_path, server=server) as runner:
        ...
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from harness.jobrunner import JobRunner

_SERVER = r'''
import json, os, select, sys, traceback
import boto3, forgetmi_trainer.cli, forgetmi_trainer.job  # the imports every run would pay for
from forgetmi_trainer.cli import main

def child(order):
    os.setsid()
    fd = os.open(order["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.clear()
    os.environ.update(order["env"])
    code = 1
    try:
        code = int(main(order["argv"]) or 0)
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

running = {}
out = sys.stdout
print(json.dumps({"ready": True}), file=out, flush=True)
buffer = b""
while True:
    ready, _, _ = select.select([0], [], [], 0.05)
    if ready:
        data = os.read(0, 65536)
        if not data:
            break
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            order = json.loads(line)
            pid = os.fork()
            if pid == 0:
                child(order)
            running[pid] = order["id"]
            print(json.dumps({"id": order["id"], "pid": pid}), file=out, flush=True)
    while running:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            break
        print(json.dumps({"id": running.pop(pid), "code": os.waitstatus_to_exitcode(status)}), file=out, flush=True)
for pid in running:
    try:
        os.killpg(pid, 9)
    except OSError:
        pass
'''


class ForkServer:
    """One warm trainer process; :meth:`run` forks a run from it (thread-safe)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env = {**os.environ, **(env or {}), "PYTHONSAFEPATH": "1"}
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._ids = iter(range(1, 1 << 62))
        self._pids: dict[int, int] = {}
        self._codes: dict[int, int] = {}
        self._changed = threading.Condition()
        self._reader: threading.Thread | None = None
        self.runs = 0

    def __enter__(self) -> ForkServer:
        self._process = subprocess.Popen([sys.executable, "-c", _SERVER], env=self._env, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, start_new_session=True)
        assert self._process.stdout is not None
        first = json.loads(self._process.stdout.readline() or b"{}")
        if not first.get("ready"):
            raise RuntimeError("The trainer fork server did not start.")
        self._reader = threading.Thread(target=self._read, daemon=True, name="trainer-fork-server")
        self._reader.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._process is None:
            return
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._reader is not None:
            self._reader.join(5)
        assert self._process.stdout is not None
        self._process.stdout.close()

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            reply = json.loads(line)
            with self._changed:
                if "pid" in reply:
                    self._pids[reply["id"]] = reply["pid"]
                else:
                    self._codes[reply["id"]] = reply["code"]
                self._changed.notify_all()

    def run(self, argv: Sequence[str], env: Mapping[str, str], log: Path, *, gone: Callable[[], bool],
            timeout: float) -> int:
        """Run ``forgetmi_trainer`` with ``argv`` (after the program name) to its end, its output appended
        to ``log``; its exit code, 137 when it was killed because ``gone()`` turned true or it ran past
        ``timeout`` seconds."""
        assert self._process is not None and self._process.stdin is not None, "the fork server is not started"
        with self._lock:
            run_id = next(self._ids)
            self.runs += 1
            order = {"id": run_id, "argv": list(argv), "env": dict(env), "log": str(log)}
            self._process.stdin.write(json.dumps(order).encode() + b"\n")
            self._process.stdin.flush()
        deadline = time.monotonic() + timeout
        with self._changed:
            while run_id not in self._codes:
                if (gone() or time.monotonic() > deadline) and run_id in self._pids:
                    try:
                        os.killpg(self._pids[run_id], signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                    self._changed.wait_for(lambda: run_id in self._codes, 10)
                    self._codes.pop(run_id, None)
                    return 137
                self._changed.wait(0.1)
            return self._codes.pop(run_id)


class WarmJobRunner(JobRunner):
    """:class:`~harness.jobrunner.JobRunner` whose trainers are forked from ``server``."""

    def __init__(self, api: Any, workdir: Path, *, server: ForkServer, timeout_seconds: float = 240.0) -> None:
        super().__init__(api, workdir, timeout_seconds=timeout_seconds)
        self.server = server

    def __enter__(self) -> WarmJobRunner:
        super().__enter__()
        return self

    def _run_pod(self, ns: str, job_name: str, config_path: Path, env: dict[str, str],
                 tmp: Path) -> tuple[int, str]:
        termination = tmp / "termination-log"
        termination.unlink(missing_ok=True)
        argv = ["run", "--config", str(config_path), "--termination-log", str(termination)]
        code = self.server.run(argv, env, tmp / "trainer.log", gone=lambda: self._gone(ns, job_name),
                               timeout=self.timeout)
        if code == 137:
            return 137, "The trainer was killed."
        return code, termination.read_text().strip() if termination.exists() else ""

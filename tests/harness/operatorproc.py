"""The real operator as a subprocess (``python -m forgetmi_operator --standalone --namespace=<ns>``), for
the fault suite (tests/faults/, bench/faults.py): it can be SIGKILLed and started again, and it kills
itself at a named failpoint (``FORGETMI_FAILPOINTS``, operator/api/failpoints.py).

Its environment is this process's, plus ``env`` (what :func:`harness.cluster.start_cluster` sets, handed
over as a dict: ``start_cluster(tmp, env.__setitem__)``), plus the changes given to :meth:`start` or
:meth:`restart`. It logs at DEBUG (Kopf's ``--verbose``) as plain lines to one file that every start
appends to, after a line ``=== operator start N ===`` written here. One process at most runs at a
time: :meth:`start` refuses while one is alive, and :meth:`restart` waits for the old one to be gone::

    env: dict[str, str] = {}
    api, ns = start_cluster(tmp_path, env.__setitem__)
    with OperatorProcess(ns, env, tmp_path / "operator.log") as op:
        op.start({"FORGETMI_FAILPOINTS": "after-job-create"})
        op.wait_killed(60)              # it reached the point and SIGKILLed itself
        op.restart({"FORGETMI_FAILPOINTS": None})
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from forgetmi_operator.api import failpoints

TRACEBACK = "Traceback (most recent call last)"
EnvChanges = Mapping[str, str | None]
"""Variables to set (a string) or unset (None)."""


class OperatorProcess:
    """One operator subprocess at a time, watching ``namespace`` (see the module docstring)."""

    def __init__(self, namespace: str, env: Mapping[str, str], log_path: Path) -> None:
        self.namespace = namespace
        self.env: dict[str, str] = {**os.environ, **env, "PYTHONSAFEPATH": "1", "FORGETMI_LOG_FORMAT": "text"}
        self.env.pop(failpoints.ENV, None)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.exit_codes: list[int] = []
        """The exit code of every process that ended (-9: SIGKILL), in order."""

    # ---- the process -------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.env['FORGETMI_METRICS_PORT']}/metrics"

    def start(self, changes: EnvChanges | None = None) -> None:
        """Start the operator with ``changes`` applied to its environment (kept for later starts)."""
        if self.alive:
            raise RuntimeError(f"The operator (pid {self.pid}) still runs; a second one never runs at once.")
        self._reap()
        for name, value in (changes or {}).items():
            if value is None:
                self.env.pop(name, None)
            else:
                self.env[name] = value
        self.starts += 1
        argv = [sys.executable, "-m", "forgetmi_operator", "--standalone", "--verbose", "--log-format=full",
                f"--namespace={self.namespace}"]
        with open(self.log_path, "ab") as log:
            armed = self.env.get(failpoints.ENV, "")
            log.write(f"=== operator start {self.starts} (failpoints: {armed or 'none'}) ===\n".encode())
            log.flush()
            self.process = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def kill(self) -> None:
        """SIGKILL the operator (no cleanup: as a node failure or an OOM kill would) and reap it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self._reap()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the operator as Kubernetes does (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._reap()

    def wait_killed(self, timeout: float) -> int:
        """Wait for the operator to end by itself (a failpoint SIGKILLs it: exit -9); its exit code.
        AssertionError when it still runs after ``timeout`` seconds, or ended otherwise."""
        if self.process is None:
            raise AssertionError("The operator was never started.")
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"The operator still runs {timeout:g} s later: its failpoint "
                                 f"({self.env.get(failpoints.ENV)}) was never reached.") from None
        self._reap()
        if code != -signal.SIGKILL:
            raise AssertionError(f"The operator exited with {code}, not killed by its failpoint; its log "
                                 f"ends:\n{self.log_tail()}")
        return code

    def restart(self, changes: EnvChanges | None = None) -> None:
        """Kill the operator if it still runs, then start it again with ``changes``."""
        self.kill()
        self.start(changes)

    def _reap(self) -> None:
        if self.process is not None:
            code = self.process.wait()
            self.exit_codes.append(code)
            self.process = None

    # ---- what it shows -----------------------------------------------------------------------

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def tracebacks(self) -> int:
        """How many tracebacks the operator's log holds (all its starts)."""
        return self.log_text().count(TRACEBACK)

    def metrics(self, timeout: float = 5.0) -> str:
        """The operator's ``/metrics`` page (Prometheus text); it must be running."""
        with urllib.request.urlopen(self.metrics_url, timeout=timeout) as response:
            return str(response.read().decode())

    def wait_serving(self, timeout: float = 60.0) -> None:
        """Wait until the operator serves its metrics (its startup handler ran)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise AssertionError(f"The operator ended while starting; its log ends:\n{self.log_tail()}")
            try:
                self.metrics(timeout=1.0)
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"The operator served no metrics within {timeout:g} s.")

    # ---- context manager ---------------------------------------------------------------------

    def __enter__(self) -> OperatorProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

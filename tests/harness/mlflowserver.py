"""A real MLflow tracking and registry server for the tests: ``mlflow server`` (the full ``mlflow``
package of the dev extra) as a subprocess on 127.0.0.1, with a SQLite backend store and its artifacts
on the moto S3 server (``--default-artifact-root s3://<bucket>/mlflow``, ``MLFLOW_S3_ENDPOINT_URL``).

    with MlflowServer(tmp_path, s3_endpoint, "s3://bucket") as server:
        server.url                 # http://127.0.0.1:<port>
        server.registry_uri        # mlflow+http://127.0.0.1:<port>

Starting it runs MLflow's database migrations (≈ 10 s on an idle core, a minute under load), so a
test folder starts one for all its tests. Its log is kept beside the database, and printed when it
does not come up.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

START_TIMEOUT = 180.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MlflowServer:
    def __init__(self, folder: Path, s3_endpoint: str, artifact_bucket: str) -> None:
        self.folder = folder
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.registry_uri = f"mlflow+{self.url}"
        self.artifact_root = f"{artifact_bucket.rstrip('/')}/mlflow"
        self.env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint, "PYTHONSAFEPATH": "1"}
        self.log_path = folder / "mlflow-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> MlflowServer:
        mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent))
        if mlflow is None:
            raise RuntimeError("the mlflow command is not installed (make install-dev installs the dev extra)")
        self.folder.mkdir(parents=True, exist_ok=True)
        argv = [mlflow, "server", "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
                "--default-artifact-root", self.artifact_root, "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", "1"]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.folder, start_new_session=True)
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"mlflow server did not come up at {self.url}; its log:\n"
                           + self.log_path.read_text(errors="replace")[-3000:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        self.process = None

    def __exit__(self, *exc: object) -> None:
        self.stop()

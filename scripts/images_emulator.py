"""The operator image against the emulated API server (scripts/images-test.sh runs it with .venv).

    .venv/bin/python scripts/images_emulator.py localhost/forgetmi-operator:0.1.0

Starts the tests' emulator (``tests/harness/emulator.py``) on 127.0.0.1 with the CRD, a namespace
and its S3 credentials Secret, writes a kubeconfig for it, then runs the image's entrypoint in a
buildah working container (chroot isolation, the host's network, the kubeconfig bind-mounted
read-only) watching that namespace, the metrics and liveness ports free ones. Checks, a line each:
``/metrics`` serves ``forgetmi_`` families, ``/healthz`` answers, and an UnlearnRequest created in
the namespace is handled: its ``start`` handler runs and records its outcome in the request's
progress annotation (its storage, a closed port on 127.0.0.1, cannot be reached: a retry, with the
operator's message). Then stops the operator with SIGTERM.
Exits 1 naming the failed check (and printing the operator's last log lines).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness.cluster import (  # noqa: E402  (tests/ is put on sys.path just above)
    CREDENTIALS_SECRET,
    NAMESPACES,
    REQUESTS,
    SECRETS,
    credentials_secret,
    free_port,
    install_crd,
    write_kubeconfig,
)
from harness.emulator import ApiServer  # noqa: E402

NAMESPACE = "images-test"
KUBECONFIG_IN_IMAGE = "/etc/forgetmi/kubeconfig"
STARTUP_TIMEOUT_S = 120
PROGRESS_ANNOTATION = "unlearning.forgetmi.io/start"  # Kopf's record of the start handler


class CheckFailed(Exception):
    pass


def wait_for(what: str, predicate: Callable[[], Any], timeout_s: float, operator: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if operator.poll() is not None:
            raise CheckFailed(f"the operator exited (status {operator.returncode}) before {what}")
        result = predicate()
        if result:
            return result
        time.sleep(0.5)
    raise CheckFailed(f"timed out after {timeout_s:g} s waiting until {what}")


def fetch(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()
    except OSError:
        return ""


def descendants(pid: int) -> list[int]:
    """``pid``'s descendants, parents first (a Go program such as buildah forks from any thread)."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in children.read_text().split()]
    return found + [grandchild for child in found for grandchild in descendants(child)]


def stop(operator: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the operator's own process (a descendant of ``buildah run``, which would SIGKILL it
    if signalled itself), as the kubelet sends it; buildah then exits with the operator's status."""
    for pid in descendants(operator.pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if argv[0].endswith(b"/python") and b"forgetmi_operator" in argv:
                os.kill(pid, signal.SIGTERM)
    try:
        operator.wait(30)
    except subprocess.TimeoutExpired as err:
        raise CheckFailed("the operator did not stop within 30 s of SIGTERM") from err


def families(metrics: str) -> list[str]:
    return sorted({line.split()[2] for line in metrics.splitlines()
                   if line.startswith("# TYPE forgetmi_")})


def request() -> dict[str, Any]:
    body = yaml.safe_load((ROOT / "examples" / "unlearnrequest-minimal.yaml").read_text())
    body["metadata"]["namespace"] = NAMESPACE
    return body


def check(image: str) -> None:
    api = ApiServer()
    url = api.start()
    install_crd(api)
    api.create(NAMESPACES, None, {"metadata": {"name": NAMESPACE}})
    api.create(SECRETS, NAMESPACE, credentials_secret())
    metrics_port, health_port, closed_port = free_port(), free_port(), free_port()
    workdir = Path(tempfile.mkdtemp(prefix="forgetmi-images-"))
    kubeconfig = write_kubeconfig(workdir / "kubeconfig", url)
    kubeconfig.chmod(0o644)  # read by UID 10001 inside
    log_path = workdir / "operator.log"
    container = subprocess.run(["buildah", "from", "--pull=never", "--quiet", image],
                               check=True, capture_output=True, text=True).stdout.strip()
    env = {"KUBECONFIG": KUBECONFIG_IN_IMAGE, "FORGETMI_METRICS_PORT": str(metrics_port),
           "FORGETMI_CREDENTIALS_SECRET": CREDENTIALS_SECRET, "FORGETMI_LOG_FORMAT": "text",
           "FORGETMI_S3_ENDPOINT_URL": f"http://127.0.0.1:{closed_port}",
           "FORGETMI_PROGRESS_INTERVAL_SECONDS": "1", "FORGETMI_REQUEST_TIMEOUT_SECONDS": "10"}
    command = ["buildah", "run", "--isolation", "chroot", "--network", "host",
               "--volume", f"{kubeconfig}:{KUBECONFIG_IN_IMAGE}:ro",
               *[arg for name, value in env.items() for arg in ("--env", f"{name}={value}")],
               container, "--", "python", "-m", "forgetmi_operator", "--standalone", f"--namespace={NAMESPACE}",
               f"--liveness=http://127.0.0.1:{health_port}/healthz"]
    with log_path.open("wb") as log:
        operator = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        found = wait_for(f"http://127.0.0.1:{metrics_port}/metrics serves forgetmi_ families",
                         lambda: families(fetch(f"http://127.0.0.1:{metrics_port}/metrics")), STARTUP_TIMEOUT_S,
                         operator)
        print(f"ok   operator in the image serves /metrics: {len(found)} forgetmi_ families "
              f"({', '.join(found[:3])}, …)")
        wait_for(f"http://127.0.0.1:{health_port}/healthz answers",
                 lambda: fetch(f"http://127.0.0.1:{health_port}/healthz"), 30, operator)
        print("ok   operator in the image answers its liveness probe (/healthz)")
        body = request()
        name = body["metadata"]["name"]
        api.create(REQUESTS, NAMESPACE, body)

        def handled() -> dict[str, Any] | None:
            annotations = (api.get(REQUESTS, NAMESPACE, name) or {}).get("metadata", {}).get("annotations") or {}
            progress = annotations.get(PROGRESS_ANNOTATION)
            return json.loads(progress) if progress else None

        progress = wait_for(f"UnlearnRequest {name} carries {PROGRESS_ANNOTATION}", handled, 60, operator)
        print(f"ok   operator in the image handled UnlearnRequest {name} ({PROGRESS_ANNOTATION}: retries "
              f"{progress.get('retries')}, \"{progress.get('message', '')[:70]}…\")")
        stop(operator)
        if operator.returncode != 0:
            raise CheckFailed(f"the operator exited with status {operator.returncode} on SIGTERM")
        print("ok   operator in the image stopped on SIGTERM (status 0)")
        shutil.rmtree(workdir)  # kept, with the operator's log, when a check fails
    except CheckFailed as err:
        print(f"FAIL {err}; the operator's last log lines ({log_path}):", file=sys.stderr)
        print("\n".join(log_path.read_text(errors="replace").splitlines()[-30:]), file=sys.stderr)
        raise SystemExit(1) from err
    finally:
        if operator.poll() is None:
            for pid in reversed([operator.pid, *descendants(operator.pid)]):  # the operator first
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            operator.wait()
        subprocess.run(["buildah", "rm", container], check=False, capture_output=True)
        api.stop()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} OPERATOR_IMAGE")
    check(sys.argv[1])

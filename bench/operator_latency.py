"""Operator latency: apply N UnlearnRequests and time apply → Job created (a benchmark, not a test).

What runs:

- the emulated Kubernetes API server of the tests (``tests/harness/emulator.py``, kmock over
  HTTP) in this process, with the CRD installed and a namespace ``bench``;
- the real operator as a subprocess, ``python -m forgetmi_operator run --standalone
  --namespace=bench`` with ``KUBECONFIG`` pointing at the emulator, so its RSS is its own;
- no Job runner: created Jobs stay pending, only the time until the Job object exists counts;
- a moto S3 server in this process (a cluster's operator refuses ``file://`` URIs and reads each
  request's objects with its namespace's credentials: a Secret ``s3-credentials`` in ``bench``)
  holding a minimal registry (model ``bench``, alias ``production`` → version ``v1`` whose
  ``config.json`` and ``model.safetensors`` are a few dummy bytes; accept checks only that they
  exist and resolves the alias record), a CSV manifest with ``subject_id``/``split`` columns (10
  samples, or ``--manifest-rows``: 4 per patient, 80 % of the patients training) and one Secret
  with the forget subjects, shared by all requests.

After one warm-up request (not counted: it pays for the operator's lazy imports), the N
requests are POSTed back to back over HTTP (``--rate`` paces them instead), each timestamped just
before its POST. The emulator records the time each Job is stored, so latency is measured on one
clock without polling error. Printed: latency p50/p99/max, throughput (requests whose Job was
created per second, from the first POST to the last Job), and the operator's RSS (current and
peak, ``VmRSS``/``VmHWM`` from ``/proc/<pid>/status``, sampled every 0.2 s).

``--capacity LO:HI`` finds the highest steady arrival rate at which the targets hold: it runs the
bench (a fresh emulator and operator each time) at paced rates chosen by bisection between LO
and HI requests per second, down to ``--capacity-step``, and prints every probe and the highest
rate that met all three targets, the way Kubernetes states its own latency SLOs at a given load.

Usage::

    PYTHONSAFEPATH=1 .venv/bin/python bench/operator_latency.py --requests 100 [--rate 20] [--json]
    PYTHONSAFEPATH=1 .venv/bin/python bench/operator_latency.py --requests 500 --capacity 25:200

To measure other code in the operator (e.g. before a change), put copies of ``operator/`` and
``trainer/`` named ``forgetmi_operator/`` and ``forgetmi_trainer/`` in a folder and set
``OPERATOR_PYTHONPATH`` to it: the operator subprocess gets it as ``PYTHONPATH``, the bench keeps
today's code.

Targets (issue 3): p50 ≤ 100 ms, p99 ≤ 500 ms, RSS ≤ 200 MB.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness.cluster import (  # noqa: E402
    CREDENTIALS_SECRET,
    JOBS,
    NAMESPACES,
    SECRETS,
    credentials_secret,
    free_port,
    install_crd,
    write_kubeconfig,
)
from harness.emulator import ApiServer, Key  # noqa: E402
from harness.procfs import rss_kb  # noqa: E402

from forgetmi_operator.registry import aliases as registry  # noqa: E402
from forgetmi_trainer import storage  # noqa: E402
from forgetmi_trainer.storage import DEFAULT  # noqa: E402

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_EC2_METADATA_DISABLED": "true"}


def moto_s3() -> dict[str, Any]:
    """A moto S3 server on loopback with one bucket; this process's storage points at it."""
    import boto3
    from moto.server import ThreadedMotoServer

    os.environ.update(S3_ENV)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per S3 call
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ[storage.ENDPOINT_ENV] = endpoint
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
    return {"server": server, "bucket": "bench", "env": {**S3_ENV, storage.ENDPOINT_ENV: endpoint}}

NAMESPACE = "bench"
MODEL = "bench"
SUBJECTS = ["P000", "P001", "P002"]
TARGETS = {"p50_ms": 100.0, "p99_ms": 500.0, "rss_mb": 200.0}


class TimedApiServer(ApiServer):
    """The emulator, recording when each Job is stored (by the name of the request that owns it)."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.job_created: dict[str, float] = {}
        self.job_event = threading.Condition()

    def create(self, key: Key, namespace: str | None, body: Mapping[str, Any]) -> dict[str, Any]:
        obj = super().create(key, namespace, body)
        if key == JOBS:
            stamp = time.perf_counter()
            owners = obj["metadata"].get("ownerReferences") or [{}]
            with self.job_event:
                self.job_created.setdefault(str(owners[0].get("name")), stamp)
                self.job_event.notify_all()
        return obj


def prepare_storage(bucket: str, manifest_rows: int = 10) -> tuple[str, str]:
    """In ``s3://bucket``: a registry with alias production → v1 (dummy bytes) and a manifest of
    ``manifest_rows`` samples (4 per patient, 80 % of the patients training); (registry, manifest)."""
    reg = f"s3://{bucket}/registry"
    version = storage.join(reg, MODEL, "versions", "v1")
    storage.write_text(storage.join(version, "config.json"), "{}\n")
    storage.write_bytes(storage.join(version, "model.safetensors"), b"dummy weights for the latency benchmark\n")
    verified = registry.verify_version(DEFAULT, reg, MODEL, "v1")
    registry.promote(DEFAULT, reg, MODEL, "production", version=verified, expected_token=None, request=None)
    rows = ["sample_id,subject_id,split,image,label"]
    patients = max(manifest_rows // 4, 10)
    rows += [
        f"s{i},P{i % patients:03d},{'train' if i % patients < 0.8 * patients else 'test'},images/{i}.png,{i % 2}"
        for i in range(max(manifest_rows, 10))
    ]
    manifest = f"s3://{bucket}/data/manifest.csv"
    storage.write_text(manifest, "\n".join(rows) + "\n")
    return reg, manifest


def request_body(name: str, reg: str, manifest: str) -> dict[str, Any]:
    return {"apiVersion": "unlearning.forgetmi.io/v1alpha1", "kind": "UnlearnRequest", "metadata": {"name": name},
            "spec": {"model": {"registryUri": reg, "name": MODEL, "alias": "production"},
                     "data": {"manifestUri": manifest},
                     "forget": {"subjectsSecretRef": {"name": "subjects", "key": "subjects"}},
                     "method": {"epochs": 2}, "resources": {"gpus": 1}}}


def post(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        if response.status != 201:
            raise RuntimeError(f"create answered {response.status}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.pid, self.peak_kb, self.last_kb = pid, 0, 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            rss, hwm = rss_kb(self.pid)
            if rss:
                self.last_kb, self.peak_kb = rss, max(self.peak_kb, hwm, rss)
            self.stopped.wait(0.2)


def wait_jobs(api: TimedApiServer, names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with api.job_event:
        while not all(name in api.job_created for name in names):
            left = deadline - time.monotonic()
            if left <= 0:
                missing = [n for n in names if n not in api.job_created]
                raise RuntimeError(f"{len(missing)} of {len(names)} requests got no Job in {timeout:g} s "
                                   f"(first: {missing[0]}).")
            api.job_event.wait(min(left, 1.0))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))  # nearest rank
    return ordered[rank]


def run(
    requests: int, rate: float, timeout: float, log_path: Path | None, manifest_rows: int = 10
) -> dict[str, Any]:
    api = TimedApiServer()
    url = api.start()
    install_crd(api)
    api.create(NAMESPACES, None, {"metadata": {"name": NAMESPACE}})
    api.create(SECRETS, NAMESPACE, {"metadata": {"name": "subjects"}, "type": "Opaque", "data": {
        "subjects": base64.b64encode("\n".join(SUBJECTS).encode()).decode()}})
    api.create(SECRETS, NAMESPACE, credentials_secret())
    s3 = moto_s3()
    with tempfile.TemporaryDirectory(prefix="forgetmi-bench-") as tmp:
        root = Path(tmp)
        reg, manifest = prepare_storage(s3["bucket"], manifest_rows)
        env = {**os.environ, **s3["env"], "KUBECONFIG": str(write_kubeconfig(root / "kubeconfig", url)),
               "FORGETMI_METRICS_PORT": str(free_port()), "FORGETMI_CREDENTIALS_SECRET": CREDENTIALS_SECRET,
               "PYTHONSAFEPATH": "1"}
        if os.environ.get("OPERATOR_PYTHONPATH"):  # other code for the operator only (see the docstring)
            env["PYTHONPATH"] = os.environ["OPERATOR_PYTHONPATH"]
        log = open(log_path or root / "operator.log", "wb")
        started = time.perf_counter()
        operator = subprocess.Popen(
            [sys.executable, "-m", "forgetmi_operator", "run", "--standalone", f"--namespace={NAMESPACE}"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
        sampler = RssSampler(operator.pid)
        sampler.start()
        create_url = f"{url}/apis/unlearning.forgetmi.io/v1alpha1/namespaces/{NAMESPACE}/unlearnrequests"
        try:
            post(create_url, request_body("warmup", reg, manifest))
            wait_jobs(api, ["warmup"], 120)
            ready_s = time.perf_counter() - started
            idle_rss_kb = rss_kb(operator.pid)[0]
            cpu_before, own_before = cpu_seconds(operator.pid), time.process_time()
            applied: dict[str, float] = {}
            names = [f"req-{i:04d}" for i in range(requests)]
            first = time.perf_counter()
            for i, name in enumerate(names):
                if rate > 0:
                    pause = first + i / rate - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)
                applied[name] = time.perf_counter()
                post(create_url, request_body(name, reg, manifest))
            applying_s = time.perf_counter() - first
            wait_jobs(api, names, timeout)
            cpu_used, own_used = cpu_seconds(operator.pid) - cpu_before, time.process_time() - own_before
            time.sleep(1.0)  # one more RSS sample with every request's daemon running
        finally:
            sampler.stopped.set()
            sampler.join()
            operator.send_signal(signal.SIGINT)
            try:
                operator.wait(30)
            except subprocess.TimeoutExpired:
                operator.kill()
                operator.wait()
            log.close()
            api.stop()
            s3["server"].stop()
        if operator.returncode not in (0, -signal.SIGINT, 130):
            print(f"note: the operator exited with {operator.returncode}", file=sys.stderr)
    latencies = [(api.job_created[n] - applied[n]) * 1000 for n in names]
    last = max(api.job_created[n] for n in names)
    duplicates = len([k for k in api.created if k[0] == JOBS]) - requests - 1
    return {
        "requests": requests, "rate_per_s": rate or None, "manifest_rows": max(manifest_rows, 10),
        "p50_ms": round(percentile(latencies, 50), 1), "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(max(latencies), 1), "mean_ms": round(statistics.fmean(latencies), 1),
        "min_ms": round(min(latencies), 1),
        "throughput_per_s": round(requests / (last - first), 1), "applying_s": round(applying_s, 2),
        "operator_ready_s": round(ready_s, 1), "rss_idle_mb": round(idle_rss_kb / 1024, 1),
        "rss_end_mb": round(sampler.last_kb / 1024, 1), "rss_peak_mb": round(sampler.peak_kb / 1024, 1),
        "duplicate_jobs": duplicates,
        "operator_cpu_ms_per_request": round(cpu_used * 1000 / requests, 1),
        "bench_cpu_ms_per_request": round(own_used * 1000 / requests, 1),
    }


def targets_met(result: Mapping[str, Any]) -> dict[str, bool]:
    return {"p50": result["p50_ms"] <= TARGETS["p50_ms"], "p99": result["p99_ms"] <= TARGETS["p99_ms"],
            "rss": result["rss_peak_mb"] <= TARGETS["rss_mb"]}


def find_capacity(probe: Callable[[float], Mapping[str, Any]], low: float, high: float,
                  step: float) -> tuple[float | None, list[Mapping[str, Any]]]:
    """Bisect [low, high] (req/s) for the highest rate whose probe meets every target, to ``step``.

    Returns that rate (None when even ``low`` misses a target, ``high`` when it meets them) and the
    probes in the order they ran. Latency grows with the rate, so one bisection suffices; near the
    edge, run-to-run noise decides, which is why every probe is printed."""
    if not 0 < low < high or step <= 0:
        raise ValueError(f"--capacity needs 0 < LO < HI and a positive step, not {low}:{high} step {step}")
    probes: list[Mapping[str, Any]] = []

    def meets(rate: float) -> bool:
        result = probe(rate)
        probes.append(result)
        return all(targets_met(result).values())

    if not meets(low):
        return None, probes
    if meets(high):
        return high, probes
    while high - low > step:
        middle = low + round((high - low) / 2 / step) * step
        if meets(middle):
            low = middle
        else:
            high = middle
    return low, probes


def summarise(result: Mapping[str, Any]) -> str:
    pace = f"{result['rate_per_s']:g}/s" if result["rate_per_s"] else "back to back"
    return (f"{result['requests']} at {pace}: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
            f"throughput {result['throughput_per_s']}/s, operator CPU {result['operator_cpu_ms_per_request']} "
            f"ms/request, RSS peak {result['rss_peak_mb']} MB; targets "
            + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in targets_met(result).items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100, help="how many requests to apply (default 100)")
    parser.add_argument("--rate", type=float, default=0.0, help="requests per second (default 0: back to back)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for all Jobs")
    parser.add_argument("--operator-log", type=Path, help="keep the operator's log here")
    parser.add_argument("--manifest-rows", type=int, default=10,
                        help="samples in the shared manifest (default 10; MIMIC-CXR has 377,110)")
    parser.add_argument("--capacity", metavar="LO:HI",
                        help="find the highest paced rate (req/s) in LO..HI at which every target holds")
    parser.add_argument("--capacity-step", type=float, default=5.0, help="resolution of --capacity (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.capacity:
        if args.rate:
            parser.error("--capacity chooses the rates itself; leave out --rate")
        try:
            low, high = (float(part) for part in args.capacity.split(":"))
        except ValueError:
            parser.error(f"--capacity takes LO:HI in requests per second, not {args.capacity!r}")

        def probe(rate: float) -> Mapping[str, Any]:
            result = run(args.requests, rate, args.timeout, args.operator_log, args.manifest_rows)
            if not args.json:
                print(summarise(result), flush=True)
            return result

        try:
            best, probes = find_capacity(probe, low, high, args.capacity_step)
        except ValueError as err:
            parser.error(str(err))
        if args.json:
            print(json.dumps({"capacity_per_s": best, "requests": args.requests, "targets": TARGETS,
                              "probes": [{**p, "targets_met": targets_met(p)} for p in probes]}))
        elif best is None:
            print(f"capacity: the targets do not hold even at {low:g} requests/s")
        else:
            print(f"capacity: every target holds up to {best:g} requests/s arriving steadily "
                  f"({args.requests} requests per probe, resolution {args.capacity_step:g}/s"
                  f"{'' if best < high else ', the top of the range'})")
        return 0
    result = run(args.requests, args.rate, args.timeout, args.operator_log, args.manifest_rows)
    met = targets_met(result)
    result["targets_met"] = met
    if args.json:
        print(json.dumps(result))
        return 0
    pace = f"{args.rate:g}/s" if args.rate else "back to back"
    print(f"{result['requests']} UnlearnRequests applied {pace} in {result['applying_s']} s "
          f"(operator ready and warm after {result['operator_ready_s']} s)")
    print(f"apply → Job created: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, max {result['max_ms']} ms "
          f"(mean {result['mean_ms']}, min {result['min_ms']})")
    print(f"throughput: {result['throughput_per_s']} requests/s; duplicate Jobs: {result['duplicate_jobs']}")
    print(f"CPU per request: operator {result['operator_cpu_ms_per_request']} ms, emulator and client "
          f"{result['bench_cpu_ms_per_request']} ms")
    print(f"operator RSS: idle {result['rss_idle_mb']} MB, end {result['rss_end_mb']} MB, "
          f"peak {result['rss_peak_mb']} MB")
    print("targets (p50 ≤ 100 ms, p99 ≤ 500 ms, RSS ≤ 200 MB): "
          + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in met.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Operator memory: the real operator's peak RSS while it reads a large manifest or a large report
(a benchmark, not a test: it prints, it asserts nothing).

What runs, for each scenario in a fresh operator process (so each peak is its own):

- a moto S3 server and the emulated Kubernetes API server of the tests (``tests/harness/emulator.py``)
  in this process, with the CRD installed and one namespace per scenario holding its S3 credentials
  Secret (``FORGETMI_CREDENTIALS_SECRET``; moto checks no signature) and the forget list Secret;
- the real operator as a subprocess, ``python -m forgetmi_operator run --standalone
  --namespace=<ns>``, reading every object with that namespace's credentials (never its own;
  ``file://`` is refused in the cluster, so everything lives in S3);
- a registry in S3 (model ``bench``, alias ``production`` → ``v1``) and manifests of ``--rows``
  samples (default 2,500,000) of ``--patients`` patients (default 65,000; 80 % of them training),
  in random order, with the columns ``sample_id, subject_id, image_uri, report_text, label,
  split``, as CSV and as Parquet (pyarrow's defaults), generated with pyarrow.

First a warm-up request naming a 10-row manifest (its Job's creation ends the operator's lazy
imports); then the scenario's request:

- ``csv`` / ``parquet``: a request naming the large manifest; done when its Job exists (the forget
  subjects were found among the training rows) or acceptance failed;
- ``report``: a request naming the small manifest; once its Job exists, a ``report.json`` of
  ``--report-mb`` MiB (a valid report padded with spaces) is written where the trainer writes it,
  and the Job is marked complete as the Job controller would; done when a condition says
  ``ReportInvalid`` or the request ends.

Printed per scenario: the object's size, the outcome (the request's last condition reason), seconds
from the request's creation to the outcome, and the operator's peak RSS (``VmHWM`` from
``/proc/<pid>/status``) after the warm-up and after the scenario.

Usage::

    PYTHONSAFEPATH=1 .venv/bin/python bench/operator_memory.py [--rows 2500000] [--report-mb 200] [--json]
    PYTHONSAFEPATH=1 .venv/bin/python bench/operator_memory.py --scenario csv --scenario report

To measure other code (e.g. before a change), put copies of ``operator/`` and ``trainer/`` named
``forgetmi_operator/`` and ``forgetmi_trainer/`` in a folder and set ``PYTHONPATH`` to it: the
operator subprocess inherits it.

Target (the security issue's): peak RSS under 256 MB in every scenario (the chart's limit: 512 Mi).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness.cluster import (  # noqa: E402
    CREDENTIALS_SECRET,
    JOBS,
    NAMESPACES,
    REQUESTS,
    SECRETS,
    credentials_secret,
    free_port,
    install_crd,
    write_kubeconfig,
)
from harness.emulator import ApiServer  # noqa: E402
from harness.procfs import rss_kb  # noqa: E402
from harness.reports import make_report  # noqa: E402

from forgetmi_operator.registry import aliases  # noqa: E402
from forgetmi_operator.registry.paths import request_paths  # noqa: E402
from forgetmi_trainer import storage  # noqa: E402

MODEL = "bench"
SCENARIOS = ("csv", "parquet", "report")
TARGET_MB = 256
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
           "AWS_EC2_METADATA_DISABLED": "true"}
FINDINGS = ["no finding", "cardiomegaly", "pleural effusion", "atelectasis", "edema", "pneumothorax",
            "support devices", "lung opacity"]


def manifest_table(rows: int, patients: int, seed: int = 0) -> pa.Table:
    """``rows`` samples of ``patients`` patients in random order; patients below 80 % train."""
    rng = np.random.default_rng(seed)
    patient = rng.integers(0, patients, rows)
    sample = pc.binary_join_element_wise("s", pc.utf8_lpad(pc.cast(pa.array(np.arange(rows)), pa.string()), 8, "0"), "")
    subject = pc.binary_join_element_wise("p1", pc.utf8_lpad(pc.cast(pa.array(patient), pa.string()), 7, "0"), "")
    return pa.table({
        "sample_id": sample,
        "subject_id": subject,
        "image_uri": pc.binary_join_element_wise("img/", sample, ".jpg", ""),
        "report_text": pa.array(FINDINGS).take(pa.array(rng.integers(0, len(FINDINGS), rows))),
        "label": pa.array(rng.integers(0, 2, rows)),
        "split": pa.array(np.where(patient < 0.8 * patients, "train", "test")),
    })


def prepare_storage(bucket: str, work: Path, rows: int, patients: int) -> dict[str, Any]:
    """The registry and the manifests in ``s3://bucket``; their URIs, sizes and the forget subjects."""
    registry = f"s3://{bucket}/registry"
    version = storage.join(registry, MODEL, "versions", "v1")
    storage.write_text(storage.join(version, "config.json"), "{}\n")
    storage.write_bytes(storage.join(version, "model.safetensors"), b"dummy weights for the memory benchmark\n")
    verified = aliases.verify_version(storage.DEFAULT, registry, MODEL, "v1")
    aliases.promote(storage.DEFAULT, registry, MODEL, "production", version=verified, expected_token=None, request=None)
    started = time.perf_counter()
    table = manifest_table(rows, patients)
    small = manifest_table(10, 10)
    train = pc.unique(table.filter(pc.equal(table["split"], "train"))["subject_id"]).to_pylist()
    forget = sorted(train)[:3]
    small = small.set_column(1, "subject_id", pa.array(forget * 3 + forget[:1])).set_column(
        5, "split", pa.array(["train"] * 10))
    out = {"registry": registry, "forget": forget, "uris": {}, "bytes": {}}
    for name, write in (("csv", pa_csv.write_csv), ("parquet", pq.write_table)):
        for key, data in ((name, table), (f"small-{name}", small)):
            path = work / f"{key}.{name}"
            write(data, path)
            uri = f"s3://{bucket}/data/{key}/manifest.{name}"
            storage.upload_file(path, uri)
            out["uris"][key], out["bytes"][key] = uri, path.stat().st_size
            path.unlink()
    out["generate_s"] = round(time.perf_counter() - started, 1)
    return out


def request_body(name: str, registry: str, manifest: str) -> dict[str, Any]:
    return {"apiVersion": "unlearning.forgetmi.io/v1alpha1", "kind": "UnlearnRequest", "metadata": {"name": name},
            "spec": {"model": {"registryUri": registry, "name": MODEL, "alias": "production"},
                     "data": {"manifestUri": manifest},
                     "forget": {"subjectsSecretRef": {"name": "subjects", "key": "subjects"}},
                     "method": {"epochs": 2}, "resources": {"gpus": 1}}}


def post(api_url: str, namespace: str, body: dict[str, Any]) -> None:
    url = f"{api_url}/apis/unlearning.forgetmi.io/v1alpha1/namespaces/{namespace}/unlearnrequests"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        if response.status != 201:
            raise RuntimeError(f"create answered {response.status}")


def last_reason(api: ApiServer, namespace: str, name: str) -> tuple[str | None, list[dict[str, Any]]]:
    obj = api.get(REQUESTS, namespace, name) or {}
    conditions = (obj.get("status") or {}).get("conditions") or []
    return (conditions[-1].get("reason") if conditions else None), conditions


def wait(what: str, timeout: float, check: Any, operator: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if operator.poll() is not None:
            raise RuntimeError(f"the operator exited with {operator.returncode} while waiting for {what}")
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")


def job_of(api: ApiServer, namespace: str, name: str) -> dict[str, Any] | None:
    return next((job for job in api.list(JOBS, namespace)
                 if (job["metadata"].get("ownerReferences") or [{}])[0].get("name") == name), None)


def accepted_or_refused(api: ApiServer, namespace: str, name: str) -> str | None:
    if job_of(api, namespace, name) is not None:
        return "JobCreated"
    _, conditions = last_reason(api, namespace, name)
    refused = next((c for c in conditions if c.get("type") == "Accepted" and c.get("status") == "False"), None)
    return None if refused is None else str(refused.get("reason"))


def write_report(uri: str, size_bytes: int, work: Path) -> None:
    """A valid report padded with spaces (still valid JSON) to ``size_bytes``, uploaded to ``uri``."""
    data = make_report().to_json().encode()
    path = work / "report.json"
    with open(path, "wb") as fh:
        fh.write(data)
        chunk = b" " * (1024 * 1024)
        left = size_bytes - len(data)
        while left > 0:
            fh.write(chunk[:left])
            left -= len(chunk)
    storage.upload_file(path, uri)
    path.unlink()


def complete_job(api: ApiServer, namespace: str, job: Mapping[str, Any]) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    api.patch(JOBS, namespace, job["metadata"]["name"], {"status": {
        "startTime": stamp, "completionTime": stamp, "succeeded": 1, "active": 0,
        "conditions": [{"type": "Complete", "status": "True", "reason": "Completed", "message": "",
                        "lastTransitionTime": stamp}]}}, subresource="status")


def run_scenario(scenario: str, api: ApiServer, world: Mapping[str, Any], moto_url: str, work: Path,
                 report_bytes: int, timeout: float) -> dict[str, Any]:
    namespace = f"mem-{scenario}-{uuid.uuid4().hex[:4]}"
    api.create(NAMESPACES, None, {"metadata": {"name": namespace}})
    api.create(SECRETS, namespace, credentials_secret())
    api.create(SECRETS, namespace, {"metadata": {"name": "subjects"}, "type": "Opaque", "data": {
        "subjects": base64.b64encode("\n".join(world["forget"]).encode()).decode()}})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FORGETMI_"))}
    env.update({k: v for k, v in AWS_ENV.items() if not k.startswith("AWS_ACCESS") and "SECRET" not in k})
    env.update({"KUBECONFIG": str(write_kubeconfig(work / f"kubeconfig-{namespace}", api.api_url)),
                "PYTHONSAFEPATH": "1", "FORGETMI_METRICS_PORT": str(free_port()),
                "FORGETMI_S3_ENDPOINT_URL": moto_url, "FORGETMI_CREDENTIALS_SECRET": CREDENTIALS_SECRET,
                "FORGETMI_PROGRESS_INTERVAL_SECONDS": "0.5", "FORGETMI_LOG_FORMAT": "text"})
    log_path = work / f"operator-{namespace}.log"
    fmt = "parquet" if scenario == "parquet" else "csv"
    with open(log_path, "wb") as log:
        operator = subprocess.Popen(
            [sys.executable, "-m", "forgetmi_operator", "run", "--standalone", f"--namespace={namespace}"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
        try:
            post(api.api_url, namespace, request_body("warmup", world["registry"], world["uris"][f"small-{fmt}"]))
            warm = wait("the warm-up Job", 120, lambda: accepted_or_refused(api, namespace, "warmup"), operator)
            if warm != "JobCreated":
                raise RuntimeError(f"the warm-up request was refused ({warm}); see {log_path}")
            time.sleep(1.0)
            warm_hwm = rss_kb(operator.pid)[1]
            started = time.perf_counter()
            if scenario == "report":
                post(api.api_url, namespace, request_body("big-report", world["registry"], world["uris"]["small-csv"]))
                job = wait("the Job", 120, lambda: job_of(api, namespace, "big-report"), operator)
                uid = api.get(REQUESTS, namespace, "big-report")["metadata"]["uid"]
                uri = request_paths(world["registry"], MODEL, uid).report
                write_report(uri, report_bytes, work)
                started = time.perf_counter()  # the report is there: from now on the operator reads it
                complete_job(api, namespace, job)

                def concluded() -> str | None:
                    reason, conditions = last_reason(api, namespace, "big-report")
                    if any(c.get("reason") == "ReportInvalid" for c in conditions):
                        return "ReportInvalid"
                    phase = ((api.get(REQUESTS, namespace, "big-report") or {}).get("status") or {}).get("phase")
                    return reason if phase in ("Promoted", "Held", "Failed") else None

                outcome = wait("the conclusion", timeout, concluded, operator)
                size = report_bytes
            else:
                post(api.api_url, namespace, request_body("big-manifest", world["registry"], world["uris"][scenario]))
                outcome = wait("the acceptance", timeout, lambda: accepted_or_refused(api, namespace, "big-manifest"),
                               operator)
                size = world["bytes"][scenario]
            seconds = time.perf_counter() - started
            time.sleep(1.0)
            rss, hwm = rss_kb(operator.pid)
            messages = [c.get("message") for c in last_reason(api, namespace, "big-report")[1]
                        if c.get("reason") == "ReportInvalid"] if scenario == "report" else []
        finally:
            operator.send_signal(signal.SIGINT)
            try:
                operator.wait(30)
            except subprocess.TimeoutExpired:
                operator.kill()
                operator.wait()
    return {"scenario": scenario, "object_mb": round(size / 2**20, 1), "outcome": outcome,
            "seconds": round(seconds, 1), "warm_peak_mb": round(warm_hwm / 1024, 1),
            "peak_mb": round(hwm / 1024, 1), "end_rss_mb": round(rss / 1024, 1),
            "under_target": hwm / 1024 < TARGET_MB, "message": messages[0] if messages else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_500_000, help="samples in the large manifest")
    parser.add_argument("--patients", type=int, default=65_000, help="patients in the large manifest")
    parser.add_argument("--report-mb", type=float, default=200.0, help="size of the large report in MiB")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="run only these (repeatable)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each outcome")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    scenarios = args.scenario or list(SCENARIOS)
    os.environ.update(AWS_ENV)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(name, None)
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    moto_url = f"http://{host}:{port}"
    os.environ[storage.ENDPOINT_ENV] = moto_url
    api = ApiServer()
    api.start()
    install_crd(api)
    results = []
    try:
        import boto3

        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1").create_bucket(Bucket=bucket)
        with tempfile.TemporaryDirectory(prefix="forgetmi-membench-") as tmp:
            work = Path(tmp)
            world = prepare_storage(bucket, work, args.rows, args.patients)
            if not args.json:
                print(f"{args.rows:,} rows of {args.patients:,} patients: CSV {world['bytes']['csv'] / 2**20:.1f} MiB, "
                      f"Parquet {world['bytes']['parquet'] / 2**20:.1f} MiB (generated and uploaded in "
                      f"{world['generate_s']} s)", flush=True)
            for scenario in scenarios:
                result = run_scenario(scenario, api, world, moto_url, work, int(args.report_mb * 2**20), args.timeout)
                results.append(result)
                if not args.json:
                    print(f"{scenario:8} {result['object_mb']:7.1f} MiB → {result['outcome']} in "
                          f"{result['seconds']} s; operator peak RSS {result['peak_mb']} MB "
                          f"(after warm-up {result['warm_peak_mb']} MB); "
                          f"{'under' if result['under_target'] else 'NOT under'} {TARGET_MB} MB", flush=True)
                    if result["message"]:
                        print(f"         {result['message']}", flush=True)
    finally:
        api.stop()
        moto.stop()
    if args.json:
        print(json.dumps({"rows": args.rows, "patients": args.patients, "target_mb": TARGET_MB, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

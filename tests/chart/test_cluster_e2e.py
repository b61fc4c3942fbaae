"""The chart, kubectl, the operator and Prometheus together on the emulated cluster.

1. ``helm template --include-crds`` (default values) is applied with the real ``kubectl apply``
   to the emulated API server (tests/harness/emulator.py, served over HTTP); the CRD, RBAC,
   ServiceAccount, Service and Deployment are then there for ``kubectl get``.
2. The operator runs for real (Kopf in a thread) with the arguments and environment of the
   Deployment that kubectl applied (ports, S3 endpoint and probe address moved to loopback).
   The example request (examples/unlearnrequest-minimal.yaml, pointed at a moto S3 registry)
   and its subjects Secret are applied with kubectl; the Job runner runs the trainer as a local
   process; ``kubectl get ur`` shows the CRD's printer columns and
   ``kubectl wait --for=condition=Promoted`` returns.
3. Prometheus (Debian's package, on loopback, 1 s scrapes) scrapes the operator's metrics
   endpoint while four requests run: promoted, held by a failing gate, failed because the
   trainer exits 3 (a Job failure) and rejected because the model does not exist (a reconcile
   error). Every query of the shipped Grafana dashboard must then return data.

kubectl needs from the emulator: discovery with the core group as ``v1``, short names (``crd``,
``ur``), every kind the chart renders (ServiceAccount, Service, RBAC), JSON-line watches (for
``kubectl wait``) and server-side Tables from ``additionalPrinterColumns`` (for ``kubectl get``).
The emulator serves no OpenAPI, so ``kubectl apply`` runs with ``--validate=false``.
"""

from __future__ import annotations

import base64
import json
import math
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.cluster import (
    CREDENTIALS_SECRET,
    JOBS,
    REQUESTS,
    credentials_secret,
    free_port,
    wait_for,
    write_kubeconfig,
)
from harness.emulator import ApiServer
from harness.jobrunner import JobRunner
from harness.world import fitted_world, seed_model
from kopf.testing import KopfRunner
from test_dashboard import (
    get_json,
    load_dashboard,
    metric_names,
    panel_queries,
    running_prometheus,
    substitute,
)

from forgetmi_operator.__main__ import kopf_args
from forgetmi_operator.registry import aliases as registry
from forgetmi_trainer import storage
from forgetmi_trainer.storage import DEFAULT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "forgetmi-operator"
RELEASE, NAMESPACE = "forgetmi", "forgetmi-system"  # as in conftest.py
EXAMPLE = ROOT / "examples" / "unlearnrequest-minimal.yaml"
CRD_NAME = "unlearnrequests.unlearning.forgetmi.io"
REQUEST_NS = "radiology"
PASSING_GATES = [{"metric": "testAUC", "comparator": "atLeast", "threshold": 0.0, "reference": "absolute"}]
FAILING_GATES = [{"metric": "testAUC", "comparator": "atMost", "threshold": 0.0, "reference": "absolute"}]
TERMINAL = ("Promoted", "Held", "Failed")
RUN_TIMEOUT = 180


# ---- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kubectl() -> str:
    local = ROOT / ".tools" / "bin" / "kubectl"
    if not local.is_file():
        pytest.skip("kubectl is not installed (scripts/install-tools.sh extracts it into .tools/bin); CI has it")
    return str(local)


@pytest.fixture(scope="module")
def world(s3_server: str) -> Iterator[dict[str, Any]]:
    """A bucket with a small dataset, one trained model (registry/base, v1) and a broken manifest."""
    with fitted_world(s3_server, prefix="chart-e2e") as world:
        # Accepted (the manifest exists) but its images are missing: the trainer exits 3.
        broken = f"s3://{world['bucket']}/broken/manifest.csv"
        storage.write_text(broken, storage.read_text(world["manifest"]).replace("/data/images/", "/gone/images/"))
        world["broken"] = broken
        for model in ("cxr-report-classifier", "cxr-held", "cxr-broken"):
            seed_model(world, model)
        yield world


class Kubectl:
    """The real kubectl against the emulated API server (its own kubeconfig and cache)."""

    def __init__(self, binary: str, kubeconfig: Path, cache: Path) -> None:
        self.binary = binary
        self.env = {"PATH": "/usr/bin:/bin", "HOME": str(cache), "KUBECONFIG": str(kubeconfig),
                    "KUBECACHEDIR": str(cache / "kube-cache")}

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([self.binary, *args], input=stdin, capture_output=True, text=True,
                                timeout=timeout, check=False, env=self.env)
        if check:
            assert result.returncode == 0, f"kubectl {' '.join(args)} → {result.returncode}:\n{result.stderr}"
        return result

    def apply(self, manifests: str) -> str:
        return self("apply", "--validate=false", "-f", "-", stdin=manifests).stdout


@pytest.fixture(scope="module")
def cluster(world: dict[str, Any], s3_server: str, kubectl: str, helm_cmd: Any,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The emulated API server with the chart applied by kubectl, and a Job runner."""
    tmp = tmp_path_factory.mktemp("cluster")
    api = ApiServer()
    url = api.start()
    try:
        kc = Kubectl(kubectl, write_kubeconfig(tmp / "kubeconfig", url), tmp)
        # The emulator has no admission (no admissionregistration API): the chart's
        # ValidatingAdmissionPolicy is evaluated in test_admission_policy.py instead.
        rendered = helm_cmd("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds",
                            "--skip-tests", "--set", f"s3.credentialsSecret={CREDENTIALS_SECRET}",
                            "--set", "admissionPolicy.enabled=false")
        assert rendered.returncode == 0, rendered.stderr
        namespaces = "".join(f"---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"
                             for ns in (NAMESPACE, REQUEST_NS))
        credentials = yaml.safe_dump({"apiVersion": "v1", "kind": "Secret", **credentials_secret(),
                                      "metadata": {"name": CREDENTIALS_SECRET, "namespace": REQUEST_NS}})
        applied = kc.apply(namespaces + "---\n" + credentials + rendered.stdout)
        with JobRunner(api, tmp) as runner:
            yield {"api": api, "kubectl": kc, "runner": runner, "world": world, "s3": s3_server,
                   "applied": applied, "rendered": rendered.stdout, "tmp": tmp}
        assert not runner.errors, runner.errors
    finally:
        api.stop()


@pytest.fixture(scope="module")
def running_operator(cluster: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The operator, run with the args and env of the Deployment kubectl applied."""
    deployment = json.loads(cluster["kubectl"]("get", "deployment", "-n", NAMESPACE, "-o", "json").stdout)["items"]
    assert len(deployment) == 1
    spec = deployment[0]["spec"]["template"]["spec"]
    container = next(c for c in spec["containers"] if c["name"] == "operator")
    metrics_port, health_port = free_port(), free_port()
    env: dict[str, str] = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[item["name"]] = NAMESPACE
    assert {"FORGETMI_METRICS_PORT", "FORGETMI_S3_ENDPOINT_URL"} <= set(env)
    # What the chart leaves to the cluster (ports in the Pod, the S3 endpoint) moves to loopback;
    # tracking polls faster than the default so the test is quick.
    env.update(FORGETMI_METRICS_PORT=str(metrics_port),
               FORGETMI_S3_ENDPOINT_URL=cluster["s3"], FORGETMI_PROGRESS_INTERVAL_SECONDS="0.5",
               FORGETMI_REQUEST_TIMEOUT_SECONDS="10", FORGETMI_WATCH_TIMEOUT_SECONDS="60",
               KUBECONFIG=cluster["kubectl"].env["KUBECONFIG"])
    args = [arg.replace("0.0.0.0:8081", f"127.0.0.1:{health_port}") for arg in container.get("args") or []]
    assert "--standalone" in args and "--all-namespaces" in args, args
    import forgetmi_operator.handlers  # noqa: F401  (registers the handlers once per process)

    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with KopfRunner(kopf_args(args), timeout=60) as runner:
            wait_for(lambda: _http_ok(f"http://127.0.0.1:{metrics_port}/metrics"), 30, "the metrics endpoint")
            # Kopf starts its liveness server only once its own startup is over, after the
            # metrics server (a startup handler): on a loaded machine that is a second later.
            wait_for(lambda: _http_ok(f"http://127.0.0.1:{health_port}/healthz"), 30, "the liveness endpoint")
            yield {"runner": runner, "metrics_port": metrics_port, "health_port": health_port}


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # loopback only
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def prometheus(prometheus_bin: str, running_operator: dict[str, Any],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a Prometheus on loopback scraping the operator every second."""
    with running_prometheus(prometheus_bin, tmp_path_factory.mktemp("prometheus"), "forgetmi-operator",
                            f"127.0.0.1:{running_operator['metrics_port']}",
                            ready='up{job="forgetmi-operator"} == 1') as url:
        yield url


# ---- the requests -------------------------------------------------------------------------------

def _secret(name: str, subjects: list[str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": REQUEST_NS},
            "data": {"subjects": base64.b64encode("\n".join(subjects).encode()).decode()}}


def _request(world: dict[str, Any], name: str, model: str, *, gates: list[dict[str, Any]],
             manifest: str | None = None) -> dict[str, Any]:
    """The minimal example, renamed and pointed at the test registry, data and subjects Secret."""
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"] = {"name": name, "namespace": REQUEST_NS}
    spec = body["spec"]
    spec["model"] = {**spec["model"], "registryUri": world["registry"], "name": model}
    spec["data"] = {**spec["data"], "manifestUri": manifest or world["manifest"]}
    spec["forget"] = {"subjectsSecretRef": {"name": f"{name}-subjects", "key": "subjects"}}
    spec.update(method={"epochs": 2, "batchSize": 16}, gates=gates, resources={"gpus": 1})
    return body


@pytest.fixture(scope="module")
def requests_done(cluster: dict[str, Any], running_operator: dict[str, Any], prometheus: str) -> dict[str, Any]:
    """Four requests applied with kubectl (with Prometheus scraping), each run to a terminal phase."""
    world, kc = cluster["world"], cluster["kubectl"]
    requests = {
        "forget-request-0042": _request(world, "forget-request-0042", "cxr-report-classifier", gates=PASSING_GATES),
        "held-request-0043": _request(world, "held-request-0043", "cxr-held", gates=FAILING_GATES),
        "broken-request-0044": _request(world, "broken-request-0044", "cxr-broken", gates=PASSING_GATES,
                                        manifest=world["broken"]),
        "unknown-model-0045": _request(world, "unknown-model-0045", "nowhere", gates=PASSING_GATES),
    }
    docs = [_secret(f"{name}-subjects", world["subjects"]) for name in requests] + list(requests.values())
    started = time.monotonic()
    out = kc.apply(yaml.safe_dump_all(docs))
    for name in requests:
        assert f"unlearnrequest.unlearning.forgetmi.io/{name} created" in out, out
    api = cluster["api"]

    def phase(name: str) -> str | None:
        found = api.get(REQUESTS, REQUEST_NS, name)
        return ((found or {}).get("status") or {}).get("phase")

    # kubectl wait, as a user would, for the one meant to be promoted.
    wait = kc("wait", "--for=condition=Promoted", "ur/forget-request-0042", "-n", REQUEST_NS,
              f"--timeout={RUN_TIMEOUT}s", check=False, timeout=RUN_TIMEOUT + 30)
    wait_for(lambda: all(phase(n) in TERMINAL for n in requests), RUN_TIMEOUT, "every request to finish")
    return {"names": list(requests), "wait": wait, "phases": {n: phase(n) for n in requests},
            "seconds": time.monotonic() - started}


# ---- tests --------------------------------------------------------------------------------------

def test_kubectl_applies_the_rendered_chart(cluster: dict[str, Any]) -> None:
    applied = cluster["applied"]
    for kind in ("customresourcedefinition.apiextensions.k8s.io", "serviceaccount",
                 "clusterrole.rbac.authorization.k8s.io",
                 "clusterrolebinding.rbac.authorization.k8s.io", "service", "deployment.apps"):
        assert f"{kind}/" in applied, applied
    crd = cluster["kubectl"]("get", "crd", CRD_NAME)
    assert CRD_NAME in crd.stdout
    assert cluster["kubectl"]("get", "crd", CRD_NAME, "-o", "jsonpath={.spec.names.shortNames}").stdout == \
        '["ur","unlearn"]'
    # Re-applying the same manifests changes nothing (kubectl's three-way merge against the emulator).
    again = cluster["kubectl"].apply(cluster["rendered"])
    assert "created" not in again and "configured" not in again, again
    services = cluster["kubectl"]("get", "svc,sa,deploy", "-n", NAMESPACE, "-o", "name").stdout.split()
    assert "deployment.apps/forgetmi-forgetmi-operator" in services, services
    assert any(s.startswith("service/") for s in services) and any(s.startswith("serviceaccount/") for s in services)


def test_operator_from_the_deployment_serves_liveness_and_metrics(running_operator: dict[str, Any]) -> None:
    assert _http_ok(f"http://127.0.0.1:{running_operator['health_port']}/healthz")
    with urllib.request.urlopen(f"http://127.0.0.1:{running_operator['metrics_port']}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert "forgetmi_build_info{" in text


def test_example_request_is_promoted_and_kubectl_shows_it(cluster: dict[str, Any],
                                                          requests_done: dict[str, Any]) -> None:
    kc = cluster["kubectl"]
    wait = requests_done["wait"]
    assert wait.returncode == 0, f"kubectl wait: {wait.stderr} (phases {requests_done['phases']})"
    assert "condition met" in wait.stdout
    assert requests_done["phases"] == {"forget-request-0042": "Promoted", "held-request-0043": "Held",
                                       "broken-request-0044": "Failed", "unknown-model-0045": "Failed"}

    table = kc("get", "ur", "-n", REQUEST_NS).stdout.splitlines()
    assert table[0].split() == ["NAME", "MODEL", "PHASE", "ATTACK", "AUC", "TEST", "AUC", "Δ", "AGE"], table[0]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert set(rows) == set(requests_done["names"])
    promoted = rows["forget-request-0042"]
    assert promoted[1:3] == ["cxr-report-classifier", "Promoted"]
    obj = cluster["api"].get(REQUESTS, REQUEST_NS, "forget-request-0042")
    status = obj["status"]
    assert float(promoted[3]) == pytest.approx(status["attackAuc"]) and float(promoted[4]) == pytest.approx(
        status["testAucDrop"]), promoted
    assert rows["held-request-0043"][2] == "Held" and rows["broken-request-0044"][2] == "Failed"

    wide = kc("get", "ur", "forget-request-0042", "-n", REQUEST_NS, "-o", "wide").stdout.splitlines()
    (cluster["tmp"] / "kubectl-get-ur.txt").write_text("\n".join([*table, "", *wide, ""]))
    header = wide[0].split()
    assert header[-2:] == ["JOB", "VERSION"], wide[0]
    cells = wide[1].split()
    assert cells[-2:] == [status["jobName"], status["baseModel"]["version"]], wide
    assert status["baseModel"]["version"] == "v1"
    assert [job["metadata"]["name"] for job in cluster["api"].list(JOBS, REQUEST_NS)
            if job["metadata"]["name"] == status["jobName"]]
    assert registry.resolve_alias(DEFAULT, cluster["world"]["registry"], "cxr-report-classifier",
                                  "production").version == status["candidateModel"]["version"] != "v1"
    broken = cluster["api"].get(REQUESTS, REQUEST_NS, "broken-request-0044")["status"]
    assert cluster["runner"].exit_codes[broken["jobName"]] == [3]


def test_every_dashboard_panel_has_data_from_the_operator(prometheus: str, requests_done: dict[str, Any]) -> None:
    queries = [(title, substitute(expr)) for title, expr in panel_queries()]
    def missing_metrics() -> tuple[set[str], dict[str, list[str]]]:
        exported = set(_metric_names(prometheus))
        histograms = {name.removesuffix(suffix) for name in exported for suffix in ("_bucket", "_sum", "_count")}
        return exported, {title: sorted(metric_names(expr) - exported - histograms) for title, expr in panel_queries()}

    # A labelled series appears with the operator's update after a request's last status patch, so
    # the scrape that sees it can come a moment after the request looks finished: wait a few scrapes.
    deadline = time.monotonic() + 20
    exported, missing = missing_metrics()
    while any(missing.values()) and time.monotonic() < deadline:
        time.sleep(1)
        exported, missing = missing_metrics()
    assert not any(missing.values()), f"panels name metrics the operator does not export: {missing}"

    def answers() -> dict[str, str]:
        problems = {}
        for title, query in queries:
            try:
                answer = get_json(f"{prometheus}/api/v1/query?query={urllib.parse.quote(query)}")
            except urllib.error.HTTPError as err:  # 400: the query does not parse
                problems[title] = f"{query!r} → HTTP {err.code}: {err.read().decode()}"
                continue
            result = answer["data"]["result"] if answer["status"] == "success" else None
            if not result:
                problems[title] = f"{query!r} returned no series: {answer}"
            elif all(math.isnan(float(series["value"][1])) for series in result):
                problems[title] = f"{query!r} returned only NaN: {result}"
        return problems

    # Rates and increases need two samples after a series appears: a few scrapes after the last request.
    deadline = time.monotonic() + 30
    while (problems := answers()) and time.monotonic() < deadline:
        time.sleep(1)
    assert not problems, (f"dashboard queries without data (the operator exports {sorted(exported)}):\n"
                          + "\n".join(f"{title}: {why}" for title, why in problems.items()))
    variable = {v["name"]: v for v in load_dashboard()["templating"]["list"]}["namespace"]["definition"]
    metric, label = variable.removeprefix("label_values(").removesuffix(")").replace(" ", "").split(",")
    values = get_json(f"{prometheus}/api/v1/label/{label}/values?match[]={metric}")["data"]
    assert REQUEST_NS in values


def _metric_names(prometheus: str) -> list[str]:
    return [n for n in get_json(f"{prometheus}/api/v1/label/__name__/values")["data"] if n.startswith("forgetmi_")]


def test_requests_ran_in_time(requests_done: dict[str, Any]) -> None:
    assert requests_done["seconds"] < RUN_TIMEOUT

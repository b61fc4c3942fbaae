"""The Helm chart: lint, render every scenario, Kubernetes schemas, values schema, RBAC, and
agreement with the root CRD, the operator's settings and the Dockerfile's user."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from forgetmi_operator.api.errors import SettingsInvalid
from forgetmi_operator.api.patterns import DNS_SUBDOMAIN, QUANTITY_PATTERN
from forgetmi_operator.api.settings import DEFAULT_TRAINER_IMAGE, Settings, default_gates, env_name, load_settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "forgetmi-operator"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
FULL_VALUES = CHART / "ci" / "full-values.yaml"
NAMESPACED_VALUES = CHART / "ci" / "namespaced-values.yaml"
SERVING_VALUES = CHART / "ci" / "serving-targets-values.yaml"
NAMESPACE = "forgetmi-system"
CRD_FILE = "unlearnrequests.unlearning.forgetmi.io.yaml"
# Kinds defined by the Prometheus Operator's CRDs: no schema in kubernetes-validate; checked by hand.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
K8S_VERSIONS = ("1.30.0", "1.37.0")
SCENARIOS = [None, *CI_VALUES]


def scenario_id(values: Path | None) -> str:
    return values.name.removesuffix("-values.yaml") if values else "defaults"


def only(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
    return found[0]


def container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    return only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def env_of(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(manifests)["env"]}


def rules_of(manifests: list[dict[str, Any]], *role_kinds: str) -> list[dict[str, Any]]:
    role_kinds = role_kinds or ("Role", "ClusterRole")
    return [rule for m in manifests if m["kind"] in role_kinds for rule in m["rules"]]


def verbs_on(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    return {verb for r in rules if group in r["apiGroups"] and resource in r["resources"] for verb in r["verbs"]}


# ---- lint and render ----------------------------------------------------------------------------

@pytest.mark.parametrize("values", SCENARIOS, ids=scenario_id)
def test_helm_lint_strict(helm_cmd, values: Path | None) -> None:
    for strict in ([], ["--strict"]):
        result = helm_cmd("lint", str(CHART), *strict, *(["--values", str(values)] if values else []))
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", SCENARIOS, ids=scenario_id)
def test_rendered_objects_validate_against_kubernetes_schemas(render, values: Path | None) -> None:
    manifests = render(values)
    for manifest in manifests:
        if manifest["kind"] in CUSTOM_KINDS:
            assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
            assert set(manifest) == {"apiVersion", "kind", "metadata", "spec"}
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                pytest.fail(f"{manifest['kind']}/{manifest['metadata']['name']} invalid for Kubernetes "
                            f"{version}: {err.message} at {'/'.join(map(str, err.path))}")


def test_defaults_render_the_core_objects_only(render) -> None:
    kinds = sorted(m["kind"] for m in render())
    assert kinds == sorted(["CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                            "ClusterRole", "ClusterRoleBinding", "Service", "Deployment", "Pod",
                            "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"])
    off = {m["kind"] for m in render(None, "--set", "admissionPolicy.enabled=false")}
    assert not off & {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


def test_everything_enabled_renders_monitoring_and_namespaced_rbac(render) -> None:
    manifests = render(FULL_VALUES)
    kinds = {m["kind"] for m in manifests}
    assert {"ServiceMonitor", "PrometheusRule", "ConfigMap", "Role", "RoleBinding"} <= kinds
    dashboard = only(manifests, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert json.loads(dashboard["data"]["forgetmi.json"]) == json.loads(
        (CHART / "dashboards" / "forgetmi.json").read_text())
    monitor = only(manifests, "ServiceMonitor")
    service = only(manifests, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True  # keeps the operator's `namespace` label


def test_chart_crd_is_a_byte_identical_copy_of_the_root_crd() -> None:
    assert (CHART / "crds" / CRD_FILE).read_bytes() == (ROOT / "crds" / CRD_FILE).read_bytes(), (
        f"run: cp crds/{CRD_FILE} charts/forgetmi-operator/crds/")
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == [CRD_FILE]


# ---- values schema ------------------------------------------------------------------------------

@pytest.mark.parametrize(("bad", "complaint"), [
    ('replicaCount: "two"\n', "replicaCount"),
    ("replicaCount: 2\n", "replicaCount"),
    ("replicas: 1\n", "replicas"),
    ("logFormat: xml\n", "logFormat"),
    ("trainer:\n  gpus: -1\n", "gpus"),
    ("watchNamespaces: [Bad_Namespace]\n", "watchNamespaces"),
    ("defaultGates:\n  - {metric: accuracy, comparator: atMost, threshold: 1}\n", "metric"),
    ("image:\n  repository: x\n  tag: 1\n", "tag"),
    ("serviceMonitor:\n  enabled: true\n  interval: soon\n", "interval"),
    ("defaultGates:\n  - {metric: testAUC, comparator: maxDrop, threshold: 0.02}\n", "reference"),
    ("trainer:\n  resources:\n    limits: {cpu: '2', nvidia.com/gpu: 1}\n", "/trainer/resources/limits"),
    ("prometheusRule:\n  openRequestDeadlineSeconds: 0.5\n", "openRequestDeadlineSeconds"),
    ("prometheusRule:\n  operatorUpSelector: '{job=\"x\"}'\n", "operatorUpSelector"),
    ("trainer:\n  allowedImages: ['registry.example/t:1 extra']\n", "/trainer/allowedImages/0"),
    ("trainer:\n  allowedImages: ['']\n", "/trainer/allowedImages/0"),
    ("trainer:\n  allowedImages: registry.example/t:1\n", "/trainer/allowedImages"),
    ("trainer:\n  allowedServiceAccounts: [Trainer_SA]\n", "/trainer/allowedServiceAccounts/0"),
    ("trainer:\n  allowedPriorityClasses: ['']\n", "/trainer/allowedPriorityClasses/0"),
    ("trainer:\n  allowedTolerations: [{operator: Equal, value: x}]\n", "/trainer/allowedTolerations/0"),
    ("tenants:\n  Radiology: {}\n", "Radiology"),
    ("tenants:\n  radiology: {credentialsSecret: Bad_Name}\n", "/tenants/radiology/credentialsSecret"),
    ("tenants:\n  radiology: {allowedUriPrefixes: ['file:///data/']}\n", "/tenants/radiology/allowedUriPrefixes/0"),
    ("tenants:\n  radiology: {allowedUriPrefixes: ['s3://hospital-models']}\n",
     "/tenants/radiology/allowedUriPrefixes/0"),
    ("tenants:\n  radiology: {allowedPrefixes: ['s3://hospital-models/']}\n", "allowedPrefixes"),
    ("admissionPolicy:\n  enabled: 'yes'\n", "/admissionPolicy/enabled"),
    ("trainer:\n  serviceAccountName: forgetmi..trainer\n", "/trainer/serviceAccountName"),
    ("trainer:\n  resources:\n    limits: {memory: '-1Gi'}\n", "/trainer/resources/limits/memory"),
    ("reportMaxBytes: 100\n", "/reportMaxBytes"),
    ("manifestMaxBytes: 2GiB\n", "/manifestMaxBytes"),
    ("scratchSizeLimit: lots\n", "/scratchSizeLimit"),
    ("trainJob:\n  enabled: 'yes'\n", "/trainJob/enabled"),
    ("trainJob:\n  runtime: Torch_Distributed\n", "/trainJob/runtime"),
    ("trainJob:\n  allowedRuntimes: [ClusterTrainingRuntime/torch]\n", "/trainJob/allowedRuntimes/0"),
    ("trainJob:\n  runtimes: [torch]\n", "runtimes"),
], ids=["string-replicas", "two-replicas", "unknown-top-level-key", "log-format", "negative-gpus",
        "namespace-name", "gate-metric", "numeric-tag", "duration", "drop-gate-without-reference",
        "gpu-in-trainer-limits", "fractional-deadline", "up-selector-with-braces", "image-with-space",
        "empty-image", "images-not-a-list", "service-account-name", "empty-priority-class", "keyless-equal-allowed",
        "tenant-namespace-name", "tenant-secret-name", "tenant-file-prefix", "tenant-prefix-without-bucket-slash",
        "tenant-unknown-key", "admission-policy-switch", "empty-dns-label", "negative-quantity",
        "tiny-report-cap", "manifest-cap-with-unit", "scratch-size-not-a-quantity", "trainjob-switch",
        "trainjob-runtime-name", "trainjob-allowed-runtime-kind", "trainjob-unknown-key"])
def test_values_schema_rejects_bad_values(helm_cmd, tmp_path: Path, bad: str, complaint: str) -> None:
    values = tmp_path / "bad-values.yaml"
    values.write_text(bad)
    result = helm_cmd("template", "forgetmi", str(CHART), "--values", str(values))
    assert result.returncode != 0, f"helm accepted {bad!r}"
    assert "schema" in result.stderr.lower() and complaint in result.stderr, result.stderr


def test_values_schema_patterns_are_the_operators() -> None:
    """Names and quantities the schema checks use the operator's own patterns, so helm refuses what
    the operator's Settings would refuse at startup (a DNS subdomain without empty labels, no
    negative quantity)."""
    patterns = set(re.findall(r'"pattern": "((?:[^"\\]|\\.)*)"', (CHART / "values.schema.json").read_text()))
    patterns = {json.loads(f'"{p}"').removeprefix("^$|") for p in patterns}
    assert {DNS_SUBDOMAIN, QUANTITY_PATTERN} <= patterns
    assert r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$" not in patterns
    assert not any(p.startswith(r"^(\+|-)?(([0-9]+") for p in patterns)


def test_values_schema_is_draft_07_and_closed() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(defaults) == set(schema["properties"]), "values.yaml and values.schema.json list different keys"
    for key, prop in schema["properties"].items():
        assert prop.get("description"), f"values.schema.json: {key} has no description"


def render_values(helm_cmd, tmp_path: Path, values: dict[str, Any]) -> dict[str, Any] | None:
    """The rendered operator env for ``values``, or None when the values schema refuses them."""
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = helm_cmd("template", "forgetmi", str(CHART), "--namespace", NAMESPACE, "--values", str(path))
    if result.returncode != 0:
        assert "schema" in result.stderr.lower(), result.stderr
        return None
    return env_of([doc for doc in yaml.safe_load_all(result.stdout) if doc])


def operator_accepts(**settings: str) -> bool:
    try:
        load_settings(**settings)
    except SettingsInvalid:
        return False
    return True


GATE_CASES = [
    # (gate as written in values.yaml, accepted by the operator's GateSpec)
    ({"metric": "testAUC", "comparator": "maxDrop", "threshold": 0.02}, False),  # reference defaults to absolute
    ({"metric": "testAUC", "comparator": "maxDrop", "threshold": 0.02, "reference": "absolute"}, False),
    ({"metric": "testAUC", "comparator": "maxDrop", "threshold": 0.02, "reference": "original"}, True),
    ({"metric": "forgetAUC", "comparator": "minDrop", "threshold": 0, "reference": "original"}, True),
    ({"metric": "forgetAUC", "comparator": "minDrop", "threshold": -0.5, "reference": "original"}, True),
    ({"metric": "forgetAUC", "comparator": "minDrop", "threshold": -1.5, "reference": "original"}, False),
    ({"metric": "testAUC", "comparator": "maxDrop", "threshold": 1.2, "reference": "original"}, False),
    ({"metric": "miaAUC", "comparator": "atMost", "threshold": 0.6}, True),
    ({"metric": "miaAUC", "comparator": "atMost", "threshold": 0.6, "reference": "absolute"}, True),
    ({"metric": "miaAUC", "comparator": "atMost", "threshold": 0.6, "reference": "original"}, False),
    ({"metric": "testF1", "comparator": "atLeast", "threshold": 1}, True),
    ({"metric": "testF1", "comparator": "atLeast", "threshold": -0.1}, False),  # absolute thresholds are >= 0
    ({"metric": "testF1", "comparator": "atLeast", "threshold": -0.1, "reference": "absolute"}, False),
    ({"metric": "mia", "comparator": "atMost", "threshold": 1.5}, False),
    ({"metric": "miaAUC", "comparator": "atMost", "threshold": 0.6, "bound": "upper"}, True),
    ({"metric": "testAUC", "comparator": "maxDrop", "threshold": 0.02, "reference": "original", "bound": "lower"},
     True),
    ({"metric": "miaAUC", "comparator": "atMost", "threshold": 0.6, "bound": "high"}, False),
    *[({"metric": metric, "comparator": "atMost", "threshold": 0.6, "bound": "upper"}, True)
      for metric in ("attackAUC", "logitNormAUC", "liraTPR5", "liraAUC")],
    ({"metric": "testAUC", "comparator": "atMost", "threshold": 0.02, "reference": "retrained"}, False),
]


GATE_IDS = [f"{g['metric']}-{g['comparator']}-{g.get('reference', 'unset')}-{g['threshold']}-{g.get('bound', 'point')}"
            for g, _ in GATE_CASES]


@pytest.mark.parametrize(("gate", "accepted"), GATE_CASES, ids=GATE_IDS)
def test_values_schema_refuses_exactly_the_default_gates_the_operator_refuses(
        helm_cmd, tmp_path: Path, gate: dict[str, Any], accepted: bool) -> None:
    """A gate the schema lets through but the operator refuses would crash-loop the operator."""
    env = render_values(helm_cmd, tmp_path, {"defaultGates": [gate]})
    assert operator_accepts(default_gates=json.dumps([gate])) is accepted
    assert (env is not None) is accepted, f"values schema {'refused' if env is None else 'accepted'} {gate}"
    if env is not None:
        assert operator_accepts(default_gates=env["FORGETMI_DEFAULT_GATES"])


def test_values_schema_accepts_the_operators_built_in_gates(helm_cmd, tmp_path: Path) -> None:
    gates = [gate.model_dump(by_alias=True) for gate in default_gates()]
    env = render_values(helm_cmd, tmp_path, {"defaultGates": gates})
    assert env is not None, "the values schema refuses the operator's own default gates"
    assert load_settings(default_gates=env["FORGETMI_DEFAULT_GATES"]).default_gates == default_gates()


RESOURCE_CASES = [
    # (trainer.resources, accepted by the operator's ContainerResources)
    ({"requests": {"nvidia.com/gpu": 1}}, False),
    ({"limits": {"cpu": "2", "nvidia.com/gpu": "1"}}, False),
    ({"requests": {"cpu": 0.5}}, False),  # a fractional number is not a quantity string: use "500m"
    ({"requests": {"cpu": "500m", "memory": "16Gi"}, "limits": {"memory": "32Gi"}}, True),
    ({"requests": {"cpu": 4}}, True),
    ({"requests": {"cpu": 4.0}}, True),  # rendered as 4
]


@pytest.mark.parametrize(("resources", "accepted"), RESOURCE_CASES, ids=[
    "gpu-request", "gpu-limit", "fractional-cpu", "strings", "integer-cpu", "whole-float-cpu"])
def test_values_schema_refuses_exactly_the_trainer_resources_the_operator_refuses(
        helm_cmd, tmp_path: Path, resources: dict[str, Any], accepted: bool) -> None:
    env = render_values(helm_cmd, tmp_path, {"trainer": {"resources": resources}})
    assert (env is not None) is accepted, f"values schema {'refused' if env is None else 'accepted'} {resources}"
    rendered = json.dumps(resources) if env is None else env["FORGETMI_TRAINER_RESOURCES"]
    assert operator_accepts(trainer_resources=rendered) is accepted


TOLERATION_CASES = [
    # (one trainer toleration, accepted by the operator's Toleration)
    ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, True),
    ({"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoExecute", "tolerationSeconds": 60}, True),
    ({"operator": "Exists"}, True),
    ({"key": "dedicated", "value": "gpu"}, True),
    ({"key": "dedicated", "operator": "Exists", "effect": ""}, False),  # "" is not an effect the operator knows
    ({"operator": "Equal", "value": "gpu"}, False),  # no key needs operator: Exists
    ({"key": "", "operator": "Equal"}, False),
    ({"key": "dedicated", "operator": "Exists", "value": "gpu"}, False),
    ({"key": "bad key!", "operator": "Exists"}, False),
    ({"key": "dedicated", "value": "not a label value"}, False),
    ({"key": "dedicated", "operator": "Exists", "tolerationSeconds": -1}, False),
]


@pytest.mark.parametrize(("toleration", "accepted"), TOLERATION_CASES, ids=[
    "exists", "equal", "keyless-exists", "implicit-equal", "empty-effect", "keyless-equal", "empty-key-equal",
    "exists-with-value", "bad-key", "bad-value", "negative-seconds"])
def test_values_schema_refuses_exactly_the_trainer_tolerations_the_operator_refuses(
        helm_cmd, tmp_path: Path, toleration: dict[str, Any], accepted: bool) -> None:
    env = render_values(helm_cmd, tmp_path, {"trainer": {"tolerations": [toleration]}})
    assert (env is not None) is accepted, f"values schema {'refused' if env is None else 'accepted'} {toleration}"
    rendered = json.dumps([toleration]) if env is None else env["FORGETMI_TRAINER_TOLERATIONS"]
    assert operator_accepts(trainer_tolerations=rendered) is accepted


@pytest.mark.parametrize(("toleration", "accepted"), TOLERATION_CASES, ids=[
    "exists", "equal", "keyless-exists", "implicit-equal", "empty-effect", "keyless-equal", "empty-key-equal",
    "exists-with-value", "bad-key", "bad-value", "negative-seconds"])
def test_values_schema_refuses_exactly_the_allowed_tolerations_the_operator_refuses(
        helm_cmd, tmp_path: Path, toleration: dict[str, Any], accepted: bool) -> None:
    env = render_values(helm_cmd, tmp_path, {"trainer": {"allowedTolerations": [toleration]}})
    assert (env is not None) is accepted, f"values schema {'refused' if env is None else 'accepted'} {toleration}"
    rendered = json.dumps([toleration]) if env is None else env["FORGETMI_TRAINER_ALLOWED_TOLERATIONS"]
    assert operator_accepts(trainer_allowed_tolerations=rendered) is accepted


def test_tenants_render_as_the_operators_namespace_policies(helm_cmd, tmp_path: Path) -> None:
    tenants = {"radiology": {"credentialsSecret": "radiology-s3",
                             "allowedUriPrefixes": ["s3://hospital-models/", "s3://hospital-datasets/cxr/"]},
               "oncology": {"credentialsSecret": "oncology-s3"}, "pathology": {}}
    env = render_values(helm_cmd, tmp_path, {"tenants": tenants})
    assert env is not None
    assert json.loads(env["FORGETMI_NAMESPACE_POLICIES"]) == {
        "radiology": {"credentials_secret": "radiology-s3",
                      "allowed_uri_prefixes": ["s3://hospital-models/", "s3://hospital-datasets/cxr/"]},
        "oncology": {"credentials_secret": "oncology-s3", "allowed_uri_prefixes": []},
        "pathology": {"credentials_secret": "", "allowed_uri_prefixes": []}}
    policies = load_settings(namespace_policies=env["FORGETMI_NAMESPACE_POLICIES"]).namespace_policies
    assert policies["radiology"].allowed_uri_prefixes == ["s3://hospital-models/", "s3://hospital-datasets/cxr/"]
    assert (policies["oncology"].credentials_secret, policies["pathology"].credentials_secret) == ("oncology-s3", "")


def test_large_integer_values_render_as_integers_the_operator_parses(helm_cmd, tmp_path: Path) -> None:
    """Helm reads numbers from a values file as floats and prints 2592000 as 2.592e+06."""
    env = render_values(helm_cmd, tmp_path, {"trainer": {"jobTtlSecondsAfterFinished": 2592000}})
    assert env is not None
    assert env["FORGETMI_JOB_TTL_SECONDS_AFTER_FINISHED"] == "2592000"
    assert load_settings(job_ttl_seconds_after_finished=env["FORGETMI_JOB_TTL_SECONDS_AFTER_FINISHED"]
                         ).job_ttl_seconds_after_finished == 2592000


def test_the_input_caps_reach_the_operator_and_the_scratch_volume_holds_one_manifest(helm_cmd, render,
                                                                                  tmp_path: Path) -> None:
    """reportMaxBytes and manifestMaxBytes are the operator's settings (defaults included), and the
    /tmp emptyDir the manifest is downloaded to is larger than the largest manifest it reads."""
    env = env_of(render())
    settings = load_settings(report_max_bytes=env["FORGETMI_REPORT_MAX_BYTES"],
                             manifest_max_bytes=env["FORGETMI_MANIFEST_MAX_BYTES"])
    assert (settings.report_max_bytes, settings.manifest_max_bytes) == (
        Settings().report_max_bytes, Settings().manifest_max_bytes) == (8 * 1024**2, 2 * 1024**3)
    volumes = only(render(), "Deployment")["spec"]["template"]["spec"]["volumes"]
    scratch = next(v for v in volumes if v["name"] == "tmp")["emptyDir"]["sizeLimit"]
    assert scratch.endswith("Mi") and int(scratch[:-2]) * 1024**2 > settings.manifest_max_bytes
    assert {"name": "tmp", "mountPath": "/tmp"} in container(render())["volumeMounts"]
    env = render_values(helm_cmd, tmp_path, {"reportMaxBytes": 33554432, "manifestMaxBytes": 8589934592})
    assert env is not None and (env["FORGETMI_REPORT_MAX_BYTES"], env["FORGETMI_MANIFEST_MAX_BYTES"]) == (
        "33554432", "8589934592")  # integers, never 3.3554432e+07


def test_notes_commands_name_a_namespace(helm_cmd) -> None:
    """UnlearnRequests live in the watched namespaces, not the release's: every kubectl line in
    NOTES.txt that reads them says -A or -n."""
    result = helm_cmd("install", "forgetmi", str(CHART), "--namespace", NAMESPACE, "--dry-run=client")
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    lines = [line.strip() for line in notes.splitlines() if line.strip().startswith("kubectl")]
    request_lines = [line for line in lines if "unlearnrequests" in line or " ur" in line]
    assert len(request_lines) == 2, lines
    for line in request_lines:
        assert " -A" in line or " -n " in line, line
    assert "kubectl get unlearnrequests -A -w" in notes
    assert "kubectl wait -n <namespace> --for=condition=Promoted ur/<name>" in notes


# ---- Deployment ---------------------------------------------------------------------------------

def test_deployment_is_one_restricted_replica_with_probe_and_ports(render) -> None:
    manifests = render()
    deployment = only(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    main = container(manifests)
    security = main["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert main["resources"]["requests"] and main["resources"]["limits"]
    assert only(manifests, "Service")["spec"]["ports"][0]["targetPort"] == "metrics"


def test_operator_args_follow_watch_namespaces_and_peering(render) -> None:
    assert container(render())["args"] == [
        "--liveness=http://0.0.0.0:8081/healthz", "--standalone", "--all-namespaces"]
    assert container(render(FULL_VALUES))["args"] == [
        "--liveness=http://0.0.0.0:8081/healthz", "--peering=forgetmi-operator",
        "--namespace=radiology", "--namespace=oncology"]


def test_env_names_are_operator_settings_and_parse(render, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every FORGETMI_* variable the chart sets is a field of the operator's Settings, and the
    rendered values (JSON ones included) load without error."""
    known = {env_name(field) for field in Settings.model_fields}
    for values in (None, FULL_VALUES):
        env = env_of(render(values))
        assert env["FORGETMI_OPERATOR_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
        unknown = {name for name in env if name.startswith("FORGETMI_")} - known
        assert not unknown, f"chart sets variables the operator does not read: {sorted(unknown)}"
        with monkeypatch.context() as patch:
            for name, value in env.items():
                if isinstance(value, str):
                    patch.setenv(name, value)
            settings = Settings()
        if values is None:
            assert settings.trainer_image == DEFAULT_TRAINER_IMAGE
            assert settings.default_gates == Settings.model_fields["default_gates"].get_default(
                call_default_factory=True)
            assert (settings.metrics_port, settings.log_format) == (8080, "json")
            defaults = {name: Settings.model_fields[name].default
                        for name in ("progress_interval_seconds", "pending_pod_timeout_seconds")}
            assert (settings.progress_interval_seconds, settings.pending_pod_timeout_seconds) == (
                defaults["progress_interval_seconds"], defaults["pending_pod_timeout_seconds"])
            # The pod policy by default: the default image only, nothing else a request may name.
            assert (settings.trainer_allowed_images, settings.trainer_allowed_service_accounts,
                    settings.trainer_allowed_priority_classes, settings.trainer_allowed_tolerations,
                    settings.namespace_policies) == ([], [], [], [], {})
        else:
            assert settings.trainer_gpus == 2
            assert settings.trainer_tolerations[0].key == "nvidia.com/gpu"
            assert settings.trainer_resources.limits == {"memory": "32Gi"}
            assert [(g.metric, g.bound) for g in settings.default_gates] == [("attackAUC", "upper"),
                                                                              ("testAUC", "point")]
            assert settings.serving_targets_enabled is True
            assert settings.receipt_hmac_secret_key == "hmac"
            assert settings.progress_interval_seconds == 5
            assert settings.trainer_allowed_images == ["registry.example.org/forgetmi-trainer:0.2.0"]
            assert settings.trainer_allowed_service_accounts == ["forgetmi-trainer", "forgetmi-trainer-gpu"]
            assert settings.trainer_allowed_priority_classes == ["batch-high"]
            assert [(t.key, t.operator, t.effect) for t in settings.trainer_allowed_tolerations] == [
                ("nvidia.com/gpu", "Exists", "NoSchedule")]
            radiology = settings.namespace_policies["radiology"]
            assert (radiology.credentials_secret, radiology.allowed_uri_prefixes) == (
                "radiology-s3", ["s3://hospital-models/", "s3://hospital-datasets/"])
            assert settings.namespace_policies["oncology"].allowed_uri_prefixes == []


# ---- RBAC ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("values", SCENARIOS, ids=scenario_id)
def test_rbac_has_no_wildcards_and_never_lists_secrets(render, values: Path | None) -> None:
    rules = rules_of(render(values))
    assert rules
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(field, []), f"wildcard in {rule}"
        assert not rule.get("nonResourceURLs"), rule
    # Secrets are read by name, and the operator's own forget-list copies created and deleted:
    # never listed, watched or changed in place.
    assert verbs_on(rules, "", "secrets") == {"get", "create", "delete"}


def test_rbac_grants_exactly_the_verbs_the_operator_uses(render) -> None:
    rules = rules_of(render())
    group = "unlearning.forgetmi.io"
    # Kopf lists, watches and PATCHes requests (merge and JSON patches, never PUT); the operator and
    # Kopf only PATCH the status subresource.
    assert verbs_on(rules, group, "unlearnrequests") == {"get", "list", "watch", "patch"}
    assert verbs_on(rules, group, "unlearnrequests/status") == {"patch"}
    # blockOwnerDeletion on the Job's and ConfigMap's owner reference needs this where the API
    # server enforces owner-reference permissions (OpenShift).
    assert verbs_on(rules, group, "unlearnrequests/finalizers") == {"update"}
    assert verbs_on(rules, "batch", "jobs") == {"create", "get", "list", "watch", "delete"}
    # The JobConfig ConfigMap is created, or read by name when it exists; never updated or deleted.
    assert verbs_on(rules, "", "configmaps") == {"create", "get"}
    assert verbs_on(rules, "", "pods") == {"get", "list", "watch"}
    assert verbs_on(rules, "", "events") == {"create"}  # Kopf POSTs each Event
    # The referenced forget-list Secret is read; each request's own immutable copy is created, read
    # and deleted when the request ends.
    assert verbs_on(rules, "", "secrets") == {"get", "create", "delete"}
    assert verbs_on(rules, "apiextensions.k8s.io", "customresourcedefinitions") == {"list", "watch"}
    assert not verbs_on(rules, "apps", "deployments")
    assert not verbs_on(rules, "serving.kserve.io", "inferenceservices")
    assert not verbs_on(rules, "kopf.dev", "clusterkopfpeerings")
    serving = rules_of(render(SERVING_VALUES))
    assert verbs_on(serving, "apps", "deployments") == {"get", "patch"}
    assert verbs_on(serving, "serving.kserve.io", "inferenceservices") == {"get", "patch"}


def test_watch_namespaces_gives_roles_in_those_namespaces_only(render) -> None:
    manifests = render(NAMESPACED_VALUES)
    roles = [m for m in manifests if m["kind"] == "Role"]
    bindings = [m for m in manifests if m["kind"] == "RoleBinding"]
    watched = {"radiology", "oncology"}
    assert {r["metadata"]["namespace"] for r in roles} == watched | {NAMESPACE}
    assert {b["metadata"]["namespace"] for b in bindings} == watched | {NAMESPACE}
    # The release namespace is not watched: there, only the receipt key Secret can be read, by name.
    (key_role,) = [r for r in roles if r["metadata"]["namespace"] == NAMESPACE]
    assert key_role["rules"] == [{"apiGroups": [""], "resources": ["secrets"],
                                  "resourceNames": ["forgetmi-receipt-key"], "verbs": ["get"]}]
    # Cluster-wide, nothing but reading CRD definitions.
    cluster_rules = rules_of(manifests, "ClusterRole")
    assert cluster_rules == [{"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
                              "verbs": ["list", "watch"]}]
    assert [m["roleRef"]["name"] for m in manifests if m["kind"] == "ClusterRoleBinding"] == [
        "forgetmi-forgetmi-operator-crd-observer"]


@pytest.mark.parametrize("values", [None, NAMESPACED_VALUES], ids=["all-namespaces", "namespaced"])
def test_trainjob_rbac_only_when_trainjobs_are_enabled(render, values: Path | None) -> None:
    """TrainJobs are created or read by name, watched and deleted, like Jobs; never patched or updated.
    Discovery (GET /apis/trainer.kubeflow.org/v1alpha1) needs no rule: system:discovery allows it."""
    enabled = render(values)
    assert verbs_on(rules_of(enabled), "trainer.kubeflow.org", "trainjobs") == {
        "create", "get", "list", "watch", "delete"}
    kinds = {m["kind"] for m in enabled if m["kind"] in ("Role", "ClusterRole")
             and any("trainer.kubeflow.org" in r["apiGroups"] for r in m["rules"])}
    assert kinds == ({"ClusterRole"} if values is None else {"Role"})
    env = env_of(enabled)
    assert (env["FORGETMI_TRAINJOB_ENABLED"], env["FORGETMI_TRAINJOB_RUNTIME"], env["FORGETMI_ALLOWED_RUNTIMES"]) == (
        "true", "torch-distributed", "[]")
    disabled = render(values, "--set", "trainJob.enabled=false")
    assert not [r for r in rules_of(disabled) if "trainer.kubeflow.org" in r["apiGroups"]]
    assert env_of(disabled)["FORGETMI_TRAINJOB_ENABLED"] == "false"


def test_trainjob_values_reach_the_operator(render, monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_of(render(None, "--set", "trainJob.runtime=torch-nccl", "--set-json",
                        'trainJob.allowedRuntimes=["torch-ib","TrainingRuntime/team-torch"]'))
    with monkeypatch.context() as patch:
        for name, value in env.items():
            if isinstance(value, str):
                patch.setenv(name, value)
        settings = Settings()
    assert (settings.trainjob_enabled, settings.trainjob_runtime, settings.allowed_runtimes) == (
        True, "torch-nccl", ["torch-ib", "TrainingRuntime/team-torch"])


def test_rbac_and_service_account_follow_their_switches(render) -> None:
    manifests = render(None, "--set", "rbac.create=false", "--set", "serviceAccount.create=false",
                       "--set", "serviceAccount.name=existing")
    assert not [m for m in manifests if m["kind"] in ("Role", "ClusterRole", "ServiceAccount")]
    assert only(manifests, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "existing"

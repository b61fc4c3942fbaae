"""The Helm chart: lint, render every scenario, Kubernetes schemas, values schema, RBAC, and
agreement with the root CRD, the operator's settings and the Dockerfile's user."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from forgetmi_operator.settings import DEFAULT_TRAINER_IMAGE, Settings, env_name

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
                            "ClusterRole", "ClusterRoleBinding", "Service", "Deployment", "Pod"])


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
], ids=["string-replicas", "two-replicas", "unknown-top-level-key", "log-format", "negative-gpus",
        "namespace-name", "gate-metric", "numeric-tag", "duration"])
def test_values_schema_rejects_bad_values(helm_cmd, tmp_path: Path, bad: str, complaint: str) -> None:
    values = tmp_path / "bad-values.yaml"
    values.write_text(bad)
    result = helm_cmd("template", "forgetmi", str(CHART), "--values", str(values))
    assert result.returncode != 0, f"helm accepted {bad!r}"
    assert "schema" in result.stderr.lower() and complaint in result.stderr, result.stderr


def test_values_schema_is_draft_07_and_closed() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(defaults) == set(schema["properties"]), "values.yaml and values.schema.json list different keys"
    for key, prop in schema["properties"].items():
        assert prop.get("description"), f"values.schema.json: {key} has no description"


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
            assert (settings.metrics_port, settings.health_port, settings.log_format) == (8080, 8081, "json")
            defaults = {name: Settings.model_fields[name].default
                        for name in ("progress_interval_seconds", "pending_pod_timeout_seconds")}
            assert (settings.progress_interval_seconds, settings.pending_pod_timeout_seconds) == (
                defaults["progress_interval_seconds"], defaults["pending_pod_timeout_seconds"])
        else:
            assert settings.trainer_gpus == 2
            assert settings.trainer_tolerations[0].key == "nvidia.com/gpu"
            assert settings.trainer_resources.limits == {"memory": "32Gi"}
            assert [g.metric for g in settings.default_gates] == ["miaAUC", "testAUC"]
            assert settings.serving_targets_enabled is True
            assert settings.receipt_hmac_secret_key == "hmac"
            assert settings.progress_interval_seconds == 5


# ---- RBAC ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("values", SCENARIOS, ids=scenario_id)
def test_rbac_has_no_wildcards_and_never_lists_secrets(render, values: Path | None) -> None:
    rules = rules_of(render(values))
    assert rules
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(field, []), f"wildcard in {rule}"
        assert not rule.get("nonResourceURLs"), rule
    assert verbs_on(rules, "", "secrets") == {"get"}


def test_rbac_grants_exactly_the_verbs_the_operator_uses(render) -> None:
    rules = rules_of(render())
    group = "unlearning.forgetmi.io"
    assert verbs_on(rules, group, "unlearnrequests") == {"get", "list", "watch", "patch", "update"}
    assert verbs_on(rules, group, "unlearnrequests/status") == {"get", "patch", "update"}
    assert verbs_on(rules, "batch", "jobs") == {"create", "get", "list", "watch", "delete"}
    assert verbs_on(rules, "", "configmaps") == {"create", "get", "list", "watch", "delete", "patch"}
    assert verbs_on(rules, "", "pods") == {"get", "list", "watch"}
    assert verbs_on(rules, "", "events") == {"create", "patch"}
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


def test_rbac_and_service_account_follow_their_switches(render) -> None:
    manifests = render(None, "--set", "rbac.create=false", "--set", "serviceAccount.create=false",
                       "--set", "serviceAccount.name=existing")
    assert not [m for m in manifests if m["kind"] in ("Role", "ClusterRole", "ServiceAccount")]
    assert only(manifests, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "existing"

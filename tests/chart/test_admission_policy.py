"""The chart's ValidatingAdmissionPolicy, evaluated as the API server evaluates it.

Every CEL expression (match condition, variable, validation) of the rendered policy is compiled
with cel-python and run with ``object`` = the request (its spec defaulted and typed with the CRD's
schema, as the server does before validating admission), ``oldObject`` and ``request``. The
shipped examples pass with the values meant for them; each forbidden variation is refused by
exactly the validation meant for it, with its message; and the operator's own check at acceptance
(``cluster/policy.py``, with the Settings the rendered Deployment gives it) refuses the same pod
fields.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from celpy import celtypes
from harness.examples import example_spec

from forgetmi_operator.api.errors import PolicyViolation
from forgetmi_operator.api.settings import DEFAULT_TRAINER_IMAGE, Settings
from forgetmi_operator.api.spec import parse_spec
from forgetmi_operator.cluster.policy import check_pod_policy
from forgetmi_operator.local.cel import compile_rule, to_cel

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "forgetmi-operator"
POD_POLICY_VALUES = CHART / "ci" / "pod-policy-values.yaml"
NAMESPACED_VALUES = CHART / "ci" / "namespaced-values.yaml"
SCENARIOS = [None, *sorted((CHART / "ci").glob("*-values.yaml"))]
FULL, MINIMAL = "unlearnrequest-full.yaml", "unlearnrequest-minimal.yaml"
DIGEST = "registry.example.org/forgetmi-trainer@sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"
URI_FIELDS = "spec.model.registryUri, spec.data.manifestUri and spec.forget.subjectsUri"
FILE_MESSAGE = f"{URI_FIELDS} may not be file:// URIs in a cluster; file:// is only for forgetmi run on one machine."

Refusal = tuple[str, str]  # (message, reason)


# ---- the API server's evaluation ------------------------------------------------------------------

def only(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
    return found[0]


def defaulted(value: Any, schema: Mapping[str, Any]) -> Any:
    """``value`` with the schema's defaults filled in, as the API server does before admission."""
    if isinstance(value, dict) and "properties" in schema:
        filled = {**{k: copy.deepcopy(s["default"]) for k, s in schema["properties"].items() if "default" in s},
                  **value}
        return {k: defaulted(v, schema["properties"].get(k, {})) for k, v in filled.items()}
    if isinstance(value, list) and "items" in schema:
        return [defaulted(item, schema["items"]) for item in value]
    return value


class Policy:
    """The rendered ValidatingAdmissionPolicy and the CRD schema its ``object`` is typed with."""

    def __init__(self, manifests: list[dict[str, Any]]) -> None:
        self.manifest = only(manifests, "ValidatingAdmissionPolicy")
        self.spec = self.manifest["spec"]
        crd = only(manifests, "CustomResourceDefinition")
        self.schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

    def expressions(self) -> list[str]:
        return [entry["expression"] for part in ("matchConditions", "variables", "validations")
                for entry in self.spec.get(part, [])]

    def _object(self, request: Mapping[str, Any]) -> Any:
        return celtypes.MapType({
            celtypes.StringType("apiVersion"): celtypes.StringType(request["apiVersion"]),
            celtypes.StringType("kind"): celtypes.StringType(request["kind"]),
            celtypes.StringType("metadata"): celpy.json_to_cel(request["metadata"]),
            celtypes.StringType("spec"): to_cel(defaulted(request["spec"], self.schema), self.schema),
        })

    def admit(self, request: Mapping[str, Any], *, operation: str = "CREATE",
              old: Mapping[str, Any] | None = None) -> list[Refusal] | None:
        """The validations that refuse ``request`` (``[]``: admitted); None when the policy does not
        apply to it (a match condition is false). Any expression that errors fails the test."""
        namespace = request["metadata"]["namespace"]
        activation: dict[str, Any] = {
            "object": self._object(request),
            "oldObject": self._object(old) if old is not None else celtypes.NullType(),
            "request": celpy.json_to_cel({"operation": operation, "namespace": namespace,
                                          "name": request["metadata"]["name"]}),
        }
        for condition in self.spec.get("matchConditions", []):
            if not self._run(condition["expression"], activation):
                return None
        variables: dict[Any, Any] = {}
        for variable in self.spec.get("variables", []):
            activation["variables"] = celtypes.MapType(variables)
            variables[celtypes.StringType(variable["name"])] = self._run(variable["expression"], activation)
        activation["variables"] = celtypes.MapType(variables)
        return [(v["message"], v["reason"]) for v in self.spec["validations"]
                if not self._run(v["expression"], activation)]

    @staticmethod
    def _run(expression: str, activation: dict[str, Any]) -> Any:
        result = compile_rule(expression).evaluate(activation)
        assert not isinstance(result, celpy.CELEvalError), f"{expression!r} failed to evaluate: {result}"
        return result


def request_of(example: str, namespace: str | None = None, **changes: Any) -> dict[str, Any]:
    """The example's UnlearnRequest (in ``namespace`` if given) with top-level spec ``changes``; a
    change ``model``/``data``/``forget`` is merged into that part."""
    docs = [d for d in yaml.safe_load_all((ROOT / "examples" / example).read_text()) if d]
    request = copy.deepcopy(next(d for d in docs if d["kind"] == "UnlearnRequest"))
    assert request["spec"] == example_spec(example)
    if namespace:
        request["metadata"]["namespace"] = namespace
    for key, value in changes.items():
        if key in ("model", "data", "forget"):
            request["spec"][key] = {**request["spec"][key], **value}
        else:
            request["spec"][key] = value
    return request


@pytest.fixture(scope="module")
def policy_for(render: Callable[..., list[dict[str, Any]]]) -> Callable[..., Policy]:
    return lambda values=None, *extra: Policy(render(values, *extra))


def operator_settings(render: Callable[..., list[dict[str, Any]]], values: Path | None) -> Settings:
    """The Settings the operator reads from the rendered Deployment's env."""
    container = only(render(values), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if e["name"].startswith("FORGETMI_") and "value" in e}
    return Settings(**{name.removeprefix("FORGETMI_").lower(): value for name, value in env.items()})


def message(field: str, allowed: str, value: str) -> Refusal:
    return (f"spec.{field} is not allowed; the cluster admin allows {allowed} (chart value trainer.{value}).",
            "Forbidden")


POLICY_IMAGES = f"{DEFAULT_TRAINER_IMAGE}, {DIGEST}, registry.example.org/forgetmi-trainer:0.1.0-cuda12"
POLICY_TOLERATIONS = ("{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}, "
                      "{key: dedicated, operator: Equal, value: training, effect: NoExecute, tolerationSeconds: 3600}")
IMAGE = message("image", POLICY_IMAGES, "allowedImages")
ACCOUNT = message("serviceAccountName", "forgetmi-trainer", "allowedServiceAccounts")
PRIORITY = message("priorityClassName", "batch-high", "allowedPriorityClasses")
TOLERATION = ("spec.tolerations lists a toleration that is not allowed; the cluster admin allows "
              f"{POLICY_TOLERATIONS} (chart value trainer.allowedTolerations).", "Forbidden")
FILE = (FILE_MESSAGE, "Forbidden")
RUNTIME = ("spec.runtimeRef.name is not allowed; the cluster admin allows torch-distributed, torch-nccl, "
           "TrainingRuntime/radiology-torch (chart value trainJob.allowedRuntimes, besides trainJob.runtime).",
           "Forbidden")
SCALED = {"nodes": 2, "gpus": 4}
RADIOLOGY = (f"{URI_FIELDS} of a request in namespace radiology must start with s3://hospital-models/ or "
             "s3://hospital-datasets/cxr-reports/ or s3://privacy-requests/ (chart value "
             "tenants.radiology.allowedUriPrefixes).", "Forbidden")


# ---- the objects ----------------------------------------------------------------------------------

@pytest.mark.parametrize("values", SCENARIOS, ids=lambda v: v.name.removesuffix("-values.yaml") if v else "defaults")
def test_every_scenario_ships_a_bound_denying_policy_on_unlearn_requests(render, values: Path | None) -> None:
    manifests = render(values)
    policy = only(manifests, "ValidatingAdmissionPolicy")
    binding = only(manifests, "ValidatingAdmissionPolicyBinding")
    assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert "namespace" not in policy["metadata"] and "namespace" not in binding["metadata"]  # cluster-scoped
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"] == [{
        "apiGroups": ["unlearning.forgetmi.io"], "apiVersions": ["v1alpha1"], "operations": ["CREATE", "UPDATE"],
        "resources": ["unlearnrequests"]}]
    for expression in Policy(manifests).expressions():
        compile_rule(expression)  # raises on a malformed expression
    for validation in spec["validations"]:
        assert validation["reason"] == "Forbidden"
        assert validation["message"].startswith("spec.") and "\n" not in validation["message"]
        assert "(chart value " in validation["message"] or validation["message"] == FILE_MESSAGE


def test_with_watch_namespaces_the_policy_judges_those_namespaces_only(render) -> None:
    assert "namespaceSelector" not in only(render(), "ValidatingAdmissionPolicy")["spec"]["matchConstraints"]
    constraints = only(render(NAMESPACED_VALUES), "ValidatingAdmissionPolicy")["spec"]["matchConstraints"]
    assert constraints["namespaceSelector"] == {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["radiology", "oncology"]}]}


def test_the_policy_needs_kubernetes_1_30_and_can_be_left_out(helm_cmd) -> None:
    old = helm_cmd("template", "forgetmi", str(CHART), "--kube-version", "1.29.0")
    assert old.returncode != 0 and "admissionPolicy.enabled needs Kubernetes 1.30 or later" in old.stderr
    off = helm_cmd("template", "forgetmi", str(CHART), "--kube-version", "1.29.0",
                   "--set", "admissionPolicy.enabled=false")
    assert off.returncode == 0, off.stderr
    assert "ValidatingAdmissionPolicy" not in off.stdout
    assert helm_cmd("template", "forgetmi", str(CHART), "--kube-version", "1.30.0").returncode == 0


# ---- the shipped examples -------------------------------------------------------------------------

def test_the_minimal_example_passes_the_default_policy_and_the_pod_policy_scenario(policy_for) -> None:
    assert policy_for().admit(request_of(MINIMAL)) == []
    assert policy_for(POD_POLICY_VALUES).admit(request_of(MINIMAL)) == []


def test_the_full_example_passes_once_the_admin_allows_what_it_names(policy_for) -> None:
    assert policy_for(POD_POLICY_VALUES).admit(request_of(FULL)) == []
    assert policy_for().admit(request_of(FULL)) == [
        message("serviceAccountName", "none", "allowedServiceAccounts"),
        message("priorityClassName", "none", "allowedPriorityClasses"),
        ("spec.tolerations lists a toleration that is not allowed; the cluster admin allows none (chart value "
         "trainer.allowedTolerations).", "Forbidden")]


def test_the_default_image_message_names_what_is_allowed(policy_for) -> None:
    assert policy_for().admit(request_of(MINIMAL, image="registry.example/evil:1")) == [
        message("image", DEFAULT_TRAINER_IMAGE, "allowedImages")]


# ---- forbidden and allowed variations ---------------------------------------------------------------

FORBIDDEN: list[tuple[str, dict[str, Any], Refusal]] = [
    ("image-elsewhere", {"image": "attacker.example/evil:latest"}, IMAGE),
    ("image-tag-of-an-allowed-digest", {"image": "registry.example.org/forgetmi-trainer:latest"}, IMAGE),
    ("image-other-digest", {"image": DIGEST[:-1] + "0"}, IMAGE),
    ("service-account", {"serviceAccountName": "default"}, ACCOUNT),
    ("priority-class", {"priorityClassName": "system-node-critical"}, PRIORITY),
    ("toleration-of-everything", {"tolerations": [{"operator": "Exists"}]}, TOLERATION),
    ("toleration-any-effect", {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}, TOLERATION),
    ("toleration-longer", {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                                           {"key": "dedicated", "value": "training", "effect": "NoExecute",
                                            "tolerationSeconds": 3601}]}, TOLERATION),
    ("toleration-forever", {"tolerations": [{"key": "dedicated", "value": "training", "effect": "NoExecute"}]},
     TOLERATION),
    ("runtime-elsewhere", {"resources": SCALED, "runtimeRef": {"name": "torch-privileged"}}, RUNTIME),
    ("runtime-allowed-cluster-wide-only", {"resources": SCALED, "runtimeRef": {"name": "torch-nccl",
                                                                              "kind": "TrainingRuntime"}}, RUNTIME),
    ("runtime-allowed-in-a-namespace-only", {"resources": SCALED, "runtimeRef": {"name": "radiology-torch"}},
     RUNTIME),
]
ALLOWED_POD_FIELDS: list[tuple[str, dict[str, Any]]] = [
    ("nothing-named", {}),
    ("default-image", {"image": DEFAULT_TRAINER_IMAGE}),
    ("allowed-digest", {"image": DIGEST}),
    ("allowed-account-class-toleration", {"serviceAccountName": "forgetmi-trainer", "priorityClassName": "batch-high",
                                          "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                                                           "effect": "NoSchedule"}]}),
    ("implicit-equal", {"tolerations": [{"key": "dedicated", "value": "training", "effect": "NoExecute",
                                         "tolerationSeconds": 3600}]}),
    ("explicit-equal", {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "training",
                                         "effect": "NoExecute", "tolerationSeconds": 3600}]}),
    ("default-runtime", {"resources": SCALED, "runtimeRef": {"name": "torch-distributed"}}),
    ("allowed-runtime", {"resources": SCALED, "runtimeRef": {"name": "torch-nccl"}}),
    ("allowed-namespace-runtime", {"resources": SCALED, "runtimeRef": {"name": "radiology-torch",
                                                                      "kind": "TrainingRuntime"}}),
    ("scaled-out-on-the-default-runtime", {"resources": SCALED}),
]


@pytest.mark.parametrize(("changes", "refusal"), [(c, r) for _, c, r in FORBIDDEN], ids=[n for n, _, _ in FORBIDDEN])
def test_a_pod_field_the_admin_does_not_allow_is_refused_by_its_own_validation(
        policy_for, changes: dict[str, Any], refusal: Refusal) -> None:
    assert policy_for(POD_POLICY_VALUES).admit(request_of(MINIMAL, **changes)) == [refusal]


@pytest.mark.parametrize("changes", [c for _, c in ALLOWED_POD_FIELDS], ids=[n for n, _ in ALLOWED_POD_FIELDS])
def test_pod_fields_the_admin_allows_are_admitted(policy_for, changes: dict[str, Any]) -> None:
    assert policy_for(POD_POLICY_VALUES).admit(request_of(MINIMAL, **changes)) == []


@pytest.mark.parametrize("changes", [c for _, c, _ in FORBIDDEN] + [c for _, c in ALLOWED_POD_FIELDS],
                         ids=[n for n, _, _ in FORBIDDEN] + [n for n, _ in ALLOWED_POD_FIELDS])
def test_the_operator_refuses_at_acceptance_exactly_what_admission_refuses(
        render, policy_for, changes: dict[str, Any]) -> None:
    """Enforced twice: the API server's verdict and the operator's (with the Settings the chart's
    Deployment gives it) agree, and name the same field."""
    request = request_of(MINIMAL, **changes)
    refused = policy_for(POD_POLICY_VALUES).admit(request)
    settings = operator_settings(render, POD_POLICY_VALUES)
    try:
        check_pod_policy(parse_spec(request["spec"]), settings)
    except PolicyViolation as err:
        assert refused, f"admission admits what the operator refuses: {err}"
        (field,) = {text.split()[0] for text, _ in refused}
        assert err.message.startswith(field)
    else:
        assert refused == [], "admission refuses what the operator admits"


URI_CASES: list[tuple[str, str, dict[str, Any], list[Refusal]]] = [
    ("file-registry", "oncology", {"model": {"registryUri": "file:///models"}}, [FILE]),
    ("file-manifest-in-a-tenant", "radiology", {"data": {"manifestUri": "file:///data/manifest.csv"}}, [FILE]),
    ("file-subjects", "default", {"forget": {"subjectsUri": "file:///tmp/ids.txt"}}, [FILE]),
    ("other-bucket", "radiology", {"data": {"manifestUri": "s3://other-bucket/manifest.csv"}}, [RADIOLOGY]),
    ("bucket-named-like-an-allowed-one", "radiology",
     {"forget": {"subjectsUri": "s3://privacy-requests-archive/ids.txt"}}, [RADIOLOGY]),
    ("other-folder", "radiology", {"data": {"manifestUri": "s3://hospital-datasets/ct-scans/manifest.csv"}},
     [RADIOLOGY]),
    ("other-registry", "radiology", {"model": {"registryUri": "s3://attacker-models/registry"}}, [RADIOLOGY]),
    ("tenant-without-prefixes", "oncology", {"data": {"manifestUri": "s3://other-bucket/manifest.csv"}}, []),
    ("namespace-not-a-tenant", "default", {"data": {"manifestUri": "s3://other-bucket/manifest.csv"}}, []),
    ("within-the-prefixes", "radiology", {"data": {"manifestUri": "s3://hospital-datasets/cxr-reports/v2.csv"}}, []),
]


@pytest.mark.parametrize(("namespace", "changes", "refusals"), [c[1:] for c in URI_CASES],
                         ids=[c[0] for c in URI_CASES])
def test_file_uris_and_uris_outside_the_tenants_prefixes_are_refused(
        policy_for, namespace: str, changes: dict[str, Any], refusals: list[Refusal]) -> None:
    assert policy_for(POD_POLICY_VALUES).admit(request_of(MINIMAL, namespace, **changes)) == refusals


def test_file_uris_are_refused_with_the_default_values(policy_for) -> None:
    assert policy_for().admit(request_of(MINIMAL, model={"registryUri": "file:///models"})) == [FILE]


# ---- updates ------------------------------------------------------------------------------------

def test_updates_that_leave_the_spec_alone_are_not_judged_again(policy_for) -> None:
    """A request admitted under a wider policy keeps working (Kopf's annotations, approval, labels,
    deletion); changing its spec (e.g. un-suspending it) is judged under today's policy."""
    policy = policy_for()
    old = request_of(FULL, suspend=True)
    annotated = copy.deepcopy(old)
    annotated["metadata"]["annotations"] = {"unlearning.forgetmi.io/approved": "true"}
    assert policy.admit(annotated, operation="UPDATE", old=old) is None
    resumed = request_of(FULL, suspend=False)
    refused = policy.admit(resumed, operation="UPDATE", old=old)
    assert refused is not None and [text.split()[0] for text, _ in refused] == [
        "spec.serviceAccountName", "spec.priorityClassName", "spec.tolerations"]


# ---- literals ----------------------------------------------------------------------------------

def test_values_with_quotes_backslashes_and_markup_stay_exact_cel_literals(policy_for, tmp_path: Path) -> None:
    odd_image = 'registry.example/we"ird\\image&<x>:1'
    odd_prefix = "s3://bucket-a/it's \"quoted\" & <odd>\\/"
    values = tmp_path / "odd-values.yaml"
    values.write_text(yaml.safe_dump({"trainer": {"allowedImages": [odd_image]},
                                      "tenants": {"radiology": {"allowedUriPrefixes": [odd_prefix]}}}))
    policy = policy_for(values)
    inside = {"model": {"registryUri": odd_prefix + "registry"}, "data": {"manifestUri": odd_prefix + "m.csv"},
              "forget": {"subjectsUri": odd_prefix + "ids.txt"}}
    assert policy.admit(request_of(MINIMAL, image=odd_image, **inside)) == []
    (image_refusal,) = policy.admit(request_of(MINIMAL, image=odd_image[:-1] + "2", **inside))
    assert image_refusal[0] == f"spec.image is not allowed; the cluster admin allows {DEFAULT_TRAINER_IMAGE}, " \
                               f"{odd_image} (chart value trainer.allowedImages)."
    (uri_refusal,) = policy.admit(request_of(MINIMAL, **{**inside, "data": {"manifestUri": "s3://bucket-a/it"}}))
    assert f"must start with {odd_prefix} (chart value tenants.radiology.allowedUriPrefixes)." in uri_refusal[0]


def test_the_default_values_allow_only_the_default_runtime(policy_for) -> None:
    message = ("spec.runtimeRef.name is not allowed; the cluster admin allows torch-distributed (chart value "
               "trainJob.allowedRuntimes, besides trainJob.runtime).", "Forbidden")
    assert policy_for().admit(request_of(MINIMAL, runtimeRef={"name": "torch-nccl"})) == [message]
    assert policy_for().admit(request_of(MINIMAL, runtimeRef={"name": "torch-distributed"})) == []
    assert policy_for(None, "--set", "trainJob.runtime=torch-nccl").admit(
        request_of(MINIMAL, runtimeRef={"name": "torch-nccl"})) == []

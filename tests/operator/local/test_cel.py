"""The CRD's CEL rules, evaluated with cel-python as the API server would, and their pydantic twins.

Transition rules (immutability) are evaluated with both the new and the old object; every other
rule is checked to reject exactly what operator/api/ rejects, with the same message at the same
field path.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.crd_rules import all_rules
from pydantic import ValidationError

from forgetmi_operator.api.method import METHOD_OPTIONS, MethodOptionsSpec, options_message
from forgetmi_operator.api.patterns import (
    LABEL_KEY_CHARS,
    LABEL_KEY_LENGTHS,
    LABEL_KEY_MESSAGE,
    OBJECT_URI_MESSAGE,
    OBJECT_URI_PATTERN,
    problem_message,
)
from forgetmi_operator.api.spec import RETRAINED_AT_MOST, RETRAINED_NEEDS_VERSION, UnlearnRequestSpec
from forgetmi_operator.local import cel
from forgetmi_operator.local.crd import openapi_schema
from forgetmi_operator.local.schema import Problem, defaulted, format_path, validate_request

ROOT = Path(__file__).resolve().parents[3]
Mutation = Callable[[dict[str, Any]], None]


@pytest.fixture
def request_full() -> dict[str, Any]:
    docs = yaml.safe_load_all((ROOT / "examples" / "unlearnrequest-full.yaml").read_text())
    (request,) = [d for d in docs if d["kind"] == "UnlearnRequest"]
    return request


@pytest.fixture
def request_minimal() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "examples" / "unlearnrequest-minimal.yaml").read_text())


def _rule_problems(request: dict[str, Any], old: dict[str, Any] | None = None) -> list[Problem]:
    kwargs = {"old": defaulted(old)} if old is not None else {}
    return [Problem(format_path(p), m) for p, m in cel.rule_problems(defaulted(request), openapi_schema(), **kwargs)]


def _pydantic_problems(spec: dict[str, Any]) -> list[Problem]:
    try:
        UnlearnRequestSpec.model_validate(spec)
    except ValidationError as err:
        return [Problem(format_path(("spec", *e["loc"])), problem_message(e)) for e in err.errors()]
    return []


def test_every_rule_compiles_and_has_a_message() -> None:
    rules = all_rules(openapi_schema())
    assert len(rules) >= 30
    for parts, entry in rules:
        cel.compile_rule(entry["rule"])
        assert entry.get("message"), parts


def test_examples_pass_every_rule(request_full: dict[str, Any], request_minimal: dict[str, Any]) -> None:
    for request in (request_full, request_minimal):
        assert _rule_problems(request) == []
        assert _rule_problems(request, old=request) == []


# ---- immutability (transition rules: need oldSelf) ---------------------------------------------


def test_every_spec_field_but_mode_and_suspend_has_an_immutability_rule() -> None:
    spec = openapi_schema()["properties"]["spec"]
    guarded = {entry["fieldPath"] for entry in spec["x-kubernetes-validations"]
               if cel.is_transition_rule(entry["rule"])}
    expected = {f".{name}" for name in spec["properties"] if name not in ("rollout", "suspend")}
    expected |= {f".rollout.{name}" for name in spec["properties"]["rollout"]["properties"] if name != "mode"}
    assert guarded == expected
    for parts, entry in all_rules(openapi_schema()):
        if cel.is_transition_rule(entry["rule"]):
            assert parts == ("spec",), "transition rules live on spec, which always exists in both objects"
            assert entry["message"] == f"spec{entry['fieldPath']} is immutable"


def _set(path: str, value: Any) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for part in parents:
            spec = spec.setdefault(part, {})
        if value is None:
            del spec[last]
        else:
            spec[last] = value
    return mutate


IMMUTABLE = [
    ("model.name", "another-model", "model"),
    ("model.alias", "staging", "model"),
    ("data.manifestUri", "s3://hospital-datasets/other.csv", "data"),
    ("forget", {"subjectsUri": "s3://privacy-requests/ids.txt"}, "forget"),
    ("method.epochs", 10, "method"),
    ("method.noise.imageStd", 0.2, "method"),
    ("gates", [], "gates"),
    ("audit.retainSamples", 100, "audit"),
    ("rollout.onGateFailure", "Retrain", "rollout.onGateFailure"),
    ("rollout.target.name", "another-server", "rollout.target"),
    ("rollout.target", None, "rollout.target"),
    ("resources.gpus", 2, "resources"),
    ("resources.requests.cpu", "8", "resources"),
    ("nodeSelector", {}, "nodeSelector"),
    ("tolerations", [], "tolerations"),
    ("priorityClassName", "batch-low", "priorityClassName"),
    ("priorityClassName", None, "priorityClassName"),
    ("queueName", None, "queueName"),
    ("image", "ghcr.io/forgetmi/forgetmi-trainer:0.2.0", "image"),
    ("serviceAccountName", None, "serviceAccountName"),
    ("credentialsSecretRef", {"name": "other-credentials"}, "credentialsSecretRef"),
    ("activeDeadlineSeconds", 600, "activeDeadlineSeconds"),
    ("backoffLimit", 0, "backoffLimit"),
]


@pytest.mark.parametrize(("path", "value", "field"), IMMUTABLE, ids=[f"{p}={v}" for p, v, _ in IMMUTABLE])
def test_changing_an_immutable_field_is_rejected(request_full: dict[str, Any], path: str, value: Any,
                                                 field: str) -> None:
    new = copy.deepcopy(request_full)
    _set(path, value)(new["spec"])
    assert _rule_problems(new, old=request_full) == [Problem(f"spec.{field}", f"spec.{field} is immutable")]
    assert _rule_problems(request_full, old=new) == [Problem(f"spec.{field}", f"spec.{field} is immutable")]
    assert _rule_problems(new) == []  # without the old object transition rules do not run


@pytest.mark.parametrize(("path", "value"), [("rollout.mode", "Manual"), ("rollout.mode", "DryRun"),
                                             ("suspend", True)])
def test_rollout_mode_and_suspend_may_change(request_full: dict[str, Any], path: str, value: Any) -> None:
    new = copy.deepcopy(request_full)
    _set(path, value)(new["spec"])
    assert validate_request(new, old=request_full) == []


def test_writing_out_a_default_is_not_a_change(request_minimal: dict[str, Any]) -> None:
    new = copy.deepcopy(request_minimal)
    new["spec"].update(method={"epochs": 30, "noise": {}}, gates=[], rollout={"mode": "Manual"}, suspend=True)
    assert validate_request(new, old=request_minimal) == []
    new["spec"]["method"]["epochs"] = 31
    assert validate_request(new, old=request_minimal) == [Problem("spec.method", "spec.method is immutable")]


def test_transition_rules_correlate_map_list_items_by_key() -> None:
    item = {"type": "object", "properties": {"type": {"type": "string"}, "value": {"type": "integer"}},
            "x-kubernetes-validations": [{"rule": "self.value >= oldSelf.value", "message": "must not decrease"}]}
    as_map = {"type": "array", "items": item, "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
    old = [{"type": "a", "value": 5}, {"type": "b", "value": 1}]
    new = [{"type": "c", "value": 0}, {"type": "b", "value": 0}, {"type": "a", "value": 6}]
    assert cel.rule_problems(new, as_map, old=old) == [((1,), "must not decrease")]
    atomic = {**as_map, "x-kubernetes-list-type": "atomic"}
    assert cel.rule_problems(new, atomic, old=old) == []


# ---- URI schemes ----------------------------------------------------------------------------------

URIS = [  # (uri, valid as a registry root, valid as an object)
    ("s3://hospital-models/registry", True, True),
    ("s3://my.bucket-01", True, False),
    ("s3://my.bucket-01/", True, False),
    ("s3://my.bucket-01/k", True, True),
    ("s3://bucket/a key with spaces/x.csv", True, True),
    ("file:///var/lib/forgetmi/registry", True, True),
    ("http://hospital-models/registry", False, False),
    ("https://s3.amazonaws.com/bucket/key", False, False),
    ("S3://bucket/key", False, False),
    ("s3:/bucket/key", False, False),
    ("s3://b/key", False, False),
    ("s3://-bucket/key", False, False),
    ("s3://Bucket/key", False, False),
    ("file://relative/path", False, False),
    ("/var/lib/registry", False, False),
    ("", False, False),
]
URI_FIELDS = ["model.registryUri", "data.manifestUri", "forget.subjectsUri"]
REGISTRY_URI_MESSAGE = "must be an s3://bucket/... or file:///... URI"


@pytest.mark.parametrize("field", URI_FIELDS)
@pytest.mark.parametrize(("uri", "registry_valid", "object_valid"), URIS)
def test_uri_rule_accepts_only_s3_and_file(request_full: dict[str, Any], field: str, uri: str, registry_valid: bool,
                                           object_valid: bool) -> None:
    request = copy.deepcopy(request_full)
    if field.startswith("forget."):
        request["spec"]["forget"] = {}
    _set(field, uri)(request["spec"])
    registry = field == "model.registryUri"
    valid, message = (registry_valid, REGISTRY_URI_MESSAGE) if registry else (object_valid, OBJECT_URI_MESSAGE)
    expected = [] if valid else [Problem(f"spec.{field}", message)]
    assert _rule_problems(request) == expected
    assert _pydantic_problems(request["spec"]) == expected  # the pattern's sentence is the rule's message
    assert validate_request(request) == expected


def test_uri_rule_is_the_contracts_pattern() -> None:
    from forgetmi_trainer.contract import URI_PATTERN

    node = openapi_schema()["properties"]["spec"]["properties"]["model"]["properties"]["registryUri"]
    (entry,) = node["x-kubernetes-validations"]
    literal = cel.compile_rule(entry["rule"].split("(", 1)[1][:-1])  # the string literal inside matches(…)
    assert str(literal.evaluate({})) == URI_PATTERN


@pytest.mark.parametrize("field", ["data.manifestUri", "forget.subjectsUri"])
def test_object_uri_rules_are_the_models_pattern(field: str) -> None:
    node = openapi_schema()["properties"]["spec"]
    for part in field.split("."):
        node = node["properties"][part]
    (entry,) = node["x-kubernetes-validations"]
    literal = cel.compile_rule(entry["rule"].split("(", 1)[1][:-1])
    assert str(literal.evaluate({})) == OBJECT_URI_PATTERN
    assert entry["message"] == OBJECT_URI_MESSAGE


def test_label_key_rules_are_the_models_patterns() -> None:
    spec = openapi_schema()["properties"]["spec"]["properties"]
    key_rule = f"self.matches('^{LABEL_KEY_CHARS}$') && self.matches('^{LABEL_KEY_LENGTHS}$')"
    (toleration_key,) = spec["tolerations"]["items"]["properties"]["key"]["x-kubernetes-validations"]
    assert toleration_key == {"rule": f"self == '' || ({key_rule})", "message": LABEL_KEY_MESSAGE}
    (selector,) = spec["nodeSelector"]["x-kubernetes-validations"]
    assert selector == {"rule": f"self.all(k, {key_rule.replace('self.', 'k.')})",
                        "message": f"every key {LABEL_KEY_MESSAGE}"}


# ---- every other rule and its pydantic twin -------------------------------------------------------


def _gate(**gate: Any) -> Mutation:
    return _set("gates", [gate])


def _with_retrained(mutate: Mutation) -> Mutation:
    def both(spec: dict[str, Any]) -> None:
        mutate(spec)
        _set("audit.retrainedVersion", "v1-retrained")(spec)
    return both


GOOD_LABEL_KEYS = ["gpu", "nvidia.com/gpu.product", "a", "A_b.c-D", "x" * 63, f"{'p' * 253}/{'n' * 63}",
                   "kubernetes.io/hostname", "9/x"]
BAD_LABEL_KEYS = ["", "gpu product", "-gpu", "gpu-", "_gpu", "x" * 64, f"{'p' * 254}/n", "/gpu", "nvidia.com/",
                  "Nvidia.com/gpu", "a/b/c", "nvidia_com/gpu", "gpu\n", "gpü"]
DROP = "maxDrop and minDrop measure a drop from the original model: set reference: original"
ABSOLUTE = "atMost and atLeast compare with an absolute value: set reference: absolute"
RANGE = "an absolute threshold must be between 0 and 1"
NEGATIVE_QUANTITY = "must be a resource quantity that is not negative, such as 500m, 4 or 16Gi"
OPTION_KEYS = [str(info.alias) for info in MethodOptionsSpec.model_fields.values()]
RULES: list[tuple[str, Mutation, str | None, str | None]] = [
    ("maxDrop without reference", _gate(metric="testAUC", comparator="maxDrop", threshold=0.02),
     "spec.gates[0].reference", DROP),
    ("minDrop absolute", _gate(metric="forgetAUC", comparator="minDrop", threshold=0.0, reference="absolute"),
     "spec.gates[0].reference", DROP),
    ("minDrop original", _gate(metric="forgetAUC", comparator="minDrop", threshold=0.0, reference="original"),
     None, None),
    ("negative drop allowed", _gate(metric="testAUC", comparator="maxDrop", threshold=-0.5, reference="original"),
     None, None),
    ("atMost original", _gate(metric="miaAUC", comparator="atMost", threshold=0.6, reference="original"),
     "spec.gates[0].reference", ABSOLUTE),
    ("atLeast negative", _gate(metric="testAUC", comparator="atLeast", threshold=-0.1), "spec.gates[0].threshold",
     RANGE),
    ("atMost integer threshold", _gate(metric="mia", comparator="atMost", threshold=1), None, None),
    ("atLeast zero", _gate(metric="testF1", comparator="atLeast", threshold=0), None, None),
    ("atLeast retrained", _with_retrained(_gate(metric="testAUC", comparator="atLeast", threshold=0.02,
                                                reference="retrained")), "spec.gates[0].reference", RETRAINED_AT_MOST),
    ("maxDrop retrained", _with_retrained(_gate(metric="testAUC", comparator="maxDrop", threshold=0.02,
                                                reference="retrained")), "spec.gates[0].reference", DROP),
    ("atMost retrained", _with_retrained(_gate(metric="attackAUC", comparator="atMost", threshold=0.05,
                                               reference="retrained", bound="upper")), None, None),
    ("retrained negative tolerance", _with_retrained(_gate(metric="testAUC", comparator="atMost", threshold=-0.01,
                                                           reference="retrained")), "spec.gates[0].threshold", RANGE),
    ("retrained version without a retrained gate", _set("audit.retrainedVersion", "v1-retrained"), None, None),
    *[(f"gate on {metric}", _gate(metric=metric, comparator="atMost", threshold=0.6, bound="upper"), None, None)
      for metric in ("attackAUC", "logitNormAUC", "liraTPR5", "liraAUC")],
    ("both forget sources", _set("forget.subjectsUri", "s3://bucket/ids.txt"), "spec.forget",
     "set exactly one of subjectsSecretRef or subjectsUri"),
    ("no forget source", _set("forget", {}), "spec.forget", "set exactly one of subjectsSecretRef or subjectsUri"),
    ("sha256 with a Secret", _set("forget.sha256", "0" * 64), "spec.forget", "sha256 applies only to subjectsUri"),
    ("zero weights", _set("method.weights", {"uu": 0, "mu": 0, "ur": 0, "mr": 0}), "spec.method.weights",
     "at least one weight must be greater than 0"),
    ("integer weights", _set("method.weights", {"uu": 1, "mu": 0, "ur": 0, "mr": 0}), None, None),
    ("epoch past epochs", _set("method.selection", {"rule": "FixedEpoch", "epoch": 31}),
     "spec.method.selection.epoch", "selection.epoch must not exceed epochs"),
    ("epoch equal to epochs", _set("method.selection", {"rule": "FixedEpoch", "epoch": 30}), None, None),
    ("epoch with ForgetReachesTest", _set("method.selection.epoch", 3), "spec.method.selection",
     "epoch applies only to rule FixedEpoch"),
    ("pull outside forget-mi", _set("method", {"name": "scrub", "sign": "pull"}), "spec.method.sign",
     "sign applies only to method forget-mi"),
    ("pull in forget-mi", _set("method.sign", "pull"), None, None),
    *[(f"options.{key} of {name}", _set("method", {"name": name, "options": {key: 1}}), f"spec.method.options.{key}",
       options_message(key)) for name, keys in METHOD_OPTIONS.items() for key in OPTION_KEYS if key not in keys],
    *[(f"options.{key} of {name} is fine", _set("method", {"name": name, "options": {key: 1}}), None, None)
      for name, keys in METHOD_OPTIONS.items() for key in keys],
    ("container of an InferenceService", _set("rollout.target.kind", "InferenceService"), "spec.rollout.target",
     "container applies only to kind Deployment"),
    ("GPU in limits", _set("resources.limits", {"nvidia.com/gpu": 2}), "spec.resources",
     "set GPUs with resources.gpus, not in requests or limits"),
    ("GPU in requests", _set("resources.requests", {"nvidia.com/gpu": "1"}), "spec.resources",
     "set GPUs with resources.gpus, not in requests or limits"),
    ("negative integer limit", _set("resources.limits", {"memory": -1}), "spec.resources.limits.memory",
     NEGATIVE_QUANTITY),
    ("negative request", _set("resources.requests", {"cpu": "-500m"}), "spec.resources.requests.cpu",
     NEGATIVE_QUANTITY),
    ("zero request", _set("resources.requests", {"cpu": 0}), None, None),
    ("request with a plus sign", _set("resources.requests", {"cpu": "+2"}), None, None),
    ("Exists with a value", _set("tolerations", [{"key": "k", "operator": "Exists", "value": "v"}]),
     "spec.tolerations[0]", "value must be empty when operator is Exists"),
    ("no key with Equal", _set("tolerations", [{"operator": "Equal", "value": "v"}]), "spec.tolerations[0]",
     "a toleration without key must use operator: Exists"),
    ("no key, no operator", _set("tolerations", [{"effect": "NoSchedule"}]), "spec.tolerations[0]",
     "a toleration without key must use operator: Exists"),
    ("empty key with Equal", _set("tolerations", [{"key": "", "operator": "Equal", "value": "v"}]),
     "spec.tolerations[0]", "a toleration without key must use operator: Exists"),
    ("tolerate everything", _set("tolerations", [{"operator": "Exists"}]), None, None),
    ("tolerate everything, empty key", _set("tolerations", [{"key": "", "operator": "Exists"}]), None, None),
    *[(f"toleration key {key!r}", _set("tolerations", [{"key": key, "operator": "Exists"}]),
       "spec.tolerations[0].key", LABEL_KEY_MESSAGE) for key in BAD_LABEL_KEYS if key],
    *[(f"toleration key {key!r} is fine", _set("tolerations", [{"key": key, "operator": "Exists"}]), None, None)
      for key in GOOD_LABEL_KEYS],
    *[(f"nodeSelector key {key!r}", _set("nodeSelector", {"pool": "gpu", key: "x"}), "spec.nodeSelector",
       f"every key {LABEL_KEY_MESSAGE}") for key in BAD_LABEL_KEYS],
    *[(f"nodeSelector key {key!r} is fine", _set("nodeSelector", {key: ""}), None, None) for key in GOOD_LABEL_KEYS],
]


@pytest.mark.parametrize(("case", "mutate", "path", "message"), RULES, ids=[r[0] for r in RULES])
def test_rule_and_pydantic_reject_the_same(request_full: dict[str, Any], case: str, mutate: Mutation,
                                          path: str | None, message: str | None) -> None:
    request = copy.deepcopy(request_full)
    mutate(request["spec"])
    expected = [] if path is None else [Problem(path, message or "")]
    assert _rule_problems(request) == expected
    assert _pydantic_problems(request["spec"]) == expected
    assert validate_request(request) == expected


def test_options_of_the_wrong_method_are_each_reported_at_their_field(request_full: dict[str, Any]) -> None:
    request = copy.deepcopy(request_full)
    request["spec"]["method"] = {"name": "finetune", "options": {"alpha": 0.5, "bound": 1, "weightDecay": 0.1}}
    expected = [Problem("spec.method.options.alpha", options_message("alpha")),
                Problem("spec.method.options.bound", options_message("bound"))]
    assert _rule_problems(request) == expected
    assert sorted(_pydantic_problems(request["spec"])) == expected
    assert validate_request(request) == expected


def test_a_value_of_the_wrong_type_skips_its_rules(request_full: dict[str, Any]) -> None:
    request = copy.deepcopy(request_full)
    request["spec"]["gates"] = [{"metric": "mia", "comparator": "atMost", "threshold": "low"}]
    assert _rule_problems(request) == []
    assert validate_request(request) == [Problem("spec.gates[0].threshold", "must be a number")]


def test_a_missing_required_field_is_reported_once(request_full: dict[str, Any]) -> None:
    request = copy.deepcopy(request_full)
    request["spec"]["gates"] = [{"metric": "mia", "threshold": 0.5}]
    unevaluable = [p for p in _rule_problems(request) if p.message.startswith(cel.UNEVALUABLE)]
    assert [p.path for p in unevaluable] == ["spec.gates[0]"]
    assert validate_request(request) == [Problem("spec.gates[0].comparator", "required field is missing")]


def test_gate_rules_report_every_failure_at_its_field_once(request_full: dict[str, Any]) -> None:
    request = copy.deepcopy(request_full)
    _gate(metric="testAUC", comparator="maxDrop", threshold=-0.5, reference="absolute")(request["spec"])
    expected = [Problem("spec.gates[0].reference", DROP), Problem("spec.gates[0].threshold", RANGE)]
    assert _rule_problems(request) == expected
    assert _pydantic_problems(request["spec"]) == expected
    assert validate_request(request) == expected


# ---- fieldPath and values CEL cannot hold ----------------------------------------------------------

_AT_FIELD = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
             "x-kubernetes-validations": [{"rule": "self.a <= self.b", "message": "a must not exceed b",
                                           "fieldPath": ".a"}]}


def test_a_failed_rule_is_reported_at_its_field_path() -> None:
    failed = cel.rule_problems({"a": 2, "b": 1}, _AT_FIELD, parts=("spec", 0))
    assert failed == [(("spec", 0, "a"), "a must not exceed b")]
    assert cel.rule_problems({"a": 1, "b": 1}, _AT_FIELD) == []


def test_a_rule_that_cannot_be_evaluated_is_reported_at_its_node() -> None:
    """The schema reports the missing field there (or below), so the two are merged, not shown twice."""
    assert cel.rule_problems({"b": 1}, _AT_FIELD, parts=("spec",)) == [
        (("spec",), f"{cel.UNEVALUABLE} 'self.a <= self.b'")]


@pytest.mark.parametrize(("value", "kind", "converted"), [
    (2**63 - 1, "integer", True), (-(2**63), "integer", True), (2**63, "integer", False),
    (-(2**63) - 1, "integer", False), (10**400, "integer", False),
    (2**63 - 1, "number", True), (2**63, "number", False), (10**400, "number", False), (1e308, "number", True),
])
def test_an_integer_beyond_int64_does_not_have_the_schemas_type(value: int, kind: str, converted: bool) -> None:
    rule = "self >= 0 || self < 0" if kind == "integer" else "self >= 0.0 || self < 0.0"
    assert cel.evaluate_rule(rule, value, {"type": kind}) is (True if converted else None)


def test_rules_skip_integers_beyond_int64_in_a_request(request_full: dict[str, Any]) -> None:
    request = copy.deepcopy(request_full)
    request["spec"]["method"].update(epochs=10**20, selection={"rule": "FixedEpoch", "epoch": 2**63})
    request["spec"]["resources"]["gpus"] = -(10**20)
    request["spec"]["tolerations"] = [{"key": "gpu", "operator": "Exists", "tolerationSeconds": 2**64}]
    request["spec"]["gates"] = [{"metric": "mia", "comparator": "atMost", "threshold": 10**400}]
    assert _rule_problems(request) == []
    assert {p.path for p in validate_request(request) if p.message == "must fit in a 64-bit integer"} == {
        "spec.method.epochs", "spec.method.selection.epoch", "spec.resources.gpus",
        "spec.tolerations[0].tolerationSeconds", "spec.gates[0].threshold"}


@pytest.mark.parametrize("index", [0, 2])
def test_a_retrained_gate_needs_spec_audit_retrained_version(request_full: dict[str, Any], index: int) -> None:
    """CEL cannot name a list index in a fieldPath, so the CRD reports the rule at spec.gates; the
    operator (pydantic) names the very gate, spec.gates[i].reference, with the same sentence."""
    request = copy.deepcopy(request_full)
    gates = [{"metric": "testAUC", "comparator": "maxDrop", "threshold": 0.02, "reference": "original"}] * 3
    gates[index] = {"metric": "testAUC", "comparator": "atMost", "threshold": 0.01, "reference": "retrained"}
    request["spec"]["gates"] = gates
    request["spec"]["audit"].pop("retrainedVersion", None)
    assert _rule_problems(request) == [Problem("spec.gates", RETRAINED_NEEDS_VERSION)]
    assert _pydantic_problems(request["spec"]) == [Problem(f"spec.gates[{index}].reference", RETRAINED_NEEDS_VERSION)]
    assert validate_request(request) == [Problem("spec.gates", RETRAINED_NEEDS_VERSION)]
    request["spec"]["audit"]["retrainedVersion"] = "v1-retrained"
    assert _rule_problems(request) == [] and _pydantic_problems(request["spec"]) == []


@pytest.mark.parametrize("version", ["", "-v1", "v1/../x", "v" * 129, "v 1"])
def test_retrained_version_must_be_a_version(request_full: dict[str, Any], version: str) -> None:
    request = copy.deepcopy(request_full)
    request["spec"]["audit"]["retrainedVersion"] = version
    problems = validate_request(request)
    assert {p.path for p in problems} == {"spec.audit.retrainedVersion"}
    assert _pydantic_problems(request["spec"])[0].path == "spec.audit.retrainedVersion"

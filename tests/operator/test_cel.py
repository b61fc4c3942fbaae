"""The CRD's CEL rules, evaluated with cel-python as the API server would, and their pydantic twins.

Transition rules (immutability) are evaluated with both the new and the old object; every other
rule is checked to reject exactly what operator/api.py rejects, with the same message at the same
field path.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from forgetmi_operator import api, cel
from forgetmi_operator.schema import Problem, defaulted, format_path, openapi_schema, validate_request

ROOT = Path(__file__).resolve().parents[2]
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
        api.UnlearnRequestSpec.model_validate(spec)
    except ValidationError as err:
        return [Problem(format_path(("spec", *e["loc"])), str(e["ctx"]["error"]) if e["type"] == "value_error"
                        else e["msg"]) for e in err.errors()]
    return []


def test_every_rule_compiles_and_has_a_message() -> None:
    rules = cel.all_rules(openapi_schema())
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
    for parts, entry in cel.all_rules(openapi_schema()):
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

URIS = [
    ("s3://hospital-models/registry", True),
    ("s3://my.bucket-01", True),
    ("s3://bucket/a key with spaces/x.csv", True),
    ("file:///var/lib/forgetmi/registry", True),
    ("http://hospital-models/registry", False),
    ("https://s3.amazonaws.com/bucket/key", False),
    ("S3://bucket/key", False),
    ("s3:/bucket/key", False),
    ("s3://b/key", False),
    ("s3://-bucket/key", False),
    ("s3://Bucket/key", False),
    ("file://relative/path", False),
    ("/var/lib/registry", False),
    ("", False),
]
URI_FIELDS = ["model.registryUri", "data.manifestUri", "forget.subjectsUri"]


@pytest.mark.parametrize("field", URI_FIELDS)
@pytest.mark.parametrize(("uri", "valid"), URIS)
def test_uri_rule_accepts_only_s3_and_file(request_full: dict[str, Any], field: str, uri: str, valid: bool) -> None:
    request = copy.deepcopy(request_full)
    if field.startswith("forget."):
        request["spec"]["forget"] = {}
    _set(field, uri)(request["spec"])
    expected = [] if valid else [Problem(f"spec.{field}", "must be an s3://bucket/... or file:///... URI")]
    assert _rule_problems(request) == expected
    pydantic_paths = [p.path for p in _pydantic_problems(request["spec"])]
    assert pydantic_paths == [p.path for p in expected]


def test_uri_rule_is_the_contracts_pattern() -> None:
    from forgetmi_trainer.contract import URI_PATTERN

    node = openapi_schema()["properties"]["spec"]["properties"]["model"]["properties"]["registryUri"]
    (entry,) = node["x-kubernetes-validations"]
    literal = cel.compile_rule(entry["rule"].split("(", 1)[1][:-1])  # the string literal inside matches(…)
    assert str(literal.evaluate({})) == URI_PATTERN


# ---- every other rule and its pydantic twin -------------------------------------------------------


def _gate(**gate: Any) -> Mutation:
    return _set("gates", [gate])


DROP = "maxDrop and minDrop measure a drop from the original model: set reference: original"
ABSOLUTE = "atMost and atLeast compare with an absolute value: set reference: absolute"
RANGE = "an absolute threshold must be between 0 and 1"
RULES: list[tuple[str, Mutation, str | None, str | None]] = [
    ("maxDrop without reference", _gate(metric="testAUC", comparator="maxDrop", threshold=0.02), "spec.gates[0]", DROP),
    ("minDrop absolute", _gate(metric="forgetAUC", comparator="minDrop", threshold=0.0, reference="absolute"),
     "spec.gates[0]", DROP),
    ("minDrop original", _gate(metric="forgetAUC", comparator="minDrop", threshold=0.0, reference="original"),
     None, None),
    ("negative drop allowed", _gate(metric="testAUC", comparator="maxDrop", threshold=-0.5, reference="original"),
     None, None),
    ("atMost original", _gate(metric="miaAUC", comparator="atMost", threshold=0.6, reference="original"),
     "spec.gates[0]", ABSOLUTE),
    ("atLeast negative", _gate(metric="testAUC", comparator="atLeast", threshold=-0.1), "spec.gates[0]", RANGE),
    ("atMost integer threshold", _gate(metric="mia", comparator="atMost", threshold=1), None, None),
    ("atLeast zero", _gate(metric="testF1", comparator="atLeast", threshold=0), None, None),
    ("both forget sources", _set("forget.subjectsUri", "s3://bucket/ids.txt"), "spec.forget",
     "set exactly one of subjectsSecretRef or subjectsUri"),
    ("no forget source", _set("forget", {}), "spec.forget", "set exactly one of subjectsSecretRef or subjectsUri"),
    ("sha256 with a Secret", _set("forget.sha256", "0" * 64), "spec.forget", "sha256 applies only to subjectsUri"),
    ("zero weights", _set("method.weights", {"uu": 0, "mu": 0, "ur": 0, "mr": 0}), "spec.method.weights",
     "at least one weight must be greater than 0"),
    ("integer weights", _set("method.weights", {"uu": 1, "mu": 0, "ur": 0, "mr": 0}), None, None),
    ("epoch past epochs", _set("method.selection", {"rule": "FixedEpoch", "epoch": 31}), "spec.method",
     "selection.epoch must not exceed epochs"),
    ("epoch equal to epochs", _set("method.selection", {"rule": "FixedEpoch", "epoch": 30}), None, None),
    ("epoch with ForgetReachesTest", _set("method.selection.epoch", 3), "spec.method.selection",
     "epoch applies only to rule FixedEpoch"),
    ("container of an InferenceService", _set("rollout.target.kind", "InferenceService"), "spec.rollout.target",
     "container applies only to kind Deployment"),
    ("GPU in limits", _set("resources.limits", {"nvidia.com/gpu": 2}), "spec.resources",
     "set GPUs with resources.gpus, not in requests or limits"),
    ("GPU in requests", _set("resources.requests", {"nvidia.com/gpu": "1"}), "spec.resources",
     "set GPUs with resources.gpus, not in requests or limits"),
    ("Exists with a value", _set("tolerations", [{"key": "k", "operator": "Exists", "value": "v"}]),
     "spec.tolerations[0]", "value must be empty when operator is Exists"),
    ("no key with Equal", _set("tolerations", [{"operator": "Equal", "value": "v"}]), "spec.tolerations[0]",
     "a toleration without key must use operator: Exists"),
    ("no key, no operator", _set("tolerations", [{"effect": "NoSchedule"}]), "spec.tolerations[0]",
     "a toleration without key must use operator: Exists"),
    ("tolerate everything", _set("tolerations", [{"operator": "Exists"}]), None, None),
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

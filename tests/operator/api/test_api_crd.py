"""The CRD is a valid, structural apiextensions/v1 object, and operator/api/ (spec, method, status) agrees with it.

Agreement is checked both ways: the pydantic models' JSON schema and the CRD's openAPIV3Schema
reduce to the same fields, types, enums, bounds, patterns and required lists; every default
agrees; and at every bound of every spec field the CRD and pydantic accept and reject the same
values.
"""

from __future__ import annotations

import copy
import re
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from harness.crd_rules import all_rules
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import PydanticUndefined

from forgetmi_operator.api.patterns import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    ENV_NAME_PATTERN,
    IMAGE_PATTERN,
    LABEL_KEY_MESSAGE,
    LABEL_VALUE_PATTERN,
    QUANTITY_PATTERN,
    SECRET_KEY_PATTERN,
    VERSION_PATTERN,
)
from forgetmi_operator.api.spec import UnlearnRequestSpec
from forgetmi_operator.api.status import (
    ArtifactStatus,
    BatchStatus,
    Condition,
    GateStatus,
    MetricsStatus,
    ModelVersionStatus,
    ProgressStatus,
    RequestRefStatus,
    UnlearnRequestStatus,
)
from forgetmi_operator.local import schema
from forgetmi_operator.local.crd import CRD_FILENAME, apply_defaults, openapi_schema
from forgetmi_operator.local.schema import format_path, to_json_schema

ROOT = Path(__file__).resolve().parents[3]
CRD_PATH = ROOT / "crds" / CRD_FILENAME
KEPT = ("type", "enum", "pattern", "maxLength", "minLength", "minimum", "maximum", "exclusiveMinimum",
        "exclusiveMaximum", "maxItems", "minItems", "maxProperties")


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


@pytest.fixture(scope="module")
def full_request() -> dict[str, Any]:
    docs = list(yaml.safe_load_all((ROOT / "examples" / "unlearnrequest-full.yaml").read_text()))
    (request,) = [d for d in docs if d["kind"] == "UnlearnRequest"]
    return request


def _nodes(node: Mapping[str, Any], parts: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Mapping]]:
    yield parts, node
    for key, child in node.get("properties", {}).items():
        yield from _nodes(child, (*parts, key))
    if isinstance(node.get("items"), Mapping):
        yield from _nodes(node["items"], (*parts, "[]"))
    if isinstance(node.get("additionalProperties"), Mapping):
        yield from _nodes(node["additionalProperties"], (*parts, "{}"))


# ---- the CRD itself --------------------------------------------------------------------------


def test_names_scope_and_version(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "unlearnrequests.unlearning.forgetmi.io"
    assert spec["group"] == "unlearning.forgetmi.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {"kind": "UnlearnRequest", "listKind": "UnlearnRequestList", "plural": "unlearnrequests",
                             "singular": "unlearnrequest", "shortNames": ["ur", "unlearn"], "categories": ["forgetmi"]}
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns(crd: dict[str, Any]) -> None:
    columns = [(c["name"], c["type"], c["jsonPath"], c.get("priority", 0))
               for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == [
        ("Model", "string", ".spec.model.name", 0),
        ("Phase", "string", ".status.phase", 0),
        ("Attack AUC", "number", ".status.attackAuc", 0),
        ("Test AUC Δ", "number", ".status.testAucDrop", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
        ("MIA", "number", ".status.mia", 1),
        ("Job", "string", ".status.jobName", 1),
        ("Version", "string", ".status.baseModel.version", 1),
    ]
    root = openapi_schema()
    for _, _, path, _ in columns:
        if path.startswith(".metadata."):
            continue
        node: Mapping[str, Any] = root
        for part in path.strip(".").split("."):
            node = node["properties"][part]
        assert node["type"] in ("string", "number")


@pytest.mark.parametrize("kubernetes", ["1.29", "1.37"])
def test_crd_validates_against_apiextensions_v1(crd: dict[str, Any], kubernetes: str) -> None:
    assert kubernetes_validate.validate(crd, kubernetes, strict=True) == kubernetes
    broken = copy.deepcopy(crd)
    broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["maxLenght"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes, strict=True)


def test_crd_needs_kubernetes_1_28_or_later_for_rule_field_paths(crd: dict[str, Any]) -> None:
    with pytest.raises(kubernetes_validate.ValidationError, match="'fieldPath' was unexpected"):
        kubernetes_validate.validate(crd, "1.27", strict=True)


def test_package_copy_is_identical() -> None:
    copy_path = ROOT / "operator" / CRD_FILENAME
    assert copy_path.read_bytes() == CRD_PATH.read_bytes(), f"run: cp crds/{CRD_FILENAME} operator/"


def test_every_field_has_a_description() -> None:
    missing = [".".join(parts) for parts, node in _nodes(openapi_schema()) if not node.get("description")]
    assert missing == ["metadata"]


def test_metadata_is_left_to_the_api_server() -> None:
    """The API server refuses a root metadata schema with anything but name/generateName (even a description)."""
    assert openapi_schema()["properties"]["metadata"] == {"type": "object"}


def test_schema_is_structural() -> None:
    for parts, node in _nodes(openapi_schema()):
        where = ".".join(parts)
        if node.get("x-kubernetes-int-or-string"):
            assert node.get("anyOf") == [{"type": "integer"}, {"type": "string"}], where
        else:
            assert node.get("type") in ("object", "array", "string", "integer", "number", "boolean"), where
        assert not ("properties" in node and "additionalProperties" in node), where
        if node.get("type") == "array":
            assert "items" in node, where
        assert not any(key in node for key in ("oneOf", "allOf", "not", "$ref")), where


def test_defaults_are_valid_for_their_field() -> None:
    checked = 0
    for _, node in _nodes(openapi_schema()):
        if "default" in node:
            value = apply_defaults(copy.deepcopy(node["default"]), node)
            jsonschema.Draft202012Validator(to_json_schema(node)).validate(value)
            checked += 1
    assert checked >= 20


def test_values_used_by_cel_rules_are_bounded() -> None:
    """Kubernetes estimates each rule's cost from these bounds; unbounded strings or lists get refused."""
    spec = openapi_schema()["properties"]["spec"]
    unbounded = []
    for parts, node in _nodes(spec):
        kind = node.get("type") or "int-or-string"
        if kind in ("string", "int-or-string") and "maxLength" not in node and "enum" not in node:
            unbounded.append(".".join(parts))
        if kind == "array" and "maxItems" not in node:
            unbounded.append(".".join(parts))
        if kind == "object" and "additionalProperties" in node and "maxProperties" not in node:
            unbounded.append(".".join(parts))
    assert unbounded == []


# ---- agreement with operator/api/ -------------------------------------------------


def _canonical_pydantic(node: Mapping[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in node:
        options = [n for n in node["anyOf"] if n != {"type": "null"}]
        assert len(options) == 1, node
        return _canonical_pydantic(options[0], defs)
    out: dict[str, Any] = {k: node[k] for k in KEPT if k in node}
    if "enum" in out:
        out["enum"] = sorted(out["enum"])
    if "properties" in node:
        out["properties"] = {k: _canonical_pydantic(v, defs) for k, v in node["properties"].items()}
        out["required"] = sorted(node.get("required", []))
    if isinstance(node.get("additionalProperties"), Mapping):
        out["values"] = _canonical_pydantic(node["additionalProperties"], defs)
    if "items" in node:
        out["items"] = _canonical_pydantic(node["items"], defs)
    return out


def _canonical_crd(node: Mapping[str, Any]) -> dict[str, Any]:
    if node.get("anyOf") == [{"type": "integer"}, {"type": "string"}]:
        node = {**node, "type": "string"}  # int-or-string: the model keeps quantities as strings
    out: dict[str, Any] = {k: node[k] for k in KEPT if k in node}
    if "enum" in out:
        out["enum"] = sorted(out["enum"])
    if out.get("pattern", "").endswith(r"\Z"):
        out["pattern"] = out["pattern"][:-2] + "$"  # to_json_schema's spelling of Go's "$"
    if "properties" in node:
        out["properties"] = {k: _canonical_crd(v) for k, v in node["properties"].items()}
        out["required"] = sorted(node.get("required", []))
    if isinstance(node.get("additionalProperties"), Mapping):
        out["values"] = _canonical_crd(node["additionalProperties"])
    if "items" in node:
        out["items"] = _canonical_crd(node["items"])
    return out


_MATCHES = re.compile(r"self\.matches\('(.*)'\)")


def _rule_regex(node: Mapping[str, Any]) -> str | None:
    """The regex of a ``self.matches('…')`` rule (the CRD checks URIs that way, pydantic with a pattern)."""
    for entry in node.get("x-kubernetes-validations", []):
        if found := _MATCHES.fullmatch(entry["rule"]):
            return found.group(1).replace("\\\\", "\\")
    return None


def _with_rule_patterns(node: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(node)
    if (regex := _rule_regex(node)) is not None:
        out["pattern"] = regex
    if "properties" in node:
        out["properties"] = {k: _with_rule_patterns(v) for k, v in node["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), Mapping):
            out[key] = _with_rule_patterns(node[key])
    return out


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                out.append(f"{path}.{key}: {'CRD only' if key not in a else 'pydantic only'}")
            else:
                out += _diff(a[key], b[key], f"{path}.{key}")
        return out
    return [] if a == b else [f"{path}: pydantic {a!r} != CRD {b!r}"]


@pytest.mark.parametrize(("part", "model"), [("spec", UnlearnRequestSpec), ("status", UnlearnRequestStatus)])
def test_fields_types_enums_bounds_and_required_agree(part: str, model: type[BaseModel]) -> None:
    generated = model.model_json_schema(by_alias=True, mode="validation")
    ours = _canonical_pydantic(generated, generated.get("$defs", {}))
    theirs = _canonical_crd(to_json_schema(_with_rule_patterns(openapi_schema()["properties"][part])))
    assert _diff(ours, theirs) == []


def test_canonical_comparison_notices_a_difference() -> None:
    spec = to_json_schema(_with_rule_patterns(openapi_schema()["properties"]["spec"]))
    spec["properties"]["method"]["properties"]["epochs"]["maximum"] = 999
    del spec["properties"]["suspend"]
    generated = UnlearnRequestSpec.model_json_schema(by_alias=True)
    found = _diff(_canonical_pydantic(generated, generated["$defs"]), _canonical_crd(spec))
    assert found == [".properties.method.properties.epochs.maximum: pydantic 1000 != CRD 999",
                     ".properties.suspend: pydantic only"]


def _model_in(annotation: Any) -> tuple[type[BaseModel] | None, str | None]:
    """The pydantic model inside an annotation and where its CRD node sits (items, values or here)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _model_in(args[0])
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return _model_in(inner)
    if origin is list:
        model, _ = _model_in(args[0])
        return model, "items"
    if origin is dict:
        model, _ = _model_in(args[1])
        return model, "additionalProperties"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, None
    return None, None


def _model_pairs(model: type[BaseModel], node: Mapping[str, Any], path: str) -> Iterator[tuple[Any, ...]]:
    yield model, node, path
    for name, field in model.model_fields.items():
        alias = field.alias or name
        inner, where = _model_in(field.annotation)
        if inner is not None:
            child = node["properties"][alias]
            yield from _model_pairs(inner, child[where] if where else child, f"{path}.{alias}")


@pytest.mark.parametrize(("part", "model"), [("spec", UnlearnRequestSpec), ("status", UnlearnRequestStatus)])
def test_defaults_agree(part: str, model: type[BaseModel]) -> None:
    root = openapi_schema()["properties"][part]
    pairs = list(_model_pairs(model, root, part))
    assert len(pairs) >= (14 if part == "spec" else 8)
    disagreements = []
    for cls, node, path in pairs:
        for name, field in cls.model_fields.items():
            alias = field.alias or name
            child = node["properties"][alias]
            if field.default_factory is not None:
                ours = field.default_factory()  # type: ignore[call-arg]
            else:
                ours = None if field.default is PydanticUndefined else field.default
            if ours is not None:
                ours = TypeAdapter(field.annotation).dump_python(ours, mode="json", by_alias=True, exclude_none=True)
            theirs = apply_defaults(copy.deepcopy(child["default"]), child) if "default" in child else None
            if ours != theirs:
                disagreements.append(f"{path}.{alias}: pydantic {ours!r} != CRD {theirs!r}")
    assert disagreements == []


def test_minimal_spec_defaults_equal_pydantic_defaults() -> None:
    spec = {"model": {"registryUri": "file:///registry", "name": "m"}, "data": {"manifestUri": "file:///m.csv"},
            "forget": {"subjectsUri": "file:///ids.txt"}}
    crd_defaulted = apply_defaults(spec, openapi_schema()["properties"]["spec"])
    ours = UnlearnRequestSpec.model_validate(spec).model_dump(mode="json", by_alias=True, exclude_none=True)
    assert ours == crd_defaulted
    assert crd_defaulted["method"]["noise"]["imageStd"] == 0.1 and crd_defaulted["rollout"]["mode"] == "Automatic"


def test_spec_models_are_strict_like_the_api_server_but_take_any_mapping() -> None:
    spec = {"model": {"registryUri": "file:///registry", "name": "m"}, "data": {"manifestUri": "file:///m.csv"},
            "forget": {"subjectsUri": "file:///ids.txt"}, "method": {"epochs": 5}}
    assert UnlearnRequestSpec.model_validate(types.MappingProxyType(spec)).method.epochs == 5
    for field, value in (("epochs", "5"), ("epochs", 5.0), ("learningRate", True)):
        with pytest.raises(ValidationError):
            UnlearnRequestSpec.model_validate({**spec, "method": {field: value}})
    with pytest.raises(ValidationError):
        UnlearnRequestSpec.model_validate({**spec, "suspend": "yes"})


def test_every_status_field_the_operator_can_write_is_declared() -> None:
    """A structural schema prunes undeclared fields: a fully populated status must survive intact."""
    pair = {"original": 0.9, "unlearned": 0.5, "retrained": 0.52}
    status = UnlearnRequestStatus(
        phase="Promoted", observed_generation=2, attempts=1, rebases=1, job_name="forgetmi-r-12345678",
        mia=0.41, attack_auc=0.55,
        test_auc_drop=0.01, subject_count=3, subjects_secret_name="forgetmi-r-12345678-subjects",
        start_time="2025-01-01T00:00:00Z",
        completion_time="2025-01-01T01:00:00Z",
        conditions=[Condition(type="Promoted", status="True", reason="AliasMoved", message="Moved.",
                                  last_transition_time="2025-01-01T01:00:00Z", observed_generation=2)],
        base_model=ModelVersionStatus(version="v1", uri="s3://b/m/versions/v1", sha256="a" * 64),
        candidate_model=ModelVersionStatus(version="v2", uri="s3://b/m/versions/v2", sha256="b" * 64),
        progress=ProgressStatus(epoch=3, epochs=30, percent=10.0, eta_seconds=120.0),
        metrics=MetricsStatus.model_validate({k: pair for k in ("forgetAUC", "forgetF1", "testAUC", "testF1",
                                                                     "mia", "miaAUC", "attackAUC", "logitNormAUC",
                                                                     "liraTPR5", "liraAUC")}),
        gates=[GateStatus(metric="testAUC", comparator="maxDrop", reference="original", value=0.01,
                              threshold=0.02, result="Passed", message="Test AUC dropped 0.01.")],
        report=ArtifactStatus(uri="s3://b/m/requests/u/report.json", sha256="c" * 64),
        receipt=ArtifactStatus(uri="s3://b/m/requests/u/receipt.json", sha256="d" * 64),
        batch=BatchStatus(key="e" * 64, closes_at="2025-01-01T00:00:05Z", leader=RequestRefStatus(name="r", uid="u1"),
                          requests=[RequestRefStatus(name="r", uid="u1"), RequestRefStatus(name="s", uid="u2")],
                          subject_count=5, job_name="forgetmi-r-12345678"),
    )
    written = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    unset = [name for name, value in status if value is None]
    assert unset == []
    validator = jsonschema.Draft202012Validator(to_json_schema(openapi_schema()["properties"]["status"]))
    assert [e.message for e in validator.iter_errors(written)] == []
    assert apply_defaults(written, openapi_schema()["properties"]["status"]) == written
    written["kopf"] = {"progress": {}}
    assert [e.validator for e in validator.iter_errors(written)] == ["additionalProperties"]


# ---- the same verdict at every bound -----------------------------------------------------------

def _label_key(n: int) -> str:
    """A label key of n characters: a DNS-subdomain prefix, '/', and a 63-character name."""
    prefix = "".join("." if i % 32 == 31 else "a" for i in range(n - 64))
    return f"{prefix}/{'n' * 63}"


_FILLERS = {
    DNS_LABEL: lambda n: "a" * n,
    DNS_SUBDOMAIN: lambda n: "a" * n,
    SECRET_KEY_PATTERN: lambda n: "k" * n,
    ENV_NAME_PATTERN: lambda n: "E" * n,
    QUANTITY_PATTERN: lambda n: "1" * n,
    r"^[0-9a-f]{64}$": lambda n: "a" * n,
    LABEL_VALUE_PATTERN: lambda n: "v" * n,
    IMAGE_PATTERN: lambda n: "i" * n,
    VERSION_PATTERN: lambda n: "v" * n,
    "uri": lambda n: "s3://bucket/" + "k" * (n - len("s3://bucket/")),
    "label-key": _label_key,
    None: lambda n: "x" * n,
}


def _filler(node: Mapping[str, Any]) -> Any:
    if _rule_regex(node):
        return _FILLERS["uri"]
    if any(e["message"] == LABEL_KEY_MESSAGE for e in node.get("x-kubernetes-validations", [])):
        return _FILLERS["label-key"]
    return _FILLERS[node.get("pattern")]


def _leaves(node: Mapping[str, Any], parts: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], Mapping]]:
    if node.get("type") == "object" and "properties" in node:
        for key, child in node["properties"].items():
            yield from _leaves(child, (*parts, key))
    elif node.get("type") == "array":
        yield from _leaves(node["items"], (*parts, 0))
    elif node.get("type") == "object":
        yield from _leaves(node["additionalProperties"], (*parts, "cpu" if "requests" in parts or "limits" in parts
                                                           else "example.com/key"))
    else:
        yield parts, node


def _cases(node: Mapping[str, Any]) -> Iterator[tuple[Any, bool]]:
    step = 1 if node.get("type") == "integer" else 0.001
    if "minimum" in node:
        exclusive = bool(node.get("exclusiveMinimum"))
        yield node["minimum"], not exclusive
        yield node["minimum"] - step, False
        if exclusive:
            yield node["minimum"] + step, True
    if "maximum" in node:
        yield node["maximum"], True
        yield node["maximum"] + step, False
    for value in node.get("enum", []):
        yield value, True
    if "enum" in node:
        yield "NotAnEnumValue", False
    if "maxLength" in node and "enum" not in node and node.get("pattern") != r"^[0-9a-f]{64}$":
        fill = _filler(node)
        yield fill(node["maxLength"]), True
        yield fill(node["maxLength"] + 1), False


def _bound_cases() -> list[Any]:
    cases = []
    for parts, node in _leaves(openapi_schema()["properties"]["spec"], ()):
        for value, valid in _cases(node):
            cases.append(pytest.param(parts, value, valid, id=f"{format_path(('spec', *parts))}={str(value)[:12]}"))
    return cases


def _set(obj: Any, parts: tuple[str | int, ...], value: Any) -> None:
    for part in parts[:-1]:
        obj = obj[part] if isinstance(part, int) else obj.setdefault(part, {})
    obj[parts[-1]] = value


@pytest.mark.parametrize(("parts", "value", "valid"), _bound_cases())
def test_crd_and_pydantic_agree_at_every_bound(full_request: dict[str, Any], parts: tuple, value: Any,
                                               valid: bool) -> None:
    request = copy.deepcopy(full_request)
    request["spec"]["method"]["weights"] = {"uu": 0.25, "mu": 0.25, "ur": 0.25, "mr": 0.25}
    if parts[:2] == ("forget", "subjectsUri") or parts[:2] == ("forget", "sha256"):
        request["spec"]["forget"] = {"subjectsUri": "s3://bucket/ids.txt", "sha256": "0" * 64}
    if parts == ("gates", 0, "reference") and value in ("absolute", "retrained"):
        request["spec"]["gates"][0]["comparator"] = "atMost"  # an absolute reference needs atMost or atLeast
        request["spec"]["audit"]["retrainedVersion"] = "v1-retrained"  # reference: retrained needs a version
    if parts[:2] == ("method", "options"):
        request["spec"]["method"]["name"] = "scrub"  # the method that reads most options
        if parts[2] == "bound":
            request["spec"]["method"]["name"] = "neggrad-plus"
    if parts[:2] == ("method", "sign") and value == "pull":
        request["spec"]["method"]["name"] = "forget-mi"
    if parts == ("resources", "processesPerNode"):
        request["spec"]["resources"]["gpus"] = 0  # with GPUs it must equal gpus
    _set(request["spec"], parts, value)
    path = format_path(("spec", *parts))
    crd_ok = not [p for p in schema.schema_problems(schema.defaulted(request)) if p.path == path]
    try:
        UnlearnRequestSpec.model_validate(request["spec"])
        pydantic_ok = True
    except ValidationError as err:
        pydantic_ok = not [e for e in err.errors() if format_path(("spec", *e["loc"])) == path]
    assert (crd_ok, pydantic_ok) == (valid, valid)


def test_bound_cases_cover_the_spec() -> None:
    ids = {p.id.split("=")[0] for p in _bound_cases()}
    for expected in ("spec.gates[0].threshold", "spec.method.learningRate", "spec.resources.gpus",
                     "spec.tolerations[0].value", "spec.model.name", "spec.rollout.mode", "spec.image",
                     "spec.resources.requests.cpu", "spec.nodeSelector[example.com/key]", "spec.queueName",
                     "spec.resources.nodes", "spec.resources.processesPerNode", "spec.resources.engine",
                     "spec.runtimeRef.name", "spec.runtimeRef.kind"):
        assert expected in ids


def test_every_rule_field_path_names_a_field_of_its_node() -> None:
    """A fieldPath to a field that does not exist is refused by the API server when the CRD is applied."""

    checked = 0
    for parts, entry in all_rules(openapi_schema()):
        if "fieldPath" not in entry:
            continue
        node: Mapping[str, Any] = openapi_schema()
        for part in parts:
            node = node["items"] if part == "*" and "items" in node else (
                node["additionalProperties"] if part == "*" else node["properties"][part])
        for name in entry["fieldPath"].removeprefix(".").split("."):
            node = node["properties"][name]
        checked += 1
    assert checked >= 20


@pytest.mark.parametrize(("path", "field"), [
    (("gates", "items"), ".reference"), (("gates", "items"), ".threshold"), (("method",), ".selection.epoch")])
def test_cross_field_rules_point_at_the_field_to_fix(path: tuple[str, ...], field: str) -> None:
    node = openapi_schema()["properties"]["spec"]
    for part in path:
        node = node[part] if part == "items" else node["properties"][part]
    assert field in [entry.get("fieldPath") for entry in node["x-kubernetes-validations"]]

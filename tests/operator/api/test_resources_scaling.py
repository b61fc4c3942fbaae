"""spec.resources.nodes, processesPerNode and engine, and spec.runtimeRef: the CRD's CEL rules (evaluated
as the API server would, operator/local/cel.py) and the pydantic models refuse the same requests with
the same sentence at the same field; the world size is what the trainer's processes add up to."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from forgetmi_operator.api.patterns import problem_message
from forgetmi_operator.api.spec import (
    BATCH_PER_WORLD,
    NODES_NEED_TRAINJOB,
    PROCESSES_PER_GPU,
    ResourcesSpec,
    UnlearnRequestSpec,
)
from forgetmi_operator.local import cel
from forgetmi_operator.local.crd import openapi_schema
from forgetmi_operator.local.schema import Problem, defaulted, format_path, validate_request

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def request_full() -> dict[str, Any]:
    docs = yaml.safe_load_all((ROOT / "examples" / "unlearnrequest-full.yaml").read_text())
    (request,) = [d for d in docs if d["kind"] == "UnlearnRequest"]
    return request


def _rule_problems(request: dict[str, Any], old: dict[str, Any] | None = None) -> list[Problem]:
    kwargs = {"old": defaulted(old)} if old is not None else {}
    return sorted(Problem(format_path(p), m) for p, m in cel.rule_problems(defaulted(request), openapi_schema(),
                                                                           **kwargs))


def _pydantic_problems(spec: dict[str, Any]) -> list[Problem]:
    try:
        UnlearnRequestSpec.model_validate(spec)
    except ValidationError as err:
        return sorted(Problem(format_path(("spec", *e["loc"])), problem_message(e)) for e in err.errors())
    return []


CASES: list[tuple[str, dict[str, Any], int | None, list[tuple[str, str]]]] = [
    ("defaults", {}, None, []),
    ("two nodes of four GPUs", {"nodes": 2, "gpus": 4, "processesPerNode": 4}, 16, []),
    ("processes default to gpus", {"nodes": 2, "gpus": 8}, 16, []),
    ("CPU processes", {"gpus": 0, "processesPerNode": 4}, 8, []),
    ("TrainJob on one process", {"engine": "TrainJob"}, None, []),
    ("Job with several processes on one node", {"engine": "Job", "gpus": 2}, None, []),
    ("processes other than gpus", {"gpus": 4, "processesPerNode": 2}, None,
     [("spec.resources.processesPerNode", PROCESSES_PER_GPU)]),
    ("Job on two nodes", {"engine": "Job", "nodes": 2}, None, [("spec.resources.nodes", NODES_NEED_TRAINJOB)]),
    ("batch not a multiple of the GPUs", {"gpus": 3}, 16, [("spec.method.batchSize", BATCH_PER_WORLD)]),
    ("batch not a multiple of the world", {"nodes": 3, "gpus": 2}, 16, [("spec.method.batchSize", BATCH_PER_WORLD)]),
    ("batch smaller than the world", {"nodes": 4, "gpus": 8}, 16, [("spec.method.batchSize", BATCH_PER_WORLD)]),
    ("batch not a multiple of CPU processes", {"gpus": 0, "processesPerNode": 3}, 16,
     [("spec.method.batchSize", BATCH_PER_WORLD)]),
]


@pytest.mark.parametrize(("case", "resources", "batch", "expected"), CASES, ids=[c[0] for c in CASES])
def test_rule_and_pydantic_reject_the_same(request_full: dict[str, Any], case: str, resources: dict[str, Any],
                                          batch: int | None, expected: list[tuple[str, str]]) -> None:
    request = copy.deepcopy(request_full)
    request["spec"]["resources"] = {**request["spec"]["resources"], **resources}
    if batch is not None:
        request["spec"]["method"]["batchSize"] = batch
    problems = sorted(Problem(path, message) for path, message in expected)
    assert _rule_problems(request) == problems
    assert _pydantic_problems(request["spec"]) == problems
    assert sorted(validate_request(request)) == problems


@pytest.mark.parametrize(("value", "valid"), [(0, False), (1, True), (64, True), (65, False)])
def test_nodes_are_at_least_one(request_full: dict[str, Any], value: int, valid: bool) -> None:
    request = copy.deepcopy(request_full)
    request["spec"]["resources"]["nodes"] = value
    request["spec"]["resources"]["gpus"] = 1
    request["spec"]["method"]["batchSize"] = 64
    paths = {p.path for p in validate_request(request)}
    assert ("spec.resources.nodes" not in paths) is valid
    assert not [p for p in validate_request(request) if p.message.startswith(cel.UNEVALUABLE)]
    assert (not _pydantic_problems(request["spec"])) is valid


def test_resources_and_the_runtime_are_immutable(request_full: dict[str, Any]) -> None:
    new = copy.deepcopy(request_full)
    new["spec"]["resources"]["nodes"] = 2
    assert _rule_problems(new, old=request_full) == [Problem("spec.resources", "spec.resources is immutable")]
    new = copy.deepcopy(request_full)
    new["spec"]["runtimeRef"] = {"name": "torch-distributed"}
    assert _rule_problems(new, old=request_full) == [Problem("spec.runtimeRef", "spec.runtimeRef is immutable")]
    assert _rule_problems(new, old=new) == []
    newer = copy.deepcopy(new)
    newer["spec"]["runtimeRef"]["kind"] = "TrainingRuntime"
    assert _rule_problems(newer, old=new) == [Problem("spec.runtimeRef", "spec.runtimeRef is immutable")]


def test_runtime_ref_names_a_runtime(request_full: dict[str, Any]) -> None:
    request = copy.deepcopy(request_full)
    request["spec"]["runtimeRef"] = {"name": "Torch_Distributed", "kind": "Runtime"}
    assert {p.path for p in validate_request(request)} == {"spec.runtimeRef.name", "spec.runtimeRef.kind"}
    assert {p.path for p in _pydantic_problems(request["spec"])} == {"spec.runtimeRef.name", "spec.runtimeRef.kind"}
    request["spec"]["runtimeRef"] = {"kind": "TrainingRuntime"}
    assert {p.path for p in validate_request(request)} == {"spec.runtimeRef.name"}
    request["spec"]["runtimeRef"] = {"name": "torch-distributed"}
    assert validate_request(request) == []
    assert defaulted(request)["spec"]["runtimeRef"] == {"name": "torch-distributed", "kind": "ClusterTrainingRuntime"}


def test_defaults_run_one_process_on_one_node() -> None:
    resources = ResourcesSpec()
    assert (resources.nodes, resources.processes_per_node, resources.engine) == (1, None, "Auto")
    assert (resources.processes, resources.world_size) == (1, 1)


@pytest.mark.parametrize(("fields", "processes", "world"), [
    ({"gpus": 0}, 1, 1), ({"gpus": 4}, 4, 4), ({"gpus": 4, "nodes": 2}, 4, 8),
    ({"gpus": 0, "processesPerNode": 3, "nodes": 2}, 3, 6), ({"gpus": 8, "processesPerNode": 8, "nodes": 4}, 8, 32),
])
def test_processes_and_world_size(fields: dict[str, Any], processes: int, world: int) -> None:
    resources = ResourcesSpec.model_validate(fields)
    assert (resources.processes, resources.world_size) == (processes, world)

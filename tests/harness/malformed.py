"""Malformed UnlearnRequests for the fault suite: a valid request (:func:`valid_request`) and a Hypothesis
strategy of single mutations of it (:func:`mutations`), each knowing the field a refusal must name.

The kinds: a wrong type at a field (a string where an integer goes, a list where a mapping goes, …), a
required field missing, an unknown field (and patient IDs inlined in ``spec.forget``), a value outside an
enum, a number out of range, a URI that is not one, and — as an update of the valid request, which the
API server's CEL rules refuse — a change of an immutable field (``old`` is then the valid request).
Values that the API server's own conversions would make valid are never drawn (a whole float where an
integer goes: kubectl sends ``2.0`` as ``2``; ``null``: pruned).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, get_args

from hypothesis import strategies as st

from forgetmi_operator.api import patterns
from forgetmi_operator.api.method import MethodName
from forgetmi_trainer.contract import RETAIN_SAMPLES_MAX

Path = tuple[str | int, ...]
KINDS = ("wrong-type", "missing", "unknown-field", "inlined-ids", "bad-enum", "out-of-range", "bad-uri", "immutable")


def valid_request(registry: str, manifest: str, model: str, name: str = "malformed") -> dict[str, Any]:
    """A valid request with most fields set (so each can be mutated), 1 epoch, gates that pass."""
    return {"apiVersion": "unlearning.forgetmi.io/v1alpha1", "kind": "UnlearnRequest", "metadata": {"name": name},
            "spec": {
                "model": {"registryUri": registry, "name": model, "alias": "production"},
                "data": {"manifestUri": manifest},
                "forget": {"subjectsSecretRef": {"name": f"{name}-subjects", "key": "subjects"}},
                "method": {"name": "forget-mi", "preset": "equal", "epochs": 1, "batchSize": 16,
                           "learningRate": 0.003},
                "gates": [{"metric": "testAUC", "comparator": "atLeast", "threshold": 0.0, "reference": "absolute",
                           "bound": "point"}],
                "audit": {"retainSamples": 100},
                "rollout": {"mode": "Automatic", "onGateFailure": "Hold", "onConflict": "Rebase", "maxRebases": 3},
                "resources": {"gpus": 1, "nodes": 1, "engine": "Auto"},
                "activeDeadlineSeconds": 3600, "backoffLimit": 1, "suspend": False, "coalesce": False}}


STRINGS: list[Path] = [("spec", "model", "registryUri"), ("spec", "model", "name"), ("spec", "model", "alias"),
                       ("spec", "data", "manifestUri"), ("spec", "forget", "subjectsSecretRef", "name"),
                       ("spec", "forget", "subjectsSecretRef", "key"), ("spec", "method", "name"),
                       ("spec", "gates", 0, "metric"), ("spec", "rollout", "mode"), ("spec", "resources", "engine")]
RANGES: dict[Path, tuple[float, float]] = {
    ("spec", "method", "epochs"): (1, 1000), ("spec", "method", "batchSize"): (1, 4096),
    ("spec", "audit", "retainSamples"): (1, RETAIN_SAMPLES_MAX), ("spec", "rollout", "maxRebases"): (0, 100),
    ("spec", "resources", "gpus"): (0, 16), ("spec", "resources", "nodes"): (1, 64),
    ("spec", "activeDeadlineSeconds"): (60, 604800), ("spec", "backoffLimit"): (0, 10)}
FLOATS: dict[Path, tuple[float, float]] = {("spec", "method", "learningRate"): (0.0, 1.0),
                                           ("spec", "gates", 0, "threshold"): (-1.0, 1.0)}
BOOLEANS: list[Path] = [("spec", "suspend"), ("spec", "coalesce")]
OBJECTS: list[Path] = [("spec",), ("spec", "model"), ("spec", "data"), ("spec", "forget"), ("spec", "method"),
                       ("spec", "audit"), ("spec", "rollout"), ("spec", "resources"), ("spec", "gates", 0)]
LISTS: list[Path] = [("spec", "gates")]
REQUIRED: list[Path] = [("spec",), ("spec", "model"), ("spec", "model", "registryUri"), ("spec", "model", "name"),
                        ("spec", "data"), ("spec", "data", "manifestUri"), ("spec", "forget"),
                        ("spec", "forget", "subjectsSecretRef", "name"), ("spec", "forget", "subjectsSecretRef", "key"),
                        ("spec", "gates", 0, "metric"), ("spec", "gates", 0, "comparator"),
                        ("spec", "gates", 0, "threshold")]
ENUMS: dict[Path, tuple[str, ...]] = {
    ("spec", "method", "name"): get_args(MethodName),
    ("spec", "method", "preset"): ("equal", "multimodal", "unimodal", "retention"),
    ("spec", "gates", 0, "metric"): get_args(patterns.GateMetric),
    ("spec", "gates", 0, "comparator"): get_args(patterns.Comparator),
    ("spec", "gates", 0, "reference"): get_args(patterns.Reference),
    ("spec", "gates", 0, "bound"): get_args(patterns.Bound),
    ("spec", "rollout", "mode"): get_args(patterns.RolloutMode),
    ("spec", "rollout", "onGateFailure"): get_args(patterns.OnGateFailure),
    ("spec", "rollout", "onConflict"): get_args(patterns.OnConflict),
    ("spec", "resources", "engine"): ("Auto", "Job", "TrainJob")}
URIS: dict[Path, str] = {("spec", "model", "registryUri"): patterns.URI_PATTERN,
                         ("spec", "data", "manifestUri"): patterns.OBJECT_URI_PATTERN}
IMMUTABLE: dict[Path, Any] = {("spec", "model", "name"): "m-other", ("spec", "model", "alias"): "staging",
                              ("spec", "data", "manifestUri"): "s3://other-bucket/manifest.csv",
                              ("spec", "forget", "subjectsSecretRef", "name"): "other-subjects",
                              ("spec", "method", "epochs"): 2, ("spec", "gates", 0, "threshold"): 0.5,
                              ("spec", "audit", "retainSamples"): 50, ("spec", "rollout", "onGateFailure"): "Retrain",
                              ("spec", "rollout", "maxRebases"): 5, ("spec", "resources", "gpus"): 0}
IMMUTABLE_FIELD = 2
"""An immutable field is refused at its top field under spec (``spec.model``, not ``spec.model.name``)."""
_KEY = st.from_regex(r"zz[a-zA-Z0-9]{0,10}", fullmatch=True)
"""A field name no spec has (an unknown field, never an optional one left unset)."""
_SHORT_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=8)


@dataclass(frozen=True)
class Mutation:
    kind: str
    path: Path
    value: Any = None
    delete: bool = False
    field: str = ""
    """The field path a refusal must name (``spec.gates[0].metric``)."""

    def apply(self, request: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(the mutated request, the old one it updates, or None for a create)."""
        new = copy.deepcopy(request)
        parent: Any = new
        for part in self.path[:-1]:
            parent = parent[part]
        if self.delete:
            del parent[self.path[-1]]
        else:
            parent[self.path[-1]] = copy.deepcopy(self.value)
        return new, (copy.deepcopy(request) if self.kind == "immutable" else None)


def field_path(path: Path) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else (f".{part}" if i else part)
                   for i, part in enumerate(path))


def _at(kind: str, path: Path, value: Any = None, *, delete: bool = False, named: Path | None = None) -> Mutation:
    return Mutation(kind, path, value, delete, field_path(named or path))


def _wrong_type(path: Path, expected: str) -> st.SearchStrategy[Mutation]:
    others = {"string": st.one_of(st.integers(-5, 5), st.booleans(), st.lists(st.integers(0, 3), max_size=2),
                                  st.dictionaries(_KEY, st.integers(0, 3), min_size=1, max_size=2)),
              "integer": st.one_of(_SHORT_TEXT, st.booleans(), st.floats(-1e6, 1e6).filter(lambda f: f != int(f)),
                                   st.lists(st.integers(), max_size=2)),
              "number": st.one_of(_SHORT_TEXT, st.booleans(), st.lists(st.floats(0, 1), max_size=2)),
              "boolean": st.one_of(st.sampled_from(["true", "yes", "False", ""]), st.integers(0, 1),
                                   st.lists(st.booleans(), max_size=2)),
              "object": st.one_of(_SHORT_TEXT, st.integers(), st.booleans(), st.lists(st.integers(), max_size=2)),
              "array": st.one_of(_SHORT_TEXT, st.integers(), st.dictionaries(_KEY, st.integers(), max_size=2))}
    return others[expected].map(lambda value: _at("wrong-type", path, value))


def _out_of_range(path: Path, low: float, high: float, *, integer: bool) -> st.SearchStrategy[Mutation]:
    if integer:
        values = st.one_of(st.integers(-(2**62), int(low) - 1), st.integers(int(high) + 1, 2**62))
    else:
        below = st.floats(max_value=low, allow_nan=False, allow_infinity=False, min_value=-1e12)
        values = st.one_of(below.filter(lambda f: f < low or (low == 0.0 and f <= 0.0)),
                           st.floats(min_value=high, max_value=1e12, exclude_min=True))
    return values.map(lambda value: _at("out-of-range", path, value))


def _bad_enum(path: Path, allowed: tuple[str, ...]) -> st.SearchStrategy[Mutation]:
    return st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=12).filter(
        lambda text: text not in allowed).map(lambda value: _at("bad-enum", path, value))


def _bad_uri(path: Path, pattern: str) -> st.SearchStrategy[Mutation]:
    curated = st.sampled_from(["http://bucket/manifest.csv", "s3://", "s3://UPPER/key", "file://relative/path",
                               "bucket/key", "", "s3:/one-slash/key", "s3://a/key", "gs://bucket/key",
                               "s3://bucket_with_underscore/key"])
    generated = st.text(max_size=20)
    return st.one_of(curated, generated).filter(lambda uri: re.fullmatch(pattern, uri) is None).map(
        lambda value: _at("bad-uri", path, value))


def _unknown(path: Path) -> st.SearchStrategy[Mutation]:
    return st.tuples(_KEY, st.one_of(st.integers(), _SHORT_TEXT)).map(
        lambda kv: _at("unknown-field", (*path, kv[0]), kv[1]))


def _immutable(path: Path, value: Any) -> st.SearchStrategy[Mutation]:
    return st.just(_at("immutable", path, value, named=path[:IMMUTABLE_FIELD]))


def mutations(*, immutable: bool = True) -> st.SearchStrategy[Mutation]:
    """Single mutations of a :func:`valid_request`, of each kind alike often (then of any field of the
    kind); ``immutable`` False leaves out the updates."""
    by_kind: dict[str, list[st.SearchStrategy[Mutation]]] = {
        "wrong-type": [*(_wrong_type(p, "string") for p in STRINGS), *(_wrong_type(p, "integer") for p in RANGES),
                       *(_wrong_type(p, "number") for p in FLOATS), *(_wrong_type(p, "boolean") for p in BOOLEANS),
                       *(_wrong_type(p, "object") for p in OBJECTS), *(_wrong_type(p, "array") for p in LISTS)],
        "missing": [st.just(_at("missing", p, delete=True)) for p in REQUIRED],
        "unknown-field": [_unknown(p) for p in OBJECTS],
        "inlined-ids": [st.lists(st.from_regex(r"P[0-9]{5}", fullmatch=True), min_size=1, max_size=3).map(
            lambda ids: _at("inlined-ids", ("spec", "forget", "subjects"), ids))],
        "bad-enum": [_bad_enum(p, allowed) for p, allowed in ENUMS.items()],
        "out-of-range": [*(_out_of_range(p, lo, hi, integer=True) for p, (lo, hi) in RANGES.items()),
                         *(_out_of_range(p, lo, hi, integer=False) for p, (lo, hi) in FLOATS.items())],
        "bad-uri": [_bad_uri(p, pattern) for p, pattern in URIS.items()],
        "immutable": [_immutable(p, value) for p, value in IMMUTABLE.items()],
    }
    kinds = [kind for kind in KINDS if immutable or kind != "immutable"]
    return st.sampled_from(kinds).flatmap(lambda kind: st.one_of(by_kind[kind]))


def names_field(problem_paths: list[str], field: str) -> bool:
    """Whether a refusal names ``field`` itself or a field inside it."""
    return any(path == field or path.startswith((f"{field}.", f"{field}[")) for path in problem_paths)

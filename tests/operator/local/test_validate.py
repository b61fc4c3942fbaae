"""``forgetmi validate``: examples pass, malformed requests fail with the offending field path, junk
never crashes it, and patient IDs are never echoed. Also the ``run``/``demo`` extension points."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from forgetmi_operator.api.patterns import DNS_LABEL, pattern_message
from forgetmi_operator.api.spec import SecretKeyRef, UnlearnRequestSpec
from forgetmi_operator.local import EXIT_INVALID, cli, demo, documents, run
from forgetmi_operator.local.crd import openapi_schema
from forgetmi_operator.local.schema import crd_problems, defaulted, validate_request

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("unlearnrequest-*.yaml"))
MALFORMED = Path(__file__).parent / "data" / "unlearnrequest-malformed.yaml"
FAKE_ID = "FAKE-PATIENT-9001"


def _run(*argv: str, stdin: str | None = None) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        if stdin is not None:
            real, sys.stdin = sys.stdin, io.StringIO(stdin)
        try:
            code = cli.main(list(argv))
        finally:
            if stdin is not None:
                sys.stdin = real
    return code, out.getvalue() + err.getvalue()


def _validate_doc(tmp_path: Path, *docs: Any) -> tuple[int, str]:
    path = tmp_path / "request.yaml"
    path.write_text(yaml.safe_dump_all(docs, allow_unicode=True))
    return _run("validate", "-f", str(path))


@pytest.fixture
def minimal() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "examples" / "unlearnrequest-minimal.yaml").read_text())


def test_examples_exist_and_are_valid() -> None:
    assert {p.name for p in EXAMPLES} >= {"unlearnrequest-minimal.yaml", "unlearnrequest-full.yaml"}
    for example in EXAMPLES:
        code, output = _run("validate", "-f", str(example))
        assert (code, output.count("\n")) == (0, 1), output
        assert output.startswith(f"OK: {example}: 1 UnlearnRequest valid")


def test_full_example_uses_every_kind_of_setting() -> None:
    docs = list(yaml.safe_load_all((ROOT / "examples" / "unlearnrequest-full.yaml").read_text()))
    secret, request = docs
    assert secret["kind"] == "Secret"
    subjects = secret["stringData"]["subjects"].split()
    assert subjects and all(s.startswith("FAKE-PATIENT-") for s in subjects)
    spec = UnlearnRequestSpec.model_validate(request["spec"])
    assert spec.forget.subjects_secret_ref == SecretKeyRef(name=secret["metadata"]["name"], key="subjects")
    assert spec.resources.gpus >= 1 and spec.tolerations and spec.node_selector and spec.queue_name
    assert spec.rollout.target is not None and len(spec.gates) >= 3 and spec.credentials_secret_ref is not None
    assert spec.resources.requests["cpu"] == "4"  # int-or-string quantities arrive as strings


def test_console_script_exit_codes() -> None:
    script = Path(sys.executable).with_name("forgetmi")
    assert script.exists(), "the package is not installed (pip install -e .)"
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    ok = subprocess.run([script, "validate", "-f", str(EXAMPLES[0])], capture_output=True, text=True, env=env,
                        check=False)
    assert (ok.returncode, ok.stderr) == (0, "")
    bad = subprocess.run([script, "validate", "-f", str(MALFORMED)], capture_output=True, text=True, env=env,
                         check=False)
    assert bad.returncode == 2
    assert "spec.gates[0].threshold: must be ≤ 1" in bad.stderr and "Traceback" not in bad.stderr


def test_malformed_file_lists_every_problem_without_the_ids() -> None:
    code, output = _run("validate", "-f", str(MALFORMED))
    assert code == 2
    lines = [line.strip() for line in output.splitlines()[1:]]
    assert lines == [
        "spec.forget: set exactly one of subjectsSecretRef or subjectsUri",
        "spec.forget.subjects: unknown field; patient IDs are never inlined: reference them with "
        "subjectsSecretRef or subjectsUri",
        "spec.gates[0].threshold: must be ≤ 1",
        "spec.method.epochs: must be an integer",
        "spec.model.registryUri: must be an s3://bucket/... or file:///... URI",
        "spec.resources.memory: unknown field",
        "spec.rollout.mode: must be one of: Automatic, Manual, DryRun",
    ]
    assert "FAKE-PATIENT" not in output


def _mutate(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(request: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = request
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            del node[last]
        else:
            node[last] = value
    return mutate


MALFORMED_CASES = [
    ("spec.method.epochs", "30", "spec.method.epochs: must be an integer"),
    ("spec.method.epochs", 30.5, "spec.method.epochs: must be an integer"),
    ("spec.activeDeadlineSeconds", 1e21, "spec.activeDeadlineSeconds: must be an integer"),
    ("spec.method.learningRate", "fast", "spec.method.learningRate: must be a number"),
    ("spec.suspend", "yes", "spec.suspend: must be a boolean"),
    ("spec.gates", {"metric": "mia"}, "spec.gates: must be a list"),
    ("spec.model", "cxr-report-classifier", "spec.model: must be a mapping"),
    ("spec.modle", {"name": "x"}, "spec.modle: unknown field"),
    ("spec.method.epoch", 3, "spec.method.epoch: unknown field"),
    ("spec.model.registryUri", "http://registry/models", "spec.model.registryUri: must be an s3://"),
    ("spec.data.manifestUri", "manifest.csv", "spec.data.manifestUri: must be an s3://"),
    ("spec.forget.subjectsUri", "gs://bucket/ids.txt", "spec.forget.subjectsUri: must be an s3://"),
    ("spec.gates", [{"metric": "mia", "comparator": "atMost", "threshold": 1.01}],
     "spec.gates[0].threshold: must be ≤ 1"),
    ("spec.gates", [{"metric": "testAUC", "comparator": "maxDrop", "threshold": -3, "reference": "original"}],
     "spec.gates[0].threshold: must be ≥ -1"),
    ("spec.gates", [{"metric": "mia", "comparator": "atMost", "threshold": -0.2}],
     "spec.gates[0].threshold: an absolute threshold must be between 0 and 1"),
    ("spec.gates", [{"metric": "testAUC", "comparator": "maxDrop", "threshold": 0.02}],
     "spec.gates[0].reference: maxDrop and minDrop measure a drop from the original model: set reference: original"),
    ("spec.method", {"epochs": 5, "selection": {"epoch": 6}},
     "spec.method.selection.epoch: selection.epoch must not exceed epochs"),
    ("spec.nodeSelector", {"gpu product": "h100"}, "spec.nodeSelector: every key must be a label key"),
    ("spec.nodeSelector", {"example.com/": "h100"}, "spec.nodeSelector: every key must be a label key"),
    ("spec.nodeSelector", {"pool": "gpu nodes"}, "spec.nodeSelector.pool: must be a label value"),
    ("spec.nodeSelector", {"pool": "-gpu"}, "spec.nodeSelector.pool: must be a label value"),
    ("spec.tolerations", [{"key": "nvidia.com/gpu product", "operator": "Exists"}],
     "spec.tolerations[0].key: must be a label key"),
    ("spec.tolerations", [{"key": "gpu", "operator": "Equal", "value": "a b"}],
     "spec.tolerations[0].value: must be a label value"),
    ("spec.tolerations", [{"key": "", "operator": "Equal", "value": "x"}],
     "spec.tolerations[0]: a toleration without key must use operator: Exists"),
    ("spec.image", "ghcr.io/forgetmi/trainer:0.1.0 ", "spec.image: must be an image reference"),
    ("spec.image", "ghcr.io/forgetmi/trainer :0.1.0", "spec.image: must be an image reference"),
    ("spec.image", "ghcr.io/forgetmi/trainer:0.1.0\n", "spec.image: must be an image reference"),
    ("spec.data.manifestUri", "s3://hospital-datasets", "spec.data.manifestUri: must be an s3://bucket/key or "
     "file:///... URI: an object, with a key after the bucket"),
    ("spec.data.manifestUri", "s3://hospital-datasets/", "spec.data.manifestUri: must be an s3://bucket/key"),
    ("spec.forget.subjectsUri", "s3://privacy-requests", "spec.forget.subjectsUri: must be an s3://bucket/key"),
    ("spec.forget.subjectsUri", "s3://privacy-requests/", "spec.forget.subjectsUri: must be an s3://bucket/key"),
    ("spec.gates", [{"metric": "accuracy", "comparator": "atMost", "threshold": 0.5}],
     "spec.gates[0].metric: must be one of: mia, miaAUC, attackAUC, logitNormAUC, liraTPR5, liraAUC, forgetAUC, "
     "forgetF1, testAUC, testF1"),
    ("spec.gates", [{"metric": "miaAUC", "comparator": "atMost", "threshold": 0.6, "bound": "high"}],
     "spec.gates[0].bound: must be one of: point, upper, lower"),
    ("spec.gates", [{"metric": "miaAUC", "comparator": "atMost", "threshold": 0.6, "bound": 1}],
     "spec.gates[0].bound: must be a string"),
    ("spec.audit", {"retainSamples": 0}, "spec.audit.retainSamples: must be ≥ 1"),
    ("spec.audit", {"retainSamples": 1_000_001}, "spec.audit.retainSamples: must be ≤ 1000000"),
    ("spec.audit", {"retainSamples": "5000"}, "spec.audit.retainSamples: must be an integer"),
    ("spec.audit", {"bootstrap": 100}, "spec.audit.bootstrap: unknown field"),
    ("spec.forget.subjects", [FAKE_ID, "FAKE-PATIENT-9002"], "spec.forget.subjects: unknown field; patient IDs"),
    ("spec.forget.subjectIds", f"{FAKE_ID},FAKE-PATIENT-9002", "spec.forget.subjectIds: unknown field; patient IDs"),
    ("spec.patientIds", [FAKE_ID], "spec.patientIds: unknown field; patient IDs"),
    ("spec.forget.subjectsSecretRef", {"name": FAKE_ID.lower(), "key": "ids"},
     "spec.forget: set exactly one of subjectsSecretRef or subjectsUri"),
    ("spec.model.name", None, "spec.model.name: required field is missing"),
    ("spec.model.name", "CXR_Model", "spec.model.name: must be a lowercase DNS label"),
    ("spec.rollout.mode", "Auto", "spec.rollout.mode: must be one of: Automatic, Manual, DryRun"),
    ("spec.resources.gpus", -1, "spec.resources.gpus: must be ≥ 0"),
    ("spec.resources.limits", {"memory": "lots"}, "spec.resources.limits.memory: must be a resource quantity"),
    ("spec.method.learningRate", 0, "spec.method.learningRate: must be > 0"),
    ("spec.forget.sha256", "ABC", "spec.forget.sha256: must be a sha256 digest"),
    ("spec.activeDeadlineSeconds", 10**20, "spec.activeDeadlineSeconds: must fit in a 64-bit integer"),
    ("spec.gates", [{"metric": "mia", "comparator": "atMost", "threshold": math.nan}],
     "spec.gates[0].threshold: must be a finite number"),
    ("apiVersion", "unlearning.forgetmi.io/v1", "apiVersion: must be unlearning.forgetmi.io/v1alpha1"),
    ("metadata.name", "Forget_Me", "metadata.name: must be a lowercase DNS subdomain"),
    ("metadata.name", "x.y..z", "metadata.name: must be a lowercase DNS subdomain"),
    ("metadata.name", "forget.-me", "metadata.name: must be a lowercase DNS subdomain"),
    ("spec.serviceAccountName", "trainer..sa", "spec.serviceAccountName: must be a lowercase DNS subdomain"),
    ("spec.resources.limits", {"memory": -1}, "spec.resources.limits.memory: must be a resource quantity"),
    ("spec.resources.limits", {"memory": "-1Gi"}, "spec.resources.limits.memory: must be a resource quantity"),
    ("spec", None, "spec: required field is missing"),
]


@pytest.mark.parametrize(("path", "value", "expected"), MALFORMED_CASES,
                         ids=[f"{p}={str(v)[:16]}" for p, v, _ in MALFORMED_CASES])
def test_malformed_request_fails_with_its_field_path(tmp_path: Path, minimal: dict[str, Any], path: str, value: Any,
                                                     expected: str) -> None:
    _mutate(path, value)(minimal)
    code, output = _validate_doc(tmp_path, minimal)
    assert code == 2
    assert f"  {expected}" in output
    assert FAKE_ID not in output and FAKE_ID.lower() not in output


def test_other_kinds_are_skipped_and_every_request_is_checked(tmp_path: Path, minimal: dict[str, Any]) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ids"}, "stringData": {"ids": FAKE_ID}}
    second = copy.deepcopy(minimal)
    second["metadata"]["name"] = "second"
    ok = f"OK: {tmp_path / 'request.yaml'}: 2 UnlearnRequests valid (forget-request-0042, second)\n"
    assert _validate_doc(tmp_path, secret, minimal, second) == (0, ok)
    second["spec"]["backoffLimit"] = 11
    code, output = _validate_doc(tmp_path, secret, minimal, second)
    assert code == 2
    assert "UnlearnRequest 'second' (document 3) is invalid:\n  spec.backoffLimit: must be ≤ 10\n" in output


BEYOND_INT64 = [
    ("spec.method.epochs", 10**20, "spec.method.epochs"),
    ("spec.method.epochs", -(10**20), "spec.method.epochs"),
    ("spec.method.selection", {"epoch": 2**63}, "spec.method.selection.epoch"),
    ("spec.resources.gpus", 99999999999999999999, "spec.resources.gpus"),
    ("spec.resources.limits", {"cpu": 10**20}, "spec.resources.limits.cpu"),
    ("spec.tolerations", [{"key": "gpu", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2**63}],
     "spec.tolerations[0].tolerationSeconds"),
    ("spec.gates", [{"metric": "mia", "comparator": "atMost", "threshold": 10**400}], "spec.gates[0].threshold"),
    ("spec.method.weights", {"uu": 10**20, "mu": 0, "ur": 0, "mr": 0}, "spec.method.weights.uu"),
]


@pytest.mark.parametrize(("path", "value", "where"), BEYOND_INT64, ids=[w for _, _, w in BEYOND_INT64])
def test_an_integer_beyond_int64_is_a_problem_not_a_crash(tmp_path: Path, minimal: dict[str, Any], path: str,
                                                          value: Any, where: str) -> None:
    _mutate(path, value)(minimal)
    code, output = _validate_doc(tmp_path, minimal)
    assert code == 2
    assert f"  {where}: must fit in a 64-bit integer\n" in output
    assert "could not evaluate" not in output


def test_run_refuses_an_integer_beyond_int64_cleanly(tmp_path: Path, minimal: dict[str, Any],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.HMAC_KEY_FILE_ENV, raising=False)
    minimal["spec"]["method"] = {"epochs": 99999999999999999999}
    path = tmp_path / "request.yaml"
    path.write_text(yaml.safe_dump(minimal))
    code, output = _run("run", "-f", str(path), "--workdir", str(tmp_path / "work"))
    assert code == 2  # as validate: refused before anything runs, every problem with its path
    assert "  spec.method.epochs: must fit in a 64-bit integer" in output
    assert not (tmp_path / "work").exists()


def test_run_reads_a_kind_list_and_refuses_its_invalid_request_with_the_field_path(
        tmp_path: Path, minimal: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.HMAC_KEY_FILE_ENV, raising=False)
    minimal["spec"]["method"] = {"epochs": 0}
    path = tmp_path / "list.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [minimal]}))
    code, output = _run("run", "-f", str(path), "--workdir", str(tmp_path / "work"))
    assert code == 2
    assert "the UnlearnRequest is invalid:\n  spec.method.epochs: must be ≥ 1" in output
    assert "found 0" not in output and not (tmp_path / "work").exists()


@pytest.mark.parametrize("kind", ["UnlearnReqest", "unlearnrequest", "UnlearnRequests", "Unlearnrequest"])
def test_a_misspelt_kind_of_this_group_is_a_problem(tmp_path: Path, minimal: dict[str, Any], kind: str) -> None:
    typo = copy.deepcopy(minimal)
    typo["kind"], typo["metadata"]["name"] = kind, "typo"
    code, output = _validate_doc(tmp_path, minimal, typo)
    assert code == 2
    assert output == (f"{tmp_path / 'request.yaml'}: {kind} 'typo' (document 2) is invalid:\n"
                      f'  kind: unlearning.forgetmi.io has no kind "{kind}" (kubectl: no matches for kind); '
                      "must be UnlearnRequest\n")


def test_kinds_of_other_groups_stay_skipped(tmp_path: Path, minimal: dict[str, Any]) -> None:
    others = [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}},
              {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}},
              {"apiVersion": "example.com/v1", "kind": "UnlearnReqest", "metadata": {"name": "e"}},
              {"kind": "Thing"}]
    assert _validate_doc(tmp_path, *others, minimal)[0] == 0


def _as_list(*items: Any, api_version: str = "v1", kind: str = "List") -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": ""}, "items": list(items)}


def test_the_items_of_a_list_are_each_checked(tmp_path: Path, minimal: dict[str, Any]) -> None:
    second = copy.deepcopy(minimal)
    second["metadata"]["name"] = "second"
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ids"}}
    ok = f"OK: {tmp_path / 'request.yaml'}: 2 UnlearnRequests valid (forget-request-0042, second)\n"
    assert _validate_doc(tmp_path, _as_list(minimal, secret, second)) == (0, ok)
    assert _validate_doc(tmp_path, _as_list(minimal, api_version="unlearning.forgetmi.io/v1alpha1",
                                            kind="UnlearnRequestList"), second) == (0, ok)
    second["spec"]["backoffLimit"] = 11
    code, output = _validate_doc(tmp_path, secret, _as_list(minimal, _as_list(secret, second)))
    assert code == 2
    assert output == (f"{tmp_path / 'request.yaml'}: UnlearnRequest 'second' (document 2 item 2 item 2) is invalid:\n"
                      "  spec.backoffLimit: must be ≤ 10\n")


@pytest.mark.parametrize(("items", "expected"), [
    ([], "no UnlearnRequest found"),
    (None, "List (document 1) is invalid:\n  items: must be a list of Kubernetes objects"),
    ({"a": {}}, "List (document 1) is invalid:\n  items: must be a list of Kubernetes objects"),
    (["text"], "document 1 item 1 is invalid:\n  (document): must be a Kubernetes object"),
])
def test_a_list_without_objects_is_a_problem(tmp_path: Path, items: Any, expected: str) -> None:
    listed = _as_list()
    listed["items"] = items
    code, output = _validate_doc(tmp_path, listed)
    assert code == 2
    assert expected in output


DUPLICATES = [
    ("apiVersion: v1\nkind: Secret\nkind: UnlearnRequest\n", 'at line 3, column 1: mapping key "kind" already '
     "defined at line 2"),
    ("metadata:\n  name: a\n  labels: {x: '1'}\n  name: b\n", 'at line 4, column 3: mapping key "name" already '
     "defined at line 2"),
    ("spec: {gates: [], gates: []}\n", 'at line 1, column 19: mapping key "gates" already defined at line 1'),
    ("a: 1\n---\nb: {c: 1, c: 1}\n", 'at line 3, column 11: mapping key "c" already defined at line 3'),
    ("1: a\n0x1: b\n", 'at line 2, column 1: mapping key "1" already defined at line 1'),
    (f"{'k' * 100}: 1\n{'k' * 100}: 2\n", f'mapping key "{"k" * 60}..." already defined at line 1'),
]


@pytest.mark.parametrize(("text", "expected"), DUPLICATES)
def test_a_repeated_mapping_key_is_refused(text: str, expected: str) -> None:
    with pytest.raises(documents.DocumentError, match=r"^not valid YAML ") as err:
        documents.load_documents(text)
    assert str(err.value).endswith(expected)
    code, output = _run("validate", "-f", "-", stdin=text)
    assert (code, output) == (2, f"stdin: stdin is invalid:\n  (document): {err.value}\n")


def test_a_merged_key_may_be_overridden_and_other_keys_may_repeat_elsewhere() -> None:
    text = "base: &b {x: 1, y: 2}\nm: {<<: *b, x: 3}\nn: {x: 1}\nl: [{x: 1}, {x: 2}]\n"
    assert documents.load_documents(text) == [{"base": {"x": 1, "y": 2}, "m": {"x": 3, "y": 2}, "n": {"x": 1},
                                         "l": [{"x": 1}, {"x": 2}]}]


def test_a_repeated_key_in_a_request_fails_validation(tmp_path: Path, minimal: dict[str, Any]) -> None:
    text = yaml.safe_dump(minimal, sort_keys=False).replace("  name: forget-request-0042\n",
                                                            "  name: forget-request-0042\n  name: other\n")
    path = tmp_path / "request.yaml"
    path.write_text(text)
    code, output = _run("validate", "-f", str(path))
    assert code == 2
    assert 'mapping key "name" already defined at line' in output


@pytest.mark.parametrize(("text", "expected"), [
    ("", "no UnlearnRequest found"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "no UnlearnRequest found"),
    ("spec: [unclosed\n", "not valid YAML at line 2, column 1"),
    ("a: !!int abc\n", "not valid YAML: a tagged value does not match its tag"),
    ("a: &x [*x]\n", "recursive"),
    ("- just\n- a list\n", "document 1 is invalid:\n  (document): is a YAML list, not a Kubernetes object: "
     "separate the requests with --- or put them under items: of an apiVersion: v1, kind: List"),
    ("just text\n", "document 1 is invalid:\n  (document): must be a Kubernetes object (a mapping)"),
    ("spec: {}\n", "kind: must be UnlearnRequest"),
])
def test_unusable_files_fail_with_a_sentence(text: str, expected: str) -> None:
    code, output = _run("validate", "-f", "-", stdin=text)
    assert code == 2
    assert expected in output


def test_whole_number_floats_are_integers_as_kubectl_sends_them(tmp_path: Path, minimal: dict[str, Any]) -> None:
    """kubectl's YAML → JSON step writes ``epochs: 30.0`` as 30 (Go's float64 encoding), which the
    API server accepts for an integer field; validate agrees, and keeps fractions and huge values."""
    minimal["spec"]["method"] = {"epochs": 30.0, "learningRate": 0.003}
    minimal["spec"]["gates"] = [{"metric": "mia", "comparator": "atMost", "threshold": 1.0}]
    code, output = _validate_doc(tmp_path, minimal)
    assert code == 0, output
    path = tmp_path / "request.yaml"
    (doc,) = documents.load_documents(path.read_text())
    assert doc["spec"]["method"] == {"epochs": 30, "learningRate": 0.003}
    assert type(doc["spec"]["method"]["epochs"]) is int
    assert documents.load_documents("a: 1.0e+20\nb: 1.0e+21\nc: -2.0\nd: 0.5\ne: .inf\n") == [
        {"a": 10**20, "b": 1e21, "c": -2, "d": 0.5, "e": math.inf}]


def test_unreadable_file(tmp_path: Path) -> None:
    code, output = _run("validate", "-f", str(tmp_path / "missing.yaml"))
    assert (code, output) == (2, f"{tmp_path / 'missing.yaml'}: cannot be read: No such file or directory\n")


def test_creation_timestamps_stay_strings(tmp_path: Path, minimal: dict[str, Any]) -> None:
    minimal["metadata"]["annotations"] = {"requested-on": "2025-01-17"}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(minimal).replace("'2025-01-17'", "2025-01-17"))
    assert documents.load_documents(path.read_text())[0]["metadata"]["annotations"] == {"requested-on": "2025-01-17"}
    assert _run("validate", "-f", str(path))[0] == 0


# ---- run / demo extension points -----------------------------------------------------------------


@pytest.fixture
def fake_local(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, Any]]]:
    """``run`` and ``demo`` recorded instead of run (the parser is built on each call)."""
    calls: list[tuple[str, Any]] = []
    monkeypatch.setattr(run, "run_command", lambda args: calls.append(("run", args)) or 0)
    monkeypatch.setattr(demo, "demo_command", lambda args: calls.append(("demo", args)) or 3)
    yield calls


def test_run_and_demo_dispatch_to_their_modules(fake_local: list[tuple[str, Any]],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.HMAC_KEY_FILE_ENV, raising=False)
    assert _run("run", "-f", "r.yaml", "--workdir", "w", "--secrets", "s.yaml")[0] == 0
    assert _run("demo", "--seed", "3", "--patients", "2", "--json")[0] == 3
    assert _run("demo")[0] == 3
    (_, run), (_, demo), (_, default) = fake_local
    assert (run.filename, run.workdir, run.secrets, run.hmac_key_file) == ("r.yaml", "w", "s.yaml", None)
    assert (demo.workdir, demo.seed, demo.patients, demo.json) == (".demo", 3, 2, True)
    assert (default.seed, default.patients, default.json) == (0, None, False)


def test_run_hmac_key_file_defaults_to_the_environment(fake_local: list[tuple[str, Any]],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cli.HMAC_KEY_FILE_ENV, "/keys/from-env")
    _run("run", "-f", "r.yaml")
    _run("run", "-f", "r.yaml", "--hmac-key-file", "/keys/given")
    monkeypatch.setenv(cli.HMAC_KEY_FILE_ENV, "")
    _run("run", "-f", "r.yaml")
    assert [args.hmac_key_file for _, args in fake_local] == ["/keys/from-env", "/keys/given", None]


@pytest.mark.parametrize("make, problem", [
    (lambda path: None, "cannot be read: No such file or directory."),
    (lambda path: path.write_bytes(b""), "is empty; the receipt HMAC needs a non-empty key."),
    (lambda path: path.mkdir(), "cannot be read: Is a directory."),
], ids=["missing", "empty", "directory"])
def test_run_with_a_bad_hmac_key_file_exits_2_and_runs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               make: Callable[[Path], object],
                                                               problem: str) -> None:
    def must_not_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("run_request was called despite a bad --hmac-key-file")

    monkeypatch.setattr(run, "run_request", must_not_run)
    key = tmp_path / "hmac.key"
    make(key)
    workdir = tmp_path / "work"
    request = ROOT / "examples" / "unlearnrequest-minimal.yaml"
    code, output = _run("run", "-f", str(request), "--workdir", str(workdir), "--hmac-key-file", str(key))
    assert code == EXIT_INVALID
    assert output == f"forgetmi run: --hmac-key-file {key} {problem}\n"
    assert not workdir.exists()


# ---- junk never crashes it -----------------------------------------------------------------------

_SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats()
            | st.text(max_size=24) | st.sampled_from(["s3://bucket/k", "file:///x", "atMost", "original", "1Gi"]))
JUNK = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=16)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


FULL = next(d for d in yaml.safe_load_all((ROOT / "examples" / "unlearnrequest-full.yaml").read_text())
            if d["kind"] == "UnlearnRequest")
FULL_PATHS = _paths(FULL)[1:]


def _check_file(text: str) -> tuple[int, str]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "junk.yaml"
        path.write_text(text, encoding="utf-8")
        code, output = _run("validate", "-f", str(path))
    assert code in (0, 2), output
    assert "Traceback" not in output
    return code, output


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where=st.sampled_from(FULL_PATHS), junk=JUNK, extra_key=st.one_of(st.none(), st.text(max_size=8)))
def test_junk_anywhere_in_a_request_never_crashes(where: tuple[Any, ...], junk: Any, extra_key: str | None) -> None:
    request = copy.deepcopy(FULL)
    node = request
    for part in where[:-1]:
        node = node[part]
    if extra_key is not None and isinstance(node, dict):
        node[extra_key] = junk
    else:
        node[where[-1]] = junk
    code, _ = _check_file(yaml.safe_dump(request, allow_unicode=True))
    # What the CRD (schema + CEL) accepts, the operator's model accepts, and the other way round.
    spec = defaulted(request).get("spec")
    crd_ok = not [p for p in crd_problems(request) if p.path.startswith("spec")]
    try:
        UnlearnRequestSpec.model_validate(spec)
        model_ok = True
    except ValidationError:
        model_ok = False
    assert crd_ok == model_ok, json.dumps(spec, default=str)[:2000]
    if code == 0:
        assert crd_ok


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=300) | JUNK.map(lambda j: yaml.safe_dump({"apiVersion": "unlearning.forgetmi.io/v1alpha1",
                                                                       "kind": "UnlearnRequest", "spec": j})))
def test_arbitrary_text_never_crashes(text: str) -> None:
    _check_file(text)


QUANTITY_MESSAGE = "must be a resource quantity that is not negative, such as 500m, 4 or 16Gi"


@pytest.mark.parametrize(("path", "value", "expected"), [
    ("spec.resources.limits", {"memory": -1}, [("spec.resources.limits.memory", QUANTITY_MESSAGE)]),
    ("spec.resources.requests", {"cpu": "-500m"}, [("spec.resources.requests.cpu", QUANTITY_MESSAGE)]),
    ("spec.resources.requests", {"cpu": "+500m"}, []),
    ("metadata.name", "x.y..z", [("metadata.name", "must be a lowercase DNS subdomain: labels of a-z, 0-9 and '-' "
                                  "that start and end with a letter or digit, joined by '.', at most 253 "
                                  "characters")]),
    ("metadata.name", "x.y.z", []),
    ("spec.priorityClassName", "high..priority", [("spec.priorityClassName", "must be a lowercase DNS subdomain: "
                                                   "labels of a-z, 0-9 and '-' that start and end with a letter or "
                                                   "digit, joined by '.'")]),
])
def test_each_problem_is_one_sentence_naming_its_field(minimal: dict[str, Any], path: str, value: Any,
                                                       expected: list[tuple[str, str]]) -> None:
    _mutate(path, value)(minimal)
    assert [tuple(problem) for problem in validate_request(minimal)] == expected


def test_no_message_prints_a_pattern() -> None:
    spec = openapi_schema()["properties"]["spec"]
    patterns = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                patterns.add(node["pattern"])
            for child in node.values():
                walk(child)

    walk(spec)
    assert len(patterns) >= 8
    assert [p for p in patterns if not pattern_message(p).startswith("must be ")] == []
    assert pattern_message(r"^[a-z]+\Z") == "has an invalid format"  # the JSON Schema spelling of the CRD's $
    assert pattern_message(DNS_LABEL.removesuffix("$") + r"\Z") == pattern_message(DNS_LABEL)

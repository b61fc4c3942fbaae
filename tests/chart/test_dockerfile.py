"""The Dockerfile (no Docker engine here, so it is parsed, not built): the `operator` and
`trainer` targets exist, run as the non-root user the chart expects, start the right module,
and the operator image never installs the `trainer` extra (no torch)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from harness.examples import minimal_spec

from forgetmi_operator.api.settings import DEFAULT_TRAINER_IMAGE, Settings
from forgetmi_operator.cluster.jobs import build_job

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "forgetmi-operator"


def stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name → its instructions as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    result: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args.strip(), flags=re.IGNORECASE)
            assert match, f"unparsable FROM: {line}"
            current = result.setdefault(match.group(2) or f"stage{len(result)}", [])
            current.append(("FROM", match.group(1)))
        elif current is not None:
            current.append((instruction, args.strip()))
    return result


def last(stage: list[tuple[str, str]], instruction: str) -> str:
    values = [args for name, args in stage if name == instruction]
    assert values, f"no {instruction} in stage"
    return values[-1]


def chart_values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def test_dockerfile_has_operator_and_trainer_targets() -> None:
    assert {"operator", "trainer"} <= set(stages())


@pytest.mark.parametrize(("target", "module"), [("operator", "forgetmi_operator"), ("trainer", "forgetmi_trainer")])
def test_targets_run_their_module_as_the_charts_non_root_user(target: str, module: str) -> None:
    stage = stages()[target]
    assert json.loads(last(stage, "ENTRYPOINT")) == ["python", "-m", module]
    user = last(stage, "USER").split(":")[0]
    assert user.isdigit() and int(user) != 0
    values = chart_values()
    assert int(user) == values["securityContext"]["runAsUser"] == values["podSecurityContext"]["runAsUser"]
    assert "PYTHONSAFEPATH=1" in " ".join(args for name, args in stage if name == "ENV")


def test_operator_image_never_installs_the_trainer_extra_or_torch() -> None:
    stage = stages()["operator"]
    runs = " ".join(args for name, args in stage if name == "RUN")
    assert "pip install" in runs
    assert "[trainer" not in runs and "trainer]" not in runs and "torch" not in runs
    assert "python:3.11-slim" in (ROOT / "Dockerfile").read_text()


def test_trainer_image_installs_the_trainer_extra() -> None:
    runs = " ".join(args for name, args in stages()["trainer"] if name == "RUN")
    assert "[trainer]" in runs


def test_chart_image_defaults_match_the_images_and_settings() -> None:
    values = chart_values()
    assert values["image"]["repository"].endswith("/forgetmi-operator")
    assert values["trainer"]["image"] == DEFAULT_TRAINER_IMAGE
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert DEFAULT_TRAINER_IMAGE.endswith(f":{app_version}")


def test_dockerignore_keeps_the_build_context_small() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".tools", "tests", "charts"} <= ignored
    assert not {"operator", "trainer", "pyproject.toml"} & ignored


@pytest.mark.parametrize("kind", ["unlearn", "retrain"])
def test_the_trainer_job_runs_as_the_trainer_images_user(kind: str) -> None:
    """The Job's pod and container run as the UID:GID the trainer image's USER names (and the
    chart's operator), so files the image owns and the volumes it writes agree."""
    uid, gid = (int(part) for part in last(stages()["trainer"], "USER").split(":"))
    job = build_job(minimal_spec(), Settings(), name="r", namespace="ns", uid="0b3f9c2e-1111", kind=kind)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (uid, gid)
    assert pod["securityContext"]["fsGroup"] == gid
    assert (container["securityContext"]["runAsUser"], container["securityContext"]["runAsGroup"]) == (uid, gid)
    assert uid == chart_values()["podSecurityContext"]["runAsUser"]

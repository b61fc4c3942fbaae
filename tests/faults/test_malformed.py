"""Malformed input: UnlearnRequests that are not valid, and trainer reports that are not reports.

- 250 single mutations of a valid request (:mod:`harness.malformed`: wrong types, missing required fields,
  unknown fields and inlined patient IDs, bad enums, out-of-range numbers, bad URIs, changes of immutable
  fields), drawn by Hypothesis (derandomized, a fixed number), each refused by ``forgetmi validate``'s own
  checks (``validate_text``, in-process; ``validate_request`` with the old object for an update) with a
  problem naming the field, and never echoing inlined patient IDs;
- 40 of them (all but the immutability changes, which only an update can make and which the API server's
  CEL rules refuse) created straight in the emulated API server — which, unlike a real one, validates no
  schema, so every one reaches the operator (a subprocess): each ends Failed with ``Accepted=False`` naming
  the field, the operator stays up, counts at most one reconcile error per request, and logs no traceback;
- a Job that "succeeds" but leaves a report that is truncated, not JSON, of the wrong schema, larger than
  ``reportMaxBytes``, or another request's: each request ends Failed with ``Unlearned=False``
  (``ReportInvalid``) naming the report, and nothing is promoted.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.cluster import REQUESTS, SECRETS
from harness.emulator import ApiServer
from harness.faultcluster import FaultCluster
from harness.jobrunner import JobRunner
from harness.malformed import KINDS, Mutation, mutations, names_field, valid_request
from harness.reports import make_report
from harness.requests import secret
from harness.warmtrainer import ForkServer
from hypothesis import HealthCheck, given, settings

from forgetmi_operator.local.schema import validate_request
from forgetmi_operator.local.validate import validate_text
from forgetmi_operator.registry import aliases
from forgetmi_trainer import storage
from forgetmi_trainer.storage import DEFAULT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
EXAMPLES = 250
API_SAMPLE = 40
REPORT_MAX_BYTES = 65536


def fixed(examples: int) -> settings:
    """Hypothesis settings that draw the same ``examples`` every run."""
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                    suppress_health_check=list(HealthCheck))


MODEL = "m-malformed"


def _request(world: dict[str, Any]) -> dict[str, Any]:
    return valid_request(str(world["registry"]), str(world["manifest"]), MODEL)


def test_every_malformed_request_is_refused_by_validate_naming_its_field(world: dict[str, Any]) -> None:
    request = _request(world)
    assert validate_text(yaml.safe_dump(request), "valid.yaml") == (["malformed"], [])
    seen: Counter[str] = Counter()

    @fixed(EXAMPLES)
    @given(mutations())
    def refused(mutation: Mutation) -> None:
        new, old = mutation.apply(request)
        if old is None:
            valid, invalid = validate_text(yaml.safe_dump(new, sort_keys=False), "malformed.yaml")
            assert valid == [] and len(invalid) == 1, (mutation, valid)
            problems = invalid[0][1]
        else:
            problems = validate_request(new, old=old)
        assert names_field([p.path for p in problems], mutation.field), (mutation, problems)
        if mutation.kind == "inlined-ids":
            assert not any(subject in str(problems) for subject in mutation.value), problems
        seen[mutation.kind] += 1

    refused()
    assert sum(seen.values()) >= 200, seen
    assert set(seen) == set(KINDS), seen


def _sample(count: int) -> list[Mutation]:
    """``count`` of the creatable mutations, spread over the kinds and fields: Hypothesis draws
    :data:`EXAMPLES`, and they are taken a kind at a time, a field not taken yet first."""
    drawn: list[Mutation] = []

    @fixed(EXAMPLES)
    @given(mutations(immutable=False))
    def draw(mutation: Mutation) -> None:
        drawn.append(mutation)

    draw()
    by_kind: dict[str, list[Mutation]] = {}
    for mutation in drawn:
        by_kind.setdefault(mutation.kind, []).append(mutation)
    for kind, found in by_kind.items():  # each field's first mutation first, in the order drawn
        firsts, rest, fields = [], [], set()
        for mutation in found:
            (rest if mutation.field in fields else firsts).append(mutation)
            fields.add(mutation.field)
        by_kind[kind] = firsts + rest
    sample: list[Mutation] = []
    while len(sample) < count and any(by_kind.values()):
        for found in by_kind.values():
            if found and len(sample) < count:
                sample.append(found.pop(0))
    return sample


def _reconcile_errors(metrics: str) -> dict[str, float]:
    return {found["handler"]: float(found["value"]) for found in re.finditer(
        r'^forgetmi_reconcile_errors_total\{handler="(?P<handler>[^"]+)"\} (?P<value>\S+)$', metrics, re.M)}


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def test_malformed_requests_created_in_the_api_server_end_failed_naming_the_field(
        world: dict[str, Any], trainer_server: ForkServer, s3_env: str, tmp_path: Path) -> None:
    sample = _sample(API_SAMPLE)
    assert len(sample) == API_SAMPLE
    request = _request(world)
    names = [f"malformed-{i}" for i in range(len(sample))]
    with FaultCluster(tmp_path, world, trainer_server) as cluster:
        cluster.seed(MODEL)
        cluster.api.create(SECRETS, cluster.namespace, secret("malformed-subjects", "subjects",
                                                              "\n".join(world["subjects"]).encode()))
        cluster.operator.start()
        cluster.operator.wait_serving()
        for name, mutation in zip(names, sample, strict=True):
            body, _ = mutation.apply(request)
            body["metadata"]["name"] = name
            cluster.api.create(REQUESTS, cluster.namespace, body)
        ended = cluster.wait_ended(names, 120)
        errors = _reconcile_errors(cluster.operator.metrics())
        alive, tracebacks = cluster.operator.alive, cluster.operator.tracebacks()
        jobs = cluster.job_names()
    wrong = []
    for (name, obj), mutation in zip(ended.items(), sample, strict=True):
        accepted = _condition(obj, "Accepted")
        named = re.search(re.escape(mutation.field) + r"[:.\[]", accepted.get("message", "")) is not None
        if obj["status"]["phase"] != "Failed" or accepted.get("status") != "False" or not named:
            wrong.append(f"{name} ({mutation.kind} at {mutation.field}): {obj['status']['phase']}, Accepted "
                         f"{accepted.get('reason')}: {accepted.get('message')}")
    assert wrong == [], "\n".join(wrong)
    assert alive and tracebacks == 0, f"alive {alive}, {tracebacks} tracebacks in the operator's log"
    assert 0 < sum(errors.values()) <= len(sample), errors
    assert not jobs


class ReportWriter(JobRunner):
    """Plays a Job that succeeds without running the trainer, leaving ``reports[name]`` (the bytes) as
    the report of request ``name``'s run."""

    def __init__(self, api: ApiServer, workdir: Path, reports: dict[str, bytes]) -> None:
        super().__init__(api, workdir)
        self.reports = reports

    def _run_pod(self, ns: str, job_name: str, config_path: Path, env: dict[str, str],
                 tmp: Path) -> tuple[int, str]:
        config = json.loads(config_path.read_text())
        uri = config.get("report_uri") or storage.join(config["output_uri"], "report.json")
        (name,) = [name for name in self.reports if job_name.startswith(f"forgetmi-{name}-")]
        storage.write_bytes(uri, self.reports[name])
        return 0, ""


def test_a_malformed_report_fails_the_request_and_promotes_nothing(
        world: dict[str, Any], trainer_server: ForkServer, s3_env: str, tmp_path: Path) -> None:
    report = make_report().model_dump_json(by_alias=True).encode()
    reports = {"truncated": report[: len(report) // 2], "not-json": b"\x89PNG\r\n not a report \xff",
               "wrong-schema": json.dumps({"request": "elsewhere/x", "counts": "many"}).encode(),
               "huge": report + b" " * REPORT_MAX_BYTES, "foreign": report}
    with FaultCluster(tmp_path, world, trainer_server, env={"FORGETMI_REPORT_MAX_BYTES": str(REPORT_MAX_BYTES)},
                      runner=lambda api, workdir: ReportWriter(api, workdir, reports)) as cluster:
        for name in reports:
            cluster.seed(f"m-report-{name}")
        cluster.operator.start()
        for name in reports:
            cluster.apply(name, f"m-report-{name}")
        ended = cluster.wait_ended(list(reports), 90)
        figures = cluster.figures(scenario="malformed reports")
        tracebacks = cluster.operator.tracebacks()
    wrong = []
    for name, obj in ended.items():
        unlearned = _condition(obj, "Unlearned")
        alias = aliases.resolve_alias(DEFAULT, str(world["registry"]), f"m-report-{name}", "production").version
        if (obj["status"]["phase"], unlearned.get("status"), unlearned.get("reason")) != ("Failed", "False",
                                                                                          "ReportInvalid") \
                or "report" not in unlearned.get("message", "") or alias != "v1" or obj["status"].get("candidateModel"):
            wrong.append(f"{name}: {obj['status']['phase']}, Unlearned {unlearned.get('reason')}: "
                         f"{unlearned.get('message')}; alias → {alias}")
    assert wrong == [], "\n".join(wrong)
    assert figures.problems() == [], "\n".join(figures.problems())
    assert tracebacks == 0

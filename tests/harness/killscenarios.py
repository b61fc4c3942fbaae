"""Operator kills during one request's lifecycle (tests/faults/test_kill_points.py, bench/faults.py).

A :class:`KillScenario` starts the operator (a subprocess, :class:`~harness.faultcluster.FaultCluster`),
applies one request on a model of its own, and kills the operator one way or another:

- ``failpoint``: the operator is started with ``points[0]`` armed (``FORGETMI_FAILPOINTS``) and SIGKILLs
  itself there; it is started again with the next point armed (a double kill), and finally with none.
  With ``move_alias_on``, while it is down after ``after-alias-write`` the alias is moved on, as another
  promotion would (:func:`move_alias_on`);
- ``mid-run``: SIGKILL once the request's status shows its Job running;
- ``random``: SIGKILL ``delay`` seconds after the request was applied.

:func:`run_kill_scenario` then waits for the request to end and gathers a :class:`KillResult`: the
invariants' figures, whether each failpoint was reached, the request's Events, whether its copy of the
forget list is gone, its receipt and where its alias is.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from forgetmi_operator.api import conditions as cond
from forgetmi_operator.api import failpoints
from forgetmi_operator.lifecycle import receipts
from forgetmi_operator.registry import aliases
from forgetmi_operator.registry.paths import METADATA_FILE, version_uri
from forgetmi_trainer import storage
from forgetmi_trainer.storage import DEFAULT
from harness.cluster import SECRETS
from harness.faultcluster import FaultCluster, Fleet
from harness.invariants import Figures
from harness.registries import point
from harness.warmtrainer import ForkServer

Mode = Literal["failpoint", "mid-run", "random"]
REQUEST = "r"
END_TIMEOUT = 150.0
KILL_TIMEOUT = 90.0
SETTLE_SECONDS = 20.0
"""How long after the request ended its lost Events and its copy's deletion may still come."""


@dataclass(frozen=True)
class KillScenario:
    name: str
    mode: Mode = "failpoint"
    points: tuple[str, ...] = ()
    delay: float = 0.0
    move_alias_on: bool = False


@dataclass
class KillResult:
    scenario: KillScenario
    figures: Figures = field(default_factory=Figures)
    phase: str | None = None
    reached: list[bool] = field(default_factory=list)
    """Per armed point: whether the operator died there."""
    exit_codes: list[int] = field(default_factory=list)
    events: Counter[str] = field(default_factory=Counter)
    copy_secret: str | None = None
    copy_secret_left: bool | None = None
    receipt: dict[str, Any] | None = None
    candidate: str | None = None
    moved_on_to: str | None = None
    alias_version: str | None = None
    error: str | None = None
    seconds: float = 0.0


def move_alias_on(cluster: FaultCluster, model: str) -> str:
    """Move alias ``production`` of ``model`` on from the version it names (a candidate) to a new version
    descending from it — the candidate's files copied, its ``metadata.json``'s ``parent`` that candidate —
    with a conditional write against the alias's current token, as another promotion would; the new version."""
    registry = str(cluster.world["registry"])
    current = aliases.resolve_alias(DEFAULT, registry, model, "production")
    moved = f"{current.version}-next"
    source, target = version_uri(registry, model, current.version), version_uri(registry, model, moved)
    for uri in storage.list_uris(source):
        relative = uri[len(source) + 1:]
        data = storage.read_bytes(uri)
        if relative == METADATA_FILE:
            meta = storage.read_json(uri)
            meta["parent"] = current.version
            storage.write_json(storage.join(target, relative), meta)
        else:
            storage.write_bytes(storage.join(target, relative), data)
    other = aliases.RequestRef(namespace=cluster.namespace, name="another-promotion", uid=str(uuid.uuid4()))
    point(registry, model, "production", moved, expected_token=current.token, request=other)
    return moved


def _await_kill(cluster: FaultCluster, timeout: float) -> bool:
    """Whether the operator killed itself (exit -9) within ``timeout`` s; False once the request has ended
    and the operator still runs a few seconds later (the point is not on this request's way any more)."""
    deadline, ended_at = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if not cluster.operator.alive:
            return cluster.operator.wait_killed(1) == -9
        if ended_at is None and cond.is_terminal(cluster.status(REQUEST).get("phase")):
            ended_at = time.monotonic()
        if ended_at is not None and time.monotonic() - ended_at > 5:
            return False
        time.sleep(0.1)
    return False


def _running(status: dict[str, Any]) -> bool:
    unlearned = cond.reason_of(status.get("conditions") or [], "Unlearned")
    return bool(status.get("progress")) or unlearned == cond.JOB_RUNNING


def _kill(cluster: FaultCluster, scenario: KillScenario, result: KillResult, model: str) -> None:
    operator = cluster.operator
    if scenario.mode == "failpoint":
        for index, armed in enumerate(scenario.points):
            result.reached.append(_await_kill(cluster, KILL_TIMEOUT))
            if scenario.move_alias_on and armed == "after-alias-write" and result.reached[-1]:
                result.moved_on_to = move_alias_on(cluster, model)
            following = scenario.points[index + 1] if index + 1 < len(scenario.points) else None
            operator.restart({failpoints.ENV: following})
        return
    if scenario.mode == "mid-run":
        cluster.wait(lambda: _running(cluster.status(REQUEST)), KILL_TIMEOUT, "the request's Job to run")
    else:
        time.sleep(scenario.delay)
    operator.kill()
    operator.start()


def _settle(cluster: FaultCluster, result: KillResult) -> None:
    """Give the restarted operator time to post the Promoted Event and delete the copy of the list."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        secret_left = result.copy_secret is not None and \
            cluster.api.get(SECRETS, cluster.namespace, result.copy_secret) is not None
        if cluster.events(REQUEST, cond.PROMOTED) and not secret_left:
            break
        time.sleep(0.3)


def run_kill_scenario(tmp: Path, world: dict[str, Any], server: ForkServer, scenario: KillScenario, *,
                      fleet: Fleet | None = None) -> KillResult:
    """Run ``scenario`` (see the module docstring) in a cluster of its own (a namespace of ``fleet``'s
    emulator, when given); never raises for what the scenario found (``error`` says what went wrong)."""
    result = KillResult(scenario)
    started = time.monotonic()
    model = f"m-kill-{scenario.name}"
    with FaultCluster(tmp, world, server, fleet=fleet) as cluster:
        try:
            cluster.seed(model)
            first = scenario.points[0] if scenario.mode == "failpoint" and scenario.points else None
            cluster.operator.start({failpoints.ENV: first})
            cluster.apply(REQUEST, model)
            _kill(cluster, scenario, result, model)
            status = cluster.wait_ended([REQUEST], END_TIMEOUT)[REQUEST]["status"]
            result.copy_secret = status.get("subjectsSecretName")
            _settle(cluster, result)
            status = cluster.status(REQUEST)
            result.phase = status.get("phase")
            result.candidate = (status.get("candidateModel") or {}).get("version")
            if result.copy_secret:
                result.copy_secret_left = cluster.api.get(SECRETS, cluster.namespace, result.copy_secret) is not None
            result.events = Counter(e.get("reason") for e in cluster.events(REQUEST))
            if (status.get("receipt") or {}).get("uri"):
                stored = receipts.read_stored(storage.read_bytes(status["receipt"]["uri"]))
                result.receipt = stored.receipt.model_dump(mode="json", by_alias=True)
            result.alias_version = aliases.resolve_alias(DEFAULT, str(world["registry"]), model, "production").version
            result.figures = cluster.figures([REQUEST], scenario=scenario.name, exempt=())
        except AssertionError as err:
            result.error = str(err)
            result.figures = cluster.figures([REQUEST], scenario=scenario.name, exempt=(), privacy=False)
        result.exit_codes = list(cluster.operator.exit_codes)
    result.seconds = result.figures.seconds = time.monotonic() - started
    return result

"""SIGKILLing the operator (a subprocess) at each named failpoint of a request's lifecycle, while its Job
runs, and at random times, then starting it again: every request still ends Promoted, once, with a
receipt; no Job is created twice; the alias always names a complete version with the digest it records;
no forgotten patient ID leaves the request's Secrets (operator/api/failpoints.py names the points).

Each scenario runs in a cluster of its own (emulator, namespace, operator, model) with the real trainer
(:mod:`harness.killscenarios`); they all run at once, once for the module, and each test checks one.
Three restarts must also recover what the kill lost on the way:

- killed after the terminal status was saved, before its Events and the deletion of the forget list's
  copy: the restarted operator deletes the copy (status.subjectsSecretName) and posts the Promoted Event;
- killed after the Job was created, before the status said so: the JobCreated Event is posted;
- killed right after the alias write, and while it is down the alias is moved on (as a later promotion
  would): the request ends Promoted, the alias is left where it was moved, and the receipt records it.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from harness.faultcluster import Fleet
from harness.killscenarios import KillResult, KillScenario, run_kill_scenario
from harness.warmtrainer import ForkServer

from forgetmi_operator.api import failpoints

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
_delays = random.Random(20261202)
SCENARIOS = [
    *(KillScenario(point, points=(point,)) for point in failpoints.POINTS),
    KillScenario("alias-moved-on", points=("after-alias-write",), move_alias_on=True),
    KillScenario("mid-run", mode="mid-run"),
    *(KillScenario(f"random-{i}", mode="random", delay=round(_delays.uniform(0.5, 8.0), 2)) for i in (1, 2)),
]


@pytest.fixture(scope="module")
def results(world: dict[str, Any], trainer_server: ForkServer,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, KillResult]:
    tmp = {scenario.name: tmp_path_factory.mktemp(scenario.name) for scenario in SCENARIOS}
    with Fleet(tmp_path_factory.mktemp("fleet"), trainer_server) as fleet, ThreadPoolExecutor(len(SCENARIOS)) as pool:
        done = pool.map(lambda s: run_kill_scenario(tmp[s.name], world, trainer_server, s, fleet=fleet), SCENARIOS)
        return {result.scenario.name: result for result in done}


def _promoted_once(result: KillResult) -> None:
    assert result.error is None, result.error
    assert result.phase == "Promoted", f"{result.scenario.name} ended {result.phase}"
    assert result.figures.problems() == [], "\n".join(result.figures.problems())


@pytest.mark.parametrize("point", failpoints.POINTS)
def test_a_kill_at_the_failpoint_then_a_restart_promotes_the_request_once(results: dict[str, KillResult],
                                                                          point: str) -> None:
    result = results[point]
    assert result.reached == [True], f"the operator did not die at {point} (exit codes {result.exit_codes})"
    assert result.exit_codes[0] == -9
    _promoted_once(result)
    assert result.receipt is not None and result.receipt["decision"] == "Promote"
    assert result.alias_version == result.candidate


def test_after_the_terminal_status_the_restart_deletes_the_lists_copy_and_posts_the_promoted_event(
        results: dict[str, KillResult]) -> None:
    result = results["after-terminal-status"]
    assert result.copy_secret is not None
    assert result.copy_secret_left is False, f"the copy {result.copy_secret} of the forget list is still there"
    assert result.events["Promoted"] >= 1, f"no Promoted Event; the request's Events: {dict(result.events)}"


def test_after_the_job_was_created_the_restart_posts_the_job_created_event(results: dict[str, KillResult]) -> None:
    result = results["after-job-create"]
    assert result.events["JobCreated"] == 1, f"the request's Events: {dict(result.events)}"


def test_an_alias_moved_on_while_the_operator_was_down_is_kept_and_recorded_in_the_receipt(
        results: dict[str, KillResult]) -> None:
    result = results["alias-moved-on"]
    assert result.reached == [True] and result.moved_on_to is not None
    _promoted_once(result)
    assert result.alias_version == result.moved_on_to  # never moved back over the later promotion
    assert result.receipt is not None
    promotion = result.receipt["promotion"]
    assert promotion["version"] == result.candidate
    assert promotion.get("movedOnTo") == result.moved_on_to, promotion


@pytest.mark.parametrize("name", ["mid-run", "random-1", "random-2"])
def test_a_kill_while_the_job_runs_or_at_a_random_time_then_a_restart_promotes_the_request_once(
        results: dict[str, KillResult], name: str) -> None:
    result = results[name]
    assert result.exit_codes[0] == -9
    _promoted_once(result)
    assert result.alias_version == result.candidate

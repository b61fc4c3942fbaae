"""Many requests for one model at once (coalescing off, so each runs its own Job and they race to promote),
through the real operator (a subprocess) and real trainer runs: none is lost, and every request that lost
the race is rebased onto the version the alias was moved on to (docs/rebase.md).

- With the default rebase limit (``spec.rollout.maxRebases`` 3), every request ends Promoted, or Held
  with a receipt saying why it was not promoted (``notPromoted``: the alias moved on and it was rebased
  as often as allowed);
- with ``maxRebases`` high enough for all, every request ends Promoted, each on the candidate of another
  (status.baseModel.version): the promotions form one chain from v1, and the alias record's history lists
  every one of them.

The 50-request versions of both are in ``bench/faults.py`` (``--scenarios concurrent``): a chain of n
requests runs n(n+1)/2 trainer runs, 1,275 for 50, beyond this suite's time; here it is :data:`COUNT` requests with
the default limit, and a chain of :data:`CHAIN` (the same assertions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness.races import chain_problems, held_problems, run_race
from harness.warmtrainer import ForkServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
COUNT = 6
CHAIN = 5
DEFAULT_MAX_REBASES = 3


def test_with_the_default_rebase_limit_every_request_is_promoted_or_held_with_a_receipt_saying_why(
        world: dict[str, Any], trainer_server: ForkServer, s3_env: str, tmp_path: Path) -> None:
    race = run_race(tmp_path, world, trainer_server, "m-race-default", COUNT)
    assert race.figures.problems() == [], "\n".join(race.figures.problems())  # none lost, each with a receipt
    assert race.alias_problems == [], race.alias_problems
    assert held_problems(race.ended, DEFAULT_MAX_REBASES) == []
    phases = [obj["status"]["phase"] for obj in race.ended.values()]
    assert "Promoted" in phases and "Held" in phases, phases  # COUNT at once: the last ones run out of rebases


def test_with_rebases_enough_for_all_every_request_is_promoted_one_on_another_and_the_history_lists_each(
        world: dict[str, Any], trainer_server: ForkServer, s3_env: str, tmp_path: Path) -> None:
    race = run_race(tmp_path, world, trainer_server, "m-race-chain", CHAIN,
                    rollout={"mode": "Automatic", "maxRebases": CHAIN})
    assert race.figures.problems() == [], "\n".join(race.figures.problems())
    assert race.alias_problems == [], race.alias_problems
    assert {obj["status"]["phase"] for obj in race.ended.values()} == {"Promoted"}
    assert chain_problems(race.ended, race.record) == []

"""Named crash points for the fault suite (tests/faults/, bench/faults.py): the operator kills itself
with SIGKILL when it reaches a point that ``FORGETMI_FAILPOINTS`` names, so a test can stop it at an
exact step of a request's lifecycle and check what a restart recovers. Unset (always, outside those
tests), :func:`reach` only reads a module-level value: nothing else happens.

``FORGETMI_FAILPOINTS`` is a comma-separated list of ``NAME`` or ``NAME:N`` (kill the N-th time the
point is reached, counting from 1; ``NAME`` is ``NAME:1``). The points, in lifecycle order:

- ``after-accept``: the request's inputs were checked and its base version pinned, nothing created;
- ``after-subjects-copy``: the request's copy of its forget list exists, no Job yet;
- ``after-job-create``: the Job (or TrainJob) exists, the request's status does not say so yet;
- ``on-job-complete``: the operator saw the Job succeed, nothing concluded;
- ``before-alias-write`` / ``after-alias-write``: around the conditional write that promotes;
- ``after-receipt``: the receipt is written, the request's terminal status is not;
- ``after-terminal-status``: the terminal status is saved, its Events not posted, the copy of the
  forget list not deleted.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import Counter

ENV = "FORGETMI_FAILPOINTS"
POINTS = ("after-accept", "after-subjects-copy", "after-job-create", "on-job-complete", "before-alias-write",
          "after-alias-write", "after-receipt", "after-terminal-status")
log = logging.getLogger(__name__)


def parse(text: str) -> dict[str, int]:
    """``NAME[:N],…`` → {name: N}; ValueError naming an unknown point or a bad count."""
    armed: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, count = item.partition(":")
        if name not in POINTS:
            raise ValueError(f"{ENV}: unknown failpoint {name!r}; the points are {', '.join(POINTS)}.")
        if count and (not count.isdigit() or int(count) < 1):
            raise ValueError(f"{ENV}: the count of failpoint {name!r} must be a whole number ≥ 1, not {count!r}.")
        armed[name] = int(count or 1)
    return armed


_ARMED = parse(os.environ.get(ENV, ""))
_REACHED: Counter[str] = Counter()


def reach(name: str) -> None:
    """Kill this process (SIGKILL: no cleanup, no flush but the log line) when ``name`` is armed and
    reached for the N-th time."""
    if name not in POINTS:
        raise ValueError(f"Unknown failpoint {name!r}.")
    if name not in _ARMED:
        return
    _REACHED[name] += 1
    if _REACHED[name] == _ARMED[name]:
        log.critical("Failpoint %s reached (%d): killing the operator.", name, _REACHED[name])
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)

"""Promotion races for the fault suite and its bench: many requests for one model at once, coalescing off, so
each runs its own Job and the first to conclude moves the alias; the others lose the race and are rebased
onto the version it was moved on to, up to ``spec.rollout.maxRebases`` times (docs/rebase.md).

:func:`run_race` runs one; :func:`held_problems` checks that every request that ended without promotion
has a receipt saying why; :func:`chain_problems` that promoted requests form one chain from the base version
(each one's ``status.baseModel`` the candidate of the one before) which the alias record's history lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgetmi_operator.lifecycle import receipts
from forgetmi_operator.registry import aliases
from forgetmi_trainer import storage
from forgetmi_trainer.storage import DEFAULT
from harness.faultcluster import FaultCluster
from harness.invariants import AliasMonitor, Figures
from harness.requests import train_subjects
from harness.warmtrainer import ForkServer


@dataclass
class Race:
    ended: dict[str, dict[str, Any]] = field(default_factory=dict)
    figures: Figures = field(default_factory=Figures)
    alias_problems: list[str] = field(default_factory=list)
    record: aliases.AliasRecord | None = None


def run_race(tmp: Path, world: Mapping[str, Any], server: ForkServer, model: str, count: int, *,
             end_timeout: float = 300.0, **spec: Any) -> Race:
    """``count`` requests on ``model`` applied at once, each forgetting one training patient (a patient of
    its own while there are enough, then the first ones again; ``spec``: fields of their specs); their
    ends, the invariants' figures (receipts for every end), the alias monitor's findings and the alias
    record at the end."""
    patients = train_subjects(dict(world))
    names = [f"race-{i}" for i in range(count)]
    race = Race()
    with FaultCluster(tmp, world, server) as cluster, AliasMonitor(str(world["registry"]), [model]) as monitor:
        cluster.seed(model)
        cluster.operator.start()
        cluster.operator.wait_serving()
        for i, name in enumerate(names):
            cluster.apply(name, model, [patients[i % len(patients)]], **spec)
        race.ended = cluster.wait_ended(names, end_timeout)
        race.figures = cluster.figures(scenario=f"{count} at once", exempt=())
    race.alias_problems = monitor.problems
    race.record = aliases.resolve_alias(DEFAULT, str(world["registry"]), model, "production").record
    return race


def receipt_of(obj: Mapping[str, Any]) -> receipts.Receipt:
    return receipts.read_stored(storage.read_bytes(obj["status"]["receipt"]["uri"])).receipt


def held_problems(ended: Mapping[str, Mapping[str, Any]], max_rebases: int) -> list[str]:
    """A request that ended held must have been rebased ``max_rebases`` times and have a receipt saying
    it lost the race that often (``notPromoted``); a promoted one's receipt names its promotion."""
    problems = []
    for name, obj in ended.items():
        status = obj["status"]
        if status["phase"] not in ("Promoted", "Held"):
            why = next((c for c in status.get("conditions") or [] if c.get("status") == "False"), {})
            problems.append(f"{name} ended {status['phase']} ({why.get('reason')}: {why.get('message')})")
            continue
        receipt = receipt_of(obj)
        why = receipt.not_promoted
        if status["phase"] == "Promoted":
            if receipt.promotion is None or why is not None:
                problems.append(f"{name} is Promoted, but its receipt does not say so")
        elif why is None:
            problems.append(f"{name}'s receipt does not say why it was not promoted")
        elif why.reason != "PromotionConflict" or "maxRebases" not in why.message:
            problems.append(f"{name} was held after {status.get('rebases')} of {max_rebases} rebases, its receipt "
                            f"saying {why.reason}: {why.message}")
        elif status.get("rebases") != max_rebases or receipt.rebases != max_rebases:
            problems.append(f"{name} was held after {status.get('rebases')} rebases (receipt: {receipt.rebases}), "
                            f"not {max_rebases}")
    return problems


def chain_problems(ended: Mapping[str, Mapping[str, Any]], record: aliases.AliasRecord | None,
                   first: str = "v1") -> list[str]:
    """The promoted requests, followed from ``first`` by their base versions, must be one chain holding
    all of them, and the alias (now the last candidate) with its history must list each promotion once,
    newest first, down to ``first``."""
    base = {name: obj["status"]["baseModel"]["version"] for name, obj in ended.items()}
    candidate = {name: (obj["status"].get("candidateModel") or {}).get("version") for name, obj in ended.items()}
    chain, version = [], first
    while following := [name for name, b in base.items() if b == version and name not in chain]:
        if len(following) > 1:
            return [f"{sorted(following)} were all promoted over version {version}"]
        chain.append(following[0])
        version = candidate[following[0]]
    if sorted(chain) != sorted(ended):
        return [f"the chain from {first} holds {len(chain)} of the {len(ended)} requests"]
    if record is None:
        return ["the alias could not be read"]
    listed = [(record.version, record.request.name if record.request else None),
              *((entry.version, entry.request.name if entry.request else None) for entry in record.history)]
    expected = [(candidate[name], name) for name in reversed(chain)] + [(first, None)]
    if listed[: len(expected)] != expected:
        return [f"the alias history lists {listed[:len(expected)]}, not the chain's promotions {expected}"]
    return []

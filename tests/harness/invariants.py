"""What must hold after a fault scenario (tests/faults/, bench/faults.py), each check returning problems
(sentences; empty when it holds) and :class:`Figures` adding them up:

- **no duplicate Job:** every Job (or TrainJob) name was created once in the namespace (the emulator's
  history keeps every ADDED event, so a Job deleted and created again shows), and the Job runner started
  each trainer run once;
- **no lost request:** every request ends in a terminal phase (Promoted, Held, Failed), or the one
  expected of it;
- **a consistent alias:** the alias names a complete version (every file its ``metadata.json`` lists,
  with that digest, and no other) whose weights' sha256 is the one the alias record keeps — checked at
  the end and, with :class:`AliasMonitor`, every time the alias changed during the scenario;
- **receipts:** every request that ended (Failed ones only where the test says so) has
  ``status.receipt``, whose object has that sha256 and is this request's receipt, and whose decision
  agrees with the phase;
- **privacy:** no forgotten patient ID outside the request's own Secrets (the referenced one and the
  copies the request owns) and the file the Job mounts (:func:`visible_texts` gathers the rest).

Messages name sources and counts, never a patient ID.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from forgetmi_operator.lifecycle import receipts
from forgetmi_operator.registry import aliases
from forgetmi_trainer import storage
from forgetmi_trainer.errors import StorageError
from forgetmi_trainer.storage import DEFAULT
from harness.cluster import JOBS, REQUESTS, SECRETS, TRAINJOBS
from harness.emulator import ApiServer

TERMINAL = ("Promoted", "Held", "Failed")
TEXT_MAX_BYTES = 16 * 1024 * 1024
"""The most of one object or file the privacy sweep reads."""


@dataclass
class Figures:
    """What a scenario counted; :meth:`problems` is empty when every invariant held."""

    scenario: str = ""
    requests: int = 0
    phases: Counter[str] = field(default_factory=Counter)
    jobs_created: int = 0
    duplicate_jobs: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    broken_aliases: list[str] = field(default_factory=list)
    missing_receipts: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def problems(self) -> list[str]:
        groups = {"duplicate Job": self.duplicate_jobs, "lost request": self.lost,
                  "broken alias": self.broken_aliases, "receipt": self.missing_receipts,
                  "privacy": self.leaks, "other": self.other}
        return [f"{what}: {problem}" for what, found in groups.items() for problem in found]


# ---- requests and Jobs ----------------------------------------------------------------------------


def requests(api: ApiServer, namespace: str, names: Iterable[str]) -> dict[str, dict[str, Any] | None]:
    return {name: api.get(REQUESTS, namespace, name) for name in names}


def phase_of(obj: Mapping[str, Any] | None) -> str | None:
    return ((obj or {}).get("status") or {}).get("phase")


def lost_requests(api: ApiServer, namespace: str, names: Iterable[str],
                  expected: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """Requests that do not exist, have not ended, or ended otherwise than ``expected`` (name → phases)."""
    problems = []
    for name, obj in requests(api, namespace, names).items():
        phase = phase_of(obj)
        allowed = (expected or {}).get(name, TERMINAL)
        if obj is None:
            problems.append(f"request {name} is gone")
        elif phase not in allowed:
            problems.append(f"request {name} is {phase or 'without a phase'}, not {' or '.join(allowed)}")
    return problems


def job_creations(api: ApiServer, namespace: str) -> Counter[str]:
    """How many times each Job or TrainJob name was created in ``namespace`` (the emulator's history)."""
    with api.lock:
        events = [(key, event) for _, key, event in api.history]
    return Counter(event["object"]["metadata"]["name"] for key, event in events
                   if key in (JOBS, TRAINJOBS) and event["type"] == "ADDED"
                   and event["object"]["metadata"].get("namespace") == namespace)


def duplicate_jobs(api: ApiServer, namespace: str, started: Sequence[str] = ()) -> list[str]:
    """Job names created more than once, and trainer runs started more than once (``started``: the Job
    runner's list)."""
    created = job_creations(api, namespace)
    problems = [f"Job {name} was created {count} times" for name, count in sorted(created.items()) if count > 1]
    runs = Counter(started)
    problems += [f"the trainer of Job {name} was started {count} times" for name, count in sorted(runs.items())
                 if count > 1 and created.get(name, 0) <= 1]
    return problems


# ---- the alias -----------------------------------------------------------------------------------


def alias_problems(registry: str, model: str, alias: str = "production") -> list[str]:
    """Whether ``alias`` names a complete version whose weights have the digest the record keeps."""
    try:
        resolved = aliases.resolve_alias(DEFAULT, registry, model, alias)
        verified = aliases.verify_version(DEFAULT, registry, model, resolved.version, complete=True)
    except (aliases.RegistryError, StorageError) as err:
        return [f"alias {alias} of model {model}: {err}"]
    if verified.sha256 != resolved.sha256:
        return [f"alias {alias} of model {model} records sha256 {resolved.sha256} for version {resolved.version}, "
                f"whose weights have {verified.sha256}"]
    return []


class AliasMonitor:
    """Checks the alias of each model every ``interval`` seconds while a scenario runs, and every
    version it names (once per version and digest) with :func:`alias_problems`; ``problems`` and
    ``versions`` (each model's versions in the order seen) afterwards. A model may get its alias after
    the monitor started (it is seeded); once it had one, it must keep one."""

    def __init__(self, registry: str, models: Iterable[str], alias: str = "production",
                 interval: float = 0.3) -> None:
        self.registry, self.models, self.alias, self.interval = registry, list(models), alias, interval
        self.problems: list[str] = []
        self.versions: dict[str, list[str]] = {model: [] for model in self.models}
        self._seen: set[tuple[str, str, str]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="alias-monitor")

    def __enter__(self) -> AliasMonitor:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(30)
        self.check()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()

    def check(self) -> None:
        for model in self.models:
            try:
                resolved = aliases.resolve_alias(DEFAULT, self.registry, model, self.alias)
            except aliases.ModelNotFound as err:
                if self.versions[model]:  # it named a version before: gone now
                    self.problems.append(f"alias {self.alias} of model {model} could not be read: {err}")
                continue
            except (aliases.RegistryError, StorageError) as err:
                self.problems.append(f"alias {self.alias} of model {model} could not be read: {err}")
                continue
            key = (model, resolved.version, resolved.sha256)
            if key in self._seen:
                continue
            self._seen.add(key)
            self.versions[model].append(resolved.version)
            self.problems += alias_problems(self.registry, model, self.alias)


# ---- receipts ------------------------------------------------------------------------------------


def receipt_problems(api: ApiServer, namespace: str, names: Iterable[str], *,
                     exempt: Sequence[str] = ("Failed",)) -> list[str]:
    """Every ended request (but those in an ``exempt`` phase) has a receipt that checks out."""
    problems = []
    for name, obj in requests(api, namespace, names).items():
        phase = phase_of(obj)
        if obj is None or phase not in TERMINAL or phase in exempt:
            continue
        ref = obj["status"].get("receipt") or {}
        if not ref.get("uri"):
            problems.append(f"{phase} request {name} has no status.receipt")
            continue
        try:
            data = storage.read_bytes(ref["uri"])
        except StorageError as err:
            problems.append(f"the receipt of request {name} cannot be read: {err}")
            continue
        if hashlib.sha256(data).hexdigest() != ref.get("sha256"):
            problems.append(f"the receipt of request {name} does not have the sha256 its status records")
            continue
        try:
            receipt = receipts.read_stored(data).receipt
        except ValueError as err:
            problems.append(f"the receipt of request {name} is not a receipt: {err}")
            continue
        if receipt.request.uid != obj["metadata"]["uid"]:
            problems.append(f"the receipt of request {name} is another request's")
        promoted = receipt.decision == "Promote" and receipt.promotion is not None
        if promoted != (phase == "Promoted"):
            problems.append(f"request {name} is {phase}, but its receipt's decision is {receipt.decision}")
    return problems


# ---- privacy -------------------------------------------------------------------------------------


def own_secrets(api: ApiServer, namespace: str) -> set[str]:
    """The Secrets allowed to hold patient IDs: those a request references as its forget list, and those
    a request owns (its copies of the list)."""
    allowed: set[str] = set()
    with api.lock:
        objs = [obj for _, key, event in api.history if key in (REQUESTS, SECRETS)
                for obj in [event["object"]] if obj["metadata"].get("namespace") == namespace]
    for obj in objs:
        if obj.get("kind") == "UnlearnRequest":
            ref = (((obj.get("spec") or {}).get("forget") or {}).get("subjectsSecretRef") or {})
            if isinstance(ref, Mapping) and isinstance(ref.get("name"), str):
                allowed.add(ref["name"])
        elif any(o.get("kind") == "UnlearnRequest" for o in obj["metadata"].get("ownerReferences") or []):
            allowed.add(obj["metadata"]["name"])
    return allowed


def api_texts(api: ApiServer, namespace: str) -> dict[str, str]:
    """Every object the namespace held during the scenario (each version of it, from the emulator's
    history), by resource, but the request's own Secrets."""
    allowed = own_secrets(api, namespace)
    texts: dict[str, list[str]] = {}
    with api.lock:
        events = [(key, event) for _, key, event in api.history]
    for key, event in events:
        obj = event["object"]
        if obj["metadata"].get("namespace") != namespace:
            continue
        if key == SECRETS and obj["metadata"]["name"] in allowed:
            continue
        texts.setdefault(f"api {key[2]}", []).append(json.dumps(obj))
    return {source: "\n".join(parts) for source, parts in texts.items()}


def registry_texts(registry: str, models: Iterable[str]) -> dict[str, str]:
    """Every object of the models in the registry (versions, reports, progress, receipts, aliases, ledger)."""
    texts = {}
    for model in models:
        for uri in storage.list_uris(storage.join(registry, model)):
            texts[f"registry {uri}"] = storage.read_at_most(uri, TEXT_MAX_BYTES).decode("utf-8", errors="replace")
    return texts


def job_texts(workdir: Path, jobs: Iterable[str]) -> dict[str, str]:
    """The Job runner's files of ``jobs`` (trainer logs, job.json, termination messages; the runner keeps
    each run in ``<job name>-<random>/``), but the forget lists mounted in them."""
    names = set(jobs)
    return {f"job file {path.relative_to(workdir)}": path.read_text(errors="replace")
            for folder in sorted(workdir.iterdir()) if folder.is_dir() and folder.name.rsplit("-", 1)[0] in names
            for path in sorted(folder.rglob("*")) if path.is_file() and not path.name.startswith("secret-")}


def visible_texts(api: ApiServer, namespace: str, *, registry: str, models: Iterable[str], workdir: Path,
                  jobs: Iterable[str], operator_log: str, metrics: str) -> dict[str, str]:
    """Everything the privacy sweep reads, by source (see the module docstring)."""
    return {"operator log": operator_log, "metrics": metrics, **api_texts(api, namespace),
            **registry_texts(registry, models), **job_texts(workdir, jobs)}


def leaks(texts: Mapping[str, str], subjects: Iterable[str]) -> list[str]:
    """The sources that hold any of ``subjects``, each with how many of them (never which)."""
    ids = sorted(set(subjects))
    problems = []
    for source, text in texts.items():
        found = sum(subject in text for subject in ids)
        if found:
            problems.append(f"{source} holds {found} forgotten patient ID(s)")
    return problems

"""The first half of a request's lifecycle, alike in a cluster and in ``forgetmi run``: accept the
request, copy its forget list, and start its trainer run.

:func:`accept` validates what the request names before anything starts: the alias resolves to a
version (pinned from then on), the manifest exists and holds training rows of every forget
subject (its subject set read once per version of the object, :mod:`~forgetmi_operator.registry.manifests`),
``spec.audit.retrainedVersion`` names a version the registry holds, a gate on a LiRA metric finds
the base version's reference models (:func:`check_references`), the base version descends from
every promoted erasure in the model's forget ledger (:mod:`~forgetmi_operator.lifecycle.erasures`;
with a ledger key the manifest's patients of those erasures are copied beside the forget list),
and the forget list is read (:mod:`~forgetmi_operator.lifecycle.subjects`) and copied — every object
through the request's own storage handle (``Ports.storage_for``), and only URIs within its reach.
:func:`launch` then starts the run through the :class:`~forgetmi_operator.lifecycle.ports.Trainers`
port and returns the step that records it. Errors are the domain errors of
:mod:`forgetmi_operator.api.errors`, each one sentence naming the field or object at fault.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from forgetmi_operator.api import conditions as cond
from forgetmi_operator.api import failpoints, naming
from forgetmi_operator.api.errors import (
    InputNotFound,
    OperatorError,
    ReferencesMissing,
    SubjectsError,
    UriRefused,
    storage_call,
)
from forgetmi_operator.api.spec import GateSpec, UnlearnRequestSpec, parse_spec
from forgetmi_operator.api.status import ModelVersionStatus
from forgetmi_operator.lifecycle import erasures, gates, subjects
from forgetmi_operator.lifecycle.ports import Ports
from forgetmi_operator.lifecycle.steps import Step, with_condition
from forgetmi_operator.registry import aliases, manifests, references
from forgetmi_operator.registry.paths import MODEL_FILE, version_uri
from forgetmi_trainer.contract import now
from forgetmi_trainer.errors import OutOfReach
from forgetmi_trainer.storage import Objects


@dataclass(frozen=True)
class Accepted:
    """What accepting a request pins: the base version, and the forget list its runs read."""

    base: ModelVersionStatus
    subjects: list[str]
    previously_forgotten: int | None = None
    """How many of the manifest's patients earlier erasures forgot (None: no ledger key)."""
    rebase: int = 0
    """Which rebase of the request this acceptance is (0: its first; docs/rebase.md)."""


def check_reach(objects: Objects, spec: UnlearnRequestSpec) -> None:
    """Every URI the spec names must be within the request's reach; UriRefused names the first that is not."""
    named = {"spec.model.registryUri": spec.model.registry_uri, "spec.data.manifestUri": spec.data.manifest_uri,
             "spec.forget.subjectsUri": spec.forget.subjects_uri}
    for field, uri in named.items():
        if uri is None:
            continue
        try:
            objects.reach(uri)
        except OutOfReach as err:
            raise UriRefused(f"{field} is refused: {err}") from err


def check_inputs(objects: Objects, spec: UnlearnRequestSpec, forget: list[str], where: str,
                 limits: manifests.Limits = manifests.DEFAULT_LIMITS) -> ModelVersionStatus:
    """Resolve the alias and check the manifest holds every forget subject (blocking); the base version.
    A manifest the operator cannot read (or larger than ``limits``) raises InputUnreadable: the check
    is never skipped."""
    model = spec.model
    try:
        resolved = aliases.resolve_alias(objects, model.registry_uri, model.name, model.alias)
    except aliases.RegistryError as err:
        raise InputNotFound(f"spec.model: {err}") from err
    try:
        trained = manifests.TRAINING_SUBJECTS.get(objects, spec.data.manifest_uri, limits)
    except manifests.ManifestMissing as err:
        raise InputNotFound(f"spec.data.manifestUri {spec.data.manifest_uri} does not exist.") from err
    unknown = trained.unknown(forget)
    if unknown:
        raise SubjectsError(f"{unknown} of {len(forget)} forget subjects in {where} have no training "
                            f"samples in spec.data.manifestUri {spec.data.manifest_uri}.")
    return ModelVersionStatus(version=resolved.version, uri=resolved.uri, sha256=resolved.sha256)


def check_retrained(objects: Objects, spec: UnlearnRequestSpec) -> None:
    """``spec.audit.retrainedVersion``, when set, must be a version of the model in the registry (blocking)."""
    model, version = spec.model, spec.audit.retrained_version
    if version is not None and not aliases.has_version(objects, model.registry_uri, model.name, version):
        raise InputNotFound(f"spec.audit.retrainedVersion: version {version} of model {model.name} has no "
                            f"{MODEL_FILE} in the registry ({version_uri(model.registry_uri, model.name, version)}).")


def check_references(objects: Objects, spec: UnlearnRequestSpec, version: str, gate_list: list[GateSpec]) -> None:
    """A gate on liraTPR5 or liraAUC needs the base version's reference models in the registry
    (blocking); ReferencesMissing names the version and the command that makes them. Without such a
    gate nothing is read."""
    needing = gates.needs_references(gate_list)
    if not needing:
        return
    model = spec.model
    if references.has_references(objects, model.registry_uri, model.name, version):
        return
    command = references.references_command(model.registry_uri, model.name, version, spec.data.manifest_uri)
    raise ReferencesMissing(
        f"The gates on {' and '.join(needing)} need reference models of model {model.name} version {version}, "
        f"but {references.meta_uri(model.registry_uri, model.name, version)} does not exist; nothing was started. "
        f"Create them with `{command}`, then create the request again.")


async def accept(ports: Ports, objects: Objects, body: Mapping[str, Any], spec: UnlearnRequestSpec,
                 rebase: int = 0) -> Accepted:
    """Check every input of the request with its referenced forget list, and copy the list (see the
    module docstring). When that list no longer passes (changed to something invalid, or gone), the
    copy an earlier attempt at this launch made (a retry, or an operator restart mid-launch) is
    accepted instead: it is what that attempt's run reads, forgets and the receipt attests. A rebase
    (``rebase`` > 0) accepts again on the version the alias names now, with the list first copied (the
    copy always wins) and the forget ledger as it is now."""
    check_reach(objects, spec)
    limits = manifests.Limits(max_bytes=ports.settings.manifest_max_bytes)
    try:
        forget, where = await subjects.read_referenced(ports.secrets, objects, spec, body["metadata"]["namespace"])
        base = await storage_call(check_inputs, objects, spec, forget, where, limits)
    except OperatorError as err:
        found = None if err.retryable else await subjects.find_snapshot(ports.secrets, body)
        if found is None:
            raise
        forget, where = found
        base = await storage_call(check_inputs, objects, spec, forget, where, limits)
    await storage_call(check_retrained, objects, spec)
    await storage_call(check_references, objects, spec, base.version,
                       gates.effective_gates(spec.gates, ports.settings.default_gates))
    earlier = await storage_call(erasures.earlier_erasures, objects, spec, base.version, await ports.ledger_key(),
                                 limits)
    failpoints.reach("after-accept")
    return Accepted(base=base, subjects=await subjects.snapshot(ports.secrets, body, forget, where, earlier, rebase),
                    previously_forgotten=None if earlier is None else len(earlier), rebase=rebase)


def _earlier(accepted: Accepted) -> str:
    if not accepted.previously_forgotten:
        return ""
    return (f" {accepted.previously_forgotten} of the manifest's patients were forgotten by earlier erasures (the "
            "forget ledger) and are left out of training.")


Gather = Callable[[Mapping[str, Any], UnlearnRequestSpec, Accepted], Awaitable[Step]]
"""Joins an accepted request to a batch of coalesced requests (docs/coalescing.md); the step that says so."""


def accepted_step(body: Mapping[str, Any], spec: UnlearnRequestSpec, accepted: Accepted) -> Step:
    """The step of an accepted request, before its run is started: the Accepted condition, the pinned
    base version, the forget list's count and copy, the attempt and the start time."""
    meta, status = body["metadata"], body.get("status") or {}
    step = Step()
    with_condition(body, step, "Accepted", "True", cond.ACCEPTED,
                   f"{naming.describe(body)} was accepted: {len(accepted.subjects)} subjects to forget from "
                   f"model {spec.model.name} version {accepted.base.version}.{_earlier(accepted)}")
    step.status.update(baseModel=accepted.base.model_dump(by_alias=True, exclude_none=True),
                       subjectCount=len(accepted.subjects),
                       subjectsSecretName=naming.subjects_secret_name(meta["name"], meta["uid"]),
                       attempts=max(1, int(status.get("attempts") or 0)), startTime=status.get("startTime") or now())
    if accepted.rebase:
        step.status["rebases"] = accepted.rebase
    return step


async def launch(ports: Ports, body: Mapping[str, Any], gather: Gather | None = None,
                 rebase: int | None = None) -> Step:
    """Accept the request and start its unlearning run once — or, with ``gather``, join it to a batch
    whose Job starts when the batch closes; a suspended request only says so. ``rebase`` (default: the
    count its status records) is which rebase of the request this launch is (docs/rebase.md)."""
    if rebase is None:
        rebase = int((body.get("status") or {}).get("rebases") or 0)
    spec = parse_spec(body.get("spec") or {})
    if spec.suspend:
        step = Step()
        message = f"{naming.describe(body)} is suspended; no Job is created while spec.suspend is true."
        with_condition(body, step, "Unlearned", "Unknown", cond.NOT_STARTED, message)
        step.events.append(("Normal", "Suspended", message))
        return step
    accepted = await accept(ports, await ports.storage_for(body), body, spec, rebase)
    failpoints.reach("after-subjects-copy")
    if gather is not None:
        return await gather(body, spec, accepted)
    started = await ports.trainers.start(body, spec, accepted.base.version, "unlearn", rebase)
    step = accepted_step(body, spec, accepted)
    with_condition(body, step, "Unlearned", "Unknown", cond.JOB_PENDING, started.waiting)
    step.status["jobName"] = started.job_name
    if started.created or not (body.get("status") or {}).get("jobName"):  # an earlier attempt's may be lost
        step.events.append(("Normal", "JobCreated", started.event))
    return step

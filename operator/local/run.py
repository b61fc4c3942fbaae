"""``forgetmi run -f request.yaml``: one request's whole lifecycle on this machine (``forgetmi demo``
builds on it, in :mod:`forgetmi_operator.local.demo`).

The lifecycle is the cluster's own (:mod:`forgetmi_operator.lifecycle`): the same acceptance and
copy of the forget list, the same conclusion (report checks, gates, decision, promotion with a
conditional alias write, receipt), the same conditions, status and Events. Only where it runs is
local (:mod:`forgetmi_operator.local.ports`): Secrets come from ``--secrets``, each trainer run is a
local process, and a serving target is not patched. The status is kept as the API server would keep
it (each step merged in as a merge patch) and printed as ``kubectl`` would show it.

``forgetmi run --hmac-key-file PATH`` (default ``$FORGETMI_RECEIPT_HMAC_KEY_FILE``) signs the
receipt's subject list like the operator's ``FORGETMI_RECEIPT_HMAC_SECRET_NAME`` Secret does: the
key is the file's bytes exactly, a trailing newline included, as ``kubectl create secret generic
--from-file`` stores them, so the same file gives the same digest on one machine and in a cluster.
``forgetmi run --signing-key-file PATH`` signs the receipt (a DSSE envelope, Ed25519, PEM PKCS#8) like
the operator's ``FORGETMI_RECEIPT_SIGNING_SECRET_NAME`` Secret does (:mod:`.receipt_cli`).
``forgetmi run --ledger-key-file PATH`` keys the model's forget ledger like the operator's
``FORGETMI_LEDGER_KEY_SECRET_NAME`` Secret does (the file's bytes exactly; :mod:`.ledger_cli`, docs/ledger.md).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgetmi_operator import GROUP, KIND, VERSION
from forgetmi_operator.api import conditions as cond
from forgetmi_operator.api.errors import InvalidSpec, OperatorError
from forgetmi_operator.api.settings import Settings, load_settings
from forgetmi_operator.api.status import UnlearnRequestStatus
from forgetmi_operator.lifecycle import subjects
from forgetmi_operator.lifecycle.conclude import Outcome, conclude
from forgetmi_operator.lifecycle.decisions import Decision
from forgetmi_operator.lifecycle.launch import launch
from forgetmi_operator.lifecycle.ports import Ports
from forgetmi_operator.lifecycle.steps import Step, failure, job_failed, job_running, merge_patch
from forgetmi_operator.local import EXIT_FAILED, EXIT_INVALID, EXIT_OK
from forgetmi_operator.local.documents import DocumentError, load_documents, objects
from forgetmi_operator.local.ledger_cli import read_ledger_key
from forgetmi_operator.local.ports import LocalRun, LocalSecrets, LocalTargets, LocalTrainers
from forgetmi_operator.local.receipt_cli import read_signing_key
from forgetmi_operator.local.schema import validate_request
from forgetmi_trainer.contract import ExitCode, ModelRef, Report, now
from forgetmi_trainer.storage import DEFAULT, Objects

HMAC_KEY_OPTION = "--hmac-key-file"


@dataclass
class LocalResult:
    """The request's final status and, when the trainer got that far, its reports."""

    name: str
    namespace: str
    status: UnlearnRequestStatus
    report: Report | None = None
    decision: Decision | None = None
    retrain_report: Report | None = None
    events: list[str] = field(default_factory=list)


class _Request:
    """The request as the API server would hold it: its body, with each step merged into its status."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        meta = dict(body.get("metadata") or {})
        meta.setdefault("name", "local")
        meta.setdefault("namespace", "default")
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", now())
        self.body: dict[str, Any] = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, **body, "metadata": meta,
                                     "status": {}}
        self.events: list[str] = []

    def apply(self, step: Step) -> None:
        self.body["status"] = merge_patch(self.body["status"], step.status)
        for type, reason, message in step.events:
            self.events.append(f"{type} {reason}: {message}")
            print(f"  {reason}: {message}", file=sys.stderr)

    async def take(self, work: Awaitable[Step], *, accepting: bool) -> bool:
        """Apply the step ``work`` gives, or the failure its error is; whether the request goes on."""
        try:
            step = await work
        except OperatorError as err:  # locally nothing retries: a retryable error also ends the request
            step = failure(self.body, err, accepting=accepting)
        self.apply(step)
        return step.error is None and not cond.is_terminal(self.body["status"].get("phase"))


def run_request(body: Mapping[str, Any], *, workdir: Path, secrets: Mapping[str, Mapping[str, str]] | None = None,
                settings: Settings | None = None, retrained: ModelRef | None = None,
                hmac_key: bytes | None = None, processes: int = 1, signing_key: bytes | None = None,
                ledger_key: bytes | None = None) -> LocalResult:
    """Run one UnlearnRequest (a parsed YAML body) until it ends or waits for approval. With
    ``hmac_key`` the receipt carries the HMAC of the subjects, as in a cluster; without, none. With
    ``processes`` > 1 the trainer runs data-parallel under torchrun on this machine. With ``signing_key``
    (PEM PKCS#8 Ed25519) the receipt is signed. With ``ledger_key`` the model's forget ledger is read and
    written as in a cluster (docs/ledger.md)."""
    workdir.mkdir(parents=True, exist_ok=True)
    request = _Request(body)
    store = LocalSecrets(secrets or {}, workdir)
    trainers = LocalTrainers(workdir, store, retrained, processes)

    async def key() -> bytes | None:
        return hmac_key

    async def signing() -> bytes | None:
        return signing_key

    async def ledger() -> bytes | None:
        return ledger_key

    async def own_identity(body: Mapping[str, Any]) -> Objects:
        return DEFAULT  # one machine: the user's own identity, file:// included

    ports = Ports(settings=settings or load_settings(), secrets=store, trainers=trainers, targets=LocalTargets(),
                  storage_for=own_identity, receipt_key=key, signing_key=signing,
                  ledger_key=ledger)
    result = asyncio.run(_lifecycle(request, ports, trainers))
    meta = request.body["metadata"]
    result.name, result.namespace, result.events = meta["name"], meta["namespace"], request.events
    result.status = UnlearnRequestStatus.model_validate(request.body["status"])
    return result


async def _lifecycle(request: _Request, ports: Ports, trainers: LocalTrainers) -> LocalResult:
    result = LocalResult(name="", namespace="", status=UnlearnRequestStatus())
    try:
        going = await request.take(launch(ports, request.body), accepting=True)
        while going and trainers.queued:
            run = trainers.queued.pop(0)
            going = _train(request, trainers, run)
            if not going:
                break
            concluded: list[Outcome] = []  # none when the report was refused (the request then Failed)
            going = await request.take(_concluded(ports, request.body, concluded), accepting=False)
            if concluded and run.kind == "retrain":
                result.decision, result.retrain_report = concluded[0].decision, concluded[0].report
            elif concluded:
                result.decision, result.report = concluded[0].decision, concluded[0].report
    finally:  # the request ends with this process: its copy of the forget list goes
        await subjects.release(ports.secrets, request.body)
    return result


def _train(request: _Request, trainers: LocalTrainers, run: LocalRun) -> bool:
    """Run one trainer process; whether it succeeded (a failure is recorded as the Job's would be)."""
    step = Step()
    job_running(request.body, step, run.job_name)
    request.apply(step)
    code, message = trainers.run(run)
    if code == 0:
        return True
    step = Step()
    job_failed(request.body, step, run.job_name, ExitCode.failure_reason(code) or "TrainerFailed",
               message or f"The trainer exited with code {code}.")  # as a Job's failure reads
    request.apply(step)
    return False


async def _concluded(ports: Ports, body: Mapping[str, Any], concluded: list[Outcome]) -> Step:
    outcome = await conclude(ports, body)
    concluded.append(outcome)
    return outcome.step


def read_secrets(docs: list[Any]) -> dict[str, dict[str, str]]:
    """``{name: {key: text}}`` of the Secrets among YAML documents (``data`` base64, or ``stringData``)."""
    out: dict[str, dict[str, str]] = {}
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") != "Secret":
            continue
        name = str((doc.get("metadata") or {}).get("name", ""))
        values = {k: base64.b64decode(v).decode("utf-8") for k, v in (doc.get("data") or {}).items()}
        values.update({k: str(v) for k, v in (doc.get("stringData") or {}).items()})
        out[name] = values
    return out


def read_hmac_key(path: str) -> bytes:
    """The receipt HMAC key: the bytes of ``path`` exactly (no newline stripped, as in a Secret);
    InvalidSpec naming :data:`HMAC_KEY_OPTION` and the path when it cannot be read or is empty."""
    try:
        key = Path(path).read_bytes()
    except OSError as err:
        raise InvalidSpec(f"{HMAC_KEY_OPTION} {path} cannot be read: {err.strerror or err}.") from err
    if not key:
        raise InvalidSpec(f"{HMAC_KEY_OPTION} {path} is empty; the receipt HMAC needs a non-empty key.")
    return key


def format_result(result: LocalResult) -> str:
    """What ``kubectl get unlearnrequests -o wide`` and ``kubectl describe`` would show."""
    s = result.status
    mia = "-" if s.mia is None else f"{s.mia:.3f}"
    drop = "-" if s.test_auc_drop is None else f"{s.test_auc_drop:.3f}"
    model = s.base_model.version if s.base_model else "-"
    lines = [f"{'NAME':<22} {'BASE':<14} {'PHASE':<10} {'MIA':<6} {'TEST AUC Δ':<10} VERSION",
             f"{result.name:<22} {model:<14} {s.phase or '-':<10} {mia:<6} {drop:<10} "
             f"{s.candidate_model.version if s.candidate_model else '-'}"]
    if s.gates:
        lines.append("gates:")
        for g in s.gates:
            value = "-" if g.value is None else f"{g.value:.3f}"
            lines.append(f"  {g.metric:<10} {g.comparator:<8} {g.threshold:<6} value {value:<7} {g.result:<12} "
                         f"{g.message}")
    if s.receipt:
        lines.append(f"receipt: {s.receipt.uri} sha256 {s.receipt.sha256}")
    stopped = next((c for c in s.conditions if c.status == "False"), None)
    if s.phase == "Failed" and stopped is not None:
        lines.append(f"message: {stopped.message}")
    return "\n".join(lines)


def _load(path: str) -> list[Any]:
    try:
        return load_documents(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidSpec(f"{path} cannot be read: {getattr(err, 'strerror', None) or err}.") from err
    except DocumentError as err:
        raise InvalidSpec(f"{path} is {err}.") from err


def run_command(args: argparse.Namespace) -> int:
    try:
        docs = [doc for _, doc in objects(_load(args.filename))]
        secrets = read_secrets(docs + (_load(args.secrets) if args.secrets else []))
        requests = [d for d in docs if isinstance(d, dict) and d.get("kind") == KIND]
        if len(requests) != 1:
            raise InvalidSpec(f"{args.filename} must hold exactly one {KIND}; found {len(requests)}.")
        problems = validate_request(requests[0])
        if problems:  # as `forgetmi validate` says it, before anything runs
            raise InvalidSpec(f"{args.filename}: the {KIND} is invalid:\n" + "\n".join(f"  {p}" for p in problems))
        settings = load_settings()
        hmac_key = read_hmac_key(args.hmac_key_file) if args.hmac_key_file else None
        signing_key = read_signing_key(args.signing_key_file) if args.signing_key_file else None
        ledger_key = read_ledger_key(args.ledger_key_file) if getattr(args, "ledger_key_file", None) else None
    except OperatorError as err:
        print(f"forgetmi run: {err}", file=sys.stderr)
        return EXIT_INVALID
    workdir = Path(args.workdir or f".forgetmi/{requests[0].get('metadata', {}).get('name', 'local')}")
    result = run_request(requests[0], workdir=workdir, secrets=secrets, settings=settings, hmac_key=hmac_key,
                         processes=args.processes, signing_key=signing_key, ledger_key=ledger_key)
    print(format_result(result))
    return EXIT_FAILED if result.status.phase == "Failed" else EXIT_OK

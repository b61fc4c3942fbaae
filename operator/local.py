"""The whole pipeline on one machine: ``forgetmi run -f request.yaml`` (``forgetmi demo`` builds on it,
in :mod:`forgetmi_operator.demo`).

The same steps as in a cluster — accept, launch the trainer, read and verify the report,
evaluate the gates, decide, promote with a conditional alias write, write the receipt — with a
local ``python -m forgetmi_trainer run`` process in place of the Job. No torch is imported
here: the trainer always runs in its own process. A serving target is not patched locally.

``forgetmi run --hmac-key-file PATH`` (default ``$FORGETMI_RECEIPT_HMAC_KEY_FILE``) signs the
receipt's subject list like the operator's ``FORGETMI_RECEIPT_HMAC_SECRET_NAME`` Secret does: the
key is the file's bytes exactly, a trailing newline included, as ``kubectl create secret generic
--from-file`` stores them, so the same file gives the same digest on one machine and in a cluster.
"""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from forgetmi_operator import KIND, conditions, gates, pipeline, receipts, registry
from forgetmi_operator.api import (
    ArtifactStatus,
    Condition,
    ModelVersionStatus,
    UnlearnRequestSpec,
    UnlearnRequestStatus,
)
from forgetmi_operator.cli import DocumentError, load_documents, objects
from forgetmi_operator.decisions import Decision, decide, is_approved
from forgetmi_operator.errors import InvalidSpec, JobFailed, OperatorError, SecretNotFound
from forgetmi_operator.jobs import build_job_config, request_paths
from forgetmi_operator.schema import validate_request
from forgetmi_operator.settings import Settings, load_settings
from forgetmi_trainer.contract import JobConfig, ModelRef, Report

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
HMAC_KEY_OPTION = "--hmac-key-file"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class LocalResult:
    """The request's final status and, when the trainer got that far, its report."""

    name: str
    namespace: str
    status: UnlearnRequestStatus
    report: Report | None = None
    decision: Decision | None = None
    retrain_report: Report | None = None
    events: list[str] = field(default_factory=list)


class _Run:
    """One request's local lifecycle; mirrors what the handlers write to ``status``."""

    def __init__(self, body: dict[str, Any], workdir: Path, settings: Settings) -> None:
        meta = body.get("metadata") or {}
        self.name = str(meta.get("name") or "local")
        self.namespace = str(meta.get("namespace") or "default")
        self.uid = str(meta.get("uid") or uuid.uuid4())
        self.generation = int(meta.get("generation") or 1)
        self.annotations = meta.get("annotations") or {}
        self.body, self.workdir, self.settings = body, workdir, settings
        self.subjects_digest: str | None = None
        now = _now()
        self.status = UnlearnRequestStatus(observed_generation=self.generation, start_time=now,
                                           conditions=conditions.initial_conditions(self.generation, now,
                                                                                    self.ref))
        self.events: list[str] = []

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def condition(self, type_: str, status: str, reason: str, message: str) -> None:
        updated = conditions.set_condition(
            [c.model_dump(by_alias=True, exclude_none=True) for c in self.status.conditions],
            type_, status, reason, message, self.generation, _now())  # type: ignore[arg-type]
        self.status.conditions = [Condition.model_validate(c) for c in updated]
        self.status.phase = conditions.phase_for([c.model_dump(by_alias=True) for c in self.status.conditions])
        self.events.append(f"{type_}={status} ({reason}): {message}")
        print(f"  {type_:<12} {status:<7} {reason}: {message}", file=sys.stderr)

    def finish(self, message: str | None = None) -> None:
        self.status.completion_time = _now()
        self.status.message = message


def _secret_value(secrets: dict[str, dict[str, str]], name: str, key: str) -> str:
    if name not in secrets:
        raise SecretNotFound(f"Secret {name} named by spec.forget.subjectsSecretRef was not given (--secrets).")
    if key not in secrets[name]:
        raise SecretNotFound(f"Secret {name} has no key {key} (spec.forget.subjectsSecretRef.key).")
    return secrets[name][key]


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


def _run_trainer(config: JobConfig, workdir: Path, label: str) -> None:
    """``python -m forgetmi_trainer run`` on ``config``; raises JobFailed with its termination message."""
    config_path = workdir / f"{label}-job.json"
    config_path.write_text(config.model_dump_json(indent=2))
    termination = Path(config.termination_message_path or workdir / f"{label}-termination-log")
    termination.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    proc = subprocess.run([sys.executable, "-m", "forgetmi_trainer", "run", "--config", str(config_path)],
                          env=env, check=False)
    if proc.returncode != 0:
        message = termination.read_text().strip() if termination.exists() else ""
        raise JobFailed(f"The trainer exited with code {proc.returncode}: {message or 'no message'}",
                        reason={2: "BadConfig", 3: "StorageOrInputError", 4: "Diverged"}.get(proc.returncode,
                                                                                             "TrainerFailed"))


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


def run_request(body: dict[str, Any], *, workdir: Path, secrets: dict[str, dict[str, str]] | None = None,
                settings: Settings | None = None, retrained: ModelRef | None = None,
                hmac_key: bytes | None = None) -> LocalResult:
    """Run one UnlearnRequest (a parsed YAML body) to a terminal phase. With ``hmac_key`` the
    receipt carries :func:`receipts.subjects_hmac` of the subjects, as in a cluster; without, none."""
    workdir.mkdir(parents=True, exist_ok=True)
    run = _Run(body, workdir, settings or load_settings())
    result = LocalResult(run.name, run.namespace, run.status)
    try:
        _lifecycle(run, result, secrets or {}, retrained, hmac_key)
    except OperatorError as err:
        current = [c.model_dump(by_alias=True) for c in run.status.conditions]
        if conditions.status_of(current, "Accepted") != "True":
            run.condition("Accepted", "False", err.reason, err.message)
        elif result.report is None or isinstance(err, JobFailed):
            run.condition("Unlearned", "False", err.reason, err.message)
        else:
            run.condition("Promoted", "False", err.reason, f"Nothing was promoted: {err.message}")
        run.finish(err.message)
    result.status, result.events = run.status, run.events
    return result


def _lifecycle(run: _Run, result: LocalResult, secrets: dict[str, dict[str, str]],
               retrained: ModelRef | None, hmac_key: bytes | None) -> None:
    problems = validate_request(run.body)
    if problems:
        raise InvalidSpec("; ".join(str(p) for p in problems))
    try:
        spec = UnlearnRequestSpec.model_validate(run.body["spec"])
    except ValidationError as err:
        first = err.errors(include_url=False, include_input=False)[0]
        raise InvalidSpec(f"spec.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from err
    ref = spec.forget.subjects_secret_ref
    if ref is not None:
        text, where = _secret_value(secrets, ref.name, ref.key), f"Secret {ref.name} key {ref.key}"
    else:
        text, where = pipeline.read_subjects_uri(spec), str(spec.forget.subjects_uri)
    accepted = pipeline.accept(spec, text, where)
    run.status.base_model, run.status.subject_count = accepted.base, accepted.subject_count
    run.subjects_digest = receipts.subjects_hmac(pipeline.parse_subject_ids(text, where), hmac_key)
    run.condition("Accepted", "True", conditions.ACCEPTED,
                  f"Resolved {spec.model.name}:{spec.model.alias} to version {accepted.base.version}; "
                  f"{accepted.subject_count} subjects to forget.")
    subjects_file = run.workdir / "subjects"
    subjects_file.write_text(text)
    subjects_file.chmod(0o600)
    report = _train(run, spec, accepted.base.version, "unlearn", subjects_file, retrained)
    result.report = report
    decision = _evaluate(run, spec, report, retrained=False)
    if decision is Decision.RETRAIN:
        run.condition("Promoted", "Unknown", conditions.RETRAINING,
                      "Gates failed; retraining without the patients as spec.rollout.onGateFailure asks.")
        report = _train(run, spec, accepted.base.version, "retrain", subjects_file, retrained)
        result.retrain_report = report
        decision = _evaluate(run, spec, report, retrained=True)
    result.decision = decision
    _decide(run, spec, report, decision, accepted.base)


def _train(run: _Run, spec: UnlearnRequestSpec, base_version: str, kind: str, subjects_file: Path,
           retrained: ModelRef | None) -> Report:
    config = build_job_config(spec, uid=run.uid, namespace=run.namespace, name=run.name, base_version=base_version,
                              kind=kind, subjects_file=str(subjects_file),  # type: ignore[arg-type]
                              termination_message_path=str(run.workdir / f"{kind}-termination-log"))
    config = config.model_copy(update={"progress_path": str(run.workdir / f"{kind}-progress.jsonl"),
                                       "retrained": retrained})
    run.status.job_name = f"local-{kind}"
    run.status.attempts += 1
    run.condition("Unlearned", "Unknown", conditions.JOB_RUNNING, f"The {kind} trainer is running locally.")
    _run_trainer(config, run.workdir, kind)
    report = pipeline.load_report(config.resolved_report_uri, request=run.ref)
    run.status.candidate_model = pipeline.verify_candidate(report)
    run.status.report = ArtifactStatus(uri=config.resolved_report_uri,
                                       sha256=pipeline.stream_sha256(config.resolved_report_uri))
    run.condition("Unlearned", "True", conditions.JOB_SUCCEEDED,
                  f"The trainer wrote candidate {report.candidate_version} in {report.timings.total_seconds:.1f}s.")
    return report


def _evaluate(run: _Run, spec: UnlearnRequestSpec, report: Report, *, retrained: bool) -> Decision:
    statuses = gates.evaluate_gates(gates.effective_gates(spec.gates, run.settings.default_gates), report)
    run.status.gates = statuses
    run.status.metrics = gates.metrics_status(report)
    run.status.mia = report.unlearned.mia.score
    run.status.test_auc_drop = gates.metric_drop(report, "testAUC")
    passed = gates.all_passed(statuses)
    inconclusive = any(s.result == "Inconclusive" for s in statuses)
    reason = conditions.GATES_PASSED if passed else (
        conditions.GATES_INCONCLUSIVE if inconclusive else conditions.GATES_FAILED)
    run.condition("GatesPassed", "True" if passed else "False", reason, gates.summary(statuses))
    return decide(spec.rollout.mode, statuses, is_approved(run.annotations), spec.rollout.on_gate_failure,
                  retrained=retrained)


def _decide(run: _Run, spec: UnlearnRequestSpec, report: Report, decision: Decision,
            base: ModelVersionStatus) -> None:
    candidate = run.status.candidate_model
    assert candidate is not None
    promotion = None
    if decision is Decision.PROMOTE:
        record = pipeline.promote_candidate(spec, base, candidate,
                                            registry.RequestRef(namespace=run.namespace, name=run.name, uid=run.uid))
        promotion = receipts.Promotion(alias=spec.model.alias, previous=record.previous or base.version,
                                       version=record.version)
        run.condition("Promoted", "True", conditions.PROMOTED,
                      f"Alias {spec.model.alias} now names version {record.version} (was {record.previous}).")
    elif decision is Decision.DRY_RUN_DONE:
        run.condition("Promoted", "False", conditions.DRY_RUN, "DryRun: the candidate was evaluated, not promoted.")
    elif decision is Decision.AWAIT_APPROVAL:
        run.condition("Promoted", "Unknown", conditions.AWAITING_APPROVAL,
                      "Manual rollout: waiting for the approval annotation; run it in a cluster to approve.")
    else:
        run.condition("Promoted", "False", conditions.GATES_NOT_PASSED,
                      f"Held: not every gate passed, so alias {spec.model.alias} still names {base.version}.")
    paths = request_paths(spec.model.registry_uri, spec.model.name, run.uid)
    receipt = receipts.build_receipt(
        uid=run.uid, name=run.name, namespace=run.namespace, subject_count=run.status.subject_count or 0,
        subjects_digest=run.subjects_digest, method=report.method, mode=spec.rollout.mode, base=base,
        candidate=candidate, report=run.status.report, metrics=run.status.metrics, gates=run.status.gates,
        decision=decision, created=run.status.start_time or _now(), completed=_now(), promotion=promotion)
    run.status.receipt = pipeline.write_receipt(paths.receipt, receipt)
    run.finish()


# --- commands ------------------------------------------------------------------------------------------


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
    if s.message:
        lines.append(f"message: {s.message}")
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
    except OperatorError as err:
        print(f"forgetmi run: {err}", file=sys.stderr)
        return EXIT_INVALID
    workdir = Path(args.workdir or f".forgetmi/{requests[0].get('metadata', {}).get('name', 'local')}")
    result = run_request(requests[0], workdir=workdir, secrets=secrets, settings=settings, hmac_key=hmac_key)
    print(format_result(result))
    return EXIT_FAILED if result.status.phase == "Failed" else EXIT_OK


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - convenience for python -m
    from forgetmi_operator.cli import main as cli_main

    return cli_main(argv)

"""``python -m forgetmi_trainer`` (also ``forgetmi-trainer``): run, synth, train, demo.

``run`` is the Job's entrypoint. Its exit codes are the contract's: 0 ok, 2 bad config, 3
storage or input error, 4 diverged; the last line it writes to the termination-message path is
either the report summary or one sentence saying what went wrong.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from forgetmi_trainer.contract import ExitCode, JobConfig, dotted, summary_line, validation_problems
from forgetmi_trainer.errors import ConfigError, DivergedError, StorageError, TrainerError

log = logging.getLogger("forgetmi_trainer")
DEFAULT_TERMINATION_LOG = "/dev/termination-log"


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": self.formatTime(record),
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
            }
        )


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("FORGETMI_LOG_FORMAT", "text") == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("forgetmi_trainer")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def describe_validation(err: ValidationError, what: str) -> str:
    """One sentence naming each bad field of a pydantic error (``what`` names a whole-input error)."""
    problems = validation_problems(err, lambda loc: dotted(loc) or what)
    return f"The {what} is invalid: {'; '.join(problems)}."


def _termination_path(config: JobConfig | None, override: str | None) -> Path | None:
    chosen = override or (config.termination_message_path if config else None)
    if chosen:
        return Path(chosen)
    default = Path(DEFAULT_TERMINATION_LOG)
    return default if default.exists() and os.access(default, os.W_OK) else None


def _terminate(path: Path | None, message: str) -> None:
    if path is None:
        return
    try:
        path.write_text(message[:4000] + "\n")
    except OSError as err:
        log.warning("Could not write the termination message to %s: %s", path, err.strerror)


def command_run(args: argparse.Namespace) -> int:
    config: JobConfig | None = None
    try:
        try:
            config = JobConfig.model_validate_json(Path(args.config).read_text())
        except OSError as err:
            raise ConfigError(f"The job config {args.config} could not be read ({err.strerror}).") from err
        except ValidationError as err:
            raise ConfigError(describe_validation(err, f"job config {args.config}")) from err
        from forgetmi_trainer.job import run_job  # torch and transformers load only for a valid config

        report = run_job(config)
    except ConfigError as err:
        return _fail(config, args, ExitCode.BAD_CONFIG, str(err))
    except DivergedError as err:
        return _fail(config, args, ExitCode.DIVERGED, str(err))
    except (StorageError, TrainerError) as err:
        return _fail(config, args, ExitCode.STORAGE_OR_INPUT, str(err))
    line = summary_line(report)
    _terminate(_termination_path(config, args.termination_log), line)
    print(line)
    return ExitCode.OK


def _fail(config: JobConfig | None, args: argparse.Namespace, code: ExitCode, message: str) -> int:
    log.error("%s", message)
    _terminate(_termination_path(config, args.termination_log), message)
    return int(code)


def command_synth(args: argparse.Namespace) -> int:
    from forgetmi_trainer import synthetic

    params = synthetic.SynthParams(patients=args.patients, seed=args.seed)
    samples = synthetic.generate(params)
    manifest = synthetic.write_dataset(samples, args.out)
    print(json.dumps({"manifest_uri": manifest, "samples": len(samples), "patients": params.patients}))
    return 0


def command_train(args: argparse.Namespace) -> int:
    from forgetmi_trainer.contract import parse_subjects
    from forgetmi_trainer.train import TrainConfig, fit_and_publish

    exclude = parse_subjects(Path(args.exclude_subjects).read_text()) if args.exclude_subjects else []
    recipe = TrainConfig(
        **{
            k: v
            for k, v in (
                ("epochs", args.epochs),
                ("learning_rate", args.learning_rate),
                ("batch_size", args.batch_size),
            )
            if v is not None
        }
    )
    sha, seconds = fit_and_publish(
        args.manifest, args.out, exclude=exclude, recipe=recipe, seed=args.seed, device=args.device
    )
    print(json.dumps({"uri": args.out, "sha256": sha, "seconds": round(seconds, 2)}))
    return 0


def command_demo(args: argparse.Namespace) -> int:
    from forgetmi_trainer.contract import format_comparison
    from forgetmi_trainer.demo import run_demo, to_json

    rows = run_demo(Path(args.workdir), seed=args.seed, patients=args.patients)
    print(to_json(rows) if args.json else format_comparison(rows))
    return 0


def command_demo_prepare(args: argparse.Namespace) -> int:
    from forgetmi_trainer.demo import prepare

    prepared = prepare(Path(args.workdir), args.seed, args.patients)
    out = {k: (v.model_dump() if hasattr(v, "model_dump") else v) for k, v in prepared.items()}
    print(json.dumps(out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forgetmi-trainer", description="Forget-MI trainer.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="Run one job config (the Job's entrypoint).")
    run.add_argument("--config", required=True, help="Path of the JobConfig JSON file.")
    run.add_argument(
        "--termination-log",
        default=None,
        help=f"Termination-message path (default {DEFAULT_TERMINATION_LOG} when writable).",
    )
    run.set_defaults(func=command_run)
    synth = sub.add_parser("synth", help="Write a generated multimodal dataset.")
    synth.add_argument("--out", required=True, help="s3:// or file:// directory.")
    synth.add_argument("--patients", type=int, default=150)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=command_synth)
    train = sub.add_parser("train", help="Train a model on a manifest and publish it.")
    train.add_argument("--manifest", required=True)
    train.add_argument("--out", required=True, help="Model directory URI, e.g. <registry>/<name>/versions/<v>.")
    train.add_argument("--exclude-subjects", default=None, help="File of subject IDs to leave out (a retrain).")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--learning-rate", type=float, default=None)
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    train.set_defaults(func=command_train)
    demo = sub.add_parser("demo", help="Generate data, train, forget, and print a before/after table.")
    demo.add_argument("--workdir", default=".demo")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--patients", type=int, default=150)
    demo.add_argument("--json", action="store_true", help="Print one JSON object instead of the table.")
    demo.set_defaults(func=command_demo)
    prep = sub.add_parser("demo-prepare", help="Only the demo's dataset, original and retrained models (JSON out).")
    prep.add_argument("--workdir", default=".demo")
    prep.add_argument("--seed", type=int, default=0)
    prep.add_argument("--patients", type=int, default=150)
    prep.set_defaults(func=command_demo_prepare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging()
    if args.command != "run":
        try:
            return int(args.func(args))
        except ValidationError as err:
            log.error("%s", describe_validation(err, "arguments"))
            return int(ExitCode.BAD_CONFIG)
        except ConfigError as err:
            log.error("%s", err)
            return int(ExitCode.BAD_CONFIG)
        except (TrainerError, OSError, ValueError) as err:
            log.error("%s", err)
            return int(ExitCode.STORAGE_OR_INPUT)
    return int(args.func(args))

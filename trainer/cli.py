"""``python -m forgetmi_trainer`` (also ``forgetmi-trainer``): run, launch, synth, train, references, demo.

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

from forgetmi_trainer.contract import ExitCode, JobConfig, dotted, parse_subjects, summary_line, validation_problems
from forgetmi_trainer.errors import ConfigError, DivergedError, StorageError, TrainerError

RANK_MESSAGES_ENV = "FORGETMI_RANK_MESSAGES"
"""Set by ``launch`` for its ranks: the folder where a failing rank writes its message (``rank-<RANK>``)."""

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
        if report is None:  # a rank other than 0 of a distributed run: rank 0 reports
            return ExitCode.OK
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
    """Log and record the failure: under ``launch`` in this rank's message file (the launcher passes the
    first failed rank's on), else at the termination-message path."""
    log.error("%s", message)
    messages = os.environ.get(RANK_MESSAGES_ENV)
    if messages:
        _terminate(Path(messages) / f"rank-{os.environ.get('RANK', '0')}", message)
    else:
        _terminate(_termination_path(config, args.termination_log), message)
    return int(code)


def command_synth(args: argparse.Namespace) -> int:
    from forgetmi_trainer import synthetic

    if args.bit_depth == 16 and args.format != "png":
        raise ConfigError(f"--bit-depth 16 is for --format png only, not {args.format}.")
    sizes = {} if args.image_size is None else {"image_size": args.image_size}
    try:
        params = synthetic.SynthParams(patients=args.patients, seed=args.seed, cross_modal=args.cross_modal,
                                       val_fraction=args.val_fraction, **sizes)
    except ValidationError as err:
        flag = lambda loc: "--" + "-".join(map(str, loc)).replace("_", "-") if loc else "synth"  # noqa: E731
        problems = validation_problems(err, flag)
        raise ConfigError(f"The synth arguments are invalid: {'; '.join(problems)}.") from err
    samples = synthetic.generate(params)
    manifest = synthetic.write_dataset(samples, args.out, args.format, bit_depth=args.bit_depth)
    print(json.dumps({"manifest_uri": manifest, "samples": len(samples), "patients": params.patients,
                      "format": args.format, "image_size": params.image_size, "cross_modal": params.cross_modal,
                      "val_fraction": params.val_fraction}))
    return 0


def command_train(args: argparse.Namespace) -> int:
    from forgetmi_trainer.aliases import registry_version, set_alias
    from forgetmi_trainer.encoders import EncoderChoice
    from forgetmi_trainer.train import TrainConfig, fit_and_publish

    target = registry_version(args.out) if args.alias else None  # a bad --out fails before training
    encoders = EncoderChoice(text_encoder=args.text_encoder, image_encoder=args.image_encoder,
                             image_size=args.image_size, channels=args.channels, max_text_length=args.max_text_length)
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
        args.manifest, args.out, exclude=exclude, recipe=recipe, seed=args.seed, device=args.device,
        metadata={"version": target[2]} if target else None, encoders=encoders,
    )
    out: dict[str, object] = {"uri": args.out, "sha256": sha, "seconds": round(seconds, 2)}
    if target is not None:
        registry, name, version = target
        record = set_alias(registry, name, args.alias, version, sha)
        out["alias"] = {"name": args.alias, "version": record.version, "previous": record.previous}
    print(json.dumps(out))
    return 0


def command_references(args: argparse.Namespace) -> int:
    from forgetmi_trainer import references

    exclude = parse_subjects(Path(args.exclude_subjects).read_text()) if args.exclude_subjects else []
    meta = references.make(args.model, args.manifest, k=args.k, exclude=exclude, seed=args.seed, device=args.device)
    print(json.dumps({"uri": references.references_uri(args.model), **meta}))
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


def _add_synth_parser(sub: argparse._SubParsersAction) -> None:
    synth = sub.add_parser("synth", help="Write a generated multimodal dataset.")
    synth.add_argument("--out", required=True, help="s3:// or file:// directory.")
    synth.add_argument("--patients", type=int, default=150)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--format", choices=("npz", "png", "jpeg", "dicom"), default="npz",
                       help="npz: sharded archives (fastest, the demo's); png/jpeg/dicom: one file per sample.")
    synth.add_argument("--image-size", type=int, default=None, help="Image side in pixels (default 16).")
    synth.add_argument("--bit-depth", type=int, choices=(8, 16), default=8, help="PNG bit depth.")
    synth.add_argument("--cross-modal", type=float, default=0.5, metavar="S",
                       help="Cross-modal structure in [0, 1] (docs/data.md): how strongly a patient's latent binds "
                            "image and report, and the share of samples whose class bit is only in the image×text "
                            "combination; 0 = none, the dataset of earlier versions (default 0.5).")
    synth.add_argument("--val-fraction", type=float, default=0.0, metavar="F",
                       help="Share of patients written as split=val rows (patient-disjoint; default 0: none).")
    synth.set_defaults(func=command_synth)


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
    sub.add_parser("launch", help="Run 'run' on every rank under torchrun: launch [torchrun options] -- run --config "
                                  "F (exits with the first failed rank's code and message).", add_help=False)
    _add_synth_parser(sub)
    train = sub.add_parser("train", help="Train a model on a manifest and publish it.")
    train.add_argument("--manifest", required=True)
    train.add_argument("--out", required=True, help="Model directory URI, e.g. <registry>/<name>/versions/<v>.")
    train.add_argument("--exclude-subjects", default=None, help="File of subject IDs to leave out (a retrain).")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--learning-rate", type=float, default=None)
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    train.add_argument("--text-encoder", default=None, metavar="DIR|URI",
                       help="A Hugging Face text model directory (or s3:// / file:// URI) to start from, with its "
                            "tokenizer (default: a tiny BERT with the manifest's words as vocabulary).")
    train.add_argument("--image-encoder", default="small-cnn", metavar="small-cnn|DIR|URI",
                       help="small-cnn, or a Hugging Face vision model directory (or URI) with its image processor.")
    train.add_argument("--image-size", type=int, default=None,
                       help="Input side in pixels (default: the images' own for small-cnn, else the processor's).")
    train.add_argument("--channels", type=int, choices=(1, 3), default=None,
                       help="Input channels (default: the images' own for small-cnn, else the encoder's).")
    train.add_argument("--max-text-length", type=int, default=None,
                       help="Tokens per report (default 24 for the tiny BERT, else 128 or the encoder's limit).")
    train.add_argument("--alias", default=None,
                       help="After publishing, point this registry alias at the new version (--out must be "
                            "<registry>/<name>/versions/<version>).")
    train.set_defaults(func=command_train)
    refs = sub.add_parser("references", help="Train K reference models for LiRA and store their statistics "
                                              "next to a model version (<model>/references/).")
    refs.add_argument("--model", required=True, help="The model version's URI, <registry>/<name>/versions/<v>.")
    refs.add_argument("--manifest", required=True, help="The manifest the version was trained on.")
    refs.add_argument("--k", type=int, default=4, help="Reference models (even; each patient in half of them).")
    refs.add_argument("--exclude-subjects", default=None,
                      help="File of subject IDs already forgotten: left out of every reference and of the statistics.")
    refs.add_argument("--seed", type=int, default=0)
    refs.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    refs.set_defaults(func=command_references)
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
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["launch"]:  # torchrun's options are not ours to parse (forgetmi_trainer.launch)
        from forgetmi_trainer import launch

        _setup_logging()
        return launch.main(argv[1:])
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

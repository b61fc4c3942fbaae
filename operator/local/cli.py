"""The ``forgetmi`` command: ``validate`` (:mod:`.validate`), ``run`` (:mod:`.run`), ``demo`` (:mod:`.demo`),
``receipt`` (:mod:`.receipt_cli`) and ``ledger`` (:mod:`.ledger_cli`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from forgetmi_operator import __version__
from forgetmi_operator.local import demo, ledger_cli, receipt_cli, run, validate

HMAC_KEY_FILE_ENV = "FORGETMI_RECEIPT_HMAC_KEY_FILE"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forgetmi", description="ForgetMI: unlearn patients from a served model, audited and gated.")
    parser.add_argument("--version", action="version", version=f"forgetmi {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validating = commands.add_parser(
        "validate", help="check UnlearnRequests against the CRD and print every problem",
        description="Check every UnlearnRequest in the files against the CRD schema, its CEL rules and the "
        "operator's model; other kinds are skipped. Exit 0 when valid, 2 otherwise.")
    validating.add_argument("-f", "--filename", action="append", required=True, metavar="FILE",
                          help="YAML file with one or more documents ('-' reads stdin); repeatable")
    validating.set_defaults(handler=validate.validate_command)

    running = commands.add_parser(
        "run", help="run an UnlearnRequest on this machine (a local process instead of a Job)",
        description="Run an UnlearnRequest through accept → trainer → gates → promotion → receipt on this "
        "machine, against file:// or s3:// storage.")
    running.add_argument("-f", "--filename", required=True, metavar="FILE", help="YAML file with the UnlearnRequest")
    running.add_argument("--workdir", metavar="DIR", help="folder for the run's files (job config, logs, progress)")
    running.add_argument("--secrets", metavar="FILE",
                     help="YAML file with the Secrets the request references (may be the request file itself)")
    running.add_argument("--hmac-key-file", metavar="PATH", default=os.environ.get(HMAC_KEY_FILE_ENV) or None,
                     help="file whose bytes, exactly (a trailing newline counts), are the key of the receipt's "
                     f"HMAC-SHA256 of the subject IDs, as in a cluster (default: ${HMAC_KEY_FILE_ENV}; "
                     "without a key the receipt has no digest)")
    receipt_cli.add_signing_key_option(running)
    ledger_cli.add_ledger_key_option(running)
    running.add_argument("--processes", type=_positive, default=1, metavar="N",
                         help="trainer processes on this machine, data-parallel under torchrun (gloo on the CPU, "
                         "one GPU each with CUDA); method.batchSize must be a multiple of N (default: 1)")
    running.set_defaults(handler=run.run_command)

    demoing = commands.add_parser(
        "demo", help="build the small dataset and models and run one request end to end",
        description="Build the small multimodal dataset and models into a file:// registry, run an "
        "UnlearnRequest end to end and print the before/after table, the gate results and the promotion.")
    demoing.add_argument("--workdir", metavar="DIR", default=".demo", help="folder for the registry and data "
                      "(default: .demo)")
    demoing.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default: 0)")
    demoing.add_argument("--patients", type=_positive, metavar="N",
                      help="patients in the generated dataset (default: 150)")
    demoing.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    demoing.set_defaults(handler=demo.demo_command)
    receipt_cli.add_receipt_command(commands)
    ledger_cli.add_ledger_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())

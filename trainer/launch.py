"""``python -m forgetmi_trainer launch [torchrun options] -- run --config job.json``: torchrun, with the
trainer's exit codes.

A thin wrapper over PyTorch's own launcher (``torch.distributed.run``, the ``torchrun`` command): the
options before ``--`` are torchrun's (``--nnodes``, ``--nproc-per-node``, ``--standalone``,
``--node-rank``, ``--master-addr``…; each defaults to its ``PET_*`` environment variable, which is how
Kubeflow Trainer's ``torch-distributed`` runtime passes them), and every rank runs
``python -m forgetmi_trainer <the arguments after -->``. What it adds to torchrun, which exits 1
whatever failed: a run that fails on any rank exits with the exit code of the first rank that failed
(2 bad config, 3 storage or input, 4 diverged — what the Job's ``podFailurePolicy`` and the operator
read), and that rank's one-sentence message is the termination message. Each rank writes its failure
message to ``rank-<RANK>`` in a folder the launcher makes (``FORGETMI_RANK_MESSAGES``); rank 0 writes
the success line to the termination-message path itself, as a single-process run does.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
from pathlib import Path

from pydantic import ValidationError

from forgetmi_trainer.contract import ExitCode, JobConfig

log = logging.getLogger(__name__)
USAGE = "launch [torchrun options] -- run --config <job.json> [--termination-log <path>]"


def split_arguments(argv: list[str]) -> tuple[list[str], list[str]]:
    """torchrun's options and the trainer command of ``argv``; a missing ``--`` or command is an error."""
    if "--" not in argv:
        raise ValueError(f"launch needs '--' between torchrun's options and the trainer command: {USAGE}.")
    cut = argv.index("--")
    options, command = argv[:cut], argv[cut + 1 :]
    if not command or command[0] != "run":
        raise ValueError(f"launch runs the trainer's 'run' command on every rank: {USAGE}.")
    return options, command


def termination_path(command: list[str]) -> Path | None:
    """Where the trainer command would write its termination message (read from its arguments and config)."""
    from forgetmi_trainer import cli

    args = cli.build_parser().parse_args(command)
    try:
        config: JobConfig | None = JobConfig.model_validate_json(Path(args.config).read_text())
    except (OSError, ValidationError):
        config = None  # every rank reports the bad config itself; the message goes to the default path
    return cli._termination_path(config, args.termination_log)


def exit_code(raw: int) -> int:
    """A rank's exit status as a shell reports it: the code, or 128 + the signal that killed it."""
    return raw if raw >= 0 else 128 + abs(raw)


def _how(raw: int) -> str:
    if raw >= 0:
        return f"exited with code {raw}"
    try:
        return f"was killed by {signal.Signals(-raw).name}"
    except ValueError:
        return f"was killed by signal {-raw}"


def main(argv: list[str]) -> int:
    """Run the trainer command on every rank torchrun starts; the first failed rank's exit code."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from forgetmi_trainer import cli

    try:
        options, command = split_arguments(argv)
        args = torchrun.parse_args([*options, "--module", "forgetmi_trainer", *command])
    except (ValueError, SystemExit) as err:
        log.error("%s", err if isinstance(err, ValueError) else f"Bad torchrun options in {argv}; {USAGE}.")
        return int(ExitCode.BAD_CONFIG)
    with tempfile.TemporaryDirectory(prefix="forgetmi-ranks-") as messages:
        os.environ[cli.RANK_MESSAGES_ENV] = messages
        try:
            torchrun.run(args)
        except ChildFailedError as err:
            rank, failure = err.get_first_failure()
            code = exit_code(failure.exitcode)
            written = Path(messages) / f"rank-{rank}"
            message = written.read_text().strip() if written.is_file() else ""
            if not message:
                message = f"Rank {rank} of the run {_how(failure.exitcode)}."
            log.error("Rank %d failed first (exit code %d): %s", rank, code, message)
            cli._terminate(termination_path(command), message)
            return code or 1
        finally:
            os.environ.pop(cli.RANK_MESSAGES_ENV, None)
    return int(ExitCode.OK)

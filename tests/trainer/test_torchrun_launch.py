"""``forgetmi_trainer launch``: torchrun with the trainer's exit codes and the failed rank's message."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from forgetmi_trainer import launch
from forgetmi_trainer.cli import main
from forgetmi_trainer.contract import ForgetSubjects, JobConfig, MethodConfig, ModelRef


def test_the_command_after_the_separator_is_what_every_rank_runs() -> None:
    options, command = launch.split_arguments(["--nproc-per-node", "2", "--", "run", "--config", "j.json"])
    assert options == ["--nproc-per-node", "2"] and command == ["run", "--config", "j.json"]


@pytest.mark.parametrize("argv", [["--nproc-per-node", "2", "run"], ["--", "synth", "--out", "x"], ["--"]])
def test_launch_without_a_run_command_is_exit_2(argv: list[str], restore_trainer_logging: None) -> None:
    with pytest.raises(ValueError, match="launch"):
        launch.split_arguments(argv)
    assert main(["launch", *argv]) == 2


def test_exit_codes_read_as_a_shell_reads_them() -> None:
    assert launch.exit_code(3) == 3
    assert launch.exit_code(-9) == 137


INJECT = textwrap.dedent("""
    # Test-only fault injection: rank 1 cannot read its inputs; rank 0 is still busy (torchrun stops it).
    import os
    if os.environ.get("RANK") in ("0", "1"):
        import time
        from forgetmi_trainer import job
        from forgetmi_trainer.errors import InputError

        def read_subjects(config):
            if os.environ["RANK"] == "0":
                time.sleep(120)
            raise InputError("Rank one could not read the forget list.")

        job.read_subjects = read_subjects
""")


def _config(tmp_path: Path) -> Path:
    config = JobConfig(
        model=ModelRef(registry_uri=(tmp_path / "registry").as_uri(), name="m", version="v1"),
        manifest_uri=(tmp_path / "data" / "manifest.csv").as_uri(),
        forget=ForgetSubjects(file=str(tmp_path / "forget.txt")),
        method=MethodConfig(epochs=1, batch_size=16),
        output_uri=(tmp_path / "registry" / "m" / "versions" / "v2").as_uri(),
        candidate_version="v2",
        device="cpu",
    )
    path = tmp_path / "job.json"
    path.write_text(config.model_dump_json())
    return path


def test_a_failed_rank_fails_the_run_with_its_exit_code_and_message(tmp_path: Path) -> None:
    """Rank 1 fails with an input error (exit 3) while rank 0 has nothing wrong: the launcher exits 3 and
    the termination message is rank 1's sentence, not torchrun's exit 1 nor rank 0's."""
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(INJECT)
    (tmp_path / "forget.txt").write_text("p1\n")
    term = tmp_path / "termination-log"
    env = {**os.environ, "PYTHONSAFEPATH": "1", "PYTHONPATH": str(tmp_path / "inject")}
    proc = subprocess.run(
        [sys.executable, "-m", "forgetmi_trainer", "launch", "--standalone", "--nnodes", "1", "--nproc-per-node", "2",
         "--", "run", "--config", str(_config(tmp_path)), "--termination-log", str(term)],
        env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert term.read_text().strip() == "Rank one could not read the forget list."
    assert "Rank 1 failed first (exit code 3): Rank one could not read the forget list." in proc.stderr

"""The import contracts (``.importlinter``, docs/architecture.md) hold, and adding a forbidden import breaks them.

Each forbidden import is added to a copy of both packages, which ``lint-imports`` then checks
through ``PYTHONPATH`` (ahead of the editable install), so the real tree is never touched.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
SHARED = {"contract", "storage", "errors"}
"""The trainer modules the operator may import."""


def _lint(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          check=False, timeout=120)


def test_the_project_keeps_every_contract() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


FORBIDDEN = [  # (file in the copy, the import added, the contract it breaks)
    ("forgetmi_operator/api/errors.py", "from forgetmi_operator.cluster import kube", "operator-layers"),
    ("forgetmi_operator/registry/paths.py", "from forgetmi_operator.lifecycle import steps", "operator-layers"),
    ("forgetmi_operator/local/run.py", "from forgetmi_operator.cluster import launcher", "operator-layers"),
    ("forgetmi_operator/cluster/watches.py", "from forgetmi_operator.local import run", "operator-layers"),
    ("forgetmi_operator/cluster/outcome.py", "from forgetmi_operator import handlers", "operator-layers"),
    ("forgetmi_operator/lifecycle/conclude.py", "from forgetmi_trainer import methods",
     "operator-shares-only-the-contract"),
    ("forgetmi_operator/lifecycle/gates.py", "import torch", "operator-without-torch"),
    ("forgetmi_trainer/contract/report.py", "import numpy", "shared-trainer-modules-without-torch"),
    ("forgetmi_trainer/job.py", "from forgetmi_operator.api import naming", "trainer-without-operator"),
    ("forgetmi_trainer/model.py", "from forgetmi_trainer import methods", "trainer-layers"),
]


@pytest.fixture(scope="module")
def copy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("contracts")
    (root / "src").mkdir()
    shutil.copytree(ROOT / "operator", root / "src" / "forgetmi_operator", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "trainer", root / "src" / "forgetmi_trainer", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", root)
    return root


@pytest.mark.parametrize(("file", "line", "contract"), FORBIDDEN, ids=[f"{f}: {line}" for f, line, _ in FORBIDDEN])
def test_a_forbidden_import_breaks_its_contract(copy_root: Path, file: str, line: str, contract: str) -> None:
    target = copy_root / "src" / file
    original = target.read_text()
    try:
        target.write_text(original + f"\n{line}  # noqa\n")
        result = _lint(copy_root, copy_root / "src")
    finally:
        target.write_text(original)
    names = configparser.ConfigParser()
    names.read(copy_root / ".importlinter")
    broken_name = names[f"importlinter:contract:{contract}"]["name"].split()[0:4]
    assert result.returncode == 1, result.stdout[-3000:]
    broken = result.stdout.split("Broken contracts", 1)[1]
    assert " ".join(broken_name) in " ".join(broken.split()), broken[:2000]


def test_the_operator_may_import_no_trainer_module_but_the_shared_ones() -> None:
    """A new trainer module is forbidden to the operator until it is added to the list (or made shared)."""
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    forbidden = set(config["importlinter:contract:operator-shares-only-the-contract"]["forbidden_modules"].split())
    modules = {path.stem if path.is_file() else path.name
               for path in (ROOT / "trainer").iterdir()
               if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").is_file()}
    assert {name.removeprefix("forgetmi_trainer.") for name in forbidden} == modules - SHARED

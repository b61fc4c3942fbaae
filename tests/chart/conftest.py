"""Fixtures for the Helm chart tests: real ``helm``, ``promtool`` and ``prometheus`` binaries.

``helm`` comes from ``.tools/bin`` (scripts/install-tools.sh) or ``$PATH``; ``promtool`` and
``prometheus`` from Debian's ``prometheus`` package. A test that needs a missing binary is
skipped with the reason; CI installs all of them with ``make install-dev``.

- ``helm_cmd``: ``helm_cmd(*args)`` runs helm and returns the CompletedProcess.
- ``render``: ``render(values_file=None, *extra_args)`` returns the manifests of
  ``helm template --include-crds`` for release ``forgetmi`` in namespace ``forgetmi-system``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # ``harness`` (the emulated cluster) for test_cluster_e2e.py
CHART = ROOT / "charts" / "forgetmi-operator"
RELEASE = "forgetmi"
NAMESPACE = "forgetmi-system"

HelmCmd = Callable[..., subprocess.CompletedProcess[str]]
RenderFn = Callable[..., list[dict[str, Any]]]


def _binary(name: str, how: str) -> str:
    local = ROOT / ".tools" / "bin" / name
    path = str(local) if local.is_file() else shutil.which(name) or shutil.which(name, path="/usr/bin")
    if path is None:
        pytest.skip(f"{name} is not installed ({how}); CI has it")
    return path


@pytest.fixture(scope="session")
def helm() -> str:
    return _binary("helm", "scripts/install-tools.sh extracts it into .tools/bin")


@pytest.fixture(scope="session")
def promtool() -> str:
    return _binary("promtool", "apt-get install prometheus")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return _binary("prometheus", "apt-get install prometheus")


@pytest.fixture(scope="session")
def helm_cmd(helm: str, tmp_path_factory: pytest.TempPathFactory) -> HelmCmd:
    # Keep helm away from the user's config, cache and repositories.
    home = tmp_path_factory.mktemp("helm-home")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}

    def _run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([helm, *args], capture_output=True, text=True, timeout=60, check=False, env=env)

    return _run


@pytest.fixture(scope="session")
def render(helm_cmd: HelmCmd) -> RenderFn:
    cache: dict[tuple[str, ...], list[dict[str, Any]]] = {}

    def _render(values: Path | None = None, *extra: str) -> list[dict[str, Any]]:
        args = ("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds",
                *(("--values", str(values)) if values else ()), *extra)
        if args not in cache:
            result = helm_cmd(*args)
            assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stderr}"
            cache[args] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        return cache[args]

    return _render

#!/usr/bin/env bash
# Installs everything the project needs into .venv on a fresh Debian machine with only the
# package registries reachable. Idempotent: a second run only checks.
#   scripts/install.sh          trainer + operator (make demo)
#   scripts/install.sh --dev    plus test tools, kubectl/helm and Prometheus (make test)
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0
STAMP=.venv/.installed
if [[ "${1:-}" == "--dev" ]]; then
  DEV=1
  STAMP=.venv/.installed-dev
fi
PY=${PYTHON:-python3}

if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
# Installed and newer than pyproject.toml? (A dev install also covers a plain one.)
current() { [[ -f "$1" && ! pyproject.toml -nt "$1" ]]; }
if current "$STAMP" || { [[ $DEV == 0 ]] && current .venv/.installed-dev; }; then
  :
else
  .venv/bin/python -P -m pip install -q --upgrade pip setuptools wheel
  extras="trainer"
  if [[ $DEV == 1 ]]; then extras="trainer,dev"; fi
  # torch==2.13.0 is named in the same command as transformers so pip takes the CPU wheel
  # instead of pulling several GB of CUDA packages.
  .venv/bin/python -P -m pip install -q "torch==2.13.0" -e ".[${extras}]"
  touch "$STAMP"
fi
if [[ $DEV == 1 ]]; then
  scripts/install-tools.sh
fi

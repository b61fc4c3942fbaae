#!/usr/bin/env bash
# Checks the images scripts/images.sh built (make images), a line per check; exits 1 at the first
# failed one. Needs root (buildah) and .venv with the dev extra (make install-dev: the emulated
# API server of tests/harness).
#   scripts/images-test.sh            localhost/forgetmi-{operator,trainer}:<chart appVersion>
#   TAG=0.1.0 scripts/images-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${TAG:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' charts/forgetmi-operator/Chart.yaml)}
OPERATOR=localhost/forgetmi-operator:$TAG
TRAINER=localhost/forgetmi-trainer:$TAG
MAX_OPERATOR_MB=400
UID_EXPECTED=10001
export BUILDAH_ISOLATION=chroot PYTHONSAFEPATH=1

ok() { echo "ok   $*"; }
fail() { echo "FAIL $*" >&2; exit 1; }

(( EUID == 0 )) || fail "scripts/images-test.sh needs root (buildah); run it with sudo."
command -v buildah >/dev/null || fail "buildah is not installed; run make images first."
[[ -x .venv/bin/python ]] || fail ".venv is missing; run make install-dev first."
for image in "$OPERATOR" "$TRAINER"; do
  buildah inspect --type image "$image" >/dev/null 2>&1 || fail "$image does not exist; run make images first."
done

containers=()
cleanup() { for ctr in "${containers[@]}"; do buildah rm "$ctr" >/dev/null 2>&1 || true; done; }
trap cleanup EXIT
# The image's size: its layers, uncompressed (what `docker images` shows), in MB (10^6 bytes).
image_mb() {
  buildah inspect --type image --format '{{.Manifest}}' "$1" \
    | python3 -c 'import json, sys; print(round(sum(layer["size"] for layer in json.load(sys.stdin)["layers"]) / 1e6))'
}

operator=$(buildah from --pull=never --quiet "$OPERATOR")
containers+=("$operator")
trainer=$(buildah from --pull=never --quiet "$TRAINER")
containers+=("$trainer")
in_operator() { buildah run "$operator" -- "$@"; }
in_trainer() { buildah run "$trainer" -- "$@"; }

# ---- size ---------------------------------------------------------------------------------------
size=$(image_mb "$OPERATOR")
(( size < MAX_OPERATOR_MB )) || fail "$OPERATOR is $size MB, not under $MAX_OPERATOR_MB MB."
ok "$OPERATOR is $size MB (under $MAX_OPERATOR_MB MB); $TRAINER is $(image_mb "$TRAINER") MB"

# ---- user -----------------------------------------------------------------------------------------
for pair in "$OPERATOR:$operator" "$TRAINER:$trainer"; do
  image=${pair%:*} ctr=${pair##*:}
  user=$(buildah inspect --type image --format '{{.OCIv1.Config.User}}' "$image")
  [[ ${user%%:*} == "$UID_EXPECTED" ]] || fail "$image's configured User is '$user', not $UID_EXPECTED."
  uid=$(buildah run "$ctr" -- id -u)
  [[ $uid == "$UID_EXPECTED" ]] || fail "id -u in $image prints $uid, not $UID_EXPECTED."
  ok "$image runs as UID $uid (User $user)"
done

# ---- contents -----------------------------------------------------------------------------------
if in_operator python -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)' 2>/dev/null; then
  fail "$OPERATOR contains torch."
fi
ok "$OPERATOR has no torch"
# shellcheck disable=SC2016  # Python, not shell
arrow=$(in_operator python -c '
import io
import pyarrow as pa, pyarrow.compute as pc, pyarrow.csv as csv, pyarrow.fs, pyarrow.parquet as pq
table = csv.read_csv(io.BytesIO(b"subject_id,split\np1,train\np2,test\n"))
sink = io.BytesIO()
pq.write_table(table, sink)
back = pq.read_table(io.BytesIO(sink.getvalue()))
assert back.equals(table) and pc.sum(pc.equal(back["split"], "train")).as_py() == 1
print(pa.__version__)') || fail "pyarrow in $OPERATOR cannot read and write CSV and Parquet."
ok "$OPERATOR has pyarrow $arrow (CSV and Parquet round trip)"
torch=$(in_trainer python -c 'import torch, transformers; print(torch.__version__, transformers.__version__)') \
  || fail "$TRAINER cannot import torch and transformers."
ok "$TRAINER has torch and transformers ($torch)"

# ---- entrypoints --------------------------------------------------------------------------------
in_operator python -m forgetmi_operator --help >/dev/null || fail "python -m forgetmi_operator --help failed in $OPERATOR."
ok "python -m forgetmi_operator --help runs in $OPERATOR"
in_trainer python -m forgetmi_trainer --help >/dev/null || fail "python -m forgetmi_trainer --help failed in $TRAINER."
ok "python -m forgetmi_trainer --help runs in $TRAINER"

# ---- the operator against an emulated API server ------------------------------------------------
.venv/bin/python scripts/images_emulator.py "$OPERATOR" || fail "the operator in $OPERATOR did not run against the emulated API server."
echo "All image checks passed."

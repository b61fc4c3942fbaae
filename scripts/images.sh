#!/usr/bin/env bash
# Builds the operator and trainer images (the Dockerfile's two targets) with buildah, without a
# Docker daemon or a registry to pull from. Needs root (buildah, debootstrap) on Debian/Ubuntu.
#   scripts/images.sh                                  base built here once, then reused
#   PYTHON_IMAGE=python:3.11-slim scripts/images.sh    any existing Python 3.11 base instead
# Environment:
#   PYTHON_IMAGE    the Dockerfile's base; unset: localhost/forgetmi-python:3.11, debootstrapped
#                   from the Debian mirror (DEBIAN_MIRROR) on first use: Debian's python3 with a
#                   venv at /opt/venv (pip, no setuptools) first on PATH, so `python` and
#                   `python -m pip` behave as in the official python images (no system install
#                   under PEP 668).
#   TAG             image tag; default: the chart's appVersion.
#   TORCH_WHEEL     a torch wheel file for the trainer image (e.g. the local CPU build); default:
#                   torch-<pin>*.whl from the pip find-links directories when one lies there, else
#                   none: torch comes from PyPI (the CUDA build, several GB).
#   CA_BUNDLE       a CA bundle bind-mounted over the image's /etc/ssl/certs/ca-certificates.crt
#                   while pip runs (never stored in an image); default: the host's, when the host
#                   trusts local CAs (/usr/local/share/ca-certificates/*.crt, e.g. a TLS-inspecting
#                   proxy in front of PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=localhost/forgetmi-python:3.11
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TAG=${TAG:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' charts/forgetmi-operator/Chart.yaml)}
TORCH_PIN=$(grep -o '"torch==[^"]*"' pyproject.toml | tr -d '"')
export BUILDAH_ISOLATION=chroot  # no OCI runtime or namespaces needed

if (( EUID != 0 )); then
  echo "scripts/images.sh needs root (buildah and debootstrap); run it with sudo." >&2
  exit 1
fi

# ---- tools: buildah alone (chroot isolation, overlay storage); no podman, runc or fuse-overlayfs ----
need() {
  command -v "$1" >/dev/null && return
  echo "Installing $1 with apt."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get install -y -qq --no-install-recommends "$1" >/dev/null
}
need buildah

# An image's size: its layers, uncompressed (what `docker images` shows), in MB (10^6 bytes).
image_mb() {
  buildah inspect --type image --format '{{.Manifest}}' "$1" \
    | python3 -c 'import json, sys; print(round(sum(layer["size"] for layer in json.load(sys.stdin)["layers"]) / 1e6))'
}

# ---- base -------------------------------------------------------------------------------------
if [[ -z ${PYTHON_IMAGE:-} ]]; then
  PYTHON_IMAGE=$BASE_IMAGE
  if buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "Reusing the base image $BASE_IMAGE."
  else
    need debootstrap
    echo "Building the base image $BASE_IMAGE with debootstrap from $DEBIAN_MIRROR."
    start=$SECONDS
    log=${TMPDIR:-/tmp}/forgetmi-debootstrap.log
    ctr=$(buildah from scratch)
    trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
    root=$(buildah mount "$ctr")
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$DEBIAN_MIRROR" \
      > "$log" 2>&1 || { tail -20 "$log" >&2; echo "debootstrap failed (log: $log)." >&2; exit 1; }
    # pip only, as in the Python 3.12+ images: builds fetch their own setuptools.
    chroot "$root" /usr/bin/python3 -m venv /opt/venv
    chroot "$root" /opt/venv/bin/python -m pip uninstall --yes --quiet setuptools
    # Slim as debian:bookworm-slim is (debuerreotype's rules): no docs but the copyrights, no man
    # pages, no translations; dpkg keeps to that for any package installed later.
    cat > "$root/etc/dpkg/dpkg.cfg.d/slim" <<'SLIM'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
SLIM
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    rm -rf "$root"/usr/share/{groff,info,linda,lintian,man}/* "$root"/var/cache/apt/*.bin \
      "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
    buildah config --env PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --env LANG=C.UTF-8 --cmd python --label org.opencontainers.image.description="Debian bookworm python3 \
with a venv at /opt/venv (a local stand-in for python:3.11-slim)" "$ctr"
    buildah unmount "$ctr" >/dev/null
    buildah commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
    trap - EXIT
    echo "Built $BASE_IMAGE in $((SECONDS - start)) s, $(image_mb "$BASE_IMAGE") MB."
  fi
fi

# ---- a local torch wheel ------------------------------------------------------------------------
if [[ -z ${TORCH_WHEEL:-} ]]; then
  # pip's find-links folders (space-separated lists, hence the unquoted expansions).
  # shellcheck disable=SC2206,SC2207
  dirs=(${PIP_FIND_LINKS:-})
  for py in .venv/bin/python python3; do
    if command -v "$py" >/dev/null; then
      # shellcheck disable=SC2207
      dirs+=($("$py" -m pip config list 2>/dev/null | sed -n "s/^[a-z]*\.find-links='\(.*\)'$/\1/p"))
      break
    fi
  done
  version=${TORCH_PIN#torch==}
  for dir in "${dirs[@]}"; do
    dir=${dir#file://}
    for file in "$dir/torch-$version"-cp311-cp311-*"$(uname -m)".whl "$dir/torch-$version"+*-cp311-cp311-*"$(uname -m)".whl; do
      if [[ -f $file ]]; then TORCH_WHEEL=$file; break 2; fi
    done
  done
fi
trainer_args=()
if [[ -n ${TORCH_WHEEL:-} ]]; then
  echo "The trainer image takes torch from $TORCH_WHEEL."
  trainer_args=(--volume "$(dirname "$(realpath "$TORCH_WHEEL")"):/opt/torch-wheels:ro"
                --build-arg "TORCH_REQUIREMENT=/opt/torch-wheels/$(basename "$TORCH_WHEEL")")
else
  echo "The trainer image takes $TORCH_PIN from PyPI (the CUDA build, several GB)."
fi

common_args=()
if [[ -z ${CA_BUNDLE:-} ]] && compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
fi
if [[ -n ${CA_BUNDLE:-} ]]; then
  echo "pip in the builds trusts the CAs of $CA_BUNDLE."
  common_args=(--volume "$(realpath "$CA_BUNDLE"):/etc/ssl/certs/ca-certificates.crt:ro")
fi

# ---- the two images ---------------------------------------------------------------------------
build() {
  local target=$1 image=localhost/forgetmi-$1:$TAG start=$SECONDS log=${TMPDIR:-/tmp}/forgetmi-image-$1.log
  shift
  echo "Building $image (target $target, base $PYTHON_IMAGE)."
  if ! buildah bud --isolation chroot --layers --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" \
      --target "$target" --tag "$image" "${common_args[@]}" "$@" . > "$log" 2>&1; then
    tail -40 "$log" >&2
    echo "Building $image failed (log: $log)." >&2
    exit 1
  fi
  echo "Built $image in $((SECONDS - start)) s, $(image_mb "$image") MB."
}
build operator
build trainer "${trainer_args[@]}"
buildah images --filter reference='localhost/forgetmi-*'

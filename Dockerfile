# syntax=docker/dockerfile:1
# Two images from one build:
#   docker build --target operator -t ghcr.io/forgetmi/forgetmi-operator:0.1.0 .
#   docker build --target trainer  -t ghcr.io/forgetmi/forgetmi-trainer:0.1.0 .
# The operator image never contains torch (the package is installed without the `trainer`
# extra); the trainer image installs `.[trainer]`, whose torch wheel from PyPI bundles CUDA 12
# (the GPU driver comes from the node through the NVIDIA container toolkit).
# Both run as the non-root user 10001, the UID the Helm chart's securityContext expects.
# PYTHON_IMAGE is any Python 3.11 image with `python` (and its pip) on PATH: python:3.11-slim, or
# the local base that scripts/images.sh builds with debootstrap where no registry is reachable
# (`make images`; buildah, no Docker daemon needed).

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: one wheel for both images -------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONSAFEPATH=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY trainer/ trainer/
RUN python -m pip wheel --no-deps --wheel-dir /wheels .

# ---- operator: Kopf operator, no torch -------------------------------------------------------
FROM ${PYTHON_IMAGE} AS operator
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONSAFEPATH=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
COPY --from=build /wheels /wheels
# Kept under 400 MB (scripts/images-test.sh checks it) by removing, in the install's own layer, what
# the operator never runs: pyarrow's headers, Cython sources and tests, Arrow Flight (RPC) and
# Arrow's S3 filesystem (the operator only parses CSV and Parquet with pyarrow; S3 goes through
# boto3), and the kubernetes package's second, asyncio client (the operator uses the synchronous
# one; Kopf has its own). About 120 MB.
RUN python -m pip install /wheels/forgetmi_operator-*.whl \
 && site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
 && rm -rf /wheels "$site"/kubernetes/aio "$site"/pyarrow/include "$site"/pyarrow/includes "$site"/pyarrow/src \
      "$site"/pyarrow/tests "$site"/pyarrow/_pyarrow_cpp_tests* "$site"/pyarrow/*flight* "$site"/pyarrow/libarrow_s3.* \
 && find "$site"/pyarrow -name '*.pyx' -delete -o -name '*.pxd' -delete -o -name '*.pxi' -delete \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin forgetmi
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 8081
ENTRYPOINT ["python", "-m", "forgetmi_operator"]

# ---- trainer: Forget-MI in a GPU Job ----------------------------------------------------------
FROM ${PYTHON_IMAGE} AS trainer
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONSAFEPATH=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/tmp/huggingface HF_HUB_OFFLINE=1
# TORCH_REQUIREMENT: where torch comes from, named in the same pip command as the trainer extra
# (so transformers never pulls another torch). Default: the pin from PyPI (the CUDA 12 build).
# For a CPU-only test image from a local wheel, bind its folder in and name the file, as
# scripts/images.sh does: buildah bud -v /opt/wheels:/opt/torch-wheels:ro --build-arg
# TORCH_REQUIREMENT=/opt/torch-wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl …
# PIP_INSTALL_ARGS: extra pip options for that command, e.g. for torch's CPU index:
#   --build-arg PIP_INSTALL_ARGS="--index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple"
ARG TORCH_REQUIREMENT=torch==2.13.0
ARG PIP_INSTALL_ARGS=""
COPY --from=build /wheels /wheels
RUN wheel=$(ls /wheels/forgetmi_operator-*.whl) \
 && python -m pip install ${PIP_INSTALL_ARGS} "${TORCH_REQUIREMENT}" "${wheel}[trainer]" \
 && rm -rf /wheels \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin forgetmi
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["python", "-m", "forgetmi_trainer"]

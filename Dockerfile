# syntax=docker/dockerfile:1
# Two images from one build:
#   docker build --target operator -t ghcr.io/forgetmi/forgetmi-operator:0.1.0 .
#   docker build --target trainer  -t ghcr.io/forgetmi/forgetmi-trainer:0.1.0 .
# The operator image never contains torch (the package is installed without the `trainer`
# extra); the trainer image installs `.[trainer]`, whose torch wheel from PyPI bundles CUDA 12
# (the GPU driver comes from the node through the NVIDIA container toolkit).
# Both run as the non-root user 10001, the UID the Helm chart's securityContext expects.

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
RUN python -m pip install /wheels/forgetmi_operator-*.whl \
 && rm -rf /wheels \
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
COPY --from=build /wheels /wheels
RUN wheel=$(ls /wheels/forgetmi_operator-*.whl) \
 && python -m pip install "${wheel}[trainer]" \
 && rm -rf /wheels \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin forgetmi
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["python", "-m", "forgetmi_trainer"]

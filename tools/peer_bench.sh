#!/usr/bin/env bash
# Encode throughput of contrastgeo against ONNX Runtime (and, with --with-st, sentence-transformers on PyTorch
# CPU), same machine, same posts, same weights, one run.
#
#   tools/peer_bench.sh [--posts ../shared/data/posts.jsonl] [--count 1000] [--rounds 7] [--threads 2] [--json FILE]
#                       [--with-st]
#
# Makes a virtual environment in target/peer-venv (git-ignored; pinned onnxruntime, onnx, numpy, tokenizers,
# safetensors from PyPI), builds the release binary (PEER_BENCH_NO_BUILD=1 reuses target/release as it is), then
# runs tools/peer_bench.py: ONNX graphs of the data home's all-MiniLM-L6-v2 built from its safetensors (plain
# ONNX ops, and ORT's fused CPU kernels), ORT with intra-op threads = 2 with and without spinning, and
# `contrastgeo embed`, interleaved round by round; prints posts/s per round, medians, the ratios contrastgeo /
# ORT and the cosine agreement (>= 0.9999 or exit 1).
#
# --with-st adds sentence-transformers (torch CPU, torch.set_num_threads(--threads), batch 32, max_seq_length
# 128, model built offline from the same directory as Transformer + mean Pooling + Normalize) to the rounds as
# st_default (torch's own OpenMP wait policy) and st_passive (OMP_WAIT_POLICY=PASSIVE), each in a worker
# process, with their ratios and cosine agreement. PyPI serves only the CUDA build of torch for Linux, so the
# first --with-st run installs torch's CPU code without the nvidia-* wheels, sentence-transformers' pinned closure
# and CUDA library stubs (tools/peers/torch_cpu.sh says how; a few minutes, ~2 GB in the venv;
# PEER_TORCH_WHEEL=path/to/torch-2.15.0-...whl skips its 539 MB download).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${PEER_VENV:-target/peer-venv}
PYTHON=${PYTHON:-python3}
PINS=(onnxruntime==1.32.0 onnx==1.23.2 numpy==2.4.6 tokenizers==0.23.3 safetensors==0.8.0)
source tools/peers/torch_cpu.sh
WITH_ST=0
for arg in "$@"; do [ "$arg" = --with-st ] && WITH_ST=1; done
say() { echo "peer_bench: $*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import onnxruntime, onnx, numpy, tokenizers, safetensors" 2>/dev/null; then
  say "installing ${PINS[*]}"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}"
fi
if [ "$WITH_ST" = 1 ] && ! "$VENV/bin/python" -c "import torch, sentence_transformers" 2>/dev/null; then
  torch_cpu_install "$VENV" "${ST_PINS[@]}"
fi
if [ "${PEER_BENCH_NO_BUILD:-0}" = 1 ]; then
  say "PEER_BENCH_NO_BUILD=1: using target/release as it is"
else
  say "building target/release/contrastgeo and examples/encode_rate"
  cargo build --release --quiet --bin contrastgeo --example encode_rate
fi
exec "$VENV/bin/python" tools/peer_bench.py --binary target/release/contrastgeo "$@"

#!/usr/bin/env bash
# Encode throughput of contrastgeo against ONNX Runtime, same machine, same posts, same weights, one run.
#
#   tools/peer_bench.sh [--posts ../shared/data/posts.jsonl] [--count 1000] [--rounds 7] [--threads 2] [--json FILE]
#
# Makes a virtual environment in target/peer-venv (git-ignored; pinned onnxruntime, onnx, numpy, tokenizers,
# safetensors from PyPI; no torch), builds the release binary, then runs tools/peer_bench.py: ONNX graphs of
# the data home's all-MiniLM-L6-v2 built from its safetensors (plain ONNX ops, and ORT's fused CPU kernels),
# ORT with intra-op threads = 2 with and without spinning, and `contrastgeo embed`, interleaved round by round;
# prints posts/s per round, medians, the ratios contrastgeo / ORT and the cosine agreement (>= 0.9999 or exit 1).
#
# The sentence-transformers peer is not included: it needs torch, and the only index reachable here (PyPI)
# serves the CUDA build of torch for Linux (several GB of nvidia-* wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${PEER_VENV:-target/peer-venv}
PYTHON=${PYTHON:-python3}
PINS=(onnxruntime==1.32.0 onnx==1.23.2 numpy==2.4.6 tokenizers==0.23.3 safetensors==0.8.0)
say() { echo "peer_bench: $*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import onnxruntime, onnx, numpy, tokenizers, safetensors" 2>/dev/null; then
  say "installing ${PINS[*]}"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}"
fi
say "building target/release/contrastgeo and examples/encode_rate"
cargo build --release --quiet --bin contrastgeo --example encode_rate
exec "$VENV/bin/python" tools/peer_bench.py --binary target/release/contrastgeo "$@"

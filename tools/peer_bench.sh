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
# process, with their ratios and cosine agreement. PyPI serves only the CUDA build of torch for Linux, whose
# metadata pulls several GB of nvidia-*/cuda-* wheels, so the first --with-st run (a few minutes, ~2 GB in the
# venv; PEER_TORCH_WHEEL=path/to/torch-2.15.0-...whl skips its 539 MB download):
#   1. installs torch==2.15.0 with --no-deps (no nvidia-*, cuda-*, triton wheels), then ST_PINS below with
#      --no-deps too: the exact closure of sentence-transformers 6.2.0 and transformers 5.24.0 less torch's CUDA
#      deps (scipy and scikit-learn are imported by sentence_transformers at import time, so they stay);
#   2. `peer_bench.py --make-cuda-stubs` writes empty stand-ins for the CUDA libraries that torch's .so files
#      link (libcudart.so.13, libcublas.so.13, libcudnn.so.9, libnccl.so.2, ...) into torch/lib, which is on
#      their RPATH ($ORIGIN): every symbol they import from those libraries, with its symbol version, as a C
#      function that returns an error code (100, cudaErrorNoDevice), compiled with cc. They only satisfy the
#      dynamic linker: `import torch` loads, torch.cuda.is_available() is False, nothing calls them on CPU, and
#      the CPU kernels are the wheel's own libtorch_cpu.so (MKL, oneDNN, OpenMP). pip check lists the missing
#      nvidia-*/cuda-*/triton requirements; that is expected.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${PEER_VENV:-target/peer-venv}
PYTHON=${PYTHON:-python3}
PINS=(onnxruntime==1.32.0 onnx==1.23.2 numpy==2.4.6 tokenizers==0.23.3 safetensors==0.8.0)
TORCH_PIN=torch==2.15.0
ST_PINS=(sentence-transformers==6.2.0 transformers==5.24.0 huggingface_hub==2.4.0 hf-xet==1.8.0 scipy==1.17.1
  scikit-learn==1.9.1 joblib==1.6.0 threadpoolctl==3.8.0 regex==2026.11.19 tqdm==4.70.1 PyYAML==6.0.4
  packaging==26.4 typing_extensions==4.16.0 filelock==4.3.1 fsspec==2026.9.0 sympy==1.14.0 mpmath==1.3.0
  networkx==3.6.1 Jinja2==3.1.6 MarkupSafe==3.0.4 setuptools==84.2.1 httpx2==2.16.2 httpcore2==2.16.2 h11==0.16.0
  anyio==4.16.0 idna==3.20 truststore==0.10.5 click==8.5.1 typer==0.29.2 shellingham==1.5.4 rich==15.0.0
  markdown-it-py==4.3.0 mdurl==0.1.2 Pygments==2.21.0 annotated-doc==0.0.7 annotated-types==0.8.0
  pydantic==2.14.4 pydantic_core==2.50.5 typing-inspection==0.4.5 narwhals==2.29.0 cloudpickle==3.1.3)
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
  if ! "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('torch') == '${TORCH_PIN#torch==}'" 2>/dev/null; then
    say "installing ${PEER_TORCH_WHEEL:-$TORCH_PIN} --no-deps (the CPU code of the CUDA wheel, without nvidia-* wheels)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps "${PEER_TORCH_WHEEL:-$TORCH_PIN}"
  fi
  say "installing ${ST_PINS[*]} --no-deps"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps "${ST_PINS[@]}"
  say "writing CUDA library stubs into torch/lib"
  "$VENV/bin/python" tools/peer_bench.py --make-cuda-stubs
  "$VENV/bin/python" -c "import torch, sentence_transformers; assert not torch.cuda.is_available()"
fi
if [ "${PEER_BENCH_NO_BUILD:-0}" = 1 ]; then
  say "PEER_BENCH_NO_BUILD=1: using target/release as it is"
else
  say "building target/release/contrastgeo and examples/encode_rate"
  cargo build --release --quiet --bin contrastgeo --example encode_rate
fi
exec "$VENV/bin/python" tools/peer_bench.py --binary target/release/contrastgeo "$@"

# Sourced by tools/peer_bench.sh (--with-st) and tools/peers/run_setfit.sh: torch's CPU code from PyPI's CUDA
# wheel, and the pinned sentence-transformers closure, installed in a virtual environment without any nvidia-*,
# cuda-* or triton wheel. Defines TORCH_PIN, ST_PINS and torch_cpu_install. Run from the repository root.
#
# PyPI serves only the CUDA build of torch for Linux, whose metadata pulls several GB of nvidia-*/cuda-* wheels,
# so torch_cpu_install VENV [PINS...] (a few minutes the first time, ~2 GB in the venv;
# PEER_TORCH_WHEEL=path/to/torch-2.15.0-...whl skips its 539 MB download):
#   1. installs torch==2.15.0 with --no-deps (no nvidia-*, cuda-*, triton wheels), then PINS with --no-deps too
#      (ST_PINS: the exact closure of sentence-transformers 6.2.0 and transformers 5.24.0 less torch's CUDA deps
#      and less numpy, tokenizers, safetensors, which the callers pin themselves; scipy and scikit-learn are
#      imported by sentence_transformers at import time, so they stay), unless the venv has those exact versions;
#   2. `python tools/peers/torch_cpu.py` writes empty stand-ins for the CUDA libraries that torch's .so files
#      link (libcudart.so.13, libcublas.so.13, libcudnn.so.9, libnccl.so.2, ...) into torch/lib, which is on
#      their RPATH ($ORIGIN): every symbol they import from those libraries, with its symbol version, as a C
#      function that returns an error code (100, cudaErrorNoDevice), compiled with cc. They only satisfy the
#      dynamic linker: `import torch` loads, torch.cuda.is_available() is False, nothing calls them on CPU, and
#      the CPU kernels are the wheel's own libtorch_cpu.so (MKL, oneDNN, OpenMP). pip check lists the missing
#      nvidia-*/cuda-*/triton requirements; that is expected.
TORCH_PIN=torch==2.15.0
ST_PINS=(sentence-transformers==6.2.0 transformers==5.24.0 huggingface_hub==2.4.0 hf-xet==1.8.0 scipy==1.17.1
  scikit-learn==1.9.1 joblib==1.6.0 threadpoolctl==3.8.0 regex==2026.11.19 tqdm==4.70.1 PyYAML==6.0.4
  packaging==26.4 typing_extensions==4.16.0 filelock==4.3.1 fsspec==2026.9.0 sympy==1.14.0 mpmath==1.3.0
  networkx==3.6.1 Jinja2==3.1.6 MarkupSafe==3.0.4 setuptools==84.2.1 httpx2==2.16.2 httpcore2==2.16.2 h11==0.16.0
  anyio==4.16.0 idna==3.20 truststore==0.10.5 click==8.5.1 typer==0.29.2 shellingham==1.5.4 rich==15.0.0
  markdown-it-py==4.3.0 mdurl==0.1.2 Pygments==2.21.0 annotated-doc==0.0.7 annotated-types==0.8.0
  pydantic==2.14.4 pydantic_core==2.50.5 typing-inspection==0.4.5 narwhals==2.29.0 cloudpickle==3.1.3)

# torch_cpu_pinned VENV PINS...: whether the venv has exactly these versions.
torch_cpu_pinned() {
  local venv=$1
  shift
  "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(any(m.version(n) != v for n, v in
    (p.split('==') for p in sys.argv[1:])))" "$@" 2>/dev/null
}

# torch_cpu_install VENV PINS...: torch --no-deps, PINS --no-deps, the CUDA stubs, then checks the import.
torch_cpu_install() {
  local venv=$1
  shift
  if ! torch_cpu_pinned "$venv" "$TORCH_PIN"; then
    echo "torch_cpu: installing ${PEER_TORCH_WHEEL:-$TORCH_PIN} --no-deps (the CPU code of the CUDA wheel," \
      "without nvidia-* wheels)" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "${PEER_TORCH_WHEEL:-$TORCH_PIN}"
  fi
  if ! torch_cpu_pinned "$venv" "$@"; then
    echo "torch_cpu: installing $* --no-deps" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "$@"
  fi
  echo "torch_cpu: writing CUDA library stubs into torch/lib" >&2
  "$venv/bin/python" tools/peers/torch_cpu.py
  "$venv/bin/python" -c "import torch, sentence_transformers; assert not torch.cuda.is_available()"
}

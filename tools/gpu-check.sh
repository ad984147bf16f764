#!/usr/bin/env bash
# Checks the CUDA binary on a GPU machine that has no Rust toolchain, and writes one JSON summary.
#
# Two steps:
#   1. On the build machine, make a bundle (the CUDA binary and its libraries from tools/build-cuda.sh, an f16
#      copy of the model, the benchmark data, this script):
#        tools/gpu-check.sh --bundle target/gpu-bundle [--data ../shared/data] [--no-libs]
#      (--no-libs leaves out the ~700 MB of CUDA libraries, the check then taking the GPU machine's own CUDA 13
#      cuBLAS/cuRAND from a system toolkit or its Python's nvidia-* wheels, and compresses the binary: ~58 MB
#      in all, under the device tool's 64 MiB carry limit)
#      (the f16 copy is made with target/peer-venv's numpy + safetensors; run tools/peer_bench.sh once first).
#      The benchmark data is not to be published: carry the bundle only to machines of the project.
#   2. On the GPU machine, from inside the bundle:
#        ./gpu-check.sh [--out results] [--posts 2000] [--device cuda] [--max-test-per-city N]
#      It needs bash, python3 (standard library only) and an NVIDIA driver for CUDA 13.
#
# What it checks (each step's wall time is recorded):
#   - embeddings of --posts real posts on the GPU (f32, f16, bf16) against the CPU path of the same binary:
#     min and mean cosine (f32 must reach 0.9999, half precision 0.999);
#   - throughput at the device defaults (256 posts / 32,768 tokens on CUDA), f32 and f16, posts/s;
#   - `eval` K=5 (seed 0) on the benchmark: Acc@1, Acc@161km of every rule, from report.json;
#   - `index build` (60 city prompts + the K=5 support posts) and `locate` over the test posts;
#   - everything into $OUT/gpu-check.json.
# `--device cpu` runs the same steps on the CPU (a dry run of the script on a machine without a GPU; add
# `--max-test-per-city 20` to keep it short there).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
say() { echo "gpu-check: $*" >&2; }
die() { say "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------- bundle
if [ "${1:-}" = --bundle ]; then
  BUNDLE=${2:?--bundle DIR}
  shift 2
  DATA=../shared/data
  BIN_DIR=target/cuda-dist
  NO_LIBS=0
  while [ $# -gt 0 ]; do
    case $1 in
      --data) DATA=$2; shift 2 ;;
      --bin-dir) BIN_DIR=$2; shift 2 ;;
      --no-libs) NO_LIBS=1; shift ;;
      *) die "unknown option $1" ;;
    esac
  done
  cd "$HERE/.."
  [ -x "$BIN_DIR/contrastgeo" ] || die "$BIN_DIR/contrastgeo missing: run tools/build-cuda.sh (or pass --bin-dir)"
  PY=target/peer-venv/bin/python
  [ -x "$PY" ] || die "$PY missing: run tools/peer_bench.sh once (it makes the venv with numpy + safetensors)"
  MODEL=${CONTRASTGEO_MODEL:-${CONTRASTGEO_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/contrastgeo}/models/all-MiniLM-L6-v2}
  mkdir -p "$BUNDLE/model-f16" "$BUNDLE/data"
  if [ "$NO_LIBS" = 1 ]; then
    # cuBLAS/cuBLASLt/cuRAND are ~700 MB: too much to carry where the carrier limits size (the device
    # tool carries 64 MiB); the GPU machine's own CUDA 13 libraries are found at check time instead.
    # and the binary goes xz-compressed (22 MB -> ~4 MB), unpacked by python3's lzma on the GPU machine.
    command -v xz >/dev/null || die "xz is needed for --no-libs"
    xz -T2 -6 -c "$BIN_DIR/contrastgeo" >"$BUNDLE/contrastgeo.xz"
  else
    cp -r "$BIN_DIR"/. "$BUNDLE/"
  fi
  cp "$MODEL/config.json" "$MODEL/tokenizer.json" "$BUNDLE/model-f16/"
  "$PY" - "$MODEL/model.safetensors" "$BUNDLE/model-f16/model.safetensors" <<'EOF'
import sys
import numpy as np
from safetensors.numpy import load_file, save_file
tensors = load_file(sys.argv[1])
save_file({k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in tensors.items()}, sys.argv[2])
EOF
  cp "$DATA/posts.jsonl" "$DATA/cities.jsonl" "$DATA/split.json" "$BUNDLE/data/"
  cp "$HERE/gpu-check.sh" "$BUNDLE/"
  say "bundle ready: $BUNDLE ($(du -sh "$BUNDLE" | cut -f1)); on the GPU machine: cd bundle && ./gpu-check.sh"
  exit 0
fi

# ---------------------------------------------------------------------------------------------- check
OUT=results
POSTS=2000
DEVICE=cuda
BIN=$HERE/contrastgeo
MODEL=$HERE/model-f16
DATA=$HERE/data
TEST_CAP=()
while [ $# -gt 0 ]; do
  case $1 in
    --out) OUT=$2; shift 2 ;;
    --max-test-per-city) TEST_CAP=(--max-test-per-city "$2"); shift 2 ;;
    --posts) POSTS=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
if [ ! -x "$BIN" ] && [ -f "$BIN.xz" ]; then
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$BIN.xz" "$BIN"
  chmod +x "$BIN"
fi
[ -x "$BIN" ] || die "$BIN not found (run from the bundle, or pass --bin)"
[ -f "$MODEL/model.safetensors" ] || die "$MODEL/model.safetensors not found (pass --model)"
[ -f "$DATA/posts.jsonl" ] || die "$DATA/posts.jsonl not found (pass --data)"
command -v python3 >/dev/null || die "python3 is needed (standard library only)"
# A bundle made with --no-libs brings no CUDA libraries: take the machine's CUDA 13 cuBLAS/cuRAND, from a
# system toolkit or from the nvidia-* wheels of its Python (PyTorch's CUDA 13 builds install them).
if [ ! -d "$(dirname "$BIN")/lib" ] && [ "$DEVICE" = cuda ]; then
  found=$(python3 - <<'EOF'
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages(), "/usr/local/cuda/lib64", "/usr/lib/x86_64-linux-gnu"]
dirs = []
for name in ("libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10"):
    for root in roots:
        hits = glob.glob(os.path.join(root, "**", name), recursive=True) if os.path.isdir(root) else []
        if hits:
            d = os.path.dirname(hits[0])
            if d not in dirs:
                dirs.append(d)
            break
    else:
        sys.exit(f"{name} not found under {roots}")
print(":".join(dirs))
EOF
  ) || die "the bundle has no lib/ and this machine has no CUDA 13 cuBLAS/cuRAND: $found"
  export LD_LIBRARY_PATH="$found${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  say "CUDA libraries from this machine: $found"
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export CONTRASTGEO_MODEL=$MODEL
export RUST_LOG=${RUST_LOG:-warn}
LOG="$OUT/gpu-check.log"
: >"$LOG"
if [ "$DEVICE" = cuda ]; then
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$LOG" >&2 || true
  DTYPES="f32 f16 bf16"
else
  DTYPES="f32"
fi
STEPS="$OUT/steps.tsv"
: >"$STEPS"
# step NAME COMMAND...: runs and records wall seconds and exit status.
step() {
  local name=$1; shift
  say "$name"
  local start end rc=0
  start=$(date +%s.%N)
  "$@" >>"$LOG" 2>&1 || rc=$?
  end=$(date +%s.%N)
  printf '%s\t%s\t%s\n' "$name" "$(python3 -c "print(round($end - $start, 3))")" "$rc" >>"$STEPS"
  [ "$rc" = 0 ] || say "$name failed (exit $rc); see $LOG"
  return 0
}

head -n "$POSTS" "$DATA/posts.jsonl" >"$OUT/posts.jsonl"
# The CPU path of the same binary is the reference.
step embed_cpu "$BIN" embed --device cpu --input "$OUT/posts.jsonl" --output "$OUT/emb-cpu.jsonl"
for dtype in $DTYPES; do
  step "embed_${DEVICE}_$dtype" "$BIN" embed --device "$DEVICE" --dtype "$dtype" --input "$OUT/posts.jsonl" \
    --output "$OUT/emb-$DEVICE-$dtype.jsonl"
done
# Throughput at the defaults: a warm-up run above loaded the kernels; time f32 and f16 again, output discarded.
for dtype in $DTYPES; do
  [ "$dtype" = bf16 ] && continue
  step "throughput_${DEVICE}_$dtype" "$BIN" embed --device "$DEVICE" --dtype "$dtype" --input "$OUT/posts.jsonl" \
    --output /dev/null
done
# K=5 benchmark, seed 0 (trains one model; writes report.json), and the same sets for index build + locate.
step eval_k5 "$BIN" eval --device "$DEVICE" --data-dir "$DATA" --shots 5 --seeds 0 "${TEST_CAP[@]}" \
  --out "$OUT/eval-k5"
step export_sets "$BIN" eval --data-dir "$DATA" --shots 5 --seeds 0 "${TEST_CAP[@]}" --export-sets "$OUT/sets"
step index_build "$BIN" index build --device "$DEVICE" --store "$OUT/store" --cities "$DATA/cities.jsonl" \
  --support "$OUT/sets/k5-seed0.support.jsonl"
step locate "$BIN" locate --device "$DEVICE" --store "$OUT/store" --input "$OUT/sets/test.jsonl" \
  --output "$OUT/locate.jsonl"

python3 - "$OUT" "$DEVICE" "$POSTS" "$DTYPES" <<'EOF'
import json, math, os, sys
out, device, posts, dtypes = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split()

def vectors(path):
    if not os.path.exists(path):
        return None
    return {r["line"]: r["embedding"] for r in map(json.loads, open(path))}

def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)) + 1e-12)

steps = {}
for line in open(os.path.join(out, "steps.tsv")):
    name, seconds, rc = line.rstrip("\n").split("\t")
    steps[name] = {"seconds": float(seconds), "exit": int(rc)}
summary = {"device": device, "posts": posts, "steps": steps, "agreement": {}, "throughput_posts_per_s": {}}
reference = vectors(os.path.join(out, "emb-cpu.jsonl"))
failures = []
for dtype in dtypes:
    got = vectors(os.path.join(out, f"emb-{device}-{dtype}.jsonl"))
    if reference is None or got is None:
        failures.append(f"embeddings {dtype} missing")
        continue
    cosines = [cosine(reference[k], got[k]) for k in reference if k in got]
    floor = 0.9999 if dtype == "f32" else 0.999
    entry = {"min_cosine": min(cosines), "mean_cosine": sum(cosines) / len(cosines), "count": len(cosines), "floor": floor}
    summary["agreement"][dtype] = entry
    if entry["min_cosine"] < floor or len(cosines) != len(reference):
        failures.append(f"{dtype} agreement {entry['min_cosine']:.6f} < {floor}")
for name, step in steps.items():
    if name.startswith("throughput_") and step["exit"] == 0:
        # Whole process: start-up and model load included.
        summary["throughput_posts_per_s"][name[len("throughput_"):]] = round(posts / step["seconds"], 1)
report = os.path.join(out, "eval-k5", "report.json")
if os.path.exists(report):
    summary["eval_k5"] = json.load(open(report))
locate = os.path.join(out, "locate.jsonl")
if os.path.exists(locate):
    summary["locate_answers"] = sum(1 for _ in open(locate))
failures += [f"step {n} exit {s['exit']}" for n, s in steps.items() if s["exit"] != 0]
summary["failures"] = failures
summary["ok"] = not failures
with open(os.path.join(out, "gpu-check.json"), "w") as f:
    json.dump(summary, f, indent=2)
short = {k: v for k, v in summary.items() if k != "eval_k5"}
print(json.dumps(short, indent=2))
sys.exit(0 if not failures else 1)
EOF

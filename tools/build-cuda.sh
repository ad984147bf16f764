#!/usr/bin/env bash
# Builds the CUDA binary of contrastgeo (`--features cuda`, profile `release-cuda`: fat LTO, one codegen unit,
# stripped) without a system CUDA toolkit: the pieces of CUDA 13.0 come from NVIDIA's PyPI wheels, pinned and
# sha256-checked like tools/setup.sh does, unpacked under a git-ignored directory.
#
#   tools/build-cuda.sh            # download (once), build, assemble target/cuda-dist/
#   CUDA_COMPUTE_CAP=80 tools/build-cuda.sh   # another GPU generation (default 90: H100/H200)
#
# Result (built in target/cuda-target, so the CPU build's cache stays as it is): target/cuda-dist/contrastgeo (the binary) and target/cuda-dist/lib/ (the CUDA 13 libraries it links:
# cuBLAS, cuBLASLt, cuRAND, NVRTC, cudart; found through an $ORIGIN/lib rpath). Carry the whole directory to
# the GPU machine; that machine needs an NVIDIA driver for CUDA 13 (libcuda.so.1) and nothing else.
#
# Linking, and why the binary needs libcuda.so.1 to start: candle-core 0.11's `cuda` feature turns on
# cudarc's `dynamic-linking`, and cudarc's build script refuses `dynamic-loading` next to it, so the binary
# links the driver library at link time (no dlopen fallback: it does not start on a machine without an NVIDIA
# driver; use the CPU build there). No driver is installed here, so the link uses a stub libcuda.so built in
# target/cuda-toolkit/stubs from the driver symbols cudarc declares; the stub only satisfies the linker (the
# binary records the soname libcuda.so.1) and is never copied into cuda-dist.
#
# The default `cargo build --release` is unaffected: CPU only, no CUDA anything.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLKIT=${CUDA_TOOLKIT_DIR:-$ROOT/target/cuda-toolkit}
DIST=${CUDA_DIST_DIR:-$ROOT/target/cuda-dist}
# A target directory of its own: the CUDA build neither waits on nor invalidates the CPU build's.
export CARGO_TARGET_DIR=${CUDA_TARGET_DIR:-$ROOT/target/cuda-target}
PYTHON=${PYTHON:-python3}
say() { echo "build-cuda: $*" >&2; }
die() { say "error: $*"; exit 1; }

# package==version sha256-of-the-manylinux-x86_64-wheel (CUDA 13.0 series).
WHEELS=(
  "nvidia-cuda-nvcc==13.0.88 56fe502eb77625a12f25172caa3cdddb4e4c8ba2c8c17dba44b164761b380f03"
  "nvidia-nvvm==13.0.88 c5f41ffeb6466944a026dfa5317d7d85355c119bbec279205d22f1869d1054e0"
  "nvidia-cuda-crt==13.0.88 2c8043c7c9e02492716426e9919fc78d2c5b3b2a7a768a88e952676b08aa55a4"
  "nvidia-cuda-runtime==13.0.96 7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548"
  "nvidia-cuda-cccl==13.0.85 e0da7ad981f3a8aff08241b5bfc1af868742a63e2762f53a5171c492ef242649"
  "nvidia-cublas==13.0.2.14 0cf238ffdbe46c00cb9aa98e7bca745c223a5ca5a53e686ac8b3e5a08fe80d6c"
  "nvidia-curand==10.4.0.35 1aee33a5da6e1db083fe2b90082def8915f30f3248d5896bcec36a579d941bfc"
  "nvidia-cuda-nvrtc==13.0.88 ad9b6d2ead2435f11cbb6868809d2adeeee302e9bb94bcf0539c7a40d80e8575"
)

[ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] || die "the pinned wheels are for Linux x86_64"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (needed to download wheels)"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "pip not found for $PYTHON (apt-get install python3-pip)"
command -v cc >/dev/null || die "a C compiler (cc) is needed for the link-time libcuda stub"
command -v unzip >/dev/null || die "unzip not found"

mkdir -p "$TOOLKIT/wheels" "$TOOLKIT/tree" "$TOOLKIT/stubs"
for entry in "${WHEELS[@]}"; do
  spec=${entry% *}
  sha=${entry#* }
  name=${spec%%==*}
  stamp="$TOOLKIT/tree/.$name-$sha"
  [ -f "$stamp" ] && continue
  wheel=$(ls "$TOOLKIT/wheels/${name//-/_}-${spec##*==}-"*.whl 2>/dev/null | head -1 || true)
  if [ -z "$wheel" ] || [ "$(sha256sum "$wheel" | cut -d' ' -f1)" != "$sha" ]; then
    say "downloading $spec"
    rm -f "$TOOLKIT/wheels/${name//-/_}-"*.whl
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$TOOLKIT/wheels" "$spec" \
      || die "pip download $spec failed"
    wheel=$(ls "$TOOLKIT/wheels/${name//-/_}-${spec##*==}-"*.whl | head -1)
  fi
  got=$(sha256sum "$wheel" | cut -d' ' -f1)
  [ "$got" = "$sha" ] || die "$wheel: sha256 $got, expected $sha"
  say "unpacking $(basename "$wheel")"
  unzip -q -o "$wheel" 'nvidia/*' -d "$TOOLKIT/tree"
  touch "$stamp"
done

CUDA_ROOT="$TOOLKIT/tree/nvidia/cu13"
[ -x "$CUDA_ROOT/bin/nvcc" ] || die "nvcc missing from $CUDA_ROOT/bin"
# The wheels ship only versioned sonames; the linker wants libX.so.
for lib in "$CUDA_ROOT"/lib/lib*.so.*; do
  base=${lib%%.so.*}.so
  [ -e "$base" ] || ln -s "$(basename "$lib")" "$base"
done

# Link-time stub of the driver library: every cu* symbol cudarc's driver bindings declare.
export CUDARC_CUDA_VERSION=13000
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CUDA_ROOT CUDA_PATH="$CUDA_ROOT" CUDA_TOOLKIT_ROOT_DIR="$CUDA_ROOT"
export PATH="$CUDA_ROOT/bin:$CUDA_ROOT/nvvm/bin:$PATH"
export NVCC="$CUDA_ROOT/bin/nvcc"
export NVCC_APPEND_FLAGS="-I$CUDA_ROOT/include -isystem $CUDA_ROOT/include/cccl"
export LD_LIBRARY_PATH="$CUDA_ROOT/lib:$CUDA_ROOT/nvvm/lib:${LD_LIBRARY_PATH:-}"
say "nvcc: $("$NVCC" --version | tail -1)"
say "fetching crates"
cargo fetch --quiet
CUDARC_SRC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$(
  cargo metadata --format-version 1 --features cuda 2>/dev/null \
    | "$PYTHON" -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="cudarc"))'
)" | head -1)
[ -d "$CUDARC_SRC/src/driver/sys" ] || die "cudarc sources not found under the cargo registry"
STUB_C="$TOOLKIT/stubs/libcuda_stub.c"
grep -rhoE 'fn cu[A-Za-z0-9_]+' "$CUDARC_SRC/src/driver/sys" | sed 's/^fn //' | sort -u \
  | awk '{ print "void " $1 "(void) {}" }' >"$STUB_C"
cc -shared -fPIC -o "$TOOLKIT/stubs/libcuda.so" -Wl,-soname,libcuda.so.1 "$STUB_C"
say "libcuda stub: $(wc -l <"$STUB_C") symbols (link time only)"

export RUSTFLAGS="${RUSTFLAGS:-} -L native=$TOOLKIT/stubs -L native=$CUDA_ROOT/lib -C link-arg=-Wl,-rpath,\$ORIGIN/lib"
say "building --features cuda --profile release-cuda (fat LTO, 1 codegen unit; long)"
start=$(date +%s)
cargo build --profile release-cuda --features cuda --bin contrastgeo
say "built in $(( $(date +%s) - start )) s"

BIN="$CARGO_TARGET_DIR/release-cuda/contrastgeo"
# Assembled afresh each time, so that nothing of an earlier build is carried by mistake.
rm -rf "$DIST"
mkdir -p "$DIST/lib"
cp "$BIN" "$DIST/contrastgeo"
# The CUDA libraries the binary needs, and the ones those need in turn (libcublas.so.13 needs
# libcublasLt.so.13, found through its own $ORIGIN runpath), except the driver (the GPU machine's own
# libcuda.so.1) and the system's libraries (not in the toolkit).
needed_of() { readelf -d "$1" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'; }
pending=$(needed_of "$BIN")
while [ -n "$pending" ]; do
  next=""
  for needed in $pending; do
    case $needed in libcuda.so*) continue ;; esac
    # Only the toolkit's libraries, each once.
    [ -e "$CUDA_ROOT/lib/$needed" ] && [ ! -e "$DIST/lib/$needed" ] || continue
    cp -L "$CUDA_ROOT/lib/$needed" "$DIST/lib/"
    next="$next $(needed_of "$DIST/lib/$needed")"
  done
  pending=$next
done
# NVRTC compiles candle's kernels at run time and loads its builtins library by name.
cp -L "$CUDA_ROOT"/lib/libnvrtc-builtins.so.* "$DIST/lib/" 2>/dev/null || true
say "binary: $DIST/contrastgeo ($(du -h "$DIST/contrastgeo" | cut -f1)); libraries: $DIST/lib ($(du -sh "$DIST/lib" | cut -f1))"
say "needs at run time: $(readelf -d "$BIN" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')"
# Check that every library but the driver resolves from the directory as it will be carried: start the
# binary with the link-time stub standing in for libcuda.so.1 (only here, never copied), ask its version.
check_dir=$(mktemp -d)
cp "$TOOLKIT/stubs/libcuda.so" "$check_dir/libcuda.so.1"
if version=$(env -u LD_LIBRARY_PATH LD_LIBRARY_PATH="$check_dir" "$DIST/contrastgeo" --version 2>&1); then
  say "the carried directory resolves every library but the driver: $version"
else
  rm -rf "$check_dir"
  die "the binary does not start from $DIST with a stand-in driver: $version"
fi
rm -rf "$check_dir"

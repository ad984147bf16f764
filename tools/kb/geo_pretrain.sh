#!/usr/bin/env bash
# Opt-in (issue #18): fine-tunes the base model with TLC on synthetic posts written from the place knowledge
# base's lists ("Dinner near {landmark}", "Let's go {team}!"), then builds a zero-shot world store with it.
# About 30 minutes of training (7,089 posts: 4 per city) and a minute of indexing on the 2-core machine, which
# is why set-up does not run it. README, "Place knowledge base", has what it gained, measured on posts naming
# none of the names it saw.
#
#   tools/kb/geo_pretrain.sh OUT_DIR [--held-out]
#
# --held-out trains on half of the names only (a fixed hash of the name), as measured; without it every name.
# Writes OUT_DIR/synthetic/, OUT_DIR/checkpoint/ and OUT_DIR/world/. Query the store with the world store's
# settings: contrastgeo locate --store OUT_DIR/world --population-prior 0.03 --mention-weight 0.3 ...
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 OUT_DIR [--held-out]" >&2; exit 2; }
OUT=$1
NAMES=--all-names
[ "${2:-}" = --held-out ] && NAMES=
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN=${CONTRASTGEO_BIN:-$ROOT/target/release/contrastgeo}
[ -x "$BIN" ] || { echo "$BIN not found: cargo build --release first (or set CONTRASTGEO_BIN)" >&2; exit 1; }
# The gazetteer folder (GAZ_DIR), resolved as src/home.rs and tools/setup.sh do.
source "$ROOT/tools/data_home.sh"
python3 "$ROOT/tools/kb/synthetic_posts.py" --gazetteer "$GAZ_DIR" --landmarks "$ROOT"/tools/kb/landmarks/*.tsv \
  --out "$OUT/synthetic" $NAMES
"$BIN" train --data "$OUT/synthetic/synthetic.jsonl" --cities "$OUT/synthetic/cities.jsonl" --shots 4 \
  --epochs 1 --min-steps 40 --no-tlm --out "$OUT/checkpoint"
"$BIN" index build --store "$OUT/world" --gazetteer "$GAZ_DIR" --checkpoint "$OUT/checkpoint"
echo "world store with the geo-pretrained model: $OUT/world" >&2

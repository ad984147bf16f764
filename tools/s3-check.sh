#!/usr/bin/env bash
# Publish and follow through a real S3-compatible server (issue #19): moto's server (PyPI `moto[server]`,
# pinned below, installed into target/s3-venv), the `s3` build of contrastgeo, a writer publishing to
# s3://contrastgeo-check/store, a follower of it, and a city ingested on the writer that the follower must
# answer within its poll interval + 2 s. Exits non-zero on any failure.
#
#   tools/s3-check.sh
#
# Needs python3 with venv and pip, and PyPI the first time. Uses the release build with `--features s3`
# (copied to target/contrastgeo-s3 so the default build is left as it was).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MOTO=moto[server]==5.2.5
VENV=${S3_CHECK_VENV:-$ROOT/target/s3-venv}
say() { echo "s3-check: $*" >&2; }

if [ ! -x "$VENV/bin/moto_server" ]; then
  say "installing $MOTO into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "$MOTO"
fi

say "building contrastgeo with --features s3"
cargo build --release --features s3 --bin contrastgeo
mkdir -p "$ROOT/target"
cp "${CARGO_TARGET_DIR:-$ROOT/target}/release/contrastgeo" "$ROOT/target/contrastgeo-s3"
BIN=$ROOT/target/contrastgeo-s3

WORK=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() {  # URL SECONDS
  for _ in $(seq 1 $(( $2 * 10 ))); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  say "$1 never ready"; return 1
}

S3_PORT=$(free_port)
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$WORK/moto.log" 2>&1 &
PIDS+=($!)
wait_ready "http://127.0.0.1:$S3_PORT/" 30
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT AWS_ACCESS_KEY_ID=check AWS_SECRET_ACCESS_KEY=check \
  AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
# The bucket (S3's CreateBucket: an empty PUT on the bucket's path).
curl -sf -X PUT "http://127.0.0.1:$S3_PORT/contrastgeo-check" >/dev/null
URL=s3://contrastgeo-check/store

"$BIN" index build --store "$WORK/store" --cities tests/fixtures/cities.jsonl 2>"$WORK/build.log"
echo check-key >"$WORK/key"
W_PORT=$(free_port); F_PORT=$(free_port)
"$BIN" serve --store "$WORK/store" --publish "$URL" --bind "127.0.0.1:$W_PORT" --api-key-file "$WORK/key" \
  2>"$WORK/writer.log" &
PIDS+=($!)
wait_ready "http://127.0.0.1:$W_PORT/readyz" 120
"$BIN" serve --follow "$URL" --store "$WORK/cache" --poll-s 1 --bind "127.0.0.1:$F_PORT" 2>"$WORK/follower.log" &
PIDS+=($!)
wait_ready "http://127.0.0.1:$F_PORT/readyz" 120 || { tail -5 "$WORK/follower.log" >&2; exit 1; }

CITY='{"city":{"name":"Checkton","lat":12.5,"lon":-70.0},"examples":["Sunset at the Checkton lighthouse pier","Checkton harbour fish market at dawn"]}'
curl -sf -X POST "http://127.0.0.1:$W_PORT/v1/cities" -H 'content-type: application/json' \
  -H 'authorization: Bearer check-key' -d "$CITY" >/dev/null
acked=$(date +%s.%N)
for _ in $(seq 1 30); do
  name=$(curl -sf -X POST "http://127.0.0.1:$F_PORT/v1/locate" -H 'content-type: application/json' \
    -d '{"text":"Fish market by the lighthouse pier this morning"}' | python3 -c 'import json,sys; print(json.load(sys.stdin).get("name"))')
  if [ "$name" = Checkton ]; then
    took=$(python3 -c "import time; print(round(time.time() - $acked, 2))")
    lag=$(curl -sf "http://127.0.0.1:$F_PORT/readyz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["follow"]["lag_labels"])')
    objects=$(grep -c '"PUT /contrastgeo-check/store' "$WORK/moto.log" || true)
    say "ok: the follower answered the city ingested on the writer ${took}s after the acknowledgement (lag_labels $lag; $objects objects uploaded to S3)"
    python3 -c "import sys; sys.exit(0 if $took <= 3.0 else 1)" || { say "slower than --poll-s + 2 s"; exit 1; }
    exit 0
  fi
  sleep 0.1
done
say "the follower never answered the new city"; tail -5 "$WORK/follower.log" >&2; exit 1

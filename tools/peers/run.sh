#!/usr/bin/env bash
# Peer baselines for the learning curve (TF-IDF + logistic regression, majority city) on the K-shot sets.
#
#   tools/peers/run.sh [--sets /tmp/sets] [--cities ../shared/data/cities.jsonl] [--out reports/curve/peers]
#
# Makes a virtual environment in target/peers-venv (git-ignored) with the pinned packages below from PyPI
# (installed only when the venv lacks those exact versions), then runs tools/peers/tfidf_lr.py, which writes
# OUT/peers.json and OUT/peers.md. Paths are relative to the repository root. matplotlib is for
# tools/plot_curve.py (target/peers-venv/bin/python tools/plot_curve.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${PEERS_VENV:-target/peers-venv}
PYTHON=${PYTHON:-python3}
PINS=(scikit-learn==1.9.1 numpy==2.4.6 scipy==1.17.1 joblib==1.6.0 threadpoolctl==3.8.0 matplotlib==3.11.2)
say() { echo "peers: $*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
check="import importlib.metadata as m, sys; sys.exit(any(m.version(n) != v for n, v in (p.split('==') for p in sys.argv[1:])))"
if ! "$VENV/bin/python" -c "$check" "${PINS[@]}" 2>/dev/null; then
  say "installing ${PINS[*]}"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}"
fi
exec "$VENV/bin/python" tools/peers/tfidf_lr.py "$@"

#!/usr/bin/env bash
# SetFit peer for the learning curve: contrastive fine-tuning of all-MiniLM-L6-v2 on pairs of the K-shot support
# posts, then a logistic-regression head, scored on the same test posts and with the same metrics as
# tools/peers/tfidf_lr.py.
#
#   tools/peers/run_setfit.sh [--sets /tmp/sets] [--out reports/curve/setfit] [--shots 1,2,4,8,16] [--seeds 0,1,2]
#                             [--cities ../shared/data/cities.jsonl] [--threads 1]
#
# Makes a virtual environment in target/setfit-venv (git-ignored): torch==2.15.0 (CPU code of PyPI's CUDA wheel,
# no nvidia-* wheels) and sentence-transformers' pinned closure through tools/peers/torch_cpu.sh, plus SETFIT_PINS
# below (setfit 1.2.0's closure as pip resolved it with ST_PINS as constraints, less torch's CUDA deps), all
# --no-deps. Then runs tools/peers/setfit_peer.py, which writes OUT/setfit.json after every finished run and
# OUT/setfit.md. The model is the data home's all-MiniLM-L6-v2 directory, loaded offline (HF_HUB_OFFLINE=1).
# One torch thread by default (OMP/MKL threads 1): seed 0 of K=1..16 first, then seed 1, then seed 2.
# Time (2-core VM, 1 torch thread, the other core busy with another job), seed 0: 0.87-1.0 steps of 16 pairs per
# second, 150 K steps per run; fit 152 / 331 / 666 / 1378 / 2765 s for K = 1 / 2 / 4 / 8 / 16, plus 175-187 s to
# encode the 18,902 test posts each: 6,185 s (1 h 43 min) for one seed of K = 1..16, so ~5.2 h for all 15 runs
# (fit_s, predict_s per run and total_s in OUT/setfit.json). The recipe is not shrunk to fit.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${SETFIT_VENV:-target/setfit-venv}
PYTHON=${PYTHON:-python3}
source tools/peers/torch_cpu.sh
SETFIT_PINS=(setfit==1.2.0 numpy==2.4.6 tokenizers==0.23.3 safetensors==0.8.0 accelerate==1.16.0 datasets==5.2.0
  evaluate==0.4.6 dill==0.4.1 multiprocess==0.70.19 pyarrow==26.0.1 pandas==3.1.1 python-dateutil==4.0.0
  tzdata==2026.6 xxhash==4.1.0 psutil==7.2.2 requests==2.34.2 charset-normalizer==3.5.3 urllib3==2.8.0
  certifi==2026.10.19.post1 aiohttp==3.14.5 multidict==7.2.1 yarl==1.25.1 aiohappyeyeballs==2.7.1
  aiosignal==1.4.0 attrs==26.1.0 frozenlist==1.8.0 propcache==0.5.4)

if [ ! -x "$VENV/bin/python" ]; then
  echo "setfit: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
if ! torch_cpu_pinned "$VENV" "$TORCH_PIN" "${ST_PINS[@]}" "${SETFIT_PINS[@]}" \
   || ! "$VENV/bin/python" -c "import torch, setfit" 2>/dev/null; then
  torch_cpu_install "$VENV" "${ST_PINS[@]}" "${SETFIT_PINS[@]}"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
exec "$VENV/bin/python" tools/peers/setfit_peer.py "$@"

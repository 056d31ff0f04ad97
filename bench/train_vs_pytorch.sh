#!/usr/bin/env bash
# Training throughput of wingflow-train vs PyTorch (CNN-6, CNN-7) and the loader vs the step.
# Usage: bench/train_vs_pytorch.sh [BIN_DIR] [WORK_DIR]   (env: THREADS, BATCH, STEPS, PYTHON)
# BIN_DIR holds wingflow and wingflow-train (default target/debug); PYTHON is the .venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/debug}
WORK=${2:-/tmp/wingflow-bench-train}
PYTHON=${PYTHON:-.venv/bin/python}
# Real shard sets for the loader rows: 300 synthetic faces through ingest → align → pca →
# balance (PDB) → render, by the loss study's pipeline with a one-step training run (reused
# when WORK already holds them).
# The variant is named by the study (`fresh-e4-pdb`: fresh augmentation, 4 epochs, PDB); the
# flags pin it, and a missing folder is an error here rather than a confusing one in Python.
"$BIN/wingflow" experiment losses "$WORK" --faces "${FACES:-300}" --stage1-steps 1 --losses wing \
  --augmentation fresh --epochs 4 --balance pdb \
  --stage1-only --device cpu > "$WORK.log" 2>&1 || { cat "$WORK.log"; exit 1; }
SETS="$WORK/work/fresh-e4-pdb/shards"
for level in stage1 stage2; do
  [ -f "$SETS/$level/train/index.json" ] || {
    echo "error: no shard set $SETS/$level/train (has the study renamed its variants?)" >&2
    ls "$WORK/work" >&2
    exit 1
  }
done
"$PYTHON" bench/train_vs_pytorch.py --trainer "$BIN/wingflow-train" \
  --threads "${THREADS:-2}" --batch "${BATCH:-16}" --steps "${STEPS:-20}" --repeats "${REPEATS:-2}" \
  --shards1 "$SETS/stage1/train" --shards2 "$SETS/stage2/train"

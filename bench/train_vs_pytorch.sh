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
"$BIN/wingflow" experiment losses "$WORK" --faces 300 --stage1-steps 1 --losses wing \
  --stage1-only --device cpu > "$WORK.log" 2>&1 || { cat "$WORK.log"; exit 1; }
"$PYTHON" bench/train_vs_pytorch.py --trainer "$BIN/wingflow-train" \
  --threads "${THREADS:-2}" --batch "${BATCH:-16}" --steps "${STEPS:-20}" --repeats "${REPEATS:-2}" \
  --shards1 "$WORK/work/pdb/shards/stage1/train" --shards2 "$WORK/work/pdb/shards/stage2/train"

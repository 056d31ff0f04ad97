#!/usr/bin/env bash
# Every benchmark that needs nothing beyond the project's own install, in a tiny mode, so that
# `make test` notices when one rots (a moved path, a renamed flag). Times printed here mean
# nothing: the runs are far too small (the benchmarks' own READMEs give the real numbers).
#
#   bench/smoke.sh BIN_DIR EXAMPLES_DIR WORK_DIR PYTHON
#
# BIN_DIR: wingflow and wingflow-train; EXAMPLES_DIR: the built render_bench example
# (`cargo test --workspace` builds it); PYTHON: the venv's python (torch for the trainer and
# reader benchmarks).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:?BIN_DIR}" examples="${2:?EXAMPLES_DIR}" work="${3:?WORK_DIR}" python="${4:?PYTHON}"
rm -rf "$work" && mkdir -p "$work"

echo "==> render_bench (gen, run, steps) on 3 small photo-like images"
"$examples/render_bench" gen "$work/photos" 3 320 240 1 > /dev/null
"$examples/render_bench" run "$work/photos" --replicas 1 --threads 2 > "$work/render.md"
"$examples/render_bench" steps --size 64 --repeats 1 > "$work/steps.md"

echo "==> bench/train_vs_pytorch.sh: 2 steps of 4, one repeat"
FACES=60 THREADS=1 BATCH=4 STEPS=2 REPEATS=1 PYTHON="$python" \
  bench/train_vs_pytorch.sh "$bin" "$work/train" > "$work/train.md"

echo "==> bench/batch_reader_bench.py: one epoch, no workers"
"$python" bench/batch_reader_bench.py "$work/train/work/fresh-e4-pdb/shards/stage1/train" \
  --batch-size 8 --workers 0 --epochs 1 --repeats 1 > "$work/reader.md"

for table in render steps train reader; do
  grep -q '|' "$work/$table.md" || { echo "error: $work/$table.md holds no table" >&2; exit 1; }
done
echo "bench smoke: every benchmark ran (tables in $work)"

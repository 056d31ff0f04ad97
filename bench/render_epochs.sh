#!/bin/bash
# Render time against augmentation epochs: the render stage with [render] epochs = 1 and = 8,
# alternated in one run, on three synthetic 300W trees written by `wingflow synth` (JPEG,
# quality 70-95): the demo's (600 faces), 0.3 MP-like (300 faces, sides 560-700 px) and
# 1.5 MP-like (100 faces, sides 1150-1300 px). Prints per run: training rows, shard MB, crops,
# the render stage's time (from the run summary) and crops/s.
#
#   bench/render_epochs.sh [WORK_DIR]      (default /tmp/wingflow-epochs-bench)
#
# WINGFLOW_BIN_DIR: where `wingflow` is (default target/debug). ROUNDS (default 2). EPOCHS
# (default "1 8"). SETS (default "demo 03mp 15mp"). Pause other work on the machine while it
# runs: these are sub-second to few-second timings.
set -euo pipefail
bin="$(cd "${WINGFLOW_BIN_DIR:-target/debug}" && pwd)/wingflow"
work="${1:-/tmp/wingflow-epochs-bench}"
mkdir -p "$work"
cd "$work"
declare -A spec=([demo]="600 1 -" [03mp]="300 3 560-700" [15mp]="100 15 1150-1300")
for set in ${SETS:-demo 03mp 15mp}; do
  read -r count seed size <<<"${spec[$set]}"
  if [ ! -f "data-$set/300w/synth-truth.jsonl" ]; then
    args=(synth "data-$set/300w" --format 300w --count "$count" --seed "$seed")
    [ "$size" = - ] || args+=(--size "$size")
    "$bin" "${args[@]}" >/dev/null
  fi
done
echo "| round | set | epochs | training rows | shards MB | crops | render s | crops/s |"
echo "|---|---|---|---|---|---|---|---|"
for round in $(seq "${ROUNDS:-2}"); do
  for set in ${SETS:-demo 03mp 15mp}; do
    for e in ${EPOCHS:-1 8}; do
      root="$work/run-$set-e$e"
      rm -rf "$root"
      mkdir -p "$root"
      (cd "$root" && "$bin" init "../data-$set" --output out --set "render.epochs=$e" \
        --set train.enabled=false >/dev/null &&
        "$bin" run --until balance >/dev/null 2>&1 &&
        "$bin" run --until render >run.log 2>&1)
      line=$(grep -E "^ *render " "$root/run.log" | tail -1)
      crops=$(grep -oE "crops=[0-9]+" <<<"$line" | cut -d= -f2)
      secs=$(grep -oE "[0-9.]+s$" <<<"$line" | tr -d s)
      rows=$(python3 -c "import json,sys; print(dict(json.load(open(sys.argv[1]))['rows_per_split'])['train'])" "$root/out/balance.json")
      mb=$(du -sm "$root/out/shards" | cut -f1)
      echo "| $round | $set | $e | $rows | $mb | $crops | $secs | $(python3 -c "print(round($crops / $secs))") |"
    done
  done
done

#!/usr/bin/env bash
# The demo: a synthetic 300W dataset through every stage wingflow has, end to end.
# Usage: scripts/demo.sh OUT_DIR   (WINGFLOW_BIN_DIR: folder of the built binaries)
set -euo pipefail
out="${1:?usage: demo.sh OUT_DIR}"
bin="${WINGFLOW_BIN_DIR:-target/debug}"
wingflow="$bin/wingflow"
count="${DEMO_FACES:-600}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

echo "==> wingflow doctor"
"$wingflow" doctor

if [ ! -f "$out/data/300w/synth-truth.jsonl" ]; then
  echo "==> generating $count synthetic 300W faces in $out/data/300w"
  rm -rf "$out/data/300w"
  "$wingflow" synth "$out/data/300w" --format 300w --count "$count" --seed 1 \
    --preview "$out/synth-preview.png"
fi

if [ ! -f "$out/wingflow.toml" ]; then
  # A CPU-sized training budget for the demo (the default is 2000 steps of 32 per network):
  # enough for CNN-6 to beat the mean shape clearly, and for CNN-7 (about 5x slower per step)
  # to beat it too, not yet CNN-6. `--set` fails loudly if a key is renamed.
  # DEMO_DEVICE (e.g. cuda) pins the training device instead of the default `auto`.
  (cd "$out" && "$wingflow" init data --output pipeline \
    --set "train.cnn6.steps=${DEMO_CNN6_STEPS:-1200}" \
    --set "train.cnn6.batch_size=${DEMO_CNN6_BATCH:-16}" \
    --set "train.cnn7.steps=${DEMO_CNN7_STEPS:-450}" \
    --set "train.cnn7.batch_size=${DEMO_CNN7_BATCH:-8}" \
    ${DEMO_DEVICE:+--set "train.device=$DEMO_DEVICE"})
fi

echo "==> wingflow run (every stale stage)"
"$wingflow" run --config "$out/wingflow.toml"
echo "==> wingflow run again (everything fresh)"
"$wingflow" run --config "$out/wingflow.toml"
echo "==> wingflow status"
"$wingflow" status --config "$out/wingflow.toml"
echo
echo "demo outputs under $out:"
echo "  synthetic faces preview  $out/synth-preview.png"
echo "  pose balancing plots     $out/pipeline/plots/"
echo "  shards                   $out/pipeline/shards/"
echo "  models and loss curves   $out/pipeline/models/"
echo "  evaluation               $out/pipeline/reports/evaluation.json"

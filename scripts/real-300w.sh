#!/usr/bin/env bash
# Train and evaluate wingflow's two-stage model (CNN-6, then CNN-7) on your own copy of 300W,
# with held-out splits by photo, and write the results table.
#
#   scripts/real-300w.sh DIR [OUT_DIR] [--set KEY=VALUE ...]
#
# DIR: a 300W tree (afw/, helen/trainset/, lfpw/trainset/, ibug/, … with `.pts` beside each
# image), read as `kind = "300w"`. Its training faces are split by photo (faces `<photo>_<n>`
# of one photo stay together), stratified by pose: val (model selection) and test (final
# numbers) 15 % each, fixed by holdout_seed = 0, plus the tree's own test folders if it has
# them. OUT_DIR (default real-300w-out) gets wingflow.toml (written once: edit it, or pass
# --set to the first run), the pipeline's outputs under OUT_DIR/pipeline and
# OUT_DIR/summary.md: NME ×100 (inter-ocular and inter-pupil) of CNN-6, CNN-6/7 and the mean
# shape per split, per pose bin, and where the CED plots are. Prints SKIPPED and exits 0 when
# DIR does not exist. WINGFLOW_BIN_DIR: folder of the built binaries (default target/debug).
set -euo pipefail
dir="${1:?usage: real-300w.sh DIR [OUT_DIR] [--set KEY=VALUE ...]}"
shift
out="real-300w-out"
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then out="$1"; shift; fi
if [ ! -d "$dir" ]; then
  echo "SKIPPED: no 300W tree at $dir"
  exit 0
fi
repo="$(cd "$(dirname "$0")/.." && pwd)"
bin="${WINGFLOW_BIN_DIR:-$repo/target/debug}"
wingflow="$(cd "$bin" && pwd)/wingflow"
dir="$(cd "$dir" && pwd)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

if [ ! -f "$out/wingflow.toml" ]; then
  (cd "$out" && "$wingflow" init "$dir" --output pipeline \
    --set 'balance.holdout="photo"' \
    --set balance.val_fraction=0.15 \
    --set balance.test_fraction=0.15 \
    --set balance.holdout_seed=0 \
    "$@")
elif [ $# -gt 0 ]; then
  echo "note: $out/wingflow.toml exists; --set applies only when it is written (edit it instead)" >&2
fi

"$wingflow" run --config "$out/wingflow.toml"
python3 "$repo/scripts/real_300w_summary.py" "$out/pipeline" > "$out/summary.md"
cat "$out/summary.md"
echo
echo "summary: $out/summary.md"

#!/usr/bin/env bash
# The GPU check for a lent device machine (../.library/device/README.md): one script, run once,
# that answers what only a GPU can — the whole pipeline (`scripts/demo.sh`) with both networks
# trained on the GPU (2000 steps of 32 each, the default budgets) and evaluated against the mean
# shape, then wingflow-train against PyTorch on the same GPU (CNN-6 and CNN-7, batch 16 and
# 256, the loader rows on the demo's shards).
#
#   make gpu-bin                              here: stripped binaries in target/gpu-bin (≈ 45 MB)
#   bench/gpu_check.sh target/gpu-bin OUT     there, e.g. through the device tool:
#       run(command="bench/gpu_check.sh target/gpu-bin $OUT", carry=["target/gpu-bin"])
#
# The device machine has no Rust but a python with CUDA torch 2.11.0: the binaries load its
# libtorch (LD_LIBRARY_PATH), the PyTorch side of the bench runs in it. Every part is bounded by
# `timeout` and writes into OUT as it goes, so a part that fails or runs long leaves the others'
# results. Env: PYTHON (python3), DEVICE (cuda), FACES (600), BENCH_STEPS (60; CNN-7 a third),
# CNN6_STEPS / CNN7_STEPS (2000 / 2000), CNN6_BATCH / CNN7_BATCH (32 / 32), BATCHES ("16 256").
set -uo pipefail
bin="$(cd "${1:?usage: gpu_check.sh BIN_DIR OUT_DIR}" && pwd)"
out="${2:?usage: gpu_check.sh BIN_DIR OUT_DIR}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
device="${DEVICE:-cuda}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="${WORK_DIR:-$(mktemp -d)}"
failed=0
part() { # part NAME SECONDS COMMAND...: run one part, its output in OUT/NAME.txt
  local name=$1 secs=$2
  shift 2
  echo "==> $name (at most ${secs}s)"
  local start=$SECONDS
  if timeout "$secs" "$@" >"$out/$name.txt" 2>&1; then
    echo "    ok in $((SECONDS - start))s"
  else
    echo "    FAILED (exit $?) after $((SECONDS - start))s; the last lines:"
    tail -15 "$out/$name.txt" | sed 's/^/    /'
    failed=1
  fi
}

torch_lib="$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')" || {
  echo "$python cannot import torch" >&2
  exit 1
}
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{
  command -v nvidia-smi >/dev/null && nvidia-smi
  "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
  nproc
} >"$out/machine.txt" 2>&1
part doctor 120 "$bin/wingflow-train" doctor --device "$device"

# The demo (scripts/demo.sh) with both networks trained on the device at these budgets: its
# shards feed the bench's loader rows below; its evaluation has the mean-shape row.
part demo 420 env WINGFLOW_BIN_DIR="$bin" DEMO_FACES="${FACES:-600}" DEMO_DEVICE="$device" \
  DEMO_CNN6_STEPS="${CNN6_STEPS:-2000}" DEMO_CNN6_BATCH="${CNN6_BATCH:-32}" \
  DEMO_CNN7_STEPS="${CNN7_STEPS:-2000}" DEMO_CNN7_BATCH="${CNN7_BATCH:-32}" \
  "$repo/scripts/demo.sh" "$work"

# wingflow-train against PyTorch on the same device, the loader rows on those shards.
for batch in ${BATCHES:-16 256}; do
  part "train-bench-b$batch" 300 "$python" "$repo/bench/train_vs_pytorch.py" \
    --trainer "$bin/wingflow-train" --device "$device" --threads "$(nproc)" --batch "$batch" \
    --steps "${BENCH_STEPS:-60}" --repeats 3 --out "$out/train-bench-b$batch.md" \
    --shards1 "$work/pipeline/shards/stage1/train" --shards2 "$work/pipeline/shards/stage2/train"
done

mkdir -p "$out/pipeline"
(cd "$work/pipeline" && cp -r --parents reports models/*/loss-curve.png models/*/train_log.csv \
  "$out/pipeline/") 2>/dev/null
echo "results in $out"
exit "$failed"

#!/bin/bash
# One sitting of the loss study's run 5 (bench/README-losses.md): a machine here lasts one
# session, so the study goes on across machines through the results committed under
# bench/study/run5/, which every sitting reuses (`--reuse`) instead of training those cells again.
#
#   bench/loss_study_run5.sh start  STEP WORK_DIR   freeze the binaries, run step STEP (1-3) in the
#                                                   background at nice 10 (log: WORK_DIR/stepSTEP.log)
#   bench/loss_study_run5.sh finish STEP WORK_DIR   the interim table of the finished cells, copied
#                                                   to bench/study/run5/stepSTEP.json, and a line in
#                                                   bench/study/run5/SITTINGS.md: the runs this
#                                                   sitting added, its binaries and CPU (commit both)
#
# Steps: 1 the ablation ({static, fresh-e4} x {no PDB at equal size, PDB}, Wing, 3 seeds);
# 2 the four losses on fresh-e4; 3 the choice of E (1, 4, 8; PDB, Wing). Step 3 runs before
# step 2, whose four-loss table is meant for the default E that step 3 chooses.
# WINGFLOW_BIN_DIR: where `wingflow` and `wingflow-train` are (default target/debug); they are
# copied to WORK_DIR/bin at the first start, with the commit they were built from, so that a
# rebuild during the study does not change it. WINGFLOW_VENV: the venv whose torch libtorch
# `wingflow-train` links (default .venv).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
action="${1:?start or finish}" step="${2:?step 1, 2 or 3}" work="${3:?work dir}"
case $step in
  1) args=(--augmentation static,fresh --losses wing) ;;
  2) args=(--augmentation fresh) ;;
  3) args=(--augmentation fresh --epochs 1,4,8 --balance pdb --losses wing) ;;
  *) echo "step must be 1, 2 or 3, not $step" >&2; exit 2 ;;
esac
mkdir -p "$work/bin"
work="$(cd "$work" && pwd)"
if [ ! -x "$work/bin/wingflow" ]; then
  bins="${WINGFLOW_BIN_DIR:-$repo/target/debug}"
  cp "$bins/wingflow" "$bins/wingflow-train" "$work/bin/"
  git -C "$repo" describe --always --dirty > "$work/bin/COMMIT"
fi
venv="${WINGFLOW_VENV:-$repo/.venv}"
export LD_LIBRARY_PATH="$(echo "$venv"/lib/python3*/site-packages/torch/lib)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# libtorch picks its CPU kernels by instruction set (ATen's, oneDNN's, MKL's), and runs of one
# seed with different kernels differ after a few steps (100 CNN-6 steps on this AVX2 machine:
# the same loss to the last digit under avx2 twice, 1590.46 against 1592.31 under
# ATEN_CPU_CAPABILITY=default). The sittings run on whatever machine a session gets, so every
# one uses the AVX2 kernels (the same results as unpinned on an AVX2 machine).
if grep -qw avx2 /proc/cpuinfo; then
  export ATEN_CPU_CAPABILITY=avx2 DNNL_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2
fi
reuse=()
for f in "$repo"/bench/study/run5/*.json; do
  [ -e "$f" ] && reuse+=(--reuse "$f")
done
study=("$work/bin/wingflow" experiment losses "$work/out" --budget full --jobs 2 --threads 1
  --device cpu "${args[@]}" "${reuse[@]}")
case $action in
  start)
    echo "step $step with the binaries of $(cat "$work/bin/COMMIT"), log $work/step$step.log"
    setsid nohup nice -n 10 "${study[@]}" >"$work/step$step.log" 2>&1 &
    ;;
  finish)
    "${study[@]}" --finished-only
    dest="$repo/bench/study/run5/step$step.json"
    mkdir -p "$(dirname "$dest")"
    # Which runs this sitting added, on which binaries and CPU: libtorch picks its CPU kernels
    # by instruction set, so runs of one seed on different machines can differ in the last bits
    # and, after 1500 steps, by a few tenths of NME.
    cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    isa="$(grep -m1 -o -w 'avx512f\|avx2' /proc/cpuinfo | sort | tail -1)"
    sittings="$repo/bench/study/run5/SITTINGS.md"
    [ -e "$sittings" ] || printf '# Run 5 sittings\n\n%s\n\n' \
      "Written by \`bench/loss_study_run5.sh finish\`: the runs each sitting added." >"$sittings"
    python3 - "$work/out/results-interim.json" "$dest" "$step" "$(cat "$work/bin/COMMIT")" \
      "$cpu, $(nproc) CPUs, ${isa:-no AVX2}" >>"$sittings" <<'PY'
import datetime, glob, json, os, sys
new, old, step, commit, machine = sys.argv[1:]
key = lambda r: (r["method"], r["augmentation"], r["loss"], r["seed"])
runs = json.load(open(new))["runs"]
# Runs already committed in any step's file (a step reuses other steps' cells) were not added.
committed = glob.glob(os.path.join(os.path.dirname(old), "step*.json"))
before = {key(r) for path in committed for r in json.load(open(path))["runs"]}
added = sorted(f"{r['augmentation']} {r['method']} {r['loss']} s{r['seed']}" for r in runs if key(r) not in before)
day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
print(f"- {day}, step {step}, binaries {commit}, {machine}: {len(added)} run(s) added, {len(runs)} in all"
      + (": " + "; ".join(added) if added else ""))
PY
    # Compact JSON (the study writes it indented): half the bytes in git, the same values.
    python3 -c 'import json, sys; json.dump(json.load(open(sys.argv[1])), open(sys.argv[2], "w"), separators=(",", ":"), ensure_ascii=False)' \
      "$work/out/results-interim.json" "$dest"
    echo "copied to bench/study/run5/step$step.json; bench/study/run5/SITTINGS.md:"
    tail -1 "$sittings"
    ;;
  *) echo "the action is start or finish, not $action" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# By-hand benchmark: wingflow's render path vs Albumentations 2.0.8 on the same synthetic JPEGs
# (bench/README.md holds the results and explains the three figures). Not run by the tests.
#
#   bench/render_vs_albumentations.sh          (or: make bench-render)
#
# Environment: WINGFLOW_VENV (the project's venv; Albumentations and OpenCV are added to it when
# missing), CARGO_TARGET_DIR, BENCH_DIR (data; default $TMPDIR/wingflow-bench), BENCH_THREADS
# (the "all cores" run; default nproc), BENCH_REPLICAS (default 4).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${WINGFLOW_VENV:-$PWD/.venv}"
DATA="${BENCH_DIR:-${TMPDIR:-/tmp}/wingflow-bench}"
THREADS="${BENCH_THREADS:-$(nproc)}"
REPLICAS="${BENCH_REPLICAS:-4}"
PY="$VENV/bin/python"

test -x "$PY" || python3 -m venv "$VENV"
if ! NO_ALBUMENTATIONS_UPDATE=1 "$PY" -c \
    "import albumentations as A, cv2; assert A.__version__ == '2.0.8'" 2>/dev/null; then
    echo "==> installing albumentations==2.0.8 and opencv-python-headless into $VENV"
    "$PY" -m pip install --quiet "albumentations==2.0.8" opencv-python-headless
fi

echo "==> building the benchmark (release profile)"
cargo build --release --quiet -p render --example render_bench
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/examples/render_bench"

echo "==> machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
# name:width:height:count — about 0.3 MP and 1.5 MP, one face per image.
for set in "0.3mp:640:480:300" "1.5mp:1500:1000:100"; do
    IFS=: read -r name w h count <<<"$set"
    dir="$DATA/$name"
    if [ ! -f "$dir/meta.csv" ]; then
        "$BIN" gen "$dir" "$count" "$w" "$h" 7
    fi
    echo "==> $name: Albumentations"
    "$PY" bench/albu_render.py "$dir" --replicas "$REPLICAS" --workers "$THREADS" \
        --out "$DATA/$name-albu.json"
    echo "==> $name: wingflow"
    "$BIN" run "$dir" --replicas "$REPLICAS" --threads "$THREADS" --albu "$DATA/$name-albu.json" \
        --label "$count JPEGs of ${w}×${h} ($name), $REPLICAS replicas each, crops/s"
done

#!/usr/bin/env python3
"""The real-faces recipe search (issue #25 item 3): training recipes compared on the val split
of a real 300W tree held out by photo, one cell after the other, on frozen binaries.

    bench/real300w_search.py run    CELLS DATA_DIR WORK_DIR   run every cell of CELLS not done
    bench/real300w_search.py table  CELLS WORK_DIR            the val table of the cells done

CELLS is a text file, one cell a line: `name  data-variant  key=value ...` (keys dotted as in
`wingflow init --set`, values TOML; `#` starts a comment). Cells of one data variant share an
output root (WORK_DIR/<variant>/pipeline: ingest to render run once) and train as named runs
(`[train] run = name`); a data variant's keys (balance.*, render.*) are those of its first
cell, and a later cell of the variant that sets other ones is refused. The base configuration
is `wingflow init DATA_DIR` with held-out splits by photo (val and test 15 % each, holdout
seed 0: fixed before any tuning). Only val is read: the test split is evaluated by the
pipeline but never printed here.

WINGFLOW_BIN_DIR: where `wingflow` and `wingflow-train` are; copied to WORK_DIR/bin (with the
commit, `git describe --dirty`) at the first run, which later runs use, so a rebuild during
the search changes nothing. Each cell's log: WORK_DIR/logs/<name>.log; its wall time and the
samples it trained on: WORK_DIR/done/<name>.json.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE_SETS = [
    'balance.holdout="photo"',
    "balance.val_fraction=0.15",
    "balance.test_fraction=0.15",
    "balance.holdout_seed=0",
]


def read_cells(path):
    cells = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, variant, *sets = line.split()
        for s in sets:
            if "=" not in s:
                sys.exit(f"{path}:{n}: `{s}` is not key=value")
        cells.append({"name": name, "variant": variant, "sets": sets, "line": n})
    return cells


def set_key(text, dotted, value):
    """Set `dotted` (section.key) to the TOML `value` in a wingflow.toml text."""
    *section, key = dotted.split(".")
    header = "[" + ".".join(section) + "]"
    lines = text.split("\n")
    try:
        start = lines.index(header)
    except ValueError:
        lines += ["", header]
        start = len(lines) - 1
    end = start + 1
    while end < len(lines) and not lines[end].startswith("["):
        end += 1
    for i in range(start + 1, end):
        if re.match(rf"^{re.escape(key)}\s*=", lines[i]):
            lines[i] = f"{key} = {value}"
            return "\n".join(lines)
    lines.insert(start + 1, f"{key} = {value}")
    return "\n".join(lines)


def frozen_bins(work):
    bins = work / "bin"
    if not (bins / "wingflow").exists():
        src = Path(os.environ.get("WINGFLOW_BIN_DIR", REPO / "target/debug"))
        bins.mkdir(parents=True, exist_ok=True)
        for b in ("wingflow", "wingflow-train"):
            shutil.copy2(src / b, bins / b)
        commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                                capture_output=True, text=True, check=True).stdout.strip()
        (bins / "COMMIT").write_text(commit + "\n")
    return bins


def run(cells_path, data, work):
    work.mkdir(parents=True, exist_ok=True)
    bins = frozen_bins(work)
    (work / "logs").mkdir(exist_ok=True)
    (work / "done").mkdir(exist_ok=True)
    failed = set()
    while True:
        # Read again before each cell: cells added to the file while the search runs are
        # taken in file order.
        cells = read_cells(cells_path)
        data_keys = {}
        for cell in cells:
            keys = sorted(s for s in cell["sets"] if s.startswith(("balance.", "render.")))
            if data_keys.setdefault(cell["variant"], keys) != keys:
                sys.exit(f"{cells_path}:{cell['line']}: variant {cell['variant']} has data "
                         f"keys {data_keys[cell['variant']]}, this cell {keys}")
        todo = [c for c in cells if c["name"] not in failed
                and not (work / "done" / f"{c['name']}.json").exists()]
        if not todo:
            return
        cell = todo[0]
        done = work / "done" / f"{cell['name']}.json"
        root = work / cell["variant"]
        root.mkdir(exist_ok=True)
        base = root / "base.toml"
        if not base.exists():
            subprocess.run([str(bins / "wingflow"), "init", str(data), "--output", "pipeline",
                            "--config", str(base)] + sum((["--set", s] for s in BASE_SETS), []),
                           check=True, cwd=root, stdout=subprocess.DEVNULL)
        text = base.read_text()
        for s in cell["sets"] + [f'train.run="{cell["name"]}"']:
            key, value = s.split("=", 1)
            text = set_key(text, key, value)
        config = root / f"{cell['name']}.toml"
        config.write_text(text)
        print(f"{time.strftime('%H:%M:%S')} cell {cell['name']} ({cell['variant']}) ...", flush=True)
        started = time.time()
        with open(work / "logs" / f"{cell['name']}.log", "a") as log:
            rc = subprocess.run([str(bins / "wingflow"), "run", "--config", str(config)],
                                stdout=log, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            print(f"cell {cell['name']} failed (rc {rc}): {work}/logs/{cell['name']}.log", flush=True)
            failed.add(cell["name"])
            continue
        request = lambda level: json.loads(
            (root / "pipeline/models" / cell["name"] / f"stage{level}" / "request.json").read_text()
            if (root / "pipeline/models" / cell["name"] / f"stage{level}" / "request.json").exists()
            else "{}")
        samples = {f"cnn{5 + level}": r.get("steps", 0) * r.get("batch_size", 0)
                   for level in (1, 2) for r in [request(level)]}
        done.write_text(json.dumps({"wall_s": round(time.time() - started, 1),
                                    "samples_seen": samples,
                                    "commit": (bins / "COMMIT").read_text().strip()}) + "\n")
        print(f"{time.strftime('%H:%M:%S')} cell {cell['name']} done in "
              f"{time.time() - started:.0f} s", flush=True)


def table(cells_path, work):
    print("| cell | variant | settings | samples seen (CNN-6 / CNN-7) | mean shape | CNN-6 IO | "
          "CNN-6/7 IO | CNN-6 IP | CNN-6/7 IP | wall |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for cell in read_cells(cells_path):
        done = work / "done" / f"{cell['name']}.json"
        if not done.exists():
            continue
        d = json.loads(done.read_text())
        reports = work / cell["variant"] / "pipeline/reports" / cell["name"]
        got = {}
        for model in ("cnn6", "cnn6-7"):
            path = reports / f"{model}-val.json"
            if path.exists():
                got[model] = json.loads(path.read_text())
        if "cnn6" not in got:
            continue
        r6 = got["cnn6"]
        ip = lambda r, key="summary": r.get("other_normalisers", {}).get("inter-pupil", {}).get(key)
        fmt = lambda s: f"{s['mean_nme_percent']:.2f}" if s else "-"
        r67 = got.get("cnn6-7")
        s = d["samples_seen"]
        print(f"| {cell['name']} | {cell['variant']} | {' '.join(cell['sets']) or 'defaults'} | "
              f"{s.get('cnn6', 0):,} / {s.get('cnn7', 0):,} | {fmt(r6['mean_shape'])} | "
              f"{fmt(r6['summary'])} | {fmt(r67['summary']) if r67 else '-'} | {fmt(ip(r6))} | "
              f"{fmt(ip(r67)) if r67 else '-'} | {d['wall_s'] / 60:.0f} min |")


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "run":
        run(sys.argv[2], Path(sys.argv[3]).resolve(), Path(sys.argv[4]).resolve())
    elif len(sys.argv) == 4 and sys.argv[1] == "table":
        table(sys.argv[2], Path(sys.argv[3]).resolve())
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()

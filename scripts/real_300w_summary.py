#!/usr/bin/env python3
"""The results of a wingflow run as a Markdown summary (stdlib only).

    python3 scripts/real_300w_summary.py OUTPUT_ROOT [--splits val,test] [--run NAME]

Reads OUTPUT_ROOT/reports[/NAME]/cnn*-<split>.json (the evaluate stage's reports) and
OUTPUT_ROOT/balance.json, and prints per split: NME ×100 of CNN-6, CNN-6/7 and the mean
shape under the scheme's default normaliser and the others the reports carry (inter-pupil
beside inter-ocular), failure rates, then faces and NME per pose bin, and the CED plots.
--splits keeps only the named splits (a recipe search looks at val alone).
"""
import argparse
import json
import sys
from pathlib import Path


def load(path):
    with open(path) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--splits", default=None, help="comma-separated splits to report")
    ap.add_argument("--run", default=None, help="a named training run ([train] run)")
    args = ap.parse_args()
    reports = args.root / "reports"
    if args.run:
        reports = reports / args.run
    if not reports.is_dir():
        sys.exit(f"error: no reports in {reports} (has the evaluate stage run?)")
    wanted = set(args.splits.split(",")) if args.splits else None
    found = {}
    for path in sorted(reports.glob("cnn*-*.json")):
        model, _, split = path.stem.partition("-")
        if model == "cnn6" and split.startswith("7-"):
            model, split = "cnn6-7", split[2:]
        if wanted is None or split in wanted:
            found.setdefault(split, {})[model] = load(path)
    if not found:
        sys.exit(f"error: no reports for splits {sorted(wanted or [])} in {reports}")
    print(f"# Results: {args.root}" + (f" (run {args.run})" if args.run else ""))
    balance = args.root / "balance.json"
    if balance.exists():
        b = load(balance)
        rows = dict(b["rows_per_split"])
        carved = f"val carved {b['val_carved']}"
        if b.get("test_carved") is not None:
            carved += f", test carved {b['test_carved']}"
        print(f"\nPlan rows per split: {rows} ({carved}).")
    for split, models in sorted(found.items()):
        first = next(iter(models.values()))
        print(f"\n## {split} ({first['summary']['faces']} faces)\n")
        names = [("default", first["normaliser"])] + [
            (k, v["normaliser"]) for k, v in sorted(first.get("other_normalisers", {}).items())
        ]
        header = "| model | " + " | ".join(f"NME {n} ({spec})" for n, spec in names)
        print(header + " | fail@0.08 | fail@0.10 |")
        print("|---" * (len(names) + 3) + "|")

        def row(label, summaries):
            cells = [f"{s['mean_nme_percent']:.2f}" for s in summaries]
            t = summaries[0].get("thresholds", [])
            fails = [f"{100 * x['failure_rate']:.1f}%" for x in t[:2]] + ["-"] * (2 - len(t[:2]))
            print(f"| {label} | " + " | ".join(cells + fails) + " |")

        def summaries(report, shape=False):
            key = "mean_shape" if shape else "summary"
            out = [report[key]]
            for n, _ in names[1:]:
                out.append(report["other_normalisers"][n][key])
            return out

        row("mean shape", summaries(first, shape=True))
        for model in ("cnn6", "cnn6-7"):
            if model in models:
                row({"cnn6": "CNN-6", "cnn6-7": "CNN-6/7"}[model], summaries(models[model]))
        bins = sorted(first.get("per_pose_bin", {}))
        if bins:
            print("\nPer pose bin (default normaliser):\n")
            labels = [m for m in ("cnn6", "cnn6-7") if m in models]
            print("| pose bin | faces | " + " | ".join(
                {"cnn6": "CNN-6", "cnn6-7": "CNN-6/7"}[m] for m in labels) + " |")
            print("|---" * (len(labels) + 2) + "|")
            for b in bins:
                faces = first["per_pose_bin"][b]["faces"]
                cells = [f"{models[m]['per_pose_bin'][b]['mean_nme_percent']:.2f}" for m in labels]
                print(f"| {b} | {faces} | " + " | ".join(cells) + " |")
        print("\nCED plots: " + ", ".join(
            str(reports / f"ced-{m}-{split}.png") for m in models))


if __name__ == "__main__":
    main()

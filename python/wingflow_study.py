"""Paired comparisons of a finished loss study (`wingflow experiment losses`).

The study's table gives each cell's mean ± std over seeds. Cells that share a seed share its
data split, initialisation and sample order, so the difference of two cells is better judged
seed by seed: this reads the study's `results.json` (or `results-interim.json`) and prints, for
the comparisons the paper makes, the per-seed differences in NME ×100, their mean ± std, and
on how many seeds the difference has the expected sign.

    python python/wingflow_study.py STUDY/results.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass

SPLITS = ("full", "common", "challenging")
METHODS = ("CNN-6", "CNN-6 + PDB", "CNN-6/7", "CNN-6/7 + PDB")
LOSS_NAMES = {"l2": "L2", "l1": "L1", "smooth-l1": "smooth L1", "wing": "Wing"}


@dataclass(frozen=True)
class Comparison:
    """`better` is expected to have the lower NME than `worse` (same split, same seed), or,
    when `approx`, about the same. Cells are (augmentation setting, method, loss)."""

    label: str
    better: tuple[str, str, str]
    worse: tuple[str, str, str]
    approx: bool = False


def setting_of(run: dict) -> str:
    """A run's augmentation setting (`static`, `fresh-eE`); studies from before augmentation
    epochs have no such field and were static."""
    return run.get("augmentation", "static")


def epochs_of(setting: str) -> int:
    """Augmentation epochs of a setting (static: 0, below every fresh setting)."""
    return int(setting.removeprefix("fresh-e")) if setting.startswith("fresh-e") else 0


def comparisons(settings: list[str] | None = None) -> list[Comparison]:
    """The paper's claims within each augmentation setting (the loss ordering per row, PDB per
    loss, the second stage per loss), then, per method and loss, each fresh setting against
    static and against every fresh setting with fewer epochs."""
    settings = sorted(settings or ["static"], key=epochs_of)
    many = len(settings) > 1
    out = []
    for a in settings:
        tag = f"[{a}] " if many else ""
        for m in METHODS:
            out.append(Comparison(f"{tag}{m}: Wing < L1", (a, m, "wing"), (a, m, "l1")))
            out.append(Comparison(f"{tag}{m}: Wing < smooth L1", (a, m, "wing"), (a, m, "smooth-l1")))
            out.append(
                Comparison(f"{tag}{m}: L1 ≈ smooth L1", (a, m, "l1"), (a, m, "smooth-l1"), approx=True)
            )
            out.append(Comparison(f"{tag}{m}: L1 < L2", (a, m, "l1"), (a, m, "l2")))
            out.append(Comparison(f"{tag}{m}: smooth L1 < L2", (a, m, "smooth-l1"), (a, m, "l2")))
        for loss, name in LOSS_NAMES.items():
            out.append(
                Comparison(f"{tag}{name}: CNN-6 + PDB < CNN-6", (a, "CNN-6 + PDB", loss), (a, "CNN-6", loss))
            )
            out.append(
                Comparison(
                    f"{tag}{name}: CNN-6/7 + PDB < CNN-6/7", (a, "CNN-6/7 + PDB", loss), (a, "CNN-6/7", loss)
                )
            )
        for loss, name in LOSS_NAMES.items():
            out.append(Comparison(f"{tag}{name}: CNN-6/7 < CNN-6", (a, "CNN-6/7", loss), (a, "CNN-6", loss)))
            out.append(
                Comparison(
                    f"{tag}{name}: CNN-6/7 + PDB < CNN-6 + PDB",
                    (a, "CNN-6/7 + PDB", loss),
                    (a, "CNN-6 + PDB", loss),
                )
            )
    for k, better in enumerate(settings):
        for worse in settings[:k]:
            for m in METHODS:
                for loss, name in LOSS_NAMES.items():
                    out.append(
                        Comparison(f"{m}, {name}: {better} < {worse}", (better, m, loss), (worse, m, loss))
                    )
    return out


def nme_by_cell(results: dict) -> dict[tuple[str, str, str, int, str], float]:
    """NME ×100 keyed by (setting, method, loss, seed, split), for the runs that have that split."""
    cells = {}
    for run in results["runs"]:
        for split in SPLITS:
            summary = run.get(split)
            if summary:
                key = (setting_of(run), run["method"], run["loss"], run["seed"], split)
                cells[key] = summary["mean_nme_percent"]
    return cells


def paired(cells: dict, c: Comparison, split: str) -> list[float]:
    """better − worse per seed, over the seeds where both cells finished."""
    seeds = sorted({k[3] for k in cells})
    return [
        cells[c.better + (s, split)] - cells[c.worse + (s, split)]
        for s in seeds
        if c.better + (s, split) in cells and c.worse + (s, split) in cells
    ]


def cell_text(diffs: list[float], approx: bool = False) -> str:
    """`mean ± std (k/n)`: k of the n seeds have better < worse (not counted for an `approx`
    claim); a dash when no seed has both cells."""
    if not diffs:
        return "–"
    mean = statistics.mean(diffs)
    spread = f" ± {statistics.stdev(diffs):.2f}" if len(diffs) > 1 else ""
    if approx:
        return f"{mean:+.2f}{spread} (n={len(diffs)})"
    held = sum(d < 0 for d in diffs)
    return f"{mean:+.2f}{spread} ({held}/{len(diffs)})"


def report(results: dict) -> str:
    """The paired comparisons with at least one seed compared, as one Markdown table."""
    cells = nme_by_cell(results)
    settings = sorted({setting_of(run) for run in results["runs"]}, key=epochs_of)
    lines = [
        "Paired differences, NME ×100 (first − second; negative: the claim holds), "
        "mean ± std over seeds (seeds where it holds / seeds compared; for ≈, the seeds compared).",
        "",
        "| claim | " + " | ".join(SPLITS) + " |",
        "|---|" + "---|" * len(SPLITS),
    ]
    for c in comparisons(settings):
        texts = [cell_text(paired(cells, c, s), c.approx) for s in SPLITS]
        if all(t == "–" for t in texts):
            continue
        lines.append(f"| {c.label} | " + " | ".join(texts) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="the study's results.json or results-interim.json")
    args = parser.parse_args(argv)
    try:
        with open(args.results, encoding="utf-8") as f:
            results = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        print(f"{args.results}: {e}", file=sys.stderr)
        return 1
    if "runs" not in results:
        print(f"{args.results}: no `runs` list: not a loss study's results", file=sys.stderr)
        return 1
    sys.stdout.write(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

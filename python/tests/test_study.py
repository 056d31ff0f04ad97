"""Tests of wingflow_study: paired comparisons over a loss study's results.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))

import wingflow_study as ws  # noqa: E402


def run(
    method: str,
    loss: str,
    seed: int,
    full: float,
    challenging: float | None = None,
    augmentation: str | None = None,
) -> dict:
    """A results.json run entry with the fields the module reads."""
    entry = {"method": method, "loss": loss, "seed": seed, "full": {"mean_nme_percent": full}}
    if augmentation is not None:
        entry["augmentation"] = augmentation
    if challenging is not None:
        entry["challenging"] = {"mean_nme_percent": challenging}
    return entry


def test_paired_differences_follow_the_seeds() -> None:
    results = {
        "runs": [
            run("CNN-6", "wing", 0, 8.0, 15.0),
            run("CNN-6", "l1", 0, 8.5, 14.0),
            run("CNN-6", "wing", 1, 9.0),
            run("CNN-6", "l1", 1, 9.1),
            # Seed 2 has Wing only: not compared.
            run("CNN-6", "wing", 2, 1.0),
        ]
    }
    cells = ws.nme_by_cell(results)
    wing_l1 = next(c for c in ws.comparisons() if c.label == "CNN-6: Wing < L1")
    diffs = ws.paired(cells, wing_l1, "full")
    assert [round(d, 6) for d in diffs] == [-0.5, -0.1]
    assert ws.cell_text(diffs) == "-0.30 ± 0.28 (2/2)"
    # One seed: no spread; the claim fails on it.
    assert ws.cell_text(ws.paired(cells, wing_l1, "challenging")) == "+1.00 (0/1)"
    assert ws.cell_text([]) == "–"
    assert ws.cell_text([0.5, -0.1], approx=True) == "+0.20 ± 0.42 (n=2)"


def test_report_has_a_row_per_claim(tmp_path: Path, capsys) -> None:
    results = {"runs": [run(m, loss, 0, 5.0) for m in ws.METHODS for loss in ws.LOSS_NAMES]}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    assert ws.main([str(path)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "claim" not in line]
    assert len(rows) == len(ws.comparisons()) == 36
    assert "| CNN-6/7 + PDB: Wing < L1 | +0.00 (0/1) | – | – |" in out


def test_augmentation_settings_are_compared_seed_by_seed(tmp_path: Path, capsys) -> None:
    results = {
        "runs": [
            run("CNN-6/7 + PDB", "wing", seed, nme, augmentation=setting)
            for seed, (static, e4, e8) in enumerate([(7.0, 6.0, 5.5), (7.2, 6.5, 6.6)])
            for setting, nme in [("static", static), ("fresh-e4", e4), ("fresh-e8", e8)]
        ]
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    assert ws.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "| CNN-6/7 + PDB, Wing: fresh-e4 < static | -0.85 ± 0.21 (2/2) | – | – |" in out
    assert "| CNN-6/7 + PDB, Wing: fresh-e8 < fresh-e4 | -0.20 ± 0.42 (1/2) | – | – |" in out
    # Claims with no seed compared are left out; each setting's own claims are tagged.
    assert "Wing < L1" not in out
    labels = [c.label for c in ws.comparisons(["fresh-e4", "static"])]
    assert "[static] CNN-6: Wing < L1" in labels and "[fresh-e4] CNN-6: Wing < L1" in labels


def test_not_a_study_is_a_clear_error(tmp_path: Path, capsys) -> None:
    path = tmp_path / "other.json"
    path.write_text("{}")
    assert ws.main([str(path)]) == 1
    assert "not a loss study's results" in capsys.readouterr().err

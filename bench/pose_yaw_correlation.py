"""Pearson correlation between wingflow's pose coefficient and the generator's true yaw.

    python3 bench/pose_yaw_correlation.py OUTPUT_ROOT SYNTH_DIR

OUTPUT_ROOT holds shapes/pca.json (after `wingflow run --until pca`); SYNTH_DIR holds the
synth-truth.jsonl written by `wingflow synth`. Prints the face count, the chosen component,
Pearson r, and each leading component's flip score and explained-variance ratio.
"""

import json
import math
import sys
from pathlib import Path


def pearson(a, b):
    n = len(a)
    ma, mb = sum(a) / n, sum(b) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    return cov / math.sqrt(va * vb)


def main(out_root: Path, synth_dir: Path) -> None:
    table = json.loads((out_root / "shapes" / "pca.json").read_text())
    yaw = {}
    for line in (synth_dir / "synth-truth.jsonl").read_text().splitlines():
        face = json.loads(line)
        yaw[face["sample_id"]] = face["yaw"]
    pairs = [(c, yaw[s]) for s, c in table["coefficients"] if c is not None and s in yaw]
    model = table["model"]
    print(
        f"{len(pairs)} faces, PC{model['pose_component'] + 1}, "
        f"pearson {pearson([c for c, _ in pairs], [y for _, y in pairs]):.3f}, "
        f"flip scores {[round(v, 2) for v in model['flip_scores'][:5]]}, "
        f"variance ratios {[round(v, 2) for v in model['explained_variance_ratio'][:5]]}"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

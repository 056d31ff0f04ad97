#!/usr/bin/env python3
"""The per-sample work a competent Albumentations user writes for wingflow's render chain.

Per image: decode once (cv2.imread, BGR -> RGB); per crop size, cut the face box (landmarks' box
made square, x1.25) with a 1.6x margin that leaves room for the rotation, scale and shift, and
shrink it once with INTER_AREA (anti-aliased, and every later op works on a small image); then
per replica: Affine (rotate +-30 deg, scale 0.9-1.1, translate +-5 % of the box), centre crop to
the output size, horizontal flip, colour jitter (brightness, contrast, saturation), Gaussian
blur, keypoints carried along. No flip permutation of landmark indices (Albumentations does not
know it; wingflow does it), so this side does slightly less work.

Measures crops per second at 64x64 and at 128x128, on 1 process and on N, three ways: end to end
(imread included), augmentation only (images decoded beforehand), decode only. Writes a JSON
list of {size, threads, e2e, aug, decode} that `render_bench run --albu` reads.

usage: albu_render.py DIR [--replicas 4] [--workers N] [--out albu.json]
"""

import argparse
import csv
import json
import os
import time

# Albumentations checks PyPI for a newer version at import: never from a benchmark.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import multiprocessing as mp  # noqa: E402

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

ENLARGE = 1.25
MARGIN = 1.6
SIZES = (64, 128)

# Filled before the worker pool forks, so workers share them copy-on-write.
PATHS: list = []
LANDMARKS: list = []
DECODED: list = []
PIPES: dict = {}


def pipeline(size):
    return A.Compose(
        [
            A.Affine(
                scale=(0.9, 1.1),
                translate_percent=(-0.05 / MARGIN, 0.05 / MARGIN),
                rotate=(-30, 30),
                interpolation=cv2.INTER_LINEAR,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                p=1.0,
            ),
            A.CenterCrop(size, size),
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(
                brightness=(0.75, 1.25),
                contrast=(0.75, 1.25),
                saturation=(0.7, 1.3),
                hue=(0.0, 0.0),
                p=1.0,
            ),
            # Sigma in 64x64-crop pixels, scaled with the crop (as wingflow does).
            A.GaussianBlur(blur_limit=0, sigma_limit=(0.3 * size / 64, 1.2 * size / 64), p=0.5),
        ],
        keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
    )


def init_worker(seed):
    cv2.setNumThreads(1)
    np.random.seed(seed)
    for size in SIZES:
        PIPES[size] = pipeline(size)


def decode(i):
    return cv2.cvtColor(cv2.imread(PATHS[i], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def crop_and_shrink(img, lm, size):
    """The face box with margin, zero-padded where it leaves the image, shrunk to size*MARGIN."""
    lo, hi = lm.min(axis=0), lm.max(axis=0)
    cx, cy = (lo + hi) / 2
    side = float((hi - lo).max()) * ENLARGE * MARGIN
    n = int(np.ceil(side))
    x0, y0 = int(np.floor(cx - side / 2)), int(np.floor(cy - side / 2))
    h, w = img.shape[:2]
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + n, w), min(y0 + n, h)
    patch = img[sy0:sy1, sx0:sx1]
    if (sx0, sy0, sx1, sy1) != (x0, y0, x0 + n, y0 + n):
        patch = cv2.copyMakeBorder(
            patch, sy0 - y0, y0 + n - sy1, sx0 - x0, x0 + n - sx1, cv2.BORDER_CONSTANT, value=0
        )
    r = round(size * MARGIN)
    small = cv2.resize(patch, (r, r), interpolation=cv2.INTER_AREA)
    return small, (lm - [x0, y0]) * (r / n)


def augment(img, i, size, replicas):
    small, kps = crop_and_shrink(img, LANDMARKS[i], size)
    check = 0
    for _ in range(replicas):
        out = PIPES[size](image=small, keypoints=kps)
        check += int(out["image"][size // 2, size // 2, 0]) + len(out["keypoints"])
    return check


def job(task):
    mode, i, size, replicas = task
    if mode == "decode":
        return int(decode(i)[0, 0, 0])
    img = decode(i) if mode == "e2e" else DECODED[i]
    return augment(img, i, size, replicas)


def timed(run, tasks, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run(tasks)
        best = min(best, time.perf_counter() - start)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    with open(os.path.join(args.dir, "meta.csv"), newline="") as f:
        for row in csv.DictReader(f):
            PATHS.append(os.path.join(args.dir, row["file"]))
            LANDMARKS.append(
                np.array([[float(row[f"x{k}"]), float(row[f"y{k}"])] for k in range(68)])
            )
    DECODED.extend(decode(i) for i in range(len(PATHS)))
    init_worker(0)
    n = len(PATHS)
    samples = n * args.replicas
    rows = []
    for workers in (1, args.workers):
        pool = None
        if workers == 1:
            run = lambda tasks: [job(t) for t in tasks]  # noqa: E731
        else:
            pool = mp.get_context("fork").Pool(workers, initializer=init_worker, initargs=(1,))
            run = lambda tasks: pool.map(job, tasks, chunksize=4)  # noqa: E731
        for size in SIZES:
            tasks = {m: [(m, i, size, args.replicas) for i in range(n)] for m in ("e2e", "aug", "decode")}
            run(tasks["decode"])  # warm the page cache and the workers
            e2e = timed(run, tasks["e2e"])
            aug = timed(run, tasks["aug"])
            dec = timed(run, tasks["decode"])
            rows.append(
                {"size": size, "threads": workers, "e2e": samples / e2e, "aug": samples / aug,
                 "decode": samples / dec}
            )
            print(
                f"albumentations {size}x{size} {workers} proc: e2e {samples / e2e:.0f}/s, "
                f"aug {samples / aug:.0f}/s, decode-only {samples / dec:.0f} samples/s",
                flush=True,
            )
        if pool is not None:
            pool.close()
            pool.join()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

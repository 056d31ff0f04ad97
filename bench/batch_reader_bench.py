"""Samples/s of the per-sample shard reader against the batch reader, in one run.

    .venv/bin/python bench/batch_reader_bench.py SET_DIR [--batch-size 64] [--workers 0 2]

For each number of DataLoader workers it times whole epochs of

- ``per-sample``: ``wingflow_shards.ShardSet`` through ``DataLoader(batch_size=B,
  shuffle=True, num_workers=W)`` (one sample read at a time, then collated), and
- ``batch``: ``wingflow_batches.ShardBatches(batch_size=B)`` through
  ``DataLoader(batch_size=None, num_workers=W)`` (one gather per tensor and shard per batch),

both yielding images as uint8 [B, 3, S, S]: contiguous from the per-sample reader, a
channels-last view from the batch reader (both readers copy every byte out of the shards).
Each number of workers has two rows: the batches as the readers yield them ("as yielded"),
and with ``.contiguous()`` called on every image tensor, a no-op for the per-sample reader's
and a channels-last to NCHW copy for the batch reader's, for a consumer that needs NCHW.

Each epoch makes a new iterator, so with workers every epoch pays for starting them, as in a
training loop that calls ``set_epoch``. The table gives samples/s over all timed epochs
("epoch"), and over the same epochs from the first batch on ("steady", without worker start
and the first batch), each the best of ``--repeats`` runs (the two readers take turns); the
ratio columns divide the batch reader's by the per-sample reader's at the same number of
workers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable, List, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
from wingflow_batches import ShardBatches  # noqa: E402
from wingflow_shards import ShardSet  # noqa: E402


def time_epochs(
    loader: torch.utils.data.DataLoader,
    epochs: int,
    set_epoch: Callable[[int], None],
    consume: Callable[[torch.Tensor], torch.Tensor],
) -> Tuple[float, float]:
    """(samples/s over whole epochs, samples/s from each epoch's first batch on)."""
    samples = steady_samples = 0
    total = steady = 0.0
    for epoch in range(epochs):
        set_epoch(epoch)
        start = time.perf_counter()
        first_at = None
        for batch in loader:
            consume(batch["image"])
            n = batch["image"].shape[0]
            if first_at is None:
                first_at = time.perf_counter()
            else:
                steady_samples += n
            samples += n
        end = time.perf_counter()
        total += end - start
        steady += end - first_at
    return samples / total, steady_samples / steady


def best(results: List[Tuple[float, float]]) -> Tuple[float, float]:
    return max(r[0] for r in results), max(r[1] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("set_dir", help="a shard set folder (index.json and its shards)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row; the best is kept")
    args = parser.parse_args()

    torch.set_num_threads(1)
    samples = ShardSet(args.set_dir)
    print(
        f"{args.set_dir}: {len(samples)} samples of {samples.crop_size}², "
        f"{len(samples.files)} shard(s); "
        f"batch size {args.batch_size}; {args.epochs} epochs x best of {args.repeats}; "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    consumers = {"as yielded": lambda image: image, "`.contiguous()`": torch.Tensor.contiguous}
    rows = []
    for workers in args.workers:
        per_sample = torch.utils.data.DataLoader(
            ShardSet(args.set_dir), batch_size=args.batch_size, shuffle=True, num_workers=workers
        )
        batches = ShardBatches(args.set_dir, batch_size=args.batch_size)
        whole = torch.utils.data.DataLoader(batches, batch_size=None, num_workers=workers)
        for label, consume in consumers.items():
            # One untimed epoch each, so that both read from the page cache.
            time_epochs(per_sample, 1, lambda _: None, consume)
            time_epochs(whole, 1, batches.set_epoch, consume)
            # Alternate the readers, so that both see the same spells of load on the machine.
            a, b = [], []
            for _ in range(args.repeats):
                a.append(time_epochs(per_sample, args.epochs, lambda _: None, consume))
                b.append(time_epochs(whole, args.epochs, batches.set_epoch, consume))
            rows.append((workers, label, best(a), best(b)))

    print()
    print("samples/s")
    print()
    print(
        "| workers | image | per-sample epoch | batch epoch | ratio "
        "| per-sample steady | batch steady | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for workers, label, (a_epoch, a_steady), (b_epoch, b_steady) in rows:
        print(
            f"| {workers} | {label} | {a_epoch:,.0f} | {b_epoch:,.0f} | {b_epoch / a_epoch:.1f}× "
            f"| {a_steady:,.0f} | {b_steady:,.0f} | {b_steady / a_steady:.1f}× |"
        )


if __name__ == "__main__":
    main()

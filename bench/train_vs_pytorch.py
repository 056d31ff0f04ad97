#!/usr/bin/env python3
"""Training throughput of wingflow-train against PyTorch, and the loader against the step.

For CNN-6 and CNN-7 this measures, in one run on one machine, with the same batch size,
optimiser (Adam, unfused, as wingflow's), loss (Wing, w=10, eps=2, summed over coordinates and
averaged over the batch), input conversion (u8 -> f32 /255 - 0.5) and thread count:

- images/s of `wingflow-train bench` (random u8 batches, forward + backward + Adam step);
- images/s of the same step in PyTorch, with the model of python/wingflow_models.py;
- with --shards1/--shards2: the wingflow loader alone (batches/s on a real shard set, shuffled,
  prefetch thread) and the wingflow training step fed by that loader.

With --device cuda (or cuda:N) both train on that GPU: the u8 batch is made on the host and
moved to the device every step on both sides, and every step ends by reading the loss back
(`loss.item()`, `double_value`), which waits for the GPU, so both time whole steps.

Usage:
    python bench/train_vs_pytorch.py --trainer target/debug/wingflow-train --threads 2 \
        --batch 16 --steps 20 [--device cuda] [--shards1 OUT/shards/stage1/train --shards2 OUT/shards/stage2/train]
Prints a markdown table and writes it with --out FILE.
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
from wingflow_models import LandmarkNet, ModelConfig, images_to_input  # noqa: E402

NUM_POINTS = 68
WING_W, WING_EPS = 10.0, 2.0
WING_C = WING_W - WING_W * math.log1p(WING_W / WING_EPS)


def wing(diff: torch.Tensor) -> torch.Tensor:
    a = diff.abs()
    return torch.where(a < WING_W, WING_W * torch.log1p(a / WING_EPS), a - WING_C)


def pytorch_images_per_second(arch: str, batch: int, steps: int, threads: int, device: str) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device(device)
    net = LandmarkNet(ModelConfig(arch, NUM_POINTS)).to(dev)
    net.train()
    # foreach=False: one kernel per tensor, as wingflow's Adam over tch tensors.
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, foreach=False)
    s = net.config.input_size
    images = torch.randint(0, 256, (batch, s, s, 3), dtype=torch.uint8)
    target = torch.rand(batch, NUM_POINTS, 2, device=dev) * s

    def step() -> None:
        opt.zero_grad(set_to_none=False)
        pred = net.decode(net(images_to_input(images, dev)))
        loss = wing(pred - target).sum() / batch
        loss.backward()
        opt.step()
        loss.item()

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def wingflow(trainer: str, arch: str, batch: int, steps: int, threads: int, device: str,
             shards: str | None):
    cmd = [trainer, "--threads", str(threads), "bench", "--arch", arch,
           "--batch-size", str(batch), "--steps", str(steps), "--device", device]
    if shards:
        cmd += ["--shards", shards]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    step = float(re.search(r"batch \d+: ([\d.]+) images/s", out).group(1))
    loader = re.search(r"loader: ([\d.]+) batches/s", out)
    fed = re.search(r"fed by the loader: ([\d.]+) images/s", out)
    return step, (float(loader.group(1)) if loader else None), (float(fed.group(1)) if fed else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trainer", required=True, help="path of wingflow-train")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (both sides)")
    ap.add_argument("--repeats", type=int, default=2,
                    help="alternate wingflow and PyTorch this many times; keep the best of each")
    ap.add_argument("--shards1", help="a 64x64 shard set for the CNN-6 loader rows")
    ap.add_argument("--shards2", help="a 128x128 shard set for the CNN-7 loader rows")
    ap.add_argument("--out", help="also write the markdown table here")
    args = ap.parse_args()

    rows = []
    for arch, shards in (("cnn6", args.shards1), ("cnn7", args.shards2)):
        steps = args.steps if arch == "cnn6" else max(2, args.steps // 3)
        best_wf, best_pt, loader, fed = 0.0, 0.0, None, None
        for r in range(args.repeats):
            wf, ld, fd = wingflow(args.trainer, arch, args.batch, steps, args.threads,
                                  args.device, shards if r == 0 else None)
            pt = pytorch_images_per_second(arch, args.batch, steps, args.threads, args.device)
            best_wf, best_pt = max(best_wf, wf), max(best_pt, pt)
            loader, fed = loader or ld, fed or fd
        step_batches = best_wf / args.batch
        rows.append((arch, best_wf, best_pt, loader, fed, step_batches))
        print(f"{arch}: wingflow {best_wf:.1f} img/s, pytorch {best_pt:.1f} img/s", file=sys.stderr)

    device = args.device
    if device.startswith("cuda"):
        device += f" ({torch.cuda.get_device_name(torch.device(device))})"
    lines = [
        f"torch {torch.__version__}, device {device}, {args.threads} threads, batch {args.batch}, "
        f"{args.steps} timed steps (CNN-7: {max(2, args.steps // 3)}), best of {args.repeats}",
        "",
        "| network | wingflow-train img/s | PyTorch img/s | ratio | loader batches/s | step batches/s | loader / step | step fed by loader img/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arch, wf, pt, loader, fed, step_b in rows:
        fmt = lambda v, p=1: "–" if v is None else f"{v:.{p}f}"  # noqa: E731
        lines.append(
            f"| {arch} | {wf:.1f} | {pt:.1f} | {wf / pt:.2f} | {fmt(loader)} | {step_b:.2f} | "
            f"{fmt(None if loader is None else loader / step_b, 0)} | {fmt(fed)} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()

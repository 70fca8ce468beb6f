"""Throughput of ``purify_lib.attacks.pgd`` against torchattacks' PGD on the same model, batch and device.

    python benchmarks/attacks.py [--device cpu|cuda] [--batch 256] [--steps 10] [--repeats 5]

Both attacks run the same L∞ PGD (eps 0.3, alpha 0.01, random start) on a LeNet-like CNN with random
weights and a batch of random MNIST-shaped images; after a warm-up run each is timed ``--repeats`` times
(alternating, to share any drift in machine load) and the median is reported in images per second.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from purify_lib.attacks import pgd


def lenet() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 200), nn.ReLU(), nn.Linear(200, 10),
    )


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torchattacks  # only the torchattacks package: it also ships top-level robustbench/autoattack

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = lenet().to(device).eval()
    x = torch.rand(args.batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    eps, alpha = 0.3, 0.01
    theirs_attack = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=args.steps, random_start=True)
    runs = {
        "ours (purify_lib.attacks.pgd)": lambda: pgd(model, x, y, eps=eps, alpha=alpha, steps=args.steps),
        "torchattacks.PGD": lambda: theirs_attack(x, y),
    }
    for run in runs.values():  # warm-up: kernels, allocator, lazy initialisation
        timed(run, device)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            times[name].append(timed(run, device))

    print(f"PGD, {args.steps} steps, batch {args.batch}, device {device} "
          f"({torch.get_num_threads()} threads), median of {args.repeats}")
    rates = {name: args.batch / statistics.median(t) for name, t in times.items()}
    for name, rate in rates.items():
        print(f"  {name:32s} {rate:10.1f} images/s")
    ours, theirs = rates.values()
    print(f"  ratio ours/theirs: {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()

"""Benchmark: time per training step of Alrao (K heads + switch) relative to plain SGD on the same network.

A step is forward + backward + update on one minibatch: ``torch.optim.SGD`` on ``body + head`` against
:func:`dynbook_lib.alrao.alrao_step` with :class:`~dynbook_lib.alrao.PerParameterSGD` on ``Alrao(body, head, K)``.
Sizes: the chapter's fast network (MLP 40-256-256 with batch norm, 10 classes, batch 32) and VGG-11 with batch norm on
32 x 32 images (the full profile's body, batch 32), on random inputs. CPU, 2 threads, float32; median of 5 repeats of
``steps`` steps after a warm-up.

Run: ``.venv/bin/python benchmarks/alrao_step.py`` (about a minute; ``--sizes fast`` for the small one only).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from dynbook_lib.alrao import ALRAO_FAST, ALRAO_FULL, Alrao, PerParameterSGD, alrao_step, build_networks

SIZES = {"fast": (ALRAO_FAST, (40,), 200), "vgg": (ALRAO_FULL, (3, 32, 32), 10)}


def seconds_per_step(step, x, y, steps: int) -> float:
    for _ in range(3):
        step(x, y)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(steps):
            step(x, y)
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=SIZES)
    parser.add_argument("--heads", nargs="+", type=int, default=[10])
    args = parser.parse_args()
    torch.set_num_threads(2)
    print("| network | K | SGD ms per step | Alrao ms per step | x SGD |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        cfg, shape, steps = SIZES[size]
        gen = torch.Generator().manual_seed(0)
        x, y = torch.randn(32, *shape, generator=gen), torch.randint(0, 10, (32,), generator=gen)
        net = nn.Sequential(*build_networks(cfg, seed=0))
        sgd = torch.optim.SGD(net.parameters(), lr=1e-2)

        def sgd_step(xb, yb):
            sgd.zero_grad()
            nn.functional.cross_entropy(net(xb), yb).backward()
            sgd.step()

        base = seconds_per_step(sgd_step, x, y, steps)
        for k in args.heads:
            model = Alrao(*build_networks(cfg, seed=0), n_heads=k, eta_min=1e-5, eta_max=10.0, seed=0)
            opt = PerParameterSGD(model.rates())
            alrao = seconds_per_step(lambda xb, yb: alrao_step(model, opt, xb, yb), x, y, steps)
            print(f"| {size} | {k} | {1e3 * base:.2f} | {1e3 * alrao:.2f} | {alrao / base:.2f} |")


if __name__ == "__main__":
    main()

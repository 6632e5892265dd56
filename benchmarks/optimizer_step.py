"""Benchmark: time per optimizer step of KFAC and EKFAC relative to SGD, amortised over many steps.

A step is ``zero_grad`` + forward + backward + ``step`` on a mirrored tanh autoencoder with the binary cross-entropy
(:func:`dynbook_lib.ekfac.train_autoencoder`, which also draws the sampled-Fisher backward pass on the steps that
gather statistics). Sizes: the chapter's fast autoencoder (64-32-16-8 mirrored, batch 100, digits) and the paper's
MNIST autoencoder shape (784-1000-500-250-30 mirrored, batch 1000) on random inputs. CPU, 2 threads, float32.

Run: ``.venv/bin/python benchmarks/optimizer_step.py`` (a few minutes; ``--sizes fast`` for the small one only).
"""

from __future__ import annotations

import argparse

import torch

from dynbook_lib.data import digits_tensors
from dynbook_lib.ekfac import train_autoencoder

SIZES = {
    "fast": dict(widths=(64, 32, 16, 8), batch_size=100, steps=500),
    "paper": dict(widths=(784, 1000, 500, 250, 30), batch_size=1000, steps=40),
}
SETTINGS = [("sgd", 1, {"lr": 0.1}), ("adam", 1, {"lr": 1e-2})] + [
    (name, every, {"lr": 0.3, "damping": 3.0}) for name in ("kfac", "ekfac") for every in (1, 10)
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=SIZES)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print("| size | optimizer | statistics every | ms per step | x SGD |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        spec = SIZES[size]
        if size == "fast":
            x = digits_tensors(torch.float32)["x"]
        else:
            x = torch.rand(5000, 784, generator=torch.Generator().manual_seed(0))
        sgd = None
        for name, every, hyper in SETTINGS:
            curve = train_autoencoder(name, hyper, x, widths=spec["widths"], steps=spec["steps"],
                                      batch_size=spec["batch_size"], seed=0, record_every=spec["steps"],
                                      basis_every=10, stats_every=every)
            per_step = float(curve.seconds[-1]) / spec["steps"]
            sgd = per_step if name == "sgd" else sgd
            print(f"| {size} | {name} | {every if name in ('kfac', 'ekfac') else '-'} | {1e3 * per_step:.2f} |"
                  f" {per_step / sgd:.2f} |")


if __name__ == "__main__":
    main()

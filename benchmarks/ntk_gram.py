"""Benchmark: the empirical NTK Gram matrix by three routes, seconds and peak memory.

Routes: dynbook's layer-wise fast path (:func:`dynbook_lib.ntk.empirical_ntk`), the full Jacobian by
``torch.func.jacrev`` + ``vmap`` (:func:`dynbook_lib.ntk.empirical_ntk_reference`), and nngeometry 0.4's
``GramMatrix`` (``FMatDense``). Models: an MLP 40-256-256-10 and a small 1-D CNN (mnist1d-sized inputs), 100
examples, 10 outputs, float32, CPU. Each route runs in a fresh subprocess so that its peak resident memory
(``ru_maxrss``) is its own; the time is the median of ``--repeats`` runs after one warm-up.

Run: ``.venv/bin/python benchmarks/ntk_gram.py`` (about a minute); ``--n 2000`` checks the large size.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

ROUTES = ("fast", "jacrev_vmap", "nngeometry")
MODELS = ("mlp", "cnn")


def make_model(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    """The benchmarked model and its input shape (without the batch dimension)."""
    torch.manual_seed(0)
    if name == "mlp":
        return nn.Sequential(nn.Linear(40, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)), (40,)
    cnn = nn.Sequential(
        nn.Conv1d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
        nn.Flatten(), nn.Linear(32 * 10, 64), nn.ReLU(), nn.Linear(64, 10),
    )
    return cnn, (1, 40)


def gram(route: str, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if route == "fast":
        from dynbook_lib.ntk import empirical_ntk

        return empirical_ntk(model, x)
    if route == "jacrev_vmap":
        from dynbook_lib.ntk import empirical_ntk_reference

        return empirical_ntk_reference(model, x)
    from nngeometry import GramMatrix
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(x), batch_size=len(x))
    return GramMatrix(model, loader).to_torch()


def run_one(route: str, model_name: str, n: int, repeats: int) -> dict:
    """Time one route in this process; return seconds and peak RSS."""
    torch.set_num_threads(2)
    model, shape = make_model(model_name)
    x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(1))
    gram(route, model, x[: min(n, 10)])  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        g = gram(route, model, x)
        times.append(time.perf_counter() - start)
    return {"route": route, "model": model_name, "n": n, "seconds": statistics.median(times),
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "numel": g.numel()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="number of examples")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--routes", nargs="+", default=list(ROUTES), choices=ROUTES)
    parser.add_argument("--child", nargs=2, metavar=("ROUTE", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(*args.child, args.n, args.repeats)))
        return
    rows = []
    for model_name in args.models:
        for route in args.routes:
            cmd = [sys.executable, __file__, "--n", str(args.n), "--repeats", str(args.repeats),
                   "--child", route, model_name]
            rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    print(f"| model | n | route | seconds | peak RSS (MiB) | x fast |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        fast = next(f for f in rows if f["model"] == r["model"] and f["route"] == "fast")["seconds"]
        print(f"| {r['model']} | {r['n']} | {r['route']} | {r['seconds']:.4f} | {r['peak_mib']:.0f} |"
              f" {r['seconds'] / fast:.1f} |")


if __name__ == "__main__":
    main()

"""Test helpers shared by the test modules: tolerances keyed by dtype, and comparison with them."""

from __future__ import annotations

from pathlib import Path

import torch

from dynbook_lib.data.fake import write_fake_cifar10

# One place for tolerances. float64 is what every exact comparison of the library runs in.
_TOLERANCES: dict[torch.dtype, dict[str, float]] = {
    torch.float64: {"rtol": 1e-10, "atol": 1e-12},
    torch.float32: {"rtol": 1e-5, "atol": 1e-6},
}


def tolerance(dtype: torch.dtype, scale: float = 1.0) -> dict[str, float]:
    """``rtol`` and ``atol`` for ``dtype``, multiplied by ``scale`` for quantities with a known error growth."""
    return {k: v * scale for k, v in _TOLERANCES[dtype].items()}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, scale: float = 1.0) -> None:
    """``torch.testing.assert_close`` with the tolerance of ``expected``'s dtype."""
    torch.testing.assert_close(actual, expected, **tolerance(expected.dtype, scale))


def write_fake_cifar(root: Path, per_batch: int = 4) -> None:
    """Files in the layout of the official CIFAR-10 python archive, with ``per_batch`` random images per batch."""
    write_fake_cifar10(root, per_batch)


def run_smoke_profile(out: Path, data: Path, device: str, *extra: str):
    """``dynbook run --profile smoke`` of every written chapter on ``device`` into ``out``, with the fake downloads of
    ``data`` (``$DYNBOOK_DATA``); returns the finished process."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-m", "dynbook_lib", "run", "--profile", "smoke", "--device", device,
                           *extra, "--out", str(out)], cwd=root, capture_output=True, text=True, timeout=3600,
                          env={**os.environ, "DYNBOOK_DATA": str(data)})


def smoke_results(out: Path, proc, chapter) -> dict:
    """A chapter's smoke results, asserted to have run and recorded every claim and check of its specification."""
    import json

    path = out / "results" / f"{chapter.slug}.json"
    assert path.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(path.read_text())
    assert results["profile"] == "smoke" and results["status"] == "passed", results.get("error")
    recorded = {c["name"] for c in results["claims"]} | {c["name"] for c in results["consistency"]}
    assert set(chapter.recorded_names) <= recorded
    return results

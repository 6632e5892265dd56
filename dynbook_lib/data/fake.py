"""Small files in the layout of the official CIFAR-10 and MNIST downloads, filled with random pixels and labels.

They let the full profile's data pipeline run where the real data cannot be fetched: the smoke profile's tests
(``pytest -m full_smoke``) point ``$DYNBOOK_DATA`` at a folder written by :func:`write_fake_data`.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

from dynbook_lib.data.downloads import MNIST_FILES


def write_fake_cifar10(root: str | Path, per_batch: int = 16, *, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py`` with five training batches and a test batch of ``per_batch`` random images each."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, per_batch).tolist()}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    return folder


def _write_idx(path: Path, array: np.ndarray) -> None:
    """One IDX file (unsigned bytes), gzipped, as MNIST ships them."""
    header = b"\x00\x00\x08" + bytes([array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def write_fake_mnist(root: str | Path, n_train: int = 64, n_test: int = 32, *, seed: int = 0) -> Path:
    """The four gzipped IDX files of MNIST in ``root``, with ``n_train`` and ``n_test`` random 28 x 28 images."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for key, name in MNIST_FILES.items():
        n = n_train if "train" in key else n_test
        _write_idx(root / name, rng.integers(0, 256, (n, 28, 28)) if key.startswith("x") else rng.integers(0, 10, n))
    return root


def write_fake_data(root: str | Path) -> Path:
    """Fake CIFAR-10 (80 training, 16 test images) in ``root/cifar10`` and fake MNIST in ``root/mnist``: the layout
    :func:`dynbook_lib.data.downloads.data_dir` expects under ``$DYNBOOK_DATA``."""
    root = Path(root)
    write_fake_cifar10(root / "cifar10")
    write_fake_mnist(root / "mnist")
    return root

"""Loaders of the full profile's data sets, from their official files, downloaded once when asked (no torchvision).

The fast profile never calls these; the tests exercise them on small files they write themselves.
"""

from __future__ import annotations

import gzip
import os
import pickle
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
DATA_ENV = "DYNBOOK_DATA"
MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


def data_dir(name: str) -> Path:
    """Where the data set ``name`` lives: ``$DYNBOOK_DATA/name``, by default ``data/name`` under the working directory.

    Example:
        >>> data_dir("cifar10").name
        'cifar10'
    """
    return Path(os.environ.get(DATA_ENV) or "data") / name


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as fh:
        batch = pickle.load(fh, encoding="bytes")
    return np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(batch[b"labels"])


def cifar10_tensors(root: str | Path, *, download: bool = False) -> dict[str, torch.Tensor]:
    """CIFAR-10 as float32 tensors normalised per channel with the training statistics.

    Args:
        root: directory holding (or to receive) ``cifar-10-batches-py``.
        download: fetch and unpack the archive when the directory is missing.

    Returns:
        ``{"x_train": (50000, 3, 32, 32), "y_train": (50000,), "x_test": (10000, 3, 32, 32), "y_test": (10000,)}``.
    """
    root = Path(root)
    folder = root / "cifar-10-batches-py"
    if not folder.exists():
        if not download:
            raise FileNotFoundError(f"{folder} not found; pass download=True to fetch {CIFAR10_URL}")
        root.mkdir(parents=True, exist_ok=True)
        archive = root / "cifar-10-python.tar.gz"
        urllib.request.urlretrieve(CIFAR10_URL, archive)
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
    train = [_read_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    x_train = np.concatenate([b[0] for b in train]).astype(np.float32) / 255
    y_train = np.concatenate([b[1] for b in train])
    x_test, y_test = _read_batch(folder / "test_batch")
    x_test = x_test.astype(np.float32) / 255
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.std(axis=(0, 2, 3), keepdims=True)
    return {
        "x_train": torch.from_numpy((x_train - mean) / std),
        "y_train": torch.from_numpy(y_train).long(),
        "x_test": torch.from_numpy((x_test - mean) / std),
        "y_test": torch.from_numpy(y_test).long(),
    }


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX array (the MNIST file format: big-endian header, dims, then uint8 data), gzipped or not."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 8:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def mnist_tensors(root: str | Path, *, download: bool = False) -> dict[str, torch.Tensor]:
    """MNIST with pixels in ``[0, 1]``, images flattened: ``x_train (60000, 784)``, ``y_train``, ``x_test``,
    ``y_test``.

    Args:
        root: directory holding (or to receive) the four ``*-ubyte.gz`` files.
        download: fetch the missing files.
    """
    root = Path(root)
    out = {}
    for key, name in MNIST_FILES.items():
        path = root / name
        if not path.exists():
            if not download:
                raise FileNotFoundError(f"{path} not found; pass download=True to fetch it from {MNIST_URL}")
            root.mkdir(parents=True, exist_ok=True)
            urllib.request.urlretrieve(MNIST_URL + name, path)
        array = read_idx(path)
        out[key] = (torch.from_numpy(array.reshape(len(array), -1).astype(np.float32) / 255) if key.startswith("x")
                    else torch.from_numpy(array.astype(np.int64)))
    return out

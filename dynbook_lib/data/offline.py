"""Small real data sets that need no download: ``mnist1d`` generated locally and scikit-learn's digits."""

from __future__ import annotations

import random

import numpy as np
import torch


def mnist1d_tensors(num_samples: int = 5000, *, seed: int, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """MNIST-1D (Greydanus 2020) generated locally with ``mnist1d.data.make_dataset`` (never its downloading path).

    ``make_dataset`` seeds numpy's and Python's global generators; their states are restored afterwards.

    Returns:
        ``{"x_train": (0.8 N, 40), "y_train", "x_test": (0.2 N, 40), "y_test"}``, labels as ``long``.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {
        "x_train": torch.as_tensor(data["x"], dtype=dtype),
        "y_train": torch.as_tensor(data["y"]).long(),
        "x_test": torch.as_tensor(data["x_test"], dtype=dtype),
        "y_test": torch.as_tensor(data["y_test"]).long(),
    }


def digits_tensors(dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """scikit-learn's 1797 handwritten digits (8 x 8), pixels scaled to ``[0, 1]``: ``{"x": (1797, 64), "y"}``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return {"x": torch.as_tensor(digits.data / 16.0, dtype=dtype), "y": torch.as_tensor(digits.target).long()}

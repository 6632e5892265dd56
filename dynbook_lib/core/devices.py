"""Device selection: ``auto`` picks CUDA when present and says which; ``cuda`` without CUDA is a clear error."""

from __future__ import annotations

from typing import Literal, get_args

import torch

DeviceName = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = get_args(DeviceName)


def check_device_name(name: object) -> str:
    """Return ``name`` if it is one of ``auto``, ``cpu``, ``cuda``; else raise ``ValueError`` (one line)."""
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; choose one of: {', '.join(DEVICES)}")
    return str(name)


def resolve_device(name: str, *, announce: bool = False) -> torch.device:
    """Turn a device name into a ``torch.device``.

    Args:
        name: ``"auto"`` (CUDA if available, else CPU), ``"cpu"`` or ``"cuda"``.
        announce: print which device was picked.

    Raises:
        ValueError: unknown name, or ``"cuda"`` when no CUDA device is available.
    """
    check_device_name(name)
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA device is available; use --device auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if announce:
        where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(f"device: {device} ({where})")
    return device

"""Progress bars that show in Jupyter and a terminal and stay quiet in headless runs."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

HEADLESS_ENV = "DYNBOOK_HEADLESS"


def is_headless() -> bool:
    """True when the runner executes the chapter (it sets ``DYNBOOK_HEADLESS=1``)."""
    return os.environ.get(HEADLESS_ENV, "") not in ("", "0")


def progress(iterable: Iterable[T], **kwargs) -> Iterable[T]:
    """``tqdm.auto`` over ``iterable``, disabled in headless runs so executed notebooks stay clean."""
    kwargs.setdefault("disable", is_headless())
    return tqdm(iterable, **kwargs)

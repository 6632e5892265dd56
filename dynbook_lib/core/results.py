"""The results file ``OUT/results/<slug>.json``: what a chapter measured, written atomically as it runs."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

RESULTS_ENV = "DYNBOOK_RESULTS_FILE"
"""Environment variable through which the runner tells a notebook where to write its results file."""


def write_json_atomic(path: Path | str, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False, allow_nan=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_results(path: Path | str) -> dict[str, Any] | None:
    """The results file at ``path``, or ``None`` when it does not exist or cannot be parsed."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def git_commit(start: Path | str | None = None) -> str | None:
    """The commit of the checkout that holds ``start`` (default: this package), or ``None`` outside git."""
    where = Path(start) if start is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment() -> dict[str, Any]:
    """The environment recorded beside every result: Python, torch, dynbook_lib, git commit and GPU."""
    from dynbook_lib import __version__

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "dynbook_lib": __version__,
        "git_commit": git_commit(),
        "gpu": gpu,
    }

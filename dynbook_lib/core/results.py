"""The results file ``OUT/results/<slug>.json``: what a chapter measured, written atomically as it runs.

It is the project's public output; every field is documented in ``book/running.md`` and checked by
:data:`RESULTS_SCHEMA` (JSON Schema). The file is standard JSON: a NaN or infinite number is written as ``null``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import torch

from dynbook_lib import __version__

RESULTS_ENV = "DYNBOOK_RESULTS_FILE"
"""Environment variable through which the runner tells a notebook where to write its results file."""

SCHEMA_VERSION = 2
"""Version of the results file's layout; raised whenever a field changes meaning or disappears."""

STATUSES = ("running", "passed", "failed", "crashed", "timed out", "interrupted")
"""``running``: the notebook has not reached its reproduction table (still running, or a plain papermill run that
crashed); ``passed``: every required claim and consistency check holds; ``failed``: one does not; ``crashed``: the
notebook raised or missed a claim of its specification; ``timed out``: the runner stopped it at its execution timeout;
``interrupted``: Ctrl-C or SIGTERM stopped it."""

_NUMBER_OR_NULL = {"type": ["number", "null"]}
_CLAIM = {
    "type": "object",
    "required": ["name", "statement", "value", "op", "threshold", "holds", "paper", "paper_value", "profiles",
                 "note", "required"],
    "properties": {
        "name": {"type": "string"}, "statement": {"type": "string"}, "value": _NUMBER_OR_NULL,
        "op": {"enum": ["<", "<=", ">", ">="]}, "threshold": _NUMBER_OR_NULL, "holds": {"type": "boolean"},
        "paper": {"type": "string"}, "paper_value": {"type": ["number", "string", "null"]},
        "profiles": {"type": "array", "items": {"enum": ["fast", "full"]}}, "note": {"type": "string"},
        "required": {"type": "boolean"},
    },
}
_CHECK = {
    "type": "object",
    "required": ["name", "statement", "value", "op", "threshold", "holds", "note"],
    "properties": {
        "name": {"type": "string"}, "statement": {"type": "string"}, "value": _NUMBER_OR_NULL,
        "op": {"enum": ["<", "<=", ">", ">="]}, "threshold": _NUMBER_OR_NULL, "holds": {"type": "boolean"},
        "note": {"type": "string"},
    },
}
RESULTS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "dynbook chapter results",
    "type": "object",
    "required": ["schema_version", "chapter", "profile", "device", "seed", "seconds", "status", "claims",
                 "consistency", "metrics", "env"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "chapter": {"type": "string"},
        "profile": {"enum": ["fast", "full", "smoke"]},
        "device": {"enum": ["auto", "cpu", "cuda"]},
        "seed": {"type": "integer", "minimum": 0},
        "seconds": {"type": "number", "minimum": 0},
        "status": {"enum": list(STATUSES)},
        "error": {"type": ["string", "null"]},
        "budget_s": _NUMBER_OR_NULL,
        "over_budget": {"type": "boolean"},
        "input_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "finished_at": {"type": "string"},
        "claims": {"type": "array", "items": _CLAIM},
        "consistency": {"type": "array", "items": _CHECK},
        "metrics": {"type": "object"},
        "peak_memory": {"type": "object", "properties": {"rss_mib": _NUMBER_OR_NULL, "cuda_mib": _NUMBER_OR_NULL}},
        "env": {
            "type": "object",
            "required": ["python", "torch", "dynbook_lib", "git_commit", "gpu", "threads"],
            "properties": {
                "python": {"type": "string"}, "torch": {"type": "string"}, "dynbook_lib": {"type": "string"},
                "git_commit": {"type": ["string", "null"]}, "gpu": {"type": ["string", "null"]},
                "threads": {"type": "integer", "minimum": 1},
            },
        },
    },
}


def to_standard_json(data: Any) -> Any:
    """``data`` with every NaN or infinite float replaced by ``None`` (JSON ``null``), recursively.

    Example:
        >>> to_standard_json({"a": [1.0, float("nan")], "b": float("inf")})
        {'a': [1.0, None], 'b': None}
    """
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: to_standard_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [to_standard_json(v) for v in data]
    return data


def write_json_atomic(path: Path | str, data: dict[str, Any]) -> None:
    """Write ``data`` as standard JSON to ``path`` (mode 0644) through a temporary file and a rename, so readers
    never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(to_standard_json(data), f, indent=2, sort_keys=False, allow_nan=False)
            f.write("\n")
        os.chmod(tmp, 0o644)
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


def validate_results(data: dict[str, Any]) -> None:
    """Raise ``ValueError`` (one line: the field and what is wrong) unless ``data`` follows :data:`RESULTS_SCHEMA`."""
    try:
        jsonschema.validate(data, RESULTS_SCHEMA)
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ValueError(f"results file does not follow schema {SCHEMA_VERSION}: {where}: {err.message}") from None


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
    """The environment recorded beside every result: Python, torch, dynbook_lib, git commit, GPU and torch threads."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "dynbook_lib": __version__,
        "git_commit": git_commit(),
        "gpu": gpu,
        "threads": torch.get_num_threads(),
    }

"""The registry of full-profile results: ``results/full/<slug>.json`` in the repository.

It holds the results files of real full-profile runs, copied there by :func:`register` (``dynbook register OUT``),
never written by hand: the file must validate against the results schema, come from the ``full`` profile, have run
to its reproduction table (``passed`` or ``failed``: a failed claim is a result too; a crash is not), and name where
it ran (``cpu``, or ``cuda`` with the GPU's name). ``dynbook register`` also checks that the chapter exists, that
every claim of its specification is recorded, and that each ``holds`` follows from its value and threshold. Each chapter's reproduction table shows the registered full value
beside the fast one, or says "not yet run at full scale"; the status page lists which chapters have full results.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynbook_lib.core.results import read_results, validate_results, write_json_atomic

REGISTRY_ENV = "DYNBOOK_REGISTRY"


def registry_dir() -> Path:
    """``$DYNBOOK_REGISTRY``, by default ``results/full`` in the repository that holds this package (an installed
    copy without the repository has no registry: every chapter then reads "not yet run at full scale")."""
    env = os.environ.get(REGISTRY_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "results" / "full"


@dataclass(frozen=True)
class FullRun:
    """A registered full-profile run of one chapter: its claims ``name -> (value, holds)``, when (``date``, UTC),
    where (``device``: ``cpu`` or the GPU's name), the ``seed`` and the ``commit``."""

    chapter: str
    claims: dict[str, tuple[float | None, bool]]
    date: str
    device: str
    seed: int
    commit: str | None

    def describe(self) -> str:
        return f"{self.date}, {self.device}, seed {self.seed}"


def ran_on(results: dict[str, Any]) -> str:
    """Where a results file ran: the GPU's name when one was used, else ``cpu``; ``ValueError`` when it asked for
    CUDA and names no GPU."""
    gpu = results.get("env", {}).get("gpu")
    if results.get("device") == "cpu":  # env.gpu names a GPU that was present, not one that was used
        return "cpu"
    if results.get("device") == "cuda" and not gpu:
        raise ValueError(f"{results.get('chapter')}: device cuda but no GPU named in env.gpu")
    return gpu or "cpu"


def check_full_results(results: dict[str, Any]) -> None:
    """Raise ``ValueError`` (one line) unless ``results`` may enter the registry."""
    validate_results(results)
    name = results.get("chapter")
    if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", str(name)):
        raise ValueError(f"{name!r} is not a chapter slug (lower-case words joined by hyphens)")
    if results.get("profile") != "full":
        raise ValueError(f"{name}: only full-profile results are registered, got profile {results.get('profile')!r}")
    if results.get("status") not in ("passed", "failed"):
        raise ValueError(f"{name}: the run did not reach its reproduction table (status {results.get('status')!r})")
    ran_on(results)


def register(results_file: Path | str, registry: Path | str | None = None) -> Path:
    """Copy one full-profile results file into the registry (after :func:`check_full_results`); returns its path."""
    results = read_results(results_file)
    if results is None:
        raise ValueError(f"{results_file}: no results file there")
    check_full_results(results)
    target = Path(registry or registry_dir()) / f"{results['chapter']}.json"
    write_json_atomic(target, results)
    return target


def full_run(chapter: str, registry: Path | str | None = None) -> FullRun | None:
    """The registered full run of ``chapter``, or ``None`` when there is none (or the file does not qualify)."""
    results = read_results(Path(registry or registry_dir()) / f"{chapter}.json")
    if results is None:
        return None
    try:
        check_full_results(results)
    except ValueError as err:
        warnings.warn(f"ignoring the registered full run of {chapter}: {err}", stacklevel=2)
        return None
    claims = {c["name"]: (c.get("value"), bool(c.get("holds"))) for c in results.get("claims", [])}
    return FullRun(chapter, claims, str(results.get("finished_at", ""))[:10], ran_on(results),
                   int(results.get("seed", 0)), results.get("env", {}).get("git_commit"))

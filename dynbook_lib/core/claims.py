"""Claims: a paper's statement checked by a measurement, recorded in the results file and shown as a table.

A chapter opens a :class:`ChapterRecord` once, calls :meth:`ChapterRecord.check` for every claim of its
specification as soon as the value is measured (the results file is rewritten each time, so a chapter that fails
halfway still leaves what it measured), and ends with :meth:`ChapterRecord.table`, the reproduction table.
"""

from __future__ import annotations

import html
import math
import operator
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from dynbook_lib.core.devices import check_device_name
from dynbook_lib.core.profiles import PROFILES, check_profile
from dynbook_lib.core.results import RESULTS_ENV, environment, write_json_atomic
from dynbook_lib.core.seeding import check_seed

Op = Literal["<", "<=", ">", ">="]
_OPS: dict[str, Callable[[float, float], bool]] = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass(frozen=True)
class Claim:
    """One checked claim.

    Attributes:
        name: identifier from the chapter's specification, e.g. ``"small_init_is_l1"``.
        statement: the claim in plain language.
        value: the measured number.
        op: comparison between ``value`` and ``threshold``.
        threshold: the bound the specification sets.
        holds: whether ``value op threshold``; a NaN never holds.
        paper: what the paper reports for it (figure, table or number).
        profiles: the profiles in which the claim is required to hold.
        note: why a claim is not required in some profile (e.g. not reproducible at the fast size).
    """

    name: str
    statement: str
    value: float
    op: Op
    threshold: float
    holds: bool
    paper: str
    profiles: tuple[str, ...] = PROFILES
    note: str = ""

    def required_in(self, profile: str) -> bool:
        return profile in self.profiles


def evaluate(value: float, op: str, threshold: float) -> bool:
    """``value op threshold`` with NaN never holding.

    Example:
        >>> evaluate(0.004, "<", 0.01), evaluate(float("nan"), "<", 1.0)
        (True, False)
    """
    if op not in _OPS:
        raise ValueError(f"unknown comparison {op!r}; choose one of: {', '.join(_OPS)}")
    if math.isnan(value):
        return False
    return bool(_OPS[op](value, threshold))


@dataclass
class ChapterRecord:
    """The running record of one chapter execution: its options, claims, metrics and results file.

    Args:
        chapter: the chapter slug.
        profile: ``"fast"`` or ``"full"``.
        device: the device name asked for (``auto``, ``cpu``, ``cuda``).
        seed: the run's seed.
        results_file: where to write; by default the path in ``$DYNBOOK_RESULTS_FILE`` (set by the runner), and no
            file at all in an interactive session where it is unset.
    """

    chapter: str
    profile: str
    device: str
    seed: int
    results_file: Path | None = None
    claims: list[Claim] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    _start: float = field(default_factory=time.perf_counter, repr=False)

    def __post_init__(self) -> None:
        check_profile(self.profile)
        check_device_name(self.device)
        check_seed(self.seed)
        if self.results_file is None and os.environ.get(RESULTS_ENV):
            self.results_file = Path(os.environ[RESULTS_ENV])
        self._env = environment()
        self.save()

    def check(
        self,
        name: str,
        statement: str,
        value: float,
        op: Op,
        threshold: float,
        *,
        paper: str,
        profiles: Sequence[str] = PROFILES,
        note: str = "",
    ) -> Claim:
        """Record the claim ``value op threshold`` under ``name`` and save the results file.

        ``profiles`` lists where the claim is required to hold; a claim that is not reproducible at the fast size is
        still measured and shown, with ``profiles=("full",)`` and a ``note`` that says why.
        """
        for p in profiles:
            check_profile(p)
        if any(c.name == name for c in self.claims):
            raise ValueError(f"claim {name!r} is already recorded; each claim is checked once per run")
        value = float(value)
        claim = Claim(name, statement, value, op, float(threshold), evaluate(value, op, threshold), paper,
                      tuple(profiles), note)
        self.claims.append(claim)
        self.save()
        return claim

    def metric(self, name: str, value: Any) -> None:
        """Record a measured number (or small list/dict of numbers) that is not a claim, and save."""
        self.metrics[name] = value
        self.save()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self._start

    def all_hold(self) -> bool:
        """True when every claim required in this profile holds (and at least one claim was recorded)."""
        required = [c for c in self.claims if c.required_in(self.profile)]
        return bool(required) and all(c.holds for c in required)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chapter": self.chapter,
            "profile": self.profile,
            "device": self.device,
            "seed": self.seed,
            "seconds": round(self.seconds, 3),
            "status": "running",
            "claims": [asdict(c) | {"required": c.required_in(self.profile)} for c in self.claims],
            "metrics": self.metrics,
            "env": self._env,
        }

    def save(self) -> None:
        if self.results_file is not None:
            write_json_atomic(self.results_file, self.to_dict())

    def table(self) -> "ReproductionTable":
        """The reproduction table: what the paper claims, what was measured, whether it holds."""
        return ReproductionTable(list(self.claims), self.profile)


def _fmt(x: float) -> str:
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return f"{x:.3g}" if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4) else f"{x:.4g}"


@dataclass
class ReproductionTable:
    """Displays as an HTML table in notebooks and the book, and as aligned text elsewhere."""

    claims: list[Claim]
    profile: str

    def _verdict(self, c: Claim) -> str:
        if c.holds:
            return "holds"
        return "fails" if c.required_in(self.profile) else f"not reproduced at {self.profile} size"

    def rows(self) -> list[tuple[str, ...]]:
        with_note = any(c.note for c in self.claims)
        return [
            (c.name, c.statement, c.paper, _fmt(c.value), f"{c.op} {_fmt(c.threshold)}", self._verdict(c))
            + ((c.note,) if with_note else ())
            for c in self.claims
        ]

    def _repr_html_(self) -> str:
        head = ("claim", "statement", "paper", "measured", "threshold", "verdict", "note")
        out = ['<table class="dynbook-claims">', "<thead><tr>"]
        out += [f"<th>{h}</th>" for h in head[: len(self.rows()[0]) if self.claims else 6]]
        out.append("</tr></thead><tbody>")
        for row, c in zip(self.rows(), self.claims):
            cls = "claim-holds" if c.holds else "claim-fails"
            cells = "".join(f"<td>{html.escape(x)}</td>" for x in row)
            out.append(f'<tr class="{cls}">{cells}</tr>')
        out.append("</tbody></table>")
        held = sum(c.holds for c in self.claims if c.required_in(self.profile))
        total = sum(c.required_in(self.profile) for c in self.claims)
        out.append(f"<p><b>{held}/{total}</b> claims required in the <code>{self.profile}</code> profile hold.</p>")
        return "\n".join(out)

    def __repr__(self) -> str:
        return "\n".join(f"{r[0]}: {r[3]} {r[4]} -> {r[5]}" for r in self.rows())

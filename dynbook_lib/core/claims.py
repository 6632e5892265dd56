"""Claims and consistency checks: a paper's result checked by a measurement, recorded and shown as a table.

A chapter opens a :class:`ChapterRecord` once, calls :meth:`ChapterRecord.check` for every claim of its
specification as soon as the value is measured (the results file is rewritten each time, so a chapter that fails
halfway still leaves what it measured), records what holds by construction with
:meth:`ChapterRecord.consistency`, and ends with :meth:`ChapterRecord.table`, the reproduction table (which also
marks the results file complete).

The claim standard (README, "How to add a chapter"): a claim is the paper's result, measured. It names the paper's
number (``paper_value``) beside ours; it can fail (it would fail were the paper's mechanism absent); it holds at seeds
0-4 and with 1 or 2 torch threads, clear of its threshold by more than that spread; and it is not an identity. What
holds by construction (a conserved quantity of an exact update, an ordering guaranteed by a theorem, a formula checked
against itself) is a *consistency check*: recorded, shown in its own table, never counted as a reproduced claim.
"""

from __future__ import annotations

import html
import math
import operator
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import torch

from dynbook_lib.core.devices import check_device_name
from dynbook_lib.core.profiles import CLAIM_PROFILES, check_profile
from dynbook_lib.core.registry import FullRun, full_run
from dynbook_lib.core.results import RESULTS_ENV, SCHEMA_VERSION, environment, write_json_atomic
from dynbook_lib.core.seeding import check_seed

Op = Literal["<", "<=", ">", ">="]
PaperValue = Union[float, str, None]
_OPS: dict[str, Callable[[float, float], bool]] = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass(frozen=True)
class Claim:
    """One checked claim: the paper's result, measured.

    Attributes:
        name: identifier from the chapter's specification, e.g. ``"small_init_is_l1"``.
        statement: the claim in plain language, saying what would make it fail.
        value: the measured number.
        op: comparison between ``value`` and ``threshold``.
        threshold: the bound the specification sets.
        holds: whether ``value op threshold``; a NaN never holds.
        paper: where the paper says it (author year, figure, table or section).
        paper_value: the paper's own number for the same quantity (a number, or a short text such as
            ``"slope -1"`` or ``"0.96 vs 1.25"``); ``None`` when the paper gives none.
        profiles: the profiles in which the claim is required to hold.
        note: context for the measured value, or why a claim is not required in some profile.
    """

    name: str
    statement: str
    value: float
    op: Op
    threshold: float
    holds: bool
    paper: str
    paper_value: PaperValue = None
    profiles: tuple[str, ...] = CLAIM_PROFILES
    note: str = ""

    def required_in(self, profile: str) -> bool:
        return profile in self.profiles

    def deviation(self) -> float | None:
        """Relative deviation ``(value - paper_value) / |paper_value|`` when both are finite numbers, else ``None``.

        Example:
            >>> Claim("c", "s", 1.1, "<", 2.0, True, "p", paper_value=1.0).deviation()
            0.10000000000000009
        """
        if isinstance(self.paper_value, (int, float)) and not isinstance(self.paper_value, bool):
            paper = float(self.paper_value)
            if paper != 0 and math.isfinite(paper) and math.isfinite(self.value):
                return (self.value - paper) / abs(paper)
        return None


@dataclass(frozen=True)
class ConsistencyCheck:
    """Something that holds by construction (an identity, a conserved quantity, a solver against a closed form).

    It guards the code, not the science: it is shown apart from the claims and never counted as a reproduced result,
    but a failing one fails the run, since it means the code is wrong.
    """

    name: str
    statement: str
    value: float
    op: Op
    threshold: float
    holds: bool
    note: str = ""


@dataclass(frozen=True)
class SeedSummary:
    """A claim's values over several seeds (from ``robustness.json``): held at ``held`` of ``len(values)`` seeds."""

    seeds: tuple[int, ...]
    values: tuple[float | None, ...]
    held: int

    @property
    def mean(self) -> float:
        finite = [v for v in self.values if v is not None and math.isfinite(v)]
        return sum(finite) / len(finite) if finite else math.nan

    @property
    def spread(self) -> float:
        """Half the range of the finite values (max - min) / 2."""
        finite = [v for v in self.values if v is not None and math.isfinite(v)]
        return (max(finite) - min(finite)) / 2 if finite else math.nan


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


def _check_paper_value(paper_value: object) -> PaperValue:
    if paper_value is None or isinstance(paper_value, str):
        return paper_value
    if isinstance(paper_value, (int, float)) and not isinstance(paper_value, bool):
        return float(paper_value)
    raise ValueError(f"paper_value must be a number, a short text or None, got {paper_value!r}")


def peak_memory() -> dict[str, float | None]:
    """The process's peak memory so far, in MiB: resident CPU memory (``rss_mib``, what the kernel held at most) and,
    when CUDA has been used, the most GPU memory torch allocated (``cuda_mib``; ``None`` otherwise)."""
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        rss = rss / 1024 if sys.platform == "darwin" else rss  # bytes on macOS
    except ImportError:  # Windows
        rss = None
    cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() and torch.cuda.is_initialized() \
        else None
    return {"rss_mib": None if rss is None else round(rss, 1), "cuda_mib": None if cuda is None else round(cuda, 1)}


@dataclass
class ChapterRecord:
    """The running record of one chapter execution: its options, claims, consistency checks, metrics, results file.

    Args:
        chapter: the chapter slug.
        profile: ``"fast"``, ``"full"`` or ``"smoke"``.
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
    checks: list[ConsistencyCheck] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    _start: float = field(default_factory=time.perf_counter, repr=False)
    _status: str = field(default="running", repr=False)

    def __post_init__(self) -> None:
        check_profile(self.profile)
        check_device_name(self.device)
        check_seed(self.seed)
        if self.results_file is None and os.environ.get(RESULTS_ENV):
            self.results_file = Path(os.environ[RESULTS_ENV])
        self._env = environment()
        self.save()

    def _check_new_name(self, name: str) -> None:
        if any(c.name == name for c in [*self.claims, *self.checks]):
            raise ValueError(f"{name!r} is already recorded; each claim or check is recorded once per run")

    def check(
        self,
        name: str,
        statement: str,
        value: float,
        op: Op,
        threshold: float,
        *,
        paper: str,
        paper_value: PaperValue = None,
        profiles: Sequence[str] = CLAIM_PROFILES,
        note: str = "",
    ) -> Claim:
        """Record the claim ``value op threshold`` under ``name`` and save the results file.

        ``paper_value`` is the paper's own number for the measured quantity (shown beside ours). ``profiles`` lists
        where the claim is required to hold; a claim that is not reproducible at the fast size is still measured and
        shown, with ``profiles=("full",)`` and a ``note`` that says why.
        """
        for p in profiles:
            if p not in CLAIM_PROFILES:
                raise ValueError(f"a claim can be required in the profiles {', '.join(CLAIM_PROFILES)}, got {p!r}")
        self._check_new_name(name)
        value = float(value)
        claim = Claim(name, statement, value, op, float(threshold), evaluate(value, op, threshold), paper,
                      _check_paper_value(paper_value), tuple(profiles), note)
        self.claims.append(claim)
        self.save()
        return claim

    def consistency(self, name: str, statement: str, value: float, op: Op, threshold: float, *,
                    note: str = "") -> ConsistencyCheck:
        """Record a consistency check (something that holds by construction) and save the results file."""
        self._check_new_name(name)
        value = float(value)
        check = ConsistencyCheck(name, statement, value, op, float(threshold), evaluate(value, op, threshold), note)
        self.checks.append(check)
        self.save()
        return check

    def metric(self, name: str, value: Any) -> None:
        """Record a measured number (or small list/dict of numbers) that is not a claim, and save."""
        self.metrics[name] = value
        self.save()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self._start

    def all_hold(self) -> bool:
        """True when every claim required in this profile and every consistency check holds (and a claim exists)."""
        required = [c for c in self.claims if c.required_in(self.profile)]
        return bool(required) and all(c.holds for c in required) and all(c.holds for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "chapter": self.chapter,
            "profile": self.profile,
            "device": self.device,
            "seed": self.seed,
            "seconds": round(self.seconds, 3),
            "status": self._status,
            "claims": [asdict(c) | {"profiles": list(c.profiles), "required": c.required_in(self.profile)}
                       for c in self.claims],
            "consistency": [asdict(c) for c in self.checks],
            "metrics": self.metrics,
            "env": self._env,
            "peak_memory": peak_memory(),
        }

    def save(self) -> None:
        if self.results_file is not None:
            write_json_atomic(self.results_file, self.to_dict())

    def finish(self) -> None:
        """Mark the results file complete: ``status`` becomes ``passed`` or ``failed`` and ``seconds`` the time since
        the record opened (the runner later replaces both with its own, kernel start included)."""
        self._status = "passed" if self.all_hold() else "failed"
        self.save()

    def table(self, across_seeds: Mapping[str, SeedSummary] | None = None) -> "ReproductionTable":
        """The reproduction table (and the consistency checks under it); marks the results file complete.

        ``across_seeds`` (claim name -> :class:`SeedSummary`, e.g. from :func:`seed_summaries`) adds each claim's
        mean and spread over seeds.
        """
        self.finish()
        full = full_run(self.chapter) if self.profile == "fast" else None
        return ReproductionTable(list(self.claims), self.profile, list(self.checks), dict(across_seeds or {}),
                                 full=full)


def seed_summaries(robustness: Mapping[str, Any], chapter: str) -> dict[str, SeedSummary]:
    """Per-claim :class:`SeedSummary` of ``chapter`` from a ``robustness.json`` document (see the runner)."""
    out = {}
    for name, entry in robustness.get("chapters", {}).get(chapter, {}).get("claims", {}).items():
        out[name] = SeedSummary(tuple(entry["seeds"]), tuple(entry["values"]), sum(map(bool, entry["holds"])))
    return out


def format_number(x: float | None) -> str:
    """A measured number for a table: 4 significant digits, scientific below 1e-3 and from 1e4 on.

    Example:
        >>> format_number(0.123456), format_number(2.5e-5), format_number(None)
        ('0.1235', '2.5e-05', 'n/a')
    """
    if x is None:
        return "n/a"
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return f"{x:.3g}" if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4) else f"{x:.4g}"


def _paper_text(value: PaperValue) -> str:
    if value is None:
        return "not given"
    return value if isinstance(value, str) else format_number(value)


@dataclass
class ReproductionTable:
    """Displays as an HTML table in notebooks and the book, and as aligned text elsewhere.

    Four columns that fit a laptop or phone screen: the claim (statement, with the claim's name and note in small
    print), the paper's number (and where it says so), ours (and the threshold, the deviation from the paper's number,
    the spread over seeds when known), and the verdict as a coloured badge. Consistency checks follow in a table of
    their own.
    """

    claims: list[Claim]
    profile: str
    checks: list[ConsistencyCheck] = field(default_factory=list)
    across_seeds: dict[str, SeedSummary] = field(default_factory=dict)
    full: FullRun | None = None

    def full_text(self, c: Claim) -> str | None:
        """In a fast run's table, the registered full-profile value of claim ``c`` with its date, device and seed, or
        "not yet run at full scale"; ``None`` in the other profiles' tables."""
        if self.profile != "fast":
            return None
        if self.full is None:
            return "full profile: not yet run at full scale"
        if c.name not in self.full.claims:
            return f"full profile ({self.full.describe()}): not recorded"
        value, holds = self.full.claims[c.name]
        return (f"full profile: {format_number(value)}, {'holds' if holds else 'does not hold'} "
                f"({self.full.describe()})")

    def verdict(self, c: Claim) -> str:
        if self.profile == "smoke":
            return "smoke run, not judged"
        if c.holds:
            return "holds"
        if c.required_in(self.profile):
            return "fails"
        # required in no profile: a negative finding recorded as such
        return f"not reproduced at {self.profile} size" if c.profiles else "not reproduced"

    def _ours(self, c: Claim) -> str:
        parts = [f"needs {c.op} {format_number(c.threshold)}"]
        dev = c.deviation()
        if dev is not None:
            parts.append(f"{dev:+.0%} from the paper")
        summary = self.across_seeds.get(c.name)
        if summary is not None and summary.values:
            parts.append(f"seeds {summary.held}/{len(summary.values)} hold; mean {format_number(summary.mean)} "
                         f"\u00b1 {format_number(summary.spread)}")
        full = self.full_text(c)
        if full:
            parts.append(full)
        return "; ".join(parts)

    def _repr_html_(self) -> str:
        esc = html.escape
        out = ['<table class="dynbook-claims">',
               '<colgroup><col class="c-claim"><col class="c-paper"><col class="c-ours"><col class="c-verdict">'
               "</colgroup>",
               "<thead><tr><th>claim</th><th>paper</th><th>ours</th><th>verdict</th></tr></thead><tbody>"]
        for c in self.claims:
            verdict = self.verdict(c)
            badge = "deferred" if self.profile == "smoke" else (
                "holds" if c.holds else ("fails" if verdict == "fails" else "deferred"))
            small = f"<code>{esc(c.name)}</code>" + (f" \u00b7 {esc(c.note)}" if c.note else "")
            out.append(
                f'<tr class="claim-{badge}" data-claim="{esc(c.name)}">'
                f'<td class="claim-cell" title="{esc(c.name)}"><div>{esc(c.statement)}</div>'
                f'<div class="dynbook-small">{small}</div></td>'
                f'<td class="paper-cell"><div class="dynbook-num">{esc(_paper_text(c.paper_value))}</div>'
                f'<div class="dynbook-small">{esc(c.paper)}</div></td>'
                f'<td class="ours-cell"><div class="dynbook-num">{esc(format_number(c.value))}</div>'
                f'<div class="dynbook-small">{esc(self._ours(c))}</div></td>'
                f'<td class="verdict-cell"><span class="dynbook-badge badge-{badge}">{esc(verdict)}</span></td></tr>')
        out.append("</tbody></table>")
        held = sum(c.holds for c in self.claims if c.required_in(self.profile))
        total = sum(c.required_in(self.profile) for c in self.claims)
        out.append(f"<p><b>{held}/{total}</b> claims required in the <code>{self.profile}</code> profile hold.</p>")
        if self.checks:
            out.append('<p class="dynbook-small">Consistency checks: these hold by construction (identities, '
                       "conserved quantities, a solver against a closed form); they guard the code and are not "
                       "counted as reproduced claims.</p>")
            out.append('<table class="dynbook-checks"><thead><tr><th>consistency check</th><th>value</th>'
                       "<th>verdict</th></tr></thead><tbody>")
            for k in self.checks:
                badge = "holds" if k.holds else "fails"
                small = f"<code>{esc(k.name)}</code>" + (f" \u00b7 {esc(k.note)}" if k.note else "")
                out.append(
                    f'<tr class="claim-{badge}" data-check="{esc(k.name)}"><td><div>{esc(k.statement)}</div>'
                    f'<div class="dynbook-small">{small}</div></td>'
                    f'<td><div class="dynbook-num">{esc(format_number(k.value))}</div>'
                    f'<div class="dynbook-small">needs {k.op} {esc(format_number(k.threshold))}</div></td>'
                    f'<td class="verdict-cell"><span class="dynbook-badge badge-{badge}">{badge}</span></td></tr>')
            out.append("</tbody></table>")
        return "\n".join(out)

    def __repr__(self) -> str:
        lines = [f"{c.name}: {format_number(c.value)} {c.op} {format_number(c.threshold)} -> {self.verdict(c)} "
                 f"(paper: {_paper_text(c.paper_value)})" + (f"; {self.full_text(c)}" if self.full_text(c) else "")
                 for c in self.claims]
        lines += [f"[consistency] {k.name}: {format_number(k.value)} {k.op} {format_number(k.threshold)} -> "
                  f"{'holds' if k.holds else 'fails'}" for k in self.checks]
        return "\n".join(lines)

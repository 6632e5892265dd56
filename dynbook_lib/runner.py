"""The runner: execute chapters with papermill, write their results, render the book with Jupyter Book.

``run_chapters`` executes each chosen chapter once, in a child process it can stop (every chapter is attempted even
when one fails; the first Ctrl-C or SIGTERM stops the running chapter, marks it ``interrupted`` and skips the rest),
and writes ``OUT/executed/NN-slug.ipynb`` and ``OUT/results/slug.json``. ``run_seeds`` does the same for several
seeds through an executor (this process, submitit's local pool, or Slurm) into ``OUT/seed-N/`` and aggregates the
claims into ``OUT/robustness.json``. ``build_book`` executes what is not up to date for the given options (the key
covers the chapter's source, the library, the pinned requirements and the options), stages the book tree with the
executed notebooks, and renders ``OUT/html`` with execution off and warnings as errors.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import hashlib
import html
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import nbformat

import dynbook_lib
from dynbook_lib.chapters import Chapter, written_chapters
from dynbook_lib.core.claims import SeedSummary, format_number
from dynbook_lib.core.progress import HEADLESS_ENV
from dynbook_lib.core.registry import REGISTRY_ENV, full_run, registry_dir
from dynbook_lib.data.downloads import DATA_ENV
from dynbook_lib.core.results import RESULTS_ENV, environment, read_results, write_json_atomic
from dynbook_lib.execution import NotebookJob, run_notebook

FAST_BUDGET_S = 90.0
"""The fast profile's time budget per chapter (kernel start included). A benchmark, not a test: a chapter over it is
flagged ``over budget`` in the summary and the dashboard, never failed."""

DEFAULT_TIMEOUT_S = {"fast": 1200.0, "full": 3 * 3600.0, "smoke": 1200.0}
"""Execution timeout per chapter: a chapter still running after it is stopped and reported ``timed out``."""

LIB_DIR = Path(dynbook_lib.__file__).resolve().parent
STATUS_MARKER = "<!-- dynbook:status-table -->"

Status = Literal["passed", "failed", "crashed", "timed out", "interrupted", "up to date", "not run"]

EXIT_CODES = {
    0: "every chapter ran and every required claim and consistency check held (over budget is not a failure)",
    1: "a claim or consistency check did not hold",
    2: "bad usage (unknown chapter, option or value, unwritable output folder)",
    3: "a chapter crashed (raised, wrote no results, missed a claim of its specification) or timed out",
    4: "the book did not render (dynbook build)",
    130: "interrupted (Ctrl-C or SIGTERM)",
}


@dataclass(frozen=True)
class RunOptions:
    """Options of one run: profile, device, seed, output folder, and the limits of each chapter."""

    profile: str
    device: str
    seed: int
    out: Path
    timeout_s: float | None = None
    threads: int | None = None
    budget_s: float | None = FAST_BUDGET_S

    @property
    def timeout(self) -> float:
        return self.timeout_s if self.timeout_s is not None else DEFAULT_TIMEOUT_S[self.profile]

    @property
    def budget(self) -> float | None:
        return self.budget_s if self.profile == "fast" else None


@dataclass
class Outcome:
    chapter: Chapter
    seconds: float
    held: int
    total: int
    status: Status
    error: str = ""
    over_budget: bool = False
    seed: int = 0

    @classmethod
    def not_run(cls, chapter: Chapter, seed: int) -> "Outcome":
        """A chapter skipped because an interrupt came before its turn."""
        return cls(chapter, 0.0, 0, len(chapter.claims), "not run", "skipped after an interrupt", seed=seed)

    def describe(self) -> str:
        text = self.status + (" (over budget)" if self.over_budget else "")
        return text + (f": {self.error}" if self.error else "")


# --- the key that decides "up to date" -----------------------------------------------------------------------------


def library_files(lib_dir: Path | None = None) -> list[Path]:
    """Every source file of ``dynbook_lib`` (``*.py``), in a fixed order."""
    lib = lib_dir or LIB_DIR
    return sorted(p for p in lib.rglob("*.py") if "__pycache__" not in p.parts)


def input_digest(chapter: Chapter, root: Path, opts: RunOptions, lib_dir: Path | None = None) -> str:
    """SHA-256 over what a chapter's results depend on: its source, the library's sources, the pinned requirements
    and the options (profile, device, seed, threads)."""
    h = hashlib.sha256()
    lib = lib_dir or LIB_DIR
    parts: list[tuple[str, bytes]] = [("source", chapter.source(root).read_bytes())]
    parts += [(f"lib/{p.relative_to(lib).as_posix()}", p.read_bytes()) for p in library_files(lib)]
    for name in ("requirements.txt", "pyproject.toml"):
        path = root / name
        parts.append((name, path.read_bytes() if path.exists() else b""))
    parts.append(("options", f"{opts.profile}|{opts.device}|{opts.seed}|{opts.threads}".encode()))
    if opts.profile == "fast":  # a fast chapter's table shows the registered full run: a new one re-executes it
        registered = registry_dir() / f"{chapter.slug}.json"
        parts.append(("registry", registered.read_bytes() if registered.exists() else b""))
    for name, data in parts:
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


# --- paths and checks ------------------------------------------------------------------------------------------------


def find_root() -> Path:
    """The book's root: the working directory when it holds ``_toc.yml``, else the checkout holding this package."""
    for candidate in (Path.cwd(), LIB_DIR.parent):
        if (candidate / "_toc.yml").exists() and (candidate / "notebooks").is_dir():
            return candidate
    raise ValueError("cannot find the book (a folder with _toc.yml and notebooks/); run dynbook from the repository root")


def executed_path(chapter: Chapter, out: Path) -> Path:
    return out / "executed" / f"{chapter.stem}.ipynb"


def results_path(chapter: Chapter, out: Path) -> Path:
    return out / "results" / f"{chapter.slug}.json"


def seed_folder(out: Path, seed: int) -> Path:
    """Where a multi-seed run keeps one seed's executed notebooks and results."""
    return out / f"seed-{seed}"


def check_output_folder(out: Path) -> None:
    """Create ``out/executed`` and ``out/results`` and prove they are writable; one-line ``ValueError`` if not."""
    for sub in ("executed", "results"):
        folder = out / sub
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"cannot create output folder {str(out)!r}: {err.strerror or err}") from None
        try:
            probe = folder / ".dynbook-write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise ValueError(f"cannot write to output folder {str(out)!r}: {err.strerror or err}") from None


def _summarise(results: dict[str, Any], chapter: Chapter) -> tuple[int, int, list[str]]:
    claims = results.get("claims", [])
    required = [c for c in claims if c.get("required", True)]
    held = sum(bool(c.get("holds")) for c in required)
    recorded = {c.get("name") for c in [*claims, *results.get("consistency", [])]}
    missing = [name for name in chapter.recorded_names if name not in recorded]
    return held, len(required), missing


# --- interrupts ------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM set ``stop`` instead of killing the process (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame) -> None:
        if not stop.is_set():
            print(f"\n{signal.Signals(signum).name}: stopping the running chapter ...", flush=True)
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# --- one chapter ---------------------------------------------------------------------------------------------------


def _child_env(opts: RunOptions, results_file: Path) -> dict[str, str]:
    env = {**os.environ, RESULTS_ENV: str(results_file.resolve()), HEADLESS_ENV: "1", "PYTHONUNBUFFERED": "1"}
    # the kernel runs in notebooks/: paths given relative to where dynbook was called are made absolute, and the
    # downloads default to data/ there (not notebooks/data/)
    env[DATA_ENV] = str(Path(env.get(DATA_ENV) or "data").resolve())
    if env.get(REGISTRY_ENV):
        env[REGISTRY_ENV] = str(Path(env[REGISTRY_ENV]).resolve())
    if opts.threads is not None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(opts.threads)
    return env


def execute_chapter(chapter: Chapter, opts: RunOptions, root: Path, stop: threading.Event | None = None,
                    echo=print) -> Outcome:
    """Execute one chapter in a child process and finalise its results file. Never raises for a chapter error."""
    stop = stop or threading.Event()
    out_nb, out_res = executed_path(chapter, opts.out), results_path(chapter, opts.out)
    out_res.unlink(missing_ok=True)  # a stale success must never outlive a new attempt
    job = NotebookJob(
        source=str(chapter.source(root)), output=str(out_nb),
        parameters={"profile": opts.profile, "device": opts.device, "seed": opts.seed},
        cwd=str(root / "notebooks"), label=f"{chapter.slug} (seed {opts.seed})", cell_timeout_s=opts.timeout)
    child = run_notebook(job, _child_env(opts, out_res), opts.timeout, stop, echo=echo)

    results = read_results(out_res)
    error = child.error
    if results is None:
        results = {"chapter": chapter.slug, "profile": opts.profile, "device": opts.device, "seed": opts.seed,
                   "claims": [], "consistency": [], "metrics": {}, "env": environment(), "schema_version": 2}
        error = error or "the chapter wrote no results file"
    held, total, missing = _summarise(results, chapter)
    status: Status
    if child.kind in ("timed out", "interrupted"):
        status = child.kind
    elif error:
        status = "crashed"
    elif missing:
        status, error = "crashed", f"claims or checks of the specification not recorded: {', '.join(missing)}"
    elif opts.profile == "smoke":  # the full code path ran and recorded every claim: what a smoke run checks
        status = "passed"
    elif total == 0:
        status, error = "crashed", "the chapter recorded no claim"
    else:
        failed_checks = [c["name"] for c in results.get("consistency", []) if not c.get("holds")]
        if held < total or failed_checks:
            status = "failed"
            error = "; ".join(filter(None, [f"{total - held} of {total} claims do not hold" if held < total else "",
                                            f"consistency checks fail: {', '.join(failed_checks)}" if failed_checks
                                            else ""]))
        else:
            status = "passed"
    budget = opts.budget
    over = budget is not None and child.seconds > budget
    results.update(
        seconds=round(child.seconds, 2),
        status=status,
        error=error or None,
        budget_s=budget,
        over_budget=over,
        input_sha256=input_digest(chapter, root, opts),
        finished_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    write_json_atomic(out_res, results)
    return Outcome(chapter, child.seconds, held, total, status, error, over, opts.seed)


def is_up_to_date(chapter: Chapter, opts: RunOptions, root: Path, lib_dir: Path | None = None) -> bool:
    """True when the chapter already passed for these options from the current source, library and requirements."""
    res = read_results(results_path(chapter, opts.out))
    return (
        res is not None
        and executed_path(chapter, opts.out).exists()
        and res.get("status") == "passed"
        and res.get("input_sha256") == input_digest(chapter, root, opts, lib_dir)
    )


def run_chapters(chapters: list[Chapter], opts: RunOptions, root: Path, *, skip_up_to_date: bool = False,
                 stop: threading.Event | None = None, jobs: int = 1) -> list[Outcome]:
    """Execute ``chapters``, ``jobs`` at a time (each in its own child process; default one after the other); a
    failure in one never stops the next, an interrupt stops all. Outcomes come back in the order of ``chapters``."""
    if jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs}")
    check_output_folder(opts.out)
    stop = stop or threading.Event()

    def attempt(k: int, chapter: Chapter) -> Outcome:
        if stop.is_set():
            return Outcome.not_run(chapter, opts.seed)
        if skip_up_to_date and is_up_to_date(chapter, opts, root):
            res = read_results(results_path(chapter, opts.out)) or {}
            held, total, _ = _summarise(res, chapter)
            print(f"{chapter.slug}: up to date, not executed again", flush=True)
            return Outcome(chapter, float(res.get("seconds", 0.0)), held, total, "up to date",
                           over_budget=bool(res.get("over_budget")), seed=opts.seed)
        print(f"[{k}/{len(chapters)}] {chapter.slug}: executing ({opts.profile}, {opts.device}, seed {opts.seed}) "
              "...", flush=True)
        outcome = execute_chapter(chapter, opts, root, stop)
        print(f"{chapter.slug}: {outcome.describe()} in {outcome.seconds:.1f} s", flush=True)
        return outcome

    with stop_on_signals(stop):
        if jobs == 1:
            return [attempt(k, chapter) for k, chapter in enumerate(chapters, start=1)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(attempt, k, chapter) for k, chapter in enumerate(chapters, start=1)]
            # wait in short steps: the main thread must stay free to take Ctrl-C and SIGTERM
            while not all(f.done() for f in futures):
                concurrent.futures.wait(futures, timeout=0.2)
            return [f.result() for f in futures]


# --- summaries and exit codes ----------------------------------------------------------------------------------------


def _table(rows: list[tuple[str, ...]], right: Sequence[int] = ()) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(f"{c:>{w}}" if i in right else f"{c:<{w}}" for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def summary_table(outcomes: list[Outcome]) -> str:
    multi = len({o.seed for o in outcomes}) > 1
    head = ("chapter",) + (("seed",) if multi else ()) + ("seconds", "claims held", "status")
    rows = [head] + [(o.chapter.slug,) + ((str(o.seed),) if multi else ())
                     + (f"{o.seconds:.1f}", f"{o.held}/{o.total}", o.describe()) for o in outcomes]
    return _table(rows, right=(2, 3) if multi else (1, 2))


def all_passed(outcomes: list[Outcome]) -> bool:
    return all(o.status in ("passed", "up to date") for o in outcomes)


def exit_code(outcomes: list[Outcome], render_code: int = 0) -> int:
    """The command's exit status from its outcomes (see :data:`EXIT_CODES`)."""
    statuses = {o.status for o in outcomes}
    if statuses & {"interrupted", "not run"}:
        return 130
    if statuses & {"crashed", "timed out"}:
        return 3
    if render_code != 0:
        return 4
    return 0 if all_passed(outcomes) else 1


# --- several seeds -------------------------------------------------------------------------------------------------


def robustness(chapters: list[Chapter], out: Path, seeds: Sequence[int], opts: RunOptions) -> dict[str, Any]:
    """Aggregate ``OUT/seed-N/results/*.json`` into the robustness document: per chapter and claim, the value and
    verdict at every seed."""
    doc: dict[str, Any] = {"schema_version": 1, "profile": opts.profile, "device": opts.device, "threads": opts.threads,
                           "seeds": list(seeds), "created": datetime.datetime.now(datetime.timezone.utc)
                           .isoformat(timespec="seconds"), "chapters": {}}
    for chapter in chapters:
        entry: dict[str, Any] = {"status": {}, "seconds": {}, "claims": {}, "consistency": {}}
        for seed in seeds:
            res = read_results(results_path(chapter, seed_folder(out, seed))) or {}
            entry["status"][str(seed)] = res.get("status", "not run")
            entry["seconds"][str(seed)] = res.get("seconds")
            for kind in ("claims", "consistency"):
                for c in res.get(kind, []):
                    e = entry[kind].setdefault(c["name"], {"statement": c["statement"], "op": c["op"],
                                                           "threshold": c["threshold"], "seeds": [], "values": [],
                                                           "holds": []})
                    if kind == "claims":
                        e.update(required=c.get("required", True), paper_value=c.get("paper_value"),
                                 profiles=c.get("profiles"))
                    e["seeds"].append(seed)
                    e["values"].append(c["value"])
                    e["holds"].append(bool(c["holds"]))
        doc["chapters"][chapter.slug] = entry
    return doc


def claim_margin_is_clear(values: Sequence[float | None], threshold: float, reference: float | None) -> bool:
    """The claim standard's robustness margin: the reference value (seed 0) is farther from the threshold than the
    spread (max - min) of the values over seeds and threads.

    Example:
        >>> claim_margin_is_clear([1.0, 1.2, 1.1], 2.0, 1.0), claim_margin_is_clear([1.0, 1.9], 2.0, 1.9)
        (True, False)
    """
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if reference is None or not math.isfinite(reference) or len(finite) < len(values):
        return False
    return abs(reference - threshold) > max(finite) - min(finite)


def _summary(entry: dict[str, Any]) -> SeedSummary:
    return SeedSummary(tuple(entry["seeds"]), tuple(entry["values"]), sum(map(bool, entry["holds"])))


def robustness_table(doc: dict[str, Any]) -> str:
    """Per claim: held at k/N seeds, mean and spread (half the range) of the value, the threshold, and whether seed
    0's value is clear of the threshold by more than the spread."""
    rows: list[tuple[str, ...]] = [("chapter", "claim", "held", "mean", "+-", "threshold", "clear")]
    for slug, entry in doc["chapters"].items():
        for name, c in entry["claims"].items():
            summary = _summary(c)
            ref = c["values"][c["seeds"].index(0)] if 0 in c["seeds"] else c["values"][0]
            clear = claim_margin_is_clear(c["values"], c["threshold"], ref)
            scope = "" if c.get("required", True) else (
                " (full only)" if c.get("profiles") else " (not required: a negative finding)")
            held = f"{sum(c['holds'])}/{len(c['holds'])}" + scope
            rows.append((slug, name, held, format_number(summary.mean), format_number(summary.spread),
                         f"{c['op']} {format_number(c['threshold'])}", "yes" if clear else "NO"))
    return _table(rows, right=(3, 4))


def run_seeds(chapters: list[Chapter], opts: RunOptions, root: Path, seeds: Sequence[int], executor) -> list[Outcome]:
    """Run every chapter at every seed through ``executor`` (see :mod:`dynbook_lib.executors`), each seed into
    ``OUT/seed-N``, then write ``OUT/robustness.json``."""
    check_output_folder(opts.out)
    jobs = [(chapter, replace(opts, seed=seed, out=seed_folder(opts.out, seed))) for seed in seeds for chapter in chapters]
    for _, job_opts in jobs:
        check_output_folder(job_opts.out)
    outcomes = executor.run(jobs, root)
    write_json_atomic(opts.out / "robustness.json", robustness(chapters, opts.out, seeds, opts))
    return outcomes


# --- the dashboard (status page) -------------------------------------------------------------------------------------


def _full_cell(chapter: Chapter) -> str:
    """The status page's cell for the registered full-profile run: claims held, date, device, seed; or "none yet"."""
    run = full_run(chapter.slug)
    if run is None:
        return "none yet"
    held = sum(holds for _, holds in run.claims.values())
    return f"{held}/{len(run.claims)} claims hold ({run.describe()})"


def status_markdown(chapters: list[Chapter], out: Path) -> str:
    """The status page: per chapter a link, run date, options, seconds against the budget, claims held and status;
    the environment once; the robustness over seeds when ``OUT/robustness.json`` exists."""
    lines = ["| chapter | run | seconds | claims | status | full profile |", "|---|---|---|---|---|---|"]
    envs = []
    for chapter in chapters:
        link = f"[{chapter.number:02d} {chapter.title}](../notebooks/{chapter.stem}.ipynb)"
        res = read_results(results_path(chapter, out))
        if res is None or not executed_path(chapter, out).exists():
            lines.append(f"| {chapter.number:02d} {chapter.title} | | | | not run | {_full_cell(chapter)} |")
            continue
        held, total, _ = _summarise(res, chapter)
        when = str(res.get("finished_at", ""))[:10]
        budget = res.get("budget_s")
        secs = f"{res.get('seconds', 0):.1f}"
        if budget:
            secs += f" (over the {budget:.0f} s budget)" if res.get("over_budget") else f" (budget {budget:.0f} s)"
        lines.append(f"| {link} | {when}, {res.get('profile')}, {res.get('device')}, seed {res.get('seed')} | {secs} "
                     f"| {held}/{total} | {res.get('status')} | {_full_cell(chapter)} |")
        envs.append(res.get("env", {}))
    if envs:
        e = envs[0]
        same = all(x.get("git_commit") == e.get("git_commit") and x.get("torch") == e.get("torch") for x in envs)
        lines += ["", f"Environment{'' if same else ' (of the first chapter; others differ)'}: Python {e.get('python')}, "
                  f"torch {e.get('torch')} ({e.get('threads')} threads), dynbook_lib {e.get('dynbook_lib')}, commit "
                  f"`{str(e.get('git_commit'))[:10]}`, GPU {e.get('gpu') or 'none'}."]
    rob = read_results(out / "robustness.json")
    if rob:
        lines += ["", f"### Robustness over seeds {', '.join(map(str, rob['seeds']))}", "",
                  "| chapter | claim | held | mean | spread | threshold |", "|---|---|---|---|---|---|"]
        for slug, entry in rob["chapters"].items():
            for name, c in entry["claims"].items():
                summary = _summary(c)
                lines.append(f"| {slug} | `{name}` | {summary.held}/{len(summary.values)} | {format_number(summary.mean)} | "
                             f"\u00b1 {format_number(summary.spread)} | {html.escape(c['op'])} {format_number(c['threshold'])} |")
    return "\n".join(lines)


# --- rendering -----------------------------------------------------------------------------------------------------


def _stage_notebook(executed: Path, target: Path) -> None:
    """Copy an executed notebook for rendering, showing the parameters the run used (papermill's injected cell)
    instead of the notebook's defaults."""
    nb = nbformat.read(executed, as_version=4)
    tags = [c.get("metadata", {}).get("tags", []) for c in nb.cells]
    if any("injected-parameters" in t for t in tags):
        for cell, cell_tags in zip(nb.cells, tags):
            if "parameters" in cell_tags:
                cell.setdefault("metadata", {})["tags"] = [*cell_tags, "remove-cell"]
    nbformat.write(nb, target)


def _stub_page(chapter: Chapter) -> str:
    """The page that stands in for a chapter this build did not execute, so that links to it still resolve."""
    return (f"# {chapter.number:02d} {chapter.title}\n\nThis chapter was not executed in this build, so its page is "
            f"empty. `dynbook build {chapter.slug}` (or `dynbook build`, for every chapter) executes and renders "
            f"it.\n")


def stage_book(chapters: list[Chapter], out: Path, root: Path) -> Path:
    """Copy the book tree into ``out/_stage`` with the executed notebooks in ``notebooks/`` and no sources. A chapter
    without an executed notebook gets a stub page saying how to build it: the table of contents stays whole and the
    chapters' links to one another resolve in a partial build."""
    stage = out / "_stage"
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "notebooks").mkdir(parents=True)
    shutil.copy2(root / "_config.yml", stage / "_config.yml")
    shutil.copy2(root / "_toc.yml", stage / "_toc.yml")
    shutil.copytree(root / "book", stage / "book")
    for chapter in chapters:
        executed = executed_path(chapter, out)
        if executed.exists():
            _stage_notebook(executed, stage / "notebooks" / executed.name)
        else:
            (stage / "notebooks" / f"{chapter.stem}.md").write_text(_stub_page(chapter))
    status = stage / "book" / "status.md"
    status.write_text(status.read_text().replace(STATUS_MARKER, status_markdown(chapters, out)))
    return stage


def render_book(stage: Path, out: Path) -> int:
    """Render ``stage`` to ``out/html`` with Jupyter Book: execution off, ``-W -n --keep-going``."""
    work = out / "_jupyter_book"
    shutil.rmtree(work, ignore_errors=True)
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(stage), "--path-output",
           str(work), "--builder", "html", "-W", "-n", "--keep-going"]
    print("rendering the book: jupyter-book", " ".join(cmd[3:]), flush=True)
    code = subprocess.run(cmd).returncode
    html_dir = out / "html"
    shutil.rmtree(html_dir, ignore_errors=True)
    built = work / "_build" / "html"
    if built.exists():
        shutil.move(str(built), str(html_dir))
    return code


def build_book(chapters: list[Chapter], opts: RunOptions, root: Path, jobs: int = 1) -> tuple[list[Outcome], int]:
    """Execute what is not up to date (``jobs`` chapters at a time), then render the book: every written chapter
    with an executed notebook, a stub page for the others (:func:`stage_book`)."""
    outcomes = run_chapters(chapters, opts, root, skip_up_to_date=True, jobs=jobs)
    if any(o.status in ("interrupted", "not run") for o in outcomes):
        return outcomes, 0
    stage = stage_book(written_chapters(root), opts.out, root)
    return outcomes, render_book(stage, opts.out)


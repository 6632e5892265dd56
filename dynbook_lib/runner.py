"""The runner: execute chapters with papermill, write their results, render the book with Jupyter Book.

``run_chapters`` executes each chosen chapter once (every chapter is attempted even when one fails) and writes
``OUT/executed/NN-slug.ipynb`` and ``OUT/results/slug.json``. ``build_book`` executes what is not yet executed for the
given options, stages the book tree with the executed notebooks, and renders ``OUT/html`` with execution off and
warnings as errors.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynbook_lib.chapters import Chapter, written_chapters
from dynbook_lib.core.progress import HEADLESS_ENV
from dynbook_lib.core.results import RESULTS_ENV, environment, read_results, write_json_atomic

FAST_BUDGET_S = 90.0
"""A fast-profile chapter that takes longer than this (kernel start included) fails."""

STATUS_MARKER = "<!-- dynbook:status-table -->"


@dataclass(frozen=True)
class RunOptions:
    profile: str
    device: str
    seed: int
    out: Path


@dataclass
class Outcome:
    chapter: Chapter
    seconds: float
    held: int
    total: int
    status: str  # "passed", "failed" or "up to date"
    error: str = ""


def find_root() -> Path:
    """The book's root: the working directory when it holds ``_toc.yml``, else the checkout holding this package."""
    for candidate in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (candidate / "_toc.yml").exists() and (candidate / "notebooks").is_dir():
            return candidate
    raise ValueError("cannot find the book (a folder with _toc.yml and notebooks/); run dynbook from the repository root")


def source_digest(chapter: Chapter, root: Path) -> str:
    return hashlib.sha256(chapter.source(root).read_bytes()).hexdigest()


def executed_path(chapter: Chapter, out: Path) -> Path:
    return out / "executed" / f"{chapter.stem}.ipynb"


def results_path(chapter: Chapter, out: Path) -> Path:
    return out / "results" / f"{chapter.slug}.json"


def check_output_folder(out: Path) -> None:
    """Create ``out/executed`` and ``out/results`` and prove they are writable; one-line ``ValueError`` if not."""
    try:
        for sub in ("executed", "results"):
            folder = out / sub
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / ".dynbook-write-test"
            probe.write_text("")
            probe.unlink()
    except OSError as err:
        raise ValueError(f"cannot write to output folder {str(out)!r}: {err.strerror or err}") from None


def _first_line(err: BaseException) -> str:
    ename = getattr(err, "ename", None)
    evalue = getattr(err, "evalue", None)
    if ename:
        return f"{ename}: {evalue}".splitlines()[0]
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}"


def _summarise(results: dict[str, Any], chapter: Chapter, profile: str) -> tuple[int, int, list[str]]:
    claims = results.get("claims", [])
    required = [c for c in claims if c.get("required", True)]
    held = sum(bool(c.get("holds")) for c in required)
    recorded = {c.get("name") for c in claims}
    missing = [name for name in chapter.claims if name not in recorded]
    return held, len(required), missing


def execute_chapter(chapter: Chapter, opts: RunOptions, root: Path) -> Outcome:
    """Execute one chapter with papermill and finalise its results file. Never raises for a chapter error."""
    import jupytext
    import papermill

    out_nb, out_res = executed_path(chapter, opts.out), results_path(chapter, opts.out)
    out_res.unlink(missing_ok=True)  # a stale success must never outlive a new attempt
    env_before = {k: os.environ.get(k) for k in (RESULTS_ENV, HEADLESS_ENV)}
    os.environ[RESULTS_ENV] = str(out_res.resolve())
    os.environ[HEADLESS_ENV] = "1"
    error = ""
    start = time.perf_counter()
    try:
        notebook = jupytext.read(chapter.source(root))
        papermill.execute_notebook(
            notebook,
            str(out_nb),
            parameters={"profile": opts.profile, "device": opts.device, "seed": opts.seed},
            kernel_name="python3",
            cwd=str(root / "notebooks"),
            progress_bar=False,
            log_output=False,
        )
    except Exception as err:  # papermill's execution errors and anything around them
        error = _first_line(err)
    finally:
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    seconds = time.perf_counter() - start

    results = read_results(out_res)
    if results is None:
        results = {"chapter": chapter.slug, "profile": opts.profile, "device": opts.device, "seed": opts.seed,
                   "claims": [], "metrics": {}, "env": environment()}
        error = error or "the chapter wrote no results file"
    held, total, missing = _summarise(results, chapter, opts.profile)
    if not error and missing:
        error = f"claims of the specification not recorded: {', '.join(missing)}"
    if not error and opts.profile == "fast" and seconds > FAST_BUDGET_S:
        error = f"took {seconds:.0f} s, over the {FAST_BUDGET_S:.0f} s budget of the fast profile"
    if not error and total == 0:
        error = "the chapter recorded no claim"
    ok = not error and held == total
    results.update(
        seconds=round(seconds, 2),
        status="passed" if ok else "failed",
        error=error or (None if ok else f"{total - held} of {total} claims do not hold"),
        source_sha256=source_digest(chapter, root),
    )
    write_json_atomic(out_res, results)
    return Outcome(chapter, seconds, held, total, results["status"], results["error"] or "")


def is_up_to_date(chapter: Chapter, opts: RunOptions, root: Path) -> bool:
    """True when the chapter already passed for these options from the current source."""
    res = read_results(results_path(chapter, opts.out))
    return (
        res is not None
        and executed_path(chapter, opts.out).exists()
        and res.get("status") == "passed"
        and (res.get("profile"), res.get("device"), res.get("seed")) == (opts.profile, opts.device, opts.seed)
        and res.get("source_sha256") == source_digest(chapter, root)
    )


def run_chapters(chapters: list[Chapter], opts: RunOptions, root: Path, *, skip_up_to_date: bool = False) -> list[Outcome]:
    """Execute ``chapters`` one after the other; a failure in one never stops the next."""
    check_output_folder(opts.out)
    outcomes = []
    for chapter in chapters:
        if skip_up_to_date and is_up_to_date(chapter, opts, root):
            res = read_results(results_path(chapter, opts.out)) or {}
            held, total, _ = _summarise(res, chapter, opts.profile)
            outcomes.append(Outcome(chapter, float(res.get("seconds", 0.0)), held, total, "up to date"))
            print(f"{chapter.slug}: up to date, not executed again", flush=True)
            continue
        print(f"{chapter.slug}: executing ({opts.profile}, {opts.device}, seed {opts.seed}) ...", flush=True)
        outcome = execute_chapter(chapter, opts, root)
        print(f"{chapter.slug}: {outcome.status} in {outcome.seconds:.1f} s"
              + (f" ({outcome.error})" if outcome.error else ""), flush=True)
        outcomes.append(outcome)
    return outcomes


def summary_table(outcomes: list[Outcome]) -> str:
    rows = [("chapter", "seconds", "claims held", "status")]
    rows += [(o.chapter.slug, f"{o.seconds:.1f}", f"{o.held}/{o.total}", o.status + (f": {o.error}" if o.error else ""))
             for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}" for r in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def all_passed(outcomes: list[Outcome]) -> bool:
    return all(o.status in ("passed", "up to date") for o in outcomes)


def status_markdown(chapters: list[Chapter], out: Path) -> str:
    """The status page's table: each chapter's last run, its claims and its environment."""
    lines = ["| chapter | profile | device | seconds | claims held | status | environment |",
             "|---|---|---|---|---|---|---|"]
    for chapter in chapters:
        res = read_results(results_path(chapter, out))
        if res is None:
            lines.append(f"| {chapter.number:02d} {chapter.title} | | | | | not run | |")
            continue
        held, total, _ = _summarise(res, chapter, res.get("profile", ""))
        env = res.get("env", {})
        env_text = (f"Python {env.get('python')}, torch {env.get('torch')}, dynbook_lib {env.get('dynbook_lib')}, "
                    f"commit {str(env.get('git_commit'))[:10]}, GPU {env.get('gpu') or 'none'}")
        lines.append(f"| {chapter.number:02d} {chapter.title} | {res.get('profile')} | {res.get('device')} | "
                     f"{res.get('seconds', 0):.1f} | {held}/{total} | {res.get('status')} | {env_text} |")
    return "\n".join(lines)


def _stage_notebook(executed: Path, target: Path) -> None:
    """Copy an executed notebook for rendering, showing the parameters the run used (papermill's injected cell)
    instead of the notebook's defaults."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    tags = [c.get("metadata", {}).get("tags", []) for c in nb.cells]
    if any("injected-parameters" in t for t in tags):
        for cell, cell_tags in zip(nb.cells, tags):
            if "parameters" in cell_tags:
                cell.setdefault("metadata", {})["tags"] = [*cell_tags, "remove-cell"]
    nbformat.write(nb, target)


def _toc_without(toc_path: Path, files: set[str]) -> str:
    """The table of contents with ``files`` left out, and any part they leave empty."""
    import yaml

    toc = yaml.safe_load(toc_path.read_text())
    parts = []
    for part in toc.get("parts", []):
        kept = [entry for entry in part.get("chapters", []) if entry.get("file") not in files]
        if kept:
            parts.append({**part, "chapters": kept})
    toc["parts"] = parts
    return yaml.safe_dump(toc, sort_keys=False)


def stage_book(chapters: list[Chapter], out: Path, root: Path) -> Path:
    """Copy the book tree into ``out/_stage`` with the executed notebooks in ``notebooks/`` and no sources."""
    stage = out / "_stage"
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "notebooks").mkdir(parents=True)
    shutil.copy2(root / "_config.yml", stage / "_config.yml")
    shutil.copytree(root / "book", stage / "book")
    missing = set()
    for chapter in chapters:
        executed = executed_path(chapter, out)
        if executed.exists():
            _stage_notebook(executed, stage / "notebooks" / executed.name)
        else:
            missing.add(f"notebooks/{chapter.stem}")
    (stage / "_toc.yml").write_text(_toc_without(root / "_toc.yml", missing))
    status = stage / "book" / "status.md"
    status.write_text(status.read_text().replace(STATUS_MARKER, status_markdown(chapters, out)))
    return stage


def render_book(stage: Path, out: Path) -> int:
    """Render ``stage`` to ``out/html`` with Jupyter Book: execution off, ``-W -n --keep-going``."""
    work = out / "_jupyter_book"
    shutil.rmtree(work, ignore_errors=True)
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(stage), "--path-output", str(work),
           "--builder", "html", "-W", "-n", "--keep-going"]
    print("rendering the book: jupyter-book", " ".join(cmd[3:]), flush=True)
    code = subprocess.run(cmd).returncode
    html = out / "html"
    shutil.rmtree(html, ignore_errors=True)
    built = work / "_build" / "html"
    if built.exists():
        shutil.move(str(built), str(html))
    return code


def build_book(chapters: list[Chapter], opts: RunOptions, root: Path) -> tuple[list[Outcome], int]:
    """Execute what is not up to date, then render every written chapter that has an executed notebook."""
    outcomes = run_chapters(chapters, opts, root, skip_up_to_date=True)
    stage = stage_book(written_chapters(root), opts.out, root)
    return outcomes, render_book(stage, opts.out)

"""End to end: every chapter through ``dynbook build`` in the fast profile, its claims, determinism (nbval and the
results files), the strict render, and the rendered pages in headless Chromium.

The build runs once per session (``built_book``); each test reads what it produced.
"""

import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dynbook_lib.chapters import written_chapters
from dynbook_lib.core.results import read_results
from dynbook_lib.runner import FAST_BUDGET_S
from conftest import ROOT

pytestmark = pytest.mark.book

WRITTEN = written_chapters(ROOT)
OPTIONS = ["--profile", "fast", "--device", "cpu", "--seed", "0"]


def dynbook(*args, timeout=1800):
    return subprocess.run([sys.executable, "-m", "dynbook_lib", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def built_book(tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    proc = dynbook("build", *OPTIONS, "--out", str(out))
    return out, proc


def test_build_succeeds_and_prints_a_summary(built_book):
    out, proc = built_book
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = proc.stdout[proc.stdout.index("chapter "):]
    for chapter in WRITTEN:
        assert re.search(rf"^{chapter.slug}\s+[\d.]+\s+(\d+)/\1\s+passed$", summary, flags=re.M), summary
    assert (out / "html" / "index.html").exists()


@pytest.mark.parametrize("chapter", WRITTEN, ids=lambda c: c.slug)
def test_chapter_claims_hold_within_the_fast_budget(built_book, chapter):
    out, _ = built_book
    res = read_results(out / "results" / f"{chapter.slug}.json")
    assert res is not None and (out / "executed" / f"{chapter.stem}.ipynb").exists()
    assert (res["chapter"], res["profile"], res["device"], res["seed"]) == (chapter.slug, "fast", "cpu", 0)
    assert res["status"] == "passed" and res["error"] is None
    assert res["seconds"] <= FAST_BUDGET_S
    recorded = {c["name"]: c for c in res["claims"]}
    assert set(chapter.claims) <= set(recorded), f"missing claims: {set(chapter.claims) - set(recorded)}"
    for name in chapter.claims:
        claim = recorded[name]
        assert claim["required"] and claim["holds"], claim
    assert set(res["env"]) == {"python", "torch", "dynbook_lib", "git_commit", "gpu"}


def test_each_chapter_executes_once_per_build(built_book):
    out, proc = built_book
    for chapter in WRITTEN:
        assert proc.stdout.count(f"{chapter.slug}: executing") == 1
    executed = {c: (out / "executed" / f"{c.stem}.ipynb").read_bytes() for c in WRITTEN}
    again = dynbook("build", *OPTIONS, "--out", str(out))
    assert again.returncode == 0, again.stdout[-2000:]
    for chapter in WRITTEN:
        assert f"{chapter.slug}: up to date, not executed again" in again.stdout
        assert "executing" not in again.stdout
        assert (out / "executed" / f"{chapter.stem}.ipynb").read_bytes() == executed[chapter]


def test_same_seed_gives_the_same_results_file(built_book, tmp_path):
    out, _ = built_book
    proc = dynbook("run", *OPTIONS, "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:]
    for chapter in WRITTEN:
        first = read_results(out / "results" / f"{chapter.slug}.json")
        second = read_results(tmp_path / "results" / f"{chapter.slug}.json")
        for res in (first, second):
            res.pop("seconds")
        assert first == second


def test_executed_notebooks_reproduce_under_nbval(built_book, tmp_path):
    out, _ = built_book
    env = {**os.environ, "DYNBOOK_HEADLESS": "1"}
    env.pop("DYNBOOK_RESULTS_FILE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", "-p", "no:cacheprovider", "-q", "--rootdir", str(tmp_path),
         "--nbval-sanitize-with", str(ROOT / "tests" / "nbval_sanitize.cfg"), str(out / "executed")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert re.search(r"(\d+) passed", proc.stdout)


def chapter_page(out, chapter):
    return (out / "html" / "notebooks" / f"{chapter.stem}.html").read_text()


@pytest.mark.parametrize("chapter", WRITTEN, ids=lambda c: c.slug)
def test_rendered_page_has_figures_table_widget_colab_and_references(built_book, chapter):
    out, _ = built_book
    page = chapter_page(out, chapter)
    figures = re.findall(r'<img[^>]+src="(\.\./_images/[^"]+\.png)"', page)
    assert len(figures) >= 2 and all((out / "html" / "notebooks" / f).exists() for f in figures)
    assert 'class="dynbook-claims"' in page
    for name in chapter.claims:
        assert f"<td>{name}</td>" in page
    assert page.count("<td>holds</td>") >= len(chapter.claims) and "<td>fails</td>" not in page
    assert "application/vnd.jupyter.widget-state+json" in page
    assert "application/vnd.jupyter.widget-view+json" in page
    assert f"colab.research.google.com/github/dynbook/dynbook/blob/main/notebooks/{chapter.stem}.ipynb" in page
    for src in re.findall(r'<script[^>]+src="([^"]+)"', page):
        assert not src.startswith(("http:", "https:", "//")), f"{src} is not served by the book itself"
    refs = set(re.findall(r'href="#(footcite-[^"]+)"', page))
    assert refs and all(f'id="{r}"' in page for r in refs), "a footnote citation has no definition"


def test_status_page_lists_each_chapter_run(built_book):
    out, _ = built_book
    page = (out / "html" / "book" / "status.html").read_text()
    for chapter in WRITTEN:
        row = re.search(rf"<td><p>{chapter.number:02d} {re.escape(chapter.title)}</p></td>(.*?)</tr>", page, re.S)
        assert row, f"no status row for {chapter.slug}"
        cells = re.findall(r"<td><p>(.*?)</p></td>", row.group(1), re.S)
        assert cells[0] == "fast" and cells[1] == "cpu" and cells[4] == "passed"
        assert re.fullmatch(r"(\d+)/\1", cells[3]) and "torch" in cells[5]


@contextlib.contextmanager
def serve(folder: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def chromium(url: str, user_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    assert binary, "Debian's chromium is not installed: run `make test`, which installs it"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={user_dir}",
             "--virtual-time-budget=20000"]
    return subprocess.run([binary, *flags, *extra, url], capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("chapter", WRITTEN, ids=lambda c: c.slug)
def test_chapter_page_in_headless_chromium(built_book, chapter, tmp_path):
    out, _ = built_book
    with serve(out / "html") as base:
        url = f"{base}/notebooks/{chapter.stem}.html"
        dom = chromium(url, tmp_path / "profile", "--dump-dom").stdout
        chromium(url, tmp_path / "profile2", "--window-size=1300,9000",
                 f"--screenshot={out / f'{chapter.stem}.png'}")
    # the widget was drawn from its saved state by the self-hosted JavaScript: controls and the figure inside
    assert re.search(r'class="[^"]*widget-slider', dom), "the widget's slider was not rendered"
    output = dom[dom.index("widget-output"):]
    assert re.search(r'<img[^>]+src="data:image/png;base64,', output), "the widget's figure was not rendered"
    assert re.search(r'<img[^>]+src="\.\./_images/[^"]+\.png"', dom)
    assert 'class="dynbook-claims"' in dom and all(name in dom for name in chapter.claims)
    assert "<mjx-container" in dom, "MathJax did not typeset the page"
    assert (out / f"{chapter.stem}.png").stat().st_size > 50_000

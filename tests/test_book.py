"""End to end: every chapter through ``dynbook build`` in the fast profile, its claims, determinism (a same-seed
re-run compared with the build: results files and sanitised text outputs), the strict render, and the rendered pages
in headless Chromium.

The build runs once per session (``built_book``), two chapters at a time with one thread each, with every explorer
checking its knobs; each test reads what it produced. The same-seed re-run (also two at a time, one thread each, so
it is compared with a run under the same settings) covers a third of the chapters, rotating with the commit
(``DYNBOOK_RERUN=all`` re-runs every chapter; so does ``pytest --nbval`` over ``OUT/executed``, see the README), and
Chromium opens every page at two widths in one launch, so that ``make test`` stays under 15 minutes on 2 cores.
"""

import configparser
import contextlib
import functools
import hashlib
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
import pytest

from dynbook_lib.chapters import written_chapters
from dynbook_lib.core.results import git_commit, read_results, validate_results
from dynbook_lib.widgets import CHECK_KNOBS_ENV
from conftest import ROOT

pytestmark = pytest.mark.book

WRITTEN = written_chapters(ROOT)
OPTIONS = ["--profile", "fast", "--device", "cpu", "--seed", "0"]
PARALLEL = ["--jobs", "2", "--threads", "1"]
"""Two chapters at once with one thread each: on 2 cores this builds the book in about 60% of the time of one
chapter at a time with two threads (the fast profile's tensors are too small for a second thread to pay)."""


def dynbook(*args, timeout=1800, env=None):
    return subprocess.run([sys.executable, "-m", "dynbook_lib", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def built_book(tmp_path_factory):
    """The book built once; every explorer also checks that each of its knobs changes its figure."""
    out = tmp_path_factory.mktemp("book")
    proc = dynbook("build", *OPTIONS, *PARALLEL, "--out", str(out), env={CHECK_KNOBS_ENV: "1"})
    return out, proc


def test_build_succeeds_and_prints_a_summary(built_book):
    out, proc = built_book
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = proc.stdout[proc.stdout.index("chapter "):]
    for chapter in WRITTEN:
        assert re.search(rf"^{chapter.slug}\s+[\d.]+\s+(\d+)/\1\s+passed( \(over budget\))?$", summary, flags=re.M), summary
    assert (out / "html" / "index.html").exists()


@pytest.mark.parametrize("chapter", WRITTEN, ids=lambda c: c.slug)
def test_chapter_claims_hold_within_the_fast_budget(built_book, chapter):
    out, _ = built_book
    res = read_results(out / "results" / f"{chapter.slug}.json")
    assert res is not None and (out / "executed" / f"{chapter.stem}.ipynb").exists()
    assert (res["chapter"], res["profile"], res["device"], res["seed"]) == (chapter.slug, "fast", "cpu", 0)
    assert res["status"] == "passed" and res["error"] is None  # over the time budget is reported, not failed
    validate_results(res)
    recorded = {c["name"]: c for c in res["claims"]}
    expected = {*chapter.claims, *chapter.full_claims}
    assert expected <= set(recorded), f"missing claims: {expected - set(recorded)}"
    for name in chapter.claims:
        claim = recorded[name]
        assert claim["required"] and claim["holds"], claim
    for name in chapter.full_claims:  # recorded and shown in the fast profile, required in the full one only
        assert not recorded[name]["required"], recorded[name]
    checks = {c["name"]: c for c in res["consistency"]}
    assert set(chapter.checks) <= set(checks) and all(c["holds"] for c in checks.values()), checks


def test_each_chapter_executes_once_per_build(built_book):
    _, proc = built_book
    for chapter in WRITTEN:
        assert len(re.findall(rf"\] {chapter.slug}: executing", proc.stdout)) == 1
    assert "Kernel is running over TCP" not in proc.stdout + proc.stderr


RERUN_SHARE = 3
"""The same-seed re-run takes every third chapter, which third rotating with the commit."""


def rerun_chapters() -> list:
    """A third of the chapters, rotating with the commit, or all with ``DYNBOOK_RERUN=all``."""
    if os.environ.get("DYNBOOK_RERUN") == "all":
        return WRITTEN
    turn = int(hashlib.sha256((git_commit(ROOT) or "").encode()).hexdigest(), 16) % RERUN_SHARE
    return [c for k, c in enumerate(WRITTEN) if k % RERUN_SHARE == turn]


def sanitised_outputs(path: Path) -> list[str]:
    """The text outputs of every code cell, with what legitimately changes between runs (addresses, timings)
    replaced as in ``tests/nbval_sanitize.cfg``."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "tests" / "nbval_sanitize.cfg")
    rules = [(re.compile(cfg[sec]["regex"]), cfg[sec]["replace"]) for sec in cfg.sections()]
    texts = []
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code" or "injected-parameters" in cell.metadata.get("tags", []):
            continue
        streams: dict[str, str] = {}  # a stream may arrive in one output or several, depending on timing: join them
        for out in cell.get("outputs", []):
            text = out.get("text") or out.get("data", {}).get("text/plain") or ""
            text = "".join(text) if isinstance(text, list) else text
            if out.get("output_type") == "stream":
                streams[out.get("name", "stdout")] = streams.get(out.get("name", "stdout"), "") + text
            else:
                texts.append(f"{out.get('output_type')}: {text}")
        texts += [f"stream {name}: {text}" for name, text in sorted(streams.items())]
    for regex, repl in rules:
        texts = [regex.sub(repl, t) for t in texts]
    return texts


def test_same_seed_gives_the_same_results_and_outputs(built_book, tmp_path):
    out, _ = built_book
    chapters = rerun_chapters()
    proc = dynbook("run", *[c.slug for c in chapters], *OPTIONS, *PARALLEL, "--out", str(tmp_path),
                   env={CHECK_KNOBS_ENV: "1"})
    assert proc.returncode == 0, proc.stdout[-2000:]
    for chapter in chapters:
        first = read_results(out / "results" / f"{chapter.slug}.json")
        second = read_results(tmp_path / "results" / f"{chapter.slug}.json")
        for res in (first, second):
            for key in ("seconds", "finished_at", "over_budget", "peak_memory"):  # measurements of the machine
                res.pop(key)
        assert first == second, chapter.slug
        name = f"{chapter.stem}.ipynb"
        assert sanitised_outputs(out / "executed" / name) == sanitised_outputs(tmp_path / "executed" / name), name


def chapter_page(out, chapter):
    return (out / "html" / "notebooks" / f"{chapter.stem}.html").read_text()


@pytest.mark.parametrize("chapter", WRITTEN, ids=lambda c: c.slug)
def test_rendered_page_has_figures_table_widget_colab_and_references(built_book, chapter):
    out, _ = built_book
    page = chapter_page(out, chapter)
    figures = re.findall(r'<img[^>]+src="(\.\./_images/[^"]+\.png)"', page)
    assert len(figures) >= 2 and all((out / "html" / "notebooks" / f).exists() for f in figures)
    assert 'class="dynbook-claims"' in page
    for name in (*chapter.claims, *chapter.full_claims):
        assert f'data-claim="{name}"' in page
    for name in chapter.checks:
        assert f'data-check="{name}"' in page
    assert page.count('badge-holds">holds</span>') >= len(chapter.claims) and "badge-fails" not in page
    assert "application/vnd.jupyter.widget-state+json" in page
    assert "application/vnd.jupyter.widget-view+json" in page
    assert f"colab.research.google.com/github/dynbook/dynbook/blob/main/notebooks/{chapter.stem}.ipynb" in page
    for src in re.findall(r'<script[^>]+src="([^"]+)"', page):
        assert not src.startswith(("http:", "https:", "//")), f"{src} is not served by the book itself"
    refs = set(re.findall(r'href="#(footcite-[^"]+)"', page))
    assert refs and all(f'id="{r}"' in page for r in refs), "a footnote citation has no definition"
    notes = page[page.index('id="references"'):] if 'id="references"' in page else page
    links = re.findall(r'href="(https://(?:doi\.org|arxiv\.org|[\w.]*proceedings|papers\.nips|jmlr|openreview|icml|'
                       r'ieeexplore)[^"]*)"', notes)
    assert len(links) >= len(refs), "a footnoted reference does not link to its paper (doi or url)"


def test_status_page_is_a_dashboard_of_each_chapter_run(built_book):
    out, _ = built_book
    page = (out / "html" / "book" / "status.html").read_text()
    for chapter in WRITTEN:
        row = re.search(rf'<tr[^>]*><td><p><a[^>]+href="\.\./notebooks/{chapter.stem}\.html[^"]*"[^>]*>.*?</a></p></td>(.*?)</tr>',
                        page, re.S)
        assert row, f"no status row with a link for {chapter.slug}"
        cells = re.findall(r"<td><p>(.*?)</p></td>", row.group(1), re.S)
        assert re.fullmatch(r"\d{4}-\d\d-\d\d, fast, cpu, seed 0", cells[0]), cells
        assert "budget 90 s" in cells[1] or "over the 90 s budget" in cells[1]
        assert re.fullmatch(r"(\d+)/\1", cells[2]) and cells[3] == "passed"
    assert page.count("Environment") == 1 and "torch" in page


@contextlib.contextmanager
def serve(folder: Path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def chromium(url: str, user_dir: Path, *extra: str, budget_ms: int = 20000) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    assert binary, "Debian's chromium is not installed: run `make test`, which installs it"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={user_dir}",
             f"--virtual-time-budget={budget_ms}"]
    return subprocess.run([binary, *flags, *extra, url], capture_output=True, text=True, timeout=300)


WIDTHS = {"laptop": 1300, "phone": 400}

PROBE = """<!DOCTYPE html><html><body><pre id="report">pending</pre>
<script>
var frames = [], pending = 0;
function inspect(frame) {
  var win = frame.contentWindow, doc = frame.contentDocument, rows = doc.querySelectorAll("table.dynbook-claims tbody tr");
  var inside = 0, output = doc.querySelector(".widget-output");
  rows.forEach(function (row) {
    var badge = row.querySelector(".verdict-cell .dynbook-badge"), box = badge && badge.getBoundingClientRect();
    var cell = row.closest(".cell_output, .output") || doc.body, limit = cell.getBoundingClientRect();
    if (box && box.width > 0 && box.left >= 0 && box.right <= Math.min(win.innerWidth, limit.right) + 1) inside++;
  });
  return {stem: frame.dataset.stem, width: frame.dataset.width, rows: rows.length, inside: inside,
          slider: !!doc.querySelector("[class*='widget-slider']"),
          widget_figure: !!(output && output.querySelector("img[src^='data:image/png;base64,']")),
          static_figures: doc.querySelectorAll("img[src^='../_images/']").length,
          shrunk: Array.prototype.filter.call(doc.querySelectorAll("img[src^='../_images/'], .widget-output img"),
            function (img) { return img.clientWidth > 0 && img.naturalWidth > 1.02 * img.clientWidth; })
            .map(function (img) { return img.naturalWidth + " px shown at " + img.clientWidth; }),
          math: doc.querySelectorAll("mjx-container").length,
          claims: Array.prototype.map.call(doc.querySelectorAll("[data-claim]"), function (e) { return e.dataset.claim; })};
}
function report() {
  document.getElementById("report").textContent = JSON.stringify(frames.map(inspect));
}
PAGES.forEach(function (page) {
  var frame = document.createElement("iframe");
  frame.src = "notebooks/" + page.stem + ".html";
  frame.dataset.stem = page.stem; frame.dataset.width = page.width;
  frame.style.width = page.width + "px"; frame.style.height = "900px";
  pending++;
  frame.addEventListener("load", function () { if (--pending === 0) setTimeout(report, 5000); });
  frames.push(frame); document.body.appendChild(frame);
});
</script></body></html>"""


def browser_probe(out: Path, profile: Path) -> dict:
    """Every chapter page rendered by headless Chromium at laptop and phone width, in one launch: a probe page holds
    one frame per (chapter, width) and reports, once the frames have loaded and their scripts have run (the widget
    drawn from its saved state, MathJax), what each shows."""
    pages = [{"stem": c.stem, "width": w} for c in WRITTEN for w in WIDTHS.values()]
    probe = out / "html" / "dynbook-probe.html"
    probe.write_text(PROBE.replace("PAGES", json.dumps(pages)))
    try:
        with serve(out / "html") as base:
            dom = chromium(f"{base}/{probe.name}", profile, "--window-size=1400,900", "--dump-dom",
                           budget_ms=60000).stdout
    finally:
        probe.unlink()
    found = re.search(r'<pre id="report">(.*?)</pre>', dom, re.S)
    assert found and found.group(1) != "pending", "the browser probe did not report: " + dom[-500:]
    return {(r["stem"], int(r["width"])): r for r in json.loads(html.unescape(found.group(1)))}


@pytest.fixture(scope="session")
def browser_report(built_book, tmp_path_factory):
    out, _ = built_book
    return browser_probe(out, tmp_path_factory.mktemp("chromium"))


@pytest.mark.parametrize("chapter", WRITTEN, ids=lambda c: c.slug)
def test_chapter_page_in_headless_chromium_at_laptop_and_phone_width(browser_report, chapter):
    """At 1300 px: the widget's controls and figure drawn from the saved state by the self-hosted JavaScript, the
    static figures, the claims table and typeset math; at 1300 px and on a phone (400 px) the verdict badge of every
    row of the reproduction table lies inside the window; at 1300 px no figure is shrunk to fit the column (its text
    would be smaller than the style's 9-10 pt)."""
    page = browser_report[(chapter.stem, WIDTHS["laptop"])]
    assert page["slider"], "the widget's slider was not rendered"
    assert page["widget_figure"], "the widget's figure was not rendered"
    assert page["static_figures"] >= 2
    assert set(chapter.claims) <= set(page["claims"]), "a claim is missing from the rendered table"
    assert page["math"] > 0, "MathJax did not typeset the page"
    assert not page["shrunk"], f"figures wider than the column, shrunk: {page['shrunk']}"
    for width in WIDTHS.values():
        page = browser_report[(chapter.stem, width)]
        assert page["rows"] >= len(chapter.claims) and page["inside"] == page["rows"], (
            f"{page['inside']} of {page['rows']} verdicts inside {width} px")

"""The runner and the ``dynbook`` command: bad input, failing chapters, results files, summary."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from dynbook_lib.chapters import CHAPTERS, Chapter, get_chapter
from dynbook_lib.core.results import read_results
from dynbook_lib.runner import RunOptions, all_passed, is_up_to_date, run_chapters, summary_table


def dynbook(*args, cwd):
    return subprocess.run([sys.executable, "-m", "dynbook_lib", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


BAD_INPUT = [
    (["run", "no-such-chapter"], "unknown chapter 'no-such-chapter'; chapters are: lazy-training"),
    (["run", "--profile", "medium"], "argument --profile: invalid choice: 'medium' (choose from 'fast', 'full')"),
    (["run", "--device", "tpu"], "argument --device: invalid choice: 'tpu' (choose from 'auto', 'cpu', 'cuda')"),
    (["run", "--seed", "-4"], "seed must be an integer in [0, 2**63), got '-4'"),
    (["run", "--seed", "abc"], "seed must be an integer in [0, 2**63), got 'abc'"),
    (["build", "--seed", "1.5"], "seed must be an integer in [0, 2**63), got '1.5'"),
]


@pytest.mark.parametrize("args,message", BAD_INPUT)
def test_bad_input_gives_one_clear_line_and_no_results(args, message, root, tmp_path):
    out = tmp_path / "out"
    proc = dynbook(*args, "--out", str(out), cwd=root)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dynbook: error: ") and message in lines[0], proc.stderr
    assert not (out / "results").exists()


def test_unwritten_chapter_is_named_with_the_written_ones(root, tmp_path):
    """In a book where one chapter's source is missing (every chapter is written in this one, so the book is copied
    without it), asking for that chapter names the written ones."""
    book = tmp_path / "book"
    (book / "notebooks").mkdir(parents=True)
    (book / "_toc.yml").write_text((root / "_toc.yml").read_text())
    unwritten = CHAPTERS[-1]
    for chapter in CHAPTERS[:-1]:
        if chapter.is_written(root):
            (book / "notebooks" / chapter.source(root).name).write_text(chapter.source(root).read_text())
    proc = dynbook("run", unwritten.slug, "--out", str(tmp_path / "o"), cwd=book)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"dynbook: error: chapter '{unwritten.slug}' is not written yet; written chapters: "
                                   + ", ".join(c.slug for c in CHAPTERS[:-1] if c.is_written(root)))
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error(root, tmp_path):
    proc = dynbook("run", "--device", "cuda", "--out", str(tmp_path / "o"), cwd=root)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("dynbook: error: device 'cuda' was asked for but no CUDA device is available; "
                                   "use --device auto or cpu")
    assert not (tmp_path / "o").exists()


def test_unwritable_output_folder_is_a_clear_error(root, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = dynbook("run", "--out", str(blocker / "out"), cwd=root)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dynbook: error: cannot write to output folder '{blocker / 'out'}'")


def test_chapter_lookup():
    assert get_chapter("diagonal-networks").stem == "08-diagonal-networks"
    assert [c.number for c in CHAPTERS] == list(range(1, 11))
    with pytest.raises(ValueError, match="unknown chapter 'x'"):
        get_chapter("x")


# --- a toy book: a chapter that crashes halfway, one whose claim fails, one that passes -------------------------------

TOY_HEADER = """\
---
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

```{code-cell} ipython3
:tags: [parameters]

profile = "fast"
device = "auto"
seed = 0
```

```{code-cell} ipython3
from dynbook_lib.core import ChapterRecord
record = ChapterRecord("SLUG", profile, device, seed)
record.check("a", "first claim", seed + 0.5, "<", 1.0, paper="toy")
```
"""

TOY_BODIES = {
    "toy-crash": 'raise RuntimeError("boom halfway")',
    "toy-fails": 'record.check("b", "second claim", 3.0, "<", 1.0, paper="toy")',
    "toy-passes": 'record.check("b", "second claim", 0.0, "<", 1.0, paper="toy")',
}


@pytest.fixture(scope="module")
def toy_book(tmp_path_factory):
    root = tmp_path_factory.mktemp("toybook")
    (root / "notebooks").mkdir()
    (root / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    chapters = []
    for number, (slug, body) in enumerate(TOY_BODIES.items(), start=91):
        chapter = Chapter(number, slug, slug, "toys", ("a", "b"))
        text = TOY_HEADER.replace("SLUG", slug) + f"\n```{{code-cell}} ipython3\n{body}\n```\n"
        chapter.source(root).write_text(textwrap.dedent(text))
        chapters.append(chapter)
    out = root / "out"
    outcomes = run_chapters(chapters, RunOptions("fast", "cpu", 0, out), root)
    return root, chapters, out, outcomes


def test_every_chapter_is_attempted_and_failures_are_reported(toy_book):
    _, chapters, out, outcomes = toy_book
    assert [o.status for o in outcomes] == ["failed", "failed", "passed"]
    assert "RuntimeError: boom halfway" in outcomes[0].error
    assert outcomes[1].error == "1 of 2 claims do not hold"
    assert not all_passed(outcomes)
    table = summary_table(outcomes)
    assert table.splitlines()[0].split() == ["chapter", "seconds", "claims", "held", "status"]
    assert "toy-passes" in table and "2/2" in table
    for chapter in chapters:
        assert (out / "executed" / f"{chapter.stem}.ipynb").exists()


def test_a_chapter_that_crashes_keeps_what_it_measured(toy_book):
    _, _, out, _ = toy_book
    res = read_results(out / "results" / "toy-crash.json")
    assert res["status"] == "failed"
    assert [c["name"] for c in res["claims"]] == ["a"] and res["claims"][0]["holds"] is True
    assert "boom halfway" in res["error"]
    assert res["env"]["torch"] == torch.__version__ and res["seconds"] > 0
    assert len(res["source_sha256"]) == 64


def test_up_to_date_only_for_a_passed_chapter_with_the_same_options_and_source(toy_book):
    root, chapters, out, _ = toy_book
    opts = RunOptions("fast", "cpu", 0, out)
    assert not is_up_to_date(chapters[0], opts, root)
    assert is_up_to_date(chapters[2], opts, root)
    assert not is_up_to_date(chapters[2], RunOptions("fast", "cpu", 1, out), root)
    source = chapters[2].source(root)
    original = source.read_text()
    try:
        source.write_text(original + "\n")
        assert not is_up_to_date(chapters[2], opts, root)
    finally:
        source.write_text(original)


def test_environment_is_restored_after_a_run(toy_book):
    assert "DYNBOOK_RESULTS_FILE" not in os.environ and "DYNBOOK_HEADLESS" not in os.environ


def test_staged_toc_drops_a_part_left_empty_by_an_unexecuted_chapter(tmp_path):
    # regression: removing the only chapter of a part used to leave an empty part, which Jupyter Book rejects
    from dynbook_lib.runner import _toc_without

    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: intro\nparts:\n  - caption: A\n    chapters:\n      - file: notebooks/01-a\n"
                   "  - caption: B\n    chapters:\n      - file: notebooks/02-b\n      - file: notebooks/03-c\n")
    import yaml

    staged = yaml.safe_load(_toc_without(toc, {"notebooks/01-a", "notebooks/03-c"}))
    assert staged["parts"] == [{"caption": "B", "chapters": [{"file": "notebooks/02-b"}]}]

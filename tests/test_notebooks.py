"""The chapter sources: paired with their .ipynb, without outputs, wired to the runner, the table of contents,
the Colab set-up and the bibliography."""

import json
import re

import jupytext
import pytest
import yaml

from dynbook_lib.chapters import CHAPTERS, written_chapters
from conftest import ROOT

WRITTEN = written_chapters(ROOT)


def test_at_least_one_chapter_is_written():
    assert WRITTEN


@pytest.mark.parametrize("chapter", WRITTEN, ids=lambda c: c.slug)
def test_source_and_notebook_are_paired_and_the_notebook_has_no_outputs(chapter):
    md = chapter.source(ROOT)
    ipynb = md.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb} is missing: run jupytext --sync {md}"
    source_cells = [(c.cell_type, c.source.strip()) for c in jupytext.read(md).cells]
    raw = json.loads(ipynb.read_text())
    notebook_cells = [(c["cell_type"], "".join(c["source"]).strip()) for c in raw["cells"]]
    assert source_cells == notebook_cells, f"{ipynb} differs from {md}: run jupytext --sync {md}"
    for cell in raw["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{ipynb} carries outputs"


@pytest.mark.parametrize("chapter", WRITTEN, ids=lambda c: c.slug)
def test_chapter_has_parameters_colab_setup_and_records_under_its_slug(chapter):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo = config["repository"]["url"]
    cells = [c for c in jupytext.read(chapter.source(ROOT)).cells if c.cell_type == "code"]
    setup = cells[0].source
    assert '"google.colab" in sys.modules' in setup and f"git+{repo}" in setup, (
        "the first code cell must install dynbook_lib from the repository of _config.yml, only on Colab")
    params = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    names = set(re.findall(r"^(\w+)\s*=", params[0].source, flags=re.M))
    assert {"profile", "device", "seed"} <= names
    assert f'ChapterRecord("{chapter.slug}", profile, device, seed)' in chapter.source(ROOT).read_text()


def test_table_of_contents_lists_exactly_the_written_chapters_in_book_order():
    toc = (ROOT / "_toc.yml").read_text()
    listed = re.findall(r"file:\s*notebooks/(\S+)", toc)
    assert listed == [c.stem for c in WRITTEN]
    for chapter in CHAPTERS:
        if chapter not in WRITTEN:
            assert chapter.stem not in toc


def test_every_citation_is_in_the_bibliography():
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"^@\w+\{([^,]+),", bib, flags=re.M))
    for chapter in WRITTEN:
        cited = set()
        for group in re.findall(r"\{(?:foot)?cite(?::\w+)?\}`([^`]+)`", chapter.source(ROOT).read_text()):
            cited |= {k.strip() for k in group.split(",")}
        assert cited and cited <= keys, f"{chapter.slug} cites keys missing from references.bib: {cited - keys}"


@pytest.mark.parametrize("chapter", WRITTEN, ids=lambda c: c.slug)
def test_chapter_states_its_goals_and_ends_with_exercises_and_hidden_solutions(chapter):
    """A chapter opens with what the reader will learn and what it assumes, and ends (before its references) with 2-3
    exercises, each followed by its solution in a collapsed block."""
    text = chapter.source(ROOT).read_text()
    first_code = text.index("```{code-cell}")
    goals = text.find(":::{admonition} In this chapter")
    assert 0 < goals < first_code, "the learning goals belong before the first code cell"
    assert "**You will learn**" in text[goals:first_code] and "**It assumes**" in text[goals:first_code]
    assert "## Exercises" in text and text.index("## Exercises") < text.index("## References")
    section = text[text.index("## Exercises"):text.index("## References")]
    exercises = re.findall(r"^:::\{admonition\} Exercise \d+$", section, flags=re.M)
    solutions = re.findall(r"^:::\{admonition\} Solution\n:class: dropdown$", section, flags=re.M)
    assert 2 <= len(exercises) <= 3 and len(solutions) == len(exercises), (len(exercises), len(solutions))


@pytest.mark.parametrize("chapter", WRITTEN, ids=lambda c: c.slug)
def test_figures_are_sized_for_the_column_and_prose_numbers_are_glued(chapter):
    """Figures come from ``plotting.panels`` or ``static_sweep`` (sized for the book's column: no hand-set figsize
    that the page would shrink), and numbers the prose quotes from the run are glued (myst-nb ``glue``), each glued
    name used in the text."""
    text = chapter.source(ROOT).read_text()
    assert "figsize" not in text, "size figures with dynbook_lib.plotting.panels, not figsize"
    glued = set(re.findall(r"""glue\(f?["']([\w{}.()]+)["']""", text))
    used = set(re.findall(r"\{glue:(?:text)?\}`(\w+)", text))
    assert used, "no number in the prose is glued from the run"
    literal = {name for name in glued if name.isidentifier()}
    assert literal <= used, f"glued but never shown: {literal - used}"


def test_every_bibliography_entry_links_to_the_work():
    """A reader can click through to every cited work: each entry has a ``doi`` or a ``url`` (arXiv, proceedings)."""
    entries = re.split(r"^@", (ROOT / "book" / "references.bib").read_text(), flags=re.M)[1:]
    assert len(entries) >= 60
    unlinked = [e.split(",", 1)[0].split("{", 1)[1] for e in entries
                if not re.search(r"^\s*(doi|url)\s*=\s*\{(10\.\d{4,}/\S+|https://\S+)\}", e, flags=re.M)]
    assert not unlinked, f"entries without a doi or url: {unlinked}"


@pytest.mark.parametrize("chapter", WRITTEN, ids=lambda c: c.slug)
def test_papermill_reads_every_parameter(chapter):
    """papermill parses the parameters cell line by line; a comment it cannot parse (an apostrophe, an ``=``) makes it
    drop that parameter with only a warning."""
    import papermill

    found = papermill.inspect_notebook(str(chapter.source(ROOT).with_suffix(".ipynb")))
    assert set(found) == {"profile", "device", "seed"}, f"{chapter.slug}: papermill reads {sorted(found)}"

"""The runner and the ``dynbook`` command: bad input, failing chapters, results files, summary."""

import json
import os
import pickle
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import torch

from dynbook_lib import __version__, runner
from dynbook_lib.chapters import CHAPTERS, Chapter, get_chapter
from dynbook_lib.cli import main, parse_seeds
from dynbook_lib.core.results import read_results, validate_results
from dynbook_lib.executors import SlurmOptions, make_executor
from dynbook_lib.runner import (RunOptions, all_passed, exit_code, is_up_to_date, robustness_table, run_chapters,
                                run_seeds, summary_table)


def dynbook(*args, cwd):
    return subprocess.run([sys.executable, "-m", "dynbook_lib", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


BAD_INPUT = [
    (["run", "no-such-chapter"], "unknown chapter 'no-such-chapter'; chapters are: lazy-training"),
    (["run", "--profile", "medium"], "argument --profile: invalid choice: 'medium' (choose from 'fast', 'full', 'smoke')"),
    (["run", "--device", "tpu"], "argument --device: invalid choice: 'tpu' (choose from 'auto', 'cpu', 'cuda')"),
    (["run", "--seed", "-4"], "seed must be an integer in [0, 2**63), got '-4'"),
    (["run", "--seed", "abc"], "seed must be an integer in [0, 2**63), got 'abc'"),
    (["build", "--seed", "1.5"], "seed must be an integer in [0, 2**63), got '1.5'"),
    (["run", "diagonal-network"], "unknown chapter 'diagonal-network'; did you mean 'diagonal-networks'?"),
    (["run", "--seeds", "3-1"], "--seeds: the range 3-1 is empty; write LOW-HIGH with LOW <= HIGH, e.g. 0-4"),
    (["run", "--seeds", "x"], "--seeds: 'x' is not a seed or a range; write e.g. 0-4 or 0 1 2"),
    (["run", "--seeds", "0-1", "--executor", "local", "--jobs", "0"], "--jobs must be a positive integer, got '0'"),
    (["run", "--seeds", "0-1", "--executor", "slurm", "--jobs", "2"], "--jobs 2 does not apply to --executor slurm"),
    (["build", "--jobs", "two"], "--jobs must be a positive integer, got 'two'"),
    (["run", "--executor", "pbs"], "argument --executor: invalid choice: 'pbs' (choose from 'inline', 'local', 'slurm')"),
    (["run", "--timeout", "0"], "--timeout must be a positive number of seconds, got '0'"),
    (["run", "--threads", "two"], "--threads must be a positive integer, got 'two'"),
]


def main_in_process(args: list[str]) -> int:
    """``dynbook ARGS`` in this process (what the command does, without the start-up of a new Python)."""
    try:
        return main(args)
    except SystemExit as stop:
        return int(stop.code or 0)


@pytest.mark.parametrize("args,message", BAD_INPUT)
def test_bad_input_gives_one_clear_line_and_no_results(args, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main_in_process([*args, "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dynbook: error: ") and message in lines[0], lines
    assert not (out / "results").exists()


def test_bad_input_from_the_shell_exits_2_with_one_line(root, tmp_path):
    proc = dynbook("run", "diagonal-network", "--out", str(tmp_path / "out"), cwd=root)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(
        "dynbook: error: unknown chapter 'diagonal-network'; did you mean 'diagonal-networks'?")


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


def test_output_folder_that_cannot_be_created_is_a_clear_error(root, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for out in (blocker / "out", Path("/proc/x")):
        proc = dynbook("run", "08", "--out", str(out), cwd=root)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"dynbook: error: cannot create output folder '{out}'"), lines


def test_unwritable_output_folder_is_a_clear_error(root, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    proc = dynbook("run", "--out", str(locked), cwd=root)
    assert proc.returncode == 2 and "cannot" in proc.stderr


def test_chapter_lookup_by_slug_number_and_stem():
    assert get_chapter("diagonal-networks").stem == "08-diagonal-networks"
    assert get_chapter("08") is get_chapter("8") is get_chapter("08-diagonal-networks") is get_chapter("diagonal-networks")
    assert [c.number for c in CHAPTERS] == list(range(1, 11))
    with pytest.raises(ValueError, match="unknown chapter 'x'; chapters are"):
        get_chapter("x")
    with pytest.raises(ValueError, match="did you mean 'heavy-tails'"):
        get_chapter("heavy-tail")


def test_bare_command_lists_commands_and_version_and_help_give_exit_codes(root):
    bare = dynbook(cwd=root)
    assert bare.returncode == 2 and "run" in bare.stdout and "build" in bare.stdout
    version = dynbook("--version", cwd=root)
    assert version.returncode == 0 and version.stdout.strip() == f"dynbook {__version__}"
    helptext = dynbook("run", "--help", cwd=root).stdout
    for code in ("0", "1", "2", "3", "4", "130"):
        assert f"\n  {code:>3}  " in helptext, helptext
    assert "--seeds" in helptext and "--executor" in helptext and "--timeout" in helptext


def test_parse_seeds():
    assert parse_seeds(["0-4"]) == [0, 1, 2, 3, 4]
    assert parse_seeds(["0", "1", "2"]) == parse_seeds(["0,1,2"]) == parse_seeds(["0-1", "2", "1"]) == [0, 1, 2]


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
    "toy-fails": 'record.check("b", "second claim", 3.0, "<", 1.0, paper="toy", paper_value=1.5)\nrecord.table()',
    "toy-passes": 'record.check("b", "second claim", 0.0, "<", 1.0, paper="toy", paper_value="zero")\n'
                  'record.consistency("c", "an identity", 0.0, "<=", 0.0)\nrecord.metric("nan", float("nan"))\n'
                  'record.table()',
    "toy-nocheck": 'record.check("b", "second claim", 0.0, "<", 1.0, paper="toy")\nrecord.table()',
}
TOY_CHECKS = {"toy-passes": ("c",), "toy-nocheck": ("c",)}


def write_toy_book(root, bodies):
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    (root / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    (root / "requirements.txt").write_text("torch==2.13.0\n")
    chapters = []
    for number, (slug, body) in enumerate(bodies.items(), start=91):
        chapter = Chapter(number, slug, slug, "toys", ("a", "b"), TOY_CHECKS.get(slug, ()))
        text = TOY_HEADER.replace("SLUG", slug) + f"\n```{{code-cell}} ipython3\n{body}\n```\n"
        chapter.source(root).write_text(textwrap.dedent(text))
        chapters.append(chapter)
    return chapters


@pytest.fixture(scope="module")
def toy_book(tmp_path_factory):
    root = tmp_path_factory.mktemp("toybook")
    chapters = write_toy_book(root, TOY_BODIES)
    out = root / "out"
    outcomes = run_chapters(chapters, RunOptions("fast", "cpu", 0, out), root, jobs=2)  # two at once
    return root, chapters, out, outcomes


def test_every_chapter_is_attempted_and_failures_are_reported(toy_book):
    _, chapters, out, outcomes = toy_book
    assert [o.chapter for o in outcomes] == chapters  # in the order asked for, though two ran at once
    assert [o.status for o in outcomes] == ["crashed", "failed", "passed", "crashed"]
    assert "RuntimeError: boom halfway" in outcomes[0].error
    assert outcomes[1].error == "1 of 2 claims do not hold"
    assert outcomes[3].error == "claims or checks of the specification not recorded: c"
    assert not all_passed(outcomes) and exit_code(outcomes) == 3 and exit_code(outcomes[1:3]) == 1
    assert exit_code(outcomes[2:3]) == 0 and exit_code(outcomes[2:3], render_code=1) == 4
    table = summary_table(outcomes)
    assert table.splitlines()[0].split() == ["chapter", "seconds", "claims", "held", "status"]
    assert "toy-passes" in table and "2/2" in table
    for chapter in chapters:
        assert (out / "executed" / f"{chapter.stem}.ipynb").exists()


def test_a_chapter_that_crashes_keeps_what_it_measured(toy_book):
    _, _, out, _ = toy_book
    res = read_results(out / "results" / "toy-crash.json")
    assert res["status"] == "crashed"
    assert [c["name"] for c in res["claims"]] == ["a"] and res["claims"][0]["holds"] is True
    assert "boom halfway" in res["error"]
    assert res["env"]["torch"] == torch.__version__ and res["seconds"] > 0
    assert len(res["input_sha256"]) == 64


def test_results_files_follow_the_schema_are_standard_json_and_readable_by_others(toy_book):
    _, chapters, out, _ = toy_book
    for chapter in chapters:
        path = out / "results" / f"{chapter.slug}.json"
        res = read_results(path)
        validate_results(res)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    passes = read_results(out / "results" / "toy-passes.json")
    assert passes["metrics"]["nan"] is None and passes["claims"][1]["paper_value"] == "zero"
    assert passes["consistency"][0]["name"] == "c" and passes["consistency"][0]["holds"] is True
    assert read_results(out / "results" / "toy-fails.json")["claims"][1]["paper_value"] == 1.5
    bad = {**passes, "status": "fine"}
    with pytest.raises(ValueError, match=r"results file does not follow schema 2: status: 'fine' is not one of"):
        validate_results(bad)


def test_up_to_date_only_for_a_passed_chapter_with_the_same_options_source_library_and_requirements(toy_book, tmp_path):
    root, chapters, out, _ = toy_book
    lib = tmp_path / "lib"
    (lib / "core").mkdir(parents=True)
    (lib / "core" / "claims.py").write_text("x = 1\n")
    opts = RunOptions("fast", "cpu", 0, out)
    passed = chapters[2]
    # the results were keyed with the real library; re-key them against the toy library to test its changes
    res = read_results(out / "results" / f"{passed.slug}.json")
    assert res["input_sha256"] == runner.input_digest(passed, root, opts)
    assert is_up_to_date(passed, opts, root)
    assert not is_up_to_date(chapters[0], opts, root)
    assert not is_up_to_date(passed, RunOptions("fast", "cpu", 1, out), root)
    assert not is_up_to_date(passed, RunOptions("fast", "cpu", 0, out, threads=1), root)
    res["input_sha256"] = runner.input_digest(passed, root, opts, lib_dir=lib)
    runner.write_json_atomic(out / "results" / f"{passed.slug}.json", res)
    try:
        assert is_up_to_date(passed, opts, root, lib_dir=lib)
        for path, change in ((lib / "core" / "claims.py", "x = 2\n"), (root / "requirements.txt", "torch==2.14.1\n"),
                             (passed.source(root), passed.source(root).read_text() + "\n")):
            original = path.read_text()
            path.write_text(change)
            try:
                assert not is_up_to_date(passed, opts, root, lib_dir=lib), f"a change of {path.name} went unnoticed"
            finally:
                path.write_text(original)
        assert is_up_to_date(passed, opts, root, lib_dir=lib)
    finally:
        res["input_sha256"] = runner.input_digest(passed, root, opts)
        runner.write_json_atomic(out / "results" / f"{passed.slug}.json", res)


def test_environment_is_restored_after_a_run(toy_book):
    assert "DYNBOOK_RESULTS_FILE" not in os.environ and "DYNBOOK_HEADLESS" not in os.environ


def test_over_budget_is_flagged_not_failed_and_a_hung_chapter_times_out(tmp_path):
    chapters = write_toy_book(tmp_path, {"toy-passes": TOY_BODIES["toy-passes"],
                                         "toy-hangs": "import time\ntime.sleep(600)"})
    out = tmp_path / "out"
    (slow,) = run_chapters(chapters[:1], RunOptions("fast", "cpu", 0, out, timeout_s=600, budget_s=0.5), tmp_path)
    (hung,) = run_chapters(chapters[1:], RunOptions("fast", "cpu", 0, out, timeout_s=8, budget_s=0.5), tmp_path)
    outcomes = [slow, hung]
    assert slow.status == "passed" and slow.over_budget and "passed (over budget)" in summary_table(outcomes)
    assert exit_code([slow]) == 0
    res = read_results(tmp_path / "out" / "results" / "toy-passes.json")
    assert res["over_budget"] is True and res["budget_s"] == 0.5 and res["status"] == "passed"
    assert hung.status == "timed out" and hung.seconds < 300 and "execution timeout of 8 s" in hung.error
    assert read_results(tmp_path / "out" / "results" / "toy-hangs.json")["status"] == "timed out"
    assert exit_code(outcomes) == 3


def test_plain_papermill_leaves_a_finalised_results_file(tmp_path):
    import jupytext
    import papermill

    (chapter,) = write_toy_book(tmp_path, {"toy-passes": TOY_BODIES["toy-passes"]})
    nb = tmp_path / "toy.ipynb"
    jupytext.write(jupytext.read(chapter.source(tmp_path)), nb)
    results = tmp_path / "plain.json"
    env_before = os.environ.get("DYNBOOK_RESULTS_FILE")
    os.environ["DYNBOOK_RESULTS_FILE"] = str(results)
    try:
        papermill.execute_notebook(str(nb), str(tmp_path / "out.ipynb"), parameters={"seed": 0}, kernel_name="python3",
                                   progress_bar=False)
    finally:
        os.environ.pop("DYNBOOK_RESULTS_FILE")
        if env_before is not None:
            os.environ["DYNBOOK_RESULTS_FILE"] = env_before
    res = read_results(results)
    validate_results(res)
    assert res["status"] == "passed" and res["seconds"] > 0


def test_local_executor_runs_each_seed_apart_and_writes_robustness(tmp_path):
    chapters = write_toy_book(tmp_path, {"toy-passes": TOY_BODIES["toy-passes"]})
    opts = RunOptions("fast", "cpu", 0, tmp_path / "out")
    executor = make_executor("local", opts.out, jobs=2, timeout_s=300)
    outcomes = run_seeds(chapters, opts, tmp_path, [0, 1], executor)
    assert [(o.seed, o.status) for o in outcomes] == [(0, "passed"), (1, "failed")]  # claim "a" is seed + 0.5 < 1
    for seed in (0, 1):
        res = read_results(tmp_path / "out" / f"seed-{seed}" / "results" / "toy-passes.json")
        assert res["seed"] == seed and (tmp_path / "out" / f"seed-{seed}" / "executed" / "91-toy-passes.ipynb").exists()
    doc = read_results(tmp_path / "out" / "robustness.json")
    claim = doc["chapters"]["toy-passes"]["claims"]["a"]
    assert claim["seeds"] == [0, 1] and claim["values"] == [0.5, 1.5] and claim["holds"] == [True, False]
    table = robustness_table(doc)
    assert table.splitlines()[0].split() == ["chapter", "claim", "held", "mean", "+-", "threshold", "clear"]
    row_a = next(line for line in table.splitlines() if line.split()[1:2] == ["a"])
    assert row_a.split()[2:5] == ["1/2", "1", "0.5"] and row_a.split()[-1] == "NO"


def test_inline_executor_runs_each_seed_into_its_own_folder(tmp_path):
    chapters = write_toy_book(tmp_path, {"toy-passes": TOY_BODIES["toy-passes"]})
    opts = RunOptions("fast", "cpu", 0, tmp_path / "out")
    outcomes = run_seeds(chapters, opts, tmp_path, [0, 1], make_executor("inline", opts.out))
    assert [(o.seed, o.status) for o in outcomes] == [(0, "passed"), (1, "failed")]
    assert read_results(tmp_path / "out" / "seed-1" / "results" / "toy-passes.json")["seed"] == 1
    assert read_results(tmp_path / "out" / "robustness.json")["chapters"]["toy-passes"]["claims"]["a"]["values"] == [0.5, 1.5]


def test_slurm_submission_asks_for_partition_gpus_time_and_runs_the_job(tmp_path, monkeypatch):
    """What submitit would send to sbatch, with fake sbatch and srun on PATH (no cluster needed)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/sbatch-args"\necho "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    chapter = get_chapter("diagonal-networks")
    opts = RunOptions("full", "cuda", 3, tmp_path / "out" / "seed-3")
    executor = make_executor("slurm", tmp_path / "out", timeout_s=1200,
                             slurm=SlurmOptions(partition="gpu", gpus_per_node=1, time_min=30, cpus_per_task=8))
    job = executor.submit(chapter, opts, Path("/book"))
    assert job.job_id == "4242"
    script = Path((bin_dir / "sbatch-args").read_text().strip()).read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --time=30",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --job-name=dynbook-diagonal-networks-seed3"):
        assert line in script, script
    assert "-m submitit.core._submit" in script
    with job.paths.submitted_pickle.open("rb") as f:
        delayed = pickle.load(f)
    assert delayed.function.__name__ == "run_job"
    assert delayed.args == (chapter, opts, Path("/book"))


# --- signals, sent to a real `dynbook run` ---------------------------------------------------------------------------


@pytest.mark.parametrize("sig,jobs", [(signal.SIGINT, 1), (signal.SIGTERM, 2)], ids=["SIGINT", "SIGTERM-2-jobs"])
def test_a_signal_stops_the_running_chapter_marks_it_interrupted_and_skips_the_rest(sig, jobs, root, tmp_path):
    """Sequentially, and with two chapters at once (diagonal-networks and alrao running, gaussian-preactivations
    waiting): every running chapter is interrupted, every waiting one not run."""
    out = tmp_path / "out"
    chapters = ["diagonal-networks"] + (["alrao"] if jobs == 2 else []) + ["gaussian-preactivations"]
    proc = subprocess.Popen([sys.executable, "-m", "dynbook_lib", "run", *chapters, "--jobs", str(jobs),
                             "--device", "cpu", "--out", str(out)], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    results = out / "results" / "diagonal-networks.json"
    while not (read_results(results) or {}).get("claims") and time.monotonic() < deadline:
        time.sleep(0.2)  # wait until the chapter is well under way (it has recorded a claim)
    sent = time.monotonic()
    os.killpg(proc.pid, sig)  # as a terminal does: the whole foreground process group
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout
    # generous, so that a slow machine stays green: a completed chapter would say "passed", not "interrupted"
    assert time.monotonic() - sent < 60, "stopping took too long"
    assert read_results(results)["status"] == "interrupted"
    if jobs == 2:
        assert read_results(out / "results" / "alrao.json")["status"] == "interrupted"
    assert "interrupted" in stdout and "gaussian-preactivations" in stdout and "not run" in stdout
    assert not (out / "results" / "gaussian-preactivations.json").exists()
    assert "Kernel is running over TCP" not in stdout
    time.sleep(2)
    assert not processes_writing_to(out), "a kernel or child of the stopped run is still alive"


def processes_writing_to(out: Path) -> list[psutil.Process]:
    """Live processes whose results file (``DYNBOOK_RESULTS_FILE``) lies under ``out``: the runner's children."""
    found = []
    for p in psutil.process_iter():
        try:
            if str(out) in p.environ().get("DYNBOOK_RESULTS_FILE", ""):
                found.append(p)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return found


def test_a_partial_build_stages_a_stub_for_every_chapter_it_did_not_execute(root, tmp_path):
    """`dynbook build 04` renders one chapter; the others become stub pages, so the table of contents stays whole and
    the links between chapters (learning goals, the introduction's list) resolve."""
    out = tmp_path / "out"
    executed = CHAPTERS[3]
    (out / "executed").mkdir(parents=True)
    nbformat_nb = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (out / "executed" / f"{executed.stem}.ipynb").write_text(json.dumps(nbformat_nb))
    stage = runner.stage_book(list(CHAPTERS), out, root)
    assert (stage / "_toc.yml").read_text() == (root / "_toc.yml").read_text()
    assert (stage / "notebooks" / f"{executed.stem}.ipynb").exists()
    for chapter in CHAPTERS:
        if chapter is not executed:
            stub = (stage / "notebooks" / f"{chapter.stem}.md").read_text()
            assert stub.startswith(f"# {chapter.number:02d} {chapter.title}") and f"dynbook build {chapter.slug}" in stub


def test_a_registered_full_run_makes_the_fast_chapter_stale_and_paths_reach_the_kernel_absolute(tmp_path,
                                                                                                monkeypatch):
    chapter = get_chapter("heavy-tails")
    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("DYNBOOK_REGISTRY", str(tmp_path / "registry"))
    fast, full = RunOptions("fast", "cpu", 0, tmp_path), RunOptions("full", "cpu", 0, tmp_path)
    before = runner.input_digest(chapter, root, fast), runner.input_digest(chapter, root, full)
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "heavy-tails.json").write_text("{}")
    after = runner.input_digest(chapter, root, fast), runner.input_digest(chapter, root, full)
    assert before[0] != after[0] and before[1] == after[1]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DYNBOOK_DATA", "downloads")
    monkeypatch.setenv("DYNBOOK_REGISTRY", "registry")
    env = runner._child_env(fast, tmp_path / "r.json")
    assert env["DYNBOOK_DATA"] == str(tmp_path / "downloads") and env["DYNBOOK_REGISTRY"] == str(tmp_path / "registry")
    monkeypatch.delenv("DYNBOOK_DATA")
    assert runner._child_env(fast, tmp_path / "r.json")["DYNBOOK_DATA"] == str(tmp_path / "data")

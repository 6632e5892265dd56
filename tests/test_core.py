"""The core: seeds, devices, profiles, claims and the results file."""

import json
import math
from pathlib import Path

import pytest
import torch

from dynbook_lib.core.claims import ChapterRecord, SeedSummary, evaluate, seed_summaries
from dynbook_lib.core.devices import resolve_device
from dynbook_lib.core.profiles import is_full, select_profile
from dynbook_lib.core.progress import progress
from dynbook_lib.core.results import RESULTS_ENV, environment, read_results, validate_results, write_json_atomic
from dynbook_lib.core.seeding import check_seed, make_generator


def test_generator_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = torch.randn(5, generator=make_generator(7))
    b = torch.randn(5, generator=make_generator(7))
    assert torch.equal(a, b)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert not torch.equal(a, torch.randn(5, generator=make_generator(8)))


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True, 2**63])
def test_bad_seeds_are_rejected_in_one_line(bad):
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63\)") as err:
        check_seed(bad)
    assert "\n" not in str(err.value)


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'; choose one of: auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device is available"):
            resolve_device("cuda")


def test_profiles():
    assert select_profile("fast", fast="a", full="b") == "a"
    assert select_profile("full", fast="a", full="b") == "b"
    with pytest.raises(ValueError, match="unknown profile 'medium'; choose one of: fast, full, smoke"):
        select_profile("medium", fast="a", full="b")
    assert select_profile("smoke", fast="a", full="b", smoke="c") == "c"
    with pytest.raises(ValueError, match="defines no smoke configuration"):
        select_profile("smoke", fast="a", full="b")
    assert is_full("full") and is_full("smoke") and not is_full("fast")


def test_smoke_profile_records_claims_but_requires_none(tmp_path):
    record = ChapterRecord("demo", "smoke", "cpu", 0, results_file=tmp_path / "r.json")
    record.check("c", "statement", 2.0, "<", 1.0, paper="p")
    table = record.table()
    assert not record.claims[0].required_in("smoke") and table.verdict(record.claims[0]) == "smoke run, not judged"
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["claims"][0]["required"] is False and saved["peak_memory"]["rss_mib"] > 0
    with pytest.raises(ValueError, match="a claim can be required in the profiles fast, full, got 'smoke'"):
        record.check("d", "statement", 1.0, "<", 2.0, paper="p", profiles=("fast", "smoke"))


def test_data_dir_follows_the_environment_and_reads_fake_files(tmp_path, monkeypatch):
    from dynbook_lib.data.downloads import cifar10_tensors, data_dir, mnist_tensors
    from dynbook_lib.data.fake import write_fake_data

    monkeypatch.delenv("DYNBOOK_DATA", raising=False)
    assert data_dir("mnist") == Path("data") / "mnist"
    monkeypatch.setenv("DYNBOOK_DATA", str(tmp_path))
    write_fake_data(tmp_path)
    cifar, mnist = cifar10_tensors(data_dir("cifar10")), mnist_tensors(data_dir("mnist"))
    assert cifar["x_train"].shape == (80, 3, 32, 32) and cifar["x_test"].shape == (16, 3, 32, 32)
    assert mnist["x_train"].shape == (64, 784) and mnist["y_test"].shape == (32,)


def test_evaluate_comparisons_and_nan():
    assert evaluate(1.0, "<", 2.0) and not evaluate(2.0, "<", 2.0) and evaluate(2.0, "<=", 2.0)
    assert evaluate(3.0, ">", 2.0) and evaluate(2.0, ">=", 2.0) and not evaluate(1.0, ">=", 2.0)
    for op in ("<", "<=", ">", ">="):
        assert not evaluate(math.nan, op, 1.0)
    with pytest.raises(ValueError, match="unknown comparison"):
        evaluate(1.0, "==", 1.0)


def test_record_writes_each_claim_as_it_is_checked(tmp_path, monkeypatch):
    path = tmp_path / "results" / "toy.json"
    monkeypatch.setenv(RESULTS_ENV, str(path))
    record = ChapterRecord("toy", "fast", "cpu", 3)
    assert read_results(path)["claims"] == []
    record.check("first", "a statement", 0.5, "<", 1.0, paper="Fig. 1")
    saved = read_results(path)
    assert [c["name"] for c in saved["claims"]] == ["first"] and saved["claims"][0]["holds"] is True
    record.check("second", "fails", 2.0, "<", 1.0, paper="Fig. 2")
    record.metric("curve", [1.0, 2.0])
    saved = read_results(path)
    assert [c["holds"] for c in saved["claims"]] == [True, False]
    assert saved["metrics"] == {"curve": [1.0, 2.0]}
    assert saved["status"] == "running"
    assert {"chapter", "profile", "device", "seed", "seconds", "claims", "metrics", "env"} <= set(saved)
    assert set(saved["claims"][0]) >= {"name", "statement", "value", "op", "threshold", "holds", "paper"}
    assert not record.all_hold()


def test_record_without_results_file_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    record = ChapterRecord("toy", "fast", "cpu", 0)
    record.check("c", "s", 1.0, "<", 2.0, paper="p")
    assert record.results_file is None and list(tmp_path.iterdir()) == []


def test_full_only_claim_is_shown_but_not_required_in_fast(monkeypatch):
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    record = ChapterRecord("toy", "fast", "cpu", 0)
    record.check("fast_ok", "holds", 1.0, "<", 2.0, paper="p")
    record.check("needs_scale", "only at paper scale", 5.0, "<", 2.0, paper="p", profiles=("full",),
                 note="the effect needs width 4096")
    assert record.all_hold()
    html = record.table()._repr_html_()
    assert "not reproduced at fast size" in html and "the effect needs width 4096" in html
    assert "<b>1/1</b>" in html
    assert "fast_ok: 1 &lt; 2 -> holds" not in repr(record.table())  # text repr is plain text
    assert "fast_ok: 1 < 2 -> holds" in repr(record.table())


def test_negative_finding_is_recorded_as_not_reproduced_anywhere(monkeypatch):
    """A claim required in no profile (a measured negative finding) does not fail the run and says so plainly."""
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    record = ChapterRecord("toy", "fast", "cpu", 0)
    record.check("fast_ok", "holds", 1.0, "<", 2.0, paper="p")
    record.check("odd_family", "the odd family stays Gaussian", 1.2, "<", 0.5, paper="p", profiles=(),
                 note="a negative finding")
    assert record.all_hold()
    html = record.table()._repr_html_()
    assert ">not reproduced<" in html and "not reproduced at" not in html


def test_record_rejects_bad_options_and_duplicate_claims(monkeypatch):
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    with pytest.raises(ValueError, match="unknown profile"):
        ChapterRecord("toy", "huge", "cpu", 0)
    with pytest.raises(ValueError, match="unknown device"):
        ChapterRecord("toy", "fast", "gpu", 0)
    record = ChapterRecord("toy", "fast", "cpu", 0)
    record.check("c", "s", 1.0, "<", 2.0, paper="p")
    with pytest.raises(ValueError, match="already recorded"):
        record.check("c", "s", 1.0, "<", 2.0, paper="p")
    with pytest.raises(ValueError, match="a claim can be required in the profiles fast, full, got 'slow'"):
        record.check("d", "s", 1.0, "<", 2.0, paper="p", profiles=("slow",))


def test_write_json_atomic_replaces_whole_file(tmp_path):
    path = tmp_path / "a" / "r.json"
    write_json_atomic(path, {"x": 1})
    write_json_atomic(path, {"y": [1, 2]})
    assert json.loads(path.read_text()) == {"y": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]
    assert read_results(tmp_path / "missing.json") is None


def test_environment_fields():
    env = environment()
    assert set(env) == {"python", "torch", "dynbook_lib", "git_commit", "gpu", "threads"}
    assert env["torch"] == torch.__version__ and env["threads"] == torch.get_num_threads()


def test_progress_is_quiet_when_headless(monkeypatch, capsys):
    monkeypatch.setenv("DYNBOOK_HEADLESS", "1")
    assert list(progress(range(3), desc="quiet")) == [0, 1, 2]
    assert "quiet" not in capsys.readouterr().err


def test_consistency_checks_are_recorded_and_shown_apart_and_never_counted_as_claims(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    monkeypatch.setenv(RESULTS_ENV, str(path))
    record = ChapterRecord("toy", "fast", "cpu", 0)
    record.check("claim", "a result of the paper", 0.2, "<", 1.0, paper="Smith 2020, Fig. 1", paper_value=0.25)
    record.consistency("identity", "an identity of the update", 1e-15, "<", 1e-12, note="float64")
    with pytest.raises(ValueError, match="'identity' is already recorded"):
        record.check("identity", "s", 1.0, "<", 2.0, paper="p")
    table = record.table()
    html = table._repr_html_()
    assert html.index('data-claim="claim"') < html.index('class="dynbook-checks"') < html.index('data-check="identity"')
    assert "<b>1/1</b>" in html and "Consistency checks" in html
    assert "0.25" in html and "-20% from the paper" in html  # the paper's number beside ours, and the deviation
    assert "[consistency] identity" in repr(table)
    saved = read_results(path)
    assert saved["status"] == "passed" and [c["name"] for c in saved["consistency"]] == ["identity"]
    assert [c["name"] for c in saved["claims"]] == ["claim"] and saved["claims"][0]["paper_value"] == 0.25
    validate_results(saved)


def test_a_failing_consistency_check_fails_the_record(monkeypatch):
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    record = ChapterRecord("toy", "fast", "cpu", 0)
    record.check("claim", "holds", 0.2, "<", 1.0, paper="p")
    assert record.all_hold()
    record.consistency("broken", "an identity that the code broke", 1e-3, "<", 1e-12)
    assert not record.all_hold()


def test_paper_value_is_a_number_a_short_text_or_none(monkeypatch):
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    record = ChapterRecord("toy", "fast", "cpu", 0)
    assert record.check("a", "s", 1.0, "<", 2.0, paper="p", paper_value="slope -1").paper_value == "slope -1"
    assert record.check("b", "s", 1.0, "<", 2.0, paper="p", paper_value=2).paper_value == 2.0
    assert record.check("c", "s", 1.0, "<", 2.0, paper="p").deviation() is None
    with pytest.raises(ValueError, match="paper_value must be a number, a short text or None, got"):
        record.check("d", "s", 1.0, "<", 2.0, paper="p", paper_value=[1, 2])
    assert "not given" in record.table()._repr_html_()


def test_table_shows_the_spread_over_seeds(monkeypatch):
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    record = ChapterRecord("toy", "fast", "cpu", 0)
    record.check("a", "s", 1.0, "<", 2.0, paper="p")
    doc = {"chapters": {"toy": {"claims": {"a": {"seeds": [0, 1, 2], "values": [1.0, 1.2, 1.4],
                                                   "holds": [True, True, True]}}}}}
    summaries = seed_summaries(doc, "toy")
    assert summaries["a"] == SeedSummary((0, 1, 2), (1.0, 1.2, 1.4), 3)
    assert summaries["a"].mean == pytest.approx(1.2) and summaries["a"].spread == pytest.approx(0.2)
    assert "seeds 3/3 hold; mean 1.2 \u00b1 0.2" in record.table(summaries)._repr_html_()


def test_results_are_standard_json_with_null_for_nan(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"a": float("nan"), "b": [float("inf"), 1.0]})
    assert path.read_text().split() == ["{", '"a":', "null,", '"b":', "[", "null,", "1.0", "]", "}"]
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_glue_refuses_a_name_the_prose_could_not_reference():
    from dynbook_lib.core import glue

    with pytest.raises(ValueError, match="a glue name must be an identifier, got 'kfac error'"):
        glue("kfac error", 0.5)
    glue("kfac_error", 0.5)  # outside a kernel: nothing shown, nothing raised


def test_registry_takes_only_complete_full_runs_and_tables_show_them(tmp_path, monkeypatch):
    from dynbook_lib.cli import main
    from dynbook_lib.core.registry import full_run, register

    monkeypatch.delenv(RESULTS_ENV, raising=False)
    registry = tmp_path / "registry"
    monkeypatch.setenv("DYNBOOK_REGISTRY", str(registry))

    def results(profile, name="demo.json", device="cpu", finish=True):
        record = ChapterRecord("demo", profile, device if device != "cuda" else "cpu", 0,
                               results_file=tmp_path / "out" / "results" / name)
        record.check("c", "statement", 0.5, "<", 1.0, paper="p")
        if finish:
            record.finish()
        if device == "cuda":  # a CUDA run that does not name its GPU
            doc = json.loads(record.results_file.read_text())
            doc["device"] = "cuda"
            record.results_file.write_text(json.dumps(doc))
        return record.results_file

    fast_table = ChapterRecord("demo", "fast", "cpu", 0)
    fast_table.check("c", "statement", 0.4, "<", 1.0, paper="p")
    assert "full profile: not yet run at full scale" in repr(fast_table.table())
    with pytest.raises(ValueError, match="only full-profile results are registered, got profile 'fast'"):
        register(results("fast", "fast.json"), registry)
    with pytest.raises(ValueError, match="did not reach its reproduction table"):
        register(results("full", "running.json", finish=False), registry)
    with pytest.raises(ValueError, match="device cuda but no GPU named"):
        register(results("full", "cuda.json", device="cuda"), registry)
    assert full_run("demo") is None
    complete = results("full")  # a complete CPU run, of a chapter the book does not have
    # the command checks each file against its chapter's specification too, and names what it skipped (exit 1)
    assert main(["register", str(tmp_path / "out")]) == 1 and full_run("demo") is None
    register(complete)
    run = full_run("demo")
    assert run is not None and run.claims == {"c": (0.5, True)} and run.device == "cpu" and run.seed == 0
    assert "full profile: 0.5, holds (" in repr(fast_table.table()) and ", cpu, seed 0)" in repr(fast_table.table())
    full_table = ChapterRecord("demo", "full", "cpu", 0)
    full_table.check("c", "statement", 0.5, "<", 1.0, paper="p")
    assert "full profile" not in repr(full_table.table())  # the full run's own table
    assert main(["register", str(tmp_path / "empty")]) == 2


def test_register_command_checks_the_specification(tmp_path, monkeypatch, capsys):
    from dynbook_lib.chapters import BY_SLUG
    from dynbook_lib.cli import main

    monkeypatch.delenv(RESULTS_ENV, raising=False)
    monkeypatch.setenv("DYNBOOK_REGISTRY", str(tmp_path / "registry"))
    chapter = BY_SLUG["heavy-tails"]
    record = ChapterRecord(chapter.slug, "full", "cpu", 0, results_file=tmp_path / "out" / "results" / "h.json")
    for name in chapter.claims:
        record.check(name, "statement", 0.5, "<", 1.0, paper="p")
    record.finish()
    assert main(["register", str(tmp_path / "out")]) == 1  # its consistency check is missing
    assert "not recorded: critical_step_gives_alpha_two" in capsys.readouterr().err
    record.consistency("critical_step_gives_alpha_two", "statement", 0.1, "<", 1.0)
    record.finish()
    doc = json.loads(record.results_file.read_text())
    doc["claims"][0]["holds"] = False  # edited by hand
    record.results_file.write_text(json.dumps(doc))
    assert main(["register", str(tmp_path / "out")]) == 1
    assert "says holds=False" in capsys.readouterr().err
    record.save()
    assert main(["register", str(tmp_path / "out")]) == 0
    assert (tmp_path / "registry" / "heavy-tails.json").exists()

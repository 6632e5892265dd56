"""The full profile's code path on CPU at a tiny length (profile ``smoke``), for every chapter.

Each chapter runs through the runner with its ``*_SMOKE`` configuration: the full profile's models, data pipeline
(fake CIFAR-10 and MNIST files under ``$DYNBOOK_DATA`` where the full profile downloads), training loops,
measurements and claim recording, a few steps long. A chapter passes when it executes and records every claim and
consistency check of its specification (their values at this length mean nothing and are not judged). The summary
prints each chapter's seconds and peak resident memory; the README's table scales them to the full length.

Run alone with ``pytest -m full_smoke``; ``make test`` includes it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dynbook_lib.chapters import written_chapters
from dynbook_lib.data.fake import write_fake_data
from helpers import run_smoke_profile, smoke_results

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = written_chapters(ROOT)
pytestmark = pytest.mark.full_smoke


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """Every chapter's smoke run, two at a time with one thread each, into one output folder."""
    out = tmp_path_factory.mktemp("smoke")
    data = write_fake_data(tmp_path_factory.mktemp("fake-data"))
    return out, run_smoke_profile(out, data, "cpu", "--jobs", "2", "--threads", "1")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.slug)
def test_full_code_path_runs_at_a_tiny_length(smoke_run, chapter):
    results = smoke_results(*smoke_run, chapter)
    assert all(not c["required"] for c in results["claims"])  # a smoke run requires nothing
    memory = results.get("peak_memory") or {}
    print(f"{chapter.slug}: {results['seconds']:.1f} s, peak resident memory {memory.get('rss_mib')} MiB")

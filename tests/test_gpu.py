"""The GPU test set (``pytest -m gpu``), skipped without CUDA; the GPU workflow runs it before the full build.

* every chapter's full code path for a few steps on CUDA: the ``smoke`` profile with ``--device cuda`` on fake
  CIFAR-10/MNIST files, which must run and record every claim, with the GPU named in the results (its peak CUDA
  memory is printed);
* the toolbox on CPU and CUDA in float64 on a small network: the empirical NTK (every layout) and the Fisher in every
  representation agree to rounding.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from dynbook_lib.chapters import written_chapters
from dynbook_lib.data.fake import write_fake_data
from dynbook_lib.fisher import fisher_matrix
from dynbook_lib.ntk import empirical_ntk
from helpers import run_smoke_profile, smoke_results

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = written_chapters(ROOT)
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def cuda_smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cuda-smoke")
    return out, run_smoke_profile(out, write_fake_data(tmp_path_factory.mktemp("fake-data")), "cuda")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.slug)
def test_full_code_path_runs_on_cuda(cuda_smoke_run, chapter):
    results = smoke_results(*cuda_smoke_run, chapter)
    assert results["device"] == "cuda" and results["env"]["gpu"]
    print(f"{chapter.slug}: {results['seconds']:.1f} s on {results['env']['gpu']}, peak CUDA memory "
          f"{(results.get('peak_memory') or {}).get('cuda_mib')} MiB")


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)).double()


@pytest.mark.parametrize("layout", ["full", "blocks", "trace"])
def test_ntk_agrees_on_cpu_and_cuda(layout):
    model, x = small_net(), torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    cpu = empirical_ntk(model, x, layout=layout)
    cuda = empirical_ntk(copy.deepcopy(model).cuda(), x.cuda(), layout=layout)
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["dense", "block_diag", "diag", "kfac", "ekfac"])
@pytest.mark.parametrize("loss", ["regression", "classification", "bernoulli"])
def test_fisher_agrees_on_cpu_and_cuda(kind, loss):
    model, x = small_net(), torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    cpu = fisher_matrix(model, x, kind, loss).to_dense()
    cuda = fisher_matrix(copy.deepcopy(model).cuda(), x.cuda(), kind, loss).to_dense()
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-10, atol=1e-12)

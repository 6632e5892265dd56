"""Every module's docstring examples run and hold (doctest), found by walking the package: none is listed by hand."""

import doctest
import importlib
import pkgutil

import pytest
import torch
from torch import nn

import dynbook_lib

MODULES = sorted(m.name for m in pkgutil.walk_packages(dynbook_lib.__path__, "dynbook_lib.")
                 if not m.name.endswith("__main__"))


def test_every_module_is_found():
    assert {"dynbook_lib.runner", "dynbook_lib.core.claims", "dynbook_lib.diagonal"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name):
    module = importlib.import_module(name)
    torch.manual_seed(0)
    result = doctest.testmod(module, extraglobs={"torch": torch, "nn": nn}, optionflags=doctest.ELLIPSIS,
                             verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} fail"

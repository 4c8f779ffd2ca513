"""Every docstring example in the package runs and prints what it says (the style's "runnable
docstrings"): a default that changes without its example failing here is how cudatap's example went
stale in session 13. Examples that download or need a checkpoint carry ``# doctest: +SKIP``."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import uetransforms

# ``__main__`` runs the command line when imported: it is an entry point, with no examples
MODULES = sorted(m.name for m in pkgutil.walk_packages(uetransforms.__path__, "uetransforms.")
                 if not m.name.endswith(".__main__"))


def test_the_package_has_modules_to_check():
    assert "uetransforms.algorithms.cudatap" in MODULES and len(MODULES) > 40


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, one_thread):
    module = importlib.import_module(name)
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(module, name):  # each example sees its module's globals, as pytest --doctest-modules
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} docstring examples failed (output above)"

"""The examples in tracker's docstrings run, and say what they do.

An example written with ``>>>`` is run here; one that needs a training script around it
(a live run, a framework) is written as a plain example block instead. Integrations are
left out: importing them imports their framework.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import tracker


def _modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(tracker.__path__, "tracker."):
        name = info.name
        if name.endswith("__main__"):
            continue  # running it is running the command
        if ".integrations." in name and not name.endswith("._common"):
            continue
        names.append(name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # an example that opens a run writes here, not in the checkout
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_examples_are_many() -> None:
    attempted = 0
    for name in _modules():
        finder = doctest.DocTestFinder()
        for test in finder.find(importlib.import_module(name)):
            attempted += len(test.examples)
    assert attempted >= 40  # a doctest run that finds nothing must not pass quietly

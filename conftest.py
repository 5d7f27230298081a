"""Shared by the unit tests, the docstring examples (`pytest --doctest-modules peftlab`) and the notebooks.

Under nbval each notebook runs top to bottom in a fresh kernel, its explorer cells included (they are
tagged nbval-ignore-output, not nbval-skip). A notebook must finish within LIMIT_S seconds in all, kernel
start and every cell, the time a learner running all cells or a teacher in front of a class gets. The
limit is for 2 cores or more: with one thread (OMP_NUM_THREADS=1, the reproducibility run) it is not
checked, and PEFTLAB_NOTEBOOK_LIMIT_S sets another limit (0 turns it off). (One conftest for all three:
a second one in notebooks/ would clash with tests/conftest.py under --doctest-modules.)
"""

from __future__ import annotations

import importlib.util
import os
import time

import pytest
import torch

OPTIONAL = {"peftlab/hf.py": "transformers"}  # examples that need an optional extra
LIMIT_S = float(os.environ.get("PEFTLAB_NOTEBOOK_LIMIT_S", "60"))
_started: dict[str, float] = {}  # notebook path -> when its first cell's setup (the kernel start) began
_last: dict[str, str] = {}  # notebook path -> node id of its last cell


def _notebook(item) -> str | None:
    return str(item.fspath) if type(item).__name__ == "IPyNbCell" else None


def pytest_collection_modifyitems(config, items):
    for item in items:
        for path, module in OPTIONAL.items():
            if item.nodeid.startswith(path) and importlib.util.find_spec(module) is None:
                item.add_marker(pytest.mark.skip(reason=f"needs {module} (pip install 'peftlab[hf]')"))
        if (path := _notebook(item)) is not None:
            _last[path] = item.nodeid


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    path = _notebook(item)
    if path is not None and path not in _started:
        _started[path] = time.perf_counter()  # before nbval's collector setup starts the kernel


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    path = _notebook(item)
    if (path is None or report.when != "call" or _last.get(path) != item.nodeid or not report.passed
            or LIMIT_S <= 0 or torch.get_num_threads() < 2 or path not in _started):
        return
    spent = time.perf_counter() - _started[path]
    if spent > LIMIT_S:
        report.outcome = "failed"
        report.longrepr = (f"{os.path.basename(path)} took {spent:.0f} s to run top to bottom (kernel start and "
                           f"every cell, explorers included), over the {LIMIT_S:.0f} s a notebook may take on "
                           f"{torch.get_num_threads()} threads")

"""Shared by the unit tests and the docstring examples (`pytest --doctest-modules peftlab`)."""

import importlib.util

import pytest

OPTIONAL = {"peftlab/hf.py": "transformers"}  # examples that need an optional extra


def pytest_collection_modifyitems(config, items):
    for item in items:
        for path, module in OPTIONAL.items():
            if item.nodeid.startswith(path) and importlib.util.find_spec(module) is None:
                item.add_marker(pytest.mark.skip(reason=f"needs {module} (pip install 'peftlab[hf]')"))

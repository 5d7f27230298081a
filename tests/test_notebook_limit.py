"""The root conftest.py fails a notebook that takes longer than its limit under nbval, and only then."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parent.parent / "conftest.py"


def notebook(cells: list[str]) -> dict:
    return {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": c}
                      for c in cells],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def run_nbval(tmp_path, limit: str, threads: str = "2") -> subprocess.CompletedProcess:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")  # the root conftest, with the limit
    (tmp_path / "slow.ipynb").write_text(json.dumps(notebook(["import time", "time.sleep(3)"])))
    env = {"PATH": str(Path(sys.executable).parent), "PEFTLAB_NOTEBOOK_LIMIT_S": limit, "OMP_NUM_THREADS": threads,
           "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           "--nbval-current-env", "slow.ipynb"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("limit, threads, fails", [("2", "2", True), ("120", "2", False), ("2", "1", False)])
def test_a_notebook_over_its_limit_fails(tmp_path, limit, threads, fails):
    done = run_nbval(tmp_path, limit, threads)
    if fails:
        assert done.returncode == 1, done.stdout
        assert re.search(r"slow\.ipynb took \d+ s to run top to bottom", done.stdout), done.stdout
        assert "over the 2 s a notebook may take on 2 threads" in done.stdout
    else:  # within the limit, or one thread (the reproducibility run), where the limit is not checked
        assert done.returncode == 0, done.stdout

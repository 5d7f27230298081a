"""Build notebooks/NN_*.ipynb from notebooks/src/NN_*.py and execute them, committing outputs.

    .venv/bin/python scripts/build_notebooks.py            # every notebook
    .venv/bin/python scripts/build_notebooks.py 01 10      # only those whose name starts so

Sources are jupytext "percent" scripts: `# %%` starts a code cell, `# %% [markdown]` a markdown cell
(its lines start with `# `), and `# %% tags=["nbval-skip"]` (or `["nbval-ignore-output"]`) gives the
cell that nbval tag. jupytext.toml pairs each notebook with its source, so there are two ways to work:

- edit notebooks/src/NN_*.py (readable diffs) and rebuild the notebook with this script;
- or edit notebooks/NN_*.ipynb in JupyterLab (`bash scripts/lab.sh`; jupytext comes with the dev
  extra): saving it also writes the paired .py.

`jupytext --sync notebooks/*.ipynb` brings both sides in line (the newer side wins); only this script
re-executes, so rebuild a notebook whose code changed before committing its outputs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jupytext
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent / "notebooks"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def notebook(src: Path):
    """The notebook of one source, not executed."""
    nb = jupytext.read(src, fmt="py:percent")
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    return nb


def build(src: Path) -> float:
    nb = notebook(src)
    start = time.perf_counter()
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    seconds = time.perf_counter() - start
    jupytext.write(nb, ROOT / f"{src.stem}.ipynb", fmt="ipynb")
    return seconds


if __name__ == "__main__":
    wanted = sys.argv[1:]
    for src in sorted((ROOT / "src").glob("*.py")):
        if not wanted or any(src.stem.startswith(w) for w in wanted):
            print(f"{src.stem}: {build(src):.1f} s", flush=True)

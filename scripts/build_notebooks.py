"""Build notebooks/NN_*.ipynb from notebooks/src/NN_*.py and execute them, committing outputs.

    .venv/bin/python scripts/build_notebooks.py            # every notebook
    .venv/bin/python scripts/build_notebooks.py 01 10      # only those whose name starts so
    .venv/bin/python scripts/build_notebooks.py --inputs-only 01   # new code, old outputs (see below)

Sources are jupytext "percent" scripts: `# %%` starts a code cell, `# %% [markdown]` a markdown cell
(its lines start with `# `), and `# %% tags=["nbval-ignore-output"]` gives the cell that nbval tag (its
output is not compared; no cell is skipped). The explorer cell is tagged `["explorer", "nbval-ignore-output"]`;
scripts/explorer_pictures.py photographs it. jupytext.toml pairs each notebook with its source, so there are two ways to work:

- edit notebooks/src/NN_*.py (readable diffs) and rebuild the notebook with this script;
- or edit notebooks/NN_*.ipynb in JupyterLab (`bash scripts/lab.sh`; jupytext comes with the dev
  extra): saving it also writes the paired .py.

`jupytext --sync notebooks/*.ipynb` brings both sides in line (the newer side wins); only this script
re-executes, so rebuild a notebook whose code changed before committing its outputs.

`--inputs-only` copies the sources into the committed notebook and keeps its outputs, for an edit that
cannot change an output (an import renamed); it refuses a notebook whose cells no longer line up one to
one. The test suite (nbval) then re-executes it and compares, so a wrong use of it fails there.
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


def update_inputs(src: Path) -> int:
    """Copy the sources of `src` into its committed notebook, outputs kept; returns the cells changed."""
    new, path = notebook(src), ROOT / f"{src.stem}.ipynb"
    old = jupytext.read(path, fmt="ipynb")
    kinds = lambda nb: [c.cell_type for c in nb.cells]
    if kinds(new) != kinds(old):
        raise SystemExit(f"{src.stem}: the cells no longer line up with the committed notebook; rebuild it")
    changed = 0
    for a, b in zip(old.cells, new.cells):
        if a.source != b.source or a.metadata.get("tags") != b.metadata.get("tags"):
            a.source, changed = b.source, changed + 1
            a.metadata["tags"] = b.metadata.get("tags", [])
            if not a.metadata["tags"]:
                del a.metadata["tags"]
    jupytext.write(old, path, fmt="ipynb")
    return changed


if __name__ == "__main__":
    inputs_only = "--inputs-only" in sys.argv[1:]
    wanted = [a for a in sys.argv[1:] if a != "--inputs-only"]
    for src in sorted((ROOT / "src").glob("*.py")):
        if not wanted or any(src.stem.startswith(w) for w in wanted):
            if inputs_only:
                print(f"{src.stem}: {update_inputs(src)} cells' sources updated, outputs kept", flush=True)
            else:
                print(f"{src.stem}: {build(src):.1f} s", flush=True)

"""Build notebooks/NN_*.ipynb from notebooks/src/NN_*.py and execute them, committing outputs.

    .venv/bin/python scripts/build_notebooks.py            # every notebook
    .venv/bin/python scripts/build_notebooks.py 01 10      # only those

Sources use the "percent" format: a line `# %%` starts a code cell, `# %% [markdown]` a markdown
cell whose lines start with `# `; a code cell whose first line is `# nbval-skip` (or
`# nbval-ignore-output`) gets that nbval tag. Editing the .py and rebuilding keeps diffs readable.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent / "notebooks"


def parse(source: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    kind, lines = None, []

    def flush():
        text = "\n".join(lines).strip("\n")
        if kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(
                "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in text.splitlines())))
        elif kind == "code" and text:
            cell = nbformat.v4.new_code_cell(text)
            first = text.splitlines()[0].strip()
            if first in ("# nbval-skip", "# nbval-ignore-output"):
                cell.metadata["tags"] = [first[2:]]
            nb.cells.append(cell)

    for line in source.splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        else:
            lines.append(line)
    flush()
    return nb


def build(src: Path) -> float:
    nb = parse(src.read_text())
    start = time.perf_counter()
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    seconds = time.perf_counter() - start
    nbformat.write(nb, ROOT / f"{src.stem}.ipynb")
    return seconds


if __name__ == "__main__":
    wanted = sys.argv[1:]
    for src in sorted((ROOT / "src").glob("*.py")):
        if not wanted or any(src.stem.startswith(w) for w in wanted):
            print(f"{src.stem}: {build(src):.1f} s", flush=True)

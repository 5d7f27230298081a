"""Take the static picture of each notebook's explorer: notebooks/figures/NN_explorer.png.

    .venv/bin/python scripts/explorer_pictures.py          # every notebook
    .venv/bin/python scripts/explorer_pictures.py 05 14    # only those whose name starts so

Each notebook is opened in JupyterLab with headless Chromium (scripts/lab_browser.py), all its cells
are run, and once its explorer cell (the code cell tagged "explorer") has run and its output has stopped
changing for a few seconds (and no longer says it is measuring or training), that output is photographed. This is what a learner sees on first running
the notebook, at the explorer's default settings. The markdown cell above each explorer shows the
picture, so the notebook reads well on a code host and before it runs (tests/test_layout.py checks it).
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lab_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    IDLE,
    MINUTE,
    free_port,
    fresh_copy,
    run_all,
    shutdown_kernels,
    start_lab,
    stop_lab,
    wait_for_server,
)

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
FIGURES = NOTEBOOKS / "figures"
SETTLE_S, MAX_WAIT_S = 4.0, 240.0
BUSY = re.compile(r"\b(measuring|training|starting)\b", re.IGNORECASE)  # an explorer still at its first view


def explorer_cell(notebook: Path) -> int:
    """Index of the notebook's explorer cell (tagged "explorer"), counting every cell."""
    cells = json.loads(notebook.read_text())["cells"]
    found = [i for i, c in enumerate(cells) if "explorer" in c.get("metadata", {}).get("tags", [])]
    if len(found) != 1:
        raise ValueError(f"{notebook.name} has {len(found)} cells tagged 'explorer'; expected one")
    return found[0]


def photograph(page, server: str, notebook: str, index: int, target: Path) -> float:
    """Run `notebook` on the server at `server`, wait for cell `index` to run and its output to settle, save the
    picture to `target`; returns the seconds from Run All to a settled explorer."""
    run_all(page, server, notebook)
    start = time.monotonic()
    cell = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").nth(index)
    cell.scroll_into_view_if_needed()
    try:
        expect(cell.locator(".jp-InputPrompt")).to_have_text(re.compile(r"\[\d+\]:"), timeout=4 * MINUTE)  # it ran
    except AssertionError:
        page.screenshot(path=str(target.with_suffix(".failed.png")), full_page=True)
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        raise RuntimeError(f"the explorer cell {index} did not run; {errors.count()} error outputs on the page: "
                           + " | ".join(e.inner_text()[-300:] for e in errors.all()[:2])) from None
    output = cell.locator(".jp-Cell-outputWrapper")
    last, stable_since = None, time.monotonic()
    while time.monotonic() - start < MAX_WAIT_S:
        html = output.inner_html()
        if html != last:
            last, stable_since = html, time.monotonic()
        elif (time.monotonic() - stable_since >= SETTLE_S and not BUSY.search(output.inner_text())
              and page.get_by_text(IDLE).first.is_visible()):
            break
        time.sleep(0.5)
    else:
        print(f"  (still changing or busy after {MAX_WAIT_S:.0f} s; photographed as it is)", flush=True)
    output.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    output.screenshot(path=str(target))
    return time.monotonic() - start


def main(prefixes: list[str]) -> None:
    notebooks = [nb for nb in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
                 if not prefixes or any(nb.name.startswith(p) for p in prefixes)]
    FIGURES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for nb in notebooks:
            fresh_copy(nb, directory)
        port = free_port()
        proc = start_lab(directory, port)
        try:
            wait_for_server(port, proc, directory)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                for nb in notebooks:
                    page = browser.new_page(viewport={"width": 1300, "height": 1000})
                    target = FIGURES / f"{nb.name[:2]}_explorer.png"
                    seconds = photograph(page, f"http://127.0.0.1:{port}", nb.name, explorer_cell(nb), target)
                    print(f"{nb.name}: {target.relative_to(NOTEBOOKS.parent)} ({seconds:.0f} s from Run All)",
                          flush=True)
                    page.close()
                    shutdown_kernels(port)  # one kernel at a time: no other notebook's threads compete
                browser.close()
        finally:
            stop_lab(proc)


if __name__ == "__main__":
    main(sys.argv[1:])

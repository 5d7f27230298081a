"""A real browser drives two explorers in JupyterLab.

- Notebook 11: run all cells, change the RankSweep widget's ranks, press Run and read the new table;
  then press Stop during a longer sweep and see it end early, which works only if the sweep leaves the
  kernel free to handle the click.
- Notebook 14: run all cells, then change MemoryExplorer's controls in bursts faster than a
  measurement; the status must end on a measurement of the final controls and stay there (no older
  result may finish last and stay on screen).

Needs Debian's Chromium at /usr/bin/chromium (`apt-get install -y chromium`) and the playwright
Python package; `playwright install` is never needed. The notebook is copied, without its outputs,
into a temporary directory, so the committed one is never autosaved over.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
sys.path.insert(0, str(ROOT / "scripts"))
from lab_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    IDLE,
    MINUTE,
    free_port,
    fresh_copy,
    run_all,
    start_lab,
    stop_lab,
    wait_for_server,
)

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (install it with: apt-get install -y chromium)", allow_module_level=True)
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError as e:
    pytest.skip(f"playwright cannot be imported ({e}); pip install playwright", allow_module_level=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a fresh port, serving fresh copies of notebooks 11 and 14; yields its URL."""
    directory = tmp_path_factory.mktemp("lab")
    for name in ("11_choosing_lora_rank.ipynb", "14_memory_bottleneck.ipynb"):
        if not (NOTEBOOKS / name).exists():
            pytest.fail(f"{NOTEBOOKS / name} is missing; build it with scripts/build_notebooks.py")
        fresh_copy(NOTEBOOKS / name, directory)
    port = free_port()
    proc = start_lab(directory, port)
    try:
        try:
            wait_for_server(port, proc, directory)
        except RuntimeError as e:
            pytest.fail(str(e))
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_lab(proc)


@pytest.fixture
def page(lab):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def test_rank_sweep_widget_in_jupyterlab(lab, page):
    run_all(page, lab, "11_choosing_lora_rank.ipynb")
    widget = page.locator(".widget-vbox", has=page.locator(".widget-select-multiple")).last
    ranks = widget.locator(".widget-select-multiple select")
    expect(ranks).to_be_visible(timeout=4 * MINUTE)  # Run All trains three live runs first
    status = widget.locator(".widget-html").first  # the line under the controls
    expect(status).to_contain_text("press Run", timeout=MINUTE)
    # every cell above the widget has finished before its display cell ran
    expect(page.get_by_text(IDLE).first).to_be_visible(timeout=MINUTE)

    # 1) another set of ranks: the table shows exactly the new ranks
    ranks.select_option(label=["2", "8"])
    widget.locator("button.jupyter-button", has_text="Run").click()
    table = widget.locator("table.rank-sweep")
    expect(status).to_contain_text("done: 2 of 2 ranks", timeout=MINUTE)
    first_column = table.locator("tr td:first-child")
    expect(first_column).to_have_text(["2", "8"])

    # 2) Stop during a long sweep: the click reaches the kernel while it trains
    ranks.select_option(label=["1", "2", "4", "8", "16", "32", "64"])
    widget.locator("button.jupyter-button", has_text="Run").click()
    expect(status).to_contain_text("training r=", timeout=MINUTE)
    widget.locator("button.jupyter-button", has_text="Stop").click()
    expect(status).to_contain_text("stopped after", timeout=MINUTE)
    assert table.locator("tr td:first-child").count() < 7


def test_memory_explorer_under_bursts_in_jupyterlab(lab, page):
    run_all(page, lab, "14_memory_bottleneck.ipynb")
    widget = page.locator(".widget-vbox", has=page.locator(".widget-toggle-buttons")).last
    status = widget.locator(".widget-html").first
    expect(status).to_contain_text("B/param", timeout=4 * MINUTE)  # the first measurement is drawn
    expect(page.get_by_text(IDLE).first).to_be_visible(timeout=MINUTE)
    method = widget.locator(".widget-toggle-buttons").first
    batch = widget.locator(".widget-slider").first
    handle = batch.locator(".noUi-handle")

    def toggle(name: str) -> None:
        method.locator("button", has_text=re.compile(f"^{name}$")).click()

    for burst in range(4):  # each burst is faster than one measurement of the base model
        for name in ("lora", "qlora", "full", "lora", "qlora")[burst:]:
            toggle(name)
        handle.focus()
        for _ in range(burst + 1):
            page.keyboard.press("ArrowLeft" if burst % 2 else "ArrowRight")
        page.wait_for_timeout(300 * burst)  # bursts of different lengths, some landing mid-measurement
    final_method = method.locator("button.mod-active").inner_text().strip()
    final_batch = batch.locator(".widget-readout").inner_text().strip()
    final_seq = widget.locator(".widget-slider").nth(1).locator(".widget-readout").inner_text().strip()
    want = f"{final_method} adamw b{final_batch} s{final_seq} fp32"
    expect(status).to_contain_text(f"{want}: total", timeout=2 * MINUTE)
    page.wait_for_timeout(5_000)  # long enough for any older measurement to finish and show itself
    expect(status).to_contain_text(f"{want}: total")
    expect(status).not_to_contain_text("measuring")

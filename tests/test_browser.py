"""A real browser drives notebook 11 in JupyterLab: run all cells, change the RankSweep widget's ranks,
press Run and read the new table; then press Stop during a longer sweep and see it end early, which
works only if the sweep leaves the kernel free to handle the click.

Needs Debian's Chromium at /usr/bin/chromium (`apt-get install -y chromium`) and the playwright
Python package; `playwright install` is never needed. The notebook is copied, without its outputs,
into a temporary directory, so the committed one is never autosaved over.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "11_choosing_lora_rank.ipynb"
CHROMIUM = "/usr/bin/chromium"
JUPYTER = Path(sys.executable).parent / "jupyter"

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (install it with: apt-get install -y chromium)", allow_module_level=True)
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError as e:
    pytest.skip(f"playwright cannot be imported ({e}); pip install playwright", allow_module_level=True)

MINUTE = 60_000  # playwright timeouts are in ms


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_copy(directory: Path) -> Path:
    """The notebook without outputs or saved widget state, so every widget on the page is live."""
    nb = json.loads(NOTEBOOK.read_text())
    nb["metadata"].pop("widgets", None)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    target = directory / NOTEBOOK.name
    target.write_text(json.dumps(nb))
    return target


def start_lab(directory: Path, port: int) -> subprocess.Popen:
    settings = directory / ".settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(directory / ".config"),
           "JUPYTER_RUNTIME_DIR": str(directory / ".runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(directory / ".settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(directory / ".workspaces")}
    cmd = [str(JUPYTER), "lab", "--allow-root", "--no-browser", "--ServerApp.token=", "--ServerApp.password=",
           "--ServerApp.ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
           f"--ServerApp.root_dir={directory}"]
    log = open(directory / "lab.log", "wb")
    return subprocess.Popen(cmd, cwd=directory, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for_server(port: int, proc: subprocess.Popen, directory: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{(directory / 'lab.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"jupyter lab did not answer on port {port} within {seconds} s")


def stop_lab(proc: subprocess.Popen) -> None:
    proc.terminate()  # jupyter shuts its kernels down on SIGTERM
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def test_rank_sweep_widget_in_jupyterlab(tmp_path):
    if not NOTEBOOK.exists():
        pytest.fail(f"{NOTEBOOK} is missing; build it with scripts/build_notebooks.py 11")
    fresh_copy(tmp_path)
    port = free_port()
    proc = start_lab(tmp_path, port)
    try:
        wait_for_server(port, proc, tmp_path)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--no-first-run"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK.name}", timeout=MINUTE)
                # the execution indicator says idle before any kernel exists; this text needs the kernel
                expect(page.get_by_text("(ipykernel) | Idle").first).to_be_visible(timeout=MINUTE)

                page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
                page.locator(".lm-Menu-item", has=page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$"))).click()

                widget = page.locator(".widget-vbox", has=page.locator(".widget-select-multiple")).last
                ranks = widget.locator(".widget-select-multiple select")
                expect(ranks).to_be_visible(timeout=4 * MINUTE)  # Run All trains three live runs first
                status = widget.locator(".widget-html").first  # the line under the controls
                expect(status).to_contain_text("press Run", timeout=MINUTE)
                # every cell above the widget has finished before its display cell ran
                expect(page.get_by_text("(ipykernel) | Idle").first).to_be_visible(timeout=MINUTE)

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
            finally:
                browser.close()
    finally:
        stop_lab(proc)

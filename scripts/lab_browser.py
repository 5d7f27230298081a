"""Drive JupyterLab with a real browser: a server on a fresh port, headless Chromium, Run All.

Shared by tests/test_browser.py and scripts/explorer_pictures.py. Needs Debian's Chromium at
/usr/bin/chromium (`apt-get install -y chromium`) and the playwright package (`pip install playwright`);
`playwright install` is never needed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
JUPYTER = Path(sys.executable).parent / "jupyter"
MINUTE = 60_000  # playwright timeouts are in ms
IDLE = "(ipykernel) | Idle"  # the status bar, once a kernel exists and has nothing to do


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_copy(notebook: Path, directory: Path) -> Path:
    """`notebook` copied into `directory` without outputs or saved widget state, so every widget on the
    page is live and the committed notebook is never autosaved over."""
    nb = json.loads(notebook.read_text())
    nb["metadata"].pop("widgets", None)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    target = directory / notebook.name
    target.write_text(json.dumps(nb))
    return target


def start_lab(directory: Path, port: int) -> subprocess.Popen:
    """JupyterLab serving `directory` on 127.0.0.1:`port`, with its settings kept inside `directory`."""
    settings = directory / ".settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    notebook = directory / ".settings" / "@jupyterlab" / "notebook-extension"
    notebook.mkdir(parents=True, exist_ok=True)  # every cell in the page, so a cell can be found by its index
    (notebook / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(directory / ".config"),
           "JUPYTER_RUNTIME_DIR": str(directory / ".runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(directory / ".settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(directory / ".workspaces")}
    cmd = [str(JUPYTER), "lab", "--allow-root", "--no-browser", "--ServerApp.token=", "--ServerApp.password=",
           "--ServerApp.ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
           f"--ServerApp.root_dir={directory}", "--ServerApp.disable_check_xsrf=True"]  # a local test server
    log = open(directory / "lab.log", "wb")
    return subprocess.Popen(cmd, cwd=directory, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for_server(port: int, proc: subprocess.Popen, directory: Path, seconds: float = 60) -> None:
    """Return once the server answers; RuntimeError if it exits or stays silent for `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n"
                               f"{(directory / 'lab.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"jupyter lab did not answer on port {port} within {seconds} s")


def stop_lab(proc: subprocess.Popen) -> None:
    proc.terminate()  # jupyter shuts its kernels down on SIGTERM
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def shutdown_kernels(port: int) -> None:
    """Shut down every kernel the server on `port` runs (its REST API; no token is set)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/kernels", timeout=10) as r:
        kernels = json.load(r)
    for kernel in kernels:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/kernels/{kernel['id']}", method="DELETE")
        urllib.request.urlopen(request, timeout=30).close()


def run_all(page, server: str, notebook: str) -> None:
    """Open `notebook` (a file name) on the server at `server` in a workspace of its own, so no tab of an
    earlier notebook is restored next to it, and run all its cells (returns once a cell is queued)."""
    from playwright.sync_api import expect
    page.goto(f"{server}/lab/workspaces/{Path(notebook).stem}/tree/{notebook}?reset", timeout=MINUTE)
    # the execution indicator says idle before any kernel exists; this text needs the kernel
    expect(page.get_by_text(IDLE).first).to_be_visible(timeout=MINUTE)
    started = page.locator(".jp-InputPrompt", has_text=re.compile(r"\[(\*|\d+)\]:")).first
    for attempt in range(3):  # a click that lands while the page is still settling is sometimes lost
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-item", has=page.locator(".lm-Menu-itemLabel",
                                                       has_text=re.compile(r"^Run All Cells$"))).click()
        try:
            expect(started).to_be_visible(timeout=20_000)  # a cell is queued or has run
            return
        except AssertionError:
            if attempt == 2:
                raise

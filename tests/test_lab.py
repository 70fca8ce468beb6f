"""JupyterLab as its users meet it: open chapter 1, run all cells, move the live ε slider.

Starts the venv's ``jupyter lab`` on a free port of 127.0.0.1 (random token, private Jupyter/IPython folders,
a throw-away copy of ``book/``, ``PURIFY_PROFILE=smoke``, ``PURIFY_WIDGETS=live``), opens
``01_attacks.ipynb`` in headless Chromium, runs every cell from the "Run" menu and fails on any error output.
Then it moves the ε slider of the attack explorer and waits for the kernel to send a new frame (in live mode
nothing is precomputed), and moves it back. No request may leave 127.0.0.1. On failure, a screenshot and
the server log are left in the test's tmp folder.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from test_book import block_remote

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "01_attacks.ipynb"
# the label of the second ε of chapter 1's smoke grid [0, 0.1, 0.3], as attack_explorer writes it
EPS_NEXT = "0.1 (25.5/255)"
SERVER_TIMEOUT_S = 90
RUN_ALL_TIMEOUT_S = 480  # chapter 1 at smoke: ~20 s alone, 3-4 min on 2 cores at a load of ~10
FRAME_TIMEOUT_S = 60
KERNEL_IDLE = re.compile(r"^(?!No Kernel).* \| Idle$")

# the state of the open notebook: "error: <text>" on an error output, "done" once every code cell has an
# execution count and none runs, else null (what ``wait_for_function`` waits on)
RUN_STATE_JS = r"""() => {
    const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
    if (!panel) return null;
    const outputs = Array.from(panel.querySelectorAll(
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'], .jp-RenderedText"));
    const failed = /Traceback \(most recent call last\)|^\w*(Error|Exception): /m;
    const error = outputs.find(o => failed.test(o.textContent));
    if (error) return 'error: ' + error.textContent.slice(0, 1500);
    const prompts = Array.from(panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt'))
        .map(p => p.textContent.trim());
    const idle = panel.querySelector(".jp-Notebook-ExecutionIndicator[data-status='idle']");
    return idle && prompts.length && prompts.every(p => /^\[\d+\]:$/.test(p)) ? 'done' : null;
}"""

# SHA-256 of the bytes behind an <img> (a blob: URL for an ipywidgets Image)
IMAGE_HASH_JS = """async img => {
    const bytes = await (await fetch(img.src)).arrayBuffer();
    const digest = await crypto.subtle.digest('SHA-256', bytes);
    return Array.from(new Uint8Array(digest), b => b.toString(16).padStart(2, '0')).join('');
}"""


def _free_port() -> int:
    """A port of 127.0.0.1 that is free now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _lab_env(tmp: Path) -> dict[str, str]:
    """The server's environment: smoke profile, live widgets, offline, all Jupyter/IPython folders in ``tmp``.

    The venv's kernel spec (``.venv/share/jupyter/kernels/python3``) is still found: Jupyter always searches
    ``sys.prefix/share/jupyter``.
    """
    env = dict(os.environ)
    env.update(PURIFY_PROFILE="smoke", PURIFY_WIDGETS="live", PURIFY_DOWNLOAD="0",
               PURIFY_CACHE=str(tmp / "cache"), PURIFY_RESULTS=str(tmp / "results"),
               JUPYTER_CONFIG_DIR=str(tmp / "jupyter-config"), JUPYTER_DATA_DIR=str(tmp / "jupyter-data"),
               JUPYTER_RUNTIME_DIR=str(tmp / "jupyter-runtime"), IPYTHONDIR=str(tmp / "ipython"),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    # no news/update toast over the notebook, and no request for it to jupyter.org
    settings = tmp / "jupyter-config" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    return env


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A running ``jupyter lab`` serving a copy of ``book/``: yields ``(base URL, token, log path)``."""
    tmp = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "book", tmp / "book",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "_build"))
    env = _lab_env(tmp)
    kernels = subprocess.run([str(Path(sys.executable).parent / "jupyter"), "kernelspec", "list", "--json"],
                             env=env, capture_output=True, text=True, check=True).stdout
    assert "python3" in json.loads(kernels)["kernelspecs"], f"no python3 kernel spec visible: {kernels}"

    port, token = _free_port(), secrets.token_hex(16)
    command = [str(Path(sys.executable).parent / "jupyter-lab"), "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={tmp / 'book'}"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log_path = tmp / "server.log"
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, env=env, cwd=tmp / "book", stdout=log, stderr=subprocess.STDOUT)
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never through a proxy
    try:
        deadline = time.monotonic() + SERVER_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"jupyter lab exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with direct.open(f"{url}/api/status?token={token}", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer in {SERVER_TIMEOUT_S} s:\n"
                            f"{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, token, log_path
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_lab_runs_chapter_and_live_explorer_recomputes(lab, browser, tmp_path):
    """Chapter 1 runs cleanly; one ε step gets a new frame from the kernel, a step back the first frame."""
    from playwright.sync_api import expect

    url, token, log_path = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    remote = block_remote(page)
    try:
        page.goto(f"{url}/lab/tree/{NOTEBOOK}?token={token}", timeout=120_000)
        notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
        expect(notebook.locator(".jp-CodeCell").first).to_be_visible(timeout=120_000)
        # the status bar's "Python 3 (ipykernel) | Idle": the kernel is connected (the toolbar's indicator
        # already reads idle while there is no kernel yet, and Run All then runs nothing)
        kernel = page.locator("#jp-main-statusbar .jp-StatusBar-TextItem", has_text=KERNEL_IDLE)
        expect(kernel).to_be_visible(timeout=120_000)

        notebook.locator(".jp-Notebook").click()  # the notebook is the current widget: Run All acts on it
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.locator(".lm-Menu-item[data-command='runmenu:run-all']:not(.lm-mod-disabled)").click()  # Run All
        state = page.wait_for_function(RUN_STATE_JS, timeout=RUN_ALL_TIMEOUT_S * 1000, polling=500)
        state = state.json_value()
        assert state == "done", f"{NOTEBOOK}: a cell failed in JupyterLab:\n{state}"

        explorer = notebook.locator(".jp-OutputArea-output").filter(
            has=page.locator(".widget-slider .widget-label", has_text="ε"))
        expect(explorer).to_have_count(1, timeout=30_000)
        explorer.scroll_into_view_if_needed()
        assert explorer.locator(".widget-stack").count() == 0, "the explorer is precomputed, not live"
        slider = explorer.locator(".widget-slider").filter(has=page.locator(".widget-label", has_text="ε"))
        readout, image = slider.locator(".widget-readout"), explorer.locator("img")
        expect(image).to_have_count(1, timeout=30_000)
        first_label, first_hash = readout.inner_text(), image.evaluate(IMAGE_HASH_JS)

        def move(key: str, label: str, old_src: str) -> str:
            """Press ``key`` on the ε handle; wait for ``label`` in the readout and a new frame; its hash."""
            slider.locator(".noUi-handle").focus()
            page.keyboard.press(key)
            expect(readout).to_have_text(label, timeout=15_000)
            page.wait_for_function("([img, src]) => img.src !== src && img.complete",
                                   arg=[image.element_handle(), old_src], timeout=FRAME_TIMEOUT_S * 1000)
            return image.evaluate(IMAGE_HASH_JS)

        moved_hash = move("ArrowRight", EPS_NEXT, image.get_attribute("src"))
        assert moved_hash != first_hash, f"ε {first_label} → {EPS_NEXT}: the kernel sent the same frame"
        back_hash = move("ArrowLeft", first_label, image.get_attribute("src"))
        assert back_hash == first_hash, f"ε back to {first_label}: the frame differs from the first one"
    except BaseException:
        page.screenshot(path=str(tmp_path / "lab.png"), full_page=True)
        shutil.copy(log_path, tmp_path / "server.log")
        print(f"screenshot and server log in {tmp_path}")
        raise
    finally:
        page.close()
    assert not remote, f"requests to non-local addresses {remote[:5]}"

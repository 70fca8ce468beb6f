"""Browser check of the built book (``_build/html``): every page loads offline in headless Chromium.

Fails on a JavaScript error, a broken image, a widget that does not render, any request to a non-local
address, an ε slider whose movement does not change the displayed frame, a code block or table wider than
the text column (cut at the right edge), or an empty output area taller than 40 px. Saves one screenshot per
page beside the checked book (``_build/<profile>/_build/screenshots/``). Run after ``make book`` or the smoke
build of ``make test``; ``make browser BROWSER_PROFILE=quick`` checks the quick book.
"""
from __future__ import annotations

import functools
import http.server
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
# the built book to check: PURIFY_HTML, else the book of profile PURIFY_PROFILE (default smoke) built by make
HTML = Path(os.environ.get("PURIFY_HTML")
            or ROOT / "_build" / (os.environ.get("PURIFY_PROFILE") or "smoke") / "_build" / "html").resolve()
SHOTS = HTML.parent / "screenshots"
LOCAL = {"127.0.0.1", "localhost"}
PAGES = (sorted(p.relative_to(HTML).as_posix() for p in (HTML / "book").glob("*.html"))
         if HTML.is_dir() else [])


def block_remote(page) -> list[str]:
    """Let ``page`` load only local, data: and blob: URLs; returns the list the blocked URLs are added to."""
    remote: list[str] = []

    def route(request_route):
        url = request_route.request.url
        if url.startswith(("data:", "blob:")) or urlparse(url).hostname in LOCAL:
            request_route.continue_()
        else:
            remote.append(url)
            request_route.abort()

    page.route("**/*", route)
    return remote


@pytest.fixture(scope="module")
def server():
    """``python -m http.server`` equivalent on a free port of 127.0.0.1, serving ``_build/html``."""
    if not (HTML / "index.html").is_file():
        pytest.fail(f"{HTML} has no built book: run `make book` (or the smoke build) first")
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _visible_frames(page) -> list[str]:
    """What each explorer currently shows: the src of its visible frame images, or their HTML text."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('.widget-stack'))
        .filter(s => !s.parentElement.closest('.widget-stack'))
        .map(s => Array.from(s.querySelectorAll('img, .widget-html-content'))
            .filter(e => e.offsetParent !== null)
            .map(e => e.tagName === 'IMG' ? e.src.slice(-64) : e.innerHTML.slice(0, 200)).join('|'))""")


LAYOUT_JS = """() => {
    const column = document.querySelector('article.bd-article') || document.querySelector('main');
    const right = column.getBoundingClientRect().right;
    const wide = [], blank = [];
    document.querySelectorAll('div.cell pre, div.cell table').forEach(e => {
        if (e.offsetParent === null || e.closest('.widget-stack')) return;
        const box = e.getBoundingClientRect();
        const cut = e.scrollWidth > e.clientWidth + 2 || box.right > right + 2;
        if (cut) wide.push(`${e.tagName} ${Math.round(box.width)}px: ${e.textContent.trim().slice(0, 50)}`);
    });
    document.querySelectorAll('div.cell_output').forEach(e => {
        const h = e.getBoundingClientRect().height;
        const shown = e.textContent.trim() || e.querySelector('img, svg, canvas, .jupyter-widgets');
        if (h > 40 && !shown) blank.push(Math.round(h));
    });
    return {column: Math.round(column.getBoundingClientRect().width), wide, blank};
}"""


def test_pages_found():
    assert PAGES, f"no chapter pages under {HTML / 'book'}"


@pytest.mark.parametrize("page_path", PAGES)
def test_page_renders_offline(server, browser, page_path):
    page = browser.new_page(viewport={"width": 1280, "height": 2000})
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(f"pageerror: {err}"))
    missing: list[str] = []
    # a failed load is reported by URL below (the console message does not name it); Chromium's own
    # favicon probe is not the book's doing
    page.on("console", lambda msg: errors.append(f"console: {msg.text}")
            if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    page.on("response", lambda r: missing.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
    remote = block_remote(page)
    page.goto(f"{server}/{page_path}", wait_until="networkidle")
    page.wait_for_timeout(1500)

    broken = page.evaluate("""() => Array.from(document.images)
        .filter(i => i.complete && i.naturalWidth === 0 && i.offsetParent !== null)
        .map(i => i.src.slice(0, 80))""")
    assert not broken, f"{page_path}: broken images {broken}"

    views = page.locator("script[type='application/vnd.jupyter.widget-view+json']")
    for i in range(views.count()):
        rendered = views.nth(i).evaluate(
            "s => !!(s.parentElement && s.parentElement.querySelector('.jupyter-widgets, .widget-slider'))")
        assert rendered, f"{page_path}: widget {i} did not render"

    stacks = page.locator(".widget-stack")
    if stacks.count():
        before = _visible_frames(page)
        eps_slider = page.locator(".widget-slider").filter(has=page.locator(".widget-label", has_text="ε"))
        handle = (eps_slider if eps_slider.count() else page.locator(".widget-slider")).first.locator(
            ".noUi-handle")
        handle.focus()
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        page.wait_for_timeout(500)
        after = _visible_frames(page)
        assert before != after, f"{page_path}: moving the ε slider did not change the displayed frame"
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowLeft")
        page.wait_for_timeout(300)
        assert _visible_frames(page) == before, \
            f"{page_path}: moving the slider back did not restore the frame"

    layout = page.evaluate(LAYOUT_JS)
    assert not layout["wide"], \
        f"{page_path}: wider than the {layout['column']} px column: {layout['wide'][:5]}"
    assert not layout["blank"], f"{page_path}: empty output areas (px tall): {layout['blank'][:5]}"

    if page.locator(".math").count():
        page.wait_for_selector("mjx-container", state="attached", timeout=15_000)  # MathJax typeset
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{Path(page_path).stem}.png"), full_page=True)
    page.close()
    assert not remote, f"{page_path}: requests to non-local addresses {remote[:5]}"
    assert not missing, f"{page_path}: failed requests {missing[:5]}"
    assert not errors, f"{page_path}: JavaScript errors {errors[:5]}"

"""Headless Chromium for the tests that look at pages (index.html, the live view).

The system's Debian ``chromium`` and ``chromium-driver`` are driven with
Selenium; nothing is downloaded: the driver and browser paths are given, so
Selenium Manager has nothing to find, and ``SE_OFFLINE`` forbids it to try.

Missing programs skip locally and fail under CI (`external.require`). The
browser tests are slow, so tox runs them in one environment only: the others
set ``SMTPSINK_SKIP_BROWSER=1`` (see tox.ini).
"""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import external
import pytest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

SKIP_ENV = "SMTPSINK_SKIP_BROWSER"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1200,900",
)
#: A 1x1 transparent GIF, what the "remote" image server answers.
PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000"
    "010001000002024401003b"
)


@contextmanager
def chromium(profile: Path, *flags: str) -> Iterator[WebDriver]:
    """A headless Chromium session, with `FLAGS` and ``flags``; skips (or
    fails under CI) without one."""
    if os.environ.get(SKIP_ENV, "") not in ("", "0"):
        pytest.skip(f"{SKIP_ENV} is set: browser tests run in one tox env only")
    browser = external.require("chromium", "apt-get install chromium")
    driver_path = external.require("chromedriver", "apt-get install chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*FLAGS, *flags):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    previous = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"
    try:
        driver = webdriver.Chrome(options=options, service=Service(driver_path))
    finally:
        if previous is None:
            del os.environ["SE_OFFLINE"]
        else:
            os.environ["SE_OFFLINE"] = previous
    try:
        yield driver
    finally:
        driver.quit()


class RequestLog(http.server.ThreadingHTTPServer):
    """A loopback HTTP server that records every request path: the "remote"
    server a hostile mail's images point at."""

    daemon_threads = True
    block_on_close = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Recorder)
        self.paths: list[str] = []
        self.lock = threading.Lock()
        #: What ``/page.html`` answers: a page a test puts here.
        self.page = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Recorder(http.server.BaseHTTPRequestHandler):
    server: RequestLog

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.paths.append(self.path)
        body, kind = PIXEL, "image/gif"
        if self.path == "/page.html":
            body, kind = self.server.page.encode(), "text/html; charset=utf-8"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the test reads `paths`, not stderr


@contextmanager
def request_log() -> Iterator[RequestLog]:
    server = RequestLog()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def hostile_html(image_url: str) -> str:
    """An HTML part that tries everything the viewer must prevent."""
    return (
        '<h1 id="greeting">Hello from the mail</h1>'
        f'<img id="remote" src="{image_url}/tracker.gif" alt="tracker">'
        '<p style="background:url(' + image_url + '/bg.gif)">styled</p>'
        "<script>document.body.setAttribute('data-ran', 'yes');"
        "try { parent.document.body.setAttribute('data-pwned', 'yes'); }"
        " catch (e) {}</script>"
        "<img src=\"x\" onerror=\"document.body.setAttribute('data-onerror', 'yes')\">"
        "</iframe><script>parent.document.title = 'pwned'</script>"
    )


#: A subject and text part that try to close the page's markup.
HOSTILE_SUBJECT = "</iframe><script>document.title='pwned'</script> Welcome"
HOSTILE_TEXT = "Hi.\n</pre><script>document.title='pwned'</script>\n"

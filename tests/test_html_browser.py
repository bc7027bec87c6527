"""index.html in a real browser: headless Chromium driven by Selenium.

What only a browser can prove: the frame shows the HTML part, a script in a
mail does not run and cannot reach the page, a remote image is not fetched.
Each check has a control page (the same mail HTML without our protections)
that shows the harness would see the attack if it worked.

Screenshots for the docs: ``SMTPSINK_SCREENSHOTS=docs/_static`` writes them
there (otherwise into the test's temporary directory).
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import browser
import pytest
from test_html import save_index, send_hostile

from pytest_smtpsink import Mailbox

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    with browser.chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


@pytest.fixture
def remote() -> Iterator[browser.RequestLog]:
    with browser.request_log() as server:
        yield server


def screenshot(driver: WebDriver, name: str, tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SMTPSINK_SCREENSHOTS") or tmp_path)
    path = folder / name
    assert driver.save_screenshot(str(path)), f"no screenshot at {path}"
    return path


def test_control_page_shows_the_attacks_work_without_protection(
    driver: WebDriver, remote: browser.RequestLog, tmp_path: Path
) -> None:
    """The same HTML in a plain frame runs its script and fetches its image:
    so the checks below would see it if our page let them happen."""
    from selenium.webdriver.common.by import By

    control = tmp_path / "control.html"
    srcdoc = html.escape(browser.hostile_html(remote.url), quote=True)
    control.write_text(
        f'<!DOCTYPE html><title>control</title><iframe srcdoc="{srcdoc}"></iframe>',
        encoding="utf-8",
    )
    driver.get(control.as_uri())
    driver.switch_to.frame(driver.find_element(By.TAG_NAME, "iframe"))
    try:
        assert (
            driver.find_element(By.TAG_NAME, "body").get_attribute("data-ran") == "yes"
        )
    finally:
        driver.switch_to.default_content()
    assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-pwned") == "yes"
    # The page's load event waits for the frame's images.
    assert "/tracker.gif" in remote.paths


def test_index_shows_the_mail_and_contains_it(
    driver: WebDriver,
    remote: browser.RequestLog,
    smtpsink: Mailbox,
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By

    send_hostile(smtpsink, remote.url)
    smtpsink.wait_for(count=1)
    index = save_index(
        smtpsink, tmp_path / "mail", "tests/test_signup.py::test_welcome"
    )
    driver.get(index.as_uri())

    # The list: the test and its message, subject shown as text.
    heading = driver.find_element(By.CSS_SELECTOR, "section.test h2")
    assert heading.text.upper() == "FAILED TESTS/TEST_SIGNUP.PY::TEST_WELCOME"
    summary = driver.find_element(By.CSS_SELECTOR, "details.message > summary")
    assert browser.HOSTILE_SUBJECT in summary.text
    assert driver.title == "Captured email"
    assert driver.find_elements(By.TAG_NAME, "script") == []
    text_part = driver.find_element(By.CSS_SELECTOR, "details.text pre")
    assert text_part.text == browser.HOSTILE_TEXT.strip()
    note = driver.find_element(By.CSS_SELECTOR, "p.blocked")
    assert note.text.startswith("2 remote resource(s) blocked")

    # The frame shows the HTML part; its script did not run.
    frame = driver.find_element(By.CSS_SELECTOR, "iframe.mail")
    assert frame.get_attribute("sandbox") == ""
    driver.switch_to.frame(frame)
    try:
        greeting = driver.find_element(By.ID, "greeting")
        assert greeting.text == "Hello from the mail"
        body = driver.find_element(By.TAG_NAME, "body")
        assert body.get_attribute("data-ran") is None
        assert body.get_attribute("data-onerror") is None
        # Blocked, so never loaded: a loaded image has a natural width.
        image = driver.find_element(By.ID, "remote")
        assert driver.execute_script("return arguments[0].naturalWidth", image) == 0
    finally:
        driver.switch_to.default_content()
    # Nor reached the page around it.
    assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-pwned") is None
    assert driver.title == "Captured email"
    # The page's load event waited for the frame: a fetch would be logged.
    assert remote.paths == []
    screenshot(driver, "index-hostile.png", tmp_path)


RESET_HTML = """\
<div style="font-family:Helvetica,Arial,sans-serif;max-width:32rem;margin:auto">
<img src="https://cdn.example.com/logo.png" alt="Example Shop" width="120">
<h2 style="color:#1a237e">Reset your password</h2>
<p>Hi Ann, someone asked to reset the password of your account.</p>
<p><a href="https://shop.example.com/reset?token=4f9c2"
 style="background:#1a237e;color:#fff;padding:.6rem 1.2rem;border-radius:4px;
 text-decoration:none">Choose a new password</a></p>
<p style="color:#666">If it was not you, ignore this mail.</p></div>
"""


def test_screenshot_of_a_typical_mail(
    driver: WebDriver, smtpsink: Mailbox, tmp_path: Path
) -> None:
    """The screenshot of the docs page: a password-reset mail."""
    import smtplib

    from conftest import make_message
    from selenium.webdriver.common.by import By

    message = make_message(
        subject="Reset your password",
        sender="Example Shop <noreply@shop.example.com>",
        text="Hi Ann,\n\nchoose a new password: https://shop.example.com/reset?token=4f9c2\n",
        html=RESET_HTML,
    )
    message.add_attachment(
        b"%PDF-1.4 ...", maintype="application", subtype="pdf", filename="terms.pdf"
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(message)
    smtpsink.wait_for(subject="Reset your password")
    # The reason shown is a real failure's, as the plugin records it.
    with pytest.raises(AssertionError) as failed:
        smtpsink.assert_sent(subject="Reset your password", to="bob@example.com")
    index = save_index(
        smtpsink,
        tmp_path / "mail",
        "tests/test_accounts.py::test_password_reset",
        reason=f"AssertionError: {str(failed.value).splitlines()[0]}",
    )
    driver.get(index.as_uri())
    note = driver.find_element(By.CSS_SELECTOR, "p.blocked")
    assert "https://cdn.example.com/logo.png" in note.text
    driver.switch_to.frame(driver.find_element(By.CSS_SELECTOR, "iframe.mail"))
    try:
        link = driver.find_element(By.TAG_NAME, "a")
        assert link.text == "Choose a new password"
    finally:
        driver.switch_to.default_content()
    attachment = driver.find_element(By.CSS_SELECTOR, "details.attachments a")
    assert attachment.text == "terms.pdf (application/pdf, 12 bytes)"
    screenshot(driver, "index-html.png", tmp_path)


def test_a_link_clicked_in_the_frame_leaves_the_mail_and_opens_from_the_list(
    driver: WebDriver, remote: browser.RequestLog, smtpsink: Mailbox, tmp_path: Path
) -> None:
    """A link clicked in the frame navigated the frame, which the page's
    policy refuses: the mail gave way to the browser's error page, and no
    link could be followed. The frame opens none now; the list under it
    does, in a new tab, for web addresses only."""
    import smtplib

    from conftest import make_message
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    confirm = f"{remote.url}/confirm?token=4f9c2"
    markup = (
        f'<p id="mail"><a id="confirm" href="{confirm}">Confirm</a> '
        "<a href=\"javascript:document.title='pwned'\">run</a> "
        # Its own target, over <base target=_blank>: navigated the frame.
        f'<a id="self" target="_self" href="{confirm}">again</a></p>'
    )
    message = make_message(subject="Confirm", html=markup)
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(message)
    smtpsink.wait_for(subject="Confirm")
    index = save_index(smtpsink, tmp_path / "mail", "tests/test_x.py::test_confirm")
    driver.get(index.as_uri())
    page = driver.current_window_handle
    driver.switch_to.frame(driver.find_element(By.CSS_SELECTOR, "iframe.mail"))
    try:
        for link in ("confirm", "self"):
            driver.find_element(By.ID, link).click()
            # Still the mail: a navigation would have left about:srcdoc (for
            # Chromium's error page), whose document has no such element.
            here = driver.execute_script("return location.href")
            assert here == "about:srcdoc", link
            assert driver.find_element(By.ID, "mail").text == "Confirm run again"
    finally:
        driver.switch_to.default_content()
    assert driver.window_handles == [page]
    assert remote.paths == []
    # The list under the frame: the web address a link, the script text.
    links = driver.find_element(By.CSS_SELECTOR, "details.links")
    links.find_element(By.TAG_NAME, "summary").click()
    assert links.text.splitlines() == [
        "2 link(s) in the HTML part (the frame above opens none: open them from here)",
        confirm,
        "javascript:document.title='pwned'",
    ]
    (opened,) = links.find_elements(By.CSS_SELECTOR, "a")
    assert opened.get_attribute("rel") == "noopener noreferrer"
    opened.click()
    try:
        WebDriverWait(driver, 30).until(lambda d: len(d.window_handles) == 2)
        WebDriverWait(driver, 30).until(lambda d: remote.paths)
        assert remote.paths[0] == "/confirm?token=4f9c2"  # then a favicon
    finally:
        for handle in driver.window_handles:
            if handle != page:
                driver.switch_to.window(handle)
                driver.close()
        driver.switch_to.window(page)
    assert driver.title == "Captured email"


def _png(width: int, height: int) -> bytes:
    """A valid PNG of ``width`` x ``height`` grey pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_an_image_the_mail_carries_is_shown(
    driver: WebDriver, remote: browser.RequestLog, smtpsink: Mailbox, tmp_path: Path
) -> None:
    """A logo in a multipart/related part, shown with cid:, was a broken
    image: the frame loads nothing. It is put in as a data: URL, which
    loads nothing either; a cid: the mail does not carry stays broken."""
    import smtplib

    from conftest import make_message
    from selenium.webdriver.common.by import By

    message = make_message(
        subject="Logo",
        html='<img id="logo" src="cid:logo@shop.example">'
        '<img id="missing" src="cid:other@shop.example">'
        f'<img id="remote" src="{remote.url}/logo.png">',
    )
    html_part = message.get_body(preferencelist=("html",))
    assert html_part is not None
    html_part.add_related(
        _png(3, 2), maintype="image", subtype="png", cid="<logo@shop.example>"
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(message)
    smtpsink.wait_for(subject="Logo")
    index = save_index(smtpsink, tmp_path / "mail", "tests/test_x.py::test_logo")
    driver.get(index.as_uri())
    driver.switch_to.frame(driver.find_element(By.CSS_SELECTOR, "iframe.mail"))
    try:
        width = "return arguments[0].naturalWidth"
        assert driver.execute_script(width, driver.find_element(By.ID, "logo")) == 3
        assert driver.execute_script(width, driver.find_element(By.ID, "missing")) == 0
        assert driver.execute_script(width, driver.find_element(By.ID, "remote")) == 0
    finally:
        driver.switch_to.default_content()
    assert remote.paths == []


def test_long_names_wrap_inside_the_page(
    driver: WebDriver, smtpsink: Mailbox, tmp_path: Path
) -> None:
    """Names without a space (a 300-character attachment name, a long
    subject, test id and failure reason) wrap: at the browser's everyday
    width, with every part unfolded, nothing is wider than the page."""
    import smtplib

    from conftest import make_message
    from selenium.webdriver.common.by import By

    message = make_message(subject="S" * 200)
    message.add_attachment(
        b"%PDF-1.4 ...",
        maintype="application",
        subtype="pdf",
        filename="a" * 296 + ".pdf",
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(message)
    smtpsink.wait_for()
    index = save_index(
        smtpsink,
        tmp_path / "mail",
        "tests/test_long.py::test_" + "n" * 200,
        reason="AssertionError: " + "r" * 280,
    )
    driver.get(index.as_uri())
    attachment = driver.find_element(By.CSS_SELECTOR, "details.attachments a")
    assert attachment.text.startswith("a" * 296 + ".pdf")
    driver.execute_script(
        "for (const d of document.querySelectorAll('details')) d.open = true"
    )
    width, page = driver.execute_script(
        "const root = document.documentElement;"
        "return [root.clientWidth, root.scrollWidth]"
    )
    assert width > 1000  # the window's everyday width (browser.FLAGS)
    # What sticks out (a box past the page's edge, or text past its box's
    # edge), to say where it is when the page is too wide.
    wider = driver.execute_script(
        "return [...document.body.querySelectorAll('*')].filter(e =>"
        " e.getBoundingClientRect().right > arguments[0] + 1"
        " || (e.clientWidth && e.scrollWidth > e.clientWidth + 1)"
        ").map(e => e.tagName + '.' + e.className)",
        width,
    )
    assert (page, wider) == (width, [])


def test_a_right_to_left_subject_keeps_the_summary_in_order(
    driver: WebDriver, smtpsink: Mailbox, tmp_path: Path
) -> None:
    # Without isolation the size went left of the Hebrew: "795 | '<Hebrew> bytes".
    import smtplib

    from conftest import make_message
    from selenium.webdriver.common.by import By

    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(
            make_message(subject="Gr\u00fc\u00dfe \u05e2\u05d1\u05e8\u05d9\u05ea")
        )
    size = smtpsink.wait_for().size
    driver.get(save_index(smtpsink, tmp_path / "mail").as_uri())
    summary = driver.find_element(By.CSS_SELECTOR, "details.message > summary")
    hebrew, size_shown = driver.execute_script(
        "const where = (needle) => {"
        " const walker = document.createTreeWalker(arguments[0], NodeFilter.SHOW_TEXT);"
        " for (let node; (node = walker.nextNode());) {"
        "  const at = node.data.indexOf(needle);"
        "  if (at >= 0) { const range = document.createRange();"
        "   range.setStart(node, at); range.setEnd(node, at + needle.length);"
        "   const box = range.getBoundingClientRect(); return [box.left, box.right]; } }"
        " return null; };"
        "return [where('\u05e2\u05d1\u05e8\u05d9\u05ea'), where(arguments[1])]",
        summary,
        f"| {size} bytes",
    )
    assert size_shown[0] > hebrew[1], (hebrew, size_shown)


#: Attachments a browser would open as a page, each trying to run a script.
ACTIVE_ATTACHMENTS = {
    "invoice.html": b"<script>document.title = 'ran'</script>",
    "logo.svg": (
        b'<svg xmlns="http://www.w3.org/2000/svg">'
        b"<script>document.title = 'ran'</script></svg>"
    ),
    "page.xhtml": (
        b'<html xmlns="http://www.w3.org/1999/xhtml"><head><title>x</title></head>'
        b"<body><script>document.title = 'ran'</script></body></html>"
    ),
    "README": b"<!DOCTYPE html><script>document.title = 'ran'</script>",
    "notes.txt": b"<!DOCTYPE html><script>document.title = 'ran'</script>",
}


def test_saved_attachments_never_open_as_a_page(
    driver: WebDriver, smtpsink: Mailbox, tmp_path: Path
) -> None:
    """index.html is opened from disk, where Chromium ignores the links'
    ``download``: a click on a mailed invoice.html opened it as a page and
    ran its script. Each copy is opened as a click would open it."""
    import smtplib

    from conftest import make_message
    from selenium.webdriver.common.by import By

    message = make_message(subject="Active attachments")
    for name, content in ACTIVE_ATTACHMENTS.items():
        message.add_attachment(
            content, maintype="application", subtype="octet-stream", filename=name
        )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(message)
    smtpsink.wait_for()
    index = save_index(smtpsink, tmp_path / "mail")
    driver.get(index.as_uri())
    hrefs = [
        str(link.get_attribute("href"))
        for link in driver.find_elements(By.CSS_SELECTOR, "details.attachments a")
    ]
    assert [href.rpartition("/")[2] for href in hrefs] == [
        "invoice.html.txt",
        "logo.svg.txt",
        "page.xhtml.txt",
        "README.txt",
        "notes.txt",
    ]
    for href in hrefs:
        driver.get(href)
        assert (href, driver.title) != (href, "ran")
        assert driver.execute_script("return document.contentType") == "text/plain"
    # The control: the pages under their own names run their scripts. (A
    # name without an extension is sniffed; this Chromium shows that one as
    # text, others may not.)
    for name in ("invoice.html", "logo.svg", "page.xhtml"):
        content = ACTIVE_ATTACHMENTS[name]
        control = tmp_path / "control" / name
        control.parent.mkdir(exist_ok=True)
        control.write_bytes(content)
        driver.get(control.as_uri())
        assert (name, driver.title) == (name, "ran")


def test_the_contents_link_to_each_test_and_its_own_page_shows_the_mail(
    driver: WebDriver,
    smtpsink: Mailbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A contents entry of a parametrized test (a ``[`` in its id, sent
    percent-encoded) leads to its section; past the index's frames, a
    message's own page shows its HTML part in the same frame, and links
    back to that message in the index, whose sections link up to the
    contents."""
    import smtplib

    from conftest import make_message
    from selenium.webdriver.common.by import By

    from pytest_smtpsink import _html

    monkeypatch.setattr(_html, "FRAMES_IN_INDEX", 0)
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(make_message(subject="Welcome", html="<h1>Hi Ann</h1>"))
    smtpsink.wait_for()
    index = save_index(smtpsink, tmp_path / "mail", "tests/test_p.py::test_x[7]")
    driver.get(index.as_uri())
    driver.find_element(By.CSS_SELECTOR, "details.contents a").click()
    target = driver.execute_script(
        "return document.querySelector(':target')?.id ?? null"
    )
    [directory] = [path.name for path in index.parent.iterdir() if path.is_dir()]
    assert "[7]" in directory
    assert target == directory
    driver.find_element(By.LINK_TEXT, "a page of its own").click()
    frame = driver.find_element(By.CSS_SELECTOR, "iframe.mail")
    driver.switch_to.frame(frame)
    try:
        assert driver.find_element(By.TAG_NAME, "h1").text == "Hi Ann"
    finally:
        driver.switch_to.default_content()
    # Back to the message in index.html, then up to the contents.
    driver.find_element(By.LINK_TEXT, "Back to index.html").click()
    target = driver.execute_script(
        "return document.querySelector(':target')?.id ?? null"
    )
    assert target == f"{directory}/{smtpsink.messages[0].number}"
    driver.find_element(By.LINK_TEXT, "Back to the contents").click()
    target = driver.execute_script(
        "return document.querySelector(':target')?.id ?? null"
    )
    assert target == "contents"

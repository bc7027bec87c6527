"""The live view (``smtpsink --http``) in headless Chromium.

A new message must appear without a reload (the page listens to server-sent
events), the message view must show the HTML part in the sandboxed frame,
and a hostile mail must neither run a script nor fetch a remote image, as
in the saved index.html (test_html_browser.py, with the control page).
"""

from __future__ import annotations

import contextlib
import itertools
import smtplib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import browser
import pytest
from test_cli import TIMEOUT
from test_html_browser import RESET_HTML, screenshot
from test_live import Live, _event_stream
from test_relay import ScriptedUpstream, usual_answer

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    with browser.chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


@pytest.fixture
def view() -> Iterator[Live]:
    started = Live()
    yield started
    started.sink.stop()


def on_link(
    driver: WebDriver,
    act: Callable[[WebElement], object],
    selector: str = "#list li.item a",
    containing: str = "",
) -> None:
    """``act`` on the first link of ``selector`` whose text holds
    ``containing``, found afresh until that holds. The page draws the list
    anew on load, when its event stream opens and after each message
    opened: a link found before such a drawing is stale (a busy machine
    drew it between a test's find and its click). A stale element raises
    before it is acted on, so nothing is done twice."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    def acted(driver: WebDriver) -> bool:
        for link in driver.find_elements(By.CSS_SELECTOR, selector):
            if containing in link.text:
                act(link)
                return True
        return False

    WebDriverWait(
        driver, TIMEOUT, ignored_exceptions=(StaleElementReferenceException,)
    ).until(acted)


def click(link: WebElement) -> None:
    link.click()


def assert_equal(found: object, expected: object) -> None:
    assert found == expected


def test_a_narrow_window_stacks_the_list_above_the_message(
    driver: WebDriver, view: Live
) -> None:
    # The list kept its 28rem at any width: in a 500-pixel window (a phone,
    # half a laptop's screen) the message got 52 pixels, a letter a line.
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    view.send("Narrow", b"A line of text that needs some room to be read.")
    driver.set_window_size(500, 900)  # headless Chromium's narrowest
    try:
        driver.get(view.url + "/")
        on_link(driver, click)
        WebDriverWait(driver, TIMEOUT).until(
            lambda d: "Narrow" in d.find_element(By.ID, "view").text
        )
        width = driver.execute_script("return window.innerWidth")
        shown = driver.find_element(By.ID, "view")
        listed = driver.find_element(By.ID, "list")
        assert shown.size["width"] == listed.size["width"] == width
        assert listed.location["y"] < shown.location["y"]
    finally:
        driver.set_window_size(1200, 900)  # browser.py's, for the next tests


def test_a_keyboard_user_keeps_their_place_in_the_list(
    driver: WebDriver, view: Live
) -> None:
    # The list is drawn anew on every change: the focus went back to the
    # page's start after Enter opened a message, and whenever mail arrived.
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.wait import WebDriverWait

    wait = WebDriverWait(driver, TIMEOUT)
    view.send("First")
    view.send("Second")
    driver.get(view.url + "/")
    item = (By.CSS_SELECTOR, '#list a[data-id="1"]')
    wait.until(lambda d: d.find_elements(*item))

    def focused() -> str | None:
        found: str | None = driver.execute_script(
            "return document.activeElement.dataset.id ?? null"
        )
        return found

    on_link(
        driver,
        lambda link: driver.execute_script("arguments[0].focus()", link),
        '#list a[data-id="1"]',
    )
    # Marked, to see the list drawn anew after Enter (the mark goes with it).
    driver.execute_script("document.querySelector('#list ul').dataset.old = 'yes'")
    driver.switch_to.active_element.send_keys(Keys.ENTER)
    wait.until(lambda d: "First" in d.find_element(By.ID, "view").text)
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#list ul[data-old]"))
    assert focused() == "1"
    view.send("Third")
    wait.until(lambda d: "Third" in d.find_element(By.ID, "list").text)
    assert focused() == "1"


def test_the_page_says_when_the_sink_is_gone_and_forgets_what_it_showed(
    driver: WebDriver, view: Live
) -> None:
    # A stopped sink looked like "no new mail" (clicks failed in the console
    # only); a restarted one kept the old run's message shown beside the
    # new list, its links fetching the new run's message of that number;
    # and a deleted message stayed shown.
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait
    from test_cli import Sink

    wait = WebDriverWait(driver, TIMEOUT)
    shown = (By.ID, "view")

    def open_first(subject: str) -> None:
        driver.get(view.url + "/")
        on_link(driver, click, containing=subject)
        wait.until(lambda d: subject in d.find_element(*shown).text)

    view.send("Before the stop")
    open_first("Before the stop")
    lost = driver.find_element(By.ID, "lost")
    # Connected: not shown (waited for: on a busy machine a request that
    # failed for a moment shows it until the next one succeeds).
    wait.until(lambda d: not lost.is_displayed())
    view.sink.stop()
    wait.until(lambda d: lost.is_displayed())
    assert lost.text == "Not connected: the sink may have stopped. Trying again..."

    # A new sink on the same port: its message 1 is another mail.
    view.sink = Sink("--http", str(view.http_port))  # the fixture stops it
    view.send("After the restart")
    wait.until(lambda d: not lost.is_displayed())
    wait.until(lambda d: "After the restart" in d.find_element(By.ID, "list").text)
    assert driver.find_element(*shown).text == (
        "The sink was started again: select a message."
    )
    # Deleted while shown (another page, a script): said so.
    open_first("After the restart")
    assert view.request("/api/messages", "DELETE")[0] == 200
    wait.until(
        lambda d: (
            d.find_element(*shown).text
            == "The message shown is no longer listed: it was deleted, or let go "
            "as newer mail came."
        )
    )


def test_live_view(driver: WebDriver, view: Live, tmp_path: Path) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.wait import WebDriverWait

    # Every change (a session's end too) re-renders the list: an element
    # found a moment before may be stale when it is clicked or read, so each
    # such step is a wait that finds it afresh.
    wait = WebDriverWait(
        driver, TIMEOUT, ignored_exceptions=(StaleElementReferenceException,)
    )
    driver.get(view.url + "/")
    wait.until(ready.text_to_be_present_in_element((By.ID, "list"), "No mail yet"))
    # Gone if the page reloads: the list must change in place.
    driver.execute_script("window.sameDocument = true")

    with browser.request_log() as remote:
        view.send(
            "Reset your password",
            # Well-formed, as the docs' screenshot shows it.
            RESET_HTML.replace("\n", "\r\n").encode(),
            Content_Type="text/html; charset=utf-8",
            From="Example Shop <noreply@shop.example.com>",
            To="Ann <ann@example.com>",
        )
        view.send(
            browser.HOSTILE_SUBJECT,
            browser.hostile_html(remote.url).encode(),
            Content_Type="text/html",
        )
        items = (By.CSS_SELECTOR, "#list li.item a")
        wait.until(lambda d: len(d.find_elements(*items)) == 2)
        assert driver.execute_script("return window.sameDocument") is True
        reset, hostile = (m["id"] for m in view.json("/api/messages"))

        def item(number: int) -> WebElement:
            return driver.find_element(By.CSS_SELECTOR, f'#list a[data-id="{number}"]')

        def click(number: int) -> None:
            on_link(driver, lambda link: link.click(), f'#list a[data-id="{number}"]')

        subject = wait.until(
            lambda d: item(hostile).find_element(By.CLASS_NAME, "subject").text
        )
        assert subject == browser.HOSTILE_SUBJECT
        assert driver.find_element(By.ID, "count").text == "2"

        # The hostile one: shown, contained, nothing fetched.
        click(hostile)
        frame = wait.until(
            ready.presence_of_element_located((By.CSS_SELECTOR, "#view iframe.mail"))
        )
        assert driver.find_element(By.CSS_SELECTOR, "#view p.blocked").text.startswith(
            "2 remote resource(s) blocked"
        )
        driver.switch_to.frame(frame)
        try:
            # Its load event waits for images: a fetch would be logged by then.
            wait.until(
                lambda d: d.execute_script("return document.readyState") == "complete"
            )
            assert driver.find_element(By.ID, "greeting").text == "Hello from the mail"
            body = driver.find_element(By.TAG_NAME, "body")
            assert body.get_attribute("data-ran") is None
            assert body.get_attribute("data-onerror") is None
        finally:
            driver.switch_to.default_content()
        assert (
            driver.find_element(By.TAG_NAME, "body").get_attribute("data-pwned") is None
        )
        assert driver.title == "smtpsink"
        assert remote.paths == []

    # The typical one, for the docs' screenshot; then delete all.
    click(reset)
    wait.until(
        ready.text_to_be_present_in_element((By.ID, "view"), "Reset your password")
    )
    driver.switch_to.frame(driver.find_element(By.CSS_SELECTOR, "#view iframe.mail"))
    try:
        link = driver.find_element(By.TAG_NAME, "a")
        assert link.text == "Choose a new password"
    finally:
        driver.switch_to.default_content()
    screenshot(driver, "live-view.png", tmp_path)

    # It asks first (one click emptied the sink and every mailbox).
    driver.find_element(By.ID, "delete").click()
    wait.until(ready.alert_is_present())
    # No mailboxes named: this sink serves no POP3 or IMAP.
    assert driver.switch_to.alert.text == "Delete every message the sink holds?"
    driver.switch_to.alert.dismiss()
    assert len(view.json("/api/messages")) > 0
    driver.find_element(By.ID, "delete").click()
    wait.until(ready.alert_is_present())
    driver.switch_to.alert.accept()
    wait.until(ready.text_to_be_present_in_element((By.ID, "list"), "No mail yet"))
    assert view.json("/api/messages") == []
    assert driver.execute_script("return window.sameDocument") is True


def test_an_open_message_shows_its_relay_outcome_when_it_comes(
    driver: WebDriver,
) -> None:
    # It kept "relay to ... pending" after the relay finished: no event was
    # sent for the outcome, and the page redrew only the list.
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.wait import WebDriverWait

    answered = threading.Event()

    def answer(line: bytes) -> bytes | tuple[bytes, ...] | None:
        if line == b".":  # the content's end: held until the page showed it
            answered.wait(TIMEOUT)
            return b"250 2.0.0 taken\r\n"
        return usual_answer(line)

    upstream = ScriptedUpstream(answer)
    serving = threading.Thread(target=upstream.serve_forever, args=(0.05,))
    serving.start()
    # The relay's own timeout (10 s by default) must not end the held reply
    # first: on a busy machine the page may take that long to show it.
    view = Live(
        "--relay",
        f"smtp://127.0.0.1:{upstream.port}",
        "--relay-to",
        ".*",
        "--relay-timeout",
        str(3 * TIMEOUT),
    )
    try:
        wait = WebDriverWait(driver, TIMEOUT)
        driver.get(view.url + "/")
        view.send("Relayed")

        def open_it(driver: WebDriver) -> bool:
            # Found afresh each try: every change (the session's end too)
            # re-renders the list, and an element found before is stale.
            try:
                driver.find_element(By.CSS_SELECTOR, "#list li.item a").click()
            except (NoSuchElementException, StaleElementReferenceException):
                return False
            return True

        wait.until(open_it)
        wait.until(ready.text_to_be_present_in_element((By.ID, "view"), "pending"))
        answered.set()
        wait.until(
            ready.text_to_be_present_in_element((By.ID, "view"), "relayed by smtp://")
        )
        summary = driver.find_element(By.CSS_SELECTOR, "#view details.message summary")
        assert "250 2.0.0 taken" in summary.text
    finally:
        answered.set()
        view.sink.stop()
        upstream.stopping.set()
        upstream.shutdown()
        serving.join()
        upstream.server_close()


def test_a_page_released_for_a_newer_one_pauses_until_resumed(
    driver: WebDriver, view: Live
) -> None:
    # Past MAX_STREAMS the server lets the oldest stream go. EventSource
    # would reconnect by itself and push out another page, in turn: the
    # page stops listening instead and says so.
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.wait import WebDriverWait

    from pytest_smtpsink._live import MAX_STREAMS

    wait = WebDriverWait(driver, TIMEOUT)
    driver.get(view.url + "/")
    wait.until(ready.text_to_be_present_in_element((By.ID, "list"), "No mail yet"))
    paused = driver.find_element(By.ID, "paused")
    assert not paused.is_displayed()
    with contextlib.ExitStack() as stack:
        # The page's stream is the oldest once the server has these.
        streams = [stack.enter_context(_event_stream(view)) for _ in range(MAX_STREAMS)]
        wait.until(lambda d: paused.is_displayed())
        assert paused.text.startswith("Live updates paused: too many pages open")
        driver.find_element(By.ID, "resume").click()
        assert not paused.is_displayed()
        # The page listens again (the oldest stream is now this one): mail
        # sent from here on is pushed to it.
        assert streams[0].readline() == b"event: released\n"
        view.send("After resuming")
        wait.until(
            ready.text_to_be_present_in_element((By.ID, "list"), "After resuming")
        )


def test_mail_that_came_before_the_event_stream_opened_is_shown(
    driver: WebDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The page fetched its list, and only then was its event stream served:
    # a message in between was in neither, and the page said "No mail yet"
    # until the next one came (also after a reconnect, and a Resume).
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.wait import WebDriverWait

    from pytest_smtpsink import SMTPSink, _live

    stream_asked, stream_served = threading.Event(), threading.Event()
    serve_stream = _live._Handler._events

    def held_stream(handler: _live._Handler) -> None:
        stream_asked.set()
        stream_served.wait(TIMEOUT)
        serve_stream(handler)

    monkeypatch.setattr(_live._Handler, "_events", held_stream)
    server = _live.LiveServer("127.0.0.1", 0)
    server.start()
    try:
        with SMTPSink() as sink:
            follower = sink.follow()  # what the smtpsink command reads
            wait = WebDriverWait(driver, TIMEOUT)
            driver.get(server.url)
            wait.until(
                ready.text_to_be_present_in_element((By.ID, "list"), "No mail yet")
            )
            assert stream_asked.wait(TIMEOUT)
            with smtplib.SMTP(sink.host, sink.port) as client:
                client.sendmail(
                    "app@example.com", ["ann@example.com"], b"Subject: Between\r\n\r\n"
                )
            sink.wait_for(subject="Between")
            messages, sessions = follower.take()
            server.inbox.add(messages, sessions)
            stream_served.set()
            wait.until(ready.text_to_be_present_in_element((By.ID, "list"), "Between"))
    finally:
        stream_served.set()
        server.stop()


class HeldRender:
    """A live view of two messages, ``subjects`` (sent over one connection,
    closed), whose rendering of ``held`` waits for ``answer`` once it has
    set ``asked``; ``rendered`` lists the subjects rendered, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, held: str) -> None:
        from pytest_smtpsink import _live

        self.held = held
        self.asked, self.answer = threading.Event(), threading.Event()
        self.rendered: list[str] = []
        fragment = _live.message_fragment

        def held_render(message: Any, number: int | None) -> str:
            self.rendered.append(message.subject)
            if message.subject == held:
                self.asked.set()
                self.answer.wait(TIMEOUT)
            return fragment(message, number)

        monkeypatch.setattr(_live, "message_fragment", held_render)

    @contextlib.contextmanager
    def serving(self, *subjects: str) -> Iterator[tuple[Any, list[str]]]:
        """The started server and the messages' numbers."""
        from pytest_smtpsink import SMTPSink, _live

        server = _live.LiveServer("127.0.0.1", 0)
        server.start()
        try:
            with SMTPSink() as sink:
                follower = sink.follow()
                with smtplib.SMTP(sink.host, sink.port) as client:
                    for subject in subjects:
                        client.sendmail(
                            "app@example.com",
                            ["ann@example.com"],
                            f"Subject: {subject}\r\n\r\n{subject} body.\r\n".encode(),
                        )
                sink.wait_until(lambda: all(s.end for s in sink.sessions))
                messages, sessions = follower.take()
                server.inbox.add(messages, sessions)
                yield server, [str(m.number) for m in messages]
        finally:
            self.answer.set()
            server.stop()


def test_a_message_clicked_later_is_not_replaced_by_an_earlier_ones_answer(
    driver: WebDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The page showed whichever message's view came last: a slow answer for
    # the message clicked first replaced the one clicked after it.
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.wait import WebDriverWait

    held = HeldRender(monkeypatch, "First")
    with held.serving("First", "Second") as (server, (first, second)):
        wait = WebDriverWait(driver, TIMEOUT)
        driver.get(server.url)
        wait.until(ready.text_to_be_present_in_element((By.ID, "list"), "Second"))
        # Tells when the page has read the first message's answer (and
        # run what follows that read: a timer runs after it).
        driver.execute_script(
            """
            const wanted = "/fragments/messages/" + arguments[0];
            const text = Response.prototype.text;
            Response.prototype.text = async function () {
              const read = await text.call(this);
              if (this.url.endsWith(wanted)) {
                setTimeout(() => { window.firstRead = true; }, 0);
              }
              return read;
            };
            """,
            first,
        )

        def click(number: str) -> Callable[[WebDriver], bool]:
            def clicked(driver: WebDriver) -> bool:
                driver.find_element(
                    By.CSS_SELECTOR, f'#list a[data-id="{number}"]'
                ).click()
                return True

            return clicked

        stale = WebDriverWait(
            driver, TIMEOUT, ignored_exceptions=(StaleElementReferenceException,)
        )
        stale.until(click(first))
        assert held.asked.wait(TIMEOUT)
        stale.until(click(second))
        wait.until(ready.text_to_be_present_in_element((By.ID, "view"), "Second body."))
        held.answer.set()
        wait.until(lambda d: d.execute_script("return window.firstRead === true"))
        assert "Second body." in driver.find_element(By.ID, "view").text
        assert "First body." not in driver.find_element(By.ID, "view").text


def test_a_message_slow_to_render_is_said_to_be_opening_and_rendered_once(
    driver: WebDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 36 MB message took 7 s to show, the previous one staying there with
    # no sign of the click, and as long again on every click.
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.wait import WebDriverWait

    held = HeldRender(monkeypatch, "Big")
    with held.serving("Small", "Big") as (server, (small, big)):
        wait = WebDriverWait(driver, TIMEOUT)
        driver.get(server.url)
        wait.until(ready.text_to_be_present_in_element((By.ID, "list"), "Big"))

        def open_message(number: str) -> None:
            on_link(driver, click, f'#list a[data-id="{number}"]')

        def shown(text: str) -> None:
            wait.until(ready.text_to_be_present_in_element((By.ID, "view"), text))

        open_message(small)
        shown("Small body.")
        open_message(big)
        assert held.asked.wait(TIMEOUT)
        shown(f"Opening message #{big}...")
        on_link(
            driver,
            lambda marked: assert_equal(marked.get_attribute("data-id"), big),
            "#list a.current",
        )
        held.answer.set()
        shown("Big body.")
        # Opened again: the page asks again, and the server has it.
        open_message(small)
        shown("Small body.")
        open_message(big)
        shown("Big body.")
        assert held.rendered == ["Small", "Big"]


#: Names a mail's resource hints point at, and one a page outside any mail
#: does: the browser's net log must show the last and neither of the others.
HINTED = (
    "dns-prefetch.tracker.example",
    "preconnect.tracker.example",
    "srcdoc.tracker.example",
    "iframe.tracker.example",
    "lazy-iframe.tracker.example",
    "anchor.tracker.example",
    "held-link.tracker.example",
    "held-map.tracker.example",
)
CONTROL = "dns-prefetch.control.example"


def test_resource_hints_in_mail_resolve_no_name(
    view: Live, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # No CSP directive covers <link rel=dns-prefetch> or preconnect:
    # Chromium resolved the tracker's name (and connected) from inside the
    # sandboxed, network-less frame, telling it the mail was opened.
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.wait import WebDriverWait

    net_log = tmp_path_factory.mktemp("net-log") / "net-log.json"
    view.send(
        "Hinted",
        (
            f'<link rel="dns-prefetch" href="//{HINTED[0]}">'
            f'<LINK rel=preconnect href="http://{HINTED[1]}/">'
            # A frame's own document, where the <link> is entity-encoded.
            f'<iframe srcdoc="&lt;link rel=preconnect href=http://{HINTED[2]}/&gt;">'
            "</iframe>"
            # A frame's src: connected to before CSP refused the navigation.
            f'<iframe src="https://{HINTED[3]}/opened"></iframe>'
            f"<IFRAME loading=lazy src=//{HINTED[4]}/opened></IFRAME>"
            f'<a href="https://{HINTED[5]}/click">a link</a>'
            # Pressed: Chromium connects to a link's host on the mouse's
            # press, before any click (a sender's per-reader link host
            # learnt who read it).
            f'<p><a id="pressed" href="https://{HINTED[6]}/click">pressed</a></p>'
            '<map name="m"><area id="area" shape="rect" coords="0,0,40,40" '
            f'href="https://{HINTED[7]}/click"></map>'
            '<img usemap="#m" width="40" height="40" alt="map">'
            '<p id="greeting">Hello</p>'
        ).encode(),
        Content_Type="text/html",
    )
    hinted = view.json("/api/wait?subject=Hinted")["id"]
    with browser.chromium(
        tmp_path_factory.mktemp("chromium-profile"),
        f"--log-net-log={net_log}",
        "--net-log-capture-mode=Everything",
    ) as driver:
        wait = WebDriverWait(driver, TIMEOUT)
        driver.get(f"{view.url}/messages/{hinted}")
        driver.switch_to.frame(
            wait.until(
                ready.presence_of_element_located((By.CSS_SELECTOR, "iframe.mail"))
            )
        )
        wait.until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )
        assert driver.find_element(By.ID, "greeting").text == "Hello"
        from selenium.webdriver.common.action_chains import ActionChains

        for pressed in ("pressed", "area"):
            target = driver.find_element(By.ID, pressed)
            if pressed == "area":  # pressed where the map's image is
                target = driver.find_element(By.CSS_SELECTOR, "img[usemap]")
            ActionChains(driver).click_and_hold(target).release().perform()
        driver.switch_to.default_content()
        # The control: the same hint outside a mail, after it, is logged,
        # so a hint from the mail would have been too.
        with browser.request_log() as pages:
            pages.page = f'<link rel="dns-prefetch" href="//{CONTROL}">'
            driver.get(f"{pages.url}/page.html")
            wait.until(
                lambda d: d.execute_script("return document.readyState") == "complete"
            )
            # Chromium writes the log as it goes: quitting before the hint was
            # resolved would fail the control below.
            wait.until(lambda d: CONTROL in net_log.read_text())
    # Complete once the browser has quit.
    logged = net_log.read_text()
    assert CONTROL in logged
    assert [name for name in HINTED if name in logged] == []


def test_with_allow_remote_a_page_on_another_domain_reads_no_mail(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # DNS rebinding as the browser does it: Chromium's resolver rules stand
    # in for the DNS of rebind.example, whose owner points it at the sink.
    # A docker-compose service name (smtpsink) still opens the view.
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.wait import WebDriverWait

    view = Live("--allow-remote")
    try:
        view.send("Reset your password")
        view.json("/api/wait?subject=Reset%20your%20password")
        with browser.chromium(
            tmp_path_factory.mktemp("chromium-profile"),
            "--host-resolver-rules=MAP rebind.example 127.0.0.1, "
            "MAP smtpsink 127.0.0.1",
        ) as driver:
            driver.get(f"http://rebind.example:{view.http_port}/api/messages")
            refused = driver.find_element(By.TAG_NAME, "body").text
            assert f"Host 'rebind.example:{view.http_port}' is refused" in refused
            assert "Reset your password" not in refused
            driver.get(f"http://smtpsink:{view.http_port}/")
            WebDriverWait(driver, TIMEOUT).until(
                ready.text_to_be_present_in_element(
                    (By.ID, "list"), "Reset your password"
                )
            )
    finally:
        view.sink.stop()


@contextlib.contextmanager
def _page_of_another_origin(markup: str) -> Iterator[str]:
    """Serve ``markup`` at the address returned: another origin than the
    view's (another port, and "localhost" where the view is 127.0.0.1)."""
    import http.server

    body = markup.encode()

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_a_page_of_another_origin_cannot_time_the_views_answers(
    driver: WebDriver, view: Live
) -> None:
    # The page cannot read an answer, but it could time one: /api/wait
    # answered at once only when a message matched, and a page read a reset
    # token a character at a time. Refused at once now, whatever matches. A
    # link to the view's page, followed, still opens it.
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.wait import WebDriverWait

    view.send("Reset", b"Your link: https://app.example/reset?token=c0ffee")
    view.json("/api/wait?subject=Reset")
    from pytest_smtpsink._live import MAX_WAIT

    assert MAX_WAIT > TIMEOUT * 10
    never = f"{view.url}/api/wait?timeout={MAX_WAIT:g}&text=token%3Dnot-this"
    markup = (
        f'<a id="open" href="{view.url}/messages/1">the message</a><script>'
        f'fetch("{never}", {{mode: "no-cors"}}).then('
        '() => { document.title = "answered"; },'
        '() => { document.title = "failed"; });</script>'
    )
    with _page_of_another_origin(markup) as address:
        driver.get(address)
        # Waited on for TIMEOUT: served, the wait would have held it for
        # MAX_WAIT.
        WebDriverWait(driver, TIMEOUT).until(ready.title_is("answered"))
        driver.find_element(By.ID, "open").click()
        WebDriverWait(driver, TIMEOUT).until(
            ready.text_to_be_present_in_element((By.TAG_NAME, "body"), "token=c0ffee")
        )


def test_the_open_message_is_in_the_address(driver: WebDriver, view: Live) -> None:
    # Opening a message left the address as it was: a reload, Back or a
    # link shared lost it.
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    wait = WebDriverWait(driver, TIMEOUT)
    view.send("First")
    view.send("Second")
    driver.get(view.url + "/")
    links = (By.CSS_SELECTOR, "#list li.item a")
    wait.until(lambda d: len(d.find_elements(*links)) == 2)

    def open_message(subject: str) -> None:
        on_link(driver, click, containing=subject)
        wait.until(lambda d: subject in d.find_element(By.ID, "view").text)

    open_message("First")
    first = driver.current_url
    assert first.endswith("#1")
    open_message("Second")
    assert driver.current_url.endswith("#2")
    driver.back()
    assert driver.current_url == first
    wait.until(lambda d: "First" in d.find_element(By.ID, "view").text)
    driver.refresh()
    wait.until(lambda d: "First" in d.find_element(By.ID, "view").text)
    driver.back()  # before any message was open
    wait.until(lambda d: d.find_element(By.ID, "view").text == "Select a message.")


def test_the_filter_shows_the_messages_with_every_word_typed(
    driver: WebDriver, view: Live
) -> None:
    # Mailpit and smtp4dev have a search box; the list had none, however
    # long it grew. The filter stays as the list is drawn anew for new mail.
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.wait import WebDriverWait

    wait = WebDriverWait(driver, TIMEOUT)
    for subject in ("Welcome Ann", "Invoice 42", "Welcome Bob"):
        view.send(subject)
    driver.get(view.url + "/")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#list li.item")) == 3)

    def shown() -> list[str]:
        return [
            item.find_element(By.CSS_SELECTOR, ".subject").text
            for item in driver.find_elements(By.CSS_SELECTOR, "#list li.item")
            if item.is_displayed()
        ]

    def count() -> str:
        return str(driver.find_element(By.ID, "count").text)

    box = driver.find_element(By.ID, "filter")
    box.send_keys("WELCOME")
    wait.until(lambda d: count() == "2 of 3")
    assert shown() == ["Welcome Bob", "Welcome Ann"]
    box.send_keys(" bob")
    wait.until(lambda d: count() == "1 of 3")
    assert shown() == ["Welcome Bob"]
    view.send("Welcome Cy")
    wait.until(lambda d: count() == "1 of 4")
    assert shown() == ["Welcome Bob"]
    box.send_keys(Keys.CONTROL, "a", Keys.BACK_SPACE)
    wait.until(lambda d: count() == "4")
    assert shown() == ["Welcome Cy", "Welcome Bob", "Invoice 42", "Welcome Ann"]
    box.send_keys("#2 ")  # a message's number, as the list shows it
    wait.until(lambda d: shown() == ["Invoice 42"])
    # "#1" is message 1, not #10 and #11 too.
    box.send_keys(Keys.CONTROL, "a", Keys.BACK_SPACE)
    for n in range(5, 12):
        view.send(f"Later {n}")
    wait.until(lambda d: count() == "11")
    box.send_keys("#1")
    wait.until(lambda d: count() == "1 of 11")
    assert shown() == ["Welcome Ann"]


def test_a_burst_of_mail_asks_for_the_list_one_request_at_a_time(
    driver: WebDriver, view: Live
) -> None:
    # Each event asked for the whole list: 1,000 mails made 379 requests at
    # once (56 MB), the list seconds behind. One at a time, and one more
    # after it if anything changed meanwhile.
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    driver.get(view.url + "/")
    wait = WebDriverWait(driver, TIMEOUT)
    wait.until(lambda d: d.find_element(By.ID, "count").text == "0")
    # Chromium keeps 250 entries by default: room for one a message.
    driver.execute_script("performance.setResourceTimingBufferSize(2000);")
    with smtplib.SMTP("127.0.0.1", view.sink.port) as client:
        for n in range(300):
            client.sendmail(
                "app@example.com", ["ann@example.com"], f"Subject: m{n}\r\n\r\nx\r\n"
            )
    wait.until(lambda d: d.find_element(By.ID, "count").text == "300")
    spans = driver.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter(e => e.name.endsWith('/fragments/list'))"
        ".map(e => [e.startTime, e.responseEnd]);"
    )
    assert spans, "no list request was timed"
    overlapping = [
        (earlier, later)
        for earlier, later in itertools.pairwise(spans)
        if later[0] < earlier[1]
    ]
    assert overlapping == []
    assert len(spans) < 300


#: Where a message's line is (its number the argument), in pixels below
#: the list's top edge.
LINE_PLACE = (
    "const list = document.getElementById('list');"
    'const line = list.querySelector(`a[data-id="${arguments[0]}"]`);'
    "return Math.round(line.getBoundingClientRect().top"
    " - list.getBoundingClientRect().top);"
)


def test_new_mail_keeps_the_line_in_sight_of_a_list_scrolled_down(
    driver: WebDriver, view: Live
) -> None:
    # The list is drawn anew with new mail on top: scrolled down, the lines
    # moved under the reader (a click aimed at #150 opened #250).
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    for n in range(1, 61):
        view.send(f"Message {n}")
    driver.set_window_size(1200, 700)
    driver.get(view.url + "/")
    wait = WebDriverWait(driver, TIMEOUT)
    wait.until(lambda d: d.find_element(By.ID, "count").text == "60")
    driver.execute_script(
        "document.querySelector('#list a[data-id=\"30\"]').scrollIntoView();"
    )
    before = driver.execute_script(LINE_PLACE, "30")
    assert abs(before) <= 1
    for n in range(61, 66):
        view.send(f"Message {n}")
    wait.until(lambda d: d.find_element(By.ID, "count").text == "65")
    assert abs(driver.execute_script(LINE_PLACE, "30") - before) <= 1
    # At the top, the newest comes into sight, as before.
    driver.execute_script("document.getElementById('list').scrollTop = 0;")
    view.send("Message 66")
    wait.until(lambda d: d.find_element(By.ID, "count").text == "66")
    assert driver.execute_script(LINE_PLACE, "66") < driver.execute_script(
        LINE_PLACE, "65"
    )
    assert abs(driver.execute_script(LINE_PLACE, "66")) < 100


def test_a_filtered_list_scrolled_down_keeps_its_line_in_place(
    driver: WebDriver, view: Live
) -> None:
    # Lines the filter hides took room while the place was kept, and the
    # line in sight moved when they came (helper-205's test).
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    for n in range(1, 121):
        view.send(f"{'odd' if n % 2 else 'even'} Message {n}")
    driver.set_window_size(1200, 700)
    driver.get(view.url + "/")
    wait = WebDriverWait(driver, TIMEOUT)
    wait.until(lambda d: d.find_element(By.ID, "count").text == "120")
    driver.find_element(By.ID, "filter").send_keys("odd")
    wait.until(lambda d: d.find_element(By.ID, "count").text == "60 of 120")
    driver.execute_script(
        "document.querySelector('#list a[data-id=\"41\"]').scrollIntoView();"
    )
    before = driver.execute_script(LINE_PLACE, "41")
    assert abs(before) <= 1
    for n in range(121, 141):
        view.send(f"even Message {n}")  # hidden by the filter
    wait.until(lambda d: d.find_element(By.ID, "count").text == "60 of 140")
    assert abs(driver.execute_script(LINE_PLACE, "41") - before) <= 1

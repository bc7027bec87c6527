"""``smtpsink --http PORT``: the live view's JSON API, event stream and guards.

The sink runs as a real subprocess (`test_cli.Sink`); requests go over
loopback with urllib and http.client. What a browser does with the page is
in test_live_browser.py.
"""

from __future__ import annotations

import contextlib
import html
import http.client
import imaplib
import json
import poplib
import re
import smtplib
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import browser
import pytest
from test_cli import TIMEOUT, Sink
from test_html import parse

from pytest_smtpsink import Mailbox, SMTPSink


class Live:
    """A running ``smtpsink --http 0`` and its base URL."""

    def __init__(self, *args: str) -> None:
        self.sink = Sink("--http", "0", *args)
        self.url = self.sink.in_banner(r"live view on (http://\S+)/$").group(1)
        self.http_port = int(self.url.rsplit(":", 1)[1])

    def send(self, subject: str, body: bytes = b"Hello.\r\n", **headers: str) -> None:
        head = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
        with smtplib.SMTP("127.0.0.1", self.sink.port) as client:
            client.sendmail(
                "app@example.com",
                ["ann@example.com"],
                f"Subject: {subject}\r\n{head}\r\n".encode() + body,
            )

    def request(
        self, path: str, method: str = "GET", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        request = urllib.request.Request(
            self.url + path, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read()

    def json(self, path: str, method: str = "GET", **headers: str) -> Any:
        status, body = self.request(path, method, headers)
        assert status == 200, (status, body)
        return json.loads(body)


@pytest.fixture
def live() -> Iterator[Callable[..., Live]]:
    started: list[Live] = []

    def start(*args: str) -> Live:
        started.append(Live(*args))
        return started[-1]

    yield start
    for each in started:
        if each.sink.proc.poll() is None:
            each.sink.stop()


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/api/messages", "GET, HEAD, DELETE"),
        ("PUT", "/api/messages/1", "GET, HEAD"),
        ("PATCH", "/", "GET, HEAD"),
        ("OPTIONS", "/api/wait", "GET, HEAD"),
        # One message cannot be deleted alone: it was a 404.
        ("DELETE", "/api/messages/1", "GET, HEAD"),
    ],
)
def test_a_method_the_view_does_not_take_is_405_saying_which_it_takes(
    live: Callable[..., Live], method: str, path: str, allowed: str
) -> None:
    # http.server answered an HTML page "501 Unsupported method", as if
    # HTTP had no such method; a script reading the JSON API got no JSON.
    view = live()
    request = urllib.request.Request(view.url + path, method=method)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=TIMEOUT)
    with refused.value as error:
        assert error.code == 405
        assert error.headers["Allow"] == allowed
        assert error.headers["Content-Type"] == "application/json; charset=utf-8"
        assert json.loads(error.read()) == {
            "error": f"{method} is not allowed here; allowed: {allowed}"
        }
    assert view.json("/api/messages") == []  # still serving


def test_frame_ancestors_is_in_the_header_only(live: Callable[..., Live]) -> None:
    # The page's <meta> copy of the policy had it too, which browsers ignore
    # there and log as an error on every load.
    view = live()
    with urllib.request.urlopen(view.url + "/", timeout=TIMEOUT) as response:
        header = response.headers["Content-Security-Policy"]
        page = response.read().decode()
    assert "frame-ancestors 'none'" in header
    meta = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    assert meta is not None
    assert "frame-ancestors" not in meta.group(1)
    assert meta.group(1).replace("&#x27;", "'") in header


def test_list_get_raw_and_delete(live: Callable[..., Live]) -> None:
    view = live()
    assert view.json("/api/messages") == []
    view.send("First")
    view.send("Second", b"Bye.\r\n", To="Ann <ann@example.com>")
    # /api/wait returns once the message is in the live view: no sleep.
    second = view.json("/api/wait?subject=Second")
    assert second["to"] == ["ann@example.com"]
    assert second["from"] is None
    listed = view.json("/api/messages")
    assert [m["subject"] for m in listed] == ["First", "Second"]
    assert listed[1] == second
    assert listed[0]["mail_from"] == "app@example.com"
    assert listed[0]["rcpt_to"] == ["ann@example.com"]

    detail = view.json(f"/api/messages/{second['id']}")
    assert detail["text"] == "Bye.\n"
    assert ["To", "Ann <ann@example.com>"] in detail["headers"]
    # The links are those the page shows, and they work.
    assert detail["eml_href"] == f"/api/messages/{second['id']}/raw"
    with urllib.request.urlopen(view.url + detail["eml_href"], timeout=TIMEOUT) as got:
        raw = got.read()
        # Named as --save-dir names it ("0002.eml" said nothing of it).
        assert got.headers["Content-Disposition"] == (
            f'attachment; filename="{second["id"]:04d}-Second.eml"'
        )
    assert raw == b"Subject: Second\r\nTo: Ann <ann@example.com>\r\n\r\nBye.\r\n"

    assert view.json("/api/messages", "DELETE") == {"deleted": 2}
    assert view.json("/api/messages") == []
    status, body = view.request(f"/api/messages/{second['id']}")
    assert (status, json.loads(body)) == (
        404,
        {"error": f"no message '{second['id']}'"},
    )
    # A page (or the page's fragment) of a message gone: said in HTML, where
    # a browser showed the raw JSON.
    note = (
        f'<p class="note">No message {second["id"]} here: it was deleted, let go '
        "as newer mail came, or came before the sink was started again. "
        '<a href="/">All messages</a></p>'
    )
    status, body = view.request(f"/fragments/messages/{second['id']}")
    assert (status, body.decode()) == (404, note)
    status, body = view.request(f"/messages/{second['id']}")
    assert status == 404
    assert note in body.decode()
    assert body.decode().startswith("<!DOCTYPE html>")


def test_a_folded_subjects_tab_is_white_space_in_the_list_and_title(
    live: Callable[..., Live],
) -> None:
    # The list line and the page's title showed "folded\\twith a tab".
    view = live()
    view.send("folded\r\n\twith a tab")
    message = view.json("/api/wait?rcpt_to=ann@example.com")
    status, listed = view.request("/fragments/list")
    assert status == 200
    assert '<span class="subject">folded with a tab</span>' in listed.decode()
    status, page = view.request(f"/messages/{message['id']}")
    assert f"<title>#{message['id']} folded with a tab - smtpsink</title>" in (
        page.decode()
    )


def test_the_page_says_the_zone_of_its_times_and_announces_the_count(
    live: Callable[..., Live], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The times are the sink's clock (a container's is often UTC): the
    # page said no zone. New mail was not announced to a screen reader.
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # +05:30 all year
    view = live()
    status, body = view.request("/")
    assert status == 200
    page = body.decode()
    assert '<span class="zone">times UTC+05:30</span>' in page
    assert '<span role="status"><span id="count">' in page
    # Landmarks a screen reader lists by name (they had none).
    assert '<nav id="list" aria-label="Messages">' in page
    assert '<section id="view" aria-label="Message shown">' in page


def test_the_page_comes_with_the_list_as_it_is(live: Callable[..., Live]) -> None:
    # It came with an empty list and "0 message(s)", filled in only by its
    # script: that was what a page without JavaScript (or a slow one) said.
    view = live()
    page = view.request("/")[1].decode()
    assert '<span id="count">0</span>' in page
    assert "No mail yet. Send some to the sink." in page
    view.send("First")
    view.send("Second <one>")
    second = view.json("/api/wait?subject=Second%20%3Cone%3E")
    page = view.request("/")[1].decode()
    assert '<span id="count">2</span>' in page
    listed = page.split('aria-label="Messages">', 1)[1].split("</nav>", 1)[0]
    assert listed.index("Second &lt;one&gt;") < listed.index("First")
    assert f'<a href="/messages/{second["id"]}" data-id="{second["id"]}">' in listed


def test_a_messages_own_page_is_named_by_it_and_links_the_list(
    live: Callable[..., Live],
) -> None:
    # Every shared link opened as a tab "smtpsink", with no way to the list.
    view = live()
    view.send("Reset <your> password")
    message = view.json("/api/wait?subject=Reset%20%3Cyour%3E%20password")
    status, body = view.request(f"/messages/{message['id']}")
    assert status == 200
    page = body.decode()
    assert (
        f"<title>#{message['id']} Reset &lt;your&gt; password - smtpsink</title>"
        in page
    )
    assert f'<p><a href="/#{message["id"]}">All messages</a></p>' in page


def test_the_list_shows_a_long_subject_cut(live: Callable[..., Live]) -> None:
    # One 2 MB subject made every drawing of the list 2 MB.
    view = live()
    view.send("Long" + "".join("\r\n " + "x" * 70 for _ in range(1500)))
    view.json("/api/wait?rcpt_to=ann@example.com")
    status, body = view.request("/fragments/list")
    assert status == 200
    assert len(body) < 2_000
    assert re.search(r"x\.\.\. \[\d{6} more characters\]</span>", body.decode())


def test_a_message_page_shows_a_long_session_cut(live: Callable[..., Live]) -> None:
    # A connection that sent many messages put every other message's lines
    # on each one's page: 4.7 MB for a 19-byte message after 20,000. Cut to
    # its first and last lines, a message's own lines were left out.
    view = live()
    with smtplib.SMTP("127.0.0.1", view.sink.port) as client:
        for number in range(60):
            client.sendmail(
                "app@example.com", ["ann@example.com"], f"Subject: m{number}\r\n\r\n"
            )
    view.json("/api/wait?subject=m59")
    middle = view.json("/api/wait?subject=m30")
    status, body = view.request(f"/fragments/messages/{middle['id']}")
    assert status == 200
    shown = body.decode().split("<pre>")[-1].split("</pre>")[0].split("\n")
    assert len(shown) < 60
    assert shown[0] == "S: 220 smtpsink.test pytest-smtpsink"
    assert shown[-1] == "S: 221 Bye"
    gaps = [line for line in shown if line.startswith("[... ")]
    assert len(gaps) == 2
    for line in gaps:
        assert re.fullmatch(
            r"\[\.\.\. \d+ lines not shown: --transcripts and --save-dir have "
            r"the whole conversation\]",
            line,
        )
    # Its own exchanges, from its MAIL to its "queued as", between the gaps.
    own = shown[shown.index(gaps[0]) + 1 : shown.index(gaps[1])]
    assert own[0].upper().startswith("C: MAIL FROM:")
    assert own[-1] == f"S: 250 2.0.0 OK: queued as #{middle['id']}"


def test_from_names_every_author(live: Callable[..., Live]) -> None:
    # A From may name several authors (RFC 5322): it showed the first only.
    view = live()
    view.send("Joint", From="Ann <ann@example.com>, bob@example.com")
    joint = view.json("/api/wait?subject=Joint")
    assert joint["from"] == "ann@example.com, bob@example.com"


def send_invoice(view: Live, filename: bytes) -> None:
    """A mail with a text part and a PDF attachment named by ``filename``
    (the Content-Disposition parameter as written)."""
    view.send(
        "Invoice",
        b"--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        b"--b\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; " + filename + b"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n",
        MIME_Version="1.0",
        Content_Type='multipart/mixed; boundary="b"',
    )


def test_a_messages_json_links_to_its_attachments(live: Callable[..., Live]) -> None:
    view = live()
    send_invoice(view, b'filename="invoice.pdf"')
    summary = view.json("/api/wait?subject=Invoice")
    (attachment,) = view.json(f"/api/messages/{summary['id']}")["attachments"]
    # It was None, while the page linked to this address.
    assert attachment["href"] == f"/api/messages/{summary['id']}/attachments/1"
    status, content = view.request(attachment["href"])
    assert (status, content) == (200, b"%PDF-1.4\n")


def test_an_attachment_named_beyond_latin_1_downloads(
    live: Callable[..., Live],
) -> None:
    # http.server writes headers as Latin-1: the Content-Disposition of
    # "日本語.pdf" raised, and the download was a connection closed
    # without an answer (and a traceback on the terminal).
    view = live()
    send_invoice(view, b"filename*=UTF-8''%E6%97%A5%E6%9C%AC%E8%AA%9E.pdf")
    summary = view.json("/api/wait?subject=Invoice")
    (attachment,) = view.json(f"/api/messages/{summary['id']}")["attachments"]
    with urllib.request.urlopen(view.url + attachment["href"], timeout=TIMEOUT) as got:
        assert got.read() == b"%PDF-1.4\n"
        disposition = got.headers["Content-Disposition"]
    # An ASCII stand-in, and the name itself (RFC 6266), which browsers use.
    assert disposition == (
        'attachment; filename="___.pdf"; '
        "filename*=UTF-8''%E6%97%A5%E6%9C%AC%E8%AA%9E.pdf"
    )
    view.sink.stop()
    assert view.sink.stderr_lines() == []


def test_an_attachment_without_a_name_downloads_named_by_its_type(
    live: Callable[..., Live],
) -> None:
    # Listed as attachment-1.png, it downloaded as "attachment-1".
    view = live()
    view.send(
        "Logo",
        b"--b\r\nContent-Type: text/html\r\n\r\n<img src=cid:logo>\r\n"
        b"--b\r\nContent-Type: image/png\r\nContent-ID: <logo>\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--b--\r\n",
        MIME_Version="1.0",
        Content_Type='multipart/related; boundary="b"',
    )
    summary = view.json("/api/wait?subject=Logo")
    (attachment,) = view.json(f"/api/messages/{summary['id']}")["attachments"]
    assert attachment["filename"] == "attachment-1.png"
    with urllib.request.urlopen(view.url + attachment["href"], timeout=TIMEOUT) as got:
        assert got.read() == b"\x89PNG\r\n\x1a\n"
        assert got.headers["Content-Disposition"] == (
            'attachment; filename="attachment-1.png"'
        )


def test_delete_all_empties_the_pop3_and_imap_mailboxes(
    live: Callable[..., Live],
) -> None:
    view = live("--pop3", "0", "--imap", "0")
    # "Delete all" asks first, naming the mailboxes (only) where they are
    # served: without --pop3 or --imap there are none to empty.
    question = 'data-question="Delete every message the sink holds, and empty '
    assert question in view.request("/")[1].decode()
    assert question not in live().request("/")[1].decode()
    pop3_port = int(view.sink.in_banner(r"^POP3 listening on pop3://\S+:(\d+)$")[1])
    imap_port = int(view.sink.in_banner(r"^IMAP listening on imap://\S+:(\d+)$")[1])
    view.send("First")
    view.json("/api/wait?subject=First")
    with imaplib.IMAP4("127.0.0.1", imap_port, timeout=TIMEOUT) as imap:
        imap.login("ann@example.com", "any")
        assert imap.select("INBOX") == ("OK", [b"1"])
        imap.response("EXISTS")  # imaplib keeps SELECT's: drop it
        assert view.json("/api/messages", "DELETE") == {"deleted": 1}
        # The open session hears of it at its next command, and stays open.
        imap.noop()
        assert imap.response("EXPUNGE") == ("EXPUNGE", [b"1"])
        view.send("Second")
        view.json("/api/wait?subject=Second")
        imap.noop()
        assert imap.response("EXISTS") == ("EXISTS", [b"1"])
        _, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert data[0][1].strip() == b"Subject: Second"  # type: ignore[index,union-attr]
        imap.logout()
    pop3 = poplib.POP3("127.0.0.1", pop3_port, timeout=TIMEOUT)
    try:
        pop3.user("ann@example.com")
        pop3.pass_("any")
        assert pop3.stat()[0] == 1  # Second only
    finally:
        pop3.quit()


def test_wait_for_a_later_message(live: Callable[..., Live]) -> None:
    view = live()
    view.send("Old")
    old = view.json("/api/wait?subject=Old")
    answers: list[Any] = []
    waiter = threading.Thread(
        target=lambda: answers.append(
            view.json(f"/api/wait?to=ann@example.com&since={old['id']}&timeout=30")
        )
    )
    waiter.start()
    try:
        view.send("New", To="ann@example.com")
    finally:
        waiter.join(TIMEOUT)
    assert [a["subject"] for a in answers] == ["New"]


def test_wait_errors(live: Callable[..., Live]) -> None:
    view = live()
    status, body = view.request("/api/wait?subject=never&timeout=0")
    assert status == 408
    assert json.loads(body) == {
        "error": "no message matching subject='never' within 0 s"
    }
    status, body = view.request("/api/wait?timeout=0")
    assert json.loads(body) == {"error": "no message within 0 s"}
    # "-0" was said back as "within -0 s"; ten decimals were "not a number".
    for timeout in ("-0", "0.0000000001"):
        status, body = view.request(f"/api/wait?timeout={timeout}")
        assert (status, json.loads(body)["error"]) == (
            408,
            "no message within 0 s" if timeout == "-0" else "no message within 1e-10 s",
        )
    status, body = view.request("/api/wait?timeout=abc")
    assert (status, json.loads(body)) == (
        400,
        {"error": "timeout must be a number, got 'abc'"},
    )
    status, body = view.request("/api/wait?since=1.5")
    assert (status, json.loads(body)) == (
        400,
        {"error": "since must be a whole number, got '1.5'"},
    )
    # What int() and float() take besides: "1_0" was 10, a full-width 1 was 1.
    for query, said in (
        ("since=1_0", "since must be a whole number, got '1_0'"),
        ("since=%EF%BC%91", "since must be a whole number, got '\uff11'"),
        ("since=%20%201", "since must be a whole number, got '  1'"),
        ("timeout=1_0", "timeout must be a number, got '1_0'"),
        ("timeout=-1", "timeout must be 0 to 300 seconds"),
    ):
        status, body = view.request(f"/api/wait?{query}")
        assert (status, json.loads(body)) == (400, {"error": said}), query
    # The criteria are checked as wait_for checks them: these matched nothing
    # and the request waited out its timeout for a 408.
    status, body = view.request("/api/wait?to=ann@&timeout=30")
    assert status == 400
    assert "has nothing after its @" in json.loads(body)["error"]
    # An HTTP client can pass no callable: the advice is the query's own.
    status, body = view.request("/api/wait?to=a@x.test,b@y.test&timeout=30")
    assert (status, json.loads(body)) == (
        400,
        {
            "error": "to= takes one address; 'a@x.test,b@y.test' names 2: "
            "'a@x.test', 'b@y.test'; give one (to=a@x.test): a message matches "
            "when that address is among its recipients"
        },
    )
    status, body = view.request("/api/wait?from=a@x.test,b@y.test&timeout=30")
    assert (status, json.loads(body)) == (
        400,
        {
            "error": "from= takes one address; 'a@x.test,b@y.test' names 2: "
            "'a@x.test', 'b@y.test'; a message has one sender: give it "
            "(from=a@x.test)"
        },
    )
    status, body = view.request("/api/wait?from=ann@&timeout=30")
    assert status == 400
    error = json.loads(body)["error"]
    assert error.startswith("from="), error  # the query's word, not from_=
    assert "from_" not in error, error
    status, body = view.request("/api/wait?since=-5")  # was taken as 0
    assert (status, json.loads(body)) == (
        400,
        {"error": "since must be a message number, 0 or more, got -5"},
    )
    # The list takes no parameters: "?limit=1" was ignored, silently.
    status, body = view.request("/api/messages?limit=1")
    assert (status, json.loads(body)) == (
        400,
        {
            "error": "/api/messages takes no parameters (it lists every message); "
            "/api/wait takes criteria"
        },
    )
    status, body = view.request("/api/wait?colour=blue")
    assert status == 400
    error = json.loads(body)["error"]
    assert error.startswith("unknown parameter 'colour'; use since, timeout and from")
    status, body = view.request("/api/wait?from=a@x.test&from_=b@x.test")
    assert status == 400
    error = json.loads(body)["error"]
    assert error.startswith("unknown parameter 'from_'; use since, timeout and from")
    status, body = view.request("/api/wait?timeout=9999")
    assert (status, json.loads(body)) == (
        400,
        {"error": "timeout must be 0 to 300 seconds"},
    )
    # A number with an exponent is a number (it was "must be a number").
    status, body = view.request("/api/wait?timeout=1e3")
    assert (status, json.loads(body)) == (
        400,
        {"error": "timeout must be 0 to 300 seconds"},
    )
    # Which subject was meant? The last one was taken, silently.
    status, body = view.request("/api/wait?subject=a&subject=b&timeout=0")
    assert (status, json.loads(body)) == (
        400,
        {"error": "subject is given 2 times; give it once"},
    )


def test_head_answers_as_get_without_a_body(live: Callable[..., Live]) -> None:
    # curl -I got 501, although every page can say what GET would send.
    view = live()
    view.send("Hello")
    view.json("/api/wait?subject=Hello")  # in the live view now
    for path in ("/", "/api/messages", "/api/messages/1/raw", "/events"):
        with urllib.request.urlopen(
            urllib.request.Request(view.url + path, method="HEAD"), timeout=TIMEOUT
        ) as head:
            assert head.status == 200
            assert head.read() == b""
            headers = head.headers
        if path != "/events":  # a stream has no length
            status, body = view.request(path)
            assert status == 200
            assert headers["Content-Length"] == str(len(body))
            assert headers["X-Content-Type-Options"] == "nosniff"


def test_a_wait_cut_short_by_the_stop_says_so() -> None:
    from pytest_smtpsink._live import LiveServer

    server = LiveServer("127.0.0.1", 0)
    server.start()
    answers: list[object] = []

    def wait() -> None:
        url = server.url + "api/wait?subject=Never&timeout=60"
        try:
            urllib.request.urlopen(url, timeout=TIMEOUT).close()
        except urllib.error.HTTPError as error:
            with error:
                answers.append((error.code, json.loads(error.read())))
        except OSError as error:  # no answer at all: shown by the assert
            answers.append(error)

    waiter = threading.Thread(target=wait)
    waiter.start()
    try:
        # Stop once the request waits for mail (on the inbox's condition).
        while waiter.is_alive() and not server.inbox.changed._waiters:  # type: ignore[attr-defined]
            time.sleep(0.001)  # a poll for the request's state, not a delay
    finally:
        server.stop()
        waiter.join(TIMEOUT)
    assert answers == [
        (
            503,
            {
                "error": "the sink stopped before a message matching subject='Never' came"
            },
        )
    ]


def test_a_client_that_hangs_up_early_is_no_error(live: Callable[..., Live]) -> None:
    # A browser reloading, or curl stopped with Ctrl-C: the connection goes
    # (here with a reset) before the answer is written.
    view = live()
    view.send("Hello")
    view.json("/api/wait?subject=Hello")  # in the live view now
    for _ in range(10):
        client = socket.create_connection(("127.0.0.1", view.http_port))
        client.sendall(b"GET /api/messages HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
    assert len(view.json("/api/messages")) == 1  # and it keeps serving
    view.sink.stop()
    assert view.sink.stderr_lines() == []


def _raw_get(view: Live, target: bytes, host: bytes = b"127.0.0.1") -> int:
    """The status of ``GET target`` sent as these bytes (urllib and
    http.client would refuse to send a malformed request); a connection
    closed without an answer fails the test."""
    return _raw_answer(view, target, host)[0]


def _raw_answer(
    view: Live, target: bytes, host: bytes = b"127.0.0.1"
) -> tuple[int, bytes]:
    """`_raw_get`'s status, and the body."""
    with socket.create_connection(("127.0.0.1", view.http_port), TIMEOUT) as client:
        client.sendall(b"GET " + target + b" HTTP/1.0\r\nHost: " + host + b"\r\n\r\n")
        response = http.client.HTTPResponse(client)
        response.begin()
        return response.status, response.read()


def test_a_refusal_shows_what_was_sent_as_utf8_and_cut(
    live: Callable[..., Live],
) -> None:
    # http.server reads a request's bytes as Latin-1: "²" was said "Â²", and
    # a path of 5,000 digits was echoed whole.
    view = live()
    status, body = _raw_answer(view, "/api/messages/\u00b2".encode())
    assert (status, json.loads(body)) == (404, {"error": "no message '\u00b2'"})
    status, body = _raw_answer(view, b"/" + b"9" * 5000)
    assert status == 404
    assert json.loads(body) == {"error": "no such page: /" + "9" * 199 + "..."}
    status, body = _raw_answer(view, b"/api/messages", "l\u0131calhost".encode())
    assert status == 403
    assert json.loads(body)["error"].startswith("Host 'l\u0131calhost' is ")


def test_what_is_no_message_number_is_not_found(live: Callable[..., Live]) -> None:
    # "\xb2" reads as "²" (superscript two): str.isdigit() says yes and
    # int() says no; 5000 digits are more than int() reads. Each was a
    # traceback on the terminal and a connection closed without an answer.
    view = live()
    view.send("Hello")
    number = str(view.json("/api/wait")["id"]).encode()
    for bad in (b"\xb2", b"9" * 5000):
        for target in (
            b"/api/messages/" + bad,
            b"/api/messages/" + bad + b"/raw",
            b"/messages/" + bad,
            b"/fragments/messages/" + bad,
            b"/api/messages/" + number + b"/attachments/" + bad,
        ):
            assert _raw_get(view, target) == 404, target[:40]
    view.sink.stop()
    assert view.sink.stderr_lines() == []


def test_other_hosts_and_origins_are_refused(live: Callable[..., Live]) -> None:
    view = live()
    view.send("Keep me")
    view.json("/api/wait?subject=Keep%20me")
    # DNS rebinding: a page of evil.example whose name resolves to 127.0.0.1.
    status, body = view.request("/api/messages", headers={"Host": "evil.example"})
    assert (status, json.loads(body)) == (
        403,
        {
            "error": "Host 'evil.example' is refused: the live view answers "
            "localhost, loopback addresses and the names given with "
            "--http-allow-host, so that no web page can point its own name at the "
            "sink and read the mail (DNS rebinding); if you reach the sink by this "
            "name, start smtpsink with --http-allow-host evil.example"
        },
    )
    # A cross-site "delete all" from a page in the user's browser.
    status, body = view.request(
        "/api/messages", "DELETE", {"Origin": "http://evil.example"}
    )
    refusal = {
        "error": "a request from a page of another origin: the live view answers "
        "its own pages, links to them opened in a tab, and clients that are no "
        "browser (curl, scripts)"
    }
    assert (status, json.loads(body)) == (403, refusal)
    assert len(view.json("/api/messages")) == 1
    # A page of another origin timed the answers it could not read (a wait
    # answered at once only when a message matched), and took the streams
    # of the user's pages: what the browser marks as sent for another site
    # is refused, at once.
    for site in ("cross-site", "same-site"):
        for path in ("/api/wait?timeout=300&subject=x", "/events", "/app.js", "/"):
            status, body = view.request(
                path, headers={"Sec-Fetch-Site": site, "Sec-Fetch-Mode": "no-cors"}
            )
            assert (status, json.loads(body)) == (403, refusal), path
    status, _ = view.request("/api/messages", headers={"Origin": "http://evil.example"})
    assert status == 403
    # A link to one of the view's pages or downloads, opened in a tab, is
    # followed.
    for path in ("/", "/messages/1", "/api/messages/1/raw"):
        status, _ = view.request(
            path,
            headers={
                "Sec-Fetch-Site": "cross-site",
                "Sec-Fetch-Mode": "navigate",
                "Sec-Fetch-Dest": "document",
            },
        )
        assert status == 200, path
    # Not in a frame of another site's page, nor for the API.
    for path, dest in (("/messages/1", "iframe"), ("/api/messages", "document")):
        status, _ = view.request(
            path,
            headers={
                "Sec-Fetch-Site": "cross-site",
                "Sec-Fetch-Mode": "navigate",
                "Sec-Fetch-Dest": dest,
            },
        )
        assert status == 403, path
    # The view's own requests, and typed addresses, are answered.
    for site in ("same-origin", "none"):
        status, _ = view.request("/api/messages", headers={"Sec-Fetch-Site": site})
        assert status == 200, site
    # localhost and the page's own origin are fine.
    assert len(view.json("/api/messages", Host=f"localhost:{view.http_port}")) == 1
    # So is loopback written as an IPv4-mapped IPv6 address (refused before
    # Python 3.13, whose ipaddress calls it loopback) and none other mapped.
    mapped = f"[::ffff:127.0.0.1]:{view.http_port}"
    assert len(view.json("/api/messages", Host=mapped)) == 1
    status, _ = view.request("/api/messages", headers={"Host": "[::ffff:10.0.0.1]"})
    assert status == 403
    # "?id=1" deleted every message: no parameter is taken.
    status, body = view.request(
        "/api/messages?id=1", "DELETE", {"Origin": view.url.rstrip("/")}
    )
    assert (status, json.loads(body)) == (
        400,
        {"error": "DELETE /api/messages takes no parameters: it deletes every message"},
    )
    assert len(view.json("/api/messages")) == 1
    deleted = view.json("/api/messages", "DELETE", Origin=view.url)
    assert deleted == {"deleted": 1}


def test_a_malformed_host_is_refused(live: Callable[..., Live]) -> None:
    # urllib.parse raises on a bracket not closed or around a name: that
    # was a traceback on the terminal and no answer.
    # urllib.parse also read the name after an "@" (user information in a
    # URL, not in a Host header), and ignored what followed a port.
    view = live()
    for host in (
        b"[::1",
        b"[evil.example]",
        b"[127.0.0.1]",
        b"evil.example@127.0.0.1",
        b"127.0.0.1:80x",
        b"127.0.0.1:80/evil.example",
        b"localhost:\xb2",
    ):
        assert _raw_get(view, b"/api/messages", host) == 403, host
    for host in (b"[::1]", b"[::1]:80", b"127.0.0.1:", b"LocalHost.:8025"):
        assert _raw_get(view, b"/api/messages", host) == 200, host
    # Two Host headers: the first was checked (RFC 9112 3.2: a 400). An
    # absolute URL names the host itself (3.2.2): its host was not checked.
    assert _raw_answer(view, b"/api/messages", b"localhost\r\nHost: evil.example") == (
        400,
        b'{"error": "more than one Host header"}',
    )
    assert _raw_get(view, b"http://evil.example/api/messages", b"localhost") == 403
    assert _raw_get(view, b"http://localhost/api/messages", b"evil.example") == 200
    # A scheme with no host is no absolute URL: its Host is the one (it was
    # "Host '' is malformed").
    assert _raw_get(view, b"http:/api/messages", b"localhost") == 200
    # A bracket not closed: a traceback on the terminal and no answer.
    assert _raw_answer(view, b"http://[::1/", b"localhost") == (
        400,
        b'{"error": "malformed request target"}',
    )
    view.sink.stop()
    assert view.sink.stderr_lines() == []


@contextlib.contextmanager
def _event_stream(view: Live) -> Iterator[http.client.HTTPResponse]:
    """The live view's event stream, past its preamble."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", view.http_port, timeout=TIMEOUT
    )
    try:
        connection.request("GET", "/events")
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type") == "text/event-stream"
        assert response.readline() == b"retry: 1000\n"
        assert response.readline() == b"\n"
        assert response.readline() == b"event: hello\n"
        assert re.fullmatch(rb"data: [0-9a-f]{16}\n", response.readline())
        assert response.readline() == b"\n"
        yield response
    finally:
        connection.close()


def test_event_stream_says_when_mail_arrives(live: Callable[..., Live]) -> None:
    view = live()
    with _event_stream(view) as events:
        view.send("Ping")
        # Blocks until the server writes: the event is pushed, not polled.
        assert events.readline().startswith(b"data: ")
    # An open event stream does not keep the sink from stopping.
    assert view.sink.stop()[-1] == "smtpsink stopped: 1 message in 1 session"


def test_sessions_have_the_numbers_the_terminal_gives_them(
    live: Callable[..., Live],
) -> None:
    # Numbered by position, every message's connection was "SMTP session 1"
    # and those without a message 1..N among themselves: the page could not
    # be matched with the terminal or session-NNNN.txt.
    view = live()
    for name in ("first.example", "second.example"):
        with smtplib.SMTP("127.0.0.1", view.sink.port) as client:
            client.ehlo(name)
    view.send("Hello")
    numbers = {}
    for _ in range(3):
        opened = view.sink.expect(r"session (\d+) opened from 127\.0\.0\.1:(\d+)")
        numbers[opened.group(2)] = opened.group(1)
    view.sink.expect(r"message #1 ")
    (message,) = view.json("/api/messages")
    status, fragment = view.request(f"/fragments/messages/{message['id']}")
    assert status == 200
    shown = re.findall(
        r"SMTP session (\d+): [^<]*?127\.0\.0\.1:(\d+)", fragment.decode()
    )
    assert [(numbers[port], port) for _, port in shown] == shown
    assert [number for number, _ in shown] == ["3"]
    status, listed = view.request("/fragments/list")
    shown = re.findall(r"SMTP session (\d+): [^<]*?127\.0\.0\.1:(\d+)", listed.decode())
    assert sorted(number for number, _ in shown) == ["1", "2"]
    assert all(numbers[port] == number for number, port in shown)


def test_the_live_view_says_the_tls_hint_in_the_commands_words(
    live: Callable[..., Live],
) -> None:
    # The terminal said "--tls implicit"; the live view "tls='implicit'",
    # a setting its user has no way to give.
    import ssl

    view = live()
    with pytest.raises(ssl.SSLError, match="WRONG_VERSION_NUMBER"):
        smtplib.SMTP_SSL("127.0.0.1", view.sink.port, timeout=TIMEOUT)
    view.sink.expect(r"session 1 closed")
    status, listed = view.request("/fragments/list")
    assert status == 200
    text = html.unescape(listed.decode())
    assert "or give the sink --tls implicit)" in text, text
    assert "tls='" not in text


def test_the_live_view_shows_a_clients_words_as_sent(
    live: Callable[..., Live],
) -> None:
    # The command's spelling was applied to the whole title: an EHLO of
    # "tls='starttls'" showed as "--tls starttls".
    view = live()
    with smtplib.SMTP("127.0.0.1", view.sink.port, local_hostname="x") as smtp:
        smtp.docmd("EHLO", "tls='starttls'")
    view.sink.expect(r"session 1 closed")
    status, listed = view.request("/fragments/list")
    assert status == 200
    assert "ehlo=\"tls='starttls'\"" in html.unescape(listed.decode())


def test_event_stream_says_when_a_connection_without_mail_ends(
    live: Callable[..., Live],
) -> None:
    # The list shows such a connection with its transcript and its end.
    view = live()
    with _event_stream(view) as events:
        with smtplib.SMTP("127.0.0.1", view.sink.port) as client:
            client.ehlo("no-mail.example")
            # The session's start is pushed, while it is still open.
            assert events.readline().startswith(b"data: ")
            assert events.readline() == b"\n"
        # Blocks until the server writes: the end is pushed too.
        assert events.readline().startswith(b"data: ")
    status, body = view.request("/fragments/list")
    assert status == 200
    assert b"Connections without a message" in body
    assert b"no-mail.example" in body
    assert b"quit" in body


def test_the_list_cuts_a_long_connection_without_mail(
    live: Callable[..., Live],
) -> None:
    # A connection of 300 NOOPs and no message was listed whole: every
    # change drew it again on every open page (20,000 made the list 8 MB).
    view = live()
    with smtplib.SMTP("127.0.0.1", view.sink.port) as client:
        client.ehlo("chatty.example")
        for _ in range(300):
            client.noop()
    # The client read each reply: the subprocess recorded it first.
    status, body = view.request("/fragments/list")
    assert status == 200
    shown = body.decode().split("<pre>")[-1].split("</pre>")[0].split("\n")
    assert len(shown) == 20 + 1 + 20
    assert shown[0] == "S: 220 smtpsink.test pytest-smtpsink"
    assert re.fullmatch(
        r"\[\.\.\. 5\d\d lines not shown: --transcripts and --save-dir have "
        r"the whole conversation\]",
        shown[20],
    ), shown[20]
    assert shown[-1] == "S: 221 Bye"


def test_a_connection_that_said_nothing_is_not_listed(
    live: Callable[..., Live],
) -> None:
    # A health check's probe (connect, read the greeting, close) every few
    # seconds filled "Connections without a message" (1,000 kept), pushing
    # out the failed connections the list is for; --save-dir skips them.
    view = live()
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", view.sink.port), TIMEOUT) as probe:
            assert probe.recv(100).startswith(b"220 ")
    with smtplib.SMTP("127.0.0.1", view.sink.port) as client:
        client.ehlo("refused.example")
        client.docmd("RCPT", "TO:<b@example.com>")  # 503: no MAIL first
    view.sink.expect(r"session 4 closed")
    status, listed = view.request("/fragments/list")
    assert status == 200
    text = html.unescape(listed.decode())
    assert re.findall(r"SMTP session (\d+)", text) == ["4"], text
    assert "refused.example" in text


def test_pages_escape_hostile_mail(live: Callable[..., Live]) -> None:
    view = live()
    view.send(
        browser.HOSTILE_SUBJECT,
        browser.hostile_html("http://127.0.0.1:9").encode(),
        Content_Type="text/html",
    )
    message = view.json("/api/wait?html=greeting")
    for path in ("/", "/fragments/list", f"/messages/{message['id']}"):
        status, body = view.request(path)
        assert status == 200
        page = parse(body.decode())
        # The page's own script is /app.js; nothing inline, nothing from mail.
        assert page.tags.count("script") == (1 if path == "/" else 0), path
    status, body = view.request(f"/fragments/messages/{message['id']}")
    page = parse(body.decode())
    assert "script" not in page.tags
    assert browser.HOSTILE_SUBJECT in "".join(page.text)
    (srcdoc,) = page.srcdocs
    assert srcdoc.endswith(browser.hostile_html("http://127.0.0.1:9") + "\n")


def test_the_list_shows_control_characters_escaped(live: Callable[..., Live]) -> None:
    view = live()
    view.send("\x1b[31mred")
    view.json("/api/wait")
    status, body = view.request("/fragments/list")
    assert status == 200
    assert b"\x1b" not in body  # it showed as a glyph, or coloured a terminal
    assert b"\\x1b[31mred" in body


def test_bad_http_port_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_smtpsink._cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--http", "70000"])
    assert exit_info.value.code == 2
    assert (
        "argument --http: must be a number from 0 to 65535" in capsys.readouterr().err
    )


def test_busy_http_port_is_an_error(
    live: Callable[..., Live], capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_smtpsink._cli import main

    view = live()
    assert main(["--port", "0", "--http", str(view.http_port)]) == 1
    error = capsys.readouterr().err
    assert error == (
        f"smtpsink: error: --http: cannot listen on 127.0.0.1:{view.http_port}: "
        "Address already in use (choose another --http port, or --http 0 for a free "
        "one)\n"
    )


def _status_for_host(view: Live, host: str) -> tuple[int, Any]:
    """The status and JSON of ``GET /api/messages`` sent with this Host."""
    status, body = view.request("/api/messages", headers={"Host": host})
    return status, json.loads(body)


def test_allow_remote_still_refuses_a_name_with_a_dot(
    live: Callable[..., Live],
) -> None:
    # DNS rebinding past --allow-remote: a page of evil.example points its
    # name at the sink's address and reads the mail through the browser.
    # The Host check was off with --allow-remote.
    view = live("--allow-remote")
    view.send("Reset your password")
    view.json("/api/wait?subject=Reset%20your%20password")
    for host in (f"evil.example:{view.http_port}", "EVIL.Example.", "a.b.c.example"):
        status, answer = _status_for_host(view, host)
        name = host.split(":")[0].lower().rstrip(".")
        assert (status, answer) == (
            403,
            {
                "error": f"Host {host!r} is refused: the live view answers IP "
                "addresses, names without a dot, this machine's names and the "
                "names given with --http-allow-host, so that no web page can "
                "point its own name at the sink and read the mail (DNS "
                "rebinding); if you reach the sink by this name, start smtpsink "
                f"with --http-allow-host {name}"
            },
        ), host
    # No Host header at all (HTTP/1.0): no browser sends that, so it is
    # not answered, as on loopback.
    with socket.create_connection(("127.0.0.1", view.http_port), TIMEOUT) as client:
        client.sendall(b"GET /api/messages HTTP/1.0\r\n\r\n")
        response = http.client.HTTPResponse(client)
        response.begin()
        assert (response.status, json.loads(response.read())) == (
            403,
            {
                "error": "no Host header: the view answers only requests that "
                "say which host they are for (see --http-allow-host)"
            },
        )
    # Nothing changes either.
    status, _ = view.request(
        "/api/messages",
        "DELETE",
        {"Host": "evil.example", "Origin": "http://evil.example"},
    )
    assert status == 403
    assert len(view.json("/api/messages")) == 1


def test_allow_remote_answers_addresses_and_names_without_a_dot(
    live: Callable[..., Live],
) -> None:
    # How a container or another machine names the sink: a published
    # address, a docker-compose service, this machine's name.
    view = live("--allow-remote")
    port = view.http_port
    for host in (
        f"192.0.2.7:{port}",
        "10.0.0.5",
        f"[2001:db8::1]:{port}",
        "[::1]",
        f"smtpsink:{port}",
        "SMTPSINK.",
        "mail_sink-1",
        f"localhost:{port}",
        socket.gethostname(),
        f"{socket.getfqdn()}:{port}",
    ):
        assert _status_for_host(view, host) == (200, []), host


def test_allow_remote_answers_this_machines_dotted_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A machine named in its domain (build-1.ci.example): its own names are
    # what a colleague's browser uses. This machine's are read once, as the
    # server starts; here they are made dotted, whatever the test machine's.
    from pytest_smtpsink._live import LiveServer

    monkeypatch.setattr(socket, "gethostname", lambda: "Build-1")
    monkeypatch.setattr(socket, "getfqdn", lambda name="": "build-1.CI.example.")
    server = LiveServer("127.0.0.1", 0, allow_remote=True)
    monkeypatch.undo()
    server.start()
    try:
        for host, expected in (
            ("build-1.ci.example", 200),
            ("BUILD-1.ci.example.:80", 200),
            ("build-2.ci.example", 403),
        ):
            connection = http.client.HTTPConnection(
                "127.0.0.1", server.server_address[1], timeout=TIMEOUT
            )
            try:
                connection.request("GET", "/api/messages", headers={"Host": host})
                response = connection.getresponse()
                response.read()
                assert response.status == expected, host
            finally:
                connection.close()
    finally:
        server.stop()


def test_http_allow_host_adds_names(live: Callable[..., Live]) -> None:
    view = live(
        "--allow-remote",
        "--http-allow-host",
        "Mail.Example.",
        "--http-allow-host",
        "sink.dev.test",
    )
    for host in ("mail.example", f"MAIL.example.:{view.http_port}", "sink.dev.test"):
        assert _status_for_host(view, host) == (200, []), host
    assert _status_for_host(view, "other.example")[0] == 403


def test_http_allow_host_on_loopback_adds_names_and_nothing_else(
    live: Callable[..., Live],
) -> None:
    # An /etc/hosts alias of 127.0.0.1. On loopback the view answers only
    # loopback names otherwise, as it did.
    view = live("--http-allow-host", "mail.test")
    assert _status_for_host(view, f"mail.test:{view.http_port}") == (200, [])
    for host in ("other.test", "smtpsink", "192.0.2.7", socket.gethostname()):
        status, answer = _status_for_host(view, host)
        assert status == 403, host
        assert answer["error"].startswith(
            f"Host {host!r} is refused: the live view answers localhost, loopback "
            "addresses and the names given with --http-allow-host,"
        )


def test_http_allow_host_star_answers_any_host(live: Callable[..., Live]) -> None:
    view = live("--allow-remote", "--http-allow-host", "*")
    # Said at run time, not in the docs only.
    assert view.sink.in_banner(r"^note: --http-allow-host '\*' answers every Host")
    assert not any("allow-host" in line for line in live().sink.banner)
    assert _status_for_host(view, "evil.example") == (200, [])
    # Even a request without a Host header (HTTP/1.0), as before the check.
    with socket.create_connection(("127.0.0.1", view.http_port), TIMEOUT) as client:
        client.sendall(b"GET /api/messages HTTP/1.0\r\n\r\n")
        response = http.client.HTTPResponse(client)
        response.begin()
        assert (response.status, response.read()) == (200, b"[]")


@pytest.mark.parametrize(
    "value", ["http://mail.example", "mail.example:8025", "*.example", "", "a b"]
)
def test_a_bad_http_allow_host_is_a_usage_error(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_smtpsink._cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--http", "0", "--http-allow-host", value])
    assert exit_info.value.code == 2
    assert (
        "smtpsink: error: argument --http-allow-host: must be a host name or an "
        "IP address (no scheme, port or pattern), or '*' for any host, "
        f"got {value!r}\n"
    ) in capsys.readouterr().err


def test_http_allow_host_without_http_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pytest_smtpsink._cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--http-allow-host", "mail.example"])
    assert exit_info.value.code == 2
    assert (
        "argument --http-allow-host: is only used with --http PORT"
        in capsys.readouterr().err
    )


def test_the_view_keeps_the_newest_messages(smtpsink: Mailbox) -> None:
    from pytest_smtpsink._live import Inbox, list_fragment

    for subject in ("one", "two", "three"):
        with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
            client.sendmail(
                "a@example.com", ["b@example.com"], f"Subject: {subject}\r\n\r\n"
            )
    messages = smtpsink.wait_for(count=3)
    inbox = Inbox(keep=2)
    inbox.add(messages[:1], [])
    inbox.add(messages[1:], [m.session for m in messages])
    _, kept, sessions = inbox.snapshot()
    assert [m.subject for m in kept] == ["two", "three"]
    assert sessions == []  # each shows with its mail
    assert inbox.get(messages[0].number) is None
    # The list says so: the oldest vanished without a word.
    listed = list_fragment(kept, sessions, dropped=inbox.dropped, keep=inbox.keep)
    assert listed.startswith(
        '<p class="note">Only the last 2 messages, 100 MiB at most, are kept here: '
        "1 older one(s) were let go (--save-dir DIR keeps every message).</p><ul>"
    )
    # Until "delete all", also of part of them (the count was kept, and the
    # note said "the last 1 messages").
    inbox.clear(up_to=messages[1].number)
    assert inbox.dropped == 0


def test_the_view_keeps_at_most_keep_bytes_of_mail(smtpsink: Mailbox) -> None:
    # A count alone let 1000 large messages (25 MB each) fill the memory.
    from pytest_smtpsink._live import Inbox, list_fragment

    body = "x" * 70 + "\r\n"
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        for subject, lines in (("one", 10), ("two", 10), ("big", 100), ("six", 10)):
            client.sendmail(
                "a@example.com",
                ["b@example.com"],
                f"Subject: {subject}\r\n\r\n{body * lines}",
            )
    one, two, big, six = smtpsink.wait_for(count=4)
    inbox = Inbox(keep=10, keep_bytes=len(one.raw) + len(two.raw))
    inbox.add([one, two], [])
    assert [m.subject for m in inbox.snapshot()[1]] == ["one", "two"]
    inbox.add([big], [])  # over the bound alone: the newest is kept whole
    assert [m.subject for m in inbox.snapshot()[1]] == ["big"]
    assert inbox.dropped == 2
    listed = list_fragment(
        [big], [], dropped=inbox.dropped, keep=inbox.keep, keep_bytes=inbox.keep_bytes
    )
    assert f"Only the last 10 messages, {inbox.keep_bytes:,} bytes at most" in listed
    # What "delete all" took no longer counts.
    inbox = Inbox(keep=10, keep_bytes=len(one.raw) + len(two.raw))
    inbox.add([one, two], [])
    inbox.clear(up_to=one.number)
    inbox.add([six], [])
    assert [m.subject for m in inbox.snapshot()[1]] == ["two", "six"]


def test_the_view_keeps_no_connection_that_would_hold_mail_let_go(
    smtpsink: Mailbox,
) -> None:
    # The view kept the last `keep` sessions, each holding all its messages:
    # a sender of 100 messages per connection kept 100 times the mail it
    # showed. Only connections without a message are shown as such.
    from pytest_smtpsink._live import Inbox

    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        for number in range(5):
            client.sendmail(
                "a@example.com", ["b@example.com"], f"Subject: {number}\r\n\r\n"
            )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.noop()
    smtpsink.wait_until(lambda: all(s.end for s in smtpsink.sessions))
    batch, idle = smtpsink.sessions
    inbox = Inbox(keep=2)
    inbox.add([], [batch, idle])  # as the CLI hands them over: new, then mail
    inbox.add(list(batch.messages), [])
    _, kept, sessions = inbox.snapshot()
    assert [m.subject for m in kept] == ["3", "4"]
    assert sessions == [idle]


def test_a_kept_message_keeps_its_session_number(smtpsink: Mailbox) -> None:
    # Numbers were dropped oldest first, whatever the page still showed: a
    # reader polling over POP3 (a session per poll, none shown) pushed out
    # the number of a message still on the page.
    from pytest_smtpsink._live import Inbox

    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], "Subject: kept\r\n\r\n")
    message = smtpsink.wait_for(subject="kept")
    for _ in range(9):
        poplib.POP3(smtpsink.pop3.host, smtpsink.pop3.port, timeout=10).quit()
    smtpsink.wait_until(lambda: all(s.end for s in smtpsink.sessions))
    polls = smtpsink.sessions[1:]
    inbox = Inbox(keep=2)
    inbox.add([message], [message.session], {id(message.session): 1})
    inbox.add([], polls, {id(s): n for n, s in enumerate(polls, start=2)})
    _, kept, _ = inbox.snapshot()
    assert kept == [message]
    assert inbox.session_number(message.session) == 1
    assert inbox.session_number(polls[-1]) == 10


def test_delete_all_drops_mail_still_on_its_way_to_the_view() -> None:
    # The view hears of mail a moment after the mailboxes have it (the CLI's
    # loop hands it over). Mail that arrived before "Delete all" but had not
    # reached the view yet is gone from the mailboxes, so it must not show
    # up in the view afterwards; mail after it shows in both.
    from pytest_smtpsink._live import LiveServer

    def send(subject: str) -> None:
        with smtplib.SMTP(sink.host, sink.port) as client:
            client.sendmail(
                "app@example.com",
                ["ann@example.com"],
                f"Subject: {subject}\r\n\r\nx\r\n",
            )
        sink.wait_for(subject=subject)

    def catch_up() -> None:  # what the CLI's loop does
        messages, _ = follower.take()
        live.inbox.add(messages, [])

    with SMTPSink() as sink:
        imap = sink.serve_mailboxes("imap", 0)
        follower = sink.follow()
        live = LiveServer("127.0.0.1", 0)
        live.on_delete = sink.empty_mailboxes
        live.start()
        try:
            send("Shown")
            catch_up()
            send("On its way")
            request = urllib.request.Request(live.url + "api/messages", method="DELETE")
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                assert json.loads(response.read()) == {"deleted": 1}
            catch_up()
            send("After")
            catch_up()
            with urllib.request.urlopen(
                live.url + "api/messages", timeout=TIMEOUT
            ) as got:
                assert [m["subject"] for m in json.loads(got.read())] == ["After"]
        finally:
            live.stop()
        with imaplib.IMAP4(imap.host, imap.port, timeout=TIMEOUT) as client:
            client.login("ann@example.com", "any")
            assert client.select("INBOX") == ("OK", [b"1"])
            _, fetched = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            assert isinstance(fetched[0], tuple)
            assert fetched[0][1] == b"Subject: After\r\n\r\n"


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (b"<script> / HTTP/1.1", 501),  # http.server's own pages
        (b"GET / HTTP/1.1\r\nX-Long: " + b"x" * 70000, 431),
    ],
)
def test_the_servers_own_error_pages_carry_the_security_headers(
    live: Callable[..., Live], request_line: bytes, status: int
) -> None:
    # They quote the request (escaped) and went out without the CSP and
    # nosniff headers every page of the view has.
    view = live()
    with socket.create_connection(
        ("127.0.0.1", view.http_port), timeout=TIMEOUT
    ) as sock:
        sock.sendall(request_line + b"\r\nHost: 127.0.0.1\r\n\r\n")
        with sock.makefile("rb") as answer:
            head, _, body = answer.read().partition(b"\r\n\r\n")
    text = head.decode("latin-1")
    assert text.startswith(f"HTTP/1.0 {status} ")
    assert "\r\nX-Content-Type-Options: nosniff" in text
    assert "\r\nContent-Security-Policy: " in text
    assert b"<script>" not in body


def test_past_the_most_event_streams_the_oldest_is_released(
    live: Callable[..., Live],
) -> None:
    # Each stream holds a thread of the server: streams without end (a page
    # in many tabs, a client that opens and never closes) made threads
    # without end. The newest page is the one the user looks at, so it is
    # served, and the oldest told to stop listening.
    from pytest_smtpsink._live import MAX_STREAMS

    view = live()
    with contextlib.ExitStack() as stack:
        streams = [
            stack.enter_context(_event_stream(view)) for _ in range(MAX_STREAMS + 1)
        ]
        oldest = streams[0]
        assert oldest.readline() == b"event: released\n"
        assert oldest.readline() == b"data: released\n"
        assert oldest.readline() == b"\n"
        assert oldest.read() == b""  # and the server ended it
        view.send("Ping")
        for events in streams[1:]:
            assert events.readline().startswith(b"data: ")
    view.sink.stop()
    assert view.sink.stderr_lines() == []


def test_past_the_most_waits_a_wait_is_refused_with_retry_after() -> None:
    from pytest_smtpsink._live import LiveServer

    def get(path: str) -> tuple[int, str | None, Any]:
        try:
            with urllib.request.urlopen(server.url + path, timeout=TIMEOUT) as got:
                return got.status, None, json.loads(got.read())
        except urllib.error.HTTPError as error:
            with error:
                return (
                    error.code,
                    error.headers["Retry-After"],
                    json.loads(error.read()),
                )

    with SMTPSink() as sink:
        follower = sink.follow()
        server = LiveServer("127.0.0.1", 0, max_waits=1)
        server.start()
        answers: list[tuple[int, str | None, Any]] = []
        waiter = threading.Thread(
            target=lambda: answers.append(get("api/wait?subject=Hello&timeout=60"))
        )
        waiter.start()
        try:
            while waiter.is_alive() and server.waiting < 1:
                time.sleep(0.001)  # a poll for the request's state, not a delay
            assert get("api/wait?timeout=0") == (
                503,
                "1",
                {
                    "error": "too many requests waiting: 1 at once at most, and "
                    "this one would be one more; retry after 1 s"
                },
            )
            with smtplib.SMTP(sink.host, sink.port) as client:
                client.sendmail(
                    "a@example.com", ["b@example.com"], b"Subject: Hello\r\n\r\n"
                )
            sink.wait_for(subject="Hello")
            server.inbox.add(follower.take()[0], [])
            waiter.join(TIMEOUT)
            [(status, _, found)] = answers
            assert (status, found["subject"]) == (200, "Hello")
            # The slot is free again.
            assert get("api/wait?timeout=0")[0] == 200
        finally:
            server.stop()
            waiter.join(TIMEOUT)
    assert server.waiting == 0


def test_a_wait_whose_client_left_frees_its_slot() -> None:
    # It held the slot until its own timeout (up to 300 s): 32 clients that
    # gave up early (curl -m 5 ...&timeout=60) made every wait a 503.
    from pytest_smtpsink._live import LiveServer

    server = LiveServer("127.0.0.1", 0, max_waits=1)
    server.start()
    try:
        host, port = server.url.removeprefix("http://").rstrip("/").split(":")
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as client:
            client.sendall(
                f"GET /api/wait?timeout=300 HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
            )
            deadline = time.monotonic() + TIMEOUT
            while server.waiting < 1 and time.monotonic() < deadline:
                time.sleep(0.001)  # a poll for the request's state, not a delay
            assert server.waiting == 1
        deadline = time.monotonic() + TIMEOUT
        while server.waiting and time.monotonic() < deadline:
            time.sleep(0.001)  # a poll for the request's state, not a delay
        assert server.waiting == 0
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.url + "api/wait?timeout=0", timeout=TIMEOUT)
        with refused.value:
            assert refused.value.code == 408  # waited (no message), not 503
    finally:
        server.stop()


def test_a_rendered_message_is_kept_only_once_it_cannot_change(
    smtpsink: Mailbox,
) -> None:
    from pytest_smtpsink._live import RenderedMessages

    rendered = RenderedMessages(size=1)
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("app@example.com", ["ann@example.com"], b"Subject: a\r\n\r\n")
        open_session = smtpsink.wait_for()
        # Its session still open: the transcript shown with it may grow.
        assert rendered.fragment(open_session, 1) is not rendered.fragment(
            open_session, 1
        )
        client.sendmail("app@example.com", ["ann@example.com"], b"Subject: b\r\n\r\n")
    smtpsink.wait_until(lambda: smtpsink.sessions[0].end)
    first, second = smtpsink.messages
    kept = rendered.fragment(first, 1)
    assert rendered.fragment(first, 1) is kept
    assert rendered.fragment(first, 2) is not kept  # another session number
    kept = rendered.fragment(second, 1)  # pushes the first out (size=1)
    assert rendered.fragment(first, 1) is not kept
    kept = rendered.fragment(first, 1)
    rendered.clear()  # "Delete all"
    assert rendered.fragment(first, 1) is not kept

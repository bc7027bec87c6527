"""The save directory's index.html and the pytest-html extras.

Rendering and escaping are checked on the generated markup here; what a real
browser does with it (scripts, remote images, the frame) is in
test_html_browser.py. The plugin wiring runs through `pytester`, with and
without xdist and pytest-html.
"""

from __future__ import annotations

import functools
import html.parser
import json
import re
import smtplib
import urllib.parse
from collections.abc import Callable, Sequence
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path

import browser
import pytest
from conftest import Factory, make_message

from pytest_smtpsink import Mailbox, SMTPSink, _html, _report


class _Tags(html.parser.HTMLParser):
    """Start tags of a page as a browser's tokenizer sees them: markup in
    attribute values (srcdoc) is not a tag."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.srcdocs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "iframe":
            values = dict(attrs)
            assert values.get("sandbox") == "", "the frame must be fully sandboxed"
            self.srcdocs.append(values.get("srcdoc") or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(markup: str) -> _Tags:
    tags = _Tags()
    tags.feed(markup)
    tags.close()
    return tags


def send_hostile(sink: Mailbox, image_url: str = "http://127.0.0.1:9") -> None:
    message = make_message(
        subject=browser.HOSTILE_SUBJECT,
        text=browser.HOSTILE_TEXT,
        html=browser.hostile_html(image_url),
    )
    message.add_attachment(
        b"<script>alert(1)</script>",
        maintype="text",
        subtype="html",
        filename="../../evil page.html",
    )
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.send_message(message)


def save_index(
    sink: Mailbox,
    root: Path,
    nodeid: str = "test_x.py::test_x",
    more: Sequence[Mailbox] = (),
    reason: str = "assert False",
) -> Path:
    """What the plugin does for one failed test, then the index."""
    directory = _report.test_directory(root, nodeid, None, False, 1)
    written = _report.save([sink, *more], directory)
    _html.record_test(
        [sink, *more],
        nodeid=nodeid,
        outcome="failed",
        directory=directory,
        written=written,
        root=root,
        reason=reason,
    )
    return _html.write_index(root, [directory.relative_to(root).as_posix()])


def test_hostile_fields_cannot_leave_their_place(
    smtpsink: Mailbox, tmp_path: Path
) -> None:
    send_hostile(smtpsink)
    smtpsink.wait_for(count=1)
    page = parse(save_index(smtpsink, tmp_path).read_text(encoding="utf-8"))
    # The page has no script of its own, so any <script> came from the mail.
    assert "script" not in page.tags
    assert page.tags.count("iframe") == 1
    # The subject and the text part are shown as text, exactly.
    text = "".join(page.text)
    assert browser.HOSTILE_SUBJECT in text
    assert browser.HOSTILE_TEXT in text
    # The HTML part is all inside srcdoc, behind the mail CSP.
    (srcdoc,) = page.srcdocs
    assert srcdoc.startswith(
        f'<meta http-equiv="Content-Security-Policy" content="{_html.MAIL_CSP}">'
    )
    assert srcdoc.endswith(browser.hostile_html("http://127.0.0.1:9") + "\n")


def test_a_huge_part_is_shown_cut_with_a_note(
    smtpsink: Mailbox, tmp_path: Path
) -> None:
    # A 20 MB HTML part took minutes to render (the remote-load scan parses
    # every tag) into a page no browser opens gladly; the raw source was cut
    # already. The parts are too, and so is the record saved beside the page
    # (smtpsink.json was as big again as the .eml); the live view's API keeps
    # them whole.
    markup = "<p>paragraph</p>\n" * 60_000  # about 1 MB
    text = "line of text\n" * 80_000
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(make_message(text=text, html=markup))
    message = smtpsink.wait_for(count=1)
    assert message.html is not None
    assert message.text is not None
    index = save_index(smtpsink, tmp_path).read_text(encoding="utf-8")
    page = parse(index)
    (srcdoc,) = page.srcdocs
    shown_text = "".join(page.text)
    for part, what in ((message.html, "HTML part"), (message.text, "text part")):
        found = re.search(rf"\.\.\. (\d+) more characters of the {what} in the ", index)
        assert found is not None, f"no note under the {what}"
        shown = len(part) - int(found.group(1))
        assert 100_000 < shown < len(part)
        assert part[:shown] in (srcdoc if what == "HTML part" else shown_text)
        assert part[: shown + 1] not in (srcdoc if what == "HTML part" else shown_text)
    record = _html.message_record(message)
    assert record["html"] == message.html[: _html.PART_LIMIT]
    assert record["text"] == message.text[: _html.PART_LIMIT]
    assert record["html_truncated"] == len(message.html) - _html.PART_LIMIT > 0
    assert record["text_truncated"] == len(message.text) - _html.PART_LIMIT > 0
    saved = json.loads(next(tmp_path.rglob("smtpsink.json")).read_text("utf-8"))
    (saved_record,) = saved["messages"]
    assert saved_record["html"] == record["html"]
    whole = _html.message_record(message, whole_parts=True)
    assert (whole["html"], whole["text"]) == (message.html, message.text)
    assert whole["html_truncated"] == whole["text_truncated"] == 0


def test_bidi_and_control_characters_are_shown_escaped(smtpsink: Mailbox) -> None:
    # The attachment list and the Headers table printed them raw: a U+202E
    # made "invoice\u202egpj.exe" read as a .jpg, and reversed the plugin's
    # own type and size after it; an ESC went to the page as it was.
    message = make_message(subject="rlo\u202etest")
    message["X-Ctl"] = "\x1b[31mred"
    message.add_attachment(
        b"MZ",
        maintype="application",
        subtype="octet-stream",
        filename="invoice\u202egpj.exe",
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(message)
    page = _html.render_message(_html.message_record(smtpsink.wait_for(count=1)))
    assert "\u202e" not in page
    assert "<td>\x1b" not in page  # the raw source, below, stays raw
    assert "invoice\\u202egpj.exe (application/octet-stream, 2 bytes)" in page
    assert "<td>rlo\\u202etest</td>" in page
    assert "<td>\\x1b[31mred</td>" in page


def test_bidi_characters_in_the_envelope_are_shown_escaped(smtpsink: Mailbox) -> None:
    # "\u202emoc.elpmaxe@nna" read as ann@example.com in the envelope (and
    # reversed the address after it).
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            "\u202eevil@example.com",
            ["\u202emoc.elpmaxe@nna", "x\u2028y@example.com"],
            b"Subject: hi\r\n\r\nhi\r\n",
            mail_options=["SMTPUTF8"],
        )
    page = _html.render_message(_html.message_record(smtpsink.wait_for(count=1)))
    assert "\u202e" not in page
    assert "\u2028" not in page
    assert "<dd>\\u202eevil@example.com</dd>" in page
    assert "<dd>\\u202emoc.elpmaxe@nna, x\\u2028y@example.com</dd>" in page


def test_a_folded_headers_tab_is_white_space_in_the_headers_table(
    smtpsink: Mailbox,
) -> None:
    # Unfolding keeps the tab an MTA folds a Received header with: it read
    # "from mx.example.net\tby mail.example.com" in every such header.
    raw = (
        b"Received: from mx.example.net\r\n\tby mail.example.com with ESMTPS\r\n"
        b"Subject: folded\r\n\twith a tab\r\n\r\nx\r\n"
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], raw)
    page = _html.render_message(_html.message_record(smtpsink.wait_for(count=1)))
    assert "<td>from mx.example.net by mail.example.com with ESMTPS</td>" in page
    assert "<td>folded with a tab</td>" in page
    assert "\\t" not in page.partition("Headers</summary>")[2].partition("</table>")[0]


@pytest.mark.parametrize(
    ("summary", "shown"),
    [
        (
            "#4 09:00:00.000 a@b.example -> c@d.example | To: c@d.example "
            "| Subject: 'Gr\u00fc\u00dfe \u05e2\u05d1\u05e8\u05d9\u05ea' | 795 bytes",
            "#4 09:00:00.000 a@b.example -&gt; c@d.example | To: <bdi>c@d.example"
            "</bdi> | Subject: <bdi>&#x27;Gr\u00fc\u00dfe \u05e2\u05d1\u05e8\u05d9"
            "\u05ea&#x27;</bdi> | 795 bytes",
        ),
        (
            # A subject that reads like the end of a summary stays inside.
            "#5 09:00:00.000 <> -> c@d.example | To: - | Subject: \"it's' | 3 "
            'bytes" | 12 bytes | relayed',
            "#5 09:00:00.000 &lt;&gt; -&gt; c@d.example | To: <bdi>-</bdi> | "
            "Subject: <bdi>&quot;it&#x27;s&#x27; | 3 bytes&quot;</bdi> | 12 bytes | "
            "relayed",
        ),
        ("#6 (the raw bytes) <b>", "#6 (the raw bytes) &lt;b&gt;"),
    ],
)
def test_summary_fields_are_isolated_in_the_page(summary: str, shown: str) -> None:
    # A right-to-left subject pulled the quote, the "|" and the size into
    # its run: "... 795 | '<Hebrew> bytes".
    assert _html.summary_html(summary) == shown


@pytest.mark.parametrize(
    "hint",
    [
        '<link rel="dns-prefetch" href="//tracker.example">',
        "<LINK\trel=preconnect href=http://tracker.example/>",
        "<Link\nrel=dns-prefetch href=//tracker.example/>",
    ],
)
def test_resource_hints_in_the_html_part_are_made_inert(hint: str) -> None:
    # No CSP directive covers dns-prefetch or preconnect: the browser
    # resolved the name from the network-less frame (test_live_browser.py
    # shows it in Chromium's net log).
    frame = parse(_html.mail_frame(f"<p>Hi</p>{hint}<linked>text</linked>"))
    (srcdoc,) = frame.srcdocs
    document = parse(srcdoc)
    assert "link" not in document.tags
    assert document.tags.count("wbr") == 1
    assert "linked" in document.tags  # a name that only begins so is kept
    # And the note still says what the mail wanted to reach.
    assert "1 remote resource(s) blocked" in "".join(frame.text)


class _StartTags(html.parser.HTMLParser):
    """Each start tag with its attributes in order, duplicates kept."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.starts: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts.append((tag, attrs))


@pytest.mark.parametrize(
    "frame",
    [
        '<iframe src="https://tracker.example/opened"></iframe>',
        "<IFRAME loading=lazy src=//tracker.example/opened></IFRAME>",
        "<iframe title='a>b' src=https://tracker.example/opened></iframe>",
        "<iframe\nsrc=https://tracker.example/opened/>",
    ],
)
def test_a_frames_source_in_the_html_part_is_made_inert(frame: str) -> None:
    # Chromium resolved and connected to a frame's src before CSP refused
    # the navigation (test_live_browser.py shows it in the net log). The
    # first attribute of a name is the one a browser keeps.
    page = parse(_html.mail_frame(f"<p>Hi</p>{frame}"))
    (srcdoc,) = page.srcdocs
    document = _StartTags()
    document.feed(srcdoc)
    (attributes,) = [attrs for tag, attrs in document.starts if tag == "iframe"]
    assert attributes[0] == ("src", "about:blank")
    assert "1 remote resource(s) blocked" in "".join(page.text)


def test_frame_text_inside_an_attribute_value_changes_nothing_there() -> None:
    # The src inserted with quotes closed a quoted value early: the image
    # lost its source and the rest of the tag showed as text.
    page = parse(_html.mail_frame('<img alt="see <iframe >here" src=cid:x>'))
    (srcdoc,) = page.srcdocs
    document = _StartTags()
    document.feed(srcdoc)
    (img,) = [attrs for tag, attrs in document.starts if tag == "img"]
    assert img == [("alt", "see <iframe src=about:blank  >here"), ("src", "cid:x")]


def test_attachments_of_one_name_are_each_saved(
    smtpsink: Mailbox, tmp_path: Path
) -> None:
    # A repeated name became "3-a.txt", never checked against the names
    # taken: with attachments named 3-a.txt, a.txt, a.txt, the third was
    # written over the first, and both links gave the third's bytes.
    message = make_message()
    for name, body in (("3-a.txt", "first"), ("a.txt", "second"), ("a.txt", "third")):
        message.add_attachment(body.encode(), "text", "plain", filename=name)
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(message)
    smtpsink.wait_for(count=1)
    save_index(smtpsink, tmp_path)
    record = json.loads(
        (tmp_path / "test_x.py__test_x" / _html.RECORD_NAME).read_text("utf-8")
    )
    hrefs = [item["href"] for item in record["messages"][0]["attachments"]]
    assert len(set(hrefs)) == 3, hrefs
    assert [(tmp_path / href).read_text() for href in hrefs] == [
        "first",
        "second",
        "third",
    ]


def test_index_lists_the_message_parts_and_files(
    smtpsink: Mailbox, tmp_path: Path
) -> None:
    send_hostile(smtpsink)
    smtpsink.wait_for(count=1)
    index = save_index(smtpsink, tmp_path)
    markup = index.read_text(encoding="utf-8")
    assert "test_x.py::test_x" in markup
    # One main landmark around it all (axe's landmark-one-main).
    assert markup.count("<main>") == 1
    assert "<body><main><h1>Captured email</h1>" in markup
    assert markup.endswith("</main></body></html>\n")
    assert "2 remote resource(s) blocked" in markup
    assert "http://127.0.0.1:9/tracker.gif" in markup
    record = json.loads(
        (tmp_path / "test_x.py__test_x" / _html.RECORD_NAME).read_text("utf-8")
    )
    (message,) = record["messages"]
    (attachment,) = message["attachments"]
    # The attachment stays inside the test's directory whatever its name.
    # With .txt added: a browser never opens it as a page (file:// links
    # ignore `download`).
    assert attachment["href"] == "test_x.py__test_x/0001-attachments/evil_page.html.txt"
    saved = tmp_path / attachment["href"]
    assert saved.read_bytes() == b"<script>alert(1)</script>"
    assert f'href="{attachment["href"]}" download' in markup
    assert (tmp_path / message["eml_href"]).read_bytes() == smtpsink.messages[0].raw
    # Named, not linked: Chromium opens a .eml linked from a page on disk
    # (a link's download ignored) as MHTML, and its HTML part's
    # <link rel=preconnect> connected to the sender's host.
    assert ".eml" not in "".join(re.findall(r'href="([^"]*)"', markup))
    eml = urllib.parse.unquote(message["eml_href"])
    assert f"every byte in <code>{html.escape(eml)}</code>, for a mail client" in markup
    (session,) = record["sessions"]
    assert "C: QUIT" in session["transcript"]
    assert session["href"] == "test_x.py__test_x/session-0001.txt"


def test_html_parts_past_the_first_few_get_pages_of_their_own(
    smtpsink: Mailbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 500 failed tests' frames made a page Chromium took 52 s to open: each
    # sandboxed frame is a document of its own. (40 in a run; 3 here.)
    monkeypatch.setattr(_html, "FRAMES_IN_INDEX", 3)
    directories = []
    for number in range(_html.FRAMES_IN_INDEX + 2):
        smtpsink.clear()
        message = make_message(subject=f"Welcome {number}", html="<h1>Hi</h1>")
        message.add_attachment(
            b"%PDF", maintype="application", subtype="pdf", filename="a.pdf"
        )
        with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
            client.send_message(message)
        smtpsink.wait_for(count=1)
        nodeid = f"test_x.py::test_x[{number:02}]"
        directory = _report.test_directory(tmp_path, nodeid, None, False, 1)
        written = _report.save([smtpsink], directory)
        _html.record_test(
            [smtpsink],
            nodeid=nodeid,
            outcome="failed",
            directory=directory,
            written=written,
            root=tmp_path,
            reason="assert False",
        )
        directories.append(directory.relative_to(tmp_path).as_posix())
    markup = _html.write_index(tmp_path, directories).read_text(encoding="utf-8")
    assert markup.count('<iframe class="mail"') == _html.FRAMES_IN_INDEX
    linked = re.findall(r'Rendered on <a href="([^"]+)">a page of its own</a>', markup)
    assert len(linked) == 2
    for href in linked:
        path = tmp_path / urllib.parse.unquote(href)
        own = path.read_text(encoding="utf-8")
        assert own.count('<iframe class="mail"') == 1
        # Its links lead where the index's do, from one directory down.
        (download,) = re.findall(r'href="(\.\./[^"]+)" download', own)
        assert path.parent.joinpath(urllib.parse.unquote(download)).is_file()
        (eml,) = re.findall(r"every byte in <code>(\.\./[^<]+)</code>", own)
        assert path.parent.joinpath(html.unescape(eml)).is_file(), eml


def test_a_run_after_one_with_message_pages_saves_its_mail_too(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pages of their own were no file the plugin knew it wrote: the
    # next run took the test's directory for someone else's, and saved
    # none of its mail ("no mail saved in this run").
    monkeypatch.setattr(_html, "FRAMES_IN_INDEX", 0)
    pytester.makepyfile(test_mail=HTML_FAILING)
    for _ in range(2):
        result = pytester.runpytest("-p", "no:xdist", "--smtpsink-save-dir=mail")
        result.assert_outcomes(failed=1)
        assert "not saved" not in result.stdout.str()
        pages = list((pytester.path / "mail").glob("*/0001-*.html"))
        assert len(pages) == 1, pages
    # A later run that passes leaves none of it.
    pytester.makepyfile(test_mail="def test_html(smtpsink):\n    pass\n")
    pytester.runpytest("-p", "no:xdist", "--smtpsink-save-dir=mail")
    assert sorted(p.name for p in (pytester.path / "mail").iterdir()) == ["index.html"]


HTML_FAILING = """
import smtplib
from email.message import EmailMessage

def test_html(smtpsink):
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@x.example", "b@x.example", "Hi"
    message.set_content("hi")
    message.add_alternative("<h1>Hi</h1>", subtype="html")
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(message)
    smtpsink.wait_for()
    assert False
"""


def test_mail_that_comes_while_a_test_is_saved_leaves_its_links_whole(
    pytester: pytest.Pytester,
) -> None:
    # The files and the index's record each took their own look at the
    # test's mail: one more message between the two (a client still sending
    # at teardown) made the record drop every link to the files.
    pytester.makeconftest(
        """
        import smtplib

        from pytest_smtpsink import _report

        save = _report.save

        def save_then_mail_comes(views, *args, **kwargs):
            open("mail-came", "w").close()  # the test knows this ran
            written = save(views, *args, **kwargs)
            (view,) = views
            with smtplib.SMTP(view.host, view.port) as client:
                client.sendmail("a@example.com", ["b@example.com"], b"Subject: late\\r\\n\\r\\n")
            view.wait_for(subject="late")
            return written

        def pytest_configure(config):
            _report.save = save_then_mail_comes

        def pytest_unconfigure(config):  # this process runs other tests
            _report.save = save
        """
    )
    pytester.makepyfile(
        test_saved="""
        import smtplib

        def test_sends(smtpsink):
            with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
                client.sendmail("a@example.com", ["b@example.com"], b"Subject: first\\r\\n\\r\\n")
            smtpsink.wait_for(subject="first")
            assert False
        """
    )
    result = pytester.runpytest("-p", "no:xdist", "--smtpsink-save-dir=mail")
    result.assert_outcomes(failed=1)
    assert (pytester.path / "mail-came").exists()
    directory = pytester.path / "mail" / "test_saved.py__test_sends"
    record = json.loads((directory / _html.RECORD_NAME).read_text("utf-8"))
    (message,) = record["messages"]
    assert message["eml_href"] == "test_saved.py__test_sends/0001-first.eml"
    (session,) = record["sessions"]
    assert session["href"] == "test_saved.py__test_sends/session-0001.txt"


def test_with_two_sinks_the_index_says_whose_message_each_is(
    smtpsink_factory: Callable[..., Mailbox], tmp_path: Path
) -> None:
    first = smtpsink_factory(hostname="first.test")
    second = smtpsink_factory(hostname="second.test")
    for sink in (first, second):
        with smtplib.SMTP(sink.host, sink.port) as client:
            client.send_message(make_message(subject=f"To {sink.port}"))
        sink.wait_for()
    save_index(first, tmp_path, more=[second])
    record = json.loads(
        (tmp_path / "test_x.py__test_x" / _html.RECORD_NAME).read_text("utf-8")
    )
    # Both are #1 in their own sink.
    assert [m["summary"].split(" #1 ")[0] for m in record["messages"]] == [
        first.url,
        second.url,
    ]


@pytest.mark.parametrize(
    ("filename", "saved"),
    [
        ("invoice.pdf", "invoice.pdf"),
        ("../../etc/passwd", "etc_passwd"),
        ("a" * 300 + ".pdf", "a" * 96 + ".pdf"),  # the extension says what opens it
        ("b" * 300, "b" * 100),
        ("c" * 300 + "." + "d" * 40, ("c" * 300 + "." + "d" * 40)[:100]),
        (None, "attachment-3"),
        ("...", "attachment-3"),
        # A stem of symbols alone keeps its extension ("pdf" was saved as
        # text); a path is no extension.
        ("\U0001f600.pdf", "attachment-3.pdf"),
        ("\U0001f600\U0001f600.tar.gz", "attachment-3.tar.gz"),
        ("...pdf", "attachment-3.pdf"),
        ("\u65e5\u672c.pdf", "\u65e5\u672c.pdf"),
        # Windows device names: writing one would reach the device.
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("Aux.tar.gz", "_Aux.tar.gz"),
        ("com1.pdf", "_com1.pdf"),
        ("LPT\u00b9", "_LPT\u00b9"),
        ("..\\PRN", "_PRN"),
        ("console.txt", "console.txt"),
        ("COM10", "COM10"),
        # Most file systems allow 255 bytes per name: 100 letters of CJK
        # (3 bytes each) or of U+1D400.. (4) are cut to 200 bytes, whole
        # characters only, the extension kept.
        pytest.param("\u8acb" * 100, "\u8acb" * 66, id="cjk"),
        pytest.param("\u8acb" * 100 + ".pdf", "\u8acb" * 65 + ".pdf", id="cjk.pdf"),
        pytest.param("\U0001d400" * 80, "\U0001d400" * 50, id="4-byte"),
    ],
)
def test_saved_attachment_names(filename: str | None, saved: str) -> None:
    assert _html.safe_name(filename, 3) == saved
    assert len(saved.encode()) <= 200


@pytest.mark.parametrize(
    ("name", "saved"),
    [
        ("invoice.pdf", "invoice.pdf"),
        ("photo.JPG", "photo.JPG"),
        ("report.csv", "report.csv"),
        ("notes.txt", "notes.txt"),
        ("invoice.html", "invoice.html.txt"),
        ("logo.svg", "logo.svg.txt"),
        ("feed.xml", "feed.xml.txt"),
        ("page.xhtml", "page.xhtml.txt"),
        ("test_x.py", "test_x.py.txt"),
        ("README", "README.txt"),  # no extension: the browser sniffs it
        ("attachment-3", "attachment-3.txt"),
    ],
)
def test_saved_attachments_open_inert(name: str, saved: str) -> None:
    assert _html._inert_name(name) == saved


@pytest.mark.parametrize(
    ("content_type", "name"),
    [
        ("image/png", "attachment-2.png"),
        ("image/JPEG; name=x", "attachment-2.jpg"),
        ("application/pdf", "attachment-2.pdf"),
        # Not in the standard library's table on every Python version.
        ("image/webp", "attachment-2.webp"),
        ("image/avif", "attachment-2.avif"),
        ("text/calendar; method=REQUEST", "attachment-2.ics"),
        # A type a browser would open as a page or a program: no extension
        # (saved with .txt, see _inert_name).
        ("text/html", "attachment-2"),
        ("image/svg+xml", "attachment-2"),
        ("message/rfc822", "attachment-2.eml"),  # saved as .eml.txt
        ("application/x-unknown", "attachment-2"),
    ],
)
def test_an_attachment_without_a_name_is_named_by_its_type(
    content_type: str, name: str
) -> None:
    assert _html.unnamed_attachment(2, content_type) == name


#: Not a whole image: the first bytes of one, which is all the type needs.
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(32))


def test_every_extension_given_by_type_is_one_saved_as_it_is() -> None:
    assert set(_html._EXTENSIONS.values()) <= _html._INERT_EXTENSIONS


def test_an_inline_image_without_a_name_is_saved_as_an_image(
    smtpsink: Mailbox, tmp_path: Path
) -> None:
    # Saved as attachment-1.txt, a PNG opened as binary text.
    message = make_message(subject="Logo", html='<img src="cid:logo@x">')
    html_part = message.get_body(preferencelist=("html",))
    assert isinstance(html_part, EmailMessage)
    html_part.add_related(PNG, maintype="image", subtype="png", cid="<logo@x>")
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(message)
    smtpsink.wait_for()
    markup = save_index(smtpsink, tmp_path).read_text(encoding="utf-8")
    folder = tmp_path / "test_x.py__test_x" / "0001-attachments"
    assert [p.name for p in folder.iterdir()] == ["attachment-1.png"]
    assert (folder / "attachment-1.png").read_bytes() == PNG
    assert f">attachment-1.png (image/png, {len(PNG)} bytes)</a>" in markup


def test_inline_images_are_raster_images_named_by_content_id_within_bounds() -> None:
    from pytest_smtpsink._message import Attachment

    def part(content_id: str | None, kind: str, size: int) -> Attachment:
        return Attachment(None, kind, b"\x00" * size, content_id=content_id)

    images = _html.inline_images(
        [
            part("<logo@x>", "image/png; name=logo", 3),
            part("<logo@x>", "image/png", 5),  # the first of an id counts
            part("vector@x", "image/svg+xml", 3),  # never shown inline
            part(None, "image/gif", 3),
            part("huge@x", "image/jpeg", (256 << 10) + 1),
            *(part(f"big{n}@x", "image/jpeg", 256 << 10) for n in range(5)),
        ]
    )
    assert images["logo@x"] == "data:image/png;base64,AAAA"
    # 1 MiB in all: the logo and three of the 256-KiB images.
    assert sorted(images) == ["big0@x", "big1@x", "big2@x", "logo@x"]
    # Put in only where the mail refers to them as a URL, %-encoded too;
    # not in its text.
    frame = _html.mail_frame(
        '<img src="CID:logo%40x"><img src=cid:logo@x><img src="cid:gone@x">'
        "<p>see cid:logo@x</p><div style=\"background:url('cid:logo@x')\">",
        images={"logo@x": "data:,"},
    )
    assert frame.count("data:,") == 3
    assert "cid:gone@x" in frame
    assert "see cid:logo@x" in frame
    # A broken image alone did not say why (a cid: and a Content-ID that
    # differ is a classic template bug): a note names each.
    assert (
        '<p class="blocked">1 cid: image(s) not shown: cid:gone@x: no part of '
        "the message has that Content-ID, or its part is not a PNG, JPEG, GIF, "
        "WebP, BMP or AVIF image of at most 256 KiB (1 MiB for all; see the "
        "attachments)</p>"
    ) in frame
    assert "at most 1 MiB of them" not in frame


def test_one_image_used_many_times_is_put_in_within_the_bound() -> None:
    # The bound was per image, not per use: one 1 MiB image used 400 times
    # made 559 MB of frame.
    image = "data:image/png;base64," + "A" * (300 << 10)
    frame = _html.mail_frame('<img src="cid:a">' * 10_000, images={"a": image})
    assert frame.count(image) == 4  # 1.2 MiB of base64: 1 MiB of image
    assert len(frame) < 5 * (1 << 20)
    assert (
        '<p class="blocked">Some uses of the inline images are not shown: a '
        "page shows at most 1 MiB of them</p>"
    ) in frame
    assert "cid: image(s) not shown" not in frame


@pytest.mark.parametrize(
    ("href", "openable"),
    [
        ("https://shop.example/confirm?t=1", True),
        ("HTTP://shop.example/", True),
        ("javascript:alert(1)", False),
        ("data:text/html,x", False),
        ("file:///etc/passwd", False),
        # Goes elsewhere than it reads: a browser takes the backslash for "/".
        ("http://evil.example\\@good.example/", False),
        # A user name before the host: goes to evil.example (and to
        # good.example for the second).
        ("http://good.example@evil.example/", False),
        ("http://evil.example%2f@good.example/", False),
        ("https://shop.example/unsubscribe?email=ann@example.com", True),
        # What a reader cannot see.
        ("https://bank.example\u200b.evil.example/", False),
        ("https://bank.example/\u00ad", False),
        ("https://bank.example/\u202e", False),
        ("https://a.example/ b", False),
        ("https://caf\u00e9.example/", False),  # shown as text
    ],
)
def test_links_under_the_frame_open_only_where_they_read(
    href: str, openable: bool
) -> None:
    listed = _html.mail_frame(f'<a href="{href}" href="https://other.example/">x</a>')
    assert ("<li><a href=" in listed) is openable
    # The first href, as browsers take it: not the second.
    assert "other.example" not in listed.split("</iframe>")[1]


def test_relative_addresses_follow_the_mails_base() -> None:
    # The frame's policy refuses the mail's <base>; a mail client follows
    # it: the list names where a relative link goes, and the blocked note
    # the remote image a relative src loads there.
    listed = _html.mail_frame(
        '<base href="https://shop.example/">'
        '<img src="/pixel.gif"><a href="/confirm">Confirm</a>'
    )
    links = listed.split("</iframe>")[1]
    assert '<li><a href="https://shop.example/confirm"' in links
    assert "1 remote resource(s) blocked" in listed
    assert "https://shop.example/pixel.gif" in listed.split("<iframe")[0]


def test_a_base_applies_to_what_comes_before_it_and_to_css() -> None:
    # The document's base is its first <base href> wherever it stands: a
    # link before it goes there too; and a relative url() in CSS loads from
    # it (blocked by the frame's policy, so it belongs in the note).
    listed = _html.mail_frame(
        '<a href="/early">Early</a><p style="background:url(\'bg.png\')">x</p>'
        "<style>p{background:url(/s.png)}</style>"
        '<base href="https://shop.example/app/"><a href="late">Late</a>'
    )
    links = listed.split("</iframe>")[1]
    assert '<li><a href="https://shop.example/early"' in links
    assert '<li><a href="https://shop.example/app/late"' in links
    blocked = listed.split("<iframe")[0]
    assert "2 remote resource(s) blocked" in blocked
    assert "https://shop.example/app/bg.png" in blocked
    assert "https://shop.example/s.png" in blocked
    # A fragment alone is the document's own in CSS (an SVG filter), base or
    # not; an image's goes to the base.
    shown = _html.mail_frame(
        '<base href="https://shop.example/"><p style="filter:url(#s)">x</p>'
        "<style>p{clip-path:url( '#c' )}</style><img src='#pixel'>"
    ).split("<iframe")[0]
    assert "1 remote resource(s) blocked" in shown
    assert "https://shop.example/#pixel" in shown
    # Without a base, a relative url() loads nothing remote.
    assert (
        "blocked"
        not in _html.mail_frame("<p style=\"background:url('bg.png')\">x</p>").split(
            "<iframe"
        )[0]
    )


def test_the_links_of_a_part_cut_short_are_those_shown() -> None:
    link = '<a href="https://shop.example/">x</a>'
    whole = _html.mail_frame(link)
    assert "1 link(s) in the HTML part (the frame" in whole
    cut = _html.mail_frame(link + " " * _html.PART_LIMIT + link.replace("shop", "b"))
    assert "1 link(s) in the HTML part shown (the frame" in cut


def test_a_nul_in_a_mail_is_no_nul_in_the_page(
    smtpsink: Mailbox, tmp_path: Path
) -> None:
    # The raw source's NUL went into index.html as it was: grep and artifact
    # previews took the page for a binary file.
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            "app@example.com", ["ann@example.com"], b"Subject: x\r\n\r\nab\x00cd\r\n"
        )
    smtpsink.wait_for()
    page = save_index(smtpsink, tmp_path).read_bytes()
    assert b"\x00" not in page
    assert "ab\ufffdcd".encode() in page
    assert smtpsink.messages[0].raw.endswith(b"ab\x00cd\r\n")  # kept as sent


def test_a_name_too_long_for_the_file_system_keeps_the_test_in_the_index(
    smtpsink: Mailbox, tmp_path: Path
) -> None:
    # 100 CJK letters passed the 100-character cut as 300 bytes: writing
    # the attachment failed (ENAMETOOLONG), and with it the test's record.
    message = make_message(subject="Long names")
    for name in ("\u8acb" * 100 + ".pdf", "\U0001d400" * 80):
        message.add_attachment(
            b"%PDF-1.4", maintype="application", subtype="pdf", filename=name
        )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(message)
    smtpsink.wait_for()
    markup = save_index(smtpsink, tmp_path).read_text(encoding="utf-8")
    assert "Long names" in markup
    folder = tmp_path / "test_x.py__test_x" / "0001-attachments"
    assert sorted(p.name for p in folder.iterdir()) == [
        "\u8acb" * 65 + ".pdf",
        "\U0001d400" * 50 + ".txt",
    ]


def test_attachments_beside_saved_mail_are_not_collected_without_a_record(
    pytester: pytest.Pytester,
) -> None:
    # Writing the attachments failed half way (a full disk): no
    # smtpsink.json was written, but the .eml files beside the folder say
    # what it is, and the mailed files stay uncollected.
    directory = pytester.path / "mail" / "test_mail.py__test_sends_code"
    folder = directory / "0001-attachments"
    folder.mkdir(parents=True)
    (directory / "0001-code.eml").write_bytes(b"Subject: code\r\n\r\nx\r\n")
    (directory / "session-0001.txt").write_text("session 1: ...\n")
    (folder / "conftest.py").write_text(
        "def pytest_report_header():\n    return 'conftest from mail'\n"
    )
    (folder / "test_from_mail.py").write_text("def test_from_mail():\n    pass\n")
    # A project's own test data laid out alike, beside a sample message not
    # named as the sink names them: its tests were never collected.
    data = pytester.path / "data" / "0001-attachments"
    data.mkdir(parents=True)
    (data.parent / "sample.eml").write_bytes(b"Subject: sample\r\n\r\nx\r\n")
    (data / "test_parser.py").write_text("def test_parser():\n    pass\n")
    pytester.makepyfile(test_own="def test_own():\n    pass\n")
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=2)
    assert "conftest from mail" not in result.stdout.lines
    result.stdout.fnmatch_lines(["*test_parser.py::test_parser PASSED*"])


def test_remote_resources() -> None:
    markup = (
        '<img src="https://a.test/1.png"><img src="data:image/gif;base64,R0">'
        '<img srcset="//b.test/2.png 2x, /local.png 1x">'
        '<td background="http://c.test/bg.gif" style="background:url(\'https://d.test/x\')">'
        "<style>p{background:url(http://e.test/y)}</style>"
        '<link rel=stylesheet href="https://f.test/s.css"><a href="https://g.test/">link</a>'
    )
    assert _html.remote_resources(markup) == [
        "https://a.test/1.png",
        "//b.test/2.png",
        "http://c.test/bg.gif",
        "https://d.test/x",
        "http://e.test/y",
        "https://f.test/s.css",
    ]
    assert _html.remote_resources("<p>no images</p><img src='cid:logo'>") == []


def test_remote_resources_of_hostile_markup_in_one_pass() -> None:
    # html.parser rescans the rest from every "<" no ">" closes, and the CSS
    # pattern tried every split of a run of blanks: 50 kB of "<a x " took
    # 15 s, 20,000 blanks after "url(" 8 s, for each report and live view
    # of the message. These would take hours.
    unclosed = "<a x " * 100_000
    blanks = "<p style='background:url(" + " " * 500_000 + "'>"
    markup = unclosed + blanks + '<img src="https://a.test/1.png">'
    assert _html.remote_resources(markup) == ["https://a.test/1.png"]
    # Comments and marked sections no end closes: 240 kB of "<!--x>" took
    # 14 s after the first fix.
    for junk in ("<!--x>", "<![endif]", "<![CDATA[x>"):
        markup = '<img src="https://a.test/2.png">' + junk * 100_000
        assert _html.remote_resources(markup) == ["https://a.test/2.png"]


def test_remote_resources_are_read_as_a_browser_reads_the_tags() -> None:
    # The first fix for hostile markup made "<" inside an attribute end
    # the tag, and a comment holding a tag no comment.
    markup = (
        '<img alt="<3" src="https://a.test/heart.png">'
        '<!-- <img src="https://a.test/hidden.png"> -->'
    )
    assert _html.remote_resources(markup) == ["https://a.test/heart.png"]


def test_a_message_whose_fields_raise_still_renders(
    smtpsink: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], b"Subject: x\r\n\r\nhi\r\n")
    message = smtpsink.wait_for(subject="x")

    def broken(self: object) -> str:
        raise RecursionError("deeply nested")

    monkeypatch.setattr(type(message), "html", property(broken))
    record = _html.message_record(message)
    assert record["html"] is None
    assert record["text"] == "hi\n"
    # Message.defects reads every field, the broken one too: it says so.
    assert record["defects"][0] == (
        "could not read the HTML part: RecursionError('deeply nested')"
    )
    assert "could not read the HTML part" in _html.render_message(record)


# -- through pytest --------------------------------------------------------------

FAILING_TESTS = """
import smtplib

def send(sink, subject):
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail(
            "app@example.com", ["ann@example.com"],
            f"Subject: {subject}\\r\\nContent-Type: text/html\\r\\n\\r\\n<b>{subject}</b>\\r\\n",
        )
    sink.wait_for(count=1)

def test_one(smtpsink):
    send(smtpsink, "first")
    assert False

def test_two(smtpsink):
    send(smtpsink, "second")
    assert False

def test_passes(smtpsink):
    send(smtpsink, "third")
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_one_index_per_run(pytester: pytest.Pytester, workers: list[str]) -> None:
    pytester.makepyfile(test_mail=FAILING_TESTS)
    result = pytester.runpytest("--smtpsink-save-dir=mail", *workers)
    result.assert_outcomes(passed=1, failed=2)
    index = pytester.path / "mail" / "index.html"
    result.stdout.fnmatch_lines([f"=* smtpsink: captured mail of this run: {index} =*"])
    markup = index.read_text(encoding="utf-8")
    assert "2 test(s), 2 message(s), 2 SMTP session(s)" in markup
    assert "test_mail.py::test_one" in markup
    assert "test_mail.py::test_two" in markup
    # Only failed tests, as --smtpsink-save says by default, each with why.
    assert "test_passes" not in markup
    assert markup.count('<p class="reason">assert False</p>') == 2
    assert "&lt;b&gt;first&lt;/b&gt;" in markup  # in the srcdoc, escaped


REASONS = """
import base64
import pytest

PASSWORD = "Kx7-Qv2mZ9tLw-pw"
RELAY = "smtp://relay:R3lay%2Fpw-9x@127.0.0.1:9"

def send(sink):
    import smtplib
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("app@example.com", ["ann@example.com"], b"Subject: x\\r\\n\\r\\nx\\r\\n")
    sink.wait_for()

@pytest.mark.smtpsink(
    auth={"ann": PASSWORD}, auth_plaintext=True,
    relay=RELAY, relay_to=r"nobody@example\\.com",
)
def test_leaky(smtpsink):
    send(smtpsink)
    plain = base64.b64encode(f"\\0ann\\0{PASSWORD}".encode()).decode()
    assert False, (
        f"<b>login</b> {PASSWORD} {PASSWORD.upper()} {plain} "
        f"{base64.b64encode(PASSWORD.encode()).decode()} R3lay%2Fpw-9x R3lay/pw-9x"
        "\\nthe second line is not shown"
    )

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown broke")

def test_teardown(smtpsink, broken_teardown):
    send(smtpsink)
"""


def test_index_says_why_each_test_failed_and_masks_secrets(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_mail=REASONS)
    result = pytester.runpytest("--smtpsink-save-dir=mail", "--smtpsink-save=all")
    result.assert_outcomes(failed=1, passed=1, errors=1)
    markup = (pytester.path / "mail" / "index.html").read_text(encoding="utf-8")
    # One line, as the short test summary has it, escaped, without the
    # secrets the test's sink knows (the password as given, upper-cased, as a
    # PLAIN response and in base64; the relay's, encoded and decoded).
    assert (
        '<p class="reason">AssertionError: &lt;b&gt;login&lt;/b&gt; '
        "**** **** **** **** **** ****</p>"
    ) in markup
    assert '<p class="reason">at teardown: RuntimeError: teardown broke</p>' in markup
    assert "second line" not in markup
    saved = "\n".join(
        path.read_text("utf-8")
        for path in (pytester.path / "mail").rglob("*")
        if path.is_file()
    )
    for secret in ("Kx7-Qv2mZ9tLw-pw", "R3lay%2Fpw-9x", "R3lay/pw-9x"):
        assert secret.lower() not in saved.lower()
    # A record written before reasons were kept still renders.
    record = json.loads(
        (
            pytester.path / "mail" / "test_mail.py__test_leaky" / _html.RECORD_NAME
        ).read_text("utf-8")
    )
    del record["reason"]
    assert 'class="reason"' not in _html.render_index([record], datetime.now())


def test_with_two_sinks_each_session_names_its_sink(
    smtpsink_factory: Factory, tmp_path: Path
) -> None:
    # Each sink numbers its own messages from #1: two sessions both saying
    # "queued as #1" said whose they were only by guess (the messages
    # named their sink already).
    sinks = [smtpsink_factory(hostname=f"{name}.sessions.test") for name in "ab"]

    def ended(sink: Mailbox) -> bool:
        return sink.sessions[0].end is not None

    for sink in sinks:
        with smtplib.SMTP(sink.host, sink.port) as client:
            client.send_message(make_message(subject="Hi"))
        sink.wait_for()
        sink.wait_until(functools.partial(ended, sink))
    index = save_index(sinks[0], tmp_path / "mail", more=sinks[1:])
    markup = index.read_text("utf-8")
    headings = re.findall(r'<details class="session"><summary>([^<]*)', markup)
    assert [h.split(": ", 1)[0] for h in headings] == [
        f"{sinks[0].url} SMTP session 1",
        f"{sinks[1].url} SMTP session 2",
    ]
    # One sink: no URL before each session.
    one = save_index(sinks[0], tmp_path / "one")
    assert '<details class="session"><summary>SMTP session 1: ' in one.read_text(
        "utf-8"
    )


def test_a_reason_masks_a_password_that_holds_a_line_end() -> None:
    # The reason is the failure's first line, cut before it is masked for
    # speed, except when a password holds a line end: cut first, its first
    # line would show ("login with top"). Nothing held the exception.
    sink = SMTPSink(auth={"ann": "top\nsecret"}, auth_plaintext=True)
    reason = _report._one_line("AssertionError: login with top\nsecret failed", [sink])
    assert reason == "AssertionError: login with **** failed"


def test_the_index_lists_its_tests_in_natural_order_with_links() -> None:
    # No contents, no ids to link to, and "[14]" before "[7]".
    def record(nodeid: str, outcome: str, directory: str) -> _html.TestRecord:
        return _html.TestRecord(
            nodeid=nodeid,
            outcome=outcome,
            reason=None,
            directory=directory,
            messages=[],
            sessions=[],
            attempt=1,
            saved=True,
        )

    tests = [
        record("t.py::test_x[14]", "failed", "t.py__test_x[14]"),
        record("t.py::test_x[7]", "failed", "t.py__test_x[7]"),
        record("t.py::test_a", "passed", "t.py__test_a"),
        record("t.py::test_x[2]", "error", "t.py__test_x[2]"),
    ]
    markup = _html.render_index(tests, datetime.now())
    headings = re.findall(r'<section class="test (\w+)" id="([^"]+)">', markup)
    assert headings == [
        ("error", "t.py__test_x[2]"),
        ("failed", "t.py__test_x[7]"),
        ("failed", "t.py__test_x[14]"),
        ("passed", "t.py__test_a"),
    ]
    links = re.findall(r'<li class="\w+"><a href="#([^"]+)">', markup)
    assert [urllib.parse.unquote(link) for link in links] == [
        anchor for _, anchor in headings
    ]


def test_each_message_has_an_id_and_each_page_a_way_back(
    smtpsink_factory: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only a test's section could be linked to ("look at message #14 of
    # test_x" in a CI comment could not), the sections had no way back to
    # the contents, and a message's own page linked nowhere but its .eml.
    sinks = [smtpsink_factory(hostname=f"{name}.ids.test") for name in ("a", "b")]
    for sink in sinks:
        with smtplib.SMTP(sink.host, sink.port) as client:
            client.send_message(make_message(subject="Hi", html="<p>Hi</p>"))
        sink.wait_for()
    assert [sink.messages[0].number for sink in sinks] == [1, 1]
    monkeypatch.setattr(_html, "FRAMES_IN_INDEX", 1)
    index = save_index(sinks[0], tmp_path / "mail", "t.py::test_x[7]", more=sinks[1:])
    markup = index.read_text("utf-8")
    [section] = re.findall(r'<section class="test failed" id="([^"]+)">', markup)
    # Two sinks of the test numbered theirs alike: the second is told apart.
    assert re.findall(r'<details class="message" id="([^"]+)"', markup) == [
        f"{section}/1",
        f"{section}/1-2",
    ]
    assert '<details class="contents" id="contents" open>' in markup
    assert markup.count('<a href="#contents">Back to the contents</a>') == 1
    # The second's HTML part is on a page of its own, which links back to it.
    [href] = re.findall(r'Rendered on <a href="([^"]+)">a page of its own', markup)
    own_page = (index.parent / urllib.parse.unquote(href)).read_text("utf-8")
    [back] = re.findall(r'<a href="([^"]+)">Back to index.html</a>', own_page)
    assert back == "../index.html#" + urllib.parse.quote(f"{section}/1-2", safe="/")
    assert "%5B7%5D" in back


PASSED_OUTPUT = FAILING_TESTS.replace(
    'send(smtpsink, "third")',
    'send(smtpsink, "third")\n    print("output of a passed test")',
)


@pytest.mark.parametrize("report_chars", ["-rA", "-rP", "-rfE", "-rN"])
def test_where_the_index_is_stands_apart_whatever_is_reported(
    pytester: pytest.Pytester, report_chars: str
) -> None:
    pytester.makepyfile(test_mail=PASSED_OUTPUT)
    result = pytester.runpytest("--smtpsink-save-dir=mail", report_chars)
    result.assert_outcomes(passed=1, failed=2)
    lines = result.stdout.lines
    (where,) = [n for n, line in enumerate(lines) if "mail of this run" in line]
    # A separator line of its own, as the counts at the end are: with -rA or
    # -rP a plain line came right after a passed test's captured output in
    # the PASSES section, and read as part of it.
    assert re.fullmatch(
        r"=+ smtpsink: captured mail of this run: \S+index\.html =+", lines[where]
    )
    if report_chars in ("-rA", "-rP"):
        assert lines[where - 1] == "output of a passed test"


def test_index_follows_save_all(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mail=FAILING_TESTS)
    pytester.runpytest("--smtpsink-save-dir=mail", "--smtpsink-save=all")
    markup = (pytester.path / "mail" / "index.html").read_text(encoding="utf-8")
    assert "3 test(s), 3 message(s)" in markup
    assert "test_mail.py::test_passes" in markup


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_save_all_names_skipped_and_xfailed_tests_so(
    pytester: pytest.Pytester, workers: list[str]
) -> None:
    # They were all "passed" in index.html and smtpsink.json.
    pytester.makepyfile(
        test_mail=FAILING_TESTS
        + """
import pytest

def test_skips(smtpsink):
    send(smtpsink, "skipped")
    pytest.skip("not today")

@pytest.mark.xfail(reason="known bug")
def test_xfails(smtpsink):
    send(smtpsink, "xfailed")
    assert False

@pytest.mark.xfail(reason="fixed by now")
def test_xpasses(smtpsink):
    send(smtpsink, "xpassed")

def test_errors_at_setup(smtpsink, no_such_fixture):
    pass

@pytest.fixture
def breaks_at_teardown():
    yield
    raise RuntimeError("teardown broke")

def test_skips_then_errors(smtpsink, breaks_at_teardown):
    send(smtpsink, "skipped, then broke")
    pytest.skip("no network")
"""
    )
    result = pytester.runpytest(
        "--smtpsink-save-dir=mail", "--smtpsink-save=all", *workers
    )
    result.assert_outcomes(
        passed=1, failed=2, skipped=2, xfailed=1, xpassed=1, errors=2
    )
    records = {
        record["nodeid"].split("::")[1]: record
        for record in (
            json.loads(path.read_text(encoding="utf-8"))
            for path in (pytester.path / "mail").glob("*/smtpsink.json")
        )
    }
    assert {name: record["outcome"] for name, record in records.items()} == {
        "test_one": "failed",
        "test_two": "failed",
        "test_passes": "passed",
        "test_skips": "skipped",
        "test_xfails": "xfailed",
        "test_xpasses": "xpassed",
        # "failed" with no reason: pytest calls it an error.
        "test_errors_at_setup": "error",
        "test_skips_then_errors": "error",
    }
    # The teardown's failure, not the skip's reason.
    assert records["test_skips_then_errors"]["reason"] == (
        "at teardown: RuntimeError: teardown broke"
    )
    # Why, as pytest's summary says it (none were given).
    assert records["test_errors_at_setup"]["reason"] == (
        "at setup: fixture 'no_such_fixture' not found"
    )
    assert records["test_skips"]["reason"] == "Skipped: not today"
    assert records["test_xfails"]["reason"] == "xfail: known bug"
    assert records["test_xpasses"]["reason"] == "xfail: fixed by now"
    markup = (pytester.path / "mail" / "index.html").read_text(encoding="utf-8")
    assert '<span class="outcome">xfailed</span> test_mail.py::test_xfails' in markup
    assert (
        '<span class="outcome">error</span> test_mail.py::test_errors_at_setup'
    ) in markup


ATTACHED_CODE = """
import smtplib
from email.message import EmailMessage

def test_sends_code(smtpsink):
    message = EmailMessage()
    message["Subject"] = "code"
    message.set_content("see attached")
    message.add_attachment(
        b"def pytest_report_header():\\n    return 'conftest from mail'\\n",
        maintype="text", subtype="x-python", filename="conftest.py",
    )
    message.add_attachment(
        b"def test_from_mail():\\n    pass\\n",
        maintype="text", subtype="x-python", filename="test_from_mail.py",
    )
    message.add_attachment(  # pytest runs test*.txt files as doctests
        b">>> 1 + 1\\n2\\n", maintype="text", subtype="plain",
        filename="test_from_mail.txt",
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(message, "app@example.com", ["ann@example.com"])
    assert False
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_saved_attachments_are_not_collected(
    pytester: pytest.Pytester, workers: list[str]
) -> None:
    # A save directory inside the project: the next run collected the
    # copies of attachments, running a mailed test_*.py as a test and a
    # mailed conftest.py as the project's own.
    pytester.makepyfile(test_mail=ATTACHED_CODE)
    args = ["--smtpsink-save-dir=mail", *workers]
    pytester.runpytest(*args).assert_outcomes(failed=1)
    saved = sorted(p.name for p in (pytester.path / "mail").rglob("test_from_*"))
    # A .py file is saved as text (see test_saved_attachments_open_inert);
    # a test*.txt file is a doctest to pytest all the same.
    assert saved == ["test_from_mail.py.txt", "test_from_mail.txt"]
    assert list((pytester.path / "mail").rglob("conftest.py.txt"))
    result = pytester.runpytest(*args)
    result.assert_outcomes(failed=1)  # test_from_mail did not run
    assert "conftest from mail" not in result.stdout.lines  # the header
    # Nor in a run without the option (it is often given in CI only): the
    # directory is known by the record beside it.
    result = pytester.runpytest(*workers)
    result.assert_outcomes(failed=1)
    assert "conftest from mail" not in result.stdout.lines


def test_a_stale_index_is_replaced(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mail=FAILING_TESTS)
    pytester.runpytest("--smtpsink-save-dir=mail")
    result = pytester.runpytest("--smtpsink-save-dir=mail", "-k", "passes")
    index = pytester.path / "mail" / "index.html"
    markup = index.read_text(encoding="utf-8")
    assert "No test saved any mail, and none failed, in this run." in markup
    assert "test_one" not in markup
    # Said, as the page changed: an open tab of it changes on reload.
    result.stdout.fnmatch_lines(
        [f"=* smtpsink: no mail saved in this run: {index} says so =*"]
    )


STALE = """
import os
import smtplib

def test_maybe(smtpsink):
    if os.environ.get("SEND_MAIL"):
        with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
            client.sendmail(
                "app@example.com", ["ann@example.com"],
                b"Subject: old run\\r\\n\\r\\nx\\r\\n",
            )
    smtpsink.wait_for(subject="new run", timeout=0)
"""


def test_a_failed_test_without_mail_is_listed_and_old_files_go(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A rerun that captures nothing must not leave an earlier run's mail in
    # the test's directory (it would read as this run's), and the index
    # lists the failed test: "expected mail, none came" is the failure it
    # most needs to show.
    pytester.makepyfile(test_stale=STALE)
    monkeypatch.setenv("SEND_MAIL", "1")
    pytester.runpytest("--smtpsink-save-dir=mail").assert_outcomes(failed=1)
    (directory,) = (pytester.path / "mail").glob("test_stale.py*")
    assert [p.name for p in directory.glob("*.eml")] == ["0001-old-run.eml"]
    monkeypatch.delenv("SEND_MAIL")
    pytester.runpytest("--smtpsink-save-dir=mail").assert_outcomes(failed=1)
    assert sorted(p.name for p in directory.iterdir()) == ["smtpsink.json"]
    markup = (pytester.path / "mail" / "index.html").read_text(encoding="utf-8")
    assert "1 test(s), 0 message(s), 0 SMTP session(s)" in markup
    assert "test_stale.py::test_maybe" in markup
    assert "No mail was captured." in markup
    assert '<p class="reason">AssertionError: wait_for timed out' in markup
    # A passing rerun that captures nothing leaves nothing at all.
    pytester.makepyfile(test_stale="def test_maybe(smtpsink):\n    pass\n")
    pytester.runpytest("--smtpsink-save-dir=mail").assert_outcomes(passed=1)
    assert not directory.exists()


def test_no_index_without_save_dir(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mail=FAILING_TESTS)
    pytester.runpytest().assert_outcomes(passed=1, failed=2)
    assert not list(pytester.path.rglob("index.html"))


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_pytest_html_extras(pytester: pytest.Pytester, workers: list[str]) -> None:
    pytest.importorskip("pytest_html")
    pytester.makepyfile(test_mail=FAILING_TESTS.replace("first", "<i>first</i>"))
    result = pytester.runpytest("--html=report.html", *workers)
    result.assert_outcomes(passed=1, failed=2)
    report = (pytester.path / "report.html").read_text(encoding="utf-8")
    # pytest-html keeps its data as JSON in an attribute: undo both layers.
    data = json.loads(
        html.unescape(report.split('data-jsonblob="', 1)[1].split('"', 1)[0])
    )
    extras = {
        test_id: [e["content"] for e in runs[0]["extras"] if e["format_type"] == "html"]
        for test_id, runs in data["tests"].items()
    }
    assert extras["test_mail.py::test_passes"] == []
    (one,) = extras["test_mail.py::test_one"]
    page = parse(one)
    assert "script" not in page.tags
    (srcdoc,) = page.srcdocs
    assert srcdoc.endswith("<b><i>first</i></b>\n")
    assert "Subject: '<i>first</i>'" in "".join(page.text)


def test_pytest_html_extras_render_at_most_40_frames_a_run(
    pytester: pytest.Pytester,
) -> None:
    # Every HTML message was a frame: 1,000 of them took Chromium 72 s to
    # open, as index.html did before its own bound.
    pytest.importorskip("pytest_html")
    pytester.makepyfile(
        test_many="""
import smtplib

def test_many(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        for n in range(42):
            body = "Content-Type: text/html\\r\\n\\r\\n<p>mail %d</p>\\r\\n" % n
            client.sendmail("a@example.com", ["b@example.com"], body)
    smtpsink.wait_for(count=42)
    assert False
"""
    )
    result = pytester.runpytest("--html=report.html", "-p", "no:xdist")
    result.assert_outcomes(failed=1)
    report = (pytester.path / "report.html").read_text(encoding="utf-8")
    data = json.loads(
        html.unescape(report.split('data-jsonblob="', 1)[1].split('"', 1)[0])
    )
    (runs,) = data["tests"].values()
    extras = [e["content"] for e in runs[0]["extras"] if e["format_type"] == "html"]
    assert len(extras) == 42
    assert ["<iframe" in extra for extra in extras] == [True] * 40 + [False] * 2
    assert (
        "HTML part not rendered: a report renders the first 40 of a run, of each "
        "xdist worker (the index.html of --smtpsink-save-dir shows every one); it "
        "has no text part."
    ) in extras[40]


CHECK_IMPORTS = """
import sys

def test_nothing_html_is_imported(smtpsink):
    assert "pytest_html" not in sys.modules
    assert "pytest_smtpsink._html" not in sys.modules
    assert False  # a failed test is where extras would be made
"""


def test_without_pytest_html_nothing_is_imported(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_imports=CHECK_IMPORTS)
    # A subprocess (this process has imported both already) that loads no
    # plugin but ours: to the plugin, that is a run without pytest-html.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = pytester.runpytest_subprocess("-p", "pytest_smtpsink.plugin")
    result.assert_outcomes(failed=1)
    # It failed on its last line, not on either import check.
    result.stdout.fnmatch_lines(["E       assert False"])
    result.stdout.no_fnmatch_line("E *sys.modules*")


def test_the_index_shows_lint_problems(smtpsink: Mailbox, tmp_path: Path) -> None:
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            "a@example.com", ["b@example.com"], b"Subject: no date\r\n\r\nhi\r\n"
        )
    message = smtpsink.wait_for(subject="no date")
    record = _html.message_record(message)
    assert "error missing-date (header Date): no Date header" in "\n".join(
        record["lint"]
    )
    markup = _html.render_message(record)
    assert "lint problem" in markup
    assert "missing-date" in markup
    # A record from an older smtpsink.json (no "lint") still renders.
    del record["lint"]  # type: ignore[misc]
    assert "lint problem" not in _html.render_message(record)


READING_TEST = """
import poplib
import smtplib

def test_reads(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("app@example.com", ["ann@example.com"], "Subject: hi\\r\\n\\r\\nhi\\r\\n")
    smtpsink.wait_for(count=1)
    pop = poplib.POP3(smtpsink.pop3.host, smtpsink.pop3.port)
    pop.user("ann@example.com")
    pop.pass_("secret-word")
    assert pop.stat()[0] == 1
    pop.quit()
    assert False
"""


def test_index_names_each_sessions_protocol(pytester: pytest.Pytester) -> None:
    """A POP3 session is listed as one, with the read side's summary (its
    user, no EHLO), not as a second SMTP session; the password is nowhere."""
    pytester.makepyfile(test_mail=READING_TEST)
    result = pytester.runpytest("--smtpsink-save-dir=mail")
    result.assert_outcomes(failed=1)
    markup = (pytester.path / "mail" / "index.html").read_text(encoding="utf-8")
    assert "1 test(s), 1 message(s), 1 SMTP session(s), 1 POP3 session(s)" in markup
    assert "<summary>SMTP session 1: " in markup
    assert "<summary>POP3 session 2: 127.0.0.1:" in markup
    assert "user=&#x27;ann@example.com&#x27;" in markup
    pop3_title = markup.split("<summary>POP3 session 2:")[1].split("</summary>")[0]
    assert "ehlo=" not in pop3_title
    assert "secret-word" not in markup


SEEDED_READER_TEST = """
import poplib


def test_reads(smtpsink):
    smtpsink.deliver(
        b"From: carl@example.net\\r\\nTo: help@example.com\\r\\n"
        b"Subject: Printer on fire\\r\\n\\r\\nIt is smoking.\\r\\n"
    )
    pop = poplib.POP3(smtpsink.pop3.host, smtpsink.pop3.port)
    pop.user("help@example.com")
    pop.pass_("any")
    pop.dele(1)
    pop.quit()
    smtpsink.mailbox("help@example.com").assert_in(subject="Printer on fire")
"""


def test_mail_put_in_by_deliver_is_shown_and_saved(pytester: pytest.Pytester) -> None:
    """A failed reader test shows the mail it seeded (deleted since, too), as
    put in with deliver(), not as mail the application sent."""
    pytest.importorskip("pytest_html")
    pytester.makepyfile(test_mail=SEEDED_READER_TEST)
    result = pytester.runpytest("--smtpsink-save-dir=mail", "--html=report.html")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "smtp://127.0.0.1:* (default settings): 0 messages, 1 session, "
            "1 put in without SMTP",
            "  deliver() *:*:*.* carl@example.net -> help@example.com | "
            "To: help@example.com | Subject: 'Printer on fire' | * bytes",
            "  session 1: POP3 127.0.0.1:*",
        ]
    )
    directory = pytester.path / "mail" / "test_mail.py__test_reads"
    assert sorted(p.name for p in directory.iterdir()) == [
        "deliver-0001-Printer-on-fire.eml",
        "session-0001.txt",
        "smtpsink.json",
    ]
    assert (directory / "deliver-0001-Printer-on-fire.eml").read_bytes() == (
        b"From: carl@example.net\r\nTo: help@example.com\r\n"
        b"Subject: Printer on fire\r\n\r\nIt is smoking.\r\n"
    )
    markup = (pytester.path / "mail" / "index.html").read_text(encoding="utf-8")
    assert "1 test(s), 0 message(s), 1 put in without SMTP, 0 SMTP session(s), " in (
        markup
    )
    assert "0 message(s), 1 put in without SMTP, 1 session(s), files in" in markup
    assert "<summary>deliver() " in markup
    assert "<dt>Put in</dt><dd>with deliver(), not over SMTP</dd>" in markup
    assert "<code>test_mail.py__test_reads/deliver-0001-Printer-on-fire.eml</code>" in (
        markup
    )
    report = (pytester.path / "report.html").read_text(encoding="utf-8")
    data = json.loads(
        html.unescape(report.split('data-jsonblob="', 1)[1].split('"', 1)[0])
    )
    (extra,) = [
        e["content"]
        for e in data["tests"]["test_mail.py::test_reads"][0]["extras"]
        if e["format_type"] == "html"
    ]
    assert "<p><b>Put in with deliver()</b> deliver() " in extra
    assert "It is smoking." in html.unescape(extra)


EARLY_MAIL_TEST = """
import smtplib

import pytest


@pytest.fixture
def welcomed(smtpsink_server):
    with smtplib.SMTP(smtpsink_server.host, smtpsink_server.port) as client:
        client.sendmail(
            "shop@example.com",
            ["ann@example.com"],
            b"Subject: Welcome early\\r\\n\\r\\nSent in the set-up.\\r\\n",
        )


def test_late_mailbox(welcomed, smtpsink):
    assert smtpsink.messages == []
"""


def test_mail_from_before_the_tests_mailbox_is_saved_under_the_test(
    pytester: pytest.Pytester,
) -> None:
    """Mail a fixture sent in the test's set-up, before its smtpsink was
    made, is not among the test's messages, and the previous test's files
    cannot hold it: --smtpsink-save=all saved it nowhere (helper-224 F2).
    It is saved under the test, marked as such."""
    pytester.makepyfile(test_mail=EARLY_MAIL_TEST)
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--smtpsink-save-dir=mail", "--smtpsink-save=all"
    )
    result.assert_outcomes(passed=1)
    directory = pytester.path / "mail" / "test_mail.py__test_late_mailbox"
    names = sorted(p.name for p in directory.iterdir())
    # With the session that brought it (review helper-236 F6).
    assert names == [
        "early-0001-Welcome-early.eml",
        "session-0001.txt",
        "smtpsink.json",
    ]
    assert (directory / names[0]).read_bytes() == (
        b"Subject: Welcome early\r\n\r\nSent in the set-up.\r\n"
    )
    assert "S: 250 2.0.0 OK: queued as #" in (directory / names[1]).read_text()
    saved = json.loads((directory / "smtpsink.json").read_text())
    (record,) = saved["messages"]
    assert record["early"] is True
    (session,) = saved["sessions"]
    assert session["href"] == "test_mail.py__test_late_mailbox/session-0001.txt"
    markup = (pytester.path / "mail" / "index.html").read_text(encoding="utf-8")
    assert "1 test(s), 0 message(s), 1 from before a test's mailbox, " in markup
    assert "0 message(s), 1 from before its mailbox, 1 session(s), files in" in markup
    assert "<dt>Arrived</dt><dd>in the test before its mailbox was made" in markup
    assert (
        "<code>test_mail.py__test_late_mailbox/early-0001-Welcome-early.eml</code>"
        in (markup)
    )

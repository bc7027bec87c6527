"""The corpus of malformed and unusual messages (tests/corpus/*.eml, made by
tests/corpus/make_corpus.py), each sent over real SMTP: stored byte-exact,
every field readable without an exception, problems listed in `defects`."""

from __future__ import annotations

import base64
import datetime
import email
import functools
import inspect
import random
import re
import smtplib
import socket
from pathlib import Path
from typing import Any

import pytest

from pytest_smtpsink import Mailbox, Message

CORPUS = Path(__file__).parent / "corpus"
FILES = sorted(CORPUS.glob("*.eml"))

#: A defect that must be reported (a substring of one of `Message.defects`).
EXPECTED_DEFECTS = {
    "broken_boundary": "StartBoundaryNotFoundDefect",
    "missing_boundary": "NoBoundaryInMultipartDefect",
    "unterminated_multipart": "CloseBoundaryNotFoundDefect",
    "truncated_part_headers": "CloseBoundaryNotFoundDefect",
    "message_rfc822_truncated": "CloseBoundaryNotFoundDefect",
    "invalid_base64": "InvalidBase64CharactersDefect",
    "invalid_quoted_printable": "CharsetDecodeDefect",
    "unknown_charset": "x-unknown-42",
    "wrong_charset_declared": "CharsetDecodeDefect",
    "latin1_headers": "invalid-utf8",
    "garbage_headers": "FirstHeaderLineIsContinuationDefect",
    # Where a parser gave up, the field reads empty and the defect says why.
    "non_ascii_charset_name": "Subject header: encoded words left undecoded: CharsetError",
    # Python 3.13's address parser no longer recurses: it reports instead.
    "nested_comments_600": (
        "To header: could not read the addresses: RecursionError",
        "AddressHeaderDefect: to[0]",
    ),
    "nested_rfc822_1000": "MIME structure not parsed (header block only): RecursionError",
    "absurd_date": "Date header 'Mon, 99999999999 Jan 2020 00:00:00 +0000' is not a date",
    "nul_in_charset_name": "embedded null character",
}
#: Well-formed, if unusual: nothing to report.
CLEAN = {
    "binary_attachment",
    "deep_nesting_50",
    "duplicate_headers",
    "huge_header_100k",
    "longest_legal_line",
    "many_headers",
    "non_ascii_filenames",
    "utf8_headers",
    "smtputf8_display_name",
    "html_unknown_marked_section",
}


def test_the_corpus_is_complete_and_fits_smtp() -> None:
    names = {f.stem for f in FILES}
    assert set(EXPECTED_DEFECTS) | CLEAN <= names
    assert len(FILES) >= 25
    for file in FILES:
        data = file.read_bytes()
        assert data.endswith(b"\r\n"), file.name
        assert max(len(line) for line in data.split(b"\r\n")) <= 998, file.name


#: Arguments for each public method of `Message`, several calls each. A new
#: public method fails `read_every_field` until it is listed here.
METHOD_CALLS: dict[str, list[tuple[Any, ...]]] = {
    "header": [("Subject",), ("Message-ID",), ("To",), ("Date",), ("X-Absent",)],
    "links": [()],
    "link": [(), ("example",)],
    "code": [()],
    "attachment": [("absent.bin",)],
    "summary": [()],
    "lint": [()],
    "bulk_sender_problems": [()],
    # Asks a running spamd over the network: tests/test_spam.py scores real
    # messages; here it is only listed, so a new method is still noticed.
    "spam_report": [],
}
#: Methods that fail with AssertionError, by design, when nothing matches.
ASSERTING = {"link", "code", "attachment"}


def public_api(message: Message) -> tuple[list[str], list[str]]:
    """The public fields and methods of ``message``, found by introspection
    so that a new one is read here without anyone remembering to add it."""
    fields = sorted(name for name in vars(message) if not name.startswith("_"))
    methods = []
    for name, member in inspect.getmembers(type(message)):
        if name.startswith("_"):
            continue
        if isinstance(member, (property, functools.cached_property)):
            fields.append(name)
        elif callable(member):
            methods.append(name)
    return fields, methods


def read_every_field(message: Message) -> dict[str, Any]:
    """Read every public field and call every public method, the way a test
    or a failure report would: none may raise (apart from the assertion
    helpers' AssertionError when nothing matches)."""
    fields, methods = public_api(message)
    assert {"subject", "to", "text", "defects", "raw"} <= set(fields)
    assert set(methods) == set(METHOD_CALLS), "list the arguments of new methods"
    values: dict[str, Any] = {name: getattr(message, name) for name in fields}
    for name in methods:
        for args in METHOD_CALLS[name]:
            call = functools.partial(getattr(message, name), *args)
            if name not in ASSERTING:
                values[f"{name}{args}"] = call()
                continue
            try:
                values[f"{name}{args}"] = call()
            except AssertionError as error:  # nothing matched: say what is there
                values[f"{name}{args}"] = str(error).encode("utf-8")
    values["repr"] = repr(message)
    values["str"] = str(message)
    values["header_items"] = [(k, message.headers.get_all(k)) for k in message.headers]
    for address in (*message.to, *message.cc, *message.bcc, *message.reply_to):
        address.formatted, address.name, address.domain, address.local, repr(address)
    for attachment in message.attachments:
        repr(attachment), attachment.size, attachment.filename, attachment.content_type
    # Everything shown to people is one line of printable text.
    for key in ("summary()", "repr"):
        assert len(values[key].splitlines()) == 1, values[key]
        values[key].encode("utf-8")
    assert isinstance(values["defects"], tuple)
    assert all(isinstance(d, str) for d in values["defects"])
    return values


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_corpus_message(smtpsink: Mailbox, path: Path) -> None:
    sent = path.read_bytes()
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=10) as client:
        refused = client.sendmail("corpus@example.com", ["bob@example.com"], sent)
    assert refused == {}
    message = smtpsink.wait_for(timeout=10)
    assert message.raw == sent
    values = read_every_field(message)
    defects = values["defects"]
    assert isinstance(defects, tuple)
    assert all(isinstance(d, str) for d in defects)
    if path.stem in EXPECTED_DEFECTS:
        expected = EXPECTED_DEFECTS[path.stem]
        wanted = (expected,) if isinstance(expected, str) else expected
        assert any(w in d for w in wanted for d in defects), defects
    if path.stem in CLEAN:
        assert defects == ()


def test_contents_survive(smtpsink: Mailbox) -> None:
    """Spot checks that the unusual-but-valid messages read as meant."""

    def send(name: str) -> Message:
        with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=10) as client:
            client.sendmail(
                "corpus@example.com",
                ["bob@example.com"],
                (CORPUS / f"{name}.eml").read_bytes(),
            )
        smtpsink.wait_for(timeout=10)
        return smtpsink.messages.last()

    assert send("deep_nesting_50").text == "the bottom"
    huge = send("huge_header_100k")
    assert huge.subject is not None
    assert len(huge.subject) > 99_000
    assert huge.subject.startswith("word0 word1 ")
    assert "\n" not in huge.subject
    assert len(huge.summary()) < 400  # the subject shortened, with a count
    assert "more characters]" in huge.summary()
    utf8 = send("utf8_headers")
    assert utf8.subject == "日本語の件名 ✓ — ünïcödé"
    assert utf8.from_ is not None
    assert utf8.from_ == "zoe@example.com"
    assert utf8.from_.name == "Zoë Ünal"
    assert utf8.to == ("yamada@example.jp",)
    latin1 = send("latin1_headers")
    assert latin1.from_ == "rene@example.com"
    assert latin1.subject is not None
    assert "sum" in latin1.subject

    names = {a.filename for a in send("non_ascii_filenames").attachments}
    assert {"€ rates résumé.pdf", "日本語.txt", "naïve.bin"} <= names

    binary = send("binary_attachment")
    rng = random.Random(20240101)
    blob = bytes(rng.randrange(256) for _ in range(64 * 1024))
    assert binary.attachment("blob.bin").content == blob
    assert base64.b64encode(blob)[:76] in binary.raw

    broken = send("html_only_broken_markup")
    assert "https://example.com/confirm/1" in broken.links()

    dupes = send("duplicate_headers")
    assert dupes.subject == "one"
    assert dupes.headers.get_all("subject") == ["one", "two"]
    assert [str(a) for a in dupes.to] == ["c@example.com", "d@example.com"]


def test_truly_empty_message(smtpsink: Mailbox) -> None:
    """DATA then at once the final dot: zero bytes of content (smtplib would
    add a CRLF, so this one goes over a raw socket)."""
    with socket.create_connection((smtpsink.host, smtpsink.port), timeout=10) as sock:
        sock.sendall(
            b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
        )
        file = sock.makefile("rb")
        while not file.readline().startswith(b"354"):
            pass
        sock.sendall(b".\r\nQUIT\r\n")
        assert file.readline().startswith(b"250")
        file.close()
    message = smtpsink.wait_for(timeout=10)
    assert message.raw == b""
    values = read_every_field(message)
    assert values["subject"] is None
    assert values["from_"] is None
    assert values["to"] == ()
    assert values["attachments"] == ()
    assert values["body"] == ""


def deliver(smtpsink: Mailbox, name: str) -> Message:
    """Send one corpus file and return it as captured (the only message)."""
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=10) as client:
        data = (CORPUS / f"{name}.eml").read_bytes()
        client.sendmail("corpus@example.com", ["bob@example.com"], data)
    return smtpsink.wait_for(timeout=10)


def test_non_ascii_charset_name_leaves_the_word_and_reads_the_rest(
    smtpsink: Mailbox,
) -> None:
    message = deliver(smtpsink, "non_ascii_charset_name")
    assert message.subject == "=?\ufffd?q?x?="
    assert message.header("Message-ID") == "<charset-name@example.com>"
    assert message.message_id == "<charset-name@example.com>"
    assert message.from_ == "ann@example.com"
    assert "Subject: '=?\ufffd?q?x?='" in message.summary()
    assert "charset-name@example.com" not in repr(message)  # repr: no Message-ID
    smtpsink.assert_sent(
        subject=message.subject, header={"Message-ID": re.compile("charset")}
    )


def test_deeply_nested_comments_read_as_no_address(smtpsink: Mailbox) -> None:
    message = deliver(smtpsink, "nested_comments_600")
    assert message.to == ()
    assert "| To: - |" in message.summary()
    smtpsink.assert_not_sent(to="bob@example.com")
    smtpsink.assert_sent(rcpt_to="bob@example.com", subject="600 nested comments")


def test_thousand_nested_parts_read_as_headers_only(smtpsink: Mailbox) -> None:
    message = deliver(smtpsink, "nested_rfc822_1000")
    assert message.text is None
    assert message.html is None
    assert message.body == ""
    assert message.attachments == ()
    assert message.subject == "1000 levels of message/rfc822"
    assert message.email["Subject"] == "1000 levels of message/rfc822"
    assert any("RecursionError" in d for d in message.defects)
    smtpsink.assert_not_sent(body="the bottom")


@pytest.mark.parametrize(
    "disposition",
    # Inline (a bounce, a forward in the body), or attached: then
    # mail-parser gives up on the whole message, and the sink reads the
    # parts itself.
    [b"", b"Content-Disposition: attachment\r\n"],
)
def test_a_forwarded_chain_too_deep_to_write_leaves_the_other_attachments(
    smtpsink: Mailbox, disposition: bytes
) -> None:
    # A message/rfc822 part holding 300 levels of nesting: flattening it
    # for its attachment's bytes recurses past Python's limit, and the
    # whole field was given up: the PDF beside it was gone too.
    chain = b"Content-Type: text/plain\r\n\r\nthe bottom\r\n"
    for level in range(150):
        chain = (
            b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n"
            b"Content-Type: message/rfc822\r\n\r\n%s\r\n--b%d--\r\n"
            % (level, level, chain, level)
        )
    pdf = base64.encodebytes(b"%PDF-1.4 fake").replace(b"\n", b"\r\n")
    raw = (
        b"From: a@example.com\r\nTo: b@example.com\r\nSubject: invoice\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=TOP\r\n\r\n"
        b"--TOP\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        b"--TOP\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename=invoice.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + pdf + b"--TOP\r\n"
        b"Content-Type: message/rfc822\r\n" + disposition + b"\r\n"
        b"Subject: fwd\r\n" + chain + b"\r\n--TOP--\r\n"
    )
    message = smtpsink.deliver(raw, to="b@example.com")
    assert message.attachment("invoice.pdf").content == b"%PDF-1.4 fake"
    assert [a.filename for a in message.attachments] == ["invoice.pdf"]
    assert any(
        d.startswith("an attached message nested too deeply to be written whole")
        for d in message.defects
    ), message.defects
    assert message.text == "See attached."


def test_nested_comments_in_the_content_type_give_the_header_block_as_email(
    smtpsink: Mailbox,
) -> None:
    # The stdlib cannot read this Content-Type (RecursionError), and reads
    # it even when asked for the header block alone.
    message = deliver(smtpsink, "nested_comments_content_type_600")
    assert message.text == "body\n"
    parsed = message.email
    assert parsed["Subject"] == "600 nested comments in the Content-Type"
    assert parsed.get_payload() == "body\r\n"
    assert any(
        d.startswith("email: only the header block parsed: RecursionError")
        for d in message.defects
    ), message.defects


def test_conflicting_rfc2231_sections_keep_the_sections(smtpsink: Mailbox) -> None:
    # A parameter both whole and in RFC 2231 sections: the stdlib's decoding
    # raises TypeError on it (CPython gh-134151) at every parameter read.
    # Not in the corpus: the sink's BODYSTRUCTURE of it differs from
    # Dovecot's (test_imap_dovecot_corpus.py), which is left for later.
    raw = (
        b"From: Ann <ann@example.com>\r\nSubject: charset given whole and in "
        b"sections\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; "
        b"charset*0=utf-8; charset*=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9 in UTF-8\r\n"
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=10) as client:
        client.sendmail("a@example.com", ["bob@example.com"], raw)
    message = smtpsink.wait_for(timeout=10)
    read_every_field(message)
    assert message.text == "café in UTF-8\n"
    assert [p.code for p in message.lint() if p.code == "lint-failed"] == []
    smtpsink.assert_sent(text="café")
    try:  # fixed in later CPython releases: then nothing to report
        email.message_from_bytes(raw).get_content_charset()
    except TypeError:
        assert any("ConflictingContinuationsDefect" in d for d in message.defects)


ATTACHED_PDF = (
    b'--b1\r\nContent-Type: application/pdf; name="r.pdf"\r\n'
    b'Content-Disposition: attachment; filename="r.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n"
)


@pytest.mark.parametrize("where", ["text part", "attachment"])
def test_attachments_are_read_where_mail_parser_gives_up(
    smtpsink: Mailbox, where: str
) -> None:
    # mail-parser raises on the whole message for a parameter both whole and
    # in RFC 2231 sections (CPython gh-134151): its attachment list was
    # lost, and `attachments` read as empty although the mail has one.
    odd = "; charset*0=utf-8; charset*=iso-8859-1"
    raw = (
        b"From: ann@example.com\r\nSubject: a report\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b"--b1\r\nContent-Type: text/plain"
        + (odd.encode() if where == "text part" else b"")
        + b"\r\n\r\nSee the report.\r\n"
        + ATTACHED_PDF.replace(
            b"application/pdf;",
            b"application/pdf"
            + (odd.encode() if where == "attachment" else b"")
            + b";",
        )
        + b"--b1\r\nContent-Type: image/png\r\nContent-ID: <logo@example.com>\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0K\r\n--b1--\r\n"
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=10) as client:
        client.sendmail("a@example.com", ["bob@example.com"], raw)
    message = smtpsink.wait_for(timeout=10)

    read_every_field(message)
    pdf, logo = message.attachments
    assert (pdf.filename, pdf.content_type, pdf.content) == (
        "r.pdf",
        "application/pdf",
        b"%PDF-1.4\n",
    )
    assert pdf.disposition == "attachment"
    assert (logo.filename, logo.content_id, logo.content) == (
        None,
        "<logo@example.com>",
        base64.b64decode("iVBORw0K"),
    )
    assert message.attachment("r.pdf") is pdf
    assert message.text == "See the report."


def test_absurd_date_reads_as_none(smtpsink: Mailbox) -> None:
    message = deliver(smtpsink, "absurd_date")
    assert message.date is None
    assert message.subject == "a date beyond any calendar"


@pytest.mark.parametrize(
    ("value", "year"),
    [
        ("Mon, 5 Jan 126 10:00:00 +0000", 2026),  # RFC 5322 4.3: 1900 more
        ("Mon, 5 Jan 26 10:00:00 +0000", 2026),
        ("Mon, 5 Jan 1999 10:00:00 +0000", 1999),
        ("Mon, 5 Jan 0126 10:00:00 +0000", 126),  # four digits: as written
    ],
)
def test_obsolete_years_read_as_rfc_5322_says(
    smtpsink: Mailbox, value: str, year: int
) -> None:
    raw = f"Date: {value}\r\nSubject: old\r\n\r\nx\r\n".encode()
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=10) as client:
        client.sendmail("a@example.com", ["b@example.com"], raw)
    message = smtpsink.wait_for()
    assert message.date is not None
    assert (message.date.year, message.date.month, message.date.day) == (year, 1, 5)


def test_nul_in_charset_name_reads_as_utf8(smtpsink: Mailbox) -> None:
    message = deliver(smtpsink, "nul_in_charset_name")
    assert message.text == "café in UTF-8\n"
    smtpsink.assert_sent(text="café")


def test_utf7_text_is_decoded_as_imap_search_reads_it(smtpsink: Mailbox) -> None:
    # mail-parser left it encoded, with no defect: assert_sent(text=...)
    # missed what the sink's own IMAP SEARCH BODY found.
    raw = (
        b"From: a@example.com\r\nTo: b@example.com\r\nSubject: utf-7\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n"
        b"\r\n--b\r\nContent-Type: text/plain; charset=utf7\r\n\r\nHi +ZeVnLIqe-\r\n"
        b"--b\r\nContent-Type: text/html; charset=UTF7\r\n\r\n<p>+ZeVnLIqe-</p>\r\n"
        b"--b--\r\n"
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], raw)
    message = smtpsink.assert_sent(text="Hi \u65e5\u672c\u8a9e")
    assert message.html == "<p>\u65e5\u672c\u8a9e</p>"
    assert message.raw == raw


def test_unknown_marked_section_is_skipped_like_a_browser_does(
    smtpsink: Mailbox,
) -> None:
    message = deliver(smtpsink, "html_unknown_marked_section")
    assert message.links() == ["https://example.com/after"]
    assert message.link(text="after") == "https://example.com/after"
    assert message.defects == ()


def test_smtputf8_display_name_in_the_summary(smtpsink: Mailbox) -> None:
    data = (CORPUS / "smtputf8_display_name.eml").read_bytes()
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=10) as client:
        client.ehlo()
        client.sendmail(
            "ann@example.com", ["zoë@exämple.com"], data, mail_options=["SMTPUTF8"]
        )
    message = smtpsink.wait_for(timeout=10)
    assert message.envelope.smtputf8
    assert message.to == ["zoë@exämple.com"]
    assert message.to[0].formatted == "Zoë <zoë@exämple.com>"
    assert "-> zoë@exämple.com | To: Zoë <zoë@exämple.com> |" in message.summary()
    smtpsink.assert_sent(to="zoë@exämple.com")


def test_a_missing_to_and_subject_are_dashes_in_the_summary(smtpsink: Mailbox) -> None:
    # Not "Subject: None", a repr beside the quoted subjects; a subject that
    # is "-" itself stays quoted.
    missing = smtpsink.deliver(
        b"From: a@example.com\r\n\r\nbody\r\n", to="b@example.com"
    )
    dash = smtpsink.deliver(b"Subject: -\r\n\r\nbody\r\n", to="b@example.com")
    assert "| To: - | Subject: - | " in missing.summary()
    assert "| To: - | Subject: '-' | " in dash.summary()


@pytest.mark.parametrize(
    "date", ["Mon, 01 Jan 2024 10:00:00 -0000", "Mon, 01 Jan 2024 10:00:00"]
)
def test_a_date_without_a_known_zone_reads_as_utc(smtpsink: Mailbox, date: str) -> None:
    # "-0000" is UTC with the sender's zone unknown (RFC 5322 3.3); no zone
    # at all is a defect. Both were naive: comparing them with received_at
    # raised TypeError.
    message = smtpsink.deliver(f"Date: {date}\r\n\r\nbody\r\n", to="b@example.com")
    assert message.date == datetime.datetime(
        2024, 1, 1, 10, tzinfo=datetime.timezone.utc
    )
    assert message.date < message.received_at

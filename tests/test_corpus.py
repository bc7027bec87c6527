"""The corpus of malformed and unusual messages (tests/corpus/*.eml, made by
tests/corpus/make_corpus.py), each sent over real SMTP: stored byte-exact,
every field readable without an exception, problems listed in `defects`."""

from __future__ import annotations

import base64
import random
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
}


def test_the_corpus_is_complete_and_fits_smtp() -> None:
    names = {f.stem for f in FILES}
    assert set(EXPECTED_DEFECTS) | CLEAN <= names
    assert len(FILES) >= 25
    for file in FILES:
        data = file.read_bytes()
        assert data.endswith(b"\r\n"), file.name
        assert max(len(line) for line in data.split(b"\r\n")) <= 998, file.name


def read_every_field(message: Message) -> dict[str, Any]:
    """Touch every public field the way a test or a failure report would."""
    values: dict[str, Any] = {}
    for name in (
        "subject",
        "from_",
        "to",
        "cc",
        "bcc",
        "reply_to",
        "date",
        "message_id",
        "headers",
        "text",
        "html",
        "body",
        "attachments",
        "defects",
        "recipients",
        "size",
        "parsed",
        "envelope",
        "session",
    ):
        values[name] = getattr(message, name)
    values["links"] = message.links()
    values["summary"] = message.summary()
    values["repr"] = repr(message)
    values["email"] = message.email
    for key, value in message.email.items():  # policy.default parses lazily
        str(key), str(value)
    for part in message.email.walk():
        part.get_content_type(), part.get_filename()
    values["header_items"] = [(k, message.headers.get_all(k)) for k in message.headers]
    for attachment in message.attachments:
        repr(attachment), attachment.size, attachment.filename, attachment.content_type
    # Everything shown to people must be printable text.
    for key in ("summary", "repr"):
        values[key].encode("utf-8")
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
        wanted = EXPECTED_DEFECTS[path.stem]
        assert any(wanted in d for d in defects), defects
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

"""Real mail over loopback: everything is captured, byte for byte."""

from __future__ import annotations

import datetime
import email
import email.policy
import logging
import os
import smtplib
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import mailparser
import pytest
from conftest import Send, make_message

from pytest_smtpsink import Envelope, Mailbox
from pytest_smtpsink._message import Headers


def test_plain_text_message(smtpsink: Mailbox, send: Send) -> None:
    sent = send(subject="Welcome", text="Confirm your address.\n")
    msg = smtpsink.messages.one()
    assert msg.raw == sent.as_bytes().replace(b"\n", b"\r\n")
    assert msg.subject == "Welcome"
    assert msg.from_ == "app@example.com"
    assert msg.to == ("ann@example.com",)
    assert msg.text == "Confirm your address.\n"
    assert msg.html is None
    assert msg.envelope.mail_from == "app@example.com"
    assert msg.envelope.rcpt_to == ("ann@example.com",)
    assert msg.defects == ()
    assert msg.received_at.tzinfo is datetime.timezone.utc
    assert msg.session.ehlo is not None


def test_multipart_alternative_with_html(smtpsink: Mailbox, send: Send) -> None:
    send(text="Plain part\n", html="<p>Rich <b>part</b></p>\n")
    msg = smtpsink.messages.one()
    assert msg.text == "Plain part\n"
    assert msg.html == "<p>Rich <b>part</b></p>\n"
    assert msg.email.get_content_type() == "multipart/alternative"


def test_attachments_come_back_identical(smtpsink: Mailbox) -> None:
    blob = bytes(range(256)) * 64 + os.urandom(1000)
    message = make_message(subject="Invoice")
    message.add_attachment(
        blob, maintype="application", subtype="pdf", filename="invoice.pdf"
    )
    message.add_attachment("a,b\n1,2\n", subtype="csv", filename="data.csv")
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(message)
    msg = smtpsink.messages.one()
    pdf = msg.attachment("invoice.pdf")
    assert pdf.content == blob
    assert pdf.content_type == "application/pdf"
    assert pdf.size == len(blob)
    assert pdf.disposition == "attachment"
    assert msg.attachment("data.csv").content.replace(b"\r\n", b"\n") == b"a,b\n1,2\n"
    assert [a.filename for a in msg.attachments] == ["invoice.pdf", "data.csv"]


def test_a_forwarded_message_is_an_attachment_not_this_messages_text(
    smtpsink: Mailbox,
) -> None:
    forwarded = make_message(
        subject="Original", text="INNER TEXT\n", html="<p>INNER HTML</p>\n"
    )
    message = make_message(subject="Fwd: Original", text="See the attached message.\n")
    message.add_attachment(forwarded)
    bounce = make_message(subject="Undelivered", text="It did not arrive.\n")
    bounce.add_attachment(forwarded)
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(message)
        client.send_message(bounce)
    msg, other = smtpsink.wait_for(2)
    # mail-parser counts the attached message's parts as this one's.
    assert msg.text == "See the attached message.\n"
    assert msg.html is None
    assert other.body == "It did not arrive.\n"
    (attached,) = msg.attachments
    assert attached.content_type == "message/rfc822"
    assert b"INNER HTML" in attached.content
    assert "INNER" not in msg.body
    # A message that only is a message: its text is that message's.
    wrapper = EmailMessage()
    wrapper["From"] = "app@example.com"
    wrapper["To"] = "ann@example.com"
    wrapper["Subject"] = "Wrapped"
    wrapper.set_content(forwarded)
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(wrapper)
    assert smtpsink.wait_for(3)[2].text == "INNER TEXT\n"


POSTFIX_BOUNCE = (
    b"From: MAILER-DAEMON@example.com\r\nTo: app@example.com\r\n"
    b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
    b"\r\n--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you\r\n"
    b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
    b"Reporting-MTA: dns; example.com\r\n\r\nFinal-Recipient: rfc822; ann@example.com\r\n"
    b"Action: failed\r\nStatus: 5.1.1\r\n\r\n"
    b"--B\r\nContent-Description: Undelivered Message\r\n"
    b"Content-Type: message/rfc822\r\n\r\n"
    b"From: app@example.com\r\nTo: ann@example.com\r\nSubject: Your receipt\r\n\r\n"
    b"Thanks for your order.\r\n--B--\r\n"
)


def test_a_message_attached_without_a_disposition_is_an_attachment(
    smtpsink: Mailbox,
) -> None:
    # A bounce as Postfix sends it (RFC 3464): no Content-Disposition on the
    # returned message, which mail-parser then lists nowhere: it was in no
    # field, no criterion reached it, and index.html showed no attachment.
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            "MAILER-DAEMON@example.com", ["app@example.com"], POSTFIX_BOUNCE
        )
    msg = smtpsink.messages.one()
    assert msg.text == "I'm sorry to have to inform you"
    (returned,) = msg.attachments
    assert returned.content_type == "message/rfc822"
    assert returned.disposition is None
    assert returned.content.startswith(b"From: app@example.com")
    assert b"Thanks for your order." in returned.content
    assert smtpsink.messages.filter(attachment="message/rfc822") == [msg]


def test_an_attachment_without_a_name_has_none(smtpsink: Mailbox) -> None:
    # mail-parser makes up a name for such a part (random letters, or its
    # Content-ID): a different one on every run, and ".txt" for a PDF.
    message = make_message(subject="Parts")
    message.add_attachment(b"%PDF", maintype="application", subtype="pdf")
    message.add_attachment(b"{\\rtf1}", maintype="application", subtype="rtf")
    message.add_attachment(b"PNG", maintype="image", subtype="png", cid="<logo@x>")
    # Names that look made up but were sent are kept, as sent.
    message.add_attachment(
        b"notes", maintype="text", subtype="plain", filename="abcdefghij.txt"
    )
    message.add_attachment(
        b"%PDF", maintype="application", subtype="pdf", filename="Résumé.pdf"
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(message)
    msg = smtpsink.messages.one()
    assert [(a.filename, a.content_type) for a in msg.attachments] == [
        (None, "application/pdf"),
        (None, "application/rtf"),
        (None, "image/png"),
        ("abcdefghij.txt", "text/plain"),
        ("Résumé.pdf", "application/pdf"),
    ]
    assert msg.attachments[2].content_id == "<logo@x>"
    assert [a.code for a in msg.lint()].count("attachment-without-filename") == 3


def test_a_multipart_the_parser_could_not_split_is_no_attachment(
    smtpsink: Mailbox,
) -> None:
    # Inside a multipart with the same boundary, the standard library finds
    # no parts in it; by its Content-ID mail-parser then listed it as an
    # inline attachment: "multipart/alternative", 0 bytes.
    raw = (
        b"Subject: patches\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b'--B\r\nContent-Type: multipart/alternative; boundary="B"\r\n'
        b"Content-ID: <alt@example.com>\r\n\r\n"
        b"This is a multi-part message in MIME format.\r\n\r\n"  # Outlook's
        b"--B\r\nContent-Type: application/octet-stream\r\n"
        b"Content-ID: <p1@example.com>\r\n\r\npatch 1\r\n"
        b"--B--\r\n"
        b"--B\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="a.pdf"\r\n\r\n%PDF\r\n'
        b"--B--\r\n"
    )
    message = smtpsink.deliver(raw, to="ann@example.com")
    assert [a.content_type for a in message.attachments] == [
        "application/octet-stream",
        "application/pdf",
    ]
    # A multipart attached itself still is one.
    attached = (
        b"Subject: attached\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n'
        b"--o\r\nContent-Type: text/plain\r\n\r\nsee the file\r\n"
        b'--o\r\nContent-Type: multipart/related; boundary="i"\r\n'
        b'Content-Disposition: attachment; filename="page.mht"\r\n\r\n'
        b"--i\r\nContent-Type: text/html\r\n\r\n<p>page</p>\r\n--i--\r\n"
        b"--o--\r\n"
    )
    kept = smtpsink.deliver(attached, to="ann@example.com")
    assert [(a.filename, a.content_type) for a in kept.attachments] == [
        ("page.mht", "multipart/related")
    ]
    # So is one with content, whatever its type claims (no boundary to split).
    named = (
        b"Subject: named\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n'
        b"--o\r\nContent-Type: text/plain\r\n\r\nsee the file\r\n"
        b'--o\r\nContent-Type: multipart/mixed; name="data.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nZGF0YSE=\r\n"
        b"--o--\r\n"
    )
    data = smtpsink.deliver(named, to="ann@example.com")
    assert [(a.filename, a.content) for a in data.attachments] == [
        ("data.bin", b"data!")
    ]


def test_an_attachment_repr_escapes_the_content_type(smtpsink: Mailbox) -> None:
    """pytest prints reprs in assertion failures: a Content-Type with an
    ESC must not reach the terminal as one (the filename is !r already)."""
    raw = (
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b"--b\r\nContent-Type: application/x\x1b[2J\x07y\r\n"
        b'Content-Disposition: attachment; filename="a.bin"\r\n\r\nxx\r\n--b--\r\n'
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], raw)
    [attachment] = smtpsink.wait_for().attachments
    assert attachment.content_type == "application/x\x1b[2j\x07y"  # as parsed
    assert repr(attachment) == (
        "<Attachment 'a.bin' application/x\\x1b[2j\\x07y 2 bytes>"
    )


def test_non_ascii_headers_are_decoded(smtpsink: Mailbox) -> None:
    message = make_message(
        subject="Grüße aus Köln ✉", sender="Zoë Ünal <zoe@example.com>"
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(message)
    msg = smtpsink.messages.one()
    assert b"=?utf-8?" in msg.raw  # really RFC 2047 on the wire
    assert msg.subject == "Grüße aus Köln ✉"
    assert msg.from_ == "zoe@example.com"
    assert msg.from_ is not None
    assert msg.from_.name == "Zoë Ünal"


@pytest.mark.parametrize(
    ("header", "decoded"),
    [
        # Raw UTF-8 (RFC 6532) beside an encoded word: the stdlib's
        # make_header refuses it, so the sink left the whole value undecoded.
        (b"Subject: Gr\xc3\xbc\xc3\x9fe =?utf-8?q?caf=C3=A9?=", "Grüße café"),
        # Bytes not UTF-8 beside one: U+FFFD, not the six characters "\ufffd".
        (b"Subject: =?utf-8?b?w6k=?= \xff", "\u00e9 \ufffd"),
        # Raw UTF-8 inside a Q-encoded word, as some mailers write it.
        (b"Subject: =?utf-8?q?Gr\xc3\xbc\xc3\x9fe_aus?= K\xc3\xb6ln", "Grüße aus Köln"),
        (b"Subject: =?utf-8?q?\xe2\x82\xac=205?=", "\u20ac 5"),
        # A backslash escape written in the text stays as written.
        (b"Subject: =?utf-8?b?w6k=?= a\\u00e9", "\u00e9 a\\u00e9"),
    ],
)
def test_raw_8bit_text_beside_an_encoded_word_decodes(
    smtpsink: Mailbox, header: bytes, decoded: str
) -> None:
    raw = header + b"\r\nFrom: J\xc3\xb6rg =?utf-8?q?M=C3=BCller?= <j@example.com>"
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("j@example.com", ["b@example.com"], raw + b"\r\n\r\nbody\r\n")
    message = smtpsink.messages.one()
    assert message.subject == decoded
    assert message.from_ is not None
    assert message.from_.name == "Jörg Müller"
    assert not [d for d in message.defects if "undecoded" in d]
    smtpsink.assert_sent(subject=decoded)


def test_an_encoded_word_with_a_language_decodes(smtpsink: Mailbox) -> None:
    # RFC 2231 5 lets an encoded word name its language: "utf-8*en" was an
    # unknown charset, where the stdlib and the sink's IMAP SEARCH read it.
    raw = (
        b"Subject: =?utf-8*en?q?caf=C3=A9?=\r\n"
        b"From: =?UTF-8*de?q?J=C3=BCrgen?= <j@example.com>\r\n\r\nbody\r\n"
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("j@example.com", ["b@example.com"], raw)
    message = smtpsink.assert_sent(subject="caf\u00e9")
    assert message.from_ is not None
    assert message.from_.name == "J\u00fcrgen"
    assert message.defects == ()


def test_one_messages_slow_field_holds_up_no_other_messages(
    smtpsink: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Up to Python 3.11 a cached_property locked the field for every
    # instance: one message's 5 s first read of text held up every other
    # message's text (the live view's other pages, a test's threads).
    from pytest_smtpsink import Message

    first = smtpsink.deliver(b"Subject: 1\r\n\r\none\r\n", to="ann@example.com")
    second = smtpsink.deliver(b"Subject: 2\r\n\r\ntwo\r\n", to="ann@example.com")
    field = vars(Message)["text"]
    read = field.func
    reading, release = threading.Event(), threading.Event()

    def slow(message: Message) -> str | None:
        if message is first:
            reading.set()
            release.wait(60)
        text: str | None = read(message)
        return text

    monkeypatch.setattr(field, "func", slow)
    slow_reader = threading.Thread(target=lambda: first.text)
    slow_reader.start()
    try:
        assert reading.wait(30)
        texts: list[str | None] = []
        other = threading.Thread(target=lambda: texts.append(second.text))
        other.start()
        other.join(30)  # at once, unless the first read holds it
        assert texts == ["two\n"]
    finally:
        release.set()
        slow_reader.join(30)
    assert first.text == "one\n"


def test_a_messages_repr_is_cut_as_its_summary_is(smtpsink: Mailbox) -> None:
    # A 200 KB subject made a 200 KB repr, and so a 200 KB failure message
    # of every assertion that names the message with it.
    recipients = [f"r{n}@example.com" for n in range(50)]
    raw = b"Subject: " + b"A" * 900 + b"\r\n A" * 200 + b"\r\n\r\nbody\r\n"
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("a@example.com", recipients, raw)
    shown = repr(smtpsink.wait_for())
    assert len(shown) < 500, shown
    assert "rcpt_to=['r0@example.com', 'r1@example.com', ... (+48 more)] " in shown
    assert "subject='AAAA" in shown
    assert "... [" in shown


def test_a_messages_repr_names_the_envelope_as_the_envelope(smtpsink: Mailbox) -> None:
    # "from=" and "to=" read as the headers (Message.from_, Message.to): a
    # bounce address showed as the sender, a Bcc recipient among "to".
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            "bounce@example.com",
            ["ann@example.com", "boss@example.com"],
            b"From: app@example.com\r\nTo: ann@example.com\r\nSubject: Hi\r\n\r\nx\r\n",
        )
    shown = repr(smtpsink.wait_for())
    assert (
        " mail_from='bounce@example.com' "
        "rcpt_to=['ann@example.com', 'boss@example.com'] subject='Hi' " in shown
    )


def test_a_content_type_of_many_semicolons_is_read_in_one_pass(
    smtpsink: Mailbox,
) -> None:
    # The email package's parameter split is quadratic in a value's ";"s
    # (a 50 kB one took 10.6 s for message.text); these would take minutes.
    quoted = 'Content-Type: text/plain; a="' + ";" * 200_000
    params = "Content-Type: text/plain" + ";a=x" * 100_000
    for header in (quoted, params):
        message = smtpsink.deliver(
            f"Subject: p\r\n{header}\r\n\r\nbody\r\n".encode(), to="ann@example.com"
        )
        assert message.text == "body\n"
        assert message.attachments == ()
        message.lint()  # parses its parameters with the sink's own parse


def test_a_subject_of_many_encoded_words_decodes_in_one_pass(
    smtpsink: Mailbox,
) -> None:
    """The stdlib's decode_header is quadratic in the encoded words of a
    line (unfolded, a header is one): 80,000 words took 16 s, and 2 MB of
    "=?a?q?x" (each starts a word no "?=" ends) would take hours. The
    sink's own finds the same words in one pass."""
    words = "\r\n ".join(["=?utf-8?q?=C3=A9?="] * 30_000)
    unended = "\r\n ".join(["=?a?q?x" * 100] * 3000)
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        for subject in (words, unended):
            client.sendmail(
                "a@example.com",
                ["b@example.com"],
                f"Subject: {subject}\r\n\r\nbody\r\n".encode(),
            )
    decoded, plain = smtpsink.wait_for(count=2)
    assert decoded.subject == "\u00e9" * 30_000  # the blanks between words go
    assert plain.subject == " ".join(["=?a?q?x" * 100] * 3000)
    assert "Subject: '=?a?q?x=?a?q?x" in plain.summary()
    # mail-parser decodes every header with the stdlib's decode_header: the
    # text and the defects, which start there, took as long.
    assert (decoded.text, plain.text) == ("body\n", "body\n")
    assert plain.defects == decoded.defects == ()


def test_smtputf8_address(smtpsink: Mailbox) -> None:
    message = make_message(to=["jörg@bücher.example"], subject="Hallo")
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(message, mail_options=["SMTPUTF8"])
    msg = smtpsink.messages.one()
    assert msg.envelope.smtputf8 is True
    assert msg.envelope.rcpt_to == ("jörg@bücher.example",)
    assert msg.to == ("jörg@bücher.example",)
    assert "SMTPUTF8" in msg.envelope.mail_options


def test_bcc_recipients_live_only_in_the_envelope(
    smtpsink: Mailbox, send: Send
) -> None:
    send(to=["ann@example.com"], rcpt=["ann@example.com", "boss@example.com"])
    msg = smtpsink.messages.one()
    assert msg.envelope.rcpt_to == ("ann@example.com", "boss@example.com")
    assert msg.to == ("ann@example.com",)
    assert msg.bcc == ()
    assert b"boss@example.com" not in msg.raw


def test_the_envelope_s_recipients_equal_a_list_as_header_addresses_do(
    smtpsink: Mailbox, send: Send
) -> None:
    # A tuple never equals a list: "assert rcpt_to == [...]" failed showing
    # two values that looked the same, while "msg.to == [...]" passed.
    send(to=["ann@example.com"], rcpt=["ann@example.com", "boss@example.com"])
    recipients = smtpsink.messages.one().envelope.rcpt_to
    assert hash(recipients) == hash(("ann@example.com", "boss@example.com"))
    assert repr(recipients) == "('ann@example.com', 'boss@example.com')"
    # An envelope made by hand has the same kind of tuple.
    made = Envelope(mail_from="a@example.com", rcpt_to=("b@example.com",))
    assert type(made.rcpt_to) is type(recipients)
    rcpt_to: object = recipients  # mypy: a tuple that equals a list
    assert rcpt_to == ["ann@example.com", "boss@example.com"]
    assert rcpt_to != ["ann@example.com"]
    assert rcpt_to != ["boss@example.com", "ann@example.com"]  # order counts
    assert rcpt_to != ["ann@EXAMPLE.com", "boss@example.com"]  # as sent


def test_esmtp_parameters_are_kept_per_recipient(smtpsink: Mailbox) -> None:
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.ehlo()
        client.sendmail(
            "app@example.com",
            ["a@example.com", "b@example.com"],
            b"Subject: params\r\n\r\nbody\r\n",
            mail_options=["BODY=8BITMIME"],
        )
    envelope = smtpsink.messages.one().envelope
    assert "BODY=8BITMIME" in envelope.mail_options
    assert any(option.startswith("SIZE=") for option in envelope.mail_options)
    assert envelope.rcpt_options == ((), ())


def test_dot_stuffing_is_undone(smtpsink: Mailbox) -> None:
    body = b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nnot the end\r\n"
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], body)
    assert smtpsink.messages.one().raw == body


def test_large_message_with_dot_lines_is_kept_byte_exact(smtpsink: Mailbox) -> None:
    # ~390 KB: content is joined in pieces while it is read; lines that start
    # with a dot (stuffed by smtplib) fall on both sides of every seam.
    lines = [
        (b"." if n % 7 == 0 else b"") + bytes([65 + n % 26]) * (n % 150)
        for n in range(5000)
    ]
    body = b"Subject: big\r\n\r\n" + b"\r\n".join(lines) + b"\r\n"
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], body)
    message = smtpsink.messages.one()
    assert message.raw == body
    stuffed = sum(1 for line in lines if line.startswith(b"."))
    (content,) = [e for e in message.session.transcript if e.kind == "data"]
    assert content.line == f"<message content: {len(body) + stuffed} bytes>"


def test_hundred_messages_over_one_connection(smtpsink: Mailbox) -> None:
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        for n in range(100):
            client.sendmail(
                "a@example.com", ["b@example.com"], f"Subject: n{n}\r\n\r\n{n}\r\n"
            )
    messages = smtpsink.messages
    assert [m.subject for m in messages] == [f"n{n}" for n in range(100)]
    assert len(smtpsink.sessions) == 1
    assert len(smtpsink.sessions[0].messages) == 100
    assert all(m.session is smtpsink.sessions[0] for m in messages)


def test_concurrent_senders_lose_nothing(smtpsink: Mailbox) -> None:
    threads, per_thread = 8, 25
    errors: list[BaseException] = []

    def sender(worker: int) -> None:
        try:
            with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
                for n in range(per_thread):
                    client.sendmail(
                        f"w{worker}@example.com",
                        ["b@example.com"],
                        f"Subject: {worker}-{n}\r\n\r\nbody\r\n",
                    )
        except BaseException as error:  # reported below, not swallowed
            errors.append(error)

    pool = [threading.Thread(target=sender, args=(w,)) for w in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert errors == []
    subjects = sorted(m.subject or "" for m in smtpsink.messages)
    assert subjects == sorted(
        f"{w}-{n}" for w in range(threads) for n in range(per_thread)
    )
    # Every message is attributed to the connection that sent it.
    for message in smtpsink.messages:
        assert message.envelope.mail_from.startswith(
            f"w{(message.subject or '').split('-')[0]}@"
        )
        assert message in message.session.messages
    assert len(smtpsink.sessions) == threads


MALFORMED = (
    b"From: =?utf-8?q?broken <a@example.com>\r\n"
    b"To: b@example.com\r\n"
    b"Subject: caf\xe9 \xff\xfe junk\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XYZ"\r\n'
    b"\r\n"
    b"--XYZ\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"hello\r\n"
    b"--XYZ\r\n"
    b"Content-Type: application/octet-stream; name=bad.bin\r\n"
    b"Content-Disposition: attachment; filename=bad.bin\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"!!!not base64 at all@@@\r\n"
    b"--WRONG--\r\n"
)


def test_malformed_message_is_kept_byte_exact_with_defects(smtpsink: Mailbox) -> None:
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], MALFORMED)
    msg = smtpsink.messages.one()
    assert msg.raw == MALFORMED
    assert msg.defects, "a broken boundary must be reported"
    assert any("Boundary" in defect or "boundary" in defect for defect in msg.defects)
    # Every field reads without raising, with the junk made printable.
    assert msg.subject is not None
    assert msg.subject.startswith("caf")
    assert msg.text is not None
    assert "hello" in msg.text
    assert isinstance(msg.attachments, tuple)
    repr(msg), msg.summary(), msg.links(), msg.headers.items_all()


def test_parser_failure_is_a_defect_not_an_exception(smtpsink: Mailbox) -> None:
    # Truncated multipart input that has made mail-parser raise.
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n"
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], raw)
    msg = smtpsink.messages.one()
    assert msg.raw == raw
    _ = (msg.text, msg.html, msg.attachments, msg.subject, msg.date)  # never raise
    assert isinstance(msg.defects, tuple)


def test_parsing_odd_mail_logs_nothing(
    smtpsink: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    # mail-parser logs an ERROR for an encoded word it cannot decode, and
    # DEBUG lines for every header: about the mail, not the test.
    raw = b"Subject: =?utf-8?B?!!!notbase64?=\r\nTo: b@example.com\r\n\r\nhi\r\n"
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], raw)
    caplog.set_level(logging.DEBUG)
    msg = smtpsink.messages.one()
    _ = (msg.text, msg.html, msg.attachments, msg.subject, msg.defects)
    assert msg.text == "hi\n"
    assert [r for r in caplog.records if r.name.startswith("mailparser")] == []
    # mail-parser used directly still logs.
    mailparser.parse_from_bytes(raw)
    assert any(r.name == "mailparser.utils" for r in caplog.records)


def test_an_undecodable_file_name_logs_nothing(
    smtpsink: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    # Reading `attachments` asks mail-parser to decode each file name, and
    # it logs an ERROR for an encoded word it cannot decode (found by
    # fuzzing): the name reads as written, and the log stays the test's.
    name = b"=?utf-7?B?=E9?="
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="' + name + b'"\r\n\r\n'
        b"xx\r\n--b--\r\n"
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], raw)
    caplog.set_level(logging.DEBUG)
    msg = smtpsink.messages.one()
    assert [a.filename for a in msg.attachments] == [name.decode()]
    assert [r for r in caplog.records if r.name.startswith("mailparser")] == []


def test_headers_are_case_insensitive_and_multi_valued(smtpsink: Mailbox) -> None:
    raw = (
        b"Received: from a\r\nReceived: from b\r\nX-Tag: one\r\nx-tag: two\r\n"
        b"Subject: h\r\nDate: Tue, 01 Dec 2026 10:00:00 +0100\r\n"
        b"Message-ID: <id1@example.com>\r\n\r\nbody\r\n"
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], raw)
    msg = smtpsink.messages.one()
    assert msg.headers["x-TAG"] == "one"
    assert msg.headers.get_all("X-Tag") == ["one", "two"]
    assert msg.headers.get_all("received") == ["from a", "from b"]
    assert "subject" in msg.headers
    assert msg.header("Missing") is None
    assert msg.message_id == "<id1@example.com>"
    assert msg.date == datetime.datetime(
        2026, 12, 1, 10, tzinfo=datetime.timezone(datetime.timedelta(hours=1))
    )


def test_null_sender_for_bounces(smtpsink: Mailbox) -> None:
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("<>", ["b@example.com"], b"Subject: bounce\r\n\r\nbody\r\n")
    assert smtpsink.messages.one().envelope.mail_from == ""


def test_each_message_remembers_its_session(smtpsink: Mailbox, send: Send) -> None:
    send(subject="one")
    send(subject="two")
    one, two = smtpsink.messages
    assert one.session is not two.session
    assert [s.messages for s in smtpsink.sessions] == [(one,), (two,)]
    assert one.number + 1 == two.number


def test_email_message_is_the_stdlib_view(smtpsink: Mailbox, send: Send) -> None:
    send(subject="stdlib")
    email_message = smtpsink.messages.one().email
    assert isinstance(email_message, EmailMessage)
    assert email_message["Subject"] == "stdlib"


def test_address_lists_compare_like_a_tester_means(
    smtpsink: Mailbox, send: Send
) -> None:
    send(to=["Ann <ann@Example.COM>", "bob@example.com"])
    to = smtpsink.messages.one().to
    assert to == ["ann@example.com", "bob@example.com"]
    assert to == ("ann@EXAMPLE.com", "Bob <bob@example.com>")
    assert to != ["bob@example.com", "ann@example.com"]  # order matters
    assert to != ["ann@example.com"]
    assert to[0].name == "Ann"
    assert "ann@example.com" in to
    assert isinstance(to, tuple)


def test_malformed_address_headers_read_the_same_on_every_python(
    smtpsink: Mailbox,
) -> None:
    """Python 3.13's getaddresses and parseaddr are strict by default and
    read ``("", "")`` from each of these headers; older versions read the
    addresses. Every reader of header addresses reads them the older way, on
    every version (the test runs in tox on both)."""
    raw = (
        b"From: Bob <bob@example.com>>\r\n"  # a stray ">"
        b"To: ann@example.com <carl@example.com>\r\n"  # two addresses, no comma
        b"Cc: j@[192.0.2.1 ]\r\n"  # a domain literal with a space
        b"Subject: malformed addresses\r\n"
        b"Message-ID: <malformed@example.com>\r\n"
        b"\r\n"
        b"body\r\n"
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=10) as client:
        client.sendmail("bob@example.com", ["ann@example.com"], raw)
    message = smtpsink.wait_for(subject="malformed addresses", timeout=10)
    assert message.from_ is not None
    assert (message.from_, message.from_.name) == ("bob@example.com", "Bob")
    assert message.to == ("ann@example.com", "carl@example.com")
    assert message.cc == ("j@[192.0.2.1 ]",)
    codes = [p.code for p in message.bulk_sender_problems()]
    assert "from-not-single" not in codes, message.bulk_sender_problems()
    # deliver() without to=: the To and Cc addresses, read the same way and
    # checked as to= is (a domain literal with a space is no address); the
    # sender from From.
    with pytest.raises(ValueError, match=r"'j@\[192\.0\.2\.1 \]' is not an address"):
        smtpsink.deliver(message.raw)
    delivered = smtpsink.deliver(message.raw.replace(b"Cc: j@[192.0.2.1 ]\r\n", b""))
    assert delivered.envelope.rcpt_to == ("ann@example.com", "carl@example.com")
    assert delivered.envelope.mail_from == "bob@example.com"
    again = smtpsink.deliver(message.raw, to="Bob <bob@example.com>>")
    assert again.envelope.rcpt_to == ("bob@example.com",)


def test_every_header_of_a_long_header_block_reads_as_the_stdlib_reads_it(
    smtpsink: Mailbox,
) -> None:
    """Thousands of headers, names repeated in other cases and interleaved:
    `Headers.get_all` of each name (in any case) gives its values in order,
    as the email package does; so does the name of no header."""
    names = [f"X-Trace-{i}" for i in range(600)]
    lines = [
        f"{name.upper() if n % 3 == 1 else name}: hop {n} of {name}"
        for n in range(5)
        for name in names
    ]
    raw = (
        "Subject: many headers\r\n" + "\r\n".join(lines) + "\r\n\r\nbody\r\n"
    ).encode()
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=10) as client:
        client.sendmail("a@example.com", ["b@example.com"], raw)
    headers = smtpsink.wait_for(subject="many headers", timeout=10).headers
    stdlib = email.message_from_bytes(raw, policy=email.policy.compat32)
    assert len(headers) == len(names) + 1
    for name in [*headers, *names, "x-trace-7", "X-TRACE-599", "X-Absent"]:
        assert headers.get_all(name) == stdlib.get_all(name, []), name
    # A list of one's own: changing it changes no later answer.
    headers.get_all("X-Trace-0").append("changed")
    assert headers.get_all("x-trace-0") == stdlib.get_all("X-Trace-0")
    assert headers.items_all() == [(n, v.strip()) for n, v in stdlib.items()]


def test_get_all_reads_the_header_items_once() -> None:
    """However many names are asked for: the index is built on the first
    `get_all` (without it, each call scanned every header, and reading each
    name of a message with thousands of headers took seconds)."""

    class Scans(list[tuple[str, str]]):
        scans = 0

        def __iter__(self) -> Iterator[tuple[str, str]]:
            self.scans += 1
            return super().__iter__()

    items = Scans((f"X-{i % 50}", str(i)) for i in range(200))
    headers = Headers(items)
    before = items.scans
    for name in list(headers) * 3:
        headers.get_all(name)
    assert items.scans - before <= 2  # the names (__iter__) and the index


@pytest.fixture
def new_york_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time is New York's (never UTC's), for one test."""
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_times_people_read_are_local_like_the_applications_logs(
    smtpsink: Mailbox, send: Send, new_york_time: None, tmp_path: Path
) -> None:
    from pytest_smtpsink._files import write_session

    send(subject="When")
    message = smtpsink.messages.one()
    local = message.received_at.astimezone()
    assert local.utcoffset() != datetime.timedelta(0)
    # The summary line (failure messages, reports, the mailbox listings)
    # shows the local clock, as the standalone sink's lines do.
    assert f" {local:%H:%M:%S.%f}"[:-3] + " " in message.summary()
    assert f" {message.received_at:%H:%M:%S.}" not in message.summary()
    # A saved session says when it started in local time, with the offset.
    session = message.session
    path = write_session(tmp_path, 1, session)
    assert f"started {session.started_at.astimezone():%Y-%m-%d %H:%M:%S.%f %z}" in (
        path.read_text()
    )


@pytest.mark.parametrize("shown_in", ["saved file", "report", "index record"])
def test_a_session_ending_while_it_is_written_is_shown_as_of_one_moment(
    smtpsink: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    shown_in: str,
) -> None:
    # Its summary and its transcript were read one after the other: when
    # the client's QUIT came in between, the header said end=open above a
    # transcript that ended in "221 Bye".
    from pytest_smtpsink import _report
    from pytest_smtpsink._files import write_session
    from pytest_smtpsink._html import session_record
    from pytest_smtpsink._session import Session

    client = smtplib.SMTP(smtpsink.host, smtpsink.port)
    client.ehlo("late.example")
    (session,) = smtpsink.sessions
    format_transcript = Session.format_transcript
    request.addfinalizer(client.close)  # if the test fails before its QUIT

    def quit_meanwhile(self: Session) -> str:
        if self is session and session.end is None:
            client.quit()  # between the summary and the transcript
            smtpsink.wait_until(lambda: session.end is not None)
        return format_transcript(self)

    monkeypatch.setattr(Session, "format_transcript", quit_meanwhile)
    if shown_in == "saved file":
        header, _, transcript = (
            write_session(tmp_path, 1, session).read_text().partition("\n")
        )
    elif shown_in == "report":
        text = _report.section_text([smtpsink], "full") or ""
        header, transcript = text, text
    else:
        record = session_record(session)
        header, transcript = record["title"], record["transcript"]
    assert "end=quit" in header, header
    assert "221" in transcript.splitlines()[-1], transcript

"""The examples of the "Testing the SMTP conversation" page."""

from __future__ import annotations

import smtplib
import socket

import pytest
from signup_app import SignupApp


def test_session_facts(smtpsink):
    app = SignupApp(smtp_host=smtpsink.host, smtp_port=smtpsink.port)
    app.signup("ann@example.com")

    session = smtpsink.sessions[-1]
    assert session.ehlo == "app.example.com"  # the name in EHLO/HELO
    assert session.esmtp  # EHLO, not HELO
    assert session.peer[0] == "127.0.0.1"
    assert session.tls is None  # no STARTTLS on the default sink
    assert session.auth is None  # no AUTH either
    assert session.end == "quit"  # the client said QUIT
    assert session.messages == (smtpsink.messages.one(),)
    assert smtpsink.messages.one().session is session


def test_commands_and_codes(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as smtp:
        smtp.ehlo("client.example.com")
        smtp.sendmail(
            "app@example.com", ["ann@example.com"], b"Subject: Hi\r\n\r\nHi\r\n"
        )

    session = smtpsink.sessions[0]
    assert session.commands == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
    # The final reply code of every exchange: greeting, EHLO, MAIL, RCPT,
    # DATA, end of data, QUIT.
    assert session.codes == [220, 250, 250, 250, 354, 250, 221]
    assert session.used("quit")
    assert not session.used("STARTTLS")
    assert session.before("EHLO", "MAIL")


def test_transcript(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as smtp:
        smtp.ehlo("client.example.com")
        smtp.sendmail(
            "app@example.com", ["ann@example.com"], b"Subject: Hi\r\n\r\nHi\r\n"
        )

    session = smtpsink.sessions[0]
    greeting, ehlo, mail, rcpt, data, content, quit_ = session.transcript

    assert greeting.kind == "greeting"
    assert greeting.code == 220
    assert ehlo.command == "EHLO"
    assert ehlo.argument == "client.example.com"
    assert "250 HELP" in ehlo.replies  # a multi-line reply keeps every line
    assert mail.command == "MAIL"
    # line and argument are as the client sent them (smtplib's case varies
    # between Python versions: "mail FROM:" or "mail from:").
    assert mail.argument.lower() == "from:<app@example.com> size=19"
    assert (rcpt.command, rcpt.code, rcpt.reply) == ("RCPT", 250, "OK")
    assert data.code == 354
    assert content.kind == "data"  # the message itself is not repeated...
    assert content.line == "<message content: 19 bytes>"  # ...only its size
    assert quit_.lines() == ["C: QUIT", "S: 221 Bye"]

    # format_transcript(), and the repr of a Session, read like an RFC example.
    assert "<ann@example.com>\nS: 250 OK" in session.format_transcript()


@pytest.mark.smtpsink(max_recipients=1)
def test_refused_recipient(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as smtp:
        refused = smtp.sendmail(
            "app@example.com",
            ["ann@example.com", "bob@example.com"],
            b"Subject: Hi\r\n\r\nHi\r\n",
        )

    assert list(refused) == ["bob@example.com"]
    msg = smtpsink.assert_sent(rcpt_to="ann@example.com")
    assert msg.envelope.rcpt_to == ("ann@example.com",)  # accepted recipients only

    first, second = msg.session.replies_to("RCPT")
    assert first.code == 250
    assert second.argument.lower() == "to:<bob@example.com>"
    assert second.code == 452


def test_sessions_without_mail_are_kept(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as smtp:
        smtp.ehlo("prober.example.com")
        smtp.noop()

    smtpsink.assert_nothing_sent()
    (session,) = smtpsink.sessions
    assert session.commands == ["EHLO", "NOOP", "QUIT"]
    assert session.messages == ()


@pytest.mark.smtpsink(auth={"ann": "s3cret"}, auth_plaintext=True)
def test_auth_secrets_are_masked(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as smtp:
        smtp.login("ann", "s3cret")
        smtp.sendmail(
            "ann@example.com", ["bob@example.com"], b"Subject: Hi\r\n\r\nHi\r\n"
        )

    session = smtpsink.sessions[0]
    assert session.authenticated_as == "ann"
    assert session.auth is not None
    assert session.auth.success
    assert session.before("AUTH", "MAIL")

    transcript = session.format_transcript()
    assert "C: ****" in transcript  # what the client answered is masked
    assert "s3cret" not in transcript
    assert "s3cret" not in repr(session)


def test_wait_until_the_session_ends(smtpsink):
    client = socket.create_connection((smtpsink.host, smtpsink.port))
    with client:
        client.recv(1024)  # the 220 greeting
        client.sendall(b"EHLO dropper.example.com\r\n")
        client.recv(1024)
    # The client hung up without QUIT; the server notices a moment later.
    smtpsink.wait_until(lambda: smtpsink.sessions[-1].end is not None, timeout=5)
    session = smtpsink.sessions[-1]
    assert session.end == "client-closed"
    assert not session.used("QUIT")


def test_delivery_status_notifications(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("DSN")
        smtp.mail("app@example.com", ["RET=HDRS", "ENVID=order-42"])
        smtp.rcpt("ann@example.com", ["NOTIFY=SUCCESS,FAILURE"])
        smtp.rcpt("bob@example.com", ["NOTIFY=NEVER", "ORCPT=rfc822;bob@example.com"])
        smtp.data(b"Subject: Your order\r\n\r\nShipped.\r\n")

    envelope = smtpsink.assert_sent(subject="Your order").envelope
    assert envelope.dsn_ret == "HDRS"
    assert envelope.dsn_envid == "order-42"
    ann, bob = envelope.rcpt_dsn  # one per RCPT TO, in order
    assert ann.notify == ("SUCCESS", "FAILURE")
    assert ann.orcpt is None
    assert bob.notify == ("NEVER",)
    assert bob.orcpt == "rfc822;bob@example.com"

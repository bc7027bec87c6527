"""The POP3 examples of the "Testing applications that read mail" page."""

from __future__ import annotations

import poplib
import smtplib

import pytest


def fetch_and_delete(host, port, user, password):
    """A stand-in for the application under test: a POP3 fetcher that
    reads every new message, keeps its subject and deletes it."""
    client = poplib.POP3(host, port, timeout=10)
    try:
        client.user(user)
        client.pass_(password)
        subjects = []
        for number in range(1, client.stat()[0] + 1):
            lines = client.retr(number)[1]
            subject = next(line for line in lines if line.startswith(b"Subject:"))
            subjects.append(subject[9:].decode())
            client.dele(number)
    finally:
        client.quit()  # the deletions happen here, at QUIT
    return subjects


def test_sent_over_smtp_read_over_pop3(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as smtp:
        smtp.sendmail(
            "shop@example.com",
            ["ann@example.com"],
            "Subject: Your order\r\n\r\nThank you!\r\n",
        )

    pop3 = smtpsink.pop3
    assert fetch_and_delete(pop3.host, pop3.port, "ann@example.com", "any") == [
        "Your order"
    ]
    smtpsink.mailbox("ann@example.com").assert_deleted(subject="Your order")


def test_seeded_mail_is_fetched_and_deleted(smtpsink):
    smtpsink.deliver(
        b"Subject: Ticket 1\r\n\r\nPrinter on fire\r\n", to="help@example.com"
    )
    smtpsink.deliver(b"Subject: Ticket 2\r\n\r\nNo paper\r\n", to="help@example.com")

    pop3 = smtpsink.pop3
    fetched = fetch_and_delete(pop3.host, pop3.port, "help@example.com", "any")

    assert fetched == ["Ticket 1", "Ticket 2"]
    mailbox = smtpsink.mailbox("help@example.com")
    assert mailbox.messages() == []
    assert [m.subject for m in mailbox.deleted()] == ["Ticket 1", "Ticket 2"]


@pytest.mark.smtpsink(tls="starttls", auth={"help@example.com": "s3cret"})
def test_pop3_over_stls_with_a_password(smtpsink):
    smtpsink.deliver(b"Subject: Hello\r\n\r\nHi\r\n", to="help@example.com")
    pop3 = smtpsink.pop3

    client = poplib.POP3(pop3.host, pop3.port, timeout=10)
    client.stls(context=pop3.ssl_context())  # verifies the sink's certificate
    client.user("help@example.com")
    client.pass_("s3cret")
    assert client.stat()[0] == 1
    client.quit()

    session = smtpsink.sessions[-1]
    assert session.protocol == "POP3"
    assert session.before("STLS", "PASS")
    assert "PASS ****" in session.format_transcript()  # never the password


def test_a_fetcher_survives_a_broken_message(smtpsink):
    smtpsink.deliver(b"Subject: A\r\n\r\na\r\n", to="help@example.com")
    smtpsink.fail("POP3:RETR", 550, "message unreadable", times=1)

    pop3 = smtpsink.pop3
    with pytest.raises(poplib.error_proto, match=r"\[SYS/PERM\] message unreadable"):
        fetch_and_delete(pop3.host, pop3.port, "help@example.com", "any")

    # Nothing was deleted: the fetcher quit before DELE.
    smtpsink.mailbox("help@example.com").assert_in(subject="A", flags=())

"""Examples of docs/reading.rst, IMAP section: they run as tests."""

from __future__ import annotations

import imaplib
import smtplib

from pytest_smtpsink import Mailbox


def fetch_new_invoices(host: str, port: int) -> list[bytes]:
    """The application under test: read unseen mail, file invoices, delete
    the rest."""
    found = []
    with imaplib.IMAP4(host, port) as imap:
        imap.login("billing@example.com", "any password")
        imap.create("Invoices")
        imap.select("INBOX")
        _, data = imap.uid("SEARCH", "UNSEEN")
        for uid in data[0].split():
            _, fetched = imap.uid("FETCH", uid, "(RFC822)")  # sets \Seen
            raw = fetched[0][1]
            if b"Subject: Invoice" in raw:
                found.append(raw)
                imap.uid("MOVE", uid, "Invoices")
            else:
                imap.uid("STORE", uid, "+FLAGS", r"(\Deleted)")
        imap.expunge()
        imap.logout()
    return found


def test_the_app_files_invoices_and_deletes_the_rest(smtpsink: Mailbox) -> None:
    smtpsink.deliver(
        "From: shop@example.org\nSubject: Invoice 42\n\nPay.\n",
        to="billing@example.com",
    )
    smtpsink.deliver(
        "From: spam@example.net\nSubject: You won\n\nClick.\n",
        to="billing@example.com",
    )

    invoices = fetch_new_invoices(smtpsink.imap.host, smtpsink.imap.port)

    assert len(invoices) == 1
    box = smtpsink.mailbox("billing@example.com")
    box.assert_in("Invoices", subject="Invoice 42", flags={"\\Seen"})
    box.assert_deleted(subject="You won")
    assert box.messages("INBOX") == []


def test_idle_wakes_when_mail_arrives(smtpsink: Mailbox) -> None:
    with imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port) as imap:
        imap.login("ann@example.com", "any password")
        imap.select("INBOX")
        tag = imap._new_tag().decode()  # imaplib has no IDLE before 3.14
        imap.send(f"{tag} IDLE\r\n".encode())
        assert imap.readline() == b"+ idling\r\n"
        with smtplib.SMTP(smtpsink.host, smtpsink.port) as smtp:
            smtp.sendmail(
                "app@example.com", ["ann@example.com"], b"Subject: Hi\r\n\r\nx\r\n"
            )
        assert imap.readline() == b"* 1 EXISTS\r\n"  # at once: no polling
        imap.send(b"DONE\r\n")
        imap.logout()


def test_a_client_told_bye_at_idle(smtpsink: Mailbox) -> None:
    # IDLE outlasts idle_timeout; a fault sends the BYE that a client's
    # reconnect logic is there for.
    smtpsink.fail("IMAP:IDLE", 421, "Restarting")
    imap = imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port)
    try:
        imap.login("ann@example.com", "any password")
        imap.select("INBOX")
        tag = imap._new_tag().decode()
        imap.send(f"{tag} IDLE\r\n".encode())
        assert imap.readline() == b"* BYE [UNAVAILABLE] Restarting\r\n"
        assert imap.readline() == b""  # the server closed the connection
    finally:
        imap.shutdown()  # not logout(): there is no one left to answer it

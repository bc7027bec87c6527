"""The examples of the "Testing applications that read mail" page, run as
tests."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
from email.message import EmailMessage

from ticket_app import fetch_tickets


def test_send_then_read(smtpsink):
    # The application sends over SMTP; the recipient reads over POP3.
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            "app@example.com",
            ["ann@example.com", "audit@example.com"],  # audit@ is a Bcc
            b"From: app@example.com\r\nTo: ann@example.com\r\n"
            b"Subject: Your invoice\r\n\r\nPlease find it attached.\r\n",
        )

    pop = poplib.POP3(smtpsink.pop3.host, smtpsink.pop3.port)
    pop.user("audit@example.com")
    pop.pass_("any password")
    count, octets = pop.stat()
    assert (count, octets) == (1, 95)
    assert b"Subject: Your invoice" in pop.retr(1)[1]
    pop.quit()


def test_seed_then_the_app_reads(smtpsink):
    smtpsink.deliver(
        b"From: Carl <carl@example.net>\r\nTo: help@example.com\r\n"
        b"Subject: Printer on fire\r\n\r\nSend help.\r\n"
    )
    smtpsink.deliver(
        b"From: noreply@example.net\r\nTo: help@example.com\r\n\r\nNo subject.\r\n"
    )

    tickets = fetch_tickets(
        smtpsink.pop3.host, smtpsink.pop3.port, "help@example.com", "secret"
    )

    assert [t.subject for t in tickets] == ["Printer on fire"]
    box = smtpsink.mailbox("help@example.com")
    box.assert_deleted(subject="Printer on fire")
    box.assert_in("INBOX", from_="noreply@example.net")  # left for a person


def test_a_bcc_header_is_kept_unless_left_out(smtpsink):
    sent = EmailMessage()
    sent["From"] = "ann@example.com"
    sent["To"] = "bob@example.com"
    sent["Bcc"] = "audit@example.com"
    sent["Subject"] = "Quarterly report"
    sent.set_content("Attached.")
    # Ann's Sent copy, as her mail client stored it: with its Bcc.
    smtpsink.deliver(sent, to="ann@example.com", folder="Sent")
    # What Bob and the auditor got: smtplib's send_message leaves Bcc out.
    del sent["Bcc"]
    smtpsink.deliver(sent, to=["bob@example.com", "audit@example.com"])

    imap = imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port)
    imap.login("audit@example.com", "any password")
    imap.select("INBOX")
    header = imap.fetch("1", "(BODY.PEEK[HEADER])")[1][0][1]
    assert b"Bcc:" not in header
    imap.logout()
    sent_copy = smtpsink.mailbox("ann@example.com").messages("Sent")[0]
    assert sent_copy.bcc == ["audit@example.com"]


def test_a_reader_in_the_background(smtpsink):
    import threading

    def triage(host, port):
        """The application's poller, one round: move mail about invoices."""
        client = imaplib.IMAP4(host, port)
        try:
            client.login("help@example.com", "secret")
            client.create("Invoices")
            client.select("INBOX")
            _, found = client.uid("SEARCH", "SUBJECT", "invoice")
            for uid in found[0].split():
                client.uid("MOVE", uid, "Invoices")
        finally:
            client.logout()

    smtpsink.deliver(
        b"Subject: Your invoice\r\n\r\nAttached.\r\n", to="help@example.com"
    )
    worker = threading.Thread(
        target=triage, args=(smtpsink.imap.host, smtpsink.imap.port)
    )
    worker.start()

    box = smtpsink.mailbox("help@example.com")
    smtpsink.wait_until(lambda: box.assert_in("Invoices", subject="Your invoice"))

    worker.join()

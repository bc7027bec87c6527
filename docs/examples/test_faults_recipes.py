"""The recipes of the "Simulating failures" page, one fault each."""

from __future__ import annotations

import re
import smtplib

import pytest

BODY = "Subject: Your order\r\n\r\nThank you!\r\n"


def test_partial_delivery(smtpsink):
    smtpsink.fail("RCPT", 550, "5.1.1 No such user", match="bob@example.com")

    with smtplib.SMTP(smtpsink.host, smtpsink.port) as smtp:
        refused = smtp.sendmail(
            "shop@example.com", ["ann@example.com", "bob@example.com"], BODY
        )

    # smtplib reports the refused recipients and delivers to the others.
    assert refused == {"bob@example.com": (550, b"5.1.1 No such user")}
    assert smtpsink.assert_sent().envelope.rcpt_to == ("ann@example.com",)


def test_all_recipients_refused(smtpsink):
    smtpsink.fail("RCPT", 550, match=re.compile(r"@gone\.example$"))

    with (
        smtplib.SMTP(smtpsink.host, smtpsink.port) as smtp,
        pytest.raises(smtplib.SMTPRecipientsRefused),
    ):
        smtp.sendmail("shop@example.com", ["x@gone.example"], BODY)

    smtpsink.assert_not_sent()


def test_greylisting(smtpsink):
    greylist = smtpsink.fail("MAIL", 451, "4.7.1 Greylisted, try again later", times=2)

    attempts = 0
    while True:
        attempts += 1
        try:
            with smtplib.SMTP(smtpsink.host, smtpsink.port) as smtp:
                smtp.sendmail("shop@example.com", ["ann@example.com"], BODY)
            break
        except smtplib.SMTPSenderRefused as error:
            deferred = error
        assert deferred.smtp_code == 451
        assert attempts < 5

    assert attempts == 3
    assert greylist.fired == 2
    smtpsink.assert_sent(1)


def test_bounce_after_data(smtpsink):
    smtpsink.fail(
        "EOD",
        554,
        "5.7.1 Message rejected as spam\n5.7.1 See https://mx.example.com/why",
    )

    with (
        smtplib.SMTP(smtpsink.host, smtpsink.port) as smtp,
        pytest.raises(smtplib.SMTPDataError) as bounce,
    ):
        smtp.sendmail("shop@example.com", ["ann@example.com"], BODY)

    assert bounce.value.smtp_code == 554
    assert b"rejected as spam" in bounce.value.smtp_error
    smtpsink.assert_not_sent()  # a refused message is not kept


def test_timeout(smtpsink):
    smtpsink.delay("MAIL", seconds=60)  # far longer than the client waits

    smtp = smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=30)
    try:
        smtp.ehlo()
        smtp.sock.settimeout(0.3)  # the app's read timeout, from here on
        with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
            smtp.sendmail("shop@example.com", ["ann@example.com"], BODY)
    finally:
        smtp.close()


def test_hang(smtpsink):
    smtpsink.hang("DATA")  # never answers; released when the test ends

    smtp = smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=30)
    try:
        smtp.ehlo()
        smtp.mail("shop@example.com")
        smtp.rcpt("ann@example.com")
        smtp.sock.settimeout(0.3)  # the app's read timeout, from here on
        with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
            smtp.docmd("DATA")
    finally:
        smtp.close()
    smtpsink.assert_not_sent()


def test_connection_dropped(smtpsink):
    smtpsink.disconnect("EOD")  # after the whole message, before the reply

    smtp = smtplib.SMTP(smtpsink.host, smtpsink.port)
    try:
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.sendmail("shop@example.com", ["ann@example.com"], BODY)
    finally:
        smtp.close()

    smtpsink.assert_not_sent()
    assert smtpsink.sessions[0].end == "server-closed"


def send_with_one_retry(host, port):
    """What many applications do: try again when the connection drops."""
    for attempt in (1, 2):
        try:
            with smtplib.SMTP(host, port) as smtp:
                smtp.sendmail("shop@example.com", ["ann@example.com"], BODY)
            return attempt
        except smtplib.SMTPServerDisconnected:
            if attempt == 2:
                raise
    return None


def test_reply_lost_after_storing(smtpsink):
    # Stored, then the connection drops before the 250 (RFC 1047).
    smtpsink.disconnect("EOD", store=True, times=1)

    assert send_with_one_retry(smtpsink.host, smtpsink.port) == 2

    # The retry delivered the order confirmation twice.
    first, second = smtpsink.assert_sent(count=2)
    assert first.subject == second.subject == "Your order"


def test_black_hole(smtpsink):
    smtpsink.drop(match="archive@example.com")

    with smtplib.SMTP(smtpsink.host, smtpsink.port) as smtp:
        assert smtp.sendmail("shop@example.com", ["archive@example.com"], BODY) == {}

    smtpsink.assert_not_sent()  # accepted with 250, kept nowhere


def test_server_unavailable(smtpsink):
    smtpsink.fail("CONNECT", 421, "4.3.2 Down for maintenance")

    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP(smtpsink.host, smtpsink.port)
    assert refused.value.smtp_code == 421


def test_recipient_limit(smtpsink):
    smtpsink.limit(max_recipients=2)

    with smtplib.SMTP(smtpsink.host, smtpsink.port) as smtp:
        refused = smtp.sendmail(
            "shop@example.com",
            ["a@example.com", "b@example.com", "c@example.com"],
            BODY,
        )

    assert refused == {"c@example.com": (452, b"4.5.3 Too many recipients (at most 2)")}


def test_hidden_extension(smtpsink):
    smtpsink.hide("SIZE", "SMTPUTF8")

    with smtplib.SMTP(smtpsink.host, smtpsink.port) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("size")
        assert not smtp.has_extn("smtputf8")


def test_every_third_and_random(smtpsink):
    smtpsink.fail("RCPT", 452, every=3)
    # Or at random, replayable: the same seed refuses the same recipients.
    # smtpsink.fail("RCPT", 451, probability=0.2, seed=1234)

    recipients = [f"user{n}@example.com" for n in range(1, 7)]
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as smtp:
        refused = smtp.sendmail("shop@example.com", recipients, BODY)

    assert sorted(refused) == ["user3@example.com", "user6@example.com"]


@pytest.mark.smtpsink_fault("fail", "MAIL", 451, times=1)
@pytest.mark.smtpsink_fault("fail", "RCPT", 550, match="bob@example.com")
def test_marker(smtpsink):
    assert len(smtpsink.faults) == 2
    with (
        smtplib.SMTP(smtpsink.host, smtpsink.port) as smtp,
        pytest.raises(smtplib.SMTPSenderRefused),
    ):
        smtp.sendmail("shop@example.com", ["ann@example.com"], BODY)


def test_transcript_shows_injected_replies(smtpsink):
    smtpsink.fail("RCPT", 550, "5.1.1 No such user", match="bob@example.com")
    with smtplib.SMTP(
        smtpsink.host, smtpsink.port, local_hostname="shop.example.com"
    ) as smtp:
        smtp.sendmail("shop@example.com", ["ann@example.com", "bob@example.com"], BODY)

    session = smtpsink.sessions[0]
    (injected,) = [exchange for exchange in session.transcript if exchange.injected]
    assert injected.command == "RCPT"
    assert injected.code == 550
    assert "S: 550 5.1.1 No such user  [injected]" in session.format_transcript()

"""The examples of the "Asserting on email" page."""

from __future__ import annotations

import asyncio
import re
import smtplib

import pytest
from signup_app import SignupApp

from pytest_smtpsink import Mailbox


@pytest.fixture
def app(smtpsink):
    return SignupApp(smtp_host=smtpsink.host, smtp_port=smtpsink.port)


def test_assert_sent(app, smtpsink):
    app.signup("ann@example.com")
    app.signup("bob@example.com")

    # At least one match: returns the latest matching message.
    msg = smtpsink.assert_sent(to="ann@example.com")
    assert msg.subject == "Welcome to Example App"

    # An exact count: count=1 returns the message, count=N a Messages sequence.
    both = smtpsink.assert_sent(2, subject="Welcome to Example App")
    assert [m.to[0] for m in both] == ["ann@example.com", "bob@example.com"]


def test_assert_not_sent(app, smtpsink):
    app.signup("ann@example.com")

    smtpsink.assert_not_sent(to="bob@example.com")
    smtpsink.assert_not_sent(subject=re.compile("(?i)password reset"))


def test_assert_nothing_sent(smtpsink):
    smtpsink.assert_nothing_sent()  # nothing arrived so far
    smtpsink.assert_nothing_sent(within=0.2)  # ... nor in the next 0.2 s


def test_failure_lists_what_arrived(app, smtpsink):
    app.signup("ann@example.com")

    with pytest.raises(AssertionError) as failure:
        smtpsink.assert_sent(to="bob@example.com")

    report = str(failure.value)
    assert report.startswith(
        "expected at least 1 message matching to='bob@example.com'; found 0."
    )
    assert "Messages that arrived in this test (1):" in report
    assert "to: wanted 'bob@example.com', got ['ann@example.com']" in report


def test_bcc_lives_in_the_envelope(app, smtpsink):
    app.signup("ann@example.com", bcc="audit@example.com")

    msg = smtpsink.assert_sent(rcpt_to="audit@example.com")
    assert "audit@example.com" in msg.envelope.rcpt_to
    assert msg.envelope.rcpt_to == ["ann@example.com", "audit@example.com"]
    assert "audit@example.com" not in msg.to  # not in any header
    assert msg.bcc == []  # smtplib's send_message() drops the Bcc header
    smtpsink.assert_not_sent(to="audit@example.com")


def test_wait_for_background_mail(app, smtpsink):
    thread = app.signup_in_background("ann@example.com", delay=0.2)

    # Returns the moment the message is stored; fails after the timeout.
    msg = smtpsink.wait_for(to="ann@example.com", timeout=5)
    assert msg.code() == "482913"
    thread.join()


def test_wait_for_several(app, smtpsink):
    threads = [
        app.signup_in_background(f"user{i}@example.com", delay=0.05 * i)
        for i in range(3)
    ]

    messages = smtpsink.wait_for(3, subject="Welcome to Example App")
    assert len(messages) == 3
    for thread in threads:
        thread.join()


async def signup_and_wait(app, smtpsink):
    # The app's blocking send runs in a worker thread; the event loop
    # keeps running while wait_for_async waits.
    sending = asyncio.get_running_loop().run_in_executor(
        None, app.signup, "ann@example.com"
    )
    msg = await smtpsink.wait_for_async(to="ann@example.com", timeout=5)
    await sending
    return msg


def test_wait_for_async(app, smtpsink):
    msg = asyncio.run(signup_and_wait(app, smtpsink))
    assert msg.link(text="confirm") == "https://app.example.com/confirm/482913"


def test_queries(app, smtpsink):
    app.signup("ann@example.com")
    app.signup("bob@example.com")
    app.send_invoice("ann@example.com", b"%PDF-1.4 ...")

    messages = smtpsink.messages  # an ordered, read-only snapshot
    assert len(messages) == 3
    assert messages.first().to == ("ann@example.com",)
    assert messages.last().subject == "Your invoice"
    assert messages[1].to[0] == "bob@example.com"

    to_ann = messages.filter(to="ann@example.com")
    assert [m.subject for m in to_ann] == ["Welcome to Example App", "Your invoice"]

    invoice = messages.one(attachment="invoice.pdf")  # exactly one, else fails
    assert invoice.from_ == "billing@app.example.com"


def test_criteria(app, smtpsink):
    app.signup("Ann@Example.COM")
    app.send_invoice("bob@example.com", b"%PDF-1.4 ...")

    # str: equality for addresses (display name and domain case ignored)
    # and subjects; "contains" for text, html and body.
    smtpsink.assert_sent(to="Ann <Ann@example.com>", text="Confirm your address")
    smtpsink.assert_sent(
        from_="noreply@app.example.com", subject="Welcome to Example App"
    )
    smtpsink.assert_sent(html='<a href="https://app.example.com/confirm/')

    # A compiled regex: search (addresses in their normalized form:
    # no display name, domain in lower case).
    smtpsink.assert_sent(
        subject=re.compile(r"^Welcome"), to=re.compile(r"@example\.com$")
    )

    # body= matches the text part or the HTML part.
    smtpsink.assert_sent(body="Confirm your address")  # in both
    smtpsink.assert_sent(body=re.compile(r"<b>\d{6}</b>"))  # only in the HTML

    # A callable: a predicate on the field's value.
    smtpsink.assert_sent(to=lambda addresses: len(addresses) == 1)
    smtpsink.assert_sent(subject=lambda subject: subject.endswith("invoice"))

    # Headers by name; attachments by filename, content type, bytes or predicate.
    smtpsink.assert_sent(header={"Content-Type": re.compile("multipart/alternative")})
    smtpsink.assert_sent(attachment="application/pdf")
    smtpsink.assert_sent(attachment=b"%PDF-1.4 ...")
    smtpsink.assert_sent(attachment=lambda a: a.size < 1024)

    # Envelope side: what the client said in MAIL FROM / RCPT TO.
    smtpsink.assert_sent(mail_from="billing@app.example.com", rcpt_to="bob@example.com")


def test_unknown_criterion_is_a_type_error(smtpsink):
    with pytest.raises(TypeError, match="use from_="):
        smtpsink.assert_sent(**{"from": "ann@example.com"})


def test_message_helpers(app, smtpsink):
    app.signup("ann@example.com")
    app.send_invoice("ann@example.com", b"%PDF-1.4 ...")
    welcome, invoice = smtpsink.messages

    # Every http(s) link in the HTML and the text, de-duplicated, in order.
    assert welcome.links() == [
        "https://app.example.com/confirm/482913",
        "https://app.example.com/help",
    ]
    # The first link that contains a string, matches a pattern, or whose
    # anchor text contains a string.
    assert welcome.link("/confirm/") == "https://app.example.com/confirm/482913"
    assert welcome.link(pattern=r"/help$") == "https://app.example.com/help"
    assert welcome.link(text="Confirm your") == "https://app.example.com/confirm/482913"

    # A one-time code: by default the first 4 to 8 digit number standing alone.
    assert welcome.code() == "482913"
    assert welcome.code(pattern=r"confirm/(\d+)") == "482913"

    # An attachment by file name, decoded to bytes.
    pdf = invoice.attachment("invoice.pdf")
    assert pdf.content == b"%PDF-1.4 ..."
    assert pdf.content_type == "application/pdf"
    with pytest.raises(AssertionError, match=r"no attachment named 'receipt\.pdf'"):
        invoice.attachment("receipt.pdf")


def test_plain_assert(smtpsink: Mailbox) -> None:
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            "shop@example.com",
            ["ann@example.com"],
            b"To: Ann <ann@Example.COM>\r\nSubject: Receipt\r\n\r\nThanks!\r\n",
        )

    (msg,) = smtpsink.messages
    assert msg.to == ["ann@example.com"]
    assert msg.to[0].name == "Ann"
    assert msg.subject == "Receipt"
    assert msg.text == "Thanks!\n"

"""The examples of the "Checking how mail is built" page."""

from __future__ import annotations

import smtplib

import pytest
from mailer_app import Mailer
from spamd_fixture import spamd  # noqa: F401 (a fixture)


def test_password_reset_is_well_built(smtpsink):
    Mailer(smtpsink.host, smtpsink.port).password_reset("ann@example.com")

    # Each problem has a stable code, a severity, a sentence and a place.
    message = smtpsink.assert_sent(subject="Reset your password")
    assert message.lint() == []

    # Or for every message of the test, failing with the list of problems:
    smtpsink.assert_clean()  # errors only; severity="warning" is stricter


def test_lint_explains_what_is_wrong(smtpsink):
    # What a hand-rolled mailer might send: raw UTF-8 in the Subject, no
    # Date, no Message-ID.
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            "noreply@shop.example",
            ["ann@example.com"],
            b"From: noreply@shop.example\r\nTo: ann@example.com\r\n"
            b"Subject: Caf\xc3\xa9\r\n\r\n<p>Reset your password</p>\r\n",
        )

    problems = smtpsink.assert_sent().lint()
    assert [p.code for p in problems] == [
        "raw-8bit-header",
        "missing-date",
        "missing-message-id",
    ]
    assert str(problems[0]) == (
        "error raw-8bit-header (header Subject, line 3): raw non-ASCII bytes in "
        "a header, but the client did not use SMTPUTF8; encode the text as "
        "RFC 2047 encoded words (=?utf-8?...?=)"
    )


def test_the_dkim_signature_verifies(smtpsink):
    # A key pair for the test; the public half is published to the verifier.
    private_key = smtpsink.dkim_key("shop.example", selector="mail")
    mailer = Mailer(smtpsink.host, smtpsink.port, dkim_key=private_key)

    mailer.password_reset("ann@example.com")

    [signature] = smtpsink.assert_sent().dkim
    assert signature.verified, signature.reason
    assert (signature.domain, signature.selector) == ("shop.example", "mail")


@pytest.mark.smtpsink(tls="starttls")
def test_the_newsletter_meets_the_bulk_sender_rules(smtpsink):
    private_key = smtpsink.dkim_key("shop.example", selector="mail")
    mailer = Mailer(
        smtpsink.host, smtpsink.port, dkim_key=private_key, tls=smtpsink.ssl_context()
    )

    mailer.newsletter("ann@example.com")

    assert smtpsink.assert_sent().bulk_sender_problems() == []
    smtpsink.assert_bulk_sender_rules()  # the same, for every message
    smtpsink.assert_clean()  # and RFC 5322 format, which Gmail asks for too


@pytest.mark.usefixtures("spamd")
def test_the_newsletter_is_not_spam(smtpsink):
    # The "spamd" fixture starts a real spamd for this page; in your suite,
    # --smtpsink-spamd=HOST:PORT (ini: smtpsink_spamd) names a running one.
    Mailer(smtpsink.host, smtpsink.port).newsletter("ann@example.com")

    report = smtpsink.assert_sent().spam_report()
    assert not report.is_spam, report
    smtpsink.assert_not_spam(max_score=3.0)

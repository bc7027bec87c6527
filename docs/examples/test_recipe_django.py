"""Recipe: Django's SMTP email backend, sending to the sink."""

from __future__ import annotations

import pytest

pytest.importorskip("django")

import django
from django.conf import settings
from django.core import mail
from django.test.utils import override_settings

if not settings.configured:
    # Only to keep this file self-contained: a real project has a settings
    # module (and, usually, pytest-django, which configures Django for you).
    settings.configure()

SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
# Django 6.1 moved mail configuration into MAILERS; the EMAIL_* settings
# still work there but are deprecated.
OLD_NAMES = {
    "host": "EMAIL_HOST",
    "port": "EMAIL_PORT",
    "username": "EMAIL_HOST_USER",
    "password": "EMAIL_HOST_PASSWORD",
    "use_tls": "EMAIL_USE_TLS",
    "use_ssl": "EMAIL_USE_SSL",
    "timeout": "EMAIL_TIMEOUT",
}


def sink_mail_settings(smtpsink, **options):
    """Settings that make Django's real SMTP backend send to the sink.

    ``options`` are the SMTP backend's: use_tls, use_ssl, username, password,
    timeout.
    """
    options = {"host": smtpsink.host, "port": smtpsink.port, **options}
    if django.VERSION >= (6, 1):
        return {"MAILERS": {"default": {"BACKEND": SMTP_BACKEND, "OPTIONS": options}}}
    return {"EMAIL_BACKEND": SMTP_BACKEND} | {
        OLD_NAMES[name]: value for name, value in options.items()
    }


@pytest.fixture
def django_smtpsink(smtpsink):
    """Django's real SMTP backend, pointed at the sink for one test.

    override_settings also beats the in-memory backend that Django's test
    runner and pytest-django install.
    """
    with override_settings(**sink_mail_settings(smtpsink)):
        yield smtpsink


def test_password_reset_mail(django_smtpsink):
    mail.send_mail(
        "Reset your password",
        "Follow https://example.com/reset/abc123 within an hour.",
        "noreply@example.com",
        ["ann@example.com"],
    )

    msg = django_smtpsink.assert_sent(
        to="ann@example.com", subject="Reset your password"
    )
    assert msg.link(contains="/reset/") == "https://example.com/reset/abc123"


def test_html_attachment_and_bcc(django_smtpsink):
    email = mail.EmailMultiAlternatives(
        subject="Your invoice",
        body="Your invoice is attached.",
        from_email="billing@example.com",
        to=["ann@example.com"],
        bcc=["audit@example.com"],
    )
    email.attach_alternative("<p>Your <b>invoice</b> is attached.</p>", "text/html")
    email.attach("invoice.pdf", b"%PDF-1.4 fake", "application/pdf")
    email.send()

    msg = django_smtpsink.assert_sent(subject="Your invoice")
    assert "<b>invoice</b>" in msg.html
    assert msg.attachment("invoice.pdf").content == b"%PDF-1.4 fake"
    # Bcc exists only in the envelope: Django does not write it in the headers.
    assert "audit@example.com" in msg.envelope.rcpt_to
    assert msg.bcc == ()

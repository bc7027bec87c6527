"""Recipe: Django's SMTP email backend, sending to the sink."""

from __future__ import annotations

import pytest

pytest.importorskip("django")

import django
from django.conf import settings
from django.core import mail
from django.test import SimpleTestCase
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
    "ssl_certfile": "EMAIL_SSL_CERTFILE",
    "ssl_keyfile": "EMAIL_SSL_KEYFILE",
}
# Before 6.1 each EMAIL_* setting that is not overridden keeps the project's
# own value: production's EMAIL_USE_TLS = True or login would reach the
# sink (which then refuses STARTTLS or AUTH). MAILERS replaces them all at
# once; these defaults do the same for the old names.
NO_TLS_NO_LOGIN = {
    "use_tls": False,
    "use_ssl": False,
    "username": "",
    "password": "",
    "timeout": None,
    "ssl_certfile": None,
    "ssl_keyfile": None,
}


def sink_mail_settings(smtpsink, **options):
    """Settings that make Django's real SMTP backend send to the sink.

    ``options`` are the SMTP backend's: use_tls, use_ssl, username, password,
    timeout, ssl_certfile, ssl_keyfile. Those not given are off, whatever
    the project's settings say.
    """
    options = {"host": smtpsink.host, "port": smtpsink.port, **options}
    if django.VERSION >= (6, 1):
        return {"MAILERS": {"default": {"BACKEND": SMTP_BACKEND, "OPTIONS": options}}}
    return {"EMAIL_BACKEND": SMTP_BACKEND} | {
        OLD_NAMES[name]: value for name, value in (NO_TLS_NO_LOGIN | options).items()
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


class WelcomeMailTests(SimpleTestCase):
    """A Django test class (TestCase, SimpleTestCase): pytest does not pass
    fixtures to its methods, but runs its autouse fixtures, which can."""

    @pytest.fixture(autouse=True)
    def _smtpsink(self, django_smtpsink):
        self.smtpsink = django_smtpsink

    def test_welcome_mail(self):
        mail.send_mail(
            "Welcome", "Hello Ann.", "noreply@example.com", ["ann@example.com"]
        )

        self.smtpsink.assert_sent(to="ann@example.com", subject="Welcome")


def production_mail_settings():
    """What a project's settings module typically holds for its real
    provider: STARTTLS and a login."""
    options = {
        "host": "smtp.provider.example",
        "port": 587,
        "use_tls": True,
        "username": "apikey",
        "password": "production-secret",
    }
    if django.VERSION >= (6, 1):
        return {"MAILERS": {"default": {"BACKEND": SMTP_BACKEND, "OPTIONS": options}}}
    return {"EMAIL_BACKEND": SMTP_BACKEND} | {
        OLD_NAMES[name]: value for name, value in options.items()
    }


def test_production_tls_and_login_do_not_reach_the_sink(smtpsink):
    # The sink offers neither STARTTLS nor AUTH: the project's own TLS and
    # login settings must not survive the override.
    with (
        override_settings(**production_mail_settings()),
        override_settings(**sink_mail_settings(smtpsink)),
    ):
        mail.send_mail("Hi", "Hello.", "app@example.com", ["ann@example.com"])

    session = smtpsink.assert_sent(subject="Hi").session
    assert session.tls is None
    assert session.authenticated_as is None

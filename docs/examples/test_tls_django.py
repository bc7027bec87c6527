"""The Django example of the "TLS and authentication" page.

Skipped when Django is not installed. Django's SMTP backend has no setting
for a CA file: without EMAIL_SSL_CERTFILE it verifies the server with
``ssl.create_default_context()``, which honours ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import pytest

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402
from django.core.mail import send_mail  # noqa: E402
from django.test import override_settings  # noqa: E402
from test_recipe_django import sink_mail_settings  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _django_settings():
    # A Django project already has settings (and with pytest-django a
    # ``settings`` fixture that can replace override_settings below).
    if not settings.configured:
        settings.configure()


def test_django_starttls(smtpsink_factory, monkeypatch):
    sink = smtpsink_factory(
        tls="starttls-required", auth={"app": "app-password"}, auth_required=True
    )
    # Before Django opens the connection: the backend builds its context then.
    monkeypatch.setenv("SSL_CERT_FILE", sink.ca_path)
    # sink_mail_settings (see Recipes) gives EMAIL_HOST, EMAIL_PORT,
    # EMAIL_USE_TLS ... before Django 6.1 and the MAILERS setting from 6.1.
    mail_settings = sink_mail_settings(
        sink,
        use_tls=True,  # STARTTLS; use_ssl=True for tls="implicit"
        username="app",
        password="app-password",
    )
    with override_settings(**mail_settings):
        send_mail("Welcome", "Hi Ann.", "app@example.com", ["ann@example.com"])

    session = sink.assert_sent(subject="Welcome", to="ann@example.com").session
    assert session.tls is not None
    assert session.authenticated_as == "app"


def test_django_implicit_tls(smtpsink_factory, monkeypatch):
    sink = smtpsink_factory(tls="implicit")
    monkeypatch.setenv("SSL_CERT_FILE", sink.ca_path)
    with override_settings(**sink_mail_settings(sink, use_ssl=True)):
        send_mail("Welcome", "Hi Ann.", "app@example.com", ["ann@example.com"])

    assert sink.assert_sent(subject="Welcome").session.tls.implicit is True


def test_django_without_the_ca_fails(smtpsink_factory, monkeypatch):
    """Django does verify: without SSL_CERT_FILE the sink is not trusted."""
    import ssl

    sink = smtpsink_factory(tls="implicit")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with (
        override_settings(**sink_mail_settings(sink, use_ssl=True)),
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        send_mail("Welcome", "Hi Ann.", "app@example.com", ["ann@example.com"])

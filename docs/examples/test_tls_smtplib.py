"""The smtplib examples of the "TLS and authentication" page."""

from __future__ import annotations

import smtplib
import ssl

import pytest

USERS = {"app": "app-password"}


def notify(host, port, *, tls, context, user=None, password=None):
    """Stand-in for application code that sends one message."""
    if tls == "implicit":
        client = smtplib.SMTP_SSL(host, port, context=context)
    else:
        client = smtplib.SMTP(host, port)
        client.starttls(context=context)
    with client:
        if user is not None:
            client.login(user, password)
        client.sendmail(
            "app@example.com",
            ["ann@example.com"],
            b"Subject: Your code\r\n\r\nYour code is 123456.\r\n",
        )


@pytest.mark.smtpsink(tls="starttls")
def test_starttls(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.starttls(context=smtpsink.ssl_context())  # verifies the certificate
        client.sendmail("app@example.com", ["ann@example.com"], b"Subject: Hi\r\n\r\n")

    session = smtpsink.assert_sent(subject="Hi").session
    assert session.tls.version in ("TLSv1.2", "TLSv1.3")
    assert session.tls.implicit is False  # STARTTLS, not SMTPS
    assert session.before("STARTTLS", "MAIL")


@pytest.mark.smtpsink(tls="implicit")
def test_implicit_tls(smtpsink):
    assert smtpsink.url.startswith("smtps://")
    context = smtpsink.ssl_context()
    with smtplib.SMTP_SSL(smtpsink.host, smtpsink.port, context=context) as client:
        client.sendmail("app@example.com", ["ann@example.com"], b"Subject: Hi\r\n\r\n")

    assert smtpsink.assert_sent().session.tls.implicit is True


def test_submission_with_auth(smtpsink_factory):
    sink = smtpsink_factory(
        tls="starttls-required", auth={"app": "app-password"}, auth_required=True
    )
    notify(
        sink.host,
        sink.port,
        tls="starttls",
        context=sink.ssl_context(),
        user="app",
        password="app-password",
    )

    session = sink.assert_sent(subject="Your code").session
    assert session.authenticated_as == "app"
    assert session.auth.mechanism == "CRAM-MD5"  # smtplib's first choice
    assert session.before("STARTTLS", "AUTH")


def test_wrong_password(smtpsink_factory):
    sink = smtpsink_factory(tls="implicit", auth={"app": "app-password"})
    with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        notify(
            sink.host,
            sink.port,
            tls="implicit",
            context=sink.ssl_context(),
            user="app",
            password="typo",
        )
    assert refused.value.smtp_code == 535

    (session,) = sink.sessions
    assert session.authenticated_as is None
    # smtplib's login() tries each mechanism the server offers in turn.
    assert [(a.mechanism, a.success) for a in session.auth_attempts] == [
        ("CRAM-MD5", False),
        ("PLAIN", False),
        ("LOGIN", False),
    ]
    assert "typo" not in session.format_transcript()  # secrets are masked
    sink.assert_nothing_sent()


def test_starttls_required(smtpsink_factory):
    sink = smtpsink_factory(tls="starttls-required")
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.ehlo()
        code, _ = client.mail("app@example.com")  # before STARTTLS
    assert code == 530


def test_auth_required(smtpsink_factory):
    sink = smtpsink_factory(tls="implicit", auth="any", auth_required=True)
    context = sink.ssl_context()
    with smtplib.SMTP_SSL(sink.host, sink.port, context=context) as client:
        client.ehlo()
        code, _ = client.mail("app@example.com")  # before AUTH
    assert code == 530


def test_two_sinks(smtpsink_factory):
    relay = smtpsink_factory(tls="starttls")
    smtps = smtpsink_factory(tls="implicit", auth={"app": "app-password"})
    notify(relay.host, relay.port, tls="starttls", context=relay.ssl_context())
    notify(
        smtps.host,
        smtps.port,
        tls="implicit",
        context=smtps.ssl_context(),
        user="app",
        password="app-password",
    )
    relay.assert_sent(1)
    smtps.assert_sent(1)


def test_ca_file_by_environment(smtpsink_factory, monkeypatch):
    sink = smtpsink_factory(tls="starttls")
    # For code that builds its own ssl.create_default_context(): OpenSSL
    # reads SSL_CERT_FILE each time a default context loads its CA store.
    monkeypatch.setenv("SSL_CERT_FILE", sink.ca_path)
    notify(sink.host, sink.port, tls="starttls", context=ssl.create_default_context())
    sink.assert_sent(subject="Your code")


def test_env(smtpsink_factory):
    sink = smtpsink_factory(tls="implicit")
    assert sink.env() == {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(sink.port),
        "SMTP_URL": f"smtps://127.0.0.1:{sink.port}",
        "SMTP_TLS": "implicit",
        "SMTP_CA_FILE": sink.ca_path,
    }

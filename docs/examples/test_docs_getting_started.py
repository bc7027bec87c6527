"""The examples of the "Getting started" page and the README."""

from __future__ import annotations

import smtplib

import pytest
from signup_app import SignupApp


def test_signup_sends_welcome(smtpsink):
    app = SignupApp(smtp_host=smtpsink.host, smtp_port=smtpsink.port)

    app.signup("ann@example.com")

    msg = smtpsink.assert_sent(to="ann@example.com", subject="Welcome to Example App")
    assert "Confirm your address" in msg.text
    assert msg.link(contains="/confirm/").startswith("https://")
    assert smtpsink.sessions[-1].ehlo == "app.example.com"


def test_each_test_starts_empty(smtpsink):
    # The test above sent mail to the same server; this test sees none of it.
    assert len(smtpsink.messages) == 0
    smtpsink.assert_nothing_sent()


@pytest.fixture(scope="module")
def welcomed_admin(smtpsink_server):
    # Seed data once for the module. A fixture of wider scope cannot request
    # smtpsink, and the sink keeps only the running test's mail: take a view
    # before sending and check the mail here, as it arrives.
    seeded = smtpsink_server.view()
    app = SignupApp(smtp_host=smtpsink_server.host, smtp_port=smtpsink_server.port)
    app.signup("admin@example.com")
    return seeded.wait_for(to="admin@example.com")


def test_seeded_admin_was_welcomed(welcomed_admin, smtpsink):
    # The Message stays readable; the seed's mail is not this test's.
    assert welcomed_admin.subject == "Welcome to Example App"
    smtpsink.assert_nothing_sent()


def test_plain_smtplib(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as smtp:
        smtp.sendmail(
            "app@example.com",
            ["ann@example.com"],
            b"Subject: Hello\r\nTo: ann@example.com\r\n\r\nHi Ann\r\n",
        )

    msg = smtpsink.messages.one()
    assert msg.subject == "Hello"
    assert msg.envelope.mail_from == "app@example.com"
    assert msg.raw.endswith(b"Hi Ann\r\n")


def test_configured_by_environment(smtpsink, monkeypatch):
    for name, value in smtpsink.env().items():
        monkeypatch.setenv(name, value)
    # smtpsink.env() == {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": "...",
    #                    "SMTP_URL": "smtp://127.0.0.1:..."}
    assert smtpsink.env()["SMTP_URL"] == f"smtp://{smtpsink.host}:{smtpsink.port}"

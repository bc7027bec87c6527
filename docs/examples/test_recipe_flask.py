"""Recipe: a Flask app that sends mail with Flask-Mailman."""

from __future__ import annotations

import pytest

pytest.importorskip("flask_mailman")

from flask import Flask, request
from flask_mailman import EmailMessage, Mail

mail = Mail()


def create_app(config):
    """The application factory of a typical Flask app."""
    app = Flask(__name__)
    app.config.update(config)
    mail.init_app(app)

    @app.post("/invite")
    def invite():
        address = request.form["email"]
        EmailMessage(
            subject="You are invited",
            body=f"Join us: https://example.com/join?email={address}",
            to=[address],
        ).send()
        return "", 204

    return app


@pytest.fixture
def app(smtpsink):
    return create_app(
        {
            "TESTING": True,
            # With TESTING on, Flask-Mailman would default to its in-memory
            # backend: ask for real SMTP.
            "MAIL_BACKEND": "smtp",
            "MAIL_SERVER": smtpsink.host,
            "MAIL_PORT": smtpsink.port,
            "MAIL_USE_TLS": False,
            "MAIL_USE_SSL": False,
            "MAIL_DEFAULT_SENDER": "team@example.com",
        }
    )


def test_invite_sends_mail(app, smtpsink):
    response = app.test_client().post("/invite", data={"email": "ann@example.com"})

    assert response.status_code == 204
    msg = smtpsink.assert_sent(to="ann@example.com", subject="You are invited")
    assert msg.from_ == "team@example.com"
    assert msg.link(contains="/join").endswith("email=ann@example.com")

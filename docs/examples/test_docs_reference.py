"""The examples of the "Reference" page: fixtures, the marker, no pytest."""

from __future__ import annotations

import smtplib

import pytest

from pytest_smtpsink import SettingsError, SinkError, SMTPSink


def test_the_session_server(smtpsink_server, smtpsink):
    # The fixture is a per-test view of the session's default server.
    assert smtpsink.sink is smtpsink_server
    assert smtpsink.port == smtpsink_server.port
    assert smtpsink_server.url == f"smtp://127.0.0.1:{smtpsink_server.port}"


@pytest.mark.smtpsink(hostname="mx.example.test", max_size=1000)
def test_marker(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as smtp:
        assert smtp.ehlo()[1].startswith(b"mx.example.test")
        assert smtp.esmtp_features["size"] == "1000"
    assert smtpsink.settings.max_size == 1000


def test_factory(smtpsink_factory, smtpsink):
    small = smtpsink_factory(max_size=1000)
    other = smtpsink_factory(hostname="mx.example.test")
    assert small.port != smtpsink.port  # each distinct setting: its own server
    assert smtpsink_factory(max_size=1000).port == small.port  # reused

    with smtplib.SMTP(small.host, small.port) as smtp:
        smtp.sendmail("app@example.com", ["ann@example.com"], b"Subject: Hi\r\n\r\n")
    small.assert_sent(rcpt_to="ann@example.com")
    other.assert_nothing_sent()
    smtpsink.assert_nothing_sent()  # mailboxes of different servers are separate


def test_clear(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as smtp:
        smtp.sendmail("app@example.com", ["ann@example.com"], b"Subject: Hi\r\n\r\n")
    smtpsink.assert_sent()

    smtpsink.clear()
    assert len(smtpsink.messages) == 0
    assert smtpsink.sessions == ()


def test_without_pytest_fixtures():
    with SMTPSink(hostname="mx.example.test") as sink:
        with smtplib.SMTP(sink.host, sink.port) as smtp:
            smtp.sendmail(
                "app@example.com", ["ann@example.com"], b"Subject: Hi\r\n\r\n"
            )

        msg = sink.assert_sent(rcpt_to="ann@example.com")
        assert msg.subject == "Hi"
        greeting = sink.sessions[0].transcript[0]
        assert greeting.replies == ["220 mx.example.test pytest-smtpsink"]
    assert not sink.running  # stopped, port released


def test_start_and_stop():
    sink = SMTPSink()
    sink.start()
    try:
        view = sink.view()  # a mailbox that sees only what arrives from now on
        with smtplib.SMTP(sink.host, sink.port) as smtp:
            smtp.sendmail(
                "app@example.com", ["ann@example.com"], b"Subject: Hi\r\n\r\n"
            )
        view.assert_sent(subject="Hi")
    finally:
        sink.stop()  # idempotent
    sink.stop()
    # What a stopped sink captured stays readable; waiting for more fails.
    assert len(view.messages) == 1
    with pytest.raises(SinkError, match="was stopped"):
        view.wait_for(subject="Again")


def test_bad_settings_fail_fast():
    with pytest.raises(SettingsError, match="not a loopback address") as error:
        SMTPSink(host="192.0.2.1")
    assert error.value.setting == "host"

    with pytest.raises(TypeError, match="unknown sink setting"):
        SMTPSink(max_sise=1000)

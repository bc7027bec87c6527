"""The examples of docs/debugging.rst: what a failing test shows and saves."""

from __future__ import annotations

import importlib.util

import pytest


@pytest.fixture
def pytester(pytester, monkeypatch):
    # Not part of the example: pytest-asyncio (in the test extra) warns in
    # inner runs unless its loop scope is set (see tests/conftest.py).
    if importlib.util.find_spec("pytest_asyncio") is not None:
        monkeypatch.setenv(
            "PYTEST_ADDOPTS", "-o asyncio_default_fixture_loop_scope=function"
        )
    return pytester


FAILING_TEST = """
import smtplib

def test_receipt(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("shop@example.com", ["ann@example.com"],
                        b"Subject: Your receipt\\r\\n\\r\\nThanks!\\r\\n")
    smtpsink.assert_sent(subject="Your order")
"""


def test_failed_test_shows_its_mail(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FAILING_TEST)

    result = pytester.runpytest("-p", "no:xdist")

    result.stdout.fnmatch_lines(
        [
            "*- Captured email call -*",
            "smtp://127.0.0.1:* (default settings): 1 message, 1 session",
            "  #* shop@example.com -> ann@example.com | To: - | "
            "Subject: 'Your receipt' | * bytes",
            "  session 1: 127.0.0.1:* ehlo=* tls=no auth=None messages=1 end=quit",
            "    S: 220 smtpsink.test pytest-smtpsink",
        ]
    )


def test_save_the_mail_of_failed_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FAILING_TEST)

    pytester.runpytest("-p", "no:xdist", "--smtpsink-save-dir=mail-artifacts")

    saved = (
        pytester.path
        / "mail-artifacts"
        / "test_save_the_mail_of_failed_tests.py__test_receipt"
    )
    assert sorted(p.name for p in saved.iterdir()) == [
        "0001-Your-receipt.eml",
        "session-0001.txt",
        "smtpsink.json",
    ]
    assert (
        (saved / "0001-Your-receipt.eml")
        .read_bytes()
        .startswith(b"Subject: Your receipt\r\n")
    )

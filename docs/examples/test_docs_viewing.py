"""The examples of docs/viewing.rst: index.html and pytest-html extras."""

from __future__ import annotations

import importlib.util

import pytest


@pytest.fixture
def pytester(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    # Not part of the example: pytest-asyncio (in the test extra) warns in
    # inner runs unless its loop scope is set (see tests/conftest.py).
    if importlib.util.find_spec("pytest_asyncio") is not None:
        monkeypatch.setenv(
            "PYTEST_ADDOPTS", "-o asyncio_default_fixture_loop_scope=function"
        )
    return pytester


NEWSLETTER_TEST = """
import smtplib
from email.message import EmailMessage

def test_newsletter(smtpsink):
    message = EmailMessage()
    message["From"] = "news@example.com"
    message["To"] = "ann@example.com"
    message["Subject"] = "Our spring sale"
    message.set_content("Spring sale: 20% off.")
    message.add_alternative("<h1>Spring sale</h1><p>20% off.</p>", subtype="html")
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(message)
    smtpsink.assert_sent(subject="Our summer sale")
"""


def test_index_of_the_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(NEWSLETTER_TEST)

    result = pytester.runpytest("--smtpsink-save-dir=mail-artifacts")

    index = pytester.path / "mail-artifacts" / "index.html"
    result.stdout.fnmatch_lines([f"=* smtpsink: captured mail of this run: {index} =*"])
    page = index.read_text(encoding="utf-8")
    assert "test_index_of_the_run.py::test_newsletter" in page
    assert "&lt;h1&gt;Spring sale&lt;/h1&gt;" in page  # in the sandboxed frame


def test_pytest_html_report(pytester: pytest.Pytester) -> None:
    pytest.importorskip("pytest_html")
    pytester.makepyfile(NEWSLETTER_TEST)

    pytester.runpytest("--html=report.html", "--self-contained-html")

    report = (pytester.path / "report.html").read_text(encoding="utf-8")
    # The extra of the failed test: its mail, rendered in a sandboxed frame.
    assert "smtpsink-mail" in report
    assert "Spring sale" in report

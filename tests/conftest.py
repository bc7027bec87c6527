"""Shared helpers: real clients sending real mail over loopback."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import smtplib
from collections.abc import Callable, Iterable, Iterator
from email.message import EmailMessage

import external
import pytest
from dovecot import INSTALL_HINT, Dovecot, find_program

from pytest_smtpsink import Mailbox, SMTPSink


def make_message(
    subject: str = "Hello",
    sender: str = "app@example.com",
    to: Iterable[str] = ("ann@example.com",),
    text: str = "Hi Ann.\n",
    html: str | None = None,
    **headers: str,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


#: asyncio's debug mode (on under PYTHONDEVMODE, which tox sets, also in the
#: standalone sink's subprocess) logs a WARNING for every loop step that took
#: longer than 0.1 s: on a busy machine any step may, through no fault of the
#: sink's.
_SLOW_STEP = re.compile(r"Executing <.+> took \d+\.\d+ seconds")


@contextlib.contextmanager
def replies_at_the_end(view: Mailbox, server: SMTPSink) -> Iterator[list[list[str]]]:
    """The replies of the last exchange of the first of ``view``'s sessions
    to end, taken at the moment its end is set: on the sink's thread, as
    ``server`` announces the change. A test waiting for a session's end
    must find its last replies in the transcript."""
    seen: list[list[str]] = []

    def look() -> None:
        for session in view.sessions:
            if session.end is not None and not seen:
                seen.append(list(session.transcript[-1].replies))

    stop = server.on_change(look)
    try:
        yield seen
    finally:
        stop()


def slow_step_report(line: str) -> bool:
    """Whether ``line`` is asyncio's debug-mode report of a slow loop step."""
    return _SLOW_STEP.fullmatch(line) is not None


Send = Callable[..., EmailMessage]
#: The type of the ``smtpsink_factory`` fixture.
Factory = Callable[..., Mailbox]


@pytest.fixture
def send(smtpsink: Mailbox) -> Send:
    """Send one message to the test's sink with smtplib; returns it.

    Keyword arguments go to `make_message`; ``rcpt`` overrides the envelope
    recipients (for Bcc).
    """

    def send(rcpt: Iterable[str] | None = None, **kwargs: str) -> EmailMessage:
        message = make_message(**kwargs)
        with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
            client.send_message(message, to_addrs=list(rcpt) if rcpt else None)
        return message

    return send


@pytest.fixture
def pytester(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    """pytest's `pytester`, for inner runs that pytest-asyncio also joins.

    pytest-asyncio (in the test extra) warns in every run that leaves
    ``asyncio_default_fixture_loop_scope`` unset, and inner runs under
    ``-W error`` make that an error. Pytester clears PYTEST_ADDOPTS when it
    starts, so it is set here, after it.
    """
    if importlib.util.find_spec("pytest_asyncio") is not None:
        monkeypatch.setenv(
            "PYTEST_ADDOPTS", "-o asyncio_default_fixture_loop_scope=function"
        )
    return pytester


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """A real Dovecot (POP3, IMAP, both TLS modes) for this session (for
    this xdist worker): any password for any user; see tests/dovecot.py.

    The differential tests against it take a while: tox runs them in its
    py311 env only, and sets SMTPSINK_SKIP_DOVECOT=1 in the others."""
    if os.environ.get("SMTPSINK_SKIP_DOVECOT", "") not in ("", "0"):
        pytest.skip(
            "SMTPSINK_SKIP_DOVECOT is set: Dovecot tests run in one tox env only"
        )
    program = find_program()
    if program is None:
        external.missing("Dovecot's POP3 and IMAP servers", INSTALL_HINT)
    with Dovecot(program=program) as server:
        yield server

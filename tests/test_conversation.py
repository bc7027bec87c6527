"""The SMTP conversation: sessions and their transcripts, checked exactly."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
import poplib
import re
import smtplib
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Literal, TypeVar

import pytest
from aiosmtpd.smtp import SMTP
from conftest import Factory, loop_held, on_the_loop, unread_future_errors

from pytest_smtpsink import Mailbox, SMTPSink
from pytest_smtpsink._smtp import RecordingSMTP

_T = TypeVar("_T")


class RawClient:
    """A deliberately dumb SMTP client: sends bytes, reads whole replies."""

    # Closed after each test even when it fails half-way, so that a failed
    # test's socket is not garbage-collected into a later test's
    # ResourceWarning.
    still_open: ClassVar[list[RawClient]] = []

    def __init__(self, sink: Mailbox | SMTPSink) -> None:
        self.sock = socket.create_connection((sink.host, sink.port), timeout=5)
        RawClient.still_open.append(self)
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def reply(self) -> list[str]:
        lines = []
        while True:
            line = self.file.readline().decode().rstrip("\r\n")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return lines

    def send(self, data: bytes, replies: int = 1) -> list[list[str]]:
        self.sock.sendall(data)
        return [self.reply() for _ in range(replies)]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture(autouse=True)
def _close_raw_clients() -> Iterator[None]:
    yield
    while RawClient.still_open:
        RawClient.still_open.pop().close()


@pytest.fixture
def raw(smtpsink: Mailbox) -> Iterator[RawClient]:
    client = RawClient(smtpsink)
    yield client
    client.close()


def client_case_folded(lines: list[str]) -> list[str]:
    """Client lines in lower case: smtplib sends "mail FROM:" up to Python
    3.12 and "mail from:" from 3.13; the server's lines stay exact."""
    return [
        "C: " + line[3:].lower() if line.startswith("C: ") else line for line in lines
    ]


def transcript(sink: Mailbox, index: int = 0) -> list[str]:
    """The transcript with the variable parts (port, sizes) made stable."""
    return sink.sessions[index].format_transcript().splitlines()


def test_plain_send_transcript(smtpsink: Mailbox) -> None:
    with smtplib.SMTP(
        smtpsink.host, smtpsink.port, local_hostname="app.example.com"
    ) as client:
        client.sendmail(
            "app@example.com", ["ann@example.com"], b"Subject: hi\r\n\r\nHello\r\n"
        )
    session = smtpsink.sessions[0]
    assert client_case_folded(transcript(smtpsink)) == [
        "S: 220 smtpsink.test pytest-smtpsink",
        "C: ehlo app.example.com",
        "S: 250-smtpsink.test",
        "S: 250-PIPELINING",
        "S: 250-SIZE 67108864",
        "S: 250-8BITMIME",
        "S: 250-SMTPUTF8",
        "S: 250-DSN",
        "S: 250 HELP",
        "C: mail from:<app@example.com> size=22",
        "S: 250 OK",
        "C: rcpt to:<ann@example.com>",
        "S: 250 OK",
        "C: data",
        "S: 354 End data with <CR><LF>.<CR><LF>",
        "C: <message content: 22 bytes>",
        "S: 250 2.0.0 OK: queued as #1".replace("#1", f"#{session.messages[0].number}"),
        "C: quit",
        "S: 221 Bye",
    ]
    assert session.commands == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
    assert session.codes == [220, 250, 250, 250, 354, 250, 221]
    assert session.ehlo == "app.example.com"
    assert session.esmtp is True
    assert session.end == "quit"
    assert session.used("quit")
    assert session.before("MAIL", "DATA")
    assert not session.before("DATA", "MAIL")
    # As RFC 5321 writes them: "MAIL FROM" matched nothing, so a negative
    # assertion passed whatever was sent. Other two-word forms are errors.
    assert session.used("MAIL FROM")
    assert session.used("rcpt to:")
    assert session.before("MAIL FROM", "RCPT TO")
    assert session.replies_to("RCPT TO") == session.replies_to("RCPT")
    with pytest.raises(ValueError, match=r"^'AUTH PLAIN' is not a command verb"):
        session.used("AUTH PLAIN")
    # A verb written as two words is suggested whole, not by its first word.
    with pytest.raises(ValueError, match=r"such as 'STARTTLS' \("):
        session.before("Start TLS", "MAIL")
    for nothing in ("", "  "):
        with pytest.raises(ValueError, match=r"is not a command verb"):
            session.used(nothing)
    assert session.peer[0] == "127.0.0.1"
    assert session.started_at <= session.transcript[-1].at
    assert session.ended_at is not None
    data = session.transcript[4]
    assert (data.command, data.argument, data.code) == ("DATA", None, 354)
    assert (session.transcript[2].argument or "").lower() == (
        "from:<app@example.com> size=22"
    )


def test_greeting_name_is_recorded_before_the_reply(smtpsink: Mailbox) -> None:
    """A client that has read the reply to EHLO or HELO finds the name it
    gave on the session (it was recorded after the reply half the time)."""
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=10) as client:
        session = smtpsink.sessions[-1]
        for i in range(200):
            client.ehlo(f"ehlo{i}.example.com")
            assert session.ehlo == f"ehlo{i}.example.com"
            assert session.esmtp is True
            client.helo(f"helo{i}.example.com")
            assert session.ehlo == f"helo{i}.example.com"
            assert session.esmtp is False


def test_one_refused_recipient(smtpsink_factory: Factory) -> None:
    sink = smtpsink_factory(max_recipients=2)
    with smtplib.SMTP(sink.host, sink.port) as client:
        refused = client.sendmail(
            "a@example.com", ["b@x.test", "c@x.test", "d@x.test"], b"\r\nhi\r\n"
        )
    assert refused == {"d@x.test": (452, b"4.5.3 Too many recipients (at most 2)")}
    session = sink.sessions[0]
    assert [(e.line.lower(), e.code) for e in session.replies_to("RCPT")] == [
        ("rcpt to:<b@x.test>", 250),
        ("rcpt to:<c@x.test>", 250),
        ("rcpt to:<d@x.test>", 452),
    ]
    assert sink.messages.one().envelope.rcpt_to == ("b@x.test", "c@x.test")


def test_rset_in_the_middle(raw: RawClient, smtpsink: Mailbox) -> None:
    raw.send(b"HELO client.test\r\n")
    raw.send(b"MAIL FROM:<a@example.com>\r\n")
    raw.send(b"RCPT TO:<b@example.com>\r\n")
    assert raw.send(b"RSET\r\n") == [["250 OK"]]
    assert raw.send(b"DATA\r\n") == [["503 Error: need RCPT command"]]
    raw.send(b"QUIT\r\n")
    assert transcript(smtpsink)[1:] == [
        "C: HELO client.test",
        "S: 250 smtpsink.test",
        "C: MAIL FROM:<a@example.com>",
        "S: 250 OK",
        "C: RCPT TO:<b@example.com>",
        "S: 250 OK",
        "C: RSET",
        "S: 250 OK",
        "C: DATA",
        "S: 503 Error: need RCPT command",
        "C: QUIT",
        "S: 221 Bye",
    ]
    session = smtpsink.sessions[0]
    assert session.esmtp is False
    assert session.messages == ()


def test_client_drops_during_data(smtpsink: Mailbox) -> None:
    client = RawClient(smtpsink)
    client.send(
        b"EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n",
        replies=4,
    )
    client.sock.sendall(b"Subject: cut\r\n\r\nhalf a mess")
    client.close()
    session = smtpsink.sessions[0]
    smtpsink.wait_until(lambda: session.end is not None)
    assert session.end == "client-closed"
    assert transcript(smtpsink)[-1] == (
        "C: <message content: 27 bytes, incomplete: the connection closed before the final dot>"
    )
    assert smtpsink.messages == []


def test_pipelined_commands_in_one_packet(raw: RawClient, smtpsink: Mailbox) -> None:
    raw.send(b"EHLO pipe.test\r\n")
    replies = raw.send(
        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nRCPT TO:<c@x.test>\r\nDATA\r\n",
        replies=4,
    )
    assert [r[0][:3] for r in replies] == ["250", "250", "250", "354"]
    raw.send(b"Subject: piped\r\n\r\nbody\r\n.\r\nQUIT\r\n", replies=2)
    assert [line for line in transcript(smtpsink) if line.startswith("C:")] == [
        "C: EHLO pipe.test",
        "C: MAIL FROM:<a@x.test>",
        "C: RCPT TO:<b@x.test>",
        "C: RCPT TO:<c@x.test>",
        "C: DATA",
        "C: <message content: 24 bytes>",
        "C: QUIT",
    ]
    assert smtpsink.messages.one().envelope.rcpt_to == ("b@x.test", "c@x.test")


def test_garbage_and_8bit_commands_are_recorded(
    raw: RawClient, smtpsink: Mailbox
) -> None:
    replies = raw.send(
        b"\xff\xfe\x00junk\r\nEHLO h\xc3\xa9.test\r\nFOO bar\r\n\r\nMAIL\r\n", replies=5
    )
    assert [r[-1][:3] for r in replies] == ["500", "250", "500", "500", "501"]
    raw.send(b"NOOP\r\n")
    lines = transcript(smtpsink)
    assert lines[1:3] == ["C: \\xff\\xfe\\x00junk", "S: 500 Error: bad syntax"]
    assert "C: EHLO hé.test" in lines
    assert 'S: 500 Error: command "FOO" not recognized' in lines
    assert lines[-2:] == ["C: NOOP", "S: 250 OK"]  # still serving


def test_overlong_command_line_is_recorded_shortened(
    raw: RawClient, smtpsink: Mailbox
) -> None:
    raw.send(b"EHLO x.test\r\n")
    assert raw.send(b"NOOP " + b"a" * 5000 + b"\r\n") == [["500 Command line too long"]]
    exchange = smtpsink.sessions[0].transcript[-1]
    assert exchange.command == "NOOP"
    assert exchange.line.endswith("... [5007 bytes in all]")
    assert len(exchange.line) < 600


def test_sessions_without_messages_are_recorded(smtpsink: Mailbox) -> None:
    client = RawClient(smtpsink)
    client.close()
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as smtp:
        smtp.noop()
    # len() first: all() of no sessions is true.
    smtpsink.wait_until(
        lambda: len(smtpsink.sessions) == 2 and all(s.end for s in smtpsink.sessions)
    )
    first, second = smtpsink.sessions
    assert (first.end, first.commands, first.ehlo) == ("client-closed", [], None)
    assert (second.end, second.commands) == ("quit", ["NOOP", "QUIT"])


def test_idle_timeout_ends_the_session(smtpsink_factory: Factory) -> None:
    sink = smtpsink_factory(idle_timeout=0.2)
    client = RawClient(sink)  # and says nothing: a busy machine cannot
    # make it late. The server says why it closes (421, as Postfix does).
    goodbye = f"421 4.4.2 {sink.settings.hostname} Error: timeout exceeded\r\n"
    assert client.file.readline() == goodbye.encode()
    assert client.file.readline() == b""
    client.close()
    sink.wait_until(lambda: sink.sessions[0].end is not None)
    (session,) = sink.sessions
    assert session.end == "timeout"
    # Its own exchange, as POP3's goodbye: no command asked for it.
    greeting, notice = session.transcript
    assert greeting.replies == [client.greeting[0]]
    assert (notice.kind, notice.line, notice.replies) == (
        "notice",
        "",
        [goodbye.rstrip()],
    )
    assert session.codes == [220, 421]


def test_a_command_the_idle_timeout_cut_off_is_noted(smtpsink_factory: Factory) -> None:
    # A client that never ends its line (LF-vs-CRLF, a missing flush) left
    # no trace of it: the transcript read as if the client had hung.
    sink = smtpsink_factory(idle_timeout=0.5)
    # All there when the server first reads: no pause of this thread can
    # let the timeout in before it.
    with loop_held(sink):
        sock = socket.create_connection((sink.host, sink.port), timeout=30)
        sock.sendall(b"EHLO client.test\r\nMAIL FROM:<a@")
    with sock, sock.makefile("rb") as replies:
        said = replies.read()  # until the sink closes
    assert said.endswith(b" Error: timeout exceeded\r\n")
    sink.wait_until(lambda: sink.sessions[0].end is not None)
    (session,) = sink.sessions
    assert session.end == "timeout"
    assert [e.line for e in session.transcript][1:] == [
        "EHLO client.test",
        "[not run: MAIL, 13 octets with no line end, cut off by the idle timeout]",
        "",  # the 421's notice
    ]
    assert session.commands == ["EHLO"]


def test_content_the_idle_timeout_cut_off_is_noted_before_the_421(
    smtpsink_factory: Factory,
) -> None:
    # It read "the connection closed before the final dot", after the 421.
    sink = smtpsink_factory(idle_timeout=0.5)
    with loop_held(sink):
        sock = socket.create_connection((sink.host, sink.port), timeout=30)
        sock.sendall(
            b"EHLO client.test\r\nMAIL FROM:<a@example.com>\r\n"
            b"RCPT TO:<b@example.com>\r\nDATA\r\nSubject: late\r\n\r\nbody"
        )
    with sock, sock.makefile("rb") as replies:
        assert replies.read().endswith(b" Error: timeout exceeded\r\n")
    sink.wait_until(lambda: sink.sessions[0].end is not None)
    (session,) = sink.sessions
    *_, content, notice = session.transcript
    assert content.line == (
        "<message content: 21 bytes, incomplete: the idle timeout cut it off "
        "before the final dot>"
    )
    assert notice.kind == "notice"
    assert sink.messages == []


def test_traffic_moves_the_idle_deadline_and_the_timer_follows_it() -> None:
    # The sink keeps one idle timer per connection and moves its deadline
    # on traffic. Move it later than the timer was armed for, then fire the
    # timer as if it had come due: the session must stay open, with the
    # timer re-armed at the new deadline.
    with SMTPSink() as sink:
        _fire_the_idle_timer_early(sink)


def _fire_the_idle_timer_early(sink: SMTPSink) -> None:
    client = RawClient(sink)
    assert client.send(b"NOOP\r\n")[0][0].startswith("250")
    runtime = sink._runtime
    assert runtime is not None
    (connection,) = runtime.state.connections

    def fire_early() -> tuple[float, float, float]:
        # 600 s, not the 300 s idle_timeout: later than the armed deadline
        # even where the loop's clock has a coarse step (uvloop: 1 ms).
        connection._reset_timeout(600)
        deadline = connection._idle_deadline
        connection._timeout_cb()
        timer = connection._timeout_handle
        assert timer is not None
        assert connection._armed_for == deadline
        return deadline, timer.when(), runtime.loop.time()

    deadline, rearmed_at, now = asyncio.run_coroutine_threadsafe(
        _call(fire_early), runtime.loop
    ).result(timeout=30)
    # Re-armed for the new deadline, not left at the old one 300 s earlier.
    # Within a second, not to the microsecond: uvloop rounds timers to its
    # loop clock, whose steps have been seen to be several milliseconds.
    assert rearmed_at == pytest.approx(deadline, abs=1)
    assert deadline - now > 500  # not due for minutes
    assert client.send(b"NOOP\r\n")[0][0].startswith("250")  # still served
    assert sink.sessions[0].end is None
    client.close()


@pytest.mark.parametrize("sent", [b"Subject: slow\r\n", b"Subject: sl"])
@pytest.mark.parametrize("path", ["at once", "aiosmtpd's"])
def test_message_content_moves_the_idle_deadline(path: str, sent: bytes) -> None:
    # aiosmtpd moves it per command only: a client sending a message for
    # longer than idle_timeout got the 421 in the middle, its mail lost.
    # Any part of a line counts (aiosmtpd's way moved it per whole line: a
    # long line sent slowly still timed out there).
    with SMTPSink(event_loop="asyncio") as sink:  # a clock finer than 1 ms
        if path == "aiosmtpd's":  # a rule: content read by aiosmtpd's loop
            sink.fail("RCPT", 550, match="nobody@example.com")
        client = RawClient(sink)
        client.send(b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\n", 2)
        client.send(b"RCPT TO:<b@example.com>\r\nDATA\r\n", 2)
        runtime = sink._runtime
        assert runtime is not None
        (connection,) = runtime.state.connections
        before = on_the_loop(sink, lambda: connection._idle_deadline)
        client.sock.sendall(sent)

        def taken() -> bool:
            content = connection._content
            return content is not None and (
                content.data_bytes + content.unread + len(connection._reader._buffer)  # type: ignore[attr-defined]
                >= len(sent)
            )

        while not on_the_loop(sink, taken):
            pass
        assert on_the_loop(sink, lambda: connection._idle_deadline) > before
        rest = b"" if sent.endswith(b"\n") else b"ow\r\n"
        assert client.send(rest + b"\r\nbody\r\n.\r\n")[0][0].startswith("250")
        client.close()


async def _call(function: Callable[[], _T]) -> _T:
    return function()


CUT_OFF = [
    (b"NOOP", "NOOP, 4 octets"),
    (b"MAIL FROM:<a@example.com>", "MAIL, 25 octets"),
    (b"s3cret", "6 octets"),  # no verb: perhaps a password
]


@pytest.mark.parametrize(
    ("path", "sent", "shown"),
    [
        *(
            (path, *case)
            for path in ("at once", "aiosmtpd's", "held")
            for case in CUT_OFF
        ),
        # Read in pieces (not while held: the hang reads nothing of it).
        ("at once", b"NOOP " + b"a" * 70_000, "NOOP, 70005 octets"),
    ],
)
def test_a_command_line_the_clients_close_cut_off_is_recorded_not_run(
    smtpsink: Mailbox, sent: bytes, shown: str, path: str
) -> None:
    # It left no trace in the transcript (the POP3 and IMAP servers record
    # one); its verb only: the rest of a line may be a password.
    if path != "at once":  # a rule: lines read by aiosmtpd's loop
        smtpsink.fail("RCPT", 550, match="nobody@example.com")
    client = RawClient(smtpsink)
    if path == "held":  # the EOF cancels a handler that a rule holds
        smtpsink.hang("EHLO")
        client.sock.sendall(b"EHLO x\r\n")
        smtpsink.wait_until(lambda: smtpsink.sessions[0].transcript[-1].injected)
    client.sock.sendall(sent)
    client.sock.shutdown(socket.SHUT_WR)
    client.file.read()
    client.close()
    smtpsink.wait_until(lambda: smtpsink.sessions[0].end is not None)
    (session,) = smtpsink.sessions
    assert session.end == "client-closed"
    last = session.transcript[-1]
    assert last.line == (
        f"[not run: {shown} with no line end, cut off by the client's close]"
    )
    assert last.command is None
    assert "s3cret" not in session.format_transcript()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "starttls"])
@pytest.mark.parametrize(
    "sent",
    [b"", b"dXNl", b"RSET"],
    ids=["nothing", "part-of-a-line", "a-response-like-a-verb"],
)
def test_a_client_closing_its_side_inside_an_auth_exchange_logs_in_as_no_one(
    smtpsink_factory: Factory, sent: bytes, tls: bool
) -> None:
    # Its EOF before the response's line end made what it had sent a whole
    # response, and then the empty rest a password: a login attempt it never
    # made (user "use"), answered 535. What it sent is counted, on both
    # paths (over TLS the EOF cancels the handler; without it the handler
    # reads the EOF), and never named: "RSET" is a base64 response too.
    sink = smtpsink_factory(auth={"user": "pw"}, auth_plaintext=True, tls="starttls")
    plain = socket.create_connection((sink.host, sink.port), timeout=5)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(plain.close)
        file = cleanup.enter_context(plain.makefile("rb"))
        file.readline()
        sock: socket.socket = plain
        if tls:
            plain.sendall(b"STARTTLS\r\n")
            assert file.readline().startswith(b"220")
            file.close()
            secure = sink.ssl_context().wrap_socket(plain, server_hostname=sink.host)
            cleanup.callback(secure.close)
            file = cleanup.enter_context(secure.makefile("rb"))
            sock = secure
        sock.sendall(b"EHLO x\r\nAUTH LOGIN\r\n")
        while not file.readline().startswith(b"250 "):
            pass
        assert file.readline().startswith(b"334")
        sock.sendall(sent)
        # The EOF alone (over TLS without a close_notify, whose answer some
        # OpenSSL versions take for a violation): the TLS layer goes first.
        sock.shutdown(socket.SHUT_WR)
        if tls:  # the server's close_notify, if any, then its close
            with contextlib.suppress(ConnectionResetError):
                while sock.recv(4096):
                    pass
        else:
            assert sock.recv(100) == b""  # closed, with nothing more said
    sink.wait_until(lambda: sink.sessions[0].end is not None)
    (session,) = sink.sessions
    assert session.end == "client-closed"
    assert session.auth_attempts == ()
    cut_off = (
        [
            f"[not run: {len(sent)} octets with no line end, cut off by the client's close]"
        ]
        if sent
        else []
    )
    assert [e.line for e in session.transcript[-1 - len(cut_off) :]] == [
        "AUTH LOGIN",
        *cut_off,
    ]
    assert "RSET" not in session.format_transcript()


def test_auth_secrets_never_show(smtpsink_factory: Factory) -> None:
    sink = smtpsink_factory(auth={"ann": "hunter2"}, auth_plaintext=True)
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.user, client.password = "ann", "hunter2"
        client.ehlo()
        client.auth("PLAIN", client.auth_plain)
    client2 = RawClient(sink)
    client2.send(b"EHLO x\r\n")
    secret = base64.b64encode(b"ann").decode()
    client2.send(b"AUTH LOGIN\r\n")
    client2.send(secret.encode() + b"\r\n")
    client2.send(base64.b64encode(b"wrong-pass") + b"\r\n")
    client2.send(b"QUIT\r\n")
    client2.close()
    outputs = [
        repr(s) + s.format_transcript() + repr(s.transcript) for s in sink.sessions
    ]
    for text in outputs:
        for leaked in (
            "hunter2",
            "wrong-pass",
            base64.b64encode(b"\0ann\0hunter2").decode(),
            base64.b64encode(b"wrong-pass").decode(),
            secret,
        ):
            assert leaked not in text
    assert "C: AUTH PLAIN ****" in sink.sessions[0].format_transcript()
    second = sink.sessions[1].format_transcript().splitlines()
    # The client read each reply: every line is recorded by now.
    assert second[-8:] == [
        "C: AUTH LOGIN",
        "S: 334 VXNlciBOYW1lAA==",
        "C: ****",
        "S: 334 UGFzc3dvcmQA",
        "C: ****",
        "S: 535 5.7.8 Authentication credentials invalid",
        "C: QUIT",
        "S: 221 Bye",
    ]
    assert sink.sessions[0].authenticated_as == "ann"
    assert sink.sessions[1].auth is not None
    assert sink.sessions[1].auth.success is False
    # The session line tells a failed login from none at all.
    assert " auth='ann' " in sink.sessions[0].summary()
    assert " auth=None (failed: LOGIN 'ann') " in sink.sessions[1].summary()


def test_session_repr_is_a_readable_transcript(smtpsink: Mailbox) -> None:
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.helo("repr.test")
    text = repr(smtpsink.sessions[0])
    assert re.match(
        r"<Session 127\.0\.0\.1:\d+ ehlo='repr\.test' tls=no auth=None messages=0 end=\w+>\n"
        r"  S: 220 smtpsink\.test pytest-smtpsink\n  C: helo repr\.test\n  S: 250 smtpsink\.test",
        text,
    ), text


def test_wait_until_wakes_on_each_step_of_the_conversation(smtpsink: Mailbox) -> None:
    # The client hangs at RCPT (its timeout is long); wait_until must see the
    # RCPT line as soon as it is recorded, while the client is still waiting.
    smtpsink.hang("RCPT")

    def client() -> None:
        # Released at clear_faults(): closed, or let through; either is fine.
        with (
            contextlib.suppress(smtplib.SMTPException, OSError),
            smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=20) as smtp,
        ):
            smtp.sendmail("a@example.com", ["b@example.com"], b"\r\nx\r\n")

    thread = threading.Thread(target=client)
    thread.start()
    smtpsink.wait_until(lambda: smtpsink.sessions[-1].used("RCPT"), timeout=60)
    assert thread.is_alive(), "wait_until returned only after the client gave up"
    smtpsink.clear_faults()  # releases the hung connection
    thread.join()
    smtpsink.wait_until(lambda: smtpsink.sessions[-1].end is not None)


@pytest.mark.parametrize("at_once", [True, False], ids=["at-once", "aiosmtpd-way"])
def test_a_command_that_waits_or_fails_is_answered_in_order(
    monkeypatch: pytest.MonkeyPatch, at_once: bool
) -> None:
    # A command answered as it arrives (RecordingSMTP.data_received) that
    # waits after all, or fails, is finished as aiosmtpd's loop would: its
    # reply, then those of commands that came meanwhile, in order; a failure
    # answered "500 Error: (Type) text" and the session going on.
    started_in: list[asyncio.Task[Any] | None] = []

    async def noop(server: RecordingSMTP, arg: str | None) -> None:
        # Answered at once, a command starts outside any task; aiosmtpd's
        # loop runs it in its handler task.
        started_in.append(asyncio.current_task())
        if arg == "now":
            raise ValueError("failed at once")
        if arg is None:  # waits until the next command has come
            for _ in range(2000):
                if server._held or server._reader._buffer:  # type: ignore[attr-defined]
                    break
                await asyncio.sleep(0.005)
            else:
                # Gone on without it, the test would no longer show what it
                # is about (a command that comes while NOOP waits).
                raise AssertionError("the next command never came while NOOP waited")
        await asyncio.sleep(0)
        if arg == "later":
            raise ValueError("failed after waiting")
        await SMTP.smtp_NOOP(server, arg)

    # Before the sink's first connection, whose set-up later ones copy.
    monkeypatch.setattr(RecordingSMTP, "smtp_NOOP", noop)
    with SMTPSink() as sink:
        runtime = sink._runtime
        assert runtime is not None
        runtime.state.fast_commands = at_once
        with socket.create_connection((sink.host, sink.port), timeout=30) as sock:
            stream = sock.makefile("rb")
            assert stream.readline().startswith(b"220 ")
            sock.sendall(b"NOOP\r\n")
            sink.wait_until(lambda: sink.sessions[0].transcript[-1].line == "NOOP")
            sock.sendall(b"RSET x\r\n")  # while NOOP waits
            replies = [stream.readline(), stream.readline()]
            for line in (b"NOOP now\r\n", b"NOOP later\r\n", b"QUIT\r\n"):
                sock.sendall(line)
                replies.append(stream.readline())
            stream.close()
    assert replies == [
        b"250 OK\r\n",
        b"501 Syntax: RSET\r\n",
        b"500 Error: (ValueError) failed at once\r\n",
        b"500 Error: (ValueError) failed after waiting\r\n",
        b"221 Bye\r\n",
    ]
    assert [task is None for task in started_in] == [at_once] * 3
    (session,) = sink.sessions
    assert [e.line for e in session.transcript[1:]] == [
        "NOOP",
        "RSET x",
        "NOOP now",
        "NOOP later",
        "QUIT",
    ]


def test_a_client_that_resets_after_a_command_leaves_no_noise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The reply to a command answered at once may find the connection
    # reset: the command then ends quietly, as in aiosmtpd's own loop (no
    # ERROR, no task left with an exception nobody reads). ERROR, not
    # WARNING: asyncio's debug mode (tox) warns of slow steps on a busy
    # machine.
    loop_errors: list[dict[str, Any]] = []
    with caplog.at_level(logging.ERROR), SMTPSink() as sink:
        assert sink._loop is not None
        sink._loop.set_exception_handler(lambda _, context: loop_errors.append(context))
        for _ in range(100):
            with socket.create_connection((sink.host, sink.port), timeout=30) as sock:
                sock.recv(100)  # the greeting
                # Closing with a zero linger time resets the connection.
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                sock.sendall(b"EHLO client.example\r\n")
        sink.wait_until(
            lambda: (
                len(sink.sessions) == 100
                and all(s.end is not None for s in sink.sessions)
            )
        )
    assert {s.end for s in sink.sessions} == {"client-closed"}
    # The deterministic form of the loop_errors check below.
    assert unread_future_errors() == []
    gc.collect()  # a task whose exception nobody read says so when freed
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == []
    assert loop_errors == []


_EHLO, _MAIL = b"EHLO x\r\n", b"MAIL FROM:<a@example.com>\r\n"
_REST = [b"RCPT TO:<b@example.com>\r\n", b"DATA\r\n", b"Subject: x\r\n\r\n.\r\n"]
_END = [b"NOOP\r\n", b"QUIT\r\n"]


@pytest.mark.parametrize(
    "fails", [_MAIL, _REST[-1]], ids=["MAIL line", "message stored"]
)
def test_a_listener_that_raises_is_logged_and_the_conversation_goes_on(
    fails: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # A store listener runs on the server thread as the sink records. One
    # that raised made aiosmtpd's loop answer "500 Error: (Type) text" (a
    # listener's bug in the client's conversation), and one that raised as
    # a connection opened left it ungreeted. It is logged; the client sees
    # the conversation it would have, on both paths.
    expected = ["220", "250", "250", "250", "354", "250", "250", "221"]
    said = []
    for at_once in (True, False):
        armed: list[bool] = []

        def listener(armed: list[bool] = armed) -> None:
            if armed:
                armed.clear()
                raise RuntimeError("listener failed")

        with SMTPSink() as sink:
            runtime = sink._runtime
            assert runtime is not None
            runtime.state.fast_commands = at_once
            # Lines make a line listener run: the MAIL line fails; else the
            # next change heard is the message.
            sink.on_change(listener, lines=fails == _MAIL)
            client = RawClient(sink)
            codes = [client.greeting[-1][:3]]
            armed_yet = False
            for line in [_EHLO, _MAIL, *_REST, *_END]:
                if line == fails and not armed_yet:
                    armed.append(armed_yet := True)
                codes.append(client.send(line)[0][-1][:3])
            client.close()
            said.append(codes)
            assert len(sink.messages) == 1
    assert said == [expected, expected]
    logged = [r for r in caplog.records if "on_change" in r.getMessage()]
    assert len(logged) == 2
    assert all(
        "RuntimeError: listener failed" in r.exc_text for r in logged if r.exc_text
    )


@pytest.mark.parametrize("port", ["smtp", "pop3", "imap"])
def test_a_listener_that_raises_as_a_connection_opens_leaves_it_served(
    port: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Raised in connection_made, it left an SMTP client ungreeted, and a
    # POP3 or IMAP one neither served nor ever closed.
    with SMTPSink() as sink:
        address = {
            "smtp": (sink.host, sink.port),
            "pop3": (sink.pop3.host, sink.pop3.port),
            "imap": (sink.imap.host, sink.imap.port),
        }[port]

        def listener() -> None:
            raise RuntimeError("listener failed")

        sink.on_change(listener, lines=False)
        for _ in range(3):
            with socket.create_connection(address, timeout=30) as client:
                assert client.recv(100)[:3] in (b"220", b"+OK", b"* O")
    # Its traceback once, not on every change (each line, each session).
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "on_change" in errors[0].getMessage()


@pytest.mark.smtpsink(auth={"ann@example.com": "s3cr3t-pw"}, auth_plaintext=True)
def test_a_failed_pop3_login_shows_in_the_session_line(smtpsink: Mailbox) -> None:
    client = poplib.POP3(smtpsink.pop3.host, smtpsink.pop3.port, timeout=10)
    try:
        client.user("ann@example.com")
        with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\]"):
            client.pass_("wrong-pw")
        client.quit()
    finally:
        client.close()
    smtpsink.wait_until(
        lambda: any(s.protocol == "POP3" and s.end for s in smtpsink.sessions)
    )
    (session,) = (s for s in smtpsink.sessions if s.protocol == "POP3")
    line = session.summary()
    assert " user=None (failed: USER 'ann@example.com') " in line, line
    assert "wrong-pw" not in line


def _help(client: smtplib.SMTP) -> set[str]:
    code, text = client.docmd("HELP")
    assert code == 250
    prefix = b"Supported commands: "
    assert text.startswith(prefix), text
    return set(text[len(prefix) :].decode().split())


@pytest.mark.parametrize(
    ("settings", "before_tls", "after_tls"),
    [
        ({}, set(), None),
        ({"auth": "any", "auth_plaintext": True}, {"AUTH"}, None),
        ({"tls": "starttls"}, {"STARTTLS"}, set()),
        # AUTH is offered over TLS only: HELP says so as EHLO does.
        ({"tls": "starttls", "auth": "any"}, {"STARTTLS"}, {"AUTH"}),
    ],
    ids=["plain", "auth-plaintext", "starttls", "starttls-auth"],
)
def test_help_lists_the_commands_this_session_accepts(
    smtpsink_factory: Factory,
    settings: dict[str, Any],
    before_tls: set[str],
    after_tls: set[str] | None,
) -> None:
    """HELP listed AUTH on a sink that offers none and left out HELO and
    EHLO (our overrides lacked aiosmtpd's syntax); it lists what EHLO
    offers, and HELP EHLO gives the syntax."""
    sink = smtpsink_factory(**settings)
    always = {"DATA", "EHLO", "HELO", "HELP", "MAIL", "NOOP", "QUIT", "RCPT", "RSET"}
    always |= {"VRFY"}
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.ehlo()
        assert _help(client) == always | before_tls
        assert client.docmd("HELP", "EHLO") == (250, b"Syntax: EHLO hostname")
        assert client.docmd("HELP", "HELO") == (250, b"Syntax: HELO hostname")
        if after_tls is not None:
            client.starttls(context=sink.ssl_context())
            client.ehlo()
            assert _help(client) == always | after_tls


def test_help_leaves_out_what_a_fault_rule_hides(smtpsink_factory: Factory) -> None:
    # EHLO hid them, and the commands were refused, but HELP listed them.
    sink = smtpsink_factory(tls="starttls", auth="any", auth_plaintext=True)
    sink.hide("STARTTLS", "AUTH")
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.ehlo()
        assert not {"STARTTLS", "AUTH"} & _help(client)


# Not "event_loop": pytest-asyncio 0.23 has a fixture of that name.
@pytest.mark.parametrize("loop_kind", ["asyncio", "auto"])
def test_a_long_pipelined_run_is_answered_in_order(
    loop_kind: Literal["asyncio", "auto"],
) -> None:
    # 752 commands in one write: past COMMANDS_BEFORE_YIELD, the sink hands
    # the rest to aiosmtpd's loop (which lets other clients in between):
    # every reply still comes in order, and every message is kept as sent.
    transactions = 150
    data = b"EHLO x\r\n" + b"".join(
        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b%d@x.test>\r\nRCPT TO:<c@x.test>\r\n"
        b"DATA\r\nSubject: %d\r\n\r\nbody\r\n.\r\n" % (n, n)
        for n in range(transactions)
    )
    with SMTPSink(event_loop=loop_kind) as sink:
        with socket.create_connection((sink.host, sink.port), timeout=30) as client:
            client.sendall(data + b"QUIT\r\n")
            with client.makefile("rb") as replies:
                lines = list(replies)
        codes = [line[:3] for line in lines if line[3:4] == b" "]
        assert codes == [
            b"220",
            b"250",
            *[b"250", b"250", b"250", b"354", b"250"] * transactions,
            b"221",
        ]
        sink.wait_for(transactions)
        assert [m.subject for m in sink.messages] == [
            str(n) for n in range(transactions)
        ]
        assert [m.envelope.rcpt_to for m in sink.messages] == [
            (f"b{n}@x.test", "c@x.test") for n in range(transactions)
        ]

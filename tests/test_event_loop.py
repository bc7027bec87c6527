"""The sink's own event loop: uvloop when installed (the ``speed`` extra),
asyncio's otherwise, chosen with ``event_loop`` / ``--smtpsink-event-loop``.

The whole suite runs on both loops: the ``py311-uvloop`` tox env installs
uvloop (so every sink there runs on it) and sets ``SMTPSINK_EXPECT_UVLOOP``,
which makes `test_the_default_loop_is_uvloop_when_installed` fail if uvloop
went missing. The tests below also run each thing the sink asks of its loop
(a server on its own socket, STARTTLS on a server transport, wake-ups from
other threads, stopping with clients connected, mid-handshake or idle) on
every loop installed here. Implicit-TLS sinks run on asyncio's loop: see
`SinkSettings._uses_uvloop`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import smtplib
import socket
import time

import pytest
from conftest import on_the_loop

from pytest_smtpsink import SettingsError, SMTPSink
from pytest_smtpsink._settings import uvloop_installed

EXPECT_UVLOOP = "SMTPSINK_EXPECT_UVLOOP"

LOOPS = [
    "asyncio",
    pytest.param(
        "uvloop",
        marks=pytest.mark.skipif(
            not uvloop_installed(), reason="uvloop is not installed (speed extra)"
        ),
    ),
]


def loop_module(sink: SMTPSink) -> str:
    """``"uvloop"`` or ``"asyncio"``: whose loop the sink's thread runs."""
    return type(sink._loop).__module__.partition(".")[0]


def test_the_default_loop_is_uvloop_when_installed() -> None:
    if os.environ.get(EXPECT_UVLOOP) and not uvloop_installed():
        pytest.fail(f"{EXPECT_UVLOOP} is set but uvloop is not installed")
    with SMTPSink() as sink:
        assert loop_module(sink) == ("uvloop" if uvloop_installed() else "asyncio")


@pytest.mark.parametrize("choice", LOOPS)
def test_the_chosen_loop_is_used(choice: str) -> None:
    with SMTPSink(event_loop=choice) as sink:
        assert loop_module(sink) == choice


@pytest.mark.parametrize("choice", LOOPS)
def test_a_slow_step_of_the_sinks_loop_is_not_logged(
    choice: str, caplog: pytest.LogCaptureFixture
) -> None:
    # In asyncio's debug mode (PYTHONDEVMODE) each step of the sink's loop
    # over 0.1 s was a WARNING in the running test's log (and caplog): on a
    # busy CI machine, noise about the plugin's insides.
    with SMTPSink(event_loop=choice) as sink:
        assert sink._loop is not None
        loop = sink._loop
        on_the_loop(sink, lambda: loop.set_debug(True))
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            on_the_loop(sink, lambda: time.sleep(0.3))  # a slow step
    # That step's report (any other step may also be slow on a busy machine).
    reports = [
        r.getMessage() for r in caplog.records if "on_the_loop" in r.getMessage()
    ]
    assert reports == []
    # One over a second still is: the sink's own fault, worth hearing of.
    assert loop.slow_callback_duration == 1.0


def test_uvloop_asked_for_but_not_installed() -> None:
    if uvloop_installed():
        pytest.skip("uvloop is installed here")
    with pytest.raises(SettingsError, match=r"event_loop: uvloop is not installed"):
        SMTPSink(event_loop="uvloop")


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(
        SettingsError,
        match=r"event_loop: must be one of auto, asyncio, uvloop, got 'trio'",
    ):
        SMTPSink(event_loop="trio")


def test_the_option_turns_uvloop_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_loop(smtpsink):
            assert type(smtpsink.sink._loop).__module__.startswith("asyncio")
        """
    )
    result = pytester.runpytest("-p", "no:xdist", "--smtpsink-event-loop=asyncio")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("choice", LOOPS)
def test_plain_round_trips(choice: str) -> None:
    with SMTPSink(event_loop=choice) as sink:
        with smtplib.SMTP(sink.host, sink.port, local_hostname="client.test") as c:
            for n in range(3):
                c.sendmail("a@example.com", ["b@example.com"], f"Subject: {n}\r\n\r\n")
        sink.wait_for(count=3)
        assert [m.subject for m in sink.messages] == ["0", "1", "2"]
        assert sink.sessions[0].commands[:2] == ["EHLO", "MAIL"]


@pytest.mark.parametrize("choice", LOOPS)
def test_starttls(choice: str) -> None:
    with SMTPSink(tls="starttls", event_loop=choice) as sink:
        with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
            client.starttls(context=sink.ssl_context())
            client.sendmail("a@example.com", ["b@example.com"], b"Subject: s\r\n\r\n")
        sink.wait_for(subject="s")
        tls = sink.sessions[0].tls
        assert tls is not None
        assert tls.implicit is False


def test_implicit_tls_runs_on_asyncio() -> None:
    """uvloop reads a new connection before the sink can start its TLS
    handshake: with it, about every other ClientHello was lost and the
    client saw an EOF. So "auto" keeps implicit-TLS sinks on asyncio."""
    with SMTPSink(tls="implicit") as sink:
        assert loop_module(sink) == "asyncio"
        for _ in range(10):
            with smtplib.SMTP_SSL(
                sink.host, sink.port, context=sink.ssl_context(), timeout=10
            ) as client:
                assert client.noop()[0] == 250
        assert all(s.tls is not None for s in sink.sessions)


@pytest.mark.skipif(not uvloop_installed(), reason="uvloop is not installed")
def test_uvloop_is_refused_for_implicit_tls() -> None:
    with pytest.raises(
        SettingsError, match=r"event_loop: uvloop cannot serve tls='implicit'"
    ):
        SMTPSink(tls="implicit", event_loop="uvloop")


@pytest.mark.parametrize("choice", LOOPS)
def test_stop_with_clients_connected(choice: str) -> None:
    """Stop ends an idle SMTP session and a client stuck in its STARTTLS
    handshake, and frees the port at once."""
    sink = SMTPSink(tls="starttls", event_loop=choice).start()
    idle = smtplib.SMTP(sink.host, sink.port, timeout=10)
    idle.ehlo("client.test")
    handshaking = socket.create_connection((sink.host, sink.port), timeout=10)
    try:
        handshaking.recv(1024)  # the greeting
        handshaking.sendall(b"EHLO client.test\r\n")
        sink.wait_until(lambda: len(sink.sessions) == 2, timeout=10)
        handshaking.sendall(b"STARTTLS\r\n")
        # The ClientHello never comes: the sink waits in its handshake.
        sink.wait_until(lambda: "STARTTLS" in sink.sessions[1].commands, timeout=10)
        sink.stop()
        while handshaking.recv(1024):  # the rest of the replies, then EOF
            pass
        assert idle.getreply()[0] == 421  # "Service shutting down"
        with pytest.raises(smtplib.SMTPServerDisconnected):
            idle.noop()
        assert not sink.running
        with socket.socket() as again:  # the port is free again
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind((sink.host, sink.port))
    finally:
        idle.close()
        handshaking.close()


@pytest.mark.parametrize("choice", LOOPS)
def test_a_client_on_the_tests_loop_meets_the_sinks_loop(choice: str) -> None:
    """The test's own asyncio loop stays asyncio's while the sink runs on
    another thread's loop, whichever it is."""

    async def send(sink: SMTPSink) -> str:
        assert type(asyncio.get_running_loop()).__module__.startswith("asyncio")
        reader, writer = await asyncio.open_connection(sink.host, sink.port)
        greeting = await reader.readline()
        writer.write(b"QUIT\r\n")
        await writer.drain()
        await reader.readline()
        writer.close()
        await writer.wait_closed()
        return greeting.decode()

    with SMTPSink(event_loop=choice) as sink:
        assert asyncio.run(send(sink)).startswith("220 ")
        sink.wait_until(lambda: sink.sessions and sink.sessions[0].end is not None)
        assert sink.sessions[0].commands == ["QUIT"]


@pytest.mark.parametrize("choice", LOOPS)
def test_a_client_that_closes_at_once_is_let_go(choice: str) -> None:
    """uvloop reads the EOF of a client that closed its side right after
    connecting before aiosmtpd's handler ran; the handler, cancelled before
    its first step, never greeted nor closed and the client hung."""
    with SMTPSink(event_loop=choice) as sink:
        for _ in range(20):
            with socket.create_connection((sink.host, sink.port), timeout=10) as sock:
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(1024):  # a greeting at most, then the close
                    pass
        sink.wait_until(lambda: len(sink.sessions) == 20)
        sink.wait_until(lambda: all(s.end is not None for s in sink.sessions))
        assert {s.end for s in sink.sessions} == {"client-closed"}
        # Greeted first, as on asyncio's loop.
        assert all(s.transcript[0].kind == "greeting" for s in sink.sessions)


@pytest.mark.parametrize("choice", LOOPS)
def test_a_client_that_closes_right_after_a_command_is_let_go(choice: str) -> None:
    """A command the sink leaves to aiosmtpd's handler starts that handler
    on its connection; the client's EOF read in the same step as the
    command must not cancel it before it ran (it would never close)."""
    with SMTPSink(event_loop=choice) as sink:
        for _ in range(20):
            with socket.create_connection((sink.host, sink.port), timeout=10) as sock:
                assert sock.recv(1024).startswith(b"220 ")
                sock.sendall(b"HELP\r\n")
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(1024):  # HELP's reply at most, then the close
                    pass
        sink.wait_until(lambda: len(sink.sessions) == 20)
        sink.wait_until(lambda: all(s.end is not None for s in sink.sessions))
        assert {s.end for s in sink.sessions} == {"client-closed"}


@pytest.mark.parametrize("choice", LOOPS)
def test_a_connection_handed_to_aiosmtpd_later_is_greeted_once(choice: str) -> None:
    """The sink greets a connection itself; aiosmtpd's handler, started by
    the first line the sink leaves to it, must not greet again."""
    with SMTPSink(event_loop=choice) as sink:
        with socket.create_connection((sink.host, sink.port), timeout=10) as sock:
            reader = sock.makefile("rb")
            assert reader.readline().startswith(b"220 ")
            sock.sendall(b"EHLO client.test\r\n")
            while not reader.readline().startswith(b"250 "):
                pass
            sock.sendall(b"HELP\r\n")  # aiosmtpd's: starts its handler
            assert reader.readline().startswith(b"250 Supported commands:")
            sock.sendall(b"NOOP\r\nQUIT\r\n")
            assert reader.readline() == b"250 OK\r\n"
            assert reader.readline() == b"221 Bye\r\n"
            assert reader.readline() == b""
            reader.close()
        sink.wait_until(lambda: sink.sessions and sink.sessions[0].end is not None)
        session = sink.sessions[0]
        assert [e.kind for e in session.transcript].count("greeting") == 1
        assert session.commands == ["EHLO", "HELP", "NOOP", "QUIT"]
        assert session.end == "quit"


@pytest.mark.parametrize("choice", LOOPS)
def test_a_client_that_has_read_the_greeting_finds_its_session(
    choice: str,
) -> None:
    """The session is in the store before the greeting goes out. The sink
    greeted a new connection before adding its session, so a test reading
    ``sessions`` right after connecting could find none (CI did, under
    load). Holding the store's lock stops the sink's thread where it adds
    the session: no greeting may come before that."""
    with SMTPSink(event_loop=choice) as sink:
        with sink._store._lock:  # the sink's thread waits here to add it
            sock = socket.create_connection((sink.host, sink.port), timeout=0.5)
            try:
                early = sock.recv(1024)
            except TimeoutError:
                early = b""  # as it must be: nothing said yet
            assert not early, f"greeted before the session was stored: {early!r}"
        with sock:
            sock.settimeout(10)
            assert sock.recv(1024) == b"220 smtpsink.test pytest-smtpsink\r\n"
            assert len(sink.sessions) == 1

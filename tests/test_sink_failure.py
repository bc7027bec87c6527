"""Limits, the sink's own failures, bounded teardown, and security checks."""

from __future__ import annotations

import base64
import contextlib
import smtplib
import socket
import sys
import time
from pathlib import Path

import pytest
from conftest import Factory

from pytest_smtpsink import (
    Mailbox,
    Session,
    SettingsError,
    SinkError,
    SinkSettings,
    SMTPSink,
)


def _session_of(view: Mailbox, client: smtplib.SMTP) -> Session:
    assert client.sock is not None
    local = client.sock.getsockname()[:2]
    return next(s for s in view.sessions if s.peer == local)


# -- size limits --------------------------------------------------------------------


def test_oversize_message_is_refused_with_552_and_never_half_stored(
    smtpsink_factory: Factory,
) -> None:
    sink = smtpsink_factory(max_size=2000)
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        client.ehlo()
        assert "size" in client.esmtp_features
        assert client.esmtp_features["size"] == "2000"
        # smtplib announces SIZE; without it the body is read and refused after.
        client.esmtp_features.pop("size")
        with pytest.raises(smtplib.SMTPDataError) as caught:
            client.sendmail(
                "a@example.com",
                ["b@example.com"],
                b"Subject: big\r\n\r\n" + (b"x" * 68 + b"\r\n") * 50,
            )
        assert caught.value.smtp_code == 552
        session = _session_of(sink, client)
        # The connection goes on: a small message in the same session is taken.
        client.sendmail(
            "a@example.com", ["b@example.com"], b"Subject: small\r\n\r\nok\r\n"
        )
    (message,) = sink.messages
    assert message.subject == "small"
    assert session.codes.count(552) == 1
    assert (
        "552 5.3.4 Message exceeds the size limit of 2000 bytes"
        in session.format_transcript()
    )


def test_size_parameter_over_the_limit_is_refused_at_mail(
    smtpsink_factory: Factory,
) -> None:
    sink = smtpsink_factory(max_size=2000)
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        client.ehlo()
        refused = client.mail("a@example.com", ["SIZE=2001"])
        # The reply names both sizes (aiosmtpd's says "exceeds fixed
        # maximum message size"), in any case SIZE= is spelled in.
        assert refused == (
            552,
            b"5.3.4 Declared SIZE=2001 exceeds the size limit of 2000 bytes",
        )
        assert client.docmd("MAIL FROM:<a@example.com> size=2500")[1] == (
            b"5.3.4 Declared SIZE=2500 exceeds the size limit of 2000 bytes"
        )
        assert client.mail("a@example.com", ["SIZE=2000"])[0] == 250
        session = _session_of(sink, client)
    mails = session.replies_to("MAIL")
    assert [e.code for e in mails] == [552, 552, 250]
    assert not sink.messages


# -- stored-bytes limit ------------------------------------------------------------------


def test_max_stored_bytes_refuses_with_452_and_the_next_read_names_the_limit() -> None:
    with SMTPSink(max_stored_bytes=5000) as sink:
        body = b"Subject: fill\r\n\r\n" + (b"y" * 98 + b"\r\n") * 20
        with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
            client.sendmail("a@example.com", ["b@example.com"], body)
            client.sendmail("a@example.com", ["b@example.com"], body)
            with pytest.raises(smtplib.SMTPDataError) as caught:
                client.sendmail("a@example.com", ["b@example.com"], body)
            assert caught.value.smtp_code == 452
            assert isinstance(caught.value.smtp_error, bytes)
            assert caught.value.smtp_error.startswith(b"4.3.4")
        assert sink._store.stored_bytes == 2 * len(body)  # nothing half-stored
        with pytest.raises(SinkError, match=r"max_stored_bytes=5000 would be exceeded"):
            sink.assert_sent(count=2)
        with pytest.raises(SinkError, match="max_stored_bytes"):
            sink.wait_for(count=3, timeout=5)
        sink.clear()  # frees the store and the error with it
        assert sink.messages == []
        with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
            client.sendmail("a@example.com", ["b@example.com"], body)
        sink.wait_for(timeout=10)


def test_max_stored_bytes_is_validated() -> None:
    with pytest.raises(SettingsError, match="max_stored_bytes"):
        SinkSettings(max_stored_bytes=0)
    with pytest.raises(SettingsError, match="max_stored_bytes"):
        SinkSettings(max_stored_bytes="1k")  # type: ignore[arg-type]
    assert "max_stored_bytes=10" in repr(SinkSettings(max_stored_bytes=10))


def test_max_stored_bytes_is_per_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import smtplib, pytest
from pytest_smtpsink import SinkError

BODY = b"Subject: x\\r\\n\\r\\n" + (b"z" * 98 + b"\\r\\n") * 30

@pytest.mark.smtpsink(max_stored_bytes=4000)
def test_fills(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as c:
        c.sendmail("a@example.com", ["b@example.com"], BODY)
        with pytest.raises(smtplib.SMTPDataError):
            c.sendmail("a@example.com", ["b@example.com"], BODY)
    with pytest.raises(SinkError, match="max_stored_bytes=4000"):
        smtpsink.assert_sent()

@pytest.mark.smtpsink(max_stored_bytes=4000)
def test_next_test_starts_empty(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as c:
        c.sendmail("a@example.com", ["b@example.com"], BODY)
    smtpsink.wait_for()
"""
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


# -- the sink's own failures -----------------------------------------------------------


def _kill(sink: SMTPSink) -> None:
    """Make the server thread die the way a bug would: an exception that
    escapes the event loop (SystemExit is not caught by asyncio's handler)."""

    def crash() -> None:
        raise SystemExit("simulated crash in the sink thread")

    assert sink._loop is not None
    assert sink._thread is not None
    sink._loop.call_soon_threadsafe(crash)
    sink._thread.join(5)


def test_a_dead_server_thread_says_so_and_why() -> None:
    sink = SMTPSink().start()
    view = sink.view()
    idle = socket.create_connection((sink.host, sink.port), timeout=5)
    assert idle.recv(100).startswith(b"220")  # the server has taken it in
    try:
        _kill(sink)
        assert not sink.running
        expected = (
            r"server thread died: SystemExit\('simulated crash in the sink thread'\)"
        )
        with pytest.raises(SinkError, match=expected):
            view.messages  # noqa: B018
        with pytest.raises(SinkError, match=expected):
            view.assert_sent()
        started = time.monotonic()
        with pytest.raises(SinkError, match=expected):
            view.wait_for(timeout=120)
        # At once, not after the timeout (the bound leaves room for a loaded CI).
        assert time.monotonic() - started < 60
    finally:
        started = time.monotonic()
        sink.stop()  # must not raise or hang on a dead loop
        assert time.monotonic() - started < 60
        idle.close()


@pytest.mark.parametrize("relay", [False, True])
def test_a_thread_that_cannot_start_leaves_no_port_or_loop_behind(
    monkeypatch: pytest.MonkeyPatch, relay: bool
) -> None:
    # A container's limit on processes: the start raised RuntimeError, not
    # SinkError, kept the port and the loop (ResourceWarnings later), and a
    # stop() then raised "cannot join thread before it is started".
    import threading

    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        if thread.name.startswith("smtpsink-") and "relay" not in thread.name:
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    before = {t.name for t in threading.enumerate()}
    sink = SMTPSink(relay="smtp://127.0.0.1:9", relay_to=".*") if relay else SMTPSink()
    with pytest.raises(
        SinkError,
        match=r"^cannot start the SMTP sink on 127\.0\.0\.1:\d+: "
        "can't start new thread$",
    ) as raised:
        sink.start()
    monkeypatch.undo()
    port = int(str(raised.value).split(":")[1])
    assert not sink.running
    sink.stop()  # nothing to stop, and says nothing
    # Its port is free again; no thread of it is left (the relay's neither).
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))
    assert {t.name for t in threading.enumerate()} <= before
    # Its port, another's to take now, is not this sink's; it never ran.
    with pytest.raises(SinkError, match="could not start"):
        sink.port  # noqa: B018
    with pytest.raises(
        SinkError, match="cannot wait for mail: the SMTP sink could not start"
    ):
        sink.wait_for(timeout=0)
    with pytest.raises(SinkError, match="a sink whose start failed cannot be started"):
        sink.start()


def test_death_during_a_wait_wakes_the_waiter() -> None:
    import threading

    with SMTPSink() as sink:
        view = sink.view()
        timer = threading.Timer(0.2, _kill, [sink])
        timer.start()
        started = time.monotonic()
        with pytest.raises(SinkError, match="server thread died"):
            view.wait_for(timeout=120)
        timer.join()
        assert time.monotonic() - started < 60  # woken, not timed out


def test_stopping_the_sink_wakes_a_waiter() -> None:
    # A wait in another thread slept to its timeout (for ever, with
    # timeout=1e300) when the sink stopped with no connection open.
    import threading

    sink = SMTPSink().start()
    view = sink.view()
    raised: list[BaseException] = []

    def wait() -> None:
        try:
            view.wait_for(timeout=600)
        except BaseException as error:
            raised.append(error)

    waiter = threading.Thread(target=wait, daemon=True)  # never keeps the run
    waiter.start()
    deadline = time.monotonic() + 30
    while not sink._store.watchers and time.monotonic() < deadline:
        time.sleep(0.001)  # a poll of the waiter's state, not a delay
    sink.stop()
    waiter.join(30)
    assert not waiter.is_alive(), "the waiter slept on"
    (error,) = raised
    assert isinstance(error, SinkError)
    assert "the SMTP sink was stopped" in str(error)


def test_a_listener_may_stop_the_sink() -> None:
    # stop() woke the listeners while it held the sink's lock: one that
    # stops the sink (once the first message is in) called stop() again
    # from inside, and waited for that lock for ever.
    import threading

    sink = SMTPSink().start()
    view = sink.view()

    def stop_at_the_first_message() -> None:
        if view.messages:
            sink.stop()

    sink.on_change(stop_at_the_first_message, lines=False)

    def send() -> None:
        with (
            contextlib.suppress(smtplib.SMTPException, OSError),  # stopped first
            smtplib.SMTP(sink.host, sink.port, timeout=30) as smtp,
        ):
            smtp.sendmail("a@example.com", ["b@example.com"], b"Subject: s\r\n\r\n")

    client = threading.Thread(target=send, daemon=True)
    client.start()
    client.join(30)
    stopper = threading.Thread(target=sink.stop, daemon=True)
    stopper.start()
    stopper.join(30)
    assert not stopper.is_alive(), "stop() hangs"
    assert not sink.running


def test_next_test_using_the_fixture_fails_saying_the_thread_died(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
import smtplib, socket, pytest
PORT = []

def test_kills(smtpsink_server):
    PORT.append(smtpsink_server.port)
    def crash():
        raise SystemExit("boom")
    smtpsink_server._loop.call_soon_threadsafe(crash)
    smtpsink_server._thread.join(5)

def test_the_port_is_closed():
    # Before: the port stayed open, and smtplib without a timeout hung.
    with pytest.raises(ConnectionRefusedError):
        smtplib.SMTP("127.0.0.1", PORT[0], timeout=5)

def test_next(smtpsink):
    raise AssertionError("not reached: the fixture fails first")

def test_and_the_one_after(smtpsink):
    raise AssertionError("not reached: the fixture fails first")
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_next*",
            "pytest-smtpsink: the sink smtp://127.0.0.1:* is unusable: the SMTP "
            "sink's server thread died: SystemExit('boom'); its port * is closed",
            "Traceback (most recent call last):",
            "*SystemExit: boom",
            "*ERROR at setup of test_and_the_one_after*",
        ]
    )
    result.stdout.no_fnmatch_line("*not reached*")
    result.stdout.no_fnmatch_line("*INTERNALERROR*")


def test_a_loop_stopped_without_stop_says_what_happened() -> None:
    sink = SMTPSink().start()
    try:
        assert sink._loop is not None
        assert sink._thread is not None
        sink._loop.call_soon_threadsafe(sink._loop.stop)
        sink._thread.join(5)
        with pytest.raises(SinkError) as caught:
            sink.assert_nothing_sent()
        # Before: "the SMTP sink's server thread died: None".
        assert "None" not in str(caught.value)
        assert "stopped without an error, but not through SMTPSink.stop()" in str(
            caught.value
        )
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((sink.host, sink.port), timeout=5)
    finally:
        sink.stop()


def test_a_client_left_connected_does_not_affect_the_next_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
import smtplib, socket
LEFT = []

def test_leaves_clients(smtpsink):
    s = socket.create_connection((smtpsink.host, smtpsink.port))
    s.recv(100)
    s.sendall(b"EHLO c\\r\\nMAIL FROM:<a@example.com>\\r\\nRCPT TO:<b@example.com>\\r\\nDATA\\r\\n")
    f = s.makefile("rb")
    while not f.readline().startswith(b"354"):
        pass
    s.sendall(b"Subject: x\\r\\n\\r\\nhalf")
    LEFT.append((s, f))
    c = smtplib.SMTP(smtpsink.host, smtpsink.port)
    c.ehlo()
    c.mail("z@example.com")
    LEFT.append(c)
    smtpsink.hang("RCPT")
    c.putcmd("RCPT", "TO:<hung@example.com>")  # left hanging (or not yet read)
    assert len(smtpsink.sessions) == 2

def test_next(smtpsink):
    assert smtpsink.sessions == () and smtpsink.messages == []
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=5) as c:
        c.sendmail("a@example.com", ["b@example.com"], b"Subject: fine\\r\\n\\r\\nok\\r\\n")
    assert smtpsink.wait_for(timeout=5).subject == "fine"
    assert len(smtpsink.sessions) == 1

def teardown_module():  # after test_next; unclosed sockets would warn later
    for item in LEFT:
        for thing in reversed(item) if isinstance(item, tuple) else (item,):
            thing.close()
"""
    )
    started = time.monotonic()
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)
    assert time.monotonic() - started < 60  # nothing waited for a timeout


def test_stop_with_open_connections_is_prompt() -> None:
    sink = SMTPSink().start()
    idle = [
        socket.create_connection((sink.host, sink.port), timeout=5) for _ in range(20)
    ]
    mid_data = socket.create_connection((sink.host, sink.port), timeout=5)
    mid_data.sendall(
        b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
    )
    replies = mid_data.makefile("rb")
    while not replies.readline().startswith(b"354"):
        pass
    mid_data.sendall(b"Subject: never finished\r\n\r\nsome")
    sink.wait_until(lambda: len(sink.sessions) == 21)
    started = time.monotonic()
    sink.stop()
    took = time.monotonic() - started
    try:
        # Not a speed test: a stop() that waited on the idle connections
        # would take their idle_timeout (300 s).
        assert took < 60, f"stop() took {took:.2f} s"
        assert all(s.end == "server-closed" for s in sink.sessions)
        assert sink.messages == []
        # Closed by the server: EOF or, as it aborts, a reset.
        with contextlib.suppress(ConnectionResetError):
            assert replies.read() == b""
    finally:
        replies.close()
        for sock in [*idle, mid_data]:
            sock.close()


# -- security --------------------------------------------------------------------------------


def test_loopback_by_default_and_remote_must_be_asked_for() -> None:
    assert SinkSettings().host == "127.0.0.1"
    with pytest.raises(SettingsError, match="allow_remote=True"):
        SinkSettings(host="0.0.0.0")
    with pytest.raises(SettingsError, match="allow_remote=True"):
        SinkSettings(host="192.0.2.1")
    assert SinkSettings(host="::1").host == "::1"


def test_remote_bind_is_flagged_in_the_report_header(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("--smtpsink-host=0.0.0.0", "--smtpsink-allow-remote")
    result.stdout.fnmatch_lines(["smtpsink: WARNING: not a loopback address*"])


def test_auth_plain_secret_is_masked(smtpsink_factory: Factory) -> None:
    sink = smtpsink_factory(auth={"ann": "s3cret-pw"}, auth_plaintext=True)
    token = base64.b64encode(b"\0ann\0s3cret-pw").decode()
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        client.ehlo()
        assert client.docmd("AUTH", f"PLAIN {token}")[0] == 235
        client.sendmail(
            "ann@example.com", ["b@example.com"], b"Subject: x\r\n\r\nx\r\n"
        )
        assert client.sock is not None
        local = client.sock.getsockname()[:2]
    sink.wait_for(timeout=10)
    session = next(s for s in sink.sessions if s.peer == local)
    shown = "\n".join(
        [
            repr(session),
            session.format_transcript(),
            repr(sink),
            repr(sink.settings),
            repr(sink.messages),
            *(repr(e) for e in session.transcript),
        ]
    )
    assert "s3cret-pw" not in shown
    assert token not in shown
    assert "AUTH PLAIN ****" in shown
    assert session.authenticated_as == "ann"


def test_nothing_is_written_to_disk_unless_asked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import smtplib

def test_sends(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as c:
        c.sendmail("a@example.com", ["b@example.com"], b"Subject: x\\r\\n\\r\\nx\\r\\n")
    smtpsink.wait_for()

def test_fails(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as c:
        c.sendmail("a@example.com", ["b@example.com"], b"Subject: y\\r\\n\\r\\ny\\r\\n")
    smtpsink.assert_sent(subject="nope")
"""
    )
    root = Path(pytester.path)
    before = set(root.rglob("*"))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    after = set(root.rglob("*"))
    new = {p for p in after - before if "__pycache__" not in p.parts}
    assert new == set(), new


def test_a_dropped_sink_warns_and_closes_its_port() -> None:
    import gc

    sink = SMTPSink().start()
    host, port = sink.host, sink.port
    # A fault rule and a connection: neither may keep the sink alive.
    sink.fail("RCPT", 550)
    with smtplib.SMTP(host, port, timeout=10) as client:
        client.ehlo()
    thread = sink._thread
    assert thread is not None
    del sink
    with pytest.warns(
        ResourceWarning, match=rf"unclosed SMTPSink on 127\.0\.0\.1:{port}"
    ):
        gc.collect()
    assert not thread.is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=5)


def test_a_dropped_sink_stops_when_its_warning_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Under -W error the warning raised in the finalizer, and the stop after
    # it never ran: the thread and the port stayed for the rest of the run.
    import gc
    import warnings

    sink = SMTPSink().start()
    host, port = sink.host, sink.port
    thread = sink._thread
    assert thread is not None
    raised: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: raised.append(u.exc_value))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        del sink
        gc.collect()
    assert [type(e) for e in raised] == [ResourceWarning]
    assert not thread.is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=5)


def test_a_stopped_sink_is_dropped_without_a_warning() -> None:
    import gc
    import warnings

    sink = SMTPSink().start()
    sink.stop()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        del sink
        gc.collect()


def test_a_sink_collected_on_its_own_server_thread_still_stops() -> None:
    import gc
    import threading
    import warnings

    sink = SMTPSink().start()
    loop, thread, port = sink._loop, sink._thread, sink.port
    assert loop is not None
    assert thread is not None
    collected = threading.Event()

    def collect() -> None:
        gc.collect()
        collected.set()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.disable()  # so that the collection happens on the server thread
        try:
            del sink
            loop.call_soon_threadsafe(collect)
            assert collected.wait(10)
        finally:
            gc.enable()
        thread.join(10)
    assert [w.category for w in caught] == [ResourceWarning]
    assert not thread.is_alive()
    assert loop.is_closed()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


# Not named event_loop: pytest-asyncio has a fixture of that name.
@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_a_listener_may_stop_the_sink_while_another_thread_stops_it(
    loop_kind: str,
) -> None:
    # The stop closes the connections; their ends call the listeners, one
    # of which stops the sink: on the stopping thread (asyncio: the loop's
    # last steps run there) or on the loop thread (uvloop), while the first
    # stop() held the sink's lock.
    import socket
    import threading

    if loop_kind == "uvloop":
        pytest.importorskip("uvloop")
    sink = SMTPSink(event_loop=loop_kind).start()
    view = sink.view()
    loop = sink._loop
    assert loop is not None

    def stop_once_the_client_left() -> None:
        if view.sessions and view.sessions[0].end is not None:
            sink.stop()

    sink.on_change(stop_once_the_client_left, lines=False)
    with socket.create_connection((sink.host, sink.port), 30) as client:
        client.recv(100)  # the greeting: the session is open
        stopper = threading.Thread(target=sink.stop, daemon=True)
        stopper.start()
        stopper.join(30)
    assert not stopper.is_alive(), "stop() hangs"
    assert loop.is_closed()

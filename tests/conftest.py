"""Shared helpers: real clients sending real mail over loopback."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import importlib.util
import os
import re
import smtplib
import socket
import threading
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator
from email.message import EmailMessage
from typing import TypeVar

import external
import pytest

# Loaded before any pytester run: an in-process run unloads the modules it
# imported first, and cryptography's Python half imported again no longer
# matches its Rust half ("curve must be an EllipticCurve instance" in a
# later test's trustme.CA(), depending on which tests a worker got).
import trustme  # noqa: F401
from dovecot import INSTALL_HINT, Dovecot, find_program

from pytest_smtpsink import Mailbox, SinkError, SMTPSink


def start_on_ipv6_loopback() -> SMTPSink:
    """A started sink on ``::1``; the test is skipped where there is none."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    sink = SMTPSink(host="::1")
    try:
        sink.start()
    except SinkError as error:
        pytest.skip(f"no IPv6 loopback here: {error}")
    return sink


_T = TypeVar("_T")


def _loop_of(sink: SMTPSink | Mailbox) -> asyncio.AbstractEventLoop:
    server = sink._sink if isinstance(sink, Mailbox) else sink
    assert server._loop is not None, "the sink is not running"
    return server._loop


def on_the_loop(sink: SMTPSink | Mailbox, call: Callable[[], _T]) -> _T:
    """``call()`` run on ``sink``'s loop thread, after what is queued there
    (so also: once that has run)."""
    done: concurrent.futures.Future[_T] = concurrent.futures.Future()

    def run() -> None:
        try:
            done.set_result(call())
        except BaseException as error:
            done.set_exception(error)

    _loop_of(sink).call_soon_threadsafe(run)
    return done.result(30)


@contextlib.contextmanager
def loop_held(sink: SMTPSink | Mailbox) -> Iterator[None]:
    """Hold ``sink``'s loop thread for the block: what a client connects and
    writes meanwhile is all in the server's buffers when it first reads. A
    test of a short idle timeout does its setup so: no pause of the test's
    own thread (a busy machine) can let the timeout in between commands."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(60)

    _loop_of(sink).call_soon_threadsafe(hold)
    try:
        assert holding.wait(30), "the sink's loop did not come round"
        yield
    finally:
        release.set()


def time_out_now(sink: SMTPSink | Mailbox) -> None:
    """Fire the idle timeout of ``sink``'s SMTP connections now, as if they
    sat idle for it: a test of what follows a timeout need not wait out a
    short one, whose speed a busy machine decides. For established, idle
    connections only (not one in its TLS handshake, or closing)."""
    server = sink._sink if isinstance(sink, Mailbox) else sink

    def fire() -> None:
        assert server._runtime is not None
        for connection in list(server._runtime.state.connections):
            connection._idle_deadline = connection._armed_for  # no traffic since
            connection._timeout_cb()

    on_the_loop(server, fire)


def slow_reader() -> socket.socket:
    """A client socket with a small receive window (and a 30 s timeout): a
    server's writes to one that stops reading soon wait unsent."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.settimeout(30)
    return client


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


def unread_future_errors() -> list[asyncio.Future[object]]:
    """The live futures holding an exception nobody read: asyncio logs
    "Future exception was never retrieved" for each when it is freed. A
    connection's reset leaves its error in one (asyncio's closed-future);
    on Python 3.12 in debug mode the connection often outlives its socket
    in a reference cycle, and the collector may free that future first.
    By type, not isinstance(): that asks a lazy object for its __class__,
    and one of Django's sets itself up then (and raised)."""
    return [
        obj
        for obj in gc.get_objects()
        if issubclass(type(obj), asyncio.Future)
        and obj.done()
        and not obj.cancelled()
        and obj._log_traceback
    ]


def slow_step_report(line: str) -> bool:
    """Whether ``line`` is asyncio's debug-mode report of a slow loop step."""
    return _SLOW_STEP.fullmatch(line) is not None


def plugin_frames(output: str, *modules: str) -> list[str]:
    """The traceback frames in ``output`` (a pytest run's) that are in the
    plugin's ``modules`` (file names such as ``"_dns.py"``; any of its
    modules when none is named): what ``__tracebackhide__`` keeps out.
    Frames only: under load, asyncio's report of a slow loop step (see
    `slow_step_report`), captured in the report's log, names the plugin's
    files too."""
    names = "|".join(re.escape(module) for module in modules) or r"[\w/]+\.py"
    frame = re.compile(rf"^\S*pytest_smtpsink/(?:{names}):\d+: ", re.MULTILINE)
    return [match.group() for match in frame.finditer(output)]


Send = Callable[..., EmailMessage]
#: The type of the ``smtpsink_factory`` fixture.
Factory = Callable[..., Mailbox]


#: Packages a test may import or skip even under CI: uvloop is the speed
#: extra, installed in one env only; resource is Unix's.
_MAY_BE_MISSING = frozenset({"uvloop", "resource"})


class _ImportSkipsFailUnderCI:
    """Under CI (`external.required`), a test skipped because a package of
    the test extra could not be imported (``pytest.importorskip``) fails:
    CI installs the extra, and a skip there would hide a lost dependency
    or a broken import, and prove nothing."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.skipped and call.excinfo is not None:
            _fail_an_import_skip(report, str(call.excinfo.value))
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(
        self, collector: pytest.Collector
    ) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
        # A module's own importorskip, at its top: the whole module skipped.
        report = yield
        if report.skipped:
            # (path, line, "Skipped: could not import 'x': ...")
            longrepr = report.longrepr
            reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
            _fail_an_import_skip(report, reason)
        return report


def _fail_an_import_skip(
    report: pytest.TestReport | pytest.CollectReport, reason: str
) -> None:
    """Make ``report`` a failure if ``reason`` is importorskip's for a
    package the test extra installs."""
    found = re.search(r"could not import '([\w.]+)'", reason)
    if found and found.group(1).partition(".")[0] not in _MAY_BE_MISSING:
        report.outcome = "failed"
        report.longrepr = (
            f"{reason}: the test extra installs it, and "
            f"{external.REQUIRE_ENV} is set, so this is a failure"
        )


class _AsyncioLoopLeftover:
    """Closes the event loop pytest-asyncio leaves behind.

    pytest-asyncio 0.23 (the oldest env's) ends each of its tests by setting
    a fresh, unclosed loop as the main thread's current one. The next
    ``asyncio.run()`` in another test replaces it without closing it, and
    its garbage collection (a ResourceWarning: the loop's self-pipe socket)
    then fails whichever test happens to be running. pytest-asyncio closes
    that loop itself only when its next test starts.
    """

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Iterator[None]:
        yield
        if item.get_closest_marker("asyncio") is None:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                loop = asyncio.get_event_loop_policy().get_event_loop()
            except RuntimeError:  # none is set: nothing left behind
                return
        if not loop.is_running() and not loop.is_closed():
            loop.close()
            # Not a closed loop as the current one: get_event_loop() would
            # return it. pytest-asyncio's next test copes with None.
            asyncio.set_event_loop(None)


def _end_rerunfailures_spin() -> None:
    """Ends the busy loop of pytest-rerunfailures before 16.7 (the oldest
    env's 14.0) in inner runs with xdist.

    Its controller serves each xdist worker on a thread that reads the
    socket a byte at a time until a delimiter, with no end-of-file check:
    once the worker exits, ``recv`` returns ``b""`` at once, for ever. Every
    in-process pytester run with ``-n`` left two threads spinning in this
    process, and in the oldest env the suite took over 16 minutes instead
    of 3 and failed. 16.7 raises ConnectionError there, which the thread
    ends on; 16.7 needs pytest 8.2, so the oldest env cannot have it.
    """
    try:
        from pytest_rerunfailures import SocketDB  # type: ignore[import-untyped]
    except ImportError:
        return
    if hasattr(SocketDB, "_sock_recv_bytes"):  # 16.7 and later: fixed
        return

    def sock_recv(self: object, conn: socket.socket) -> str:
        received = bytearray()
        while (byte := conn.recv(1)) != b"\n":
            if not byte:
                # Closed here: the thread ends on the error without closing
                # it (a ResourceWarning, an error under -W error).
                conn.close()
                raise ConnectionError("the xdist worker hung up")
            received += byte
        return received.decode()

    SocketDB._sock_recv = sock_recv


def pytest_configure(config: pytest.Config) -> None:
    # Registered, not a conftest hook: conftest hooks apply to the tests
    # under their own directory, and docs/examples has a pytest-asyncio
    # test too.
    config.pluginmanager.register(_AsyncioLoopLeftover(), "smtpsink-asyncio-loop")
    if external.required():
        config.pluginmanager.register(
            _ImportSkipsFailUnderCI(), "smtpsink-import-skips-fail"
        )
    _end_rerunfailures_spin()


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

    No inner run uses Hypothesis or anyio's plugin (the test extra installs
    them for this suite's own tests), and loading them took more than half
    the CPU time of starting an inner xdist run's processes: they are left
    out of inner runs.
    """
    options = ["-p", "no:hypothesispytest", "-p", "no:anyio"]
    if importlib.util.find_spec("pytest_asyncio") is not None:
        options += ["-o", "asyncio_default_fixture_loop_scope=function"]
    monkeypatch.setenv("PYTEST_ADDOPTS", " ".join(options))
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

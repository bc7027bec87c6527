"""`SMTPSink`: a real SMTP server on a background thread.

We run our own event-loop thread rather than aiosmtpd's ``Controller``: the
Controller cannot bind port 0 (its readiness probe connects to the port it
was *given*, aiosmtpd issues 276 and 388), its probe is a real connection that
would show up as a session, a busy port costs its whole ``ready_timeout``,
and a failing protocol factory can hang ``stop()`` (issue 394). Creating the
listening socket with ``loop.run_until_complete`` in the calling thread, before
the loop thread exists, makes every start failure an immediate exception in
the caller, and the real bound port is known at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import functools
import importlib
import ipaddress
import logging
import os
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, overload

from ._faults import Fault, Faults
from ._listening import LoopUnavailable, listen
from ._mailbox import Mailbox
from ._settings import SinkSettings, is_domain_name
from ._smtp import ServerState
from ._store import Follower, Store
from ._text import format_address, shown_argument

if TYPE_CHECKING:
    from ._imap import IMAPEndpoint
    from ._pop3 import POP3Endpoint

_STOP_TIMEOUT = 10.0


class SinkError(RuntimeError):
    """The sink could not start, or is no longer running."""

    # Tracebacks name it as users import it, not by this private module.
    __module__ = "pytest_smtpsink"


class Service(Protocol):
    """Something else served on a sink's loop (the DNS stub; later POP3 and
    IMAP): started on first use by `SMTPSink.attach`, closed with the sink."""

    def close(self) -> None:
        """Stop serving (on the loop thread, when the sink stops).

        A service whose connections fault rules can hold (POP3) also has
        ``release_held(rules)``, called when those rules are removed."""


_S = TypeVar("_S", bound=Service)


#: The start of asyncio's report of an accept with no file descriptor left.
_OUT_OF_RESOURCE = "socket.accept() out of system resource"
#: Seconds between two logged reports of it (see `_Runtime._out_of_resource`).
_RESOURCE_REPORT_EVERY = 10.0
_LOG = logging.getLogger("pytest_smtpsink")


class _Runtime:
    """The running server: its loop, thread and listening socket.

    Kept apart from `SMTPSink` so that neither the server thread nor the loop
    holds a reference to the sink: a sink dropped without `SMTPSink.stop`
    can then be collected, and its finalizer (see `_stop_dropped`) warns and
    closes the port, as an unclosed socket does.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        server: asyncio.base_events.Server,
        state: ServerState,
        store: Store,
    ) -> None:
        self.loop, self.server, self.state, self.store = loop, server, state, store
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.stopping = False
        self.stopped = False
        # Set when stop() ran on the server thread (a finalizer that the
        # garbage collector happened to run there): the thread then finishes
        # the loop itself, as no other thread waits to.
        self.finish_here = False
        self.failure: BaseException | None = None
        #: What ended the server thread when stop() did not: set only then.
        self.death: str | None = None
        #: Started by SMTPSink.attach, by name; closed in shutdown().
        self.services: dict[str, Service] = {}
        #: Set once the stop claimed by `stop` is done (or scheduled).
        self._done = threading.Event()
        #: The thread that claimed the stop: a listener it calls may stop
        #: the sink again, which must not wait for itself.
        self._stopper: threading.Thread | None = None
        #: See `_out_of_resource`.
        self._resource_reported_at = -_RESOURCE_REPORT_EVERY
        self._resource_errors = 0

    def loop_exception(
        self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]
    ) -> None:
        # stop() cancels the accept of a client still in its TLS handshake;
        # asyncio would log that cancellation as an error. Everything else
        # is reported as usual.
        # So does release() after the loop died: it cancels what was left
        # (an accept still waiting, whose cancellation debug mode reports).
        if (self.stopping or self.death is not None) and isinstance(
            context.get("exception"), asyncio.CancelledError
        ):
            return
        if str(context.get("message", "")).startswith(_OUT_OF_RESOURCE):
            self._out_of_resource(context)
            return
        loop.default_exception_handler(context)

    def _out_of_resource(self, context: dict[str, Any]) -> None:
        """asyncio's report of an accept that found no file descriptor left
        (EMFILE): Python 3.11's loop reports it once for each connection of
        the backlog and tries again, which logged 63,000 tracebacks (25 MB)
        in 4 s into the running test's log. Said once, and then at most
        once every `_RESOURCE_REPORT_EVERY` seconds with how many more came;
        the sink serves the connections it has meanwhile."""
        now = time.monotonic()
        self._resource_errors += 1
        if now - self._resource_reported_at < _RESOURCE_REPORT_EVERY:
            return
        more = self._resource_errors - 1
        self._resource_reported_at, self._resource_errors = now, 0
        error = context.get("exception")
        advice = {
            errno.EMFILE: " (no file descriptor left: raise the limit, ulimit "
            "-n, or close connections the test leaves open)",
            # The system's limit: ulimit -n does not change it.
            errno.ENFILE: " (the system has no file left to open: close "
            "connections or files, or raise fs.file-max)",
        }.get(getattr(error, "errno", 0), "")
        _LOG.error(
            "the sink cannot accept connections: %s%s; it serves the ones it "
            "has and accepts again when it can%s",
            error if error is not None else context.get("message"),
            advice,
            f" ({more} more such errors since the last report not logged)"
            if more
            else "",
        )

    def serve(self) -> None:
        try:
            self.loop.run_forever()
        except BaseException as error:  # recorded so users see why it died
            # Not re-raised: the next use of the sink raises SinkError
            # chained to this error, where a thread exception would only
            # warn at some later test.
            self.failure = error
            self.death = repr(error)
        else:
            if self.stopping:
                if self.finish_here:
                    self.finish()
                return
            self.death = (
                "its event loop stopped without an error, but not through "
                "SMTPSink.stop() (something called loop.stop() on it)"
            )
        try:
            # The port must not stay open behind a dead loop: a client without
            # a timeout would wait forever for a greeting that never comes.
            self.release()
        finally:
            # Wake waiters: check_running() now says why.
            self.store.touch()

    def shutdown(self) -> None:
        """Close the listening socket and every connection (loop thread, or
        the caller's thread once the loop thread has ended)."""
        server, state = self.server, self.state
        # Synchronous: it needs no running loop, so a dead loop frees its port.
        server.close()
        for service in self.services.values():
            service.close()
        for connection in list(state.connections):
            connection.close_at_stop()
        # A client still in its implicit-TLS handshake has no SMTP session
        # running yet; Python 3.13 can abort it (3.12's wait_closed would
        # wait for it; the handshake timeout ends it on older Pythons).
        abort_clients = getattr(server, "abort_clients", None)
        if abort_clients is not None:
            abort_clients()

    def release_held(self, rules: tuple[Fault, ...]) -> None:
        """Close the connections that ``rules`` (just removed) hold, in SMTP
        and in the attached services that hold connections (loop thread)."""
        self.state.release(rules)
        for service in self.services.values():
            release = getattr(service, "release_held", None)
            if release is not None:
                release(rules)

    def release(self) -> None:
        """After the loop stopped: close everything and finish the loop's
        remaining work on this thread. Safe to call twice."""
        loop = self.loop
        if loop.is_closed():
            return
        try:
            self.shutdown()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                _run_until_complete(
                    loop, asyncio.gather(*pending, return_exceptions=True)
                )
            with contextlib.suppress(asyncio.TimeoutError):
                # Bounded: see abort_clients in shutdown().
                _run_until_complete(
                    loop,
                    asyncio.wait_for(self.server.wait_closed(), _STOP_TIMEOUT / 5),
                )
        except Exception:
            # A broken loop: whatever broke it may break this too, and the
            # cause is already recorded. The listening socket closes anyway.
            with contextlib.suppress(Exception):
                self.server.close()

    def stop(self) -> bool:
        """Stop the server; True if this call did. The stop runs outside
        the lock: closing the connections calls the store's listeners, and
        one may stop the sink again. Such a call, or one on the loop's own
        thread, returns at once; one from another thread waits for the
        stop under way."""
        current = threading.current_thread()
        with self.lock:
            claimed = not self.stopped
            if claimed:
                self.stopped = True
                self.stopping = True
                self._stopper = current
            wait = current is not self.thread and current is not self._stopper
        if not claimed:
            if wait:
                self._done.wait(_STOP_TIMEOUT * 2)
            return False
        try:
            self._stop()
        finally:
            self._done.set()
        return True

    def _stop(self) -> None:
        """The stop `stop` claimed: on this thread, or scheduled on the loop
        when this is the loop's own thread."""
        loop, thread, server = self.loop, self.thread, self.server
        assert thread is not None

        def stop_accepting() -> None:
            # An accepted client's transport attaches to the server one
            # loop iteration after the accept. Closing the server inside
            # that window breaks asyncio (CPython gh-109564: an assertion
            # in Server._attach on 3.12+, a TypeError later in __del__),
            # so stop accepting first and close after the pending accepts
            # (scheduled before shutdown, so run before it) are attached.
            loop.call_soon(shutdown)  # first: nothing below may prevent it
            with contextlib.suppress(Exception):  # e.g. a loop without readers
                for sock in server.sockets:
                    loop.remove_reader(sock.fileno())

        def shutdown() -> None:
            self.shutdown()
            # If the server thread died, this runs on the caller's thread,
            # inside run_until_complete(): stopping would make that raise
            # "Event loop stopped before Future completed".
            if threading.current_thread() is thread:
                loop.stop()

        if threading.current_thread() is thread:
            # A finalizer that the garbage collector ran on the server
            # thread itself: it cannot wait for its own thread.
            self.finish_here = True
            loop.call_soon(stop_accepting)
            return
        loop.call_soon_threadsafe(stop_accepting)
        thread.join(_STOP_TIMEOUT)
        if thread.is_alive():  # pragma: no cover - would be a bug in shutdown()
            raise SinkError(f"the sink thread did not stop within {_STOP_TIMEOUT} s")
        # The loop has stopped; finish its remaining work on this thread.
        self.finish()

    def finish(self) -> None:
        loop = self.loop
        self.release()
        _run_until_complete(loop, loop.shutdown_asyncgens())
        loop.close()
        if self.state.relay is not None:
            # Its own thread: what is still queued is marked failed.
            self.state.relay.stop()


def _stop_dropped(runtime: _Runtime, where: str) -> None:
    """The finalizer of a sink that was never stopped."""
    if runtime.stopped:
        return
    import warnings

    # Stopped whatever the warning does: under -W error it raises, and a
    # stop after it never ran (the thread and the port stayed), as a
    # socket's finalizer closes it whatever its warning does.
    try:
        warnings.warn(
            f"unclosed SMTPSink on {where}: call stop() or use `with SMTPSink() "
            "as sink:`; it is stopped now",
            ResourceWarning,
            stacklevel=2,
        )
    finally:
        runtime.stop()


class SMTPSink(Mailbox):
    """A throwaway SMTP server that keeps everything it is sent.

    Usable on its own, without pytest::

        with SMTPSink() as sink:
            send_mail(host=sink.host, port=sink.port)
            sink.assert_sent(to="ann@example.com")

    ``settings`` (or keyword arguments, see `SinkSettings`) choose TLS, AUTH,
    limits and the address. The default binds 127.0.0.1 on a free port.

    A sink that is dropped while running, without `stop`, emits a
    `ResourceWarning` when it is garbage collected and stops then.
    """

    # The sink is the mailbox of everything it received: used without pytest
    # there may be no test to speak of.
    _scope = "since the sink started"
    # How many times a test's first mailbox let the earlier mail go
    # (`forget_before`): a view of an earlier era is refused.
    _test_era = 0

    def __init__(self, settings: SinkSettings | None = None, **overrides: Any) -> None:
        __tracebackhide__ = True  # overrides may hold a password
        # SMTPSink({"tls": ...}) or SMTPSink(USERS): an AttributeError deep
        # in the set-up said nothing of the call.
        if settings is not None and not isinstance(settings, SinkSettings):
            raise TypeError(
                "SMTPSink() takes a SinkSettings or keyword settings "
                f"(SMTPSink(tls='starttls')), got {shown_argument(settings)}"
            )
        base = settings if settings is not None else SinkSettings()
        self._settings = base.replace(**overrides) if overrides else base
        store = Store(self._settings.recipient_delimiter)
        super().__init__(self, store, store.cursor())
        self._faults = Faults()
        self._faults.release_with(self._release_held)
        self._lock = threading.Lock()
        #: Whether start() was called, even if it failed: a sink starts once.
        self._started = False
        self._thread: threading.Thread | None = None
        self._runtime: _Runtime | None = None
        self._address: tuple[str, int] | None = None
        self._bind_address: tuple[str, int] | None = None
        self._server_tls: ssl.SSLContext | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    # -- lifecycle ---------------------------------------------------------------

    @property
    def settings(self) -> SinkSettings:
        return self._settings

    @property
    def _loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop of the running sink (its runtime's), else None."""
        runtime = self._runtime
        return None if runtime is None else runtime.loop

    @property
    def running(self) -> bool:
        """Whether the sink is serving: True from `start` until `stop`."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> SMTPSink:
        """Bind and start serving. Raises `SinkError` at once if it cannot."""
        with self._lock:
            if self._thread is not None:
                raise SinkError("this sink is already running")
            if self._started:
                raise SinkError(
                    "a stopped sink cannot be restarted; make a new one"
                    if self._address is not None
                    else "a sink whose start failed cannot be started again; "
                    "make a new one"
                )
            self._started = True
            settings = self._settings
            connect_host = connectable(settings.host)
            if settings.tls is not None:
                self._server_tls = _server_context(settings, connect_host)
            loop = new_event_loop(settings._uses_uvloop())
            state = ServerState(
                settings, self._store, self._faults, loop, self._server_tls
            )
            try:
                # Implicit TLS too listens in plain TCP: the protocol runs the
                # handshake itself (RecordingSMTP.connection_made), so that a
                # failed handshake is recorded as a session saying why.
                server = _run_until_complete(
                    loop,
                    listen(loop, state.make_protocol, settings.host, settings.port),
                )
            except OSError as error:
                loop.close()
                # asyncio wraps the errno in a sentence that repeats the
                # address; the plain reason reads better after ours.
                reason = plain_reason(error)
                raise SinkError(
                    f"cannot listen on {format_address(settings.host, settings.port)}: "
                    f"{reason}"
                ) from error
            runtime = _Runtime(loop, server, state, self._store)
            loop.set_exception_handler(runtime.loop_exception)
            host, port = server.sockets[0].getsockname()[:2]
            self._bind_address = (host, port)
            self._address = (connect_host, port)
            try:
                self._start_threads(runtime, port)
            except BaseException as error:
                # No thread to be had (a container's limit on processes, many
                # xdist workers): the port, the loop and a relay thread
                # started go too, and a stop() later has nothing to do.
                if self._finalizer is not None:
                    self._finalizer.detach()
                self._thread, self._runtime = None, None
                # Its port is another's to take now: not this sink's.
                self._address = self._bind_address = None
                runtime.finish()
                if not isinstance(error, Exception):
                    raise
                raise SinkError(
                    f"cannot start the SMTP sink on {format_address(host, port)}: "
                    f"{plain_reason(error) if isinstance(error, OSError) else error}"
                ) from error
        return self

    def _start_threads(self, runtime: _Runtime, port: int) -> None:
        """Start the server's thread (and the relay's): the rest of `start`,
        under its lock, once the port is bound."""
        if self._settings.relay is not None:
            # Only once the port is bound: a failed start leaves no thread.
            from ._relay import Relayer

            runtime.state.relay = Relayer(
                self._settings, self._store, f"smtpsink-relay-{port}"
            )
        # The thread runs the runtime, never this object (see _Runtime).
        thread = threading.Thread(
            target=runtime.serve, name=f"smtpsink-{port}", daemon=True
        )
        runtime.thread = thread
        self._thread, self._runtime = thread, runtime
        assert self._bind_address is not None
        self._finalizer = weakref.finalize(
            self, _stop_dropped, runtime, format_address(*self._bind_address)
        )
        # A sink still running at exit ends with the process, unwarned.
        self._finalizer.atexit = False
        thread.start()

    def stop(self) -> None:
        """Close every connection, stop the thread and release the port.

        Safe to call more than once, and on a sink that never started.
        """
        with self._lock:
            runtime = self._runtime
            self._thread = None
            if runtime is None:
                return
            if self._finalizer is not None:
                # It holds the runtime, and with it the store, until this
                # sink is collected.
                self._finalizer.detach()
        # Outside the lock: what the stop runs (connections closing) calls
        # the store's listeners, which may call stop() themselves.
        stopped_here = True  # unless it says not: a stop that raised was ours
        try:
            stopped_here = runtime.stop()
        finally:
            with self._lock:
                # The closed loop (about 250 KB under uvloop) and the server
                # go with the runtime; the store, and what it captured, stay
                # readable. A pool's let-go sink, which its tests' reports
                # still refer to, then costs little more than its mail.
                if self._runtime is runtime:
                    self._runtime = None
            if stopped_here:
                # A thread waiting for mail learns of the stop now, once.
                self._store.touch()

    def attach(
        self, name: str, start: Callable[[asyncio.AbstractEventLoop, Store], _S]
    ) -> _S:
        """The service ``name`` on this sink's loop, started on first use with
        ``start(loop, store)`` (on the calling thread) and closed when the
        sink stops. Raises `SinkError` if the sink is not running. What
        ``start`` returns must not refer to the sink (see `_Runtime`)."""
        with self._lock:
            self._check_running(f"start its {name.upper()} server")
            runtime = self._runtime
            assert runtime is not None
            service = runtime.services.get(name)
            if service is None:
                try:
                    service = start(runtime.loop, self._store)
                except LoopUnavailable as error:
                    raise SinkError(
                        f"could not start its {name.upper()} server: {error}"
                    ) from None
                runtime.services[name] = service
            return service  # type: ignore[return-value]

    def _release_held(self, rules: tuple[Fault, ...]) -> None:
        """Close the connections that removed fault ``rules`` hold (a hang, a
        delay): on the loop, waiting briefly so the test ends with them
        closed. Test thread."""
        runtime = self._runtime
        if runtime is None or not self.running:
            return
        if threading.current_thread() is runtime.thread:  # e.g. an on_change
            runtime.release_held(rules)
            return
        done = threading.Event()

        def release() -> None:
            try:
                runtime.release_held(rules)
            finally:
                done.set()

        try:
            runtime.loop.call_soon_threadsafe(release)
        except RuntimeError:  # the loop closed meanwhile
            return
        done.wait(2.0)

    def __enter__(self) -> SMTPSink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def check_alive(self) -> None:
        """Raise `SinkError` saying why (chained to the cause, if any) when
        the server thread ended without `stop`."""
        # The runtime read once: a stop on another thread drops it.
        runtime = self._runtime
        death = self._death(runtime)
        if death is not None:
            assert runtime is not None
            raise SinkError(death) from runtime.failure

    def check_running(self, for_waiting: bool = False) -> None:
        """Raise `SinkError` saying why, if the server thread died or the
        sink refused mail for lack of room (``max_stored_bytes``).

        What a stopped sink captured stays readable; only waiting for more
        (``for_waiting``) needs a running server.
        """
        __tracebackhide__ = True
        self._check_running("wait for mail" if for_waiting else None)

    def _check_running(self, needed_for: str | None) -> None:
        """`check_running`; on a stopped sink, raise if something needs the
        server (``needed_for``, e.g. ``"wait for mail"``, which the error
        names)."""
        __tracebackhide__ = True
        self.check_alive()
        overflow = self._store.overflow
        if overflow is not None:
            raise SinkError(overflow)
        if needed_for is not None and self._thread is None:
            state = (
                "was stopped"
                if self._address is not None
                else "could not start"
                if self._started
                else "was never started"
            )
            raise SinkError(f"cannot {needed_for}: the SMTP sink {state}")

    def _death(self, runtime: _Runtime | None) -> str | None:
        """Why the server thread of ``runtime`` (the sink's) ended without
        stop(), or None."""
        thread = self._thread
        if runtime is None or thread is None:
            return None
        if runtime.death is None and thread.is_alive():
            return None
        # The thread may have ended a moment before it recorded why.
        thread.join(_STOP_TIMEOUT)
        if runtime.death is None:
            # It ended through a stop() on another thread meanwhile.
            return None
        return (
            f"the SMTP sink's server thread died: {runtime.death}; "
            f"its port {self.port} is closed"
        )

    # -- address ---------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address clients should connect to, e.g. ``"127.0.0.1"``.

        The bound address, except for a sink bound to all interfaces
        (``0.0.0.0`` or ``::``): then the loopback address of the same
        family, which the sink's certificate covers. See `bind_host`.
        """
        return self._bound()[0]

    @property
    def bind_host(self) -> str:
        """The address the server listens on, as bound: ``settings.host``
        (e.g. ``"0.0.0.0"``), where `host` is the one to connect to."""
        self._bound()
        assert self._bind_address is not None
        return self._bind_address[0]

    @property
    def port(self) -> int:
        """The port the server really bound (never 0)."""
        return self._bound()[1]

    @property
    def url(self) -> str:
        """``smtp://host:port`` (``smtps://`` for implicit TLS)."""
        scheme = "smtps" if self._settings.tls == "implicit" else "smtp"
        return f"{scheme}://{format_address(*self._bound())}"

    def _bound(self) -> tuple[str, int]:
        if self._address is None:
            raise SinkError(
                "the SMTP sink could not start (start() raised why): make a new one"
                if self._started
                else "the SMTP sink was never started: call start() or use `with`"
            )
        return self._address

    def clear(self) -> None:
        """Forget everything captured so far, freeing its memory.

        Unlike `Mailbox.clear`, this empties every recipient's mailbox
        of this sink (what any `Mailbox` view of it listed is gone too), and
        ends the POP3 and IMAP sessions open on them, as a new test does.
        """
        super().clear()
        self._store.discard_before(self._cursor, from_sessions=True, new_test=True)

    @overload
    def serve_mailboxes(
        self, protocol: Literal["pop3"], port: int, *, forget_deleted: bool = False
    ) -> POP3Endpoint: ...

    @overload
    def serve_mailboxes(
        self, protocol: Literal["imap"], port: int, *, forget_deleted: bool = False
    ) -> IMAPEndpoint: ...

    def serve_mailboxes(
        self,
        protocol: Literal["pop3", "imap"],
        port: int,
        *,
        forget_deleted: bool = False,
    ) -> POP3Endpoint | IMAPEndpoint:
        """Serve the recipients' mailboxes over ``protocol`` (``"pop3"`` or
        ``"imap"``) on ``port`` of `bind_host`, 0 meaning a free port, and
        return its endpoint (`POP3Endpoint` or `IMAPEndpoint`): what the
        standalone sink's ``--pop3`` and ``--imap`` do. Tests usually use
        the `Mailbox.pop3` and `Mailbox.imap` properties instead, which
        start the same server on a free port of `host`.

        With ``forget_deleted``, the mailboxes keep no record of what
        clients delete, nor of the folders they rename, from then on, so
        that a sink running for days does not grow with it; a test's
        ``deleted()`` then finds nothing, and an assertion on a folder's
        old name does not know that it was renamed.

        Raises `OSError` if the port cannot be bound, and `SinkError` if the
        protocol is already served elsewhere (a sink serves each protocol
        once, on one address)."""
        if protocol == "pop3":
            from ._pop3 import POP3Server

            server = self._read_side("pop3", POP3Server, self.bind_host, port)
            where = server.host, server.port
        elif protocol == "imap":
            from ._imap import IMAPServer

            imap = self._read_side("imap", IMAPServer, self.bind_host, port)
            where = imap.host, imap.port
        else:
            raise ValueError(f"protocol must be 'pop3' or 'imap', got {protocol!r}")
        if (port and where[1] != port) or where[0] != self.bind_host:
            wanted = (
                format_address(self.bind_host, port)
                if port
                else f"{self.bind_host} (any port)"
            )
            raise SinkError(
                f"{protocol.upper()} is already served on {format_address(*where)} "
                f"by this sink; cannot also serve it on {wanted}"
            )
        if forget_deleted:
            mail = self._store.mail
            with mail.lock:
                mail.remember_removed = False
        return self.pop3 if protocol == "pop3" else self.imap

    def empty_mailboxes(self) -> int:
        """Take every message out of the recipients' mailboxes (as served by
        POP3 and IMAP), keeping their folders and open sessions: the
        standalone sink's "Delete all". Callable from any thread. Returns
        the `Message.number` of the last message received before (0 if
        none): the mailboxes hold none of the messages up to it, and every
        later one arrives in them."""
        return self._store.empty_mailboxes()

    def forget_before(self, view: Mailbox) -> None:
        """Forget what arrived before ``view`` was made, in every mailbox of
        this sink, freeing its memory (per-test isolation: the fixtures call
        it when a test opens its first mailbox). Objects a test still holds
        stay readable. A relaying sink's next message goes on a new upstream
        connection: the upstream's view of this test then has its session."""
        self._store.discard_before(view._cursor, from_sessions=True, new_test=True)
        # A new era: views made before it are refused (`Mailbox._check_ended`).
        self._test_era += 1
        view._era = self._test_era
        runtime = self._runtime
        if runtime is not None and runtime.state.relay is not None:
            runtime.state.relay.next_test()

    def follow(self) -> Follower:
        """What arrives from now on, handed out once and then forgotten:
        for a long-running reader (the standalone sink). The messages it
        hands out are taken off their sessions' `Session.messages` too,
        those of connections still open included (`Session.message_count`
        still counts them)."""
        return self._store.follow()

    def on_change(
        self, listener: Callable[[], None], *, lines: bool = True
    ) -> Callable[[], None]:
        """Call ``listener`` after every change: a message, a session, a
        transcript line. It runs on the thread that made the change, mostly
        the server thread (so it must be quick and must not wait for the
        sink); a relay outcome calls it on the relay thread, and the sink's
        stop on the thread that stops it. A listener may stop the sink. One
        that raises is logged on the ``pytest_smtpsink`` logger, and the
        sink goes on as if it had not.
        With ``lines=False``, transcript lines do not make the server call
        it: it hears of messages, sessions that begin or end, and relay and
        DNS outcomes (and of lines only while another listener or a wait
        asks for them). That costs the server nothing per line, for a
        listener that reports what arrived rather than the conversation as
        it goes. Returns the function that stops it."""
        self._store.add_listener(listener, lines=lines)
        return functools.partial(self._store.remove_listener, listener)

    def view(self) -> Mailbox:
        """A mailbox that starts empty now and sees what arrives from now on."""
        return Mailbox(self, self._store, self._store.cursor())

    def __repr__(self) -> str:
        where = self.url if self._address else "not started"
        extra = self._settings.describe()
        return f"<SMTPSink {where}{' ' + extra if extra else ''}>"


def end_relaying_of_test(sink: SMTPSink) -> None:
    """The test whose mail ``sink`` relays is ending (the plugin calls this
    as its teardown begins, after a grace for relays under way): mail of it
    not yet on its way upstream is not relayed, and fails saying so. Sent
    later, it reached the upstream in the next test, whose view of the
    upstream listed it as that test's mail."""
    runtime = sink._runtime
    if runtime is not None and runtime.state.relay is not None:
        runtime.state.relay.end_of_test()


def abort_relaying(sink: SMTPSink) -> None:
    """Cut ``sink``'s relay short, the message being sent too (its outcome:
    "the sink stopped while relaying it"): the plugin, as the session ends,
    before stopping its sinks. A hung upstream otherwise held the run's end
    for up to the relay timeout per step, silent after pytest's summary."""
    runtime = sink._runtime
    if runtime is not None and runtime.state.relay is not None:
        runtime.state.relay.abort()


def connectable(host: str) -> str:
    """Where a client on this machine reaches a server bound to ``host``."""
    address = ipaddress.ip_address(host)
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return host


def _server_context(settings: SinkSettings, connect_host: str) -> ssl.SSLContext:
    if settings.tls_context is not None:
        return settings.tls_context
    if settings.tls_cert is not None:
        return settings._load_server_context()
    from ._tls import authority

    names: tuple[str, ...] = ()
    if settings.allow_remote:
        # Reached from the network (a container, another machine): clients
        # name the sink by its hostname setting, the machine's name or one
        # of its addresses, and the throwaway certificate covered loopback
        # only, so none could verify it.
        names = _names_of_this_machine(settings.hostname, settings.host)
    return authority().server_context(connect_host, names)


def _names_of_this_machine(hostname: str, host: str) -> tuple[str, ...]:
    """The sink's ``hostname`` setting, the machine's names and addresses
    (best effort: a lookup that fails adds nothing), and ``host`` unless it
    is a wildcard."""
    found = [hostname, socket.gethostname(), socket.getfqdn()]
    with contextlib.suppress(OSError, UnicodeError):
        found += socket.gethostbyname_ex(socket.gethostname())[2]
    if not ipaddress.ip_address(host).is_unspecified:
        found.append(host)
    names = []
    for name in found:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            if not is_domain_name(name):
                continue  # "[192.0.2.1]" as a hostname, an odd machine name
        names.append(name)
    return tuple(dict.fromkeys(names))


def new_event_loop(uvloop: bool) -> asyncio.AbstractEventLoop:
    """A new loop for the sink's thread (`SinkSettings._uses_uvloop`), never
    the tests' own loop (pytest-asyncio, anyio), which is left as it is."""
    loop: asyncio.AbstractEventLoop
    if uvloop:
        # Not a static import: uvloop is optional (the ``speed`` extra).
        module: Any = importlib.import_module("uvloop")
        loop = module.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    # In debug mode (PYTHONDEVMODE, PYTHONASYNCIODEBUG) asyncio logs a
    # WARNING for each loop step over 0.1 s. On a busy machine any of the
    # sink's steps may take that long, and the record lands in whichever
    # test runs (its captured log, caplog): noise about the plugin's
    # insides that a user cannot act on. A step of a second still is.
    loop.slow_callback_duration = SLOW_STEP_REPORTED
    return loop


#: The loop step (seconds) that asyncio's debug mode reports on the sink's
#: loop (`new_event_loop`).
SLOW_STEP_REPORTED = 1.0


_T = TypeVar("_T")


def _run_until_complete(loop: asyncio.AbstractEventLoop, work: Awaitable[_T]) -> _T:
    """``loop.run_until_complete(work)`` in the calling thread, or, when that
    thread already runs an event loop (an async test that calls
    ``smtpsink_factory()`` or ``SMTPSink().start()``), in a helper thread:
    asyncio refuses to run a second loop in a thread. The sink's loop is not
    running at these points, so any one thread may drive it."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return loop.run_until_complete(work)
    with concurrent.futures.ThreadPoolExecutor(1, "smtpsink-start") as helper:
        return helper.submit(loop.run_until_complete, work).result()


def bind_errno(error: BaseException) -> int | None:
    """The errno of a failed bind or listen, or None. Since Python 3.13,
    asyncio reports an address of no interface here (EADDRNOTAVAIL) as a
    sentence without an errno: it is taken back."""
    if not isinstance(error, OSError):
        return None
    if error.errno:
        return error.errno
    if str(error).startswith("could not bind on any address"):
        return errno.EADDRNOTAVAIL
    return None


def plain_reason(error: BaseException) -> str:
    """The plain reason ("Address already in use"), without errno's number."""
    code = bind_errno(error)
    return os.strerror(code) if code else (str(error) or type(error).__name__)

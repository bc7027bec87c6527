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
import ipaddress
import os
import ssl
import threading
from collections.abc import Awaitable
from types import TracebackType
from typing import Any, TypeVar

from ._faults import Faults
from ._mailbox import Mailbox
from ._protocol import ServerState
from ._settings import SinkSettings
from ._store import Store

_STOP_TIMEOUT = 10.0
_HANDSHAKE_TIMEOUT = 2.0


class SinkError(RuntimeError):
    """The sink could not start, or is no longer running."""


class SMTPSink(Mailbox):
    """A throwaway SMTP server that keeps everything it is sent.

    Usable on its own, without pytest::

        with SMTPSink() as sink:
            send_mail(host=sink.host, port=sink.port)
            sink.assert_sent(to="ann@example.com")

    ``settings`` (or keyword arguments, see `SinkSettings`) choose TLS, AUTH,
    limits and the address. The default binds 127.0.0.1 on a free port.
    """

    def __init__(self, settings: SinkSettings | None = None, **overrides: Any) -> None:
        base = settings if settings is not None else SinkSettings()
        self._settings = base.replace(**overrides) if overrides else base
        store = Store()
        super().__init__(self, store, store.cursor())
        self._faults = Faults()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._state: ServerState | None = None
        self._address: tuple[str, int] | None = None
        self._failure: BaseException | None = None
        self._server_tls: ssl.SSLContext | None = None

    # -- lifecycle ---------------------------------------------------------------

    @property
    def settings(self) -> SinkSettings:
        return self._settings

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> SMTPSink:
        """Bind and start serving. Raises `SinkError` at once if it cannot."""
        with self._lock:
            if self._thread is not None:
                raise SinkError("this sink is already running")
            if self._loop is not None:
                raise SinkError("a stopped sink cannot be restarted; make a new one")
            settings = self._settings
            if settings.tls is not None:
                from ._tls import authority

                self._server_tls = authority().server_context()
            loop = asyncio.new_event_loop()
            loop.set_exception_handler(self._loop_exception)
            state = ServerState(
                settings, self._store, self._faults, loop, self._server_tls
            )
            try:
                server = _run_until_complete(
                    loop,
                    loop.create_server(
                        state.make_protocol,
                        host=settings.host,
                        port=settings.port,
                        ssl=self._server_tls if settings.tls == "implicit" else None,
                        # A client that connects and never finishes the
                        # handshake must not hold stop() for the default 60 s.
                        ssl_handshake_timeout=(
                            _HANDSHAKE_TIMEOUT if settings.tls == "implicit" else None
                        ),
                        reuse_address=True,
                    ),
                )
            except OSError as error:
                loop.close()
                self._loop = loop
                # asyncio wraps the errno in a sentence that repeats the
                # address; the plain reason reads better after ours.
                reason = os.strerror(error.errno) if error.errno else str(error)
                raise SinkError(
                    f"cannot listen on {_format_address(settings.host, settings.port)}: "
                    f"{reason}"
                ) from error
            self._loop, self._server, self._state = loop, server, state
            host, port = server.sockets[0].getsockname()[:2]
            self._address = (host, port)
            thread = threading.Thread(
                target=self._serve, name=f"smtpsink-{port}", daemon=True
            )
            self._thread = thread
            thread.start()
        return self

    def _loop_exception(
        self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]
    ) -> None:
        # stop() cancels the accept of a client still in its TLS handshake;
        # asyncio would log that cancellation as an error. Everything else
        # is reported as usual.
        if self._thread is None and isinstance(
            context.get("exception"), asyncio.CancelledError
        ):
            return
        loop.default_exception_handler(context)

    def _serve(self) -> None:
        assert self._loop is not None
        try:
            self._loop.run_forever()
        except BaseException as error:  # recorded so users see why it died
            self._failure = error
            # Wake waiters: check_running() now says why. Not re-raised: the
            # next use of the sink raises SinkError chained to this error,
            # where a thread exception would only warn at some later test.
            self._store.touch()

    def stop(self) -> None:
        """Close every connection, stop the thread and release the port.

        Safe to call more than once, and on a sink that never started.
        """
        with self._lock:
            loop, thread, server, state = (
                self._loop,
                self._thread,
                self._server,
                self._state,
            )
            self._thread = self._server = None
            if thread is None or loop is None:
                return

            def stop_accepting() -> None:
                # An accepted client's transport attaches to the server one
                # loop iteration after the accept. Closing the server inside
                # that window breaks asyncio (CPython gh-109564: an assertion
                # in Server._attach on 3.12+, a TypeError later in __del__),
                # so stop accepting first and close after the pending accepts
                # (scheduled before shutdown, so run before it) are attached.
                assert server is not None
                loop.call_soon(shutdown)  # first: nothing below may prevent it
                with contextlib.suppress(Exception):  # e.g. a loop without readers
                    for sock in server.sockets:
                        loop.remove_reader(sock.fileno())

            def shutdown() -> None:
                assert server is not None
                assert state is not None
                server.close()
                for connection in list(state.connections):
                    connection.close_by_server()
                # A client still in its implicit-TLS handshake has no SMTP
                # protocol yet, so it is not in state.connections; Python
                # 3.13 can abort it (3.12's wait_closed would wait for it).
                abort_clients = getattr(server, "abort_clients", None)
                if abort_clients is not None:
                    abort_clients()
                # If the server thread died, this runs below on the caller's
                # thread, inside run_until_complete(): stopping would make
                # that raise "Event loop stopped before Future completed".
                if threading.current_thread() is thread:
                    loop.stop()

            loop.call_soon_threadsafe(stop_accepting)
            thread.join(_STOP_TIMEOUT)
            if thread.is_alive():  # pragma: no cover - would be a bug in shutdown()
                raise SinkError(
                    f"the sink thread did not stop within {_STOP_TIMEOUT} s"
                )
            # The loop has stopped; finish its remaining work on this thread.
            assert server is not None
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                _run_until_complete(
                    loop, asyncio.gather(*pending, return_exceptions=True)
                )
            with contextlib.suppress(asyncio.TimeoutError):
                # Bounded: see abort_clients above; the handshake timeout
                # (create_server) ends such a client on older Pythons.
                _run_until_complete(
                    loop, asyncio.wait_for(server.wait_closed(), _STOP_TIMEOUT / 5)
                )
            _run_until_complete(loop, loop.shutdown_asyncgens())
            loop.close()

    def __enter__(self) -> SMTPSink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def check_running(self, for_waiting: bool = False) -> None:
        """Raise `SinkError` saying why, if the server thread died.

        What a stopped sink captured stays readable; only waiting for more
        (``for_waiting``) needs a running server.
        """
        thread = self._thread
        if thread is not None and (not thread.is_alive() or self._failure is not None):
            raise SinkError(
                f"the SMTP sink's server thread died: {self._failure!r}"
            ) from self._failure
        overflow = self._store.overflow
        if overflow is not None:
            raise SinkError(overflow)
        if for_waiting and thread is None:
            state = "was stopped" if self._loop is not None else "was never started"
            raise SinkError(f"cannot wait for mail: the SMTP sink {state}")

    # -- address ---------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the server listens on, e.g. ``"127.0.0.1"``."""
        return self._bound()[0]

    @property
    def port(self) -> int:
        """The port the server really bound (never 0)."""
        return self._bound()[1]

    @property
    def url(self) -> str:
        """``smtp://host:port`` (``smtps://`` for implicit TLS)."""
        scheme = "smtps" if self._settings.tls == "implicit" else "smtp"
        return f"{scheme}://{_format_address(*self._bound())}"

    def _bound(self) -> tuple[str, int]:
        if self._address is None:
            raise SinkError(
                "the SMTP sink was never started: call start() or use `with`"
            )
        return self._address

    def clear(self) -> None:
        """Forget everything captured so far, freeing its memory.

        Unlike `Mailbox.clear`, this empties every mailbox of this sink.
        """
        super().clear()
        self._store.discard_before(self._cursor, from_sessions=True)

    def view(self) -> Mailbox:
        """A mailbox that starts empty now and sees what arrives from now on."""
        return Mailbox(self, self._store, self._store.cursor())

    def __repr__(self) -> str:
        where = self.url if self._address else "not started"
        extra = self._settings.describe()
        return f"<SMTPSink {where}{' ' + extra if extra else ''}>"


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


def _format_address(host: str, port: int) -> str:
    try:
        is_v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        is_v6 = False
    return f"[{host}]:{port}" if is_v6 else f"{host}:{port}"

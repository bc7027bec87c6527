"""The floor: the least a session-scoped SMTP sink can do.

A bare aiosmtpd ``Controller`` whose handler appends the raw bytes of each
message to a list, and nothing else: no transcript, no parsing, no per-test
views. Every benchmark compares pytest-smtpsink against this, measured in the
same run, so the ratios say what the plugin's extra features cost.

This file is imported by the benchmark workers and copied next to the
generated ``conftest.py`` of the "floor" test suites, so it must depend on
nothing but aiosmtpd and the standard library.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from aiosmtpd.controller import Controller

if TYPE_CHECKING:
    import ssl
    from types import TracebackType


class _RawHandler:
    """aiosmtpd handler that keeps the bytes exactly as received."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        # A Condition so that waits react to arrival instead of polling; the
        # notify costs a few microseconds per message, and pytest-smtpsink
        # does the same, so the comparison stays fair.
        self.arrived = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw: bytes = envelope.original_content or b""
        with self.arrived:
            self.messages.append(raw)
            self.arrived.notify_all()
        return "250 OK"


class _BoundController(Controller):
    """Controller that can listen on port 0.

    ``Controller(port=0)`` fails because its readiness probe connects to port
    0 (aiosmtpd issues 276 and 388). The server is already bound when
    ``_trigger_server`` runs, so read the real port from its socket first.
    """

    def _trigger_server(self) -> None:
        server: Any = self.server  # an asyncio Server: it has .sockets
        self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class FloorSink:
    """A bare aiosmtpd server on 127.0.0.1 that stores raw bytes only.

    ``with FloorSink() as sink:`` gives ``sink.host``, ``sink.port``,
    ``sink.messages`` (a list of ``bytes``), ``sink.clear()`` and
    ``sink.wait_for(count, timeout)``.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        data_size_limit: int | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self._handler = _RawHandler()
        self._controller = _BoundController(
            self._handler,
            # Bind IPv4 loopback explicitly: aiosmtpd's default is "::1" on
            # many machines, which 127.0.0.1 clients cannot reach.
            hostname=self.host,
            port=0,
            # A fixed greeting name, or aiosmtpd calls getfqdn() per connection.
            server_hostname="floor.test",
            # None means no limit: aiosmtpd's default (32 MiB) is below a
            # base64-encoded 25 MB attachment.
            data_size_limit=data_size_limit,
            # With a context, aiosmtpd offers STARTTLS (and requires nothing).
            tls_context=tls_context,
        )

    @property
    def port(self) -> int:
        port: int = self._controller.port
        return port

    @property
    def messages(self) -> list[bytes]:
        return self._handler.messages

    def clear(self) -> None:
        with self._handler.arrived:
            self._handler.messages.clear()

    def wait_for(self, count: int = 1, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` messages are stored; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._handler.arrived:
            while len(self._handler.messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._handler.arrived.wait(remaining)
        return True

    def start(self) -> FloorSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> FloorSink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

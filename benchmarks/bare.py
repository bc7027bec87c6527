"""The in-process floor: the least SMTP server a Python thread can run.

``BareSink`` is an ``asyncio.Protocol`` on its own event loop thread, as
pytest-smtpsink runs, that answers every command with a canned reply and
keeps each message's raw bytes: no parsing, no checks, no recording, no
limits. It is not a usable server (it accepts anything, in any order); it
shows what any server in the test's process costs, on asyncio's loop or on
uvloop, before it does any of a server's work: the loop, the transport, the
thread hand-offs and the interpreter lock. Between it and Postfix's
``smtp-sink`` (the limit) lies what running in the test's process costs;
between it and pytest-smtpsink, what the sink does per command.

Only the throughput scenarios use it (``_workers.py``).
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from types import TracebackType

_REPLIES = {
    b"EHLO": b"250-bare.test\r\n250-PIPELINING\r\n250-SIZE 0\r\n250 8BITMIME\r\n",
    b"HELO": b"250 bare.test\r\n",
    b"MAIL": b"250 OK\r\n",
    b"RCPT": b"250 OK\r\n",
    b"DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
    b"RSET": b"250 OK\r\n",
    b"NOOP": b"250 OK\r\n",
    b"QUIT": b"221 Bye\r\n",
}


class _Connection(asyncio.Protocol):
    def __init__(self, sink: BareSink) -> None:
        self._sink = sink
        self._buffer = b""
        self._in_data = False
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        self._transport = cast("asyncio.Transport", transport)
        self._transport.write(b"220 bare.test ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        buffer = self._buffer + data
        while True:
            if self._in_data:
                end = buffer.find(b"\r\n.\r\n")
                if end < 0:
                    break
                self._sink.add(buffer[2 : end + 2])  # without the CRLF put first
                buffer, self._in_data = buffer[end + 5 :], False
                transport.write(b"250 OK\r\n")
                continue
            end = buffer.find(b"\r\n")
            if end < 0:
                break
            verb = buffer[:4].upper()
            buffer = buffer[end + 2 :]
            transport.write(_REPLIES.get(verb, b"500 Unknown\r\n"))
            if verb == b"DATA":
                # A CRLF first, so that the final dot is found even at once.
                self._in_data, buffer = True, b"\r\n" + buffer
            elif verb == b"QUIT":
                transport.close()
                break
        self._buffer = buffer


class BareSink:
    """``with BareSink(uvloop=False) as sink:`` serves on 127.0.0.1 from
    its own thread until the ``with`` ends; ``sink.messages`` holds the raw
    bytes of each message (the final dot's CRLF excluded)."""

    host = "127.0.0.1"

    def __init__(self, uvloop: bool = False) -> None:
        self.port = 0
        self.messages: list[bytes] = []
        self._uvloop = uvloop
        self._changed = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None

    def add(self, raw: bytes) -> None:
        with self._changed:
            self.messages.append(raw)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(
                lambda: len(self.messages) >= count, timeout=timeout
            )

    def __enter__(self) -> BareSink:
        loop: asyncio.AbstractEventLoop
        if self._uvloop:
            # Not a static import: uvloop is optional (type checks run
            # without it).
            uvloop: Any = importlib.import_module("uvloop")
            loop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        server = loop.run_until_complete(
            loop.create_server(lambda: _Connection(self), self.host, 0)
        )
        self.port = server.sockets[0].getsockname()[1]
        self._loop, self._server = loop, server
        self._thread = threading.Thread(target=loop.run_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        loop, server, thread = self._loop, self._server, self._thread
        assert loop is not None
        assert server is not None
        assert thread is not None
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()

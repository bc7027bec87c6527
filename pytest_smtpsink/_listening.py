"""`listen`: the listening socket of each of the sink's servers (SMTP,
POP3, IMAP), on the loop's thread; `readable_now`: whether a socket has
something to read, without waiting; `not_yet_taken`: what a socket's peer
has not yet taken of what was sent, and `looks`, when to look again;
`COMMANDS_BEFORE_YIELD`: how long one
connection may keep the loop; `start_on_loop`: a server's start, from a
test's thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import os
import select
import socket
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

try:  # Linux: the bytes of a socket's send queue its peer has not taken
    import fcntl
    import termios

    _SEND_QUEUE: int | None = termios.TIOCOUTQ
except (ImportError, AttributeError):  # pragma: no cover (Windows)
    _SEND_QUEUE = None

# Commands a connection reads one after another before it lets the loop
# serve the others. A line already buffered is read without a wait: a
# client pipelining 200,000 commands whose replies it never read held the
# loop, every SMTP, POP3 and IMAP client of the sink, for a second or more.
COMMANDS_BEFORE_YIELD = 64

#: Seconds a server's start may wait for the sink's loop.
START_TIMEOUT = 10.0


class LoopUnavailable(Exception):
    """The sink's loop could not start a server (`start_on_loop`)."""


def start_on_loop(
    loop: asyncio.AbstractEventLoop, starting: Coroutine[Any, Any, None]
) -> None:
    """Run ``starting`` (a read-side or DNS server's start) on the sink's
    loop and wait for it, at most `START_TIMEOUT` seconds. On a timeout it
    is cancelled, not left to bind later: that server served on a port
    nothing knew of, and the next use started a second one. Raises
    `LoopUnavailable`, saying why."""
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        # It would wait for itself, holding every connection for the wait.
        starting.close()
        raise LoopUnavailable(
            "it was asked for on the sink's own thread (an on_change listener), "
            "which cannot wait for the sink; use it once before, in the test"
        )
    future = asyncio.run_coroutine_threadsafe(starting, loop)
    try:
        future.result(START_TIMEOUT)
    except concurrent.futures.TimeoutError:
        if future.cancel():
            raise LoopUnavailable(
                f"the sink's event loop did not answer within {START_TIMEOUT:g} s "
                "(busy: a client flooding it, or a slow on_change listener)"
            ) from None
        future.result()  # it ended meanwhile: its outcome


#: The kernel's listen backlog: asyncio's default of 100 left clients of a
#: burst (400 connecting at once) without a greeting for seconds, their
#: SYNs dropped and resent. The system may cap it lower (somaxconn).
BACKLOG = 1024


async def listen(
    loop: asyncio.AbstractEventLoop,
    make_protocol: Callable[[], asyncio.BaseProtocol],
    host: str,
    port: int,
) -> asyncio.Server:
    """``loop.create_server`` on ``host`` and ``port``, dual-stack for
    ``::``: asyncio makes every IPv6 socket IPv6-only, so a sink bound to
    "every interface" refused IPv4 clients (127.0.0.1, Docker's IPv4
    port publishing), while its live view, a plain socket, took them."""
    if host and ipaddress.ip_address(host) == ipaddress.IPv6Address("::"):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            # Where the system allows it (Windows before 10, some BSDs are
            # IPv6-only whatever is asked, as are hosts without IPv4).
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            if os.name == "posix":  # as asyncio does (reuse_address=None)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            return _deeper(await loop.create_server(make_protocol, sock=sock))
        except BaseException:
            sock.close()
            raise
    # asyncio's default for reuse_address: SO_REUSEADDR on POSIX only (a
    # fixed port is free again at once after a stop). On Windows it would
    # let us bind a port another server is listening on, and share its
    # connections.
    return _deeper(
        await loop.create_server(
            make_protocol, host=host, port=port, reuse_address=None
        )
    )


def _deeper(server: asyncio.Server) -> asyncio.Server:
    """``server`` with the kernel's queue of its sockets `BACKLOG` deep.
    Not create_server's ``backlog=``: asyncio's own loop also accepts up to
    that many connections per wake-up, and on running out of file
    descriptors schedules a retry for each (Python 3.11: ten times as many
    timers and reports with 1,024). listen() again on the same descriptor
    (a socket object over it, detached after: never closed) sets the
    queue; best effort: where that fails, asyncio's queue stays."""
    for listening in server.sockets:
        with contextlib.suppress(OSError):
            same = socket.socket(fileno=listening.fileno())
            try:
                same.listen(BACKLOG)
            finally:
                same.detach()
    return server


def readable_now(sock: socket.socket) -> bool:
    """Whether ``sock`` has data (or its end) to read now. With poll(), not
    select(), which refuses a descriptor over 1023 ("filedescriptor out of
    range"): a test process with many files open has such sockets."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([sock], [], [], 0)  # Windows: no such limit
    return bool(readable)


def not_yet_taken(descriptor: int) -> int | None:
    """The bytes of a socket's send queue its peer has not taken yet
    (Linux's TIOCOUTQ), or None where the system does not say. On loopback
    the queue holds megabytes, which a writer's own buffer says nothing of:
    a peer reading a large reply slowly but steadily is told from one that
    stopped reading by this count shrinking."""
    if _SEND_QUEUE is None:  # pragma: no cover (Windows)
        return None
    try:
        packed = fcntl.ioctl(descriptor, _SEND_QUEUE, b"\0\0\0\0")
    except (OSError, ValueError):  # a closed socket
        return None
    return int.from_bytes(packed, sys.byteorder, signed=True)


#: The first wait before a look at a send queue (`looks`).
FIRST_LOOK = 0.005


def looks(patience: float) -> Iterator[float]:
    """The waits between looks at what a peer has taken of a large write
    (`not_yet_taken`), for a deadline of ``patience`` seconds that counts
    from its last progress: short at first (its system takes what fits in
    its buffers at once, in a millisecond), then twice as long each time,
    at most a tenth of ``patience``, so that the deadline falls a tenth
    late at most. Looking only at the deadline gave up to twice it."""
    cap = max(patience / 10, 0.001)  # no wait shorter than a loop's timer
    look = min(FIRST_LOOK, cap)
    while True:
        yield look
        look = min(look * 2, cap)

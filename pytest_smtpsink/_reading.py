"""`ReadsIntoBuffer`: the servers' connections read into one buffer.

asyncio's selector transports read a plain `Protocol`'s data with
``sock.recv(256 KiB)``: every packet allocates 256 KiB, shrunk to its size.
That is above glibc's threshold for mapping memory, so each packet costs an
``mmap``, a page fault, an ``mremap`` and an ``munmap``, and in a process
with other threads (the test's) the unmap interrupts them on their cores.
It was a quarter of the sink's time per message in the one-connection
benchmark. A `BufferedProtocol` has the transport read into a buffer it
gives: one per thread here, reused for every read, so nothing is mapped.
TLS layers and uvloop take buffered protocols as well.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

#: Bytes read at most at once: asyncio's own size, so a large message takes
#: as few reads as before. The buffer is made once per thread; each read's
#: bytes are allocated at their own size, small for a command.
_SIZE = 256 * 1024


class _Buffer(threading.local):
    def __init__(self) -> None:
        self.view = memoryview(bytearray(_SIZE))


_buffer = _Buffer()


class ReadsIntoBuffer(asyncio.BufferedProtocol):
    """Mixed into a `Protocol` class after its other bases, so that its own
    ``data_received`` still gets each packet, as a bytes object of its own.

    The buffer is the loop thread's: asyncio calls `get_buffer`, reads, and
    calls `buffer_updated` at once, with no other code in between (the
    selector transport, the TLS layers of Python 3.10 and 3.11+, uvloop).
    So `buffer_updated` must copy the data out *before* calling anything:
    ``data_received`` may close a transport, whose TLS layer then reads
    again into the same buffer.
    """

    if TYPE_CHECKING:

        def data_received(self, data: bytes) -> None: ...

    def get_buffer(self, sizehint: int) -> memoryview:
        # A smaller buffer than the hint is allowed: the rest comes next read.
        return _buffer.view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(_buffer.view[:nbytes]))

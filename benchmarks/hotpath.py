"""The sink's own Python work per message, without sockets.

``python benchmarks/hotpath.py [--new-connection] [--messages N] [--repeat R]``

Drives the sink's SMTP protocol (``RecordingSMTP``) directly, on its own
event loop, with a transport that only collects what is written: the
packets smtplib sends for a small message (``MAIL`` with ``SIZE``,
``RCPT``, ``DATA``, the content with its final dot) go to
``data_received`` one by one, as they arrive over loopback. What it
measures is the fast path of docs/performance.rst ("answered as they
arrive"): recording, the envelope, the store, the message object. Not the
kernel, the event loop's I/O, the client, or the thread hand-offs, which
the throughput scenarios of ``run.py`` measure with everything else.

Its figures barely move with the machine's load, so they can tell a cut of
a few percent from noise where a whole run cannot. Instruction counts are
steadier still: run it under ``valgrind --tool=callgrind`` with
``--messages 200`` and ``--messages 1200`` (``--repeat 1``) and divide the
difference by 1,000.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workers import RECIPIENT, SENDER, small_message

from pytest_smtpsink._faults import Faults
from pytest_smtpsink._settings import SinkSettings
from pytest_smtpsink._smtp import ServerState
from pytest_smtpsink._store import Store


class CollectingTransport(asyncio.Transport):
    """Keeps what the protocol writes; never closes on its own."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def packets(count: int) -> list[list[bytes]]:
    """Each message's packets, as smtplib sends them."""
    found = []
    for number in range(count):
        content = small_message(f"m-{number}")
        found.append(
            [
                f"MAIL FROM:<{SENDER}> SIZE={len(content)}\r\n".encode(),
                f"RCPT TO:<{RECIPIENT}>\r\n".encode(),
                b"DATA\r\n",
                content + b"\r\n.\r\n",
            ]
        )
    return found


def converse(state: ServerState, messages: list[list[bytes]], connections: int) -> None:
    """``messages`` over each of ``connections`` connections."""
    for _ in range(connections):
        protocol = state.make_protocol()
        transport = CollectingTransport()
        protocol.connection_made(transport)
        protocol.data_received(b"EHLO client.example\r\n")
        for message in messages:
            for packet in message:
                protocol.data_received(packet)
        protocol.data_received(b"QUIT\r\n")
        protocol.connection_lost(None)
        assert transport.written[-1] == b"221 Bye\r\n", transport.written[-3:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--new-connection", action="store_true", help="one connection per message"
    )
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    store = Store()
    state = ServerState(SinkSettings(), store, Faults(), loop, None)

    async def measure() -> list[float]:
        # In a running loop, as the sink's protocol always is.
        converse(state, packets(20), 1)  # imports, the set-up template
        seconds = []
        for _ in range(args.repeat):
            messages = packets(1 if args.new_connection else args.messages)
            connections = args.messages if args.new_connection else 1
            start = time.perf_counter()
            converse(state, messages, connections)
            seconds.append(time.perf_counter() - start)
            store.discard_before(store.cursor(), from_sessions=True)
        return seconds

    try:
        seconds = loop.run_until_complete(measure())
    finally:
        loop.close()
    per_message = [1e6 * s / args.messages for s in seconds]
    print(
        f"{'a connection each' if args.new_connection else 'one connection'}: "
        f"median {statistics.median(per_message):.1f} us per message "
        f"(min {min(per_message):.1f}, {args.repeat} runs of {args.messages})"
    )


if __name__ == "__main__":
    main()

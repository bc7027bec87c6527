"""Load: many concurrent clients, nothing lost, everything attributed; and a
bounded soak showing no growth in threads, file descriptors or memory.

The figures of a run are printed (``-s`` shows them):
``load: 50 clients x 100 messages = 5000 messages, N MB in T s``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import random
import smtplib
import socket
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import pytest
from conftest import on_the_loop

from pytest_smtpsink import SMTPSink

CLIENTS = 50
PER_CLIENT = 100


def body_of(client: int, index: int, largest: int = 200_000) -> bytes:
    """A message of a size from 100 B to ``largest`` (log-uniform), CRLF lines."""
    rng = random.Random(client * 1_000_003 + index)
    size = int(100 * (largest / 100) ** rng.random())
    head = (
        f"From: client{client}@load.test\r\nTo: sink@load.test\r\n"
        f"Subject: c{client} m{index}\r\n\r\n"
    ).encode()
    line = (f"{client:02d}-{index:03d} " * 10)[:76].encode() + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def run_client(
    sink: SMTPSink, client: int, count: int, largest: int = 200_000
) -> tuple[tuple[str, int], int]:
    sent = 0
    with smtplib.SMTP(sink.host, sink.port, timeout=60) as smtp:
        assert smtp.sock is not None
        host, port = smtp.sock.getsockname()[:2]
        for index in range(count):
            smtp.sendmail(
                f"client{client}@load.test",
                [f"rcpt{index}@load.test"],
                body_of(client, index, largest),
            )
            sent += 1
    return (host, port), sent


def test_concurrent_clients_lose_nothing() -> None:
    with SMTPSink() as sink:
        view = sink.view()
        started = time.monotonic()
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(
                pool.map(lambda c: run_client(sink, c, PER_CLIENT), range(CLIENTS))
            )
        total = CLIENTS * PER_CLIENT
        view.wait_for(count=total, timeout=60)
        elapsed = time.monotonic() - started

        messages = view.messages
        assert len(messages) == total  # zero loss, zero duplicates
        assert sum(sent for _, sent in results) == total
        peers = {client: peer for client, (peer, _) in enumerate(results)}
        assert len(set(peers.values())) == CLIENTS

        seen: set[tuple[int, int]] = set()
        for message in messages:
            client = int(message.envelope.mail_from[len("client") :].split("@")[0])
            index = int(message.envelope.rcpt_to[0][len("rcpt") :].split("@")[0])
            seen.add((client, index))
            # The right session: the peer is this client's own socket.
            assert message.session.peer == peers[client]
            assert message.raw == body_of(client, index)
        assert len(seen) == total

        # Per-view consistency: ordered numbers, sessions agree with messages.
        numbers = [m.number for m in messages]
        assert numbers == sorted(numbers)
        assert len(set(numbers)) == total
        sessions = [s for s in view.sessions if s.messages]
        assert len(sessions) == CLIENTS
        assert {s.peer for s in sessions} == set(peers.values())
        by_number = {m.number: m for m in messages}
        for session in sessions:
            assert len(session.messages) == PER_CLIENT
            assert all(by_number[m.number] is m for m in session.messages)
            # Within one connection, messages keep the order they were sent in.
            subjects = [
                m.raw.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0]
                for m in session.messages
            ]
            assert subjects == [
                b"%s m%d" % (subjects[0].split()[0], i) for i in range(PER_CLIENT)
            ]
            assert session.end == "quit"
        stored = view._store.stored_bytes
        assert stored == sum(len(m.raw) for m in messages)
        print(
            f"\nload: {CLIENTS} clients x {PER_CLIENT} messages = {total} messages, "
            f"{stored / 1e6:.1f} MB in {elapsed:.1f} s, lost 0"
        )


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# A pipelining client's commands, and their replies, that it never reads:
# about 1.2 MB and 1.6 MB, more than one read of the sink's (256 KiB).
FLOOD_COMMANDS = 200_000
FLOOD = {
    "smtp": (b"EHLO flood.test\r\n", b"NOOP\r\n"),
    "pop3": (b"", b"NOOP\r\n"),
    "imap": (b"", b"a NOOP\r\n"),
}


# Not "event_loop": pytest-asyncio 0.23 has a fixture of that name.
@pytest.mark.parametrize("loop_kind", ["asyncio", "auto"])
@pytest.mark.parametrize("protocol", sorted(FLOOD))
def test_a_pipelining_flood_does_not_hold_other_clients(
    protocol: str, loop_kind: Literal["asyncio", "auto"]
) -> None:
    # All of a sink's connections share one loop. A line already buffered is
    # read without a wait, so a client that pipelines 200,000 commands held
    # the loop until the sink had answered a whole read of them (tens of
    # thousands; every client of the sink waited a second or more). A new
    # client is greeted after at most a few turns of the flood
    # (COMMANDS_BEFORE_YIELD commands each). Counted in the flood's replies,
    # not in seconds: a busy machine slows both alike.
    with SMTPSink(event_loop=loop_kind) as sink:
        address = {
            "smtp": (sink.host, sink.port),
            "pop3": (sink.pop3.host, sink.pop3.port),
            "imap": (sink.imap.host, sink.imap.port),
        }[protocol]
        first, command = FLOOD[protocol]
        flood = socket.create_connection(address, timeout=60)
        others: list[socket.socket] = []
        sender = threading.Thread(
            target=_send_ignoring_the_close,
            args=(flood, first + command * FLOOD_COMMANDS),
        )
        try:
            flood.recv(1000)
            sender.start()
            (flooding,) = sink.sessions
            sink.wait_until(lambda: len(flooding._transcript) > 1000, timeout=60)
            for _ in range(3):  # at three points of the flood
                other = socket.create_connection(address, timeout=60)
                # Connected: the kernel has it queued for the sink to take.
                # (Taken before the connect, the time counted this thread's
                # wait for the GIL too.)
                connected = time.time()
                others.append(other)
                assert other.recv(1000)
                greeted = next(
                    s for s in sink.sessions if s.peer == other.getsockname()[:2]
                ).transcript[0]
                meanwhile = [
                    e
                    for e in flooding.transcript
                    if connected <= e.time <= greeted.time
                ]
                assert len(meanwhile) <= 1000, (
                    f"{len(meanwhile):,} of the flood's commands were answered"
                    " between a new client's connect and its greeting"
                )
            # Measured during the flood: it was not over.
            assert len(flooding.transcript) < FLOOD_COMMANDS
        finally:
            flood.close()  # the sender's sendall ends
            for other in others:
                other.close()
            sender.join(timeout=60)


def _send_ignoring_the_close(client: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the test closes it when it is done
        client.sendall(data)


@pytest.mark.soak
@pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"),
    reason="counts open file descriptors in /proc/self/fd, which only Linux has",
)
def test_soak_no_growth(caplog: pytest.LogCaptureFixture) -> None:
    """Send, wait, clear, again, for SMTPSINK_SOAK_SECONDS (default 3 s):
    threads, descriptors and traced memory stay flat once the store is cleared."""
    # asyncio's debug mode (PYTHONDEVMODE, as tox sets) logs a warning for
    # each slow loop step, which a busy machine has many of; the records
    # pytest keeps would count as growth.
    caplog.set_level(logging.ERROR, logger="asyncio")
    seconds = float(os.environ.get("SMTPSINK_SOAK_SECONDS", "3"))
    with SMTPSink() as sink:

        def round_trip() -> int:
            view = sink.view()
            with ThreadPoolExecutor(4) as pool:
                sent = sum(
                    s
                    for _, s in pool.map(
                        lambda c: run_client(sink, c, 10, 20_000), range(8)
                    )
                )
            view.wait_for(count=sent, timeout=30)
            # A client that connects and leaves without a message, and one
            # that breaks off mid-DATA: their sessions must be freed too.
            with smtplib.SMTP(sink.host, sink.port, timeout=10) as smtp:
                smtp.noop()
            smtp = smtplib.SMTP(sink.host, sink.port, timeout=10)
            smtp.ehlo()
            smtp.mail("x@load.test")
            smtp.rcpt("y@load.test")
            smtp.putcmd("DATA")
            assert smtp.getreply()[0] == 354
            smtp.send(b"Subject: cut\r\n\r\nhalf")
            smtp.close()
            view.wait_until(lambda: all(s.end for s in view.sessions), timeout=10)
            # A session ends inside the callback that then closes its socket:
            # once the loop came round, every descriptor is closed.
            on_the_loop(sink, lambda: None)
            sink.clear()  # the sink-wide clear frees the store
            return sent

        round_trip()  # warm up: imports, caches, pools
        gc.collect()
        threads, fds = threading.active_count(), _fds()
        tracemalloc.start()
        try:
            round_trip()
            gc.collect()
            baseline = tracemalloc.get_traced_memory()[0]
            deadline = time.monotonic() + seconds
            rounds = messages = 0
            while time.monotonic() < deadline:
                messages += round_trip()
                rounds += 1
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - baseline
        finally:
            tracemalloc.stop()
        assert sink._store.stored_bytes == 0
        assert sink.messages == []
        assert sink._store._sessions == []
        assert threading.active_count() == threads
        assert _fds() == fds
        assert grown < 1_000_000, (
            f"traced memory grew by {grown} bytes over {rounds} rounds"
        )
        print(
            f"\nsoak: {seconds:g} s, {rounds} rounds, {messages} messages, "
            f"memory {grown:+d} B, threads {threads}, fds {fds}"
        )

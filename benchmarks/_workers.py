"""In-process benchmark workers, run by ``run.py`` inside a benchmark venv.

Each scenario runs in a fresh interpreter (``python _workers.py SCENARIO
--impl IMPL ...``) so that memory figures are not polluted by earlier
scenarios, and prints one JSON object on its last line of output.

``IMPL`` is ``smtpsink`` (``pytest_smtpsink.SMTPSink`` from the working tree,
on asyncio's own event loop), ``smtpsink-speed`` (the same on uvloop, as with
``pytest-smtpsink[speed]`` installed), ``floor`` (``floor.FloorSink``: bare
aiosmtpd, raw bytes only), ``bare`` and ``bare-uvloop`` (``bare.BareSink``:
canned replies from a protocol in a thread, the least an in-process server
costs) or ``limit`` (``limit.LimitSink``: Postfix's C ``smtp-sink``, which
keeps nothing). The client
is always ``smtplib`` with a fixed ``local_hostname`` (otherwise smtplib calls
``getfqdn()`` on every connection and the benchmark measures DNS).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import resource
import smtplib
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterator

CLIENT_NAME = "bench-client.test"
SENDER = "sender@example.com"
RECIPIENT = "rcpt@example.com"
# Bounded waits: a benchmark that loses mail must fail, not hang.
WAIT_TIMEOUT = 120.0
#: Messages the server answered 250 to after the final dot, counted by the
#: client: the limit keeps nothing to count.
_client_count = {"accepted": 0}


class Sink(Protocol):
    """What a scenario needs from a sink, whatever its implementation."""

    host: str
    port: int

    def count(self) -> int: ...

    def raws(self) -> list[bytes]: ...

    def wait_for(self, count: int, timeout: float) -> bool: ...


class _FloorAdapter:
    def __init__(self, sink: Any) -> None:
        self._sink = sink
        self.host: str = sink.host
        self.port: int = sink.port

    def count(self) -> int:
        return len(self._sink.messages)

    def raws(self) -> list[bytes]:
        return list(self._sink.messages)

    def wait_for(self, count: int, timeout: float) -> bool:
        return bool(self._sink.wait_for(count, timeout))


class _SMTPSinkAdapter:
    def __init__(self, sink: Any) -> None:
        self._sink = sink
        self.host = str(sink.host)
        self.port = int(sink.port)

    def count(self) -> int:
        return len(self._sink.messages)

    def raws(self) -> list[bytes]:
        return [bytes(m.raw) for m in self._sink.messages]

    def wait_for(self, count: int, timeout: float) -> bool:
        try:
            self._sink.wait_for(count=count, timeout=timeout)
        except (AssertionError, TimeoutError):
            return False
        return True


class _LimitAdapter:
    """smtp-sink keeps nothing: a message counts as captured once the
    client's ``sendmail`` returned (after the server's 250 for the dot)."""

    def __init__(self, sink: Any) -> None:
        self.host: str = sink.host
        self.port: int = sink.port

    def count(self) -> int:
        return _client_count["accepted"]

    def raws(self) -> list[bytes]:
        return []

    def wait_for(self, count: int, timeout: float) -> bool:
        return _client_count["accepted"] >= count


@contextmanager
def open_sink(impl: str) -> Iterator[Sink]:
    """Start the sink under test, yield an adapter, stop it afterwards."""
    if impl == "floor":
        from floor import FloorSink

        with FloorSink() as floor_sink:
            yield _FloorAdapter(floor_sink)
    elif impl == "limit":
        from limit import LimitSink

        with LimitSink() as limit_sink:
            yield _LimitAdapter(limit_sink)
    elif impl in ("bare", "bare-uvloop"):
        from bare import BareSink

        with BareSink(uvloop=impl == "bare-uvloop") as bare_sink:
            yield _FloorAdapter(bare_sink)
    elif impl in ("smtpsink", "smtpsink-norec", "smtpsink-speed"):
        from pytest_smtpsink import SMTPSink

        if impl == "smtpsink-norec":
            _switch_recording_off()
        # uvloop is in the benchmark's venv, which makes it the default.
        loop = "uvloop" if impl == "smtpsink-speed" else "asyncio"
        with SMTPSink(event_loop=loop) as smtpsink:
            yield _SMTPSinkAdapter(smtpsink)
    else:
        raise SystemExit(f"unknown implementation {impl!r}")


def _switch_recording_off() -> None:
    """The conversation-recording issue's control: the same sink, answering
    the same way, with nothing recorded in the transcript (no command line,
    reply or content line is made printable, masked or kept). Messages,
    envelopes and sessions are still stored."""
    from pytest_smtpsink import _smtp
    from pytest_smtpsink._session import Exchange

    def append(self: _smtp.RecordingSMTP, kind: Any, line: str) -> Exchange:
        exchange = self._current = Exchange(kind, line, 0.0)
        return exchange

    def record_reply(
        self: _smtp.RecordingSMTP, text: str, injected: bool = False
    ) -> None:
        pass

    def on_line(self: _smtp.RecordingSMTP, line: bytes) -> None:
        pass

    _smtp.RecordingSMTP._append = append  # type: ignore[method-assign]
    _smtp.RecordingSMTP._record_reply = record_reply  # type: ignore[method-assign]
    _smtp.RecordingSMTP._on_line = on_line  # type: ignore[method-assign]


def small_message(seq: str) -> bytes:
    """A typical small notification e-mail (about 300 bytes)."""
    return (
        f"From: Sender <{SENDER}>\r\n"
        f"To: Recipient <{RECIPIENT}>\r\n"
        f"Subject: Benchmark message {seq}\r\n"
        f"Message-ID: <{seq}@bench.test>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"Hello, this is message {seq}.\r\n"
        "Confirm here: https://example.com/confirm/abc123\r\n"
    ).encode()


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux: KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def send_many(sink: Sink, count: int, new_connection: bool, prefix: str) -> None:
    """Send ``count`` small messages, over one connection or one each."""
    if new_connection:
        for i in range(count):
            with smtplib.SMTP(sink.host, sink.port, local_hostname=CLIENT_NAME) as c:
                c.sendmail(SENDER, [RECIPIENT], small_message(f"{prefix}-{i}"))
                _client_count["accepted"] += 1
    else:
        with smtplib.SMTP(sink.host, sink.port, local_hostname=CLIENT_NAME) as c:
            for i in range(count):
                c.sendmail(SENDER, [RECIPIENT], small_message(f"{prefix}-{i}"))
                _client_count["accepted"] += 1


def scenario_throughput(impl: str, count: int, new_connection: bool) -> dict[str, Any]:
    with open_sink(impl) as sink:
        send_many(sink, 5, new_connection, "warmup")  # imports, first parse paths
        assert sink.wait_for(5, WAIT_TIMEOUT), "warm-up messages not captured"
        start = time.perf_counter()
        send_many(sink, count, new_connection, "m")
        captured = sink.wait_for(count + 5, WAIT_TIMEOUT)
        seconds = time.perf_counter() - start
        received = sink.count() - 5
    return {"seconds": seconds, "received": received, "complete": captured}


_SEQ = re.compile(rb"^Message-ID: <(t\d+-\d+)@bench\.test>", re.MULTILINE)


def scenario_concurrency(impl: str, threads: int, per_thread: int) -> dict[str, Any]:
    """``threads`` clients at once, each sending ``per_thread`` messages over
    its own connection; then check that every message arrived exactly once."""
    total = threads * per_thread
    errors: list[str] = []
    barrier = threading.Barrier(threads + 1)

    def client(sink: Sink, t: int) -> None:
        try:
            with smtplib.SMTP(sink.host, sink.port, local_hostname=CLIENT_NAME) as c:
                barrier.wait(timeout=WAIT_TIMEOUT)
                for i in range(per_thread):
                    c.sendmail(SENDER, [RECIPIENT], small_message(f"t{t}-{i}"))
        except Exception as exc:  # reported as loss below, never swallowed
            errors.append(f"thread {t}: {exc!r}")
            barrier.abort()

    with open_sink(impl) as sink:
        workers = [
            threading.Thread(target=client, args=(sink, t), daemon=True)
            for t in range(threads)
        ]
        for worker in workers:
            worker.start()
        barrier.wait(timeout=WAIT_TIMEOUT)  # all connected: start the clock
        start = time.perf_counter()
        for worker in workers:
            worker.join(WAIT_TIMEOUT)
        sink.wait_for(total, 10.0)
        seconds = time.perf_counter() - start
        seen: dict[bytes, int] = {}
        for raw in sink.raws():
            match = _SEQ.search(raw)
            if match:
                seen[match.group(1)] = seen.get(match.group(1), 0) + 1
    expected = {f"t{t}-{i}".encode() for t in range(threads) for i in range(per_thread)}
    return {
        "seconds": seconds,
        "sent": total,
        "received": sum(seen.values()),
        "lost": len(expected - seen.keys()),
        "duplicated": sum(n - 1 for n in seen.values() if n > 1),
        "errors": errors[:5],
    }


def scenario_size(impl: str, size: int) -> dict[str, Any]:
    """One message with a ``size``-byte random attachment.

    The client runs in a separate process (``big-client``) so that its
    copies of the 30+ MB message do not count in this process's peak memory.
    Capture time runs from the client's connect to the moment the sink says
    it has the message (``time.monotonic`` is system-wide on Linux).
    """
    with open_sink(impl) as sink:
        send_many(sink, 1, False, "warmup")
        assert sink.wait_for(1, WAIT_TIMEOUT)
        gc.collect()
        rss_before = rss_bytes()
        client = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "big-client",
                "--port",
                str(sink.port),
                "--host",
                sink.host,
                "--size",
                str(size),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        captured = sink.wait_for(2, WAIT_TIMEOUT + 60)
        end = time.monotonic()
        out, _ = client.communicate(timeout=WAIT_TIMEOUT)
        peak_after = peak_rss_bytes()
        report = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        raws = sink.raws()
        stored = len(raws[1]) if len(raws) > 1 else 0
    if client.returncode != 0 or "error" in report or not captured:
        return {"error": report.get("error", f"client exit {client.returncode}")}
    return {
        "seconds": end - report["start"],
        "client_seconds": report["sent"] - report["start"],
        "message_bytes": report["message_bytes"],
        "stored_bytes": stored,
        "peak_rss_delta": max(0, peak_after - rss_before),
    }


def big_client(host: str, port: int, size: int) -> dict[str, Any]:
    """Build the big message first, then time only the SMTP exchange."""
    from email.message import EmailMessage
    from email.policy import SMTP as SMTP_POLICY

    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = RECIPIENT
    message["Subject"] = "Big attachment"
    message.set_content("See attachment.\n")
    message.add_attachment(
        os.urandom(size),
        maintype="application",
        subtype="octet-stream",
        filename="big.bin",
    )
    data = message.as_bytes(policy=SMTP_POLICY)
    start = time.monotonic()
    try:
        with smtplib.SMTP(host, port, local_hostname=CLIENT_NAME, timeout=300) as c:
            c.sendmail(SENDER, [RECIPIENT], data)
    except smtplib.SMTPException as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"start": start, "sent": time.monotonic(), "message_bytes": len(data)}


def scenario_memory(impl: str, count: int) -> dict[str, Any]:
    """Resident memory after ``count`` small messages into one sink."""
    with open_sink(impl) as sink:
        send_many(sink, 10, False, "warmup")
        assert sink.wait_for(10, WAIT_TIMEOUT)
        gc.collect()
        rss_before = rss_bytes()
        send_many(sink, count, False, "m")
        captured = sink.wait_for(count + 10, WAIT_TIMEOUT)
        gc.collect()
        rss_after = rss_bytes()
        message_bytes = sum(len(raw) for raw in sink.raws()[10:])
    return {
        "complete": captured,
        "rss_after": rss_after,
        "rss_delta": rss_after - rss_before,
        "message_bytes": message_bytes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "scenario",
        choices=["throughput", "concurrency", "size", "memory", "big-client"],
    )
    parser.add_argument("--impl", default="floor")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--new-connection", action="store_true")
    parser.add_argument("--threads", type=int, default=20)
    parser.add_argument("--size", type=int, default=25_000_000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    result: dict[str, Any]
    try:
        if args.scenario == "throughput":
            result = scenario_throughput(args.impl, args.count, args.new_connection)
        elif args.scenario == "concurrency":
            per_thread = max(1, args.count // args.threads)
            result = scenario_concurrency(args.impl, args.threads, per_thread)
        elif args.scenario == "size":
            result = scenario_size(args.impl, args.size)
        elif args.scenario == "memory":
            result = scenario_memory(args.impl, args.count)
        else:
            result = big_client(args.host, args.port, args.size)
    except Exception as exc:  # the orchestrator shows it in the table
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

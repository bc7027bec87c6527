"""IMAP side by side with Dovecot: FETCH, SEARCH, IDLE latency, FETCH memory.

Usage::

    python benchmarks/imap.py [--repeat 5] [--only fetch,search,idle,memory]

Runs, in one process and alternating run by run:

- ``fetch``: imaplib's ``UID FETCH 1:* (BODY.PEEK[])`` of 1,000 x 10 KB
  messages (goal: at most 1.5x Dovecot's time). Only the command is timed;
  the client is logged in and has the folder selected.
- ``search``: ``UID SEARCH SUBJECT <word>`` over 10,000 messages, 1 in 100
  matching (goal: at most 2x Dovecot's time). One untimed search first on
  both, so Dovecot's header cache is built as in steady use.
- ``idle``: a client IDLEs; a message goes in with smtplib (the sink: SMTP
  to the sink; Dovecot: LMTP to Dovecot's own delivery agent, whose ``250``
  comes once the message is saved); the time from that ``250`` to the
  IMAP client reading ``* n EXISTS``, median and p99 over ``--messages``
  messages (goal for the sink: median under 5 ms). The client reads the
  IMAP socket only after the ``250``, so an EXISTS that arrived first counts
  as (about) zero.
- ``memory`` (the sink only): in a fresh interpreter, the sink's traced
  Python memory (tracemalloc) and resident set (VmHWM, reset through
  ``/proc/self/clear_refs``) while a client in another process FETCHes
  every message of a 1,000 x 10 KB mailbox, above the idle sink (IMAP
  started, no mail) and compared with the mailbox's size (goal: below
  1.5x, i.e. no second copy of the mailbox).

Dovecot is Debian's ``dovecot-imapd`` (and ``dovecot-lmtpd`` for ``idle``)
started by ``tests/dovecot.py`` in a temporary directory, seeded as Maildir
files and indexed before timing. The sink runs in this process as in a
test: its loop thread and the client share one interpreter. Prints a
Markdown table. Everything stays on 127.0.0.1; every wait has a timeout.
"""

from __future__ import annotations

import argparse
import imaplib
import json
import os
import smtplib
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from dovecot import INSTALL_HINT, Dovecot, find_program

from pytest_smtpsink import SMTPSink

PASSWORD = "bench-password"
FETCH_USER = "fetch@example.com"
SEARCH_USER = "search@example.com"
IDLE_USER = "idle@example.com"
USERS = (FETCH_USER, SEARCH_USER, IDLE_USER)
WORD = "needle"
TIMEOUT = 120.0
SCENARIOS = ("fetch", "search", "idle", "memory")


def make_messages(count: int, size: int, to: str, every: int = 0) -> list[bytes]:
    """*count* distinct messages of about *size* bytes (76-character lines);
    with *every*, each *every*-th subject holds `WORD`."""
    line = b"x" * 74 + b"\r\n"
    body = line * max(1, size // len(line))
    messages = []
    for n in range(count):
        subject = f"message {n}" + (f" {WORD}" if every and n % every == 0 else "")
        messages.append(
            b"From: bench@example.com\r\nTo: " + to.encode() + b"\r\n"
            b"Subject: " + subject.encode() + b"\r\n\r\n" + body
        )
    return messages


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# -- fetch and search -----------------------------------------------------------------


def connect(host: str, port: int, user: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4(host, port, timeout=TIMEOUT)
    client.login(user, PASSWORD)
    status, _ = client.select("INBOX")
    assert status == "OK"
    return client


def time_fetch(client: imaplib.IMAP4, count: int) -> float:
    started = time.perf_counter()
    status, data = client.uid("FETCH", "1:*", "(BODY.PEEK[])")
    elapsed = time.perf_counter() - started
    literals = sum(1 for item in data if isinstance(item, tuple))
    assert status == "OK", status
    assert literals == count, literals
    return elapsed


def time_search(client: imaplib.IMAP4, expected: int) -> float:
    started = time.perf_counter()
    status, data = client.uid("SEARCH", "SUBJECT", WORD)
    elapsed = time.perf_counter() - started
    found = len(data[0].split()) if data and data[0] else 0
    assert status == "OK", status
    assert found == expected, found
    return elapsed


# -- idle ---------------------------------------------------------------------------------


class IdleClient:
    """A bare IMAP client that LOGINs, SELECTs INBOX and IDLEs."""

    def __init__(self, host: str, port: int, user: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.buffer = b""
        self.read_line()  # greeting
        self.command(b"a LOGIN " + user.encode() + b" " + PASSWORD.encode())
        self.command(b"b SELECT INBOX")
        self.sock.sendall(b"c IDLE\r\n")
        while not self.read_line().startswith(b"+"):
            pass

    def read_line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the IMAP server closed the connection")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def command(self, line: bytes) -> None:
        tag = line.split(b" ", 1)[0]
        self.sock.sendall(line + b"\r\n")
        while True:
            reply = self.read_line()
            if reply.startswith(tag + b" "):
                if not reply.startswith(tag + b" OK"):
                    raise RuntimeError(reply.decode())
                return

    def wait_exists(self, number: int) -> float:
        """perf_counter() once ``* number EXISTS`` is read."""
        wanted = b"* %d EXISTS" % number
        while self.read_line() != wanted:
            pass
        return time.perf_counter()

    def close(self) -> None:
        try:
            self.sock.sendall(b"DONE\r\n")
            self.command(b"z LOGOUT")
        finally:
            self.sock.close()


def idle_latencies(
    host: str, port: int, sender: smtplib.SMTP, user: str, count: int
) -> tuple[list[float], list[float]]:
    """Seconds from each ``250`` to the ``EXISTS`` it causes, and from the
    start of its transaction (``MAIL FROM``) to that ``EXISTS``."""
    client = IdleClient(host, port, user)
    after_250, whole = [], []
    try:
        for number, message in enumerate(make_messages(count, 1000, user), 1):
            started = time.perf_counter()
            sender.sendmail("bench@example.com", [user], message)
            done = time.perf_counter()
            exists = client.wait_exists(number)
            after_250.append(exists - done)
            whole.append(exists - started)
    finally:
        client.close()
    return after_250, whole


# -- memory (a fresh interpreter) ------------------------------------------------------

_CLIENT = """
import imaplib, sys
client = imaplib.IMAP4(sys.argv[1], int(sys.argv[2]), timeout=120)
client.login("fetch@example.com", "x")
client.select("INBOX")
status, data = client.uid("FETCH", "1:*", "(BODY.PEEK[])")
assert status == "OK", status
print(sum(1 for item in data if isinstance(item, tuple)))
client.logout()
"""


def _rss_peak_reset() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _rss(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_worker(count: int, size: int, traced: bool) -> dict[str, float]:
    """Run in a fresh interpreter: the sink's memory while a client in
    another process FETCHes all of a *count* x *size* mailbox."""
    import gc
    import tracemalloc

    if traced:
        tracemalloc.start()
    with SMTPSink() as sink:
        imap = sink.imap
        gc.collect()
        idle_traced = tracemalloc.get_traced_memory()[0] if traced else 0
        idle_rss = _rss("VmRSS")
        messages = make_messages(count, size, FETCH_USER)
        mailbox = sum(len(m) for m in messages)
        for message in messages:
            sink.deliver(message, to=FETCH_USER)
        del messages, message
        gc.collect()
        loaded_traced = tracemalloc.get_traced_memory()[0] if traced else 0
        loaded_rss = _rss("VmRSS")
        if traced:
            tracemalloc.reset_peak()
        _rss_peak_reset()
        result = subprocess.run(
            [sys.executable, "-c", _CLIENT, imap.host, str(imap.port)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=True,
        )
        assert int(result.stdout) == count, result.stdout
        peak_traced = tracemalloc.get_traced_memory()[1] if traced else 0
        peak_rss = _rss("VmHWM")
    figures: dict[str, float] = {"mailbox": mailbox}
    if traced:
        figures["loaded"] = loaded_traced - idle_traced
        figures["peak"] = peak_traced - idle_traced
    else:
        figures["loaded"] = loaded_rss - idle_rss
        figures["peak"] = peak_rss - idle_rss
    return figures


def measure_memory(count: int, size: int, traced: bool) -> dict[str, float]:
    result = subprocess.run(
        [
            sys.executable,
            __file__,
            "--memory-worker",
            str(int(traced)),
            "--count",
            str(count),
            "--size",
            str(size),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 3,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"memory worker failed:\n{result.stderr}")
    figures: dict[str, float] = json.loads(result.stdout)
    return figures


# -- the run ----------------------------------------------------------------------------


def alternate(
    repeat: int, ours: Callable[[], float], theirs: Callable[[], float]
) -> tuple[float, float]:
    """Medians of *repeat* runs of each, Dovecot first in every round."""
    mine, dovecot = [], []
    for _ in range(repeat):
        dovecot.append(theirs())
        mine.append(ours())
    return statistics.median(mine), statistics.median(dovecot)


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--count", type=int, default=1000, help="FETCH messages")
    parser.add_argument("--size", type=int, default=10_000, help="FETCH size")
    parser.add_argument("--search-count", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=200, help="IDLE messages")
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--memory-worker", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.memory_worker is not None:
        figures = memory_worker(
            options.count, options.size, bool(options.memory_worker)
        )
        print(json.dumps(figures))
        return 0
    only = set(options.only.split(","))
    if not only <= set(SCENARIOS):
        parser.error(f"--only takes {', '.join(SCENARIOS)}")
    program = find_program()
    if program is None:
        print(f"Dovecot is not installed ({INSTALL_HINT})", file=sys.stderr)
        return 1
    rows: list[str] = []
    print(f"load average before: {load()}", flush=True)
    with (
        Dovecot(
            program=program,
            passwords=dict.fromkeys(USERS, PASSWORD),
            lmtp="idle" in only,
        ) as dovecot,
        SMTPSink() as sink,
    ):
        imap = sink.imap
        if "fetch" in only:
            messages = make_messages(options.count, options.size, FETCH_USER)
            dovecot.seed(FETCH_USER, messages)
            for message in messages:
                sink.deliver(message, to=FETCH_USER)
            del messages
            theirs = connect(dovecot.host, dovecot.imap_port, FETCH_USER)
            ours = connect(imap.host, imap.port, FETCH_USER)
            time_fetch(theirs, options.count)  # untimed: warm both up
            time_fetch(ours, options.count)
            mine, dovecots = alternate(
                options.repeat,
                lambda: time_fetch(ours, options.count),
                lambda: time_fetch(theirs, options.count),
            )
            for client in (theirs, ours):
                client.logout()
            rows.append(
                f"| UID FETCH 1:* (BODY.PEEK[]), {options.count} x "
                f"{options.size // 1000} KB | {dovecots * 1e3:.0f} ms "
                f"| {mine * 1e3:.0f} ms | {mine / dovecots:.2f}x | <= 1.5x |"
            )
            print(rows[-1], f"(load {load()})", flush=True)
        if "search" in only:
            every = 100
            messages = make_messages(options.search_count, 1000, SEARCH_USER, every)
            expected = sum(1 for n in range(options.search_count) if n % every == 0)
            dovecot.seed(SEARCH_USER, messages)
            for message in messages:
                sink.deliver(message, to=SEARCH_USER)
            del messages
            theirs = connect(dovecot.host, dovecot.imap_port, SEARCH_USER)
            ours = connect(imap.host, imap.port, SEARCH_USER)
            time_search(theirs, expected)  # untimed: Dovecot builds its cache
            time_search(ours, expected)
            mine, dovecots = alternate(
                options.repeat,
                lambda: time_search(ours, expected),
                lambda: time_search(theirs, expected),
            )
            for client in (theirs, ours):
                client.logout()
            rows.append(
                f"| UID SEARCH SUBJECT {WORD}, {options.search_count} messages "
                f"| {dovecots * 1e3:.1f} ms | {mine * 1e3:.1f} ms "
                f"| {mine / dovecots:.2f}x | <= 2x |"
            )
            print(rows[-1], f"(load {load()})", flush=True)
        if "idle" in only:
            with (
                smtplib.LMTP(dovecot.host, dovecot.lmtp_port, timeout=TIMEOUT) as lmtp,
                smtplib.SMTP(sink.host, sink.port, timeout=TIMEOUT) as smtp,
            ):
                dovecot_idle = idle_latencies(
                    dovecot.host, dovecot.imap_port, lmtp, IDLE_USER,
                    options.messages,
                )  # fmt: skip
                sink_idle = idle_latencies(
                    imap.host, imap.port, smtp, IDLE_USER, options.messages
                )
            for index, span in enumerate(("250", "MAIL FROM")):
                for name, value in (("median", 0.5), ("p99", 0.99)):
                    a = percentile(dovecot_idle[index], value) * 1e3
                    b = percentile(sink_idle[index], value) * 1e3
                    goal = "< 5 ms" if (index, name) == (0, "median") else ""
                    rows.append(
                        f"| IDLE, {span} to EXISTS, {name} of {options.messages} "
                        f"| {a:.2f} ms | {b:.2f} ms | {b / a:.2f}x | {goal} |"
                    )
                    print(rows[-1], f"(load {load()})", flush=True)
    if "memory" in only:
        for traced in (True, False):
            figures = measure_memory(options.count, options.size, traced)
            mailbox = figures["mailbox"]
            how = "tracemalloc" if traced else "RSS"
            rows.append(
                f"| FETCH memory ({how}), above the idle sink "
                f"| | {figures['peak'] / 2**20:.1f} MiB peak, "
                f"{figures['loaded'] / 2**20:.1f} MiB loaded "
                f"| {figures['peak'] / mailbox:.2f}x the mailbox "
                f"({mailbox / 2**20:.1f} MiB) | < 1.5x |"
            )
            print(rows[-1], f"(load {load()})", flush=True)
    print()
    print(f"Medians of {options.repeat} alternating runs; load average after: {load()}")
    print("| measurement | Dovecot | pytest-smtpsink | ratio | goal |")
    print("|---|---:|---:|---:|---|")
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())

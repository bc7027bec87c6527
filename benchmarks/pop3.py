"""POP3 RETR throughput: poplib fetching 1,000 x 10 KB messages.

Usage::

    python benchmarks/pop3.py [--count 1000] [--size 10000] [--repeat 3]

Times one poplib session that logs in, RETRs every message and QUITs
(without deleting), side by side, alternating run by run:

- Dovecot's pop3d (Debian ``dovecot-pop3d``, started by ``tests/dovecot.py``
  in a temporary directory, the messages seeded as Maildir files and
  indexed before timing, as after Dovecot's own deliveries);
- the sink's POP3 server (``smtpsink.pop3``), the same messages put in with
  ``deliver()``, in this process as in a test (the client and the server's
  loop thread share one interpreter).

Prints the median seconds of ``--repeat`` runs and the sink's ratio to
Dovecot (the goal: at most 1.5x). Everything stays on 127.0.0.1; every wait
has a timeout.
"""

from __future__ import annotations

import argparse
import poplib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from dovecot import INSTALL_HINT, Dovecot, find_program

from pytest_smtpsink import SMTPSink

USER = "bench"
PASSWORD = "bench-password"
TIMEOUT = 60.0


def make_messages(count: int, size: int) -> list[bytes]:
    """*count* distinct messages of about *size* bytes (76-character lines)."""
    line = b"x" * 74 + b"\r\n"
    body = line * max(1, size // len(line))
    return [
        b"From: bench@example.com\r\nTo: " + USER.encode() + b"@example.com\r\n"
        b"Subject: message " + str(n).encode() + b"\r\n\r\n" + body
        for n in range(count)
    ]


def time_retr(host: str, port: int, user: str, password: str, count: int) -> float:
    """Seconds for poplib to log in, RETR messages 1..*count* and QUIT."""
    started = time.perf_counter()
    client = poplib.POP3(host, port, timeout=TIMEOUT)
    try:
        client.user(user)
        client.pass_(password)
        for number in range(1, count + 1):
            client.retr(number)
        client.quit()
    finally:
        client.close()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args(argv)
    program = find_program()
    if program is None:
        print(f"Dovecot is not installed ({INSTALL_HINT})", file=sys.stderr)
        return 1
    messages = make_messages(options.count, options.size)
    dovecot_runs: list[float] = []
    sink_runs: list[float] = []
    with (
        Dovecot(program=program, passwords={USER: PASSWORD}) as dovecot,
        SMTPSink(auth={USER: PASSWORD}, auth_plaintext=True) as sink,
    ):
        started = time.perf_counter()
        dovecot.seed(USER, messages)
        seeded = time.perf_counter() - started
        for message in messages:
            sink.deliver(message, to=USER)
        pop3 = sink.pop3
        # One untimed session each first: Dovecot's first login caches
        # sizes; the sink's first use of POP3 starts its server.
        time_retr(dovecot.host, dovecot.pop3_port, USER, PASSWORD, 1)
        time_retr(pop3.host, pop3.port, USER, PASSWORD, 1)
        for _ in range(options.repeat):
            dovecot_runs.append(
                time_retr(
                    dovecot.host, dovecot.pop3_port, USER, PASSWORD, options.count
                )
            )
            sink_runs.append(
                time_retr(pop3.host, pop3.port, USER, PASSWORD, options.count)
            )
    ours, theirs = statistics.median(sink_runs), statistics.median(dovecot_runs)
    print(
        f"RETR of {options.count} x {options.size} B with poplib "
        f"(median of {options.repeat}, alternating; Dovecot seeding took {seeded:.2f} s)"
    )
    print("| server | seconds | per message | vs Dovecot |")
    print("|---|---|---|---|")
    for name, value in (("Dovecot pop3d", theirs), ("pytest-smtpsink", ours)):
        print(
            f"| {name} | {value:.3f} | {value / options.count * 1e3:.3f} ms "
            f"| {value / theirs:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

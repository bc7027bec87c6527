"""POP3 RETR throughput: poplib fetching 1,000 x 10 KB messages.

Usage::

    python benchmarks/pop3.py [--count 1000] [--size 10000] [--repeat 3]

Times one poplib session that logs in, RETRs every message and QUITs
(without deleting), against Dovecot's pop3d (Debian ``dovecot-pop3d``,
started by ``tests/dovecot.py`` in a temporary directory, the messages
seeded as Maildir files and indexed before timing, as after Dovecot's own
deliveries). The sink's column joins once its POP3 server exists; the issue's
goal is the sink within 1.5x of Dovecot. Prints the median seconds of
``--repeat`` runs. Everything stays on 127.0.0.1; every wait has a timeout.
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
    with Dovecot(program=program, passwords={USER: PASSWORD}) as dovecot:
        started = time.perf_counter()
        dovecot.seed(USER, messages)
        seeded = time.perf_counter() - started
        # One untimed session first: Dovecot's first login caches sizes.
        time_retr(dovecot.host, dovecot.pop3_port, USER, PASSWORD, 1)
        runs = [
            time_retr(dovecot.host, dovecot.pop3_port, USER, PASSWORD, options.count)
            for _ in range(options.repeat)
        ]
    median = statistics.median(runs)
    print(
        f"RETR of {options.count} x {options.size} B with poplib "
        f"(median of {options.repeat}; seeding took {seeded:.2f} s)"
    )
    print("| server | seconds | per message |")
    print("|---|---|---|")
    print(f"| Dovecot pop3d | {median:.3f} | {median / options.count * 1e3:.3f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

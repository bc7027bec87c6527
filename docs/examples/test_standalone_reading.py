"""Example of docs/standalone.rst, "Reading the captured mail": it runs as a
test, against a real ``python -m pytest_smtpsink --imap 0`` process."""

from __future__ import annotations

import imaplib
import re
import signal
import smtplib
import subprocess
import sys

import pytest


def print_inbox(host, port, user):
    """Print the subject of every message in ``user``'s INBOX."""
    with imaplib.IMAP4(host, port) as imap:
        imap.login(user, "any password")  # checked only with --auth USER:PASSWORD
        imap.select("INBOX", readonly=True)
        _, numbers = imap.search(None, "ALL")
        for number in numbers[0].split():
            _, data = imap.fetch(number, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            print(data[0][1].decode().strip())
        imap.logout()


@pytest.mark.skipif(sys.platform == "win32", reason="stopped with SIGINT")
def test_print_inbox(capsys):
    sink = subprocess.Popen(
        [sys.executable, "-m", "pytest_smtpsink", "--port", "0", "--imap", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        banner = "".join(sink.stdout.readline() for _ in range(3))
        smtp_port = int(re.search(r"smtp://127\.0\.0\.1:(\d+)", banner)[1])
        imap_port = int(re.search(r"imap://127\.0\.0\.1:(\d+)", banner)[1])
        with smtplib.SMTP("127.0.0.1", smtp_port) as smtp:
            smtp.sendmail(
                "app@example.com", ["ann@example.com"], b"Subject: Hi\r\n\r\n"
            )
        # Printed once the message is stored (an empty line: the sink exited).
        while not (line := sink.stdout.readline()).startswith("message #1 "):
            assert line, "the sink exited"
        print_inbox("127.0.0.1", imap_port, "ann@example.com")
    finally:
        sink.send_signal(signal.SIGINT)
        try:
            sink.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            sink.kill()  # leave nothing running
            sink.communicate()
            raise
    assert capsys.readouterr().out == "Subject: Hi\n"

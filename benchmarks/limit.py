"""The limit: Postfix's ``smtp-sink``, a C server that answers in microseconds.

``smtp-sink`` (Debian package ``postfix``; only this binary is used, the mail
service is never started) throws every message away. The same tests sending
to it show what pytest and the client cost with a server that costs almost
nothing: what remains between that and the floor or pytest-smtpsink is the
Python server's share.

``with LimitSink() as sink:`` starts ``smtp-sink`` on a free 127.0.0.1 port
(as ``nobody`` when run as root: smtp-sink refuses to keep root privileges)
and stops it afterwards. `LimitSink.missing` says why it cannot run here,
or is None.

This file is imported by the benchmark workers and copied next to the
generated ``conftest.py`` of the "limit" test suites, so it must depend on
nothing but the standard library.
"""

from __future__ import annotations

import email.header
import email.parser
import email.policy
import os
import shutil
import socket
import subprocess
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType

_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"]
)
_READY_TIMEOUT = 10.0
_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def smtp_sink_path() -> str | None:
    """Where ``smtp-sink`` is (it lives in sbin, often not on PATH)."""
    return shutil.which("smtp-sink", path=_SEARCH_PATH)


def parse_subject(raw: bytes) -> str:
    """The parse behind pytest-smtpsink's ``assert_sent(subject=...)``: the
    header block alone, with compat32, and the decoded Subject. The limit
    suite's tests do it on the message they sent, so that their work matches
    the sink's tests (the floor's tests only search the bytes)."""
    end = raw.find(b"\r\n\r\n")
    head = raw[: end if end >= 0 else len(raw)] + b"\r\n\r\n"
    value = _HEADERS.parsebytes(head)["Subject"]
    return str(email.header.make_header(email.header.decode_header(value or "")))


class LimitSink:
    """Postfix's ``smtp-sink`` on 127.0.0.1, for as long as the ``with`` lasts.

    It keeps nothing: a message is "captured" when the client's ``sendmail``
    returns, which it does only after smtp-sink's 250 for the final dot.
    """

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def missing() -> str | None:
        """Why the limit cannot run on this machine, or None."""
        if smtp_sink_path() is None:
            return "smtp-sink not found (apt-get install postfix)"
        return None

    def start(self) -> LimitSink:
        program = smtp_sink_path()
        if program is None:
            raise RuntimeError(self.missing())
        # smtp-sink takes a port, not a socket: ask the kernel for a free one.
        # Another process could take it before smtp-sink binds; then the
        # readiness check below fails loudly instead of measuring the wrong
        # server (smtp-sink exits when it cannot bind).
        with socket.socket() as probe:
            probe.bind((self.host, 0))
            self.port = probe.getsockname()[1]
        cmd = [program, "-4", "-h", "limit.test"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]  # required as root, and drops privileges
        # A backlog as large as the floor's (asyncio's default is 100).
        cmd += [f"{self.host}:{self.port}", "100"]
        self._process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        """Until smtp-sink greets: it forks nothing, so the first greeting
        means it is listening. Bounded; a dead process fails at once."""
        assert self._process is not None
        deadline = time.monotonic() + _READY_TIMEOUT
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"smtp-sink exited with status {self._process.returncode}"
                )
            try:
                with socket.create_connection((self.host, self.port), 1.0) as conn:
                    if conn.recv(512).startswith(b"220"):
                        conn.sendall(b"QUIT\r\n")
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"smtp-sink did not listen on port {self.port}")
            time.sleep(0.01)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(_READY_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> LimitSink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

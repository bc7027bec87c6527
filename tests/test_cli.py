"""The standalone sink (``python -m pytest_smtpsink`` / ``smtpsink``).

Most tests run it as a real subprocess, read its output line by line as it
is printed (a reader thread feeds a queue: waiting never sleeps), send mail
with smtplib, curl or swaks, and stop it with SIGINT or SIGTERM.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import hashlib
import imaplib
import io
import os
import poplib
import queue
import re
import shutil
import signal
import smtplib
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import types
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import external
import pytest
import trustme
from conftest import slow_step_report, start_on_ipv6_loopback

from pytest_smtpsink import Message, RelayError, SinkError, SMTPSink
from pytest_smtpsink._cli import _Reporter, _Runner, build_parser, main
from pytest_smtpsink._files import message_file_name
from pytest_smtpsink._live import Inbox, message_fragment

if TYPE_CHECKING:
    import datetime
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from pytest_smtpsink._session import Session

TIMEOUT = 20.0

#: The subprocess tests stop the sink with SIGINT or SIGTERM. Windows cannot
#: send those to a child process (``Popen.send_signal`` there knows only
#: SIGTERM, as a hard kill, and console control events), so the standalone
#: sink is not proven on Windows.
stops_with_signals = pytest.mark.skipif(
    sys.platform == "win32",
    reason="stops the standalone sink with SIGINT/SIGTERM, which Windows "
    "cannot send to a child process",
)

RAW = (
    b"From: App <app@example.com>\r\n"
    b"To: ann@example.com\r\n"
    b"Subject: Your code: 1234 / today\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"\r\n"
    b"Hello Ann,\r\n"
    b".a line that starts with a dot (dot-stuffed on the wire)\r\n"
    b"\r\n"
    b"-- \r\n"
    b"App\r\n"
)


class Sink:
    """A running ``python -m pytest_smtpsink`` subprocess."""

    #: How the sink is run: as its users run it (``-c`` code for a test
    #: that must set up the process first).
    command: tuple[str, ...] = ("-m", "pytest_smtpsink")

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *self.command, "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.stderr = ""
        # Both pipes are read while the sink runs: one left unread would
        # block the sink once its buffer filled (asyncio's reports of slow
        # steps on a busy machine, aiosmtpd's warnings).
        self._errors: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_errors, daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        try:
            first = self.expect(
                r"listening on (smtps?)://(?:127\.0\.0\.1|\[::1\]):(\d+)"
            )
            self.scheme = first.group(1)
            self.port = int(first.group(2))
            self.banner = [first.string]
            while (line := self.expect(".").string) != "press Ctrl-C to stop":
                self.banner.append(line)
        except BaseException:
            self.proc.kill()  # no one else holds it to stop it
            self.finish()
            raise

    def in_banner(self, pattern: str) -> re.Match[str]:
        """The line of the start-up banner matching ``pattern``."""
        for line in self.banner:
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"no {pattern!r} in the banner: {self.banner}")

    def stderr_lines(self) -> list[str]:
        """What the sink wrote to stderr (read by `stop`), but asyncio's
        reports of a slow step (see `slow_step_report`)."""
        return [line for line in self.stderr.splitlines() if not slow_step_report(line)]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _read_errors(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._errors.append(line)

    def expect(self, pattern: str) -> re.Match[str]:
        """Wait for the next output line matching ``pattern``."""
        regex = re.compile(pattern)
        while True:
            try:
                line = self.lines.get(timeout=TIMEOUT)
            except queue.Empty:
                raise AssertionError(
                    f"no line matching {pattern!r} within {TIMEOUT} s; output so far:\n"
                    + "\n".join(self.seen)
                    # A thread's traceback, say: the sink runs on meanwhile.
                    + "\nstderr so far:\n"
                    + "".join(self._errors)
                ) from None
            if line is None:
                raise AssertionError(
                    f"the sink exited before printing {pattern!r}; output:\n"
                    + "\n".join(self.seen)
                    + f"\nstderr:\n{self.finish()}"
                )
            self.seen.append(line)
            match = regex.search(line)
            if match:
                return match

    def stop(self, signum: int = signal.SIGINT) -> list[str]:
        """Send ``signum``; returns the rest of the output."""
        self.proc.send_signal(signum)
        self.finish()
        rest = []
        while (line := self.lines.get(timeout=TIMEOUT)) is not None:
            rest.append(line)
        self.seen.extend(rest)
        return rest

    def finish(self) -> str:
        """Wait for the sink to exit (killed if it does not) and return its
        stderr. The pipes are closed however that goes, so that a failed
        test's cannot warn in a later one."""
        try:
            self.proc.wait(TIMEOUT)
        finally:
            if self.proc.poll() is None:  # pragma: no cover - a hang is a bug
                self.proc.kill()
                self.proc.wait()
            for reader in self._readers:
                reader.join(TIMEOUT)
            self.stderr = "".join(self._errors)
            assert self.proc.stdout is not None
            assert self.proc.stderr is not None
            self.proc.stdout.close()
            self.proc.stderr.close()
        return self.stderr


@pytest.fixture
def start() -> Iterator[Callable[..., Sink]]:
    started: list[Sink] = []

    def start(*args: str) -> Sink:
        sink = Sink(*args)
        started.append(sink)
        return sink

    yield start
    for sink in started:
        if sink.proc.poll() is None:
            sink.proc.send_signal(signal.SIGINT)
        sink.finish()


@stops_with_signals
def test_prints_sessions_and_messages_and_stops_on_sigint(
    start: Callable[..., Sink],
) -> None:
    sink = start()
    with smtplib.SMTP("127.0.0.1", sink.port, local_hostname="app.example") as smtp:
        smtp.sendmail("app@example.com", ["ann@example.com", "bcc@example.com"], RAW)
    sink.expect(r"session 1 opened from 127\.0\.0\.1:\d+")
    line = sink.expect(r"^message #1 ").string
    assert "app@example.com -> ann@example.com, bcc@example.com" in line
    assert "Subject: 'Your code: 1234 / today'" in line
    closed = sink.expect(r"session 1 closed").string
    assert "(quit)" in closed
    assert "EHLO app.example" in closed
    assert closed.endswith("1 message")

    # A connection that delivers nothing is a session too.
    with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
        smtp.noop()
    sink.expect(r"session 2 opened")
    assert sink.expect(r"session 2 closed").string.endswith("0 messages")

    rest = sink.stop(signal.SIGINT)
    assert sink.proc.returncode == 0
    assert rest[-1] == "smtpsink stopped: 1 message in 2 sessions"
    assert "Traceback" not in sink.stderr


@stops_with_signals
def test_sigterm_stops_cleanly(start: Callable[..., Sink]) -> None:
    sink = start()
    rest = sink.stop(signal.SIGTERM)
    assert sink.proc.returncode == 0
    assert rest == ["smtpsink stopped: 0 messages in 0 sessions"]
    assert sink.stderr_lines() == []


class HangupSink(Sink):
    """A sink whose SIGHUP is the default's, whatever this process's is: a
    test run under nohup (as CI may be) hands its children SIGHUP ignored,
    which the sink then keeps (see the next test)."""

    command = (
        "-c",
        "import runpy, signal\n"
        "signal.signal(signal.SIGHUP, signal.SIG_DFL)\n"
        "runpy.run_module('pytest_smtpsink', run_name='__main__')\n",
    )


@stops_with_signals
def test_sighup_stops_cleanly_and_removes_the_ca() -> None:
    # A closed terminal or a dropped ssh session (SIGHUP) killed the sink
    # with no clean-up: its CA directory stayed in /tmp.
    sink = HangupSink("--tls", "starttls")
    try:
        ca_file = Path(sink.in_banner(r"CA certificate for clients to trust: (.+)")[1])
        assert ca_file.is_file()
        rest = sink.stop(signal.SIGHUP)
    finally:
        if sink.proc.poll() is None:  # pragma: no cover - a hang is a bug
            sink.proc.kill()
        sink.finish()
    assert (sink.proc.returncode, rest) == (
        0,
        ["smtpsink stopped: 0 messages in 0 sessions"],
    )
    assert not ca_file.parent.exists()


@contextlib.contextmanager
def stopping_with_a_relay_in_flight(
    sink: Sink, upstream: socket.socket
) -> Iterator[None]:
    """Send ``sink`` a message its relay takes to ``upstream`` (a server
    that never greets), stop it with a first SIGINT while that relay waits,
    and let the caller send the second signal; then wait for the end."""
    with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
        smtp.sendmail("app@example.com", ["ann@example.com"], RAW)
    sink.expect(r"^message #1 ")
    # The relay's connection, taken: it is in flight, waiting for a
    # greeting, when the first signal comes. Before, under load, the
    # message could still be queued then: stopping failed it at once and
    # the sink ended before the second signal.
    upstream.settimeout(TIMEOUT)
    accepted, _ = upstream.accept()
    with accepted:
        sink.proc.send_signal(signal.SIGINT)
        sink.expect(r"^stopping: ")
        yield
        sink.finish()


class OtherThreadSignalSink(Sink):
    """A sink with a thread of its own that, once the file named by
    ``SMTPSINK_TEST_SIGNAL_FILE`` exists, sends SIGINT to itself: a signal
    the kernel hands to a thread other than the main one, as it may."""

    command = (
        "-c",
        "import os, runpy, signal, threading, time\n"
        "def later():\n"
        "    path = os.environ['SMTPSINK_TEST_SIGNAL_FILE']\n"
        "    while not os.path.exists(path):\n"
        "        time.sleep(0.01)\n"
        "    signal.pthread_kill(threading.get_ident(), signal.SIGINT)\n"
        "threading.Thread(target=later, daemon=True).start()\n"
        "runpy.run_module('pytest_smtpsink', run_name='__main__')\n",
    )


@stops_with_signals
def test_a_second_signal_to_another_thread_quits_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The main thread waited in the stop for the relay's upstream (up to
    # --relay-timeout) and ran the second signal's handler only after it,
    # when the kernel had handed the signal to another thread: under load,
    # "Ctrl-C again quits at once" took minutes.
    trigger = tmp_path / "second-signal"
    monkeypatch.setenv("SMTPSINK_TEST_SIGNAL_FILE", str(trigger))
    with socket.create_server(("127.0.0.1", 0)) as silent:  # never greets
        port = silent.getsockname()[1]
        sink = OtherThreadSignalSink(
            "--relay", f"smtp://127.0.0.1:{port}", "--relay-to", ".*",
            "--relay-timeout", "300",
        )  # fmt: skip
        try:
            with stopping_with_a_relay_in_flight(sink, silent):
                trigger.touch()
        finally:
            if sink.proc.poll() is None:  # a hang: the failure is finish()'s
                sink.proc.kill()
                sink.finish()
    assert sink.proc.returncode == -signal.SIGINT
    assert "smtpsink: stopped at once" in sink.stderr


class NohupSink(Sink):
    """A sink started with SIGHUP ignored, as nohup starts it."""

    command = (
        "-c",
        "import runpy, signal\n"
        "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
        "runpy.run_module('pytest_smtpsink', run_name='__main__')\n",
    )


@stops_with_signals
def test_a_sink_started_ignoring_sighup_keeps_serving_after_one() -> None:
    # Under nohup the sink stopped on SIGHUP once it handled that signal.
    sink = NohupSink()
    try:
        sink.proc.send_signal(signal.SIGHUP)  # discarded: the sink ignores it
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=TIMEOUT) as smtp:
            assert smtp.noop()[0] == 250
        rest = sink.stop(signal.SIGTERM)
    finally:
        if sink.proc.poll() is None:  # pragma: no cover - a hang is a bug
            sink.proc.kill()
        sink.finish()
    assert sink.proc.returncode == 0, sink.stderr
    assert rest[-1] == "smtpsink stopped: 0 messages in 1 session"


@stops_with_signals
def test_a_second_signal_quits_at_once_and_removes_the_ca(
    start: Callable[..., Sink],
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # never greets
        port = silent.getsockname()[1]
        sink = start(
            "--tls", "starttls", "--relay", f"smtp://127.0.0.1:{port}",
            "--relay-to", ".*", "--relay-timeout", "300",
        )  # fmt: skip
        ca_file = Path(sink.in_banner(r"CA certificate for clients to trust: (.+)")[1])
        with stopping_with_a_relay_in_flight(sink, silent):
            sink.proc.send_signal(signal.SIGINT)
    assert sink.proc.returncode == -signal.SIGINT  # a shell says 130
    # The message whose relay it cut off is named: its .eml is to resend.
    assert (
        "smtpsink: message #1 was not relayed (stopped at once)\n"
        "smtpsink: stopped at once; mail not yet saved or relayed is lost"
    ) in sink.stderr
    assert not ca_file.parent.exists()


#: Runs the sink in-process; once its main thread sleeps waiting for
#: something to report (the sleep is named ``wait``, in the reporting loop),
#: another thread takes a SIGINT (as the kernel may
#: choose any thread for a signal sent to a process). Python runs the handler
#: only on the main thread, so the sleep itself must end.
_SIGNAL_TO_ANOTHER_THREAD = """
import signal, sys, threading, time
from pytest_smtpsink._cli import main

main_thread = threading.main_thread()

def waiting_for_news():
    frame = sys._current_frames().get(main_thread.ident)
    calls = []
    while frame is not None:
        calls.append(frame.f_code.co_name)
        frame = frame.f_back
    return calls[:1] == ["wait"] and "_loop" in calls

def interrupt_once_idle():
    while not waiting_for_news():
        time.sleep(0.001)  # a poll for the main thread's state, not a delay
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)

threading.Thread(target=interrupt_once_idle, daemon=True).start()
sys.exit(main(["--port", "0"]))
"""


@stops_with_signals
def test_a_signal_taken_by_another_thread_stops_the_sink() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SIGNAL_TO_ANOTHER_THREAD],
        check=False,  # the exit status is asserted below, after stderr
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert [
        line for line in done.stderr.splitlines() if not slow_step_report(line)
    ] == []
    assert done.returncode == 0
    assert done.stdout.splitlines()[-1] == "smtpsink stopped: 0 messages in 0 sessions"


@stops_with_signals
def test_a_session_open_at_shutdown_is_reported(start: Callable[..., Sink]) -> None:
    sink = start()
    smtp = smtplib.SMTP("127.0.0.1", sink.port)
    try:
        smtp.ehlo("late.example")
        sink.expect(r"session 1 opened")
        rest = sink.stop()
    finally:
        smtp.close()
    assert sink.proc.returncode == 0
    assert any(
        "session 1 closed (server-closed)" in line and "EHLO late.example" in line
        for line in rest
    ), rest
    assert rest[-1] == "smtpsink stopped: 0 messages in 1 session"


@stops_with_signals
def test_save_dir_writes_the_bytes_as_sent(
    start: Callable[..., Sink], tmp_path: Path
) -> None:
    save = tmp_path / "mail"  # created by the sink
    sink = start("--save-dir", str(save))
    with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
        smtp.sendmail("app@example.com", ["ann@example.com"], RAW)
        smtp.sendmail("app@example.com", ["bob@example.com"], b"No headers\r\n")
    sink.expect(r"saved as .*0001-Your-code-1234-today\.eml$")
    sink.expect(r"saved as .*0002-no-subject\.eml$")
    sink.expect(r"session 1 closed")
    sink.stop()
    assert sink.proc.returncode == 0
    assert sorted(p.name for p in save.iterdir()) == [
        "0001-Your-code-1234-today.eml",
        "0002-no-subject.eml",
        "session-0001.txt",
    ]
    assert (save / "0001-Your-code-1234-today.eml").read_bytes() == RAW
    assert (save / "0002-no-subject.eml").read_bytes() == b"No headers\r\n"
    transcript = (save / "session-0001.txt").read_text(encoding="utf-8")
    # The same header as the plugin's saved transcripts (one writer).
    assert re.match(
        r"session 1: 127\.0\.0\.1:\d+ .* messages=2 end=quit  started ", transcript
    )
    # smtplib's command case differs between Python versions.
    assert "c: mail from:<app@example.com>" in transcript.lower()
    assert "S: 250 2.0.0 OK: queued as #2" in transcript


@stops_with_signals
def test_a_save_dir_with_an_earlier_runs_files_is_named_in_the_banner(
    start: Callable[..., Sink], tmp_path: Path
) -> None:
    # A restart on the same volume replaced them without a word.
    for name in ("0001-Welcome.eml", "session-0001.txt", "deliver-0000-x.eml"):
        (tmp_path / name).write_bytes(b"an earlier run's\r\n")
    (tmp_path / "notes.txt").write_bytes(b"not the sink's\r\n")
    sink = start("--save-dir", str(tmp_path))
    assert sink.in_banner(r"^note: ").string == (
        f"note: {tmp_path} holds 3 saved files of an earlier run: numbering "
        "starts at 1 again, so files of the same names are replaced (use a new "
        "directory per run to keep them)"
    )
    sink.stop()
    clean = start("--save-dir", str(tmp_path / "new"))
    assert not [line for line in clean.banner if line.startswith("note: ")]
    clean.stop()


@stops_with_signals
def test_a_connection_that_says_nothing_leaves_no_transcript_file(
    start: Callable[..., Sink], tmp_path: Path
) -> None:
    # A health check's probe every few seconds left a file each (17,280 a
    # day); the console line still says it came.
    sink = start("--save-dir", str(tmp_path))
    socket.create_connection(("127.0.0.1", sink.port), timeout=TIMEOUT).close()
    sink.expect(r"session 1 closed")
    with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
        smtp.noop()  # a probe that speaks is kept
    sink.expect(r"session 2 closed")
    sink.stop()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["session-0002.txt"]


@stops_with_signals
def test_save_dir_that_goes_away_is_made_again_or_reported(
    start: Callable[..., Sink], tmp_path: Path
) -> None:
    save = tmp_path / "mail"
    sink = start("--save-dir", str(save))
    with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
        smtp.sendmail("app@example.com", ["ann@example.com"], b"Subject: One\r\n\r\n")
        sink.expect(r"saved as .*0001-One\.eml$")
        shutil.rmtree(save)  # emptied by hand: made again for the next one
        smtp.sendmail("app@example.com", ["ann@example.com"], b"Subject: Two\r\n\r\n")
        sink.expect(r"saved as .*0002-Two\.eml$")
        shutil.rmtree(save)
        save.write_text("not a directory")  # cannot be saved: said, and served on
        smtp.sendmail("app@example.com", ["ann@example.com"], b"Subject: 3\r\n\r\n")
        sink.expect(r"^message #3 ")
    # The next line closes the session: there is no "saved as" line.
    assert re.search(r"session 1 closed .* 3 messages$", sink.expect(r".").string)
    with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
        assert smtp.noop()[0] == 250
    rest = sink.stop()
    assert sink.proc.returncode == 0
    assert rest[-1] == "smtpsink stopped: 3 messages in 2 sessions"
    assert sink.stderr_lines() == [
        f"smtpsink: cannot save message #3 as {save / '0003-3.eml'}: Not a directory",
        "smtpsink: cannot save the transcript of session 1 as "
        f"{save / 'session-0001.txt'}: Not a directory",
        "smtpsink: cannot save the transcript of session 2 as "
        f"{save / 'session-0002.txt'}: Not a directory",
    ]


@stops_with_signals
def test_a_save_dir_another_run_made_again_is_left_to_it(
    start: Callable[..., Sink], tmp_path: Path
) -> None:
    # Removed "to empty it", the directory was made again by a second sink,
    # which the lock let in; the first went on writing there, and its
    # 0001-same.eml replaced the second's.
    save = tmp_path / "mail"
    first = start("--save-dir", str(save))
    shutil.rmtree(save)
    second = start("--save-dir", str(save))
    for sink, sender in ((second, "second"), (first, "first")):
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=TIMEOUT) as smtp:
            smtp.sendmail(
                f"{sender}@example.com", ["ann@example.com"], b"Subject: same\r\n\r\n"
            )
    second.expect(r"saved as .*0001-same\.eml$")
    first.expect(r"^message #1 ")
    # The next line closes the session: there is no "saved as" line.
    assert re.search(r"session 1 closed .* 1 message$", first.expect(r".").string)
    first.stop()
    assert first.stderr_lines() == [
        f"smtpsink: another run now saves to {str(save)!r} (it was removed and "
        "made again): this sink saves nothing more there, so as not to replace "
        "that run's files; its output goes on"
    ]
    second.stop()
    assert sorted(p.name for p in save.iterdir()) == [
        "0001-same.eml",
        "session-0001.txt",
    ]
    assert b"second@example.com" in (save / "session-0001.txt").read_bytes()


@stops_with_signals
def test_a_save_dir_made_again_by_the_sink_is_held_again(
    start: Callable[..., Sink], tmp_path: Path
) -> None:
    # Made again by the sink itself, the directory is its own: another run
    # is refused it, as it was the first.
    save = tmp_path / "mail"
    sink = start("--save-dir", str(save))
    shutil.rmtree(save)
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=TIMEOUT) as smtp:
        smtp.sendmail("app@example.com", ["ann@example.com"], b"Subject: One\r\n\r\n")
    sink.expect(r"saved as .*0001-One\.eml$")
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_smtpsink",
            "--port",
            "0",
            "--save-dir",
            str(save),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert refused.returncode == 2
    assert "another run is saving to" in refused.stderr
    sink.stop()


def _send_two_and_stop(proc: subprocess.Popen[str], port: int) -> str:
    """Send "One" and "Two" to the sink on ``port``, stop it with SIGINT;
    its stderr."""
    for subject in ("One", "Two"):
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as smtp:
            smtp.sendmail(
                "app@example.com",
                ["ann@example.com"],
                f"Subject: {subject}\r\n\r\n".encode(),
            )
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=TIMEOUT)
    return err


@stops_with_signals
def test_output_read_by_nobody_stops_no_mail(tmp_path: Path) -> None:
    # `smtpsink | head -3`: the reader goes after three lines.
    command = [sys.executable, "-m", "pytest_smtpsink", "--port", "0"]
    proc = subprocess.Popen(
        [*command, "--save-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = "".join(proc.stdout.readline() for _ in range(3))
        port = int(re.search(r"smtp://127\.0\.0\.1:(\d+)", banner)[1])  # type: ignore[index]
        proc.stdout.close()
        err = _send_two_and_stop(proc, port)
    finally:
        if proc.poll() is None:  # pragma: no cover - a hang is a bug
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert [line for line in err.splitlines() if not slow_step_report(line)] == [
        "smtpsink: output closed; the sink runs on until stopped (Ctrl-C)"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "0001-One.eml",
        "0002-Two.eml",
        "session-0001.txt",
        "session-0002.txt",
    ]


@stops_with_signals
def test_output_nobody_reads_holds_back_no_saving_and_no_stop(tmp_path: Path) -> None:
    # Ctrl-S in a terminal, `smtpsink | less` left waiting, a stalled log
    # collector: once the pipe was full the main thread waited on it, so
    # the sink saved nothing more while telling its clients 250, and
    # SIGTERM could not stop it (`docker stop` then killed it, the mail
    # lost).
    command = [sys.executable, "-m", "pytest_smtpsink", "--port", "0"]
    proc = subprocess.Popen(
        [*command, "--transcripts", "--save-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    messages = 300  # their transcripts are several times a pipe's 64 KB
    try:
        assert proc.stdout is not None
        banner = "".join(proc.stdout.readline() for _ in range(3))
        port = int(re.search(r"smtp://127\.0\.0\.1:(\d+)", banner)[1])  # type: ignore[index]
        for number in range(messages):  # and from here on, nobody reads
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as smtp:
                smtp.sendmail(
                    "app@example.com",
                    ["ann@example.com"],
                    f"Subject: {number}\r\n\r\n".encode(),
                )
        deadline = time.monotonic() + TIMEOUT
        while (
            len(saved := list(tmp_path.glob("*.eml"))) < messages
            and time.monotonic() < deadline
        ):
            time.sleep(0.01)  # a poll of the other process's files, not a delay
        assert len(saved) == messages
        proc.send_signal(signal.SIGTERM)
        proc.wait(TIMEOUT)
    finally:
        if proc.poll() is None:  # pragma: no cover - a hang is the bug
            proc.kill()
        proc.communicate()
    assert proc.returncode == 0


def test_output_lines_past_the_limit_are_counted_once_it_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pytest_smtpsink._cli import _Console

    monkeypatch.setattr(_Console, "LIMIT", 3)
    reading, writing = os.pipe()
    errors: list[OSError] = []
    try:
        filler = b"x" * 4096
        os.set_blocking(writing, False)
        for piece in (filler, b"x"):  # a pipe nobody reads: full to the byte
            with contextlib.suppress(BlockingIOError):
                while True:
                    os.write(writing, piece)
        os.set_blocking(writing, True)
        console = _Console(writing, "utf-8", errors.append)
        console.put("first")  # taken by the writer, which then waits
        lines = [f"line {n}" for n in range(10)]
        for line in lines:
            console.put(line)
        with os.fdopen(reading, "rb", closefd=False) as pipe:
            read = b""
            while b"left out" not in read:
                read += pipe.read1(65536)
            while not read.endswith(b"\n"):
                read += pipe.read1(65536)
        console.close(TIMEOUT)
    finally:
        os.close(reading)
        os.close(writing)
    shown = read.lstrip(b"x").decode().splitlines()
    # What the writer took before its write waited ("first", and maybe a
    # line or two more), then the three held, then the count of the rest,
    # whatever moment the writer woke at.
    *written, note = shown
    assert written == ["first", *lines[: len(written) - 1]]
    assert note == (
        f"smtpsink: {11 - len(written)} lines of output left out: the output "
        "was not read (the sink served on meanwhile)"
    )
    assert len(written) >= 3  # at least the three held
    assert errors == []


#: Tries with a new free port when another process took the last one.
PORT_ATTEMPTS = 3


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@stops_with_signals
@pytest.mark.parametrize(
    ("output", "said"),
    [
        ("/dev/full", "cannot write the output (No space left on device)"),
        ("closed", "standard output is closed"),
    ],
)
def test_output_that_cannot_be_written_stops_no_mail(
    tmp_path: Path, output: str, said: str
) -> None:
    # A full disk, `> /dev/full`, `>&-`: the sink said so and died with a
    # traceback, refusing the client it was serving with a 421.
    if output == "/dev/full" and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    proc: subprocess.Popen[str] | None = None
    try:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            port = _free_port()  # no output to read it from
            command = [sys.executable, "-m", "pytest_smtpsink", "--port", str(port)]
            command += ["--save-dir", str(tmp_path)]
            if output == "closed":
                command = ["sh", "-c", 'exec "$@" >&-', "sh", *command]
            with contextlib.ExitStack() as stack:
                stdout = (
                    None
                    if output == "closed"
                    else stack.enter_context(open(output, "w"))
                )
                proc = subprocess.Popen(
                    command, stdout=stdout, stderr=subprocess.PIPE, text=True
                )
            assert proc.stderr is not None
            # Said at the banner, once the sink listens.
            first = proc.stderr.readline()
            while slow_step_report(first.rstrip("\n")):
                first = proc.stderr.readline()
            if "Address already in use" not in first or attempt == PORT_ATTEMPTS:
                break
            # Another process took the port between the probe and the sink's
            # bind (xdist workers, a busy machine): try another.
            proc.communicate()
        assert proc is not None
        assert first == f"smtpsink: {said}; the sink runs on until stopped (Ctrl-C)\n"
        err = _send_two_and_stop(proc, port)
    finally:
        if proc is not None and proc.poll() is None:  # pragma: no cover - a bug
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert [line for line in err.splitlines() if not slow_step_report(line)] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "0001-One.eml",
        "0002-Two.eml",
        "session-0001.txt",
        "session-0002.txt",
    ]


class AsciiOutputSink(Sink):
    """A sink whose stdout writes ASCII only (a Windows code page, or
    PYTHONIOENCODING=ascii, are alike)."""

    command = (
        "-c",
        "import runpy, sys\n"
        "sys.stdout.reconfigure(encoding='ascii')\n"
        "runpy.run_module('pytest_smtpsink', run_name='__main__')\n",
    )


@stops_with_signals
def test_an_output_that_cannot_hold_a_character_shows_it_escaped() -> None:
    # The first non-ASCII subject stopped all output for the rest of the
    # run, saying the output could not be written.
    sink = AsciiOutputSink()
    try:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=TIMEOUT) as smtp:
            for subject in ("Caf\u00e9 \u2615", "Plain"):
                smtp.sendmail(
                    "app@example.com",
                    ["ann@example.com"],
                    f"Subject: {subject}\r\n\r\n".encode(),
                )
        first = sink.expect(r"^message #1 ").string
        assert "Subject: 'Caf\\xe9 \\u2615'" in first
        assert "Subject: 'Plain'" in sink.expect(r"^message #2 ").string
        rest = sink.stop()
    finally:
        if sink.proc.poll() is None:  # pragma: no cover - a hang is a bug
            sink.proc.kill()
        sink.finish()
    assert rest[-1] == "smtpsink stopped: 2 messages in 1 session"
    assert sink.stderr_lines() == []


class SmallFilesSink(Sink):
    """A sink whose files cannot grow past 200 KB (RLIMIT_FSIZE): a write
    past that fails (EFBIG) as on a disk that fills up mid-way."""

    command = (
        "-c",
        "import resource, runpy, signal\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))\n"
        "runpy.run_module('pytest_smtpsink', run_name='__main__')\n",
    )


@stops_with_signals
@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="no RLIMIT_FSIZE here")
def test_a_message_that_cannot_be_saved_whole_leaves_no_file(tmp_path: Path) -> None:
    # The first 200 KB of it stayed as 0001-Big.eml, as if that were the
    # message.
    sink = SmallFilesSink("--save-dir", str(tmp_path))
    try:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=TIMEOUT) as smtp:
            big = b"Subject: Big\r\n\r\n" + (b"x" * 76 + b"\r\n") * 4000
            smtp.sendmail("app@example.com", ["ann@example.com"], big)
            smtp.sendmail(
                "app@example.com", ["ann@example.com"], b"Subject: Small\r\n\r\n"
            )
            sink.expect(r"saved as .*0002-Small\.eml$")
        sink.stop()
    finally:
        if sink.proc.poll() is None:  # pragma: no cover - a hang is a bug
            sink.proc.kill()
        sink.finish()
    assert sink.proc.returncode == 0, sink.stderr
    assert sink.stderr_lines() == [
        f"smtpsink: cannot save message #1 as {tmp_path / '0001-Big.eml'}: "
        "File too large"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "0002-Small.eml",
        "session-0001.txt",
    ]


@stops_with_signals
def test_a_closed_session_says_a_message_was_cut_off(
    start: Callable[..., Sink],
) -> None:
    # A client that left (or a sink stopped) mid-DATA: "0 messages", and
    # nothing under it said a message was lost.
    sink = start()
    with socket.create_connection(("127.0.0.1", sink.port), timeout=TIMEOUT) as c:
        replies = c.makefile("rb")
        replies.readline()  # the greeting
        c.sendall(
            b"HELO app.test\r\nMAIL FROM:<app@example.com>\r\n"
            b"RCPT TO:<ann@example.com>\r\nDATA\r\n"
        )
        for _ in range(4):
            replies.readline()
        c.sendall(b"Subject: cut\r\n\r\nhalf a messa")
        replies.close()
    sink.expect(r"session 1 closed \(client-closed\).*, 0 messages$")
    assert sink.expect(r"^    C: ").string == (
        "    C: <message content: 28 bytes, incomplete: the connection closed "
        "before the final dot>"
    )
    sink.stop()


@stops_with_signals
def test_a_closed_session_says_what_was_refused(start: Callable[..., Sink]) -> None:
    sink = start("--max-size", "1K")
    with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
        with pytest.raises(smtplib.SMTPSenderRefused):
            smtp.sendmail("app@example.com", ["ann@example.com"], b"x" * 2048)
        for _ in range(4):
            assert smtp.docmd("BOGUS")[0] == 500
    sink.expect(r"session 1 closed \(quit\).*, 0 messages$")
    mail = sink.expect(r"^    C: ").string.lower()  # smtplib's case varies
    assert mail == "    c: mail from:<app@example.com> size=2048"
    assert sink.expect(r"^    S: ").string.startswith("    S: 552 ")
    for _ in range(2):
        assert sink.expect(r"^    C: ").string == "    C: BOGUS"
        assert sink.expect(r"^    S: ").string.startswith("    S: 500 ")
    more = sink.expect(r"^    \.\.\. ").string
    assert more == "    ... and 2 more refused (--transcripts shows all)"
    sink.stop()


def test_a_client_that_quit_after_ehlo_is_asked_what_it_wanted(
    start: Callable[..., Sink],
) -> None:
    # Django with EMAIL_USE_TLS=True against a plain sink: EHLO, QUIT, and
    # the terminal said no more than that (the plugin's failures ask).
    sink = start()
    with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
        smtp.ehlo("app.example")
        with pytest.raises(smtplib.SMTPNotSupportedError):
            smtp.starttls()
    sink.expect(r"session 1 closed \(quit\).*, 0 messages$")
    assert sink.expect(r"^    hint").string == (
        "    hint: the client quit after EHLO: did it want STARTTLS or AUTH, which "
        "this sink does not offer? Turn TLS and login off for tests, or start the "
        "sink with --tls starttls --auth any"
    )
    sink.stop()


@stops_with_signals
def test_quiet_prints_only_the_address_and_the_count(
    start: Callable[..., Sink],
) -> None:
    sink = start("--quiet")
    with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
        # The 250 after DATA comes after the message is stored.
        smtp.sendmail("app@example.com", ["ann@example.com"], RAW)
    rest = sink.stop()
    assert sink.proc.returncode == 0
    assert rest == ["smtpsink stopped: 1 message in 1 session"]
    assert not any("message #" in line for line in sink.seen)


@stops_with_signals
def test_quiet_prints_nothing_of_aiosmtpd_log(start: Callable[..., Sink]) -> None:
    sink = start("--quiet", "--tls", "starttls")
    with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
        # Before: a WARNING per unknown command reached stderr.
        assert smtp.docmd("BOGUS")[0] == 500
        stranger = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # trusts nobody
        # Before: this printed an ERROR with a full traceback.
        with pytest.raises(ssl.SSLCertVerificationError):
            smtp.starttls(context=stranger)
    rest = sink.stop()
    assert sink.proc.returncode == 0
    assert rest == ["smtpsink stopped: 0 messages in 1 session"]
    assert sink.stderr_lines() == [], sink.stderr  # all of it, if not


@stops_with_signals
def test_aiosmtpd_log_shows_no_control_character_of_the_client(
    start: Callable[..., Sink],
) -> None:
    sink = start()
    with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
        # An unknown command that would clear the terminal it is logged to.
        assert smtp.docmd("\x1b[2J\x1b[31mBOGUS")[0] == 500
    sink.stop()
    # Before: aiosmtpd's "unrecognised" warning carried the escapes as sent.
    assert "\x1b" not in sink.stderr
    assert "\\x1b[2J\\x1b[31MBOGUS" in sink.stderr


@stops_with_signals
def test_a_rejected_certificate_is_a_tls_failed_session(
    start: Callable[..., Sink],
) -> None:
    sink = start("--tls", "implicit")
    stranger = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # trusts nobody
    with pytest.raises(ssl.SSLCertVerificationError):
        smtplib.SMTP_SSL("127.0.0.1", sink.port, context=stranger)
    closed = sink.expect(r"session 1 closed").string
    assert (
        "(tls-failed: TLSV1_ALERT_UNKNOWN_CA: the client rejected the sink's "
        "certificate (does it trust the sink's CA? the banner names its CA file))"
    ) in closed
    sink.stop()
    assert "Traceback" not in sink.stderr


@stops_with_signals
def test_a_tls_client_on_the_plain_port_is_told_the_option(
    start: Callable[..., Sink],
) -> None:
    sink = start()
    with pytest.raises(ssl.SSLError, match="WRONG_VERSION_NUMBER"):
        smtplib.SMTP_SSL("127.0.0.1", sink.port, timeout=10)
    closed = sink.expect(r"session 1 closed").string
    # The settings' spelling (tls='implicit') is no option of the command.
    assert (
        "(tls-on-plain-port: the client started TLS on a plain-text port (a "
        "client that speaks TLS from the start, e.g. smtplib.SMTP_SSL, reads the "
        "plain greeting as TLS and fails with WRONG_VERSION_NUMBER: connect "
        "without TLS, e.g. smtplib.SMTP (--tls starttls to offer STARTTLS), or "
        "give the sink --tls implicit))"
    ) in closed
    sink.stop()


@stops_with_signals
def test_every_ipv6_interface_takes_ipv4_clients_and_reads_as_bound(
    start: Callable[..., Sink],
) -> None:
    # "(bound to ::: every interface)", and 127.0.0.1 was refused.
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    sink = start("--host", "::", "--allow-remote")
    assert sink.banner[0].endswith(" (bound to [::]: every interface)")
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=TIMEOUT) as smtp:
        smtp.sendmail("a@example.com", ["ann@example.com"], b"Subject: v4\r\n\r\n")
    assert sink.expect(r"session 1 closed \(quit\): peer 127\.0\.0\.1:\d+, ")


@stops_with_signals
def test_all_interfaces_give_a_connectable_verified_address(
    start: Callable[..., Sink],
) -> None:
    sink = start(
        "--host", "0.0.0.0", "--allow-remote", "--tls", "starttls", "--pop3", "0",
        "--http", "0", "--auth", "ann@example.com:pw",
    )  # fmt: skip
    assert "(bound to 0.0.0.0: every interface)" in sink.banner[0]
    # --auth is no lock on the view, which the network now reaches.
    assert sink.in_banner(r"^note: the live view").string == (
        "note: the live view asks for no login: whoever reaches it reads all "
        "mail and can delete it (--auth guards SMTP AUTH, POP3 and IMAP, not "
        "the view)"
    )
    # A browser refuses http://0.0.0.0/: the view's address is loopback too.
    live_line = sink.in_banner(r"^live view on http://127\.0\.0\.1:(\d+)/ ")
    assert live_line.string.endswith("/ (bound to 0.0.0.0: every interface)")
    with urllib.request.urlopen(
        f"http://127.0.0.1:{live_line[1]}/api/messages", timeout=TIMEOUT
    ) as response:
        assert response.status == 200
    pop3_line = sink.in_banner(r"^POP3 listening on pop3://127\.0\.0\.1:(\d+) ")
    assert pop3_line.string.endswith(
        " (STLS offered) (bound to 0.0.0.0: every interface)"
    )
    ca_path = sink.in_banner(r"CA certificate for clients to trust: (\S+)$").group(1)
    context = ssl.create_default_context(cafile=ca_path)
    pop3 = poplib.POP3("127.0.0.1", int(pop3_line[1]), timeout=TIMEOUT)
    try:
        pop3.stls(context)  # the certificate covers 127.0.0.1 here too
    finally:
        pop3.quit()
    with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
        smtp.starttls(context=context)  # the certificate covers 127.0.0.1
        smtp.sendmail("app@example.com", ["ann@example.com"], RAW)
    assert "(STARTTLS)" in sink.expect(r"session 2 closed").string
    sink.stop()
    assert sink.proc.returncode == 0


@stops_with_signals
def test_own_certificate(start: Callable[..., Sink], tmp_path: Path) -> None:
    ca = trustme.CA(organization_name="Not the sink's CA")
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    for blob in leaf.cert_chain_pems:
        blob.write_to_path(str(cert), append=True)
    leaf.private_key_pem.write_to_path(str(key))
    sink = start("--tls", "implicit", "--tls-cert", str(cert), "--tls-key", str(key))
    assert sink.in_banner(r"^certificate: (\S+) \(yours").group(1) == str(cert)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)  # only the user's CA
    with smtplib.SMTP_SSL("127.0.0.1", sink.port, context=context) as smtp:
        smtp.sendmail("app@example.com", ["ann@example.com"], RAW)
    assert "(implicit)" in sink.expect(r"session 1 closed").string
    sink.stop()
    assert sink.proc.returncode == 0


def _write_encrypted_key(plain: Path, locked: Path) -> None:
    """``plain``'s private key, encrypted with a password, to ``locked``."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(plain.read_bytes(), password=None)
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"not-given"),
        )
    )


def test_own_certificate_errors_name_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = trustme.CA()
    cert = tmp_path / "cert.pem"
    ca.issue_cert("127.0.0.1").cert_chain_pems[0].write_to_path(str(cert))
    other_key = tmp_path / "other-key.pem"
    ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(other_key))
    locked = tmp_path / "locked-key.pem"
    _write_encrypted_key(other_key, locked)
    cases = [
        (["--tls-cert", str(cert)], "argument --tls-cert: needs --tls"),
        (
            ["--tls", "starttls", "--tls-cert", str(tmp_path / "none.pem")],
            "argument --tls-cert: no such file",
        ),
        (
            ["--tls", "starttls", "--tls-cert", str(cert), "--tls-key", str(other_key)],
            "argument --tls-key: the private key in",
        ),
        (
            ["--tls", "starttls", "--tls-key", str(other_key)],
            "argument --tls-key: is the key of --tls-cert; give --tls-cert too\n",
        ),
        # The API's tls_key= and tls_context= are no options of this command.
        (
            ["--tls", "starttls", "--tls-cert", str(cert)],
            "argument --tls-cert: cannot load the certificate "
            f"{str(cert)!r} and its key (no --tls-key given: the certificate "
            "file must hold it): ",
        ),
        (
            ["--tls", "starttls", "--tls-cert", str(cert), "--tls-key", str(locked)],
            "argument --tls-key: the private key is encrypted; give an "
            "unencrypted key\n",
        ),
    ]
    for args, expected in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert expected in err, err


@stops_with_signals
def test_starttls_and_auth(start: Callable[..., Sink]) -> None:
    sink = start(
        "--tls", "starttls-required", "--auth", "ann:s3cret", "--auth", "bob:a:b"
    )
    ca_path = sink.in_banner(r"CA certificate for clients to trust: (\S+\.pem)$")[1]
    assert "users ann, bob" in sink.in_banner(r"^AUTH ").string
    context = ssl.create_default_context(cafile=ca_path)
    with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
        smtp.starttls(context=context)
        smtp.login("bob", "a:b")  # a password may contain colons
        smtp.sendmail("app@example.com", ["ann@example.com"], RAW)
    closed = sink.expect(r"session 1 closed").string
    assert "(STARTTLS)" in closed
    assert "bob ok" in closed
    sink.stop()
    assert sink.proc.returncode == 0
    assert not any("s3cret" in line or "a:b" in line for line in sink.seen)


@stops_with_signals
def test_implicit_tls(start: Callable[..., Sink]) -> None:
    sink = start("--tls", "implicit", "--transcripts")
    assert sink.scheme == "smtps"
    ca_path = sink.in_banner(r"CA certificate for clients to trust: (\S+)$").group(1)
    context = ssl.create_default_context(cafile=ca_path)
    with smtplib.SMTP_SSL("127.0.0.1", sink.port, context=context) as smtp:
        smtp.sendmail("app@example.com", ["ann@example.com"], RAW)
    assert "(implicit)" in sink.expect(r"session 1 closed").string
    sink.expect(r"(?i)^    C: mail FROM:<app@example.com> size=197$")
    sink.stop()
    assert sink.proc.returncode == 0


@stops_with_signals
def test_curl(start: Callable[..., Sink], tmp_path: Path) -> None:
    external.require("curl", "apt-get install curl")
    sink = start("--save-dir", str(tmp_path))
    upload = tmp_path / "upload.txt"
    upload.write_bytes(RAW)
    subprocess.run(
        [
            *("curl", "--silent", "--show-error"),
            *("--url", f"smtp://127.0.0.1:{sink.port}"),
            *("--mail-from", "app@example.com", "--mail-rcpt", "ann@example.com"),
            *("--upload-file", str(upload)),
        ],
        check=True,
        timeout=TIMEOUT,
    )
    sink.expect(r"^message #1 [\d:.]+ app@example.com -> ann@example.com")
    sink.expect(r"session 1 closed \(quit\)")
    sink.stop()
    assert (tmp_path / "0001-Your-code-1234-today.eml").read_bytes() == RAW


@stops_with_signals
def test_swaks(start: Callable[..., Sink]) -> None:
    external.require("swaks", "apt-get install swaks")
    sink = start("--auth", "any", "--auth-plaintext")
    subprocess.run(
        [
            *("swaks", "--silent", "2", "--server", f"127.0.0.1:{sink.port}"),
            *("--from", "app@example.com", "--to", "ann@example.com"),
            *("--header", "Subject: from swaks"),
            *("--auth", "LOGIN", "--auth-user", "someone", "--auth-password", "x"),
        ],
        check=True,
        timeout=TIMEOUT,
    )
    assert "Subject: 'from swaks'" in sink.expect(r"^message #1 ").string
    assert "AUTH LOGIN someone ok" in sink.expect(r"session 1 closed").string
    sink.stop()
    assert sink.proc.returncode == 0


def test_bad_argument_in_a_subprocess_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest_smtpsink", "--port", "99999"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("usage: smtpsink")
    assert "argument --port: must be a number from 0 to 65535" in result.stderr


#: A Ctrl-C while the command imports its modules: the finder raises it
#: where the import of the command's module would begin, as SIGINT does
#: wherever the main thread is (at a time no test could pick).
CTRL_C_WHILE_IMPORTING = """
import sys
import time

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "pytest_smtpsink._cli":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, CtrlC())
from pytest_smtpsink.__main__ import main
sys.exit(main())
"""


def test_ctrl_c_while_starting_ends_the_command_without_a_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CTRL_C_WHILE_IMPORTING, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        130,
        "",
        "smtpsink: interrupted\n",
    )


def test_the_command_is_the_entry_point_that_catches_it() -> None:
    import importlib.metadata

    (command,) = importlib.metadata.entry_points(
        group="console_scripts", name="smtpsink"
    )
    assert command.value == "pytest_smtpsink.__main__:main"


def test_relay_outcomes_are_printed(
    start: Callable[..., Sink], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The password from the environment, as the --relay help advises: a
    # command line shows in the process list.
    monkeypatch.setenv("SMTPSINK_RELAY_PASSWORD", "pw-secret")
    with SMTPSink(
        hostname="upstream.test", auth={"relay": "pw-secret"}, auth_plaintext=True
    ) as upstream:
        sink = start(
            "--relay",
            f"smtp://relay@127.0.0.1:{upstream.port}",
            "--relay-to",
            r".*@partner\.example",
        )
        upstream.fail("RCPT", 550, "5.1.1 who?", match="nobody@partner.example")
        assert sink.in_banner(
            rf"relaying to smtp://relay@127\.0\.0\.1:{upstream.port} the recipients "
            r"matching \.\*@partner\\\.example"
        )
        with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
            smtp.sendmail("app@example.com", ["ann@example.com"], RAW)
            smtp.sendmail("app@example.com", ["bob@partner.example"], RAW)
            smtp.sendmail("app@example.com", ["nobody@partner.example"], RAW)
        line = sink.expect(r"^message #1 ").string
        assert line.endswith("| not relayed (no recipient matches relay_to)")
        # Outcome lines come in the order the relay finishes, after (or in)
        # each message's line.
        outcomes = {
            rf"#2 .*relayed by smtp://relay@127\.0\.0\.1:{upstream.port}: 250 ",
            r"#3 .*refused by smtp://relay@127\.0\.0\.1:\d+: 550 5\.1\.1 who\?",
        }
        while outcomes:
            line = sink.expect(r"#[23] ").string
            outcomes -= {o for o in outcomes if re.search(o, line)}
        relayed = upstream.wait_for(rcpt_to="bob@partner.example")
        assert relayed.session.authenticated_as == "relay"
        sink.stop()
    assert "pw-secret" not in "\n".join(sink.seen)
    assert "pw-secret" not in sink.stderr


#: An upstream's refusal that quotes what it was sent, as real servers do
#: ("<addr>: Recipient address rejected"), with a terminal title (OSC),
#: clear-screen (CSI) and C1 CSI in it.
HOSTILE_REFUSAL = b"550 5.1.1 <\x1b]0;pwned\x07\x1b[2J\xc2\x9b31m>: rejected\r\n"


@contextlib.contextmanager
def refusing_upstream(
    greeting: bytes = b"220 upstream.test\r\n", hold: threading.Event | None = None
) -> Iterator[int]:
    """A raw SMTP upstream on loopback that refuses every RCPT with
    `HOSTILE_REFUSAL` (once ``hold`` is set, if given), one connection at
    a time; yields its port."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    replies = {b"RCPT": HOSTILE_REFUSAL, b"QUIT": b"221 bye\r\n"}
    done = threading.Event()

    def serve() -> None:
        while True:
            connection, _ = server.accept()
            if done.is_set():  # the connection that says the test is over
                connection.close()
                return
            with connection, connection.makefile("rb") as lines:
                connection.sendall(greeting)
                for line in lines:
                    verb = line[:4].upper()
                    if verb == b"RCPT" and hold is not None:
                        hold.wait(TIMEOUT)
                    connection.sendall(replies.get(verb, b"250 ok\r\n"))
                    if verb == b"QUIT":
                        break

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield port
    finally:
        done.set()
        if hold is not None:
            hold.set()
        socket.create_connection(("127.0.0.1", port)).close()
        thread.join(TIMEOUT)
        server.close()


def test_an_upstream_reply_is_printed_escaped(start: Callable[..., Sink]) -> None:
    """The relay outcome line quotes the upstream's reply: its control
    characters are escaped like a client's, or a server echoing an address
    could retitle or clear the terminal."""
    with refusing_upstream() as port:
        sink = start("--relay", f"smtp://127.0.0.1:{port}", "--relay-to", ".*")
        with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
            smtp.sendmail("app@example.com", ["ann@example.com"], RAW)
        # On a line of its own, or in the message's line when the relay
        # was done before the message was printed (a busy machine).
        line = sink.expect(r"^message #1 .*refused").string
        assert line.endswith(
            f"refused by smtp://127.0.0.1:{port}: 550 5.1.1 "
            "<\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m>: rejected"
        ), line
        sink.stop()
        # What a test sees of the same refusal: RelayError's message.
        with SMTPSink() as capturing:
            with smtplib.SMTP(capturing.host, capturing.port) as smtp:
                smtp.sendmail("app@example.com", ["ann@example.com"], RAW)
            with pytest.raises(RelayError) as raised:
                capturing.release(capturing.wait_for(), "127.0.0.1", port)
    assert str(raised.value).splitlines()[0] == (
        f"smtp://127.0.0.1:{port} refused the message at RCPT: 550 5.1.1 "
        "<\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m>: rejected"
    )
    # The reply itself stays as received.
    assert raised.value.reply == "5.1.1 <\x1b]0;pwned\x07\x1b[2J\x9b31m>: rejected"
    # An answer that is no SMTP reply is quoted in the reason: escaped too.
    with (
        refusing_upstream(greeting=b"999 \x1b]0;pwned\x07\r\n") as port,
        SMTPSink() as capturing,
    ):
        with smtplib.SMTP(capturing.host, capturing.port) as smtp:
            smtp.sendmail("app@example.com", ["ann@example.com"], RAW)
        with pytest.raises(RelayError) as raised:
            capturing.release(capturing.wait_for(), "127.0.0.1", port)
    first = str(raised.value).splitlines()[0]
    assert first.startswith(f"could not deliver to smtp://127.0.0.1:{port} ")
    assert first.endswith("999 \\x1b]0;pwned\\x07")


@stops_with_signals
def test_stopping_says_it_waits_for_the_relay(start: Callable[..., Sink]) -> None:
    # An upstream that takes the connection (the kernel does) and never
    # greets: the relay waits for it, and so does stopping.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        sink = start(
            "--relay", f"smtp://127.0.0.1:{port}", "--relay-to", ".*",
            "--relay-timeout", "300",
        )  # fmt: skip
        with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
            smtp.sendmail("app@example.com", ["ann@example.com"], RAW)
        sink.expect(r"^message #1 ")
        # Taken, so that closing it ends the relay's wait: a connection
        # left in the kernel's queue may be dropped with no word to the
        # relay (under load), which then waited its 300 s.
        silent.settimeout(TIMEOUT)
        accepted, _ = silent.accept()
        with accepted:
            sink.proc.send_signal(signal.SIGINT)
            assert sink.expect(r"^stopping: ").string == (
                "stopping: waiting for the relay's upstream (up to 300 s per step; "
                "Ctrl-C again quits at once)"
            )
    # The upstream closed the connection: the relay's wait ends.
    sink.finish()
    rest = []
    while (line := sink.lines.get(timeout=TIMEOUT)) is not None:
        rest.append(line)
    assert re.search(r"^message #1 relay to smtp://127\.0\.0\.1:\d+ failed", rest[0])
    assert rest[-1] == "smtpsink stopped: 1 message in 1 session"
    assert sink.proc.returncode == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--port", "-1"], "argument --port: must be a number from 0 to 65535"),
        # int() reads full-width and other Unicode digits: those of 2525 were 2525.
        (
            ["--port", "\uff12\uff15\uff12\uff15"],
            "argument --port: must be a number from 0 to 65535",
        ),
        (["--max-recipients", "\u0665"], "argument --max-recipients: must be a whole"),
        (["--port", "1_000"], "argument --port: must be a number from 0 to 65535"),
        (["--relay-timeout", "1e-9"], "argument --relay-timeout: must be a number"),
        (["--relay-timeout", "\u0665"], "argument --relay-timeout: must be a number"),
        (["--max-size", "\u0665K"], "argument --max-size: "),
        (["--port", "smtp"], "argument --port: "),
        (
            ["--quiet", "--transcripts"],
            "argument --transcripts: cannot be combined with --quiet\n",
        ),
        # A value without ":" may well be the password: never shown.
        (
            ["--auth", "hunter2"],
            "argument --auth: must be 'any', USER:PASSWORD, or USER with the "
            "password in SMTPSINK_AUTH_PASSWORD, which is not set (got a value "
            "without ':')\n",
        ),
        (["--auth", ""], "argument --auth: must be 'any' or USER:PASSWORD, got ''"),
        (
            ["--auth", ":pw"],
            "argument --auth: must be 'any' or USER:PASSWORD, got no USER before ':'\n",
        ),
        # "ann:$PASSWORD" with the variable unset: anyone would log in as ann.
        (
            ["--auth", "ann:"],
            "argument --auth: must be 'any' or USER:PASSWORD, got no PASSWORD "
            "after ':'\n",
        ),
        (["--auth", "any", "--auth", "a:b"], "argument --auth: 'any' cannot be"),
        (
            ["--auth", "a:b", "--auth", "a:c"],
            "argument --auth: user 'a' is given twice",
        ),
        # One mailbox, two passwords: each opened it.
        (
            ["--auth", "ANN@example.com:pw-one", "--auth", "ann@example.com:pw-two"],
            "argument --auth: users 'ANN@example.com' and 'ann@example.com' name "
            "one mailbox (mailbox names compare without regard to case, needless "
            "quotes or the domain's spelling): give it once",
        ),
        (["--auth-required"], "argument --auth-required: needs --auth"),
        (
            ["--auth-plaintext"],
            "argument --auth-plaintext: is only used with --auth any or "
            "--auth USER:PASSWORD\n",
        ),
        (
            ["--tls", "starttls", "--tls-key", "key.pem"],
            "argument --tls-key: is the key of --tls-cert; give --tls-cert too\n",
        ),
        (
            ["--auth", "ann:pw"],
            "argument --auth: AUTH is only offered over TLS: add --tls starttls "
            "(or implicit), or --auth-plaintext to allow AUTH without TLS",
        ),
        (["--host", "localhost"], "argument --host: 'localhost' is not an IP address"),
        (["--host", "192.0.2.1"], "argument --host: 192.0.2.1 is not a loopback"),
        (["--tls", "ssl"], "argument --tls: invalid choice: 'ssl'"),
        (["--max-size", "lots"], "argument --max-size: 'lots' is not a size"),
        (["--max-recipients", "0"], "argument --max-recipients: must be a whole"),
        (["--hostname", "a b"], "argument --hostname: must be a domain name"),
        (["--hostname", "a\x1bb"], "argument --hostname: must be a domain name"),
        (
            ["--relay", "smtp://127.0.0.1:25"],
            "argument --relay-to: --relay needs --relay-to REGEX, the recipients",
        ),
        (
            ["--relay", "smtp://192.0.2.1:25", "--relay-to", ".*"],
            "argument --relay: 192.0.2.1 is not a loopback address; relaying "
            "captured mail to another host must be asked for with "
            "--relay-allow-remote\n",
        ),
        (
            ["--relay-to", ".*"],
            "argument --relay-to: is only used with --relay URL (the upstream)\n",
        ),
        (
            ["--relay-allow-remote"],
            "argument --relay-allow-remote: is only used with --relay URL",
        ),
        (
            ["--relay-timeout", "5"],
            "argument --relay-timeout: is only used with --relay URL",
        ),
        (
            ["--relay-timeout", "0"],
            "argument --relay-timeout: must be a number of seconds > 0, got '0'\n",
        ),
        (
            ["--relay-timeout", "soon"],
            "argument --relay-timeout: must be a number of seconds > 0, got 'soon'\n",
        ),
        (
            ["--relay-timeout", "nan"],
            "argument --relay-timeout: must be a number of seconds > 0, got 'nan'\n",
        ),
        (["--pop3"], "argument --pop3: expected one argument"),
        (["--pop3", "pop"], "argument --pop3: must be a number from 0 to 65535"),
        (["--imap", "65536"], "argument --imap: must be a number from 0 to 65535"),
        (["--imap", "-1"], "argument --imap: must be a number from 0 to 65535"),
        (
            ["--pop3", "2110", "--imap", "2110"],
            "argument --imap: port 2110 is taken by --pop3",
        ),
        (["--pop3", "2525"], "argument --pop3: port 2525 is taken by --port"),
        (
            ["--port", "0", "--http", "8025", "--imap", "8025"],
            "argument --imap: port 8025 is taken by --http",
        ),
        (["--port", "8025", "--http", "8025"], "argument --http: port 8025 is taken"),
        # A slip of a letter gets the option meant; a prefix is no option
        # ("--save" was taken for --save-dir).
        (
            ["--prot", "0"],
            "unrecognized arguments: --prot 0 (did you mean '--port'?)\n",
        ),
        (
            ["--tsl", "starttls", "--prot=0"],
            "unrecognized arguments: --tsl starttls --prot=0 (did you mean "
            "'--tls' for --tsl, '--port' for --prot?)\n",
        ),
        (["--save", "x"], "unrecognized arguments: --save x (did you mean '--save-"),
        (["--port", "0", "extra"], "unrecognized arguments: extra\n"),
        (["-port", "0"], "unrecognized arguments: -port 0 (did you mean '--port'?)"),
    ],
)
def test_bad_arguments_name_the_option(
    args: list[str],
    expected: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SMTPSINK_AUTH_PASSWORD", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert expected in err, err


def test_an_auth_password_may_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # --auth USER:PASSWORD was the only way: the password in the process
    # list for every local user (--relay has SMTPSINK_RELAY_PASSWORD).
    monkeypatch.setenv("SMTPSINK_AUTH_PASSWORD", "Env-Pass-42")
    sink = Sink("--auth", "ann@example.com", "--auth-plaintext", "--transcripts")
    try:
        assert "Env-Pass-42" not in " ".join(sink.proc.args)  # type: ignore[arg-type]
        with (
            smtplib.SMTP("127.0.0.1", sink.port) as smtp,
            pytest.raises(smtplib.SMTPAuthenticationError),
        ):
            smtp.login("ann@example.com", "wrong")
        with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
            assert smtp.login("ann@example.com", "Env-Pass-42")[0] == 235
        sink.expect(r"session 2 closed")
        rest = sink.stop()
    finally:
        if sink.proc.poll() is None:  # pragma: no cover - a hang is a bug
            sink.proc.kill()
        sink.finish()
    assert "Env-Pass-42" not in "\n".join([*sink.seen, *rest, sink.stderr])


def test_remote_host_hint_names_allow_remote(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--host", "192.0.2.1"])
    assert "--allow-remote" in capsys.readouterr().err


def test_a_save_dir_that_is_a_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "mail"
    a_file.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main(["--port", "0", "--save-dir", str(a_file)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"smtpsink: error: argument --save-dir: {str(a_file)!r} exists and is not "
        "a directory"
    )


def test_busy_port_is_an_error_naming_the_port(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with SMTPSink() as busy:
        assert main(["--port", str(busy.port)]) == 1
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{busy.port}" in err
    assert "--port 0" in err


@pytest.mark.parametrize("server", ["smtp", "http"])
def test_an_address_not_of_this_machine_is_blamed_not_the_port(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # 192.0.2.1 is for documentation (RFC 5737): no machine has it.
    args = ["--host", "192.0.2.1", "--allow-remote", "--port", "0"]
    if server == "http":
        args += ["--http", "0"]  # the live view binds first
    assert main(args) == 1
    option = "" if server == "smtp" else "--http: "
    assert capsys.readouterr().err.splitlines() == [
        f"smtpsink: error: {option}cannot listen on 192.0.2.1:0: "
        f"{os.strerror(errno.EADDRNOTAVAIL)} (--host must be an address of this "
        "machine)"
    ]


def test_defaults() -> None:
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.tls) == ("127.0.0.1", 2525, None)


def test_max_size_accepts_units() -> None:
    assert build_parser().parse_args(["--max-size", "10M"]).max_size == 10 * 1024**2


@pytest.mark.parametrize(
    ("subject", "name"),
    [
        ("Welcome!", "0007-Welcome.eml"),
        ("Héllo wörld / ../../etc/passwd", "0007-Hello-world-etc-passwd.eml"),
        ("Café: 50% off", "0007-Cafe-50-off.eml"),
        ("a_b", "0007-a_b.eml"),
        # Letters no decomposition takes to ASCII: "Grue" and "stl" before.
        ("Grüße aus Ærøskøbing", "0007-Grusse-aus-AEroskobing.eml"),
        ("Łódź, Þórr", "0007-Lodz-Thorr.eml"),
        ("", "0007-no-subject.eml"),
        (None, "0007-no-subject.eml"),
        ("日本語", "0007-no-subject.eml"),
        ("x" * 100, "0007-" + "x" * 60 + ".eml"),
        ("x" * 59 + " y", "0007-" + "x" * 59 + ".eml"),  # no trailing "-"
    ],
)
def test_saved_message_names(subject: str | None, name: str) -> None:
    # One rule for the plugin's and the standalone sink's saved files.
    assert message_file_name(7, subject) == name


def test_console_script() -> None:
    # Beside the interpreter: bin/smtpsink, or Scripts\smtpsink.exe on Windows.
    script = shutil.which("smtpsink", path=os.path.dirname(sys.executable))
    if script is None:
        # tox installs the package, so under CI a lost [project.scripts]
        # entry fails here rather than skip.
        external.missing(
            "the smtpsink console script", "install the package: pip install ."
        )
    result = subprocess.run(
        [script, "--version"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    assert result.stdout.startswith("smtpsink ")


# -- reading mail: --pop3 and --imap -------------------------------------------------


def _read_side_ports(sink: Sink) -> tuple[int, int]:
    """The POP3 and IMAP ports of the banner (which must name both)."""
    pop3 = sink.in_banner(r"^POP3 listening on pop3s?://127\.0\.0\.1:(\d+)")
    imap = sink.in_banner(r"^IMAP listening on imaps?://127\.0\.0\.1:(\d+)")
    return int(pop3[1]), int(imap[1])


def _send(sink: Sink) -> None:
    with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
        smtp.sendmail("app@example.com", ["ann@example.com"], RAW)
    sink.expect(r"^message #1 ")  # stored: the mailboxes have it


@stops_with_signals
def test_pop3_and_imap_read_what_was_sent(start: Callable[..., Sink]) -> None:
    sink = start("--pop3", "0", "--imap", "0")
    assert sink.banner[0].startswith("smtpsink ")  # the first line is unchanged
    assert sink.banner[0].endswith(f" listening on smtp://127.0.0.1:{sink.port}")
    pop3_port, imap_port = _read_side_ports(sink)
    assert sink.banner[1:3] == [
        f"POP3 listening on pop3://127.0.0.1:{pop3_port}",
        f"IMAP listening on imap://127.0.0.1:{imap_port}",
    ]
    assert "mailboxes: log in as a recipient address with any password" in sink.banner
    _send(sink)

    pop3 = poplib.POP3("127.0.0.1", pop3_port, timeout=TIMEOUT)
    try:
        pop3.user("ann@example.com")
        pop3.pass_("whatever")
        _, lines, _ = pop3.retr(1)
    finally:
        pop3.quit()
    assert b"\r\n".join(lines) + b"\r\n" == RAW
    opened = sink.expect(r"session (\d+) opened from 127\.0\.0\.1:\d+ \(POP3\)$")
    closed = sink.expect(rf"session {opened[1]} closed").string
    assert "(quit): POP3, peer 127.0.0.1:" in closed
    assert closed.endswith("TLS -, login USER ann@example.com ok")

    with imaplib.IMAP4("127.0.0.1", imap_port, timeout=TIMEOUT) as imap:
        imap.login("Ann@Example.com", "whatever")
        assert imap.select("INBOX") == ("OK", [b"1"])
        _, data = imap.fetch("1", "(BODY.PEEK[])")
        imap.logout()
    assert data[0][1] == RAW  # type: ignore[index]
    sink.expect(r"session 3 opened from 127\.0\.0\.1:\d+ \(IMAP\)$")
    assert "IMAP, peer" in sink.expect(r"session 3 closed").string

    rest = sink.stop()
    assert sink.proc.returncode == 0
    assert rest[-1] == "smtpsink stopped: 1 message in 3 sessions (2 POP3/IMAP)"
    assert sink.stderr_lines() == []


@stops_with_signals
def test_auth_users_that_are_no_address_get_a_note_with_mailboxes(
    start: Callable[..., Sink],
) -> None:
    # Mail is filed by recipient address: "ann" logs in to a mailbox no
    # mail reaches, and ann@example.com is refused (not in the table).
    sink = start(
        "--auth", "ann:pw", "--auth", "bob@example.com:pw", "--auth-plaintext",
        "--pop3", "0", "--quiet",
    )  # fmt: skip
    assert (
        "note: --auth user ann is not an address: it logs in to a mailbox no "
        "mail reaches; give --auth ADDRESS:PASSWORD for each mailbox to read"
    ) in sink.banner
    sink.stop()
    assert sink.proc.returncode == 0


@stops_with_signals
def test_pop3_and_imap_need_tls_and_the_auth_password(
    start: Callable[..., Sink],
) -> None:
    sink = start(
        "--tls", "starttls-required", "--auth", "ann@example.com:s3cret",
        "--pop3", "0", "--imap", "0", "--quiet",
    )  # fmt: skip
    pop3_port, imap_port = _read_side_ports(sink)
    assert sink.banner[1].endswith(" (STLS required before login)")
    assert sink.banner[2].endswith(" (STARTTLS required before login)")
    assert (
        "mailboxes: log in as a recipient address with its --auth password"
        in sink.banner
    )
    ca_path = sink.in_banner(r"CA certificate for clients to trust: (\S+)$")[1]
    context = ssl.create_default_context(cafile=ca_path)
    with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
        smtp.starttls(context=context)
        smtp.login("ann@example.com", "s3cret")
        smtp.sendmail("app@example.com", ["ann@example.com"], RAW)

    pop3 = poplib.POP3("127.0.0.1", pop3_port, timeout=TIMEOUT)
    try:
        with pytest.raises(poplib.error_proto, match="TLS is required first"):
            pop3.user("ann@example.com")
        pop3.stls(context)
        pop3.user("ann@example.com")
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\] Authentication"):
            pop3.pass_("wrong")
        pop3.user("ann@example.com")
        pop3.pass_("s3cret")
        _, lines, _ = pop3.retr(1)
    finally:
        pop3.quit()
    assert b"\r\n".join(lines) + b"\r\n" == RAW

    with imaplib.IMAP4("127.0.0.1", imap_port, timeout=TIMEOUT) as imap:
        assert "LOGINDISABLED" in imap.capabilities
        imap.starttls(context)
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap.login("ann@example.com", "wrong")
        imap.login("ann@example.com", "s3cret")
        assert imap.select("INBOX") == ("OK", [b"1"])
        imap.logout()
    rest = sink.stop()
    assert rest == ["smtpsink stopped: 1 message in 3 sessions (2 POP3/IMAP)"]


@stops_with_signals
def test_pop3s_and_imaps_with_implicit_tls(start: Callable[..., Sink]) -> None:
    sink = start("--tls", "implicit", "--pop3", "0", "--imap", "0")
    pop3_port, imap_port = _read_side_ports(sink)
    assert sink.banner[1] == f"POP3 listening on pop3s://127.0.0.1:{pop3_port} " + (
        "(implicit TLS)"
    )
    assert sink.banner[2] == f"IMAP listening on imaps://127.0.0.1:{imap_port} " + (
        "(implicit TLS)"
    )
    ca_path = sink.in_banner(r"CA certificate for clients to trust: (\S+)$")[1]
    context = ssl.create_default_context(cafile=ca_path)
    pop3 = poplib.POP3_SSL("127.0.0.1", pop3_port, context=context, timeout=TIMEOUT)
    try:
        pop3.user("ann@example.com")
        pop3.pass_("any")
        assert pop3.stat() == (0, 0)
    finally:
        pop3.quit()
    assert (
        "TLS TLSv1.3 (implicit), login USER" in sink.expect(r"session 1 closed").string
    )
    with imaplib.IMAP4_SSL("127.0.0.1", imap_port, ssl_context=context) as imap:
        imap.login("ann@example.com", "any")
        imap.logout()
    assert "(implicit)" in sink.expect(r"session 2 closed").string
    sink.stop()
    assert sink.proc.returncode == 0


@stops_with_signals
def test_no_read_side_credential_reaches_any_output(
    start: Callable[..., Sink], tmp_path: Path
) -> None:
    password, wrong = "Pa55-word-XYZ", "Wr0ng-pass-QQQ"
    user = "ann@example.com"
    sink = start(
        "--auth", f"{user}:{password}", "--auth-plaintext", "--pop3", "0",
        "--imap", "0", "--transcripts", "--save-dir", str(tmp_path), "--http", "0",
    )  # fmt: skip
    pop3_port, imap_port = _read_side_ports(sink)
    live = sink.in_banner(r"live view on (http://\S+)$")[1]
    _send(sink)
    secrets = [password, wrong]
    for secret in (password, wrong):
        plain = base64.b64encode(f"\0{user}\0{secret}".encode()).decode()
        secrets.append(plain)

    pop3 = poplib.POP3("127.0.0.1", pop3_port, timeout=TIMEOUT)
    try:
        pop3.user(user)
        with pytest.raises(poplib.error_proto):
            pop3.pass_(wrong)
        with pytest.raises(poplib.error_proto):
            # The wrong password.
            pop3._shortcmd(f"AUTH PLAIN {secrets[3]}")  # type: ignore[attr-defined]
        timestamp = re.search(rb"<[^>]*>", pop3.welcome)
        assert timestamp is not None
        digest = hashlib.md5(timestamp[0] + password.encode())
        secrets.append(digest.hexdigest())
        pop3.apop(user, password)
    finally:
        pop3.quit()
    pop3 = poplib.POP3("127.0.0.1", pop3_port, timeout=TIMEOUT)
    try:
        pop3._shortcmd(f"AUTH PLAIN {secrets[2]}")  # type: ignore[attr-defined]
        pop3.user(user)  # after login: refused, the session goes on
    except poplib.error_proto:
        pass
    finally:
        pop3.quit()
    with imaplib.IMAP4("127.0.0.1", imap_port, timeout=TIMEOUT) as imap:
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(user, wrong)
        imap.authenticate("PLAIN", lambda _: f"\0{user}\0{password}".encode())
        imap.logout()
    with imaplib.IMAP4("127.0.0.1", imap_port, timeout=TIMEOUT) as imap:
        imap.login(user, password)
        imap.select("INBOX")
        imap.logout()
    # Every read-side session has ended and been printed.
    for number in range(2, 6):
        sink.expect(rf"session {number} closed")
    pages = []
    for path in ("/", "/api/messages", "/api/messages/1"):
        with urllib.request.urlopen(live + path.lstrip("/"), timeout=TIMEOUT) as page:
            pages.append(page.read().decode())
    sink.stop()
    saved = [path.read_text(encoding="utf-8") for path in tmp_path.iterdir()]
    assert any("C: PASS ****" in text for text in saved), saved
    everything = "\n".join([*sink.seen, sink.stderr, *saved, *pages])
    assert "C: PASS ****" in everything  # the transcripts were printed
    leaked = [secret for secret in secrets if secret in everything]
    assert leaked == []


def _taken_port() -> socket.socket:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    return busy


def _open_sockets() -> set[tuple[int, int]]:
    """This process's open sockets, each as (device, inode) of its descriptor."""
    found: set[tuple[int, int]] = set()
    for name in os.listdir("/dev/fd"):
        try:
            status = os.fstat(int(name))
        except OSError:  # the listing's own descriptor, closed by now
            continue
        if stat.S_ISSOCK(status.st_mode):
            found.add((status.st_dev, status.st_ino))
    return found


@pytest.mark.skipif(
    not os.path.isdir("/dev/fd"), reason="lists open descriptors in /dev/fd"
)
@pytest.mark.parametrize("option", ["--pop3", "--imap"])
def test_busy_read_side_port_is_an_error_and_leaves_nothing_running(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Free ports (0) for the servers that do start: a port probed free and
    # passed on could be taken (another test, or a client's ephemeral port)
    # before the sink binds it. What they leave open is read from the
    # process's descriptors instead of by binding their ports again.
    sockets_before = _open_sockets()
    threads_before = set(threading.enumerate())
    with _taken_port() as busy:
        port = busy.getsockname()[1]
        # POP3 starts first: with --imap busy, it is running when IMAP fails.
        args = ["--port", "0"]
        if option == "--pop3":
            args += ["--pop3", str(port), "--imap", "0"]
        else:
            args += ["--pop3", "0", "--imap", str(port)]
        assert main(args) == 1
    out, err = capsys.readouterr()
    assert out == ""  # no banner: it never listened
    assert err.splitlines() == [
        f"smtpsink: error: {option}: cannot listen on 127.0.0.1:{port}: Address "
        f"already in use (choose another {option} port, or {option} 0 for a "
        "free one)"
    ]
    assert [t.name for t in threading.enumerate() if t not in threads_before] == []
    assert _open_sockets() - sockets_before == set()  # every listener closed


def test_two_sinks_cannot_save_to_one_directory(tmp_path: Path) -> None:
    # Each wrote 0001-*.eml and session-0001.txt over the other's.
    holder = Sink("--save-dir", str(tmp_path))
    try:
        second = subprocess.run(
            [sys.executable, "-m", "pytest_smtpsink", "--save-dir", str(tmp_path)],
            check=False,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    finally:
        holder.stop()
    assert second.returncode == 2
    assert second.stderr.endswith(
        f"error: argument --save-dir: another run is saving to {str(tmp_path)!r} "
        "now (an smtpsink command or a pytest run), and each would replace the "
        "other's files: give each a directory of its own\n"
    ), second.stderr


def test_empty_mailboxes_holds_before_they_are_served() -> None:
    # Emptied before POP3 or IMAP made the mailboxes: the mail up to the
    # number it returns stays out of them when they are made.
    with SMTPSink() as sink:
        assert sink.empty_mailboxes() == 0
        for _ in range(2):
            with smtplib.SMTP(sink.host, sink.port) as smtp:
                smtp.sendmail("app@example.com", ["ann@example.com"], RAW)
        sink.wait_until(lambda: len(sink.messages) == 2)
        assert sink.empty_mailboxes() == 2
        with smtplib.SMTP(sink.host, sink.port) as smtp:
            smtp.sendmail("app@example.com", ["ann@example.com"], RAW)
        sink.wait_until(lambda: len(sink.messages) == 3)
        endpoint = sink.serve_mailboxes("pop3", 0)
        pop3 = poplib.POP3(endpoint.host, endpoint.port, timeout=TIMEOUT)
        try:
            pop3.user("ann@example.com")
            pop3.pass_("any")
            assert pop3.stat()[0] == 1
        finally:
            pop3.quit()


def test_empty_mailboxes_lets_go_of_what_the_hints_kept() -> None:
    # A program that serves mailboxes and empties them to bound its memory
    # (the command's "Delete all") kept every POP3 session that sent DELE
    # without QUIT, with its transcript, and every IMAP RENAME, for ever.
    with SMTPSink() as sink:
        sink.deliver(RAW, to="ann@example.com")
        pop3_at = sink.serve_mailboxes("pop3", 0)
        imap_at = sink.serve_mailboxes("imap", 0)
        pop3 = poplib.POP3(pop3_at.host, pop3_at.port, timeout=TIMEOUT)
        pop3.user("ann@example.com")
        pop3.pass_("any")
        pop3.dele(1)
        pop3.close()  # no QUIT
        imap = imaplib.IMAP4(imap_at.host, imap_at.port, timeout=TIMEOUT)
        imap.login("ann@example.com", "any")
        imap.create("Old")
        imap.rename("Old", "New")
        imap.logout()
        sink.wait_until(lambda: all(s.end is not None for s in sink.sessions))
        mail = sink._store.mail
        (account,) = mail.accounts.values()
        assert (len(account.marked_without_quit), len(account.renamed)) == (1, 1)
        sink.empty_mailboxes()
        assert (account.marked_without_quit, account.renamed) == ([], [])


def test_a_sink_serves_each_read_protocol_on_one_port() -> None:
    # Asking for a protocol on another port than the one it is already
    # served on is an error, not a silently ignored port.
    with SMTPSink() as sink:
        imap = sink.serve_mailboxes("imap", 0)
        assert sink.serve_mailboxes("imap", 0) is imap
        assert sink.serve_mailboxes("imap", imap.port) is imap
        other = imap.port + 1 if imap.port < 65535 else imap.port - 1
        with pytest.raises(SinkError) as raised:
            sink.serve_mailboxes("imap", other)
        assert str(raised.value) == (
            f"IMAP is already served on 127.0.0.1:{imap.port} by this sink;"
            f" cannot also serve it on 127.0.0.1:{other}"
        )
        with pytest.raises(ValueError, match="protocol must be 'pop3' or 'imap'"):
            sink.serve_mailboxes("smtp", 0)  # type: ignore[call-overload]
    # Nor on another address: a sink listening everywhere whose POP3 a test
    # started on its connectable address.
    with SMTPSink(host="0.0.0.0", allow_remote=True) as sink:
        assert sink.pop3.port
        with pytest.raises(
            SinkError,
            match=r"already served on 127\.0\.0\.1:\d+ by this sink; cannot also "
            r"serve it on 0\.0\.0\.0 \(any port\)$",
        ):
            sink.serve_mailboxes("pop3", 0, forget_deleted=True)
        assert sink._store.mail.remember_removed  # nothing changed


@pytest.mark.parametrize("standalone", [True, False], ids=["standalone", "plugin"])
def test_only_the_standalone_mailboxes_forget_deleted_mail(standalone: bool) -> None:
    # A sink left running for days must not grow with every message a
    # POP3 client fetches and deletes; a plugin user serving the mailboxes
    # on a port of their choice keeps deleted() working.
    with SMTPSink() as sink:
        if standalone:
            reporter = _Reporter(sink, io.StringIO(), False, False, None)
            readers = _Runner(sink, reporter, [("pop3", 0)])._start_reading()
            assert readers is not None
            (endpoint,) = readers
        else:
            endpoint = sink.serve_mailboxes("pop3", 0)
        with smtplib.SMTP(sink.host, sink.port) as smtp:
            smtp.sendmail("app@example.com", ["ann@example.com"], RAW)
        sink.wait_for(to="ann@example.com")
        pop3 = poplib.POP3(endpoint.host, endpoint.port, timeout=TIMEOUT)
        try:
            pop3.user("ann@example.com")
            pop3.pass_("any")
            pop3.dele(1)
        finally:
            pop3.quit()
        deleted = sink.mailbox("ann@example.com").deleted()
        inbox = sink._store.mail.accounts["ann@example.com"].folders["INBOX"]
        assert inbox.messages == []
        if standalone:
            assert list(deleted) == []
            assert inbox.removed == []
        else:
            assert [message.raw for message in deleted] == [RAW]


@pytest.fixture
def collector_off(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The cyclic garbage collector off, as when its thresholds are not
    reached, and the reporter collecting every 2 messages: what is freed
    then is freed by the reporter's own collections or by no cycle at all."""
    import gc

    monkeypatch.setattr(_Reporter, "RECLAIM_MESSAGES", 2, raising=False)
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@pytest.mark.usefixtures("collector_off")
@pytest.mark.parametrize("per_connection", [1, 2])
def test_the_standalone_sink_frees_the_mail_it_forgot(per_connection: int) -> None:
    # A message and its session refer to each other: forgotten, they waited
    # for the cyclic collector, whose full runs follow the objects made, not
    # the bytes. With large mail a sink grew by every message it received,
    # also (per_connection=2) when a collection came as the mail arrived,
    # before its session was done with.
    import weakref

    with SMTPSink() as sink:
        reporter = _Reporter(sink, io.StringIO(), True, False, None)
        first = None
        for _ in range(2 // per_connection):
            with smtplib.SMTP(sink.host, sink.port) as smtp:
                for _ in range(per_connection):
                    smtp.sendmail("app@example.com", ["ann@example.com"], RAW)
                if first is None:
                    sink.wait_until(lambda: len(sink.messages) >= 1)
                    first = weakref.ref(sink.messages[0])
            # The connection's own objects are let go on the server's
            # thread as it ends; one more connection, begun and ended
            # after, finds them gone: the reporter sees both end.
            with smtplib.SMTP(sink.host, sink.port) as smtp:
                smtp.noop()
            sink.wait_until(
                lambda: (
                    len(sink.sessions) == 2
                    and all(s.end is not None for s in sink.sessions)
                )
            )
            reporter.process()  # the store forgets what it reported
        assert first is not None
        assert first() is None  # before the sink stops


@pytest.mark.usefixtures("collector_off")
def test_a_connection_kept_open_does_not_keep_its_reported_mail(
    tmp_path: Path,
) -> None:
    # A client that keeps one connection open all day (a queue worker, a
    # pooling client) had every message it sent kept on its session until
    # it closed: the sink grew without bound.
    import weakref

    out = io.StringIO()
    with SMTPSink() as sink:
        reporter = _Reporter(sink, out, False, False, str(tmp_path))
        with smtplib.SMTP(sink.host, sink.port) as smtp:
            smtp.sendmail("app@example.com", ["ann@example.com"], RAW)
            sink.wait_until(lambda: len(sink.messages) == 1)
            first = weakref.ref(sink.messages[0])
            reporter.process()  # the store forgets what it reported
            smtp.sendmail("app@example.com", ["ann@example.com"], RAW)
            sink.wait_until(lambda: len(sink.messages) == 1)
            reporter.process()
            assert first() is None  # while the connection is open
        sink.wait_until(lambda: all(s.end is not None for s in sink.sessions))
        reporter.process()
    [closed] = [line for line in out.getvalue().splitlines() if " closed (" in line]
    assert closed.endswith(", 2 messages"), closed
    saved = (tmp_path / "session-0001.txt").read_text(encoding="utf-8")
    assert " messages=2 end=quit " in saved.splitlines()[0], saved


def test_ipv6_peers_are_written_in_brackets() -> None:
    sink = start_on_ipv6_loopback()
    out = io.StringIO()
    try:
        reporter = _Reporter(sink, out, False, False, None)
        with smtplib.SMTP("::1", sink.port) as smtp:
            smtp.sendmail("app@example.com", ["ann@example.com"], RAW)
        sink.wait_for(to="ann@example.com")
        reporter.process()
    finally:
        sink.stop()
    reporter.finish()
    opened, _, closed = out.getvalue().splitlines()
    assert re.search(r" session 1 opened from \[::1\]:\d+$", opened), opened
    assert re.search(r": peer \[::1\]:\d+, EHLO ", closed), closed


class _Output(io.StringIO):
    """The reporter's output, which says when its first line (the banner)
    is written."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()

    def write(self, text: str) -> int:
        written = super().write(text)
        self.started.set()
        return written


def relay_done(message: Message) -> bool:
    return message.relay is not None and message.relay.done


@contextlib.contextmanager
def relaying_to_a_held_upstream() -> Iterator[tuple[SMTPSink, int, threading.Event]]:
    """A sink relaying everything to `refusing_upstream`, which answers RCPT
    once the event yielded is set: (the sink, the upstream's port, it)."""
    upstream_replies = threading.Event()
    with (
        refusing_upstream(hold=upstream_replies) as port,
        SMTPSink(relay=f"smtp://127.0.0.1:{port}", relay_to=".*") as sink,
    ):
        yield sink, port, upstream_replies


def test_a_relay_outcome_that_comes_while_its_message_is_printed_is_printed() -> None:
    # A CI run under load: the outcome came after the message's line was
    # made ("pending") and before the reporter looked again, and was shown
    # in neither line.
    with relaying_to_a_held_upstream() as (sink, port, upstream_replies):

        class SettlingOutput(io.StringIO):
            """Lets the relay finish while the "pending" line is written."""

            def write(self, text: str) -> int:
                if "pending" in text:
                    upstream_replies.set()
                    sink.wait_until(lambda: relay_done(sent[0]))
                return super().write(text)

        out = SettlingOutput()
        reporter = _Reporter(sink, out, False, False, None)
        with smtplib.SMTP(sink.host, sink.port) as smtp:
            smtp.sendmail("app@example.com", ["ann@example.com"], RAW)
        sent = [sink.wait_for(to="ann@example.com")]
        reporter.process()
        reporter.process()
    reporter.finish()
    lines = out.getvalue().splitlines()
    assert lines[1].endswith(f"relay to smtp://127.0.0.1:{port} pending"), lines
    outcomes = [line for line in lines if line.startswith("message #1 refused by ")]
    assert len(outcomes) == 1, lines


def test_a_message_and_its_end_that_come_while_the_reporter_looks_keep_their_order() -> (
    None
):
    # The reporter took the new mail (none yet), then the client sent its
    # message and QUIT, then it looked at which sessions had ended: the
    # close ("1 message") was printed before the message's line.
    with SMTPSink() as sink:
        out = io.StringIO()
        reporter = _Reporter(sink, out, False, False, None)
        client = smtplib.SMTP(sink.host, sink.port)
        try:
            client.ehlo()
            sink.wait_until(lambda: len(sink.captured()[1]) == 1)
            reporter.process()  # the session opened
            session = sink.captured()[1][0]
            follower = reporter._follower
            assert follower is not None
            take = follower.take

            def take_then_send() -> tuple[tuple[Message, ...], tuple[Session, ...]]:
                taken = take()
                follower.take = take  # type: ignore[method-assign]
                client.sendmail("app@example.com", ["ann@example.com"], RAW)
                client.quit()
                sink.wait_until(lambda: session.end is not None)
                return taken

            follower.take = take_then_send  # type: ignore[method-assign]
            reporter.process()
        finally:
            client.close()
        reporter.finish()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[1].startswith("message #1 "), lines
    assert " session 1 closed (quit)" in lines[2], lines
    assert lines[2].endswith("1 message"), lines


def test_a_session_seen_ended_has_its_end_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # The server marked the end, then took the time: a reporter between the
    # two sorted the close by the session's start, before its message.
    import pytest_smtpsink._smtp as server_module

    taking_the_time = threading.Event()
    go_on = threading.Event()
    now = server_module._now

    def slow_clock() -> datetime.datetime:
        if sys._getframe(1).f_code.co_name == "_mark_end":
            taking_the_time.set()
            go_on.wait(TIMEOUT)
        return now()

    monkeypatch.setattr(server_module, "_now", slow_clock)
    with SMTPSink() as sink:
        out = io.StringIO()
        reporter = _Reporter(sink, out, False, False, None)

        def send() -> None:
            with smtplib.SMTP(sink.host, sink.port) as client:
                client.sendmail("app@example.com", ["ann@example.com"], RAW)

        thread = threading.Thread(target=send)
        thread.start()
        try:
            assert taking_the_time.wait(TIMEOUT)
            reporter.process()  # while the server is ending the session
        finally:
            go_on.set()
            thread.join(TIMEOUT)
        reporter.finish()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[1].startswith("message #1 "), lines
    assert " session 1 closed (quit)" in lines[2], lines


def test_a_page_that_showed_a_relay_pending_hears_of_its_outcome() -> None:
    # The live view lists a message before the reporter reads its relay
    # outcome: a page that showed it "pending" and an outcome that came
    # before the read was never redrawn (the client's connection open).
    with relaying_to_a_held_upstream() as (sink, _, upstream_replies):
        shown: list[tuple[int, str]] = []

        class PageOnInbox(Inbox):
            """A page that shows each message as it is listed; the relay
            settles right after."""

            def add(
                self,
                messages: Sequence[Message],
                sessions: Sequence[Session],
                numbers: Mapping[int, int] | None = None,
            ) -> None:
                super().add(messages, sessions, numbers)
                for message in messages:
                    shown.append((self.version, message_fragment(message)))
                    upstream_replies.set()
                    sink.wait_until(functools.partial(relay_done, message))

        live = types.SimpleNamespace(inbox=PageOnInbox())
        out = io.StringIO()
        reporter = _Reporter(sink, out, False, False, None, live=live)  # type: ignore[arg-type]
        client = smtplib.SMTP(sink.host, sink.port)
        try:
            client.sendmail("app@example.com", ["ann@example.com"], RAW)
            sink.wait_for(to="ann@example.com")
            reporter.process()
            reporter.process()
        finally:
            client.close()
    [(version, fragment)] = shown
    assert "data-relay-pending" in fragment
    assert live.inbox.version > version, "the page was not told of the outcome"
    assert any(
        line.startswith("message #1 refused by") for line in out.getvalue().splitlines()
    )


def test_the_standalone_sink_does_not_listen_to_every_line() -> None:
    # Its reporter prints messages and sessions as they begin and end: a
    # listener of lines would make the server notify it for each one.
    sink = SMTPSink()
    out = _Output()
    runner = _Runner(sink, _Reporter(sink, out, False, False, None))
    thread = threading.Thread(target=runner.run)  # not the main: no signals
    thread.start()
    try:
        assert out.started.wait(30), "the standalone sink did not start"
        assert sink._store.watchers == 0
    finally:
        runner.stop_requested = True
        if sink.running:  # a new session wakes the reporter, which then stops
            with (
                socket.create_connection((sink.host, sink.port), 30) as client,
                contextlib.suppress(ConnectionResetError),  # the stop aborted it
            ):
                client.recv(4096)  # the greeting, or the stop's close
        thread.join(30)
    assert not thread.is_alive()
    lines = out.getvalue().splitlines()
    assert lines[-1] == "smtpsink stopped: 0 messages in 1 session", lines

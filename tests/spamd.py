"""A real SpamAssassin ``spamd`` for tests, from Debian's ``spamd`` package.

Started on a free loopback port in a temporary directory, with network
tests off (``--local``), no user configuration and no Bayes learning, and
never updated: Debian ships the stock rules in /usr/share/spamassassin,
which spamd uses as they are when ``sa-update`` has never run. As root
(CI containers) it drops to ``nobody``; otherwise it runs as the user.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import external

#: spamd loads its rules before listening: seconds on a loaded machine.
START_TIMEOUT = 120.0
READY = "server successfully spawned child process"
#: Attempts with a fresh port when another process took one in between.
PORT_ATTEMPTS = 5


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _program() -> str:
    found = shutil.which("spamd") or shutil.which("spamd", path="/usr/sbin")
    if found is None:
        external.missing("SpamAssassin's 'spamd'", "apt-get install spamd")
        raise AssertionError("unreachable")  # pragma: no cover
    return found


class _PortTaken(Exception):
    """Another process took the probed port before spamd bound it."""


@contextlib.contextmanager
def running_spamd(home: Path) -> Iterator[str]:
    """Start spamd; yield its ``host:port`` once it accepts; stop it."""
    program = _program()
    # spamd binds only after loading its rules, seconds after the port was
    # probed free: another process may take the port meanwhile.
    for attempt in range(1, PORT_ATTEMPTS + 1):
        try:
            with _spamd(program, home, last=attempt == PORT_ATTEMPTS) as address:
                yield address
                return
        except _PortTaken:
            continue
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def _spamd(program: str, home: Path, *, last: bool) -> Iterator[str]:
    """One spamd on a port probed free; `_PortTaken` if it lost that race
    (unless *last*)."""
    port = _free_port()
    command = [
        program,
        f"--listen=127.0.0.1:{port}",
        "--local",
        "--nouser-config",
        "--max-children=1",
        "--syslog=stderr",
        f"--helper-home-dir={home}",
        "--cf=use_bayes 0",
    ]
    if os.geteuid() == 0:
        home.chmod(0o755)
        command.append("--username=nobody")
    process = subprocess.Popen(
        command,
        cwd=home,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    assert process.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()
    log: list[str] = []

    def drain() -> None:  # keeps reading so that spamd never blocks on its log
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=drain, name="spamd-log", daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(
                    f"spamd did not start within {START_TIMEOUT:g} s:\n{''.join(log)}"
                ) from None
            if line is None:
                if not last and f"{port}: Address already in use" in "".join(log):
                    raise _PortTaken
                raise RuntimeError(f"spamd exited while starting:\n{''.join(log)}")
            if READY in line:
                break
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=30)
        process.stderr.close()

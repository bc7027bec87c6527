"""Saved mail: the one place that names and writes ``.eml`` and transcript
files, for the plugin's ``--smtpsink-save-dir`` and the standalone sink's
``--save-dir`` alike.

Names are ASCII, sort in arrival order and never collide:
``NNNN-<subject>.eml`` (the subject folded to ASCII letters, digits, ``_``
and ``-``, at most 60 characters) and ``session-NNNN.txt``. Messages are
written as the bytes received; transcripts as UTF-8 with LF line ends on
every platform. Test thread (the plugin) or the CLI's main thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._message import Message
    from ._session import Session

_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9_]+")
#: Letters that no decomposition takes to ASCII, spelt as their languages
#: write them without the letter ("Grüße" is "Grusse", not "Grue").
_SPELT = str.maketrans(
    {
        "ß": "ss",
        "ẞ": "SS",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ø": "o",
        "Ø": "O",
        "đ": "d",
        "Đ": "D",
        "ł": "l",
        "Ł": "L",
        "þ": "th",
        "Þ": "Th",
        "ð": "d",
        "Ð": "D",
        "\u0131": "i",  # dotless i
    }
)


class DirectoryInUse(Exception):
    """Another process (a pytest run, an ``smtpsink`` command) saves there."""


#: Descriptors holding a save directory's lock in this process. A child made
#: by fork() shares their lock (flock belongs to the open file, which fork
#: shares): a helper a test forked and left running kept the directory "in
#: use" after the run. The child closes its copies at once.
_HELD: set[int] = set()


def _close_held_in_child() -> None:
    for descriptor in _HELD:
        with contextlib.suppress(OSError):
            os.close(descriptor)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_in_child)


def unlock_directory(descriptor: int) -> None:
    """Let go of a lock `lock_directory` took."""
    _HELD.discard(descriptor)
    os.close(descriptor)


def lock_directory(directory: Path) -> int | None:
    """Hold the save ``directory`` for this process, as long as the returned
    descriptor is open: two runs saving to one directory (``tox -p`` with
    the directory in the ini file) replaced each other's files, and each
    removed the other's failed tests as its own that passed. The lock is
    on the directory itself (flock), so no file of ours is left in it.
    Raises `DirectoryInUse`; None where the lock cannot be had at all (no
    ``fcntl``, a file system without locks): the run goes on unguarded."""
    try:
        import fcntl
    except ImportError:  # Windows
        return None
    try:
        descriptor = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise DirectoryInUse from None
    except OSError:
        os.close(descriptor)
        return None
    _HELD.add(descriptor)
    return descriptor


class SaveGuard:
    """The lock `lock_directory` took on a save directory, kept to what is
    at that path: one removed ("to empty it") and made again by another
    run is that run's, and writing into it replaced its files. Each write
    first checks (`holds`) that the directory is still the one locked, and
    locks one made again; for one process's own use (not thread-safe)."""

    def __init__(self, directory: Path, descriptor: int | None) -> None:
        self.directory = directory
        #: None: no lock to be had here (see `lock_directory`), unguarded.
        self.descriptor = descriptor

    def holds(self) -> bool:
        """Whether this process may write in the directory now: the one it
        locked, or one made again (by it, if missing) that it could lock.
        False when another run holds the directory at that path."""
        if self.descriptor is None:
            return True
        try:
            here = os.stat(self.directory)
        except FileNotFoundError:
            self.directory.mkdir(parents=True, exist_ok=True)
            here = os.stat(self.directory)
        held = os.fstat(self.descriptor)
        if (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino):
            return True
        try:
            descriptor = lock_directory(self.directory)
        except DirectoryInUse:
            return False
        if descriptor is None:  # no lock on the new one: as unguarded
            return True
        unlock_directory(self.descriptor)
        self.descriptor = descriptor
        return True

    def release(self) -> None:
        if self.descriptor is not None:
            unlock_directory(self.descriptor)
            self.descriptor = None


def message_file_name(number: int, subject: str | None, prefix: str = "") -> str:
    """``4`` and ``"Café: 50% off"`` -> ``"0004-Cafe-50-off.eml"``."""
    text = unicodedata.normalize("NFKD", (subject or "").translate(_SPELT))
    text = text.encode("ascii", "ignore").decode("ascii")
    text = _NOT_IN_NAMES.sub("-", text).strip("-")[:60].rstrip("-")
    return f"{prefix}{number:04d}-{text or 'no-subject'}.eml"


#: The names `message_file_name` and `write_session` give (put-in mail's
#: prefixes too).
_SAVED_NAME = re.compile(
    r"(?:(?:deliver-|append-)?[0-9]{4,}-[A-Za-z0-9_-]+\.eml|session-[0-9]{4,}\.txt)"
)


def saved_files_in(directory: Path) -> int:
    """How many files named as saved messages and transcripts ``directory``
    holds (0 if it cannot be read): an earlier run's, whose names this
    run's numbering, starting at 1 again, takes over."""
    try:
        with os.scandir(directory) as entries:
            return sum(1 for entry in entries if _SAVED_NAME.fullmatch(entry.name))
    except OSError:
        return 0


def holds_saved_mail(directory: Path) -> bool:
    """Whether ``directory`` holds a message and a transcript named as the
    sink saves them (``0001-Welcome.eml``, ``session-0001.txt``): a test's
    save directory whose record was never written. Any ``.eml`` file took
    a project's own test data (``0001-attachments/`` beside ``sample.eml``)
    for the sink's."""
    try:
        with os.scandir(directory) as entries:
            names = [entry.name for entry in entries]
    except OSError:
        return False
    saved = {name.endswith(".eml") for name in names if _SAVED_NAME.fullmatch(name)}
    return saved == {True, False}


def put_in_prefix(message: Message) -> str:
    """What the file name of mail put in without SMTP starts with:
    ``deliver-`` (`Mailbox.deliver`) or ``append-`` (IMAP APPEND)."""
    return "append-" if message.session.protocol == "IMAP" else "deliver-"


def saved_name(message: Message, number: int, prefix: str = "") -> str:
    """The name ``message`` is saved under as ``number``: the live view's
    download is named as the ``--save-dir`` file."""
    try:
        subject = message.subject
    except Exception:  # last resort (fields are guarded): the bytes matter
        subject = None
    return message_file_name(number, subject, prefix)


def write_message(
    directory: Path, number: int, message: Message, prefix: str = ""
) -> Path:
    path = directory / saved_name(message, number, prefix)
    write_whole(path, message.raw)
    return path


def write_whole(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, or raise with no file left behind: a
    file cut short by a full disk would pass for the message (or
    transcript) it is only the start of."""
    try:
        path.write_bytes(data)
    except BaseException as error:
        # What cannot be removed either stays as the disk left it.
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None:
            error.filename = str(path)  # a failed write() names no file
        raise


def write_session(directory: Path, number: int, session: Session) -> Path:
    path = directory / f"session-{number:04d}.txt"
    summary, transcript = session._summary_and_transcript()
    header = (
        f"session {number}: {summary}  "
        # Local time, as every line people read, with its offset from UTC.
        f"started {session.started_at.astimezone():%Y-%m-%d %H:%M:%S.%f %z}\n"
    )
    text = header + transcript + "\n"
    write_whole(path, text.encode("utf-8"))
    return path

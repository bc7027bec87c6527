"""What a failed test shows and saves about its mail.

Kept apart from plugin.py so that the text and file formats are plain
functions of the captured data, tested without running pytest hooks.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

from ._credentials import credential_forms, mask_anywhere
from ._files import put_in_prefix, write_message, write_session
from ._text import plural, printable, shorten

if TYPE_CHECKING:
    from typing import TypeAlias

    import pytest

    from ._mailbox import Mailbox
    from ._message import Message
    from ._session import Session

    #: What each view held at one moment (`Held`), in the views' order.
    Captured: TypeAlias = list["Held"]

ReportMode = Literal["off", "summary", "full"]
SaveMode = Literal["failed", "all"]
REPORT_MODES: tuple[ReportMode, ...] = ("off", "summary", "full")
SAVE_MODES: tuple[SaveMode, ...] = ("failed", "all")
#: What the file name of a test's mail from before its mailbox starts with.
EARLY_PREFIX = "early-"

#: Transcript lines shown per session before cutting (the saved files keep
#: all): its first lines and its last ones, where the refusal or the
#: disconnection that explains a failure is.
_MAX_TRANSCRIPT_LINES = 60
_LAST_TRANSCRIPT_LINES = 20
#: Lines of the whole "Captured email" section (one failed test), headers
#: and the closing note not counted: a test that opened 300 connections must
#: not bury the rest of the run's output. The saved files keep everything.
MAX_SECTION_LINES = 200


def distinct(views: Sequence[Mailbox]) -> list[Mailbox]:
    """One mailbox per sink, the one that sees the most (earliest cursor).

    A test may hold several mailboxes on one sink (``smtpsink`` and
    ``smtpsink_factory()`` with the same settings): report each message once.
    """
    widest: dict[int, Mailbox] = {}
    for view in views:
        key = id(view.sink)
        if key not in widest or view._cursor < widest[key]._cursor:
            widest[key] = view
    return list(widest.values())


def section_text(views: Sequence[Mailbox], mode: ReportMode) -> str | None:
    """The "Captured email" report section, or None when there is nothing."""
    if mode == "off":
        return None
    from ._message import summary_or_raw  # the plugin's import stays light

    blocks = []
    # Whole messages and sessions are shown, in order, while they fit; the
    # rest is counted, never cut mid-transcript.
    room = MAX_SECTION_LINES
    left_out = {"message": 0, "session": 0}
    for view in views:
        # Not view.messages: that raises once the sink died or refused mail
        # (max_stored_bytes), and a report must still show what arrived.
        messages, sessions = view.captured()
        put_in = view._put_in()
        if not messages and not sessions and not put_in:
            continue
        lines = [
            f"{view.url} ({view.settings.describe() or 'default settings'}): "
            f"{plural(len(messages), 'message')}, {plural(len(sessions), 'session')}"
            + (f", {len(put_in)} put in without SMTP" if put_in else "")
        ]
        # Mail the test seeded (its summaries say deliver()) after the mail
        # sent: a reader test's report shows what there was to read.
        for message in (*messages, *put_in):
            if room < 1:
                left_out["message"] += 1
                continue
            lines.append(f"  {summary_or_raw(message)}")
            room -= 1
        for number, session in enumerate(sessions, 1):
            if room < 1:
                left_out["session"] += 1
                continue
            start = len(lines)
            summary, whole = (
                session._summary_and_transcript()
                if mode == "full"
                else (session.summary(), "")
            )
            lines.append(f"  session {number}: {summary}")
            if mode == "full":
                transcript = whole.splitlines()
                if len(transcript) > _MAX_TRANSCRIPT_LINES:
                    first = _MAX_TRANSCRIPT_LINES - _LAST_TRANSCRIPT_LINES
                    cut = len(transcript) - _MAX_TRANSCRIPT_LINES
                    transcript = [
                        *transcript[:first],
                        f"... {cut} lines not shown (--smtpsink-save-dir=DIR "
                        "saves the whole transcript) ...",
                        *transcript[-_LAST_TRANSCRIPT_LINES:],
                    ]
                lines.extend(f"    {line}" for line in transcript)
            if len(lines) - start > room:
                del lines[start:]
                left_out["session"] += 1
                room = 0
            else:
                room -= len(lines) - start
        blocks.append("\n".join(lines))
    if any(left_out.values()):
        counts = " and ".join(plural(n, kind) for kind, n in left_out.items() if n)
        blocks.append(
            f"... {counts} not shown: this section stops at {MAX_SECTION_LINES} "
            "lines. --smtpsink-save-dir=DIR saves every message and transcript "
            "as files."
        )
    return "\n\n".join(blocks) or None


#: Characters of a failure reason kept for index.html: about one line, as
#: pytest's short test summary shows it.
_MAX_REASON = 300


def failure_reason(report: pytest.TestReport, views: Sequence[Mailbox]) -> str | None:
    """What pytest's short test summary says of a failure: the first line of
    its message (``AssertionError: expected 1 message ...``), with ``at
    setup:`` or ``at teardown:`` in front when it did not fail in the call.

    The message is the test's own text, which may hold anything the test
    held. The secrets the test's sinks know (`known_secrets`) are masked
    before anything is kept, as AUTH lines are in transcripts; control
    characters are escaped, and the line is shortened.
    """
    longrepr = report.longrepr
    if isinstance(longrepr, str):
        message: object = longrepr
    else:
        message = getattr(getattr(longrepr, "reprcrash", None), "message", None)
        if not isinstance(message, str) or not message.strip():
            # A fixture that is not found has no crash, only its error text.
            message = getattr(longrepr, "errorstring", None)
    if not isinstance(message, str) or not message.strip():
        return None
    line = _one_line(message, views)
    if report.when != "call":
        line = f"at {report.when}: {line}"
    return shorten(line, _MAX_REASON)


def skip_reason(report: pytest.TestReport, views: Sequence[Mailbox]) -> str | None:
    """Why a test was skipped (``Skipped: no network``) or is expected to
    fail (``xfail: the mailer forgets the Date``), as pytest says it."""
    reason = getattr(report, "wasxfail", None)
    if isinstance(reason, str):
        return _one_line(f"xfail: {reason}" if reason else "xfail", views)
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return _one_line(str(longrepr[2]), views)
    return None


def _one_line(message: str, views: Sequence[Mailbox]) -> str:
    """The first line of ``message``, its secrets masked, printable."""
    secrets = known_secrets(views)
    message = message.strip()
    if not any("\n" in secret for secret in secrets):
        # The first line alone is masked: a failure's text may be megabytes,
        # which took seconds to mask for a table of many users. (Not if a
        # password holds a line end: cut first, its first part would show.)
        message = message.split("\n", 1)[0]
    masked = mask_anywhere(message, secrets)
    return shorten(printable(masked.strip().split("\n", 1)[0]), _MAX_REASON)


def known_secrets(views: Sequence[Mailbox]) -> list[str]:
    """The credentials of the sinks behind ``views`` (`credential_forms`)."""
    return [
        secret
        for view in views
        for secret in credential_forms(view.settings.auth, view.settings.relay)
    ]


#: Characters a directory name keeps as they are (ASCII only: \w would also
#: keep letters that some file systems normalise, so that two ids differing
#: only in Unicode normal form would share a directory).
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-\[\]]+")
_MAX_NAME = 150


def test_directory(
    root: Path, nodeid: str, worker: str | None, hashed: bool, attempt: int
) -> Path:
    """A directory name that says which test it is, is safe on any OS, and
    is the same in every run.

    The path's ``/`` become ``_`` and each ``::`` becomes ``__``. Any other
    character outside ``A-Z a-z 0-9 _ . - [ ]`` is replaced as well, and then
    the name is lossy: ``test[a b]`` and ``test[a/b]`` would both become
    ``test[a_b]``. So a lossy name (or one cut to length) ends in ``-`` and
    8 hex digits of a hash of the whole test id, which keeps such tests
    apart: each keeps its own files. So does one given ``hashed``: the run
    has another test whose name is the same but for case, or for a ``_``
    where this has a ``/`` (`sharing_names`).

    ``worker``: the xdist worker's id when every worker runs every test
    (``--dist each``); the name ends in ``@`` and the id (``@gw0``), so
    that the workers' runs of one test keep their own files. No other name
    has an ``@``: it is one of the characters replaced.

    ``attempt``: the test's run, counted from 1, when a plugin reruns a
    failed test (pytest-rerunfailures): a later run's name ends in
    ``+attempt`` and its number (``+attempt2``), after the worker's id, so
    that the failed runs keep their mail. No other name has a ``+``.
    """
    path, sep, rest = nodeid.partition("::")
    plain = path.replace("/", "_") + ("__" + rest.replace("::", "__") if sep else "")
    name = _UNSAFE.sub("_", plain)
    lossy = name != plain or name != name.strip("_.") or not name
    name = name.strip("_.")
    if lossy or hashed or len(name) > _MAX_NAME:
        digest = hashlib.sha1(nodeid.encode(), usedforsecurity=False).hexdigest()[:8]
        name = f"{name[: _MAX_NAME - 10]}-{digest}"
    if worker is not None:
        name = f"{name}@{_UNSAFE.sub('_', worker)}"
    if attempt > 1:
        name = f"{name}+attempt{attempt}"
    return root / name


def split_attempt(name: str) -> tuple[str, int]:
    """A `test_directory` name without a rerun's ``+attemptN``, and N (1
    for a test's first run)."""
    head, plus, number = name.rpartition("+attempt")
    if plus and number.isascii() and number.isdigit():  # not "²"
        return head, int(number)
    return name, 1


def saved_runs(root: Path) -> dict[str, list[Path]]:
    """The test directories in ``root`` by the test's own name: its first
    run's, its reruns' (``+attempt2``...) and the xdist workers' of
    ``--dist each`` (``@gw0``...). Read once per run, as each test's end
    would otherwise read the whole directory again."""
    found: dict[str, list[Path]] = {}
    try:
        with os.scandir(root) as entries:  # their types without a stat each
            names = [entry.name for entry in entries if entry.is_dir()]
    except OSError:  # made when the run starts; not readable: nothing to do
        return found
    for name in names:
        # The test's name, then ``@`` and a worker's id (``--dist each``),
        # then a rerun's ``+attemptN``.
        test = split_attempt(name)[0].partition("@")[0]
        found.setdefault(test, []).append(root / name)
    return found


def free_run_directory(
    root: Path,
    nodeid: str,
    worker: str | None,
    hashed: bool,
    *,
    attempt: int,
    started: float,
) -> tuple[Path, int]:
    """The directory of run ``attempt`` of a test, or of the next run whose
    directory this pytest run (begun at ``started``) has not written: a
    test run again on another xdist worker (its worker crashed) may count
    its runs from a number another run of it already saved under."""
    while True:
        directory = test_directory(root, nodeid, worker, hashed, attempt)
        if not directory.exists() or saved_before(directory, started):
            return directory, attempt
        attempt += 1


def sharing_names(nodeids: Iterable[str]) -> set[str]:
    """The test ids of ``nodeids`` whose `test_directory` names another
    has too, but for case: ``a/test_x.py::t`` and ``a_test_x.py::t``
    share one, and ``t[A]`` and ``t[a]`` do on the case-insensitive file
    systems of macOS and Windows. Each of them gets a hashed name, or the
    last one saved would replace the others' files."""
    seen: dict[str, list[str]] = {}
    for nodeid in nodeids:
        name = test_directory(Path(), nodeid, None, False, 1).name.casefold()
        seen.setdefault(name, []).append(nodeid)
    return {nodeid for group in seen.values() if len(group) > 1 for nodeid in group}


#: What `save`, `_html.record_test` and `_html.write_index` (a message's
#: page of its own, ``.html`` beside its ``.eml``) write in a test's
#: directory (four digits or more), and what file managers and editors
#: leave in any folder a person looked at (.DS_Store, Thumbs.db,
#: desktop.ini, a .swp file).
_SAVED_NAME = re.compile(
    r"(?:(?:deliver-|append-)?\d{4,}-.*\.(?:eml|html)|message-\d+\.html"
    r"|session-\d{4,}\.txt"
    r"|\d{4,}-attachments|smtpsink\.json|\..*|Thumbs\.db|desktop\.ini)\Z",
    re.DOTALL | re.IGNORECASE,
)


class NotOurs(OSError):
    """A test's directory holds files the plugin did not write."""


def _ours(directory: Path) -> bool:
    """Whether everything in ``directory`` is what an earlier run saved:
    a save directory pointed at the user's own files must not remove them."""
    try:
        return all(_SAVED_NAME.match(entry.name) for entry in directory.iterdir())
    except FileNotFoundError:
        return True
    except OSError:  # a file of that name, a folder it may not read
        return False


def saved_before(directory: Path, started: float) -> bool:
    """Whether ``directory`` was last written before ``started`` (a
    ``time.time()``): an earlier run's (False if there is none). A file
    system that keeps times to the second may round this run's down to
    before it; only a test run again on another xdist worker then loses
    its first run's files."""
    try:
        return directory.stat().st_mtime < started
    except OSError:
        return False


def forget_saved(directory: Path) -> None:
    """Remove what an earlier run saved for a test this run does not save."""
    if directory.exists() and _ours(directory):
        shutil.rmtree(directory, ignore_errors=True)


class Held(NamedTuple):
    """What one view held at one moment (`capture`)."""

    messages: Sequence[Message]
    sessions: Sequence[Session]
    #: The mail put in without SMTP (`Mailbox._put_in`).
    put_in: Sequence[Message]
    #: The test's mail that arrived before the view was made (`Mailbox._early`).
    early: Sequence[Message]


def capture(views: Sequence[Mailbox]) -> Captured:
    """One look at what ``views`` hold, for `save` and `_html.record_test`
    to share: mail that comes between two looks would put the files the
    first wrote out of step with the records of the second."""
    return [Held(*view.captured(), view._put_in(), view._early()) for view in views]


def captured_sessions(captured: Captured) -> list[tuple[Session, int]]:
    """The sessions `save` writes and `_html.record_test` lists, each with
    the index of its view in ``captured``: each view's, then those that
    brought the test's mail from before its mailbox (`Mailbox._early`) and
    are no view's (they began before it)."""
    sessions = [
        (s, index) for index, held in enumerate(captured) for s in held.sessions
    ]
    known = {id(s) for s, _ in sessions}
    for index, held in enumerate(captured):
        for message in held.early:
            session = message.session
            if session.protocol == "SMTP" and id(session) not in known:
                known.add(id(session))
                sessions.append((session, index))
    return sessions


def save(
    views: Sequence[Mailbox], directory: Path, captured: Captured | None = None
) -> list[Path]:
    """Write every message as ``NNNN-<subject>.eml`` (its raw bytes) and every
    session's transcript as ``session-NNNN.txt``. Names sort in arrival order.
    Mail put in without SMTP (`Mailbox.deliver`, IMAP APPEND) follows the
    messages, as ``deliver-NNNN-<subject>.eml`` or ``append-NNNN-...``,
    then the test's mail from before its mailbox was made (`Mailbox._early`)
    as ``early-NNNN-<subject>.eml``.

    The directory is emptied first, so that files of an earlier run of the
    same test are never mixed with this run's: a run that captured nothing
    leaves no directory (an earlier run's mail would read as this run's).
    Writes what ``captured`` holds (by default, what the views hold now).
    """
    written: list[Path] = []
    if captured is None:
        captured = capture(views)
    messages = [m for held in captured for m in held.messages]
    sessions = [session for session, _ in captured_sessions(captured)]
    put_in = [m for held in captured for m in held.put_in]
    early = [m for held in captured for m in held.early]
    if directory.is_dir() and not _ours(directory):
        raise NotOurs(
            f"{directory} holds files pytest-smtpsink did not write; left as it "
            "is (give --smtpsink-save-dir a directory of its own)"
        )
    shutil.rmtree(directory, ignore_errors=True)
    if not messages and not sessions and not put_in and not early:
        return written
    directory.mkdir(parents=True, exist_ok=True)
    written.extend(
        write_message(directory, index, message)
        for index, message in enumerate(messages, 1)
    )
    # After the mail sent, named for how it came: deliver-0001-....eml.
    written.extend(
        write_message(directory, index, message, prefix=put_in_prefix(message))
        for index, message in enumerate(put_in, 1)
    )
    # Then the test's mail from before its mailbox (a fixture's, sent in
    # its set-up): early-0001-....eml.
    written.extend(
        write_message(directory, index, message, prefix=EARLY_PREFIX)
        for index, message in enumerate(early, 1)
    )
    written.extend(
        write_session(directory, index, session)
        for index, session in enumerate(sessions, 1)
    )
    return written

"""What a failed test shows and saves about its mail.

Kept apart from plugin.py so that the text and file formats are plain
functions of the captured data, tested without running pytest hooks.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ._text import plural

if TYPE_CHECKING:
    from ._mailbox import Mailbox

ReportMode = Literal["off", "summary", "full"]
SaveMode = Literal["failed", "all"]
REPORT_MODES: tuple[ReportMode, ...] = ("off", "summary", "full")
SAVE_MODES: tuple[SaveMode, ...] = ("failed", "all")

#: Transcript lines shown per session before cutting (the saved files keep all).
_MAX_TRANSCRIPT_LINES = 60


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
    for view in views:
        # Not view.messages: that raises once the sink died or refused mail
        # (max_stored_bytes), and a report must still show what arrived.
        messages, sessions = view._snapshot()
        if not messages and not sessions:
            continue
        lines = [
            f"{view.url} ({view.settings.describe() or 'default settings'}): "
            f"{plural(len(messages), 'message')}, {plural(len(sessions), 'session')}"
        ]
        lines.extend(f"  {summary_or_raw(message)}" for message in messages)
        for number, session in enumerate(sessions, 1):
            lines.append(
                f"  session {number}: {session.peer[0]}:{session.peer[1]} "
                f"ehlo={session.ehlo!r} tls={'yes' if session.tls else 'no'} "
                f"auth={session.authenticated_as!r} "
                f"messages={len(session.messages)} end={session.end or 'open'}"
            )
            if mode == "full":
                transcript = session.format_transcript().splitlines()
                shown = transcript[:_MAX_TRANSCRIPT_LINES]
                lines.extend(f"    {line}" for line in shown)
                if len(transcript) > len(shown):
                    lines.append(f"    ... {len(transcript) - len(shown)} more lines")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) or None


def test_directory(root: Path, nodeid: str) -> Path:
    """A directory name that says which test it is and is safe on any OS."""
    name = re.sub(r"[^\w.\-\[\]]+", "_", nodeid.replace("::", "__")).strip("_")
    if len(name) > 150:
        # Long parametrized ids could collide once cut: keep them apart.
        digest = hashlib.sha1(nodeid.encode(), usedforsecurity=False).hexdigest()[:8]
        name = f"{name[:140]}-{digest}"
    return root / (name or "test")


def save(views: Sequence[Mailbox], directory: Path) -> list[Path]:
    """Write every message as ``NNNN-<subject>.eml`` (its raw bytes) and every
    session's transcript as ``session-NNNN.txt``. Names sort in arrival order.

    The directory is emptied first, so that files of an earlier run of the
    same test are never mixed with this run's.
    """
    written: list[Path] = []
    snapshots = [view._snapshot() for view in views]
    messages = [m for view_messages, _ in snapshots for m in view_messages]
    sessions = [s for _, view_sessions in snapshots for s in view_sessions]
    if not messages and not sessions:
        return written
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    for index, message in enumerate(messages, 1):
        try:
            subject = message.subject
        except Exception:  # last resort (fields are guarded): the bytes matter
            subject = None
        subject = re.sub(r"[^\w\-]+", "-", subject or "no-subject").strip("-")
        path = directory / f"{index:04d}-{subject[:60] or 'no-subject'}.eml"
        path.write_bytes(message.raw)
        written.append(path)
    for index, session in enumerate(sessions, 1):
        path = directory / f"session-{index:04d}.txt"
        header = (
            f"peer {session.peer[0]}:{session.peer[1]}  started {session.started_at:%Y-%m-%d %H:%M:%S.%f}"
            f"  end {session.end or 'open'}\n"
        )
        path.write_text(header + session.format_transcript() + "\n", encoding="utf-8")
        written.append(path)
    return written

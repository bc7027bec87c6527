"""What a recipient's mailbox holds, as a test sees it: `UserMailbox`, and
`make_delivered`, which turns what a test hands `Mailbox.deliver` into a
captured `Message`.

Test side: reads the shared `MailStore` under the store's lock and returns
snapshots, so a POP3 or IMAP session changing the mailbox meanwhile never
changes what a test is looking at. Failure messages list every folder with
its messages and their flags.
"""

from __future__ import annotations

import datetime
import difflib
import email.message
import email.policy
import email.utils
import os
import pathlib
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Union

from . import _match
from ._mailstore import (
    DELIMITER,
    INBOX,
    Account,
    MailStore,
    StoredMessage,
    given_folder_name,
    has_control_character,
    normalize_flags,
)
from ._message import Envelope, Message, summary_or_raw
from ._messages import Messages, closest_and_hints, closest_to, listed
from ._mime import COMMENT, QUOTED, getaddresses, parseaddr, replace_closed
from ._session import Session
from ._text import argument_error, format_address, plural, printable, unescape_8bit

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._match import Criteria
    from ._store import Store

#: What `Mailbox.deliver` accepts as a message.
Deliverable = Union[bytes, str, email.message.Message, "os.PathLike[str]"]

_LISTED = 20


def check_unpadded(folder: str) -> None:
    """ValueError naming ``deliver(folder=)`` if a level of ``folder``
    starts or ends with whitespace: IMAP allows such a name (as Dovecot
    does, so the IMAP server makes one on CREATE), but a test seeding mail
    means the name without it, and no IMAP client would find it so."""
    __tracebackhide__ = True  # a test's bad folder points at its line
    if padded(folder):
        # Without the levels of blanks alone: "Archive//x" is refused too.
        levels = [level.strip() for level in folder.split(DELIMITER)]
        trimmed = DELIMITER.join(level for level in levels if level)
        raise ValueError(
            f"folder={folder!r} has whitespace at the start or end of a name "
            f"(did you mean {trimmed!r}?): a client would have to name it so "
            "exactly"
        )


def _checked_folder(folder: object) -> str:
    """``folder`` as a folder name (`given_folder_name`); a clear error for
    what can be none, as `Mailbox.deliver` gives (an empty name read as a
    folder that is always empty)."""
    __tracebackhide__ = True
    if not isinstance(folder, str):
        raise TypeError(f"folder must be a folder name, got {folder!r}")
    if not folder.strip():
        raise ValueError(f"folder must be a folder name, got {folder!r}")
    return given_folder_name(folder)


def padded(name: str) -> bool:
    """Whether a level of folder ``name`` starts or ends with whitespace
    (``" Archive"``, ``"Archive/2024 "``): a name IMAP allows and Dovecot
    makes, which a test or a client almost never means."""
    return any(level != level.strip() for level in name.split(DELIMITER))


def _folder_shown(name: str) -> str:
    """A folder name as a listing shows it: as it is, or quoted when
    whitespace at a level's edge would be lost in the indentation."""
    shown = printable(name)
    return repr(shown) if padded(name) else shown


class UserMailbox:
    """One recipient's mailbox: its folders, the messages in each with their
    flags, and what was deleted or moved out. Returned by
    `Mailbox.mailbox`; every read is a fresh snapshot."""

    def __init__(
        self,
        store: Store,
        address: str,
        elsewhere: Callable[[Criteria], list[str]] | None = None,
        readers: Callable[[bool], list[str]] | None = None,
        check: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._mail: MailStore = store.mail
        self.user: str = self._mail.key(address)
        """The mailbox's key: the address in lower case (and without its
        ``+detail`` with ``recipient_delimiter``)."""
        # Hint lines for mail for this address that the test's other sinks
        # got (`Mailbox.mailbox`): the SMTP side pointed at one sink, the
        # POP3/IMAP side at another.
        self._elsewhere = elsewhere
        # A hint line when no reader of the test logged in to it, and some
        # login was refused (`Mailbox.mailbox`).
        self._readers = readers
        # Raises once the test of the mailbox (`Mailbox`) that gave this one
        # has ended: kept past it, this one read the next tests' mail.
        self._check = check

    def _account(self) -> Account | None:
        if self._check is not None:
            self._check()
        return self._mail.accounts.get(self.user)

    # -- reading ------------------------------------------------------------------

    @property
    def folders(self) -> tuple[str, ...]:
        """The folder names, ``INBOX`` first (an unknown user has only that)."""
        with self._mail.lock:
            account = self._account()
            names = list(account.folders) if account is not None else [INBOX]
        return (INBOX, *sorted(name for name in names if name != INBOX))

    def stored(self, folder: str = INBOX) -> tuple[StoredMessage, ...]:
        """The copies in ``folder`` in UID order, each with its ``uid``,
        ``flags`` and ``internal_date``."""
        __tracebackhide__ = argument_error  # a bad folder: the caller's line
        with self._mail.lock:
            return tuple(self._folder_messages(folder))

    def messages(self, folder: str = INBOX) -> Messages:
        """The messages in ``folder``, in UID order."""
        __tracebackhide__ = argument_error
        return Messages(
            [stored.message for stored in self.stored(folder)],
            scope=f"in {self._where(folder)}",
        )

    def flags(self, message: Message, folder: str = INBOX) -> frozenset[str]:
        """The flags of ``message`` in ``folder``; KeyError if it is not there.
        Of its first copy there (by UID) when IMAP COPY put two in it:
        `stored` has each copy's."""
        __tracebackhide__ = True
        if not isinstance(message, Message):
            raise TypeError(f"flags() takes a Message, got {type(message).__name__}")
        for stored in self.stored(folder):
            if stored.message is message:
                return stored.flags
        raise KeyError(f"{summary_or_raw(message)} is not in {self._where(folder)}")

    def deleted(self, folder: str | None = None) -> Messages:
        """The messages deleted (POP3 ``DELE`` then ``QUIT``, IMAP
        ``EXPUNGE``, or IMAP ``DELETE`` of their folder) from ``folder``, or
        from any folder; not those moved."""
        __tracebackhide__ = argument_error
        wanted = None if folder is None else _checked_folder(folder)
        with self._mail.lock:
            account = self._account()
            removals = (
                []
                if account is None
                else [
                    *((each.name, each.removed) for each in account.folders.values()),
                    *account.deleted_folders,
                ]
            )
            return Messages(
                [
                    removal.stored.message
                    for name, removed in removals
                    if wanted is None or name == wanted
                    for removal in removed
                    if removal.how == "deleted"
                ]
            )

    def _folder_messages(self, folder: str) -> list[StoredMessage]:
        __tracebackhide__ = argument_error
        name = _checked_folder(folder)
        account = self._account()
        if account is None:
            return []
        found = account.folders.get(name)
        return list(found.messages) if found is not None else []

    # -- assertions -------------------------------------------------------------------

    def assert_in(
        self,
        folder: str = INBOX,
        *,
        flags: Iterable[str] | None = None,
        **criteria: Unpack[Criteria],
    ) -> Message:
        """Assert that exactly one message matching ``criteria`` is in
        ``folder`` (with exactly the ``flags`` given, if any: ``flags=()``
        for unread and unflagged); returns it."""
        __tracebackhide__ = True
        _match.check_names(criteria, ("folder", "flags"))
        wanted_flags = None if flags is None else normalize_flags(flags, in_a_test=True)
        found = []
        for stored in self.stored(folder):  # a loop: see _match.select
            if _match.matches(stored.message, criteria):
                found.append(stored)
        if len(found) == 1 and (
            wanted_flags is None or _folded(found[0].flags) == _folded(wanted_flags)
        ):
            return found[0].message
        want = f"exactly 1 message in {self._where(folder)}"
        described = _match.describe(criteria)
        if described:
            want += f" matching {described}"
        if wanted_flags is not None:
            want += f" with flags {_show_flags(wanted_flags)}"
        hints = []
        if len(found) == 1:
            got = f"found it with flags {_show_flags(found[0].flags)}"
            hints += self._seen_at_the_end(found[0], wanted_flags)
        else:
            got = f"found {len(found)}"
            if given_folder_name(folder) not in self.folders:  # a typo, or never made
                got += f" ({self._no_folder(given_folder_name(folder), criteria)})"
        marked = found
        closest_copy: list[StoredMessage] = []
        if not found:
            # A reader's usual slip is the folder: the application moved
            # the message (or never did). Matches in other folders come
            # first, marked, before a guess at the closest one here.
            asked = given_folder_name(folder)
            other = [
                (name, copy)
                for name in self.folders
                if name != asked
                for copy in self.stored(name)
                if _matches_quietly(copy.message, criteria)
            ]
            if other:
                marked = [copy for _, copy in other]
                # With flags= asked for, each copy's flags: matching the
                # criteria, a copy may still fail the flags once the folder
                # is right.
                places = ", ".join(
                    f"{_folder_shown(name)} (uid {copy.uid}"
                    + (
                        ""
                        if wanted_flags is None
                        else f", flags {_show_flags(copy.flags)}"
                    )
                    + ")"
                    for name, copy in other[:5]
                )
                more = f" and {len(other) - 5} more" if len(other) > 5 else ""
                where = (
                    "1 matching message is in another folder"
                    if len(other) == 1
                    else f"{len(other)} matching messages are in other folders"
                )
                hints.append(f"Hint: {where}: {places}{more}")
            else:
                # The closest in the folder asked about, and the usual slips.
                copies = self.stored(folder)
                messages = [copy.message for copy in copies]
                closest = closest_to(messages, criteria)
                closest_copy = [c for c in copies if c.message is closest][:1]
                name = f"uid {closest_copy[0].uid}" if closest_copy else ""
                hints += closest_and_hints(closest, messages, criteria, name)
                hints += self._in_other_mailboxes(criteria)
            if self._elsewhere:
                hints += self._elsewhere(criteria)
        raise AssertionError(
            f"expected {want}; {got}.\n{self._describe(marked, closest_copy)}"
            + "".join(f"\n{line}" for line in hints + self._readers_hint(hints))
        )

    def _in_other_mailboxes(self, criteria: Criteria) -> list[str]:
        """The hint naming other recipients' mailboxes of this sink that hold
        a match: the application sent to another (or a mistyped) address,
        or the test names the To header's address, not the envelope's."""
        with self._mail.lock:
            copies = [
                (user, name, list(folder.messages))
                for user, account in self._mail.accounts.items()
                if user != self.user
                for name, folder in account.folders.items()
            ]
        found = [
            f"{printable(user)}'s {_folder_shown(name)} (uid {stored.uid})"
            for user, name, stored_messages in copies
            for stored in stored_messages
            if _matches_quietly(stored.message, criteria)
        ]
        if not found:
            return []
        where = (
            "1 matching message is in another mailbox"
            if len(found) == 1
            else f"{len(found)} matching messages are in other mailboxes"
        )
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        return [f"Hint: {where} of this sink: {', '.join(found[:5])}{more}"]

    def _seen_at_the_end(
        self, stored: StoredMessage, wanted_flags: Iterable[str] | None
    ) -> list[str]:
        """The hint for a copy asked for as ``\\Seen`` that a POP3 session
        still holding the maildrop sent with RETR: the flag lands when the
        session ends, which the sink sees a moment after a client's close."""
        if wanted_flags is None or "\\seen" not in _folded(wanted_flags):
            return []
        with self._mail.lock:
            account = self._account()
            holder = account.holder if account is not None else None
            if holder is None or holder.record is None:
                return []
            if not any(copy is stored for copy in holder.retrieved()):
                return []
            session = holder.record
        return [
            printable(
                f"Hint: uid {stored.uid} was sent by RETR in the POP3 session from "
                f"{format_address(*session.peer[:2])}, {_NAMED_OPEN} (or "
                "closed a moment ago): RETR's \\Seen lands when the session ends; "
                "wait for it with smtpsink.wait_until(lambda: box.assert_in(...))"
            )
        ]

    def _readers_hint(self, said: Sequence[str] = ()) -> list[str]:
        """`Mailbox._refused_readers_hint`'s lines, but the one on a reader
        still open where ``said`` (the report's other hints) named that
        POP3 session already (its DELE, its RETR's \\Seen)."""
        if self._readers is None:
            return []
        return self._readers(any(_NAMED_OPEN in line for line in said))

    def _no_folder(self, name: str, criteria: Criteria) -> str:
        """That there is no folder ``name``, and what became of it if IMAP
        RENAME gave it another name."""
        said = f"there is no folder {printable(name)!r}"
        with self._mail.lock:
            account = self._account()
            renames = list(account.renamed) if account is not None else []
            names = set(account.folders) if account is not None else set()
        now = _renamed_to(renames, name)
        if now is not None:
            gone = "" if now in names else ", since deleted"
            return f"{said}: it was renamed {printable(now)!r}{gone}"
        meant = _close_folder(name, names)
        if meant is None:
            if "subject" not in criteria and self._a_subject(name):
                # assert_in("Printer on fire"): the folder is the first
                # argument, and a subject given there reads as a folder.
                return (
                    f"{said}: the first argument is the folder; did you mean "
                    f"subject={printable(name)!r}?"
                )
            return said
        if meant == name.replace(".", DELIMITER):
            # The habit of servers whose delimiter is "." (Courier, Cyrus).
            return (
                f"{said}: the hierarchy delimiter is {DELIMITER!r}; did you "
                f"mean {printable(meant)!r}?"
            )
        return f"{said}: did you mean {printable(meant)!r}?"

    def _a_subject(self, text: str) -> bool:
        """Whether ``text`` is the whole subject of a message in any folder
        (case and surrounding blanks aside): a folder named by a word of a
        subject ("Sent") is likelier a folder not made yet."""
        wanted = text.strip().casefold()
        return bool(wanted) and any(
            (copy.message.subject or "").strip().casefold() == wanted
            for name in self.folders
            for copy in self.stored(name)
        )

    def assert_not_in(self, folder: str = INBOX, **criteria: Unpack[Criteria]) -> None:
        """Assert that no message matching ``criteria`` is in ``folder``."""
        __tracebackhide__ = True
        _match.check_names(criteria, ("folder",))
        stored = self.stored(folder)
        found = Messages([copy.message for copy in stored]).filter(**criteria)
        matching = {id(message) for message in found}
        found_stored = [copy for copy in stored if id(copy.message) in matching]
        name = _checked_folder(folder)
        folders = self.folders
        renamed = name not in folders and self._not_in_renamed(folder, name, criteria)
        meant = None if name in folders or renamed else _close_folder(name, folders)
        if meant is not None:
            # A misspelt folder holds nothing: this would pass whatever
            # arrived. A folder that was never made (no mail was ever moved
            # to "Junk") passes: nothing is in it, as the test expects.
            raise AssertionError(
                f"expected no message in {self._where(folder)}, but there is no "
                f"folder {printable(name)!r} (did you mean "
                f"{printable(meant)!r}?).\n{self.describe()}"
            )
        if found:
            described = _match.describe(criteria)
            raise AssertionError(
                f"expected no message in {self._where(folder)}"
                + (f" matching {described}" if described else "")
                + f"; found {len(found)}.\n{self._describe(found_stored)}"
                + "".join(f"\n{line}" for line in self._readers_hint())
            )

    def _not_in_renamed(self, folder: str, name: str, criteria: Criteria) -> bool:
        """For `assert_not_in` of a folder ``name`` that is not there: if IMAP
        RENAME renamed it, its mail went with it, and a matching message
        under its new name fails the assertion (a test of an application
        that renames, say archives, a folder passed whatever stayed in it).
        Returns whether RENAME renamed it (then it is no misspelt name)."""
        __tracebackhide__ = True
        with self._mail.lock:
            account = self._account()
            renames = list(account.renamed) if account is not None else []
        now = _renamed_to(renames, name)
        if now is None:
            return False
        moved = self.stored(now) if now in self.folders else []
        there = [copy for copy in moved if _match.matches(copy.message, criteria)]
        if not there:
            return True
        described = _match.describe(criteria)
        raise AssertionError(
            f"expected no message in {self._where(folder)}"
            + (f" matching {described}" if described else "")
            + f"; there is no folder {printable(name)!r}: it was renamed "
            f"{printable(now)!r}, which holds {len(there)}.\n{self._describe(there)}"
        )

    def assert_deleted(self, **criteria: Unpack[Criteria]) -> Message:
        """Assert that a message matching ``criteria`` was deleted (from any
        folder); returns the latest such message."""
        __tracebackhide__ = True
        _match.check_names(criteria)
        found = self.deleted().filter(**criteria)
        if not found:
            described = _match.describe(criteria)
            marked, hints = self._deletions_not_done(criteria)
            raise AssertionError(
                f"expected a message deleted from {self.user}'s mailbox"
                + (f" matching {described}" if described else "")
                + f"; found none.\n{self._describe(marked)}"
                + "".join(f"\n{line}" for line in hints + self._readers_hint(hints))
            )
        return found[-1]

    def _deletions_not_done(
        self, criteria: Criteria
    ) -> tuple[list[StoredMessage], list[str]]:
        """The copies matching ``criteria`` that a client asked to delete
        without the step that deletes (a POP3 DELE whose session ended
        before QUIT, an IMAP \\Deleted never expunged), and a hint line
        for each: the mail is rightly still there, and the cause is the
        application's, which the transcript alone would show."""
        with self._mail.lock:
            account = self._account()
            if account is None:
                return [], []
            unquit = [
                (session, stored)
                for session, marked in account.marked_without_quit
                for stored in marked
                if not stored._removed
            ]
            holder = account.holder  # a POP3 session still open
            if holder is not None and holder.record is not None:
                unquit += [
                    (holder.record, stored)
                    for stored in holder.marked()
                    if not stored._removed
                ]
            flagged = [
                (name, stored)
                for name, folder in account.folders.items()
                for stored in folder.messages
                if "\\Deleted" in stored.flags
            ]
            moved = [
                (name, removal.stored, removal.now_named or removal.to or "?")
                for name, folder in account.folders.items()
                for removal in folder.removed
                if removal.how != "deleted"
            ]
        marked: list[StoredMessage] = []
        hints = []
        # One hint per copy, the last session's (a client that never sends
        # QUIT marks it again at every poll).
        latest = {id(stored): (session, stored) for session, stored in unquit}
        for session, stored in latest.values():  # loops: see _match.select
            if _matches_quietly(stored.message, criteria):
                marked.append(stored)
                hints.append(_dele_without_quit(session, stored))
        for name, stored in flagged:
            if _matches_quietly(stored.message, criteria) and stored not in marked:
                marked.append(stored)
                hints.append(
                    f"Hint: uid {stored.uid} in {_folder_shown(name)} has \\Deleted but "
                    "was never expunged: IMAP deletes it only at EXPUNGE, UID "
                    "EXPUNGE or CLOSE (MOVE takes it away)"
                )
        for name, stored, to in moved:
            # What most mail clients do to "delete": into Trash. The
            # listing showed it moved, unmarked and unexplained.
            if _matches_quietly(stored.message, criteria) and stored not in marked:
                marked.append(stored)
                hints.append(
                    f"Hint: uid {stored.uid} in {_folder_shown(name)} was moved to "
                    f"{_folder_shown(to)}, which deletes nothing: "
                    f"assert_in({to!r}, ...) if that is what the application does"
                )
        return marked, hints

    # -- display ------------------------------------------------------------------------

    def describe(self) -> str:
        """Every folder with its messages and flags, then what was deleted or
        moved out: the body of this class's failure messages."""
        return self._describe(())

    def _describe(
        self, marked: Iterable[StoredMessage], also: Iterable[StoredMessage] = ()
    ) -> str:
        """`describe`, with the ``marked`` messages (an assertion's matches)
        marked ``*`` and, in a folder of more than _LISTED, listed first,
        as ``also`` is (the closest one, which a hint names)."""
        with self._mail.lock:
            account = self._account()
            if account is None:
                # The likely slip: another address got the mail.
                others = sorted(
                    user
                    for user, other in self._mail.accounts.items()
                    if any(folder.messages for folder in other.folders.values())
                )
                shown = ", ".join(others[:_LISTED]) + (
                    f" and {len(others) - _LISTED} more"
                    if len(others) > _LISTED
                    else ""
                )
                return f"{self.user}'s mailbox is empty (no mail arrived for it)." + (
                    f" Mailboxes with mail: {printable(shown)}." if others else ""
                )
            folders = sorted(
                account.folders.values(), key=lambda f: (f.name != INBOX, f.name)
            )
            snapshot = [
                (
                    f"{_folder_shown(f.name)} ({plural(len(f.messages), 'message')})",
                    list(f.messages),
                    [(r, r.now_named, r.target_gone) for r in f.removed],
                )
                for f in folders
            ]
            snapshot.extend(
                (
                    f"{_folder_shown(name)} (folder deleted)",
                    [],
                    [(r, r.now_named, r.target_gone) for r in removed],
                )
                for name, removed in account.deleted_folders
            )
        chosen = {id(stored) for stored in marked}
        shown_first = chosen | {id(stored) for stored in also}
        lines = [f"{self.user}'s mailbox:"]
        for heading, messages, removed in snapshot:
            lines.append(f"  {heading}:")
            wanted = [stored for stored in messages if id(stored) in shown_first]
            previous = -1
            for index, stored in listed(messages, wanted):
                if index > previous + 1:
                    lines.append(f"    ... {index - previous - 1} more")
                mark = "*" if id(stored) in chosen else " "
                lines.append(f"  {mark} {_line(stored)}")
                previous = index
            if previous < len(messages) - 1:
                lines.append(f"    ... {len(messages) - 1 - previous} more")
            for removal, now_named, gone in removed[:_LISTED]:
                how = (
                    "deleted"
                    if removal.how == "deleted"
                    else f"moved to {_folder_shown(removal.to or '?')}"
                )
                if removal.how != "deleted":
                    # The name the application moved it to (its transcript
                    # says MOVE ... Done), and what became of that folder.
                    since = []
                    if now_named is not None:
                        since.append(f"renamed {_folder_shown(now_named)}")
                    if gone:
                        since.append("deleted")
                    if since:
                        how += ", since " + " and ".join(since)
                mark = "*" if id(removal.stored) in chosen else " "
                lines.append(f"  {mark} ({how}) {_line(removal.stored)}")
            if len(removed) > _LISTED:
                lines.append(
                    f"    ... and {len(removed) - _LISTED} more deleted or moved"
                )
        if chosen:
            lines.append("(* marks the messages that match)")
        return "\n".join(lines)

    def _where(self, folder: str) -> str:
        return f"{self.user}'s {_folder_shown(given_folder_name(folder))}"

    def __repr__(self) -> str:
        return f"<UserMailbox {self.user} folders={list(self.folders)}>"


def _close_folder(name: str, folders: Iterable[str]) -> str | None:
    """The folder ``name`` (which does not exist) likely meant: the same
    levels with the ``/`` delimiter (``INBOX.Archive``), or a close
    spelling (``Archiv``, `` Archive``)."""
    names = list(folders)
    if name.replace(".", DELIMITER) in names:
        return name.replace(".", DELIMITER)
    close = difflib.get_close_matches(name, names, 1)
    return close[0] if close else None


def _renamed_to(renames: Sequence[tuple[str, str]], name: str) -> str | None:
    """The name that the last folder called ``name`` has now, after the
    IMAP RENAMEs ``renames`` (oldest first); None if none renamed it."""
    last = next(
        (i for i in range(len(renames) - 1, -1, -1) if renames[i][0] == name), None
    )
    if last is None:
        return None
    now = renames[last][1]
    for old, new in renames[last + 1 :]:
        if old == now:
            now = new
    return now


def _matches_quietly(message: Message, criteria: Criteria) -> bool:
    """`_match.matches` for a hint about mail the assertion was not about: a
    criterion that raises on it (``subject=lambda s: s.startswith(...)`` on
    another recipient's message without a Subject) is no match, not an
    error in place of the assertion's own report (nor, inside `wait_until`,
    an end to the wait)."""
    try:
        return _match.matches(message, criteria)
    except _match.CriterionError:
        return False


def _folded(flags: Iterable[str]) -> frozenset[str]:
    """``flags`` compared as the server compares them: a keyword is one
    whatever its case (a STORE of ``$label`` sets the folder's ``$Label``)."""
    return frozenset(flag.lower() for flag in flags)


#: How a hint names a POP3 session still open (`_dele_without_quit`,
#: `UserMailbox._seen_at_the_end`): the readers' hint says no more of it.
_NAMED_OPEN = "which is still open"


def _show_flags(flags: Iterable[str]) -> str:
    return "{" + ", ".join(sorted(flags)) + "}" if flags else "{} (none)"


def _dele_without_quit(session: Session, stored: StoredMessage) -> str:
    """The hint for ``stored``, marked by DELE in the POP3 ``session``,
    which ended without its QUIT running (none sent, or a fault refused
    it), or is still open. Named as the report's session line names it
    (peer and end)."""
    peer = format_address(*session.peer[:2])
    if session.used("QUIT"):
        ending = "whose QUIT did not run"
        if session.end is None:
            ending += " (still open)"
    elif session.end is None:
        ending = f"{_NAMED_OPEN} (no QUIT yet)"
    else:
        ending = f"which ended without QUIT (end={session.end})"
    return printable(
        f"Hint: uid {stored.uid} was marked by DELE in the POP3 session from "
        f"{peer}, {ending}: POP3 deletes only at QUIT (RFC 1939)"
    )


def _line(stored: StoredMessage) -> str:
    flags = " ".join(sorted(stored.flags)) or "-"
    return f"uid {stored.uid} [{flags}] {summary_or_raw(stored.message)}"


# -- deliver() ---------------------------------------------------------------------------


def message_bytes(message: Deliverable) -> bytes:
    """The bytes of what a test hands `Mailbox.deliver`.

    Bytes are kept exactly. Text and `email.message.Message` objects get CRLF
    line ends, as SMTP would have delivered them, and keep every header: a
    ``Bcc:`` too, which a Sent copy has (docs/reading.rst). A path
    (`os.PathLike`) is read as it is.
    """
    __tracebackhide__ = True  # a test's bad message points at its line
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message)
    if isinstance(message, os.PathLike):
        return pathlib.Path(message).read_bytes()
    if isinstance(message, email.message.Message):
        policy = message.policy.clone(linesep="\r\n")
        return message.as_bytes(policy=policy)
    if isinstance(message, str):
        if "\n" not in message and ":" not in message:
            raise ValueError(
                f"{message!r} is not a message (no header); to deliver a file, "
                "pass a path: deliver(pathlib.Path(...))"
            )
        text = message.replace("\r\n", "\n").replace("\n", "\r\n")
        return text.encode("utf-8", "surrogateescape")
    raise TypeError(
        "deliver() takes the message as bytes, str, an email.message.Message "
        f"or a path (pathlib.Path), got {type(message).__name__}"
    )


def header_sender(raw: bytes) -> str:
    """The first From: address of ``raw`` (""without one): the sender a
    message put in without SMTP (`Mailbox.deliver`, IMAP APPEND) is shown
    with, as it has no envelope."""
    # The header only: parsed whole, a 30 MB APPEND cost 200 MB at its peak
    # (the parser splits the body into lines).
    ends = [
        found + len(blank) // 2  # the header's last line end kept
        for blank in (b"\r\n\r\n", b"\n\n")
        if (found := raw.find(blank)) >= 0
    ]
    head = raw[: min(ends)] if ends else raw
    try:
        parsed = email.message_from_bytes(head, policy=email.policy.compat32)
        # raw_items: raw UTF-8 as surrogate escapes, which unescape_8bit
        # turns back into text (get_all gave "j\ufffd\ufffd@...").
        froms = [
            unescape_8bit(str(v)) for n, v in parsed.raw_items() if n.lower() == "from"
        ]
        senders = [a for _, a in getaddresses(froms) if a]
    except Exception:  # malformed headers: the bytes are kept all the same
        senders = []
    return senders[0] if senders else ""


def recipients_of(raw: bytes, to: str | Sequence[str] | None) -> tuple[str, ...]:
    """``to`` as a tuple; without it, the To, Cc and Bcc header addresses."""
    __tracebackhide__ = True  # a test's bad recipient points at its line
    if to is None:
        try:
            parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
            # The values as written: str() of a compat32 header with 8-bit
            # bytes (an RFC 6532 address, jürgen@bücher.example) gives
            # U+FFFD for them, and the mail went to a mailbox no one has.
            fields = [
                unescape_8bit(value)
                for name, value in parsed.raw_items()
                if name.lower() in ("to", "cc", "bcc")
            ]
            found = tuple(a for _, a in getaddresses(fields) if "@" in a)
        except Exception:  # malformed headers: the test must say to=
            found = ()
        if not found:
            raise ValueError(
                "deliver() needs to=...: the message has no To, Cc or Bcc address"
            )
        try:
            # The checks to= gets: a header address no SMTP server would
            # take (``ann lee@example.com``) would make a mailbox no mail
            # reaches.
            return tuple(_recipient(address) for address in found)
        except ValueError as error:
            raise ValueError(
                f"deliver() needs to=... for this message: its To, Cc or Bcc "
                f"{str(error).removeprefix('to: ')}"
            ) from None
    if isinstance(to, str):
        to = (to,)
    if not isinstance(to, Iterable):
        raise TypeError(f"to must be an address or a list of addresses, got {to!r}")
    recipients = tuple(to)
    if not recipients or not all(isinstance(r, str) and r.strip() for r in recipients):
        raise ValueError(f"to must be an address or a list of addresses, got {to!r}")
    # A loop: a comprehension's own frame could not hide itself.
    checked = []
    for recipient in recipients:
        if (
            "@" not in recipient
            and not recipient.startswith("<")
            and not _NOT_IN_AN_ADDRESS.search(recipient)
        ):
            # A login name, as mailbox() takes it ("CORP\\ann"): POP3 and
            # IMAP clients log in with any, and its mailbox needs seeding.
            # Not text with blanks ("not an address"): a slip, more likely.
            try:
                checked.append(_recipient(recipient))
            except ValueError:
                checked.append(recipient)
            continue
        checked.append(_recipient(recipient))
    return tuple(checked)


_NOT_IN_AN_ADDRESS = re.compile(r"[\s\x00-\x1f\x7f]")
#: Outside quotes, what only a header's address list has around addresses.
_ADDRESS_SPECIALS = re.compile(r"[<>,;]")
#: Outside quotes, what no local part has (RFC 5322 specials): the sink's
#: SMTP refuses RCPT TO:<a:b@example.com> as malformed.
_LOCAL_SPECIALS = re.compile(r'[()\[\]:\\"]')
#: A domain: a name without specials, or an address literal ("[192.0.2.1]").
_DOMAIN = re.compile(r'\[[^\[\]\\]*\]|[^()\[\]:\\"]*')


def bare_address(text: str) -> str:
    """The address of ``"Ann <ann@example.com>"``, as a To header writes
    it (with the name, it would be a mailbox no mail ever reaches); any
    other text as it is."""
    if "<" in text and not text.lstrip().startswith("<"):
        return parseaddr(text)[1] or text
    return text


def _recipient(address: str, what: str = "to") -> str:
    """One ``to`` address as a mailbox takes it: out of ``Name <address>``
    (as `Mailbox.mailbox` takes it); ValueError if it cannot be one, as an
    SMTP server would refuse it (a space outside quotes, a control
    character): it would make a mailbox no mail could reach. ``what``
    names the argument in the error."""
    __tracebackhide__ = True
    # Outside quotes and (unnested) comments: "Ann (work, mostly) <a@x>" is
    # one address.
    if re.search(
        "[,;]", replace_closed(COMMENT, "", replace_closed(QUOTED, "q", address))
    ):
        named = [a for _, a in getaddresses([address]) if "@" in a]
        if len(named) > 1:
            # parseaddr would take the first alone: Bob would get nothing.
            advice = (
                f"give them as a list: to={named!r}"
                if what == "to"
                else f"a mailbox is one address's: {what[:-2]}({named[0]!r}), ..."
            )
            raise ValueError(
                f"{what}: {address!r} names {len(named)} addresses; {advice}"
            )
        # "Ann <ann@example.com>," or "Smith, Ann <ann@example.com>".
        raise ValueError(
            f"{what}: {address!r} is not an address: outside quotes, ',' and ';' "
            "separate addresses (a name with a comma is quoted: "
            "'\"Smith, Ann\" <ann@example.com>')"
        )
    given = address
    address = bare_address(address).strip()
    if address.startswith("<") and address.endswith(">"):  # as RCPT TO writes it
        address = address[1:-1].strip()
    if not address:  # "<>", the null sender: no one's mailbox
        raise ValueError(f"{what}: {given!r} is not an address")
    unquoted = replace_closed(QUOTED, "q", address)  # a quoted local part: anything
    if (
        not address
        or _NOT_IN_AN_ADDRESS.search(unquoted)
        or _ADDRESS_SPECIALS.search(unquoted)
    ):
        raise ValueError(f"{what}: {address!r} is not an address")
    local, at, domain = unquoted.rpartition("@")
    if at and (not local or not domain or "@" in local):
        raise ValueError(
            f"{what}: {address!r} is not an address (one @, with a local part "
            "before it and a domain after it)"
        )
    if _LOCAL_SPECIALS.search(local if at else unquoted) or not _DOMAIN.fullmatch(
        domain
    ):
        raise ValueError(
            f'{what}: {address!r} is not an address: ( ) [ ] : \\ and " are '
            "taken only inside quotes, or a domain's [address literal], as "
            "SMTP takes them"
        )
    if has_control_character(address):
        # Inside quotes too: the sink's SMTP refuses it (501), and a POP3 or
        # IMAP login of it opens nothing.
        raise ValueError(
            f"{what}: {address!r} is not an address: no control character "
            "(a tab, ESC, ...) is in one, quoted or not, as SMTP takes it"
        )
    if at and not domain.startswith("[") and "" in domain.split("."):
        # "ann@example.com." made a mailbox that no mail could reach: the
        # sink's SMTP refuses the address (553 5.1.3).
        raise ValueError(
            f"{what}: {address!r} is not an address: a domain has no dot at "
            "its start or end, nor two together, as SMTP takes it"
        )
    return address


def make_delivered(raw: bytes, recipients: tuple[str, ...]) -> Message:
    """A captured `Message` for mail put in by `Mailbox.deliver`: its
    envelope is the recipients (sender from the From header), its session a
    stand-in with protocol ``"deliver"``, its number 0 (it never crossed
    SMTP)."""
    when = datetime.datetime.now(datetime.timezone.utc)
    session = Session(("deliver()", 0), when, protocol="deliver")
    session.ended_at, session.end = when, "quit"
    message = Message(
        raw=raw,
        envelope=Envelope(mail_from=header_sender(raw), rcpt_to=recipients),
        session=session,
        received_at=when,
        number=0,
    )
    session._messages.append(message)
    session._message_count = 1
    return message


def check_date(date: datetime.datetime | None) -> datetime.datetime:
    __tracebackhide__ = True
    now = datetime.datetime.now(datetime.timezone.utc)
    if date is None:
        return now
    if not isinstance(date, datetime.datetime):
        raise TypeError(f"date must be a datetime.datetime, got {date!r}")
    if date.tzinfo is None:
        raise ValueError(
            "date must be timezone-aware (IMAP's INTERNALDATE has a zone), e.g. "
            "datetime.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.timezone.utc)"
        )
    offset = date.utcoffset()
    if offset is not None and offset % datetime.timedelta(minutes=1):
        # IMAP's zone is hours and minutes: kept as the same instant in UTC,
        # so that INTERNALDATE and SEARCH ON name the same day.
        try:
            return date.astimezone(datetime.timezone.utc)
        except OverflowError:
            year = (
                "before the year 1" if offset > datetime.timedelta() else "after 9999"
            )
            raise ValueError(
                f"date {date} cannot be an IMAP internal date: its zone has "
                f"seconds, and in UTC it is {year}"
            ) from None
    return date

"""Recipient mailboxes: what the read side (POP3, IMAP) serves.

A user is an envelope recipient: every message the sink accepts goes into
the ``INBOX`` of each of its RCPT TO addresses (so a Bcc recipient gets a
copy, and no header decides). `deliver` puts mail in without SMTP.

The bytes are stored once, in the `Message`; a folder holds one small
`StoredMessage` per copy (UID, flags, internal date). UIDs come from one
counter per sink that never goes back, so a UID is never reused in any
folder within the sink's life, and every folder's UIDVALIDITY is the
sink's start time, fixed until it stops.

Shared module. The server thread (SMTP delivery, POP3, IMAP) and the test
thread (`deliver`, assertions) both change and read it, always under the
store's lock (``Store.changed``), and each change wakes the store's waiters
and the read-side servers (``MailStore.listeners``: IMAP IDLE), so nothing
polls.

Per-test isolation: `reset` (called when the next test starts) empties
every mailbox and bumps `generation`; read-side sessions opened under an
older generation are ended by their servers.
"""

from __future__ import annotations

import datetime
import hmac
import itertools
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

from ._text import normalize_user

if TYPE_CHECKING:
    from ._message import Message
    from ._session import Session

INBOX = "INBOX"
#: The hierarchy delimiter of folder names ("Archive/2024"), as IMAP shows it.
DELIMITER = "/"


def folder_name(name: str) -> str:
    """``name`` as folders are kept: INBOX in any case, also as a parent
    ("inbox/Sub" is "INBOX/Sub"), so that a folder never has two names."""
    head, sep, rest = name.partition(DELIMITER)
    # isascii(): "\u0131nbox" (a dotless i) upper-cases to INBOX too.
    return INBOX + sep + rest if head.isascii() and head.upper() == INBOX else name


def given_folder_name(name: str) -> str:
    """A folder name as a test or a client gives it: `folder_name`, and one
    trailing delimiter dropped (``CREATE Archive/`` names ``Archive``, RFC
    3501 6.3.3). Only one: ``Archive//`` keeps an empty level, which
    `check_folder_name` refuses (a client that added the delimiter twice)."""
    if len(name) > 1 and name.endswith(DELIMITER):
        name = name[:-1]
    return folder_name(name)


#: The longest folder name and level, in characters (Dovecot's limits are
#: the same numbers in bytes): a name of thousands of levels made every
#: LIST slow.
MAX_FOLDER_NAME = 4096
MAX_FOLDER_LEVEL = 255


def check_folder_name(name: str, given: str | None = None) -> None:
    """ValueError unless ``name`` can be a folder: not empty, no empty level
    (no leading, trailing or doubled delimiter), no control character, at
    most `MAX_FOLDER_NAME` characters and `MAX_FOLDER_LEVEL` per level.
    ``given``: the name as the test wrote it, if `given_folder_name` changed
    it (the error quotes what the test wrote)."""
    __tracebackhide__ = True  # a test's bad folder points at its line
    if given is not None and given != name:
        try:
            check_folder_name(name)
        except ValueError as error:
            raise ValueError(str(error).replace(repr(name), repr(given), 1)) from None
        return
    if len(name) > MAX_FOLDER_NAME:
        raise ValueError(
            f"{name[:40]!r}... is not a folder name: it has {len(name)} characters, "
            f"at most {MAX_FOLDER_NAME}"
        )
    longest = max((len(part) for part in name.split(DELIMITER)), default=0)
    if longest > MAX_FOLDER_LEVEL:
        raise ValueError(
            f"{name[:40]!r}... is not a folder name: a level of it has {longest} "
            f"characters, at most {MAX_FOLDER_LEVEL}"
        )
    if not name or any(not part for part in name.split(DELIMITER)):
        raise ValueError(
            f"{name!r} is not a folder name: it needs a name at each level "
            f"(levels are separated by {DELIMITER!r}, e.g. 'Archive/2024')"
        )
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        raise ValueError(f"{name!r} is not a folder name: it holds a control character")
    if any("\ud800" <= char <= "\udfff" for char in name):
        raise ValueError(
            f"{name!r} is not a folder name: it holds a lone surrogate (not text)"
        )


#: The system flags of IMAP (RFC 3501), by their case-insensitive name.
SYSTEM_FLAGS = {
    flag.lower(): flag
    for flag in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")
}
# Characters a keyword (an IMAP atom) cannot contain.
_ATOM_SPECIALS = frozenset('(){ %*"\\]') | {chr(c) for c in range(32)} | {"\x7f"}

_NO_FLAGS: frozenset[str] = frozenset()


def normalize_flags(flags: Iterable[str], *, in_a_test: bool = False) -> frozenset[str]:
    """System flags in their canonical spelling (``\\seen`` → ``\\Seen``),
    keywords as given. Raises ValueError naming a flag that cannot be one;
    ``in_a_test``, also a keyword spelt as a system flag without its
    backslash (``"Seen"``), which an IMAP client may set but a test means
    as ``"\\Seen"``."""
    __tracebackhide__ = True  # a test's bad flag points at its line
    if isinstance(flags, str):
        raise ValueError(
            f"flags must be a collection of flags, e.g. {{'\\\\Seen'}}, not the "
            f"string {flags!r}"
        )
    if not isinstance(flags, Iterable):
        raise TypeError(
            f"flags must be a collection of flags, e.g. {{'\\\\Seen'}}, got {flags!r}"
        )
    result = []
    for flag in flags:
        if not isinstance(flag, str) or not flag:
            raise ValueError(f"a flag must be a non-empty string, got {flag!r}")
        if flag.startswith("\\"):
            canonical = SYSTEM_FLAGS.get(flag.lower())
            if canonical is None:
                raise ValueError(
                    f"unknown system flag {flag!r}; the system flags are "
                    f"{', '.join(SYSTEM_FLAGS.values())} (keywords have no backslash)"
                )
            result.append(canonical)
        elif in_a_test and "\\" + flag.lower() in SYSTEM_FLAGS:
            system = SYSTEM_FLAGS["\\" + flag.lower()]
            raise ValueError(
                f"{flag!r} would be a keyword; the system flag is {system!r} "
                "(with a backslash)"
            )
        elif _ATOM_SPECIALS.intersection(flag) or not flag.isascii():
            raise ValueError(
                f"{flag!r} cannot be an IMAP keyword: use ASCII letters, digits "
                'and punctuation other than ( ) { % * " \\ ]'
            )
        else:
            result.append(flag)
    return frozenset(result) if result else _NO_FLAGS


def wire_bytes(raw: bytes) -> bytes:
    """The message as POP3 and IMAP send it: every line ending CRLF.

    SMTP guarantees CRLF; mail put in by `deliver` or sent with bare LF
    endings is converted on the way out (as Dovecot does), and the stored
    bytes stay as they are.
    """
    if raw.count(b"\n") == raw.count(b"\r\n"):
        return raw
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class StoredMessage:
    """One copy of a message in one folder.

    ``message`` is the `Message` (one object, however many copies); ``uid``
    the copy's IMAP UID; ``flags`` a frozenset such as ``{"\\Seen"}``;
    ``internal_date`` an aware datetime (arrival, or ``deliver(date=)``).
    The server thread replaces ``flags`` (never mutates it), so a reader
    always sees a whole set.
    """

    __slots__ = ("_flags", "_removed", "_size", "internal_date", "message", "uid")

    #: Counts every change of any copy's flags (see `_flag_changes`).
    _changes = itertools.count(1)
    #: The count's last value: an IMAP session in IDLE that saw it already
    #: skips comparing the flags of its whole folder for each new message
    #: (12,000 messages took 7 s instead of 1.4 s with one IDLE client).
    _flag_changes = 0

    def __init__(
        self,
        message: Message,
        uid: int,
        flags: frozenset[str],
        internal_date: datetime.datetime,
    ) -> None:
        self.message: Message = message
        self.uid: int = uid
        self._flags: frozenset[str] = flags
        self.internal_date: datetime.datetime = internal_date
        self._size: int | None = None
        #: Taken out of its folder (expunged, moved, "delete all"): a POP3
        #: session's login snapshot still lists it, but cannot serve it.
        self._removed = False

    @property
    def flags(self) -> frozenset[str]:
        return self._flags

    @flags.setter
    def flags(self, flags: frozenset[str]) -> None:
        self._flags = flags
        # A new number after the flags are set (next() of a count is
        # atomic): a session that read a number, then the flags, sees
        # another number after any later change, whichever thread made it.
        StoredMessage._flag_changes = next(StoredMessage._changes)

    @property
    def size(self) -> int:
        """The size in octets as POP3 and IMAP report it (CRLF line ends);
        ``len(message.raw)`` exactly when the message needs no conversion.
        Counted once: the bytes never change (POP3 STAT and LIST, IMAP
        FETCH ask for it again and again)."""
        size = self._size
        if size is None:
            raw = self.message.raw
            size = self._size = len(raw) + raw.count(b"\n") - raw.count(b"\r\n")
        return size

    def __repr__(self) -> str:
        flags = " ".join(sorted(self.flags)) or "-"
        from ._message import message_label

        label = message_label(self.message)
        return f"<StoredMessage uid={self.uid} flags={flags} {label}>"


class Removal:
    """A copy that left a folder: expunged (deleted) or moved elsewhere."""

    __slots__ = ("how", "now_named", "stored", "target_gone", "to")

    def __init__(self, stored: StoredMessage, how: str, to: str | None) -> None:
        self.stored = stored
        #: ``"deleted"`` (POP3 DELE, IMAP EXPUNGE) or ``"moved"`` (IMAP MOVE).
        self.how = how
        #: The folder a moved message went to.
        self.to = to
        #: That folder's name since an IMAP RENAME (None: not renamed).
        self.now_named: str | None = None
        #: Whether IMAP DELETE took that folder since (a later folder of its
        #: name is another, which a rename of it must not be taken for).
        self.target_gone = False


_FOLDER_SERIALS = itertools.count(1)


class Folder:
    """A named folder of one user: its copies in UID order."""

    __slots__ = (
        "keywords",
        "messages",
        "name",
        "removed",
        "serial",
        "uidnext",
        "uidvalidity",
    )

    def __init__(self, name: str, uidvalidity: int, uidnext: int) -> None:
        self.name = name
        #: This folder whatever its name: IMAP's \Recent state follows it
        #: through a RENAME (keyed by name, a renamed folder's mail was all
        #: \Recent again, and a folder renamed onto a deleted one's name
        #: took that one's state).
        self.serial = next(_FOLDER_SERIALS)
        self.uidvalidity = uidvalidity
        #: IMAP's UIDNEXT: the last UID given a copy here, plus one (or the
        #: sink's next UID when the folder was made). UIDs come from one
        #: counter for the whole sink, so the next copy's is at least this;
        #: unlike that counter it moves only when this folder gets mail, as
        #: RFC 3501 2.3.1.1 requires (a poller would fetch again
        #: "UID <old UIDNEXT>:*", which names the last message it has).
        self.uidnext = uidnext
        self.messages: list[StoredMessage] = []
        self.removed: list[Removal] = []
        #: Every keyword a copy in it has had, in the order first given: IMAP
        #: lists keywords so (FLAGS, a message's flags), as Dovecot does, and
        #: keeps listing one no copy has any more.
        self.keywords: list[str] = []


def define_keywords(folder: Folder, flags: Iterable[str]) -> None:
    """Add the keywords among ``flags`` that ``folder`` has not had, in the
    order given (hold the lock). Keywords are atoms, which IMAP compares
    without regard to case (RFC 3501 section 9): ``$label`` is not new to a
    folder that has had ``$Label``."""
    known = folder.keywords
    folded = {keyword.lower() for keyword in known}
    for flag in flags:
        if not flag.startswith("\\") and flag.lower() not in folded:
            known.append(flag)
            folded.add(flag.lower())


def fold_keywords(folder: Folder, flags: frozenset[str]) -> frozenset[str]:
    """``flags`` with each keyword spelt as ``folder`` first had it
    (``$label`` is ``$Label`` there, as on Dovecot), so that a copy never
    holds one keyword twice and ``-FLAGS ($label)`` takes ``$Label`` away.
    Keywords the folder has not had stay as they are."""
    if all(flag.startswith("\\") for flag in flags):
        return flags  # the usual case: system flags only
    spelling = {keyword.lower(): keyword for keyword in folder.keywords}
    return frozenset(
        flag if flag.startswith("\\") else spelling.get(flag.lower(), flag)
        for flag in flags
    )


class Maildrop(Protocol):
    """The POP3 session that holds an account's maildrop (`Account.holder`)."""

    record: Session | None

    def marked(self) -> list[StoredMessage]:
        """The copies DELE marked, to go at QUIT (hold the lock)."""

    def retrieved(self) -> list[StoredMessage]:
        """The copies RETR sent, to be ``\\Seen`` when the session ends."""


class Account:
    """One user's folders. ``holder`` is the POP3 session that has the
    maildrop locked (RFC 1939: one session at a time), or None."""

    __slots__ = (
        "deleted_folders",
        "folders",
        "holder",
        "marked_without_quit",
        "renamed",
        "subscribed",
        "user",
    )

    def __init__(self, user: str) -> None:
        self.user = user
        self.folders: dict[str, Folder] = {}
        self.holder: Maildrop | None = None
        #: IMAP's subscriptions, by folder name: a name stays until it is
        #: unsubscribed, though its folder be deleted (RFC 3501 6.3.6).
        self.subscribed: set[str] = {INBOX}
        #: Folders taken away by IMAP DELETE, by name, with what left them
        #: (the copies they held then, as deleted): for ``deleted()``.
        self.deleted_folders: list[tuple[str, list[Removal]]] = []
        #: POP3 sessions that marked copies with DELE and ended before a
        #: QUIT applied them (RFC 1939 deletes only at QUIT), with those
        #: copies: a failed ``assert_deleted`` names them.
        self.marked_without_quit: list[tuple[Session, list[StoredMessage]]] = []
        #: Folder names IMAP RENAME gave up, each with the name it gave,
        #: oldest first: a test asking for the old name hears the new one.
        self.renamed: list[tuple[str, str]] = []


class _UidValidity:
    """The last UIDVALIDITY a store of this process took (`next`)."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        """The start second (which fits the 32 bits IMAP allows until 2106),
        or one more than the last store's: UIDs start at 1 in every store,
        and two sinks started in one second (a restart, back to back) gave
        the same (UIDVALIDITY, UID), and POP3 UIDL, to different messages,
        which RFC 3501 2.3.1.1 forbids: a client that keeps the last UID it
        read took new mail for mail it had read."""
        with self._lock:
            value = max(1, int(time.time()) & 0xFFFFFFFF, self._last + 1)
            self._last = value & 0xFFFFFFFF or 1
            return self._last


_UIDVALIDITY = _UidValidity()


class MailStore:
    """Every user's mailboxes on one sink. Lock: the store's ``changed``."""

    def __init__(self, lock: threading.Condition, delimiter: str | None) -> None:
        self.lock = lock
        self.delimiter = delimiter
        self.uidvalidity = _UIDVALIDITY.next()
        self.accounts: dict[str, Account] = {}
        self.generation = 0
        self._next_uid = 1
        # The read-side servers with open connections: called (by the thread
        # that made the change, after it) for every change of the mailboxes
        # and for a new test (`Store.mail_changed`, `Store.add_message`,
        # `Store.discard_before`), and for nothing else, so that they cost
        # the SMTP conversation nothing. Changed holding the lock.
        self.listeners: set[Callable[[], None]] = set()
        #: Whether `remove` keeps what left a folder (``Folder.removed``) for
        #: a test's assertions (``deleted()``); the standalone sink, which
        #: asserts nothing and may run for days, turns it off.
        self.remember_removed = True

    # -- lookups (hold the lock) -----------------------------------------------

    def key(self, address: str) -> str:
        return normalize_user(address, self.delimiter)

    def account(self, address: str) -> Account:
        """The user's account, made (with an empty INBOX) on first use."""
        key = self.key(address)
        account = self.accounts.get(key)
        if account is None:
            account = self.accounts[key] = Account(key)
            self.folder(account, INBOX, create=True)
        return account

    def folder(self, account: Account, name: str, create: bool = False) -> Folder:
        """``name`` in ``account`` (``INBOX`` in any case); KeyError if it
        does not exist and ``create`` is false."""
        name = folder_name(name)
        folder = account.folders.get(name)
        if folder is None:
            if not create:
                raise KeyError(name)
            folder = account.folders[name] = Folder(
                name, self.uidvalidity, self._next_uid
            )
        return folder

    def next_uid(self) -> int:
        """A UID never handed out before on this sink (hold the lock)."""
        uid = self._next_uid
        self._next_uid += 1
        return uid

    def put_in(self) -> list[Message]:
        """The messages put in without SMTP (`Mailbox.deliver`, IMAP
        APPEND) that the mailboxes hold or held since the test started
        (deleted or moved ones too), each once, in the order they were
        first stored. For a failed test's report."""
        first: dict[int, tuple[int, Message]] = {}
        for account in self.accounts.values():
            copies = [
                *(
                    stored
                    for folder in account.folders.values()
                    for stored in (
                        *folder.messages,
                        *(removal.stored for removal in folder.removed),
                    )
                ),
                *(
                    removal.stored
                    for _, removed in account.deleted_folders
                    for removal in removed
                ),
            ]
            for stored in copies:
                message = stored.message
                if message.session.protocol == "SMTP":
                    continue
                known = first.get(id(message))
                if known is None or stored.uid < known[0]:
                    first[id(message)] = (stored.uid, message)
        return [message for _, message in sorted(first.values(), key=lambda f: f[0])]

    # -- changes (hold the lock, then wake the store) ----------------------------

    def add(
        self,
        folder: Folder,
        message: Message,
        flags: frozenset[str] = _NO_FLAGS,
        internal_date: datetime.datetime | None = None,
    ) -> StoredMessage:
        if flags:
            # A set has no order: sorted, unless the caller defined them first
            # in the order it had (APPEND's list, a copy's folder).
            define_keywords(folder, sorted(flags))
            flags = fold_keywords(folder, flags)
        stored = StoredMessage(
            message,
            self.next_uid(),
            flags,
            message.received_at if internal_date is None else internal_date,
        )
        folder.messages.append(stored)
        folder.uidnext = stored.uid + 1
        return stored

    def deliver(self, message: Message, recipients: Iterable[str]) -> None:
        """Put ``message`` in the INBOX of each recipient, once per user."""
        seen: set[str] = set()
        for recipient in recipients:
            key = self.key(recipient)
            if key in seen:
                continue
            seen.add(key)
            self.add(self.account(key).folders[INBOX], message)

    def remove(
        self, folder: Folder, gone: Iterable[StoredMessage], moved_to: str | None = None
    ) -> int:
        """Take ``gone`` out of ``folder``, remembering them as deleted (or
        moved to ``moved_to``) for the test's assertions. Returns how many
        were there to take out (others may have removed some already)."""
        drop = {id(stored) for stored in gone}
        if not drop:
            return 0
        kept = []
        for stored in folder.messages:
            if id(stored) in drop:
                stored._removed = True
                if self.remember_removed:
                    how = "moved" if moved_to is not None else "deleted"
                    folder.removed.append(Removal(stored, how, moved_to))
            else:
                kept.append(stored)
        removed = len(folder.messages) - len(kept)
        folder.messages[:] = kept
        return removed

    def rename_folders(self, account: Account, renamed: Mapping[str, str]) -> None:
        """Give the folders of ``account`` named in ``renamed`` (old name to
        new: a folder and its children) their new names (IMAP RENAME). What
        was moved to them follows, so a listing names the folder it is in."""
        account.folders = {
            renamed.get(name, name): folder for name, folder in account.folders.items()
        }
        for folder in account.folders.values():
            folder.name = renamed.get(folder.name, folder.name)
        account.subscribed = {renamed.get(name, name) for name in account.subscribed}
        if not self.remember_removed:
            return
        account.renamed.extend(renamed.items())
        for removal in _removals(account):
            current = removal.now_named or removal.to
            if current is not None and current in renamed and not removal.target_gone:
                removal.now_named = renamed[current]

    def delete_folder(self, account: Account, folder: Folder) -> None:
        """Take ``folder`` out of ``account`` (IMAP DELETE). The copies in it
        go with it: the test's assertions count them as deleted, as they do
        those expunged from it before."""
        del account.folders[folder.name]
        for stored in folder.messages:
            stored._removed = True
        if self.remember_removed:
            for removal in _removals(account):
                if (removal.now_named or removal.to) == folder.name:
                    removal.target_gone = True
            gone = [Removal(stored, "deleted", None) for stored in folder.messages]
            if folder.removed or gone:
                account.deleted_folders.append((folder.name, [*folder.removed, *gone]))

    def empty(self) -> None:
        """Take every copy out of every folder, remembering none of them
        (the standalone sink's "delete all"). Unlike `reset`, the folders
        and the open sessions stay: IMAP sessions announce the copies as
        expunged, a POP3 session keeps the snapshot it took at login (and
        answers RETR of one of them as expunged)."""
        for account in self.accounts.values():
            account.deleted_folders.clear()
            account.marked_without_quit.clear()
            account.renamed.clear()
            for folder in account.folders.values():
                for stored in folder.messages:
                    stored._removed = True
                folder.messages.clear()
                folder.removed.clear()

    def reset(self) -> None:
        """Empty every mailbox (a new test starts). UIDs go on counting."""
        self.accounts = {}
        self.generation += 1


def is_utf8(name: bytes) -> bool:
    """Whether a user name as sent is UTF-8 text: one that is not can be
    no recipient's address (SMTPUTF8 is UTF-8), so it opens no mailbox,
    rather than one named with replacement characters no mail reaches."""
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def has_control_character(text: str) -> bool:
    """Whether ``text`` holds a control character (CR, LF, ESC, TAB, ...),
    which no address SMTP takes has, quoted or not."""
    return _CONTROL.search(text) is not None


def names_a_mailbox(user: str) -> bool:
    """Whether a login's ``user`` can name a mailbox: not empty (nor ``<>``),
    and without a control character (an IMAP literal and APOP can carry
    them); Dovecot refuses such names too."""
    return bool(normalize_user(user)) and not has_control_character(user)


def check_login(auth: object, user: str, password: str) -> bool:
    """Whether ``password`` opens ``user``'s mailbox under the sink's
    ``auth`` setting: any password without a credentials mapping (the
    default), else exactly the mapped one (compared in constant time).
    A user name that names no mailbox (empty, blanks, ``<>``) opens none,
    as on Dovecot: a client that lost its user name hears of it instead of
    reading an empty mailbox no mail can reach."""
    if not names_a_mailbox(user):
        return False
    if not isinstance(auth, Mapping):
        return True
    expected = auth.get(user)
    if not isinstance(expected, str):
        return False
    return hmac.compare_digest(expected.encode(), password.encode("utf-8", "replace"))


def _removals(account: Account) -> list[Removal]:
    """Every copy remembered as gone from a folder of ``account``, in the
    folders there are and in those IMAP DELETE took."""
    return [
        *(removal for folder in account.folders.values() for removal in folder.removed),
        *(removal for _, removed in account.deleted_folders for removal in removed),
    ]

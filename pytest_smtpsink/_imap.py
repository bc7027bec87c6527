"""IMAP4rev1: a server over the recipient mailboxes (RFC 3501, with
LITERAL+, SASL-IR, IDLE, UIDPLUS, MOVE, UNSELECT, NAMESPACE, ID, ENABLE and
CHILDREN).

Loop side: `IMAPServer` and its connections run on the sink's server thread.
It is started on first use of ``Mailbox.imap`` (through ``SMTPSink.attach``,
on the test's thread) and closed with the sink; it holds the `Store`, never
the sink. `IMAPEndpoint`, what a test gets, is test side.

The grammar, FETCH and SEARCH are pure modules (`_imap_syntax`,
`_imap_fetch`, `_imap_search`); this one runs connections, keeps each
session's view of its selected folder, and changes the shared `MailStore`
under the store's lock. Each session maps sequence numbers to the copies it
has announced (``_view``): messages expunged by another session stay in it
until this session may say so (never during FETCH, STORE or SEARCH, RFC 3501
section 7.4.1; their UID forms say so at their end), and new mail is announced with ``EXISTS`` after commands, on
NOOP and at once during IDLE. A listener of the mailboxes (present only
while connections are open) wakes IDLE sessions and ends the sessions of an
earlier test with ``* BYE``: nothing polls.

Every connection is a `Session` (protocol ``"IMAP"``): one `Exchange` per
command with its tag, the LOGIN password and AUTHENTICATE data masked before
anything is kept, literals counted (never copied) and long FETCH answers
shortened. Fault rules are asked at the ``IMAP:*`` stages and carried out
here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime
import re
import ssl
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Literal, NoReturn

from ._credentials import masked
from ._endpoint import ReadSideEndpoint
from ._imap_fetch import (
    LastStructure,
    MailboxEntry,
    ResponseTooLarge,
    fetch_values,
    parse_fetch_items,
    response_order,
    sets_seen,
)
from ._imap_search import BadCharset, parse_search, search_folder
from ._imap_syntax import (
    LITERAL_AT_END,
    MAX_COMMAND,
    MAX_LINE,
    NO_TAG,
    Arg,
    Atom,
    Command,
    CommandReader,
    ImapSyntaxError,
    NeedLiteral,
    ParenList,
    SequenceSet,
    String,
    ascii_upper,
    astring,
    astring_out,
    decode_folder_name,
    encode_folder_name,
    format_fetch,
    format_flags,
    parse_date_time,
    parse_flags,
    parse_sequence_set,
    text_bytes,
)
from ._mailstore import (
    DELIMITER,
    INBOX,
    StoredMessage,
    check_folder_name,
    check_login,
    define_keywords,
    fold_keywords,
    folder_name,
    given_folder_name,
    is_utf8,
    normalize_flags,
)
from ._message import Envelope, Message
from ._readside import BUGS_IN_A_ROW, Closed, ReadSideConnection, ReadSideServer
from ._session import AuthInfo, Exchange, ExchangeKind, IMAPExchange
from ._text import plural, printable, printable_sent, shorten, visible_start

if TYPE_CHECKING:
    from ._faults import Faults
    from ._mailstore import Account, Folder
    from ._settings import SinkSettings
    from ._store import Store

# Unread input above this pauses reading: bounded memory.
_BUFFER_LIMIT = 256 * 1024
# An AUTHENTICATE continuation line (base64 of user and password).
_AUTH_LIMIT = 12288
_AUTHENTICATE = re.compile(rb"\s*AUTHENTICATE\b", re.IGNORECASE)
_ONE_WORD = re.compile(rb"\s*\S+\s*\Z")
_SECOND_WORD = re.compile(rb"\s*\S+\s+([A-Za-z]+)")
# A line that announces a non-synchronizing literal (LITERAL+): its bytes
# follow at once.
_ENDS_IN_LITERAL_PLUS = re.compile(rb"\{\d+\+\}\r?\n\Z")
#: A word that begins with LOGIN or AUTHENTICATE (any case).
_SECRET_VERB_FIRST = re.compile(rb"(?i)LOGIN|AUTHENTICATE")
#: The largest refused {n+} literal read and dropped so that the session
#: goes on; past it, the connection is cut (reading it would take long).
_MOST_DROPPED = 1 << 30


#: A synchronizing literal where the command's name goes ("a {5}", "a UID
#: {5}").
_LITERAL_AS_NAME = re.compile(rb"\s*(?:UID\s+)?~?\{\d+\}\r?\n?\Z", re.IGNORECASE)


def _misplaced_literal(rest: bytes) -> str | None:
    """Why the synchronizing literal that ends this first line (after its
    tag) cannot be taken, or None: no command's name is a literal. (A
    {n+} one is on its way: read, then refused, so that its bytes never
    run as commands. A literal8 the command reader refuses, on any line.)"""
    if _LITERAL_AS_NAME.match(rest):
        return "A command's name cannot be a literal"
    return None


class _TooBig(Exception):
    """An APPEND's message literal over ``max_size``."""

    def __init__(self, size: int, synchronizing: bool) -> None:
        super().__init__(size)
        self.size = size
        self.synchronizing = synchronizing


#: A line (its CRLF taken off) that announces a literal, synchronizing or not.
_LITERAL_ANNOUNCED = re.compile(rb"\{\d+\+?\}\Z")
# Untagged responses of one command kept in the transcript (a FETCH of a
# whole mailbox is counted, not copied).
_SHOWN_RESPONSES = 20
# FETCH responses are joined into writes of about this many octets.
_WRITE_BATCH = 64 * 1024
# The most one message's FETCH response may hold: its content four times
# over (BODY[], HEADER and TEXT together are about twice), and a megabyte.
# A section asked for again is answered again (as on Dovecot), and one
# response is built whole: 400 copies of a 1 MB message were 1.3 GB.
_FETCH_COPIES = 4
_FETCH_SLACK = 1024 * 1024
_SEEN = "\\Seen"
_DELETED = "\\Deleted"
_SYSTEM_FLAGS = "(\\Answered \\Flagged \\Deleted \\Seen \\Draft)"

_END_OF_TEST = (
    "* BYE Session ended: a new test started "
    "(the sink ends the read-side sessions of earlier tests)"
)
_INACTIVE = "* BYE Disconnected for inactivity"
#: How long IDLE waits, at least, before the session counts as inactive.
#: A client in IDLE is silent by design, waiting for mail; RFC 3501 (5.4)
#: asks for an autologout timer of at least 30 minutes, and RFC 2177 tells
#: clients to re-issue IDLE every 29.
_IDLE_AUTOLOGOUT = 30 * 60.0

State = Literal["not-authenticated", "authenticated", "selected"]

_LOGIN = re.compile(rb"\s*LOGIN\s", re.IGNORECASE)

_ANY = frozenset({"CAPABILITY", "NOOP", "LOGOUT", "ID"})
_NOT_AUTHENTICATED = frozenset({"LOGIN", "AUTHENTICATE", "STARTTLS"})
_AUTHENTICATED = frozenset(
    {
        "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE",
        "UNSUBSCRIBE", "LIST", "LSUB", "STATUS", "APPEND", "NAMESPACE",
        "ENABLE", "IDLE",
    }
)  # fmt: skip
_SELECTED = frozenset(
    {
        "CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE",
        "COPY", "MOVE", "UID FETCH", "UID SEARCH", "UID STORE", "UID COPY",
        "UID MOVE", "UID EXPUNGE",
    }
)  # fmt: skip
COMMANDS = _ANY | _NOT_AUTHENTICATED | _AUTHENTICATED | _SELECTED
# Commands whose grammar has no arguments (RFC 3501, IDLE, NAMESPACE,
# UNSELECT): any given is a syntax error (BAD), not ignored as Dovecot
# ignores them, so that a client's malformed command shows in its test.
_WITHOUT_ARGUMENTS = frozenset(
    {
        "CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "NAMESPACE", "IDLE",
        "CHECK", "CLOSE", "UNSELECT", "EXPUNGE",
    }
)  # fmt: skip
# While answering these, no EXPUNGE may go out (RFC 3501 section 7.4.1).
# Their UID forms may send one, and do, after their responses, as Dovecot.
_NO_EXPUNGE = frozenset({"FETCH", "STORE", "SEARCH"})
_STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _name_out(name: str) -> bytes:
    """A folder name in a response: modified UTF-7, an atom if it can be
    one, else a string (a literal for a quote or backslash)."""
    return astring_out(encode_folder_name(name))


# -- secrets and display --------------------------------------------------------------

_TAG = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\+]+")
_SECRET_VERBS = ("LOGIN", "AUTHENTICATE")
_SECRET_LATER = re.compile(
    r"([^\s\x00]+[\s\x00]+)(?:UID[\s\x00]+)?(?:LOGIN|AUTHENTICATE)", re.IGNORECASE
)


#: LOGIN or AUTHENTICATE at the start of a word, whatever comes before it
#: ("a]LOGIN", "a\x7fLOGIN": a tag ended by a character no tag ends with).
_SECRET_WORD = re.compile(r"(?<![A-Za-z])(?:LOGIN|AUTHENTICATE)", re.IGNORECASE)


def _secret_tag(tag: str | None) -> bool:
    """Whether a line's tag holds LOGIN or AUTHENTICATE at a word's start: a
    command sent without its tag ("LOGIN ann pw"), or without the space
    after its verb as well ("LOGINann pw"), or after a tag ended by another
    character ("a]LOGIN ann pw"), whose secrets follow or are in the tag."""
    return tag is not None and _SECRET_WORD.search(tag) is not None


def _runs_on(tag: str | None) -> bool:
    """Whether ``tag`` holds LOGIN or AUTHENTICATE and more: it may hold the
    user name or the password ("LOGINpw", "a]LOGIN")."""
    return _secret_tag(tag) and str(tag).upper() not in _SECRET_VERBS


def _tag_out(tag: str | None, command: Command | None) -> str | None:
    """The tag that answers a line: None (``*``) for a tag that runs on past
    LOGIN or AUTHENTICATE before no known command, as it may hold the user
    name or the password ("LOGINann pw", "LOGINpw x"). Before a known
    command the client gets its tag back (it waits for it)."""
    if _runs_on(tag) and (command is None or command.name not in COMMANDS):
        return None
    return tag


def _tag_recorded(tag: str | None) -> str | None:
    """The tag as the transcript shows it: one that runs on past LOGIN or
    AUTHENTICATE is cut after its verb (``LOGIN****``), whatever command
    follows it."""
    if not _runs_on(tag):
        return tag
    return "AUTHENTICATE****" if "AUTHENTICATE" in str(tag).upper() else "LOGIN****"


#: The first word of every command the server knows ("UID" for UID FETCH).
_COMMAND_WORDS = frozenset(name.split()[0] for name in COMMANDS)


def _sasl_response(line: bytes) -> bool:
    """Whether a line after AUTHENTICATE is a SASL response rather than a
    command: one word (no command is one), or a second word that names no
    command (``<base64> x``: its first word would be shown as a tag)."""
    if _ONE_WORD.match(line):
        return True
    second = _SECOND_WORD.match(line)
    return second is None or second.group(1).decode().upper() not in _COMMAND_WORDS


def split_tag(line: bytes) -> tuple[str | None, bytes]:
    """The tag of a command line (None when it has none) and the rest."""
    match = _TAG.match(line)
    if match is None or line[match.end() : match.end() + 1] != b" ":
        return None, line
    return match.group().decode("ascii"), line[match.end() + 1 :]


def mask_command(rest: str, command: Command | None = None) -> str:
    """A command (after its tag) as the transcript shows it: ``LOGIN ann
    ****``, ``AUTHENTICATE PLAIN ****``; other commands unchanged. Whatever
    merely starts like LOGIN or AUTHENTICATE is cut after the verb."""
    stripped = rest.lstrip(" \t\x00")
    verb = stripped[:12].upper()
    if not verb.startswith(_SECRET_VERBS):
        # The verb as the second word: after UID, or after a tag that a
        # tab, not a space, separates (so no tag was read): still a login.
        later = _SECRET_LATER.match(stripped)
        if later is None or later.group(1).strip(" \t\x00").upper() in COMMANDS:
            return rest
        head = later.group()
        tail = stripped[len(head) :]
        if not tail:
            return head
        # Run on ("UID LOGINpw"): masked whole, glued on, as below.
        return f"{head} ****" if tail[0].isspace() else f"{head}****"
    # A lone argument may be the password of a client that left out the
    # user name: only the first of two is shown.
    if command is not None and command.name == "LOGIN" and len(command.args) > 1:
        with contextlib.suppress(ImapSyntaxError):
            return f"LOGIN {astring(command.args[0])} ****"
    if command is not None and command.name == "AUTHENTICATE" and command.args:
        with contextlib.suppress(ImapSyntaxError):
            mechanism = astring(command.args[0])
            return f"AUTHENTICATE {mechanism}" + (
                " ****" if len(command.args) > 1 else ""
            )
    name = "AUTHENTICATE" if verb.startswith("AUTHENTICATE") else "LOGIN"
    if len(stripped) > len(name) and not stripped[len(name)].isspace():
        # A verb that runs on ("LOGINN ann pw", "LOGINpw"): not LOGIN, and
        # the letters after it may be a password typed without the space,
        # so they are masked too, glued on to show the verb was longer.
        return f"{name}****"
    return f"{name} ****" if len(stripped) > len(name) else name


_LITERAL_IN_RESPONSE = re.compile(rb"\{(\d+)\}\r\n")


def shown_response(data: bytes) -> list[str]:
    """The lines of a response as the transcript keeps them: each literal
    replaced by ``{n}`` (counted, not copied)."""
    out = bytearray()
    pos = 0
    while True:
        match = _LITERAL_IN_RESPONSE.search(data, pos)
        if match is None:
            out += data[pos:]
            break
        size = int(match.group(1))
        out += data[pos : match.start()] + b"{%d}" % size
        pos = match.end() + size
    text = out.decode("utf-8", "replace")
    return [printable(line) for line in text.split("\r\n") if line]


def format_uid_set(uids: Iterable[int]) -> str:
    """``1:3,5`` for UIDs 1, 2, 3 and 5 (the COPYUID form)."""
    ordered = sorted(set(uids))
    ranges: list[str] = []
    start = previous = None
    for uid in ordered:
        if previous is not None and uid == previous + 1:
            previous = uid
            continue
        if start is not None:
            ranges.append(str(start) if start == previous else f"{start}:{previous}")
        start = previous = uid
    if start is not None:
        ranges.append(str(start) if start == previous else f"{start}:{previous}")
    return ",".join(ranges)


def error_completion(code: int, text: str | None) -> tuple[str, str]:
    """A fault's ``code`` and ``text`` as an IMAP completion: 500 and 501
    (syntax errors in SMTP) are ``BAD``; any other 4xx is ``NO
    [UNAVAILABLE]``, 5xx ``NO``."""
    if text is None:
        text = "Injected temporary failure" if code < 500 else "Injected failure"
    text = " ".join(text.split())
    if code in (500, 501):
        return "BAD", text
    if code < 500:
        return "NO", f"[UNAVAILABLE] {text}"
    return "NO", text


class _ListPattern:
    """A LIST pattern: ``*`` matches anything, ``%`` anything but the
    delimiter. ``INBOX`` is INBOX in any case (RFC 3501 5.1), also where
    the pattern's wildcards cover it (``i*`` names INBOX and its children,
    as Dovecot lists them), and also as a parent; a folder that merely
    starts with the letters (``INBOXfoo``) is matched as spelt."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def fullmatch(self, name: str) -> bool:
        # Bit j of ``matched``: whether the pattern so far matches name[:j].
        # One integer operation per pattern character covers every j at
        # once: a pattern and a name of thousands of characters (a fuzz
        # run's) are matched in milliseconds, not seconds of the loop.
        n = len(name)
        # The name's first five characters compared without regard to case
        # when its first level is INBOX.
        fold = len(INBOX) if name.split(DELIMITER, 1)[0] == INBOX else 0
        every = (1 << (n + 1)) - 1
        # Bit j set where name[j - 1] is the delimiter: % stops there.
        barriers = sum(1 << (j + 1) for j, char in enumerate(name) if char == DELIMITER)
        spans: list[int] = []  # for %: where a run of length 2**k may pass
        positions: dict[str, int] = {}  # for a literal: where it may end
        matched = 1
        for char in _collapsed(self.pattern):
            if not matched:
                return False
            if char == "*":
                matched = every & ~((matched & -matched) - 1)
            elif char == "%":
                if not spans:
                    open_ = every & ~barriers
                    shift = 1
                    while shift <= n:
                        spans.append(open_)
                        open_ &= open_ << shift
                        shift *= 2
                for k, open_ in enumerate(spans):
                    matched |= (matched << (1 << k)) & open_
            else:
                where = positions.get(char)
                if where is None:
                    upper = char.upper() if char.isascii() else char
                    where = positions[char] = sum(
                        1 << (j + 1)
                        for j, letter in enumerate(name)
                        if letter == char or (j < fold and letter == upper)
                    )
                matched = (matched << 1) & where
        return bool(matched >> n & 1)


def _collapsed(pattern: str) -> str:
    """``pattern`` with each run of wildcards as one: ``*`` if the run has
    one (``%*`` and ``*%`` match what ``*`` does), else ``%``."""
    return re.sub(r"[*%]{2,}", lambda run: "*" if "*" in run.group() else "%", pattern)


def _sentence(text: str) -> str:
    """A syntax error's text as a reply says it: capitalized."""
    return text[:1].upper() + text[1:]


class _Answered(Exception):
    """A command ends early with this completion (``NO`` or ``BAD``)."""

    def __init__(self, status: str, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class _Told:
    """A message with the flags its session last told the client of (a
    change another session made is told after the command): what SEARCH
    matches, as Dovecot's searches the session's view."""

    __slots__ = ("_stored", "flags")

    def __init__(self, stored: StoredMessage, flags: frozenset[str]) -> None:
        self._stored = stored
        self.flags = flags

    @property
    def uid(self) -> int:
        return self._stored.uid

    @property
    def internal_date(self) -> datetime.datetime:
        return self._stored.internal_date

    @property
    def message(self) -> Message:
        return self._stored.message


def _keyword_order(arg: Arg | Sequence[Arg]) -> list[str]:
    """The keywords of a flag list or of STORE's flag arguments, in the
    order the client gave them (`parse_flags` checks them)."""
    if isinstance(arg, ParenList):
        items: Sequence[Arg] = arg.items
    elif isinstance(arg, Sequence):
        items = arg
        if len(items) == 1 and isinstance(items[0], ParenList):
            items = items[0].items
    else:
        items = [arg]
    return [
        item.value
        for item in items
        if isinstance(item, Atom) and not item.value.startswith("\\")
    ]


def _no_such_folder(name: str, code: str = "NONEXISTENT") -> _Answered:
    """``NO [code] No such folder``, the name as the client spells it; for
    an empty name ``NO [CANNOT]`` saying so, as Dovecot answers (no folder
    could have it, and "No such folder: " named nothing)."""
    if not name:
        return _Answered("NO", "[CANNOT] The folder name is empty")
    return _Answered("NO", f"[{code}] No such folder: {encode_folder_name(name)}")


def _existing_name(name: str, verb: str) -> str:
    """A folder name given to any command but CREATE, as kept (INBOX in
    any case); ``NO [CANNOT]`` if it ends with the delimiter, as on
    Dovecot: only CREATE takes ``Box/`` for ``Box`` (RFC 3501 6.3.3), and
    a client that sends it elsewhere should hear of it."""
    if len(name) > 1 and name.endswith(DELIMITER):
        raise _Answered(
            "NO",
            f"[CANNOT] {encode_folder_name(name)} ends with the hierarchy "
            f"delimiter {DELIMITER!r}, which only CREATE takes: "
            f"{verb} {encode_folder_name(name[:-1])} names the folder",
        )
    return folder_name(name)


def _check_new_name(name: str) -> None:
    """A name CREATE or RENAME may give a folder; ``NO [CANNOT]`` if not."""
    try:
        check_folder_name(name)
    except ValueError as error:
        raise _Answered("NO", f"[CANNOT] {error}") from None


# -- the server --------------------------------------------------------------------


class IMAPServer(ReadSideServer["_Connection"]):
    """The IMAP server of one sink (a service attached to its loop)."""

    def __init__(
        self,
        host: str,
        store: Store,
        settings: SinkSettings,
        faults: Faults,
        tls_context: ssl.SSLContext | None,
        *,
        port: int = 0,
    ) -> None:
        super().__init__(host, store, settings, faults, tls_context, port=port)
        # \Recent (RFC 3501 2.3.2.): the highest UID some session has seen
        # in each folder of this generation.
        self.recent_claims: dict[tuple[int, int], int] = {}

    def new_connection(self) -> _Connection:
        return _Connection(self)

    def _wants_change(self) -> bool:
        # Besides a new test, any change wakes IDLE sessions.
        return super()._wants_change() or any(
            connection.idling for connection in list(self.connections)
        )

    def _new_generation(self) -> None:
        # Only the earlier tests' claims go: a claim keyed by this test's
        # generation (or a later one) was made by a session of that test,
        # however late the server heard of it.
        current = self._checked_generation
        self.recent_claims = {
            key: uid for key, uid in self.recent_claims.items() if key[0] >= current
        }


# -- one connection ------------------------------------------------------------------


class _Connection(ReadSideConnection):
    """One IMAP client: reads commands, runs them, records the session."""

    PROTOCOL = "IMAP"
    VERBS = COMMANDS | {"UID"}
    EXCHANGE = IMAPExchange
    BUFFER_LIMIT = _BUFFER_LIMIT
    END_OF_TEST = _END_OF_TEST
    STOPPING = "* BYE Server shutting down"
    INACTIVE = _INACTIVE
    server: IMAPServer

    def __init__(self, server: IMAPServer) -> None:
        super().__init__(server)
        self.idling = False
        #: A change came during IDLE that its updates have not been sent for.
        self._change_unsent = False
        self._shown = 0  # untagged responses recorded for the current command
        self.state: State = "not-authenticated"
        self._user: str | None = None
        self._account: Account | None = None
        self._folder: Folder | None = None
        self._read_only = False
        # The selected folder as this session knows it: sequence number n is
        # _view[n - 1]; the flags it last told the client, by UID; the UIDs
        # that are \Recent for this session.
        self._view: list[StoredMessage] = []
        self._known_flags: dict[int, frozenset[str]] = {}
        #: The UIDNEXT the session was told of (at SELECT, then by EXISTS).
        self._uidnext = 0
        #: The command's untagged updates wait for the next command (a STATUS
        #: of the selected folder, as on Dovecot): see _run.
        self._updates_held = False
        #: `StoredMessage._flag_changes` when `_send_updates` last compared.
        self._flag_changes_seen = -1
        #: The MIME tree of the message this session fetched last.
        self._structures = LastStructure()
        #: The keywords the last FLAGS response named.
        self._keywords: frozenset[str] = frozenset()
        self._recent: set[int] = set()
        # Since an AUTHENTICATE command: see _next_command.
        self._after_auth = False
        # Since a LOGIN that lacked its password: a line of one or two words
        # that is no command is taken as that password (see _next_command).
        self._after_login = False
        # Right after a login by AUTHENTICATE (see _run).
        self._after_sasl = False
        # Right after a LOGIN, its password: sent again on a line of its
        # own, it is masked (see _cmd_login).
        self._login_password: tuple[bytes, bytes] | None = None
        # The command being read or run, for a reply to an internal error:
        # its line (tag included), whether it is recorded, its name.
        self._line: bytes | None = None
        self._line_recorded = False
        self._command_name: str | None = None

    def store_changed(self) -> None:
        if self.idling:
            # Also while IDLE is still writing the last change's updates
            # (waiting for the client to read them): then no one waits.
            self._change_unsent = True
            self.wake()

    def _may_say_goodbye(self) -> bool:
        # An IDLE client waits for untagged responses: BYE is one.
        return self._waiting_for_command or self.idling

    # -- reading --------------------------------------------------------------------

    def _check_append_size(self, line: bytes) -> None:
        """Raise `_TooBig` for a line of an APPEND that ends in a literal
        over ``max_size`` (0: no limit)."""
        limit = self.settings.max_size
        found = LITERAL_AT_END.search(line)
        if (
            limit
            and found is not None
            and int(found[1]) > limit
            and self.state != "not-authenticated"  # refused for that first
        ):
            raise _TooBig(int(found[1]), not found[2])

    async def _wait_for_more(self, deadline: float) -> None:
        """Wait for more of a literal (`_read_exactly`, `_drop`), reading
        again if the buffer's limit paused it: a literal may be larger."""
        if self._reading_paused:
            self._reading_paused = False
            if self.transport is not None:
                with contextlib.suppress(RuntimeError, AttributeError):
                    self.transport.resume_reading()
        await self._wait_for_input(deadline)

    async def _drop(self, size: int) -> int:
        """Read ``size`` octets and keep none (a literal refused, already on
        its way); how many came (fewer if the client closed first). Each
        wait for more is at most ``idle_timeout`` (asyncio.TimeoutError)."""
        wanted = size
        deadline = time.monotonic() + self.settings.idle_timeout
        while size:
            taken = min(size, len(self._buffer))
            del self._buffer[:taken]
            size -= taken
            if not size:
                break
            if self._eof:
                return wanted - size
            if taken:  # each wait for more is at most idle_timeout
                deadline = time.monotonic() + self.settings.idle_timeout
            await self._wait_for_more(deadline)
        self._resume_reading()
        return wanted

    async def _drop_rest(self, size: int, shown_parts: list[str]) -> bool:
        """Drop a refused {n+} literal of ``size`` octets and what follows it
        to the command's end (the rest of its line, and the bytes of any
        further {n+} literal); False if the client closed first (what came
        is then said in ``shown_parts``)."""
        while True:
            came = await self._drop(size)
            if came < size:
                shown_parts[-1] = (
                    f" [{came} of {size} octets; not run: cut off by the "
                    "client's close]"
                )
                return False
            read = await self._read_line(MAX_LINE)
            if read is None:
                shown_parts.append(
                    " [not run: no line end, cut off by the client's close]"
                )
                return False
            line = read[0]
            shown_parts.append(line.rstrip(b"\r\n").decode("utf-8", "surrogateescape"))
            found = LITERAL_AT_END.search(line)
            if found is None or not found[2]:  # the end, or a {m} not asked for
                return True
            size = int(found[1])
            shown_parts.append(f" [{size} octets]")

    async def _read_exactly(self, size: int) -> bytes | None:
        """``size`` octets (a literal), or None if the client closed first.
        Each wait for more is at most ``idle_timeout``: a client sending a
        large message steadily is not idle, however long it takes (one
        deadline for the whole literal cut off an APPEND at 160 KB/s)."""
        deadline = time.monotonic() + self.settings.idle_timeout
        while len(self._buffer) < size:
            if self._eof:
                return None
            had = len(self._buffer)
            await self._wait_for_more(deadline)
            if len(self._buffer) > had:
                deadline = time.monotonic() + self.settings.idle_timeout
        # One copy: slicing the bytearray first made a second, as big.
        with memoryview(self._buffer) as view:
            data = bytes(view[:size])
        del self._buffer[:size]
        self._resume_reading()
        return data

    # -- recording and writing ----------------------------------------------------------

    def _append(
        self, kind: ExchangeKind, line: str, tag: str | None = None
    ) -> Exchange:
        exchange = super()._append(kind, line, tag)
        self._line_recorded = True
        self._shown = 0  # a new command: count its untagged responses anew
        return exchange

    #: The tag of the command being run, if it runs on past LOGIN (see
    #: `_next_command`): its replies are recorded with it masked.
    _hidden_tag: str | None = None

    def _record_replies(self, lines: Sequence[str], injected: bool = False) -> None:
        hidden = self._hidden_tag
        if hidden is not None:
            masked = f"{_tag_recorded(hidden)} "
            lines = [
                masked + line[len(hidden) + 1 :]
                if line.startswith(f"{hidden} ")
                else line
                for line in lines
            ]
        super()._record_replies(lines, injected)

    def _record_untagged(self, data: bytes) -> None:
        """Record an untagged response, or only count it past the first
        `_SHOWN_RESPONSES` of a command."""
        self._shown += 1
        if self._shown <= _SHOWN_RESPONSES:
            for line in shown_response(data):
                self._record_reply(line)

    async def _send_all(self, chunks: list[bytes]) -> None:
        """Send several responses (already recorded) in one write."""
        await self._send(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    async def _untagged(self, data: bytes) -> None:
        """Send an untagged response (with its CRLF) that may hold literals."""
        self._record_untagged(data)
        await self._send(data)

    def _finish_shown(self) -> None:
        if self._shown > _SHOWN_RESPONSES:
            self._record_reply(
                f"[... {self._shown - _SHOWN_RESPONSES} more untagged responses]"
            )
        self._shown = 0

    # -- faults (the rules decide, this carries out) ------------------------------------

    async def _faults(
        self,
        stage: str,
        subjects: Sequence[str],
        on_fire: Callable[[], object] | None = None,
        matching_only: bool = False,
    ) -> tuple[str, str] | None:
        """Carry out what the rules decide at ``stage``; the completion to
        send instead of running the command, if a rule replies. *on_fire*
        runs first when any rule fires (to record the command it acts on)."""
        planned = self._planned(stage, subjects, matching_only)
        if planned and on_fire is not None:
            on_fire()
        reply = await self._carry_out(planned)
        if reply is None:
            return None
        completion = error_completion(reply.code, reply.text)
        if reply.code == 421 and stage != "IMAP:CONNECT":
            # 421 is SMTP's "closing": it closes here too, as the fault API
            # says, with IMAP's word for it (RFC 3501 7.1.5) instead of the
            # tagged completion.
            await self._reply_and_end(
                "server-closed", f"* BYE {completion[1]}", injected=True
            )
            raise Closed
        return completion

    def _subjects(self) -> list[str]:
        """What ``match`` compares with after login: the name the client
        gave and its mailbox's (see the POP3 server's)."""
        if not self._user:
            return []
        return [s for s in dict.fromkeys((self._login_name, self._user)) if s]

    _login_name = ""

    # -- the conversation -----------------------------------------------------------

    async def _serve(self) -> None:
        try:
            if self.settings.tls == "implicit" and not await self._start_tls(True):
                return
            peer = self.record.peer[0] if self.record else ""
            injected = await self._faults("IMAP:CONNECT", [peer])
            if injected is not None:
                await self._reply_and_end(
                    "server-closed", f"* BYE {injected[1]}", injected=True
                )
                raise Closed
            await self._reply(
                f"* OK [CAPABILITY {self._capabilities()}] pytest-smtpsink IMAP ready"
            )
            while not self._closing:
                try:
                    if not await self._next_command():
                        break
                except (Closed, OSError):
                    raise
                except Exception as error:
                    await self._answer_bug(error)
                else:
                    self._bugs_in_a_row = 0
        except (Closed, ConnectionError):
            pass
        finally:
            self.idling = False
            self.server.closed(self)
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.close()

    async def _answer_bug(self, error: Exception) -> None:
        """The last resort for an unexpected error in reading or running a
        command: logged, recorded and answered ``NO [SERVERBUG]`` (RFC 5530)
        with the command's tag; the session goes on, unless that happened
        `BUGS_IN_A_ROW` times in a row."""
        line, name = self._line, self._command_name
        tag, rest = None, line or b""
        if line is not None:
            # What failed may be what reads the tag: then "*" answers.
            with contextlib.suppress(Exception):
                tag, rest = split_tag(line)
        # Only a known command is named, and none that logs in has its
        # error's text logged.
        secret = name not in COMMANDS or name in _SECRET_VERBS or _secret_tag(tag)
        what = name if name in COMMANDS else "reading a command"
        text = self._server_bug(error, what, secret)
        self.idling = False
        if line is not None and not self._line_recorded:
            shown = [rest.rstrip(b"\r\n").decode("utf-8", "surrogateescape")]
            shown_line = self._shown_command(shown, None, tag)
            self._append("command", shown_line, _tag_recorded(tag))
        self._finish_shown()
        tag = tag if name in COMMANDS else _tag_out(tag, None)
        await self._reply(f"{tag or '*'} NO [SERVERBUG] {text}")
        if self._bugs_in_a_row >= BUGS_IN_A_ROW:
            await self._reply_and_end(
                "server-closed",
                f"* BYE [SERVERBUG] {self._bugs_in_a_row} internal errors in a row",
            )
            raise Closed

    async def _next_command(self) -> bool:
        """Read, record and run one command; False at the end of input."""
        self._line, self._line_recorded, self._command_name = None, False, None
        self._hidden_tag = None
        read = await self._read_command(MAX_LINE)
        if read is None:
            return False
        line, total = read
        self._line = line
        after_auth, self._after_auth = self._after_auth, False
        after_login, self._after_login = self._after_login, False
        after_sasl, self._after_sasl = self._after_sasl, False
        login_password, self._login_password = self._login_password, None
        if after_auth and _sasl_response(line):
            # After AUTHENTICATE, a line of one word (no command is one), or
            # one whose second word is no command, is a SASL response the
            # client sent without waiting for "+", or after a refusal:
            # masked, never shown, as the continuation is.
            self._after_auth = True
            self._append("auth-response", "****")
            await self._refuse_masked(line, "AUTHENTICATE", "a secret")
            return True
        if after_login and _sasl_response(line):
            # Right after a LOGIN, such a line is its password sent on a
            # line of its own (one word, blanks around it, or two words):
            # known by the raw line, as however it would parse, a part of it
            # would be shown.
            self._append("command", "****")
            await self._refuse_masked(line, "LOGIN", "a password")
            return True
        tag, rest = split_tag(line)
        # "LOGINpw NOOP": a tag that runs on past LOGIN or AUTHENTICATE may
        # hold the password. A known command still runs under it (a client
        # may use tags so made: "login1"), the client gets its tag back, and
        # the transcript shows it masked, in the command and its replies.
        self._hidden_tag = tag if _runs_on(tag) else None
        if _AUTHENTICATE.match(rest):
            self._after_auth = True
        if total > MAX_LINE:
            text = rest.decode("utf-8", "surrogateescape")
            mask = self.server.mask_secrets
            if mask is not None:
                # Masked whole, then cut: cut first, a password across the
                # cut was shown in part.
                text = mask(text)
            shown = self._shown_command([text[:64]], None, tag)
            self._append(
                "command",
                printable(f"{shown}... [{total} bytes in all]"),
                _tag_recorded(tag),
            )
            await self._bad(
                _tag_out(tag, None),
                f"Line too long ({total} bytes, at most {MAX_LINE})",
            )
            if _ENDS_IN_LITERAL_PLUS.search(line):
                # Its non-synchronizing literal is on its way: no way back.
                await self._reply_and_end("server-closed", "* BYE Too long a command")
                raise Closed
            return True
        words = line.split(None, 1)
        if login_password is not None and line.strip() in login_password:
            # The password LOGIN just took, sent again (quoted with a blank
            # in it too): masked as below.
            self._append("command", "****")
            await self._bad(None, "Missing command name")
            return True
        if (
            len(words) == 1
            and (self.state == "not-authenticated" or after_sasl)
            # "LOGINpw": a tag run on past the verb, masked as such below.
            and _SECRET_VERB_FIRST.match(words[0]) is None
            # "{5+}": its literal is on its way, read as any other's.
            and LITERAL_AT_END.search(line) is None
        ):
            # A word alone before login: perhaps a password sent without
            # its LOGIN, or a wrong one that no table names; or, right
            # after a login by AUTHENTICATE, its response sent again or the
            # rest of one wrapped onto more lines. Neither recorded nor
            # echoed as the tag of the BAD (as POP3 and SMTP keep it).
            self._after_sasl = after_sasl
            self._append("command", "****")
            await self._bad(None, "Missing command name")
            return True
        misplaced = _misplaced_literal(rest)
        if misplaced is not None:
            # Refused before "+", as Dovecot refuses it: the sink asked for
            # data it would refuse, and took the next command for it.
            text = rest.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
            shown = self._shown_command([text], None, tag)
            self._append("command", shown, _tag_recorded(tag))
            await self._bad(_tag_out(tag, None), misplaced)
            return True
        reader = CommandReader()
        append = re.match(rb"\s*APPEND\s", rest, re.IGNORECASE) is not None
        if append:
            # max_size=0 is no limit (as for SMTP), not a limit of 0 octets.
            reader.max_literal = self.settings.max_size or sys.maxsize
            reader.max_command = reader.max_literal + MAX_COMMAND
        # Decoded as sent: printable_sent shows bytes that are not UTF-8.
        shown_parts = [rest.rstrip(b"\r\n").decode("utf-8", "surrogateescape")]
        # An APPEND's fault acts at its first literal, before "+ Ready" and
        # before a byte of it is read (a disconnect in the middle of a
        # literal); the command is recorded then, with what came so far.
        early: tuple[str, str] | None = None
        recorded: list[Exchange] = []

        def record_early() -> None:
            shown = self._shown_command(shown_parts, None, tag)
            recorded.append(self._append("command", shown, _tag_recorded(tag)))

        def cut_off() -> None:
            """The client closed inside the command: record it as it came."""
            if recorded:
                recorded[0].line = self._shown_command(shown_parts, None, tag)
            else:
                record_early()
            self._mark_end("client-closed")

        # What the idle timeout may cut off: a literal's octets (how many
        # were due), or the line after a literal.
        literal_due, line_due = 0, False

        def mark_not_sent(size: int) -> None:
            # Refused before "+": not "[n octets]", as they never crossed.
            shown_parts[-1] = f" [{size} octets, not sent]"
            if recorded:
                recorded[0].line = self._shown_command(shown_parts, None, tag)

        try:
            if append:
                self._check_append_size(line)
            step = reader.feed_line(line)
            while isinstance(step, NeedLiteral):
                shown_parts.append(f" [{step.size} octets]")
                if self.generation != self.mail.generation:
                    raise Closed
                if append and not recorded and self.state != "not-authenticated":
                    early = await self._faults(
                        "IMAP:APPEND", self._subjects(), record_early
                    )
                    if early is not None and step.synchronizing:
                        # Refused before "+": the client sends no literal.
                        mark_not_sent(step.size)
                        await self._reply(f"{tag} {early[0]} {early[1]}", injected=True)
                        return True
                if append and step.synchronizing and early is None:
                    # What the command will be refused for is known before
                    # its message (state, folder, flags, date-time): refused
                    # before "+", the client uploads nothing for nothing. A
                    # {n+} literal is on its way: read, then refused.
                    refusal = self._append_refusal(reader.command_so_far())
                    if refusal is not None:
                        mark_not_sent(step.size)
                        if not recorded:
                            record_early()
                        await self._reply(f"{tag} {refusal[0]} {refusal[1]}")
                        return True
                if step.synchronizing:
                    await self._send(b"+ Ready for literal data\r\n")
                literal_due = step.size  # for the idle timeout's record
                data = await self._read_exactly(step.size)
                literal_due = 0
                if data is None:
                    # What came, and that the command never ran: "[100
                    # octets]" and no reply read as a command that hung.
                    shown_parts[-1] = (
                        f" [{len(self._buffer)} of {step.size} octets; not run: "
                        "cut off by the client's close]"
                    )
                    cut_off()
                    return False
                reader.feed_literal(data)
                line_due = True
                more = await self._read_line(MAX_LINE)
                line_due = False
                if more is None:
                    # The client hung up after the literal: what came is
                    # recorded, as where it hangs up inside one.
                    shown_parts.append(
                        " [not run: no line end, cut off by the client's close]"
                    )
                    cut_off()
                    return False
                line, total = more
                if total > MAX_LINE:
                    reader.reset()
                    # As for a first line: a {n+} literal at its end is on
                    # its way, and its bytes must not be run as commands.
                    raise ImapSyntaxError(
                        f"line too long ({total} bytes, at most {MAX_LINE})",
                        tag,
                        disconnect=_ENDS_IN_LITERAL_PLUS.search(line) is not None,
                    )
                shown_parts.append(
                    line.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
                )
                if append:
                    self._check_append_size(line)
                step = reader.feed_line(line)
        except _TooBig as big:
            # A message over max_size: NO [LIMIT] (RFC 5530), as Dovecot
            # answers, not a syntax error; the session goes on.
            reader.reset()
            shown_parts.append(
                f" [{big.size} octets" + (", not sent]" if big.synchronizing else "]")
            )
            too_big = (
                f"{tag} NO [LIMIT] Message too large ({big.size} bytes, at most "
                f"{self.settings.max_size}: the sink's max_size)"
            )
            if not big.synchronizing and big.size <= _MOST_DROPPED:
                # On its way: read and dropped, then the rest of the command
                # (another {n+} literal's bytes too: never run as commands).
                try:
                    complete = await self._drop_rest(big.size, shown_parts)
                except asyncio.TimeoutError:
                    if not recorded:
                        record_early()
                    await self._reply_and_end("timeout", _INACTIVE)
                    raise Closed from None
                if not complete:
                    cut_off()
                    return False
            if not recorded:
                record_early()
            if not big.synchronizing and big.size > _MOST_DROPPED:
                await self._reply(too_big)
                await self._reply_and_end(
                    "server-closed", "* BYE Cannot read the rest of that command"
                )
                raise Closed from None
            await self._reply(too_big)
            return True
        except ImapSyntaxError as error:
            # A line of one word, taken as a tag with no command: recorded
            # once, not as that tag and that word. (Right after a LOGIN it
            # never gets here: it is masked as the password, above.)
            lone = tag is None and error.tag is not None
            if not recorded:
                shown = self._shown_command(shown_parts, None, tag)
                recorded_tag = None if lone else _tag_recorded(error.tag)
                self._append("command", shown, recorded_tag)
            # "LOGINpw", "LOGINpw ": the tag may hold a password, so the BAD
            # is untagged rather than echo it.
            await self._bad(_tag_out(error.tag, None), _sentence(error.text))
            if error.disconnect:
                await self._reply_and_end(
                    "server-closed", "* BYE Cannot read the rest of that command"
                )
                raise Closed from None
            if _LOGIN.match(rest):
                # A LOGIN refused before its password (a literal too large):
                # a client that sends the password anyway sends it next.
                self._after_login = True
            return True
        except asyncio.TimeoutError:
            # What came, and that it never ran, as for the client's close.
            if literal_due:
                shown_parts[-1] = (
                    f" [{len(self._buffer)} of {literal_due} octets; not run: "
                    "cut off by the idle timeout]"
                )
            elif line_due:
                shown_parts.append(
                    " [not run: no line end, cut off by the idle timeout]"
                )
            if recorded:
                recorded[0].line = self._shown_command(shown_parts, None, tag)
            else:  # the BYE answers this command, not the last
                record_early()
            await self._reply_and_end("timeout", _INACTIVE)
            raise Closed from None
        command = step
        if recorded:
            recorded[0].line = self._shown_command(shown_parts, command, tag)
        else:
            shown = self._shown_command(shown_parts, command, tag)
            self._append("command", shown, _tag_recorded(tag))
        if self.generation != self.mail.generation:  # a new test started
            self.end_stale()
            raise Closed
        if early is not None:  # its literal is read; the fault's answer now
            await self._reply(f"{tag} {early[0]} {early[1]}", injected=True)
            return True
        await self._run(command, faults_done=bool(recorded))
        return True

    async def _refuse_masked(self, line: bytes, after: str, what: str) -> None:
        """Answer a line taken for a secret, untagged: what reads as its tag
        may be the secret's first word, which a tagged reply would echo to
        the client (and its logs). A line taken for one names no command
        in second place, so it was no command the client waits on."""
        tag, _ = split_tag(line)
        if tag is None:
            await self._bad(None, _sentence(NO_TAG))
            return
        await self._bad(
            None, f"Unknown command after {after} (not shown: it may be {what})"
        )

    def _shown_command(
        self, parts: list[str], command: Command | None, tag: str | None
    ) -> str:
        # An invisible character before the first word (a byte order mark,
        # a no-break space) written as an escape, as SMTP and POP3 do: it is
        # why the line has no tag, or no command a reader would see.
        return visible_start(self._masked_command("".join(parts), command, tag))

    def _masked_command(
        self, text: str, command: Command | None, tag: str | None
    ) -> str:
        if _secret_tag(tag) and (command is None or command.name not in COMMANDS):
            # "LOGIN ann pw" without a tag: LOGIN reads as the tag, and what
            # follows it is the login's (a known command after such a tag
            # is shown).
            return "****" if text.strip() else text
        mask = self.server.mask_secrets
        if mask is not None:
            # The passwords the sink knows masked first, whole: cut to its
            # first word by the rules below, a passphrase kept its first
            # words ("correct horse ****"). The rules then mask what else
            # may be a password (a wrong one beside a known one).
            masked = mask(text)
            if _SECRET_WORD.search(masked) is None and _SECRET_WORD.search(text):
                # The password is LOGIN or AUTHENTICATE itself: masked first,
                # the word that has the rules mask what follows it went.
                masked = text
            if masked != text and command is not None and command.args:
                # A passphrase as LOGIN's two "arguments" (its user name
                # left out): its first word is no user name to show.
                with contextlib.suppress(ImapSyntaxError):
                    if astring(command.args[0]) not in masked:
                        command = None
            text = masked
        shown = mask_command(text, command)
        if (
            mask is not None
            and shown == text
            and tag is not None
            and mask(f"{tag} {text}").startswith("****")
            and mask(tag) != "****"
        ):
            # A passphrase from the tag on ("correct" as the tag): shown as
            # sent, it is masked whole with its tag when recorded (`_append`).
            return printable_sent(shown)
        if shown == text and (tag is None or command is None):
            # No valid tag, or a line that did not parse: no command, so
            # cutting it short hides nothing a reader needs. LOGIN after
            # anything ("a(LOGIN ann pw", "a\x7fLOGIN", "a (LOGIN ann pw",
            # "a UID(LOGIN") hides what follows it: anywhere in a line with
            # no tag, in the first word after one.
            found = _SECRET_WORD.search(text)
            if (
                found is not None
                and text[found.end() :].strip()
                and (tag is None or " " not in text[: found.start()].strip())
            ):
                return printable_sent(text[: found.end()]) + "****"
        if (
            shown == text
            and (command is None or command.name not in COMMANDS)
            and self.state == "not-authenticated"
        ):
            # Before login an unknown command may be a login misspelt or of
            # another protocol ("AUTH PLAIN <base64>", "LOGN ann pw"), and
            # so may a line that did not parse, with a tag or none ("a
            # LOG\xffIN ann pw", "* LOGN ann pw"): its arguments may hold a
            # password the sink does not know (any opens a mailbox without
            # an auth table). Shown as its first word, whatever blanks
            # follow it.
            words = text.split(None, 1)
            if len(words) == 2:
                lead = text[: len(text) - len(text.lstrip())]
                return f"{printable_sent(lead + words[0])} ****"
            if len(words) == 1 and tag is not None:
                # A word alone after the tag ("a1 <password>"): perhaps a
                # password, which no table names if it is a wrong one.
                return "****"
        return printable_sent(shown)

    async def _bad(self, tag: str | None, text: str) -> None:
        await self._reply(f"{tag or '*'} BAD {text}")

    def _state_refusal(self, name: str, tag: str | None = None) -> str | None:
        """Why the command ``name`` cannot run now (the text of a ``BAD``):
        unknown, or not valid in the session's state; None if it can."""
        if name not in COMMANDS:
            if _secret_tag(tag):
                # Its "command" is what follows LOGIN: never echoed, nor is
                # a tag that runs on past the verb ("LOGINann pw").
                shown = _tag_recorded(tag)
                if shown == tag:
                    return f"Unknown command after the tag {tag} (is the tag missing?)"
                verb = str(shown).removesuffix("****")
                return (
                    f"Unknown command after the tag {shown}"
                    f" (are the tag and the space after {verb} missing?)"
                )
            verb = name.rpartition(" ")[2]
            if verb.startswith(_SECRET_VERBS):
                # "LOGINpw": the tail may be a password without its space.
                verb = mask_command(verb)
            elif self.state == "not-authenticated":
                # Not named before login (as POP3 does not): the word may
                # be a password sent after the tag ("a1 <password>").
                return "Unknown or unsupported command"
            return f"Unknown or unsupported command: {verb}"
        if name in _NOT_AUTHENTICATED and self.state != "not-authenticated":
            return f"{name} is not valid after login"
        if name in _AUTHENTICATED | _SELECTED and self.state == "not-authenticated":
            return f"{name}: log in first"
        if name in _SELECTED and self.state != "selected":
            return f"{name}: select a folder first"
        return None

    async def _run(self, command: Command, faults_done: bool = False) -> None:
        name = command.name
        tag = command.tag
        self._command_name = name
        refusal = self._state_refusal(name, tag)
        if refusal is not None:
            if name.removeprefix("UID ") == "LOGIN" and len(command.args) < 2:
                # Refused before its password (after login): a client that
                # sends it on a line of its own sends it next.
                self._after_login = True
            await self._bad(_tag_out(tag, command), refusal)
            return
        verb = name.removeprefix("UID ")
        subjects = self._subjects()
        if verb == "LOGIN" and len(command.args) < 2:
            # Its password may come on a line of its own (_next_command).
            self._after_login = True
        if verb == "LOGIN" and command.args:
            with contextlib.suppress(ImapSyntaxError):
                subjects = [astring(command.args[0])]
        injected = None if faults_done else await self._faults(f"IMAP:{verb}", subjects)
        if injected is not None:
            line = f"{tag} {injected[0]} {injected[1]}"
            if verb == "LOGOUT":
                await self._reply_and_end("server-closed", line, injected=True)
                raise Closed
            await self._reply(line, injected=True)
            return
        folder = self._folder
        if self.state == "selected" and folder is not None and verb != "LOGOUT":
            # Checked before the command too: run on a deleted folder, a
            # MOVE or COPY put its mail back in another folder.
            with self.mail.lock:
                same_account, alive = self._selected_folder_state(folder)
            if same_account and not alive:
                await self._end_on_a_deleted_folder()
        handler = getattr(self, "_cmd_" + name.lower().replace(" ", "_"))
        try:
            if command.args and name in _WITHOUT_ARGUMENTS:
                raise command.error(f"{name} takes no arguments")
            text = await handler(command)
            status = "OK"
        except _Answered as answer:
            status, text = answer.status, answer.text
        except ImapSyntaxError as error:
            status, text = "BAD", _sentence(error.text)
        except BadCharset as error:
            status, text = "NO", f"[{error.response_code}] {error.text}"
        if verb == "AUTHENTICATE" and status == "OK":
            # Logged in: what comes next is commands, not SASL responses
            # sent ahead (a command the sink does not know must get its
            # tagged BAD, or the client waits for it); but a word alone,
            # which no command is, may be its response again (_next_command).
            self._after_auth = False
            self._after_sasl = True
        if text is None:  # the handler answered (LOGOUT, IDLE)
            return
        held, self._updates_held = self._updates_held, False
        if self.state == "selected" and status != "BAD" and not held:
            # Not with a BAD, as on Dovecot: "* 5 EXISTS" came before a BAD
            # whose text said the folder had 4 messages.
            await self._send_updates(
                expunge=name not in _NO_EXPUNGE, by_uid=name.startswith("UID ")
            )
        self._finish_shown()
        await self._reply(f"{tag} {status} {text}")

    # -- state changes ------------------------------------------------------------------

    def _capabilities(self) -> str:
        words = ["IMAP4rev1", "LITERAL+", "SASL-IR"]
        starttls = self.settings.tls in ("starttls", "starttls-required")
        if self.state == "not-authenticated":
            if starttls and not self._tls:
                words.append("STARTTLS")
            if self._tls_missing():
                words.append("LOGINDISABLED")
            else:
                words.append("AUTH=PLAIN")
        words += ["IDLE", "UIDPLUS", "MOVE", "UNSELECT", "NAMESPACE", "ID"]
        words += ["ENABLE", "CHILDREN"]
        return " ".join(words)

    async def _login(self, mechanism: str, user: str, success: bool) -> str:
        assert self.record is not None
        info = AuthInfo(
            mechanism=mechanism,
            username=masked(self.server.mask_secrets, user),  # user, password swapped
            success=success,
        )
        self.record._auth_attempts.append(info)
        self.record.auth = info
        self.store.touch()
        if not success:
            raise _Answered("NO", "[AUTHENTICATIONFAILED] Authentication failed")
        with self.mail.lock:
            if self.generation != self.mail.generation:
                stale = True
            else:
                stale = False
                self._account = self.mail.account(user)
                self._user = self._account.user
                self._login_name = user
        if stale:
            self.end_stale()
            raise Closed
        self.state = "authenticated"
        return f"[CAPABILITY {self._capabilities()}] Logged in"

    def _deselect(self) -> None:
        self._folder = None
        self._view = []
        self._known_flags = {}
        self._recent = set()
        self.state = "authenticated"

    # -- any state -----------------------------------------------------------------------

    async def _cmd_capability(self, command: Command) -> str:
        await self._reply(f"* CAPABILITY {self._capabilities()}")
        return "CAPABILITY completed"

    async def _cmd_noop(self, command: Command) -> str:
        return "NOOP completed"

    async def _cmd_logout(self, command: Command) -> str | None:
        await self._reply_and_end(
            "quit", "* BYE Logging out", f"{command.tag} OK LOGOUT completed"
        )
        self._closing = True
        if self.transport is not None:
            self.transport.close()  # after the responses are flushed
        raise Closed

    async def _cmd_id(self, command: Command) -> str:
        # RFC 2971: one argument, NIL or the client's fields.
        args = command.args
        if len(args) != 1 or not (
            isinstance(args[0], ParenList)
            or (isinstance(args[0], Atom) and args[0].is_nil)
        ):
            raise command.error('ID takes NIL or a list of fields ("name" "value" ...)')
        if isinstance(args[0], ParenList):
            # RFC 2971: each name a string, each value a string or NIL (as
            # Dovecot checks them): an atom or a list is no field.
            for index, item in enumerate(args[0].items):
                nil = index % 2 == 1 and isinstance(item, Atom) and item.is_nil
                if not isinstance(item, String) and not nil:
                    raise command.error(
                        'ID fields are strings: ("name" "value" ...), a value may '
                        "be NIL"
                    )
        await self._reply('* ID ("name" "pytest-smtpsink")')
        return "ID completed"

    # -- not authenticated ----------------------------------------------------------------

    async def _cmd_starttls(self, command: Command) -> str | None:
        if self.settings.tls not in ("starttls", "starttls-required"):
            raise _Answered("BAD", "STARTTLS is not offered (the sink has no STARTTLS)")
        if self._tls:
            raise _Answered("BAD", "TLS is already active")
        discarded = self._discard_plain_text("STARTTLS")
        assert self.record is not None
        self.record._tls_starting()
        await self._reply(f"{command.tag} OK Begin TLS negotiation now")
        # And what came while the reply waited for the client to read (a
        # full write buffer): read after the handshake, it would pass for
        # what came over TLS. Nothing is awaited from here to start_tls(),
        # which stops the reading of plain text.
        discarded += self._discard_plain_text("STARTTLS")
        self._note_discarded("STARTTLS", discarded)
        if not await self._start_tls(False):
            raise Closed
        return None

    async def _cmd_login(self, command: Command) -> str:
        if len(command.args) != 2:
            raise command.error("LOGIN needs a user name and a password")
        name = text_bytes(command.args[0], command.tag, "the user name")
        user = name.decode("utf-8", "replace")
        password = text_bytes(command.args[1], command.tag, "the password")
        if self._tls_missing():
            raise _Answered("NO", "[PRIVACYREQUIRED] LOGIN is disabled: STARTTLS first")
        if not password:
            # As POP3's PASS: an application whose password setting is
            # empty hears of it, also where any password is taken.
            raise _Answered("NO", "[AUTHENTICATIONFAILED] LOGIN needs a password")
        success = is_utf8(name) and check_login(
            self.settings.auth, user, password.decode("utf-8", "replace")
        )
        answer = await self._login("LOGIN", user, success)
        # Logged in: the next line may be the password sent again, unknown
        # to a sink without a table (_next_command). Only that: a word
        # alone is otherwise a tag with no command, answered with its tag.
        # As an atom or as the quoted string LOGIN may have taken it in.
        quoted = password.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        self._login_password = (password, b'"' + quoted + b'"')
        return answer

    async def _cmd_authenticate(self, command: Command) -> str:
        if not command.args:
            raise command.error("AUTHENTICATE needs a mechanism")
        if len(command.args) > 2:
            # Base64 with a space in it, say: not "needs a mechanism".
            raise command.error(
                "AUTHENTICATE takes a mechanism and at most one initial "
                f"response (base64, one word), not {len(command.args) - 1}"
            )
        mechanism = ascii_upper(astring(command.args[0], command.tag))
        if mechanism != "PLAIN":
            raise _Answered("NO", "Unsupported mechanism (this server offers PLAIN)")
        if self._tls_missing():
            raise _Answered("NO", "[PRIVACYREQUIRED] STARTTLS first")
        if len(command.args) == 2:
            response = astring(command.args[1], command.tag)
        else:
            await self._reply("+ ")
            line, total = await self._read_continuation(_AUTH_LIMIT)
            self._append("auth-response", "*" if line.strip() == b"*" else "****")
            if total > _AUTH_LIMIT:
                raise _Answered("BAD", "Authentication line too long")
            response = line.decode("ascii", "replace").strip()
        if response == "*":
            raise _Answered("BAD", "Authentication cancelled")
        try:
            decoded = base64.b64decode(
                b"" if response == "=" else response, validate=True
            )
        except (binascii.Error, ValueError):
            raise _Answered("BAD", "Invalid base64 data") from None
        parts = decoded.split(b"\0")
        if len(parts) != 3:
            # RFC 5530's code, as Dovecot gives it: a client that stops
            # retrying on it only took the bare NO for server trouble.
            raise _Answered(
                "NO",
                "[AUTHENTICATIONFAILED] Bad PLAIN response "
                "(authzid NUL user NUL password)",
            )
        authzid, user_bytes, password_bytes = parts
        if not password_bytes:
            raise _Answered(
                "NO", "[AUTHENTICATIONFAILED] The PLAIN response has no password"
            )
        user = user_bytes.decode("utf-8", "replace")
        # The rules that name a user, now that it is known (those without a
        # match were asked at the command).
        injected = await self._faults("IMAP:AUTHENTICATE", [user], matching_only=True)
        if injected is not None:
            raise _Answered(*injected)
        success = (
            is_utf8(user_bytes)
            and check_login(
                self.settings.auth, user, password_bytes.decode("utf-8", "replace")
            )
            and (not authzid or authzid == user_bytes)
        )
        return await self._login("PLAIN", user, success)

    # -- authenticated: folders ------------------------------------------------------------

    def _folder_named(self, name: str) -> Folder | None:
        """The user's folder ``name`` (INBOX in any case), or None. Hold
        the lock."""
        assert self._account is not None
        account = self.mail.account(self._account.user)
        self._account = account
        try:
            return self.mail.folder(account, name)
        except KeyError:
            return None

    def _mailbox_arg(self, command: Command, index: int = 0) -> str:
        if len(command.args) <= index:
            raise command.error(f"{command.name} needs a folder name")
        return _existing_name(
            self._decoded_name(command.args[index], command), command.name
        )

    def _only_mailbox_arg(self, command: Command) -> str:
        """The folder name of a command that takes nothing else (SELECT,
        CREATE, DELETE, ...): another argument is BAD, not ignored (CREATE
        Box extra would create Box)."""
        if len(command.args) != 1:
            raise command.error(f"{command.name} takes one folder name")
        return self._mailbox_arg(command)

    @staticmethod
    def _decoded_name(arg: Arg, command: Command) -> str:
        """A folder name (or LIST pattern) as the client sent it: modified
        UTF-7, decoded."""
        try:
            return decode_folder_name(astring(arg, command.tag))
        except ValueError as error:
            raise _Answered("NO", f"Invalid folder name: {error}") from None

    async def _cmd_select(self, command: Command) -> str:
        return await self._select(command, read_only=False)

    async def _cmd_examine(self, command: Command) -> str:
        return await self._select(command, read_only=True)

    async def _select(self, command: Command, read_only: bool) -> str:
        # Whatever becomes of it (RFC 3501 6.3.1: after a SELECT that fails,
        # no folder is selected), as on Dovecot: a refused name ("Trash/")
        # left the old folder selected, read-write, and an EXPUNGE a client
        # pipelined after the SELECT emptied the wrong folder.
        self._deselect()
        name = self._only_mailbox_arg(command)
        with self.mail.lock:
            folder = self._folder_named(name)
            if folder is None:
                raise _no_such_folder(name)
            view = list(folder.messages)
            uidvalidity = folder.uidvalidity
            uidnext = folder.uidnext
            key = (self.generation, folder.serial)
            claimed = self.server.recent_claims.get(key, 0)
            recent = {s.uid for s in view if s.uid > claimed}
            if view and not read_only:
                self.server.recent_claims[key] = max(claimed, view[-1].uid)
        self._folder = folder
        self._read_only = read_only
        self._view = view
        self._known_flags = {s.uid: s.flags for s in view}
        self._uidnext = uidnext
        self._recent = recent
        self.state = "selected"
        await self._send_flags(list(folder.keywords))
        await self._reply(f"* {len(view)} EXISTS")
        await self._reply(f"* {len(recent)} RECENT")
        unseen = next((n for n, s in enumerate(view, 1) if _SEEN not in s.flags), None)
        if unseen is not None:
            await self._reply(f"* OK [UNSEEN {unseen}] First unseen")
        await self._reply(f"* OK [UIDVALIDITY {uidvalidity}] UIDs valid")
        await self._reply(f"* OK [UIDNEXT {uidnext}] Predicted next UID")
        mode = "READ-ONLY" if read_only else "READ-WRITE"
        return f"[{mode}] {command.name} completed"

    async def _cmd_create(self, command: Command) -> str:
        if len(command.args) != 1:
            raise command.error(f"{command.name} takes one folder name")
        # Only CREATE takes a trailing delimiter (RFC 3501 6.3.3).
        name = given_folder_name(self._decoded_name(command.args[0], command))
        if name == INBOX:
            raise _Answered("NO", "[ALREADYEXISTS] INBOX always exists")
        _check_new_name(name)
        with self.mail.lock:
            if self._folder_named(name) is not None:
                raise _Answered(
                    "NO", f"[ALREADYEXISTS] Folder exists: {encode_folder_name(name)}"
                )
            assert self._account is not None
            self.mail.folder(self._account, name, create=True)
        self.store.mail_changed()
        return "CREATE completed"

    async def _cmd_delete(self, command: Command) -> str:
        name = self._only_mailbox_arg(command)
        if name == INBOX:
            raise _Answered("NO", "INBOX cannot be deleted")
        with self.mail.lock:
            folder = self._folder_named(name)
            if folder is None:
                raise _no_such_folder(name)
            assert self._account is not None
            self.mail.delete_folder(self._account, folder)
        if folder is self._folder:
            self._deselect()
        self.store.mail_changed()
        return "DELETE completed"

    async def _cmd_rename(self, command: Command) -> str:
        if len(command.args) != 2:
            raise command.error("RENAME needs the old and the new folder name")
        old = self._mailbox_arg(command, 0)
        new = self._mailbox_arg(command, 1)
        _check_new_name(new)
        if old != INBOX and new.startswith(old + DELIMITER):
            # RENAME INBOX moves its mail to a new folder, INBOX stays (RFC
            # 3501), so INBOX/Old is fine; another folder cannot become its
            # own child (Dovecot refuses it so).
            raise _Answered(
                "NO",
                f"Cannot rename {encode_folder_name(old)} under itself: "
                f"{encode_folder_name(new)}",
            )
        with self.mail.lock:
            source = self._folder_named(old)
            account = self._account
            assert account is not None
            prefix = old + DELIMITER
            # A parent that exists only through its children renames them.
            if source is None and not any(
                n.startswith(prefix) for n in account.folders
            ):
                raise _no_such_folder(old)
            if new == INBOX or self._folder_named(new) is not None:
                raise _Answered(
                    "NO", f"[ALREADYEXISTS] Folder exists: {encode_folder_name(new)}"
                )
            if source is not None and source.name == INBOX:
                # RFC 3501: renaming INBOX moves its messages, INBOX stays.
                target = self.mail.folder(account, new, create=True)
                for stored in source.messages:
                    define_keywords(
                        target, [k for k in source.keywords if k in stored.flags]
                    )
                    self.mail.add(
                        target, stored.message, stored.flags, stored.internal_date
                    )
                self.mail.remove(source, list(source.messages), moved_to=new)
            else:
                renamed = {
                    name: new + name[len(old) :]
                    for name in account.folders
                    if name == old or name.startswith(prefix)
                }
                self.mail.rename_folders(account, renamed)
        self.store.mail_changed()
        return "RENAME completed"

    async def _subscription(self, command: Command, subscribed: bool) -> str:
        name = self._only_mailbox_arg(command)
        if not subscribed:
            # As Dovecot: a name no folder could have is refused; any other
            # is no longer subscribed afterwards, so OK, whether it was
            # subscribed or not and whether its folder exists (a subscribed
            # name outlives its folder, RFC 3501 6.3.6).
            if not name:
                raise _no_such_folder(name)
            _check_new_name(name)
        with self.mail.lock:
            folder = self._folder_named(name)
            assert self._account is not None
            names = self._account.subscribed
            if subscribed and folder is None:
                # Dovecot's answer to both: a plain NO, no response code.
                raise _Answered(
                    "NO",
                    f"No such folder: {encode_folder_name(name)}"
                    if name
                    else "The folder name is empty",
                )
            if subscribed:
                names.add(name)
            else:
                names.discard(name)
        return f"{command.name} completed"

    async def _cmd_subscribe(self, command: Command) -> str:
        return await self._subscription(command, True)

    async def _cmd_unsubscribe(self, command: Command) -> str:
        return await self._subscription(command, False)

    async def _cmd_list(self, command: Command) -> str:
        return await self._list(command, subscribed_only=False)

    async def _cmd_lsub(self, command: Command) -> str:
        return await self._list(command, subscribed_only=True)

    async def _list(self, command: Command, subscribed_only: bool) -> str:
        if len(command.args) != 2:
            raise command.error(f"{command.name} needs a reference and a pattern")
        reference = _pattern_text(astring(command.args[0], command.tag))
        pattern = _pattern_text(astring(command.args[1], command.tag))
        if not pattern:
            if not subscribed_only:
                await self._reply(f'* LIST (\\Noselect) "{DELIMITER}" ""')
            return f"{command.name} completed"
        # The reference and the pattern are joined as they are (RFC 3501
        # 6.3.8's examples; Dovecot): LIST Archive % names "Archive" and
        # "Archives", LIST Archive/ % the folders inside it.
        regex = _ListPattern(folder_name(reference + pattern))
        with self.mail.lock:
            assert self._account is not None
            account = self.mail.account(self._account.user)
            names = set(account.folders)
            subscribed = set(account.subscribed)
        # Every name with children, once: asked of every other name for each
        # listed one, a LIST of 8,000 folders took 7.3 s.
        ancestors = {
            DELIMITER.join(name.split(DELIMITER)[:i])
            for name in names
            for i in range(1, name.count(DELIMITER) + 1)
        }
        # Parents that do not exist themselves but have children.
        parents = ancestors - names
        listed = subscribed if subscribed_only else names | parents
        if subscribed_only:
            # RFC 3501 6.3.9: a subscribed name that the pattern misses (a
            # "%" stops at the delimiter) shows its unsubscribed parents
            # that match, \Noselect.
            listed = listed | {
                parent
                for name in subscribed
                if not regex.fullmatch(name)
                for i in range(1, name.count(DELIMITER) + 1)
                if (parent := DELIMITER.join(name.split(DELIMITER)[:i]))
                not in subscribed
                and regex.fullmatch(parent)
            }
        lines = []
        for name in sorted(listed, key=lambda n: (n != INBOX, n)):
            if not regex.fullmatch(name):
                continue
            attributes = ["\\HasChildren" if name in ancestors else "\\HasNoChildren"]
            if name not in names or (subscribed_only and name not in subscribed):
                # A parent made by its children, or a subscribed name whose
                # folder was deleted; in LSUB, a parent not subscribed.
                attributes.insert(0, "\\Noselect")
            lines.append(
                f'* {command.name} ({" ".join(attributes)}) "{DELIMITER}" '.encode()
                + _name_out(name)
                + b"\r\n"
            )
        for line in lines:
            await self._untagged(line)
        return f"{command.name} completed"

    async def _cmd_status(self, command: Command) -> str:
        if len(command.args) != 2 or not isinstance(command.args[1], ParenList):
            raise command.error("STATUS needs a folder name and a list of items")
        name = self._mailbox_arg(command)
        wanted: list[str] = []
        for item in command.args[1].items:
            if not isinstance(item, Atom) or item.upper not in _STATUS_ITEMS:
                raise command.error(
                    f"unknown STATUS item; use {', '.join(_STATUS_ITEMS)}"
                )
            if item.upper not in wanted:  # asked twice, answered once
                wanted.append(item.upper)
        if not wanted:
            # RFC 3501: at least one item (Dovecot: "Empty status list").
            raise command.error(
                f"STATUS needs at least one item: {', '.join(_STATUS_ITEMS)}"
            )
        with self.mail.lock:
            folder = self._folder_named(name)
            if folder is None:
                raise _no_such_folder(name)
            if folder is self._folder:
                # The selected folder as the session was told of it, with
                # no updates (RFC 3501 6.3.10 says not to ask, and a client
                # that does would compare the two), as Dovecot answers: its
                # counts said 4 messages before "* 4 EXISTS" told of one.
                self._updates_held = True
                values = {
                    "MESSAGES": len(self._view),
                    "RECENT": len(self._recent),
                    "UIDNEXT": self._uidnext,
                    "UIDVALIDITY": folder.uidvalidity,
                    "UNSEEN": sum(1 for s in self._told_view() if _SEEN not in s.flags),
                }
            else:
                messages = list(folder.messages)
                key = (self.generation, folder.serial)
                claimed = self.server.recent_claims.get(key, 0)
                values = {
                    "MESSAGES": len(messages),
                    "RECENT": sum(1 for s in messages if s.uid > claimed),
                    "UIDNEXT": folder.uidnext,
                    "UIDVALIDITY": folder.uidvalidity,
                    "UNSEEN": sum(1 for s in messages if _SEEN not in s.flags),
                }
        items = " ".join(f"{item} {values[item]}" for item in wanted)
        # The name as the client wrote it ("inbox"), as Dovecot answers: a
        # client that finds its answer by the name it sent found none.
        asked = astring_out(astring(command.args[0], command.tag))
        await self._untagged(b"* STATUS " + asked + f" ({items})\r\n".encode())
        if self._updates_held:
            # RFC 5530's code, as Dovecot's: the client asked what it knows.
            return (
                "[CLIENTBUG] STATUS of the selected folder completed: counted "
                "as this session was told (NOOP tells what changed)"
            )
        return "STATUS completed"

    def _append_head(
        self, command: Command, head: Sequence[Arg]
    ) -> tuple[str, frozenset[str], datetime.datetime | None]:
        """APPEND's arguments before its message (RFC 3501: mailbox [SP
        flag-list] [SP date-time]): the folder's name, the flags and the
        date-time. A bad flag or date-time is ``BAD``; a name that is not
        modified UTF-7 ``NO``. Whether the folder exists is checked apart
        (`_append_folder`), under the lock."""
        name = _existing_name(self._decoded_name(head[0], command), command.name)
        rest = list(head[1:])
        flags: frozenset[str] = frozenset()
        date = None
        if rest and isinstance(rest[0], ParenList):
            flags = self._store_flags(parse_flags(rest.pop(0), command.tag), command)
        if rest and isinstance(rest[0], String):
            date = parse_date_time(rest.pop(0), command.tag)
        if rest:
            raise command.error('APPEND takes (flags), "date-time" and a literal')
        return name, flags, date

    def _append_folder(self, name: str) -> Folder:
        """The folder an APPEND adds to; ``NO [TRYCREATE]`` if there is no
        such folder (RFC 3501). Hold the lock."""
        folder = self._folder_named(name)
        if folder is None:
            _check_new_name(name)  # no TRYCREATE for a CREATE that must fail
            raise _no_such_folder(name, "TRYCREATE")
        return folder

    def _append_refusal(self, command: Command) -> tuple[str, str] | None:
        """Why an APPEND is refused, judged on its arguments before the
        literal it now announces (`CommandReader.command_so_far`): the
        status and text, or None. The same checks as at the command's end,
        in the same order, so that the answer does not depend on when it
        is given; as Dovecot, which answers them before its ``+``."""
        refusal = self._state_refusal(command.name, command.tag)
        if refusal is not None:
            return "BAD", refusal
        if not command.args:
            return None  # the literal is the folder's name
        try:
            name, _, _ = self._append_head(command, command.args)
            with self.mail.lock:
                self._append_folder(name)
        except _Answered as answer:
            return answer.status, answer.text
        except ImapSyntaxError as error:
            return "BAD", _sentence(error.text)
        return None

    async def _cmd_append(self, command: Command) -> str:
        if len(command.args) < 2:
            raise command.error("APPEND needs a folder name and a message")
        *head, message_arg = command.args
        name, flags, date = self._append_head(command, head)
        if not isinstance(message_arg, String) or not message_arg.literal:
            # RFC 3501's append takes a literal; a quoted string (or the
            # date-time with no message after it) is BAD, as on Dovecot,
            # which says first that there is no such folder.
            with self.mail.lock:
                self._append_folder(name)
            raise command.error("APPEND's message must be a literal")
        raw = message_arg.value
        if not raw:
            raise _Answered("NO", "An empty message cannot be appended")
        now = _now()
        assert self.record is not None
        from ._user_mailbox import header_sender  # as deliver() shows its mail

        message = Message(
            raw=raw,
            envelope=Envelope(
                mail_from=header_sender(raw), rcpt_to=(self._user or "",)
            ),
            session=self.record,
            received_at=now,
            number=0,
        )
        with self.mail.lock:
            folder = self._append_folder(name)
            # The keywords in the order the client listed them (a set has none).
            lists = [arg for arg in head[1:] if isinstance(arg, ParenList)]
            define_keywords(folder, _keyword_order(lists[0]) if lists else [])
            stored = self.mail.add(folder, message, flags, date or now)
            uidvalidity = folder.uidvalidity
        self.store.mail_changed()
        return f"[APPENDUID {uidvalidity} {stored.uid}] APPEND completed"

    async def _cmd_namespace(self, command: Command) -> str:
        await self._reply(f'* NAMESPACE (("" "{DELIMITER}")) NIL NIL')
        return "NAMESPACE completed"

    async def _cmd_enable(self, command: Command) -> str:
        if not command.args:
            raise command.error("ENABLE needs at least one capability")
        # None of the extensions ENABLE can turn on is offered.
        await self._reply("* ENABLED")
        return "ENABLE completed"

    async def _cmd_idle(self, command: Command) -> str | None:
        # The continuation first, then what changed (the loop's first turn):
        # clients read one line after IDLE and take anything but "+" for a
        # refusal (IMAPClient, imap-tools), as RFC 2177's example and
        # Dovecot send it.
        await self._reply("+ idling")
        self.idling = True
        deadline = time.monotonic() + max(self.settings.idle_timeout, _IDLE_AUTOLOGOUT)
        try:
            while True:
                self._change_unsent = False
                if self.generation != self.mail.generation:
                    self._finish_shown()
                    self.end_stale()
                    raise Closed
                if self.state == "selected":
                    await self._send_updates(expunge=True)
                end = self._buffer.find(b"\n")
                if end >= 0 or self._eof:
                    break
                if self._change_unsent:
                    continue
                try:
                    await self._wait_for_input(deadline)
                except asyncio.TimeoutError:
                    self._finish_shown()
                    await self._reply_and_end("timeout", _INACTIVE)
                    raise Closed from None
        finally:
            self.idling = False
        # Its untagged responses past the first 20, counted: the DONE line
        # (a command's own record) starts the count anew, and the report
        # read as if the later mail had never been announced.
        self._finish_shown()
        read = await self._read_line(MAX_LINE)
        if read is None:
            raise Closed
        line = read[0].rstrip(b"\r\n")
        if line.upper() == b"DONE":
            self._append("command", printable_sent(line.decode("ascii")))
        else:
            # A command where DONE belongs (a LOGIN, say): recorded as any
            # line that did not parse is, its secrets hidden.
            tag, rest = None, line
            with contextlib.suppress(Exception):
                tag, rest = split_tag(line)
            shown = self._shown_command(
                [rest.decode("utf-8", "surrogateescape")], None, tag
            )
            self._append("command", shown, _tag_recorded(tag))
        if _LITERAL_ANNOUNCED.search(line):
            # Its literal (a LOGIN's password, say) would be read as the next
            # command line, and recorded as one: the session ends here.
            await self._reply_and_end(
                "server-closed",
                f"{command.tag} BAD Expected DONE to end IDLE",
                "* BYE A command with a literal where DONE belongs",
            )
            raise Closed
        if line.upper() != b"DONE":
            await self._reply(f"{command.tag} BAD Expected DONE to end IDLE")
        else:
            await self._reply(f"{command.tag} OK IDLE terminated")
        return None

    # -- selected -------------------------------------------------------------------------

    def _selected_folder_state(self, folder: Folder) -> tuple[bool, bool]:
        """Whether the session's account is still the store's, and whether
        ``folder`` is still its folder (caller holds the mail lock)."""
        account = self._account
        same_account = (
            account is not None and self.mail.accounts.get(account.user) is account
        )
        alive = (
            same_account
            and account is not None
            and account.folders.get(folder.name) is folder
        )
        return same_account, alive

    async def _end_on_a_deleted_folder(self) -> NoReturn:
        """Another session deleted the selected folder (a rename keeps the
        folder, under its new name, and this session on it). Left selected,
        this one answered OK on a folder that no longer is, and never heard
        of mail in one made again under its name: Dovecot closes such a
        session, so that the reader reconnects."""
        await self._reply_and_end(
            "server-closed",
            "* BYE Selected mailbox was deleted, have to disconnect.",
        )
        raise Closed

    async def _send_updates(self, expunge: bool, by_uid: bool = False) -> None:
        """Tell the client what changed in its folder since it last heard:
        EXPUNGE (only when ``expunge``), EXISTS and RECENT, FETCH FLAGS,
        with the message's UID after a UID command (``by_uid``): RFC 3501
        6.4.8 asks it of "any FETCH response caused by a UID command", and
        a client that sent UID commands only may know the message by its
        UID only. Dovecot gives it to the other sessions' changes after a
        UID STORE alone (docs/reading.rst: kept on purpose)."""
        folder = self._folder
        if folder is None:
            return
        with self.mail.lock:
            flag_changes = StoredMessage._flag_changes
            same_account, alive = self._selected_folder_state(folder)
            current = list(folder.messages) if alive else []
            keywords = list(folder.keywords)
            key = (self.generation, folder.serial)
            claimed = self.server.recent_claims.get(key, 0)
            present: set[int] | None = None
            new: list[StoredMessage] = []
            # Usually nothing came or went: one comparison of the lists (by
            # identity, in C) instead of two sets over the folder.
            view = self._view
            if current != view:
                seen = len(view)
                if current[:seen] == view:
                    # Only new mail, after what the client knows (compared
                    # in C): sets over the whole folder for each message
                    # that came made IDLE sessions quadratic.
                    new = current[seen:]
                else:
                    present = {id(s) for s in current}
                    known = {id(s) for s in view}
                    new = [s for s in current if id(s) not in known]
            if new and not self._read_only:
                self.server.recent_claims[key] = max(claimed, new[-1].uid)
        if same_account and not alive:
            await self._end_on_a_deleted_folder()
        if not self._keywords.issuperset(keywords):
            # A keyword new to the folder (another session's STORE, an
            # APPEND): FLAGS and PERMANENTFLAGS first, as Dovecot sends them.
            await self._send_flags(keywords)
        out: list[bytes] = []
        recent_before = len(self._recent)
        if expunge and present is not None:
            for index in range(len(self._view) - 1, -1, -1):
                stored = self._view[index]
                if id(stored) not in present:
                    out.append(b"* %d EXPUNGE\r\n" % (index + 1))
                    del self._view[index]
                    self._known_flags.pop(stored.uid, None)
                    self._recent.discard(stored.uid)
        # Changed flags before new mail, as Dovecot orders them (a new
        # message's flags come with it: it is fetched, not announced).
        # Compared only if any flag changed since they last were: mail
        # coming in made each IDLE session compare its whole folder.
        known_flags = self._known_flags
        if flag_changes != self._flag_changes_seen:
            if present is None or expunge:
                # Else a message expunged elsewhere, still numbered, keeps
                # flags untold: SEARCH (_told_view) must not take them as told.
                self._flag_changes_seen = flag_changes
            for number, stored in enumerate(self._view, 1):
                flags = stored.flags
                if known_flags.get(stored.uid) != flags and (
                    present is None or id(stored) in present
                ):
                    known_flags[stored.uid] = flags
                    items = [(b"FLAGS", self._format_flags(stored, flags))]
                    if by_uid:
                        items.insert(0, (b"UID", b"%d" % stored.uid))
                    out.append(format_fetch(number, items))
        if new:
            self._view.extend(new)
            self._uidnext = max(self._uidnext, new[-1].uid + 1)
            self._recent.update(s.uid for s in new if s.uid > claimed)
            for stored in new:
                self._known_flags[stored.uid] = stored.flags
            out.append(b"* %d EXISTS\r\n" % len(self._view))
        if new or len(self._recent) != recent_before:
            # As Dovecot: the count changes when recent mail is expunged too.
            out.append(b"* %d RECENT\r\n" % len(self._recent))
        for data in out:
            await self._untagged(data)

    def _selected(
        self, arg: Arg, command: Command, by_uid: bool
    ) -> list[tuple[int, StoredMessage]]:
        """The messages a sequence set (or UID set) names, with their
        sequence numbers, in order. Sequence numbers past the end are an
        error; UIDs that do not exist are skipped (RFC 3501)."""
        numbers = parse_sequence_set(arg, command.tag)
        view = self._view
        if by_uid:
            largest = view[-1].uid if view else 0
            return [
                (n, s)
                for n, s in enumerate(view, 1)
                if numbers.contains(s.uid, largest)
            ]
        if not view or numbers.exceeds(len(view)):
            raise _Answered(
                "BAD",
                f"Invalid message sequence number: "
                f"{shorten(arg.value if isinstance(arg, Atom) else str(arg), 40)} "
                f"(the folder has {plural(len(view), 'message')})",
            )
        return [(n, view[n - 1]) for n in numbers.members(len(view))]

    async def _cmd_check(self, command: Command) -> str:
        return "CHECK completed"

    async def _cmd_close(self, command: Command) -> str:
        if not self._read_only:
            self._expunge(None)
        self._deselect()
        return "CLOSE completed"

    async def _cmd_unselect(self, command: Command) -> str:
        self._deselect()
        return "UNSELECT completed"

    def _expunge(self, only: SequenceSet | None) -> None:
        folder = self._folder
        assert folder is not None
        # Only the messages this session was told of (its view), as Dovecot
        # does: one another session put in (and flagged \Deleted), not yet
        # announced here, was removed by a client that never saw it.
        known = {id(s) for s in self._view}
        with self.mail.lock:
            # "*" is the newest UID the session knows, as for UID FETCH:
            # the folder's newest, not yet announced, made "99:*" miss the
            # last message the session knew.
            largest = self._view[-1].uid if self._view else 0
            gone = [
                s
                for s in folder.messages
                if _DELETED in s.flags
                and id(s) in known
                and (only is None or only.contains(s.uid, largest))
            ]
            self.mail.remove(folder, gone)
        if gone:
            self.store.mail_changed()

    async def _cmd_expunge(self, command: Command) -> str:
        if self._read_only:
            raise _Answered("NO", "[READ-ONLY] The folder is read-only")
        self._expunge(None)
        return "EXPUNGE completed"

    async def _cmd_uid_expunge(self, command: Command) -> str:
        if len(command.args) != 1:
            raise command.error("UID EXPUNGE takes a UID set")
        if self._read_only:
            raise _Answered("NO", "[READ-ONLY] The folder is read-only")
        self._expunge(parse_sequence_set(command.args[0], command.tag))
        return "UID EXPUNGE completed"

    async def _cmd_fetch(self, command: Command) -> str:
        return await self._fetch(command, by_uid=False)

    async def _cmd_uid_fetch(self, command: Command) -> str:
        return await self._fetch(command, by_uid=True)

    async def _fetch(self, command: Command, by_uid: bool) -> str:
        if len(command.args) < 2:
            raise command.error("FETCH needs a sequence set and data items")
        if len(command.args) > 2:
            # RFC 3501's grammar, and Dovecot's BAD: taken here, imaplib's
            # fetch("1", "UID FLAGS") passed its tests and failed on a server.
            if isinstance(command.args[-1], ParenList):  # items, then a list
                if len(command.args) == 3:
                    # An unknown item is named first: "FETCH 1
                    # RFC822.HEADER.LINES (FROM)" sent no modifier.
                    parse_fetch_items(command.args[1], command.tag)
                raise command.error(
                    f"{command.name} takes a sequence set and its data items; "
                    "modifiers after them (CONDSTORE's CHANGEDSINCE) are not "
                    "supported"
                )
            raise command.error(_unparenthesized_items(command))
        items = parse_fetch_items(command.args[1], command.tag)
        selected = self._selected(command.args[0], command, by_uid)
        kinds = {item.kind for item in items}
        items, flags_at = response_order(items, by_uid)
        mark_seen = sets_seen(items) and not self._read_only
        assert self._folder is not None
        keywords = self._folder.keywords
        # A keyword new to the folder since the session's last FLAGS (another
        # session stored it): announced right before the first response that
        # carries flags, as Dovecot announces it, not after a FETCH naming it.
        unannounced = not self._keywords.issuperset(keywords)
        # New mail is announced after the responses (by _run), as Dovecot
        # announces it: "1:*" names the messages the client knew of when
        # it asked, and no "* n EXISTS" comes before responses that leave
        # message n out.
        # Responses go out in writes of about _WRITE_BATCH octets, not one
        # system call (and one await) per message.
        batch: list[bytes] = []
        batched = 0
        for number, stored in selected:
            changed = False
            if mark_seen and _SEEN not in stored.flags:
                with self.mail.lock:
                    stored.flags = stored.flags | {_SEEN}
                changed = True
            # The size is counted once per copy: equal to the stored length,
            # the message is served as stored (CRLF only), without a scan.
            raw = stored.message.raw
            served = raw if stored.size == len(raw) else self._structures.served(raw)
            limit = _FETCH_COPIES * len(served) + _FETCH_SLACK
            try:
                values = fetch_values(
                    stored,
                    items,
                    recent=stored.uid in self._recent,
                    served=served,
                    keywords=keywords,
                    limit=limit,
                    structures=self._structures,
                )
            except ResponseTooLarge:
                if changed:  # not fetched after all: not seen either
                    with self.mail.lock:
                        stored.flags = stored.flags - {_SEEN}
                if batch:
                    await self._send_all(batch)
                raise _Answered(
                    "NO",
                    f"[LIMIT] {command.name}: the response for message {number} "
                    f"would be over {limit} bytes, {_FETCH_COPIES} times the "
                    "message and a megabyte; ask for each section once",
                ) from None
            if changed and "FLAGS" not in kinds:
                values.insert(
                    flags_at,
                    (b"FLAGS", self._format_flags(stored, stored.flags)),
                )
            if changed or "FLAGS" in kinds:
                self._known_flags[stored.uid] = stored.flags
                if unannounced:
                    unannounced = False
                    if batch:
                        await self._send_all(batch)
                        batch, batched = [], 0
                    await self._send_flags(list(keywords))
            response = format_fetch(number, values)
            self._record_untagged(response)
            batch.append(response)
            batched += len(response)
            if batched >= _WRITE_BATCH:
                await self._send_all(batch)
                batch, batched = [], 0
                # Another session ran meanwhile, and may have added a keyword
                # (to the folder's list, which `keywords` is) that the next
                # responses carry: announced before them too.
                unannounced = unannounced or not self._keywords.issuperset(keywords)
        if batch:
            await self._send_all(batch)
        if mark_seen:
            self.store.mail_changed()
        gone = self._expunged_elsewhere(selected, by_uid)
        if gone:
            # Served all the same (the sink still has them, RFC 2180 4.1.1;
            # Dovecot answers their bodies NIL), with Dovecot's code (RFC
            # 5530: another session expunged). Dovecot gives it for what its
            # index could not answer (a body, not FLAGS or UID), by UID too;
            # the sink for any item: the client learns its data is stale.
            return f"[EXPUNGEISSUED] {command.name} completed; {gone}"
        return f"{command.name} completed"

    async def _cmd_search(self, command: Command) -> str:
        return await self._search(command)

    async def _cmd_uid_search(self, command: Command) -> str:
        return await self._search(command)

    async def _search(self, command: Command) -> str:
        query = parse_search(command.args, command.tag)
        # Over the messages the client knows; new mail is announced after
        # the result (by _run), as after FETCH and STORE and as on Dovecot.
        result = search_folder(query, self._told_view(), self._recent)
        await self._untagged(result.response(command.name))
        return f"{command.name} completed"

    def _told_view(self) -> Sequence[MailboxEntry]:
        """The session's view with the flags the client was told: another
        session's change, told after the result, matched before it ("*
        SEARCH 3", then "* 3 FETCH (FLAGS (\\Deleted))"), where Dovecot
        matches what it told."""
        view = self._view
        if StoredMessage._flag_changes == self._flag_changes_seen:
            # No flag changed anywhere since _send_updates told them all:
            # no list built (nor a dict looked up) per message.
            return view
        known = self._known_flags
        told: list[MailboxEntry] = []
        for stored in view:
            flags = known.get(stored.uid)
            told.append(
                stored
                if flags is None or flags == stored.flags
                else _Told(stored, flags)
            )
        return told

    def _format_flags(self, stored: StoredMessage, flags: frozenset[str]) -> bytes:
        """A message's FLAGS value: ``\\Recent`` where this session has it,
        keywords in the selected folder's order."""
        assert self._folder is not None
        return format_flags(flags, stored.uid in self._recent, self._folder.keywords)

    async def _send_flags(self, keywords: Sequence[str]) -> None:
        """FLAGS and PERMANENTFLAGS, with *keywords* (the folder's, in its
        order: at SELECT, and when a STORE brings a keyword new to the
        session, as Dovecot does)."""
        self._keywords = frozenset(keywords)
        flags = _SYSTEM_FLAGS[:-1] + "".join(f" {k}" for k in keywords) + ")"
        await self._reply(f"* FLAGS {flags}")
        await self._reply(
            f"* OK [PERMANENTFLAGS {flags[:-1]} \\*)] Flags permitted"
            if not self._read_only
            else "* OK [PERMANENTFLAGS ()] Read-only folder"
        )

    def _store_flags(self, flags: frozenset[str], command: Command) -> frozenset[str]:
        """Flags a client may set: ``\\Recent`` (the server's) and an unknown
        system flag are errors."""
        if "\\Recent" in flags:
            # RFC 3501 2.3.2: no client can set or clear it; Dovecot says BAD
            # too, so a client that sends it (copying fetched flags back, say)
            # hears of it instead of losing the flag silently.
            raise command.error(
                "\\Recent cannot be stored: the server sets it on new mail "
                "(RFC 3501 2.3.2)"
            )
        try:
            return normalize_flags(flags)
        except ValueError as error:
            raise command.error(str(error)) from None

    async def _cmd_store(self, command: Command) -> str:
        return await self._store(command, by_uid=False)

    async def _cmd_uid_store(self, command: Command) -> str:
        return await self._store(command, by_uid=True)

    async def _store(self, command: Command, by_uid: bool) -> str:
        if len(command.args) < 2 or not isinstance(command.args[1], Atom):
            raise command.error("STORE needs a sequence set, an item and flags")
        item = command.args[1].upper
        mode, _, silent = item.partition(".")
        if mode not in ("FLAGS", "+FLAGS", "-FLAGS") or silent not in ("", "SILENT"):
            raise command.error(f"unknown STORE item {command.args[1].value!r}")
        if len(command.args) == 2:
            # RFC 3501 requires the flags. Dovecot reads none as "()", so
            # there "STORE 1 FLAGS" clears every flag: refused here, so a
            # client that drops its flags is seen, not obeyed.
            raise command.error(
                f"STORE {command.args[1].value} needs flags after it: a list "
                "such as (\\Seen), or () for none (RFC 3501)"
            )
        flag_args = command.args[2:]
        order = _keyword_order(flag_args)
        flags = self._store_flags(
            parse_flags(
                flag_args[0] if len(flag_args) == 1 else flag_args, command.tag
            ),
            command,
        )
        selected = self._selected(command.args[0], command, by_uid)
        if self._read_only:
            raise _Answered("NO", "[READ-ONLY] The folder is read-only")
        # New mail is announced after the responses, as for FETCH.
        # The flags each message had: only a message whose flags the STORE
        # changed gets a FETCH, as on Dovecot (RFC 3501 says "normally").
        before = {stored.uid: stored.flags for _, stored in selected}
        folder = self._folder
        assert folder is not None
        with self.mail.lock:
            if mode != "-FLAGS":
                define_keywords(folder, order)
            # As the folder spells them: $label is its $Label.
            flags = fold_keywords(folder, flags)
            present = {id(s) for s in folder.messages}
            for _, stored in selected:
                if id(stored) not in present:
                    continue  # expunged by another session meanwhile
                if mode == "FLAGS":
                    stored.flags = flags
                elif mode == "+FLAGS":
                    stored.flags = stored.flags | flags
                else:
                    stored.flags = stored.flags - flags
        self.store.mail_changed()
        if not self._keywords.issuperset(folder.keywords):
            # A keyword this STORE brought, or another session did (which a
            # FETCH below may show): FLAGS first, as Dovecot sends them.
            await self._send_flags(list(folder.keywords))
        for number, stored in selected:
            known = self._known_flags.get(stored.uid)
            unchanged = stored.flags == before[stored.uid] and (
                # Expunged elsewhere: its EXPUNGE is the news, as on Dovecot.
                known == stored.flags or id(stored) not in present
            )
            if silent or unchanged:
                # Told nothing: known only if the client knew the flags
                # before (else another session's change is still to tell,
                # by _send_updates, as a .SILENT STORE's is on Dovecot).
                if known == before[stored.uid]:
                    self._known_flags[stored.uid] = stored.flags
                continue
            # Changed here, or elsewhere before (not yet told): told in place,
            # with its UID for UID STORE (RFC 3501 6.4.8), as Dovecot does.
            self._known_flags[stored.uid] = stored.flags
            values = [(b"FLAGS", self._format_flags(stored, stored.flags))]
            if by_uid:
                # The UID first, as in a UID FETCH response.
                values.insert(0, (b"UID", b"%d" % stored.uid))
            await self._untagged(format_fetch(number, values))
        return f"{command.name} completed"

    def _expunged_elsewhere(
        self, selected: Sequence[tuple[int, StoredMessage]], by_uid: bool
    ) -> str:
        """Which of ``selected`` another session expunged (this one still
        numbers them until it may say so), as a sentence; "" if none. By
        UID after a UID command: its ``* 1 EXPUNGE`` comes before the
        completion, and "message 1" then named the message after it."""
        folder = self._folder
        assert folder is not None
        with self.mail.lock:
            present = {id(s) for s in folder.messages}
        gone = [
            stored.uid if by_uid else number
            for number, stored in selected
            if id(stored) not in present
        ]
        if not gone:
            return ""
        shown = ", ".join(str(n) for n in gone[:5]) + (", ..." if len(gone) > 5 else "")
        what = ("UID", "UIDs") if by_uid else ("message", "messages")
        return (
            f"{what[0] if len(gone) == 1 else what[1]} {shown} "
            f"{'was' if len(gone) == 1 else 'were'} expunged by another session"
        )

    async def _copy(self, command: Command, by_uid: bool, move: bool) -> str:
        if len(command.args) != 2:
            raise command.error(f"{command.name} needs a sequence set and a folder")
        selected = self._selected(command.args[0], command, by_uid)
        name = self._mailbox_arg(command, 1)
        if move and self._read_only:
            raise _Answered("NO", "[READ-ONLY] The folder is read-only")
        with self.mail.lock:
            target = self._folder_named(name)
            if target is None:
                _check_new_name(name)  # no TRYCREATE for a CREATE that must fail
                raise _no_such_folder(name, "TRYCREATE")
            source = self._folder
            assert source is not None
            gone = self._expunged_elsewhere(selected, by_uid)
            if gone:
                # All or nothing, as on Dovecot (RFC 3501: a COPY that fails
                # leaves the target as it was).
                raise _Answered(
                    "NO",
                    f"[EXPUNGEISSUED] Nothing {'moved' if move else 'copied'}: {gone}",
                )
            for _, stored in selected:
                # A copy's keywords come in the order its folder has them.
                define_keywords(
                    target, [k for k in source.keywords if k in stored.flags]
                )
            pairs = [
                (
                    stored.uid,
                    self.mail.add(
                        target,
                        stored.message,
                        stored.flags - {"\\Recent"},
                        stored.internal_date,
                    ).uid,
                )
                for _, stored in selected
            ]
            if move:
                self.mail.remove(source, [s for _, s in selected], moved_to=target.name)
            uidvalidity = target.uidvalidity
        self.store.mail_changed()
        if not pairs:
            return f"{command.name} completed (nothing to copy)"
        code = (
            f"COPYUID {uidvalidity} {format_uid_set(p[0] for p in pairs)} "
            f"{format_uid_set(p[1] for p in pairs)}"
        )
        if move:
            await self._reply(f"* OK [{code}] Moved")
            return f"{command.name} completed"
        return f"[{code}] {command.name} completed"

    async def _cmd_copy(self, command: Command) -> str:
        return await self._copy(command, by_uid=False, move=False)

    async def _cmd_uid_copy(self, command: Command) -> str:
        return await self._copy(command, by_uid=True, move=False)

    async def _cmd_move(self, command: Command) -> str:
        return await self._copy(command, by_uid=False, move=True)

    async def _cmd_uid_move(self, command: Command) -> str:
        return await self._copy(command, by_uid=True, move=True)


# -- the test's side ---------------------------------------------------------------------


class IMAPEndpoint(ReadSideEndpoint):
    """Where an IMAP client connects: ``smtpsink.imap``.

    The server starts on the first use of ``smtpsink.imap``, on the sink's
    thread and a free port of the sink's host, and serves the mailboxes of
    the sink's recipients (see :doc:`reading`).
    """

    _schemes = ("imap", "imaps")


#: FETCH's macros: each stands for several items and cannot be in a list.
_FETCH_MACROS = frozenset({"ALL", "FAST", "FULL"})


def _unparenthesized_items(command: Command) -> str:
    """The BAD text of a FETCH whose data items are not in parentheses: the
    client's own items, parenthesized, when they are plain words (the fix
    is then to copy it); a macro among them cannot be, and is said so."""
    example = f"{command.name} 1 (FLAGS UID)"
    texts = [arg.value for arg in command.args if isinstance(arg, Atom)]
    # Echoed only when it is short, printable ASCII that the client sent
    # as words (not strings or lists).
    if len(texts) != len(command.args) or len(texts) > 9:
        return f"several FETCH data items go in parentheses, as in {example}"
    if not all(text.isascii() and text.isprintable() for text in texts):
        return f"several FETCH data items go in parentheses, as in {example}"
    sequence, items = texts[0], texts[1:]
    for item in items:
        if item.upper() in _FETCH_MACROS:
            return (
                f"{item.upper()} stands for several FETCH data items and goes "
                f"alone ({command.name} {sequence} {item.upper()}); several "
                f"items go in parentheses, as in {example}"
            )
    return (
        "several FETCH data items go in parentheses, as in "
        f"{command.name} {sequence} ({' '.join(items)})"
    )


def _pattern_text(sent: str) -> str:
    """A LIST reference or pattern: modified UTF-7 decoded, or, when it is
    not that (``R&D``, from a client that does not encode names), the text
    as sent, as Dovecot matches it: it listed nothing, and ``R&D*`` found
    the folder ``R&D`` on Dovecot only."""
    try:
        return decode_folder_name(sent)
    except ValueError:
        return sent

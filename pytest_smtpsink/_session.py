"""The SMTP conversation: one `Session` per connection, with its transcript.

The server thread appends to these objects while tests read them, so every
public accessor returns an immutable snapshot (a tuple), never the live list.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import re
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal

from ._text import format_address, printable

if TYPE_CHECKING:
    from ._message import Message

#: How long reading `Session.tls` waits for a STARTTLS handshake under way.
TLS_SETTLE_SECONDS = 10.0

SessionProtocol = Literal["SMTP", "POP3", "IMAP", "deliver"]
EndReason = Literal[
    "quit",
    "client-closed",
    "timeout",
    "server-closed",
    "tls-failed",
    "tls-on-plain-port",
]
ExchangeKind = Literal["greeting", "command", "auth-response", "data", "notice"]
#: How a "data" exchange's line ends when the connection closed before the
#: content's final dot: the server writes it, the smtpsink command reads it.
CONTENT_CUT_OFF = ", incomplete: the connection closed before the final dot"
#: The same when the idle timeout cut it off.
CONTENT_TIMED_OUT = ", incomplete: the idle timeout cut it off before the final dot"


@dataclasses.dataclass(frozen=True, slots=True)
class TLSInfo:
    """How a session was encrypted."""

    version: str | None
    """The protocol version, e.g. ``"TLSv1.3"``."""
    cipher: str | None
    """The cipher suite name."""
    implicit: bool
    """True for implicit TLS (SMTPS), False for STARTTLS."""


@dataclasses.dataclass(frozen=True, slots=True)
class AuthInfo:
    """One AUTH attempt. The password is never kept."""

    mechanism: str
    username: str | None
    success: bool
    in_use: bool = False
    """True when the user name and password were right but the mailbox was
    locked by another session (POP3's ``-ERR [IN-USE]``, RFC 2449): the
    login failed for that alone (``success`` is False)."""


def peer_of(transport: Any) -> tuple[str, int]:
    """A connection's client address: an IPv4 client of a dual-stack
    socket (a sink bound to ``::``) as IPv4 (``127.0.0.1``, not
    ``::ffff:127.0.0.1``), as it connected."""
    peer = transport.get_extra_info("peername") or ("?", 0)
    host = str(peer[0])
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, int(peer[1])


#: How a transcript writes a byte that is not UTF-8 (``\\xff``) and an
#: invisible character before a line's first word (``\\ufeff``).
_BYTE_ESCAPE = re.compile(r"\\X[0-9A-F]{2}|\\U[0-9A-F]{4}")


def _verb_of(word: str) -> str | None:
    """A line's first word as its command: upper case, but for the escapes
    of bytes that are not UTF-8 and of invisible characters, which stay as
    the line writes them (``\\xff``, not ``\\XFF``; ``\\ufeff``); None for
    a blank line, no command at all."""
    if not word:
        return None
    verb = word.upper()
    if "\\" in verb:
        verb = _BYTE_ESCAPE.sub(lambda escape: escape.group().lower(), verb)
    return verb


def said_nothing(session: Session) -> bool:
    """Whether ``session`` ended having said nothing: a health check's
    probe (connect, read the greeting, close), every few seconds. The
    standalone sink neither saves nor lists such connections."""
    return (
        session.ended_at is not None
        and session.tls_error is None
        and all(exchange.kind == "greeting" for exchange in session.transcript)
    )


def cut_off_note(verb: str | None, octets: int, by: str = "the client's close") -> str:
    """The transcript's note for a command line the client's close (or the
    idle timeout, ``by``) cut off: never run, its verb if it named one, the
    rest counted and never shown (it may hold a password). In brackets: a
    note, not a command (`Exchange.command` is None), so ``used("QUIT")``
    stays false of a QUIT that never ran."""
    shown = f"{verb}, " if verb else ""
    return f"[not run: {shown}{octets} octets with no line end, cut off by {by}]"


def discarded_before_tls_note(command: str, octets: int) -> str:
    """The transcript's note for what a client sent after ``command``
    (STARTTLS, STLS) without waiting for the TLS handshake: thrown away
    unread (RFC 3207 4.2), counted (it may hold a password). A test of a
    client's STARTTLS can see that it did not wait."""
    return (
        f"[not run: {octets} octets sent after {command} before the TLS "
        "handshake, discarded unread]"
    )


def _verb(command: str) -> str:
    """A command as `Session.used` and its kin take it: upper-cased, and
    SMTP's "MAIL FROM" and "RCPT TO" (how RFC 5321 writes them) as their
    verbs. Anything else of two words but an IMAP UID command is a
    ValueError: it matched nothing, and ``assert not session.used("RCPT
    TO")`` passed whatever was sent."""
    __tracebackhide__ = True
    if not isinstance(command, str):
        raise TypeError(f"command must be a str such as 'RCPT', got {command!r}")
    verb = " ".join(command.upper().rstrip(":").split())
    verb = _TWO_WORD_FORMS.get(verb, verb)
    words = verb.split(" ")
    if not verb or (len(words) > 1 and (words[0] != "UID" or len(words) > 2)):
        example = " ".join(words[:2]) if words[0] == "UID" else words[0] or "RCPT"
        if "".join(words) in _SPLIT_VERBS:  # "START TLS", "AUTHENTI CATE"
            example = "".join(words)
        raise ValueError(
            f"{command!r} is not a command verb: give the verb alone, such as "
            f"{example!r} (an IMAP UID command by both words, 'UID FETCH')"
        )
    return verb


_TWO_WORD_FORMS = {"MAIL FROM": "MAIL", "RCPT TO": "RCPT"}
#: Verbs a user may write as two words: the error suggests them whole.
_SPLIT_VERBS = frozenset({"STARTTLS", "AUTHENTICATE", "NAMESPACE", "UNSELECT"})


def _is_a(sent: str, command: str) -> bool:
    """Whether the command verb ``sent`` is an upper-cased ``command``: an
    IMAP ``UID STORE`` is also a ``STORE`` and a ``UID`` command."""
    return sent in (command, f"UID {command}") or sent.startswith(f"{command} ")


@dataclasses.dataclass(slots=True)
class Exchange:
    """One step of the conversation: what the client sent and what we replied.

    ``line`` is the client's line as text (never the DATA content, and with
    AUTH secrets masked); ``replies`` are the server's reply lines, several for
    a multi-line reply such as the one to EHLO.
    """

    kind: ExchangeKind
    line: str
    time: float
    """When the client's line was read (or the greeting sent), as
    ``time.time()``: a float keeps a long transcript small; see `at`."""
    replies: list[str] = dataclasses.field(default_factory=list)
    injected: bool = False
    """True when the reply came from a fault a test injected."""
    tag: str | None = None
    """The IMAP command's tag (``"a1"``), shown before `line` in `lines`;
    None for other protocols and untagged lines."""
    # While a delay rule holds the reply: read then, the transcript said no
    # reply (or no greeting) would come, when it was only late.
    _delayed: bool = dataclasses.field(default=False, repr=False, compare=False)

    @property
    def at(self) -> datetime.datetime:
        """`time` as an aware UTC datetime."""
        return datetime.datetime.fromtimestamp(self.time, datetime.timezone.utc)

    @property
    def command(self) -> str | None:
        """The command verb in upper case (``"MAIL"``), or None for the
        greeting, a notice, AUTH continuation lines and message content, and
        for a note in brackets where a command would be (one that never
        ran)."""
        if self.kind != "command" or self.line.startswith("["):
            return None
        return _verb_of(self.line.split(" ", 1)[0])

    @property
    def argument(self) -> str | None:
        """Everything after the verb, or None (also for a note in
        brackets, which has no verb)."""
        if self.kind != "command" or " " not in self.line or self.line.startswith("["):
            return None
        return self.line.split(" ", 1)[1]

    @property
    def code(self) -> int | None:
        """The SMTP reply code (of the last reply line); None without a
        reply, and for POP3 and IMAP, whose replies have no codes."""
        if not self.replies:
            return None
        head = self.replies[-1][:3]
        return int(head) if head.isdigit() else None

    def _accepted(self) -> bool:
        """Whether the server took the command: its reply is no refusal
        (a 4xx or 5xx code, or none at all)."""
        code = self.code
        return code is not None and code < 400

    @property
    def reply(self) -> str:
        """The reply text, lines joined with newlines, without what frames
        them: SMTP's codes; POP3's ``+OK`` or ``-ERR`` and the final ``.``
        of a listing; IMAP's tag, ``*`` or ``+`` (IMAP's ``OK``, ``NO`` and
        ``BAD`` stay: they are its only status)."""
        return "\n".join(line[4:] for line in self.replies)

    @contextlib.contextmanager
    def _delaying(self) -> Iterator[None]:
        """Its reply is late (a delay rule holds it) for as long as this
        lasts: `lines` says so (see ``_delayed``)."""
        self._delayed = True
        try:
            yield
        finally:
            self._delayed = False

    def lines(self) -> list[str]:
        """The exchange as ``C:`` / ``S:`` lines, as in an RFC transcript.

        For display: control characters and line separators the client sent
        are escaped (``\\x1b``, ``\\u2028``), so that a client can never
        forge a line; `line` and `replies` keep them as received.
        """
        line = self.line if self.tag is None else f"{self.tag} {self.line}"
        mark = "  [injected]" if self.injected else ""
        if self.kind == "greeting" and self.injected and not self.replies:
            # A hang or disconnect at CONNECT: without a line, the report
            # showed a server that closed (or stayed silent) for no reason.
            if self._delayed:
                return ["S: (none yet)  [injected: greeting delayed]"]
            return ["S: (none)  [injected: no greeting]"]
        if self.kind in ("greeting", "notice"):  # no client line
            out = []
        elif self.injected and not self.replies:
            # A fault took the reply away (a hang, a disconnect), or holds
            # it (a delay): say so where the reply would be.
            missing = "reply delayed" if self._delayed else "no reply"
            out = [f"C: {printable(line)}  [injected: {missing}]"]
        else:
            out = [f"C: {printable(line)}"]
        out.extend(f"S: {printable(reply)}{mark}" for reply in self.replies)
        return out


@dataclasses.dataclass(slots=True)
class POP3Exchange(Exchange):
    """A POP3 step: its replies have no codes."""

    @property
    def code(self) -> int | None:
        return None

    def _accepted(self) -> bool:
        statuses = [r for r in self.replies if r.startswith(("+OK", "-ERR"))]
        return bool(statuses) and statuses[-1].startswith("+OK")

    @property
    def reply(self) -> str:
        # Status lines lose their +OK/-ERR wherever they are (a goodbye on
        # a timeout follows the last command's reply); a listing's lines
        # stay, its final "." goes (a listed line is never a lone dot: it
        # would be sent as "..").
        return "\n".join(
            line.partition(" ")[2] if line.startswith(_POP3_STATUS) else line
            for line in self.replies
            if line != "."
        )


_POP3_STATUS = ("+OK", "-ERR", "+ ")


@dataclasses.dataclass(slots=True)
class IMAPExchange(Exchange):
    """An IMAP step: its replies have no codes (a numeric tag, as
    Thunderbird sends, is not one)."""

    @property
    def code(self) -> int | None:
        return None

    @property
    def command(self) -> str | None:
        """As for every exchange, and a UID command by its two words
        (``"UID FETCH"``), as the server names it in its completions: its
        verb alone would make ``used("UID STORE")`` never true."""
        if self.kind != "command" or self.line.startswith("["):
            return None
        words = self.line.split(" ", 2)
        verb = _verb_of(words[0])
        if verb == "UID" and len(words) > 1 and words[1]:
            return f"UID {_verb_of(words[1])}"
        return verb

    @property
    def argument(self) -> str | None:
        """Everything after the verb (both words of a UID command), or None."""
        command = self.command
        if command is None:
            return None
        words = command.count(" ") + 1
        parts = self.line.split(" ", words)
        return parts[words] if len(parts) > words else None

    def _accepted(self) -> bool:
        # The tagged completion: neither untagged ("*") nor a continuation.
        completions = [r for r in self.replies if not r.startswith(("*", "+"))]
        if not completions:
            return False
        words = completions[-1].split(" ", 2)
        return len(words) > 1 and words[1].upper() == "OK"

    @property
    def reply(self) -> str:
        return "\n".join(_imap_text(line) for line in self.replies)


def _imap_text(line: str) -> str:
    """An IMAP response line without its tag, ``*`` or ``+``. The tag is
    taken from the line: the completion of IDLE comes after the client's
    DONE, and that of AUTHENTICATE after the client's response, exchanges
    of their own with no tag."""
    if line.startswith(("* ", "+ ")):
        return line[2:]
    if line == "+" or line.startswith("["):  # an empty continuation; a note
        return line.removeprefix("+")
    return line.partition(" ")[2]


class Session:
    """One connection (SMTP, or POP3 and IMAP on the read side), whether or
    not it delivered or read a message."""

    # The hostname of the sink that served it, for the Received header of a
    # release: a message may be released through another sink's mailbox.
    # A class default: set per connection, with no __init__ argument.
    _served_by: str | None = None
    # Why the server ended it, when the end's word alone does not say
    # (shown after it in `summary`). A class default, as _served_by.
    _end_detail: str | None = None

    def __init__(
        self,
        peer: tuple[str, int],
        started_at: datetime.datetime,
        protocol: SessionProtocol = "SMTP",
    ) -> None:
        self.protocol: SessionProtocol = protocol
        """``"SMTP"``, ``"POP3"`` or ``"IMAP"``; ``"deliver"`` for the stand-in
        session of mail put in with `Mailbox.deliver`."""
        self.peer: tuple[str, int] = peer
        """The client's (address, port)."""
        self.started_at: datetime.datetime = started_at
        self.ended_at: datetime.datetime | None = None
        self.end: EndReason | None = None
        """How the connection ended, or None while it is open."""
        self.ehlo: str | None = None
        """The name the client gave in its last accepted EHLO or HELO."""
        self.esmtp: bool = False
        """True if the client greeted with EHLO (extended SMTP)."""
        self._tls: TLSInfo | None = None
        # Set while a STARTTLS handshake is under way (see `tls`).
        self._tls_settled: threading.Event | None = None
        self._tls_thread = 0
        self.tls_error: str | None = None
        """Why the TLS handshake failed (`end` is then ``"tls-failed"``),
        e.g. ``"TLSV1_ALERT_UNKNOWN_CA: the client rejected the sink's
        certificate (...)"``, or why a client that began TLS on a plain-text
        port got none, and what to do (`end` is then
        ``"tls-on-plain-port"``); None otherwise."""
        self.auth: AuthInfo | None = None
        """The last AUTH attempt (see `auth_attempts` for all)."""
        self._auth_attempts: list[AuthInfo] = []
        self._transcript: list[Exchange] = []
        self._messages: list[Message] = []
        # Every message, those since dropped from `_messages` too; of them,
        # those of earlier tests (or before `clear()`), which `summary`
        # leaves out as the test's reports do.
        self._message_count = 0
        self._earlier_messages = 0

    # -- read side -------------------------------------------------------

    @property
    def tls(self) -> TLSInfo | None:
        """How the session is encrypted, or None for plain text.

        A client's ``starttls()`` returns as soon as *its* side of the
        handshake is done, a moment before the server's: read right then,
        this waits (up to 10 seconds) until the server has finished the
        handshake, so the value is settled when the client call has returned.
        """
        settled = self._tls_settled
        # Never on the server thread, which is the one to end the wait.
        if settled is not None and threading.get_ident() != self._tls_thread:
            settled.wait(TLS_SETTLE_SECONDS)
        return self._tls

    @tls.setter
    def tls(self, info: TLSInfo | None) -> None:
        self._tls = info

    @property
    def transcript(self) -> tuple[Exchange, ...]:
        """Every exchange so far, in order."""
        return tuple(self._transcript)

    @property
    def messages(self) -> tuple[Message, ...]:
        """The messages this connection delivered, in order.

        On a connection kept open from test to test, only those of the
        current test (or since ``SMTPSink.clear()``): earlier ones are dropped
        with the rest of the earlier tests' mail."""
        return tuple(self._messages)

    @property
    def message_count(self) -> int:
        """How many messages this connection delivered since it opened,
        those `messages` no longer holds included (an earlier test's, on a
        connection kept open from test to test)."""
        return self._message_count

    @property
    def auth_attempts(self) -> tuple[AuthInfo, ...]:
        return tuple(self._auth_attempts)

    @property
    def authenticated_as(self) -> str | None:
        """The user name of the successful AUTH, if any."""
        auth = self.auth
        return auth.username if auth is not None and auth.success else None

    @property
    def commands(self) -> list[str]:
        """The command verbs the client sent, in order (``["EHLO", "MAIL", ...]``)."""
        return [c for c in (e.command for e in self._transcript) if c is not None]

    @property
    def codes(self) -> list[int]:
        """The final reply code of every exchange, in order (greeting
        first); empty for POP3 and IMAP, whose replies have no codes."""
        return [c for c in (e.code for e in self._transcript) if c is not None]

    def used(self, command: str) -> bool:
        """Whether the client sent ``command`` (case-insensitive) at all. On
        IMAP, ``"STORE"`` is also a ``UID STORE`` (the same change, by UID),
        and ``"UID"`` any UID command; `before` and `replies_to` match
        alike."""
        return self._first_index(command) is not None

    def before(self, first: str, second: str) -> bool:
        """Whether ``first`` was sent and accepted, before any ``second``
        was sent.

        ``session.before("STARTTLS", "AUTH")`` asks "was TLS up before the
        password crossed the wire?": a refused STARTTLS does not count, nor
        does an AUTH refused in the end (after its challenges) for
        ``before("AUTH", "MAIL")``.
        """
        at_first = self._first_index(first, accepted=True)
        if at_first is None:
            return False
        at_second = self._first_index(second)
        return at_second is None or at_first < at_second

    def replies_to(self, command: str) -> list[Exchange]:
        """The exchanges for one verb, e.g. every ``RCPT``."""
        command = _verb(command)
        return [
            e
            for e in self._transcript
            if e.command is not None and _is_a(e.command, command)
        ]

    def _first_index(self, command: str, accepted: bool = False) -> int | None:
        """Where ``command`` was first sent in the transcript (and, with
        ``accepted``, taken by the server); None if never."""
        command = _verb(command)
        transcript = self._transcript
        for index, exchange in enumerate(transcript):
            sent = exchange.command
            if sent is None or not _is_a(sent, command):
                continue
            if not accepted:
                return index
            # An AUTH's outcome is the reply to its last response; an IMAP
            # IDLE's, the completion its DONE gets.
            last = exchange
            for following in transcript[index + 1 :]:
                if following.kind != "auth-response" and not (
                    sent == "IDLE" and following.command == "DONE"
                ):
                    break
                last = following
            if last._accepted():
                return index
        return None

    def format_transcript(self) -> str:
        """The transcript as ``C:``/``S:`` lines (escaped as in
        `Exchange.lines`)."""
        return "\n".join(_lines(self._transcript))

    def _summary_and_transcript(self) -> tuple[str, str]:
        """`summary` and `format_transcript` as of one moment: read one
        after the other, a session that ended in between showed
        ``end=open`` above a transcript ending in ``221 Bye``. The end
        comes after its last line, so a summary that did not change while
        the transcript was read goes with it. A session that keeps changing
        (messages still arriving) gets three tries, then the last read."""
        summary = self.summary()
        for _ in range(3):
            transcript = self.format_transcript()
            again = self.summary()
            if again == summary:
                break
            summary = again
        return summary, transcript

    def summary(self) -> str:
        """One line, the same in every report: peer, EHLO name, TLS, the
        authenticated user, the number of messages (on a connection kept
        open from test to test, the current test's) and how it ended.

        Client input is escaped, and it never waits on a TLS handshake
        under way (unlike `tls`): reports must not stall.
        """
        state: str = self.end or "open"
        if self.tls_error is not None:
            state += f" ({self.tls_error})"
        elif self._end_detail is not None:
            state += f" ({self._end_detail})"
        who = f"{self.authenticated_as!r}{self._failed_logins()}"
        if self.protocol != "SMTP":
            # The read side: who logged in matters, not an EHLO name.
            return printable(
                f"{self.protocol} {format_address(*self.peer[:2])} "
                f"tls={'yes' if self._tls else 'no'} "
                f"user={who} end={state}"
            )
        return printable(
            f"{format_address(*self.peer[:2])} ehlo={self.ehlo!r} "
            f"tls={'yes' if self._tls else 'no'} "
            f"auth={who} messages={self._message_count - self._earlier_messages} "
            f"end={state}"
        )

    def _failed_logins(self) -> str:
        """`` (failed: LOGIN 'shop')`` when the session's last login failed:
        a bare ``None`` would read as "never tried". (A login that succeeded
        before STARTTLS, which forgets it, is not a failure.) User names
        only; no password is ever kept."""
        attempts = self._auth_attempts
        if not attempts or attempts[-1].success or self.authenticated_as:
            return ""
        last = attempts[-1]
        failed = sum(not attempt.success for attempt in attempts)
        count = f"{failed} failed, last" if failed > 1 else "failed:"
        user = "" if last.username is None else f" {last.username!r}"
        why = ", mailbox in use" if last.in_use else ""
        return f" ({count} {last.mechanism}{user}{why})"

    def __repr__(self) -> str:
        head = f"<Session {self.summary()}>"
        body = "\n".join("  " + line for line in _lines(self._transcript))
        return f"{head}\n{body}" if body else head

    # -- write side (server thread only) ------------------------------------

    def _append(self, exchange: Exchange) -> None:
        self._transcript.append(exchange)

    def _tls_starting(self) -> None:
        """A STARTTLS handshake begins: `tls` readers wait for its end."""
        self._tls_thread = threading.get_ident()
        self._tls_settled = threading.Event()

    def _tls_started(self, info: TLSInfo | None) -> None:
        """The handshake ended (``info`` None if it failed)."""
        if info is not None:
            self._tls = info
        settled, self._tls_settled = self._tls_settled, None
        if settled is not None:
            settled.set()


def _lines(transcript: Iterable[Exchange]) -> list[str]:
    return [line for exchange in transcript for line in exchange.lines()]

"""POP3: a complete RFC 1939 server over the recipient mailboxes.

Loop side: `POP3Server` and its connections run on the sink's server thread.
It is started on first use of ``Mailbox.pop3`` (`Mailbox._read_side`, on the
test's thread, through ``SMTPSink.attach``) and closed with the sink; it holds the
`Store`, never the sink. `POP3Endpoint`, what a test gets, is test side.

What it serves: the INBOX of the user who logs in (a mailbox key, see
``MailStore.key``), as it is at login (a snapshot, RFC 1939's maildrop).
Deletions happen at QUIT only (the UPDATE state, as Dovecot does with its
default settings): a connection that drops first deletes nothing. The
``\\Seen`` flags set by RETR land when the session ends, at QUIT or not (as
on Dovecot). The maildrop is locked for one session at a
time (``Account.holder``): a second one gets ``-ERR [IN-USE]``.

Every connection is a `Session` (protocol ``"POP3"``) with the transcript
model of SMTP: one `Exchange` per command, secrets masked before anything is
kept (PASS, the APOP digest, AUTH PLAIN data), multi-line replies summarised
(a message is counted, never copied). Fault rules are asked at the
``POP3:*`` stages (`_faults.steps`) and carried out here. Sessions opened
under an earlier test (an older ``MailStore.generation``) are ended when the
next test starts, from a listener of the mailboxes that exists only while
connections are open: nothing polls.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from ._content import dot_stuffed_parts
from ._credentials import masked
from ._endpoint import ReadSideEndpoint
from ._mailstore import INBOX, check_login, is_utf8, names_a_mailbox, wire_bytes
from ._readside import (
    BUGS_IN_A_ROW,
    SEND_SLICE,
    Closed,
    ReadSideConnection,
    ReadSideServer,
)
from ._session import AuthInfo, EndReason, POP3Exchange
from ._text import plural, printable, printable_sent, visible_start

if TYPE_CHECKING:
    from ._mailstore import Account, Folder, StoredMessage

# RFC 2449 section 4: a command line is at most 255 octets with its CRLF.
LINE_LIMIT = 255
# An AUTH continuation line may be longer (RFC 5034 puts no limit on it).
_AUTH_LIMIT = 12288
# Unread input above this pauses reading (pipelined commands): bounded memory.
_BUFFER_LIMIT = 65536
# Lines of a LIST or UIDL reply kept in the transcript.
_SHOWN_LINES = 10
_SEEN = "\\Seen"

_END_OF_TEST = (
    "-ERR [SYS/TEMP] Session ended: a new test started "
    "(the sink ends the read-side sessions of earlier tests)"
)
_IDLE = "-ERR [SYS/TEMP] Disconnected for inactivity"
_TLS_FIRST = "-ERR [AUTH] TLS is required first: send STLS"
_LOGIN_FAILED = "-ERR [AUTH] Authentication failed"
_LOG_IN_FIRST = "-ERR Log in first (USER and PASS, APOP or AUTH)"
_LOGGED_IN = "-ERR Not valid after login"

# What a line may hold: printable ASCII and UTF-8, tab, nothing else.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
_VERB = re.compile(r"[A-Za-z]{1,8}\Z")
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{32}\Z")

State = Literal["authorization", "transaction"]

_AUTHORIZATION_VERBS = frozenset({"USER", "PASS", "APOP", "AUTH", "STLS"})
_TRANSACTION_VERBS = frozenset(
    {"STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "RSET", "NOOP"}
)
_ANY_STATE_VERBS = frozenset({"CAPA", "QUIT"})
VERBS = _AUTHORIZATION_VERBS | _TRANSACTION_VERBS | _ANY_STATE_VERBS
#: POP3 commands of extensions the sink does not offer (RFC 6856's UTF8 and
#: LANG, RFC 2449's XTND, SDPS, LAST): no password, shown as sent.
_OTHER_SERVERS_VERBS = frozenset({"UTF8", "LANG", "LAST", "XTND", "SDPS", "XSENDER"})
# Commands that take no argument (RFC 1939, RFC 2449): one given is refused,
# not ignored as Dovecot ignores it, so that a client's malformed command
# shows in its test. STLS says so itself, after whether it is offered.
_WITHOUT_ARGUMENT = frozenset({"STAT", "NOOP", "RSET", "QUIT", "CAPA"})


# -- secrets -------------------------------------------------------------------
#
# No form of a credential may reach any output: the client's line is masked
# before it is recorded, and no reply echoes what the client sent.

# Anything before the verb that is no ASCII letter (controls, spaces, DEL,
# bytes that are not UTF-8, a no-break space...): a server refuses the
# line, but what follows may still be a password.
_LEADING_JUNK = re.compile(r"\A[^A-Za-z]+")


def mask_secrets(text: str) -> str:
    """A POP3 command line with its secrets masked: ``PASS ****``, ``APOP
    ann ****``, ``AUTH PLAIN ****``, ``USER ann ****`` (whatever follows
    the name); any other line unchanged. A line that
    merely starts like one of those (other separators, junk before the
    verb) is masked after its first four letters."""
    stripped = _LEADING_JUNK.sub("", text, count=1)
    # Kept in front of what is shown: " PASS pw" read as a PASS the sink
    # refused ("-ERR Unknown command"), where the blank was why.
    lead = text[: len(text) - len(stripped)]
    head = stripped[:4].upper()
    if head == "USER":
        # A client that puts the password after the user name ("USER ann
        # pw"): the name may be shown, what follows it never is.
        words = stripped.split()
        return f"{lead}{words[0]} {words[1]} ****" if len(words) > 2 else text
    if head not in ("PASS", "APOP", "AUTH"):
        return text
    if not stripped[4:].strip():
        # Nothing after it ("PASS ", poplib's pass_("") of an unset
        # password): "PASS ****" said a password was sent.
        return text
    words = stripped.split(" ")
    verb = words[0]
    if verb.upper() != head:  # glued to what follows, or another separator
        # Glued ("PASSsecret"): shown glued on, as IMAP shows "LOGIN****",
        # so that it does not read as the PASS command the server ran.
        glued = not (stripped[4].isspace() or stripped[4] == "\x00")
        return f"{lead}{stripped[:4]}{'' if glued else ' '}****"
    if head == "APOP" and len(words) == 3 and words[1]:
        # The user name may be shown; the digest never is.
        return f"{lead}{verb} {words[1]} ****"
    if head == "AUTH" and words[1].upper() in ("PLAIN", "LOGIN", "CRAM-MD5"):
        secret = " ".join(words[2:]).strip()
        return (
            lead + " ".join(words[:2]) + (" ****" if secret else " " * (len(words) > 2))
        )
    return f"{lead}{verb} ****"


def _shown(raw: bytes) -> str:
    """A client line as it goes into the transcript: secrets masked first,
    then escaped so it prints on one line."""
    text = raw.decode("utf-8", "surrogateescape")
    return printable_sent(mask_secrets(text))


# -- the message as POP3 sends it -------------------------------------------------


def top_of(wire: bytes, lines: int) -> bytes:
    """The header, the blank line and the first ``lines`` lines of the
    body (RFC 1939 TOP): ``wire`` itself when that is all of it, else one
    slice of it (a large message is not copied more)."""
    if wire.startswith(b"\r\n"):  # no header: the blank line comes first
        cut = 2
    else:
        end = wire.find(b"\r\n\r\n")
        if end < 0:  # no body at all
            return wire
        cut = end + 4
    if lines == 0:
        return wire[:cut]
    for _ in range(lines):
        found = wire.find(b"\r\n", cut)
        if found < 0:
            return wire
        cut = found + 2
    return wire if cut == len(wire) else wire[:cut]


def uidl_of(uidvalidity: int, stored: StoredMessage) -> str:
    """A copy's unique id: its UID then the folder's UIDVALIDITY, eight hex
    digits each in lower case, as Dovecot's default ``pop3_uidl_format``
    (``%08Xu%08Xv``) writes them. Stable for the sink's life and never
    shared by two copies, as UIDs are never reused."""
    return f"{stored.uid:08x}{uidvalidity:08x}"


def error_reply(code: int, text: str | None) -> str:
    """A fault's ``code`` and ``text`` as a POP3 reply: 4xx is
    ``-ERR [SYS/TEMP]``, 5xx ``-ERR [SYS/PERM]`` (RFC 3206)."""
    kind = "SYS/TEMP" if code < 500 else "SYS/PERM"
    if text is None:
        text = "Injected temporary failure" if code < 500 else "Injected failure"
    return f"-ERR [{kind}] {' '.join(text.split())}"


def _spacing_error(verb: str, line: str) -> str | None:
    """Why ``line``'s arguments are not separated as RFC 1939 has it (one
    space each, none after the last), or None. Dovecot skips extra spaces
    between arguments and refuses one at the end only after a number; the
    sink refuses both, saying where, as its IMAP server does: otherwise
    ``USER  ann`` would log in a user named " ann" and ``RETR 1 `` would be
    an invalid number with the reason invisible. PASS is exempt (a password
    may hold spaces, RFC 1939), and a lone space after a verb that takes no
    argument (``STAT ``) is let through, as on Dovecot."""
    if verb == "PASS":
        return None
    data = line.encode("utf-8")  # offsets in octets, as on the wire
    double = data.find(b"  ")
    if double >= 0:
        return (
            f"-ERR A second space at byte {double + 1}: arguments are separated by one"
        )
    if data.endswith(b" ") and data.count(b" ") > 1:
        return (
            f"-ERR A space at the end of the line (byte {len(data) - 1}): "
            "nothing may follow the last argument"
        )
    return None


# -- the server ----------------------------------------------------------------------


class POP3Server(ReadSideServer["_Connection"]):
    """The POP3 server of one sink (a service attached to its loop)."""

    def new_connection(self) -> _Connection:
        return _Connection(self)


# -- one connection ------------------------------------------------------------------


class _Connection(ReadSideConnection):
    """One POP3 client: reads lines, runs commands, records the session."""

    PROTOCOL = "POP3"
    VERBS = frozenset(VERBS)
    EXCHANGE = POP3Exchange
    BUFFER_LIMIT = _BUFFER_LIMIT
    END_OF_TEST = _END_OF_TEST
    STOPPING = "-ERR [SYS/TEMP] Server shutting down"
    INACTIVE = _IDLE
    server: POP3Server

    def __init__(self, server: POP3Server) -> None:
        super().__init__(server)
        # Since an AUTH command: a one-word line that is no command is
        # taken as its (misplaced) response and masked.
        self._after_auth = False
        # After a USER command (or a PASS without its argument): a line that
        # is no command is taken as the password alone, and masked
        # (`_recorded`).
        self._password_may_follow = False
        # Right after a login: a word alone may be the password or SASL
        # response sent again, or the rest of one wrapped (`_recorded`).
        self._just_logged_in = False
        # AUTHORIZATION, then TRANSACTION with the maildrop snapshot.
        self.state: State = "authorization"
        self._user: str | None = None  # given with USER, awaiting PASS
        self._timestamp = ""
        self._account: Account | None = None
        self._folder: Folder | None = None
        self._drop: list[StoredMessage] = []
        self._deleted: set[int] = set()
        self._seen: set[int] = set()

    def _finish(self) -> None:
        """Leave the server's books and the maildrop."""
        super()._finish()
        self._leave_maildrop()

    def _mark_end(self, reason: EndReason) -> None:
        # The maildrop's books first, however the session ends (an idle
        # timeout says its last line before the connection closes): a test
        # that waited for the end finds them.
        self._leave_maildrop()
        super()._mark_end(reason)

    def _leave_maildrop(self) -> None:
        """Unlock the maildrop, keep DELE's marks for the test's hints, set
        RETR's ``\\Seen``; none of it twice (`_update` ran at QUIT)."""
        account = self._account
        if account is not None:
            with self.mail.lock:
                if account.holder is self:
                    account.holder = None
                self._remember_unapplied_marks(account)
                # RETR's \Seen stays however the session ends, as on
                # Dovecot (a poller that closes without QUIT, an idle
                # timeout): only the deletions wait for QUIT.
                seen = self._take_seen(self._seen)
            self._account = None
            if seen:
                self.store.mail_changed()

    def _remember_unapplied_marks(self, account: Account) -> None:
        """Keep what DELE marked in a session that ends without a QUIT that
        applied it (hold the lock): correctly not deleted, and the cause a
        test's ``assert_deleted`` would otherwise leave to the transcript.
        (`_update` lets go of the account, so after a QUIT nothing is kept.)"""
        if self._deleted and self.record is not None and self.mail.remember_removed:
            account.marked_without_quit.append((self.record, self.marked()))

    # -- the conversation -----------------------------------------------------------

    async def _serve(self) -> None:
        try:
            if self.settings.tls == "implicit" and not await self._start_tls(True):
                return
            peer = self.record.peer[0] if self.record else ""
            if await self._faults("POP3:CONNECT", [peer], last=True):
                raise Closed
            self._timestamp = (
                f"<{os.getpid()}.{secrets.token_hex(6)}.{int(time.time())}"
                f"@{self.settings.hostname}>"
            )
            await self._reply(f"+OK pytest-smtpsink POP3 ready {self._timestamp}")
            while not self._closing:
                line = await self._read_pop3_command()
                if line is None:
                    break
                before = self._current
                try:
                    await self._handle(line)
                except (Closed, OSError):
                    raise
                except Exception as error:
                    await self._answer_bug(line[0], error, before is self._current)
                else:
                    self._bugs_in_a_row = 0
        except (Closed, ConnectionError):
            pass
        finally:
            self._finish()
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.close()

    async def _read_pop3_command(self) -> tuple[bytes, int] | None:
        """The next command line without its line end, and its length in
        octets with it (an overlong one cut, see `_read_line`)."""
        # Read to the AUTH limit: a PASS with a long token (an app password,
        # a JWT) goes past RFC 2449's 255 octets, and Dovecot takes it.
        read = await self._read_command(_AUTH_LIMIT)
        if read is None:
            return None
        line, total = read
        # One line end only: a CR before it is the line's, so "STAT" and a
        # CR is refused (as Dovecot refuses it) instead of read as STAT.
        return line.removesuffix(b"\n").removesuffix(b"\r"), total

    async def _answer_bug(self, raw: bytes, error: Exception, unrecorded: bool) -> None:
        """The last resort for an unexpected error in running the command
        ``raw``: logged, and answered ``-ERR [SYS/PERM]`` (RFC 3206) in the
        command's exchange (``unrecorded``: one stands for it, as the
        failure may be in masking it); the session goes on, unless that
        happened `BUGS_IN_A_ROW` times in a row."""
        verb = raw.split(b" ", 1)[0].decode("ascii", "replace").upper()
        known = verb in VERBS
        # Only a known command is named, and none that logs in has its
        # error's text logged.
        secret = not known or verb in ("USER", "PASS", "APOP", "AUTH")
        text = self._server_bug(error, verb if known else "a command", secret)
        if unrecorded:
            self._append("command", "[a command the sink failed to record]")
        reply = f"-ERR [SYS/PERM] {text}"
        if self._bugs_in_a_row >= BUGS_IN_A_ROW:
            await self._reply_and_end(
                "server-closed",
                f"{reply}; closing after {self._bugs_in_a_row} in a row",
            )
            raise Closed
        await self._reply(reply)

    # -- recording and replying -------------------------------------------------------

    async def _reply_lines(self, first: str, lines: Sequence[str]) -> None:
        """A multi-line reply of short lines (CAPA, LIST, UIDL); long
        listings are shortened in the transcript only."""
        self._record_reply(first)
        shown = lines[:_SHOWN_LINES]
        for line in shown:
            self._record_reply(line)
        if len(lines) > len(shown):
            self._record_reply(f"[... {len(lines) - len(shown)} more lines]")
        self._record_reply(".")
        await self._send("\r\n".join([first, *lines, ".", ""]).encode("utf-8"))

    # -- faults (the rules decide, this carries out) ------------------------------------

    async def _faults(
        self,
        stage: str,
        subjects: Sequence[str],
        last: bool = False,
        matching_only: bool = False,
    ) -> bool:
        """Carry out what the rules decide at ``stage``: True if a fault
        answered instead. Its reply is the ``last`` of the session at the
        greeting and at QUIT."""
        planned = self._planned(stage, subjects, matching_only)
        reply = await self._carry_out(planned)
        if reply is None:
            return False
        line = error_reply(reply.code, reply.text)
        if last or reply.code == 421:
            # 421 is SMTP's "closing": it closes here too, as the fault API
            # says, so that a test can make the server go away mid-session.
            await self._reply_and_end("server-closed", line, injected=True)
            if not last:
                raise Closed
        else:
            await self._reply(line, injected=True)
        return True

    def _subjects(self) -> list[str]:
        """What ``match`` compares with: the user (once known). After login,
        the name the client gave and its mailbox's (``Ann@...`` is
        ``ann@...``'s mailbox, ``ann+news@...`` too with a recipient
        delimiter): a rule that fired at PASS fires at RETR too."""
        if self._account is not None:
            return [
                s for s in dict.fromkeys((self._login_name, self._account.user)) if s
            ]
        return [self._user] if self._user else []

    _login_name = ""

    # -- commands ----------------------------------------------------------------------

    async def _handle(self, read: tuple[bytes, int]) -> None:
        raw, total = read
        password_may_follow, self._password_may_follow = (
            self._password_may_follow,
            False,
        )
        long_password = (
            self.state == "authorization"
            and total <= _AUTH_LIMIT
            and raw[:5].upper() == b"PASS "
        )
        if total > LINE_LIMIT and not long_password:
            # Checked first: a long SASL response (a token, a generated
            # password) shown in part would put its first bytes on record.
            try:
                start: str | None = raw.decode("utf-8")
            except UnicodeDecodeError:
                start = None
            if self._after_auth and self._stray_auth_response(start):
                self._append("auth-response", f"**** [{total} bytes in all]")
            elif self.state == "authorization" or self._just_logged_in:
                # Before login, only a command word is shown: the rest may
                # be a password or token (PASS, or a misspelt PAS or LOGIN
                # whose line a long token made too long); right after it, a
                # long password sent again (PASS takes one of 12,288 octets).
                self._just_logged_in = False
                first = "" if start is None else start.strip().partition(" ")[0]
                shown_word = (
                    f"{first} "
                    if not password_may_follow and _VERB.match(first)
                    else ""
                )
                self._append("command", f"{shown_word}**** [{total} bytes in all]")
            else:
                whole = raw.decode("utf-8", "surrogateescape")
                mask = self.server.mask_secrets
                if mask is not None:
                    # Masked whole, then cut: cut first, a password across
                    # the cut was shown in part.
                    whole = mask(whole)
                shown = _shown(whole[:64].encode("utf-8", "surrogateescape"))
                self._append("command", f"{shown}... [{total} bytes in all]")
            await self._reply(
                f"-ERR Line too long: {total} octets (RFC 2449 allows 255 with CRLF)"
            )
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if self._after_auth and self._stray_auth_response(text):
            self._append("auth-response", "****")
            await self._reply("-ERR Unknown command")
            return
        self._after_auth = False
        recorded = self._recorded(raw, text, password_may_follow)
        self._append("command", visible_start(recorded))
        if self.generation != self.mail.generation:  # a new test started
            self.end_stale()
            raise Closed
        if text is None:
            await self._reply("-ERR The command line is not UTF-8")
            return
        verb, _, arg = text.partition(" ")
        if not _VERB.match(verb):
            if _CONTROL.search(text):
                await self._reply("-ERR Control characters in the command line")
            else:
                await self._reply("-ERR Unknown command")
            return
        verb = verb.upper()
        if verb not in VERBS:
            # Named, as Dovecot does, once logged in: before, the word may be
            # a password sent alone (masked in the transcript, see _recorded).
            named = (
                f": {verb}"
                if self.state == "transaction" and recorded != "****"
                else ""
            )
            await self._reply(f"-ERR Unknown command{named}")
            return
        if _CONTROL.search(arg):
            await self._reply("-ERR Control characters in the arguments")
            return
        if verb == "AUTH":
            self._after_auth = True
        # The next line may be the password alone: after USER, and after a
        # PASS that came without it.
        self._password_may_follow = verb == "USER" or (
            verb == "PASS" and not arg.strip()
        )
        if self.state == "authorization" and verb in _TRANSACTION_VERBS:
            await self._reply(_LOG_IN_FIRST)
            return
        if self.state == "transaction" and verb in _AUTHORIZATION_VERBS:
            await self._reply(_LOGGED_IN)
            return
        stage = f"POP3:{verb}"
        subjects = self._subjects()
        if verb in ("USER", "APOP"):
            subjects = [arg.split(" ")[0]] if arg else []
        elif verb in ("STLS", "AUTH"):  # AUTH's user: see _cmd_auth
            subjects = []
        if await self._faults(stage, subjects, last=verb == "QUIT"):
            if verb == "QUIT":
                raise Closed
            if verb == "PASS":  # refused as a wrong one is: USER again
                self._user = None
            return
        spacing = _spacing_error(verb, text)
        if spacing is not None:
            await self._reply(spacing)
            return
        if arg and verb in _WITHOUT_ARGUMENT:
            await self._reply(f"-ERR {verb} takes no argument")
            return
        await getattr(self, f"_cmd_{verb.lower()}")(arg)

    def _recorded(self, raw: bytes, text: str | None, password_may_follow: bool) -> str:
        """A command line as the transcript keeps it. A line that is no
        command may hold a password the sink does not know (any password
        opens a mailbox without an ``auth`` table; a wrong one is in no
        table): before login, a client whose ``PASS`` went missing after
        ``USER`` (the password alone), or misspelt (``PAS pw``, ``LOGIN ann
        pw``): its words after the first are masked. A word alone that is
        no command is masked before login, and right after it (a password
        sent again, a SASL response sent again or wrapped onto a second
        line); later, a typo (``STATS``) is shown."""
        just_logged_in, self._just_logged_in = self._just_logged_in, False
        secret_alone = self.state == "authorization" or just_logged_in
        mask = self.server.mask_secrets
        if mask is not None and text is not None and mask(text) != text:
            # The passwords the sink knows masked first, whole: cut to its
            # first word by the rules below, a passphrase kept it ("correct
            # ****"). The rules then mask what else may be a password (a
            # wrong one beside a known one).
            text = mask(text)
            raw = text.encode("utf-8", "surrogateescape")
        if text is None:  # not UTF-8: no command, perhaps a password
            if (self.state == "authorization" and password_may_follow) or (
                secret_alone and len(raw.split()) == 1
            ):
                return "****"
            return _shown(raw)
        first, _, rest = text.strip().partition(" ")
        if first.upper() in VERBS:
            return _shown(raw)
        if self.state == "authorization":
            if password_may_follow and first:
                return "****"  # the password, whatever its words
            if rest.strip():
                return f"{printable(first)} ****"
        if (
            secret_alone
            and first
            and not rest.strip()
            and first.upper() not in _OTHER_SERVERS_VERBS
        ):
            # A line of base64 wrapped at 76 columns: more may follow.
            self._just_logged_in = just_logged_in and len(first) == 76
            return "****"
        return _shown(raw)

    def _stray_auth_response(self, text: str | None) -> bool:
        """Whether a line after AUTH is a response the client sent without
        waiting (or after a refusal): one word that is no command."""
        if text is None:
            return True
        words = text.split()
        return len(words) == 1 and words[0].upper() not in VERBS

    # -- AUTHORIZATION ------------------------------------------------------------------

    async def _cmd_capa(self, arg: str) -> None:
        lines = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state == "authorization":
            # Login commands only before login, where they are valid (after
            # it they are refused); Dovecot's list drops them alike. Before
            # a required STLS none is (as IMAP's LOGINDISABLED says): no
            # USER, and SASL without a mechanism, as on Dovecot.
            if self._tls_missing():
                lines.append("SASL")
            else:
                lines[1:1] = ["USER"]
                lines.append("SASL PLAIN")
            if self.settings.tls in ("starttls", "starttls-required") and not self._tls:
                lines.append("STLS")
        lines.append("IMPLEMENTATION pytest-smtpsink")
        await self._reply_lines("+OK Capability list follows", lines)

    async def _cmd_stls(self, arg: str) -> None:
        if self._tls:  # after STLS, or on a POP3S port
            await self._reply("-ERR TLS is already active")
            return
        if self.settings.tls not in ("starttls", "starttls-required"):
            await self._reply("-ERR STLS is not offered (the sink has no STARTTLS)")
            return
        if arg:
            await self._reply("-ERR STLS takes no argument")
            return
        discarded = self._discard_plain_text("STLS")
        assert self.record is not None
        self.record._tls_starting()
        await self._reply("+OK Begin TLS negotiation")
        # And what came while the reply waited for the client to read (a
        # full write buffer): read after the handshake, it would pass for
        # what came over TLS. Nothing is awaited from here to start_tls(),
        # which stops the reading of plain text.
        discarded += self._discard_plain_text("STLS")
        self._note_discarded("STLS", discarded)
        if not await self._start_tls(False):
            raise Closed

    async def _cmd_user(self, arg: str) -> None:
        if self._tls_missing():
            await self._reply(_TLS_FIRST)
            return
        if not arg.strip():
            await self._reply("-ERR USER needs a user name")
            return
        if len(arg.split()) > 1:
            # Users are mail addresses: a second word is likely the
            # password, which must not become a user name in the session.
            await self._reply("-ERR USER takes one user name")
            return
        self._user = arg
        await self._reply("+OK Send PASS")

    async def _cmd_pass(self, arg: str) -> None:
        if self._tls_missing():
            await self._reply(_TLS_FIRST)
            return
        if self._user is None:
            await self._reply("-ERR Send USER first")
            return
        if not arg:
            # Not a login attempt (even where any password opens the
            # maildrop): the user stays given, for a PASS with a password.
            await self._reply("-ERR PASS needs a password")
            return
        user, self._user = self._user, None
        await self._login("USER", user, check_login(self.settings.auth, user, arg))

    async def _cmd_apop(self, arg: str) -> None:
        if self._tls_missing():
            await self._reply(_TLS_FIRST)
            return
        words = arg.split(" ")
        if len(words) > 2:
            # RFC 1939: arguments are separated by a space, so a name has
            # none (as USER refuses one); the digest is never echoed.
            await self._reply(
                "-ERR APOP takes a user name and an MD5 digest, not "
                f"{len(words)} arguments"
            )
            return
        user, digest = words if len(words) == 2 else ("", "")
        if not user or not _HEX_DIGEST.match(digest):
            await self._reply(
                "-ERR APOP needs a user name and an MD5 digest (32 hex digits)"
            )
            return
        auth = self.settings.auth

        def made_with(password: str) -> bool:
            expected = hashlib.md5((self._timestamp + password).encode()).hexdigest()
            return hmac.compare_digest(expected, digest.lower())

        if made_with(""):
            # An empty password, refused on every path: the digest shows it.
            await self._reply("-ERR [AUTH] APOP needs a password")
            return
        # A name that names no mailbox (<>, a TAB) opens none, as on USER/PASS.
        success = names_a_mailbox(user)
        if success and isinstance(auth, Mapping):
            password = auth.get(user)
            success = isinstance(password, str) and made_with(password)
        await self._login("APOP", user, success)

    async def _cmd_auth(self, arg: str) -> None:
        if not arg:
            mechanisms = [] if self._tls_missing() else ["PLAIN"]
            await self._reply_lines("+OK Mechanisms follow", mechanisms)
            return
        mechanism, _, initial = arg.partition(" ")
        if not mechanism.isascii() or mechanism.upper() != "PLAIN":
            await self._reply(
                "-ERR [AUTH] Unsupported mechanism (this server offers PLAIN)"
            )
            return
        if self._tls_missing():
            await self._reply(_TLS_FIRST)
            return
        if initial:
            response = initial.strip()
        else:
            await self._reply("+ ")
            line, total = await self._read_continuation(_AUTH_LIMIT)
            if total > _AUTH_LIMIT:
                self._append("auth-response", f"**** [{total} bytes in all]")
                await self._reply("-ERR [AUTH] Authentication line too long")
                return
            response = line.decode("ascii", "replace").strip()
            self._append("auth-response", "*" if response == "*" else "****")
        self._after_auth = False
        if response == "*":  # RFC 5034: the client cancels
            await self._reply("-ERR Authentication cancelled")  # as Dovecot: no [AUTH]
            return
        try:
            decoded = base64.b64decode(
                b"" if response == "=" else response, validate=True
            )
        except (binascii.Error, ValueError):
            await self._reply("-ERR [AUTH] Invalid base64 data")
            return
        parts = decoded.split(b"\0")
        if len(parts) != 3:
            await self._reply(
                "-ERR [AUTH] Bad PLAIN response (authzid NUL user NUL password)"
            )
            return
        authzid, user_bytes, password_bytes = parts
        if not password_bytes:  # as PASS without one
            await self._reply("-ERR [AUTH] The PLAIN response has no password")
            return
        user = user_bytes.decode("utf-8", "replace")
        # The rules that name a user, now that it is known (those without a
        # match were asked at the command).
        if await self._faults("POP3:AUTH", [user], matching_only=True):
            return
        password = password_bytes.decode("utf-8", "replace")
        success = (
            is_utf8(user_bytes)
            and check_login(self.settings.auth, user, password)
            and (not authzid or authzid == user_bytes)
        )
        await self._login("PLAIN", user, success)

    async def _login(self, mechanism: str, user: str, success: bool) -> None:
        """Record the attempt; on success lock and snapshot the maildrop."""
        assert self.record is not None
        if success:
            with self.mail.lock:
                if self.generation != self.mail.generation:
                    success = False  # ended just below
                    stale = True
                else:
                    stale = False
                    account = self.mail.account(user)
                    in_use = account.holder is not None and account.holder is not self
                    if not in_use:
                        account.holder = self
                        self._account = account
                        self._login_name = user
                        self._folder = account.folders[INBOX]
                        self._drop = list(self._folder.messages)
            if stale:
                self.end_stale()
                raise Closed
            if in_use:
                info = AuthInfo(
                    mechanism,
                    masked(self.server.mask_secrets, user),
                    success=False,
                    in_use=True,  # the password was right
                )
                self.record._auth_attempts.append(info)
                self.record.auth = info
                await self._reply(
                    "-ERR [IN-USE] Mailbox is locked by another POP3 session"
                )
                return
        info = AuthInfo(
            mechanism=mechanism,
            username=masked(self.server.mask_secrets, user),  # user, password swapped
            success=success,
        )
        self.record._auth_attempts.append(info)
        self.record.auth = info
        if not success:
            await self._reply(_LOGIN_FAILED)
            return
        self.state = "transaction"
        self._just_logged_in = True  # see _recorded
        count, octets = self._totals()
        await self._reply(
            f"+OK Logged in: {plural(count, 'message')} ({octets} octets)"
        )

    # -- TRANSACTION -------------------------------------------------------------------

    def _totals(self) -> tuple[int, int]:
        kept = [s for i, s in enumerate(self._drop) if i not in self._deleted]
        return len(kept), sum(stored.size for stored in kept)

    async def _message(self, verb: str, arg: str) -> int | None:
        """The 0-based index of the message numbered ``arg`` (``verb``'s
        argument), or None after answering why not."""
        shown = arg if len(arg) <= 20 else f"{arg[:20]}..."
        if not arg:
            await self._reply("-ERR A message number is needed")
            return None
        if " " in arg:
            # Dovecot says "Noise after message number"; this says what
            # was expected and what came.
            await self._reply(
                f"-ERR {verb} takes one message number, not "
                f"{len(arg.split(' '))} arguments: {shown}"
            )
            return None
        if not arg.isdigit() or not arg.isascii():
            await self._reply(f"-ERR Invalid message number: {shown}")
            return None
        number = int(arg)
        if not 1 <= number <= len(self._drop):
            await self._reply(
                f"-ERR There's no message {shown} (the maildrop has "
                f"{plural(len(self._drop), 'message')})"
            )
            return None
        if number - 1 in self._deleted:
            await self._reply(f"-ERR Message {number} is deleted")
            return None
        return number - 1

    async def _present(self, index: int) -> bool:
        """Whether the message at ``index`` is still in the mailbox, or
        False after answering that it is not: an IMAP session expunged or
        moved it since this session's login, as Dovecot answers RETR and
        TOP of it (the snapshot still lists and counts it)."""
        if not self._drop[index]._removed:
            return True
        await self._reply(f"-ERR Message {index + 1} expunged")
        return False

    async def _cmd_stat(self, arg: str) -> None:
        count, octets = self._totals()
        await self._reply(f"+OK {count} {octets}")

    async def _cmd_list(self, arg: str) -> None:
        if arg:
            index = await self._message("LIST", arg)
            if index is not None:
                await self._reply(f"+OK {index + 1} {self._drop[index].size}")
            return
        count, octets = self._totals()
        lines = [
            f"{i + 1} {stored.size}"
            for i, stored in enumerate(self._drop)
            if i not in self._deleted
        ]
        await self._reply_lines(
            f"+OK {plural(count, 'message')} ({octets} octets)", lines
        )

    async def _cmd_uidl(self, arg: str) -> None:
        validity = self._folder.uidvalidity if self._folder is not None else 0
        if arg:
            index = await self._message("UIDL", arg)
            if index is not None:
                uidl = uidl_of(validity, self._drop[index])
                await self._reply(f"+OK {index + 1} {uidl}")
            return
        lines = [
            f"{i + 1} {uidl_of(validity, stored)}"
            for i, stored in enumerate(self._drop)
            if i not in self._deleted
        ]
        await self._reply_lines("+OK Unique-ID listing follows", lines)

    async def _cmd_retr(self, arg: str) -> None:
        index = await self._message("RETR", arg)
        if index is None or not await self._present(index):
            return
        stored = self._drop[index]
        raw = stored.message.raw
        # StoredMessage.size is counted once: equal to the stored length, the
        # message is sent as stored (CRLF only), without scanning it again.
        wire = raw if stored.size == len(raw) else wire_bytes(raw)
        first = f"+OK {len(wire)} octets"
        self._record_replies((first, f"[message {index + 1}: {len(wire)} octets]", "."))
        # \Seen is set when the session ends, as Dovecot does (RSET forgets it).
        if _SEEN not in stored.flags:
            self._seen.add(index)
        await self._send_lines(first, wire)

    async def _send_lines(self, first: str, wire: bytes) -> None:
        """The status line ``first``, then ``wire`` as a multi-line reply
        (dot-stuffed, with its final dot); a large one not joined, so as
        not to copy the message once more."""
        body, end = dot_stuffed_parts(wire)
        head = first.encode() + b"\r\n"
        if len(body) <= SEND_SLICE:
            await self._send(head + body + end)
        else:
            await self._send(head)
            await self._send(body)
            await self._send(end)

    async def _cmd_top(self, arg: str) -> None:
        words = arg.split(" ") if arg else []
        if len(words) != 2:
            got = f"{plural(len(words), 'argument')}" + (f": {arg}" if arg else "")
            await self._reply(
                f"-ERR TOP needs a message number and a number of lines, not {got}"
            )
            return
        number, lines = words
        index = await self._message("TOP", number)
        if index is None or not await self._present(index):
            return
        if not lines.isdigit() or not lines.isascii():
            shown = lines if len(lines) <= 20 else f"{lines[:20]}..."
            await self._reply(f"-ERR Invalid number of lines: {shown}")
            return
        stored = self._drop[index]
        part = top_of(wire_bytes(stored.message.raw), int(lines))
        self._record_reply("+OK Top of message follows")
        self._record_reply(
            f"[message {index + 1}: {len(part)} octets of {stored.size}]"
        )
        self._record_reply(".")
        await self._send_lines("+OK Top of message follows", part)

    def marked(self) -> list[StoredMessage]:
        """The copies DELE marked in this session, which its QUIT deletes
        (hold the lock): `Account.holder`, for ``assert_deleted``'s hint."""
        return [self._drop[index] for index in sorted(self._deleted)]

    def retrieved(self) -> list[StoredMessage]:
        """The copies RETR sent in this session, which are ``\\Seen`` once it
        ends: `Account.holder`, for ``assert_in``'s hint. (A copy of the set:
        the server thread adds to it meanwhile.)"""
        return [self._drop[index] for index in sorted(frozenset(self._seen))]

    async def _cmd_dele(self, arg: str) -> None:
        index = await self._message("DELE", arg)
        if index is None:
            return
        with self.mail.lock:  # marked() is read from a test's thread
            self._deleted.add(index)
        await self._reply(f"+OK Message {index + 1} marked to be deleted")

    async def _cmd_rset(self, arg: str) -> None:
        with self.mail.lock:
            self._deleted.clear()
        self._seen.clear()
        count, octets = self._totals()
        await self._reply(
            f"+OK Maildrop has {plural(count, 'message')} ({octets} octets)"
        )

    async def _cmd_noop(self, arg: str) -> None:
        await self._reply("+OK")

    async def _cmd_quit(self, arg: str) -> None:
        deleted = self.state == "transaction" and self._update()
        await self._reply_and_end(
            "quit",
            "+OK Logging out, messages deleted" if deleted else "+OK Logging out",
        )
        self._closing = True
        if self.transport is not None:
            self.transport.close()  # after the reply is flushed
        raise Closed

    def _update(self) -> bool:
        """RFC 1939's UPDATE state: remove the deleted messages, set
        ``\\Seen`` on those retrieved. Only in the mailboxes of this test."""
        folder = self._folder
        if folder is None:
            return False
        gone = [self._drop[i] for i in sorted(self._deleted)]
        with self.mail.lock:
            if self.generation != self.mail.generation:
                return False
            self._take_seen(self._seen - self._deleted)
            removed = self.mail.remove(folder, gone)
            if self._account is not None and self._account.holder is self:
                self._account.holder = None
            self._account = None
        self.store.mail_changed()
        # Not bool(gone): what was marked may have gone meanwhile (an IMAP
        # EXPUNGE, the standalone sink's "Delete all").
        return removed > 0

    def _take_seen(self, indexes: set[int]) -> bool:
        """Set ``\\Seen`` on the messages at ``indexes`` still in the folder,
        once (hold the lock); whether there were any to set."""
        folder = self._folder
        self._seen = set()
        if not indexes or folder is None or self.generation != self.mail.generation:
            return False
        present = {id(stored) for stored in folder.messages}
        for index in indexes:
            stored = self._drop[index]
            if id(stored) in present:
                stored.flags = stored.flags | {_SEEN}
        return True


# -- the test's side ---------------------------------------------------------------------


class POP3Endpoint(ReadSideEndpoint):
    """Where a POP3 client connects: ``smtpsink.pop3``.

    The server starts on the first use of ``smtpsink.pop3``, on the sink's
    thread and a free port of the sink's host, and serves the mailboxes of
    the sink's recipients (see :doc:`reading`).
    """

    _schemes = ("pop3", "pop3s")

"""SMTP: the aiosmtpd protocol subclass that records the conversation.

Loop side: everything here runs on the sink's server thread. It carries out
what the fault rules decide (`_faults.steps`), stores messages in the shared
`Store` and relays them (`_relay`); it decides nothing about faults itself.

aiosmtpd gives handlers the envelope but not the conversation, so the
recording happens here: every line the server *reads* (wrapping the stream
reader, so that pipelined commands are recorded in the order the server
handles them) and every reply it *pushes*. Message content is counted, not
copied, into the transcript; the message itself keeps the bytes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import datetime
import hmac
import logging
import re
import secrets
import ssl
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from email._header_value_parser import (  # aiosmtpd's parser too
    TokenList,
    get_addr_spec,
    get_angle_addr,
)
from email.errors import HeaderParseError
from typing import TYPE_CHECKING, Any, AnyStr, Literal, TypeVar, cast

from aiosmtpd.smtp import (
    MISSING,
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    TLSSetupException,
)
from aiosmtpd.smtp import Session as _AioSession

from . import _setup_template
from ._content import Content
from ._credentials import Masker, masked, word_masker
from ._faults import (
    Delay,
    Discard,
    Disconnect,
    Event,
    Fault,
    Hang,
    Reply,
    advertised,
    size_refusal,
    steps,
    too_many_recipients,
)
from ._listening import COMMANDS_BEFORE_YIELD
from ._message import Envelope as MessageEnvelope
from ._message import Message, RecipientDSN, Recipients
from ._reading import ReadsIntoBuffer
from ._session import (
    CONTENT_CUT_OFF,
    CONTENT_TIMED_OUT,
    AuthInfo,
    EndReason,
    Exchange,
    Session,
    TLSInfo,
    cut_off_note,
    discarded_before_tls_note,
    peer_of,
)
from ._store import SHARED_VALUES_MAX
from ._text import C0_ESCAPES, printable, visible_start
from ._tls import (
    HANDSHAKE_TIMEOUT,
    describe_handshake_failure,
    describe_tls_on_plain_port,
    starts_tls_handshake,
    tls_handshake_note,
)

if TYPE_CHECKING:
    from asyncio.streams import _ReaduntilBuffer

    from aiosmtpd.smtp import _Missing

    from ._faults import Faults
    from ._relay import Relayer
    from ._settings import SinkSettings
    from ._store import Store

_MAX_SHOWN_LINE = 512
#: What is kept of a line longer than aiosmtpd reads at once: what is shown
#: and room for a password across the cut, which is masked whole before the
#: line is cut (kept to 512 bytes, a password across them showed in part).
_KEPT_OF_A_LONG_LINE = _MAX_SHOWN_LINE + 4096
# The commands answered as they arrive (RecordingSMTP.data_received): those
# of every message, whose aiosmtpd methods never wait while the connection
# can take their reply, and DATA, whose content then comes to data_received
# too. AUTH and STARTTLS read more.
_ANSWERED_AT_ONCE = {
    verb.encode(): verb
    for verb in ("EHLO", "MAIL", "RCPT", "DATA", "NOOP", "RSET", "QUIT")
}
# Commands a client may pipeline before another (RFC 2920 section 3.1): a
# reply to one of them may wait for the next reply (_write_or_hold).
_PIPELINED = frozenset({"MAIL", "RCPT", "RSET", "NOOP"})
# Held replies past this size are written (with the transport's back
# pressure) instead: a group of a few commands is far smaller.
_HELD_REPLIES_MAX = 65536
# Data held while a command answered at once waits (see _held) past which
# the connection stops reading: aiosmtpd's reader pauses at twice its limit.
_HELD_DATA_MAX = 65536

# The text of a fault's reply when the test gives none.
_DEFAULT_TEXT = {
    421: "4.3.2 Service not available, closing transmission channel",
    450: "4.2.1 Mailbox temporarily unavailable",
    451: "4.3.0 Temporary failure, please try again later",
    452: "4.3.1 Insufficient system storage",
    454: "4.7.0 Temporary authentication failure",
    500: "5.5.2 Syntax error, command unrecognized",
    501: "5.5.4 Syntax error in parameters or arguments",
    502: "5.5.1 Command not implemented",
    503: "5.5.1 Bad sequence of commands",
    504: "5.5.4 Command parameter not implemented",
    530: "5.7.0 Authentication required",
    535: "5.7.8 Authentication credentials invalid",
    550: "5.1.1 Mailbox unavailable",
    551: "5.1.6 User not local",
    552: "5.3.4 Message size exceeds fixed maximum message size",
    553: "5.1.3 Mailbox name not allowed",
    554: "5.7.1 Transaction failed",
}
_DISCARDED = ["250 2.0.0 OK: queued"]
#: What `_apply_faults` gives `store_message` for ``disconnect("EOD",
#: store=True)``: no reply line, a signal (the reply would be lost anyway).
_STORE_THEN_DISCONNECT = "(store, then disconnect)"
_GO_AHEAD = "354 End data with <CR><LF>.<CR><LF>"


def reply_lines(code: int, text: str | None) -> list[str]:
    """``550`` and ``"a\\nb"`` -> ``["550-a", "550 b"]`` (RFC 5321 multi-line)."""
    body = _DEFAULT_TEXT.get(code, "Injected failure") if text is None else text
    # A final newline ends the text; it does not start an empty last line.
    lines = body.replace("\r\n", "\n").rstrip("\n").split("\n")
    return [f"{code}-{line}" for line in lines[:-1]] + [f"{code} {lines[-1]}"]


_F = TypeVar("_F", bound=Callable[..., Any])


def _same_syntax(original: Any, when: str | None = None) -> Callable[[_F], _F]:
    """Copy aiosmtpd's HELP text (``@syntax``) onto an ``smtp_*`` override;
    ``when`` names the attribute that says whether HELP lists it now."""

    def decorate(function: _F) -> _F:
        for name in (
            "__smtp_syntax__",
            "__smtp_syntax_extended__",
            "__smtp_syntax_when__",
        ):
            if hasattr(original, name):
                setattr(function, name, getattr(original, name))
        if when is not None:
            function.__smtp_syntax_when__ = when  # type: ignore[attr-defined]
        return function

    return decorate


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _multiline(replies: list[str]) -> list[str]:
    """Re-join reply lines after some were dropped: the last line of a
    multi-line reply reads ``250 ...``, the others ``250-...``."""
    return [f"{r[:3]}-{r[4:]}" for r in replies[:-1]] + [
        f"{replies[-1][:3]} {replies[-1][4:]}"
    ]


class _NoHandler:
    """Stands for aiosmtpd's handler task on a connection that has none
    yet (see RecordingSMTP._start_lean): aiosmtpd cancels it on EOF, QUIT
    and connection loss."""

    def cancel(self) -> bool:
        return False

    def done(self) -> bool:
        return True


_NO_HANDLER = cast("asyncio.Task[None]", _NoHandler())


async def _nothing() -> None:
    pass


def _printable(raw: bytes) -> str:
    """A client line as text that prints on one line: UTF-8 where it decodes,
    ``\\xNN`` for control characters and bytes that do not."""
    if raw.isascii():  # nearly every command: skip the translation
        text = raw.decode("ascii")
        if text.isprintable():  # no control characters
            return text
    return raw.decode("utf-8", "backslashreplace").translate(C0_ESCAPES)


# -- AUTH secrets ------------------------------------------------------------
#
# No form of a credential may reach any output. The client's line is masked
# when it is recorded (`RecordingSMTP._on_line`), AUTH responses are never
# shown (`challenge_auth`), aiosmtpd's reply to an unknown command no longer
# echoes it (`_unrecognized`), and aiosmtpd's own log records are masked too
# (`_MaskAuthInLog`).

# SASL mechanism names worth showing (IANA registry, the common part): any
# other word after AUTH may be a secret put where the mechanism goes.
_MECHANISMS = frozenset(
    (
        *("PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "XOAUTH2", "OAUTHBEARER"),
        *("GSSAPI", "NTLM", "ANONYMOUS", "EXTERNAL", "SCRAM-SHA-1"),
        *("SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS", "XOAUTH"),
    )
)
# RFC 4954's reply for a response longer than the server can take, and the
# longest response taken: enough for long OAuth tokens.
_AUTH_TOO_LONG = "500 5.5.6 Authentication Exchange line is too long"
_MAX_AUTH_RESPONSE = 12288


def _encodes(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


def _sendable(text: str, encoding: str) -> str:
    """``text`` (a reply that echoes what the client sent, its undecodable
    bytes as surrogates) with what ``encoding`` cannot send escaped."""
    shown = _printable(text.encode("utf-8", "surrogateescape"))
    return shown.encode(encoding, "backslashreplace").decode(encoding)


def _is_auth_line(text: str) -> bool:
    """Whether a client line is an AUTH command in any case, after anything
    but a letter or a digit (white space, an invisible character, a control
    character, a symbol), with any separator (aiosmtpd splits AUTH's
    arguments with ``str.split()``: a tab, ``\x1f`` or a no-break space
    separates them). A line with a byte order mark before AUTH was recorded
    whole, its PLAIN response with it; one with ``\x01`` before it, its
    XOAUTH2 token, which no word masker knows."""
    start = _before_auth(text)
    return text[start : start + 4].upper() == "AUTH"


#: What may come before a line's AUTH and leave it an AUTH line to mask.
_AUTH_LEAD = re.compile(r"[^A-Za-z0-9]*")


def _before_auth(text: str) -> int:
    """Where ``text`` begins after `_AUTH_LEAD`."""
    found = _AUTH_LEAD.match(text)
    return 0 if found is None else found.end()


def mask_auth(text: str) -> str:
    """An AUTH line with everything after the mechanism name masked; any
    other text unchanged. ``"auth\tplain\tAHU..."`` gives ``"auth plain
    ****"``; a word that is not a known mechanism is masked as well."""
    if not _is_auth_line(text):
        return text
    start = _before_auth(text)
    # What comes before AUTH stays, white space too (the transcript writes
    # it escaped: `visible_start`): it is why the command was refused.
    lead = text[:start]
    words = text[start:].split(None, 2)
    verb = words[0]
    if verb.upper() != "AUTH":  # "AUTH" glued to what follows: all masked
        return f"{lead}{verb[:4]} ****"
    if len(words) == 1:
        return lead + verb
    if words[1].upper() not in _MECHANISMS:
        return f"{lead}{verb} ****"
    return lead + " ".join(words[:2]) + (" ****" if len(words) > 2 else "")


def _like_auth(words: list[bytes]) -> bool:
    """Whether the words of a line that is no command are AUTH misspelt,
    known by what carries the credentials rather than by the verb's
    spelling: a SASL mechanism as its second to fifth word (``AUHT PLAIN``,
    ``AUTJ LOGIN``, ``A U T H PLAIN``, a look-alike letter copied along), or
    a short verb holding AUTH (``XAUTH``, an invisible character inside)
    or AUTH run into a mechanism (``AUTHPLAIN``)."""
    if any(_is_mechanism(word) for word in words[1:5]):
        return True
    letters = bytes(b for b in words[0].upper() if 0x41 <= b <= 0x5A)
    return b"AUTH" in letters and (
        len(letters) <= 6 or _is_mechanism(letters[letters.index(b"AUTH") + 4 :])
    )


def _is_mechanism(word: bytes) -> bool:
    """Whether ``word`` starts with the name of a SASL mechanism
    (`_MECHANISMS`, any SCRAM), whatever follows it ("PLAIN\\xa0<base64>":
    a no-break space splits no word)."""
    name = _MECHANISM_NAME.match(word)
    if name is None:
        return False
    upper = name[0].upper()
    return upper.decode("ascii") in _MECHANISMS or upper.startswith(b"SCRAM-")


# The name, alone or before a byte that is not ASCII ("LOGIN=ann" is no
# mechanism: XCLIENT's attribute).
_MECHANISM_NAME = re.compile(rb"[A-Za-z0-9_-]+(?![\x00-\x7f])")


#: The verbs of every message, in the case clients send them: no line that
#: starts with one is a misspelt command.
_EVERY_MESSAGE_VERBS = frozenset(
    (b"MAIL", b"RCPT", b"DATA", b"EHLO", b"HELO", b"QUIT", b"RSET", b"NOOP")
)


# A line that may be an AUTH response: one word (base64, "=", "*", or a
# password in clear where base64 belongs).
_SASL_RESPONSE = re.compile(rb"\s*\S+\s*\Z")


class _StrayResponse(threading.local):
    """The stray AUTH response (see `RecordingSMTP._stray_auth_response`),
    or a line that may hold a password no table names
    (`RecordingSMTP._without_unknowable_password`), this server thread is
    handling, upper-cased, for the log filter, and how the log shows it:
    aiosmtpd logs a line right after reading it, on the same thread."""

    line: bytes | None = None
    shown: bytes = b"****"


_STRAY = _StrayResponse()


def _masked_log_arg(value: object, stray: bytes | None) -> object:
    if isinstance(value, (bytes, bytearray)):
        if stray is not None and value.strip().upper() == stray:
            return _STRAY.shown
        if b"AUTH" in value.upper():
            text = bytes(value).decode("utf-8", "surrogateescape")
            return mask_auth(text).encode("utf-8", "surrogateescape")
    elif isinstance(value, str):
        if stray is not None and value.strip().upper().encode() == stray:
            return _STRAY.shown.decode("utf-8", "surrogateescape")
        if "AUTH" in value.upper():
            return mask_auth(value)
    return value


class _MaskAuthInLog(logging.Filter):
    """Masks AUTH lines in aiosmtpd's log records (the ``mail.log`` logger):
    it logs every client line, and its own masking misses some forms (an
    unknown command, upper-cased, is logged as a WARNING). Then escapes the
    message's control characters (`printable`): it quotes what a client
    sent, and goes to a terminal (the standalone sink's stderr, a report)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            stray = _STRAY.line
            masked = [_masked_log_arg(a, stray) for a in args]
            # Whichever sink logged it: the passwords of every live one.
            with _LOG_MASKS_LOCK:  # another thread may be starting a sink
                masks = list(_LOG_MASKS)
            for mask in masks:
                masked = [_masked_log_text(a, mask) for a in masked]
            record.args = tuple(masked)
        try:
            message = record.getMessage()
        except Exception:  # a bad format: the handler reports it
            return True
        record.msg = printable(message)
        record.args = None
        return True


#: The password maskers of the sinks alive in this process (see filter).
_LOG_MASKS: weakref.WeakSet[Masker] = weakref.WeakSet()
_LOG_MASKS_LOCK = threading.Lock()


def _masked_log_text(value: object, mask: Masker) -> object:
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("utf-8", "surrogateescape")
        return mask(text).encode("utf-8", "surrogateescape")
    return mask(value) if isinstance(value, str) else value


# Idempotent (a Logger keeps a filter once); aiosmtpd logs on this logger only.
_AIOSMTPD_LOG = logging.getLogger("mail.log")
#: The sink's own warnings (the read side logs on it too).
LOG = logging.getLogger("pytest_smtpsink")
_AIOSMTPD_LOG.addFilter(_MaskAuthInLog())

_UNRECOGNIZED = re.compile(r'500 Error: command "(.*)" not recognized\Z', re.DOTALL)


def _unrecognized(reply: str, echo: bool = True) -> str:
    """aiosmtpd's reply to an unknown command, without what must not show.

    aiosmtpd echoes everything up to the first space, upper-cased: for
    ``AUTH<TAB>PLAIN<TAB><base64>`` the whole credential. Echo a plain verb
    only; a line that starts with AUTH, or holds other white space, gets a
    reply that names nothing (as does any line when ``echo`` is False)."""
    match = _UNRECOGNIZED.match(reply)
    if match is None:
        return reply
    verb = match.group(1)
    if _is_auth_line(verb):
        return "500 5.5.2 Error: AUTH and its arguments must be separated by spaces"
    if not echo or len(verb.split()) != 1 or verb != verb.strip():
        return "500 5.5.2 Error: command not recognized"
    return f'500 Error: command "{_printable(verb.encode()[:64])}" not recognized'


_MALFORMED = re.compile("[\x00-\x1f\x7f\udc80-\udcff]")
_FIRST_WORD = re.compile(r"\s*\S+")


_BAD_SIZE = (
    "501 5.5.4 Syntax error in the SIZE= parameter: a number of octets, 1 to "
    "20 digits (RFC 1870)"
)


def _ascii_number(text: str) -> bool:
    """Whether ``text`` is a number as SMTP writes one: ASCII digits (not
    any Unicode digit, which str.isdigit() takes), at most 20 (RFC 1870)."""
    return text.isascii() and text.isdigit() and len(text) <= 20


#: A non-ASCII address in a transaction that did not ask for SMTPUTF8 (RFC
#: 6531 3.4), refused as Postfix refuses it: taken, a client that forgot
#: the parameter passed here and failed against a real server.
_UNDECLARED_UTF8 = "553 5.6.7 Must declare SMTPUTF8 to send unicode address"


def _malformed(value: str) -> bool:
    """True if a HELO name or address holds control characters (NUL, a bare
    CR...) or bytes that are not UTF-8 (aiosmtpd keeps those as surrogates,
    which cannot even be printed): a strict server refuses them with 501
    rather than record a name or address no report could show."""
    return _MALFORMED.search(value) is not None


# An address as nearly every client sends it: <local@domain>, both parts
# dot-atoms of ASCII atext (RFC 5322 3.2.3), then nothing or parameters.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATEXT}(?:\.{_ATEXT})*"
_PLAIN_ANGLE_ADDR = re.compile(rf"<({_DOT_ATOM}@{_DOT_ATOM})>")
# An RFC 5321 mailbox as written: a dot-atom or quoted local part, a domain
# or an address literal (`_as_sent`).
_MAILBOX = (
    rf'(?:{_DOT_ATOM}|"(?:[^"\\\r\n]|\\[ -~])*")'
    rf"@(?:{_DOT_ATOM}|\[[!-Z^-~]*\])"
)
_MAILBOX_AS_SENT = re.compile(rf"<({_MAILBOX})>|({_MAILBOX})(?=[ \t]|\Z)")
# The MAIL parameters of nearly every message (smtplib sends SIZE, and BODY
# for 8-bit content), which the sink takes at once (RecordingSMTP._plain_mail).
# aiosmtpd's refusal of MAIL with a SIZE= over the limit, which does not
# say the limit: replaced by `size_refusal`'s.
_AIOSMTPD_SIZE_REFUSAL = "552 Error: message size exceeds fixed maximum message size"
_DECLARED_SIZE = re.compile(r"(?i)(?:^|\s)SIZE=([0-9]+)(?:\s|$)")
_PLAIN_MAIL_PARAM = re.compile(r"SIZE=[0-9]{1,20}\Z|BODY=(?:7BIT|8BITMIME)\Z")
# The address type of a DSN ORCPT= (an atom: "rfc822", "utf-8"...).
_ADDR_TYPE_RE = re.compile(rf"{_ATEXT}\Z")


def _refused_address(arg: str) -> bool:
    """Whether a MAIL or RCPT argument is an address that the email
    package's parser, which aiosmtpd uses, takes with only a defect noted,
    and that Postfix refuses: an angle address never closed
    (``<ann@example.com``), or a local part of words with white space (or
    a comment) but no dot between them, which the parser turns into
    ``"ann lee"@example.com``, an address the client never sent. With angle
    brackets (``<ann lee@example.com>``) or without (``ann lee@example.com``,
    where RFC 5321 makes the space the end of the address and Postfix reads
    ``ann`` and refuses ``lee@example.com`` as an unknown parameter). A
    quoted local part (``"ann lee"@example.com``) is a single word."""
    text = arg.lstrip()
    try:
        if not text.startswith("<"):
            # As aiosmtpd's _getaddr parses it (an empty one is no address).
            return bool(arg) and _words_without_dot(get_addr_spec(arg)[0])
        token, rest = get_angle_addr(text)
    except HeaderParseError:
        return False  # aiosmtpd's parse refuses it in its own way
    except Exception:  # the parser's own bugs on odd input: see _getaddr
        return True
    # What the parser took (its token's text adds the missing ">").
    if not text[: len(text) - len(rest)].rstrip().endswith(">"):
        return True
    return _words_without_dot(token)


def _words_without_dot(token: TokenList) -> bool:
    """Whether a local part in the parsed ``token`` has two words (atoms or
    quoted strings) in a row with no dot between them. Only that: the other
    defects of an obsolete local part, such as ``a..b`` (which real
    mailboxes have), stay accepted as before."""
    for child in token:
        if not isinstance(child, TokenList):
            continue
        if child.token_type not in ("obs-local-part", "invalid-obs-local-part"):
            if _words_without_dot(child):
                return True
            continue
        last_was_word = False
        for part in child:
            if part.token_type in ("atom", "quoted-string"):
                if last_was_word:
                    return True
                last_was_word = True
            elif part.token_type != "cfws":
                last_was_word = False
    return False


def plain_angle_addr(arg: str) -> tuple[str, str] | None:
    """``(address, rest)`` of a MAIL/RCPT argument of the plain form
    ``<local@domain> PARAMS``, exactly as aiosmtpd's ``_getaddr`` parses it;
    None for any other form (quoted or non-ASCII local parts, address
    literals, comments, RFC 2047 encoded words, the null path), which
    aiosmtpd then parses.

    aiosmtpd runs every address through the email package's RFC 5322 header
    parser, and defines a class on each call: about 55 us per MAIL or RCPT
    on a 2-core CI machine, a quarter of the server's time per message."""
    found = _dot_atom_angle_addr(arg)
    if found is None or "=?" in found[0]:
        # The parser decodes RFC 2047 encoded words in it: see
        # RecordingSMTP._getaddr, which keeps them as sent.
        return None
    return found


def _dot_atom_angle_addr(arg: str) -> tuple[str, str] | None:
    """`plain_angle_addr` for any dot-atom address, with what looks like an
    encoded word too: ``(address, rest)`` as sent."""
    match = _PLAIN_ANGLE_ADDR.match(arg)
    if match is None:
        return None
    rest = arg[match.end() :]
    if rest[:1] in (" ", "\t"):
        # The parser drops the folding white space after ">" (str.lstrip).
        rest = rest.lstrip()
    if rest[:1] == "(":  # a comment: the parser's business
        return None
    return match.group(1), rest


def _as_sent(arg: str) -> tuple[str, str] | None:
    """``(address, rest)`` of a MAIL/RCPT argument whose address is a
    mailbox as RFC 5321 writes one (``<a@b>`` or a bare ``a@b``), taken as
    written; None for anything else."""
    text = arg.lstrip()
    match = _MAILBOX_AS_SENT.match(text)
    if match is None:
        return None
    rest = text[match.end() :]
    if rest[:1] in (" ", "\t"):
        rest = rest.lstrip()
    if rest[:1] == "(":  # a comment: not an address as sent
        return None
    return match.group(1) or match.group(2), rest


def _decodes_a_word(arg: str) -> bool:
    """Whether the email package's parser, as aiosmtpd's ``_getaddr`` uses
    it, decodes an RFC 2047 encoded word in the address of ``arg``
    (``=?utf-8?q?a_b?=@example.com`` becomes ``"a b"@example.com``)."""
    text = arg.lstrip()
    try:
        token = (get_angle_addr if text.startswith("<") else get_addr_spec)(text)[0]
    except Exception:
        return False  # no address for it to alter
    return _has_encoded_word(token)


def _has_encoded_word(token: TokenList) -> bool:
    return any(
        isinstance(child, TokenList)
        and (child.token_type == "encoded-word" or _has_encoded_word(child))
        for child in token
    )


# -- DSN (RFC 3461) ------------------------------------------------------------

_DSN_PARAMS = {"MAIL": ("RET", "ENVID"), "RCPT": ("NOTIFY", "ORCPT")}
# xtext (RFC 3461 4): "!" to "~" except "+" and "=", or "+" and two upper-case
# hex digits for any other byte.
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})+\Z")
_XTEXT_HEX = re.compile(rb"\+([0-9A-F]{2})")
_NOTIFY = frozenset({"SUCCESS", "FAILURE", "DELAY"})
# What a RCPT without DSN parameters asks for (nearly every one), and the
# envelope field of a message to one such recipient: one frozen instance for
# all messages instead of one each (and no dataclass __init__ per RCPT).
_NO_DSN = RecipientDSN()
_ONE_NO_DSN = (_NO_DSN,)
# How many EHLO replies one sink keeps (`ServerState.ehlo_replies`): a few
# in practice (before and after STARTTLS); bounded all the same.
_EHLO_REPLIES_MAX = 16


def _xtext(value: str) -> str:
    """``value`` (ASCII, `_XTEXT`) xtext-decoded, its octets read as UTF-8:
    Postfix writes an SMTPUTF8 recipient's ORCPT "ü" as ``+C3+BC``, which
    read an octet a character was "Ã¼". Octets that are not UTF-8 are kept
    as ``surrogateescape`` keeps them, so that the relay sends them on as
    they came."""
    if "+" not in value:
        return value
    octets = _XTEXT_HEX.sub(lambda m: bytes((int(m.group(1), 16),)), value.encode())
    return octets.decode("utf-8", "surrogateescape")


def _dsn_fields(params: dict[str, str]) -> dict[str, Any] | str:
    """The DSN parameters of one MAIL or RCPT, checked against RFC 3461's
    grammar: the envelope fields, or a 501 reply naming the parameter."""
    fields: dict[str, Any] = {}
    for key, value in params.items():
        upper = value.upper()
        if key == "RET" and upper in ("FULL", "HDRS"):
            fields["dsn_ret"] = upper
        elif key == "ENVID" and len(value) <= 100 and _XTEXT.match(value):
            fields["dsn_envid"] = _xtext(value)
        elif key == "NOTIFY" and (
            upper == "NEVER" or (upper and set(upper.split(",")) <= _NOTIFY)
        ):
            fields["notify"] = tuple(upper.split(","))
        elif key == "ORCPT" and len(value) <= 500:
            kind, semicolon, address = value.partition(";")
            if not (semicolon and _ADDR_TYPE_RE.match(kind) and _XTEXT.match(address)):
                return _dsn_error(key)
            fields["orcpt"] = f"{kind};{_xtext(address)}"
        else:
            return _dsn_error(key)
    return fields


def _dsn_error(key: str) -> str:
    return f"501 5.5.4 Syntax error in the {key}= parameter (RFC 3461)"


async def _raise(error: Exception) -> None:
    """Raise ``error`` (its traceback kept) in the task that awaits this."""
    raise error


class _Resumed:
    """Awaitable: the rest of a coroutine that was started outside a task
    and waits for ``waits_for``; awaited in a task, it goes on as if the
    task had run it from the start."""

    def __init__(self, coroutine: Coroutine[Any, Any, None], waits_for: Any) -> None:
        self.coroutine, self.waits_for = coroutine, waits_for

    def __await__(self) -> Generator[Any, Any, None]:
        coroutine, waits_for = self.coroutine, self.waits_for
        while True:
            try:
                sent = yield waits_for
            except BaseException as error:  # cancelled, or the future failed
                try:
                    waits_for = coroutine.throw(error)
                except StopIteration:
                    return
            else:
                try:
                    waits_for = coroutine.send(sent)
                except StopIteration:
                    return


class ServerState:
    """What every connection of one sink server shares."""

    def __init__(
        self,
        settings: SinkSettings,
        store: Store,
        faults: Faults,
        loop: asyncio.AbstractEventLoop,
        tls_context: ssl.SSLContext | None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.faults = faults
        self.loop = loop
        self.tls_context = tls_context
        # The sink's passwords, masked in every line recorded (None: none).
        self.mask_secrets = word_masker(settings.auth, settings.relay)
        if self.mask_secrets is not None:
            with _LOG_MASKS_LOCK:
                _LOG_MASKS.add(self.mask_secrets)
        self.connections: set[RecordingSMTP] = set()
        # Connections held by a delay or hang, and the rule holding them.
        self.held: dict[RecordingSMTP, Fault] = {}
        self.handler = _Handler()
        self.relay: Relayer | None = None
        # aiosmtpd's set-up of a connection, from the first one (see
        # _setup_template); False when it cannot be copied.
        self.setup_template: _setup_template.Template | Literal[False] | None = None
        # The EHLO replies this sink sent while no fault rule was active, by
        # the reply aiosmtpd made: see RecordingSMTP._ehlo_reply. One sink's
        # own, so that no other sink in the process shares or evicts them.
        self.ehlo_replies: dict[tuple[str, ...], tuple[str, ...]] = {}
        # The same replies as sent, by whether STARTTLS has run (all else in
        # them is the sink's): for an EHLO answered at once.
        self.ehlo_at_once: dict[bool, tuple[tuple[str, ...], bytes]] = {}
        # Whether a command that arrives alone may be answered at once
        # (RecordingSMTP.data_received); the tests compare both ways.
        self.fast_commands = True

    def release(self, rules: tuple[Fault, ...]) -> None:
        """Close the connections that ``rules`` (just removed) hold."""
        for connection, rule in list(self.held.items()):
            if rule in rules:
                self.held.pop(connection, None)
                connection.close_by_server()

    def make_protocol(self) -> RecordingSMTP:
        return RecordingSMTP(self)


class _SinkEnvelope(Envelope):
    """aiosmtpd's envelope flattens RCPT parameters; keep them per recipient,
    and the DSN requests."""

    def __init__(self) -> None:
        super().__init__()
        self.per_rcpt_options: list[tuple[str, ...]] = []
        self.dsn_ret: str | None = None
        self.dsn_envid: str | None = None
        self.per_rcpt_dsn: list[RecipientDSN] = []


class _Handler:
    """aiosmtpd hooks. ``server`` is the `RecordingSMTP` of the connection."""

    def __dir__(self) -> list[str]:
        # aiosmtpd's SMTP.__init__ looks for hooks with dir(handler) and
        # inspect.getmembers(handler), which reads every attribute dir()
        # names, object's own included, on every connection. The hooks are
        # all it looks for.
        return ["handle_MAIL", "handle_RCPT"]

    async def handle_RCPT(
        self,
        server: RecordingSMTP,
        session: Any,
        envelope: _SinkEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        # aiosmtpd takes RCPT TO:<> as the address "<>"; the null path is a
        # sender's only (RFC 5321 4.5.5), so as a recipient it is bad syntax.
        if address == "<>" or _malformed(address):
            return "501 5.1.3 Bad recipient address syntax"
        if not address.isascii() and not envelope.smtp_utf8:
            return _UNDECLARED_UTF8
        if server.state.faults.rules:
            injected = await server._fault_status(
                "RCPT",
                [address],
                rcpt_count=len(envelope.rcpt_tos),
                params=rcpt_options,
            )
            if injected is not None:
                return injected
        limit = server.state.settings.max_recipients
        if limit is not None and len(envelope.rcpt_tos) >= limit:
            return "452 " + too_many_recipients(limit)
        dsn = _dsn_fields(server._dsn_params)
        if isinstance(dsn, str):
            return dsn
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        envelope.per_rcpt_options.append(tuple(rcpt_options))
        envelope.per_rcpt_dsn.append(RecipientDSN(**dsn) if dsn else _NO_DSN)
        return "250 OK"

    async def handle_MAIL(
        self,
        server: RecordingSMTP,
        session: Any,
        envelope: _SinkEnvelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if _malformed(address):
            return "501 5.1.7 Bad sender address syntax"
        if not address.isascii() and not envelope.smtp_utf8:
            return _UNDECLARED_UTF8
        # aiosmtpd's own behaviour, after the fault rules (if any).
        if server.state.faults.rules:
            size = next(
                (
                    int(o[5:])
                    for o in mail_options
                    if o.startswith("SIZE=") and _ascii_number(o[5:])
                ),
                None,
            )
            injected = await server._fault_status(
                "MAIL", [address], size=size, params=mail_options
            )
            if injected is not None:
                return injected
        dsn = _dsn_fields(server._dsn_params)
        if isinstance(dsn, str):
            return dsn
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.dsn_ret = dsn.get("dsn_ret")
        envelope.dsn_envid = dsn.get("dsn_envid")
        return "250 OK"


class _QuietSession(_AioSession):
    """aiosmtpd's session logs "login_data is deprecated" (a WARNING on the
    mail.log logger) on every successful AUTH, because its own smtp_AUTH sets
    it: noise in the captured log of every AUTH test."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


_COMMAND_METHODS: dict[type, list[str]] = {}


def _command_size_limit() -> int:
    return SMTP.command_size_limit  # RFC 5321 4.5.3.1.4: 512


def _command_methods(cls: type) -> list[str]:
    names = _COMMAND_METHODS.get(cls)
    if names is None:
        names = [name for name in dir(cls) if name.startswith(("smtp_", "auth_"))]
        _COMMAND_METHODS[cls] = names
    return names


def _auth_mechanisms(cls: type) -> list[str]:
    """The AUTH mechanisms aiosmtpd finds on ``cls``: ``auth_CRAM__MD5`` is
    CRAM-MD5 (its documented naming rule)."""
    return [
        name[5:].replace("__", "-")
        for name in _command_methods(cls)
        if name.startswith("auth_")
    ]


class RecordingSMTP(SMTP, ReadsIntoBuffer):
    def __dir__(self) -> list[str]:
        # aiosmtpd's SMTP.__init__ looks for smtp_* and auth_* methods with
        # dir(self) and inspect.getmembers(self) on every connection; over
        # this class's many attributes that was the largest part of setting
        # up a connection. Those names are all it needs, and they are fixed
        # per class.
        return _command_methods(type(self))

    def __init__(self, state: ServerState) -> None:
        template = state.setup_template
        if not template or _AIOSMTPD_LOG.isEnabledFor(logging.INFO):
            # aiosmtpd's own set-up; with INFO on, also its log line.
            self._aiosmtpd_setup(state)
        else:  # see _setup_template: aiosmtpd's set-up, from the first connection
            asyncio.StreamReaderProtocol.__init__(
                self,
                asyncio.StreamReader(loop=state.loop, limit=self.line_length_limit),
                client_connected_cb=self._cb_client_connected,
                loop=state.loop,
            )
            _setup_template.apply(template, self)
        self._own_setup(state)

    def _aiosmtpd_setup(self, state: ServerState) -> None:
        settings = state.settings
        starttls = settings.tls in ("starttls", "starttls-required")
        super().__init__(
            state.handler,
            data_size_limit=settings.max_size or None,
            enable_SMTPUTF8=settings.smtputf8,
            hostname=settings.hostname,
            ident="pytest-smtpsink",
            tls_context=state.tls_context if starttls else None,
            require_starttls=settings.tls == "starttls-required",
            timeout=settings.idle_timeout,
            # Implicit TLS is encrypted from the first byte, but aiosmtpd only
            # counts STARTTLS as TLS: without this it refuses AUTH with 538.
            auth_require_tls=not (
                settings.auth_plaintext or settings.tls == "implicit"
            ),
            # Not named _authenticate: that is aiosmtpd's own method, which
            # its PLAIN and LOGIN call with (mechanism, auth_data).
            authenticator=self._check_login,
            # Without an auth table the sink offers no AUTH at all.
            auth_exclude_mechanism=(
                _auth_mechanisms(type(self)) if settings.auth is None else None
            ),
            loop=state.loop,
        )
        if state.setup_template is None:
            try:
                if not self._setup_shareable():
                    raise _setup_template.Refused("a TLS context aiosmtpd warns of")
                state.setup_template = _setup_template.take(
                    self, (state.handler, state.loop, state.tls_context), state.loop
                )
            except _setup_template.Refused:
                state.setup_template = False  # aiosmtpd's set-up every time

    def _setup_shareable(self) -> bool:
        """Whether aiosmtpd's set-up may be copied: not if it logs a
        warning, which it would then log for the first connection only."""
        context = self.tls_context
        return context is None or (
            context.verify_mode in (ssl.CERT_NONE, ssl.CERT_OPTIONAL)
            and not context.check_hostname
        )

    def _own_setup(self, state: ServerState) -> None:
        settings = state.settings
        # Set after __init__: aiosmtpd warns (a UserWarning, an error under
        # -W error) when AUTH is required over plain text, which a test may
        # legitimately ask for with auth_plaintext=True.
        self._auth_required = settings.auth_required
        # RFC 3461 section 4: DSN lengthens MAIL by up to 114 characters
        # (RET=HDRS, ENVID=) and RCPT by up to 536 (NOTIFY=, ORCPT=). Per
        # connection: aiosmtpd's own table is shared by every connection.
        self.command_size_limits = collections.defaultdict(
            _command_size_limit, {"MAIL": 512 + 114, "RCPT": 512 + 536}
        )
        self.state = state
        self.record: Session | None = None
        self._current: Exchange | None = None
        # While reading message content: what has come of it (its size is
        # the transcript's if the client leaves before the final dot), and
        # whether data_received hands it the packets (DATA answered at once).
        self._content: Content | None = None
        self._content_at_once = False
        # The stream reader's own methods, for the content: the recording
        # wrappers (see _wrap_reader) are for commands.
        self._read_line: Callable[[bytes], Awaitable[bytes]] | None = None
        self._read_bytes: Callable[[int], Awaitable[bytes]] | None = None
        self._pending_fragment = b""
        self._pending_total = 0
        self._ehlo_lines: list[str] | None = None
        # Since the last AUTH command line, until a line that is not an AUTH
        # response: see _stray_auth_response.
        self._after_auth = False
        # While an AUTH exchange waits for the client's response (a line cut
        # off then is a response, not a command: see _record_cut_off).
        self._reading_auth_response = False
        # The DSN parameters of the MAIL or RCPT being handled (see _getparams),
        # and that command's argument as sent, for their values' case.
        self._dsn_params: dict[str, str] = {}
        self._params_command = ""
        self._params_arg = ""
        self._implicit_tls: asyncio.Task[None] | None = None

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        plain = plain_angle_addr(arg)
        if plain is None and "=?" in arg and _decodes_a_word(arg):
            # SMTP has no encoded words: in an address they are characters
            # like any other (RFC 5321 4.1.2), and Postfix keeps them. The
            # parser would record "a b"@example.com for
            # <=?utf-8?q?a_b?=@example.com>, an address the client never
            # sent: one written as RFC 5321 writes a mailbox is kept as
            # sent, any other is refused.
            plain = _as_sent(arg)
            if plain is None:
                return None, None  # aiosmtpd's "553 5.1.3 malformed address"
        if plain is None:
            if _refused_address(arg):
                return None, None  # aiosmtpd's "553 5.1.3 malformed address"
            try:
                return super()._getaddr(arg)
            except Exception:
                # The email package's parser raises AttributeError or
                # IndexError on some malformed addresses (``0@[``) where it
                # means its parse error: malformed, not a 500 and a logged
                # traceback.
                return None, None
        address, rest = plain
        if self.local_part_limit and address.rindex("@") > self.local_part_limit:
            return None, None
        return address, rest

    @_same_syntax(SMTP.smtp_MAIL)
    async def smtp_MAIL(self, arg: str | None) -> None:
        self._params_command, self._params_arg = "MAIL", arg or ""
        self._bad_size = False
        await super().smtp_MAIL(arg)

    @_same_syntax(SMTP.smtp_RCPT)
    async def smtp_RCPT(self, arg: str | None) -> None:
        self._params_command, self._params_arg = "RCPT", arg or ""
        await super().smtp_RCPT(arg)

    def _getparams(self, params: Sequence[str]) -> dict[str, str | bool] | None:
        """aiosmtpd's parameter parsing, with the DSN parameters (RFC 3461)
        taken out before it refuses them as unknown (555). The handler
        hooks check them (`_dsn_fields`), after aiosmtpd's own checks."""
        result = super()._getparams(params)
        self._dsn_params = dsn = {}
        if result is None:
            # aiosmtpd refuses "SIZE=" with no value itself: said as below.
            self._bad_size = any(p.upper() == "SIZE=" for p in params)
            return None
        size = result.get("SIZE")
        if size is True or (isinstance(size, str) and not _ascii_number(size)):
            # aiosmtpd takes isdigit() for a number, then int() fails on
            # "²" (a 500 and a logged traceback) or reads "١٢" as 12: RFC
            # 1870's size is 1 to 20 ASCII digits. Its syntax error (501),
            # naming the parameter (`push`).
            self._bad_size = True
            return None
        for key in _DSN_PARAMS.get(self._params_command, ()):
            if key not in result:
                continue
            value = result.pop(key)
            given = [p for p in params if p.partition("=")[0] == key]
            if value is True or len(given) > 1:
                dsn[key] = ""  # invalid: no value, or given twice
                continue
            assert isinstance(value, str)
            # aiosmtpd upper-cased every parameter: ENVID and ORCPT keep
            # the case they were sent in.
            dsn[key] = next(
                (
                    word.partition("=")[2]
                    for word in self._params_arg.split()
                    if word.upper() == f"{key}={value}"
                ),
                value,
            )
        return result

    # -- connection lifecycle ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.record is None
        if first:
            self.record = Session(peer_of(transport), _now())
            self.record._served_by = self.state.settings.hostname
            if self.state.settings.tls == "implicit":
                # The sink listens in plain TCP and runs the handshake here,
                # so that a failed one is a session saying why.
                self.state.connections.add(self)
                self.state.store.add_session(self.record)
                self.transport = transport  # for close_by_server()
                self._implicit_tls = self.state.loop.create_task(
                    self._start_implicit_tls(transport)
                )
                return
        if self._original_transport is not None and self.transport is not None:
            self._discard_plain_text()
        if first and self._may_start_lean():
            self._start_lean(transport)
        else:
            super().connection_made(transport)
        assert self.record is not None
        # aiosmtpd's own test: after STARTTLS it keeps the plain transport.
        starttls = self._original_transport is not None
        if starttls:
            # After STARTTLS aiosmtpd forgets an earlier (plain-text) login,
            # as RFC 3207 says; so must the record (before the TLS below
            # wakes who waits for it). auth_attempts keeps it.
            self.record.auth = None
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            cipher = ssl_object.cipher()
            self.record._tls_started(
                TLSInfo(
                    version=ssl_object.version(),
                    cipher=cipher[0] if cipher else None,
                    implicit=not starttls,
                )
            )
            if starttls:  # wait_until(lambda: session.tls ...) checks again
                self.state.store.touch()
        if first:
            self.state.connections.add(self)
            self.state.store.add_session(self.record)
            if self._handler_coroutine is _NO_HANDLER:
                # Greeted once the session is in the store, as aiosmtpd's
                # handler greets after connection_made: a client that has
                # read the greeting finds its session.
                self._reply_at_once(f"220 {self.hostname} {self.__ident__}")

    # -- a connection without aiosmtpd's handler task, while it can ------------
    #
    # aiosmtpd serves each connection from a task (_handle_client) that greets
    # the client and then reads command after command. The commands of an
    # everyday conversation are answered as they arrive (data_received), so
    # that task only greeted, waited, and was cancelled by QUIT: three task
    # steps per connection for nothing. A plain connection with nothing
    # unusual about it is greeted here instead, with no task; the first line
    # that is not answered at once starts aiosmtpd's handler (_start_handler),
    # which then serves the rest of the connection as it always does, its
    # greeting already sent.

    def _may_start_lean(self) -> bool:
        return (
            self.state.fast_commands
            and not self.state.faults.rules
            and self._proxy_timeout is None
            and not self._enforce_call_limit
            and not self.require_starttls
            and not _AIOSMTPD_LOG.isEnabledFor(logging.INFO)
        )

    def _start_lean(self, transport: asyncio.BaseTransport) -> None:
        """aiosmtpd's connection_made for a new connection, without the
        handler (connection_made then greets)."""
        self._set_rset_state()  # type: ignore[no-untyped-call]
        session = self.session = self._create_session()
        session.peer = transport.get_extra_info("peername")
        self._reset_timeout()
        self._handler_coroutine = _NO_HANDLER  # before: _cb_client_connected
        asyncio.StreamReaderProtocol.connection_made(self, transport)
        self.transport = transport
        self._awaiting_command = True

    def _start_handler(self) -> None:
        """Hand the connection to aiosmtpd's handler, greeting skipped."""
        self._awaiting_command = False
        self._greeted = True
        self._wrap_reader(self._reader)
        self._handler_coroutine = self.loop.create_task(self._handle_client())

    _greeted = False
    _commands_read = 0
    #: MAIL's SIZE= was no number (`_getparams`): its 501 says so.
    _bad_size = False

    def _discard_plain_text(self) -> None:
        """Discard what a client sent after STARTTLS without waiting for the
        handshake, as RFC 3207 (4.2, 6) says: a command injected before TLS
        must not run as if sent over it. aiosmtpd 1.4.6 discards it too;
        1.4.5, which the sink supports, ran it after the handshake
        (CVE-2024-34083). Say so, or the client's command would vanish
        without a word: the count only, as the bytes may hold a password."""
        buffer = getattr(self._reader, "_buffer", None)
        if not buffer:
            return
        pending = len(buffer)
        buffer.clear()
        if self.record is not None:
            self._append("command", discarded_before_tls_note("STARTTLS", pending))
            peer = self.record.peer
            LOG.warning(
                "%s:%s sent %d byte(s) after STARTTLS before the TLS handshake; "
                "discarded unread, as RFC 3207 says (a client must wait for "
                "the handshake)",
                peer[0],
                peer[1],
                pending,
            )

    def eof_received(self) -> bool | None:
        # aiosmtpd cancels its handler on EOF; the handler then closes the
        # connection. uvloop starts reading at once, so the EOF of a client
        # that closed its side straight away can come before the handler's
        # first step: cancelled before it ran, it never greeted nor closed,
        # and the client waited forever. Until the greeting is out, handle
        # the EOF one step later, as asyncio's loop does by its order.
        # So too for a handler started late (_start_handler) that has not
        # run yet.
        record = self.record
        if (record is not None and not record._transcript) or self._greeted:
            self.loop.call_soon(self._late_eof)
            return True  # keep the write side open for the greeting
        if self._handler_coroutine is _NO_HANDLER:
            # What aiosmtpd's cancelled handler would do: close.
            super().eof_received()
            self._writer.close()
            return False
        return self._eof_to_handler()

    def _late_eof(self) -> None:
        if (
            self.transport is not None
            and not self.transport.is_closing()
            and self._handler_coroutine is not None
        ):
            self._eof_to_handler()

    def _eof_to_handler(self) -> bool | None:
        """aiosmtpd cancels its handler at the client's EOF, and what the
        client sent before it, still unread or being handled, was lost: a
        client that sends its messages and QUIT in one go, then closes its
        side (``nc -N``), lost those after the handler's last pause,
        unanswered. Unless the handler waits for a command with nothing
        unread, the reader gets the EOF instead, and the handler ends when
        it reaches it (`_wrap_reader`). Not over TLS, which has no half
        close; nor while a fault holds the connection (a ``delay`` or
        ``hang``): a client that gives up on it ends its session then, as
        the fault API says."""
        reader = self._reader
        if (
            (reader._buffer or not self._awaiting_command)  # type: ignore[attr-defined]
            and self not in self.state.held
            and not self._over_ssl  # type: ignore[attr-defined]
            and self.session is not None
            and self.session.ssl is None
        ):
            _AIOSMTPD_LOG.info("%r EOF received", self.session.peer)
            reader.feed_eof()
            return True  # the write side stays open for the replies
        return super().eof_received()

    async def _start_implicit_tls(self, transport: asyncio.BaseTransport) -> None:
        try:
            tls_transport = await self.state.loop.start_tls(
                cast("asyncio.WriteTransport", transport),
                self,
                cast("ssl.SSLContext", self.state.tls_context),
                server_side=True,
                # Also bounds how long stop() waits for such a client.
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            )
        except Exception as error:  # start_tls() closed the transport
            self._tls_failed(error)
            return
        if tls_transport is None:  # the client left during the handshake
            self._tls_failed(None)
            cast("asyncio.Transport", transport).abort()
            return
        self.transport = None  # aiosmtpd's connection_made() sets it
        self.connection_made(tls_transport)

    def _tls_failed(self, error: BaseException | None) -> None:
        """Record a failed handshake as the end of the session (no traceback
        in the log: a client that rejects the certificate is no server error)."""
        if self.record is not None:
            if self.record.end is None:
                self.record.tls_error = describe_handshake_failure(
                    error, implicit=self._implicit_tls is not None
                )
                self._mark_end("tls-failed")
            self.record._tls_started(None)  # wake readers of Session.tls
        self.state.connections.discard(self)
        self.state.store.touch()

    def connection_lost(self, error: Exception | None) -> None:
        record = self.record
        if record is not None:
            content = self._content
            if content is not None:
                # Count what arrived but was not read yet (a last line
                # without its CRLF) as content too.
                unread = content.unread + len(getattr(self._reader, "_buffer", b""))
                self._end_data(content.data_bytes + unread, CONTENT_CUT_OFF)
            if content is None and record.end is None:
                # The handler cancelled at an EOF (a fault held it): a line
                # it never read.
                self._record_unended_line("the client's close")
            self._mark_end("client-closed")
            record._tls_started(None)  # a handshake cut short: wake readers
        self.state.connections.discard(self)
        if self._finishing is not None:  # a command answered at once, waiting
            self._finishing.cancel()
        if self.session is None:
            # Lost before the implicit-TLS handshake began (e.g. stop()):
            # aiosmtpd never saw this connection.
            if self._implicit_tls is not None:
                self._implicit_tls.cancel()
        else:
            super().connection_lost(error)
            # asyncio keeps a reset's error in the protocol's closed future
            # and marks it read only in the protocol's __del__; when both die
            # in one garbage-collector cycle, the future may go first and log
            # "Future exception was never retrieved" (seen on 3.12, under
            # load). Nothing here awaits that future: read it now.
            closed = self._closed  # type: ignore[attr-defined]
            if closed.done() and not closed.cancelled():
                closed.exception()
            handler = self._handler_coroutine
            if handler is not None and not handler.done():
                handler.add_done_callback(self._break_cycles)
            else:
                self._break_cycles()
        self.state.store.touch()

    def _break_cycles(self, _handler: object = None) -> None:
        """Drop what refers back to this protocol once the connection is
        over and aiosmtpd's handler has ended: its table of bound methods,
        the stream writer and the wrapped reader all point here, so a
        closed connection waited for the cyclic garbage collector, whose
        runs then came at any moment (once inside a deep recursion, where
        aiosmtpd's ``__del__`` failed). Freed by reference counting now."""
        self._smtp_methods = {}
        self._authenticator = None
        self._client_connected_cb = None
        self._handler_coroutine = None
        # The recording wrappers, closures over this protocol (the class's
        # own methods show again).
        self._reader.__dict__.pop("readuntil", None)
        self._reader.__dict__.pop("read", None)
        # The writer refers to this protocol; nothing writes any more.
        writer = self.__dict__.pop("_writer", None)
        if writer is not None:
            writer.__dict__.pop("write", None)  # _write_or_hold
        self.__dict__.pop("_send", None)
        # After STARTTLS, the TLS layer (and the plain transport under it)
        # refer to this protocol as theirs.
        self._tls_protocol = None
        self._original_transport = None

    def _end_data(self, size: int, note: str = "") -> None:
        self._content, self._content_at_once = None, False
        self._append("data", f"<message content: {size} bytes{note}>")

    # -- idle timeout ----------------------------------------------------------
    #
    # aiosmtpd re-arms its idle timer for every command: it cancels the timer
    # and schedules a new one, which the loop keeps in its heap until it
    # comes due. The sink moves a deadline instead, and keeps one timer: when
    # that fires before the deadline (there was traffic since), it re-arms
    # for the rest. Same timeout, one timer per idle period, not per command.

    # The deadline the timer was armed for is kept here, not read back with
    # TimerHandle.when(): uvloop keeps timers in whole milliseconds, so
    # when() can differ from the deadline by a rounding step.
    _idle_deadline = 0.0
    _armed_for = 0.0

    def _reset_timeout(self, duration: float | None = None) -> None:
        deadline = self.loop.time() + (duration or self._timeout_duration)
        self._idle_deadline = deadline
        timer = self._timeout_handle
        if timer is None or timer.cancelled() or self._armed_for > deadline:
            if timer is not None:
                timer.cancel()
            self._arm_idle_timer(deadline)

    def _heard_from_client(self) -> None:
        """Message content came (any part of a line): the client is not idle.
        aiosmtpd moves the deadline per command only, and a client slowly
        sending a message for longer than idle_timeout got the 421 mid-DATA,
        its mail lost. Moving the deadline is enough: the timer re-arms."""
        self._idle_deadline = self.loop.time() + self._timeout_duration

    def _arm_idle_timer(self, deadline: float) -> None:
        self._armed_for = deadline
        self._timeout_handle = self.loop.call_at(deadline, self._timeout_cb)

    def _timeout_cb(self) -> None:
        if self._idle_deadline > self._armed_for:  # traffic since it was armed
            self._arm_idle_timer(self._idle_deadline)
            return
        self._send_held_replies()  # before the 421 and the close
        content = self._content
        if content is not None and self.record is not None:
            # What came of the message, before the 421 (it came first).
            unread = content.unread + len(getattr(self._reader, "_buffer", b""))
            self._end_data(content.data_bytes + unread, CONTENT_TIMED_OUT)
        elif self.record is not None:
            # A command the client began and never ended (a client that
            # ends its lines with LF alone, or none): why it "hung".
            self._record_unended_line("the idle timeout")
        transport, send = self.transport, getattr(self, "_send", None)
        if transport is not None and not transport.is_closing() and send is not None:
            # aiosmtpd closes without a word; a server says why it closes
            # (RFC 5321 3.8, 421), as Postfix does for an idle client, so
            # that a client under test can tell a timeout from a crash.
            text = f"421 4.4.2 {self.hostname} Error: timeout exceeded"
            self._record_notice(text)
            send(text.encode("ascii", "replace") + b"\r\n")
        self._mark_end("timeout")
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    def close_at_stop(self) -> None:
        """The sink is stopping: tell the client, then close. RFC 5321 3.8:
        a server shut down "SHOULD attempt to send a line containing a 421
        response code", so that a client can tell a stop from a crash. Only
        a client that waits for a reply to its next command is told: one
        sending message content would not read it, and a connection a fault
        holds stays as silent as the test made it."""
        self._send_held_replies()
        transport, send = self.transport, getattr(self, "_send", None)
        if (
            self._awaiting_command
            and not self._content_at_once
            and self not in self.state.held
            and transport is not None
            and not transport.is_closing()
            and send is not None
            and self.record is not None
            and self.record.end is None
        ):
            text = f"421 4.3.2 {self.hostname} Service shutting down"
            self._record_notice(text)  # recorded before the end, as every reply
            send(text.encode("ascii", "replace") + b"\r\n")
        self.close_by_server()

    def close_by_server(self) -> None:
        """Abort the connection (sink stopping, or a fault)."""
        self._mark_end("server-closed")
        self._send_held_replies()  # answered before the stop: the client may read
        if self.transport is not None:
            # aiosmtpd types it BaseTransport; a server connection's is a Transport.
            cast("asyncio.Transport", self.transport).abort()

    def _mark_end(self, reason: EndReason) -> bool:
        """Record why the session ended, unless it already has; True if so."""
        if self.record is not None and self.record.end is None:
            if self._current is not None:
                # A delay the end cut short: no reply is coming now. Before
                # the end, which a reader may wait for (the delay's own
                # task clears it only once it is cancelled, later).
                self._current._delayed = False
            # The time first: a reader that sees the end sorts by it.
            self.record.ended_at = _now()
            self.record.end = reason
            return True
        return False

    def _cb_client_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        super()._cb_client_connected(reader, writer)
        self._read_line, self._read_bytes = reader.readuntil, reader.read
        if self._handler_coroutine is not _NO_HANDLER:  # else: _start_handler
            self._wrap_reader(reader)
        self._send = writer.write
        writer.write = self._write_or_hold  # type: ignore[method-assign]

    # -- one write for a pipelined group's replies -------------------------------
    #
    # A pipelining client (RFC 2920) sends MAIL, its RCPTs and DATA in one
    # packet, and aiosmtpd answers each line with a write of its own: a
    # socket send for each, and a wake-up of the client for each. While
    # another whole command line waits in the reader's buffer, the reply to a
    # command that may be pipelined (MAIL, RCPT, RSET, NOOP, the content's
    # end) is held instead, and goes out with the next reply that is not
    # held, or when the loop next runs a callback: by then aiosmtpd has
    # answered every line it had, and waits for more. So the client gets one
    # write per group, in the same order; a client that waits for each reply
    # (smtplib) never has a line waiting and sees no change. Never with fault
    # rules: a stage's delay or disconnect must find the earlier replies sent.

    _held_replies: bytearray | None = None

    def _write_or_hold(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held_replies
        buffer = self._reader._buffer  # type: ignore[attr-defined]
        if (
            # find(), not `in`: see _on_line. Not on an empty buffer, as
            # nearly always: bytes.find parses its arguments the slow way.
            (self._more_lines or (buffer and buffer.find(b"\n") >= 0))
            and self._may_hold_reply()
            # Beyond this, write: the transport's back pressure (aiosmtpd
            # drains after each reply) then holds a client that never reads.
            and (held is None or len(held) < _HELD_REPLIES_MAX)
        ):
            if held is None:
                self._held_replies = bytearray(data)
                self.loop.call_soon(self._send_held_replies)
            else:
                held += data
            return
        if held is not None:
            self._held_replies = None
            held += data
            data = bytes(held)
        self._send(data)

    def _may_hold_reply(self) -> bool:
        # Only replies after which aiosmtpd never closes the connection: a
        # reply held when the transport closes is lost. (Its fifth reply to
        # an unknown command, "MAILFROM:" or "NOOPX" too, comes with a close;
        # so does its 421 with a command-call limit.)
        current = self._current
        if current is None or self.state.faults.rules or self._enforce_call_limit:
            return False
        if current.kind == "data":  # the reply to the content's end
            return True
        verb = current.line.partition(" ")[0].upper()
        return current.kind == "command" and verb in _PIPELINED

    def _send_held_replies(self) -> None:
        held, self._held_replies = self._held_replies, None
        transport = self.transport
        if held and transport is not None and not transport.is_closing():
            self._send(bytes(held))

    # -- recording -------------------------------------------------------------

    def _wrap_reader(self, reader: asyncio.StreamReader) -> None:
        """Record each line as aiosmtpd reads it.

        aiosmtpd reads commands with ``readuntil()`` and the pieces of an
        over-long line with ``read(n)``. Wrapping those calls on this
        connection's own reader sees exactly what the server consumed, in the
        order it handled it. Message content and AUTH responses are read with
        the reader's own methods (see `_read_content`, `challenge_auth`): the
        content is only counted, the responses are never shown.
        """
        readuntil, read = reader.readuntil, reader.read

        async def recording_readuntil(separator: _ReaduntilBuffer = b"\n") -> bytes:
            record = self.record
            if record is not None and record.end == "quit":
                # smtp_QUIT closed the connection and cancelled this task,
                # which ends at its next wait: a line already read after the
                # QUIT would run first, its reply recorded, never sent.
                raise asyncio.CancelledError
            self._commands_read += 1
            if self._commands_read % COMMANDS_BEFORE_YIELD == 0:
                await asyncio.sleep(0)
            # While this waits, aiosmtpd's loop waits for a command: one that
            # arrives alone may be answered at once (see data_received).
            self._awaiting_command = True
            try:
                line = await readuntil(separator)
            except asyncio.IncompleteReadError as exc:
                # The client's EOF after its last line (see _eof_to_handler):
                # the handler ends as aiosmtpd's cancel ends it.
                if exc.partial or self._pending_total:  # (an over-long one)
                    self._record_cut_off(exc.partial)
                raise asyncio.CancelledError from None
            finally:
                self._awaiting_command = False
            self._on_line(line)
            return line

        async def recording_read(n: int = -1) -> bytes:
            chunk = await read(n)
            self._on_fragment(chunk)
            return chunk

        reader.readuntil = recording_readuntil  # type: ignore[method-assign]
        reader.read = recording_read  # type: ignore[method-assign]

    # -- commands answered as they arrive ------------------------------------
    #
    # aiosmtpd reads each command line in its coroutine: the line's arrival
    # resolves a StreamReader future, and the coroutine runs on the loop's
    # next iteration. Each whole command line of a packet that arrives while
    # that coroutine waits for one, with nothing unusual about the
    # connection, is answered here instead, after aiosmtpd's checks of the
    # line: by the sink itself for DATA and the everyday forms of EHLO,
    # MAIL, RCPT and QUIT (below), else by the same aiosmtpd method; after a
    # DATA answered so, the content comes here too (_take_content). The
    # first line that cannot be answered so, and all after it, go to
    # aiosmtpd's loop. tests/test_properties.py compares both ways on any
    # sequence of commands, any content in any packets, and both sent
    # without waiting, in packets cut anywhere.

    _awaiting_command = False
    # Data that came while a command answered here was still running (it
    # waited, or failed): handed on, in order, when it is done. Past
    # _HELD_DATA_MAX the connection stops reading until then, as aiosmtpd's
    # stream reader does past its limit: a client that floods a hung or
    # delayed command does not fill the sink's memory.
    _held: bytearray | None = None
    _held_paused = False

    # True while the line being answered at once has another whole line
    # after it in the same packet (a pipelined group): its reply may be
    # held, to go out with the group's last (see _write_or_hold).
    _more_lines = False

    def data_received(self, data: bytes) -> None:
        # A loop, not recursion: one packet may hold many messages. Offsets,
        # not slices of the rest, so that a packet of many lines is read once.
        start = 0
        answered = 0
        try:
            while start < len(data):
                if self._held is not None:
                    self._held += data[start:]
                    if len(self._held) > _HELD_DATA_MAX and not self._held_paused:
                        self._held_paused = True
                        cast("asyncio.ReadTransport", self.transport).pause_reading()
                    return
                if self._content_at_once:
                    rest = data[start:] if start else data
                    start += self._take_content(rest)
                    continue
                end = data.find(b"\n", start)
                if not (
                    end >= 0
                    # The rest of a long pipelined run to aiosmtpd's loop,
                    # which lets other connections in between its reads.
                    and answered < COMMANDS_BEFORE_YIELD
                    and self._awaiting_command
                    and self.state.fast_commands
                    and not self.state.faults.rules
                    # Not the end of a line that began in an earlier packet.
                    and not self._reader._buffer  # type: ignore[attr-defined]
                ):
                    break
                # A packet of one line (nearly always) needs no second look.
                self._more_lines = (
                    end + 1 < len(data) and data.find(b"\n", end + 1) >= 0
                )
                if not self._answer_now(data[start : end + 1]):
                    break
                answered += 1
                if self.transport is None or self.transport.is_closing():
                    return  # after QUIT: aiosmtpd reads no further either
                start = end + 1
            else:
                return
        finally:
            self._more_lines = False
        # The rest is aiosmtpd's: its loop reads it from the stream reader.
        # A TLS handshake never gets answered at once (no verb), so its
        # check costs the commands answered so nothing, and the rest a byte.
        if data[:1] == b"\x16" and self._tls_on_plain_port(data, start):
            return
        if self._handler_coroutine is _NO_HANDLER:
            self._start_handler()
        if self._content is not None or data[-1:] != b"\n":
            # Content read aiosmtpd's way: any of it is traffic, as on the
            # way above (_take_content), not only a whole line; so is part
            # of a command line (aiosmtpd moves the deadline per command).
            self._heard_from_client()
        super().data_received(data[start:] if start else data)

    def _tls_on_plain_port(self, data: bytes, start: int) -> bool:
        """Whether ``data`` (from ``start``) is a TLS handshake, the first
        bytes the client sent, on this plain-text port: then it is not read
        as commands (its bytes made garbage lines and "500 Error: bad
        syntax" replies in the transcript), and the session ends once the
        greeting is out (`_end_at_tls_handshake`)."""
        record = self.record
        if (
            start
            or record is None
            or self.transport is None
            # On an implicit-TLS port every byte comes here decrypted.
            or self.state.settings.tls == "implicit"
            or not starts_tls_handshake(data)
            # The first bytes: nothing read yet (no line recorded, none
            # begun in the reader's buffer or over-long in pieces).
            or self._reader._buffer  # type: ignore[attr-defined]
            or self._pending_total
            or any(exchange.kind != "greeting" for exchange in record._transcript)
        ):
            return False
        greeting = self._current
        if greeting is not None and greeting.replies:
            self._end_at_tls_handshake(data)
            return True
        # aiosmtpd's handler has not greeted yet (uvloop reads at once, a
        # CONNECT rule delays it): ended when the handler asks for its first
        # command, the greeting sent.
        reader = self._reader
        recording_readuntil = reader.readuntil

        async def readuntil_after_greeting(
            separator: _ReaduntilBuffer = b"\n",
        ) -> bytes:
            reader.readuntil = recording_readuntil  # type: ignore[method-assign]
            self._end_at_tls_handshake(data)
            # Cancelled (with aiosmtpd's handler) when the connection closes.
            return await recording_readuntil(separator)

        reader.readuntil = readuntil_after_greeting  # type: ignore[method-assign]
        return True

    def _end_at_tls_handshake(self, data: bytes) -> None:
        """Record the TLS handshake ``data`` as one line, end the session
        saying what to do, and close (after the greeting, which the client
        reads as TLS and fails on: WRONG_VERSION_NUMBER, not a connection
        closed unanswered). Nothing more is said: a reply in plain text
        would be read as TLS too."""
        record, transport = self.record, self.transport
        assert record is not None
        # What the client sent after it (its next packets) is not read.
        self._reader._buffer.clear()  # type: ignore[attr-defined]
        self._append("command", tls_handshake_note(data))
        record.tls_error = describe_tls_on_plain_port("SMTP", self.state.settings.tls)
        self._mark_end("tls-on-plain-port")
        self.state.store.touch()
        if transport is not None:
            transport.close()  # the greeting goes out first

    def _answer_now(self, data: bytes) -> bool:
        """Answer the command line ``data`` as aiosmtpd's loop would; False
        (nothing done) for anything that loop should see."""
        line = data.rstrip(b"\r\n")
        verb, _, arg_bytes = line.partition(b" ")
        name = _ANSWERED_AT_ONCE.get(verb.upper())
        session, transport = self.session, self.transport
        if (
            name is None
            or session is None
            or transport is None
            or transport.is_closing()
            or transport.get_write_buffer_size()  # type: ignore[attr-defined]
            or self._pending_total  # the rest of an over-long line
            or self._after_auth  # maybe an AUTH response: see _on_line
            or not self._tls_handshake_okay
            or (self.require_starttls and not self._tls_protocol)
            or self._enforce_call_limit
            or _AIOSMTPD_LOG.isEnabledFor(logging.INFO)  # its lines, its way
        ):
            return False
        arg: str | None = None
        if arg_bytes:
            arg_bytes = arg_bytes.strip()
            try:
                arg = arg_bytes.decode(
                    "utf-8" if self.enable_SMTPUTF8 else "ascii",
                    "surrogateescape" if self.enable_SMTPUTF8 else "strict",
                )
            except UnicodeDecodeError:
                return False  # aiosmtpd's "strict ASCII mode" reply
        limit = (
            self.command_size_limits[name]
            if session.extended_smtp
            else self.command_size_limit
        )
        # The stream reader's own limit comes first in aiosmtpd's loop (a
        # longer line is "500 Command line too long" whatever the command).
        if len(line) > limit or len(data) - 1 > self.line_length_limit:
            return False
        if name == "DATA" and not self._content_may_come_at_once(arg):
            return False
        try:
            self._on_line(data)
            self._reset_timeout()
            if name == "DATA":
                # smtp_DATA's way to its 354; the content then comes to
                # _take_content.
                self._content = self._new_content()
                self._reply_at_once(_GO_AHEAD)
                self._content_at_once = True
            elif name == "EHLO" and (ehlo := self._ehlo_now(arg)) is not None:
                self._take_ehlo(cast("str", arg), *ehlo)
            elif name == "QUIT" and arg is None:
                self._take_quit()
            elif name == "MAIL" and (sender := self._plain_mail(arg)) is not None:
                self._take_mail(*sender)
            elif name == "RCPT" and (recipient := self._plain_rcpt(arg)) is not None:
                self._take_rcpt(recipient)
            else:
                self._run_at_once(self._smtp_methods[name](arg))
        except Exception as error:
            # Say, a bug of the sink's: aiosmtpd's loop answers 500 and goes
            # on with the session; so does _finish.
            self._finish_later(_raise(error))
        return True

    # -- EHLO and QUIT ----------------------------------------------------------
    #
    # Every connection's first and last command. The EHLO reply is the
    # sink's own (worked out by aiosmtpd's smtp_EHLO and _ehlo_reply on the
    # sink's first EHLO): an EHLO answered at once sends it again with
    # smtp_EHLO's effect on the session, and QUIT smtp_QUIT's.

    @property
    def _reply_encoding(self) -> str:
        return "utf-8" if self.enable_SMTPUTF8 else "ascii"  # as aiosmtpd's push

    def _ehlo_now(self, hostname: str | None) -> tuple[tuple[str, ...], bytes] | None:
        """The EHLO reply to send at once for ``hostname``, if it is known
        and the name is one smtp_EHLO accepts; else None."""
        if not hostname or _malformed(hostname) or self._ehlo_hook_ver is not None:
            return None
        return self.state.ehlo_at_once.get(self._tls_protocol is not None)

    def _take_ehlo(self, hostname: str, reply: tuple[str, ...], sent: bytes) -> None:
        """aiosmtpd's smtp_EHLO and ours, for a known reply."""
        session = self.session
        assert session is not None
        self._set_rset_state()  # type: ignore[no-untyped-call]
        session.extended_smtp = True
        # aiosmtpd raises MAIL's limit for each EHLO, not once.
        if self.data_size_limit:
            self.command_size_limits["MAIL"] += 26
        if self.enable_SMTPUTF8:
            self.command_size_limits["MAIL"] += 10
        session.host_name = hostname
        self._note_greeting()
        record, current, state = self.record, self._current, self.state
        if (
            current is not None
            and record is not None
            and record.end is None
            and state.mask_secrets is None
            and not state.store.watchers
        ):
            # What _record_reply does for each line, in one step: the lines
            # are the sink's own "250" lines, so none ends the session, and
            # with no mask and nobody watching there is nothing else to do.
            current.replies.extend(reply)
        else:
            for line in reply:
                self._record_reply(line)
        self._writer.write(sent)

    def _take_quit(self) -> None:
        """aiosmtpd's smtp_QUIT (there is no QUIT hook)."""
        self._reply_at_once("221 Bye")
        assert self._handler_coroutine is not None
        self._handler_coroutine.cancel()
        assert self.transport is not None
        self.transport.close()

    # -- MAIL and RCPT as nearly every client sends them -------------------------
    #
    # aiosmtpd's smtp_MAIL and smtp_RCPT, with the handler's hooks, are a
    # third of the sink's work per message. A MAIL or RCPT with a plain
    # address (see plain_angle_addr), in a session where it is simply
    # accepted, and with no parameter but SIZE and BODY (MAIL) or none
    # (RCPT), is taken here with the same effect on the envelope and the
    # same reply; anything else (any refusal, DSN, SMTPUTF8, a limit
    # reached) goes to aiosmtpd's method. tests/test_properties.py compares
    # both ways on any sequence of commands.

    def _may_transact(self, session: _AioSession) -> bool:
        """Whether aiosmtpd's check_helo_needed and check_auth_needed would
        let MAIL, RCPT or DATA through in ``session``."""
        return bool(session.host_name) and (
            session.authenticated or not self._auth_required
        )

    def _plain_address(self, keyword: str, arg: str | None) -> tuple[str, str] | None:
        """``(address, parameters)`` of a plain MAIL or RCPT argument that
        aiosmtpd's checks before the handler let through; else None."""
        session = self.session
        if (
            arg is None
            or session is None
            or not self._may_transact(session)
            or arg[: len(keyword)].upper() != keyword
        ):
            return None
        plain = plain_angle_addr(arg[len(keyword) :].strip())
        if plain is None:
            return None
        address, params = plain
        if (self.local_part_limit and address.index("@") > self.local_part_limit) or (
            params and not session.extended_smtp
        ):
            return None
        # Not _malformed(): a plain address is printable ASCII.
        return address, params.upper()

    def _plain_mail(self, arg: str | None) -> tuple[str, list[str]] | None:
        plain = self._plain_address("FROM:", arg)
        envelope = self.envelope
        if plain is None or envelope is None or envelope.mail_from:
            return None
        address, params = plain
        options = params.split()
        # At most one SIZE and one BODY (smtplib sends SIZE).
        seen: list[str] = []
        for option in options:
            key = option[:4]
            if _PLAIN_MAIL_PARAM.match(option) is None or key in seen:
                return None
            seen.append(key)
            if key == "BODY":
                if self._decode_data:
                    return None
            elif self.data_size_limit and int(option[5:]) > self.data_size_limit:
                return None
        return address, options

    def _take_mail(self, address: str, options: list[str]) -> None:
        """smtp_MAIL and handle_MAIL's effect on a plain MAIL."""
        envelope = cast("_SinkEnvelope", self.envelope)
        envelope.smtp_utf8 = False
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        envelope.dsn_ret = envelope.dsn_envid = None
        self._reply_at_once("250 OK")

    def _plain_rcpt(self, arg: str | None) -> str | None:
        plain = self._plain_address("TO:", arg)
        envelope = self.envelope
        if plain is None or plain[1] or envelope is None or not envelope.mail_from:
            return None
        limit = self.state.settings.max_recipients
        if limit is not None and len(envelope.rcpt_tos) >= limit:
            return None
        return plain[0]

    def _take_rcpt(self, address: str) -> None:
        """smtp_RCPT and handle_RCPT's effect on a plain RCPT."""
        envelope = cast("_SinkEnvelope", self.envelope)
        envelope.rcpt_tos.append(address)
        envelope.per_rcpt_options.append(())
        envelope.per_rcpt_dsn.append(_NO_DSN)
        self._reply_at_once("250 OK")

    def _reply_at_once(self, text: str) -> None:
        """aiosmtpd's push of ``text``, recorded, for a reply made here,
        without its drain: a reply of a few bytes to a client that reads
        them (the transport's buffer was empty when the command came, or,
        for the final dot, when DATA came)."""
        self._record_reply(text)
        self._writer.write(text.encode("ascii") + b"\r\n")

    def _content_may_come_at_once(self, arg: str | None) -> bool:
        """Whether smtp_DATA would answer DATA with 354 at once (no fault
        rule, as data_received checked): else aiosmtpd's way replies."""
        session, envelope = self.session, self.envelope
        return (
            arg is None
            and session is not None
            and self._may_transact(session)
            and envelope is not None
            and bool(envelope.rcpt_tos)
            and self._smtp_methods.get("DATA") == self.smtp_DATA
        )

    def _take_content(self, data: bytes) -> int:
        """Message content as it arrives, after a DATA answered at once: how
        many bytes of ``data`` it took (the rest are commands sent after the
        final dot, before its reply came)."""
        content = self._content
        assert content is not None
        self._heard_from_client()
        used = content.feed(data)
        if used < 0:
            return len(data)  # the final dot is still to come
        self._content_at_once = False
        # A pipelining client's next commands may follow: the reply may
        # wait for theirs (RFC 2920 lets the final dot start a group).
        self._more_lines = used < len(data) and data.find(b"\n", used) >= 0
        body, refusal = content.result()
        if self.state.faults.rules:  # an EOD rule may delay or answer
            self._run_at_once(self._after_content(body, refusal))
        else:  # _after_content's steps, none of which waits
            try:
                envelope = self._content_ended(body, refusal)
                status = refusal or self._keep(envelope)
                self._set_post_data_state()  # type: ignore[no-untyped-call]
                self._reply_at_once(status)
            except Exception as error:  # as in _answer_now
                self._finish_later(_raise(error))
        return used

    def _run_at_once(self, command: Coroutine[Any, Any, None]) -> None:
        """Run ``command`` here, outside any task, as far as it goes without
        waiting; if it waits after all, or fails, a task carries it on."""
        try:
            waits_for = command.send(None)
        except StopIteration:
            return
        except Exception as error:
            self._finish_later(_raise(error))
        else:
            self._finish_later(_Resumed(command, waits_for))

    _finishing: asyncio.Task[None] | None = None

    def _finish_later(self, rest: Awaitable[None]) -> None:
        """Run ``rest`` of a command in a task, holding later data until it
        is done, so that commands are still answered in order. The task is
        the connection's, as aiosmtpd's handler is: cancelled when the
        connection is lost (connection_lost)."""
        self._held = bytearray()
        task = self._finishing = self.loop.create_task(self._finish(rest))

        def done(task: asyncio.Task[None]) -> None:
            self._finishing = None
            error = None if task.cancelled() else task.exception()
            if error is not None and not isinstance(error, ConnectionError):
                self.loop.call_exception_handler(
                    {"message": "a command failed", "exception": error, "task": task}
                )
            held, self._held = self._held, None
            transport = cast("asyncio.ReadTransport | None", self.transport)
            if self._held_paused:
                self._held_paused = False
                # Unless aiosmtpd's reader paused it too: it resumes itself.
                if (
                    transport is not None
                    and not transport.is_closing()
                    and not self._reader._paused  # type: ignore[attr-defined]
                ):
                    transport.resume_reading()
            if held and transport is not None:
                self.data_received(bytes(held))

        task.add_done_callback(done)

    async def _finish(self, rest: Awaitable[None]) -> None:
        """``rest``, with what aiosmtpd's loop does when a command fails."""
        try:
            await rest
        except ConnectionResetError:  # the client left: as aiosmtpd's loop
            assert self.session is not None
            _AIOSMTPD_LOG.info(
                "%r Connection lost during _handle_client()", self.session.peer
            )
            self._writer.close()
        except Exception as error:
            # In the except block: handle_exception logs the traceback.
            try:
                status = await self.handle_exception(error)
            except Exception as inner:
                assert self.session is not None
                _AIOSMTPD_LOG.exception(
                    "%r Exception in handle_exception()", self.session.peer
                )
                status = f"500 Error: ({inner.__class__.__name__}) {inner}"
            await self.push(status)

    def _append(self, kind: Any, line: str) -> Exchange:
        # This and _record_reply run for every line of every conversation:
        # keep them lean (the recording-overhead benchmark watches them).
        store = self.state.store
        # One copy of a line that many exchanges repeat ("DATA"): what
        # `Store.share` does, bound included (a connection may send line
        # after unique line and no message), without a call on this path.
        shared = store.shared
        if len(shared) >= SHARED_VALUES_MAX:
            shared.clear()
        exchange = Exchange(kind, shared.setdefault(line, line), time.time())
        assert self.record is not None
        self.record._append(exchange)
        self._current = exchange
        if store.watchers:
            store.touch()
        return exchange

    def _on_fragment(self, chunk: bytes) -> None:
        self._pending_total += len(chunk)
        if len(self._pending_fragment) < _KEPT_OF_A_LONG_LINE:
            self._pending_fragment += chunk[:_KEPT_OF_A_LONG_LINE]

    # After the server ended the session, _on_line and _record_reply record
    # nothing: aiosmtpd goes on with the lines it has already read after its
    # own goodbye (502 after too many unknown commands) and close, and their
    # replies are never sent. (Every last reply is recorded before the end
    # is.) Tested inline, a call less per line and reply.

    def _on_line(self, line: bytes) -> None:
        record = self.record
        if record is not None and record.end == "server-closed":
            return
        total = len(line)
        if self._pending_total:  # the rest of an over-long line
            total += self._pending_total
            line = self._pending_fragment + line
            self._pending_fragment, self._pending_total = b"", 0
        raw = line.rstrip(b"\r\n")
        if _STRAY.line is not None:
            _STRAY.line = None
        if self._after_auth and self._stray_auth_response(raw):
            return
        # Most lines are not AUTH: skip the decoding. find(), not `in`: a
        # bytes `in` first tries its operand as an integer, and that failed
        # try makes and drops a TypeError, on every line and reply.
        auth_line = False
        if raw.upper().find(b"AUTH") >= 0:
            # Keep the mechanism; PLAIN's initial response is the password.
            # Masked before anything is made printable, so that no separator
            # smuggles the secret through.
            decoded = raw.decode("utf-8", "surrogateescape")
            if _is_auth_line(decoded):
                raw = mask_auth(decoded).encode("utf-8", "surrogateescape")
                self._after_auth = auth_line = True
        if raw[:4].upper() == b"PASS" and raw[4:5] in (b" ", b"\t"):
            # A POP3 client at the SMTP port: its password, which no AUTH
            # or table here may know to mask (aiosmtpd's log lines too).
            _STRAY.line, _STRAY.shown = raw.strip().upper(), raw[:5] + b"****"
            raw = _STRAY.shown
        elif not auth_line:
            # Whatever letters it holds ("oAuthpw", an OAuth token).
            raw = self._without_unknowable_password(raw)
        mask = self.state.mask_secrets
        if total > _MAX_SHOWN_LINE and mask is not None:
            # Masked whole, then cut: cut first, a password across the cut
            # was shown in part (whole, when it ended at the cut).
            text = mask(_printable(raw))[:_MAX_SHOWN_LINE]
            text += f"... [{total} bytes in all]"
        else:
            text = _printable(raw[:_MAX_SHOWN_LINE])
            if total > _MAX_SHOWN_LINE:
                text += f"... [{total} bytes in all]"
            if mask is not None:  # a password where no AUTH expects one
                text = mask(text)
        # Escaped after masking: a known password that starts with such a
        # character still matches.
        self._append("command", visible_start(text))

    def _record_unended_line(self, by: str) -> None:
        """`_record_cut_off` for what the reader holds of a line whose end
        never came, if anything (no reader before an implicit-TLS
        handshake)."""
        left = bytes(getattr(getattr(self, "_reader", None), "_buffer", b""))
        if (left and b"\n" not in left) or self._pending_total:
            self._record_cut_off(left, by)

    def _record_cut_off(self, part: bytes, by: str = "the client's close") -> None:
        """Record a command line the client's close (or ``by``) cut off
        (never run): its verb if it is one, the rest counted, never shown
        (it may hold a password), as the POP3 and IMAP servers record one.
        Inside an AUTH exchange, an unfinished response: counted only (a
        response may be the base64 word "RSET")."""
        if self._pending_total:  # the end of an over-long line
            part, total = self._pending_fragment + part, self._pending_total + len(part)
            self._pending_fragment, self._pending_total = b"", 0
        else:
            total = len(part)
        words = part.split(None, 1)
        verb = words[0].decode("ascii", "replace").upper() if words else ""
        known = not self._reading_auth_response and (
            f"smtp_{verb}" in _command_methods(type(self))
        )
        self._append("command", cut_off_note(verb if known else None, total, by))

    def _stray_auth_response(self, raw: bytes) -> bool:
        """Record a line that follows an AUTH command as a masked AUTH
        response if it could be one (a single word that is not a command
        verb): a client that sends its responses without waiting for the
        334, or after AUTH was refused, has them read as commands. True when
        recorded so."""
        word = raw.strip().upper()
        if not _SASL_RESPONSE.match(raw) or (
            word.decode("ascii", "replace") in self._smtp_methods
        ):
            self._after_auth = False
            return False
        _STRAY.line, _STRAY.shown = word, b"****"  # for the log filter
        self._append("auth-response", "****")
        return True

    def _without_unknowable_password(self, raw: bytes) -> bytes:
        """A line as recorded before a login succeeded: a line that is no
        command may hold a password that no table names. On a sink that
        takes any password, every such line; with a table, a word alone (a
        wrong password sent without its AUTH); on every sink, a misspelt
        AUTH (`_like_auth`: ``AUHT PLAIN <base64>`` carries the credentials
        all the same, the production ones of a client left with them). A
        misspelt command keeps its first word (``LOGIN ****``), a word
        alone none, as on POP3 and IMAP; aiosmtpd's log records of it are
        masked alike (`_STRAY`), and its reply does not echo it (`push`)."""
        session = self.session
        if session is None or session.authenticated:
            return raw
        if raw[:4].upper() in _EVERY_MESSAGE_VERBS and raw[4:5] in b" \t":
            return raw  # nearly every line: answered before any split
        words = raw.split(None, 5)
        if not words or words[0].upper().decode("latin-1") in self._smtp_methods:
            return raw
        auth = self.state.settings.auth
        like_auth = _like_auth(words)
        if like_auth:
            # Its responses may follow on lines of their own (pipelined, or
            # sent though no 334 came): masked as AUTH's are.
            self._after_auth = True
        elif auth != "any" and (auth is None or len(words) > 1):
            # With a table, its passwords are masked as words wherever they
            # are (`word_masker`); without one, no password is expected.
            mask = self.state.mask_secrets
            if auth is not None and mask is not None:
                text = raw.decode("utf-8", "surrogateescape")
                first = words[0].decode("utf-8", "surrogateescape")
                if mask(text).lstrip("'\"").startswith("****") and mask(first) == first:
                    # A passphrase the sink knows from the first word on:
                    # aiosmtpd logs that word, upper-cased, as the command
                    # it did not recognize ("unrecognised: CORRECT").
                    _STRAY.line, _STRAY.shown = words[0].upper(), b"****"
            return raw
        shown = words[0] + b" ****" if len(words) > 1 else b"****"
        _STRAY.line, _STRAY.shown = raw.strip().upper(), shown
        return shown

    def push(self, status: AnyStr) -> Coroutine[Any, Any, None]:
        # Not itself a coroutine function: it returns what the caller awaits
        # (aiosmtpd's push, mostly), one coroutine frame less per reply.
        if self._greeted:  # aiosmtpd's greeting, sent in _start_lean
            self._greeted = False
            return _nothing()
        if self._ehlo_lines is not None:  # collected by smtp_EHLO, see there
            self._ehlo_lines.append(
                status.decode("utf-8", "replace")
                if isinstance(status, bytes)
                else status
            )
            return _nothing()
        if self._injected_push is not None:  # a fault's reply, from a hook
            lines, self._injected_push = self._injected_push, None
            return self._push_injected(lines, "")
        text = (
            status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        )
        if isinstance(status, str) and not _encodes(status, self._reply_encoding):
            # aiosmtpd echoes an argument it could not parse ("502 Could not
            # VRFY <\udcff"): its push then failed to encode the reply (a
            # 500 and a logged traceback, after a 502 recorded but never
            # sent). Sent and recorded escaped, as a transcript shows it.
            status = text = _sendable(status, self._reply_encoding)
        if text == _AIOSMTPD_SIZE_REFUSAL and (
            declared := _DECLARED_SIZE.search(self._params_arg)
        ):
            text = "552 " + size_refusal(
                int(declared[1]), self.data_size_limit or 0, declared=True
            )
            self._record_reply(text)
            return super().push(text)
        if self._bad_size and text.startswith("501 Syntax: MAIL"):
            # aiosmtpd's usage line did not say what was wrong.
            text = _BAD_SIZE
            self._record_reply(text)
            return super().push(text)
        if text.startswith("500 Error: command "):
            current = self._current
            mask = self.state.mask_secrets
            text = _unrecognized(
                text,
                # Nor a password of the sink's own sent as a line of its
                # own: the client's log would get it.
                # A line recorded as starting with one ("**** extra", a
                # passphrase with more after it) neither: its first word is
                # the passphrase's.
                echo=(
                    current is None
                    or (
                        current.kind != "auth-response"
                        and not current.line.lstrip("'\"").startswith("****")
                    )
                )
                and (mask is None or mask(text) == text),
            )
            self._record_reply(text)
            return super().push(text)
        self._record_reply(text)
        return super().push(status)

    def _record_notice(self, text: str) -> None:
        """Record a reply no command asked for (the 421 before the server
        closes) as its own exchange: added to the last one, it changed
        that command's ``code``, so an accepted RCPT read as refused."""
        self._append("notice", "")
        self._record_reply(text)

    def _record_reply(self, text: str, injected: bool = False) -> None:
        record = self.record  # see _on_line
        if record is not None and record.end == "server-closed":
            return
        current = self._current
        if current is None:
            current = self._append("greeting", "")
            text = self.state.store.share(text)  # the same on every connection
        mask = self.state.mask_secrets
        if mask is not None:  # an echo of such a line
            text = mask(text)
        current.replies.append(text)
        if injected:
            current.injected = True
        code = text[:3]
        ended = False
        if code == "221" and current.command == "QUIT":
            ended = self._mark_end("quit")
        elif code == "502" and text.startswith("502 5.5.1 Too many unrecognized"):
            # aiosmtpd closes the connection after this reply (BOGUS_LIMIT).
            ended = self._mark_end("server-closed")
        store = self.state.store
        # The end is news to every listener, not only those of lines: the
        # close that follows may wait for a client that does not read.
        if ended or store.watchers:
            store.touch()

    # -- commands that update the recorded session -----------------------------

    @_same_syntax(SMTP.smtp_HELO)
    async def smtp_HELO(self, hostname: str) -> None:
        if await self._greeting_refused(hostname):
            return
        if hostname:
            # aiosmtpd replies 250 to any name (no HELO hook): record it
            # before the reply, so a client that has read it sees it.
            assert self.record is not None
            name = masked(self.state.mask_secrets, hostname)
            self.record.ehlo, self.record.esmtp = name, False
        await super().smtp_HELO(hostname)

    @_same_syntax(SMTP.smtp_EHLO)
    async def smtp_EHLO(self, hostname: str) -> None:
        if await self._greeting_refused(hostname):
            return
        # Collect aiosmtpd's EHLO reply, then send it without the extensions
        # we do not offer. (Not a handle_EHLO hook: aiosmtpd inspects that
        # hook's signature for every connection, a cost on every test.)
        self._ehlo_lines = []
        try:
            await super().smtp_EHLO(hostname)
        finally:
            lines, self._ehlo_lines = self._ehlo_lines, None
        reply = self._ehlo_reply(lines)
        # Before the reply goes out: a client that has read it may look.
        self._note_greeting()
        # One write for the whole reply (aiosmtpd writes and drains line by
        # line): a socket send per connection instead of six.
        for line in reply:
            self._record_reply(line)
        if reply:
            await super().push("\r\n".join(reply))

    def _ehlo_reply(self, lines: list[str]) -> tuple[str, ...]:
        """The EHLO reply to send for aiosmtpd's ``lines``.

        Without fault rules it is the same for every connection to a sink:
        worked out once (most of what an EHLO costs the server) and kept
        once, lines and all, however many sessions record it.
        """
        if len(lines) <= 1:  # an error reply
            return tuple(lines)
        key = tuple(lines)
        state = self.state
        plain = not state.faults.rules
        if plain:
            reply = state.ehlo_replies.get(key)
            if reply is not None:
                return reply
        # aiosmtpd answers pipelined commands in order (RFC 2920) but
        # does not say so; DSN parameters are ours (see _getparams).
        lines = [lines[0], "250-PIPELINING", *lines[1:-1], "250-DSN", lines[-1]]
        filtered = self.filter_ehlo(lines)
        hidden = self._hide_extensions(filtered)
        reply = tuple(hidden)
        # Kept only if no rule changed it: a test thread may add a hide()
        # rule after `plain` was read, and that reply must not outlive it.
        if plain and hidden is filtered:
            kept = state.ehlo_replies
            if len(kept) >= _EHLO_REPLIES_MAX:
                kept.clear()
            kept[key] = reply
            try:
                sent = "\r\n".join(reply).encode(self._reply_encoding) + b"\r\n"
            except UnicodeEncodeError:
                pass  # aiosmtpd's push fails on it too: its way, every time
            else:
                state.ehlo_at_once[self._tls_protocol is not None] = (reply, sent)
        return reply

    async def _greeting_refused(self, hostname: str) -> bool:
        """Answer HELO/EHLO ourselves when the name is malformed or a fault
        says so; True when the command is handled."""
        if hostname and _malformed(hostname):
            # aiosmtpd keeps a byte that is not UTF-8 as a surrogate.
            what = (
                "bytes that are not UTF-8"
                if any("\udc80" <= char <= "\udcff" for char in hostname)
                else "control characters"
            )
            await self.push(f"501 5.5.2 Syntax error: {what} in the host name")
            return True
        return bool(
            self.state.faults.rules and await self._fault_intercept("EHLO", [hostname])
        )

    def _note_greeting(self) -> None:
        assert self.record is not None
        assert self.session is not None
        if self.session.host_name:
            # Shared: a client gives the same name on every connection.
            name = masked(self.state.mask_secrets, self.session.host_name)
            self.record.ehlo = self.state.store.share(name)
            self.record.esmtp = bool(self.session.extended_smtp)

    def filter_ehlo(self, responses: list[str]) -> list[str]:
        kept = [r for r in responses if r[4:].strip().upper() != "AUTH"]
        return _multiline(kept)

    # -- AUTH --------------------------------------------------------------------

    def _check_login(
        self,
        server: SMTP,
        session: Any,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        # Compare bytes: compare_digest() refuses non-ASCII str.
        return self._auth_result(
            mechanism,
            auth_data.login,
            lambda expected: hmac.compare_digest(
                expected.encode("utf-8"), auth_data.password
            ),
            # RFC 4616: PLAIN's password is not empty; POP3 and IMAP refuse
            # one alike, also with auth="any".
            no_password=not auth_data.password,
        )

    def _auth_result(
        self,
        mechanism: str,
        login: bytes,
        check: Callable[[str], bool],
        no_password: bool = False,
    ) -> AuthResult:
        table = self.state.settings.auth
        try:
            username = login.decode("utf-8")
            decodes = True
        except UnicodeDecodeError:
            # Recorded as the transcript writes such bytes (\xeb, not a
            # lossy U+FFFD); no table's user (all UTF-8) is this one.
            username = login.decode("utf-8", "backslashreplace")
            decodes = False
        if not username or no_password:
            # No user at all (an empty PLAIN authcid, a CRAM-MD5 response
            # without its space), or no password: no login, even with
            # auth="any", as the read side refuses it (RFC 4616: neither
            # the authcid nor the password is empty).
            success = False
        elif table == "any":
            success = True
        elif table is None or not decodes or username not in table:
            success = False
        else:
            success = check(table[username])
        assert self.record is not None
        # Masked for the record only (a password sent as the user name).
        shown = masked(self.state.mask_secrets, username)
        info = AuthInfo(mechanism=mechanism, username=shown, success=success)
        self.record._auth_attempts.append(info)
        self.record.auth = info
        return AuthResult(success=success, handled=False, auth_data=username)

    async def challenge_auth(
        self,
        challenge: str | bytes,
        encode_to_b64: bool = True,
        log_client_response: bool = False,
    ) -> _Missing | bytes:
        """aiosmtpd's, for every mechanism, except that the response is
        recorded masked and never logged (``log_client_response`` is
        ignored), and that a response longer than the stream reader's limit
        is read whole (up to 12,288 bytes, then ``500 5.5.6``): aiosmtpd
        dropped what it had read and handled the rest as a command line."""
        data = challenge.encode() if isinstance(challenge, str) else challenge
        await self.push(b"334 " + (base64.b64encode(data) if encode_to_b64 else data))
        line = await self._read_auth_response()
        blob = line.strip() if line is not None else b""
        if line is None:
            await self.push(_AUTH_TOO_LONG)
        elif blob == b"*":  # RFC 4954: the client cancels
            await self.push("501 5.7.0 Auth aborted")
        else:
            try:
                return base64.b64decode(blob, validate=True)
            except binascii.Error:
                await self.push("501 5.5.2 Can't decode base64")
        return MISSING

    async def _read_auth_response(self) -> bytes | None:
        """One AUTH response line, recorded masked; None if it was longer
        than `_MAX_AUTH_RESPONSE` (read and dropped up to its end)."""
        read_line, read_bytes = self._read_line, self._read_bytes
        assert read_line is not None
        assert read_bytes is not None
        pieces: list[bytes] = []
        total = 0
        # Left set if the handler is cancelled: its connection_lost, after
        # the cancel, counts an unfinished response.
        self._reading_auth_response = True
        while True:
            try:
                piece = await read_line(b"\n")
            except asyncio.LimitOverrunError as exc:
                piece = await read_bytes(exc.consumed)
                total += len(piece)
                if total <= _MAX_AUTH_RESPONSE:
                    pieces.append(piece)
                self._pending_total = total  # counted if the close cuts it off
                continue
            except asyncio.IncompleteReadError as exc:
                # The client's EOF (see _eof_to_handler) before the
                # line's end: no response, and the handler ends as at a
                # cancel. What came is counted, as over TLS (where the
                # EOF cancels the handler: connection_lost counts it).
                if total or exc.partial:
                    self._record_cut_off(exc.partial)
                self._writer.close()
                raise asyncio.CancelledError from None
            total += len(piece)
            pieces.append(piece)
            break
        self._reading_auth_response = False
        self._pending_total = 0
        line = b"".join(pieces)
        cancelled = line.strip() == b"*"
        shown = "*" if cancelled else "****"
        if total > _MAX_AUTH_RESPONSE:
            shown += f" [{total} bytes in all]"
        self._append("auth-response", shown)
        return None if total > _MAX_AUTH_RESPONSE else line

    async def auth_CRAM__MD5(self, server: SMTP, args: list[str]) -> AuthResult:
        # aiosmtpd has PLAIN and LOGIN built in; CRAM-MD5 (RFC 2195) is ours.
        challenge = f"<{secrets.randbelow(10**12)}.{int(time.time())}@{self.hostname}>"
        response = await self.challenge_auth(challenge.encode())
        if not isinstance(response, bytes):  # the client aborted with "*"
            return AuthResult(success=False, handled=True)
        login, _, digest_bytes = response.rpartition(b" ")
        digest = digest_bytes.decode("utf-8", "replace")

        def check(password: str) -> bool:
            expected = hmac.new(
                password.encode(), challenge.encode(), "md5"
            ).hexdigest()
            return hmac.compare_digest(
                expected.encode(), digest.lower().encode("utf-8", "replace")
            )

        # The digest shows an empty password, which no path takes (also
        # with auth="any", where no password is known to check it against).
        return self._auth_result("CRAM-MD5", login, check, no_password=check(""))

    # -- storing messages ----------------------------------------------------------

    def _create_session(self) -> _QuietSession:
        return _QuietSession(self.loop)

    def _create_envelope(self) -> _SinkEnvelope:
        return _SinkEnvelope()

    async def store_message(self, envelope: _SinkEnvelope) -> str:
        assert self.record is not None
        if self.state.faults.rules:
            injected = await self._fault_status(
                "EOD",
                [envelope.mail_from or "", *envelope.rcpt_tos],
                size=len(envelope.original_content or b""),
            )
            if injected == _STORE_THEN_DISCONNECT:
                self._injected_push = None
                reply = self._keep(envelope)
                if reply.startswith("250"):
                    # The reply is lost, not the message (RFC 1047). The
                    # transcript says so: "no reply" alone read as the plain
                    # disconnect's, after which nothing is stored.
                    content = self._current
                    if content is not None and content.kind == "data":
                        content.line = content.line.removesuffix(">") + "; stored>"
                    self.close_by_server()
                    await self.loop.create_future()  # connection_lost() cancels
                return reply  # refused all the same (max_stored_bytes)
            if injected is not None:
                return injected
        return self._keep(envelope)

    def _keep(self, envelope: _SinkEnvelope) -> str:
        """Store the message of ``envelope``; the reply to its final dot."""
        assert self.record is not None
        store = self.state.store
        limit = self.state.settings.max_stored_bytes
        size = len(envelope.original_content or b"")
        if limit is not None and store.refuse_over(
            limit,
            size,
            lambda held: (
                f"the sink refused mail: max_stored_bytes={limit} would be exceeded "
                f"(it holds {held} bytes; a {size}-byte message from "
                f"{envelope.mail_from or '<>'} got 452). Send less mail per test, "
                "or raise max_stored_bytes."
            ),
        ):
            return "452 4.3.4 Message refused: the sink's max_stored_bytes limit is reached"
        # Most messages repeat an earlier one's sender and recipients.
        share = store.share
        rcpt_dsn = tuple(envelope.per_rcpt_dsn)
        message = Message(
            raw=envelope.original_content or b"",
            envelope=MessageEnvelope(
                # aiosmtpd keeps a bounce's null sender as "<>".
                mail_from=""
                if envelope.mail_from in (None, "<>")
                else share(envelope.mail_from),
                rcpt_to=share(Recipients(envelope.rcpt_tos)),
                mail_options=share(tuple(envelope.mail_options)),
                rcpt_options=share(tuple(envelope.per_rcpt_options)),
                smtputf8=bool(envelope.smtp_utf8),
                dsn_ret=envelope.dsn_ret,
                dsn_envid=envelope.dsn_envid,
                # Not share(): hashing dataclasses costs more than it saves.
                rcpt_dsn=_ONE_NO_DSN if rcpt_dsn == _ONE_NO_DSN else rcpt_dsn,
            ),
            session=self.record,
            received_at=_now(),
            number=store.next_message_number(),
        )
        if self.state.relay is not None:
            # Matching and queueing only: the relay thread does the sending.
            # Before the message is seen: it is seen with its outcome pending.
            self.state.relay.take(message)
        store.add_message(message)  # on its session too
        return f"250 2.0.0 OK: queued as #{message.number}"

    # -- fault injection (the rules live in _faults.py) ------------------------------
    #
    # Every hook starts with ``if self.state.faults.rules``: an empty tuple when
    # no test injects anything, so the normal path costs one attribute read.

    _injected_push: list[str] | None = None

    async def _handle_client(self) -> None:
        if self._greeted:  # see _start_lean: no CONNECT rule then
            await super()._handle_client()
            return
        if self.state.faults.rules:
            try:
                peer = self.record.peer[0] if self.record else ""
                if await self._fault_intercept("CONNECT", [peer]):
                    return
            except ConnectionError:  # the client left during a delay
                return
            except asyncio.CancelledError:
                # The client's EOF during a delay or hang: aiosmtpd cancels
                # its handler and, in its loop, closes the connection then;
                # not yet in that loop, close it here, or it stays open
                # (with its session) until the sink stops.
                if self.transport is not None:
                    self.transport.close()
                raise
        await super()._handle_client()

    @property
    def _starttls_offered(self) -> bool:
        """Whether HELP lists STARTTLS: as EHLO offers it, not once done,
        nor while a fault rule hides (and so refuses) it."""
        return (
            self.tls_context is not None
            and self._tls_protocol is None
            and "STARTTLS" not in self.state.faults.hidden
        )

    @property
    def _auth_offered(self) -> bool:
        """Whether HELP lists AUTH: as EHLO offers it (a sink with
        credentials, over TLS unless auth_plaintext, and no rule hiding it)."""
        return (
            self.state.settings.auth is not None
            and (not self._auth_require_tls or self._tls_protocol is not None)
            and "AUTH" not in self.state.faults.hidden
        )

    @_same_syntax(SMTP.smtp_STARTTLS, when="_starttls_offered")
    async def smtp_STARTTLS(self, arg: str) -> None:
        if self.state.faults.rules and await self._fault_intercept(
            "STARTTLS", [], extension="STARTTLS"
        ):
            return
        record = self.record
        encrypted = self._tls_protocol is not None or (
            # Implicit TLS: encrypted from the start (it got 454 "TLS not
            # available", a temporary refusal that reads as TLS missing).
            self.transport is not None
            and self.transport.get_extra_info("ssl_object") is not None
        )
        if encrypted and not arg:
            # RFC 3207 4: no STARTTLS once TLS is up. aiosmtpd answered 220 and
            # nested a handshake in the first, which failed with a TypeError
            # in asyncio's TLS layer (and an ERROR logged).
            await self.push("554 5.5.1 TLS already active")
            return
        if record is None or arg or not self.tls_context:
            await super().smtp_STARTTLS(arg)
            return
        # The client's starttls() returns when its side of the handshake is
        # done, before ours: from the 220 on, Session.tls waits for the end.
        record._tls_starting()
        # aiosmtpd's handshake has asyncio's 60 s limit; the sink's other
        # handshakes (implicit TLS, STLS) have HANDSHAKE_TIMEOUT.
        overdue = self.loop.call_later(
            HANDSHAKE_TIMEOUT, self._handshake_overdue, self.transport
        )
        try:
            await super().smtp_STARTTLS(arg)
        except TLSSetupException as error:
            # aiosmtpd would log it as an ERROR with a traceback, and the
            # session would end as closed by the client. Record why, then
            # close as aiosmtpd does.
            cause = error.__cause__
            if self._starttls_overdue:  # not a reset by the client: say so
                cause = TimeoutError("handshake overdue")
            self._tls_failed(cause)
            if self.transport is not None:
                self.transport.close()
            # Not connection_lost(error): asyncio would keep the error in a
            # future of this protocol's, and when both are collected in one
            # cycle that future may be finalized first, printing "Future
            # exception was never retrieved" (seen on Python 3.10, under
            # load). The failure is recorded already.
            self.connection_lost(None)
        else:
            if self._starttls_overdue:
                # The abort below ends asyncio's wait for the handshake as if
                # it had succeeded (no error to give it): the session ends
                # here instead, saying why.
                self._tls_failed(TimeoutError("handshake overdue"))
                self.connection_lost(None)
        finally:
            overdue.cancel()
            record._tls_started(None)  # no-op if connection_made recorded it

    _starttls_overdue = False

    def _handshake_overdue(self, plain: asyncio.BaseTransport | None) -> None:
        """The STARTTLS handshake took HANDSHAKE_TIMEOUT: abort the plain
        transport under it, which ends aiosmtpd's wait for the handshake."""
        self._starttls_overdue = True
        if plain is not None and not plain.is_closing():
            cast("asyncio.Transport", plain).abort()

    @_same_syntax(SMTP.smtp_AUTH, when="_auth_offered")
    async def smtp_AUTH(self, arg: str) -> None:
        if self.state.faults.rules and await self._fault_intercept(
            "AUTH", [(arg or "").split(" ")[0].upper()], extension="AUTH"
        ):
            return
        session = self.session
        if self.state.settings.auth is None and session and session.host_name:
            # Postfix's answer on a server without SASL; aiosmtpd's "538
            # Encryption required" suggested that TLS would help.
            await self.push("503 5.5.1 Error: authentication not enabled")
            return
        if arg and (word := _FIRST_WORD.match(arg)) is not None:
            # Mechanism names are case-insensitive, as Postfix and Dovecot
            # take them: aiosmtpd answers "auth plain" 504. Its first word
            # only (aiosmtpd splits on any white space): the rest may be a
            # response, whose base64 is case-sensitive.
            arg = arg[: word.end()].upper() + arg[word.end() :]
        await super().smtp_AUTH(arg)

    @_same_syntax(SMTP.smtp_DATA)
    async def smtp_DATA(self, arg: str) -> None:
        envelope = self.envelope
        if (
            self.state.faults.rules
            and not arg
            and envelope is not None
            and envelope.rcpt_tos
            and await self._fault_intercept(
                "DATA", [envelope.mail_from or "", *envelope.rcpt_tos]
            )
        ):
            return
        # aiosmtpd's checks and replies, with our own content reader.
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if envelope is None or not envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        # Counting starts before the 354 goes out: a client that sends
        # content and vanishes while the reply is still being written gets
        # its incomplete content recorded all the same.
        content = self._content = self._new_content()
        await self.push(_GO_AHEAD)
        await self._after_content(*await self._read_content(content))

    def _new_content(self) -> Content:
        return Content(
            self.data_size_limit,
            self.line_length_limit,
            self._reader._limit,  # type: ignore[attr-defined]
        )

    async def _after_content(self, content: bytes, refusal: str | None) -> None:
        """The end of DATA, after the final dot: store, and reply."""
        envelope = self._content_ended(content, refusal)
        # Our own envelopes (_create_envelope): no handler hook needed.
        status = refusal or await self.store_message(envelope)
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)

    def _content_ended(self, content: bytes, refusal: str | None) -> _SinkEnvelope:
        """Record the content's end; the envelope, holding the content
        unless it is refused."""
        assert self._content is not None
        self._end_data(self._content.data_bytes)
        envelope = cast("_SinkEnvelope", self.envelope)
        if refusal is None:
            envelope.content = envelope.original_content = content
        return envelope

    async def _read_content(self, content: Content) -> tuple[bytes, str | None]:
        """Read message content up to the final dot, aiosmtpd's way (a line
        at a time from the stream reader), into ``content``: ``(content,
        None)``, or ``(b"", reply)`` when it must be refused after the dot."""
        read_line, read_bytes = self._read_line, self._read_bytes
        assert read_line is not None
        assert read_bytes is not None
        while True:
            try:
                line = await read_line(b"\n")
            except asyncio.LimitOverrunError as exc:
                # Longer than the stream reader's limit: read past it.
                content.piece(await read_bytes(exc.consumed))
                continue
            except asyncio.CancelledError:  # the connection closed
                self._writer.close()
                raise
            except asyncio.IncompleteReadError as exc:  # the client's EOF
                if exc.partial:  # counted with the content cut off
                    content.piece(exc.partial)
                self._writer.close()
                raise asyncio.CancelledError from None
            if content.line(line):
                return content.result()

    async def _fault_intercept(
        self, stage: str, subjects: Sequence[str], extension: str | None = None
    ) -> bool:
        """For the ``smtp_*`` overrides: True if a fault answered instead."""
        lines = await self._apply_faults(stage, subjects, extension=extension)
        if lines is None:
            return False
        await self._push_injected(lines, stage)
        return True

    async def _fault_status(
        self,
        stage: str,
        subjects: Sequence[str],
        *,
        size: int | None = None,
        rcpt_count: int = 0,
        params: Sequence[str] = (),
    ) -> str | None:
        """For handler hooks, whose return value aiosmtpd pushes: the status
        to return, or None to go on. The next `push` sends the injected
        reply lines (all of them, marked injected) in its place."""
        lines = await self._apply_faults(
            stage, subjects, size=size, rcpt_count=rcpt_count, params=params
        )
        if lines is None:
            return None
        self._injected_push = lines
        return lines[-1]

    async def _apply_faults(
        self,
        stage: str,
        subjects: Sequence[str],
        *,
        extension: str | None = None,
        size: int | None = None,
        rcpt_count: int = 0,
        params: Sequence[str] = (),
    ) -> list[str] | None:
        """Carry out what the rules decide for ``stage`` (`_faults.steps`).
        Delays and hangs wait here; a disconnect does not return. Returns the
        reply lines of a fault that answers, or None to go on as usual."""
        event = Event(
            stage,
            tuple(subjects),
            extension=extension,
            size=size,
            rcpt_count=rcpt_count,
            params=tuple(params),
            connections=len(self.state.connections),
        )
        for step in steps(self.state.faults, event):
            self._mark_injected()
            if isinstance(step, Delay):
                assert self._current is not None  # _mark_injected made one
                # The client waits for the late reply, not idle: its idle
                # time counts from the reply, as on POP3 and IMAP (a delay
                # longer than idle_timeout was cut off by a 421).
                self._idle_deadline = (
                    self.loop.time() + step.seconds + self._timeout_duration
                )
                with self._current._delaying():
                    await self._stall(step.rule, asyncio.sleep(step.seconds))
            elif isinstance(step, Hang):
                await self._stall(step.rule, self.loop.create_future())
            elif isinstance(step, Disconnect):
                if step.rule.store:  # at EOD: store_message cuts, once stored
                    return [_STORE_THEN_DISCONNECT]
                self.close_by_server()
                # connection_lost() cancels this task.
                await self.loop.create_future()
            elif isinstance(step, Discard):
                return list(_DISCARDED)
            else:
                assert isinstance(step, Reply)
                return reply_lines(step.code, step.text)
        return None

    async def _stall(self, rule: Fault, awaitable: Any) -> None:
        """Wait on ``awaitable`` (a delay or a hang) while ``rule`` holds this
        connection; removing the rule closes the connection."""
        held = self.state.held
        if rule not in self.state.faults.rules:
            # Removed by the test's thread after it fired here, before this
            # connection was held, so the release found nothing: close the
            # connection as the release would have (seen under load).
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            self.close_by_server()
            await self.loop.create_future()  # connection_lost() cancels this
        held[self] = rule
        try:
            await awaitable
        finally:
            if held.get(self) is rule:
                del held[self]

    def _mark_injected(self) -> None:
        current = self._current
        if current is None:  # at CONNECT: the greeting is still to come
            current = self._append("greeting", "")
        current.injected = True
        # _append woke the waiters before the flag was set: wake them again,
        # or a wait_until(... .injected) would sleep until its timeout.
        store = self.state.store
        if store.watchers:
            store.touch()

    async def _push_injected(self, lines: list[str], stage: str) -> None:
        closing = lines[-1].startswith("421") or (
            stage == "CONNECT" and not lines[-1].startswith("2")
        )
        # All recorded, then the end, then sent: a test waiting for the end
        # finds every line, and the client may look as soon as it reads.
        for line in lines:
            self._record_reply(line, injected=True)
        if closing:
            self._mark_end("server-closed")
            self.state.store.touch()  # the end is news to every listener
        for line in lines:
            await super().push(line.encode("utf-8"))
        if closing:
            # Close once the reply is flushed; connection_lost() then
            # cancels this task, so no further command is handled.
            if self.transport is not None:
                self.transport.close()
            await self.loop.create_future()

    def _hide_extensions(self, responses: list[str]) -> list[str]:
        """EHLO lines as the fault rules leave them (`_faults.advertised`)."""
        if not self.state.faults.rules:
            return responses
        kept = advertised(self.state.faults, [line[4:] for line in responses])
        if kept is None:
            return responses
        self._mark_injected()
        return _multiline([f"250-{line}" for line in kept if line is not None])

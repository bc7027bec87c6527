"""Captured messages: the bytes as received, the envelope, and lazy views.

Nothing here runs on the server thread except the constructor, which only
stores references. Parsing (mail-parser and the stdlib) happens on first
access, once per message, and never raises: each field a user reads computes
under one guard (`_guarded`, or a local one where a field takes arguments)
that returns a plain fallback and records what gave up in `defects`. The
email package and mail-parser raise on odd input in ways no list of
exception types keeps up with (CharsetError, RecursionError, OverflowError,
AssertionError from html.parser), and one odd message must never abort a
test run.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import contextlib
import dataclasses
import datetime
import email
import email.charset
import email.header
import email.parser
import email.policy
import email.utils
import functools
import html.parser
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from email.message import EmailMessage
from email.message import Message as Compat32Message
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, overload

from ._mime import encoded_words, getaddresses, parse_compat32, parseaddr
from ._text import (
    argument_error,
    clock,
    has_href,
    html_base,
    join_shortened,
    printable,
    resolved,
    shorten,
    unescape_8bit,
    unicode_domain,
    without_unclosed_tags,
)

if TYPE_CHECKING:
    from ._dkim import DkimResult
    from ._lint import Problem
    from ._relay import RelayOutcome
    from ._session import Session
    from ._spam import SpamReport

#: A one-time code: 4 to 8 digits standing alone.
DEFAULT_CODE_PATTERN = re.compile(r"(?<![\w-])(\d{4,8})(?![\w-])")
_URL = re.compile(r"""https?://[^\s<>"'()\[\]{}]+""", re.IGNORECASE)
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_BARE_LF = re.compile(rb"(?<!\r)\n")
# The year after the month name when it has three digits (RFC 5322 4.3's
# obsolete form, which the standard library reads as it stands).
_THREE_DIGIT_YEAR = re.compile(r"\b[A-Za-z]{3}\s+[0-9]{3}(?![0-9])")
#: In `Message.defects` when a line ends with LF alone (the sink accepts
#: that, as Postfix does, and keeps the bytes as received).
BARE_LF_DEFECT = (
    "bare LF line endings: lines must end with CRLF (RFC 5321 2.3.8); kept as received"
)
_T = TypeVar("_T")
#: Characters that make a display name need quotes (RFC 5322 specials).
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')


class Address(str):
    """An email address: the plain ``user@domain`` string, with the display name
    in `name`.

    Comparison ignores the case of the domain (``Ann@Example.COM`` equals
    ``Ann@example.com``), and a string with a display name compares by its
    address, so ``"Ann <ann@example.com>"`` equals ``Address("ann@example.com")``.
    """

    name: str

    def __new__(cls, addr: str, name: str = "") -> Address:
        self = super().__new__(cls, addr)
        self.name = name
        return self

    @property
    def domain(self) -> str:
        """What follows the last ``@`` (``"example.com"``), as written."""
        return self.rpartition("@")[2]

    @property
    def local(self) -> str:
        """What comes before the last ``@`` (``"ann"``)."""
        return self.rpartition("@")[0]

    @property
    def formatted(self) -> str:
        """``"Ann <ann@example.com>"``, or the bare address without a name.

        For reading, not for sending: a non-ASCII name stays as it is
        (``"Zoë <zoë@exämple.com>"``), not RFC 2047-encoded.
        """
        if not self.name:
            return str(self)
        # Not email.utils.formataddr: it refuses a non-ASCII address
        # (SMTPUTF8 mail) and encodes a non-ASCII name for the wire.
        name = self.name
        if _SPECIALS.search(name):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{name} <{self}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, str):
            return NotImplemented
        return normalize_address(self) == normalize_address(other)

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self) -> int:
        return hash(normalize_address(self))

    def __repr__(self) -> str:
        return repr(self.formatted)


class Addresses(tuple[Address, ...]):
    """The addresses of one header, in order: a tuple that also equals a
    list of strings, address by address, so that
    ``msg.to == ["ann@example.com"]`` reads as a tester means it."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (list, tuple)):
            return NotImplemented
        return len(self) == len(other) and all(
            isinstance(theirs, str) and mine == theirs
            for mine, theirs in zip(self, other, strict=True)
        )

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = tuple.__hash__


class Recipients(tuple[str, ...]):
    """The envelope's recipients: a tuple that also equals a list of the
    same strings, so that ``envelope.rcpt_to == ["ann@example.com"]`` reads
    as a tester means it, as ``msg.to`` does (here the strings compare as
    they are: the envelope keeps what the client sent)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, list):
            other = tuple(other)
        return tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = tuple.__hash__


def normalize_address(value: str) -> str:
    """The comparable form of an address: display name and angle brackets
    dropped, domain lower-cased with its A-labels read as Unicode, local
    part kept as is (it may be case-sensitive, RFC 5321 section 2.4)."""
    value = value.strip()
    if value == "<>":  # the null sender as MAIL FROM (and summaries) write it
        return ""
    if "<" in value or " " in value:
        try:
            parsed = parseaddr(value)[1]
        except RecursionError:  # deeply nested comments: compare as given
            parsed = ""
        value = parsed or value
    local, at, domain = value.strip("<>").rpartition("@")
    return f"{local}{at}{unicode_domain(domain.lower())}" if at else value


@dataclasses.dataclass(frozen=True, slots=True)
class Envelope:
    """What the client said in SMTP, as opposed to what the headers claim.

    Bcc recipients exist only here.
    """

    mail_from: str
    """The reverse path of MAIL FROM (``""`` for a bounce's null sender)."""
    rcpt_to: tuple[str, ...]
    """Every accepted RCPT TO address, in order (a tuple that also equals a
    list of the same strings)."""
    mail_options: tuple[str, ...] = ()
    """ESMTP parameters of MAIL FROM, e.g. ``("SIZE=1234", "BODY=8BITMIME")``."""
    rcpt_options: tuple[tuple[str, ...], ...] = ()
    """ESMTP parameters of each RCPT TO, aligned with `rcpt_to`."""
    smtputf8: bool = False
    """Whether the client asked for SMTPUTF8."""
    dsn_ret: str | None = None
    """DSN (RFC 3461): ``"FULL"`` or ``"HDRS"`` from ``MAIL ... RET=``, or None."""
    dsn_envid: str | None = None
    """DSN: the envelope id from ``MAIL ... ENVID=`` (xtext decoded), or None."""
    rcpt_dsn: tuple[RecipientDSN, ...] = ()
    """DSN requests of each RCPT TO, aligned with `rcpt_to`."""

    def __post_init__(self) -> None:
        if type(self.rcpt_to) is not Recipients:
            object.__setattr__(self, "rcpt_to", Recipients(self.rcpt_to))


@dataclasses.dataclass(frozen=True, slots=True)
class RecipientDSN:
    """What one ``RCPT TO`` asked for in delivery status notifications
    (RFC 3461)."""

    notify: tuple[str, ...] = ()
    """``NOTIFY=``: ``("NEVER",)`` or some of ``"SUCCESS"``, ``"FAILURE"``,
    ``"DELAY"`` in the order given (upper case); ``()`` without ``NOTIFY=``."""
    orcpt: str | None = None
    """``ORCPT=``: the original recipient as ``"type;address"``, e.g.
    ``"rfc822;ann@example.com"`` (xtext decoded), or None."""


@dataclasses.dataclass(frozen=True, slots=True)
class Attachment:
    """A decoded attachment."""

    filename: str | None
    """The file name the part gives (``Content-Disposition: filename`` or
    ``Content-Type: name``), decoded; None when it gives none."""
    content_type: str
    """The part's type without its parameters, e.g. ``"image/png"``."""
    content: bytes
    """The decoded bytes (base64 and quoted-printable undone)."""
    content_id: str | None = None
    """The part's ``Content-ID`` as written, angle brackets included (e.g.
    ``"<logo@example.com>"``: an HTML part shows it as ``cid:logo@example.com``);
    None without one."""
    disposition: str | None = None
    """The ``Content-Disposition`` type in lower case, ``"attachment"`` or
    ``"inline"``; None without one."""

    @property
    def size(self) -> int:
        """The decoded content's length in bytes."""
        return len(self.content)

    def __repr__(self) -> str:
        # pytest prints it in assertion failures: the client's Content-Type
        # escaped (`printable`), as the filename is by !r.
        return (
            f"<Attachment {self.filename!r} {printable(self.content_type)} "
            f"{self.size} bytes>"
        )


class Headers(Mapping[str, str]):
    """Message headers: case-insensitive, multi-valued, in order.

    ``headers["subject"]`` is the first value; `get_all` gives every value.
    Values are decoded (RFC 2047); `Message.raw` keeps the original bytes.
    """

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items
        self._first: dict[str, str] = {}
        for name, value in items:
            self._first.setdefault(name.lower(), value)
        # Every value by lower-cased name, made on the first get_all: a scan
        # of all the items per call made reading each name of a message with
        # thousands of headers quadratic. Most messages never need it.
        self._all: dict[str, list[str]] | None = None

    def __getitem__(self, name: str) -> str:
        return self._first[name.lower()]

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str | _T) -> str | _T: ...
    def get(self, name: str, default: object = None) -> object:
        # Not Mapping's: its try/__getitem__/except costs a frame per
        # lookup, and Message.subject and the other fields are lookups.
        return self._first.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for name, _ in self._items:
            if name.lower() not in seen:
                seen.add(name.lower())
                yield name

    def __len__(self) -> int:
        return len(self._first)

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order (empty if absent). The first
        call indexes the headers; each later one is a lookup."""
        index = self._all
        if index is None:
            index = {}
            for n, value in self._items:
                index.setdefault(n.lower(), []).append(value)
            # One assignment: a reader on another thread sees no index or a
            # whole one (at worst, both build it).
            self._all = index
        return list(index.get(name.lower(), ()))  # a copy: callers may change it

    def items_all(self) -> list[tuple[str, str]]:
        """All (name, value) pairs, repeated names included, in order."""
        return list(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


def _guarded(
    what: str, fallback: Callable[[Message], object]
) -> Callable[[Callable[[Message], _T]], Callable[[Message], _T]]:
    """Make a `Message` field computation never raise: on any exception the
    field is ``fallback(message)`` and `Message.defects` says ``what`` gave
    up and why.

    Exception, not a list of types: the parsers underneath raise whatever
    their input provokes (see the module docstring), and a field that cannot
    be read must not cost the test run.
    """

    def decorate(compute: Callable[[Message], _T]) -> Callable[[Message], _T]:
        @functools.wraps(compute)
        def guarded(message: Message) -> _T:
            try:
                return compute(message)
            except Exception as error:
                message._gave_up(what, error)
                # The fallback is of the field's type; a TypeVar cannot say
                # so for a lambda written before the function it guards.
                return cast("_T", fallback(message))

        return guarded

    return decorate


class _QuietWhileParsing(logging.Filter):
    """Drops mail-parser's log records while the sink parses a captured
    message on this thread. What it logs then is about the mail (an ERROR
    for each encoded word it cannot decode, DEBUG lines for every header),
    which `Message.defects` reports; in the log it would land in the test's
    captured log, or fail a suite that fails on errors logged. What a user
    does with mail-parser directly still logs."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()
        self._installed = False

    def install(self) -> None:
        if not self._installed:  # twice at once is harmless: addFilter dedups
            for name in ("mailparser", "mailparser.core", "mailparser.utils"):
                logging.getLogger(name).addFilter(self)
            self._installed = True

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "parsing", False)

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Mail-parser says nothing on this thread meanwhile: around the
        parse, and around each of its helpers the sink calls itself."""
        self.install()
        before = getattr(self.local, "parsing", False)
        self.local.parsing = True
        try:
            yield
        finally:
            self.local.parsing = before


_QUIET_PARSE = _QuietWhileParsing()


class Message:
    """One message the sink accepted.

    `raw` is the truth: the bytes exactly as received (after SMTP
    dot-unstuffing). Everything else is derived from it on first access, and
    reading it never raises: where parsing gave up, the field has a plain
    value (None, empty) and `defects` says why.
    """

    def __init__(
        self,
        raw: bytes,
        envelope: Envelope,
        session: Session,
        received_at: datetime.datetime,
        number: int,
    ) -> None:
        self.raw: bytes = raw
        self.envelope: Envelope = envelope
        self.session: Session = session
        """The connection that delivered this message."""
        self.received_at: datetime.datetime = received_at
        self.number: int = number
        """Position in the sink, counting from 1 since the server started;
        0 for mail put in with `Mailbox.deliver` or IMAP APPEND (summaries
        then say ``deliver()`` or ``APPEND`` where they show ``#number``)."""
        # Made on first use (see `_gave_up`, `_addresses`): most messages
        # never need them, and a sink may hold many thousands of messages.

    def _gave_up(self, what: str, error: BaseException) -> None:
        detail = shorten(str(error), 200)
        # What field guards gave up on, in order, without repeats (a dict as
        # an ordered set); see `defects`. setdefault: another thread may be
        # giving up on another field at the same moment.
        failures: dict[str, None] = self.__dict__.setdefault("_failures", {})
        failures[
            f"{what}: {type(error).__name__}" + (f": {detail}" if detail else "")
        ] = None

    relay: RelayOutcome | None = None
    """What the sink's relay did with this message (`RelayOutcome`), or None
    when the sink does not relay or the message did not come over SMTP
    (`Mailbox.deliver`, an IMAP ``APPEND``: mail put in is not relayed; see
    :doc:`relay`)."""

    # -- parsing (lazy) -----------------------------------------------------

    @functools.cached_property
    @_guarded(
        "MIME structure not parsed (header block only)", lambda message: message._head
    )
    def _compat(self) -> Compat32Message:
        # compat32 never raises on header access, whatever the input; the
        # nicer policy.default view is offered separately as `email`. Its
        # parser recurses once per nested part (RecursionError at about a
        # thousand): then the header block alone is the message.
        return parse_compat32(self.raw)

    @functools.cached_property
    def _head(self) -> Compat32Message:
        """The header block alone: asking for a subject must not cost a
        parse of a 25 MB attachment."""
        parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
        return parser.parsebytes(self._header_block() + b"\r\n\r\n")

    def _header_block(self) -> bytes:
        return header_block(self.raw)

    @functools.cached_property
    def _header_items(self) -> list[tuple[str, str]]:
        """Every (name, value) of the header block, as `_head.raw_items()`
        gives them: split here when the block is plain, which is nearly
        always and costs a fraction of the stdlib's parse (a test's
        ``assert_sent(subject=...)`` pays it for every message it looks at)."""
        items = _plain_header_items(self._header_block())
        return list(self._head.raw_items()) if items is None else items

    @functools.cached_property
    def parsed(self) -> Any:
        """The mail-parser object, or None if mail-parser could not parse it
        (the reason is in `defects`)."""
        return self._mailparser[0]

    @functools.cached_property
    def _mailparser(self) -> tuple[Any, str | None]:
        import mailparser

        _linear_parsing()
        with _QUIET_PARSE.quiet():
            try:
                return mailparser.parse_from_bytes(self.raw), None
            except Exception as error:  # mail-parser raises several kinds
                return None, f"mail-parser could not parse the message: {error!r}"

    @functools.cached_property
    @_guarded(
        "email: only the header block parsed",
        lambda message: message._email_headers_only(),
    )
    def email(self) -> EmailMessage:
        """The stdlib `email.message.EmailMessage` (``policy.default``).

        If the stdlib cannot parse the whole message (parts nested too
        deeply, a Content-Type it cannot read), its header block only, the
        rest as an unparsed payload.
        The stdlib object is the stdlib's own: what its methods raise on odd
        mail (e.g. a header value too deeply nested) is not guarded here,
        nor how long it takes: its parser's time grows with the square of
        some structured headers' length (a folded 40 KB ``Content-Type``
        takes seconds). Every other field reads such mail at once.
        """
        return self._email(headers_only=False)

    def _email(self, headers_only: bool) -> EmailMessage:
        parser = email.parser.BytesParser(policy=email.policy.default)
        message = parser.parsebytes(self.raw, headersonly=headers_only)
        assert isinstance(message, EmailMessage)
        return message

    def _email_headers_only(self) -> EmailMessage:
        try:
            return self._email(headers_only=True)
        except Exception:
            # The parser reads the Content-Type as it closes, even of a
            # header block alone, and one the stdlib cannot parse (hundreds
            # of nested comments: RecursionError) fails that too. The same
            # object, built from the fields as the parser stores them.
            message = EmailMessage(policy=email.policy.default)
            for name, value in self._header_items:
                message.set_raw(name, value)
            body = self.raw[len(self._header_block()) :]
            for blank in (b"\r\n\r\n", b"\n\n"):
                if body.startswith(blank):
                    body = body[len(blank) :]
                    break
            message.set_payload(body.decode("ascii", "surrogateescape"))
            return message

    # -- headers ------------------------------------------------------------

    @functools.cached_property
    @_guarded("headers could not be read", lambda message: Headers([]))
    def headers(self) -> Headers:
        """Every header, in order, its value unfolded and decoded: look one
        up by name in any case (``headers["subject"]``, ``get_all``)."""
        # raw_items(): the values as parsed, before compat32 wraps 8-bit ones
        # in Header objects whose str() has already lost the bytes.
        return Headers(
            [
                (name, self._decode_header(name, value))
                for name, value in self._header_items
            ]
        )

    def _decode_header(self, name: str, value: object) -> str:
        """A header value unfolded, with RFC 2047 words decoded; as it stands
        (unfolded) if they cannot be, which `defects` notes."""
        # Unfold first (RFC 5322 2.2.3): compat32 keeps the CRLF of a folded
        # header, and a long Subject must not compare with line breaks in it.
        text = unescape_8bit(str(value))
        if "\n" in text:  # the regular expression only where it can match
            text = _FOLD.sub("", text)
        if "=?" not in text:
            return text
        try:
            return decode_header_text(text)
        except Exception as error:
            # An unknown charset (LookupError), a non-ASCII charset name
            # (CharsetError), broken base64 (HeaderParseError), ...
            self._gave_up(f"{name} header: encoded words left undecoded", error)
            return text

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (decoded), or None."""
        return self.headers.get(name)

    @property
    def subject(self) -> str | None:
        """The Subject header, decoded and unfolded, or None without one."""
        return self.header("Subject")

    @property
    def message_id(self) -> str | None:
        """The Message-ID header's value (``"<id@host>"``), or None."""
        return self.header("Message-ID")

    @functools.cached_property
    def date(self) -> datetime.datetime | None:
        """The Date header as an aware datetime, or None if absent or not a
        date (`defects` then says why)."""
        value = self.header("Date")
        if not value:
            return None
        try:
            date = email.utils.parsedate_to_datetime(value)
            if _THREE_DIGIT_YEAR.search(value) and date.year < 1000:
                # RFC 5322 4.3: a three-digit year is 1900 more ("126" is
                # 2026, as some old mailers wrote it); the standard library
                # handles two-digit years only.
                date = date.replace(year=date.year + 1900)
            if date.tzinfo is None:
                # "-0000" (RFC 5322 3.3: UTC, the sender's zone unknown), or
                # no zone at all (a defect): read as UTC, never naive, which
                # a comparison with received_at raised TypeError on.
                date = date.replace(tzinfo=datetime.timezone.utc)
            return date
        except Exception as error:  # ValueError, OverflowError (year 10**11), ...
            self._gave_up(f"Date header {shorten(value, 60)!r} is not a date", error)
            return None

    def _addresses(self, name: str) -> Addresses:
        cache: dict[str, Addresses] = self.__dict__.setdefault("_address_cache", {})
        found = cache.get(name)
        if found is None:
            found = cache[name] = self._parse_addresses(name)
        return found

    def _parse_addresses(self, name: str) -> Addresses:
        key = name.lower()
        raw_values = [
            unescape_8bit(value) for n, value in self._header_items if n.lower() == key
        ]
        try:
            pairs = getaddresses(raw_values)
        except Exception as error:  # RecursionError on deeply nested comments
            self._gave_up(f"{name} header: could not read the addresses", error)
            return Addresses()
        return Addresses(
            Address(addr, self._decode_header(name, display))
            for display, addr in pairs
            if addr
        )

    @property
    def from_(self) -> Address | None:
        """The From header's first address (``from`` is a Python keyword),
        or None; the envelope's sender is ``envelope.mail_from``."""
        found = self._addresses("From")
        return found[0] if found else None

    @property
    def to(self) -> Addresses:
        """The addresses of the To headers."""
        return self._addresses("To")

    @property
    def cc(self) -> Addresses:
        """The addresses of the Cc headers."""
        return self._addresses("Cc")

    @property
    def bcc(self) -> Addresses:
        """Addresses in a Bcc *header*, which well-behaved clients strip.

        Blind recipients are normally visible only in ``envelope.rcpt_to``.
        """
        return self._addresses("Bcc")

    @property
    def reply_to(self) -> Addresses:
        """The addresses of the Reply-To headers."""
        return self._addresses("Reply-To")

    @property
    def recipients(self) -> tuple[str, ...]:
        """Who the message was delivered to: the envelope's RCPT TO list."""
        return self.envelope.rcpt_to

    # -- content ------------------------------------------------------------

    @functools.cached_property
    @_guarded("text part could not be read", lambda message: None)
    def text(self) -> str | None:
        """The text/plain body (parts joined), with ``\\n`` line ends, or None."""
        parsed = self.parsed
        parts = (
            parsed.text_plain
            if parsed is not None and not self._reads_its_own_parts
            else _own_text_parts(self._compat, "plain")
        )
        return _join_text(parts)

    @functools.cached_property
    @_guarded("HTML part could not be read", lambda message: None)
    def html(self) -> str | None:
        """The text/html body (parts joined), with ``\\n`` line ends, or None."""
        parsed = self.parsed
        parts = (
            parsed.text_html
            if parsed is not None and not self._reads_its_own_parts
            else _own_text_parts(self._compat, "html")
        )
        return _join_text(parts)

    @functools.cached_property
    def _reads_its_own_parts(self) -> bool:
        """Whether `text` and `html` read the parts themselves rather than
        take mail-parser's: for an attached message (see
        `_forwards_a_message`), and for a text part in UTF-7, which
        mail-parser leaves encoded (``Hi +ZeVnLIqe-``) with no defect,
        while IMAP SEARCH and the stdlib read it."""
        return self._forwards_a_message or any(
            part.get_content_maintype() == "text"
            and _is_utf7(part.get_content_charset())
            for part in self._compat.walk()
        )

    @functools.cached_property
    def _forwards_a_message(self) -> bool:
        """Whether a whole message is attached (message/rfc822): mail-parser
        counts its text and HTML as this message's own, so `text` and
        `html` then read the parts themselves."""
        return any(
            part.get_content_maintype() == "message" and part.is_multipart()
            for part in list(self._compat.walk())[1:]
        )

    @property
    def body(self) -> str:
        """The text body if there is one, else the HTML, else ``""``."""
        return self.text if self.text is not None else (self.html or "")

    @functools.cached_property
    @_guarded("attachments could not be read", lambda message: ())
    def attachments(self) -> tuple[Attachment, ...]:
        """Every attachment: a part with a file name or whose disposition
        is attachment, an attached message, an inline image with a
        Content-ID; ``()`` if there is none."""
        parsed = self.parsed
        if parsed is None:
            # mail-parser gave up on the whole message (its reason is in
            # `defects`); the parts are still there to read.
            left_out: list[RecursionError] = []
            own = tuple(_own_attachments(self._compat, left_out=left_out))
            if left_out:
                self._gave_up(_TOO_DEEP_TO_WRITE, left_out[0])
            return own
        named = _file_names(self._compat)
        found = [
            _attachment(item, named)
            for item in parsed.attachments
            if not _a_container(item, named)
        ]
        if self._forwards_a_message:
            # mail-parser lists an attached message only with "Content-
            # Disposition: attachment"; a bounce (RFC 3464) or an inline
            # forward has none, and was then in no field at all.
            for part in _whole_messages(self._compat):
                if part.get_content_disposition() == "attachment":
                    continue
                try:
                    content = _message_bytes(part)
                except RecursionError as error:
                    # Nested deeper than the standard library's generator
                    # recurses (hundreds of levels): this one is left out,
                    # saying so, and the other attachments are kept (a
                    # forwarded chain 300 levels deep emptied the field).
                    self._gave_up(_TOO_DEEP_TO_WRITE, error)
                    continue
                found.append(_own_attachment(part, content, None))
        return tuple(found)

    def attachment(self, filename: str) -> Attachment:
        """The attachment called ``filename``; fails listing the ones present."""
        __tracebackhide__ = True
        given = cast(object, filename)  # as called, whatever the annotation says
        if not isinstance(given, str):
            index = (
                f" (by position: attachments[{given}])"
                if isinstance(given, int) and not isinstance(given, bool)
                else ""
            )
            raise TypeError(
                "attachment() takes a file name (a str), got "
                f"{type(given).__name__} {given!r}{index}"
            )
        for item in self.attachments:
            if item.filename == filename:
                return item
        names = ", ".join(repr(a.filename) for a in self.attachments) or "none"
        other_case = next(
            (
                a.filename
                for a in self.attachments
                if a.filename is not None and a.filename.lower() == filename.lower()
            ),
            None,
        )
        hint = (
            f" ({other_case!r} differs only in case: names compare exactly)"
            if other_case is not None
            else ""
        )
        raise AssertionError(
            f"no attachment named {filename!r} in {self!r}; attachments: {names}{hint}"
        )

    @property
    def defects(self) -> tuple[str, ...]:
        """Problems found while parsing, as readable strings, including every
        field that could not be read and why (the field then reads as None
        or empty). Never raises."""
        # Read every field first, so that the list does not depend on what
        # the test happened to read before.
        for name in _FIELDS_CHECKED_BY_DEFECTS:
            getattr(self, name)
        # A copy: another thread reading a field may add a failure meanwhile.
        failures = self.__dict__.get("_failures", {}).copy()
        return tuple(dict.fromkeys((*self._parse_defects, *failures)))

    @functools.cached_property
    @_guarded("defects: the parsers' own list could not be read", lambda message: ())
    def _parse_defects(self) -> tuple[str, ...]:
        parsed, failure = self._mailparser
        found: list[str] = []
        if _BARE_LF.search(self.raw) is not None:
            found.append(BARE_LF_DEFECT)
        if failure is not None:
            found.append(failure)
        if parsed is not None:
            for group in parsed.defects:
                for content_type, texts in group.items():
                    found.extend(f"{content_type}: {text}" for text in texts)
        # mail-parser does not decode the parts it reports on, so it misses
        # invalid base64 (the stdlib notes it only while decoding): decode
        # every leaf part of the compat32 tree and report what it found.
        for part in self._compat.walk():
            # Reading the parameters notes what is wrong with them (see
            # _mime), whichever fields were read.
            with contextlib.suppress(Exception):
                part.get_params()
                part.get_params(header="content-disposition")
            if not part.is_multipart():
                # compat32 decodes leniently; the guard is for the unforeseen.
                with contextlib.suppress(Exception):
                    part.get_payload(decode=True)
            found.extend(
                f"{part.get_content_type()}: {type(d).__name__}: {d.__doc__}"
                for d in part.defects
            )
        return tuple(dict.fromkeys(found))

    # -- how the message is built (docs/deliverability.rst) -------------------

    def lint(self) -> list[Problem]:
        """Problems in how the message is built, worst first; never raises.

        Each `~pytest_smtpsink.Problem` has a stable ``code``, a ``severity``
        (error, warning or info), a sentence and where it is (header, MIME
        part, line). Computed on each call, from `raw`.
        """
        from ._lint import lint

        # Shared with the other views (one parse), unless that parse gave up
        # and fell back to the header block: then lint parses again and
        # reports why it cannot.
        parsed: Compat32Message | None = self._compat
        if parsed is self._head:
            parsed = None
        # Mail put in with deliver() or IMAP APPEND had no MAIL command:
        # no SMTPUTF8 or BODY=8BITMIME it could have left out. Its raw
        # UTF-8 headers are judged as RFC 6532 has them in a stored
        # message (UTF-8 is fine, other bytes are not), and its body's
        # bytes not at all.
        over_smtp = self.session.protocol == "SMTP"
        return lint(
            self.raw,
            smtputf8=self.envelope.smtputf8 or not over_smtp,
            received_at=self.received_at,
            parsed=parsed,
            mail_options=self.envelope.mail_options if over_smtp else None,
        )

    @property
    def dkim(self) -> tuple[DkimResult, ...]:
        """One `~pytest_smtpsink.DkimResult` per ``DKIM-Signature`` header,
        top first, verified by dkimpy against the keys published with
        `Mailbox.dkim_key` (never real DNS). Verified anew on each access."""
        from ._dkim import verify

        return verify(self.raw, self.received_at.timestamp())

    def bulk_sender_problems(
        self, alignment: Literal["relaxed", "strict"] = "relaxed"
    ) -> list[Problem]:
        """What keeps this message from meeting Gmail's and Yahoo's 2024
        bulk-sender rules (one From address, a Message-ID, an aligned DKIM
        signature with a key of 1024 bits or more, one-click unsubscribe
        covered by it, TLS in transit); ``[]`` if nothing does. A signature
        with an ``l=`` body length is a warning, ``dkim-body-length``."""
        __tracebackhide__ = argument_error
        from ._bulk import bulk_sender_problems, check_alignment

        return bulk_sender_problems(self, check_alignment(alignment))

    def spam_report(
        self, spamd: str | None = None, timeout: float = 30.0
    ) -> SpamReport:
        """Score this message with a real SpamAssassin: ask the ``spamd`` at
        ``spamd`` (``"host:port"``), by default the one ``--smtpsink-spamd``
        names. Raises `~pytest_smtpsink.SpamdError` if none is configured, it
        cannot be reached, or it is silent for ``timeout`` seconds (connecting
        or reading its answer): never a silent pass."""
        __tracebackhide__ = True  # a SpamdError is spamd's, not this frame's
        from ._spam import report

        return report(self.raw, spamd, timeout)

    # -- helpers for common checks ------------------------------------------

    def links(self) -> list[str]:
        """Every http(s) link, de-duplicated: the HTML's (``<a href>``) in
        order, relative ones joined to its ``<base href>``, then the text's
        that the HTML did not have."""
        return list(dict.fromkeys(url for url, _ in self._link_pairs))

    @functools.cached_property
    @_guarded("links could not be read", lambda message: [])
    def _link_pairs(self) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = []
        # Without an <a start tag there is no link to find: html.parser,
        # about a second for a few MB of HTML, is spared (the report reads
        # every field of every message it shows).
        if self.html and _ANCHOR_START.search(self.html):
            collector = _LinkCollector()
            collector.feed(without_unclosed_tags(self.html))
            collector.close()
            pairs.extend(collector.links)
        if self.text:
            pairs.extend((url.rstrip(".,;:!?"), "") for url in _URL.findall(self.text))
        return pairs

    def link(
        self,
        contains: str | None = None,
        *,
        pattern: str | re.Pattern[str] | None = None,
        text: str | None = None,
    ) -> str:
        """The first link that contains ``contains``, matches ``pattern``,
        or whose HTML anchor text contains ``text``.

        Fails (AssertionError) listing every link in the message if none does.
        """
        __tracebackhide__ = True
        _check_link_arguments(contains, pattern, text)
        regex = _compiled(pattern, "link") if pattern is not None else None
        for url, anchor in self._link_pairs:
            if contains is not None and contains not in url:
                continue
            if regex is not None and not regex.search(url):
                continue
            if text is not None and text.lower() not in anchor.lower():
                continue
            return url
        wanted = ", ".join(
            f"{k}={v!r}"
            for k, v in (("contains", contains), ("pattern", pattern), ("text", text))
            if v is not None
        )
        # One line per URL, as links() has them, with its anchor texts (a
        # URL is often in both the HTML and the text part).
        anchors: dict[str, list[str]] = {}
        for url, anchor in self._link_pairs:
            texts = anchors.setdefault(url, [])
            if anchor and anchor not in texts:
                texts.append(anchor)
        # printable(): a mail's escape sequences must not reach the terminal.
        # At most _LINKS_LISTED: a newsletter's 800 links made a failure
        # of 800 lines.
        lines = [
            f"  {printable(url)}"
            + (f"  (text {', '.join(map(repr, texts))})" if texts else "")
            for url, texts in list(anchors.items())[:_LINKS_LISTED]
        ]
        if len(anchors) > _LINKS_LISTED:
            lines.append(f"  ... and {len(anchors) - _LINKS_LISTED} more (links())")
        found = "\n".join(lines)
        raise AssertionError(
            f"no link with {wanted or 'any URL'} in {self!r}; links found:\n"
            f"{found or '  (none)'}"
        )

    def code(self, pattern: str | re.Pattern[str] = DEFAULT_CODE_PATTERN) -> str:
        """A one-time code from the body: by default the first 4 to 8 digit
        number standing alone. With a pattern that has a group, group 1 of
        the first match where that group took part."""
        __tracebackhide__ = True
        regex = _compiled(pattern, "code")
        haystack = self.text if self.text is not None else visible_text(self.html or "")
        for match in regex.finditer(haystack):
            found = match.group(1) if regex.groups else match.group(0)
            if found is not None:  # None: an optional group 1 matched nothing
                return found
        # Line by line, printable(): the mail's escape sequences must not
        # reach the terminal.
        start = "\n".join(map(printable, shorten(haystack, 300).split("\n")))
        raise AssertionError(
            f"no code matching {regex.pattern!r} in {self!r}; body starts:\n{start}"
        )

    @property
    def size(self) -> int:
        """The message's length in bytes, as received."""
        return len(self.raw)

    def summary(self) -> str:
        """One line: time, envelope sender -> recipients, header To, subject.

        Control characters are escaped, so that the line stays one line, and
        long recipient lists and subjects are shortened.
        """
        return summary_with_relay(self, self.relay)

    def __repr__(self) -> str:
        # Cut as summaries cut them: a 200 KB subject made a 200 KB repr,
        # and every failure message that names the message with it. Named
        # as the envelope's fields: "from=" and "to=" read as the headers
        # (`from_`, `to`), and a Bcc recipient showed under "to=".
        recipients = join_shortened([repr(r) for r in self.envelope.rcpt_to])
        subject = self.subject
        return (
            f"<Message {message_label(self)} mail_from={self.envelope.mail_from!r} "
            f"rcpt_to=[{recipients}] "
            f"subject={shorten(repr(subject), 200) if subject else repr(subject)} "
            f"size={self.size}>"
        )


if sys.version_info < (3, 12):
    # Up to 3.11 a cached_property holds one lock for all instances
    # (CPython gh-87634): one message's slow first read (5 s for a text of
    # 100,000 parts) held up the same field of every other message, in
    # the live view's other requests and a test's other threads. 3.12
    # dropped the lock, and computes a field twice at worst, as here.
    for _field in vars(Message).values():
        if isinstance(_field, functools.cached_property):
            cast("Any", _field).lock = contextlib.nullcontext()


#: What `Message.defects` reads first, so that it lists every field's trouble.
_FIELDS_CHECKED_BY_DEFECTS = (
    "_compat",
    "headers",
    "date",
    "from_",
    "to",
    "cc",
    "bcc",
    "reply_to",
    "text",
    "html",
    "attachments",
    "_link_pairs",
)


def summary_with_relay(message: Message, relay: RelayOutcome | None) -> str:
    """`Message.summary`, showing ``relay`` as the relay outcome: one its
    caller read once, as the relay thread may settle it at any moment."""
    try:
        to = join_shortened([a.formatted for a in message.to]) or "-"
        subject = message.subject
        line = (
            f"{message_label(message)} {clock(message.received_at)}"
            f" {message.envelope.mail_from or '<>'} -> "
            f"{join_shortened(message.envelope.rcpt_to)} | To: {to} | Subject: "
            # "-" for none, as for To: (a subject "-" is quoted).
            f"{'-' if subject is None else repr(shorten(subject, 200))} | "
            f"{message.size} bytes" + (f" | {relay}" if relay is not None else "")
        )
        return printable(line)
    except Exception as error:  # last resort: fields are guarded already
        message._gave_up("could not summarize", error)
        return raw_summary(message, error)


def summary_or_raw(message: Message) -> str:
    """`Message.summary`, or, if even that fails, the raw bytes (shortened)
    and the error: what reports and the CLI print, so that one message can
    never stop them."""
    try:
        return message.summary()
    except Exception as error:
        return raw_summary(message, error)


def message_label(message: Message) -> str:
    """How summaries name a message: its number, or where it came from when
    it never crossed SMTP (numbered 0): ``deliver()`` (`Mailbox.deliver`) or
    ``APPEND`` (stored by an IMAP client)."""
    if message.number:
        return f"#{message.number}"
    return "APPEND" if message.session.protocol == "IMAP" else "deliver()"


def raw_summary(message: Message, error: BaseException) -> str:
    """A message shown without parsing: number, size, the start of its raw
    bytes and why it could not be read."""
    try:
        label, raw = message_label(message), bytes(message.raw)
    except Exception:  # not even a Message: say so rather than raise
        label, raw = "a message", b""
    start = repr(raw[:200]) + (
        f" ... [{len(raw) - 200} more bytes]" if len(raw) > 200 else ""
    )
    return printable(
        f"{label} could not be read ({type(error).__name__}: "
        f"{shorten(str(error), 200)}); {len(raw)} bytes: {start}"
    )


def header_block(raw: bytes) -> bytes:
    """The bytes before the first empty line (all of them if none)."""
    crlf = raw.find(b"\r\n\r\n")
    end = len(raw) if crlf < 0 else crlf
    # Only before that: no scan of a large body for a bare-LF empty line.
    lf = raw.find(b"\n\n", 0, end)
    return raw[: end if lf < 0 else lf]


def raw_header_values(raw: bytes, name: str) -> list[bytes]:
    """The values of the ``name`` fields as the bytes were sent, unfolded:
    what a hint shows of a header whose bytes `headers` could not decode."""
    field = re.compile(
        rb"^" + re.escape(name.encode("ascii", "replace")) + rb"[ \t]*:[ \t]*"
        rb"((?:[^\r\n]|\r?\n[ \t])*)",
        re.IGNORECASE | re.MULTILINE,
    )
    return [
        re.sub(rb"\r?\n", b"", match.group(1))
        for match in field.finditer(header_block(raw))
    ]


#: A header field's first line as the stdlib's parser knows it (its
#: ``headerRE`` less the forms it takes for defects: no name; "From ",
#: whose space no name has).
_FIELD_NAME = re.compile(r"[\041-\071\073-\176]+:")


def _plain_header_items(block: bytes) -> list[tuple[str, str]] | None:
    """The fields of a plain header block exactly as the stdlib's compat32
    parser stores them (`email.message.Message.raw_items`), or None when
    the block is not plain and the parser must read it.

    Plain: every line ends with CRLF, and each is a field (a name, a colon)
    or the continuation of the field above it. What the parser treats
    specially (a bare CR or LF, a first line that continues nothing, a
    "From " line, a line with no name or no colon, which ends the headers
    with a defect) is left to it. tests/test_properties.py checks that both
    agree on any input.
    """
    text = block.decode("ascii", "surrogateescape")  # as BytesParser does
    crlf = text.count("\r\n")
    if text.count("\r") != crlf or text.count("\n") != crlf:
        return None
    items: list[tuple[str, str]] = []
    name: str | None = None
    value = ""
    for line in text.split("\r\n"):
        if not line:  # only at the end: the block holds no empty line
            break
        if line[0] in " \t":
            if name is None:
                return None
            value += line + "\r\n"
            continue
        if _FIELD_NAME.match(line) is None:
            return None
        if name is not None:
            items.append((name, value.rstrip("\r\n")))
        # compat32's header_source_parse: the first line's value without
        # its leading blanks, then the continuation lines as they are, all
        # with their line breaks but the last.
        name, _, value = line.partition(":")
        value = (value + "\r\n").lstrip(" \t")
    if name is not None:
        items.append((name, value.rstrip("\r\n")))
    return items


def _has_encoded_word(text: str) -> bool:
    """`email.header.ecre`'s search over a whole value: its charset part may
    cross a line break, the rest may not cross a LF. The first ``?`` after
    each ``=?`` only moves on from one ``=?`` to the next, so the first
    ``?=`` and LF after it are looked for only past the last ones found."""
    position = 0
    close = newline = -2  # not looked for yet
    while (start := text.find("=?", position)) >= 0:
        mark = text.find("?", start + 2)
        if mark < 0:
            return False
        position = start + 1
        if text[mark + 1 : mark + 2] not in ("q", "Q", "b", "B") or (
            text[mark + 2 : mark + 3] != "?"
        ):
            continue
        if close == -2 or 0 <= close < mark + 3:
            close = text.find("?=", mark + 3)
        if close < 0:
            return False  # no word can end: none after this one either
        if newline == -2 or 0 <= newline < mark + 3:
            newline = text.find("\n", mark + 3)
        if newline < 0 or newline > close:
            return True
    return False


def decode_header(text: str) -> list[tuple[bytes | str, str | None]]:
    """`email.header.decode_header` of a str, with the same result (or
    error), in time linear in its length.

    The standard library's takes time growing with the square of the
    number of encoded words in one line (an unfolded header is one), and
    of the ``=?`` that no ``?=`` ends: a Subject of 80,000 words took 16 s,
    one of 2 MB of ``=?a?q?x`` hours. The steps are its own, in the same
    order; each encoded word is still decoded by it, one at a time.
    """
    if not _has_encoded_word(text):
        return [(text, None)]
    chunks = _header_chunks(text)
    if chunks is None:
        return email.header.decode_header(text)  # nothing to take long over
    # As the standard library gives it: unencoded text as bytes too, its
    # characters past ASCII escaped ('raw-unicode-escape').
    return [
        (bytes(data, "raw-unicode-escape") if isinstance(data, str) else data, charset)
        for data, charset in chunks
    ]


def decode_header_text(text: str) -> str:
    """A header value with its RFC 2047 encoded words decoded, as
    ``str(email.header.make_header(decode_header(text)))`` gives it for
    ASCII text (errors included), and for text with raw 8-bit characters
    too, which the standard library refuses or garbles: RFC 6532 UTF-8
    beside an encoded word (its unencoded chunks are escaped bytes it then
    reads as ASCII; U+FFFD came back as the six characters ``\\ufffd``),
    or inside a Q-encoded one (``=?utf-8?q?Grüße?=``, from mailers that
    put it there). Raises as `make_header` does: a charset it does not
    know, a word it cannot decode or whose text its charset cannot write."""
    if not _has_encoded_word(text):
        return text
    chunks = _header_chunks(text, raw_text=True)
    if chunks is None:
        return str(email.header.make_header(email.header.decode_header(text)))
    # make_header's steps (Header.append, _normalize, __str__). Each chunk
    # becomes text and the name of its charset: unencoded text, raw 8-bit
    # text here too, is us-ascii.
    appended: list[tuple[str, str]] = []
    for data, name in chunks:
        if isinstance(data, str):
            appended.append((data, "us-ascii"))
            continue
        # RFC 2231 5: "=?utf-8*en?q?...?=" names a language after the
        # charset, as the stdlib's policy.default and IMAP SEARCH read it.
        charset = email.charset.Charset(
            "us-ascii" if name is None else name.partition("*")[0]
        )
        codec = charset.input_codec or "us-ascii"
        if codec == email.charset.UNKNOWN8BIT:
            # As written out by the email package for bytes it could not
            # read: shown as U+FFFD, as __str__ shows them.
            piece = data.decode("ascii", "replace")
        else:
            codecs.lookup(codec)  # unknown: LookupError, even for no bytes
            piece = data.decode(codec)
            output = charset.output_codec or "us-ascii"
            if output != email.charset.UNKNOWN8BIT:
                try:
                    piece.encode(output)
                except UnicodeEncodeError:
                    if output != "us-ascii":
                        raise
                    charset = email.charset.Charset("utf-8")
        appended.append((piece, str(charset)))
    # Runs of one charset are joined with a space.
    runs: list[tuple[str, str]] = []
    for piece, charset_name in appended:
        if runs and runs[-1][1] == charset_name:
            runs[-1] = (f"{runs[-1][0]} {piece}", charset_name)
        else:
            runs.append((piece, charset_name))
    # A space where an encoded word meets unencoded text with no blank (or
    # parenthesis, or backslash) between them.
    pieces: list[str] = []
    last_encoded = last_blank = False
    for piece, charset_name in runs:
        encoded = charset_name != "us-ascii"
        if pieces and (
            (last_encoded and not encoded and not _blank_end(piece[:1]))
            or (encoded and not last_encoded and not last_blank)
        ):
            pieces.append(" ")
        pieces.append(piece)
        last_encoded = encoded
        last_blank = _blank_end(piece[-1:])
    return "".join(pieces)


def _blank_end(character: str) -> bool:
    """`email.header.Header._nonctext`: where a word ends without a space."""
    return character.isspace() or character in ("(", ")", "\\")


#: What quoted-printable escapes in an encoded word (``=C3``).
_Q_ESCAPE = re.compile(rb"=([a-fA-F0-9]{2})")


def _header_chunks(
    text: str, raw_text: bool = False
) -> list[tuple[bytes | str, str | None]] | None:
    """`decode_header`'s chunks, unencoded text left as str; None when the
    text splits into no words at all. With ``raw_text``, raw 8-bit text in
    a Q-encoded word is its UTF-8 bytes (the standard library makes each
    character one byte, or a ``\\u`` escape, as if the header were
    Latin-1)."""
    # (text, encoding, charset, word) for each word, as the standard
    # library's first step makes them (an encoded word's text is what is
    # between its last two '?'; unencoded text has None, None), with the
    # whole encoded word to decode.
    words: list[tuple[str, str | None, str | None, str]] = []
    for line in text.splitlines():
        position = 0
        for start, end, charset, encoding in encoded_words(line):
            unencoded = line[position:start]
            if position == 0:
                unencoded = unencoded.lstrip()
            if unencoded:
                words.append((unencoded, None, None, unencoded))
            words.append(
                (
                    line[start + len(charset) + 5 : end - 2],
                    encoding.lower(),
                    charset.lower(),
                    line[start:end],
                )
            )
            position = end
        unencoded = line[position:]
        if position == 0:
            unencoded = unencoded.lstrip()
        if unencoded:
            words.append((unencoded, None, None, unencoded))
    if not words:
        return None
    # Blanks between two encoded words go (RFC 2047 6.2); as the standard
    # library does it, so does an encoded word whose text is blank.
    dropped = {
        n - 1
        for n, word in enumerate(words)
        if n > 1 and word[1] and words[n - 2][1] and words[n - 1][0].isspace()
    }
    # Runs of words of one charset become one: bytes joined as they come,
    # unencoded text with a space between.
    collapsed: list[tuple[bytes | str, str | None]] = []
    run: list[bytes | str] = []
    run_charset: str | None = None

    def close_run() -> None:
        if run_charset is None:
            collapsed.append((" ".join(cast("list[str]", run)), None))
        else:
            collapsed.append((b"".join(cast("list[bytes]", run)), run_charset))

    for n, (text_of_word, word_encoding, word_charset, word) in enumerate(words):
        if n in dropped:
            continue
        data: bytes | str
        if word_encoding is None:
            data = text_of_word
        elif raw_text and word_encoding == "q" and not text_of_word.isascii():
            data = _Q_ESCAPE.sub(
                lambda escape: bytes.fromhex(escape[1].decode()),
                text_of_word.encode("utf-8", "surrogateescape").replace(b"_", b" "),
            )
        else:
            [(decoded, _)] = email.header.decode_header(word)
            data = (
                decoded
                if isinstance(decoded, bytes)
                else bytes(decoded, "raw-unicode-escape")
            )
        if run and word_charset != run_charset:
            close_run()
            run = []
        run.append(data)
        run_charset = word_charset
    close_run()
    return collapsed


def _linear_decode_header(header: Any) -> list[tuple[bytes | str, str | None]]:
    """`email.header.decode_header`, in linear time for a str (`decode_header`
    gives the same result), the standard library's for anything else."""
    if isinstance(header, str):
        return decode_header(header)
    return email.header.decode_header(header)


@functools.cache  # once per process
def _linear_parsing() -> None:
    """Have mail-parser decode headers with `_linear_decode_header`, and the
    email package split MIME parameters with `_mime.parse_params`.

    mail-parser decodes every header of a message with the standard
    library's ``decode_header``, whose time grows with the square of a
    header's encoded words and of its ``=?`` no ``?=`` ends: 80 kB of
    ``=?a?q?x`` took 9 s for ``Message.text``, and every field of the
    report and the live view starts there. Its parse reads parameters with
    the email package's ``_parseparam``, quadratic too (a 50 kB
    ``Content-Type`` took 10.6 s). The results are the same (tests/
    test_properties.py), so for any other user of either in the process
    nothing changes but the time."""
    import importlib

    from ._mime import linear_params

    for name in ("mailparser.utils", "mailparser.addresses"):
        with contextlib.suppress(ImportError):
            module = importlib.import_module(name)
            if getattr(module, "decode_header", None) is email.header.decode_header:
                module.decode_header = _linear_decode_header  # type: ignore[attr-defined]
    linear_params()


#: The links a failure of `Message.link` lists, as reports list messages.
_LINKS_LISTED = 20


def _is_utf7(charset: str | None) -> bool:
    """Whether ``charset`` is UTF-7 by any of its names (``utf7``,
    ``unicode-1-1-utf-7``): mail-parser leaves it encoded."""
    if not charset or "7" not in charset:
        return False
    try:
        return codecs.lookup(charset).name == "utf-7"
    except (LookupError, ValueError):  # unknown; a NUL in the name
        return False


def _join_text(parts: list[str]) -> str | None:
    if not parts:
        return None
    return "\n".join(p.replace("\r\n", "\n") for p in parts)


def _own_parts(message: Compat32Message, top: bool = True) -> Iterator[Compat32Message]:
    """``message`` and its parts, as `walk` gives them, but not the parts of
    a message attached to it (message/rfc822): those are that message's."""
    yield message
    if message.is_multipart() and (top or message.get_content_maintype() != "message"):
        for part in message.get_payload():
            if isinstance(part, Compat32Message):  # always, when multipart
                yield from _own_parts(part, top=False)


def _own_text_parts(message: Compat32Message, subtype: str) -> list[str]:
    """The text/``subtype`` parts of ``message`` itself, decoded: what
    `Message.text` and `Message.html` read when mail-parser cannot serve
    (no parse, or an attached message, see `Message._forwards_a_message`)."""
    parts = []
    for part in _own_parts(message):
        if (
            part.get_content_maintype() != "text"
            or part.get_content_subtype() != subtype
        ):
            continue
        if part.get_content_disposition() == "attachment":
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            charset = part.get_content_charset() or "utf-8"
            try:
                parts.append(payload.decode(charset, "replace"))
            except (LookupError, ValueError):  # unknown name; NUL in the name
                parts.append(payload.decode("utf-8", "replace"))
    return parts


#: The names mail-parser makes up for a part without one: ten random
#: lowercase letters (`mailparser.utils.random_string`) and a suffix.
_MADE_UP_NAME = re.compile(r"[a-z]{10}\.(?:txt|rtf)")


def _file_names(message: Compat32Message) -> set[str]:
    """Every file name a part of ``message`` gives, as written and decoded
    (as mail-parser decodes it, and as the standard library does)."""
    from mailparser.utils import decode_header_part

    names: set[str] = set()
    for part in message.walk():
        raw = part.get_filename()
        if not raw:
            continue
        names.add(raw.strip())
        # It logs an ERROR for an encoded word it cannot decode, as while
        # parsing: about the mail, not the test.
        with contextlib.suppress(Exception), _QUIET_PARSE.quiet():
            names.add(decode_header_part(raw).strip())
        with contextlib.suppress(Exception):
            names.add(decode_header_text(raw).strip())
    return names


def _a_container(item: dict[str, Any], named: set[str]) -> bool:
    """Whether mail-parser's attachment ``item`` is a multipart that is not
    attached itself: one the standard library could not split (a multipart
    inside one with the same boundary) and mail-parser then took for an
    inline part by its Content-ID (its content empty, or its preamble). A
    container is no attachment, as `_own_attachments` has it."""
    content_type = str(item.get("mail_content_type") or "").lower()
    disposition = str(item.get("content-disposition") or "").split(";", 1)[0]
    return (
        content_type.startswith("multipart/")
        and disposition.strip().lower() != "attachment"
        # One with a name of its own is kept (a file sent as "multipart/
        # mixed"); its content tells nothing: an unsplit one holds its
        # preamble ("This is a multi-part message in MIME format.").
        and (item.get("filename") or None) not in named
    )


def _attachment(item: dict[str, Any], named: set[str]) -> Attachment:
    payload = item.get("payload") or ""
    if item.get("binary"):
        try:
            content = base64.b64decode(payload)
        except (binascii.Error, ValueError):
            content = payload.encode("ascii", "replace")
    else:
        content = (
            payload.encode("utf-8", "surrogateescape")
            if isinstance(payload, str)
            else payload
        )
    disposition = (
        (item.get("content-disposition") or "").split(";", 1)[0].strip().lower()
    )
    filename = item.get("filename") or None
    if (
        filename is not None
        and filename not in named
        and (filename == item.get("content-id") or _MADE_UP_NAME.fullmatch(filename))
    ):
        # A part without a name: mail-parser gives it its Content-ID or a
        # random one, different on every run.
        filename = None
    return Attachment(
        filename=filename,
        content_type=item.get("mail_content_type") or "application/octet-stream",
        content=content,
        content_id=item.get("content-id") or None,
        disposition=disposition or None,
    )


#: A message attached whole (RFC 2046 5.2.1; RFC 6532's international one).
_WHOLE_MESSAGE_TYPES = ("message/rfc822", "message/global")


def _whole_messages(part: Compat32Message) -> Iterator[Compat32Message]:
    """The messages attached whole (message/rfc822, message/global) in
    ``part``'s tree, not those inside one of them."""
    if not part.is_multipart():
        return
    for sub in part.get_payload():
        if not isinstance(sub, Compat32Message):
            continue
        if sub.get_content_type() in _WHOLE_MESSAGE_TYPES:
            yield sub
        elif sub.get_content_maintype() == "multipart":
            yield from _whole_messages(sub)


def _message_bytes(part: Compat32Message) -> bytes:
    """The attached message of a message/rfc822 part, as bytes."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return b"".join(
            sub.as_bytes() for sub in payload if isinstance(sub, Compat32Message)
        )
    decoded = part.get_payload(decode=True)
    return decoded if isinstance(decoded, bytes) else b""


#: The defect of an attached message `_message_bytes` could not write.
_TOO_DEEP_TO_WRITE = (
    "an attached message nested too deeply to be written whole is left out "
    "of attachments"
)


def _own_attachments(
    part: Compat32Message,
    top: bool = True,
    left_out: list[RecursionError] | None = None,
) -> Iterator[Attachment]:
    """The attachments of a message mail-parser could not read, by its
    rules: a part with a file name, a Content-ID (but not text/plain or
    text/html), an RTF part, or one whose disposition is attachment; a
    multipart part only when it is attached itself, as one attachment.
    Parts without a name get none (mail-parser makes one up). A message
    attached whole is one attachment, whatever its disposition. One nested
    too deeply to be written whole is left out, its error in ``left_out``
    (the others are kept)."""
    disposition = part.get_content_disposition()
    try:
        if not top and part.get_content_type() in _WHOLE_MESSAGE_TYPES:
            yield _own_attachment(part, _message_bytes(part), disposition)
            return
        if part.is_multipart() and disposition == "attachment":
            content = b"".join(
                sub.as_bytes() if isinstance(sub, Compat32Message) else b""
                for sub in part.get_payload()
            )
            yield _own_attachment(part, content, disposition)
            return
    except RecursionError as error:
        if left_out is None:
            raise
        left_out.append(error)
        return
    if part.is_multipart():
        for sub in part.get_payload():
            if isinstance(sub, Compat32Message):
                yield from _own_attachments(sub, top=False, left_out=left_out)
        return
    filename = part.get_filename()
    content_id = part.get("content-id")
    subtype = part.get_content_subtype()
    if (
        filename
        or (content_id and subtype not in ("html", "plain"))
        or subtype == "rtf"
        or disposition == "attachment"
    ):
        payload = part.get_payload(decode=True)
        content = payload if isinstance(payload, bytes) else b""
        yield _own_attachment(part, content, disposition)


def _own_attachment(
    part: Compat32Message, content: bytes, disposition: str | None
) -> Attachment:
    filename = part.get_filename()
    if filename:
        with contextlib.suppress(Exception):  # undecodable: as written
            filename = decode_header_text(filename)
    return Attachment(
        filename=filename.strip() if filename else None,
        content_type=part.get_content_type(),
        content=content,
        content_id=str(part.get("content-id") or "").strip() or None,
        disposition=disposition,
    )


#: An <a> start tag as html.parser reads one: "<a", in any case, then what
#: ends a tag name there (white space, "/", ">" or NUL; \s holds more).
_ANCHOR_START = re.compile(r"<a[\s/>\x00]", re.I)


class _MarkupReader(html.parser.HTMLParser):
    """html.parser, entities decoded, past what it cannot parse."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)

    def parse_marked_section(self, i: int, report: bool = True) -> int:
        # _markupbase raises AssertionError on a marked section it does not
        # know (``<![foo[ x ]]>``, ``<![ x``); browsers skip it as a bogus
        # comment up to the next ">", and so do we.
        try:
            return super().parse_marked_section(i, report)
        except AssertionError:
            end = self.rawdata.find(">", i + 3)
            return -1 if end < 0 else end + 1


class _LinkCollector(_MarkupReader):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []  # when closed
        # Each anchor's href as written, with its text: resolved at the end,
        # against the document's <base href> wherever it stands (a link
        # before the <base> goes there too, as in browsers).
        self._anchors: list[tuple[str, str]] = []
        self._open: list[str] | None = None
        self._href = ""
        # The first <base href>: a relative link ("/confirm") goes there in
        # the recipient's client, and was not found.
        self._base: str | None = None
        self._base_seen = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "base" and not self._base_seen and has_href(attrs):
            # The first <base> with an href, even one that is no http(s)
            # address (then no base): a later one is not the document's.
            self._base_seen = True
            self._base = html_base(attrs)
        elif tag == "a":
            # <a> inside an unclosed <a> ends it, as in browsers.
            if self._open is not None:
                self.handle_endtag("a")
            # Browsers strip the white space around a URL (" https://...").
            href = (dict(attrs).get("href") or "").strip()
            if href:
                self._href, self._open = href, []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self._anchors.append((self._href, " ".join("".join(self._open).split())))
            self._open = None

    def close(self) -> None:
        super().close()
        self.handle_endtag("a")  # one left open at the end is a link too
        for href, text in self._anchors:
            url = resolved(href, self._base)
            if url.lower().startswith(("http://", "https://")):
                self.links.append((url, text))


#: Elements whose content no reader sees in the message.
_UNSEEN = frozenset({"head", "style", "script", "template", "title"})
#: What a <head> holds; any other element begins the body.
_HEAD_CONTENT = frozenset(
    {"base", "link", "meta", "noscript", "script", "style", "template", "title"}
)


class _VisibleText(_MarkupReader):
    """The text an HTML part shows: entities decoded, the content of
    <style>, <script> and <head> left out, a space for each tag (so that
    words in two cells stay two words)."""

    def __init__(self) -> None:
        super().__init__()
        self.pieces: list[str] = []
        self._unseen: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if "head" in self._unseen and tag not in _HEAD_CONTENT:
            # A <head> left open ends where the body's content begins.
            del self._unseen[self._unseen.index("head") :]
        if tag in _UNSEEN:
            self._unseen.append(tag)
        self.pieces.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._unseen:  # closes it, and any left open inside it
            del self._unseen[self._unseen.index(tag) :]
        self.pieces.append(" ")

    def handle_data(self, data: str) -> None:
        if self._unseen == ["head"] and data.strip():
            # Text in a <head> left open begins the body, as for a tag.
            self._unseen.clear()
        if not self._unseen:
            self.pieces.append(data)


def visible_text(markup: str) -> str:
    """`_VisibleText` of ``markup``."""
    reader = _VisibleText()
    reader.feed(without_unclosed_tags(markup))
    reader.close()
    return "".join(reader.pieces)


def _check_link_arguments(contains: object, pattern: object, text: object) -> None:
    """`Message.link`'s arguments, each of its type: a regex passed as
    ``contains=`` would otherwise end in Python's "'in <string>' requires
    string as left operand", which names no argument."""
    __tracebackhide__ = True

    def got(value: object) -> str:
        kind = "re.Pattern" if isinstance(value, re.Pattern) else type(value).__name__
        return f"got {kind} {value!r}"

    for name, value in (("contains", contains), ("text", text)):
        if value is not None and not isinstance(value, str):
            hint = ""
            if name == "contains" and isinstance(value, re.Pattern):
                hint = "; for a regular expression use pattern="
            raise TypeError(f"link(): {name}= takes a str, {got(value)}{hint}")
    if pattern is not None and not isinstance(pattern, (str, re.Pattern)):
        raise TypeError(
            f"link(): pattern= takes a str or a compiled regex, {got(pattern)}"
        )


def _compiled(pattern: str | re.Pattern[str], method: str) -> re.Pattern[str]:
    """``pattern`` compiled, or an error that names the argument: a bare
    ``re.error`` says what is wrong with a regex, not whose it is."""
    __tracebackhide__ = True
    if isinstance(pattern, re.Pattern):
        return pattern
    if not isinstance(pattern, str):
        raise TypeError(
            f"{method}(): pattern= takes a str or a compiled regex, "
            f"got {type(pattern).__name__} {pattern!r}"
        )
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ValueError(
            f"{method}(): pattern= {pattern!r} is not a regular expression: {error}"
        ) from None

"""IMAP SEARCH (RFC 3501 section 6.4.4): parse the search keys into a
predicate tree, evaluate it over a folder's messages, and write the answer.

Pure functions without sockets, locks or state: the IMAP server (on the
sink's loop thread) parses once per command and evaluates over its snapshot
of the selected folder; tests call it from any thread.

Strings match as Dovecot matches them without a full-text index: a
case-insensitive substring of the header value with RFC 2047 words decoded
(FROM, TO, CC, BCC, SUBJECT, HEADER), of the text parts' bodies with their
transfer encoding and charset decoded (BODY), or of either (TEXT). The answer
holds sequence numbers and UIDs side by side; only :meth:`SearchResult.response`
writes it, and it takes the command's name, so SEARCH cannot answer UIDs
(smtp4dev #1519) nor UID SEARCH sequence numbers.
"""

from __future__ import annotations

import binascii
import codecs
import datetime
import email.utils
import functools
import re
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ._imap_fetch import (
    MailboxEntry,
    Part,
    parse_structure,
    rfc822_size,
    served_bytes,
)
from ._imap_syntax import (
    Arg,
    Atom,
    ImapSyntaxError,
    ParenList,
    SequenceSet,
    String,
    parse_date,
    parse_sequence_set,
    text_bytes,
)
from ._text import printable, shorten

#: What a sequence set is made of: a search key of these is one, if maybe
#: a broken one ("0", "1,,2").
_SET_CHARS = re.compile(r"[0-9:,*]+")
#: A number argument (LARGER, SMALLER).
_NUMBER = re.compile(r"[0-9]+")


def _as_sent(text: str) -> str:
    """``text`` (decoded with surrogateescape) for an error message:
    printable, a byte that was not UTF-8 shown as ``\\xff``."""
    raw = text.encode("utf-8", "surrogateescape")
    return printable(raw.decode("utf-8", "backslashreplace"))


#: The charsets the BADCHARSET response code names. SEARCH takes any text
#: charset Python has a codec for (``UTF8``, ``ISO-8859-1``, ``WINDOWS-1252``),
#: as Dovecot takes any that iconv knows.
CHARSETS = ("US-ASCII", "UTF-8")


def search_codec(charset: str) -> str | None:
    """The Python codec that decodes SEARCH strings sent in ``charset``, or
    None if none does. US-ASCII text is read as UTF-8: a client that names
    no charset (imap-tools by default) sends its 8-bit terms so."""
    if charset.upper() == "US-ASCII":
        return "utf-8"
    try:
        info = codecs.lookup(charset)
    except (LookupError, ValueError):
        return None
    # Not a bytes-to-bytes or str-to-str codec (base64, rot13), nor one of
    # Python's own that is no charset (iconv knows none of them).
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return None
    # Any other name of ASCII reads as US-ASCII does.
    return "utf-8" if info.name == "ascii" else info.name


#: Python's text codecs that no mail or IMAP client names as a charset.
_NOT_CHARSETS = frozenset(
    {"idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape"}
)


class BadCharset(Exception):
    """A CHARSET no codec reads: answer
    ``tag NO [BADCHARSET (US-ASCII UTF-8)] text``."""

    response_code = "BADCHARSET (" + " ".join(CHARSETS) + ")"

    def __init__(self, charset: str, tag: str | None = None) -> None:
        super().__init__(f"unsupported charset {charset!r}")
        self.text = f"unsupported charset {charset!r}"
        self.tag = tag


# -- the predicate tree -------------------------------------------------------


class Candidate(NamedTuple):
    """One message of the selected folder, as a search sees it (a tuple:
    a SEARCH makes one per message of the folder)."""

    sequence_number: int
    entry: MailboxEntry
    recent: bool = False


@dataclass(frozen=True)
class _Folder:
    largest_sequence: int
    largest_uid: int


@dataclass(frozen=True)
class Key:
    """A search key; `_Evaluation.matches` is what it means."""


@dataclass(frozen=True)
class AllOf(Key):
    keys: tuple[Key, ...]


@dataclass(frozen=True)
class AnyOf(Key):
    keys: tuple[Key, ...]


@dataclass(frozen=True)
class Not(Key):
    key: Key


@dataclass(frozen=True)
class HasFlag(Key):
    flag: str


@dataclass(frozen=True)
class IsRecent(Key):
    pass


@dataclass(frozen=True)
class InSequence(Key):
    numbers: SequenceSet


@dataclass(frozen=True)
class InUids(Key):
    uids: SequenceSet


@dataclass(frozen=True)
class DateKey(Key):
    """``sent`` compares the Date header's day, else the internal date's;
    ``relation`` is ``before``, ``on`` or ``since``."""

    relation: str
    day: datetime.date
    sent: bool


@dataclass(frozen=True)
class SizeKey(Key):
    larger: bool
    size: int


@dataclass(frozen=True)
class HeaderContains(Key):
    """``name`` lower case; an empty ``text`` matches any such header. The
    HEADER key (``as_written``) searches each value unfolded with its runs
    of spaces as written; SUBJECT, FROM and the others, squeezed to one
    space, as Dovecot searches each."""

    name: str
    text: str
    as_written: bool = False


@dataclass(frozen=True)
class BodyContains(Key):
    text: str
    with_headers: bool = False


@dataclass(frozen=True)
class SearchQuery:
    """A parsed SEARCH: its keys (all must match) and the charset named."""

    key: Key
    charset: str = "US-ASCII"


# -- parsing ------------------------------------------------------------------

_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
_DATE_KEYS = {
    "BEFORE": ("before", False),
    "ON": ("on", False),
    "SINCE": ("since", False),
    "SENTBEFORE": ("before", True),
    "SENTON": ("on", True),
    "SENTSINCE": ("since", True),
}
_HEADER_KEYS = {
    "BCC": "bcc",
    "CC": "cc",
    "FROM": "from",
    "SUBJECT": "subject",
    "TO": "to",
}


def parse_search(args: Sequence[Arg], tag: str | None = None) -> SearchQuery:
    """Parse SEARCH's arguments (after the command name). Raises
    :class:`ImapSyntaxError` (answer BAD) or :class:`BadCharset` (NO)."""
    position = 0
    charset = "US-ASCII"
    if len(args) >= 2 and isinstance(args[0], Atom) and args[0].upper == "CHARSET":
        charset = _text(args[1], "US-ASCII", tag).upper()
        if search_codec(charset) is None:
            raise BadCharset(charset, tag)
        position = 2
    reader = _KeyReader(list(args[position:]), charset, tag)
    if not reader.more():
        raise ImapSyntaxError("SEARCH needs at least one search key", tag)
    keys = []
    while reader.more():
        keys.append(reader.key(0))
    return SearchQuery(keys[0] if len(keys) == 1 else AllOf(tuple(keys)), charset)


def _text(arg: Arg, charset: str, tag: str | None) -> str:
    data = text_bytes(arg, tag, "a search string")
    codec = search_codec(charset) or "utf-8"
    try:
        return data.decode(codec)
    except (UnicodeError, ValueError):
        # Decoded with U+FFFD, which no mail holds, it found nothing, and a
        # client's Latin-1 terms passed as "no matching mail": BAD, as on
        # Dovecot.
        # Cut: a 20,000-byte literal made an 80,000-character reply.
        shown = shorten(printable(data.decode("utf-8", "backslashreplace")), 60)
        named = "UTF-8" if codec == "utf-8" else charset
        raise ImapSyntaxError(
            f"the search string '{shown}' is not {named} (name its charset "
            "with SEARCH CHARSET)",
            tag,
        ) from None


#: Deepest nesting of search keys: a parenthesized group or a NOT is a
#: level (an OR chain is not: see `_KeyReader.any_of`). Twice the lists'
#: limit, so that a NOT before each of 100 nested groups is served.
_MAX_DEPTH = 200


class _KeyReader:
    def __init__(self, args: list[Arg], charset: str, tag: str | None) -> None:
        self.args = args
        self.pos = 0
        self.charset = charset
        self.tag = tag

    def more(self) -> bool:
        return self.pos < len(self.args)

    def next(self, what: str) -> Arg:
        if not self.more():
            raise ImapSyntaxError(f"missing {what}", self.tag)
        arg = self.args[self.pos]
        self.pos += 1
        return arg

    def string(self, key: str) -> str:
        arg = self.next(f"the string after {key}")
        if isinstance(arg, ParenList):
            raise ImapSyntaxError(f"{key} takes a string, not a list", self.tag)
        return _text(arg, self.charset, self.tag)

    def number(self, key: str) -> int:
        arg = self.next(f"the number after {key}")
        # ASCII digits only: "²" is a digit to str.isdigit() but no number
        # to int(), and an Arabic-Indic one would be read as an ASCII one.
        if not isinstance(arg, Atom) or _NUMBER.fullmatch(arg.value) is None:
            raise ImapSyntaxError(f"{key} takes a number", self.tag)
        number = int(arg.value)
        if number > 0xFFFFFFFF:  # RFC 3501's number: 32 bits
            raise ImapSyntaxError(f"{key} takes a number up to 4294967295", self.tag)
        return number

    def key(self, depth: int) -> Key:
        if depth > _MAX_DEPTH:
            raise ImapSyntaxError("search keys nested too deep", self.tag)
        arg = self.next("a search key")
        if isinstance(arg, ParenList):
            inner = _KeyReader(list(arg.items), self.charset, self.tag)
            if not inner.more():
                raise ImapSyntaxError("empty parentheses in SEARCH", self.tag)
            keys = []
            while inner.more():
                keys.append(inner.key(depth + 1))
            return keys[0] if len(keys) == 1 else AllOf(tuple(keys))
        if isinstance(arg, String):
            raise ImapSyntaxError(
                f"a string is not a search key: {arg.text!r}", self.tag
            )
        name = arg.upper
        if name in _FLAG_KEYS:
            flag, present = _FLAG_KEYS[name]
            return HasFlag(flag) if present else Not(HasFlag(flag))
        if name in _DATE_KEYS:
            relation, sent = _DATE_KEYS[name]
            return DateKey(
                relation,
                parse_date(self.next(f"the date after {name}"), self.tag),
                sent,
            )
        if name in _HEADER_KEYS:
            return HeaderContains(_HEADER_KEYS[name], self.string(name))
        simple: dict[str, Callable[[], Key]] = {
            "ALL": lambda: AllOf(()),
            "NEW": lambda: AllOf((IsRecent(), Not(HasFlag("\\Seen")))),
            "OLD": lambda: Not(IsRecent()),
            "RECENT": IsRecent,
            "BODY": lambda: BodyContains(self.string(name)),
            "TEXT": lambda: BodyContains(self.string(name), with_headers=True),
            "KEYWORD": lambda: HasFlag(self.flag(name)),
            "UNKEYWORD": lambda: Not(HasFlag(self.flag(name))),
            "LARGER": lambda: SizeKey(True, self.number(name)),
            "SMALLER": lambda: SizeKey(False, self.number(name)),
            "NOT": lambda: Not(self.key(depth + 1)),
            "OR": lambda: self.any_of(depth),
            "UID": lambda: InUids(
                parse_sequence_set(self.next("the UID set after UID"), self.tag)
            ),
            "HEADER": self.header,
        }
        if name in simple:
            return simple[name]()
        if _SET_CHARS.fullmatch(arg.value):
            # "0" or "1,,2" is a broken set, not an unknown key: the error
            # says so (as Dovecot's "Invalid messageset").
            return InSequence(parse_sequence_set(arg, self.tag))
        raise ImapSyntaxError(f"unknown search key: {_as_sent(arg.value)}", self.tag)

    def any_of(self, depth: int) -> Key:
        """The keys of an OR (just read) as one flat `AnyOf`: an OR among
        its operands (``OR OR a b c``, as imap-tools writes "any of these
        51 Message-IDs", or ``OR a OR b c``) adds an operand, not a level
        of nesting. Read so, a chain of any length neither counts against
        the nesting limit nor recurses (OR is associative)."""
        keys: list[Key] = []
        needed = 2
        while needed:
            arg = self.args[self.pos] if self.more() else None
            if isinstance(arg, Atom) and arg.upper == "OR":
                self.pos += 1
                needed += 1  # one operand becomes two
                continue
            keys.append(self.key(depth + 1))
            needed -= 1
        return AnyOf(tuple(keys))

    def flag(self, key: str) -> str:
        arg = self.next(f"the keyword after {key}")
        if not isinstance(arg, Atom):
            raise ImapSyntaxError(f"{key} takes a flag keyword (an atom)", self.tag)
        if not arg.value.isascii():  # as Dovecot: "8bit data in atom"
            raise ImapSyntaxError(
                f"{key} takes a keyword of ASCII characters", self.tag
            )
        return arg.value

    def header(self) -> Key:
        name = self.string("HEADER").strip().lower()
        return HeaderContains(name, self.string("HEADER " + name), as_written=True)


# -- evaluating ---------------------------------------------------------------


@dataclass(frozen=True)
class SearchResult:
    """The matching messages: sequence numbers and UIDs side by side."""

    matches: tuple[tuple[int, int], ...]

    @property
    def sequence_numbers(self) -> list[int]:
        return [sequence for sequence, _ in self.matches]

    @property
    def uids(self) -> list[int]:
        return [uid for _, uid in self.matches]

    def response(self, command_name: str) -> bytes:
        """``* SEARCH ...`` for ``SEARCH`` (sequence numbers) or ``UID
        SEARCH`` (UIDs), with its CRLF: the command decides, not the caller."""
        if command_name == "SEARCH":
            numbers = self.sequence_numbers
        elif command_name == "UID SEARCH":
            numbers = self.uids
        else:
            raise ValueError(f"not a SEARCH command: {command_name!r}")
        return b"".join([b"* SEARCH", *(b" %d" % n for n in numbers), b"\r\n"])


def search(query: SearchQuery, candidates: Sequence[Candidate]) -> SearchResult:
    """The candidates (the whole selected folder, in order) that match."""
    folder = _Folder(
        max((c.sequence_number for c in candidates), default=0),
        max((c.entry.uid for c in candidates), default=0),
    )
    return _search(
        query.key,
        [c.entry for c in candidates],
        [c.sequence_number for c in candidates],
        {c.entry.uid for c in candidates if c.recent},
        folder,
    )


def search_folder(
    query: SearchQuery, entries: Sequence[MailboxEntry], recent: Container[int]
) -> SearchResult:
    """`search` over a whole folder: message n is ``entries[n - 1]``,
    ``recent`` holds the UIDs that are ``\\Recent``. The server's way: no
    `Candidate` per message."""
    folder = _Folder(len(entries), entries[-1].uid if entries else 0)
    return _search(query.key, entries, None, recent, folder)


def _search(
    key: Key,
    entries: Sequence[MailboxEntry],
    numbers: Sequence[int] | None,
    recent: Container[int],
    folder: _Folder,
) -> SearchResult:
    """The matches among ``entries``, whose sequence numbers are ``numbers``
    (None: 1, 2, 3, ...)."""
    # Strings every match must have in its header: most messages of a
    # folder are ruled out by one look at their header bytes.
    needles = _required_needles(key)
    matches = []
    for index, entry in enumerate(entries):
        if needles and _surely_absent(_raw_header(entry.message.raw), needles):
            continue
        number = index + 1 if numbers is None else numbers[index]
        uid = entry.uid
        if _Evaluation(number, entry, uid in recent, folder).matches(key):
            matches.append((number, uid))
    return SearchResult(tuple(matches))


def _required_needles(key: Key) -> tuple[bytes, ...]:
    """The header strings (lower-case ASCII) that a message must hold to
    match ``key``: those of its header keys, at the top or ANDed there."""
    keys = key.keys if isinstance(key, AllOf) else (key,)
    needles = []
    for each in keys:
        if isinstance(each, HeaderContains) and each.text:
            needle = _ascii_needle(each.text)
            if needle is not None:
                needles.append(needle)
    return tuple(needles)


def _raw_header(raw: bytes) -> bytes:
    """The header block of a message as stored (with its last line end)."""
    if raw.startswith((b"\r\n", b"\n")):
        return b""
    end = _HEADER_END.search(raw)
    return raw if end is None else raw[: end.start() + 1]


def _surely_absent(head: bytes, needles: tuple[bytes, ...]) -> bool:
    """Whether one of ``needles`` (lower-case ASCII) is surely in no header
    value of ``head``. Only where a look at the bytes cannot be fooled: an ASCII
    header (case folding is lower-casing) without encoded words and without
    folded lines (every value is a substring of it)."""
    if not head.isascii() or b"=?" in head or b"\n " in head or b"\n\t" in head:
        return False
    if (b"  " in head or b"\t" in head) and any(b" " in n for n in needles):
        return False  # "a  b" or "a\tb" holds "a b" (see `squeezed`)
    lower = head.lower()
    if len(needles) == 1:  # the usual case, without a generator per message
        return needles[0] not in lower
    return any(needle not in lower for needle in needles)


class _Evaluation:
    """One message against the tree; decoded text computed once, lazily."""

    def __init__(
        self, number: int, entry: MailboxEntry, recent: bool, folder: _Folder
    ) -> None:
        self.number = number
        self.entry = entry
        self.recent = recent
        self.folder = folder
        self._data: bytes | None = None
        self._header_block: bytes | None = None
        self._bodies: str | None = None
        # Each computed once per message however many keys ask (a search of
        # 40 HEADER keys re-read a large header 40 times: seconds of the
        # sink's loop).
        self._values: dict[str, list[str]] = {}
        self._headers_text: str | None = None
        self._part_headers: list[bytes] = []
        self._part_headers_text: str | None = None

    def matches(self, key: Key) -> bool:
        # The most common key first: this runs for every message.
        if isinstance(key, HeaderContains):
            if key.text and self.lacks(key.text):
                return False
            return self.header_contains(key.name, key.text, key.as_written)
        if isinstance(key, AllOf):
            return all(self.matches(k) for k in key.keys)
        if isinstance(key, AnyOf):
            return any(self.matches(k) for k in key.keys)
        if isinstance(key, Not):
            return not self.matches(key.key)
        if isinstance(key, HasFlag):
            wanted = key.flag.lower()
            return any(flag.lower() == wanted for flag in self.entry.flags)
        if isinstance(key, IsRecent):
            return self.recent
        if isinstance(key, InSequence):
            return key.numbers.contains(self.number, self.folder.largest_sequence)
        if isinstance(key, InUids):
            return key.uids.contains(self.entry.uid, self.folder.largest_uid)
        if isinstance(key, SizeKey):
            size = rfc822_size(self.entry.message.raw)
            return size > key.size if key.larger else size < key.size
        if isinstance(key, DateKey):
            day = self.sent_day() if key.sent else self.entry.internal_date.date()
            if day is None:
                # No readable Date header: the epoch's day, as Dovecot does,
                # so SENTBEFORE and NOT SENTBEFORE split the folder in two.
                day = _NO_SENT_DAY
            if key.relation == "before":
                return day < key.day
            if key.relation == "on":
                return day == key.day
            return day >= key.day
        if isinstance(key, BodyContains):
            needle = key.text.casefold()
            if key.with_headers and needle in self.headers_text():
                return True
            if needle in self.bodies():
                return True
            # TEXT: the whole RFC 5322 body, its parts' headers too (an
            # attachment's file name, a forwarded message's sender).
            return key.with_headers and needle in self.part_headers_text()
        raise AssertionError(f"unknown search key {key!r}")

    def data(self) -> bytes:
        if self._data is None:
            self._data = served_bytes(self.entry.message.raw)
        return self._data

    def header_block(self) -> bytes:
        if self._header_block is None:
            # Header keys need only the header: no copy of the whole message.
            self._header_block = served_bytes(_raw_header(self.entry.message.raw))
        return self._header_block

    def header_values(self, name: str, as_written: bool = False) -> list[str]:
        """The decoded values of the fields ``name``, unfolded (a line break
        and the tab after it one space), each run of blanks one space unless
        ``as_written``."""
        key = f"\x00{name}" if as_written else name
        values = self._values.get(key)
        if values is None:
            pattern = _header_pattern(name)
            unfolded = [
                decode_words(_unfolded(match.group(1)).strip())
                for match in pattern.finditer(self.header_block())
            ]
            values = self._values[key] = (
                unfolded if as_written else [squeezed(value) for value in unfolded]
            )
        return values

    def lacks(self, text: str) -> bool:
        """Whether ``text`` is surely in no header value (a key under OR or
        NOT; see `_surely_absent`)."""
        needle = _ascii_needle(text)
        return needle is not None and _surely_absent(self.header_block(), (needle,))

    def header_contains(self, name: str, text: str, as_written: bool = False) -> bool:
        values = self.header_values(name, as_written)
        if not text:
            return bool(values)
        needle = text.casefold()
        return any(needle in value.casefold() for value in values)

    def headers_text(self) -> str:
        """The header block, unfolded and decoded, case-folded."""
        if self._headers_text is None:
            self._headers_text = decode_words(
                _block_unfolded(self.header_block())
            ).casefold()
        return self._headers_text

    def sent_day(self) -> datetime.date | None:
        values = self.header_values("date")
        if not values:
            return None
        try:
            parsed = email.utils.parsedate_tz(values[0])
            if parsed is None:
                return None
            return datetime.date(parsed[0], parsed[1], parsed[2])
        except (ValueError, TypeError, OverflowError, IndexError):
            return None

    def bodies(self) -> str:
        """The decoded text of every text part, case-folded."""
        if self._bodies is None:
            texts: list[str] = []
            _collect_text(parse_structure(self.data()), texts, self._part_headers)
            self._bodies = "\n".join(texts).casefold()
        return self._bodies

    def part_headers_text(self) -> str:
        """The headers of every part below the message's own (MIME part
        headers, an encapsulated message's), unfolded and decoded,
        case-folded."""
        if self._part_headers_text is None:
            self.bodies()  # which collects them
            self._part_headers_text = "\n".join(
                decode_words(_block_unfolded(header)) for header in self._part_headers
            ).casefold()
        return self._part_headers_text


#: The sent day of a message without a readable Date header.
_NO_SENT_DAY = datetime.date(1970, 1, 1)
#: Transfer encodings whose body can be searched; a body in any other
#: (unknown, so undecodable) encoding is skipped, as Dovecot skips it.
_SEARCHABLE_ENCODINGS = frozenset(
    {"", "7bit", "8bit", "binary", "base64", "quoted-printable"}
)


def _collect_text(part: Part, texts: list[str], headers: list[bytes]) -> None:
    """The decoded text of ``part``'s text parts into ``texts``, and the
    header of every part below it into ``headers``. A ``message/*`` part
    that encapsulates no message (a bounce's ``message/delivery-status``,
    an MDN's, a feedback report) is text too (RFC 3464, 8098, 5965), as
    Dovecot searches it."""
    stack = [part]
    while stack:
        current = stack.pop()
        if current is not part:
            headers.append(current.header)
        if current.children:
            stack.extend(reversed(current.children))
        elif current.message is not None:
            stack.append(current.message)
        elif current.media_type.lower() in ("text", "", "message") and (
            _transfer_encoding(current) in _SEARCHABLE_ENCODINGS
        ):
            texts.append(_decode_body(current))


def _transfer_encoding(part: Part) -> str:
    return (part.field_text("content-transfer-encoding") or "").strip().lower()


def _decode_body(part: Part) -> str:
    body = part.body
    encoding = _transfer_encoding(part)
    try:
        if encoding == "base64":
            body = binascii.a2b_base64(re.sub(rb"[^A-Za-z0-9+/=]", b"", body) + b"==")
        elif encoding == "quoted-printable":
            body = binascii.a2b_qp(body)
    except (binascii.Error, ValueError):
        pass  # undecodable: search the bytes as they are
    charset = next(
        (value for name, value in part.params if name.lower() == "charset"),
        "us-ascii" if part.default_charset else "utf-8",
    )
    return _decode(body, charset)


def _decode(data: bytes, charset: str) -> str:
    if charset.strip().lower() in ("us-ascii", "ascii") and not data.isascii():
        # 8-bit text labelled US-ASCII, or with no charset (whose default
        # it is), is UTF-8 from a sender that did not say so far more often
        # than anything else: read as such, its words are found, as
        # Dovecot finds them (for these two names; it hands other names of
        # ASCII to iconv, which reads no 8-bit bytes, and so does Python).
        charset = "utf-8"
    try:
        codecs.lookup(charset)
    except (LookupError, ValueError):
        charset = "utf-8"
    try:
        return data.decode(charset, "replace")
    except Exception:  # a codec that fails on its own: search as UTF-8
        return data.decode("utf-8", "replace")


_HEADER_END = re.compile(rb"\n\r?\n")


_BLANKS = re.compile(r"[ \t]+")


def _unfolded(value: bytes) -> bytes:
    """A field's ``value`` unfolded as Dovecot reads it: a line break and
    the tab after it one space; a line break before spaces taken away."""
    return value.replace(b"\r\n\t", b" ").replace(b"\r\n", b"")


def _block_unfolded(header: bytes) -> bytes:
    """A header block with its folded lines unfolded (each field still on
    a line of its own: TEXT must not match across two fields)."""
    return header.replace(b"\r\n\t", b" ").replace(b"\r\n ", b" ")


def squeezed(text: str) -> str:
    """``text`` with each run of spaces and tabs one space: the header
    values that header keys search, as Dovecot's, so that "order number"
    finds a Subject folded with a tab before "number", or written with two
    spaces. (The search string is taken as sent, as Dovecot takes it: "a  b"
    finds nothing.)"""
    return _BLANKS.sub(" ", text) if "  " in text or "\t" in text else text


@functools.lru_cache(maxsize=64)
def _ascii_needle(text: str) -> bytes | None:
    """A search string as lower-case ASCII bytes; None if not ASCII."""
    needle = text.casefold()
    return needle.encode("ascii") if needle.isascii() else None


@functools.lru_cache(maxsize=64)
def _header_pattern(name: str) -> re.Pattern[bytes]:
    """The fields named ``name`` (any case) in a served header block, with
    their continuation lines; compiled once per name, not per message."""
    return re.compile(
        rb"^"
        + re.escape(name.encode("utf-8", "surrogateescape"))
        + rb"[ \t]*:("
        + _LINE_OF_VALUE
        + rb"(?:\r\n[ \t]"
        + _LINE_OF_VALUE
        + rb")*)",
        re.IGNORECASE | re.MULTILINE,
    )


# A value's characters are anything but a line end (a lone CR included), so
# that it cannot eat the CR of the CRLF that a continuation line follows.
# Runs of plain characters, not one alternation per character: 25 times
# faster over a large header.
_LINE_OF_VALUE = rb"[^\r\n]*(?:\r(?!\n)[^\r\n]*)*"


_ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(rb"(\?=)[ \t]+(=\?)")


def decode_words(value: bytes) -> str:
    """A header value with its RFC 2047 encoded words decoded; undecodable
    words and bytes are kept (replaced), never raised."""
    if b"=?" not in value:  # no encoded word (most values): decode at once
        return value.decode("utf-8", "replace")
    value = _BETWEEN_WORDS.sub(rb"\1\2", value)
    out: list[str] = []
    pos = 0
    for match in _ENCODED_WORD.finditer(value):
        out.append(value[pos : match.start()].decode("utf-8", "replace"))
        charset = match.group(1).decode("ascii", "replace").split("*")[0]
        text = match.group(3)
        try:
            if match.group(2) in (b"B", b"b"):
                raw = binascii.a2b_base64(text + b"===")
            else:
                raw = binascii.a2b_qp(text.replace(b"_", b" "), header=True)
        except (binascii.Error, ValueError):
            raw = match.group().replace(b"\0", b"")
        out.append(_decode(raw, charset))
        pos = match.end()
    out.append(value[pos:].decode("utf-8", "replace"))
    return "".join(out)

"""The IMAP4rev1 grammar (RFC 3501 section 9, with LITERAL+ of RFC 7888):
reading commands as they arrive, and writing the strings, flag lists and dates
of responses.

Pure functions and one small state machine without sockets or locks: the IMAP
server's connection code (on the sink's loop thread) feeds it lines and
literal bytes and acts on what it says; tests call it directly from any
thread. Every malformed input becomes an :class:`ImapSyntaxError` carrying the
tag when there is one (the server answers a tagged ``BAD``, an untagged one
otherwise); no other exception type escapes and nothing waits.

How the server reads a command with :class:`CommandReader`::

    reader = CommandReader()
    step = reader.feed_line(line)          # a line with its CRLF
    while isinstance(step, NeedLiteral):
        if step.synchronizing:
            send(b"+ Ready\\r\\n")
        reader.feed_literal(read_exactly(step.size))
        step = reader.feed_line(read_line())  # the command goes on
    command = step                          # a Command

``DONE`` (IDLE) and AUTHENTICATE continuation lines are not commands: the
server reads those lines itself without the reader.
"""

from __future__ import annotations

import base64
import calendar
import dataclasses
import datetime
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from ._text import shorten

#: Longest command line (without literals), as Dovecot's default
#: ``imap_max_line_length``.
MAX_LINE = 64 * 1024
#: Largest literal outside APPEND (the server passes its own limit for APPEND).
MAX_LITERAL = 64 * 1024
#: Deepest nesting of parenthesized lists. imap-tools writes each AND(...)
#: as a list, so a query built up in a loop nests as deep as it has terms;
#: the parser and the search evaluator recurse once or twice per level, far
#: below Python's limit at this depth.
MAX_DEPTH = 100
#: Most arguments (atoms, strings, lists, counted at every depth) per command.
MAX_ARGS = 10_000
#: Most bytes of one command, its lines and literals together (an APPEND's
#: message aside: the server adds its own limit for that).
MAX_COMMAND = 1024 * 1024
#: The largest number IMAP allows (nz-number, number: 32 bits unsigned).
MAX_NUMBER = 4_294_967_295


class ImapSyntaxError(Exception):
    """A command that breaks the grammar or a limit.

    ``tag`` is the command's tag when it could be read (answer ``tag BAD
    text``), else ``None`` (answer ``* BAD text``). ``disconnect`` is true
    when the connection cannot continue: a non-synchronizing literal was
    refused, so its bytes are on their way and cannot be told from commands.
    """

    def __init__(
        self, text: str, tag: str | None = None, *, disconnect: bool = False
    ) -> None:
        # Cut: a value it quotes may be a literal (a 60 KB message in a
        # date's place), which a reply line and the transcript must not
        # repeat whole.
        text = shorten(text, _QUOTED_MAX)
        super().__init__(text)
        self.text = text
        self.tag = tag
        self.disconnect = disconnect


#: How much of a BAD reply's text is sent and recorded.
_QUOTED_MAX = 300


# -- the parsed command -------------------------------------------------------


@dataclass(frozen=True)
class Atom:
    """An atom as sent (``FLAGS``, ``1:*``, ``\\Seen``, ``BODY[HEADER]<0.10>``);
    in a BODY[...] section a string is given quoted, a literal too.

    ``NIL`` is an atom too: :attr:`is_nil` tells, and where an astring is
    expected (a mailbox named NIL) it is the text ``NIL``."""

    value: str

    @property
    def is_nil(self) -> bool:
        return self.upper == "NIL"

    @property
    def upper(self) -> str:
        """The value in upper case, to compare with the grammar's words:
        ASCII letters only (`ascii_upper`)."""
        return ascii_upper(self.value)


@dataclass(frozen=True)
class String:
    """A quoted string or a literal, as bytes (``literal`` tells which)."""

    value: bytes
    literal: bool = False

    @property
    def text(self) -> str:
        """The value as text: UTF-8, undecodable bytes replaced."""
        return self.value.decode("utf-8", "replace")


@dataclass(frozen=True)
class ParenList:
    """A parenthesized list."""

    items: tuple[Arg, ...]


Arg: TypeAlias = "Atom | String | ParenList"


@dataclass(frozen=True)
class Command:
    """One complete command: ``name`` is upper-cased, and two words for the
    UID commands (``UID FETCH``); ``args`` follow the name."""

    tag: str
    name: str
    args: tuple[Arg, ...]
    #: Sizes of the literals it carried, as `CommandReader` read them (its
    #: tests check the reader with them; transcripts count a literal from
    #: the line's own ``{n}``).
    literal_sizes: tuple[int, ...] = ()

    def error(self, text: str) -> ImapSyntaxError:
        """An error about this command's arguments, with its tag."""
        return ImapSyntaxError(text, self.tag)


def ascii_upper(text: str) -> str:
    """``text`` upper-cased for comparing with the grammar's words, which
    are ASCII and case-insensitive (RFC 3501 section 9): text with other
    characters comes back as it is, so that ``\ufb02ags`` (a ligature) or
    ``\u017feen`` (a long s), which ``str.upper()`` makes ``FLAGS`` and
    ``SEEN``, are no item or key (Dovecot: "8bit data in atom")."""
    return text.upper() if text.isascii() else text


def astring(arg: Arg, tag: str | None = None) -> str:
    """An atom or a string argument as text (mailbox names, user names);
    a parenthesized list is an :class:`ImapSyntaxError`."""
    if isinstance(arg, Atom):
        return arg.value
    if isinstance(arg, String):
        return arg.text
    raise ImapSyntaxError("expected an atom or a string, got a list", tag)


def text_bytes(arg: Arg, tag: str | None, what: str) -> bytes:
    """`astring_bytes` of an argument that is text (a search string, a user
    name, a password): an atom holding 8-bit bytes is an
    :class:`ImapSyntaxError`, as on Dovecot ("8bit data in atom"): atoms
    are 7-bit (RFC 3501 section 9), and such text goes quoted or as a
    literal. ``what`` names it in the error."""
    if isinstance(arg, Atom) and not arg.value.isascii():
        raise ImapSyntaxError(
            f"{what} has 8-bit text in an atom: send it quoted or as a literal",
            tag,
        )
    return astring_bytes(arg, tag)


def astring_bytes(arg: Arg, tag: str | None = None) -> bytes:
    """An atom or a string argument as bytes (search keys, passwords)."""
    if isinstance(arg, Atom):
        return arg.value.encode("utf-8", "surrogateescape")
    if isinstance(arg, String):
        return arg.value
    raise ImapSyntaxError("expected an atom or a string, got a list", tag)


# -- reading ------------------------------------------------------------------


@dataclass(frozen=True)
class NeedLiteral:
    """The command goes on with a literal of ``size`` bytes. When
    ``synchronizing`` (``{n}``) the server must first send ``+ Ready``; with
    LITERAL+ (``{n+}``) the client sends it at once."""

    size: int
    synchronizing: bool


#: Why a literal8 (RFC 3516's ``~{n}``) is refused, wherever it stands.
LITERAL8_REFUSED = "a literal8 (~{n}) is not accepted: the server has no BINARY"

#: A literal at a line's end: its size, and "+" if it is non-synchronizing.
LITERAL_AT_END = re.compile(rb"\{(\d{1,20})(\+?)\}\r?\n\Z")
_LITERAL = re.compile(rb"\{(\d{1,20})\+?\}\r?\n")
_TAG_CHARS = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\+]+")


@dataclass
class CommandReader:
    """Collects one command from its lines and literals, then parses it.

    The limits are checked as the bytes arrive: a line longer than
    ``max_line``, a literal announced larger than ``max_literal`` (refused
    before a byte of it is read), a command whose lines and literals would
    come to more than ``max_command`` bytes (refused as its literal is
    announced), more than ``max_depth`` nested lists or ``max_args``
    arguments give an :class:`ImapSyntaxError`. After any
    error or complete command the reader is ready for the next command.
    """

    max_line: int = MAX_LINE
    max_literal: int = MAX_LITERAL
    max_depth: int = MAX_DEPTH
    max_args: int = MAX_ARGS
    max_command: int = MAX_COMMAND
    _parts: list[bytes] = field(default_factory=list)
    _literal_sizes: list[int] = field(default_factory=list)
    _expecting: int | None = None
    _total: int = 0  # the bytes of _parts

    @property
    def in_command(self) -> bool:
        """True between the first line of a command and its end."""
        return bool(self._parts)

    def reset(self) -> None:
        """Forget a half-read command (a disconnect, a refused literal)."""
        self._parts.clear()
        self._literal_sizes.clear()
        self._expecting = None
        self._total = 0

    def feed_line(self, line: bytes) -> Command | NeedLiteral:
        """Take one line (with its CRLF or LF) of the current command."""
        if self._expecting is not None:
            self.reset()
            raise ImapSyntaxError("a literal was expected, not a line")
        if len(line) > self.max_line:
            tag = _tag_of(line if not self._parts else self._parts[0])
            self.reset()
            raise ImapSyntaxError(
                f"line too long ({len(line)} bytes, at most {self.max_line})", tag
            )
        if not line.endswith(b"\n"):
            line += b"\r\n"
        self._parts.append(line)
        self._total += len(line)
        literal = LITERAL_AT_END.search(line)
        if literal is not None:
            size = int(literal.group(1))
            synchronizing = not literal.group(2)
            if synchronizing and line[literal.start() - 1 : literal.start()] == b"~":
                # Refused before "+ Ready" (a "~{n+}" one is on its way:
                # read, then refused by the parser with these words).
                tag = _tag_of(self._parts[0])
                self.reset()
                raise ImapSyntaxError(LITERAL8_REFUSED, tag)
            if size <= self.max_literal and self._total + size > self.max_command:
                tag = _tag_of(self._parts[0])
                total = self._total + size
                self.reset()
                raise ImapSyntaxError(
                    f"command too long ({total} bytes with its literals, at most "
                    f"{self.max_command})",
                    tag,
                    disconnect=not synchronizing,
                )
            if size > self.max_literal:
                tag = _tag_of(self._parts[0])
                self.reset()
                raise ImapSyntaxError(
                    f"literal too large ({size} bytes, at most {self.max_literal})",
                    tag,
                    disconnect=not synchronizing,
                )
            if len(self._literal_sizes) >= self.max_args:
                tag = _tag_of(self._parts[0])
                self.reset()
                raise ImapSyntaxError("too many literals", tag)
            self._expecting = size
            self._literal_sizes.append(size)
            return NeedLiteral(size, synchronizing)
        data = b"".join(self._parts)
        sizes = tuple(self._literal_sizes)
        self.reset()
        command = parse_command(data, max_depth=self.max_depth, max_args=self.max_args)
        return dataclasses.replace(command, literal_sizes=sizes)

    def command_so_far(self) -> Command:
        """The command up to the literal it now waits for, parsed, so that a
        server can refuse it before it asks for that literal: APPEND's
        folder, flags and date-time come before its message. The arguments
        are those complete before the literal; a syntax error among them is
        an :class:`ImapSyntaxError`, as it would be at the command's end.
        Only for commands whose literals never stand inside a list (an
        APPEND's do not): a list still open here is an error."""
        if self._expecting is None:
            raise RuntimeError("command_so_far() needs a command awaiting a literal")
        last = self._parts[-1]
        marker = LITERAL_AT_END.search(last)
        assert marker is not None  # what made feed_line expect the literal
        data = b"".join(self._parts[:-1]) + last[: marker.start()] + b"\r\n"
        return parse_command(data, max_depth=self.max_depth, max_args=self.max_args)

    def feed_literal(self, data: bytes) -> None:
        """Take the literal's bytes (exactly the announced size); the command
        goes on with the next line."""
        if self._expecting is None or len(data) != self._expecting:
            expected = self._expecting
            tag = _tag_of(self._parts[0]) if self._parts else None
            self.reset()
            raise ImapSyntaxError(
                f"literal of {len(data)} bytes where {expected} were announced",
                tag,
                disconnect=True,
            )
        self._parts.append(data)
        self._total += len(data)
        self._expecting = None


def _tag_of(line: bytes) -> str | None:
    match = _TAG_CHARS.match(line)
    if match is None or line[match.end() : match.end() + 1] != b" ":
        return None
    return match.group().decode("ascii")


class _Parser:
    """A cursor over one command's bytes (lines and literals in wire order)."""

    def __init__(
        self, data: bytes, tag: str | None, max_depth: int, max_args: int
    ) -> None:
        self.data = data
        self.pos = 0
        self.tag = tag
        self.max_depth = max_depth
        self.args_left = max_args

    def fail(self, text: str) -> ImapSyntaxError:
        return ImapSyntaxError(text, self.tag)

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < len(self.data) else None

    def at_end(self) -> bool:
        # Without slicing: a copy of the rest for every argument made a
        # command of many literals quadratic (minutes of the sink's loop).
        data, left = self.data, len(self.data) - self.pos
        return (
            left == 0
            or (left == 1 and data[self.pos] == 0x0A)
            or (left == 2 and data.endswith(b"\r\n"))
        )

    def space(self) -> None:
        byte = self.peek()
        if byte != 0x20:
            # A CR ends the line only with its LF: a bare one is named, as
            # Dovecot names it ("CR sent without LF").
            found = (
                "the end"
                if byte is None or self.at_end()
                else "a CR without its LF"
                if byte == 0x0D
                else _byte_name(byte)
            )
            raise self.fail(f"expected a space at byte {self.pos}, found {found}")
        self.pos += 1

    def atom(self) -> str:
        data = self.data
        start = self.pos
        pos = start
        head = section = b""
        while pos < len(data):
            byte = data[pos]
            if (
                byte == 0x5B
                and not section
                # Measured first: the atom so far copied at every "[" of
                # "x[[[[..." took time growing with the square of its length.
                and pos - start <= _SECTIONED_LONGEST
                and data[start:pos].upper() in _SECTIONED
            ):
                # BODY[HEADER.FIELDS (A "B")] is one atom. Elsewhere "[" is
                # an atom's character like any other (a keyword "a[b").
                head = data[start:pos]
                section = self.section(start, pos)
                start = pos = self.pos
                continue
            if byte in _ATOM_STOPS:
                break
            pos += 1
        if pos == start and not section:
            found = data[start : start + 1]
            if found == b" ":
                # An atom starts after a space or "(": this is a second
                # space, which RFC 3501 does not allow (Dovecot skips it).
                raise self.fail(
                    f"a second space at byte {start}: arguments are separated by one"
                )
            raise self.fail(
                f"unexpected {_byte_name(found[0])} at byte {start}"
                if found
                else "missing argument"
            )
        self.pos = pos
        if section:
            return (head + section + data[start:pos]).decode("utf-8", "surrogateescape")
        return data[start:pos].decode("utf-8", "surrogateescape")

    def section(self, start: int, open_at: int) -> bytes:
        """The ``[...]`` of the atom at ``start`` (``BODY[``...), from its
        ``[`` at ``open_at`` to its ``]``. The field names of HEADER.FIELDS
        may be atoms, quoted strings or literals (RFC 3501:
        ``header-fld-name = astring``); each string comes back quoted, a
        literal too, so that a section is one line of text."""
        data = self.data
        out = bytearray(b"[")
        pos = open_at + 1
        while True:
            byte = data[pos] if pos < len(data) else None
            if byte is None or byte in (0x0D, 0x0A):
                name = data[start:open_at].decode("ascii")
                raise self.fail(f"unmatched '[' after {name}: expected ']'")
            if byte == 0x5D:  # "]"
                self.pos = pos + 1
                return bytes(out + b"]")
            if byte == 0x22 or (byte == 0x7B and _LITERAL.match(data, pos)):
                self.pos = pos
                string = self.quoted() if byte == 0x22 else self.literal()
                if any(c in string.value for c in b"\r\n\x00"):
                    raise self.fail("a field name cannot hold CR, LF or NUL")
                escaped = string.value.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
                out += b'"' + escaped + b'"'
                pos = self.pos
                continue
            out.append(byte)
            pos += 1

    def arg(self, depth: int) -> Arg:
        self.args_left -= 1
        if self.args_left < 0:
            raise self.fail("too many arguments")
        byte = self.peek()
        if byte == 0x28:  # "("
            if depth >= self.max_depth:
                raise self.fail(f"lists nested deeper than {self.max_depth}")
            self.pos += 1
            if self.peek() == 0x20:  # "( a)", as aioimaplib writes ID
                self.pos += 1
            items: list[Arg] = []
            while self.peek() != 0x29:
                if self.at_end():
                    raise self.fail("unterminated list: ')' missing")
                if items:
                    self.space()
                if self.peek() == 0x29:  # "(a )" is sloppy but harmless
                    break
                items.append(self.arg(depth + 1))
            self.pos += 1
            return ParenList(tuple(items))
        if byte == 0x22:  # '"'
            return self.quoted()
        if byte == 0x7B:  # "{"
            return self.literal()
        if byte is None or byte in (0x0D, 0x0A):
            raise self.fail("missing argument")
        if byte == 0x7E and _LITERAL.match(self.data, self.pos + 1):
            # Read as the atom "~" and then a stray "{": "Expected a space".
            raise self.fail(LITERAL8_REFUSED)
        return Atom(self.atom())

    def quoted(self) -> String:
        data = self.data
        pos = self.pos + 1
        out = bytearray()
        while True:
            if pos >= len(data) or data[pos] in (0x0D, 0x0A):
                raise self.fail("unterminated quoted string")
            byte = data[pos]
            if byte == 0x22:
                self.pos = pos + 1
                return String(bytes(out))
            if byte == 0x5C:  # backslash: only \" and \\ are allowed
                pos += 1
                if pos >= len(data) or data[pos] not in (0x22, 0x5C):
                    raise self.fail(
                        r'a backslash in a quoted string escapes only " or \\'
                    )
                byte = data[pos]
            elif byte == 0:
                raise self.fail("NUL in a quoted string")
            out.append(byte)
            pos += 1

    def literal(self) -> String:
        match = _LITERAL.match(self.data, self.pos)
        if match is None:
            raise self.fail("malformed literal: expected {n} or {n+} at line end")
        size = int(match.group(1))
        start = match.end()
        if start + size > len(self.data):
            raise self.fail("literal shorter than announced")
        self.pos = start + size
        return String(self.data[start : self.pos], literal=True)


# atom-specials of RFC 3501 minus what atoms here may hold: "]" (resp-specials,
# in BODY[...] names), "%" and "*" (list wildcards, sequence sets) and "\"
# (flags) stay in atoms, as every server reads them.
_ATOM_STOPS = frozenset(b'(){ "\r\n') | frozenset(range(0x20)) | {0x7F}


#: The FETCH items whose "[...]" holds a section (RFC 3501, RFC 3516).
_SECTIONED = frozenset(
    {b"BODY", b"BODY.PEEK", b"BINARY", b"BINARY.PEEK", b"BINARY.SIZE"}
)
_SECTIONED_LONGEST = max(map(len, _SECTIONED))


def _byte_name(byte: int) -> str:
    """A byte as an error message names it: ``')'``, ``byte 0x00``."""
    if 0x20 < byte < 0x7F:
        return repr(chr(byte))
    return f"byte 0x{byte:02x}"


#: The syntax error of a line without a tag.
NO_TAG = "no valid tag: a command is 'tag SP command'"
#: The syntax error of a line that is a tag alone.
MISSING_COMMAND = "missing command name"


def parse_command(
    data: bytes, *, max_depth: int = MAX_DEPTH, max_args: int = MAX_ARGS
) -> Command:
    """Parse one complete command (its lines and literals in wire order, as
    :class:`CommandReader` collects them)."""
    tag = _tag_of(data)
    if tag is None:
        if data.strip() == b"":
            raise ImapSyntaxError("empty command line")
        lone = _TAG_CHARS.fullmatch(data.rstrip(b"\r\n"))
        if lone is not None:
            # A tag and no command: answered tagged, as Dovecot does, so
            # that a client waiting for its tag's answer gets it.
            raise ImapSyntaxError(MISSING_COMMAND, lone.group().decode("ascii"))
        raise ImapSyntaxError(NO_TAG)
    parser = _Parser(data, tag, max_depth, max_args)
    parser.pos = len(tag) + 1
    if parser.at_end():
        raise parser.fail(MISSING_COMMAND)
    name = _command_name(parser)
    if name == "UID":
        parser.space()
        name = "UID " + _command_name(parser)
    args: list[Arg] = []
    while not parser.at_end():
        parser.space()
        if parser.at_end():
            break  # a trailing space, as some clients send
        args.append(parser.arg(0))
    return Command(tag, name, tuple(args))


def _command_name(parser: _Parser) -> str:
    start = parser.pos
    name = parser.atom()
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", name):
        raise parser.fail(f"invalid command name at byte {start}")
    return name.upper()


# -- sequence sets, flags and dates ------------------------------------------


@dataclass(frozen=True)
class SequenceSet:
    """A sequence set (``1:*,3,5:7``) as ranges; ``None`` stands for ``*``.

    It does not know whether it holds message sequence numbers or UIDs: the
    caller passes the largest of whichever it means (``*``'s value)."""

    ranges: tuple[tuple[int | None, int | None], ...]

    def contains(self, number: int, largest: int) -> bool:
        """Whether ``number`` is in the set, ``*`` standing for ``largest``."""
        for low, high in self.ranges:
            a = largest if low is None else low
            b = largest if high is None else high
            if min(a, b) <= number <= max(a, b):
                return True
        return False

    def members(self, largest: int) -> list[int]:
        """The numbers from 1 to ``largest`` in the set, ascending, once each."""
        found: set[int] = set()
        for low, high in self.ranges:
            a = largest if low is None else low
            b = largest if high is None else high
            a, b = min(a, b), max(a, b)
            found.update(range(max(a, 1), min(b, largest) + 1))
        return sorted(found)

    def exceeds(self, largest: int) -> bool:
        """Whether a number in the set (not ``*``) is above ``largest``: for
        message sequence numbers that is an error (``BAD``)."""
        return any(
            (low is not None and low > largest) or (high is not None and high > largest)
            for low, high in self.ranges
        )


_SEQ_NUMBER = r"(?:[1-9][0-9]{0,9}|\*)"
_SEQ_SET = re.compile(
    rf"{_SEQ_NUMBER}(?::{_SEQ_NUMBER})?(?:,{_SEQ_NUMBER}(?::{_SEQ_NUMBER})?)*"
)


def parse_sequence_set(arg: Arg | str, tag: str | None = None) -> SequenceSet:
    """Parse ``1:*,3,5:7`` (an atom argument or its text)."""
    text = arg.value if isinstance(arg, Atom) else arg
    if not isinstance(text, str) or _SEQ_SET.fullmatch(text) is None:
        shown = text if isinstance(text, str) else "a string or a list"
        raise ImapSyntaxError(f"invalid sequence set: {shown!r}", tag)
    ranges: list[tuple[int | None, int | None]] = []
    for item in text.split(","):
        low, _, high = item.partition(":")
        first = _seq_number(low, tag)
        ranges.append((first, _seq_number(high, tag) if high else first))
    return SequenceSet(tuple(ranges))


def _seq_number(text: str, tag: str | None) -> int | None:
    if text == "*":
        return None
    number = int(text)
    if number > MAX_NUMBER:
        raise ImapSyntaxError(f"number out of range in a sequence set: {text}", tag)
    return number


SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_SYSTEM_BY_UPPER = {flag.upper(): flag for flag in (*SYSTEM_FLAGS, "\\Recent")}
_KEYWORD = re.compile(r"[^\x00-\x20\x7f-\uffff(){%*\"\\\]]+")


def parse_flags(arg: Arg | Iterable[Arg], tag: str | None = None) -> frozenset[str]:
    """A flag list: ``(\\Seen $Label)``, one flag atom, or several flag
    arguments (STORE's ``FLAGS \\Seen \\Deleted``). System flags come back in
    their RFC 3501 spelling whatever the case sent; ``\\Recent`` and unknown
    ``\\`` flags are the caller's to refuse."""
    items: Iterable[Arg]
    if isinstance(arg, ParenList):
        items = arg.items
    elif isinstance(arg, (Atom, String)):
        items = (arg,)
    else:
        items = arg
    flags: set[str] = set()
    for item in items:
        if not isinstance(item, Atom):
            raise ImapSyntaxError("a flag is an atom (\\Seen, $Label)", tag)
        value = item.value
        if value.startswith("\\"):
            known = _SYSTEM_BY_UPPER.get(ascii_upper(value))
            if known is None and _KEYWORD.fullmatch(value[1:]) is None:
                raise ImapSyntaxError(f"invalid flag: {value!r}", tag)
            flags.add(known or value)
        elif _KEYWORD.fullmatch(value) is None:
            raise ImapSyntaxError(f"invalid flag: {value!r}", tag)
        else:
            flags.add(value)
    return frozenset(flags)


_MONTHS = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)
_MONTH_NUMBER = {name.upper(): number for number, name in enumerate(_MONTHS, 1)}
_DATE = re.compile(r"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME = re.compile(
    r"([ 0-9][0-9])-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"
)


def _day_problem(year: str, month: int, day: str) -> str | None:
    """Why ``day``-month-``year`` is no day (the words after "invalid
    date ...: "), or None."""
    if not 1 <= int(year) <= 9999:
        return f"year {year} is out of range (0001-9999)"
    if int(day) < 1:
        return f"day {day} is out of range ({'01' if len(day) == 2 else '1'}-31)"
    last = calendar.monthrange(int(year), month)[1]
    if int(day) > last:
        return f"{_MONTHS[month - 1]} {year} has {last} days"
    return None


def parse_date(arg: Arg | str, tag: str | None = None) -> datetime.date:
    """A search date: ``1-Feb-1994`` (atom or quoted)."""
    text = arg if isinstance(arg, str) else astring(arg, tag)
    match = _DATE.fullmatch(text)
    month = _MONTH_NUMBER.get(match.group(2).upper()) if match else None
    if match is None or month is None:
        raise ImapSyntaxError(f"invalid date {text!r}: expected like 1-Feb-1994", tag)
    day, _, year = match.groups()
    problem = _day_problem(year, month, day)
    if problem is not None:
        raise ImapSyntaxError(f"invalid date {text!r}: {problem}", tag)
    return datetime.date(int(year), month, int(day))


def parse_date_time(arg: Arg | str, tag: str | None = None) -> datetime.datetime:
    """An APPEND date-time: ``"17-Jul-1996 02:44:25 -0700"`` (aware). A
    time or zone out of range is an error saying which (RFC 3501 has no
    leap second or hour 24, and a zone's minutes are 00-59)."""
    text = arg if isinstance(arg, str) else astring(arg, tag)
    match = _DATE_TIME.fullmatch(text)
    month = _MONTH_NUMBER.get(match.group(2).upper()) if match else None
    if match is None or month is None:
        raise ImapSyntaxError(
            f'invalid date-time {text!r}: expected like "17-Jul-1996 02:44:25 -0700"',
            tag,
        )
    day, _, year, hour, minute, second, sign, zone_h, zone_m = match.groups()
    problem = _day_problem(year, month, day.strip())
    for name, value, top in (("hour", hour, 23), ("minute", minute, 59)):
        if problem is None and int(value) > top:
            problem = f"{name} {value} is out of range (00-{top})"
    if problem is None and int(second) > 59:
        problem = f"second {second} is out of range (00-59)"
    zone = f"{sign}{zone_h}{zone_m}"
    if problem is None and int(zone_m) > 59:
        problem = f"zone {zone}: its minutes are 00-59"
    if problem is None and int(zone_h) > 23:
        problem = f"zone {zone} is out of range (at most 2359)"
    if problem is not None:
        raise ImapSyntaxError(f"invalid date-time {text!r}: {problem}", tag)
    offset = datetime.timedelta(hours=int(zone_h), minutes=int(zone_m))
    return datetime.datetime(
        int(year),
        month,
        int(day),
        int(hour),
        int(minute),
        int(second),
        tzinfo=datetime.timezone(-offset if sign == "-" else offset),
    )


# -- folder names: modified UTF-7 (RFC 3501 5.1.3) ----------------------------
#
# IMAP names folders in 7-bit ASCII: printable characters stand for
# themselves, "&" is "&-", and every other run of characters is its UTF-16
# in base64 (with "," for "/", no padding) between "&" and "-". Tests and the
# sink's API use the names themselves ("Geschäftlich"); only the wire uses
# this form ("Gesch&AOQ-ftlich").

_BASE64_RUN = re.compile(r"[A-Za-z0-9+,]*")


def encode_folder_name(name: str) -> str:
    """``name`` in modified UTF-7."""
    if name.isascii() and "&" not in name and name.isprintable():
        return name
    out: list[str] = []
    run: list[str] = []

    def shift_out() -> None:
        if run:
            data = "".join(run).encode("utf-16-be", "surrogatepass")
            text = base64.b64encode(data).decode("ascii").rstrip("=")
            out.append("&" + text.replace("/", ",") + "-")
            run.clear()

    for char in name:
        if " " <= char <= "~":
            shift_out()
            out.append("&-" if char == "&" else char)
        else:
            run.append(char)
    shift_out()
    return "".join(out)


def decode_folder_name(text: str) -> str:
    """The folder name that ``text`` (modified UTF-7) spells; ValueError if
    it is not modified UTF-7, as Dovecot refuses it: 8-bit or control
    characters, an ``&`` without its ``-``, base64 that is not UTF-16 text,
    a printable ASCII character encoded, two encoded runs in a row. A
    client that sends such a name would fail against a real server; and a
    folder must have one name on the wire, not several."""
    if not all(" " <= char <= "~" for char in text):
        if text.isascii() or any("\udc80" <= char <= "\udcff" for char in text):
            hint = ""  # control characters, or bytes that were not UTF-8
        else:
            hint = f", {encode_folder_name(text)!r} for this one"
        raise ValueError(
            f"{text!a} is not modified UTF-7: folder names are printable "
            f"7-bit text on the wire (RFC 3501 5.1.3){hint}"
        )
    out: list[str] = []
    position = 0
    run_ended = -1  # where the last base64 run ended: another may not start there
    while True:
        shift = text.find("&", position)
        if shift < 0:
            out.append(text[position:])
            return "".join(out)
        out.append(text[position:shift])
        end = text.find("-", shift + 1)
        if end < 0:
            raise ValueError(f"{text!r} is not modified UTF-7: an '&' has no '-'")
        run = text[shift + 1 : end]
        position = end + 1
        if not run:
            out.append("&")
            continue
        out.append(_decoded_run(run, text, adjacent=shift == run_ended))
        run_ended = position


def _decoded_run(run: str, text: str, adjacent: bool) -> str:
    """The characters a base64 run of a folder name spells."""
    why = None
    if adjacent:
        why = "two encoded runs in a row"
    elif not _BASE64_RUN.fullmatch(run) or len(run) % 4 == 1:
        why = f"&{run}- is not base64"
    else:
        data = base64.b64decode(run.replace(",", "/") + "=" * (-len(run) % 4))
        try:
            chars = data.decode("utf-16-be")  # strict: no lone surrogates
        except UnicodeDecodeError:
            why = f"&{run}- is not UTF-16 text"
        else:
            if any(" " <= char <= "~" for char in chars):
                why = f"&{run}- encodes a character that stands for itself"
            else:
                return chars
    raise ValueError(f"{text!r} is not modified UTF-7: {why}")


# -- writing responses ------------------------------------------------------

_QUOTABLE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x21\x23-\x5b\x5d-\x7f]*")


def quote(value: bytes | str) -> bytes:
    """An IMAP string: quoted when every byte may be (7-bit, no CR, LF, NUL,
    quote or backslash), a literal otherwise (Dovecot's choice too). A NUL,
    which no literal may hold (RFC 3501's CHAR8), is written U+FFFD, as
    Dovecot writes a header's NUL in ENVELOPE and BODYSTRUCTURE."""
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    if _QUOTABLE.fullmatch(data):
        return b'"' + data + b'"'
    if b"\0" in data:
        data = data.replace(b"\0", NUL_WRITTEN)
    return b"{%d}\r\n" % len(data) + data


#: How a NUL in a header value (ENVELOPE, BODYSTRUCTURE) is written:
#: U+FFFD, as Dovecot (a body literal's is 0x80: `_imap_fetch._literal`).
NUL_WRITTEN = "\ufffd".encode()


def nstring(value: bytes | str | None) -> bytes:
    """``NIL`` for ``None``, else :func:`quote`."""
    return b"NIL" if value is None else quote(value)


_ATOM_SAFE = re.compile(rb"[\x21\x23-\x24\x26-\x27\x2b-\x5b\x5e-\x7a\x7c-\x7e]+")


def astring_out(value: str) -> bytes:
    """A mailbox name or similar: an atom when it can be one, else a quoted
    string, with a quote or backslash escaped (as Dovecot writes them), else
    a literal."""
    data = value.encode("utf-8", "surrogateescape")
    if _ATOM_SAFE.fullmatch(data) and data.upper() != b"NIL":
        return data
    escaped = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    if _QUOTABLE.fullmatch(data.replace(b"\\", b"").replace(b'"', b"")):
        return b'"' + escaped + b'"'
    return quote(data)


def format_flags(
    flags: Iterable[str], recent: bool = False, keywords: Sequence[str] = ()
) -> bytes:
    """``(\\Answered \\Seen $Label)``: system flags in RFC 3501 order, then
    ``\\Recent`` when asked, then keywords in the order of ``keywords``
    (the folder's, `Folder.keywords`), any others after them sorted."""
    present = set(flags)
    ordered = [flag for flag in SYSTEM_FLAGS if flag in present]
    if recent:
        ordered.append("\\Recent")
    rest = present - set(SYSTEM_FLAGS) - {"\\Recent"}
    if rest:
        listed = [keyword for keyword in keywords if keyword in rest]
        ordered += listed + sorted(rest.difference(listed))
    return ("(" + " ".join(ordered) + ")").encode("utf-8")


def format_date_time(value: datetime.datetime) -> bytes:
    """INTERNALDATE as a quoted string: ``"17-Jul-1996 02:44:25 -0700"``.
    IMAP's zone is hours and minutes: a zone with seconds (local mean time,
    Amsterdam's +00:19:32) shows the instant in UTC."""
    offset = value.utcoffset() or datetime.timedelta()
    if offset % datetime.timedelta(minutes=1):
        value = value.astimezone(datetime.timezone.utc)
        offset = datetime.timedelta()
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    text = (
        f"{value.day:02d}-{_MONTHS[value.month - 1]}-{value.year:04d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d} "
        f"{sign}{minutes // 60:02d}{minutes % 60:02d}"
    )
    return b'"' + text.encode("ascii") + b'"'


def format_fetch(sequence_number: int, items: Iterable[tuple[bytes, bytes]]) -> bytes:
    """``* n FETCH (NAME value ...)`` with its CRLF; values are formatted
    already (literals included)."""
    # One join of the parts: a message's literal is copied once here, not
    # once per concatenation (three times a large message).
    parts = [b"* %d FETCH (" % sequence_number]
    for name, value in items:
        parts += (name, b" ", value, b" ")
    if len(parts) > 1:
        parts.pop()  # the separator after the last value
    parts.append(b")\r\n")
    return b"".join(parts)

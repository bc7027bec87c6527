"""IMAP FETCH over one stored message: the data items of RFC 3501 section
6.4.5 (UID, FLAGS, INTERNALDATE, RFC822.*, BODY[section]<partial>, ENVELOPE,
BODY, BODYSTRUCTURE and the ALL/FAST/FULL macros) and which of them set
``\\Seen``.

Pure functions without sockets, locks or state: the IMAP server (on the sink's
loop thread) calls them with a mailbox entry; tests call them from any thread.

Everything works on the message's raw bytes, never on a re-serialized parse:
a section is a byte range of the stored message. IMAP requires CRLF line
ends, and mail can arrive (or be seeded) with bare LF; like Dovecot, which
stores LF and serves CRLF, every bare LF is served as CRLF, and sizes,
offsets and line counts are those of the served bytes. Messages that already
use CRLF everywhere (all mail received over SMTP) are served as stored,
without a copy. Malformed MIME never raises: the structure is a best effort
in Dovecot's manner (a multipart without a usable boundary is one leaf, parts
nested deeper than 100 are leaves) and every byte stays reachable through
``BODY[]``.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ._imap_syntax import (
    MAX_NUMBER,
    NUL_WRITTEN,
    Arg,
    Atom,
    ImapSyntaxError,
    ParenList,
    ascii_upper,
    format_date_time,
    format_flags,
    nstring,
    quote,
)
from ._mailstore import wire_bytes

# -- what FETCH needs of a mailbox entry -------------------------------------


class RawMessage(Protocol):
    """The stored message: only its bytes matter here."""

    @property
    def raw(self) -> bytes: ...


class MailboxEntry(Protocol):
    """One message in a folder, as the mailbox model stores it."""

    @property
    def uid(self) -> int: ...

    @property
    def flags(self) -> frozenset[str]: ...

    @property
    def internal_date(self) -> datetime.datetime: ...

    @property
    def message(self) -> RawMessage: ...


# -- the served bytes ---------------------------------------------------------


def served_bytes(raw: bytes) -> bytes:
    """The message as IMAP serves it: every bare LF as CRLF (the same object
    when there is none), by the one rule POP3 uses too."""
    return wire_bytes(raw)


def rfc822_size(raw: bytes) -> int:
    """RFC822.SIZE: the size of the served bytes."""
    return len(raw) + _bare_lf_count(raw)


def _bare_lf_count(raw: bytes) -> int:
    # Two counts in C are ten times faster than a look-behind regex.
    return raw.count(b"\n") - raw.count(b"\r\n")


# -- MIME structure as byte ranges --------------------------------------------

#: Parts nested deeper than this are leaves (Dovecot's default limit too).
MAX_NESTING = 100
#: At most this many parts per message; later ones stay inside their parent's
#: body (Dovecot: 10000).
MAX_PARTS = 10_000


@dataclass
class Part:
    """One MIME part: header bytes ``data[start:body_start]`` (with the blank
    line), body ``data[body_start:end]``. ``children`` for a multipart,
    ``message`` for a message/rfc822 part (the encapsulated message)."""

    data: bytes
    start: int
    body_start: int
    end: int
    fields: list[tuple[str, int, int]]  # (lower-case name, line start, end)
    media_type: str
    media_subtype: str
    params: list[tuple[str, str]]
    children: list[Part]
    message: Part | None
    #: A text part without a charset: BODYSTRUCTURE names RFC 2045's
    #: us-ascii, after the parameters written, as Dovecot does.
    default_charset: bool = False
    #: Whether a blank line ends the header (else it runs to the part's end).
    header_ends: bool = True
    #: A multipart's close-delimiter: None when it has none, else whether
    #: its line is the multipart's last with no line break of its own.
    closes_unterminated: bool | None = None

    @property
    def header(self) -> bytes:
        return self.data[self.start : self.body_start]

    @property
    def body(self) -> bytes:
        return self.data[self.body_start : self.end]

    def field(
        self, name: str, *, last: bool = False, bare_cr: bytes = b""
    ) -> bytes | None:
        """The first (or ``last``) field named ``name`` (lower case): its
        value with line breaks dropped (a CR alone replaced by ``bare_cr``)
        and leading blanks stripped; None when absent."""
        values = self.field_values(name, bare_cr=bare_cr)
        if not values:
            return None
        return values[-1] if last else values[0]

    def field_values(self, name: str, *, bare_cr: bytes = b"") -> list[bytes]:
        """Every field named ``name`` (lower case), as :meth:`field`."""
        values = []
        for field_name, line_start, line_end in self.fields:
            if field_name == name:
                raw = self.data[line_start:line_end]
                value = raw[raw.index(b":") + 1 :].replace(b"\r\n", b"")
                if b"\r" in value:
                    value = value.replace(b"\r", bare_cr)
                values.append(value.replace(b"\n", b"").lstrip(b" \t"))
        return values

    def field_text(self, name: str) -> str | None:
        value = self.field(name)
        return None if value is None else value.decode("utf-8", "surrogateescape")

    def parts(self) -> list[Part]:
        """The numbered sub-parts (RFC 3501 section 6.4.5): a multipart's
        children; for a message/rfc822 part, its message's parts (the
        message itself when not multipart); a leaf is its own part 1."""
        if self.message is not None:
            return self.message.children or [self.message]
        return self.children or [self]


def _transfer_encoding(part: Part) -> str:
    """The part's Content-Transfer-Encoding without its comments (RFC 2045
    allows them), as Dovecot gives it: "base64 (comment)" left a client no
    decoder it knew. "7bit" when it has none."""
    value = part.field_text("content-transfer-encoding") or ""
    depth = 0
    kept = []
    escaped = False
    for character in value:
        if escaped:  # a quoted-pair in a comment: "\)" does not end it
            escaped = False
        elif character == "\\" and depth:
            escaped = True
        elif character == "(":
            depth += 1
        elif character == ")" and depth:
            depth -= 1
        elif not depth:
            kept.append(character)
    return "".join(kept).strip() or "7bit"


def parse_structure(data: bytes) -> Part:
    """The MIME tree of served bytes (see :func:`served_bytes`)."""
    budget = [MAX_PARTS]
    return _parse_part(
        data, 0, len(data), ("text", "plain"), depth=0, budget=budget, splits={}
    )


_MESSAGE = ("rfc822", "global")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def _body_start(data: bytes, start: int, end: int) -> tuple[int, int, bool]:
    """Where the header of the part at ``start`` ends (after its last
    line's line break), where its body starts, and whether a blank line
    ends the header (else it runs to ``end``)."""
    if data.startswith(b"\r\n", start, end) or data.startswith(b"\n", start, end):
        return start, start + (2 if data[start] == 0x0D else 1), True
    match = _HEADER_END.search(data, start, end)
    if match is None:
        return end, end, False
    return match.start() + (2 if data[match.start()] == 0x0D else 1), match.end(), True


def _parse_part(
    data: bytes,
    start: int,
    end: int,
    default: tuple[str, str],
    *,
    depth: int,
    budget: list[int],
    splits: _Splits,
) -> Part:
    budget[0] -= 1
    header_end, body_start, header_ends = _body_start(data, start, end)
    fields = _header_fields(data, start, header_end)
    part = Part(data, start, body_start, end, fields, "", "", [], [], None)
    part.header_ends = header_ends
    content_type = part.field_text("content-type")
    parsed = _parse_content_type(content_type) if content_type is not None else None
    if content_type is None:
        part.media_type, part.media_subtype = default
    elif parsed is None:  # unreadable: empty type and subtype, as Dovecot
        part.media_type, part.media_subtype = "", ""
    else:
        part.media_type, part.media_subtype, part.params = parsed
    if part.media_type.lower() == "text" and not any(
        name.lower() == "charset" for name, _ in part.params
    ):
        part.default_charset = True
    kind = part.media_type.lower()
    subtype = part.media_subtype.lower()
    if depth >= MAX_NESTING - 1 or budget[0] <= 0:
        if kind == "multipart" or (kind == "message" and subtype in _MESSAGE):
            # Too deep to open: an opaque leaf, as Dovecot shows it.
            part.media_type, part.media_subtype, part.params = (
                "application",
                "octet-stream",
                [],
            )
        return part
    if kind == "multipart":
        boundary = next(
            (value for name, value in part.params if name.lower() == "boundary"), ""
        )
        if boundary:
            # RFC 2046: parts of a digest default to message/rfc822.
            child_default = (
                ("message", "rfc822") if subtype == "digest" else ("text", "plain")
            )
            ranges, part.closes_unterminated, _ = _split_multipart(
                data,
                body_start,
                end,
                boundary.encode("utf-8", "surrogateescape"),
                depth=depth,
                splits=splits,
            )
            for child_start, child_end, crlf_end in ranges:
                if budget[0] <= 0:
                    break
                child = _parse_part(
                    data,
                    child_start,
                    child_end,
                    child_default,
                    depth=depth + 1,
                    budget=budget,
                    splits=splits,
                )
                for ending in _ending_at_delimiter(child):
                    ending.end = crlf_end
                part.children.append(child)
        if not part.children:
            # No usable boundary: one empty text/plain part at the end, as
            # Dovecot shows it; the bytes stay in BODY[TEXT], and the part
            # holding it ends before the next delimiter's line break.
            if not boundary or part.closes_unterminated is None:
                # A close with no part before it keeps what the split found:
                # its line, run to the end, takes the next delimiter's CRLF.
                part.closes_unterminated = False
            part.children.append(
                _parse_part(
                    data,
                    end,
                    end,
                    ("text", "plain"),
                    depth=depth + 1,
                    budget=budget,
                    splits=splits,
                )
            )
    elif kind == "message" and subtype in _MESSAGE:
        encoding = _transfer_encoding(part)
        # A message/rfc822 part is a message whatever its transfer encoding
        # (RFC 2046 allows none but 7bit, 8bit and binary; mail has base64),
        # read from its bytes as they are, as Dovecot reads it: BODYSTRUCTURE
        # has no form for message/rfc822 without an envelope and a body.
        if subtype == "rfc822" or encoding.lower() in ("7bit", "8bit", "binary"):
            part.message = _parse_part(
                data,
                body_start,
                end,
                ("text", "plain"),
                depth=depth + 1,
                budget=budget,
                splits=splits,
            )
    return part


def _ending_at_delimiter(child: Part) -> list[Part]:
    """The parts that end after the CRLF before the delimiter that follows
    ``child`` (a multipart's part), as Dovecot counts them: a part holding
    a multipart whose close-delimiter line has no line break of its own
    (with a blank line or an epilogue after it, the part ends before that
    CRLF, as RFC 2046 5.1.1 has it); a message/rfc822 part whose message's
    header has no blank line, the header running into the delimiter (not
    that message: its body stays empty); and the message/rfc822 parts and
    messages that hold either."""
    chain: list[Part] = []
    part = child
    while part.message is not None:
        chain.append(part)
        part = part.message
    if part.children:
        if part.closes_unterminated is None:  # unclosed: as its last part
            last = part.children[-1]
            inner = _ending_at_delimiter(last)
            if inner or not last.header_ends:
                return [*chain, part, *inner]
            return []
        return [*chain, part] if part.closes_unterminated else []
    if not part.header_ends:
        return chain
    return []


def _header_fields(data: bytes, start: int, end: int) -> list[tuple[str, int, int]]:
    fields: list[tuple[str, int, int]] = []
    pos = start
    while pos < end:
        line_end = data.find(b"\n", pos, end)
        line_end = end if line_end < 0 else line_end + 1
        first = data[pos]
        if first in (0x20, 0x09) and fields:
            name, field_start, _ = fields[-1]
            fields[-1] = (name, field_start, line_end)
        else:
            colon = data.find(b":", pos, line_end)
            if colon > pos:
                name = data[pos:colon].rstrip(b" \t").decode("latin-1").lower()
                fields.append((name, pos, line_end))
            else:  # a line that is no field (Dovecot skips it too)
                fields.append(("", pos, line_end))
        pos = line_end
    return fields


#: `_split_multipart`'s answers in one parse, by (start, boundary): where
#: a multipart on the same boundary as its parent was split to find the
#: parent's next delimiter, and split again when it is parsed itself.
_Splits = dict[tuple[int, bytes], tuple[list[tuple[int, int, int]], "int | None", int]]


def _split_multipart(
    data: bytes,
    start: int,
    end: int,
    boundary: bytes,
    *,
    depth: int,
    splits: _Splits,
) -> tuple[list[tuple[int, int, int]], bool | None, int]:
    """Byte ranges of a multipart's parts: start, end, and end with the CRLF
    before the delimiter (which belongs to the delimiter). Without a closing
    delimiter the last part ends where the multipart does. And, with a
    close-delimiter, whether its line runs to the multipart's end with no
    line break (None without one); and where the close-delimiter's line
    ends (``end`` without one).

    A part that is itself a multipart on the same boundary (Outlook
    Express for Mac wrote them; so does some malware) takes the delimiter
    lines until its own close-delimiter: as Dovecot reads them, a line
    belongs to the innermost multipart still open. Split on the outer
    boundary alone, the inner close ended the outer multipart, and the
    attachment after it was in no part. Each such split is done once
    (``splits``): done again at every level, a message nested a hundred
    levels deep over many parts took seconds."""
    known = splits.get((start, boundary))
    if known is not None:
        ranges, close_at, until = known
        if close_at is not None and close_at <= end:
            line_end = data.find(b"\n", close_at, end)
            return ranges, line_end < 0, end if line_end < 0 else line_end + 1
        if close_at is None and until == end:
            return ranges, None, end
    delimiter = b"--" + boundary
    ranges = []
    current: int | None = None
    pos = start
    while True:
        found = data.find(delimiter, pos, end)
        if found < 0:
            break
        pos = found + len(delimiter)
        if found != start and data[found - 1] != 0x0A:
            continue
        line_end = data.find(b"\n", pos, end)
        next_start = end if line_end < 0 else line_end + 1
        closing = data.startswith(b"--", pos)
        if not closing and data[pos:next_start].strip(b" \t\r\n"):
            continue  # "--b" is not "--bx": another boundary's line
        if current is not None:
            part_end = found
            if part_end > current and data[part_end - 1] == 0x0A:
                part_end -= 1
                if part_end > current and data[part_end - 1] == 0x0D:
                    part_end -= 1
            ranges.append((current, part_end, found))
        if closing:
            splits[start, boundary] = (ranges, pos, end)
            return ranges, line_end < 0, next_start
        current = next_start
        pos = next_start
        body = (
            _nested_body(data, pos, end, boundary)
            if depth + 1 < MAX_NESTING - 1
            else None
        )
        if body is not None:
            # Past its parts: the delimiter after its close is this one's.
            pos = _split_multipart(
                data, body, end, boundary, depth=depth + 1, splits=splits
            )[2]
    if current is not None:
        ranges.append((current, end, end))
    splits[start, boundary] = (ranges, None, end)
    return ranges, None, end


def _nested_body(data: bytes, start: int, end: int, boundary: bytes) -> int | None:
    """Where the body of the part at ``start`` begins, if the part is a
    multipart on ``boundary`` (read as `_parse_part` reads it) with a body
    before the next delimiter line; None otherwise."""
    if data.startswith(b"--" + boundary, start, end):
        return None  # an empty part: the delimiter line is the next one's
    # Its header ends before the next delimiter line, if not before: the
    # search stops there, so a multipart of many parts is read once.
    limit = data.find(b"\n--" + boundary, start, end)
    limit = end if limit < 0 else limit + 1
    header_end, body_start, header_ends = _body_start(data, start, limit)
    if not header_ends and limit < end:
        return None  # no body before the delimiter: it has no parts
    if data.find(boundary, start, header_end) < 0:
        return None  # the usual case, answered without parsing
    fields = _header_fields(data, start, header_end)
    head = Part(data, start, header_end, header_end, fields, "", "", [], [], None)
    content_type = head.field_text("content-type")
    parsed = _parse_content_type(content_type) if content_type is not None else None
    if parsed is None or parsed[0].lower() != "multipart":
        return None
    own = next((value for name, value in parsed[2] if name.lower() == "boundary"), "")
    return body_start if own.encode("utf-8", "surrogateescape") == boundary else None


# -- structured header fields -------------------------------------------------

_TOKEN = re.compile(r"[^\x00-\x20()<>@,;:\\\"/\[\]?=\x7f]+")


def _parse_content_type(value: str) -> tuple[str, str, list[tuple[str, str]]] | None:
    value = _strip_comments(value)
    match = re.match(
        r"\s*(" + _TOKEN.pattern + r")\s*(?:/\s*(" + _TOKEN.pattern + "))?", value
    )
    if match is None:
        return None
    rest = value[match.end() :]
    if not match.group(2):
        if "/" in value or rest.strip():
            # No subtype and more after it ("text; charset=us-ascii",
            # "text/"): unreadable, as Dovecot takes it (empty type and
            # subtype, no parameters).
            return None
        return match.group(1), "", []  # a type alone, kept as Dovecot keeps it
    return match.group(1), match.group(2), _parse_params(rest)


def _parse_disposition(value: str) -> tuple[str, list[tuple[str, str]]] | None:
    value = _strip_comments(value)
    match = re.match(r"\s*(" + _TOKEN.pattern + ")", value)
    if match is None:
        if value.lstrip().startswith(";"):
            # "; filename=x": no type, but a file name that Dovecot keeps
            # (with "" as the type): NIL lost it.
            return "", _parse_params(value)
        return None
    return match.group(1), _parse_params(value[match.end() :])


_PARAM = re.compile(
    r"\s*;\s*("
    + _TOKEN.pattern
    # A value that starts with "=" is taken to the next ";" or blank: some
    # mailers write an encoded word unquoted (name==?UTF-8?B?...?=), which
    # no token holds, and Dovecot keeps it so (its clients decode it).
    + r')\s*=\s*("(?:[^"\\]|\\.)*"?|=[^;\s]*|'
    + _TOKEN.pattern
    + ")?"
)


def _parse_params(rest: str) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    pos = 0
    while True:
        match = _PARAM.match(rest, pos)
        if match is None:
            next_semicolon = rest.find(";", pos + 1)
            if next_semicolon < 0:
                return params
            pos = next_semicolon
            continue
        name, value = match.group(1), match.group(2) or ""
        pos = match.end()
        if value.startswith('"'):
            if _CLOSED_QUOTE.fullmatch(value) is None:
                # A quote never closed (it took the folded header after
                # it): the parameter is left out, as Dovecot leaves it.
                continue
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        elif name.lower() == "boundary":
            # Unquoted, to the next ";" or blank: a mailer's
            # boundary=----=_Part_1, cut at its "=", made no line a
            # delimiter (more after the boundary), and the whole content
            # one empty part. Python's email package (and so Message) reads
            # it so; Dovecot cuts it too, but finds the parts by the cut
            # prefix. At a blank ("abc def") it ends, as Dovecot's does.
            start = match.start(2) if match.group(2) is not None else pos
            whole = re.match(r"[^;\s]*", rest[start:])
            assert whole is not None  # matches the empty string at least
            value, pos = whole.group(), start + whole.end()
        params.append((name, value))


_CLOSED_QUOTE = re.compile(r'"(?:[^"\\]|\\.)*"')


def _strip_comments(value: str) -> str:
    """``value`` without RFC 5322 comments (quoted strings kept)."""
    if "(" not in value:
        return value
    out: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    for char in value:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(char)
            continue
        if char == "\\":
            escaped = True
            if depth == 0:
                out.append(char)
        elif quoted:
            out.append(char)
            quoted = char != '"'
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth == 0:
            out.append(char)
            quoted = char == '"'
    return "".join(out)


# -- addresses (ENVELOPE) -----------------------------------------------------

_ADDRESS_TOKEN = re.compile(
    # A domain literal is one token: the colons of [IPv6:::1] start no group.
    # A CR or LF is a blank too (a bare CR, a line end left in the value):
    # inside a word it glued the next header's name into the address.
    r'(?P<space>[ \t\r\n]+)|(?P<quoted>"(?:[^"\\]|\\.)*"?)'
    r"|(?P<literal>\[(?:[^\[\]\\]|\\.)*\])|(?P<special>[<>@,;:.\[\]])"
    r'|(?P<atom>[^ \t\r\n"()<>@,;:.\[\]\\]+|\\.?)'
)

Address = tuple[bytes | None, bytes | None, bytes | None, bytes | None]


def _tokens(value: str) -> tuple[list[tuple[str, str, int]], list[str]]:
    """Address tokens (kind, text, position) and the comments' texts."""
    tokens: list[tuple[str, str, int]] = []
    comments: list[str] = []
    pos = 0
    while pos < len(value):
        if value[pos] == "(":
            depth = 0
            start = pos
            while pos < len(value):
                char = value[pos]
                if char == "\\":
                    pos += 1
                elif char == "(":
                    depth += 1
                elif char == ")":
                    depth -= 1
                    if depth == 0:
                        break
                pos += 1
            comments.append(value[start + 1 : pos].strip())
            pos += 1
            continue
        if value[pos] == ")":
            pos += 1
            continue
        match = _ADDRESS_TOKEN.match(value, pos)
        assert match is not None  # the pattern matches any character
        kind = match.lastgroup or "atom"
        if kind != "space":
            tokens.append((kind, match.group(), pos))
        pos = match.end()
    return tokens, comments


def _unquote(text: str) -> str:
    if text.startswith('"'):
        text = text[1:].removesuffix('"')
        return re.sub(r"\\(.)", r"\1", text)
    return text


def _phrase(tokens: list[tuple[str, str, int]], value: str) -> str:
    """A display name as written, quotes removed."""
    if not tokens:
        return ""
    if len(tokens) == 1:
        return _unquote(tokens[0][1])
    words: list[str] = []
    for index, (kind, text, pos) in enumerate(tokens):
        if index and pos > tokens[index - 1][2] + len(tokens[index - 1][1]):
            words.append(" ")
        words.append(_unquote(text) if kind == "quoted" else text)
    return "".join(words).strip()


def _encode(text: str | None) -> bytes | None:
    return None if text is None else text.encode("utf-8", "surrogateescape")


def _addr_spec(
    tokens: list[tuple[str, str, int]],
) -> tuple[str | None, str | None, str, bool]:
    """(route, local part, domain, junk) of the tokens inside or without
    <>; the local part None when none is written (``""`` is one: empty);
    junk: whether tokens follow the domain ("a@x.example extra")."""
    route = None
    colon = next(
        (
            i
            for i, token in enumerate(tokens)
            if token[1] == ":" and tokens[0][1] == "@"
        ),
        None,
    )
    if colon is not None:
        route = "".join(text for _, text, _ in tokens[:colon])
        tokens = tokens[colon + 1 :]
    # The first "@": a local part holds none unquoted, and what follows the
    # domain ("a@x.test\rTo: b@y.test", a bare CR) is no part of it.
    at = next((i for i, token in enumerate(tokens) if token[1] == "@"), None)
    if at is None:
        return route, "".join(text for _, text, _ in tokens) or None, "", False
    # A quoted local part's value, as Dovecot gives it: "john doe" is
    # john doe, "x.y" is x.y (the quotes are the header's syntax).
    local = (
        "".join(
            _unquote(text) if kind == "quoted" else text
            for kind, text, _ in tokens[:at]
        )
        if at
        else None
    )
    domain, used = _domain(tokens[at + 1 :])
    return route, local, domain, at + 1 + used < len(tokens)


def _domain(tokens: list[tuple[str, str, int]]) -> tuple[str, int]:
    """The domain at the start of ``tokens``: words (or a literal) with
    dots between, as Dovecot reads it, and how many tokens it took. It ends
    at a word that follows a word, or at a special: "b@example.com extra"
    gave "example.comextra", "a@example.com;" "example.com;", a domain in
    no header."""
    parts: list[str] = []
    after_word = False
    for kind, text, _ in tokens:
        if text == ".":
            after_word = False
        elif kind in ("atom", "literal", "quoted") and not after_word:
            after_word = True
        else:
            break
        parts.append(text)
    return "".join(parts), len(parts)


def parse_addresses(value: str) -> list[Address]:
    """RFC 3501 address structures for an address header: group syntax as
    ``(NIL NIL "name" NIL)`` ... ``(NIL NIL NIL NIL)``; a missing local part
    or domain is filled as Dovecot does (``MISSING_MAILBOX``,
    ``MISSING_DOMAIN``) so it cannot look like group syntax."""
    tokens, _ = _tokens(value)
    result: list[Address] = []
    phrase: list[tuple[str, str, int]] = []
    angle: list[tuple[str, str, int]] = []
    in_angle = had_angle = in_group = gave_up = trailing = False
    start = 0

    def flush(end: int) -> None:
        nonlocal phrase, angle, had_angle, gave_up, trailing
        # Text after an address (after its <...>, or after its domain) is
        # where Dovecot stops reading the header: the addresses after it
        # are left out ("a@x.example\rTo: b@y, c@z", a bare CR, brought
        # in c@z).
        if had_angle and not any(text == "@" for _, text, _ in phrase):
            name = _phrase(phrase, value)
            route, local, domain, junk = _addr_spec(angle)
            gave_up = trailing
        elif phrase:
            # No display name holds an "@" (a phrase is words and dots):
            # "alice@example.com <bob@example.com>" is alice's address and
            # text after it, where Dovecot stops reading the header (the
            # angle part and the addresses after it are left out).
            _, comments = _tokens(value[start:end])
            name = comments[-1] if comments else ""
            route, local, domain, junk = _addr_spec(phrase)
            gave_up = had_angle or junk
        else:
            phrase, angle, had_angle = [], [], False
            return
        result.append(
            (
                _encode(name or None),
                _encode(route),
                _encode("MISSING_MAILBOX" if local is None else local),
                _encode(domain or "MISSING_DOMAIN"),
            )
        )
        phrase, angle, had_angle = [], [], False

    for kind, text, pos in tokens:
        if gave_up:
            break
        if in_angle:
            if text == ">":
                in_angle = False
            else:
                angle.append((kind, text, pos))
        elif had_angle and text != "," and not (text == ";" and in_group):
            # After the <...>: "Ann <a@example.com> trailing" named Ann
            # "Ann trailing", and a second <...> took the place of the
            # first; Dovecot leaves what follows out, as here.
            trailing = True
            continue
        elif text == "<":
            in_angle = had_angle = True
        elif (
            text == ":"
            and not in_group
            and phrase
            # "a@example.com\rSubject: x" (a bare CR ended the line) is an
            # address and text, not a group named "a@example.com Subject".
            and not any(token[1] == "@" for token in phrase)
        ):
            result.append((None, None, _encode(_phrase(phrase, value)), None))
            phrase = []
            in_group = True
            start = pos + 1
        elif text == ",":
            flush(pos)
            start = pos + 1
        elif text == ";" and in_group:
            flush(pos)
            result.append((None, None, None, None))
            in_group = False
            start = pos + 1
        elif text != ">":
            phrase.append((kind, text, pos))
    if not gave_up:
        flush(len(value))
    if in_group:
        result.append((None, None, None, None))
    return result


def human_string(value: bytes | str | None) -> bytes:
    """A string for people (subjects, display names) as Dovecot writes it:
    LF dropped, CR and tabs as spaces, runs of spaces as one, trimmed, NUL as
    0x80; a literal whenever that changed anything."""
    if value is None:
        return b"NIL"
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    clean = re.sub(
        rb" {2,}",
        b" ",
        data.replace(b"\n", b"").replace(b"\r", b" ").replace(b"\t", b" "),
    ).strip(b" ")
    clean = clean.replace(b"\0", NUL_WRITTEN)
    if clean == data or not clean:
        return quote(clean)
    return b"{%d}\r\n" % len(clean) + clean


def _nstring_nolf(value: bytes | None) -> bytes:
    if value is None or (b"\r" not in value and b"\n" not in value):
        return nstring(value)
    # A literal, as Dovecot writes a value it changed (no NUL: see quote()).
    clean = value.replace(b"\r", b"").replace(b"\n", b"").replace(b"\0", NUL_WRITTEN)
    return b"{%d}\r\n" % len(clean) + clean


def _format_addresses(values: list[str]) -> bytes:
    addresses = [address for value in values for address in parse_addresses(value)]
    if not addresses:
        return b"NIL"
    return (
        b"("
        + b"".join(
            b"("
            + human_string(address[0])
            + b" "
            + b" ".join(nstring(item) for item in address[1:])
            + b")"
            for address in addresses
        )
        + b")"
    )


def envelope(part: Part) -> bytes:
    """The ENVELOPE of a message (the top one or a message/rfc822 part's).

    As Dovecot: string fields take the last occurrence of their header,
    address fields all occurrences."""

    def addresses(name: str) -> list[str]:
        # A CR alone separates words, as Dovecot reads it ("Ann\rLee").
        return [
            value.decode("utf-8", "surrogateescape")
            for value in part.field_values(name, bare_cr=b" ")
        ]

    from_ = addresses("from")
    sender = addresses("sender")
    reply_to = addresses("reply-to")
    # RFC 3501: an absent or empty Sender or Reply-To takes From's value.
    if not any(value.strip() for value in sender):
        sender = from_
    if not any(value.strip() for value in reply_to):
        reply_to = from_
    items = [
        _nstring_nolf(part.field("date", last=True)),
        human_string(part.field("subject", last=True, bare_cr=b"\r")),
        _format_addresses(from_),
        _format_addresses(sender),
        _format_addresses(reply_to),
        _format_addresses(addresses("to")),
        _format_addresses(addresses("cc")),
        _format_addresses(addresses("bcc")),
        _nstring_nolf(part.field("in-reply-to", last=True)),
        _nstring_nolf(part.field("message-id", last=True)),
    ]
    return b"(" + b" ".join(items) + b")"


# -- BODY and BODYSTRUCTURE ---------------------------------------------------


#: An RFC 2231 parameter name: ``name*`` (one extended section), ``name*0``
#: or ``name*0*`` (numbered sections, extended with the star).
_SECTION_NAME = re.compile(r"(.+?)\*([0-9]{1,5})?(\*?)")


def _params(params: list[tuple[str, str]], default_charset: bool = False) -> bytes:
    """A body-fld-param as Dovecot gives it: the plain parameters as
    written, then the RFC 2231 ones by name, each one's sections put in
    order and joined (``name*0*``, ``name*1*`` become one ``name*``); then
    ``charset us-ascii`` for a text part without one (``default_charset``).

    Sections that cannot be joined (one missing or given twice, as in
    ``name*=b; name*0=a``, where ``name*`` is section 0 too) are listed
    one by one, ``name*0`` and ``name*0*``, in order."""
    items: list[tuple[str, str]] = []
    sections: dict[str, list[tuple[int, bool, str, str]]] = {}
    for name, value in params:
        match = _SECTION_NAME.fullmatch(name)
        if match is None:
            items.append((name, value))
            continue
        base, number, star = match.groups()
        sections.setdefault(base.lower(), []).append(
            (
                0 if number is None else int(number),
                number is None or bool(star),
                base,
                value,
            )
        )
    for key in sorted(sections):
        group = sorted(sections[key], key=lambda section: section[0])  # stable
        if [section[0] for section in group] != list(range(len(group))):
            items += [
                (f"{base}*{number}" + ("*" if extended else ""), value)
                for number, extended, base, value in group
            ]
            continue
        base = group[0][2]
        if any(extended for _, extended, _, _ in group):
            # One extended value: a "%" of the plain sections escaped into
            # it (only that, as Dovecot), and no charset or language when
            # the first section is plain.
            joined = "".join(
                value if extended else value.replace("%", "%25")
                for _, extended, _, value in group
            )
            items.append((base + "*", ("" if group[0][1] else "''") + joined))
        else:
            items.append((base, "".join(value for _, _, _, value in group)))
    if default_charset and not any(name.lower() == "charset" for name, _ in items):
        items.append(("charset", "us-ascii"))
    if not items:
        return b"NIL"
    return b"(" + b" ".join(quote(n) + b" " + quote(v) for n, v in items) + b")"


def _disposition(part: Part) -> bytes:
    value = part.field_text("content-disposition")
    parsed = _parse_disposition(value) if value is not None else None
    if parsed is None:
        return b"NIL"
    kind, params = parsed
    return b"(" + quote(kind) + b" " + _params(params) + b")"


def _language(part: Part) -> bytes:
    value = part.field_text("content-language")
    if value is None:
        return b"NIL"
    tags = [tag for tag in re.split(r"[\s,]+", _strip_comments(value)) if tag]
    if not tags:
        return b"NIL"
    # A list for one language too, as Dovecot writes it (RFC 3501 allows a
    # bare string): a client that indexed the list got "f" of "fr".
    return b"(" + b" ".join(quote(tag) for tag in tags) + b")"


def body_structure(part: Part, extensible: bool = True) -> bytes:
    """BODYSTRUCTURE (``extensible``) or BODY of a part and everything in it."""
    if part.children:
        items = [b"".join(body_structure(child, extensible) for child in part.children)]
        items.append(quote(part.media_subtype))
        if extensible:
            items += [
                _params(part.params),
                _disposition(part),
                _language(part),
                nstring(part.field("content-location")),
            ]
        return b"(" + b" ".join(items) + b")"
    body = part.body
    items = [
        quote(part.media_type),
        quote(part.media_subtype),
        _params(part.params, part.default_charset),
        nstring(part.field("content-id")),
        nstring(part.field("content-description")),
        quote(_transfer_encoding(part)),
        b"%d" % len(body),
    ]
    if part.message is not None:
        items += [
            envelope(part.message),
            body_structure(part.message, extensible),
            b"%d" % body.count(b"\n"),
        ]
    elif part.media_type.lower() == "text":
        items.append(b"%d" % body.count(b"\n"))
    if extensible:
        items += [
            nstring(part.field("content-md5")),
            _disposition(part),
            _language(part),
            nstring(part.field("content-location")),
        ]
    return b"(" + b" ".join(items) + b")"


# -- FETCH items --------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """A body section: part numbers, then what of that part."""

    part: tuple[int, ...]
    #: "", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT" or "MIME".
    text: str
    fields: tuple[str, ...] = ()
    #: Which of ``fields`` came as strings: the response quotes those, as
    #: Dovecot does, so that it names the section as the client did.
    quoted: tuple[bool, ...] = ()

    @property
    def name(self) -> str:
        """As the response names it (``1.HEADER.FIELDS (FROM TO)``)."""
        parts = [".".join(str(n) for n in self.part)] if self.part else []
        if self.text:
            parts.append(self.text)
        spec = ".".join(parts)
        if self.text.startswith("HEADER.FIELDS"):
            quoted = self.quoted or (False,) * len(self.fields)
            names = (
                '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
                if string
                else name
                for name, string in zip(self.fields, quoted, strict=True)
            )
            spec += " (" + " ".join(names) + ")"
        return spec


@dataclass(frozen=True)
class FetchItem:
    """One FETCH data item. ``kind`` is the item's name (``UID``,
    ``BODY[]`` for any body section)."""

    kind: str
    section: Section | None = None
    peek: bool = False
    partial: tuple[int, int] | None = None

    @property
    def sets_seen(self) -> bool:
        """Whether fetching it sets ``\\Seen`` (RFC 3501: BODY[...] without
        .PEEK, RFC822, RFC822.TEXT)."""
        return (self.kind == "BODY[]" and not self.peek) or self.kind in (
            "RFC822",
            "RFC822.TEXT",
        )


_SIMPLE = frozenset(
    {
        "UID",
        "FLAGS",
        "INTERNALDATE",
        "RFC822.SIZE",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.TEXT",
        "ENVELOPE",
        "BODY",
        "BODYSTRUCTURE",
    }
)
_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_BODY_ITEM = re.compile(
    r'BODY(\.PEEK)?\[((?:[^\]"]|"(?:[^"\\]|\\.)*")*)\]'
    r"(?:<([0-9]{1,10})\.([0-9]{1,10})>)?",
    re.IGNORECASE | re.ASCII,  # "HEADER.FIELD\u017f" is no section name
)
_SECTION = re.compile(
    r"((?:[1-9][0-9]{0,8})(?:\.[1-9][0-9]{0,8})*)?\.?"
    r"(HEADER\.FIELDS\.NOT|HEADER\.FIELDS|HEADER|TEXT|MIME)?"
    r"(?:\s+\((.*)\))?",
    re.IGNORECASE | re.DOTALL | re.ASCII,
)
_FIELD_NAME = re.compile(r'("((?:[^"\\]|\\.)*)")|([^\s"()]+)')
# One way to match each character: "(?:[^\s"()]+\s*)*" split a run of name
# characters every way there is when the list did not match (a "(" at its
# end): 2**n steps, a 40-character name hours of the server's time.
_FIELD_LIST = re.compile(r'(?:\s|"(?:[^"\\]|\\.)*"|[^\s"()])*')
_UNESCAPE = re.compile(r"\\(.)")


def parse_fetch_items(
    arg: Arg | Iterable[Arg], tag: str | None = None
) -> list[FetchItem]:
    """The data items of a FETCH: one item or macro, or a parenthesized list
    (or a list of its items, as a test gives them)."""
    if isinstance(arg, Atom) and arg.upper in _MACROS:
        return [FetchItem(name) for name in _MACROS[arg.upper]]
    if isinstance(arg, ParenList):
        args: Iterable[Arg] = arg.items
    elif isinstance(arg, Atom):
        args = (arg,)
    elif isinstance(arg, (list, tuple)):
        args = arg
    else:
        raise ImapSyntaxError("FETCH data items are atoms or a list of atoms", tag)
    items = [_fetch_item(item, tag) for item in args]
    if not items:
        raise ImapSyntaxError("FETCH needs at least one data item", tag)
    # An item such as FLAGS asked twice is answered once, where first asked;
    # a body section asked twice, twice. As Dovecot answers them.
    answered: list[FetchItem] = []
    seen: set[str] = set()
    for item in items:
        if item.kind != "BODY[]":
            if item.kind in seen:
                continue
            seen.add(item.kind)
        answered.append(item)
    return answered


def _fetch_item(arg: Arg, tag: str | None) -> FetchItem:
    if not isinstance(arg, Atom):
        raise ImapSyntaxError("a FETCH data item is an atom", tag)
    upper = arg.upper
    if upper in _SIMPLE:
        return FetchItem(upper)
    match = _BODY_ITEM.fullmatch(arg.value)
    if match is None:
        raise ImapSyntaxError(f"unknown FETCH data item: {arg.value}", tag)
    section = _parse_section(match.group(2), tag)
    partial = None
    if match.group(3) is not None:
        offset, length = int(match.group(3)), int(match.group(4))
        if length == 0:
            raise ImapSyntaxError("a partial of 0 octets is not allowed", tag)
        if max(offset, length) > MAX_NUMBER:
            # IMAP's numbers are 32 bits (RFC 3501 9, number).
            raise ImapSyntaxError(
                f"a partial's numbers are at most {MAX_NUMBER}: <{offset}.{length}>",
                tag,
            )
        partial = (offset, length)
    return FetchItem("BODY[]", section, bool(match.group(1)), partial)


def _parse_section(text: str, tag: str | None) -> Section:
    # No white space around it ([ ] was read as []): Dovecot's BAD too.
    match = _SECTION.fullmatch(text) if text == text.strip() else None
    if match is None or (text.endswith(".") and text):
        raise ImapSyntaxError(f"invalid body section: [{text}]", tag)
    numbers, what, fields = match.groups()
    what = (what or "").upper()
    part = tuple(int(n) for n in numbers.split(".")) if numbers else ()
    if numbers and what and not re.search(r"[0-9]\.[A-Za-z]", text):
        raise ImapSyntaxError(f"invalid body section: [{text}]", tag)
    if what == "MIME" and not part:
        raise ImapSyntaxError("MIME needs a part number: [1.MIME]", tag)
    if what.startswith("HEADER.FIELDS"):
        if fields is None:
            raise ImapSyntaxError(f"{what} needs a list of field names", tag)
        if not _FIELD_LIST.fullmatch(fields):
            # Names are atoms or strings: a parenthesis, or a quote left
            # open, is no name (Dovecot refuses them too).
            raise ImapSyntaxError(f"invalid field names in [{text}]", tag)
        found = _FIELD_NAME.findall(fields)
        if not found:
            raise ImapSyntaxError(f"{what} needs at least one field name", tag)
        if any(not bare.isascii() for _, _, bare in found):
            # Atoms are 7-bit (RFC 3501 9), as everywhere else here; it was
            # taken and echoed back.
            raise ImapSyntaxError(
                f"a field name of {what} has 8-bit text in an atom: send it "
                "quoted or as a literal",
                tag,
            )
        names = tuple(
            ascii_upper(_UNESCAPE.sub(r"\1", quoted) if string else bare)
            for string, quoted, bare in found
        )
        return Section(part, what, names, tuple(bool(string) for string, _, _ in found))
    if fields is not None:
        raise ImapSyntaxError(f"invalid body section: [{text}]", tag)
    return Section(part, what)


def sets_seen(items: Iterable[FetchItem]) -> bool:
    """Whether fetching ``items`` sets ``\\Seen``."""
    return any(item.sets_seen for item in items)


#: The items whose values are short and known without reading the message.
_SHORT = frozenset({"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE"})


def response_order(
    items: Sequence[FetchItem], by_uid: bool
) -> tuple[list[FetchItem], int]:
    """``items`` in the order a FETCH response gives them, and where in it
    the FLAGS go that a FETCH setting ``\\Seen`` adds unasked.

    RFC 3501 leaves the order to the server; this is Dovecot's, which some
    clients rely on (its comment: "especially useful to get UID returned
    first"): for UID FETCH the UID first, asked or not, then UID, FLAGS,
    INTERNALDATE and RFC822.SIZE in the order asked, then the added FLAGS,
    then the rest (ENVELOPE, BODYSTRUCTURE, the literals) in the order
    asked."""
    uid = [FetchItem("UID")] if by_uid else []
    short = [i for i in items if i.kind in _SHORT and not (by_uid and i.kind == "UID")]
    rest = [item for item in items if item.kind not in _SHORT]
    return [*uid, *short, *rest], len(uid) + len(short)


def _find_part(root: Part, numbers: tuple[int, ...]) -> Part | None:
    # As Dovecot: a message that is not multipart is its own part 1, and so
    # is a leaf inside a multipart, once (1.1 is part 1, 1.1.1 is nothing).
    parts = root.children or [root]
    part = root
    for number in numbers:
        if number > len(parts):
            return None
        chosen = parts[number - 1]
        if chosen.children or chosen.message is not None:
            parts = chosen.parts()
        elif chosen is part or part.message is chosen or chosen is root:
            parts = []
        else:
            parts = [chosen]
        part = chosen
    return part


def _header_fields_section(part: Part, names: tuple[str, ...], keep: bool) -> bytes:
    wanted = {name.lower() for name in names}
    # A line that is no field (no name) is never asked for, so only
    # HEADER.FIELDS.NOT keeps it, as Dovecot does.
    lines = [
        part.data[start:end]
        for name, start, end in part.fields
        if (bool(name) and name in wanted) == keep
    ]
    out = b"".join(lines)
    if out and not out.endswith(b"\n"):
        out += b"\r\n"
    return out + b"\r\n"


def section_bytes(root: Part, section: Section) -> bytes:
    """The bytes of a body section; empty when the part does not exist (as
    Dovecot answers)."""
    part = _find_part(root, section.part)
    if part is None:
        return b""
    if section.text == "MIME":
        return part.header
    if section.text == "" and section.part:
        return part.body
    if section.part:
        # HEADER, TEXT and HEADER.FIELDS of a part address its message.
        if part.message is None:
            return b""
        part = part.message
    if section.text == "":
        return part.data[part.start : part.end]
    if section.text == "HEADER":
        return part.header
    if section.text == "TEXT":
        return part.body
    return _header_fields_section(part, section.fields, section.text == "HEADER.FIELDS")


def _literal(data: bytes) -> bytes:
    # IMAP forbids NUL in a literal: served as 0x80, as Dovecot does.
    return b"{%d}\r\n" % len(data) + data.replace(b"\0", b"\x80")


class LastStructure:
    """The MIME tree of the message a session fetched last, kept for its
    next FETCH: a reader that fetches a message's parts one command at a
    time (BODYSTRUCTURE, then each part) had it parsed again each time,
    quadratic in its parts (1,000 parts: 11 s, against Dovecot's 0.0 s),
    on the loop every other client waits for. It keeps the bytes of at
    most two messages (the last fetched, and the last with bare LFs) as
    long as its session lasts."""

    def __init__(self) -> None:
        # Two slots, each by its own key: the bytes served for a message
        # with bare LFs (a new object each time they are made), and the
        # tree of the bytes last parsed.
        self._raw: bytes | None = None
        self._served = b""
        self._data: bytes | None = None
        self._root: Part | None = None

    def served(self, raw: bytes) -> bytes:
        """`served_bytes` of ``raw``, made once while it is the last one
        (a new object each time, it would never find its tree again)."""
        if self._raw is not raw:
            self._raw, self._served = raw, served_bytes(raw)
        return self._served

    def of(self, data: bytes) -> Part:
        if self._data is not data or self._root is None:
            self._data, self._root = data, parse_structure(data)
        return self._root


def fetch_values(
    entry: MailboxEntry,
    items: Iterable[FetchItem],
    *,
    recent: bool = False,
    served: bytes | None = None,
    keywords: Sequence[str] = (),
    limit: int | None = None,
    structures: LastStructure | None = None,
) -> list[tuple[bytes, bytes]]:
    """``(name, value)`` pairs for a ``* n FETCH`` response
    (:func:`~pytest_smtpsink._imap_syntax.format_fetch`), in the order asked.
    The caller sets ``\\Seen`` first when :func:`sets_seen` says so, and adds
    FLAGS (and UID for UID FETCH) when they were not asked. ``served``: the
    message's `served_bytes`, when the caller knows them already;
    ``keywords`` the folder's keywords, in the order FLAGS lists them.
    Past ``limit`` bytes of values, `ResponseTooLarge` is raised as soon as
    the value that passes it is made, not after every value is.
    ``structures``: the session's `LastStructure`, which parses for it."""
    data = served_bytes(entry.message.raw) if served is None else served
    root: Part | None = None
    values: list[tuple[bytes, bytes]] = []
    total = 0
    for item in items:
        # The value made last is counted here, before the next one is made.
        if limit is not None and values:
            total += len(values[-1][1])
            if total > limit:
                raise ResponseTooLarge(limit)
        kind = item.kind
        if kind == "UID":
            values.append((b"UID", b"%d" % entry.uid))
        elif kind == "FLAGS":
            values.append((b"FLAGS", format_flags(entry.flags, recent, keywords)))
        elif kind == "INTERNALDATE":
            values.append((b"INTERNALDATE", format_date_time(entry.internal_date)))
        elif kind == "RFC822.SIZE":
            values.append((b"RFC822.SIZE", b"%d" % len(data)))
        elif kind == "RFC822":
            values.append((b"RFC822", _literal(data)))
        elif kind == "BODY[]" and _whole(item):
            # BODY[] and its partials are the served bytes: no MIME parse
            # (the common case: a client downloading whole messages).
            values.append(_body_value(data, item))
        else:
            if root is None:
                root = (
                    parse_structure(data) if structures is None else structures.of(data)
                )
            if kind == "RFC822.HEADER":
                values.append((b"RFC822.HEADER", _literal(root.header)))
            elif kind == "RFC822.TEXT":
                values.append((b"RFC822.TEXT", _literal(root.body)))
            elif kind == "ENVELOPE":
                values.append((b"ENVELOPE", envelope(root)))
            elif kind in ("BODY", "BODYSTRUCTURE"):
                values.append(
                    (kind.encode(), body_structure(root, kind == "BODYSTRUCTURE"))
                )
            else:
                assert item.section is not None
                values.append(_body_value(root, item))
    if limit is not None and values and total + len(values[-1][1]) > limit:
        raise ResponseTooLarge(limit)
    return values


class ResponseTooLarge(Exception):
    """A FETCH response of one message past the ``limit`` of `fetch_values`."""


def _whole(item: FetchItem) -> bool:
    """Whether ``item`` asks for the whole message (``BODY[]``, partial or
    not)."""
    section = item.section
    return section is not None and not section.part and not section.text


def _body_value(root: Part | bytes, item: FetchItem) -> tuple[bytes, bytes]:
    """A body section's item name and literal; ``root`` is the served bytes
    themselves when the item is `_whole`."""
    assert item.section is not None
    name = b"BODY[" + item.section.name.encode("utf-8", "surrogateescape") + b"]"
    content = root if isinstance(root, bytes) else section_bytes(root, item.section)
    if item.partial is not None:
        offset, length = item.partial
        name += b"<%d>" % offset
        content = content[offset : offset + length]
    return name, _literal(content)

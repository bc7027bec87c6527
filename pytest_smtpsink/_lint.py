"""Message lint: how a message is built, checked over the bytes the sink kept.

`lint` is a pure function of the raw message (plus whether the client used
SMTPUTF8 and when the message arrived). It never raises: a check that trips
over something unforeseen becomes a ``lint-failed`` problem instead. It runs
in the test's thread (`Message.lint`, `Mailbox.assert_clean`, the
``--smtpsink-lint`` teardown check) and never touches the server loop.

The stdlib's compat32 parser gives the MIME tree (it never raises on header
access); the byte-level checks (line lengths, bare CR or LF, 8-bit header
bytes) scan the raw bytes with regular expressions, so that a clean 10 KB
message costs about as much as parsing it.
"""

from __future__ import annotations

import codecs
import dataclasses
import datetime
import difflib
import email
import email.errors
import email.header
import email.utils
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from email.message import Message as Compat32Message
from typing import Literal, Protocol, TypeVar

from ._mime import (
    COMMENT,
    QUOTED,
    encoded_words,
    getaddresses,
    parse_compat32,
    replace_closed,
)
from ._text import join_shortened, meant_choice, printable, shorten, unescape_8bit

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")
_RANK = {"error": 0, "warning": 1, "info": 2}

#: A Date this far after the message arrived is "in the future".
FUTURE_DATE_SLACK = datetime.timedelta(days=1)
#: RFC 5322 section 2.1.1: a line MUST be at most 998 octets, SHOULD be 78.
MAX_LINE = 998
RECOMMENDED_LINE = 78

# RFC 5322 section 3.6: fields that may appear at most once.
_SINGLE = (
    "Date",
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Bcc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Subject",
)
_ADDRESS_NAMES = {
    name.lower(): name for name in ("From", "Sender", "Reply-To", "To", "Cc", "Bcc")
}

_BARE_CR = re.compile(rb"\r(?!\n)")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FIELD_NAME = re.compile(rb"([!-9;-~]+)[ \t]*:")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_BAD_QP = re.compile(r"=(?![0-9A-Fa-f]{2}|[ \t]*\r?\n|[ \t]*$)")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
# RFC 5322 3.6.4: msg-id = "<" dot-atom-text "@" (dot-atom-text /
# no-fold-literal) ">"; RFC 6532 adds UTF-8 to atext and dtext.
_ID_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\x80-\U0010ffff-]+"
_MESSAGE_ID = re.compile(
    rf"\s*<{_ID_ATOM}(?:\.{_ID_ATOM})*@"
    rf"(?:{_ID_ATOM}(?:\.{_ID_ATOM})*|\[[!-Z^-~\x80-\U0010ffff]*\])>\s*"
)
_LOCAL = re.compile(rf'(?:{_ATEXT}+(?:\.{_ATEXT}+)*|"(?:[^"\\\r\n]|\\.)*")')
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})+|\[[^\[\]\\]*\])")
_GROUP_ONLY = re.compile(r"[^:]*:\s*;\s*")
_PAIRED_ANGLES = re.compile(r"[^<>]*(?:<[^<>]*>[^<>]*)*")
# After an '@': the domain as written, up to what ends an address.
_DOMAIN_AS_WRITTEN = re.compile(r"@([^,;<>@]*)")
_SPACED_WORDS = re.compile(rf"{_ATEXT}\s+{_ATEXT}")
# Matched against the text before an '@' reversed: a search for the same
# class anchored at the end would try every start position, each scanning
# to the end (quadratic: a 36 KB display name took 19 s).
_LOCAL_AS_WRITTEN_REVERSED = re.compile(r"[^\s<>,:;]*")
# Two addresses with no comma between them: a word with an '@' after the
# end of another (its domain, or a domain literal's ']'), or any address
# after an angle address's '>'. Spaces inside one domain (j@ex ample.com)
# have no '@' after them: the spaced-domain check's. (A bare address as a
# display name, x@y <x@y>, is one mailbox badly written: `unquoted_at_in_name`.)
_NO_COMMA = re.compile(
    r"(?:@[^\s,;:<>()@\[\]\"]+|\])\s+(?=[^\s,;<>]*@)"
    r"|>\s*(?=[^\s,;<>]*@|[^,;<>@]*<)"
)


#: A part number longer than this is shown cut, with its depth.
_LONGEST_PART = 40


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with how a message is built.

    ``code`` is stable (tests and ignore lists may name it); ``message`` is
    for a person and may be reworded. ``header``, ``part`` (an IMAP-style
    section number such as ``"2.1"``) and ``line`` (1-based, in the raw
    message) say where, when that is known.
    """

    code: str
    severity: Severity
    message: str
    header: str | None = None
    part: str | None = None
    line: int | None = None

    def __post_init__(self) -> None:
        # Header text quoted from the mail, as the stdlib's parser gives it:
        # raw UTF-8 as surrogate escapes ("stra\udcc3\udc9fe.example").
        object.__setattr__(self, "message", unescape_8bit(self.message))

    @property
    def where(self) -> str:
        """``"header Date"``, ``"part 2.1"``, ``"line 12"``, or ``""``."""
        places = []
        if self.header is not None:
            places.append(f"header {self.header}")
        if self.part is not None:
            part = self.part
            if len(part) > _LONGEST_PART:
                # Hundreds of nested levels: "1.1.1.1...1.1 (300 levels)".
                levels = part.count(".") + 1
                part = f"{part[:16]}...{part[-8:]} ({levels} levels)"
            places.append(f"part {part}")
        if self.line is not None:
            places.append(f"line {self.line}")
        return ", ".join(places)

    def __str__(self) -> str:
        # A message may quote the mail (a Content-Type, a DKIM d=): escaped
        # (`printable`), as failure messages and reports print this line.
        where = f" ({self.where})" if self.where else ""
        return printable(f"{self.severity} {self.code}{where}: {self.message}")


def at_least(problems: Iterable[Problem], severity: Severity) -> list[Problem]:
    """The problems that are ``severity`` or worse (error is the worst)."""
    rank = _RANK[severity]
    return [p for p in problems if _RANK[p.severity] <= rank]


#: Every code `lint` gives, for checking ignore lists (the deliverability
#: page's table lists the same, a test checks).
LINT_CODES = frozenset(
    {
        "8bit-in-7bit",
        "8bit-without-8bitmime",
        "8bit-without-charset",
        "alternative-order",
        "attachment-without-filename",
        "bare-cr",
        "bare-lf",
        "base64-line-too-long",
        "boundary-not-found",
        "charset-mismatch",
        "duplicate-header",
        "future-date",
        "html-only",
        "invalid-address",
        "invalid-base64",
        "invalid-boundary",
        "invalid-content-type",
        "invalid-date",
        "invalid-encoded-word",
        "invalid-message-id",
        "invalid-mime-version",
        "invalid-parameter",
        "invalid-quoted-printable",
        "invalid-transfer-encoding",
        "invalid-utf8-header",
        "line-over-78",
        "line-too-long",
        "lint-failed",
        "malformed-header",
        "missing-boundary",
        "missing-closing-boundary",
        "missing-date",
        "missing-from",
        "missing-message-id",
        "missing-mime-version",
        "missing-sender",
        "missing-subject",
        "nul-byte",
        "quoted-printable-line-too-long",
        "raw-8bit-header",
        "text-without-charset",
        "unknown-charset",
        "unparsable",
    }
)


def check_ignore(
    ignore: object,
    name: str = "ignore",
    known: frozenset[str] = LINT_CODES,
    kind: str = "lint code",
    elsewhere: tuple[frozenset[str], str] | None = None,
) -> tuple[str, ...]:
    """``ignore`` as a tuple of codes (a single code may be given as a
    string); a code not in ``known`` is a ValueError, so that a typo does
    not leave a problem unignored without saying why. ``elsewhere``: the
    codes of the other check, and what to say of one given here."""
    __tracebackhide__ = True
    codes = (ignore,) if isinstance(ignore, str) else ignore
    if not isinstance(codes, Iterable) or isinstance(codes, (bytes, bytearray)):
        # Bytes iterate as numbers: "109 is not a lint code" said nothing.
        raise TypeError(f"{name} must be {kind}s (text), got {ignore!r}")
    codes = tuple(codes)
    for code in codes:
        if code not in known:
            close = difflib.get_close_matches(str(code), sorted(known), 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            if elsewhere is not None and code in elsewhere[0]:
                hint = f" ({elsewhere[1]})"
            raise ValueError(
                f"{name}: {code!r} is not a {kind}{hint}; the codes are "
                f"listed in the docs' page 'Checking how mail is built'"
            )
    return codes


def check_severity(severity: object, name: str = "severity") -> Severity:
    __tracebackhide__ = True
    if severity not in _RANK:
        raise ValueError(
            f"{name} must be one of {', '.join(map(repr, SEVERITIES))}, got "
            f"{severity!r}{meant_choice(severity, SEVERITIES)}"
        )
    return severity  # type: ignore[return-value]


def lint(
    raw: bytes,
    *,
    smtputf8: bool = False,
    received_at: datetime.datetime | None = None,
    parsed: Compat32Message | None = None,
    mail_options: Sequence[str] | None = None,
) -> list[Problem]:
    """Every problem found in ``raw``, worst first. Never raises.

    ``smtputf8``: the client used SMTPUTF8, so raw UTF-8 in headers is
    allowed (RFC 6532); `Message.lint` passes True for mail that did not
    come over SMTP, which no SMTPUTF8 could have declared. ``received_at``: when the message arrived, to judge a
    Date in the future (default: now). ``parsed``: the compat32 tree of
    ``raw`` if the caller already has it. ``mail_options``: the parameters
    of the MAIL command that sent it, to judge 8-bit content against
    ``BODY=8BITMIME``; None when it did not come over SMTP (the check is
    skipped).
    """
    problems: list[Problem] = []
    context = _Context(raw, smtputf8, received_at, parsed, mail_options)
    checks = _CHECKS
    try:
        context.tree  # noqa: B018 (parse once, here, to know whether it can be)
    except Exception as error:  # RecursionError on absurd nesting, and the unforeseen
        problems.append(
            Problem(
                "unparsable",
                "error",
                f"Python's email parser gives up on this message "
                f"({type(error).__name__}); only the byte-level checks ran",
            )
        )
        checks = _BYTE_CHECKS
    for check in checks:
        try:
            problems.extend(check(context))
        except Exception as error:  # a check must never take a test down
            problems.append(
                Problem(
                    "lint-failed",
                    "info",
                    f"the {check.__name__.removeprefix('_check_')} check could not "
                    f"finish on this message ({type(error).__name__}); the other "
                    "checks ran",
                )
            )
    problems.sort(key=lambda p: _RANK[p.severity])
    return _fewer_alike(problems)


#: Problems of one code listed one by one; past them, one line counts the
#: rest (300 nested multiparts, each unclosed, made 300 lines).
_MOST_ALIKE = 5


def _fewer_alike(problems: list[Problem]) -> list[Problem]:
    """``problems`` with those past the first `_MOST_ALIKE` of a code and
    severity counted in one problem, in the place of the first left out."""
    seen: dict[tuple[str, str], int] = {}
    for problem in problems:
        key = (problem.code, problem.severity)
        seen[key] = seen.get(key, 0) + 1
    # One left out is listed: a line counting it would say less.
    if all(count <= _MOST_ALIKE + 1 for count in seen.values()):
        return problems
    kept: list[Problem] = []
    shown: dict[tuple[str, str], int] = {}
    for problem in problems:
        key = (problem.code, problem.severity)
        done = shown[key] = shown.get(key, 0) + 1
        if done <= _MOST_ALIKE or seen[key] == _MOST_ALIKE + 1:
            kept.append(problem)
        elif done == _MOST_ALIKE + 1:
            rest = seen[key] - _MOST_ALIKE
            kept.append(
                Problem(
                    problem.code,
                    problem.severity,
                    f"and {rest} more like the above, not listed one by one",
                )
            )
    return kept


class _Context:
    """The message, parsed once and shared by the checks."""

    def __init__(
        self,
        raw: bytes,
        smtputf8: bool,
        received_at: datetime.datetime | None,
        parsed: Compat32Message | None,
        mail_options: Sequence[str] | None = None,
    ) -> None:
        self.raw = raw
        self.smtputf8 = smtputf8
        self.received_at = received_at
        self._parsed = parsed
        self.mail_options = mail_options

    @property
    def tree(self) -> Compat32Message:
        if self._parsed is None:
            self._parsed = parse_compat32(self.raw)
        return self._parsed

    @property
    def head(self) -> bytes:
        end = _HEADER_END.search(self.raw)
        return self.raw if end is None else self.raw[: end.start()]


# -- byte-level checks ----------------------------------------------------------


def _line_number(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, offset) + 1


def _check_lines(ctx: _Context) -> Iterator[Problem]:
    raw = ctx.raw
    # Splitting is C speed; a regex such as [^\r\n]{999} would retry at
    # every byte of a long line.
    lines = raw.split(b"\n")
    if max(map(len, lines), default=0) > RECOMMENDED_LINE:
        longish = [
            number
            for number, line in enumerate(lines, 1)
            if len(line) > RECOMMENDED_LINE
            and len(line) - line.endswith(b"\r") > RECOMMENDED_LINE
        ]
        too_long = [
            number
            for number in longish
            if len(lines[number - 1].rstrip(b"\r")) > MAX_LINE
        ]
        if too_long:
            yield Problem(
                "line-too-long",
                "error",
                f"{_count(too_long, 'line')} longer than {MAX_LINE} bytes (RFC "
                "5322 2.1.1); servers may break or reject them. Use "
                "quoted-printable or base64 for long lines",
                line=too_long[0],
            )
        elif longish:
            yield Problem(
                "line-over-78",
                "info",
                f"{_count(longish, 'line')} longer than {RECOMMENDED_LINE} "
                "bytes, the length RFC 5322 recommends (RFC 6532 counts "
                "UTF-8 in bytes)",
                line=longish[0],
            )
    for pattern, code, what in (
        (_BARE_CR, "bare-cr", "a carriage return (CR) not followed by LF"),
        (_BARE_LF, "bare-lf", "a line feed (LF) without the CR before it"),
    ):
        # Counting is C speed; search only when some line end is bare.
        crlf = raw.count(b"\r\n")
        if raw.count(b"\r" if code == "bare-cr" else b"\n") == crlf:
            continue
        found = pattern.search(raw)
        if found is not None:
            count = sum(1 for _ in pattern.finditer(raw))
            yield Problem(
                code,
                "error",
                f"{count} line end{'s' if count != 1 else ''} with {what}; SMTP "
                "lines end in CRLF, and some servers reject bare line ends (SMTP "
                "smuggling defences)",
                line=_line_number(raw, found.start()),
            )


def _check_nul(ctx: _Context) -> Iterator[Problem]:
    raw = ctx.raw
    if b"\0" not in raw:
        return
    scope = raw
    # Mail put in without SMTP (mail_options None) may be binary as it is;
    # over SMTP only with BODY=BINARYMIME (RFC 3030), which the sink does not
    # offer: a "binary" part sent over DATA exempted nothing.
    options = ctx.mail_options
    binary_allowed = options is None or any(
        option.upper() == "BODY=BINARYMIME" for option in options
    )
    if binary_allowed and any(
        _encoding(str(part.get("Content-Transfer-Encoding", "7bit"))) == "binary"
        for _, part in _parts(ctx.tree)  # iterative, unlike walk(): any depth
    ):
        # Binary content may hold NULs (RFC 2045 2.9, sent with BINARYMIME):
        # only the message's header is judged then.
        scope = ctx.head
    nul = scope.find(b"\0")
    if nul == -1:
        return
    count = scope.count(b"\0")
    yield Problem(
        "nul-byte",
        "error",
        f"{count} NUL byte{'s' if count != 1 else ''}: RFC 5322 allows "
        "none in a header and RFC 2045 none in 7bit or 8bit content (only "
        "in binary content, which SMTP carries only with BINARYMIME); "
        "readers cut the text at it, and servers strip it or refuse the "
        "message",
        line=_line_number(raw, nul),
    )


def _check_header_bytes(ctx: _Context) -> Iterator[Problem]:
    head = ctx.head
    if head.isascii():
        return
    yield from _eight_bit_header_lines(head, ctx.smtputf8)


def _eight_bit_header_lines(
    head: bytes, smtputf8: bool, part: str | None = None
) -> Iterator[Problem]:
    """``raw-8bit-header`` or ``invalid-utf8-header`` for each line of a
    header block (the message's, or a MIME ``part``'s) with 8-bit bytes."""
    name = None
    for number, line in enumerate(head.split(b"\n"), start=1):
        if line[:1] not in (b" ", b"\t"):
            # A line that starts no field (8-bit bytes in the name) belongs
            # to none: naming the field before it sent readers there.
            field = _FIELD_NAME.match(line)
            name = None if field is None else field.group(1).decode("ascii")
        if line.isascii():
            continue
        if not smtputf8:
            yield Problem(
                "raw-8bit-header",
                "error",
                "raw non-ASCII bytes in a header, but the client did not use "
                "SMTPUTF8; encode the text as RFC 2047 encoded words "
                "(=?utf-8?...?=)"
                + (
                    ", or a parameter as RFC 2231 does (filename*=utf-8''...)"
                    if part is not None
                    else ""
                ),
                header=name,
                part=part,
                line=None if part is not None else number,
            )
        else:
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                yield Problem(
                    "invalid-utf8-header",
                    "error",
                    "a header has non-ASCII bytes that are not UTF-8 (RFC 6532 "
                    "allows raw UTF-8 in headers, nothing else; encode other "
                    "text as RFC 2047 encoded words)",
                    header=name,
                    part=part,
                    line=None if part is not None else number,
                )


#: MAIL parameters that let a client send 8-bit content: RFC 6152's
#: BODY=8BITMIME, RFC 3030's BODY=BINARYMIME, and SMTPUTF8 (RFC 6531 has
#: every server offering it also take 8-bit bodies).
_EIGHT_BIT_OPTIONS = frozenset({"BODY=8BITMIME", "BODY=BINARYMIME", "SMTPUTF8"})


# A search in C: a byte-by-byte loop in Python took 2 s on a 20 MB body.
_EIGHT_BIT = re.compile(rb"[\x80-\xff]")


def _check_body_bytes(ctx: _Context) -> Iterator[Problem]:
    if ctx.mail_options is None:
        return  # not sent over SMTP: there was no MAIL command to judge
    end = _HEADER_END.search(ctx.raw)
    if end is None or ctx.raw.isascii():
        return
    body = ctx.raw[end.end() :]
    if body.isascii():
        return
    options = [option.upper() for option in ctx.mail_options]
    if ctx.smtputf8 or _EIGHT_BIT_OPTIONS.intersection(options):
        return
    eight_bit = _EIGHT_BIT.search(body)
    assert eight_bit is not None  # not body.isascii()
    first = eight_bit.start()
    sent = " ".join(ctx.mail_options) or "none"
    yield Problem(
        "8bit-without-8bitmime",
        "warning",
        "the body has 8-bit bytes but the client's MAIL command did not "
        f"declare BODY=8BITMIME (its parameters: {sent}); RFC 6152 allows "
        "8-bit content only so declared, and a strict or 7-bit server "
        "refuses it or strips the 8th bit. Send with "
        "mail_options=['BODY=8BITMIME'] (smtplib's send_message adds it only "
        "for non-ASCII addresses), or encode the body as quoted-printable or "
        "base64",
        line=_line_number(ctx.raw, end.end() + first),
    )


# -- header checks ----------------------------------------------------------------


def _check_headers(ctx: _Context) -> Iterator[Problem]:
    tree = ctx.tree
    separator = tree.get_unixfrom()
    if separator is not None:
        # Python's email package (and mbox readers) take a first line that
        # starts with "From " for an mbox separator and drop it: a "From :
        # ..." header written with a space (RFC 5322's obsolete syntax) is
        # lost, and the checks below would only say there is no From.
        hint = (
            " (a From header with a space before its colon: write 'From:')"
            if separator[5:].lstrip().startswith(":")
            else ""
        )
        yield Problem(
            "malformed-header",
            "error",
            f"the first line {shorten(separator, 60)!r} is not a header: "
            "readers take a line starting with 'From ' for an mbox separator "
            f"and drop it{hint}",
            line=1,
        )
    for match in _PARSER_LINE.finditer(ctx.raw):
        line = match.group(1)
        if not line:
            break  # the end of the header
        if not _PARSED_AS_HEADER.match(line):
            # Python's parser ends the header here (another check says so):
            # a line below it that starts with ":" is body text.
            break
        if line.startswith(b":"):
            # Python's parser takes it and drops it (its header pattern
            # allows an empty name); RFC 5322's field-name is 1*ftext, and a
            # reader that keeps to it ends the header there.
            yield Problem(
                "malformed-header",
                "error",
                f"the header line {shorten(line.decode('ascii', 'replace'), 60)!r} "
                "has no field name (RFC 5322: 'Name: value'): some readers end "
                "the header there, and the headers after it become body text",
                line=_line_number(ctx.raw, match.start()),
            )
    counts: dict[str, int] = {}
    for key in tree:
        counts[key.lower()] = counts.get(key.lower(), 0) + 1
    missing: tuple[tuple[str, str, Severity, str], ...] = (
        (
            "Date",
            "missing-date",
            "error",
            # An error still: whether a server adds one is its setting
            # (Postfix adds none for remote clients by default).
            "RFC 5322 requires it (a submission server may add one, RFC 6409 "
            "8.3: if the application relies on that, ignore='missing-date')",
        ),
        ("From", "missing-from", "error", "RFC 5322 requires it"),
        (
            "Message-ID",
            "missing-message-id",
            "warning",
            "RFC 5322 says it should be there and Gmail rejects bulk mail without one",
        ),
        (
            "Subject",
            "missing-subject",
            "warning",
            "mail without one looks like spam to people and filters",
        ),
    )
    for name, code, severity, why in missing:
        if name.lower() not in counts:
            yield Problem(code, severity, f"no {name} header: {why}", header=name)
    for name in _SINGLE:
        count = counts.get(name.lower(), 0)
        if count > 1:
            yield Problem(
                "duplicate-header",
                "error",
                f"{count} {name} headers; RFC 5322 3.6 allows at most one",
                header=name,
            )
    if "mime-version" not in counts and (
        "content-type" in counts or "content-transfer-encoding" in counts
    ):
        yield Problem(
            "missing-mime-version",
            "warning",
            "Content-Type without MIME-Version: 1.0; readers may ignore the MIME "
            "structure",
            header="MIME-Version",
        )
    version = tree.get("MIME-Version")
    if version is not None:
        text = str(version).strip()
        # RFC 2045 4: comments may stand anywhere in it ("1.(x)0" is 1.0).
        bare = uncommented(text)
        if bare is None or "".join(bare.split()) != "1.0":
            yield Problem(
                "invalid-mime-version",
                "error",
                f"MIME-Version {shorten(text, 60)!r} is not 1.0, the only version "
                "(RFC 2045 4 requires 'MIME-Version: 1.0'); readers may ignore "
                "the MIME structure",
                header="MIME-Version",
            )


def _check_addresses(ctx: _Context) -> Iterator[Problem]:
    for name, value in ctx.tree.raw_items():
        canonical = _ADDRESS_NAMES.get(name.lower())
        if canonical is None:
            continue
        text = unescape_8bit(str(value))  # raw UTF-8 as text, for messages
        if canonical == "Bcc" and not (uncommented(text) or text).strip():
            # RFC 5322 3.6.3: a Bcc with no address says that blind copies
            # were sent, without saying to whom.
            continue
        as_name = unquoted_at_in_name(text)
        if as_name is not None:
            yield Problem(
                "invalid-address",
                "error",
                f"{name} has an address as a display name, not quoted: "
                f"{as_name!r}; RFC 5322 3.4 allows '@' in a display name only "
                "in quotes, readers take it for a second address, and a name "
                "that shows another address than the mailbox's is how spoofed "
                'mail looks (write "name" <address>, or the address alone)',
                header=canonical,
            )
            continue
        broken = _list_structure(text)
        if broken is not None:
            # Readers part such a list each their own way (Python's email
            # package makes an unclosed comment a display name).
            yield Problem(
                "invalid-address",
                "error",
                f"{name} is not a valid address list: {broken} (RFC 5322 3.4)",
                header=canonical,
            )
            continue
        if canonical == "Sender":
            count = len(getaddresses([text]))
            # A ':' outside quotes, angle brackets and domain literals
            # (an IPv6 literal's, a route's are no group's).
            grouped = ":" in _ANGLE_OR_LITERAL.sub(
                "", _blank_quoted(uncommented(text) or text)
            )
            if count > 1 or grouped:
                what = "is a group" if grouped else f"names {count} mailboxes"
                yield Problem(
                    "invalid-address",
                    "error",
                    f"Sender {what}; RFC 5322 3.6.2 allows one mailbox, the one "
                    "responsible for sending the message",
                    header=canonical,
                )
                continue
        if (
            canonical == "From"
            and "Sender" not in ctx.tree
            and _GROUP_ONLY.fullmatch(re.sub(r"\r?\n", "", uncommented(text) or text))
        ):
            # "undisclosed:;" is fine in To; in From (RFC 6854) it names no
            # author, and without a Sender nothing says who sent the message
            # (an empty From, the same fault, is '(empty)' below).
            yield Problem(
                "invalid-address",
                "error",
                f"From is a group with no mailbox ({' '.join(text.split())!r}) "
                "and there is no Sender: nothing names who wrote or sent the "
                "message (RFC 5322 3.6.2 makes From a list of its authors' "
                "mailboxes; RFC 6854 allows a group there for limited uses), "
                "and DMARC needs one From address; write the author's "
                "address, or add a Sender",
                header=canonical,
            )
            continue
        run_on = addresses_without_comma(text)
        if run_on is not None:
            # Readers make one garbled address of them (Python's email
            # package reads "a@x.example b@y.example" as "@y.example"):
            # what they made of it would not say what is wrong.
            yield Problem(
                "invalid-address",
                "error",
                f"{name} has addresses not separated by a comma: "
                f"{run_on!r}; RFC 5322 3.4 separates the addresses "
                "of a list with ','",
                header=canonical,
            )
            continue
        written = " ".join(text.split())
        lone = quoted_without_domain(text)
        if lone is not None:
            # getaddresses takes the quotes off: it reads as the address.
            context = "" if lone == written else f" (in {shorten(written, 60)!r})"
            yield Problem(
                "invalid-address",
                "error",
                f"{name} has a quoted string with no @domain after it: "
                f"{lone!r}{context}, a local part alone (RFC 5322 3.4.1); write "
                'the address unquoted, or "name" <address>',
                header=canonical,
            )
            continue
        bad = _bad_addresses(text, ctx.smtputf8)
        if bad is None:
            continue
        # What the parser made of the value may not be what it says.
        context = (
            "" if bad == written or not written else f" (in {shorten(written, 60)!r})"
        )
        domain = bad.rpartition("@")[2]
        if "@" in bad and re.fullmatch(_LABEL, domain):
            # RFC 5322's syntax allows it; no mail on the internet reaches it.
            context += (
                f": {domain!r} is a name of one label, which no mail on the "
                "internet can reach (a default sender such as Django's "
                "webmaster@localhost, not set for this application?)"
            )
        if "@" in bad and _SPACED_WORDS.search(domain):
            joined = "".join(domain.split())
            context += (
                f": a space in the domain {domain!r}; Python's email package "
                f"reads it as {joined!r} (mail would go there), stricter "
                "readers refuse the address"
            )
        comma_name = comma_in_display_name(written) if "@" not in bad else None
        if comma_name is not None:
            # "Shop, Inc. <news@shop.example>": the comma splits the name.
            context += (
                ": a display name with an unquoted ',' reads as an address of "
                f'its own; quote the name ("{comma_name}" <address>)'
            )
        context += _misplaced_dots(bad) or _bad_labels(bad)
        yield Problem(
            "invalid-address",
            "error",
            f"{name} has an address that is not valid: {bad!r}{context}",
            header=canonical,
        )
    yield from _check_sender(ctx.tree)


def _misplaced_dots(address: str) -> str:
    """Why ``address`` is not valid, if for its dots: RFC 5322 3.4.1's
    dot-atom has no dot first, last or next to another, in the local part
    (unquoted) or the domain (not a literal). Else nothing: the message
    then shows the address alone."""
    local, at, domain = address.rpartition("@")
    said = []
    if at and not local.startswith('"'):
        said.append(("local part", local))
    if at and not domain.startswith("["):
        said.append(("domain", domain))
    for part, text in said:
        if text.startswith(".") or text.endswith(".") or ".." in text:
            where = (
                "begins with a dot"
                if text.startswith(".")
                else "ends with a dot"
                if text.endswith(".")
                else "has two dots in a row"
            )
            return (
                f": its {part} {where}; RFC 5322 3.4.1 (dot-atom) puts a dot "
                "only between two other characters"
            )
    return ""


def _check_sender(tree: Compat32Message) -> Iterator[Problem]:
    """RFC 5322 3.6.2: a From with several mailboxes needs a Sender."""
    if "Sender" in tree:
        return
    values = tree.get_all("From") or []
    if len(values) != 1:
        return  # none, or several: missing-from or duplicate-header says so
    text = unescape_8bit(str(values[0]))
    if "," not in text:
        return  # one author (run-together addresses are invalid-address)
    if unquoted_at_in_name(text) or addresses_without_comma(text):
        return  # invalid-address says so
    try:
        # Not a word with no @domain: the first part of a display name with
        # an unquoted comma (invalid-address says so), which a Sender header
        # would not mend.
        authors = [address for _, address in getaddresses([text]) if "@" in address]
    except RecursionError:
        return
    if len(authors) > 1:
        yield Problem(
            "missing-sender",
            "error",
            f"From names {len(authors)} authors but there is no Sender header; "
            "RFC 5322 3.6.2 requires one naming who sent the message (and "
            "DMARC needs a single From address)",
            header="Sender",
        )


def _bad_addresses(value: str, smtputf8: bool) -> str | None:
    """The first invalid address in a header value, or None."""
    value = re.sub(r"\r?\n", "", value)
    if not value.strip():
        return value.strip() or "(empty)"
    try:
        found = getaddresses([value])
    except RecursionError:  # hundreds of nested comments: no reader copes
        return shorten(value, 60) + " (comments nested too deeply to parse)"
    good = 0
    for _, addr in found:
        if not addr:
            continue
        local, at, domain = addr.rpartition("@")
        if (
            not at
            or not _valid_local(local, smtputf8)
            or not _valid_domain(domain, smtputf8)
        ):
            return addr
        good += 1
    if good == 0 and not _GROUP_ONLY.fullmatch(value):
        return value.strip()
    spaced = _spaced_domain(value)
    if spaced is not None:
        return spaced
    # getaddresses reads past a '<' never closed or a stray '>': what is
    # left outside comments and quoted strings must pair them up.
    bare = uncommented(value)
    if bare is not None and not _PAIRED_ANGLES.fullmatch(
        replace_closed(QUOTED, '""', bare)
    ):
        return value.strip()
    return None


def _blank_quoted(text: str) -> str:
    """``text`` with every quoted string's content blanked to as many
    ``x``: an '@', '<' or '>' in a display name is text, and offsets still
    point into ``text``."""
    return replace_closed(QUOTED, _blanked, text)


def _blanked(quoted: str) -> str:
    return '"' + "x" * (len(quoted) - 2) + '"'


def quoted_without_domain(value: str) -> str | None:
    """The first address of a header value that is a quoted string alone
    (``"news@shop.example"``, as code that quotes the sender and forgets
    the angle address writes it), as written; else None. It is a local
    part with no domain (RFC 5322 3.4.1), but getaddresses takes its quotes
    off and reads ``news@shop.example``. Also the bulk-sender check's."""
    bare = uncommented(re.sub(r"\r?\n", "", value))
    if bare is None:
        return None
    masked = _blank_quoted(bare)
    start = 0
    for comma in [*(m.start() for m in re.finditer(",", masked)), None]:
        element, blanked = bare[start:comma], masked[start:comma]
        # A group's member ("Team: "news@shop.example";"): its name and
        # its closing ';' off, as getaddresses reads it.
        colon = blanked.find(":")
        if colon >= 0 and "<" not in blanked[:colon]:
            element, blanked = element[colon + 1 :], blanked[colon + 1 :]
        if blanked.rstrip().endswith(";"):
            element = element[: len(blanked.rstrip()) - 1]
        if _QUOTED_ALONE.fullmatch(element):
            return shorten(element.strip(), 60)
        start = (comma or 0) + 1
    return None


_QUOTED_ALONE = re.compile(r'\s*"(?:[^"\\]|\\.)*"\s*')


#: A display name with an unquoted comma before one angle address, in a
#: value whose quoted strings are blanked (`_blank_quoted`).
_COMMA_IN_NAME = re.compile(r"\s*([^,<>@\"]*[^,<>@\"\s])\s*,([^,<>@\"]+)<[^<>]*>\s*")


def comma_in_display_name(value: str) -> str | None:
    """The display name of a header value that is one name with an
    unquoted comma and an angle address (``Shop, Inc. <news@shop.example>``,
    as ``DEFAULT_FROM_EMAIL`` is often written): ``"Shop, Inc."``, which
    readers split into an address ``Shop`` and a second one; else None."""
    found = _COMMA_IN_NAME.fullmatch(_blank_quoted(value))
    if found is None:
        return None
    try:
        # Not a comma in a comment: "Shop (Europe, UK) <...>" is one address.
        if len([a for _, a in getaddresses([value]) if a]) < 2:
            return None
    except RecursionError:
        return None
    return " ".join(value[found.start(1) : found.end(2)].split())


def unquoted_at_in_name(value: str) -> str | None:
    """The display name, as written, of the first angle address whose name
    has an '@' outside quotes and comments (``news@shop.example
    <news@shop.example>``); else None. Python's email package reads such a
    name as an address of its own. Also the bulk-sender check's (`_bulk`)."""
    bare = uncommented(re.sub(r"\r?\n", "", value))
    if bare is None:
        return None
    masked = _blank_quoted(bare)
    for found in _NAME_BEFORE_ANGLE.finditer(masked):
        if "@" in found.group(1):
            return shorten(" ".join(bare[found.start(1) : found.end(1)].split()), 60)
    return None


# A display name: what stands before a '<' since the start, a ',' or a
# group's ':' or ';'.
_NAME_BEFORE_ANGLE = re.compile(r"(?:^|[,:;])([^,:;<>]*)<")


#: An angle address or a domain literal: a ':' or ';' in it is no group's.
_ANGLE_OR_LITERAL = re.compile(r"<[^<>]*>|\[[^\[\]]*\]")


def _list_structure(value: str) -> str | None:
    """What is wrong with how an address list is put together, or None: a
    comment never closed, a ';' outside a group, a group never closed."""
    value = re.sub(r"\r?\n", "", value)
    bare = uncommented(value)
    if bare is None:
        return "a comment is not closed with ')'"
    masked = _ANGLE_OR_LITERAL.sub(
        lambda found: " " * len(found[0]), _blank_quoted(bare)
    )
    group: str | None = None
    for index, char in enumerate(masked):
        if char == ":":
            start = max(masked.rfind(",", 0, index), masked.rfind(";", 0, index))
            name = " ".join(bare[start + 1 : index].split())
            if group is not None:
                return f"group {name!r} inside group {group!r}"
            group = name
        elif char == ";":
            if group is None:
                return "a ';' outside a group (only 'name: addresses;' ends with one)"
            group = None
    if group is not None:
        return f"group {group!r} is not closed with ';'"
    return None


def addresses_without_comma(value: str) -> str | None:
    """The header value, as written (unfolded, shortened), when two of its
    addresses follow each other with no comma between them; else None.
    Also the bulk-sender check's (`_bulk`): one From, not two run together."""
    value = re.sub(r"\r?\n", "", value)
    bare = uncommented(value)
    if bare is None:
        return None
    masked = _blank_quoted(bare)
    if _NO_COMMA.search(masked) is None:
        return None
    return shorten(" ".join(value.split()), 60)


def _spaced_domain(value: str) -> str | None:
    """The first address whose domain has a space between two of its words
    (``j@ex ample.com``), as written; None if none has. getaddresses joins
    such words (``j@example.com``), so the check above never sees it, and
    neither does a reader: the mail would go to another domain. Spaces
    around a dot (``example .com``) are RFC 5322's obsolete syntax, which
    readers must accept, and are not flagged."""
    bare = uncommented(value)
    if bare is None:
        return None
    masked = _blank_quoted(bare)
    for found in _DOMAIN_AS_WRITTEN.finditer(masked):
        domain = found.group(1).strip()
        if domain.startswith("["):
            continue  # a domain literal may hold spaces (RFC 5322 3.4.1)
        if _SPACED_WORDS.search(domain):
            # The pattern matches the empty string too: never None.
            local = _LOCAL_AS_WRITTEN_REVERSED.match(masked[: found.start()][::-1])
            start = found.start() - (local.end() if local is not None else 0)
            return " ".join(bare[start : found.end(1)].split())
    return None


def _valid_local(local: str, smtputf8: bool) -> bool:
    if smtputf8 and not local.isascii():
        local = re.sub(r"[^\x00-\x7f]", "a", local)
    return _LOCAL.fullmatch(local) is not None


def _valid_domain(domain: str, smtputf8: bool) -> bool:
    if not domain.isascii():
        if not smtputf8:
            return False
        domain = re.sub(r"[^\x00-\x7f]", "a", domain)
    return (
        len(domain) <= 253
        and _DOMAIN.fullmatch(domain) is not None
        # An IPv4 address without its brackets (RFC 5321 4.1.3), or another
        # all-digit top-level label, which no domain has (RFC 3696 2).
        and not domain.rpartition(".")[2].isdigit()
    )


def _bad_labels(address: str) -> str:
    """Why ``address``'s domain (not a literal, ASCII) is not a host name,
    if for its labels or its length, as RFC 5321 4.1.2 and RFC 1123 2.1
    have them (stricter than RFC 5322's atext: mail servers go by them,
    and DNS has no such name); else nothing. Empty labels are the dots'
    problem (`_misplaced_dots`)."""
    domain = address.rpartition("@")[2]
    if "@" not in address or not re.fullmatch(rf"(?:{_ATEXT}|\.)+", domain):
        return ""  # a literal, UTF-8, or not the address alone ("a@b.example>")
    if _IPV4.fullmatch(domain):
        if any(int(part) > 255 for part in domain.split(".")):
            # Not an address ("999.999.999.999"), and no host name either.
            return f": {domain!r} is neither a host name nor an IPv4 address"
        return (
            f": {domain!r} is an IP address, which RFC 5321 4.1.3 writes in "
            f"brackets ([{domain}])"
        )
    for label in filter(None, domain.split(".")):
        if len(label) > 63:
            return (
                f": its domain's label {shorten(label, 20)!r} is {len(label)} "
                "characters; DNS allows 63 (RFC 1035 2.3.4)"
            )
        other = re.search(r"[^A-Za-z0-9-]", label)
        if other is not None:
            return (
                f": {other.group(0)!r} in its domain's label {label!r}; a host "
                "name's labels are letters, digits and hyphens (RFC 5321 4.1.2, "
                "RFC 1123 2.1), though RFC 5322 allows it"
            )
        if label.startswith("-") or label.endswith("-"):
            return (
                f": its domain's label {label!r} begins or ends with a hyphen; "
                "a host name's labels do not (RFC 5321 4.1.2, RFC 1123 2.1)"
            )
    top = domain.rpartition(".")[2]
    if top.isdigit():
        return (
            f": its top-level label {top!r} is all digits, which none is (RFC 3696 2)"
        )
    if len(domain) > 253:
        return f": its domain is {len(domain)} characters; DNS allows 253"
    return ""


_IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")


def valid_message_id(value: str) -> bool:
    """Whether a Message-ID value is ``<left@right>``, with the comments
    and folding RFC 5322 (3.6.4) allows around it."""
    bare = uncommented(re.sub(r"\r?\n", "", value))
    return bare is not None and _MESSAGE_ID.fullmatch(bare) is not None


def uncommented(value: str) -> str | None:
    """``value`` with its comments (nested, with quoted pairs) replaced by a
    space, in one pass; None if a comment is never closed. A parenthesis in
    a quoted string is text."""
    out: list[str] = []
    depth = 0
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif quoted:
            quoted = char != '"'
        elif char == "(":
            depth += 1
            continue
        elif char == ")" and depth:
            depth -= 1
            if not depth:
                out.append(" ")
            continue
        elif char == '"' and not depth:
            quoted = True
        if not depth:
            out.append(char)
    return None if depth else "".join(out)


def _check_message_id(ctx: _Context) -> Iterator[Problem]:
    value = ctx.tree.get("Message-ID")
    if value is not None and not valid_message_id(str(value)):
        yield Problem(
            "invalid-message-id",
            "error",
            f"Message-ID {str(value).strip()!r} is not of the form <left@right> "
            "(RFC 5322 3.6.4)",
            header="Message-ID",
        )
    for name in ("In-Reply-To", "References"):
        for written in ctx.tree.get_all(name) or ():
            if not _message_id_list(str(written)):
                # A warning: RFC 5322 4.5.4's obsolete syntax (words between
                # the IDs) is still read; a reply that lost its brackets
                # gives readers that thread by ID nothing to match.
                yield Problem(
                    "invalid-message-id",
                    "warning",
                    f"{name} {shorten(' '.join(str(written).split()), 80)!r} is "
                    "not a list of message IDs <left@right> (RFC 5322 3.6.4): "
                    "readers that thread replies by ID may not find the message "
                    "it answers",
                    header=name,
                )


def _message_id_list(value: str) -> bool:
    """Whether ``value`` is one or more ``<left@right>`` with comments and
    white space around them (In-Reply-To, References)."""
    bare = uncommented(re.sub(r"\r?\n", "", value))
    if bare is None or not bare.strip():
        return False
    ids = _ANGLED.findall(bare)
    left = _ANGLED.sub(" ", bare)
    return bool(ids) and not left.strip() and all(map(_MESSAGE_ID.fullmatch, ids))


#: One ``<...>`` of a list of message IDs.
_ANGLED = re.compile(r"<[^<>]*>")


def _check_date(ctx: _Context) -> Iterator[Problem]:
    value = ctx.tree.get("Date")
    if value is None:
        return
    text = str(value).strip()
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        when = None
    why = None if when is None else _not_semantically_valid(text, when)
    if when is None or why is not None:
        yield Problem(
            "invalid-date",
            "error",
            f"Date {text!r} is not an RFC 5322 date{f': {why}' if why else ''} "
            "(e.g. 'Mon, 30 Nov 2026 19:10:00 +0000'; email.utils.format_datetime "
            "makes one)",
            header="Date",
        )
        return
    if when.tzinfo is None:
        # "-0000" (or no zone): the time is UTC, the zone just unknown.
        when = when.replace(tzinfo=datetime.timezone.utc)
    reference = ctx.received_at or datetime.datetime.now(datetime.timezone.utc)
    if reference.tzinfo is None:
        reference = reference.astimezone()
    if when - reference > FUTURE_DATE_SLACK:
        yield Problem(
            "future-date",
            "warning",
            f"Date {text!r} is more than a day after the message arrived; "
            "check the sender's clock and time zone",
            header="Date",
        )


def _not_semantically_valid(text: str, when: datetime.datetime) -> str | None:
    """What RFC 5322 (3.3) forbids in a Date the stdlib parses anyway, or
    None: a four-digit year before 1900 (the stdlib reads ``0000`` as the
    two-digit year ``00``, i.e. 2000), no zone (it reads the time as UTC),
    zone minutes over 59, a day of the week that is not the date's."""
    # Comments, which RFC 5322 allows around the parts ("(build 1234)",
    # "(UTC)"), are none of them. In one pass: removing one level at a time
    # took seconds for a Date of thousands of nested comments.
    text = uncommented(text) or text
    match = _YEAR_AFTER_MONTH.search(text)
    if match is not None:
        year = match.group(1)
        if len(year) >= 4 and len(year.lstrip("0")) <= 4 and int(year) < 1900:
            return "a year before 1900"
    zone = _ZONE.search(text)
    if zone is None:
        colon = _ZONE_WITH_COLON.search(text)
        if colon is not None:
            # ISO 8601's "+00:00" (JavaScript, Go, PHP write it): a zone,
            # but not as RFC 5322 writes it; readers may miss it.
            written, sign, hours, minutes = colon.groups()
            return (
                f"zone {written!r}: RFC 5322 3.3 writes it "
                f"{sign}{hours}{minutes}, without a colon"
            )
        return "no time zone"
    if zone.group(1) is not None and int(zone.group(1)) > 59:
        return f"zone minutes {zone.group(1)}"
    name = zone.group(2)
    if name is not None and name.upper() not in _OBSOLETE_ZONES:
        # UTC, CET, ...: outside the grammar. Readers that follow RFC 5322
        # take the time as in an unknown zone; the stdlib has a table.
        return (
            f"zone {name!r} is not one RFC 5322 names (UT, GMT, the US zones, "
            "a military letter): readers may take the time as in an unknown "
            "zone (-0000)"
        )
    wrong = _date_syntax(text)
    if wrong is not None:
        return wrong
    day = _DAY_NAME.match(text)
    # Three-digit (obsolete) years the stdlib does not read as 19xx.
    if day is not None and when.year >= 1900:
        written = day.group(1).lower()
        if written != _DAY_NAMES[when.weekday()]:
            return f"{when:%d %b %Y} is a {when:%A}, not {day.group(1)}"
    return None


def _date_syntax(text: str) -> str | None:
    """What in a Date (its comments blanked, its zone found) is outside RFC
    5322 3.3's grammar and 4.3's obsolete one, which the stdlib reads
    anyway: full names, the month first, hyphens, one-digit times. None if
    it is within them. Readers that follow the grammar, and SpamAssassin
    (INVALID_DATE), do not take such a date."""
    if _DATE_GRAMMAR.fullmatch(text):
        return None
    clock = _CLOCK.search(text)
    before = text if clock is None else text[: clock.start()]
    for word in re.findall(r"[A-Za-z]+", before):
        name = word[:3].lower()
        if len(word) > 3 and name in _MONTH_NAMES:
            return (
                f"month {word!r}: RFC 5322 3.3 names a month by its first three "
                "letters (Jan ... Dec)"
            )
        if len(word) > 3 and name in _DAY_NAMES:
            return (
                f"day {word!r}: RFC 5322 3.3 names a day of the week by its "
                "first three letters (Mon ... Sun)"
            )
    joined = re.search(r"[0-9A-Za-z]\s*([-/.])\s*[0-9A-Za-z]", before)
    if joined is not None:
        return (
            f"the day, month and year are joined by {joined.group(1)!r}; RFC "
            "5322 3.3 separates them with spaces ('30 Nov 2026')"
        )
    if _DAY_WITHOUT_COMMA.match(before):
        return "a day of the week without the ',' RFC 5322 3.3 puts after it"
    if _MONTH_FIRST.search(before):
        return "the month before the day; RFC 5322 3.3 writes day month year"
    if clock is not None and re.search(r"(?<![0-9])[0-9](?![0-9])", clock.group(0)):
        return (
            f"the time {clock.group(0).strip()!r}: RFC 5322 3.3 writes the hour, "
            "minute and second with two digits each"
        )
    return (
        "not [day,] day month year hh:mm[:ss] zone in the order and form RFC "
        "5322 3.3 writes them"
    )


_MONTHS = "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec"
_MONTH_NAMES = frozenset(_MONTHS.split("|"))
#: RFC 5322 3.3's date-time with 4.3's obsolete forms (white space around
#: every part, two- and three-digit years), comments blanked by
#: `uncommented`; names are case-insensitive (RFC 5234 2.3). The zone's
#: own checks (present, minutes, a name RFC 5322 lists) come before.
_DATE_GRAMMAR = re.compile(
    rf"\s*(?:(?:mon|tue|wed|thu|fri|sat|sun)\s*,)?\s*[0-9]{{1,2}}\s*(?:{_MONTHS})"
    r"\s*[0-9]{2,}\s*[0-9]{2}\s*:\s*[0-9]{2}(?:\s*:\s*[0-9]{2})?"
    r"\s*(?:[+-][0-9]{4}|[A-Za-z]+)\s*",
    re.IGNORECASE,
)
#: The time of day as written, two digits or not ("0:0:0").
_CLOCK = re.compile(r"[0-9]{1,2}\s*:\s*[0-9]{1,2}(?:\s*:\s*[0-9]{1,2})?")
_DAY_WITHOUT_COMMA = re.compile(
    r"\s*(?:mon|tue|wed|thu|fri|sat|sun)\s+[0-9]", re.IGNORECASE
)
_MONTH_FIRST = re.compile(rf"(?:{_MONTHS})[a-z]*\s+[0-9]{{1,2}}\b", re.IGNORECASE)


_YEAR_AFTER_MONTH = re.compile(
    r"\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)\s+([0-9]+)\b",
    re.IGNORECASE,
)
#: The zone after the time: +hhmm / -hhmm, or an obsolete name ("GMT",
#: "EST", a military letter; unknown names mean -0000).
_ZONE = re.compile(r"[0-9]\s*(?:[+-][0-9]{2}([0-9]{2})|([A-Za-z]+))\s*\Z")
#: An ISO 8601 zone after the time, "+01:00".
_ZONE_WITH_COLON = re.compile(r"[0-9]\s*(([+-])([0-9]{2}):([0-9]{2}))\s*\Z")
#: RFC 5322 4.3's obs-zone: UT, GMT, the US zones and the military letters
#: (all but J).
_OBSOLETE_ZONES = frozenset(
    {"UT", "GMT", "EST", "EDT", "CST", "CDT", "MST", "MDT", "PST", "PDT"}
    | {chr(letter) for letter in range(ord("A"), ord("Z") + 1)} - {"J"}
)
_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAME = re.compile(r"\s*([A-Za-z]{3})\s*,", re.IGNORECASE)


# -- MIME checks -------------------------------------------------------------------


def _parts(tree: Compat32Message) -> Iterator[tuple[str | None, Compat32Message]]:
    """(section number, part) for every part, IMAP style (RFC 3501 6.4.5,
    as `_imap_fetch.Part.parts`): a single-part message is "1"; the
    children of a multipart are "1", "2", "2.1", ...; the message in a
    message/rfc822 part "2" has its parts numbered "2.1", "2.2" when it is
    a multipart (the multipart itself is reported as "2"), and its body is
    "2.1" when it is not. Any other message/ part (message/delivery-status,
    whose header blocks the parser splits) is a leaf, as is a message/rfc822
    whose body is encoded. A multipart message itself has no number (None):
    its "1" is its first part."""
    top: str | None = "1"
    if tree.get_content_maintype() == "multipart" and tree.is_multipart():
        top = None
    # (number, part, the prefix of its children's numbers)
    stack: list[tuple[str | None, Compat32Message, str]] = [(top, tree, "")]
    while stack:
        number, part, prefix = stack.pop()
        yield number, part
        if not part.is_multipart():
            continue  # a leaf's payload may not even decode (see _check_mime)
        payload = part.get_payload()
        if not isinstance(payload, list):
            continue
        found = [child for child in payload if isinstance(child, Compat32Message)]
        if part.get_content_maintype() != "multipart":
            if not _encapsulates(part) or number is None or len(found) != 1:
                # A leaf to IMAP, whatever the parser made of it: the header
                # blocks of a message/delivery-status (a leaf to Dovecot
                # too), the message in a message/partial or
                # message/external-body, a message/rfc822 in base64.
                continue
            (inner,) = found
            if inner.get_content_maintype() == "multipart":
                stack.append((number, inner, f"{number}."))
            else:
                stack.append((f"{number}.1", inner, f"{number}.1."))
            continue
        children = [
            (f"{prefix}{index}", child, f"{prefix}{index}.")
            for index, child in enumerate(found, start=1)
        ]
        stack.extend(reversed(children))


#: message/ subtypes whose body is one encapsulated message.
_ENCAPSULATING = frozenset({"rfc822", "global"})
#: The transfer encodings that leave bytes as they are (RFC 2045 6.2): the
#: only ones a multipart or a message/rfc822 may have.
_IDENTITY = frozenset({"7bit", "8bit", "binary"})
#: RFC 2045 6.7 rule 5: encoded lines of at most 76 characters.
_QP_LINE = 76
# Python's email package writes quoted-printable lines up to its policy's
# max_line_length, 78 by default: most Python applications meet this check.
_PYTHON_QP_LINE = 78
_PYTHON_QP_HINT = (
    " (Python's email package writes lines of up to 78 with its default "
    "policy: give the message policy=email.policy.default.clone("
    "max_line_length=76))"
)


def _encoding(written: str) -> str:
    """A Content-Transfer-Encoding value as compared: lower case, without
    comments (RFC 2045 allows them around the token)."""
    return "".join((uncommented(written) or written).split()).lower()


def _encapsulates(part: Compat32Message) -> bool:
    """Whether IMAP numbers the parts of the message in ``part`` (RFC 3501
    6.4.5): a message/rfc822 or message/global whose body is not encoded;
    as `_imap_fetch` decides."""
    return (
        part.get_content_maintype() == "message"
        and part.get_content_subtype() in _ENCAPSULATING
        and _encoding(str(part.get("Content-Transfer-Encoding", "7bit"))) in _IDENTITY
    )


def _container(part: Compat32Message) -> str | None:
    """``"multipart"`` or ``"message/rfc822"`` when ``part`` is one (a
    message/global may be encoded, RFC 6532 3.5), else None."""
    if part.get_content_maintype() == "multipart":
        return "multipart"
    if part.get_content_type() == "message/rfc822":
        return "message/rfc822"
    return None


def _first_8bit_part(container: Compat32Message) -> str | None:
    """Where the first 8-bit bytes inside ``container`` are: its first leaf
    part with them (``text/plain``), or None."""
    for inner in container.walk():
        if inner is container or inner.is_multipart():
            continue
        try:
            payload = inner.get_payload()
        except (LookupError, ValueError, TypeError, Warning):
            payload = None  # judged where the part itself is (see above)
        if isinstance(payload, str) and not payload.isascii():
            return f"in its {inner.get_content_type()} part"
    return None


_DEFECTS: dict[type[email.errors.MessageDefect], tuple[str, str]] = {
    email.errors.NoBoundaryInMultipartDefect: (
        "missing-boundary",
        "a multipart without a boundary parameter: its parts cannot be found",
    ),
    email.errors.StartBoundaryNotFoundDefect: (
        "boundary-not-found",
        "the multipart's boundary never appears in its body",
    ),
    email.errors.CloseBoundaryNotFoundDefect: (
        "missing-closing-boundary",
        "the multipart does not end with its closing boundary (--boundary--); "
        "the message may be truncated",
    ),
    email.errors.MissingHeaderBodySeparatorDefect: (
        "malformed-header",
        "a header line that is not 'Name: value'; everything from it on is "
        "read as the body",
    ),
    email.errors.FirstHeaderLineIsContinuationDefect: (
        "malformed-header",
        "the message starts with a folded (indented) line",
    ),
}


#: Defects of a multipart's own structure that leave it one part to the
#: parser (a message's: named by no part number).
_OWN_STRUCTURE = frozenset({"missing-boundary", "boundary-not-found"})


def _parents(tree: Compat32Message) -> dict[int, Compat32Message]:
    """Each part's parent, by ``id()`` of the part, in one walk."""
    parents: dict[int, Compat32Message] = {}
    stack = [tree]
    while stack:
        part = stack.pop()
        payload = part.get_payload() if part.is_multipart() else None
        for child in payload if isinstance(payload, list) else ():
            if isinstance(child, Compat32Message):
                parents[id(child)] = part
                stack.append(child)
    return parents


def _boundary_not_found(
    part: Compat32Message, parents: dict[int, Compat32Message], raw: bytes
) -> str:
    """Why the parser found no delimiter of ``part``'s boundary: RFC 2046
    5.1.1 faults that make it look absent when it is written (Python reports
    all of them as StartBoundaryNotFoundDefect)."""
    boundary = part.get_boundary()
    if boundary is None:
        return _DEFECTS[email.errors.StartBoundaryNotFoundDefect][1]
    around = parents.get(id(part))
    while around is not None:
        if around.get_content_maintype() == "multipart" and (
            around.get_boundary() == boundary
        ):
            # The outer multipart's parser took the inner delimiters as its
            # own: the inner one was left with none.
            return (
                f"the multipart has the boundary {boundary!r} of a multipart "
                "around it, whose parser takes its delimiters as its own; RFC "
                "2046 5.1.1 requires a boundary that does not occur in the "
                "parts it encloses (give the inner multipart another one)"
            )
        around = parents.get(id(around))
    try:
        escaped = re.escape(boundary.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        escaped = None
    if escaped is not None:
        # In the raw message: the parser stops at the closing delimiter and
        # keeps no text of it.
        closing = re.search(rb"^--" + escaped + rb"--[ \t]*\r?$", raw, re.MULTILINE)
        opening = re.search(rb"^--" + escaped + rb"[ \t]*\r?$", raw, re.MULTILINE)
        if closing is not None and opening is None:
            return (
                f"the multipart has its closing delimiter (--{boundary}--) "
                "but no body part before it; RFC 2046 5.1.1 requires at least "
                "one"
            )
    return _DEFECTS[email.errors.StartBoundaryNotFoundDefect][1]


def _special_parts(tree: Compat32Message) -> tuple[dict[int, str], set[int]]:
    """Two sets of parts, by ``id()``, found in one walk of the tree:

    - the parts inside an encapsulated message (``message/rfc822`` or
      ``message/global``), each with that message's subtype (the
      innermost): a forwarded message's text is not this message's body,
      and a message/global's headers may hold UTF-8 (RFC 6532 3.5);
    - the control parts of multipart/signed and multipart/encrypted (RFC
      1847; PGP/MIME, RFC 3156; S/MIME): the signature, the version part
      and the encrypted data, which readers process rather than show. They
      have no filename, by design.
    """
    inside: dict[int, str] = {}
    protocol: set[int] = set()
    if not tree.is_multipart():
        return inside, protocol
    # Each part with the subtype of the innermost message around it: one
    # walk (a walk of each message's subtree again was cubic in the depth
    # of nested forwards: 950 levels in 45 kB took 4 s).
    stack: list[tuple[Compat32Message, str | None]] = [(tree, None)]
    while stack:
        part, around = stack.pop()
        if around is not None:
            inside[id(part)] = around
        maintype = part.get_content_maintype()
        if part.is_multipart():
            children = part.get_payload()
            if isinstance(children, list):
                within = part.get_content_subtype() if maintype == "message" else around
                stack.extend(
                    (child, within)
                    for child in reversed(children)
                    if isinstance(child, Compat32Message)
                )
        if maintype == "multipart":
            subtype = part.get_content_subtype()
            if subtype not in ("encrypted", "signed"):
                continue
            children = part.get_payload()
            if isinstance(children, list):
                skip = 0 if subtype == "encrypted" else 1  # signed: its content
                protocol.update(id(child) for child in children[skip:])
    return inside, protocol


#: What may not touch an encoded word: a character of an atom (RFC 2047 5
#: wants white space, or a comment's parenthesis, around it).
_ATOM_CHARACTER = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\x80-\U0010ffff]")


#: Headers whose values are identifiers or <URI>s (RFC 2369, RFC 8058,
#: RFC 5322 3.6.4), which Python's email package encodes whole when they
#: are long: `hides_its_value` then finds no <...> left outside them.
_NO_ENCODED_WORDS = frozenset(
    (
        *("message-id", "in-reply-to", "references", "content-id"),
        *("list-unsubscribe", "list-unsubscribe-post", "list-subscribe"),
        *("list-post", "list-help", "list-archive", "list-owner", "list-id"),
    )
)


def hides_its_value(value: str) -> bool:
    """Whether RFC 2047 encoded words stand where a header's <...> values
    (or List-Unsubscribe-Post's keyword) belong: there are some outside its
    comments, and nothing in angle brackets is left without them. A
    phrase may be encoded (a List-Id's name, RFC 5322's obsolete phrase in
    In-Reply-To), beside its <...>. Also the bulk-sender check's."""
    bare = COMMENT.sub(lambda comment: " " * len(comment[0]), value)
    words = encoded_words(bare)
    if not words:
        return False
    # Python encodes only the long word: "<mailto:...>, =?utf-8?q?=3Chttps..."
    # keeps a plain <...> beside the hidden one.
    if any(_holds_angle(bare[start:end]) for start, end, _, _ in words):
        return True
    for start, end, _, _ in reversed(words):
        bare = bare[:start] + bare[end:]
    return "<" not in bare


def _holds_angle(word: str) -> bool:
    """Whether an encoded word's text holds a ``<`` or ``>``: part of a
    ``<...>`` value, where no name has them."""
    try:
        pieces = email.header.decode_header(word)
    except Exception:  # a word it cannot read: lint says so elsewhere
        return False
    return any(
        b"<" in piece or b">" in piece
        for piece, _ in pieces
        if isinstance(piece, bytes)
    )


#: Why a long header comes out encoded, and how not to: also the
#: bulk-sender check's.
ENCODED_BY_PYTHON = (
    "Python's email package encodes a value longer than 78 characters with "
    "no space in it so; write the message with "
    "policy=email.policy.SMTP.clone(max_line_length=998)"
)


def _misplaced_encoded_word(
    text: str, start: int, end: int, quoted: Sequence[tuple[int, int]]
) -> str | None:
    """Why the encoded word at ``text[start:end]`` breaks RFC 2047's rules
    of where one may stand, or None: glued to the text around it (Python's
    parser shows "Hello=?..?=" as "HelloJörg", strict readers as written),
    or inside one of the ``quoted`` strings (an address header's; in a
    Subject a quote is text). Not its length: RFC 2047's 75 characters,
    which Python's email package exceeds by one when it folds a long
    subject, is no trouble to any reader."""
    if any(left < start and end < right for left, right in quoted):
        return "is inside a quoted string, where RFC 2047 forbids one"
    before = text[start - 1 : start]
    after = text[end : end + 1]
    if _ATOM_CHARACTER.fullmatch(before) or _ATOM_CHARACTER.fullmatch(after):
        return "touches the text next to it, with no space between"
    return None


def _check_header_text(
    part: Compat32Message, path: str | None, smtputf8: bool
) -> Iterator[Problem]:
    """A MIME part's header block (or an encapsulated message's): 8-bit
    bytes, as `_check_header_bytes` judges the message's own; and, for any
    block, encoded words in a charset Python does not know or whose text
    is not in their charset."""
    if path is not None and not all(str(v).isascii() for _, v in part.raw_items()):
        lines = [
            f"{name}: {value}".encode("utf-8", "surrogateescape")
            for name, value in part.raw_items()
        ]
        head = b"\n".join(lines)
        if not head.isascii():
            yield from _eight_bit_header_lines(head, smtputf8, path)
    for name, value in part.raw_items():
        text = str(value)
        if "=?" not in text:
            continue
        if name.lower() in _NO_ENCODED_WORDS and hides_its_value(text):
            yield Problem(
                "invalid-encoded-word",
                "error",
                f"{name} is RFC 2047-encoded, "
                f"{shorten(printable(' '.join(text.split())), 60)!r}: encoded "
                "words belong in text, comments and display names (RFC 2047 "
                f"5), and readers take {name}'s <...> values as written. "
                f"{ENCODED_BY_PYTHON}",
                header=name,
                part=path,
            )
            continue
        # Quoted strings found once per header (per word, the check took
        # 33 s on a subject of 16,000 encoded words).
        quoted = (
            [
                found.span()
                # A quote inside a comment is text: comments blanked first.
                for found in QUOTED.finditer(
                    COMMENT.sub(lambda comment: " " * len(comment[0]), text)
                )
            ]
            if name.lower() in _ADDRESS_NAMES
            else []
        )
        for start, end, written, encoding in encoded_words(text):
            placed = _misplaced_encoded_word(text, start, end, quoted)
            if placed is not None:
                yield Problem(
                    "invalid-encoded-word",
                    "warning",
                    f"an encoded word in {name}, "
                    f"{shorten(printable(text[start:end]), 60)!r}, {placed} "
                    "(RFC 2047 2 and 5): readers differ, some show it as it is "
                    "(encode headers with the email package's Header or policy)",
                    header=name,
                    part=path,
                )
            # All between the third "?" and the closing "?=": "a?b" of
            # "=?utf-8?Q?a?b?=", whose "?" the first split left out.
            bad = _bad_encoded_text(encoding, text[start:end].split("?", 3)[3][:-2])
            if bad is not None:
                yield Problem(
                    "invalid-encoded-word",
                    "error",
                    f"an encoded word in {name}, "
                    f"{shorten(printable(text[start:end]), 60)!r}, {bad}; Python "
                    "guesses, and other readers show the word as it is or drop "
                    "it (encode headers with the email package's Header or "
                    "policy)",
                    header=name,
                    part=path,
                )
                continue
            charset = written.partition("*")[0]  # RFC 2231: charset*language
            if not _known(charset):
                yield Problem(
                    "unknown-charset",
                    "warning",
                    f"an encoded word in {name} declares charset {charset!r}, "
                    "which Python does not know; readers will guess",
                    header=name,
                    part=path,
                )
                continue
            try:
                ((data, _),) = email.header.decode_header(text[start:end])
            except Exception:  # bad base64 and the like: readers show it raw
                continue
            if not isinstance(data, bytes):
                continue
            mismatch = _not_in_charset(data, charset)
            if mismatch is not None:
                yield Problem(
                    "charset-mismatch",
                    "error",
                    f"an encoded word in {name} declares charset {charset!r} but "
                    f"its text is not {charset}: {mismatch}; readers show "
                    "'\ufffd' or garbled text (encode it in the charset it "
                    "declares)",
                    header=name,
                    part=path,
                )


_BASE64_WORD = re.compile(
    r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
)
#: RFC 2047 4.2 (and 5's rule 3): printable ASCII but "?" and space, "="
#: only as "=XX" in hex.
_Q_WORD = re.compile(r"(?:[!-<>@-~]|=[0-9A-Fa-f]{2})*")


def _bad_encoded_text(encoding: str, encoded: str) -> str | None:
    """Why the text of an RFC 2047 encoded word is not valid in its
    ``encoding`` ("B" or "Q", either case), or None."""
    if encoding in "bB":
        if _BASE64_WORD.fullmatch(encoded):
            return None
        return "is not base64 (RFC 2047 4.1: base64 with its padding)"
    if _Q_WORD.fullmatch(encoded):
        return None
    return (
        "is not Q-encoded (RFC 2047 4.2: '=' only before two hex digits, no "
        "space, '?' or control character)"
    )


#: RFC 2045 6.1's transfer encodings (an "x-" token is a private one).
_KNOWN_ENCODINGS = frozenset({*_IDENTITY, "base64", "quoted-printable"})
#: A Content-Type's type/subtype: two RFC 2045 tokens.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_TYPE_SUBTYPE = re.compile(rf"{_TOKEN}/{_TOKEN}")
#: RFC 2046 5.1.1: a boundary of 1 to 70 characters.
_MAX_BOUNDARY = 70
#: The MIME headers a part may have once each (RFC 2045 3: readers disagree
#: on which of two wins, a known way past filters).
_SINGLE_MIME = ("Content-Type", "Content-Transfer-Encoding", "Content-Disposition")


def _check_mime_headers(part: Compat32Message, where: str | None) -> Iterator[Problem]:
    """One part's MIME headers (``where``: its number, None for the
    message's own): each at most once, a Content-Type that is type/subtype,
    a multipart's boundary of 1 to 70 characters."""
    for name in _SINGLE_MIME:
        count = len(part.get_all(name) or ())
        if count > 1:
            yield Problem(
                "duplicate-header",
                "error",
                f"{count} {name} headers; RFC 2045 allows one per part, and "
                "readers disagree on which one counts",
                header=name,
                part=where,
            )
    written = part.get("Content-Type")
    if written is not None:
        value = str(written).partition(";")[0]
        value = "".join((uncommented(value) or value).split())
        if not _TYPE_SUBTYPE.fullmatch(value):
            yield Problem(
                "invalid-content-type",
                "error",
                f"Content-Type {shorten(str(written).strip(), 60)!r} is not "
                "type/subtype (RFC 2045 5.1): readers take the part for "
                "text/plain; charset=us-ascii (RFC 2045 5.2)",
                header="Content-Type",
                part=where,
            )
    yield from _check_parameters(part, where)
    if part.get_content_maintype() == "multipart":
        boundary = part.get_param("boundary")
        if isinstance(boundary, str) and not 0 < len(boundary) <= _MAX_BOUNDARY:
            yield Problem(
                "invalid-boundary",
                "error",
                (
                    "the multipart's boundary is empty"
                    if not boundary
                    else f"the multipart's boundary has {len(boundary)} characters"
                )
                + f"; RFC 2046 5.1.1 requires 1 to {_MAX_BOUNDARY}, and strict "
                "readers do not find the parts",
                part=where,
            )
        elif isinstance(boundary, str) and boundary.endswith((" ", "\t")):
            # Python's email package drops the space when it splits, strict
            # readers keep it: they disagree on where the parts are, and a
            # "missing closing boundary" blamed a truncation.
            yield Problem(
                "invalid-boundary",
                "error",
                f"the multipart's boundary {shorten(boundary, 40)!r} ends with a "
                "blank, which RFC 2046 5.1.1 forbids: readers disagree on where "
                "its parts are",
                part=where,
            )


def _parameters_given_twice(value: str, where: str | None) -> Iterator[Problem]:
    """A Content-Type parameter written twice (``charset=utf-8;
    charset=iso-8859-1``), as written: ``name`` and its RFC 2231 form
    ``name*`` are two (a sender's fallback for old readers), and the
    pieces of a continued value (``name*0``, ``name*1``) one each."""
    seen: dict[str, list[str]] = {}
    for piece in _split_parameters(value)[1:]:
        name, equals, given = piece.partition("=")
        name = name.strip().lower()
        if name and equals:
            seen.setdefault(name, []).append(given.strip())
    for name, values in seen.items():
        if len(values) > 1:
            shown = ", ".join(repr(shorten(v, 40)) for v in values)
            yield Problem(
                "invalid-content-type",
                "error",
                f"Content-Type gives {name} {len(values)} times ({shown}); "
                "RFC 6838 4.3 allows each parameter once, and readers "
                "disagree on which one counts",
                header="Content-Type",
                part=where,
            )


def _split_parameters(value: str) -> list[str]:
    """``value`` cut at each ``;`` outside a quoted string."""
    pieces = []
    start = 0
    quoted = escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            pieces.append(value[start:index])
            start = index + 1
    pieces.append(value[start:])
    return pieces


def _check_parameters(part: Compat32Message, where: str | None) -> Iterator[Problem]:
    """A Content-Type parameter given twice, and an RFC 2231 value (a
    ``filename*=utf-8''...``) that is not in its charset."""
    for header in ("Content-Type", "Content-Disposition"):
        if header not in part:
            continue
        try:
            # An RFC 2231 value is a (charset, language, text) tuple, which
            # typeshed does not say.
            params: list[tuple[str, object]] = [
                *(part.get_params(header=header) or [])[1:]
            ]
        except Exception:  # RFC 2231 pieces the stdlib cannot put together
            continue
        if header == "Content-Type":
            yield from _parameters_given_twice(str(part[header]), where)
        yield from _extended_parameters(str(part[header]), header, where)
        for name, value in params:
            if not isinstance(value, tuple):
                continue
            charset, _, text = value
            charset = (charset or "").strip()
            if not charset or not _known(charset):  # none declared: readers guess
                continue
            # Its %XX bytes, as the stdlib keeps them (one Latin-1 character
            # each).
            mismatch = _not_in_charset(text.encode("latin-1", "replace"), charset)
            if mismatch is not None:
                yield Problem(
                    "charset-mismatch",
                    "error",
                    f"the {name}* parameter of {header} declares charset "
                    f"{charset!r} but its value is not {charset}: {mismatch}; "
                    "readers show '\ufffd' or garbled text (RFC 2231)",
                    header=header,
                    part=where,
                )


#: An RFC 2231 parameter name: ``name*`` (one extended value), ``name*0``
#: and ``name*1*`` (the sections of a continued one).
_EXTENDED_NAME = re.compile(r"([^*\s]+)\*(?:(\d{1,9})(\*?))?")
#: A ``%`` not before two hex digits, in an extended value.
_BAD_OCTET = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _extended_parameters(
    value: str, header: str, where: str | None
) -> Iterator[Problem]:
    """An RFC 2231 parameter written against its syntax, which the email
    package reads anyway, a way other readers do not: its sections with a
    number missing (the stdlib drops the rest silently), an extended value
    without its ``charset'language'`` prefix (the stdlib shows its bytes as
    U+FFFD), a ``%`` not before two hex digits, and a charset no reader
    knows."""
    sections: dict[str, dict[int, tuple[bool, str]]] = {}
    for piece in _split_parameters(value)[1:]:
        written, equals, given = piece.partition("=")
        match = _EXTENDED_NAME.fullmatch(written.strip())
        if not equals or match is None:
            continue
        name, number, star = match.groups()
        extended = number is None or bool(star)
        index = 0 if number is None else int(number)
        sections.setdefault(name.lower(), {})[index] = (extended, given.strip())
    for name, parts in sections.items():
        shown = f"the {name}* parameter of {header}"
        # The first number missing (not a set of them: a "name*99999999").
        gap = next(i for i in range(len(parts) + 1) if i not in parts)
        if gap < max(parts):
            yield Problem(
                "invalid-parameter",
                "error",
                f"{shown} has no section {name}*{gap} though it has "
                f"{name}*{max(parts)}: RFC 2231 3 numbers the sections from 0 "
                "without a gap, and readers drop what follows the gap or the "
                "whole value",
                header=header,
                part=where,
            )
        first = parts.get(0)
        if first is not None and first[0]:
            prefix = first[1].strip('"')
            if prefix.count("'") < 2:
                yield Problem(
                    "invalid-parameter",
                    "error",
                    f"{shown} ({shorten(first[1], 40)!r}) is an extended value "
                    "without its charset'language' prefix: RFC 2231 7 requires "
                    "both quotes (filename*=utf-8''%C3%9C...), and readers show "
                    "its %XX bytes as '\ufffd' or as written",
                    header=header,
                    part=where,
                )
            else:
                charset = prefix.partition("'")[0].strip()
                if charset and not _known(charset):
                    yield Problem(
                        "unknown-charset",
                        "warning",
                        f"{shown} declares charset {charset!r}, which Python "
                        "does not know; readers will guess",
                        header=header,
                        part=where,
                    )
        for extended, given in parts.values():
            if extended and _BAD_OCTET.search(given):
                yield Problem(
                    "invalid-parameter",
                    "error",
                    f"{shown} ({shorten(given, 40)!r}) has a '%' not before two "
                    "hex digits: RFC 2231 7 writes each octet of an extended "
                    "value as %XX, and readers show it as written",
                    header=header,
                    part=where,
                )
                break


def _not_in_charset(data: bytes, charset: str) -> str | None:
    """Where ``data`` stops being text in ``charset`` (a known one), or None
    when it decodes (or the codec is no plain text codec to judge by)."""
    info = codecs.lookup(charset)
    if not info._is_text_encoding or "escape" in info.name:
        return None
    try:
        data.decode(info.name)
    except UnicodeDecodeError as error:
        bad = data[error.start : error.end]
        return f"{bad.hex(' ')} at byte {error.start + 1} of {len(data)}"
    except Exception:  # a codec's own failure: not the sender's to hear of
        return None
    return None


#: What Python's email parser takes for a header line (its feedparser's
#: headerRE): a name and a colon, a folded line, or an mbox "From ".
_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")
#: A line as the parser reads one (its NLCRE): up to CRLF, CR or LF.
_PARSER_LINE = re.compile(rb"([^\r\n]*)(?:\r\n|\r|\n|\Z)")
#: A line Python's parser takes as part of a header block: a field (its
#: pattern allows an empty name), a continuation, or an mbox "From " line.
_PARSED_AS_HEADER = re.compile(rb"From |[\041-\071\073-\176]*:|[\t ]")


def _first_line_not_a_header(
    raw: bytes, defect: type[email.errors.MessageDefect]
) -> int | None:
    """Where in ``raw``'s header the parser found ``defect``: the first line
    (a folded first line), or the first that it does not take for a header
    line; None if it is not found. Lines end as the parser ends them (a
    bare CR too); the number counts LFs, as every problem's does."""
    if defect is email.errors.FirstHeaderLineIsContinuationDefect:
        return 1
    for match in _PARSER_LINE.finditer(raw):
        line = match.group(1)
        if not line:
            return None  # the end of the header
        if not _HEADER_LINE.match(line):
            return _line_number(raw, match.start())
    return None


def _check_mime(ctx: _Context) -> Iterator[Problem]:
    has_text = has_html = empty_text = False
    parents: dict[int, Compat32Message] | None = None  # made when needed
    inside, protocol = _special_parts(ctx.tree)
    for path, part in _parts(ctx.tree):
        yield from _check_header_text(
            part,
            None if part is ctx.tree else path or "1",
            ctx.smtputf8 or inside.get(id(part)) == "global",
        )
        defects = list(part.defects)
        if part.get_content_type() == "message/delivery-status" and part.is_multipart():
            # Its header blocks are no parts (IMAP has it a leaf): a line in
            # them that is not 'Name: value' is this part's.
            for block in part.get_payload():
                if isinstance(block, Compat32Message):
                    defects.extend(block.defects)
        for defect in defects:
            known = _DEFECTS.get(type(defect))
            if known is None:
                continue
            code, said = known
            if isinstance(defect, email.errors.StartBoundaryNotFoundDefect):
                if parents is None:
                    parents = _parents(ctx.tree)
                said = _boundary_not_found(part, parents, ctx.raw)
            if part is ctx.tree and code == "malformed-header":
                # The message's own header: where in it, rather than "part 1".
                line = _first_line_not_a_header(ctx.raw, type(defect))
                yield Problem(code, "error", said, line=line)
            elif part is ctx.tree and code in _OWN_STRUCTURE:
                # The message's own multipart, which the parser made one part
                # of (its parts not found): no number, as when its closing
                # boundary is missing; its "1" would be its first part.
                yield Problem(code, "error", said)
            else:
                yield Problem(code, "error", said, part=path)
        yield from _check_mime_headers(part, None if part is ctx.tree else path or "1")
        container = _container(part)
        if container is not None:
            written = str(part.get("Content-Transfer-Encoding", "7bit")).strip()
            if _encoding(written) not in _IDENTITY:
                yield Problem(
                    "invalid-transfer-encoding",
                    "error",
                    f"{part.get_content_type()} has Content-Transfer-Encoding "
                    f"{shorten(written, 40)}; a {container} may only be 7bit, 8bit "
                    "or binary (RFC 2045 6.4, RFC 2046 5.2.1): encode the parts "
                    "inside it instead",
                    part=path,
                )
            elif (
                "Content-Transfer-Encoding" in part
                and _encoding(written) == "7bit"
                and (inner := _first_8bit_part(part)) is not None
            ):
                # Said of a 7bit written out only: most mail leaves it out
                # on a multipart (the email package does) and 7bit is then
                # the default in name only; a gateway takes a declared one
                # at its word (RFC 2045 6.4: the encoding covers the whole).
                yield Problem(
                    "8bit-in-7bit",
                    "error",
                    f"{part.get_content_type()} declares Content-Transfer-Encoding "
                    f"7bit but holds 8-bit bytes ({inner}); declare 8bit, or drop "
                    "the header (RFC 2045 6.4)",
                    part=path,
                )
        if part.is_multipart():
            if part.get_content_type() == "multipart/alternative":
                yield from _check_alternative_order(part, path)
            continue
        content_type = part.get_content_type()
        maintype = part.get_content_maintype()
        disposition = part.get_content_disposition()
        try:
            payload = part.get_payload()
        except (LookupError, ValueError, TypeError, Warning):
            # 8-bit text under a charset Python cannot decode with (a NUL in
            # its name; an RFC 2231 one, charset*=, which the stdlib passes
            # on as a tuple before CPython gh-80361; unicode_escape, whose
            # DeprecationWarning a -W error run raises): judge the bytes as
            # they are; unknown-charset says why.
            raw_payload = part.get_payload(decode=True)
            payload = (
                raw_payload.decode("latin-1")
                if isinstance(raw_payload, bytes)
                else None
            )
        if not isinstance(payload, str):
            continue
        written = str(part.get("Content-Transfer-Encoding", "7bit")).strip()
        # As compared: without the comments RFC 2045 allows around it.
        encoding = _encoding(written)
        if (
            container is None
            and encoding not in _KNOWN_ENCODINGS
            and not encoding.startswith("x-")
        ):
            yield Problem(
                "invalid-transfer-encoding",
                "error",
                f"{content_type} has Content-Transfer-Encoding "
                f"{shorten(written, 40)!r}, none of 7bit, 8bit, binary, "
                "quoted-printable and base64 (RFC 2045 6.1): readers show its "
                "body undecoded, or not at all",
                part=path,
            )
        if (
            maintype == "text"
            and disposition != "attachment"
            and id(part) not in inside
        ):
            if part.get_content_subtype() == "plain":
                text = part.get_payload(decode=True)
                if isinstance(text, bytes) and not text.strip():
                    # Readers and spam filters see an HTML-only message.
                    empty_text = True
                else:
                    has_text = True
            elif part.get_content_subtype() == "html":
                has_html = True
        eight_bit = not payload.isascii()
        if eight_bit and encoding == "7bit":
            yield Problem(
                "8bit-in-7bit",
                "error",
                f"{content_type} has 8-bit bytes but "
                + (
                    "its transfer encoding is 7bit"
                    if "Content-Transfer-Encoding" in part
                    else "no Content-Transfer-Encoding, so 7bit (RFC 2045 6.1)"
                )
                + "; declare 8bit, or use quoted-printable or base64",
                part=path,
            )
        charset = part.get_param("charset")
        if maintype == "text" and isinstance(charset, str) and not _known(charset):
            yield Problem(
                "unknown-charset",
                "warning",
                f"{content_type} declares charset {charset!r}, which Python does "
                "not know; readers will guess",
                part=path,
            )
        if maintype == "text" and charset is None:
            if eight_bit:
                yield Problem(
                    "8bit-without-charset",
                    "error",
                    f"{content_type} has non-ASCII text but no charset parameter; "
                    "readers will guess (add charset=utf-8)",
                    part=path,
                )
            elif (
                disposition != "attachment"
                and "Content-Type" in part
                # A bounce's copy of a header, whose type has no parameters
                # (RFC 6522 4).
                and content_type != "text/rfc822-headers"
            ):
                # Without any Content-Type, us-ascii is the rule (RFC 2045 5.2).
                yield Problem(
                    "text-without-charset",
                    "info",
                    f"{content_type} has no charset parameter (us-ascii is assumed)",
                    part=path,
                )
        decodes = True
        if encoding == "base64":
            compact = re.sub(r"\s+", "", payload)
            if len(compact) % 4 or _BASE64.fullmatch(compact) is None:
                decodes = False
                yield Problem(
                    "invalid-base64",
                    "error",
                    f"{content_type} is declared base64 but is not valid base64",
                    part=path,
                )
        elif encoding == "quoted-printable" and _BAD_QP.search(payload):
            yield Problem(
                "invalid-quoted-printable",
                "error",
                f"{content_type} is declared quoted-printable but has an '=' not "
                "followed by two hex digits or a line end",
                part=path,
            )
        elif encoding == "quoted-printable" and eight_bit:
            # Quoted-printable is 7-bit by definition: a reader may keep the
            # bytes, or a 7-bit hop strip their 8th bit.
            yield Problem(
                "invalid-quoted-printable",
                "error",
                f"{content_type} is declared quoted-printable but has raw 8-bit "
                "bytes; quoted-printable writes each of them as =XX (RFC 2045 "
                "6.7)",
                part=path,
            )
        if encoding == "base64" and decodes:
            # RFC 2045 6.8's "must" too, but every decoder takes longer lines:
            # a warning, where quoted-printable's soft breaks make it an error.
            long = _lengths_over(payload, _QP_LINE)
            if long:
                yield Problem(
                    "base64-line-too-long",
                    "warning",
                    f"{content_type} is base64 in {len(long)} "
                    f"line{'' if len(long) == 1 else 's'} longer than {_QP_LINE} "
                    f"characters (the longest has {max(long)}); RFC 2045 6.8 "
                    f"requires lines of at most {_QP_LINE} (email.encoders and "
                    "base64.encodebytes write them)",
                    part=path,
                )
        if encoding == "quoted-printable":
            long = _lengths_over(payload, _QP_LINE)
            if long:
                yield Problem(
                    "quoted-printable-line-too-long",
                    "error",
                    f"{content_type} is declared quoted-printable but "
                    f"{len(long)} of its lines {'is' if len(long) == 1 else 'are'} "
                    f"longer than {_QP_LINE} characters (the longest has "
                    f"{max(long)}); RFC 2045 6.7 requires encoded lines of at most "
                    f"{_QP_LINE}, with soft line breaks ('=' at the end) to split "
                    "longer ones"
                    + (_PYTHON_QP_HINT if max(long) <= _PYTHON_QP_LINE else ""),
                    part=path,
                )
        if maintype == "text" and isinstance(charset, str) and _known(charset):
            data = part.get_payload(decode=True) if decodes else None
            mismatch = (
                _not_in_charset(data, charset) if isinstance(data, bytes) else None
            )
            if mismatch is not None:
                yield Problem(
                    "charset-mismatch",
                    "error",
                    f"{content_type} declares charset {charset!r} but its text is "
                    f"not {charset}: {mismatch}; readers show '\ufffd' or garbled "
                    "text (declare the charset the text is in, or encode it in "
                    "the one declared)",
                    part=path,
                )
        is_attachment = disposition == "attachment" or (
            maintype not in ("text", "message", "multipart")
            and part.get("Content-ID") is None
        )
        if is_attachment and not part.get_filename() and id(part) not in protocol:
            # "an application/pdf", "an image/png", "an x-..." (said "ex").
            article = "an" if content_type[:1] in "aeioux" else "a"
            yield Problem(
                "attachment-without-filename",
                "warning",
                f"{article} {content_type} attachment without a filename; readers show "
                "it as 'noname' or 'ATT00001'",
                part=path,
            )
    if has_html and not has_text:
        what = (
            "an empty text/plain alternative"
            if empty_text
            else "no text/plain alternative"
        )
        yield Problem(
            "html-only",
            "warning",
            f"an HTML body with {what}; spam filters score HTML-only mail "
            "higher and some readers show nothing",
        )


def _check_alternative_order(
    part: Compat32Message, path: str | None
) -> Iterator[Problem]:
    """A multipart/alternative whose HTML (or a multipart/related holding
    it) comes before its text/plain: readers show the last alternative they
    can (RFC 2046 5.1.4), so the HTML is never seen, while the sink's own
    views (`Message.html`, the report) show it."""
    payload = part.get_payload()
    kinds = [
        child.get_content_type()
        for child in (payload if isinstance(payload, list) else ())
        if isinstance(child, Compat32Message)
    ]
    rich = [i for i, kind in enumerate(kinds) if kind in _RICH_ALTERNATIVES]
    plain = [i for i, kind in enumerate(kinds) if kind == "text/plain"]
    # The text last of them all (html, plain, html shows the last HTML).
    if rich and plain and plain[-1] > rich[-1]:
        yield Problem(
            "alternative-order",
            "warning",
            f"multipart/alternative has {kinds[rich[0]]} before text/plain: "
            "readers show the last alternative they can (RFC 2046 5.1.4), so "
            "they show the text and the HTML is never seen; put text/plain first",
            part=path,
        )


#: The alternatives a reader prefers to text/plain.
_RICH_ALTERNATIVES = frozenset({"text/html", "multipart/related"})


def _lengths_over(payload: str, limit: int) -> list[int]:
    """The lengths of ``payload``'s lines longer than ``limit`` characters
    (the CR of a CRLF not counted), in order."""
    lengths = (len(line.removesuffix("\r")) for line in payload.split("\n"))
    return [length for length in lengths if length > limit]


_BYTE_CHECKS: Sequence[Callable[[_Context], Iterable[Problem]]] = (
    _check_lines,
    _check_header_bytes,
    _check_body_bytes,
)
_CHECKS: Sequence[Callable[[_Context], Iterable[Problem]]] = (
    *_BYTE_CHECKS,
    _check_headers,
    _check_addresses,
    _check_message_id,
    _check_date,
    _check_mime,
    _check_nul,
)


# -- helpers ---------------------------------------------------------------------


def _known(charset: str) -> bool:
    try:
        codecs.lookup(charset)
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        return False
    return True


def _count(items: Sequence[object], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def format_problems(problems: Sequence[Problem], indent: str = "  ") -> str:
    """One problem per line, for failure messages and reports."""
    return "\n".join(f"{indent}{problem}" for problem in problems)


class _Reportable(Protocol):
    def summary(self) -> str: ...


_M = TypeVar("_M", bound=_Reportable)


def problems_report(
    messages: Sequence[_M],
    check: Callable[[_M], list[Problem]],
    expected: str,
    ignore: Iterable[str] = (),
) -> str | None:
    """A failure text: what was expected, then each message with problems
    (codes in ``ignore`` left out) and its problems; None if none has any."""
    skipped = frozenset(ignore)
    failing = []
    for message in messages:
        problems = [p for p in check(message) if p.code not in skipped]
        if problems:
            failing.append((message.summary(), format_problems(problems, "    ")))
    if not failing:
        return None
    head = (
        f"expected {expected}"
        + (f" (ignoring {', '.join(sorted(skipped))})" if skipped else "")
        + f"; {len(failing)} of {len(messages)} message"
        + ("s have" if len(messages) != 1 else " has")
        + " problems:"
    )
    return "\n".join([head, *grouped_report(failing)])


#: Past this many different findings, a report counts the rest (as the
#: mail listings of the other failure messages stop at 20 messages).
_GROUPS_LISTED = 20


def grouped_report(failing: Sequence[tuple[str, str]]) -> list[str]:
    """The lines of a report on ``failing`` messages, each a summary line
    (starting with its label, ``#3``) and its findings (indented lines).
    Messages with the same findings are one group, shown once with the
    first one's summary and the others' labels: a test that sends 200
    messages from one template got 200 copies of the same findings. Past
    `_GROUPS_LISTED` groups, the rest are counted."""
    groups: dict[str, list[str]] = {}
    for summary, findings in failing:
        groups.setdefault(findings, []).append(summary)
    lines = []
    for findings, summaries in list(groups.items())[:_GROUPS_LISTED]:
        lines.extend([summaries[0], findings])
        if len(summaries) > 1:
            others = [summary.split(" ", 1)[0] for summary in summaries[1:]]
            lines.append(
                f"  and the same for {_count(others, 'more message')}: "
                f"{join_shortened(others, 10)}"
            )
    rest = list(groups.values())[_GROUPS_LISTED:]
    if rest:
        labels = [summary.split(" ", 1)[0] for group in rest for summary in group]
        lines.append(
            f"... and {_count(labels, 'more message')} with other findings: "
            f"{join_shortened(labels, 10)}"
        )
    return lines


class _Lintable(_Reportable, Protocol):
    def lint(self) -> list[Problem]: ...


def unclean_report(
    messages: Sequence[_Lintable],
    severity: Severity = "error",
    ignore: Iterable[str] = (),
) -> str | None:
    """The failure text of `Mailbox.assert_clean` (and ``--smtpsink-lint``):
    problems at ``severity`` or worse, or None when there are none."""
    wanted = {
        "error": "mail without errors",
        "warning": "mail without warnings or errors",
        "info": "mail without any problem (info, warning or error)",
    }.get(severity, f"mail without {severity}s or worse")
    return problems_report(
        messages,
        lambda message: at_least(message.lint(), severity),
        wanted,
        ignore,
    )

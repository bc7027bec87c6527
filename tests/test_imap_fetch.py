"""FETCH items over raw bytes (_imap_fetch). The expected values were taken
from Dovecot 2.3.19 answering the same messages (see the report of the
h-imapcore branch); malformed corpus mail must never raise."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pytest_smtpsink._imap_fetch import (
    FetchItem,
    body_structure,
    envelope,
    fetch_values,
    parse_fetch_items,
    parse_structure,
    served_bytes,
    sets_seen,
)
from pytest_smtpsink._imap_syntax import (
    Atom,
    ImapSyntaxError,
    format_fetch,
    parse_command,
)

CORPUS = Path(__file__).parent / "corpus"


@dataclass(frozen=True)
class Raw:
    raw: bytes


@dataclass(frozen=True)
class Entry:
    message: Raw
    uid: int = 7
    flags: frozenset[str] = field(default_factory=frozenset)
    internal_date: datetime.datetime = datetime.datetime(
        2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=1))
    )


def fetch(raw: bytes, items: str, **kwargs: object) -> bytes:
    command = parse_command(b"a FETCH 1 " + items.encode() + b"\r\n")
    values = fetch_values(Entry(Raw(raw), **kwargs), parse_fetch_items(command.args[1]))  # type: ignore[arg-type]
    return format_fetch(1, values)


SIMPLE = (
    b'From: "Joe Q. Public" <john@example.com>\r\n'
    b"To: undisclosed-recipients:;\r\n"
    b'Subject: =?utf-8?q?h=C3=A9llo?= "x"\r\n'
    b"Content-Type: text/plain; Charset=UTF-8\r\n"
    b"\r\n"
    b"hello\r\nworld"
)

ALTERNATIVE = (
    b"From: Ann <ann@example.com>\r\n"
    b"To: Friends: bob@example.com, Cy <cy@example.com>;, dee@example.com (Dee D)\r\n"
    b"Subject: report\r\n"
    b"Content-Type: multipart/mixed; boundary=outer\r\n"
    b"\r\n"
    b"preamble\r\n"
    b"--outer\r\n"
    b"Content-Type: multipart/alternative; boundary=inner\r\n"
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"caf=C3=A9\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html\r\n"
    b"\r\n"
    b"<p>cafe</p>\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"Content-Disposition: attachment; filename=fwd.eml\r\n"
    b"\r\n"
    b"From: inner@example.com\r\n"
    b"Subject: inside\r\n"
    b"\r\n"
    b"inner body\r\n"
    b"--outer\r\n"
    b"Content-Type: application/pdf; name*0*=utf-8''a%20; name*1*=b.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-Language: en, de\r\n"
    b"Content-Location: http://x/y\r\n"
    b"Content-ID: <id@x>\r\n"
    b"Content-Description: the report\r\n"
    b"\r\n"
    b"JVBERg==\r\n"
    b"--outer--\r\n"
    b"epilogue\r\n"
)


def test_envelope_and_bodystructure_of_a_simple_message() -> None:
    # Dovecot 2.3.19 answers exactly this: a quote in the subject makes it a
    # literal; the RFC 2047 word stays encoded; group syntax is two entries.
    assert fetch(SIMPLE, "(ENVELOPE BODYSTRUCTURE BODY RFC822.SIZE)") == (
        b'* 1 FETCH (ENVELOPE (NIL {26}\r\n=?utf-8?q?h=C3=A9llo?= "x" '
        b'(("Joe Q. Public" NIL "john" "example.com")) '
        b'(("Joe Q. Public" NIL "john" "example.com")) '
        b'(("Joe Q. Public" NIL "john" "example.com")) '
        b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) NIL NIL NIL NIL) '
        b'BODYSTRUCTURE ("text" "plain" ("Charset" "UTF-8") NIL NIL "7bit" 12 1 NIL NIL NIL NIL) '
        b'BODY ("text" "plain" ("Charset" "UTF-8") NIL NIL "7bit" 12 1) '
        b"RFC822.SIZE 164)\r\n"
    )


def test_no_nul_from_any_header_reaches_a_response() -> None:
    # RFC 3501's literals hold CHAR8 (no NUL): a NUL in the Date, an
    # address, the Message-ID or a part's Content-ID went out in literals,
    # which a strict client's parser refuses. Dovecot writes U+FFFD.
    nul = b"\x00"
    raw = (  # each "~" a NUL
        b"Date: Mon, 1 Jan 2024 00:00:00 +0000~\r\n"
        b"From: a@exam~ple.com\r\nCc: c~@example.com\r\n"
        b"Message-ID: <id~@x>\r\nIn-Reply-To: <r~@x>\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b"--B\r\nContent-ID: <c~@x>\r\nContent-Description: d~\r\n"
        b"Content-Language: e~n\r\nContent-Location: l~\r\n"
        b"Content-Transfer-Encoding: 7b~it\r\n\r\nbody\r\n--B--\r\n"
    ).replace(b"~", nul)
    answer = fetch(raw, "(ENVELOPE BODYSTRUCTURE BODY)")
    assert nul not in answer
    assert b"{9}\r\n<id\xef\xbf\xbd@x>" in answer
    assert b"{14}\r\nexam\xef\xbf\xbdple.com" in answer
    assert b"{8}\r\n<c\xef\xbf\xbd@x>" in answer  # BODYSTRUCTURE


def test_envelope_gives_a_quoted_local_parts_value() -> None:
    # Dovecot 2.3.19's mailbox is the local part's value: the quotes are the
    # header's syntax ("x.y" read as x.y). The sink kept them.
    raw = (
        b'From: "john doe"@example.com, "a\\"b"@example.com\r\n'
        b'To: "x.y"@example.com\r\nSubject: q\r\n\r\nhi\r\n'
    )
    answer = fetch(raw, "(ENVELOPE)")
    assert b'(NIL NIL "john doe" "example.com")' in answer
    assert b'(NIL NIL {3}\r\na"b "example.com")' in answer  # a"b, as a literal
    assert b'((NIL NIL "x.y" "example.com"))' in answer
    # An empty one is written, and empty: not a missing one (Dovecot's "").
    empty = fetch(b'From: ""@example.com\r\n\r\nhi\r\n', "(ENVELOPE)")
    assert b'((NIL NIL "" "example.com"))' in empty


@pytest.mark.parametrize(
    ("content_type", "params"),
    [
        # Dovecot 2.3.19's answers: plain parameters as written, then the
        # RFC 2231 ones by name with their sections in order, then the
        # default charset.
        (b"text/plain; format=flowed", b'("format" "flowed" "charset" "us-ascii")'),
        (b"text/plain; name*1=b; name*0=a", b'("name" "ab" "charset" "us-ascii")'),
        (
            b"text/plain; zz*0=a; mm=x; aa*0=b",
            b'("mm" "x" "aa" "b" "zz" "a" "charset" "us-ascii")',
        ),
        (b"text/plain; name*=utf-8''x", b'("name*" "utf-8\'\'x" "charset" "us-ascii")'),
        (b"text/plain; charset*0=utf; charset*1=-8", b'("charset" "utf-8")'),
        # Sections that cannot be joined: listed one by one.
        (
            b"text/plain; charset*0=utf-8; charset*=iso-8859-1",
            b'("charset*0" "utf-8" "charset*0*" "iso-8859-1" "charset" "us-ascii")',
        ),
        (
            b"text/plain; name*0=a; name*2=c",
            b'("name*0" "a" "name*2" "c" "charset" "us-ascii")',
        ),
        (
            b"text/plain; name*0=a; name*0=b",
            b'("name*0" "a" "name*0" "b" "charset" "us-ascii")',
        ),
        # A quote never closed: the parameter is left out.
        (
            b'text/plain; format=flowed; charset="utf-8',
            b'("format" "flowed" "charset" "us-ascii")',
        ),
        (b'text/plain; name="a\\"', b'("charset" "us-ascii")'),  # \" is no end
        # Extended from the second section: "%" escaped, empty charset.
        (
            b"text/plain; name*0=a%; name*1*=%41",
            b'("name*" "\'\'a%25%41" "charset" "us-ascii")',
        ),
    ],
)
def test_bodystructure_parameters_as_dovecot_gives_them(
    content_type: bytes, params: bytes
) -> None:
    structure = body_structure(
        parse_structure(b"Content-Type: " + content_type + b"\r\n\r\nbody\r\n")
    )
    assert (
        structure
        == b'("text" "plain" ' + params + b' NIL NIL "7bit" 6 1 NIL NIL NIL NIL)'
    )


@pytest.mark.parametrize(
    ("written", "given"),
    [
        (b"base64 (comment)", b"base64"),
        (b"(before) 8BIT", b"8BIT"),
        (b"quoted-printable (a (nested) one)", b"quoted-printable"),
        (b"(only a comment)", b"7bit"),
        (b"base64 (a \\) b)", b"base64"),  # a quoted-pair in the comment
    ],
)
def test_bodystructure_gives_the_transfer_encoding_without_comments(
    written: bytes, given: bytes
) -> None:
    # RFC 2045 allows comments there; "base64 (comment)" left a client no
    # decoder it knew. Dovecot gives the encoding alone.
    structure = body_structure(
        parse_structure(b"Content-Transfer-Encoding: " + written + b"\r\n\r\nYWJj\r\n")
    )
    assert (
        structure
        == b'("text" "plain" ("charset" "us-ascii") NIL NIL "'
        + given
        + b'" 6 1 NIL NIL NIL NIL)'
    )


def test_bodystructure_of_nested_multiparts() -> None:
    structure = body_structure(parse_structure(ALTERNATIVE))
    assert structure == (
        b'((("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 9 0 NIL NIL NIL NIL)'
        b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 11 0 NIL NIL NIL NIL)'
        b' "alternative" ("boundary" "inner") NIL NIL NIL)'
        b'("message" "rfc822" NIL NIL NIL "7bit" 54 '
        b'(NIL "inside" ((NIL NIL "inner" "example.com")) ((NIL NIL "inner" "example.com")) '
        b'((NIL NIL "inner" "example.com")) NIL NIL NIL NIL NIL) '
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 0 NIL NIL NIL NIL) 3 '
        b'NIL ("attachment" ("filename" "fwd.eml")) NIL NIL)'
        b'("application" "pdf" ("name*" "utf-8\'\'a%20b.pdf") "<id@x>" "the report" "base64" 8 '
        b'NIL NIL ("en" "de") "http://x/y")'
        b' "mixed" ("boundary" "outer") NIL NIL NIL)'
    )
    assert body_structure(parse_structure(ALTERNATIVE), extensible=False).endswith(
        b' "mixed")'
    )


@pytest.mark.parametrize("boundary", [b"----=_Part_1_2.3", b"a?b/c:d"])
def test_an_unquoted_boundary_with_specials_is_read_as_python_reads_it(
    boundary: bytes,
) -> None:
    """Cut at its "=" (a token ends there), the boundary matched no line
    (each had more after it): the message was one empty part over IMAP,
    where Message showed its text."""
    raw = (
        b"Content-Type: multipart/mixed; boundary=" + boundary + b"\r\n\r\n"
        b"--" + boundary + b"\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n"
        b"--" + boundary + b"--\r\n"
    )
    assert fetch(raw, "BODY[1]") == b"* 1 FETCH (BODY[1] {10}\r\nfirst part)\r\n"
    assert b'"mixed" ("boundary" "' + boundary + b'")' in fetch(raw, "BODYSTRUCTURE")


def test_an_unquoted_boundary_ends_at_a_blank_as_on_dovecot() -> None:
    # Read to the next ";", "abc def" made no "--abc" line a delimiter, and
    # the two parts Dovecot finds one empty part (review helper-236 F1).
    raw = (
        b"Content-Type: multipart/mixed; boundary=abc def\r\n\r\n"
        b"--abc\r\n\r\none\r\n--abc\r\n\r\ntwo\r\n--abc--\r\n"
    )
    assert fetch(raw, "BODY[2]") == b"* 1 FETCH (BODY[2] {3}\r\ntwo)\r\n"


def test_each_multipart_on_its_parent_s_boundary_is_split_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Split again at every level it was nested in: 98 levels of one
    # boundary over 100,000 parts took 6 s to parse (0.1 s before), on the
    # sink's loop. A count of splits, not a time: once per multipart.
    from pytest_smtpsink import _imap_fetch

    split = _imap_fetch._split_multipart
    calls: list[int] = []

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return split(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_imap_fetch, "_split_multipart", counted)
    head = b"Content-Type: multipart/mixed; boundary=X\r\n\r\n"
    depth = 40
    data = b"Subject: x\r\n" + head + (b"--X\r\n" + head) * depth
    data += b"--X\r\n\r\nx\r\n" * 200
    structure = parse_structure(data)
    levels = 0
    while structure.children:
        structure, levels = structure.children[0], levels + 1
    assert levels == depth + 1
    # Once when its parent skips past it, once when it is parsed: the
    # cached split the second time (a call, not a scan).
    assert len(calls) <= 2 * (depth + 1)


def test_bodystructure_of_a_base64_message_rfc822_part_has_its_envelope() -> None:
    # As Dovecot 2.3.19 answers it (tests/test_imap_dovecot.py): the part is
    # a message whatever its encoding, read as it is (a header of base64
    # lines, no blank line, so the CRLF before the delimiter is counted).
    data = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n"
        b"\r\nU3ViamVjdDogeA0KDQpib2R5DQo=\r\n--b--\r\n"
    )
    assert body_structure(parse_structure(data), extensible=False) == (
        b'(("message" "rfc822" NIL NIL NIL "base64" 30 '
        b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) "
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) 1) "mixed")'
    )


def test_group_and_comment_addresses() -> None:
    env = envelope(parse_structure(ALTERNATIVE))
    assert (
        b'((NIL NIL "Friends" NIL)(NIL NIL "bob" "example.com")("Cy" NIL "cy" "example.com")'
        b'(NIL NIL NIL NIL)("Dee D" NIL "dee" "example.com"))'
    ) in env


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("BODY.PEEK[1]", b"BODY[1] {168}\r\n--inner\r\n"),
        ("BODY.PEEK[1.1]", b"BODY[1.1] {9}\r\ncaf=C3=A9)"),
        ("BODY.PEEK[1.2]", b"BODY[1.2] {11}\r\n<p>cafe</p>)"),
        ("BODY.PEEK[1.1.MIME]", b"BODY[1.1.MIME] {88}\r\nContent-Type: text/plain"),
        ("BODY.PEEK[2]", b"BODY[2] {54}\r\nFrom: inner@example.com\r\n"),
        (
            "BODY.PEEK[2.HEADER]",
            b"BODY[2.HEADER] {44}\r\nFrom: inner@example.com\r\nSubject: inside\r\n\r\n)",
        ),
        ("BODY.PEEK[2.TEXT]", b"BODY[2.TEXT] {10}\r\ninner body)"),
        ("BODY.PEEK[2.1]", b"BODY[2.1] {10}\r\ninner body)"),
        (
            "BODY.PEEK[2.HEADER.FIELDS (subject)]",
            b"BODY[2.HEADER.FIELDS (SUBJECT)] {19}\r\nSubject: inside\r\n\r\n)",
        ),
        ("BODY.PEEK[3]", b"BODY[3] {8}\r\nJVBERg==)"),
        ("BODY.PEEK[3.1]", b"BODY[3.1] {8}\r\nJVBERg==)"),
        ("BODY.PEEK[3.1.1]", b"BODY[3.1.1] {0}\r\n)"),
        ("BODY.PEEK[9]", b"BODY[9] {0}\r\n)"),
        (
            "BODY.PEEK[HEADER.FIELDS (Subject FROM)]",
            b"BODY[HEADER.FIELDS (SUBJECT FROM)] {48}\r\nFrom: Ann <ann@example.com>\r\nSubject: report\r\n\r\n)",
        ),
        (
            "BODY.PEEK[HEADER.FIELDS.NOT (To Content-Type subject)]",
            b"BODY[HEADER.FIELDS.NOT (TO CONTENT-TYPE SUBJECT)] {31}\r\nFrom: Ann <ann@example.com>\r\n\r\n)",
        ),
        ("BODY.PEEK[]<0.4>", b"BODY[]<0> {4}\r\nFrom)"),
        ("BODY.PEEK[TEXT]<10.7>", b"BODY[TEXT]<10> {7}\r\n--outer)"),
        ("BODY.PEEK[]<99999.10>", b"BODY[]<99999> {0}\r\n)"),
    ],
)
def test_sections(item: str, expected: bytes) -> None:
    # Sizes as Dovecot 2.3.19 answers them; note BODY[1]: Dovecot counts the
    # CRLF before "--outer" into a part that holds a multipart.
    assert expected in fetch(ALTERNATIVE, item)


def test_single_part_numbering_and_mime() -> None:
    # Dovecot: a non-multipart message is its own part 1; 1.MIME is the
    # message header; 1.1 and 2 do not exist (empty).
    assert (
        fetch(SIMPLE, "BODY.PEEK[1]")
        == b"* 1 FETCH (BODY[1] {12}\r\nhello\r\nworld)\r\n"
    )
    assert b"BODY[1.MIME] {152}\r\nFrom:" in fetch(SIMPLE, "BODY.PEEK[1.MIME]")
    assert fetch(SIMPLE, "BODY.PEEK[1.1]") == b"* 1 FETCH (BODY[1.1] {0}\r\n)\r\n"
    assert fetch(SIMPLE, "BODY.PEEK[2]") == b"* 1 FETCH (BODY[2] {0}\r\n)\r\n"


def test_simple_items_and_macros() -> None:
    out = fetch(
        SIMPLE, "(UID FLAGS INTERNALDATE RFC822.SIZE)", flags=frozenset({"\\Seen"})
    )
    assert out == (
        b'* 1 FETCH (UID 7 FLAGS (\\Seen) INTERNALDATE "02-Jan-2024 03:04:05 +0100" '
        b"RFC822.SIZE 164)\r\n"
    )
    assert [i.kind for i in parse_fetch_items(Atom("FAST"))] == [
        "FLAGS",
        "INTERNALDATE",
        "RFC822.SIZE",
    ]
    assert [i.kind for i in parse_fetch_items(Atom("all"))][-1] == "ENVELOPE"
    assert [i.kind for i in parse_fetch_items(Atom("FULL"))][-1] == "BODY"
    assert fetch(SIMPLE, "RFC822.HEADER").startswith(
        b"* 1 FETCH (RFC822.HEADER {152}\r\n"
    )
    assert (
        fetch(SIMPLE, "RFC822.TEXT")
        == b"* 1 FETCH (RFC822.TEXT {12}\r\nhello\r\nworld)\r\n"
    )
    assert fetch(SIMPLE, "RFC822") == b"* 1 FETCH (RFC822 {164}\r\n" + SIMPLE + b")\r\n"


@pytest.mark.parametrize(
    ("items", "seen"),
    [
        ("BODY[]", True),
        ("BODY[TEXT]<0.5>", True),
        ("RFC822", True),
        ("RFC822.TEXT", True),
        ("BODY.PEEK[]", False),
        ("RFC822.HEADER", False),
        ("(FLAGS RFC822.SIZE BODYSTRUCTURE ENVELOPE BODY)", False),
        ("(UID BODY.PEEK[] BODY[1.MIME])", True),
    ],
)
def test_which_items_set_seen(items: str, seen: bool) -> None:
    command = parse_command(b"a FETCH 1 " + items.encode() + b"\r\n")
    assert sets_seen(parse_fetch_items(command.args[1])) is seen


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ("(FLAGS BINARY[1])", "unknown FETCH data item: BINARY"),
        ("BODY[MIME]", r"MIME needs a part number"),
        ("BODY[1.2.]", "invalid body section"),
        ("BODY[0]", "invalid body section"),
        ("BODY[HEADER.FIELDS]", "needs a list of field names"),
        ("BODY[HEADER.FIELDS ()]", "at least one field name"),
        ("BODY[]<0.0>", "a partial of 0 octets"),
        # Found by a fuzz run: a 33-bit number, and parentheses among the
        # field names (dropped without a word), were taken.
        ("BODY[]<4294967296.1>", r"a partial's numbers are at most 4294967295"),
        ("BODY[]<0.9999999999>", r"a partial's numbers are at most 4294967295"),
        ("BODY[HEADER.FIELDS (((x)))]", r"invalid field names in \[HEADER"),
        ("BODY[HEADER.FIELDS (x (y))]", r"invalid field names in \[HEADER"),
        # The check tried every split of the name's characters (2**n steps:
        # this one would have taken years of the server's time).
        ("BODY.PEEK[HEADER.FIELDS (" + "a" * 60 + "()]", r"invalid field names"),
        ("()", "at least one data item"),
        ('("FLAGS")', "a FETCH data item is an atom"),
        # Found by a fuzz run, both BAD on Dovecot: "[ ]" was read as "[]",
        # and an 8-bit field name was taken and echoed back.
        ("BODY.PEEK[ ]", r"invalid body section: \[ \]"),
        ("BODY[HEADER.FIELDS (S\u00fcbject)]", "8-bit text in an atom"),
    ],
)
def test_bad_fetch_items(items: str, message: str) -> None:
    command = parse_command(b"t FETCH 1 " + items.encode() + b"\r\n")
    with pytest.raises(ImapSyntaxError, match=message) as caught:
        parse_fetch_items(command.args[1], command.tag)
    assert caught.value.tag == "t"


def test_bare_lf_is_served_as_crlf() -> None:
    raw = b"Subject: lf\nFrom: a@b\n\nline one\nline two\r\n"
    assert served_bytes(SIMPLE) is SIMPLE  # no copy when nothing changes
    assert fetch(raw, "RFC822.SIZE") == b"* 1 FETCH (RFC822.SIZE 46)\r\n"
    assert fetch(raw, "BODY.PEEK[TEXT]") == (
        b"* 1 FETCH (BODY[TEXT] {20}\r\nline one\r\nline two\r\n)\r\n"
    )


def test_nul_is_served_as_0x80() -> None:
    # IMAP forbids NUL in a literal; Dovecot sends 0x80 (same size).
    assert fetch(b"A: b\r\n\r\nx\x00y", "BODY.PEEK[TEXT]") == (
        b"* 1 FETCH (BODY[TEXT] {3}\r\nx\x80y)\r\n"
    )


def test_whitespace_in_subject_is_cleaned_as_dovecot_does() -> None:
    raw = b"Subject: a\r\n\tb  c \r\n\r\nx"
    assert b"ENVELOPE (NIL {5}\r\na b c NIL" in fetch(raw, "ENVELOPE")


def test_sender_and_reply_to_default_to_from() -> None:
    env = envelope(parse_structure(b"From: a@b\r\nSender:\r\n\r\n"))
    assert env.count(b'((NIL NIL "a" "b"))') == 3


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.eml")), ids=lambda p: p.name)
def test_corpus_never_raises_and_loses_no_byte(path: Path) -> None:
    raw = path.read_bytes()
    items = "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY BODY.PEEK[1.MIME] BODY.PEEK[2.1] BODY.PEEK[1.HEADER] BODY.PEEK[HEADER.FIELDS (FROM)])"
    assert fetch(raw, items).startswith(b"* 1 FETCH (UID 7 ")
    assert fetch(raw, "BODY.PEEK[]") == (
        b"* 1 FETCH (BODY[] {%d}\r\n" % len(served_bytes(raw))
        + served_bytes(raw).replace(b"\x00", b"\x80")
        + b")\r\n"
    )


def test_nesting_beyond_the_limit_becomes_an_opaque_leaf() -> None:
    structure = body_structure(
        parse_structure((CORPUS / "nested_rfc822_1000.eml").read_bytes())
    )
    # Dovecot 2.3: 99 message/rfc822 levels, then application/octet-stream.
    assert structure.count(b'"message" "rfc822"') == 99
    assert (
        b'("application" "octet-stream" NIL NIL NIL "7bit" 45935 NIL NIL NIL NIL)'
        in structure
    )


def test_fetch_item_is_hashable_and_named() -> None:
    command = parse_command(
        b"a FETCH 1 BODY.PEEK[1.2.HEADER.FIELDS.NOT (X-A)]<5.6>\r\n"
    )
    (item,) = parse_fetch_items(command.args[1])
    assert item == FetchItem("BODY[]", item.section, peek=True, partial=(5, 6))
    assert item.section is not None
    assert item.section.name == "1.2.HEADER.FIELDS.NOT (X-A)"


def test_header_fields_not_keeps_lines_that_are_no_field() -> None:
    # As Dovecot (tests/test_imap_dovecot_corpus.py, garbage_headers): a
    # leading folded line, a line without a colon and ":x" name no field, so
    # no HEADER.FIELDS asks for them and every HEADER.FIELDS.NOT keeps them.
    odd = b"  folded\r\nFrom: a@b\r\nno colon\r\n:x\r\nSubject: s\r\n\r\nbody\r\n"
    assert fetch(odd, "BODY.PEEK[HEADER.FIELDS.NOT (FROM)]") == (
        b"* 1 FETCH (BODY[HEADER.FIELDS.NOT (FROM)] {38}\r\n"
        b"  folded\r\nno colon\r\n:x\r\nSubject: s\r\n\r\n)\r\n"
    )
    assert fetch(odd, "BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)]") == (
        b"* 1 FETCH (BODY[HEADER.FIELDS (FROM SUBJECT)] {25}\r\n"
        b"From: a@b\r\nSubject: s\r\n\r\n)\r\n"
    )

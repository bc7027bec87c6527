"""SEARCH keys (_imap_search): every RFC 3501 key, CHARSET, RFC 2047 and
transfer-decoded matching, and SEARCH versus UID SEARCH answers."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

import pytest

from pytest_smtpsink._imap_search import (
    BadCharset,
    Candidate,
    SearchResult,
    decode_words,
    parse_search,
    search,
)
from pytest_smtpsink._imap_syntax import (
    CommandReader,
    ImapSyntaxError,
    NeedLiteral,
    parse_command,
)

UTC = datetime.timezone.utc


@dataclass(frozen=True)
class Raw:
    raw: bytes


@dataclass(frozen=True)
class Entry:
    message: Raw
    uid: int
    flags: frozenset[str] = field(default_factory=frozenset)
    internal_date: datetime.datetime = datetime.datetime(1994, 2, 1, 12, 0, tzinfo=UTC)


ONE = (
    b"From: Smith <smith@example.com>\r\n"
    b"To: ann@example.com\r\n"
    b"Cc: =?utf-8?q?J=C3=BCrgen?= <j@example.com>\r\n"
    b"Date: Tue, 01 Feb 1994 23:30:00 -0500\r\n"
    b"Subject: =?utf-8?b?Q2Fmw6k=?= report\r\n"
    b"X-Ticket: 42\r\n"
    b"\r\n"
    b"plain body text\r\n"
)
TWO = (
    b"From: ann@example.com\r\n"
    b"To: bob@example.com\r\n"
    b"Bcc: hidden@example.com\r\n"
    b"Date: Thu, 03 Feb 1994 08:00:00 +0000\r\n"
    b"Subject: hello\r\n"
    b"Content-Type: multipart/alternative; boundary=b\r\n"
    b"\r\n"
    b"--b\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"na=EFve caf=E9\r\n"
    b"--b\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"PHA+R3LDvMOfZTwvcD4=\r\n"
    b"--b--\r\n"
)
THREE = b"Subject: no date\r\n\r\n" + b"x" * 500 + b"\r\n"

FOLDER = [
    Candidate(
        1,
        Entry(Raw(ONE), uid=10, flags=frozenset({"\\Seen", "\\Flagged", "$Work"})),
        recent=False,
    ),
    Candidate(
        2,
        Entry(
            Raw(TWO),
            uid=20,
            flags=frozenset({"\\Answered", "\\Draft"}),
            internal_date=datetime.datetime(1994, 2, 3, 0, 0, tzinfo=UTC),
        ),
        recent=True,
    ),
    Candidate(
        3,
        Entry(
            Raw(THREE),
            uid=35,
            flags=frozenset({"\\Deleted", "\\Seen"}),
            internal_date=datetime.datetime(1994, 2, 5, 0, 0, tzinfo=UTC),
        ),
        recent=True,
    ),
]


def run(keys: bytes, *literals: bytes) -> list[int]:
    """Sequence numbers matching ``keys`` (parsed as a real command)."""
    reader = CommandReader()
    step = reader.feed_line(b"t SEARCH " + keys + b"\r\n")
    for literal in literals:
        assert isinstance(step, NeedLiteral)
        reader.feed_literal(literal)
        step = reader.feed_line(b"\r\n")
    assert not isinstance(step, NeedLiteral)
    return search(parse_search(step.args, step.tag), FOLDER).sequence_numbers


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (b"ALL", [1, 2, 3]),
        (b"ANSWERED", [2]),
        (b"UNANSWERED", [1, 3]),
        (b"DELETED", [3]),
        (b"UNDELETED", [1, 2]),
        (b"DRAFT", [2]),
        (b"UNDRAFT", [1, 3]),
        (b"FLAGGED", [1]),
        (b"UNFLAGGED", [2, 3]),
        (b"SEEN", [1, 3]),
        (b"UNSEEN", [2]),
        (b"RECENT", [2, 3]),
        (b"OLD", [1]),
        (b"NEW", [2]),
        (b"KEYWORD $work", [1]),
        (b"UNKEYWORD $Work", [2, 3]),
        (b"BEFORE 3-Feb-1994", [1]),
        (b"ON 3-Feb-1994", [2]),
        (b"SINCE 3-Feb-1994", [2, 3]),
        # SENT* use the Date header's own day (1 Feb at -0500), ignoring
        # the zone as RFC 3501 says; no Date header matches none.
        # No Date header: the epoch's day, as Dovecot (the corpus test).
        (b"SENTBEFORE 2-Feb-1994", [1, 3]),
        (b"SENTON 1-Jan-1970", [3]),
        (b"SENTON 1-Feb-1994", [1]),
        (b"SENTSINCE 2-Feb-1994", [2]),
        (b"LARGER 480", [3]),
        (b"SMALLER 480", [1, 2]),
        (b'FROM "smith"', [1]),
        (b"FROM ANN@", [2]),
        (b"TO bob", [2]),
        (b"CC j\xc3\xbcrgen".replace(b"j\xc3\xbcrgen", b'"J\xc3\xbcrgen"'), [1]),
        (b"BCC hidden", [2]),
        (b'SUBJECT "caf\xc3\xa9 REP"', [1]),
        (b'SUBJECT ""', [1, 2, 3]),
        (b"HEADER X-Ticket 42", [1]),
        (b'HEADER x-ticket ""', [1]),
        (b'HEADER "X-Missing" ""', []),
        (b"BODY plain", [1]),
        (b'BODY "NA\xc3\x8fVE"', [2]),
        (b'BODY "gr\xc3\xbc\xc3\x9fe"', [2]),
        (b"BODY hello", []),
        (b"TEXT hello", [2]),
        (b"TEXT Smith", [1]),
        (b"2", [2]),
        (b"2:*", [2, 3]),
        (b"*", [3]),
        (b"1,3", [1, 3]),
        (b"UID 20:*", [2, 3]),
        (b"UID 999:*", [3]),
        (b"UID 11:19", []),
        (b"NOT SEEN", [2]),
        (b"OR ANSWERED FLAGGED", [1, 2]),
        (b"OR (SEEN FLAGGED) DRAFT", [1, 2]),
        (b"(SEEN) (UNFLAGGED)", [3]),
        (b'FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"', []),
        (b"CHARSET UTF-8 SUBJECT hello", [2]),
        (b"SUBJECT hello FROM ann", [2]),
        (b"SUBJECT hello FROM smith", []),
        (b'SUBJECT report CC "j\xc3\xbcrgen"', [1]),
        (b"charset us-ascii ALL", [1, 2, 3]),
    ],
)
def test_every_search_key(keys: bytes, expected: list[int]) -> None:
    assert run(keys) == expected


def test_non_ascii_term_as_a_literal() -> None:
    # IMAPClient sends non-ASCII terms as literals.
    term = "caf\u00e9".encode()
    assert run(b"CHARSET UTF-8 BODY {%d}" % len(term), term) == [2]


@pytest.mark.parametrize(
    ("charset", "term"),
    [
        # imap-tools' README example: charset="utf8", sent upper-cased.
        (b"UTF8", "caf\u00e9".encode()),
        (b"ISO-8859-1", "caf\u00e9".encode("latin-1")),
        (b"WINDOWS-1252", "caf\u00e9".encode("cp1252")),
        # Another name of ASCII reads 8-bit terms as US-ASCII does: as UTF-8.
        (b"ASCII", "caf\u00e9".encode()),
    ],
)
def test_any_charset_a_codec_reads_is_taken(charset: bytes, term: bytes) -> None:
    # Refused with BADCHARSET, where Dovecot takes any charset iconv knows:
    # an application written from imap-tools' example failed its test.
    assert run(b"CHARSET %s BODY {%d}" % (charset, len(term)), term) == [2]


@pytest.mark.parametrize(
    "charset", [b"KLINGON-8", b"BASE64", b"ROT13", b"IDNA", b"PUNYCODE", b"UNDEFINED"]
)
def test_other_charsets_are_refused_with_badcharset(charset: bytes) -> None:
    # No codec, one that is no text encoding, or one of Python's own that
    # no mail names (a term they could not decode was a SERVERBUG).
    with pytest.raises(BadCharset) as caught:
        run(b"CHARSET %s ALL" % charset)
    assert caught.value.response_code == "BADCHARSET (US-ASCII UTF-8)"


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (b"", "at least one search key"),
        (b"FROB", "unknown search key: FROB"),
        (b"FR\xffOB", r"unknown search key: FR\\xffOB$"),  # not '\udcff'
        (b"LARGER 99999999999999999999", "LARGER takes a number"),
        (b"FROM", "missing the string after FROM"),
        (b"SINCE yesterday", "invalid date"),
        (b"LARGER x", "LARGER takes a number"),
        # Digits to str.isdigit(), no ASCII number.
        ("LARGER \u00b2".encode(), "LARGER takes a number"),
        ("SMALLER \u0661".encode(), "SMALLER takes a number"),
        (b"OR SEEN", "missing a search key"),
        (b"()", "empty parentheses"),
        (b"UID x", "invalid sequence set"),
        # A broken set is named so, not an unknown key.
        (b"0", "invalid sequence set: '0'"),
        (b"2,,3", "invalid sequence set: '2,,3'"),
        (b"UID 0", "invalid sequence set: '0'"),
        (b'"SEEN"', "a string is not a search key"),
        (b"NOT " * 201 + b"ALL", "nested too deep"),
    ],
)
def test_bad_searches(keys: bytes, message: str) -> None:
    with pytest.raises(ImapSyntaxError, match=message) as caught:
        run(keys)
    assert caught.value.tag == "t"


def test_search_answers_sequence_numbers_uid_search_answers_uids() -> None:
    # smtp4dev #1519: SEARCH answered UIDs. The answer is chosen by the
    # command's name, so the server cannot mix them up.
    command = parse_command(b"t SEARCH SEEN\r\n")
    result = search(parse_search(command.args), FOLDER)
    assert result.response("SEARCH") == b"* SEARCH 1 3\r\n"
    assert result.response("UID SEARCH") == b"* SEARCH 10 35\r\n"
    assert SearchResult(()).response("SEARCH") == b"* SEARCH\r\n"
    with pytest.raises(ValueError, match="not a SEARCH command"):
        result.response("FETCH")


def test_decode_words_never_raises() -> None:
    assert decode_words(b"=?utf-8?q?a?= =?utf-8?q?b?=") == "ab"
    assert decode_words(b"=?x-unknown?q?caf=C3=A9?=") == "caf\u00e9"
    assert decode_words(b"=?utf\xe9?b?!!!?= tail").endswith("tail")
    assert decode_words(b"=?utf-8?b?Q2Fmw6k?=") == "Caf\u00e9"


@pytest.mark.parametrize(
    "content_type",
    [b"", b"Content-Type: text/plain; charset=us-ascii\r\n"],
)
def test_utf8_words_in_8bit_text_labelled_us_ascii_are_found(
    content_type: bytes,
) -> None:
    # Read as US-ASCII, "Gr\xfc\xdfe" was "Gr\ufffd\ufffd..." and never
    # found (the Dovecot differential test shows Dovecot finds it).
    raw = b"Subject: x\r\n" + content_type + b"\r\nGr\xc3\xbc\xc3\x9fe\r\n"
    folder = [Candidate(1, Entry(Raw(raw), uid=1), recent=False)]
    step = parse_command('t SEARCH CHARSET UTF-8 BODY "gr\u00fc\u00dfe"\r\n'.encode())
    assert search(parse_search(step.args, step.tag), folder).sequence_numbers == [1]


def test_lists_nest_a_hundred_deep_and_no_deeper() -> None:
    # A query extended term by term (imap-tools' AND(AND(...), ...)) nests
    # one list per term; 20 levels were the limit.
    def nested(levels: int) -> bytes:
        return b"(" * levels + b"SEEN" + b" NOT DRAFT)" * levels

    assert run(nested(100)) == [1, 3]
    assert run(b"NOT (" * 99 + b"DRAFT" + b")" * 99) == [1, 3]
    with pytest.raises(ImapSyntaxError, match="lists nested deeper than 100"):
        run(nested(101))


def test_or_chains_of_any_length_are_one_level() -> None:
    # imap-tools writes "any of these Message-IDs" as OR OR ... a b c: each
    # OR counted as a level of nesting, 51 of them were "nested too deep"
    # (Dovecot serves them).
    tickets = [b"HEADER X-Ticket %d" % n for n in range(1, 301)]
    left = b"OR " * 300 + b" ".join(tickets) + b" DRAFT"
    right = b"".join(b"OR " + ticket + b" " for ticket in tickets) + b"DRAFT"
    mixed = b"OR OR FLAGGED DELETED OR SEEN " + b"NOT OR DRAFT ANSWERED"
    assert run(left) == [1, 2]
    assert run(right) == [1, 2]
    assert run(mixed) == [1, 3]
    with pytest.raises(ImapSyntaxError, match="missing a search key"):
        run(b"OR OR FLAGGED DELETED")


def _one(raw: bytes, keys: bytes) -> bool:
    folder = [Candidate(1, Entry(Raw(raw), uid=1), recent=False)]
    step = parse_command(b"t SEARCH " + keys + b"\r\n")
    return search(parse_search(step.args, step.tag), folder).sequence_numbers == [1]


BOUNCE = (
    b"Subject: Undelivered Mail Returned to Sender\r\n"
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=r\r\n"
    b"\r\n"
    b"--r\r\nContent-Type: text/plain\r\n\r\nYour mail could not be delivered.\r\n"
    b"--r\r\nContent-Type: message/delivery-status\r\n\r\n"
    b"Reporting-MTA: dns; mx.example.org\r\n\r\n"
    b"Final-Recipient: rfc822; gone@example.org\r\nAction: failed\r\n"
    b"Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\r\n"
    b"--r\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: =?utf-8?q?J=C3=B6rg?= <joerg@example.com>\r\nSubject: order\r\n\r\n"
    b"the order\r\n"
    b'--r\r\nContent-Type: application/pdf; name="invoice-42.pdf"\r\n'
    b'Content-Disposition: attachment; filename="invoice-42.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n"
    b"--r--\r\n"
)


@pytest.mark.parametrize(
    ("keys", "found"),
    [
        # A bounce's report part is text (RFC 3464), as Dovecot searches it.
        (b"BODY gone@example.org", True),
        (b'BODY "user unknown"', True),
        (b"TEXT 5.1.1", True),
        # TEXT is the header and the whole body: its parts' headers too.
        (b"TEXT invoice-42.pdf", True),
        (b"TEXT application/pdf", True),
        (b'TEXT "J\xc3\xb6rg"', True),
        (b"TEXT joerg@example.com", True),
        # BODY is the body's text: no header of a part, no PDF.
        (b"BODY invoice-42.pdf", False),
        (b"BODY joerg", False),
        (b"BODY %PDF", False),
        (b'BODY "the order"', True),
    ],
)
def test_text_and_body_search_every_part_as_dovecot(keys: bytes, found: bool) -> None:
    assert _one(BOUNCE, keys) is found


@pytest.mark.parametrize(
    ("header", "keys", "found"),
    [
        # SUBJECT squeezes each run of blanks to one space, as Dovecot...
        (b"Subject: order   number", b'SUBJECT "order number"', True),
        (b"Subject: order   number", b'SUBJECT "order   number"', False),
        # ... HEADER takes the value as written (a copy of it is found).
        (b"Subject: order   number", b'HEADER Subject "order   number"', True),
        (b"Subject: order   number", b'HEADER Subject "order number"', False),
        (b"X-H: order   number", b'HEADER X-H "order   number"', True),
        # Both unfold: a line break and its tab are one space.
        (b"X-H: order\r\n\tnumber", b'HEADER X-H "order number"', True),
        (b"Subject: order\r\n\tnumber", b'SUBJECT "order number"', True),
    ],
)
def test_header_keys_blanks_as_dovecot(header: bytes, keys: bytes, found: bool) -> None:
    assert _one(b"From: x@example.com\r\n" + header + b"\r\n\r\nb\r\n", keys) is found


def test_a_body_in_an_unknown_transfer_encoding_is_not_searched() -> None:
    # As Dovecot (tests/corpus/content_type_garbage.eml): the body cannot be
    # decoded, so BODY and TEXT do not look into it; its header still counts.
    unknown = (
        b"Subject: odd\r\nContent-Transfer-Encoding: x-unknown-cte\r\n\r\nbody\r\n"
    )
    folder = [Candidate(1, Entry(Raw(unknown), uid=1), recent=False)]
    reader = CommandReader()
    for keys, expected in [
        (b"BODY body", []),
        (b"TEXT body", []),
        (b"TEXT odd", [1]),
    ]:
        step = reader.feed_line(b"t SEARCH " + keys + b"\r\n")
        assert not isinstance(step, NeedLiteral)
        found = search(parse_search(step.args, step.tag), folder)
        assert found.sequence_numbers == expected, keys


@pytest.mark.parametrize(
    ("header", "term", "found"),
    [
        # A term across a folded line: the value is unfolded first.
        (b"Subject: quarterly\r\n report\r\n", b'"quarterly report"', True),
        (b"Subject: quarterly\r\n report\r\n", b"report", True),
        # Only in an encoded word.
        (b"Subject: =?utf-8?q?needle?=\r\n", b"NEEDLE", True),
        # Case folding beyond ASCII: "STRASSE" is how "Stra\xc3\x9fe" folds.
        (b"Subject: Stra\xc3\x9fe\r\n", b"strasse", True),
        # A bare LF header (served as CRLF) and a term in another field.
        (b"Subject: needle\n", b"NEEDLE", True),
        (b"Subject: hay\r\nX-Other: needle\r\n", b"needle", False),
        (b"Subject: hay\r\n", b"needle", False),
    ],
)
def test_subject_search_reads_decoded_unfolded_values(
    header: bytes, term: bytes, found: bool
) -> None:
    """A header key matches the decoded, unfolded, case-folded value, also
    where a quick look at the raw header bytes would miss it."""
    folder = [Candidate(1, Entry(Raw(header + b"\r\nbody\r\n"), uid=1))]
    reader = CommandReader()
    step = reader.feed_line(b"t SEARCH SUBJECT " + term + b"\r\n")
    assert not isinstance(step, NeedLiteral)
    result = search(parse_search(step.args, step.tag), folder)
    assert result.sequence_numbers == ([1] if found else [])

"""The IMAP command grammar (_imap_syntax): RFC 3501's own examples,
LITERAL+, the limits, malformed input, and fuzzing."""

from __future__ import annotations

import datetime
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_smtpsink._imap_syntax import (
    Atom,
    Command,
    CommandReader,
    ImapSyntaxError,
    NeedLiteral,
    ParenList,
    String,
    astring_out,
    decode_folder_name,
    encode_folder_name,
    format_date_time,
    format_fetch,
    format_flags,
    parse_command,
    parse_date,
    parse_date_time,
    parse_flags,
    parse_sequence_set,
    quote,
)


def read(reader: CommandReader, *pieces: bytes) -> Command:
    """Feed lines and literals in turn, checking each literal is announced."""
    step: Command | NeedLiteral | None = None
    for piece in pieces:
        if isinstance(step, NeedLiteral):
            assert len(piece) == step.size
            reader.feed_literal(piece)
            step = None
        else:
            step = reader.feed_line(piece)
    assert isinstance(step, Command)
    return step


@pytest.mark.parametrize(
    ("line", "tag", "name", "args"),
    [
        (
            b"a001 LOGIN SMITH SESAME\r\n",
            "a001",
            "LOGIN",
            (Atom("SMITH"), Atom("SESAME")),
        ),
        (b"abcd capability\r\n", "abcd", "CAPABILITY", ()),
        (
            b'A142 SELECT "INBOX"\r\n',
            "A142",
            "SELECT",
            (String(b"INBOX"),),
        ),
        (
            b"a003 fetch 12 (flags internaldate rfc822.size envelope)\r\n",
            "a003",
            "FETCH",
            (
                Atom("12"),
                ParenList(
                    (
                        Atom("flags"),
                        Atom("internaldate"),
                        Atom("rfc822.size"),
                        Atom("envelope"),
                    )
                ),
            ),
        ),
        (
            b"A999 UID FETCH 4827313:4828442 FLAGS\r\n",
            "A999",
            "UID FETCH",
            (Atom("4827313:4828442"), Atom("FLAGS")),
        ),
        (
            b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])\r\n",
            "A654",
            "FETCH",
            (
                Atom("2:4"),
                ParenList((Atom("FLAGS"), Atom("BODY[HEADER.FIELDS (DATE FROM)]"))),
            ),
        ),
        (
            b"A003 STORE 2:4 +FLAGS (\\Deleted)\r\n",
            "A003",
            "STORE",
            (Atom("2:4"), Atom("+FLAGS"), ParenList((Atom("\\Deleted"),))),
        ),
        (
            b'A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"\r\n',
            "A282",
            "SEARCH",
            (
                Atom("FLAGGED"),
                Atom("SINCE"),
                Atom("1-Feb-1994"),
                Atom("NOT"),
                Atom("FROM"),
                String(b"Smith"),
            ),
        ),
        (b'A101 LIST "" *\r\n', "A101", "LIST", (String(b""), Atom("*"))),
        (b"A1 LIST ~/Mail/ %\r\n", "A1", "LIST", (Atom("~/Mail/"), Atom("%"))),
        (b'a "\\\\x\\"y"\r\n'.replace(b'a "', b'a X "'), "a", "X", (String(b'\\x"y'),)),
        (b"t1 NOOP \r\n", "t1", "NOOP", ()),
        (b"t2 fetch 1 NIL\n", "t2", "FETCH", (Atom("1"), Atom("NIL"))),
        (b"t3 X ()\r\n", "t3", "X", (ParenList(()),)),
    ],
)
def test_parses_rfc3501_examples(
    line: bytes, tag: str, name: str, args: tuple[object, ...]
) -> None:
    command = CommandReader().feed_line(line)
    assert command == Command(tag, name, args)  # type: ignore[arg-type]


def test_nil_is_an_atom_that_knows_it() -> None:
    command = parse_command(b"a X NIL nil Nile\r\n")
    assert [arg.is_nil for arg in command.args if isinstance(arg, Atom)] == [
        True,
        True,
        False,
    ]


def test_synchronizing_literal_asks_for_continuation() -> None:
    reader = CommandReader()
    step = reader.feed_line(b"A003 APPEND saved-messages (\\Seen) {23}\r\n")
    assert step == NeedLiteral(23, synchronizing=True)
    assert reader.in_command
    reader.feed_literal(b"Subject: hi\r\n\r\nbody!\r\n\r\n"[:23])
    command = reader.feed_line(b"\r\n")
    assert isinstance(command, Command)
    assert command.name == "APPEND"
    assert command.args[2] == String(
        b"Subject: hi\r\n\r\nbody!\r\n\r\n"[:23], literal=True
    )
    assert command.literal_sizes == (23,)
    assert not reader.in_command


def test_the_command_so_far_is_what_came_before_the_awaited_literal() -> None:
    reader = CommandReader()
    reader.feed_line(b"a APPEND {7}\r\n")
    assert reader.command_so_far() == Command("a", "APPEND", ())
    reader.feed_literal(b"Archive")
    reader.feed_line(b' (\\Seen) "1-Jan-2000 00:00:00 +0000" {5+}\r\n')
    assert reader.command_so_far() == Command(
        "a",
        "APPEND",
        (
            String(b"Archive", literal=True),
            ParenList((Atom("\\Seen"),)),
            String(b"1-Jan-2000 00:00:00 +0000"),
        ),
    )
    # Asking does not change what the reader collects.
    reader.feed_literal(b"hello")
    command = reader.feed_line(b"\r\n")
    assert isinstance(command, Command)
    assert command.args[-1] == String(b"hello", literal=True)
    assert command.literal_sizes == (7, 5)
    # A syntax error before the literal is the one the end would raise.
    reader.feed_line(b'b APPEND INBOX "unterminated {5}\r\n')
    with pytest.raises(ImapSyntaxError, match="unterminated quoted string") as error:
        reader.command_so_far()
    assert error.value.tag == "b"
    with pytest.raises(RuntimeError, match="awaiting a literal"):
        CommandReader().command_so_far()


def test_non_synchronizing_literal_plus() -> None:
    reader = CommandReader()
    assert reader.feed_line(b"a LOGIN {3+}\r\n") == NeedLiteral(3, synchronizing=False)
    command = read(
        CommandReader(), b"a LOGIN {3+}\r\n", b"bob", b" {4}\r\n", b"pass", b"\r\n"
    )
    assert command.args == (String(b"bob", True), String(b"pass", True))


def test_literal_with_crlf_and_8bit_inside() -> None:
    command = read(
        CommandReader(),
        b"a SEARCH CHARSET UTF-8 TEXT {6}\r\n",
        "caf\u00e9\r".encode()[:5] + b"\n",
        b"\r\n",
    )
    assert command.args[3] == String(b"caf\xc3\xa9\n", literal=True)


def test_a_bracket_opens_a_section_only_after_body() -> None:
    # "[" is an atom's character (RFC 3501); only BODY[ and the like open a
    # section that runs to its "]" across spaces, lists and strings, a
    # literal given back as a quoted string.
    command = read(
        CommandReader(),
        b"a FETCH 1 (BODY.PEEK[HEADER.FIELDS ({3}\r\n",
        b'A"b',
        b' "c]" D)]<0.10> FLAGS)\r\n',
    )
    assert command.args[1] == ParenList(
        (Atom('BODY.PEEK[HEADER.FIELDS ("A\\"b" "c]" D)]<0.10>'), Atom("FLAGS"))
    )
    command = read(CommandReader(), b"a STORE 1 +FLAGS (a[b [c x]y)\r\n")
    assert command.args[2] == ParenList((Atom("a[b"), Atom("[c"), Atom("x]y")))


def test_an_atom_of_many_brackets_is_read_in_one_pass() -> None:
    # The atom so far was copied and upper-cased at every "[" (a line of
    # 64,000 took 1.6 s, and a command may be 1 MB of such lines, before
    # login); this one would take hours.
    reader = CommandReader()
    for n in range(15):
        start = b"a NOOP " if n == 0 else b" "
        step = reader.feed_line(start + b"x" + b"[" * 65_000 + b" {0+}\r\n")
        assert isinstance(step, NeedLiteral)
        reader.feed_literal(b"")
    command = reader.feed_line(b"\r\n")
    assert isinstance(command, Command)
    assert len(command.args) == 30


@pytest.mark.parametrize(
    ("line", "tag", "message"),
    [
        (b"\r\n", None, "empty command line"),
        (b"+ x\r\n", None, "no valid tag"),
        (b"(a) NOOP\r\n", None, "no valid tag"),
        (b"a\r\n", "a", "missing command name"),  # a tag alone
        (b"a \r\n", "a", "missing command name"),
        (b"a 1x\r\n", "a", "invalid command name"),
        (b'a LOGIN "unterminated\r\n', "a", "unterminated quoted string"),
        (b'a LOGIN "bad \\q escape"\r\n', "a", "backslash"),
        (b"a FETCH 1 (FLAGS\r\n", "a", "unterminated list"),
        (b"a FETCH 1 FLAGS)\r\n", "a", r"expected a space at byte 15, found '\)'"),
        (b"a FETCH 1 BODY[HEADER\r\n", "a", r"unmatched '\[' after BODY: expected"),
        (b'a FETCH 1 BODY[HEADER.FIELDS ("X)]\r\n', "a", "unterminated quoted"),
        (
            b"a FETCH  1\r\n",
            "a",
            "a second space at byte 8: arguments are separated by one",
        ),
        (b"a FETCH 1 \x00\r\n", "a", "unexpected byte 0x00 at byte 10"),
        (b"a UID\r\n", "a", "expected a space"),
        (b"a X {x}\r\n", "a", "malformed literal"),
        (b'a X "nul\x00"\r\n', "a", "NUL"),
    ],
)
def test_malformed_commands_name_the_problem(
    line: bytes, tag: str | None, message: str
) -> None:
    with pytest.raises(ImapSyntaxError, match=message) as caught:
        CommandReader().feed_line(line)
    assert caught.value.tag == tag


def test_literal_too_large_is_refused_before_reading_it() -> None:
    reader = CommandReader(max_literal=100)
    with pytest.raises(
        ImapSyntaxError, match=r"literal too large \(101 bytes, at most 100\)"
    ) as caught:
        reader.feed_line(b"a1 APPEND INBOX {101}\r\n")
    assert caught.value.tag == "a1"
    assert (
        not caught.value.disconnect
    )  # the client waits for "+": nothing is on its way
    assert not reader.in_command
    assert isinstance(reader.feed_line(b"a2 NOOP\r\n"), Command)


def test_refused_non_synchronizing_literal_means_disconnect() -> None:
    with pytest.raises(ImapSyntaxError, match="literal too large") as caught:
        CommandReader(max_literal=10).feed_line(b"a APPEND INBOX {11+}\r\n")
    assert caught.value.disconnect


def test_a_command_too_long_with_its_literals_is_refused_before_the_literal() -> None:
    # Each literal under its own limit, the command over its total: refused
    # when the literal that would pass it is announced, before it is read.
    reader = CommandReader(max_literal=100, max_command=230)
    step = reader.feed_line(b"a1 SEARCH TEXT {100}\r\n")
    assert isinstance(step, NeedLiteral)
    reader.feed_literal(b"x" * 100)
    with pytest.raises(
        ImapSyntaxError,
        match=r"command too long \(235 bytes with its literals, at most 230\)",
    ) as caught:
        # 22 + 100 + 13 bytes so far, and 100 more announced.
        reader.feed_line(b" TEXT {100}\r\n")
    assert caught.value.tag == "a1"
    assert not caught.value.disconnect  # the client waits for "+"
    assert not reader.in_command
    assert isinstance(reader.feed_line(b"a2 NOOP\r\n"), Command)
    # A non-synchronizing literal is on its way: the connection cannot go on.
    reader.feed_line(b"a3 SEARCH TEXT {100+}\r\n")
    reader.feed_literal(b"x" * 100)
    with pytest.raises(ImapSyntaxError, match="command too long") as caught:
        reader.feed_line(b" TEXT {100+}\r\n")
    assert caught.value.disconnect


def test_a_command_of_many_literals_parses_them_all() -> None:
    # The parser's end-of-command test copied the rest of the command for
    # every argument: quadratic, minutes for a megabyte of literals.
    reader = CommandReader()
    step = reader.feed_line(b"a SEARCH TEXT {1}\r\n")
    for n in range(2000):
        assert isinstance(step, NeedLiteral)
        reader.feed_literal(b"%d" % (n % 10))
        step = reader.feed_line(b" TEXT {1}\r\n" if n < 1999 else b"\r\n")
    assert isinstance(step, Command)
    assert len(step.args) == 4000
    assert step.literal_sizes == (1,) * 2000


def test_huge_literal_size_does_not_overflow() -> None:
    with pytest.raises(ImapSyntaxError, match="literal too large"):
        CommandReader().feed_line(b"a APPEND INBOX {99999999999999999999}\r\n")


def test_line_limit() -> None:
    reader = CommandReader(max_line=50)
    with pytest.raises(
        ImapSyntaxError, match=r"line too long \(61 bytes, at most 50\)"
    ) as caught:
        reader.feed_line(b"tag1 NOOP " + b"x" * 49 + b"\r\n")
    assert caught.value.tag == "tag1"


def test_nesting_limit() -> None:
    with pytest.raises(ImapSyntaxError, match="nested deeper than 3"):
        CommandReader(max_depth=3).feed_line(b"a X ((((x))))\r\n")
    assert CommandReader(max_depth=3).feed_line(b"a X (((x)))\r\n")


def test_argument_limit() -> None:
    with pytest.raises(ImapSyntaxError, match="too many arguments"):
        CommandReader(max_args=5).feed_line(b"a X 1 2 3 4 5 6\r\n")


def test_wrong_literal_length_is_an_error() -> None:
    reader = CommandReader()
    reader.feed_line(b"a X {5}\r\n")
    with pytest.raises(
        ImapSyntaxError, match="literal of 3 bytes where 5 were announced"
    ):
        reader.feed_literal(b"abc")


def test_sequence_sets() -> None:
    s = parse_sequence_set("1:*,3,5:7")
    assert s.members(4) == [1, 2, 3, 4]
    s = parse_sequence_set("2,4:7,9,12:*")
    assert s.members(15) == [2, 4, 5, 6, 7, 9, 12, 13, 14, 15]
    assert parse_sequence_set("*:4").members(10) == [4, 5, 6, 7, 8, 9, 10]
    assert parse_sequence_set("3:1").members(10) == [1, 2, 3]
    # RFC 3501: a UID range of 559:* includes the last UID even below 559.
    assert parse_sequence_set(Atom("559:*")).contains(100, largest=100)
    assert parse_sequence_set("5").exceeds(4)
    assert not parse_sequence_set("1:*").exceeds(5)
    assert parse_sequence_set("1:*").exceeds(0)  # nothing to number yet


@pytest.mark.parametrize(
    "text", ["", "0", "1:", ":2", "1,,2", "a", "1:2:3", "-1", "$", "4294967296"]
)
def test_invalid_sequence_sets(text: str) -> None:
    with pytest.raises(ImapSyntaxError, match="sequence set"):
        parse_sequence_set(text, "t")


def test_flags() -> None:
    command = parse_command(b"a STORE 1 +FLAGS (\\seen \\DELETED $Label)\r\n")
    assert parse_flags(command.args[2]) == {"\\Seen", "\\Deleted", "$Label"}
    assert parse_flags(Atom("\\Flagged")) == {"\\Flagged"}
    assert parse_flags([Atom("\\Seen"), Atom("\\Draft")]) == {"\\Seen", "\\Draft"}
    with pytest.raises(ImapSyntaxError, match="a flag is an atom"):
        parse_flags(ParenList((String(b"x"),)))
    with pytest.raises(ImapSyntaxError, match="invalid flag"):
        parse_flags(Atom("\\"))


def test_dates() -> None:
    assert parse_date(Atom("1-Feb-1994")) == datetime.date(1994, 2, 1)
    assert parse_date(String(b"01-feb-1994")) == datetime.date(1994, 2, 1)
    moment = parse_date_time(String(b"17-Jul-1996 02:44:25 -0700"))
    assert moment == datetime.datetime(
        1996, 7, 17, 9, 44, 25, tzinfo=datetime.timezone.utc
    )
    assert parse_date_time(" 7-Jul-1996 02:44:25 +0000").day == 7
    for bad in ("31-Feb-1994", "1-Foo-1994", "1994-02-01"):
        with pytest.raises(ImapSyntaxError, match="invalid date"):
            parse_date(bad)
    with pytest.raises(ImapSyntaxError, match="invalid date-time"):
        parse_date_time("17-Jul-1996 25:44:25 -0700")


def test_response_strings() -> None:
    assert quote("INBOX") == b'"INBOX"'
    assert quote("") == b'""'
    assert quote('say "hi"') == b'{8}\r\nsay "hi"'
    assert quote("a\\b") == b"{3}\r\na\\b"
    assert quote("line\r\nbreak") == b"{11}\r\nline\r\nbreak"
    assert quote("caf\u00e9") == b"{5}\r\ncaf\xc3\xa9"
    assert astring_out("INBOX") == b"INBOX"
    assert astring_out("My Folder") == b'"My Folder"'
    assert astring_out("NIL") == b'"NIL"'


def test_response_flags_dates_and_fetch() -> None:
    assert (
        format_flags({"$Label", "\\Seen", "\\Answered"})
        == b"(\\Answered \\Seen $Label)"
    )
    assert format_flags(set(), recent=True) == b"(\\Recent)"
    zone = datetime.timezone(-datetime.timedelta(hours=7))
    moment = datetime.datetime(1996, 7, 7, 2, 44, 25, tzinfo=zone)
    assert format_date_time(moment) == b'"07-Jul-1996 02:44:25 -0700"'
    assert (
        format_fetch(12, [(b"UID", b"7"), (b"FLAGS", b"()")])
        == b"* 12 FETCH (UID 7 FLAGS ())\r\n"
    )


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=60), min_size=1, max_size=4))
def test_fuzz_every_input_gives_a_command_or_our_error(lines: list[bytes]) -> None:
    reader = CommandReader(max_line=40, max_literal=30, max_depth=4, max_args=20)
    for line in lines:
        outcome = _outcome(reader, line, b"\r\n")
        if isinstance(outcome, ImapSyntaxError):
            assert outcome.text
            assert outcome.tag is None or " " not in outcome.tag
        else:
            assert outcome.name == outcome.name.upper()


def _outcome(
    reader: CommandReader, line: bytes, rest: bytes
) -> Command | ImapSyntaxError:
    """What the reader makes of ``line`` (and ``rest`` after each literal)."""
    try:
        step = reader.feed_line(line)
        while isinstance(step, NeedLiteral):
            reader.feed_literal(b"x" * step.size)
            step = reader.feed_line(rest)
    except ImapSyntaxError as error:
        return error
    return step


ATOMS = st.sampled_from(
    [
        b"FETCH",
        b"1:*",
        b"NIL",
        b"(",
        b")",
        b'"q"',
        b'"',
        b"{3}",
        b"{2+}",
        b"[",
        b"]",
        b"\\Seen",
        b"BODY[TEXT]<0.5>",
        b" ",
        b"\\",
        b"\x00",
        b"\xff",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(ATOMS, max_size=25))
def test_fuzz_imap_shaped_input(parts: list[bytes]) -> None:
    line = b"a1 " + b" ".join(parts) + b"\r\n"
    outcome = _outcome(CommandReader(max_depth=4), line, b" X\r\n")
    if isinstance(outcome, ImapSyntaxError):
        assert outcome.tag in ("a1", None)
    else:
        assert outcome.tag == "a1"


# -- folder names: modified UTF-7 ----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "wire"),
    [
        ("INBOX", "INBOX"),
        ("Geschäftlich", "Gesch&AOQ-ftlich"),
        ("Tom & Jerry", "Tom &- Jerry"),
        ("ä&ä", "&AOQ-&-&AOQ-"),  # "&-" between two runs is not a run
        # RFC 3501 5.1.3's example, and a character outside the BMP.
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
        ("Post 📬", "Post &2D3c7A-"),
        ("tab\there", "tab&AAk-here"),
    ],
)
def test_folder_names_are_modified_utf7_on_the_wire(name: str, wire: str) -> None:
    assert encode_folder_name(name) == wire
    assert decode_folder_name(wire) == name


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        ("&Jjo!", "an '&' has no '-'"),
        ("Bad&AOQ", "an '&' has no '-'"),
        ("&AOQ=-", "&AOQ=- is not base64"),  # no padding in modified base64
        ("&AO-", "&AO- is not UTF-16 text"),  # an odd number of bytes
        # Names Dovecot refuses too: a folder has one name on the wire.
        ("&AGE-", "&AGE- encodes a character that stands for itself"),  # "a"
        ("&AOQ-&AOQ-", "two encoded runs in a row"),  # should be &AOQA5A-
        ("&2AA-", "&2AA- is not UTF-16 text"),  # a lone surrogate
        ("&3gHYPQ-", "&3gHYPQ- is not UTF-16 text"),  # surrogates swapped
        ("Entwürfe", "'Entw&APw-rfe' for this one"),
        ("a\tb", "printable 7-bit text"),
    ],
)
def test_a_name_that_is_not_modified_utf7_is_refused(wire: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)) as caught:
        decode_folder_name(wire)
    assert str(caught.value).isascii()  # it goes into a NO response


def test_bytes_that_were_not_utf8_get_no_wrong_hint() -> None:
    # b"Entw\xfcrfe" (Latin-1), decoded with surrogateescape as commands are.
    with pytest.raises(ValueError, match="not modified UTF-7") as caught:
        decode_folder_name(b"Entw\xfcrfe".decode("utf-8", "surrogateescape"))
    assert "for this one" not in str(caught.value)
    assert str(caught.value).isascii()


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_folder_name_survives_the_wire(name: str) -> None:
    wire = encode_folder_name(name)
    assert wire.isascii()
    assert wire.isprintable()
    assert decode_folder_name(wire) == name


def test_a_name_with_quotes_is_an_escaped_quoted_string() -> None:
    assert astring_out('Say "hi"') == b'"Say \\"hi\\""'
    assert astring_out("back\\slash") == b'"back\\\\slash"'
    assert astring_out("two words") == b'"two words"'


@pytest.mark.parametrize(
    ("offset", "shown"),
    [
        # Europe/Amsterdam's local mean time until 1937 (as zoneinfo has it).
        (datetime.timedelta(minutes=19, seconds=32), '"01-Jun-1900 11:40:28 +0000"'),
        (datetime.timedelta(seconds=-30), '"01-Jun-1900 12:00:30 +0000"'),
        (datetime.timedelta(hours=-7), '"01-Jun-1900 12:00:00 -0700"'),
    ],
)
def test_an_internaldate_whose_zone_has_seconds_is_shown_in_utc(
    offset: datetime.timedelta, shown: str
) -> None:
    # IMAP's zone is hours and minutes: the instant is kept, not the zone.
    moment = datetime.datetime(1900, 6, 1, 12, tzinfo=datetime.timezone(offset))
    assert format_date_time(moment) == shown.encode()


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("01-Jan-2000 24:00:00 +0000", "hour 24 is out of range (00-23)"),
        ("01-Jan-2000 00:60:00 +0000", "minute 60 is out of range (00-59)"),
        ("30-Jun-2000 23:59:60 +0000", "second 60 is out of range (00-59)"),
        ("31-Feb-2000 00:00:00 +0000", "Feb 2000 has 29 days"),
        ("29-Feb-1900 00:00:00 +0000", "Feb 1900 has 28 days"),
        ("00-Jan-2000 00:00:00 +0000", "day 00 is out of range (01-31)"),
        ("01-Jan-0000 00:00:00 +0000", "year 0000 is out of range (0001-9999)"),
        ("01-Jan-2000 00:00:00 +0060", "zone +0060: its minutes are 00-59"),
        ("01-Jan-2000 00:00:00 -2400", "zone -2400 is out of range (at most 2359)"),
    ],
)
def test_a_date_time_that_is_no_moment_says_why(text: str, why: str) -> None:
    with pytest.raises(ImapSyntaxError) as raised:
        parse_date_time(String(text.encode()))
    assert raised.value.text == f"invalid date-time {text!r}: {why}"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("31-Feb-2000", "Feb 2000 has 29 days"),
        ("31-Apr-2021", "Apr 2021 has 30 days"),
        ("0-Jan-2000", "day 0 is out of range (1-31)"),
        ("1-Jan-0000", "year 0000 is out of range (0001-9999)"),
    ],
)
def test_a_search_date_that_is_no_day_says_why(text: str, why: str) -> None:
    with pytest.raises(ImapSyntaxError) as raised:
        parse_date(Atom(text))
    assert raised.value.text == f"invalid date {text!r}: {why}"


# -- LIST patterns ----------------------------------------------------------------


def _list_match_reference(pattern: str, name: str) -> bool:
    """RFC 3501's LIST wildcards, the plain way (a row of booleans per
    pattern character), with INBOX's first five characters in any case:
    the oracle for the server's bit-parallel matcher."""
    fold = 5 if name.split("/", 1)[0] == "INBOX" else 0
    matched = [True] + [False] * len(name)
    for char in pattern:
        if char in "*%":
            row, running = [], False
            for j in range(len(name) + 1):
                if j and char == "%" and name[j - 1] == "/":
                    running = False  # % does not cross the delimiter
                running = running or matched[j]
                row.append(running)
        else:
            row = [False] + [
                matched[j]
                and (name[j] == char or (j < fold and name[j] == char.upper()))
                for j in range(len(name))
            ]
        matched = row
    return matched[-1]


_NAME_CHARS = st.sampled_from(["a", "b", "/", "I", "N", "B", "O", "X", "é"])
_PATTERN_CHARS = st.sampled_from(["a", "b", "/", "i", "N", "o", "x", "é", "*", "%"])


@settings(max_examples=2000, deadline=None)  # a busy machine pauses any example
@given(
    st.text(_PATTERN_CHARS, max_size=10),
    st.text(_NAME_CHARS, max_size=10),
    st.booleans(),
)
def test_list_patterns_match_as_the_rfc_says(
    pattern: str, name: str, under_inbox: bool
) -> None:
    from pytest_smtpsink._imap import _ListPattern

    name = "INBOX" + name if under_inbox else name
    assert _ListPattern(pattern).fullmatch(name) == _list_match_reference(pattern, name)

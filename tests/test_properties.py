"""Property-based tests (Hypothesis): whatever bytes a client sends, the sink
stays up, records the session and lets the next client deliver; whatever a
message holds, it round-trips byte-exact and every field reads.

One `SMTPSink` serves the whole module (not one per example). Exceptions that
escape into its event loop are caught by a loop exception handler, and
records at ERROR or above from any logger (asyncio, aiosmtpd's ``mail.log``)
by a logging handler: both must stay empty.
"""

from __future__ import annotations

import contextlib
import datetime
import email.header
import email.parser
import email.policy
import errno
import itertools
import logging
import re
import smtplib
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from test_corpus import read_every_field

from pytest_smtpsink import Mailbox, SMTPSink
from pytest_smtpsink._content import Content
from pytest_smtpsink._message import (
    Envelope,
    Headers,
    Message,
    _plain_header_items,
    decode_header,
    decode_header_text,
)
from pytest_smtpsink._mime import STDLIB_PARSEPARAM, parse_params
from pytest_smtpsink._smtp import RecordingSMTP, _refused_address, plain_angle_addr

SETTINGS = settings(
    max_examples=75,
    deadline=None,
    database=None,  # write nothing to disk
    suppress_health_check=[HealthCheck.too_slow],
)


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Watched:
    def __init__(self, sink: SMTPSink) -> None:
        self.sink = sink
        self.loop_errors: list[dict[str, Any]] = []
        self.log = _Errors()

    def check(self) -> None:
        assert self.sink.running
        assert not self.loop_errors, self.loop_errors
        assert not self.log.records, [r.getMessage() for r in self.log.records]


@pytest.fixture(scope="module")
def watched() -> Iterator[Watched]:
    with SMTPSink() as sink:
        state = Watched(sink)
        assert sink._loop is not None
        sink._loop.set_exception_handler(
            lambda loop, context: state.loop_errors.append(context)
        )
        root = logging.getLogger()
        root.addHandler(state.log)
        try:
            yield state
        finally:
            root.removeHandler(state.log)
        state.check()


def deliver_normally(sink: SMTPSink) -> None:
    view = sink.view()
    subject = f"canary {uuid.uuid4()}"
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        client.sendmail(
            "a@example.com", ["b@example.com"], f"Subject: {subject}\r\n\r\nhi\r\n"
        )
    assert view.wait_for(subject=subject, timeout=10).subject == subject


SMTP_WORDS = [
    b"EHLO x\r\n",
    b"HELO x\r\n",
    b"MAIL FROM:<a@example.com>\r\n",
    b"MAIL FROM:<>\r\n",
    b"RCPT TO:<b@example.com>\r\n",
    b"DATA\r\n",
    b".\r\n",
    b"..\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n.\r\n",
    b"\n.\n",
    b"\r.\r",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY x\r\n",
    b"HELP\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH LOGIN\r\n",
    b"*\r\n",
    b"STARTTLS\r\n",
    b"QUIT\r\n",
    b"\x00",
    b"\xff\xfe",
    b"MAIL FROM:<a@example.com> SIZE=99999999999\r\n",
    b"MAIL FROM:<a@example.com> BODY=8BITMIME SMTPUTF8\r\n",
    b"x" * 1100,
    b"\r\n" * 3,
]
chunks = st.lists(
    st.one_of(st.sampled_from(SMTP_WORDS), st.binary(max_size=300)), max_size=25
)


@SETTINGS
@given(stream=chunks)
def test_any_byte_stream_as_a_session(watched: Watched, stream: list[bytes]) -> None:
    sink = watched.sink
    view = sink.view()
    with socket.create_connection((sink.host, sink.port), timeout=10) as sock:
        local = sock.getsockname()[:2]
        try:
            for chunk in stream:
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):  # until the server closes
                pass
        except (ConnectionResetError, BrokenPipeError):
            pass  # the server may close first (e.g. too many bad commands)
        except OSError as error:
            # ...and once it has reset the connection (after QUIT, with bytes
            # still unread), shutdown() finds it gone (seen under load).
            if error.errno != errno.ENOTCONN:
                raise

    def ended() -> bool:
        return any(s.peer == local and s.end is not None for s in view.sessions)

    view.wait_until(ended, timeout=10)
    (session,) = [s for s in view.sessions if s.peer == local]
    assert session.transcript[0].kind == "greeting"
    session.format_transcript().encode("utf-8")  # printable, whatever came in
    repr(session)
    for message in view.messages:
        read_every_field(message)
    deliver_normally(sink)
    watched.check()


# Message lines: no LF (a bare LF then a dot is stuffed by smtplib but, being
# no line start for SMTP, not unstuffed by the server), a bare CR allowed,
# at most 998 bytes. Some lines are MIME-ish to reach the parsers' corners.
MIME_LINES = [
    b"Content-Type: multipart/mixed; boundary=x",
    b"--x",
    b"--x--",
    b"",
    b"Content-Type: text/plain; charset=x-unknown",
    b"Content-Type: text/html",
    b"Content-Transfer-Encoding: base64",
    b"Content-Transfer-Encoding: quoted-printable",
    b"Content-Disposition: attachment; filename*=utf-8''%E2%82%AC.bin",
    b"Subject: =?utf-8?b?w6k=?= =?bogus?q?x?=",
    b"From: A <a@example.com>",
    b"To: ,;<>@",
    b"Date: yesterday",
    b".",
    b"..",
    b".\r",
    b"Subject: \xe9\xff",
    b" folded",
    b"=ZZ=",
    # Shapes that once made a field raise (issue 13).
    b"Subject: =?\xe9?q?x?=",
    b"To: Zo\xc3\xab <zo\xc3\xab@ex\xc3\xa4mple.com>",
    b"To: " + b"(" * 600,
    b"Content-Type: message/rfc822",
    b"Date: Mon, 99999999999 Jan 2020 00:00:00 +0000",
    b'Content-Type: text/plain; charset="utf-8\x00x"',
    b"<![foo[ x ]]>",
    b'<a href="https://example.com/x">x</a>',
    b"MIME-Version: 1.0",
]
line = st.one_of(
    st.sampled_from(MIME_LINES),
    st.binary(max_size=120).map(lambda b: b.replace(b"\n", b"")),
    st.text(max_size=60).map(lambda t: t.encode("utf-8").replace(b"\n", b"")[:998]),
)
message_bytes = st.lists(line, max_size=40).map(b"\r\n".join)


@SETTINGS
@given(data=message_bytes)
def test_any_message_round_trips(watched: Watched, data: bytes) -> None:
    sink = watched.sink
    view = sink.view()
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        assert client.sendmail("a@example.com", ["b@example.com"], data) == {}
    message = view.wait_for(timeout=10)
    # smtplib ends the content with CRLF if it does not already.
    assert message.raw == (data if data.endswith(b"\r\n") else data + b"\r\n")
    read_every_field(message)
    view.clear()
    watched.check()


# -- the fast path for MAIL/RCPT addresses ---------------------------------------

_ADDRESS_CHARS = "aZ09.!#$%&'*+/=?^_`{|}~-@<>()[]:;,\"\\ \t\x0b\x00é"
_ATOMS = st.one_of(
    st.text("abcXYZ019!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=6),
    # RFC 2047 encoded words, which the email parser decodes in addresses.
    st.sampled_from(["=?utf-8?q?foo?=", "=??b?-?=", "=??b?=41", "=?x?b?QQ==?="]),
)
_DOT_ATOMS = st.lists(_ATOMS, min_size=1, max_size=3).map(".".join)
# Mostly well-formed arguments, with a tail that may be parameters, white
# space, a comment or garbage: the fast path must agree on every one of them.
plain_like = st.builds(
    "<{}@{}>{}".format,
    _DOT_ATOMS,
    _DOT_ATOMS,
    st.text(_ADDRESS_CHARS, max_size=12),
)
# The same without angle brackets, some with white space inside the local
# part (``a b@example.com``), which aiosmtpd's parser reads as one address.
unbracketed_like = st.builds(
    "{}{}@{}{}".format,
    st.lists(_ATOMS, min_size=1, max_size=3).map(
        lambda atoms: "".join(f"{a} " for a in atoms[:-1])
    ),
    _DOT_ATOMS,
    _DOT_ATOMS,
    st.text(_ADDRESS_CHARS, max_size=12),
)
address_args = st.one_of(
    plain_like, unbracketed_like, st.text(_ADDRESS_CHARS, max_size=30)
)


@pytest.fixture(scope="module")
def aiosmtpd_server() -> Iterator[Any]:
    """aiosmtpd's own protocol object, for its `_getaddr` parser."""
    import asyncio

    from aiosmtpd.handlers import Sink
    from aiosmtpd.smtp import SMTP

    loop = asyncio.new_event_loop()
    try:
        yield SMTP(Sink(), loop=loop)
    finally:
        loop.close()


@settings(max_examples=400, deadline=None, database=None)
@given(arg=address_args)
def test_plain_address_fast_path_parses_like_aiosmtpd(
    aiosmtpd_server: Any, arg: str
) -> None:
    fast = plain_angle_addr(arg)
    if fast is not None:
        assert fast == aiosmtpd_server._getaddr(arg)
        # Nor does it take what the sink refuses on aiosmtpd's path.
        assert not _refused_address(arg)


@settings(max_examples=400, deadline=None, database=None)
@given(arg=address_args)
@example(arg="a b@example.com")
@example(arg="a(x)b@example.com SIZE=1")
def test_no_unquoted_space_is_taken_into_an_address(
    aiosmtpd_server: Any, arg: str
) -> None:
    """What aiosmtpd's parser would make of ``arg`` has no white space in
    its local part that the client did not quote: the sink refuses such an
    argument (553) before aiosmtpd takes it, bracketed or not."""
    arg = arg.strip()  # as smtp_MAIL and smtp_RCPT hand it to _getaddr
    # Not about RFC 2047 encoded words, which the parser decodes in an
    # address (``=?utf-8?q?a_b?=@example.com``): another matter.
    assume("=?" not in arg)
    try:
        address, _ = aiosmtpd_server._getaddr(arg)
    except (IndexError, AttributeError):
        # The stdlib parser's own bugs (``<=??b?-?=@0>``, ``0@[``): aiosmtpd
        # answers 500 and takes nothing.
        return
    if address and not _refused_address(arg):
        local = address.rpartition("@")[0] if "@" in address else address
        assert not re.search("[ \t]", local) or '"' in arg or "\\" in arg, address


@pytest.mark.parametrize(
    "arg",
    [
        "<a@example.com>",
        "<first.last+tag@mail.example.co.uk> SIZE=2048 BODY=8BITMIME",
        "<o'brien@example.com>\tSMTPUTF8",
        "<x@y>SIZE=1",
    ],
)
def test_everyday_addresses_take_the_fast_path(aiosmtpd_server: Any, arg: str) -> None:
    assert plain_angle_addr(arg) == aiosmtpd_server._getaddr(arg)


@pytest.mark.parametrize(
    "arg",
    [
        "<>",
        '<"quoted local"@example.com>',
        "<user@[192.0.2.1]>",
        "<josé@example.com>",
        "<a@example.com> (a comment) SIZE=1",
        "<@relay.example:a@example.com>",
        "<=?utf-8?q?foo?=@example.com>",
        "<a@=?utf-8?q?b?=>",
        "a@example.com",
        " <a@example.com>",
    ],
)
def test_other_address_forms_are_left_to_aiosmtpd(arg: str) -> None:
    assert plain_angle_addr(arg) is None


@pytest.mark.parametrize(
    ("arg", "refused"),
    [
        ("<a b@example.com>", True),
        ("<a\tb@example.com> SIZE=1", True),
        ("<a (comment) b@example.com>", True),
        ('<"a b" c@example.com>', True),
        ("<a@example.com", True),
        ('<"a b"@example.com>', False),
        ("<a. b@example.com>", False),  # an obsolete form: a.b@example.com
        ("<a..b@example.com>", False),
        ("< a@example.com >", False),
        ("a b@example.com", True),
        (" a\tb@example.com SIZE=1", True),
        ("a (comment) b@example.com", True),
        ('"a b" c@example.com', True),
        ("a b", True),
        ('"a b"@example.com', False),
        ("a@example.com SIZE=1", False),
        ("a. b@example.com", False),
        ("a@example.com b@example.com", False),  # aiosmtpd: a parameter
    ],
)
def test_refused_addresses(arg: str, refused: bool) -> None:
    """What the sink refuses before aiosmtpd's parser, which takes these,
    and that the fast path leaves all of them to aiosmtpd."""
    assert _refused_address(arg) is refused
    assert plain_angle_addr(arg) is None


# -- the fast path for header blocks ---------------------------------------------

_NAME_CHARS = "aZ09-_!~;@"
_ODD_NAME_CHARS = ": \t\x7f\x00é"
_VALUE_CHARS = 'aZ9 \t:;=?<>@"\\\x00\x7fé\udcff'
_HEADER_PIECES = st.sampled_from(
    [
        "Subject",
        "From ",
        "From",
        "X-A",
        ":",
        " ",
        "\t",
        "v",
        "=?utf-8?q?x?=",
        "\r",
        "\n",
    ]
)
_blanks = st.sampled_from(["", " ", "\t", "  ", " \t", "\t "])
_field = st.builds(
    "{}:{}{}".format,
    st.text(_NAME_CHARS, min_size=1, max_size=8),
    _blanks,
    st.text(_VALUE_CHARS, max_size=20),
)
_header_line = st.one_of(
    _field,
    _field,
    st.builds("{}{}".format, _blanks, st.text(_VALUE_CHARS, max_size=10)),
    st.builds(
        "{}:{}".format,
        st.text(_NAME_CHARS + _ODD_NAME_CHARS, max_size=8),
        st.text(_VALUE_CHARS, max_size=20),
    ),
    st.lists(_HEADER_PIECES, max_size=8).map("".join),
)
#: Header blocks as bytes: mostly fields and folds, with every form the
#: stdlib's parser treats specially (bare CR or LF, "From ", no colon, ...).
header_blocks = (
    st.lists(_header_line, max_size=8)
    .map("\r\n".join)
    .map(lambda text: text.encode("utf-8", "surrogateescape"))
)


def stdlib_header_items(block: bytes) -> list[tuple[str, str]]:
    """What compat32 makes of a header block (what Message._head holds)."""
    parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    return list(parser.parsebytes(block + b"\r\n\r\n").raw_items())


@settings(max_examples=1000, deadline=None, database=None)
@given(block=header_blocks)
def test_plain_header_fast_path_splits_like_the_stdlib(block: bytes) -> None:
    fast = _plain_header_items(block)
    if fast is not None:
        assert fast == stdlib_header_items(block)


#: What RFC 2047 decoding turns on: the marks of an encoded word, charsets,
#: both encodings, blanks (tab, no-break space), every kind of line break
#: (str.splitlines takes VT, LS and more) and text that is none of these.
_header_text = st.lists(
    st.sampled_from(
        [
            "=?",
            "?=",
            "?",
            "=",
            "q",
            "Q",
            "b",
            "B",
            "utf-8",
            "iso-8859-1",
            "=?utf-8?q?",
            "=?utf-8?b?",
            "=?iso-8859-1?Q?",
            # make_header's special cases: the email package's own charset
            # for unreadable bytes, an empty charset name, a word whose text
            # its charset cannot write (JIS X 0212 in euc-jp), and where no
            # space is added (parentheses, a backslash).
            "=?unknown-8bit?q?",
            "=??q?",
            "=?euc-jp?b?j6Kv?=",
            "(",
            ")",
            "\\",
            "?= ",
            " =?",
            "YQ",
            "w6k=",
            "=C3=A9",
            "=ZZ",
            "_",
            "a",
            "x y",
            " ",
            "  ",
            "\t",
            "\xa0",
            "\n",
            "\r",
            "\r\n",
            "\x0b",
            "\u2028",
        ]
    ),
    max_size=40,
).map("".join)


def _decoded(decode: Any, text: str) -> object:
    try:
        return decode(text)
    except Exception as error:
        return type(error)


@settings(max_examples=1000, deadline=None, database=None)
@given(text=_header_text)
@example(text="=?a?q?x=?\nb?q?y?=")  # a charset across a line break
@example(text="=?utf-8?q?a?= =?utf-8?q? ?= =?utf-8?q?b?=")  # a blank word goes
def test_encoded_words_decode_as_the_stdlib_decodes_them(text: str) -> None:
    """_message.decode_header is the stdlib's, made linear (the stdlib's is
    quadratic in the words of a line): same parts, same errors."""
    assert _decoded(decode_header, text) == _decoded(email.header.decode_header, text)


@settings(max_examples=2000, deadline=None, database=None)
@given(value=st.text(alphabet=';"\\= aB\t', max_size=30))
@example(value='a="b;c";d=e')
@example(value='a="\\";b"; c')
def test_mime_parameters_split_as_the_stdlib_splits_them(value: str) -> None:
    """_mime.parse_params is the email package's _parseparam, made linear
    (the stdlib's is quadratic in a value's ";"s), installed for every parse."""
    assert parse_params(value) == STDLIB_PARSEPARAM(value)


def _stdlib_text(text: str) -> str:
    return str(email.header.make_header(email.header.decode_header(text)))


@settings(max_examples=1000, deadline=None, database=None)
@given(text=_header_text)
@example(text="=?us-ascii?q?x?=x")  # us-ascii words join unencoded text
@example(text="=?utf-8?q?a?=x =?latin-1?q?b?=")
@example(text="Rechnung (=?utf-8?q?M=C3=A4rz?=)")
@example(text="=?unknown-8bit?q?caf=E9?=")
def test_header_text_is_the_stdlibs_for_ascii_headers(text: str) -> None:
    """_message.decode_header_text joins the decoded parts as make_header
    does; for raw 8-bit text, which the stdlib refuses, see test_capture."""
    assume(text.isascii())
    assert _decoded(decode_header_text, text) == _decoded(_stdlib_text, text)


@settings(max_examples=300, deadline=None, database=None)
@given(
    raw=st.tuples(
        header_blocks,
        st.sampled_from([b"\r\n\r\n", b"\n\n", b"\r\n\n", b"\r\n", b""]),
        st.binary(max_size=30),
    ).map(b"".join)
)
def test_headers_are_those_of_the_block_before_the_first_empty_line(
    raw: bytes,
) -> None:
    envelope = Envelope("a@example.com", ("b@example.com",))
    session: Any = None  # not read by the header fields
    message = Message(raw, envelope, session, datetime.datetime.now(), 1)
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    block = raw[: min(ends, default=len(raw))]
    assert message._header_items == stdlib_header_items(block)
    assert list(message._head.raw_items()) == stdlib_header_items(block)


@pytest.mark.parametrize(
    "block",
    [
        b"From: Ann <ann@example.com>\r\nTo: bob@example.com\r\nSubject: Hi",
        b"Subject: a long\r\n subject, folded\r\n\tand folded again",
        b"Subject: =?utf-8?q?caf=C3=A9?=\r\nX-Empty:\r\nX-Blank:   \r\n",
        b"Subject: Zo\xc3\xab\r\nX-8bit: \xff\xfe",
        b"DKIM-Signature: v=1; a=rsa-sha256;\r\n\tb=abc\r\n\t def",
        b"X-Odd-Name!~: value: with: colons",
        b"",
    ],
)
def test_everyday_header_blocks_take_the_fast_path(block: bytes) -> None:
    assert _plain_header_items(block) == stdlib_header_items(block)


@pytest.mark.parametrize(
    "block",
    [
        b"Subject: bare LF\nTo: a@example.com",
        b"Subject: bare CR\rTo: a@example.com",
        b" Subject: the first line continues nothing",
        b"From ann@example.com Mon Jan  1 00:00:00 2024\r\nSubject: x",
        b"Subject: x\r\nFrom bob Mon",
        b": no name",
        b"Subject: x\r\nno colon, so the body starts here",
        b"Bad Name: a space in the name",
        b"Subject: x\r\n: no name\r\n continued",
    ],
)
def test_other_header_blocks_are_left_to_the_stdlib(block: bytes) -> None:
    assert _plain_header_items(block) is None


# Names whose lower() is longer or maps several to one ("İ", "ß", "K" and
# the Kelvin sign), and the same name in several cases.
_HEADER_NAMES = st.one_of(
    st.sampled_from(["To", "TO", "to", "X-İ", "x-i̇", "ß", "SS", "K", "\u212a"]),
    st.text("aZİßK\u212a-", max_size=4),
)


@SETTINGS
@given(
    items=st.lists(st.tuples(_HEADER_NAMES, st.text(max_size=5)), max_size=30),
    asked=st.lists(_HEADER_NAMES, max_size=10),
)
def test_get_all_is_every_value_of_the_name_in_order(
    items: list[tuple[str, str]], asked: list[str]
) -> None:
    """`Headers.get_all`, an index built once, answers what a scan of every
    header would, for any name asked in any case; `items_all` stays the
    items as given."""
    headers = Headers(items)
    for name in [*asked, *(n for n, _ in items), *(n.swapcase() for n, _ in items)]:
        key = name.lower()
        assert headers.get_all(name) == [v for n, v in items if n.lower() == key]
    assert headers.items_all() == items


# -- commands answered as they arrive, against aiosmtpd's own loop ---------------
#
# The sink answers a command line that arrives alone, while aiosmtpd's loop
# waits for one, at once (RecordingSMTP.data_received). Both ways must say
# and record the same for any sequence of commands, each sent alone.

LONG_MAIL = b"MAIL FROM:<" + b"a" * 700 + b"@example.com>\r\n"
# Longer than the stream reader's 1001 bytes, within RCPT's limit with DSN
# (and MAIL's, once EHLO has raised it enough): refused by the reader first.
LONG_RCPT = b"RCPT TO:<b@example.com> ORCPT=rfc822;" + b"x" * 1000 + b"\r\n"
LONGER_MAIL = b"MAIL FROM:<a@example.com> ENVID=" + b"y" * 1000 + b"\r\n"
COMMAND_LINES = [
    b"EHLO client.example",
    b"ehlo client.example",
    b"HELO client.example",
    b"EHLO",
    b"EHLO bad\x01name",
    b"MAIL FROM:<a@example.com>",
    b"mail from:<a@example.com>",
    b"MAIL FROM:<>",
    b"MAIL FROM:<a@example.com> SIZE=10",
    b"MAIL FROM:<a@example.com> size=10 body=8bitmime",
    b"MAIL FROM:<a@example.com> SIZE=10 SIZE=20",
    b"MAIL FROM:<a@example.com> SIZE=5000",
    b"MAIL FROM:<a@example.com> SIZE=",
    b"MAIL FROM:<a@example.com> BODY=BINARYMIME",
    b"MAIL FROM:<a@example.com> SMTPUTF8",
    b"MAIL FROM: <a@example.com>\x1c",
    b"MAIL FROM:<a@example.com> SIZE=99999999999",
    # RFC 1870: at most 20 digits, leading zeros counted.
    b"MAIL FROM:<a@example.com> SIZE=00000000000000000001",
    b"MAIL FROM:<a@example.com> SIZE=000000000000000000001",
    b"MAIL FROM:<a@example.com> BODY=8BITMIME RET=HDRS ENVID=x",
    b"MAIL FROM:<a@example.com> BOGUS=1",
    b"MAIL FROM:<bad",
    b"MAIL FROM:a@example.com",
    b"MAIL",
    b"MAIL FROM:<\xc3\xa9@example.com>",
    LONG_MAIL.rstrip(),
    LONG_RCPT.rstrip(),
    LONGER_MAIL.rstrip(),
    b"RCPT TO:<b@example.com>",
    b"rcpt to: <B@Example.com>",
    b"RCPT TO:<b@example.com> SIZE=10",
    b"RCPT TO:<b@example.com> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b@example.com",
    b"RCPT TO:<b@example.com> NOTIFY=NEVER,SUCCESS",
    b"RCPT TO:<>",
    b"RCPT",
    b"RCPT TO:<c@example.com>\t",
    b"RCPT TO:<b c@example.com>",
    b"RCPT TO:b c@example.com",
    b"RCPT TO:b@example.com",
    b"MAIL FROM:a b@example.com SIZE=10",
    b"NOOP",
    b"NOOP anything",
    b"RSET",
    b"RSET now",
    b"QUIT now",
    b"DATA",
    b"VRFY b@example.com",
    b"XYZZY",
    b"",
    b" NOOP",
    b"QUIT",
]
ENDINGS = [b"\r\n", b"\n"]
CONTENT = b"Subject: differential\r\n\r\nbody\r\n.\r\n"


def _reply(stream: Any) -> list[bytes]:
    """One whole reply (to its line with a space after the code); [] at EOF."""
    lines: list[bytes] = []
    while True:
        line = stream.readline()
        if not line:
            return lines
        lines.append(line)
        if line[3:4] != b"-":
            return lines


def _converse(sink: SMTPSink, commands: list[bytes]) -> list[list[bytes]]:
    """Each command sent alone (the reply to the one before read first)."""
    replies = []
    with socket.create_connection((sink.host, sink.port), timeout=10) as sock:
        stream = sock.makefile("rb")
        try:
            replies.append(_reply(stream))  # the greeting
            for command in commands:
                try:
                    sock.sendall(command)
                except (BrokenPipeError, ConnectionResetError):
                    break
                reply = _reply(stream)
                replies.append(reply)
                if not reply or reply[-1][:3] in (b"221", b"421"):
                    break  # the server closed, or is closing
                if reply[-1].startswith(b"354"):
                    sock.sendall(CONTENT)
                    replies.append(_reply(stream))
        except ConnectionResetError:
            replies.append([])  # closed, as at EOF
        finally:
            stream.close()
    return replies


def _said_and_recorded(
    sink: SMTPSink, commands: list[bytes]
) -> tuple[list[list[bytes]], list[tuple[str, str, list[bytes]]], list[Envelope]]:
    """The replies to ``commands``, the session's transcript (message
    numbers, which differ between sinks, masked) and the envelopes kept."""
    view = sink.view()
    replies = _converse(sink, commands)
    return (
        _masked(replies),
        _ended_transcript(view),
        [message.envelope for message in view.messages],
    )


def _masked(replies: list[list[bytes]]) -> list[list[bytes]]:
    """``replies`` with message numbers (which differ between sinks) masked."""
    return [[_QUEUED.sub(b"#n", line) for line in reply] for reply in replies]


def _ended_transcript(view: Mailbox) -> list[tuple[str, str, list[bytes]]]:
    """The transcript of the one session in ``view``, once it has ended,
    message numbers masked."""
    view.wait_until(lambda: bool(view.sessions) and view.sessions[-1].end is not None)
    (session,) = view.sessions
    return [
        (e.kind, e.line, [_QUEUED.sub(b"#n", r.encode()) for r in e.replies])
        for e in session.transcript
    ]


@pytest.fixture(
    scope="module",
    params=[{}, {"smtputf8": False, "max_size": 1000}],
    ids=["defaults", "ascii-small"],
)
def both_ways(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[SMTPSink, SMTPSink]]:
    settings = request.param
    with SMTPSink(**settings) as at_once, SMTPSink(**settings) as aiosmtpd_way:
        runtime = aiosmtpd_way._runtime
        assert runtime is not None
        runtime.state.fast_commands = False
        yield at_once, aiosmtpd_way


_QUEUED = re.compile(rb"#\d+")


@SETTINGS
@example(commands=[LONG_MAIL, b"EHLO client.example\r\n", LONG_MAIL])
@example(commands=[b"EHLO x\r\n", b"MAIL FROM:<a@example.com>\r\n", LONG_RCPT])
@example(commands=[b"EHLO x\r\n"] * 12 + [LONGER_MAIL])
@example(commands=[b"EHLO x\r\n", b"MAIL FROM:<\xc3\xa9@example.com>\r\n"])
@example(
    commands=[
        b"EHLO x\r\n",
        b"MAIL FROM:<a@example.com> SIZE=%s\r\n" % (b"0" * 20 + b"1"),
    ]
)
@example(
    commands=[
        b"EHLO x\r\n",
        b"MAIL FROM:<a@example.com>\r\n",
        b"RCPT TO:<b@example.com>\r\n",
        b"DATA\r\n",
        b"RSET x\r\n",
        b"QUIT x\r\n",
        b"QUIT\r\n",
    ]
)
@given(
    commands=st.lists(
        st.tuples(st.sampled_from(COMMAND_LINES), st.sampled_from(ENDINGS)).map(
            b"".join
        ),
        max_size=12,
    )
)
def test_commands_answered_at_once_as_aiosmtpd_answers_them(
    both_ways: tuple[SMTPSink, SMTPSink], commands: list[bytes]
) -> None:
    at_once, aiosmtpd_way = both_ways
    assert _said_and_recorded(at_once, commands) == _said_and_recorded(
        aiosmtpd_way, commands
    )


def _converse_pipelined(
    sink: SMTPSink, stream: bytes, cuts: list[int]
) -> tuple[list[bytes], list[tuple[str, str, list[bytes]]], list[Envelope]]:
    """``stream`` sent without waiting for any reply, in sends cut at
    ``cuts``, then the end of the client's writing: every line the sink
    said (message numbers masked), the transcript and the envelopes kept."""
    view = sink.view()
    said = bytearray()
    with socket.create_connection((sink.host, sink.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        said += sock.recv(4096)  # the greeting, before anything is sent
        edges = [0, *sorted({c % len(stream) for c in cuts} - {0}), len(stream)]
        for begin, end in itertools.pairwise(edges):
            sock.sendall(stream[begin:end])
        sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            said += chunk
    return (
        [_QUEUED.sub(b"#n", line) for line in said.splitlines()],
        _ended_transcript(view),
        [message.envelope for message in view.messages],
    )


# What a pipelining client sends (RFC 2920): groups of commands, a message's
# content after its DATA, in packets cut anywhere. No QUIT but the last:
# the sink must not close while lines are unread (the client's RST would
# lose replies at random). Hence a content whose lines, outside DATA, are
# commands but its final dot, and fewer than five lines with an unknown
# verb, after which aiosmtpd closes.
PIPELINED_CONTENT = b"NOOP\r\n\r\nRSET x\r\n.\r\n"
UNKNOWN_OUTSIDE_DATA = [PIPELINED_CONTENT, b".\r\n", b"XYZZY\r\n"]
PIPELINED_LINES = [
    line + ending
    for line in COMMAND_LINES
    if line not in (b"QUIT", b"XYZZY", b" NOOP")
    for ending in ENDINGS
] + UNKNOWN_OUTSIDE_DATA


@SETTINGS
@example(
    lines=[
        b"EHLO x\r\n",
        b"MAIL FROM:<a@example.com>\r\n",
        b"RCPT TO:<b@example.com>\r\n",
        b"DATA\r\n",
        PIPELINED_CONTENT,
        b"MAIL FROM:<a@example.com>\r\n",
        b"RCPT TO:<b@example.com>\r\n",
        b"DATA\r\n",
        PIPELINED_CONTENT,
    ],
    cuts=[],
)
@example(lines=[b"EHLO x\r\n", b"NOOP\r\n", b"RSET\r\n"], cuts=[9])
@given(
    lines=st.lists(st.sampled_from(PIPELINED_LINES), max_size=14),
    cuts=st.lists(st.integers(0, 2000), max_size=5),
)
def test_pipelined_commands_answered_at_once_as_aiosmtpd_answers_them(
    both_ways: tuple[SMTPSink, SMTPSink], lines: list[bytes], cuts: list[int]
) -> None:
    # The sink answers each whole line of a packet at once while it can
    # (one write for a group's replies), and hands the rest to aiosmtpd's
    # loop; the other sink's loop reads them all. Same replies, transcripts
    # and envelopes, wherever the packets are cut.
    assume(sum(line in UNKNOWN_OUTSIDE_DATA for line in lines) < 5)
    stream = b"".join(lines) + b"QUIT\r\n"
    at_once, aiosmtpd_way = both_ways
    assert _converse_pipelined(at_once, stream, cuts) == _converse_pipelined(
        aiosmtpd_way, stream, cuts
    )


@pytest.mark.parametrize(
    "after", [b"NOOP\r\n", b"MAIL FROM:<a@example.com>\r\n", b"HELP\r\n"]
)
def test_nothing_after_quit_runs_either_way(
    both_ways: tuple[SMTPSink, SMTPSink], after: bytes
) -> None:
    # aiosmtpd's loop ran a line sent with the QUIT (its cancellation comes
    # at its next wait): recorded with a reply that was never sent.
    for sink in both_ways:
        view = sink.view()
        with socket.create_connection((sink.host, sink.port), timeout=10) as sock:
            sock.recv(4096)  # the greeting
            sock.sendall(b"EHLO x\r\nQUIT\r\n" + after)
            # The server closes with the line unread: a reset may come.
            with contextlib.suppress(ConnectionResetError):
                while sock.recv(65536):
                    pass
        *_, last = _ended_transcript(view)
        assert last == ("command", "QUIT", [b"221 Bye"])


@pytest.mark.parametrize("count", [30, 44])
def test_messages_sent_in_one_go_before_the_clients_eof_are_all_kept(
    both_ways: tuple[SMTPSink, SMTPSink], count: int
) -> None:
    # A client that sends its messages and QUIT in one go, then closes its
    # side (nc -N): aiosmtpd cancelled its handler at the EOF, and the lines
    # still unread were lost, unanswered (42 of 44 kept, the session ending
    # "client-closed"), after the handler's pause every 64 commands.
    one = (
        b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
        b"Subject: t\r\n\r\nbody\r\n.\r\n"
    )
    stream = b"EHLO c.example\r\n" + one * count + b"QUIT\r\n"
    for sink in both_ways:
        said, transcript, envelopes = _converse_pipelined(sink, stream, [])
        assert len(envelopes) == count
        assert said[-1] == b"221 Bye"
        assert transcript[-1] == ("command", "QUIT", [b"221 Bye"])


# Pieces of message content: dots where a line starts (stuffed, the final
# dot's look-alikes after a bare LF), bare LFs and CRs, lines at and over
# the 1,001-byte line limit and over twice the stream reader's limit.
CONTENT_PIECES = [
    b"Subject: differential\r\n",
    b"\r\n",
    b"body\r\n",
    b"..stuffed\r\n",
    b".\n",
    b"\n.\n",
    b"bare\n",
    b"\r",
    b".",
    b"cr\rlf\n",
    b"\n.\r\n",
    b"x" * 999 + b"\r\n",
    b"y" * 1000 + b"\r\n",
    b"z" * 2500 + b"\n",
    b"w" * 3000,
    b"\xff\xfe\x00",
]


def _send_content(
    sink: SMTPSink, packets: list[bytes], after: bytes, cut: int
) -> tuple[list[list[bytes]], list[tuple[str, str, list[bytes]]], list[bytes]]:
    """DATA, then ``packets`` as separate sends, then the final dot and
    ``after``, the dot's line cut in two sends at ``cut`` (0: one send;
    -1: the packets, the dot and ``after`` all in one send): the replies,
    the transcript and the messages kept."""
    view = sink.view()
    replies = []
    with socket.create_connection((sink.host, sink.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream = sock.makefile("rb")
        try:
            replies.append(_reply(stream))
            for line in (
                b"EHLO x",
                b"MAIL FROM:<a@example.com>",
                b"RCPT TO:<b@example.com>",
            ):
                sock.sendall(line + b"\r\n")
                replies.append(_reply(stream))
            sock.sendall(b"DATA\r\n")
            replies.append(_reply(stream))
            end = b"\r\n.\r\n" + after
            if cut < 0:
                sock.sendall(b"".join(packets) + end)
            else:
                for packet in packets:
                    sock.sendall(packet)
                if cut:
                    sock.sendall(end[:cut])
                sock.sendall(end[cut:])
            replies.append(_reply(stream))  # to the final dot
            if after:
                replies.append(_reply(stream))
            sock.sendall(b"QUIT\r\n")
            replies.append(_reply(stream))
        finally:
            stream.close()
    return (
        _masked(replies),
        _ended_transcript(view),
        [message.raw for message in view.messages],
    )


@SETTINGS
@example(packets=[b"x" * 700, b"x" * 700 + b"\r\n"], after=b"", cut=0)
@example(packets=[b"a\r", b"\n.", b".\r\n"], after=b"NOOP\r\n", cut=3)
@example(packets=[b"z" * 1500, b"\r", b"\n"], after=b"", cut=1)
@given(
    packets=st.lists(
        st.lists(st.sampled_from(CONTENT_PIECES), max_size=6).map(b"".join),
        max_size=5,
    ),
    after=st.sampled_from([b"", b"NOOP\r\n", b"MAIL FROM:<c@example.com>\r\n"]),
    cut=st.integers(0, 4),
)
def test_content_taken_at_once_as_aiosmtpd_takes_it(
    both_ways: tuple[SMTPSink, SMTPSink], packets: list[bytes], after: bytes, cut: int
) -> None:
    # After a DATA answered at once the sink cuts the packets into lines
    # itself (_content.Content.feed); the other sink reads them with
    # aiosmtpd's stream reader. Same replies, transcripts and bytes kept.
    # A final dot inside would make the rest commands whose replies this
    # client does not read; ``after`` covers commands after the dot.
    stream = b"\r\n" + b"".join(packets) + b"\r\n.\r\n"
    assume(stream.find(b"\r\n.\r\n") == len(stream) - 5)
    at_once, aiosmtpd_way = both_ways
    assert _send_content(at_once, packets, after, cut) == _send_content(
        aiosmtpd_way, packets, after, cut
    )


@SETTINGS
@example(lines=[b"x" * 998 + b"\r\n"] * 3, after=b"")
@example(lines=[b"x" * 999 + b"\r\n", b"y\r\n"], after=b"NOOP\r\n")
@example(lines=[b"a\n", b".\r\n", b"b\r\n"], after=b"")
@example(lines=[b"a\r\n", b"..b\r\n"], after=b"")
@example(lines=[b"z" * 1200 + b"\n"], after=b"")
@example(lines=[b"s" * 400 + b"\r\n"] * 3, after=b"")
@given(
    lines=st.lists(st.sampled_from(CONTENT_PIECES), max_size=12),
    after=st.sampled_from([b"", b"NOOP\r\n", b"MAIL FROM:<c@example.com>\r\n"]),
)
def test_content_in_one_packet_taken_as_aiosmtpd_takes_it(
    both_ways: tuple[SMTPSink, SMTPSink], lines: list[bytes], after: bytes
) -> None:
    # A small message usually arrives whole, final dot included, and the
    # sink then takes it in one step where no line rule could change it
    # (`Content._whole`); the examples sit at each rule's edge (the line
    # limit, a dot after a bare LF, dot-stuffing, the "ascii-small" sink's
    # max_size of 1,000 bytes).
    stream = b"\r\n" + b"".join(lines) + b"\r\n.\r\n"
    assume(stream.find(b"\r\n.\r\n") == len(stream) - 5)
    at_once, aiosmtpd_way = both_ways
    assert _send_content(at_once, lines, after, -1) == _send_content(
        aiosmtpd_way, lines, after, -1
    )


def _answered_at_once(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The command lines the sinks answer at once (`_answer_now`), as they
    come, while the test runs."""
    answered: list[bytes] = []
    answer_now = RecordingSMTP._answer_now

    def counted(self: RecordingSMTP, data: bytes) -> bool:
        # Counted before the reply goes out, so that a client that has read
        # it finds the command counted; taken back if not answered here.
        answered.append(data)
        done = answer_now(self, data)
        if not done:
            answered.pop()
        return done

    monkeypatch.setattr(RecordingSMTP, "_answer_now", counted)
    return answered


def test_the_commands_of_a_message_are_answered_at_once(
    both_ways: tuple[SMTPSink, SMTPSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    # What makes the differential test above mean something: the sink does
    # answer the commands of an everyday message at once, and the other
    # sink does not.
    answered = _answered_at_once(monkeypatch)
    # The commands the sink takes itself, without aiosmtpd's methods.
    taken: list[str] = []
    for method in ("_take_ehlo", "_take_mail", "_take_rcpt", "_take_quit"):
        take = getattr(RecordingSMTP, method)

        def counted_take(self: RecordingSMTP, *args: Any, take: Any = take) -> None:
            taken.append(take.__name__)
            take(self, *args)

        monkeypatch.setattr(RecordingSMTP, method, counted_take)
    for sink in both_ways:
        for _ in range(2):  # the sink's first EHLO reply is worked out
            with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
                client.sendmail("a@example.com", ["b@example.com"], CONTENT[:-3])
    verbs = [line.split()[0].upper() for line in answered]
    assert verbs == [b"EHLO", b"MAIL", b"RCPT", b"DATA", b"QUIT"] * 2, answered
    assert taken[-4:] == ["_take_ehlo", "_take_mail", "_take_rcpt", "_take_quit"]


def test_a_small_message_in_one_packet_is_taken_whole(
    both_ways: tuple[SMTPSink, SMTPSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    # What makes the one-packet differential test mean something: smtplib
    # sends a small message and its final dot in one packet, which the sink
    # takes in one step, and a message with a dot-stuffed line it does not.
    taken: list[int] = []
    whole = Content._whole

    def counted(self: Content, data: bytes) -> int:
        used = whole(self, data)
        taken.append(used)
        return used

    monkeypatch.setattr(Content, "_whole", counted)
    at_once, _ = both_ways
    view = at_once.view()
    with smtplib.SMTP(at_once.host, at_once.port, timeout=10) as client:
        client.sendmail("a@example.com", ["b@example.com"], CONTENT[:-3])
        client.sendmail("a@example.com", ["b@example.com"], b"a\r\n.b\r\n")
    assert len(taken) == 2, taken
    assert taken[0] == len(CONTENT), taken
    assert taken[1] == -1, taken
    raws = [message.raw for message in view.messages]
    assert raws == [CONTENT[:-3], b"a\r\n.b\r\n"]


def test_a_pipelined_group_is_answered_at_once_in_one_write(
    both_ways: tuple[SMTPSink, SMTPSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    # What makes the pipelined differential test mean something: a group
    # of commands in one packet (the final dot, then the next message's
    # MAIL, RCPT and DATA, as a pipelining relay sends them) is answered by
    # the sink itself, every reply in one write, so that one read gets them.
    answered = _answered_at_once(monkeypatch)
    at_once, _ = both_ways
    group = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
    with socket.create_connection((at_once.host, at_once.port), timeout=10) as sock:
        stream = sock.makefile("rb")
        try:
            _reply(stream)
            sock.sendall(b"EHLO x\r\n")
            _reply(stream)
            sock.sendall(group)
            replies = b"250 OK\r\n250 OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
            assert sock.recv(4096) == replies
            sock.sendall(CONTENT + group)
            assert _QUEUED.sub(b"#n", sock.recv(4096)) == (
                b"250 2.0.0 OK: queued as #n\r\n" + replies
            )
        finally:
            stream.close()
    verbs = [line.split()[0].upper() for line in answered]
    assert verbs == [b"EHLO"] + [b"MAIL", b"RCPT", b"DATA"] * 2, answered

"""Server-level fuzzing (Hypothesis) of the read side: random lines, and
commands with random non-synchronizing literals, sent over a real socket to
the live IMAP and POP3 servers. Each input is answered and recorded in the
session's transcript, the next good command is served, and no mailbox
changes. The command parser alone is fuzzed in test_imap_syntax.py.

One `SMTPSink` serves the module, with an exception handler on its loop and a
logging handler (as test_properties.py): neither may catch anything. The
IMAP sessions EXAMINE (read-only), so no random command can change mail;
the POP3 sessions never QUIT, so no DELE takes effect; what must not change
is checked all the same.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest
from dialogue import Endpoint, run
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_properties import Watched

from pytest_smtpsink import Mailbox, Session, SMTPSink

USER = "fuzz@example.com"
#: Modest: the suite runs on 2 cores in 4 Python versions.
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,  # write nothing to disk
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def watched() -> Iterator[Watched]:
    with SMTPSink() as sink:
        sink.deliver(b"Subject: one\r\n\r\nfirst\r\n", to=USER)
        sink.deliver(b"Subject: two\r\n\r\nsecond\r\n", to=USER, flags={"\\Seen"})
        sink.deliver(b"Subject: three\r\n\r\nthird\r\n", to=USER, folder="Kept")
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


def snapshot(sink: SMTPSink) -> list[tuple[str, list[tuple[int, frozenset[str]]]]]:
    box = sink.mailbox(USER)
    return [
        (folder, [(s.uid, s.flags) for s in box.stored(folder)])
        for folder in box.folders
    ]


def ended(view: Mailbox, protocol: str) -> list[Session]:
    return [s for s in view.sessions if s.protocol == protocol and s.end]


def text(data: bytes) -> str:
    """Bytes as the str that `dialogue.run` sends back as the same bytes."""
    return data.decode("utf-8", "surrogateescape")


# Random bytes on one line: no CR or LF (the line ends where we say), no "{"
# (a synchronizing literal would wait for data; literals come separately).
line_bytes = st.binary(max_size=200).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"{", b"")
)
#: IMAP words that cannot change mail in a read-only (EXAMINEd) folder, nor
#: wait for more input (no IDLE, AUTHENTICATE, STARTTLS or LOGOUT).
IMAP_WORDS = [
    b"FETCH",
    b"UID",
    b"SEARCH",
    b"STORE",
    b"STATUS",
    b"LIST",
    b"EXPUNGE",
    b"NOOP",
    b"CHECK",
    b"1:*",
    b"*",
    b"%",
    b"1",
    b"0",
    b"4294967296",
    b"(",
    b")",
    b"[",
    b"]",
    b'"',
    b"\\",
    b"BODY[]",
    b"BODY.PEEK[1.2.MIME]<0.5>",
    b"HEADER.FIELDS",
    b"(FLAGS",
    b"+FLAGS",
    b"\\Deleted",
    b"OR",
    b"NOT",
    b"CHARSET",
    b"UTF-8",
    b"SUBJECT",
    b"INBOX",
    b"NIL",
    b"\x00",
    b"\xff",
    b"\xc3\xa9",
]
imap_words = st.lists(st.sampled_from(IMAP_WORDS), max_size=12).map(b" ".join)
imap_bodies = st.one_of(line_bytes, imap_words)


@SETTINGS
@given(
    body=imap_bodies,
    literal=st.one_of(st.none(), st.binary(max_size=300)),
    after=imap_bodies,
)
def test_imap_answers_any_line_and_keeps_serving(
    watched: Watched, body: bytes, literal: bytes | None, after: bytes
) -> None:
    sink = watched.sink
    before = snapshot(sink)
    view = sink.view()
    command = b"F " + body
    if literal is not None:
        # A non-synchronizing literal (LITERAL+): its bytes follow at once.
        command += b" {%d+}\r\n" % len(literal) + literal + after
    endpoint = Endpoint("imap", sink.imap.host, sink.imap.port)
    transcript = run(
        [f"L LOGIN {USER} pw", "E EXAMINE INBOX", text(command), "Z NOOP"],
        endpoint,
    )
    replies = [line for line in transcript if line.startswith("S: ")]
    assert any(line.startswith(("S: F ", "S: * BAD")) for line in replies), transcript
    assert replies[-1] == "S: Z OK NOOP completed", transcript

    view.wait_until(lambda: ended(view, "IMAP"), timeout=10)
    (session,) = ended(view, "IMAP")
    commands = [e for e in session.transcript if e.kind == "command"]
    assert len(commands) == 4, session.format_transcript()
    assert commands[2].tag == "F"
    session.format_transcript().encode("utf-8")  # printable, whatever came in
    assert snapshot(sink) == before
    watched.check()


#: POP3 words whose reply is one line whatever follows (CAPA, RETR, TOP, and
#: LIST/UIDL without an argument answer several; QUIT is left out too).
POP3_WORDS = [b"STAT", b"NOOP", b"RSET", b"DELE", b"APOP", b"AUTH", b"USER", b"PASS"]
pop3_lines = st.one_of(
    line_bytes,
    st.tuples(st.sampled_from(POP3_WORDS), line_bytes).map(b" ".join),
    st.tuples(st.sampled_from([b"LIST", b"UIDL", b"RETR", b"TOP"]), line_bytes)
    .filter(lambda pair: b" " in pair[1].strip(b" ") or pair[1].strip(b" ") == b"")
    .map(lambda pair: pair[0] + b" x" + pair[1]),
)


@SETTINGS
@given(lines=st.lists(pop3_lines, min_size=1, max_size=5))
@example(lines=[b"DELE 1"])  # found by CI: STAT then counts one message
def test_pop3_answers_any_line_and_keeps_serving(
    watched: Watched, lines: list[bytes]
) -> None:
    sink = watched.sink
    before = snapshot(sink)
    view = sink.view()
    endpoint = Endpoint("pop3", sink.pop3.host, sink.pop3.port)
    script = [f"USER {USER}", "PASS pw", *(text(line) for line in lines), "STAT"]
    transcript = run(script, endpoint)
    replies = [line for line in transcript if line.startswith("S: ")]
    statuses = [line for line in replies if line.startswith(("S: +OK", "S: -ERR"))]
    # The greeting, USER, PASS, one status per random line, then STAT.
    assert len(statuses) == 1 + 2 + len(lines) + 1, transcript
    # STAT answers: 2 messages, or fewer after a random "DELE 1" (Hypothesis
    # found it in CI), counted without those marked deleted (RFC 1939).
    assert re.fullmatch(r"S: \+OK [0-2] [0-9]+", replies[-1]), transcript

    view.wait_until(lambda: ended(view, "POP3"), timeout=10)
    (session,) = ended(view, "POP3")
    # A one-word line after AUTH may be a SASL response sent without waiting:
    # it is recorded masked, as an "auth-response".
    kinds = ("command", "auth-response")
    commands = [e for e in session.transcript if e.kind in kinds]
    assert len(commands) == 2 + len(lines) + 1, session.format_transcript()
    session.format_transcript().encode("utf-8")
    assert snapshot(sink) == before
    watched.check()

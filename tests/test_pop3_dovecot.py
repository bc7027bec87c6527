"""Differential tests: the sink's POP3 server and Dovecot's pop3d answer the
same scripted sessions alike.

Both get the same mail; each script runs against both; the transcripts are
compared after masking what two correct servers may word differently
(`dialogue.masked` with ``text=True``: the free text after ``+OK``/``-ERR``,
the greeting, UIDL values). Status, response codes and every data line
(sizes, listings, message bytes, dot-stuffing) must match.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from dialogue import Endpoint, masked, run
from dovecot import Dovecot

from pytest_smtpsink import Mailbox

ONE = b"Subject: one\nFrom: Ann <ann@example.com>\n\nhello\n.dot line\n..two dots\n"
TWO = b"Subject: two\r\nFrom: bob@example.com\r\n\r\nbody\r\nline 2\r\n"
THREE = b"Subject: three\r\n\r\n.\r\nno final line end"


@pytest.fixture
def user(dovecot: Dovecot, request: pytest.FixtureRequest) -> Iterator[str]:
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]
    yield name
    dovecot.reset(name)


def both(
    smtpsink: Mailbox, dovecot: Dovecot, user: str, messages: list[bytes]
) -> tuple[Endpoint, Endpoint]:
    dovecot.seed(user, messages)
    for raw in messages:
        smtpsink.deliver(raw, to=user)
    ours = Endpoint("pop3", smtpsink.pop3.host, smtpsink.pop3.port)
    theirs = Endpoint("pop3", dovecot.host, dovecot.pop3_port)
    return ours, theirs


def same(script: list[str], ours: Endpoint, theirs: Endpoint) -> list[str]:
    """Run ``script`` against both; assert the masked transcripts match."""
    # Our greeting offers APOP; this Dovecot's does not (APOP needs
    # plain-text passwords on the server, which it is not given).
    offer = [(r"^\+OK <greeting> <apop>$", "+OK <greeting>")]
    mine = masked(run(script, ours), text=True, extra=offer)
    reference = masked(run(script, theirs), text=True)
    assert mine == reference
    return mine


SESSION = [
    "STAT",  # before login
    "USER {user}",
    "PASS secret",
    "STAT",
    "LIST",
    "LIST 2",
    "LIST 3",
    "LIST 0",
    "LIST x",
    "UIDL",
    "UIDL 1",
    "RETR 1",
    "TOP 1 0",
    "TOP 1 1",
    "TOP 1 99",
    "TOP 1 x",
    "RETR",
    "NOOP",
    "DELE 1",
    "DELE 1",
    "RETR 1",
    "LIST 1",
    "STAT",
    "RSET",
    "STAT",
    "XYZZY",
    "DELE 2",
    "QUIT",
]


def test_a_whole_session_matches_dovecot(
    smtpsink: Mailbox, dovecot: Dovecot, user: str
) -> None:
    ours, theirs = both(smtpsink, dovecot, user, [ONE, TWO])
    transcript = same([line.format(user=user) for line in SESSION], ours, theirs)
    assert "S: ..dot line" in transcript
    # The deletion at QUIT happened on both sides.
    assert dovecot.messages(user) == [ONE]
    smtpsink.mailbox(user).assert_deleted(subject="two")
    assert smtpsink.mailbox(user).messages() == [smtpsink.mailbox(user).messages()[0]]


def test_a_message_without_a_final_line_end_matches_dovecot(
    smtpsink: Mailbox, dovecot: Dovecot, user: str
) -> None:
    ours, theirs = both(smtpsink, dovecot, user, [THREE])
    script = [f"USER {user}", "PASS x", "LIST", "RETR 1", "TOP 1 0", "QUIT"]
    transcript = same(script, ours, theirs)
    assert "S: .." in transcript  # a line that is a single dot, stuffed


def test_a_dropped_session_deletes_nothing_on_either(
    smtpsink: Mailbox, dovecot: Dovecot, user: str
) -> None:
    ours, theirs = both(smtpsink, dovecot, user, [ONE, TWO])
    same([f"USER {user}", "PASS x", "DELE 1", "DELE 2"], ours, theirs)  # no QUIT
    same([f"USER {user}", "PASS x", "STAT", "QUIT"], ours, theirs)
    assert len(dovecot.messages(user)) == 2


def test_auth_plain_matches_dovecot(
    smtpsink: Mailbox, dovecot: Dovecot, user: str
) -> None:
    import base64

    ours, theirs = both(smtpsink, dovecot, user, [TWO])
    token = base64.b64encode(f"\0{user}\0secret".encode()).decode()
    same([f"AUTH PLAIN {token}", "STAT", "QUIT"], ours, theirs)
    same(["AUTH PLAIN", token, "STAT", "QUIT"], ours, theirs)
    same(["AUTH PLAIN", "*", "QUIT"], ours, theirs)
    same(["AUTH PLAIN !!!", "QUIT"], ours, theirs)


def test_arguments_where_none_belong_are_refused_where_dovecot_ignores_them(
    smtpsink: Mailbox, dovecot: Dovecot, user: str
) -> None:
    ours, theirs = both(smtpsink, dovecot, user, [TWO])
    refused = ["STAT 1", "NOOP extra", "RSET now"]
    script = [f"USER {user}", "PASS x", *refused, "STAT", "QUIT"]
    offer = [(r"^\+OK <greeting> <apop>$", "+OK <greeting>")]
    mine = masked(run(script, ours), text=True, extra=offer)
    reference = masked(run(script, theirs), text=True)
    # Dovecot answers +OK as if the argument were not there; the sink says
    # -ERR (docs/reading.rst) and then goes on exactly as Dovecot does.
    expected: list[str] = []
    for line in reference:
        if expected and expected[-1][3:] in refused:
            assert line == "S: +OK <text>"
            expected.append("S: -ERR <text>")
        else:
            expected.append(line)
    assert mine == expected
    # PASS without a password: Dovecot, taking any password, logs in.
    script = [f"USER {user}", "PASS", "STAT", "QUIT"]
    assert masked(run(script, theirs), text=True)[3:5] == ["C: PASS", "S: +OK <text>"]
    assert masked(run(script, ours), text=True, extra=offer)[3:] == [
        "C: PASS",
        "S: -ERR <text>",
        "C: STAT",
        "S: -ERR <text>",
        "C: QUIT",
        "S: +OK <text>",
    ]

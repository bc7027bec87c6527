"""Differential tests: the sink's POP3 server and Dovecot's pop3d answer the
same scripted sessions alike.

Both get the same mail; each script runs against both; the transcripts are
compared after masking what two correct servers may word differently
(`dialogue.masked` with ``text=True``: the free text after ``+OK``/``-ERR``,
the greeting, UIDL values). Status, response codes and every data line
(sizes, listings, message bytes, dot-stuffing) must match.
"""

from __future__ import annotations

import imaplib
import re
import socket
import time
from collections.abc import Iterator
from functools import partial

import pytest
from dialogue import READ_TIMEOUT, Endpoint, masked, run
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


def test_retr_marks_read_however_the_session_ends_as_on_dovecot(
    smtpsink: Mailbox, dovecot: Dovecot, user: str
) -> None:
    # Dovecot writes RETR's \Seen when the session ends, QUIT or not (the
    # client dropped, or timed out): only deletions wait for QUIT. The sink
    # kept \Seen for QUIT only.
    ours, theirs = both(smtpsink, dovecot, user, [ONE, TWO, THREE])
    # RETR, TOP (no \Seen), RETR of a message then marked, and no QUIT.
    script = [f"USER {user}", "PASS x", "RETR 1", "TOP 2 0", "RETR 3", "DELE 3"]
    same(script, ours, theirs)
    wanted = [{"\\Seen"}, set(), {"\\Seen"}]
    # Dovecot's POP3 process writes them as it ends the session.
    deadline = time.monotonic() + READ_TIMEOUT
    while (theirs_now := dovecot.flags(user)) != wanted and time.monotonic() < deadline:
        pass
    assert theirs_now == wanted
    smtpsink.wait_until(
        lambda: bool(smtpsink.sessions) and smtpsink.sessions[-1].end is not None
    )
    box = smtpsink.mailbox(user)
    assert [set(box.flags(m)) - {"\\Recent"} for m in box.messages()] == wanted


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


# -- unusual and malformed input ---------------------------------------------------


def test_malformed_message_numbers_and_counts_match_dovecot(
    smtpsink: Mailbox, dovecot: Dovecot, user: str
) -> None:
    ours, theirs = both(smtpsink, dovecot, user, [ONE, TWO])
    script = [
        "PASS x",  # before USER
        "user nobody",
        f"uSeR {user}",  # the second USER is the one PASS logs in
        "AUTH FOO",  # refused, and USER stays given
        "pAsS x",
        "stat",
        "List",
        "uidl 1",
        "RETR 0",
        "RETR -1",
        "RETR +1",
        "RETR 1 2",
        "RETR 99999999999999999999",
        "RETR abc",
        "RETR 1 ",  # a space after the number
        "LIST 1 2",
        "UIDL 1 2",
        "DELE 1 2",
        "TOP 1",
        "TOP 1 -1",
        "TOP 1 x",
        "TOP 1 1 1",
        "TOP 1 0 ",
        "TOP 9 1",
        "TOP 1 0",
        "",
        "NOOP",
        "DELE 1",
        "DELE 1",
        "RETR 1",
        "LIST 1",
        "UIDL 1",
        "TOP 1 0",
        "LIST",
        "UIDL",
        "STAT",
        "RSET",
        "LIST",
        "UIDL",
        "STAT",
        "DELE 2",
        "STAT",
        "STLS",  # after login
        "USER x",
        "QUIT",
    ]
    transcript = same(script, ours, theirs)
    assert transcript.count("S: -ERR <text>") == 25
    assert dovecot.messages(user) == [ONE]
    assert [m.subject for m in smtpsink.mailbox(user).messages()] == ["one"]


def test_capa_before_and_after_login_matches_dovecot(
    smtpsink: Mailbox, dovecot: Dovecot, user: str
) -> None:
    ours, theirs = both(smtpsink, dovecot, user, [])
    script = ["CAPA", f"USER {user}", "PASS x", "CAPA", "QUIT"]

    def capabilities(transcript: list[str]) -> tuple[set[str], set[str]]:
        lists: list[set[str]] = []
        for start, line in enumerate(transcript):
            if line == "C: CAPA":
                end = transcript.index("S: .", start)
                lists.append({s[3:].split()[0] for s in transcript[start + 2 : end]})
        return lists[0], lists[1]

    mine, reference = capabilities(run(script, ours)), capabilities(run(script, theirs))
    # Dovecot lists CAPA itself (no RFC 2449 tag) and STLS (it has a
    # certificate; this sink has no TLS); the sink names itself. Login
    # commands (USER, SASL) are gone after login on both.
    assert mine[0] == reference[0] - {"CAPA", "STLS"} | {"IMPLEMENTATION"}
    assert mine[1] == reference[1] - {"CAPA"} | {"IMPLEMENTATION"}
    assert {"USER", "SASL"} & (mine[1] | reference[1]) == set()


def test_auth_plain_malformed_matches_dovecot(
    smtpsink: Mailbox, dovecot: Dovecot, user: str
) -> None:
    ours, theirs = both(smtpsink, dovecot, user, [])
    script = ["AUTH FOO", "AUTH PLAIN =", "AUTH PLAIN", "", "AUTH PLAIN", "!!!"]
    same([*script, f"USER {user}", "PASS x", "STAT", "QUIT"], ours, theirs)


def test_an_empty_user_name_fails_as_on_dovecot(
    smtpsink: Mailbox, dovecot: Dovecot, user: str
) -> None:
    ours, theirs = both(smtpsink, dovecot, user, [])
    # authzid NUL user NUL password, the user empty: no mailbox to open.
    script = ["AUTH PLAIN AAB4", "STAT", "AUTH PLAIN", "AAB4", "STAT", "QUIT"]
    same(script, ours, theirs)


def test_top_of_a_message_without_a_header_matches_dovecot(
    smtpsink: Mailbox, dovecot: Dovecot, user: str
) -> None:
    # The blank line comes first: all that follows it is the body, blank
    # lines in it included.
    headless = b"\r\nbody line 1\r\nline 2\r\n\r\nparagraph 2\r\n"
    ours, theirs = both(smtpsink, dovecot, user, [headless])
    same(
        [f"USER {user}", "PASS x", "TOP 1 0", "TOP 1 1", "TOP 1 3", "QUIT"],
        ours,
        theirs,
    )


def test_the_update_state_matches_dovecot(
    smtpsink: Mailbox, dovecot: Dovecot, user: str
) -> None:
    ours, theirs = both(smtpsink, dovecot, user, [ONE, TWO, THREE])
    # QUIT before login, RSET before QUIT: nothing deleted.
    same([f"USER {user}", "QUIT"], ours, theirs)
    same([f"USER {user}", "PASS x", "DELE 1", "RSET", "QUIT"], ours, theirs)
    # Pipelined (RFC 2449 PIPELINING): the deletion happens at the QUIT.
    assert both_pipelined(ours, theirs, f"USER {user}\r\nPASS x\r\nDELE 2\r\nQUIT")
    assert len(dovecot.messages(user)) == 2
    assert [m.subject for m in smtpsink.mailbox(user).messages()] == ["one", "three"]


def both_pipelined(ours: Endpoint, theirs: Endpoint, lines: str) -> bool:
    """``lines`` sent in one packet to each, read to the end of the
    connection; the status of every reply matches."""

    def statuses(endpoint: Endpoint) -> list[str]:
        with socket.create_connection((endpoint.host, endpoint.port)) as sock:
            sock.settimeout(READ_TIMEOUT)
            sock.sendall(lines.encode() + b"\r\n")
            received = b""
            while data := sock.recv(65536):
                received += data
        return [line.split(" ")[0] for line in received.decode().splitlines()]

    mine, reference = statuses(ours), statuses(theirs)
    assert mine == reference
    return len(mine) == lines.count("\r\n") + 2  # the greeting and each line


def replies(transcript: list[str]) -> list[tuple[str, str]]:
    """Each command of a masked transcript with the first line of its reply."""
    return [
        (line[3:], transcript[i + 1] if i + 1 < len(transcript) else "")
        for i, line in enumerate(transcript)
        if line.startswith("C: ")
    ]


def test_input_the_sink_refuses_where_dovecot_goes_on(
    smtpsink: Mailbox, dovecot: Dovecot, user: str
) -> None:
    ours, theirs = both(smtpsink, dovecot, user, [ONE, TWO])
    refused = {
        # More than one space between arguments (RFC 1939: one): Dovecot
        # skips the others; the sink says where the second is.
        "LIST  1",
        "RETR  1",
        "TOP  1 0",
        "TOP 1  0",
        # Over RFC 2449's 255 octets: Dovecot reads it.
        "LIST " + "0" * 300 + "1",
        # A NUL: Dovecot reads the line up to it.
        "NOOP\0",
        # Not UTF-8: Dovecot takes NOOP's argument as none.
        "NOOP \udcff",
        # More lines than the body has are the whole message (RFC 1939),
        # however many; Dovecot refuses a count over 32 bits.
        "TOP 1 99999999999999999999",
    }
    script = [f"USER {user}", "PASS x", *sorted(refused), "TOP 1 99", "QUIT"]
    offer = [(r"^\+OK <greeting> <apop>$", "+OK <greeting>")]
    mine = replies(masked(run(script, ours), text=True, extra=offer))
    reference = replies(masked(run(script, theirs), text=True))
    for (command, answer), (_, dovecots) in zip(mine, reference, strict=True):
        if command in refused - {"TOP 1 99999999999999999999"}:
            assert (answer, dovecots) == ("S: -ERR <text>", "S: +OK <text>"), command
        elif command == "TOP 1 99999999999999999999":
            assert (answer, dovecots) == ("S: +OK <text>", "S: -ERR <text>")
        else:
            assert answer == dovecots, command
    # The sink's TOP with the huge count sent what TOP 1 99 sends on both.
    transcript = masked(run(script, ours), text=True, extra=offer)
    huge = transcript.index("C: TOP 1 99999999999999999999")
    whole = transcript.index("C: TOP 1 99")
    assert transcript[huge + 1 : huge + 9] == transcript[whole + 1 : whole + 9]
    assert transcript[whole + 8] == "S: ."


def test_bad_commands_before_login_do_not_end_the_session(
    smtpsink: Mailbox, dovecot: Dovecot, user: str
) -> None:
    ours, theirs = both(smtpsink, dovecot, user, [TWO])
    script = ["", "FOO", "", f"USER {user}", "PASS x", "STAT", "QUIT"]
    offer = [(r"^\+OK <greeting> <apop>$", "+OK <greeting>")]
    mine = masked(run(script, ours), text=True, extra=offer)
    # Dovecot closes the connection after a third bad command before login
    # ("Too many invalid bad commands"); the sink answers each and goes on.
    with socket.create_connection((theirs.host, theirs.port)) as sock:
        sock.settimeout(READ_TIMEOUT)
        sock.sendall(b"\r\nFOO\r\n\r\n")
        received = b""
        while data := sock.recv(65536):
            received += data
    assert [line.split(" ")[0] for line in received.decode().splitlines()] == [
        "+OK", "-ERR", "-ERR", "-ERR", "-ERR",
    ]  # fmt: skip
    assert mine[-6:] == [
        "C: PASS x",
        "S: +OK <text>",
        "C: STAT",
        "S: +OK <text>",
        "C: QUIT",
        "S: +OK <text>",
    ]


def test_quit_with_an_argument_is_refused_where_dovecot_quits(
    smtpsink: Mailbox, dovecot: Dovecot, user: str
) -> None:
    ours, theirs = both(smtpsink, dovecot, user, [ONE, TWO])
    script = [f"USER {user}", "PASS x", "DELE 1", "QUIT x", "STAT", "QUIT"]
    offer = [(r"^\+OK <greeting> <apop>$", "+OK <greeting>")]
    mine = masked(run(script, ours), text=True, extra=offer)
    reference = masked(run(script[:4], theirs), text=True)
    # Dovecot logs out (and deletes); the sink refuses, the session goes on,
    # and only the QUIT without an argument deletes.
    assert reference[-2:] == ["C: QUIT x", "S: +OK <text>"]
    assert mine[-6:] == [
        "C: QUIT x",
        "S: -ERR <text>",
        "C: STAT",
        "S: +OK <text>",
        "C: QUIT",
        "S: +OK <text>",
    ]
    assert dovecot.messages(user) == [TWO]
    assert [m.subject for m in smtpsink.mailbox(user).messages()] == ["two"]


def _uids(endpoint: Endpoint, user: str) -> tuple[int, list[int]]:
    """INBOX's UIDVALIDITY and its messages' UIDs, as IMAP reports them."""
    script = [f"a LOGIN {user} x", "b SELECT INBOX", "c FETCH 1:* (UID)"]
    transcript = "\n".join(run(script, endpoint))
    validity = re.search(r"\[UIDVALIDITY (\d+)\]", transcript)
    assert validity is not None, transcript
    uids = [int(uid) for uid in re.findall(r"FETCH \(UID (\d+)\)", transcript)]
    return int(validity.group(1)), uids


def test_uidls_are_written_as_dovecot_writes_them(
    smtpsink: Mailbox, dovecot: Dovecot, user: str
) -> None:
    # Dovecot's default pop3_uidl_format, %08Xu%08Xv, writes lower-case hex
    # (the UID, then the UIDVALIDITY); the sink wrote upper case.
    ours, theirs = both(smtpsink, dovecot, user, [ONE, TWO])
    script = [f"USER {user}", "PASS x", "UIDL", "UIDL 2", "QUIT"]
    imap = {
        ours: Endpoint("imap", smtpsink.imap.host, smtpsink.imap.port),
        theirs: Endpoint("imap", dovecot.host, dovecot.imap_port),
    }
    for endpoint in (ours, theirs):
        validity, uids = _uids(imap[endpoint], user)
        transcript = run(script, endpoint)
        expected = [f"{n} {uid:08x}{validity:08x}" for n, uid in enumerate(uids, 1)]
        start = transcript.index("C: UIDL") + 2
        assert transcript[start : start + 3] == [
            *(f"S: {line}" for line in expected),
            "S: .",
        ], endpoint
        assert f"S: +OK {expected[1]}" in transcript, endpoint


def test_a_bare_cr_in_a_command_is_refused_by_both(
    smtpsink: Mailbox, dovecot: Dovecot, user: str
) -> None:
    # Only CRLF (or LF) ends a line. The sink took every CR before the LF
    # for the line end, so "STAT" and a CR ran STAT where Dovecot answers
    # -ERR (an unknown command "STAT\r"). A CR inside the line both refuse;
    # the sink says why (docs/reading.rst).
    ours, theirs = both(smtpsink, dovecot, user, [ONE, TWO])
    script = [
        f"USER {user}",
        "PASS x",
        "STAT\r",
        "LIST 1\r",
        "NO\rOP",
        "RETR 1\r",
        "DELE 1\r",
        "QUIT",
    ]
    assert same(script, ours, theirs)[-2:] == ["C: QUIT", "S: +OK <text>"]
    mine = run(script, ours)
    assert mine.count("S: -ERR Control characters in the command line") == 2
    assert mine.count("S: -ERR Control characters in the arguments") == 3
    # Nothing was deleted: the DELE with a CR did not run.
    assert dovecot.messages(user) == [ONE, TWO]
    assert len(smtpsink.mailbox(user).messages()) == 2


def test_a_message_imap_expunged_after_login_is_not_served_as_on_dovecot(
    smtpsink: Mailbox, dovecot: Dovecot, user: str
) -> None:
    """The login's snapshot still lists and counts it, but RETR and TOP
    of it answer that it was expunged, as Dovecot answers; the sink served
    the message an IMAP client had already deleted."""
    ours, theirs = both(smtpsink, dovecot, user, [ONE, TWO])
    imap_of = {
        id(ours): (smtpsink.imap.host, smtpsink.imap.port),
        id(theirs): (dovecot.host, dovecot.imap_port),
    }

    def expunge_first(endpoint: Endpoint) -> None:
        with imaplib.IMAP4(*imap_of[id(endpoint)], timeout=READ_TIMEOUT) as imap:
            imap.login(user, "secret")
            imap.select("INBOX")
            imap.store("1", "+FLAGS", "(\\Deleted)")
            imap.expunge()

    script = [
        f"USER {user}",
        "PASS secret",
        "RETR 1",
        "TOP 1 0",
        "STAT",
        "LIST",
        "RETR 2",
        "QUIT",
    ]
    transcripts = [
        masked(
            run(script, endpoint, before={"RETR 1": partial(expunge_first, endpoint)}),
            text=True,
            extra=[(r"^\+OK <greeting> <apop>$", "+OK <greeting>")],
        )
        for endpoint in (ours, theirs)
    ]
    assert transcripts[0] == transcripts[1]
    assert replies(transcripts[0])[2:4] == [
        ("RETR 1", "S: -ERR <text>"),
        ("TOP 1 0", "S: -ERR <text>"),
    ]
    (session,) = [s for s in smtpsink.sessions if s.protocol == "POP3"]
    retr = next(e for e in session.transcript if e.command == "RETR")
    assert retr.replies == ["-ERR Message 1 expunged"]
    assert [m.subject for m in smtpsink.mailbox(user).messages()] == ["two"]

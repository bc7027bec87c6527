"""The reference side of the POP3 and IMAP differential tests: a real
Dovecot (tests/dovecot.py) driven by the scripted-session harness
(tests/dialogue.py). These tests pin down what Dovecot answers, so that our
own servers can be held to the same transcripts, and prove that the harness
reads multi-line replies, literals and TLS upgrades correctly."""

from __future__ import annotations

import base64
import contextlib
import poplib
import re
import socket
import ssl
import threading
from collections.abc import Iterator

import external
import pytest
from dialogue import DialogueError, Endpoint, masked, run
from dovecot import Dovecot, DovecotError, find_program

ONE = b"Subject: one\nFrom: Ann <ann@example.com>\n\nhello\n.dot line\n..two dots\n"
TWO = b"Subject: two\r\nFrom: bob@example.com\r\n\r\nbody\r\nline 2\r\n"
THREE = b"Subject: three\n\nalready seen\n"


@pytest.fixture
def user(dovecot: Dovecot, request: pytest.FixtureRequest) -> Iterator[str]:
    """A mail user of this test alone, removed afterwards."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]
    yield name
    dovecot.reset(name)


def pop3(dovecot: Dovecot, source: str | None = None) -> Endpoint:
    return Endpoint(
        "pop3",
        dovecot.host,
        dovecot.pop3_port,
        ssl_context=dovecot.ssl_context(),
        source=source,
    )


def imap(dovecot: Dovecot) -> Endpoint:
    return Endpoint(
        "imap", dovecot.host, dovecot.imap_port, ssl_context=dovecot.ssl_context()
    )


# --------------------------------------------------------------------------
# POP3
# --------------------------------------------------------------------------

#: What Dovecot 2.3 answers to every POP3 command, masked. Our POP3 server
#: is held to this transcript.
POP3_TRANSCRIPT = [
    "S: +OK <greeting>",
    "C: STAT",
    "S: -ERR Unknown command.",
    "C: USER {user}",
    "S: +OK",
    "C: PASS secret",
    "S: +OK Logged in.",
    "C: STAT",
    "S: +OK 2 94",
    "C: LIST",
    "S: +OK 2 messages:",
    "S: 1 75",
    "S: 2 19",
    "S: .",
    "C: LIST 2",
    "S: +OK 2 19",
    "C: LIST 3",
    "S: -ERR There's no message 3.",
    "C: LIST x",
    "S: -ERR Invalid message number: x",
    "C: UIDL",
    "S: +OK",
    "S: 1 <uidl-1>",
    "S: 2 <uidl-2>",
    "S: .",
    "C: UIDL 1",
    "S: +OK 1 <uidl-1>",
    "C: RETR 1",
    "S: +OK 75 octets",
    "S: Subject: one",
    "S: From: Ann <ann@example.com>",
    "S: ",
    "S: hello",
    "S: ..dot line",
    "S: ...two dots",
    "S: .",
    "C: TOP 1 0",
    "S: +OK",
    "S: Subject: one",
    "S: From: Ann <ann@example.com>",
    "S: ",
    "S: .",
    "C: TOP 1 1",
    "S: +OK",
    "S: Subject: one",
    "S: From: Ann <ann@example.com>",
    "S: ",
    "S: hello",
    "S: .",
    "C: TOP 1 x",
    "S: -ERR Invalid size: x",
    "C: RETR",
    "S: -ERR Invalid message number: ",
    "C: NOOP",
    "S: +OK",
    "C: DELE 1",
    "S: +OK Marked to be deleted.",
    "C: DELE 1",
    "S: -ERR Message is deleted.",
    "C: RETR 1",
    "S: -ERR Message is deleted.",
    "C: STAT",
    "S: +OK 1 19",
    "C: RSET",
    "S: +OK",
    "C: STAT",
    "S: +OK 2 94",
    "C: XYZZY",
    "S: -ERR Unknown command: XYZZY",
    "C: APOP {user} 0123456789abcdef0123456789abcdef",
    "S: -ERR Unknown command: APOP",
    "C: DELE 2",
    "S: +OK Marked to be deleted.",
    "C: QUIT",
    "S: +OK Logging out, messages deleted.",
]

#: Dovecot's CAPA before login on a plain connection (STLS offered).
POP3_CAPA = [
    "CAPA",
    "TOP",
    "UIDL",
    "RESP-CODES",
    "PIPELINING",
    "AUTH-RESP-CODE",
    "STLS",
    "USER",
    "SASL PLAIN LOGIN",
]


def test_pop3_commands_as_dovecot_answers_them(dovecot: Dovecot, user: str) -> None:
    dovecot.seed(user, [ONE, b"Subject: two\n\nx\n"])
    script = [
        line.format(user=user)[3:] for line in POP3_TRANSCRIPT if line.startswith("C: ")
    ]

    transcript = run(script, pop3(dovecot))

    assert masked(transcript) == [line.format(user=user) for line in POP3_TRANSCRIPT]
    # The greeting itself, and the deletion at QUIT: only message 2 went.
    assert transcript[0] == "S: +OK Dovecot ready."
    assert dovecot.messages(user) == [ONE]


def test_pop3_capa(dovecot: Dovecot) -> None:
    transcript = run(["CAPA", "QUIT"], pop3(dovecot))

    assert transcript[1:] == [
        "C: CAPA",
        "S: +OK",
        *(f"S: {line}" for line in POP3_CAPA),
        "S: .",
        "C: QUIT",
        "S: +OK Logging out",
    ]


def test_pop3_seeded_messages_keep_their_order_size_and_flags(
    dovecot: Dovecot, user: str
) -> None:
    messages = [f"Subject: {n}\n\nmessage {n}\n".encode() for n in range(12)]
    dovecot.seed(user, messages[:6])
    dovecot.seed(user, messages[6:], flags=["\\Seen"])
    with logged_in(dovecot, user) as client:
        assert [client.retr(n)[1][-1] for n in range(1, 13)] == [
            f"message {n}".encode() for n in range(12)
        ]
        # LIST counts CRLF line ends, as the seeded W= size says.
        sizes = [int(line.split()[1]) for line in client.list()[1]]
        assert sizes == [len(m) + m.count(b"\n") for m in messages]


def test_pop3_a_dropped_connection_deletes_nothing(dovecot: Dovecot, user: str) -> None:
    dovecot.seed(user, [ONE, TWO])

    transcript = run([f"USER {user}", "PASS x", "DELE 1", "DELE 2"], pop3(dovecot))

    assert transcript[-1] == "S: +OK Marked to be deleted."
    assert dovecot.messages(user) == [ONE, TWO]


def test_pop3_reset_empties_a_maildrop(dovecot: Dovecot, user: str) -> None:
    dovecot.seed(user, [ONE])
    assert run([f"USER {user}", "PASS x", "STAT", "QUIT"], pop3(dovecot))[6] == (
        "S: +OK 1 75"
    )

    dovecot.reset(user)

    assert run([f"USER {user}", "PASS x", "STAT", "QUIT"], pop3(dovecot))[6] == (
        "S: +OK 0 0"
    )


def test_pop3_a_second_session_on_a_maildrop_is_in_use(
    dovecot: Dovecot, user: str
) -> None:
    dovecot.seed(user, [ONE])
    with logged_in(dovecot, user):
        # Dovecot waits about 10 s for the session lock before it refuses.
        transcript = run(
            [f"USER {user}", "PASS x", "STAT"], pop3(dovecot), read_timeout=60
        )

    assert transcript[4:] == [
        "S: -ERR [IN-USE] Mailbox is locked by another POP3 session.",
        "C: STAT",
        "S: <connection closed>",
    ]


def test_pop3_auth_plain_with_initial_response_and_continuation(
    dovecot: Dovecot, user: str
) -> None:
    token = base64.b64encode(f"\0{user}\0x".encode()).decode()

    assert run(["AUTH", f"AUTH PLAIN {token}", "QUIT"], pop3(dovecot))[1:] == [
        "C: AUTH",
        "S: +OK",
        "S: PLAIN",
        "S: LOGIN",
        "S: .",
        f"C: AUTH PLAIN {token}",
        "S: +OK Logged in.",
        "C: QUIT",
        "S: +OK Logging out.",
    ]
    assert run(["AUTH PLAIN", token, "QUIT"], pop3(dovecot))[1:5] == [
        "C: AUTH PLAIN",
        "S: + ",
        f"C: {token}",
        "S: +OK Logged in.",
    ]


def test_pop3s_and_stls_verify_the_certificate(dovecot: Dovecot, user: str) -> None:
    dovecot.seed(user, [ONE])
    implicit = Endpoint(
        "pop3",
        dovecot.host,
        dovecot.pop3s_port,
        implicit_tls=True,
        ssl_context=dovecot.ssl_context(),
    )
    login = [f"USER {user}", "PASS x", "STAT", "QUIT"]

    assert run(login, implicit)[-3:] == [
        "S: +OK 1 75",
        "C: QUIT",
        "S: +OK Logging out.",
    ]
    upgraded = run(["STLS", "CAPA", *login], pop3(dovecot))
    assert upgraded[1:3] == ["C: STLS", "S: +OK Begin TLS negotiation now."]
    # After STLS, CAPA no longer offers it.
    assert "S: STLS" not in upgraded[3:]
    assert upgraded[-3] == "S: +OK 1 75"
    # poplib, over both, verifying against the same CA.
    secure = poplib.POP3_SSL(
        dovecot.host, dovecot.pop3s_port, context=dovecot.ssl_context(), timeout=10
    )
    try:
        assert secure.getwelcome() == b"+OK Dovecot ready."
        secure.quit()
    finally:
        secure.close()
    client = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=10)
    try:
        client.stls(dovecot.ssl_context())
        client.user(user)
        client.pass_("x")
        assert client.stat() == (1, 75)
        client.quit()
    finally:
        client.close()


def test_a_client_that_does_not_trust_the_ca_is_refused(dovecot: Dovecot) -> None:
    untrusting = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no CA loaded
    endpoint = Endpoint(
        "pop3",
        dovecot.host,
        dovecot.pop3s_port,
        implicit_tls=True,
        ssl_context=untrusting,
    )

    with pytest.raises(ssl.SSLCertVerificationError):
        run(["QUIT"], endpoint)


# --------------------------------------------------------------------------
# IMAP
# --------------------------------------------------------------------------

#: Dovecot's capabilities before login (without STARTTLS once in TLS).
IMAP_PRE_LOGIN = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS "
    "AUTH=PLAIN AUTH=LOGIN"
)
#: ... and after.
IMAP_POST_LOGIN = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY "
    "THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL "
    "CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 "
    "CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS "
    "BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE "
    "LITERAL+ NOTIFY"
)


def test_imap_session_on_seeded_mail(dovecot: Dovecot, user: str) -> None:
    dovecot.seed(user, [ONE, TWO])
    dovecot.seed(user, [THREE], flags=["\\Seen", "\\Flagged"])
    dovecot.seed(user, [TWO], folder="Processed")
    script = [
        "a1 CAPABILITY",
        f"a2 LOGIN {user} secret",
        "a3 SELECT INBOX",
        "a4 FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)",
        "a5 FETCH 2 BODY[]",
        "a6 FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] FLAGS)",
        "a7 SEARCH ALL",
        "a8 SEARCH UNSEEN",
        "a9 UID SEARCH SUBJECT three",
        "b1 SEARCH FLAGGED",
        'b2 LIST "" *',
        "b3 APPEND Processed {5}",
        "hello",
        "b4 STATUS Processed (MESSAGES UIDVALIDITY)",
        "b5 FOO",
        "b6 LOGOUT",
    ]

    transcript = masked(run(script, imap(dovecot)))

    assert transcript == [
        f"S: * OK [CAPABILITY {IMAP_PRE_LOGIN}] <greeting>",
        "C: a1 CAPABILITY",
        f"S: * CAPABILITY {IMAP_PRE_LOGIN}",
        "S: a1 OK Pre-login capabilities listed, post-login capabilities have more.",
        f"C: a2 LOGIN {user} secret",
        f"S: * CAPABILITY {IMAP_POST_LOGIN}",
        "S: a2 OK Logged in",
        "C: a3 SELECT INBOX",
        r"S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)",
        r"S: * OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft \*)] Flags permitted.",
        "S: * 3 EXISTS",
        "S: * 3 RECENT",
        "S: * OK [UNSEEN 1] First unseen.",
        "S: * OK [UIDVALIDITY <uidvalidity-1>] UIDs valid",
        "S: * OK [UIDNEXT 4] Predicted next UID",
        "S: a3 OK [READ-WRITE] Select completed.",
        "C: a4 FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)",
        r"S: * 1 FETCH (UID 1 FLAGS (\Recent) RFC822.SIZE 75 INTERNALDATE <date>)",
        r"S: * 2 FETCH (UID 2 FLAGS (\Recent) RFC822.SIZE 53 INTERNALDATE <date>)",
        r"S: * 3 FETCH (UID 3 FLAGS (\Flagged \Seen \Recent) RFC822.SIZE 32 INTERNALDATE <date>)",
        "S: a4 OK Fetch completed.",
        "C: a5 FETCH 2 BODY[]",
        r"S: * 2 FETCH (FLAGS (\Seen \Recent) BODY[] {53}",
        "S: Subject: two",
        "S: From: bob@example.com",
        "S: ",
        "S: body",
        "S: line 2",
        "S: )",
        "S: a5 OK Fetch completed.",
        "C: a6 FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] FLAGS)",
        r"S: * 1 FETCH (FLAGS (\Recent) BODY[HEADER.FIELDS (SUBJECT)] {16}",
        "S: Subject: one",
        "S: ",
        "S: )",
        "S: a6 OK Fetch completed.",
        "C: a7 SEARCH ALL",
        "S: * SEARCH 1 2 3",
        "S: a7 OK Search completed.",
        "C: a8 SEARCH UNSEEN",
        "S: * SEARCH 1",
        "S: a8 OK Search completed.",
        "C: a9 UID SEARCH SUBJECT three",
        "S: * SEARCH 3",
        "S: a9 OK Search completed.",
        "C: b1 SEARCH FLAGGED",
        "S: * SEARCH 3",
        "S: b1 OK Search completed.",
        'C: b2 LIST "" *',
        r'S: * LIST (\HasNoChildren) "/" Processed',
        r'S: * LIST (\HasNoChildren) "/" INBOX',
        "S: b2 OK List completed.",
        "C: b3 APPEND Processed {5}",
        "S: + OK",
        "C: hello",
        "S: b3 OK [APPENDUID <uidvalidity-2> 2] Append completed.",
        "C: b4 STATUS Processed (MESSAGES UIDVALIDITY)",
        "S: * STATUS Processed (MESSAGES 2 UIDVALIDITY <uidvalidity-2>)",
        "S: b4 OK Status completed.",
        "C: b5 FOO",
        "S: b5 BAD Error in IMAP command FOO: Unknown command.",
        "C: b6 LOGOUT",
        "S: * BYE Logging out",
        "S: b6 OK Logout completed.",
    ]


def test_imaps_and_starttls_verify_the_certificate(dovecot: Dovecot, user: str) -> None:
    implicit = Endpoint(
        "imap",
        dovecot.host,
        dovecot.imaps_port,
        implicit_tls=True,
        ssl_context=dovecot.ssl_context(),
    )
    in_tls = IMAP_PRE_LOGIN.replace(" STARTTLS", "")

    assert masked(run(["a CAPABILITY", "b LOGOUT"], implicit))[:3] == [
        f"S: * OK [CAPABILITY {in_tls}] <greeting>",
        "C: a CAPABILITY",
        f"S: * CAPABILITY {in_tls}",
    ]
    upgraded = masked(
        run(
            ["a STARTTLS", "b CAPABILITY", f"c LOGIN {user} x", "d LOGOUT"],
            imap(dovecot),
        )
    )
    assert upgraded[1:6] == [
        "C: a STARTTLS",
        "S: a OK Begin TLS negotiation now.",
        "C: b CAPABILITY",
        f"S: * CAPABILITY {in_tls}",
        "S: b OK Pre-login capabilities listed, post-login capabilities have more.",
    ]
    assert upgraded[7] == f"S: c OK [CAPABILITY {IMAP_POST_LOGIN}] Logged in"


# --------------------------------------------------------------------------
# Passwords and required TLS (instances of their own)
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict_dovecot(dovecot: Dovecot) -> Iterator[Dovecot]:
    """Only ann/right may log in, and only over TLS."""
    with Dovecot(
        program=dovecot.program, passwords={"ann": "right"}, tls_required=True
    ) as server:
        yield server


def test_failed_logins_with_a_password_map(strict_dovecot: Dovecot) -> None:
    script = ["STLS", "USER ann", "PASS wrong", "USER bob", "PASS right"]
    script += ["USER ann", "PASS right", "QUIT"]

    assert run(script, pop3(strict_dovecot))[3:] == [
        "C: USER ann",
        "S: +OK",
        "C: PASS wrong",
        "S: -ERR [AUTH] Authentication failed.",
        "C: USER bob",
        "S: +OK",
        "C: PASS right",
        "S: -ERR [AUTH] Authentication failed.",
        "C: USER ann",
        "S: +OK",
        "C: PASS right",
        "S: +OK Logged in.",
        "C: QUIT",
        "S: +OK Logging out.",
    ]
    imap_script = ["a STARTTLS", "b LOGIN ann wrong", "c LOGOUT"]
    assert run(imap_script, imap(strict_dovecot))[4] == (
        "S: b NO [AUTHENTICATIONFAILED] Authentication failed."
    )


def test_required_tls_refuses_plaintext_logins(strict_dovecot: Dovecot) -> None:
    # Dovecot counts a client whose address equals its own as secure.
    remote = pop3(strict_dovecot, source=strict_dovecot.client_address)

    assert run(["CAPA", "USER ann", "QUIT"], remote)[1:] == [
        "C: CAPA",
        "S: +OK",
        "S: CAPA",
        "S: TOP",
        "S: UIDL",
        "S: RESP-CODES",
        "S: PIPELINING",
        "S: AUTH-RESP-CODE",
        "S: STLS",
        "S: SASL",
        "S: .",
        "C: USER ann",
        "S: -ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.",
        "C: QUIT",
        "S: +OK Logging out",
    ]
    assert run(["STLS", "USER ann", "PASS right", "QUIT"], remote)[-3] == (
        "S: +OK Logged in."
    )
    remote_imap = Endpoint(
        "imap",
        strict_dovecot.host,
        strict_dovecot.imap_port,
        source=strict_dovecot.client_address,
    )
    assert run(["a LOGOUT"], remote_imap)[0].startswith(
        "S: * OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE "
        "LITERAL+ STARTTLS LOGINDISABLED]"
    )


# --------------------------------------------------------------------------
# The harness itself
# --------------------------------------------------------------------------


def test_masking_renames_values_consistently() -> None:
    transcript = [
        "S: +OK POP3 ready <1896.697170952@dbc.mtview.ca.us>",
        "C: UIDL",
        "S: +OK",
        "S: 1 whqtswO00WBw418f9t5JxYwZ",
        "S: 2 QhdPYR:00WBw1Ph7x7",
        "S: .",
        "C: UIDL 2",
        "S: +OK 2 QhdPYR:00WBw1Ph7x7",
        "C: CAPA",
        "S: +OK",
        "S: IMPLEMENTATION pytest-smtpsink 1.0",
        "S: .",
    ]

    assert masked(transcript) == [
        "S: +OK <greeting> <apop>",
        "C: UIDL",
        "S: +OK",
        "S: 1 <uidl-1>",
        "S: 2 <uidl-2>",
        "S: .",
        "C: UIDL 2",
        "S: +OK 2 <uidl-2>",
        "C: CAPA",
        "S: +OK",
        "S: IMPLEMENTATION <implementation>",
        "S: .",
    ]


def test_masking_imap_text_and_capabilities_on_request() -> None:
    transcript = [
        "S: * OK [CAPABILITY IMAP4rev1 IDLE] Server ready",
        "C: a SELECT INBOX",
        "S: * OK [UIDVALIDITY 1796076553] UIDs valid",
        "S: * ID (name Dovecot)",
        "S: a OK [READ-WRITE] Select completed (0.002 + 0.000 + 0.001 secs).",
    ]

    assert masked(transcript, capabilities=True, text=True) == [
        "S: * OK [CAPABILITY <capabilities>] <greeting>",
        "C: a SELECT INBOX",
        "S: * OK [UIDVALIDITY <uidvalidity-1>] <text>",
        "S: * ID <id>",
        "S: a OK [READ-WRITE] <text>",
    ]
    # By default the text is compared, without Dovecot's timing.
    assert masked(transcript)[-1] == "S: a OK [READ-WRITE] Select completed."


def test_a_silent_server_raises_with_the_transcript_instead_of_hanging() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        accepted: list[socket.socket] = []

        def greet_then_stay_silent() -> None:
            connection, _ = listener.accept()
            accepted.append(connection)
            connection.sendall(b"+OK hello\r\n")

        thread = threading.Thread(target=greet_then_stay_silent)
        thread.start()
        endpoint = Endpoint("pop3", "127.0.0.1", listener.getsockname()[1])
        try:
            with pytest.raises(
                DialogueError, match=r"(?s)no reply within 0\.2 s.*C: NOOP"
            ):
                run(["NOOP"], endpoint, read_timeout=0.2)
        finally:
            thread.join(timeout=10)
            for connection in accepted:
                connection.close()


def test_dovecot_refuses_to_start_twice_and_reports_its_log(dovecot: Dovecot) -> None:
    dovecot_log = dovecot.log()
    program = find_program()
    if program is None:
        external.missing("Dovecot", "apt-get install dovecot-pop3d dovecot-imapd")
    server = Dovecot(program=program)
    with server:
        with pytest.raises(DovecotError, match="already started"):
            server.start()
        assert "starting up for pop3, imap" in server.log()
        # The session's instance logged no error (bad settings, permissions).
        assert re.findall(r".* (?:Error|Fatal|Panic): .*", dovecot_log) == []
    # Stopped: its directory is gone and a second stop is harmless.
    server.stop()
    with pytest.raises(DovecotError, match="not started"):
        server.log()


@contextlib.contextmanager
def logged_in(dovecot: Dovecot, user: str) -> Iterator[poplib.POP3]:
    """A poplib client logged in as *user*; QUIT at the end."""
    client = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=10)
    try:
        client.user(user)
        client.pass_("x")
        yield client
        client.quit()
    finally:
        client.close()

"""The POP3 server: real clients (poplib, curl, a raw socket) over loopback.

Every test reads what the server did from the store: the mailbox the test
sees (``smtpsink.mailbox``) and the recorded sessions (``smtpsink.sessions``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import imaplib
import logging
import poplib
import re
import smtplib
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import external
import pytest
from conftest import Factory, loop_held, make_message, replies_at_the_end, slow_reader

from pytest_smtpsink import Mailbox, Session, SMTPSink, _pop3
from pytest_smtpsink._content import dot_stuffed
from pytest_smtpsink._pop3 import mask_secrets, top_of

ANN = "ann@example.com"
SECRET = "s3cr3t-Pa55"  # never in any output
USERS = {ANN: SECRET, "bob@example.com": "bob-pw"}


class Raw:
    """A POP3 client on a bare socket: sends any bytes, reads replies."""

    def __init__(
        self, host: str, port: int, first: bytes = b"", held: Mailbox | None = None
    ) -> None:
        """With ``held``, that sink's loop is held while the client connects
        and sends ``first`` (`loop_held`)."""
        with contextlib.nullcontext() if held is None else loop_held(held):
            self.sock = socket.create_connection((host, port), timeout=10)
            if first:  # sent at once, before the greeting is read
                self.sock.sendall(first + b"\r\n")
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()

    def line(self) -> str:
        return self.file.readline().decode("utf-8").rstrip("\r\n")

    def send(self, raw: bytes) -> str:
        self.sock.sendall(raw + b"\r\n")
        return self.line()

    def body(self) -> list[bytes]:
        """The lines of a multi-line reply up to the final dot, as sent."""
        lines: list[bytes] = []
        while True:
            line = self.file.readline()
            assert line, "the connection closed inside a multi-line reply"
            if line == b".\r\n":
                return lines
            lines.append(line)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def raw(smtpsink: Mailbox) -> Iterator[Raw]:
    client = Raw(smtpsink.pop3.host, smtpsink.pop3.port)
    yield client
    client.close()


def login(smtpsink: Mailbox, user: str = ANN, password: str = "any") -> poplib.POP3:
    client = poplib.POP3(smtpsink.pop3.host, smtpsink.pop3.port, timeout=10)
    client.user(user)
    client.pass_(password)
    return client


def pop3_sessions(smtpsink: Mailbox) -> list[Session]:
    return [s for s in smtpsink.sessions if s.protocol == "POP3"]


def ended(smtpsink: Mailbox, count: int = 1) -> None:
    """Wait until ``count`` POP3 sessions have ended (the server's side)."""
    smtpsink.wait_until(
        lambda: len([s for s in pop3_sessions(smtpsink) if s.end]) >= count
    )


# -- the helpers, without sockets ---------------------------------------------------


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("PASS hunter2", "PASS ****"),
        ("pass hunter2 with spaces", "pass ****"),
        ("PASS", "PASS"),
        ("PASS\thunter2", "PASS ****"),
        # Glued on, as IMAP's "LOGIN****": not the PASS command it ran.
        ("PASShunter2", "PASS****"),
        ("AUTHAGFubgBodW50ZXIy", "AUTH****"),
        # What comes before the verb is kept (the transcript escapes it):
        # dropped, " PASS pw" read as a PASS the sink refused for nothing.
        ("  PASS hunter2", "  PASS ****"),
        ("\x00PASS hunter2", "\x00PASS ****"),
        # Any junk before the verb (found by a fuzz run: ESC, DEL, a no-break
        # space, a byte that is not UTF-8 kept the password in the clear).
        ("\x1bPASS hunter2", "\x1bPASS ****"),
        ("\x7fPASS hunter2", "\x7fPASS ****"),
        ("\xa0PASS hunter2", "\xa0PASS ****"),
        ("\udcffPASS hunter2", "\udcffPASS ****"),
        ("\udcff\x1b APOP ann 0123456789abcdef", "\udcff\x1b APOP ann ****"),
        ("APOP ann 0123456789abcdef0123456789abcdef", "APOP ann ****"),
        ("APOP 0123456789abcdef0123456789abcdef", "APOP ****"),
        ("AUTH PLAIN AGFubgBodW50ZXIy", "AUTH PLAIN ****"),
        ("AUTH PLAIN", "AUTH PLAIN"),
        # Nothing after it (poplib's pass_("")): "PASS ****" told of a
        # password that was not sent.
        ("PASS ", "PASS "),
        ("AUTH PLAIN ", "AUTH PLAIN "),
        ("AUTH ", "AUTH "),
        ("AUTH AGFubgBodW50ZXIy", "AUTH ****"),
        ("AUTH", "AUTH"),
        ("USER ann", "USER ann"),
        ("USER ann hunter2", "USER ann ****"),
        ("user\tann\thunter2 more", "user ann ****"),
        ("RETR 1", "RETR 1"),
    ],
)
def test_mask_secrets(line: str, shown: str) -> None:
    assert mask_secrets(line) == shown


def test_dot_stuffing_and_top() -> None:
    wire = b"Subject: x\r\n\r\n.one\r\ntwo\r\n..three"
    assert dot_stuffed(wire) == b"Subject: x\r\n\r\n..one\r\ntwo\r\n...three\r\n.\r\n"
    assert dot_stuffed(b".a\r\n") == b"..a\r\n.\r\n"
    assert top_of(wire, 0) == b"Subject: x\r\n\r\n"
    assert top_of(wire, 1) == b"Subject: x\r\n\r\n.one\r\n"
    assert top_of(wire, 9) == wire
    assert top_of(b"Subject: only\r\n", 3) == b"Subject: only\r\n"
    # No header: the blank line is the first, the rest all body.
    headless = b"\r\nline 1\r\n\r\nline 3\r\n"
    assert top_of(headless, 0) == b"\r\n"
    assert top_of(headless, 1) == b"\r\nline 1\r\n"


# -- reading what SMTP delivered ---------------------------------------------------------


def test_each_envelope_recipient_reads_the_mail(smtpsink: Mailbox) -> None:
    message = make_message(subject="for three", to=[ANN, "bob@example.com"])
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as smtp:
        # carol is a Bcc: only the envelope names her.
        smtp.send_message(
            message, to_addrs=[ANN, "Bob@Example.com", "carol@example.com"]
        )
    sent = smtpsink.assert_sent(subject="for three")
    for user in (ANN, "bob@example.com", "CAROL@example.com"):
        client = login(smtpsink, user)
        count, size = client.stat()
        _, lines, octets = client.retr(1)
        client.quit()
        assert count == 1
        assert b"\r\n".join(lines) + b"\r\n" == sent.raw
        assert octets == size == len(sent.raw)
    assert [s.authenticated_as for s in pop3_sessions(smtpsink)] == [
        ANN,
        "bob@example.com",
        "CAROL@example.com",
    ]


def test_getmail_flow_deletes_at_quit_and_marks_read(smtpsink: Mailbox) -> None:
    first = smtpsink.deliver(make_message(subject="first"), to=ANN)
    smtpsink.deliver(make_message(subject="second"), to=ANN)
    client = login(smtpsink)
    _, uidls, _ = client.uidl()
    ids = [line.split()[1] for line in uidls]
    assert len(set(ids)) == 2
    assert all(re.fullmatch(rb"[0-9a-f]{16}", uid) for uid in ids)
    _, head, _ = client.top(1, 0)
    assert b"Subject: first" in head
    assert head[-1] == b""  # the header and the blank line, no body
    client.retr(1)
    client.retr(2)
    client.dele(1)
    mailbox = smtpsink.mailbox(ANN)
    # Nothing changes before QUIT (RFC 1939's UPDATE state).
    assert len(mailbox.messages()) == 2
    assert mailbox.deleted() == []
    client.quit()
    mailbox.assert_deleted(subject="first")
    mailbox.assert_in(subject="second", flags={"\\Seen"})
    assert mailbox.deleted() == [first]
    # The same UIDL for the same copy in a later session.
    client = login(smtpsink)
    assert client.uidl(1).split()[2] == ids[1]
    client.quit()


def test_messages_marked_deleted_are_not_counted(smtpsink: Mailbox) -> None:
    # RFC 1939 5: STAT's totals leave out messages marked as deleted, and
    # LIST does not list them; RSET unmarks them. Nothing held this: STAT
    # could count them, and a client that compares counts after DELE
    # (fetchmail, getmail) would misbehave with no test noticing.
    sizes = [
        len(smtpsink.deliver(make_message(subject=f"m{n}", body="x" * n), to=ANN).raw)
        for n in (1, 20, 300)
    ]
    client = login(smtpsink)
    try:
        assert client.stat() == (3, sum(sizes))
        client.dele(2)
        assert client.stat() == (2, sizes[0] + sizes[2])
        _, listed, _ = client.list()
        assert listed == [f"1 {sizes[0]}".encode(), f"3 {sizes[2]}".encode()]
        with pytest.raises(poplib.error_proto, match="deleted"):
            client.list(2)
        # UIDL too ("messages marked as deleted are not listed"): a client
        # that syncs by UIDL (getmail, fetchmail's keep) would see it still.
        _, uidls, _ = client.uidl()
        assert [line.split()[0] for line in uidls] == [b"1", b"3"]
        with pytest.raises(poplib.error_proto, match="deleted"):
            client.uidl(2)
        assert client.rset().startswith(
            f"+OK Maildrop has 3 messages ({sum(sizes)} octets)".encode()
        )
        assert client.stat() == (3, sum(sizes))
    finally:
        client.quit()


def test_quit_says_deleted_only_for_mail_it_removed(smtpsink: Mailbox) -> None:
    # A message marked for deletion over POP3 but expunged over IMAP before
    # QUIT: QUIT removes nothing, and says so.
    smtpsink.deliver(make_message(subject="first"), to=ANN)
    pop3 = login(smtpsink)
    pop3.dele(1)
    imap = imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port, timeout=10)
    try:
        imap.login(ANN, "any")
        imap.select("INBOX")
        imap.store("1", "+FLAGS", "\\Deleted")
        imap.expunge()
    finally:
        imap.logout()
    assert pop3.quit() == b"+OK Logging out"
    assert len(smtpsink.mailbox(ANN).deleted()) == 1  # the IMAP client's


def test_top_does_not_mark_read_and_rset_forgets(smtpsink: Mailbox) -> None:
    smtpsink.deliver(make_message(subject="kept"), to=ANN)
    client = login(smtpsink)
    client.top(1, 3)
    client.retr(1)
    client.dele(1)
    assert client.rset().startswith(b"+OK")
    client.quit()
    smtpsink.mailbox(ANN).assert_in(subject="kept", flags=())


@pytest.mark.parametrize("end", ["closed", "timeout"])
def test_retr_marks_read_however_the_session_ends(
    smtpsink_factory: Factory, end: str
) -> None:
    # Only deletions wait for QUIT: RETR's \Seen is written when the session
    # ends any way, as on Dovecot (a poller that closes without QUIT; one
    # cut off by the idle timeout). The sink kept it for QUIT only.
    mailbox = smtpsink_factory(idle_timeout=0.5 if end == "timeout" else 300)
    mailbox.deliver(make_message(subject="read"), to=ANN)
    mailbox.deliver(make_message(subject="unread"), to=ANN)
    # All sent before the server first reads: no pause of this thread can
    # let the timeout in between.
    raw = Raw(
        mailbox.pop3.host,
        mailbox.pop3.port,
        first=b"USER ann@example.com\r\nPASS x\r\nRETR 1\r\nTOP 2 0",
        held=mailbox,
    )
    assert raw.line().startswith("+OK")  # PASS
    assert raw.line().startswith("+OK")  # RETR
    raw.body()
    assert raw.line().startswith("+OK")  # TOP
    raw.body()
    box = mailbox.mailbox(ANN)
    if end == "timeout":
        assert raw.line() == "-ERR [SYS/TEMP] Disconnected for inactivity"
        # Written before the goodbye is sent.
        read, unread = box.messages()
        assert (box.flags(read), box.flags(unread)) == (
            frozenset({"\\Seen"}),
            frozenset(),
        )
    raw.close()
    ended(mailbox)
    assert pop3_sessions(mailbox)[0].end == end.replace("closed", "client-closed")
    box.assert_in(subject="read", flags={"\\Seen"})
    box.assert_in(subject="unread", flags=())
    assert box.deleted() == []


def test_bare_lf_and_leading_dots_on_the_wire(smtpsink: Mailbox, raw: Raw) -> None:
    smtpsink.deliver(b"Subject: dots\n\n.starts with a dot\n.\nend", to=ANN)
    raw.send(b"USER ann@example.com")
    assert raw.send(b"PASS x").startswith("+OK")
    # The size counts CRLF line ends, as sent (the CRLF added after the
    # last line, which had none, is not part of the message).
    assert raw.send(b"LIST 1") == "+OK 1 43"
    assert raw.send(b"RETR 1") == "+OK 43 octets"
    assert raw.body() == [
        b"Subject: dots\r\n",
        b"\r\n",
        b"..starts with a dot\r\n",
        b"..\r\n",
        b"end\r\n",
    ]
    assert raw.send(b"QUIT").startswith("+OK")
    session = pop3_sessions(smtpsink)[0]
    retr = session.replies_to("RETR")[0]
    # The transcript counts the message; it never copies it.
    assert retr.replies == ["+OK 43 octets", "[message 1: 43 octets]", "."]
    assert "starts with a dot" not in session.format_transcript()


def test_a_first_line_with_a_dot_is_stuffed_too(smtpsink: Mailbox, raw: Raw) -> None:
    # RFC 1939 3: every line that starts with the termination octet. Dovecot
    # 2.3 leaves a message's first line unstuffed (docs/reading.rst): a
    # message of one "." line ended its reply at once there.
    smtpsink.deliver(b".", to=ANN)
    smtpsink.deliver(b".first\r\n", to=ANN)
    raw.send(b"USER ann@example.com")
    assert raw.send(b"PASS x").startswith("+OK")
    assert raw.send(b"RETR 1") == "+OK 1 octets"
    assert raw.body() == [b"..\r\n"]
    assert raw.send(b"RETR 2") == "+OK 8 octets"
    assert raw.body() == [b"..first\r\n"]
    assert raw.send(b"NOOP") == "+OK"  # in step


def test_an_unknown_user_has_an_empty_maildrop(smtpsink: Mailbox) -> None:
    client = login(smtpsink, "nobody@example.com")
    assert client.stat() == (0, 0)
    assert client.list()[1] == []
    client.quit()


def test_a_dropped_connection_deletes_nothing(smtpsink: Mailbox, raw: Raw) -> None:
    smtpsink.deliver(make_message(subject="stays"), to=ANN)
    raw.send(b"USER ann@example.com")
    raw.send(b"PASS x")
    assert raw.send(b"DELE 1").startswith("+OK")
    raw.send(b"RETR 1")  # -ERR: deleted in this session
    raw.close()
    ended(smtpsink)
    assert pop3_sessions(smtpsink)[0].end == "client-closed"
    mailbox = smtpsink.mailbox(ANN)
    mailbox.assert_in(subject="stays", flags=())
    assert mailbox.deleted() == []
    # The maildrop lock went with the connection.
    client = login(smtpsink)
    assert client.stat()[0] == 1
    client.quit()


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset"])
def test_assert_deleted_names_a_dele_whose_session_ended_without_quit(
    smtpsink: Mailbox, reset: bool
) -> None:
    # The app sent DELE and closed: rightly nothing deleted (RFC 1939), but
    # the failure said only "found none", the cause left to the transcript.
    smtpsink.deliver(make_message(subject="kept"), to=ANN)
    smtpsink.deliver(make_message(subject="marked"), to=ANN)
    client = login(smtpsink)
    client.dele(2)
    port = client.sock.getsockname()[1]
    if reset:  # the end is seen at once, before the serving task's own
        client.sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
    client.close()
    ended(smtpsink)
    box = smtpsink.mailbox(ANN)
    uid = box.stored()[1].uid
    with pytest.raises(AssertionError) as failure:
        box.assert_deleted(subject="marked")
    text = str(failure.value)
    assert text.endswith(
        f"\nHint: uid {uid} was marked by DELE in the POP3 session from "
        f"127.0.0.1:{port}, which ended without QUIT (end=client-closed): POP3 "
        "deletes only at QUIT (RFC 1939)"
    ), text
    assert f"  * uid {uid} [-] " in text  # marked in the listing
    # Only the mail the assertion asks about is named.
    with pytest.raises(AssertionError) as other:
        box.assert_deleted(subject="kept")
    assert "Hint" not in str(other.value)


def test_assert_deleted_names_a_copy_marked_in_many_sessions_once(
    smtpsink: Mailbox,
) -> None:
    # A poller that never sends QUIT marks the same message at every poll:
    # one hint per poll, the copy marked again each time.
    smtpsink.deliver(make_message(subject="marked"), to=ANN)
    ports = []
    for polls in range(1, 4):
        client = login(smtpsink)
        client.dele(1)
        ports.append(client.sock.getsockname()[1])
        client.close()
        ended(smtpsink, polls)  # the maildrop is free for the next poll
    with pytest.raises(AssertionError) as failure:
        smtpsink.mailbox(ANN).assert_deleted(subject="marked")
    hints = [line for line in str(failure.value).splitlines() if "Hint" in line]
    assert len(hints) == 1, hints
    assert f"session from 127.0.0.1:{ports[-1]}," in hints[0]


def test_assert_deleted_names_a_dele_whose_session_is_still_open(
    smtpsink: Mailbox,
) -> None:
    # The test asserted before the app's QUIT: no hint until the session
    # ended, though the marks were there.
    smtpsink.deliver(make_message(subject="marked"), to=ANN)
    client = login(smtpsink)
    try:
        client.dele(1)  # its +OK: the mark is made
        port = client.sock.getsockname()[1]
        box = smtpsink.mailbox(ANN)
        with pytest.raises(AssertionError) as failure:
            box.assert_deleted(subject="marked")
        assert str(failure.value).endswith(
            f"\nHint: uid {box.stored()[0].uid} was marked by DELE in the POP3 "
            f"session from 127.0.0.1:{port}, which is still open (no QUIT yet): "
            "POP3 deletes only at QUIT (RFC 1939)"
        ), str(failure.value)
    finally:
        client.quit()
    box.assert_deleted(subject="marked")


def test_assert_deleted_names_a_dele_whose_quit_a_fault_refused(
    smtpsink: Mailbox,
) -> None:
    smtpsink.deliver(make_message(subject="marked"), to=ANN)
    smtpsink.fail("POP3:QUIT", 451)
    client = login(smtpsink)
    client.dele(1)
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
        client.quit()
    client.close()
    ended(smtpsink)
    with pytest.raises(AssertionError, match=r"session from \S+, whose QUIT did "):
        smtpsink.mailbox(ANN).assert_deleted(subject="marked")


def test_a_dele_applied_by_a_later_session_leaves_no_hint(smtpsink: Mailbox) -> None:
    smtpsink.deliver(make_message(subject="gone"), to=ANN)
    first = login(smtpsink)
    first.dele(1)
    first.close()
    ended(smtpsink)
    second = login(smtpsink)
    second.dele(1)
    second.quit()
    box = smtpsink.mailbox(ANN)
    box.assert_deleted(subject="gone")
    with pytest.raises(AssertionError) as failure:
        box.assert_deleted(subject="other")
    assert "Hint" not in str(failure.value)


def test_an_auth_response_cut_off_by_the_close_is_counted_never_named(
    smtpsink: Mailbox, raw: Raw
) -> None:
    # It left no trace; and a base64 response may be a verb ("QUIT"), which
    # a command line's note would name.
    assert raw.send(b"AUTH PLAIN") == "+ "
    raw.sock.sendall(b"QUIT")
    raw.sock.shutdown(socket.SHUT_WR)
    assert raw.file.read() == b""  # no reply: closed
    ended(smtpsink)
    (session,) = pop3_sessions(smtpsink)
    assert session.end == "client-closed"
    assert [e.line for e in session.transcript[-2:]] == [
        "AUTH PLAIN",
        "[not run: 4 octets with no line end, cut off by the client's close]",
    ]
    assert session.auth_attempts == ()


@pytest.mark.parametrize("last", [b"QUIT", b"PASS " + SECRET.encode()])
def test_a_line_cut_off_by_the_close_is_not_run(
    smtpsink: Mailbox, raw: Raw, last: bytes
) -> None:
    # A QUIT without its line end, then the close, was run: it deleted
    # (a real server runs only a line that ended). Its argument, which may
    # be a password, is never shown.
    smtpsink.deliver(make_message(subject="stays"), to=ANN)
    raw.send(b"USER ann@example.com")
    if last == b"QUIT":
        raw.send(b"PASS x")
        assert raw.send(b"DELE 1").startswith("+OK")
    raw.sock.sendall(last)
    raw.sock.shutdown(socket.SHUT_WR)
    assert raw.file.read() == b""  # no reply: closed
    ended(smtpsink)
    (session,) = pop3_sessions(smtpsink)
    assert session.end == "client-closed"
    verb = last.split()[0].decode()
    note = session.transcript[-1]
    assert note.line == (
        f"[not run: {verb}, {len(last)} octets with no line end, cut off by the "
        "client's close]"
    )
    # A note has neither verb nor argument (the argument read "run: ...").
    assert (note.command, note.argument) == (None, None)
    assert not session.used("QUIT")
    assert SECRET not in session.format_transcript()
    smtpsink.mailbox(ANN).assert_in(subject="stays", flags=())
    assert smtpsink.mailbox(ANN).deleted() == []


def test_apop_with_an_empty_password_is_refused(smtpsink: Mailbox) -> None:
    # Taken where PASS and AUTH PLAIN refuse an empty password: the digest
    # shows it, even where any password is taken.
    client = poplib.POP3(smtpsink.pop3.host, smtpsink.pop3.port, timeout=10)
    with pytest.raises(poplib.error_proto, match=r"APOP needs a password"):
        client.apop(ANN, "")
    assert client.apop(ANN, "x").startswith(b"+OK")
    client.quit()


def test_a_seen_flag_still_to_come_from_retr_gets_a_hint(smtpsink: Mailbox) -> None:
    # RETR's \\Seen lands when the session ends, which the sink sees a
    # moment after a client's close: a test asserting at once failed with
    # no word of why (assert_deleted says so for DELE).
    smtpsink.deliver(b"Subject: read me\r\n\r\nx\r\n", to=ANN)
    box = smtpsink.mailbox(ANN)
    client = login(smtpsink)
    client.retr(1)
    with pytest.raises(AssertionError) as caught:
        box.assert_in(subject="read me", flags={"\\Seen"})
    uid = box.stored()[0].uid
    assert re.search(
        rf"\nHint: uid {uid} was sent by RETR in the POP3 session from "
        r"127\.0\.0\.1:\d+, which is still open \(or closed a moment ago\): "
        r"RETR's \\Seen lands when the session ends; wait for it with "
        r"smtpsink\.wait_until\(lambda: box\.assert_in\(\.\.\.\)\)",
        str(caught.value),
    ), caught.value
    client.close()  # no QUIT: the flag lands all the same, once seen
    smtpsink.wait_until(lambda: box.assert_in(subject="read me", flags={"\\Seen"}))


def test_apop_refuses_a_user_name_that_names_no_mailbox(smtpsink: Mailbox) -> None:
    # USER/PASS and AUTH PLAIN refused "<>"; APOP logged in as it.
    client = poplib.POP3(smtpsink.pop3.host, smtpsink.pop3.port, timeout=10)
    try:
        # Nor a name with a TAB, which USER refuses (no address has one).
        for name in ("<>", "ann\t@example.com"):
            with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\]"):
                client.apop(name, "x")
    finally:
        client.quit()


def test_a_second_session_finds_the_maildrop_in_use(smtpsink: Mailbox) -> None:
    smtpsink.deliver(make_message(), to=ANN)
    first = login(smtpsink)
    second = poplib.POP3(smtpsink.pop3.host, smtpsink.pop3.port, timeout=10)
    second.user("ANN@example.com")  # the same mailbox, whatever the case
    with pytest.raises(poplib.error_proto, match=r"-ERR \[IN-USE\]"):
        second.pass_("x")
    # Not a wrong password: the record says so (it read as one).
    session = pop3_sessions(smtpsink)[1]
    assert session.summary().endswith(
        "user=None (failed: USER 'ANN@example.com', mailbox in use) end=open"
    )
    first.quit()
    second.user(ANN)
    assert second.pass_("x").startswith(b"+OK")  # free again after QUIT
    second.quit()
    attempts = session.auth_attempts
    assert [(a.success, a.in_use) for a in attempts] == [(False, True), (True, False)]


def test_a_mailbox_assertion_names_a_login_refused_as_in_use(
    smtpsink: Mailbox,
) -> None:
    # The hint on refused logins called it "a wrong password".
    first = login(smtpsink)
    smtpsink.clear()
    second = poplib.POP3(smtpsink.pop3.host, smtpsink.pop3.port, timeout=10)
    try:
        second.user(ANN)
        with pytest.raises(poplib.error_proto, match=r"-ERR \[IN-USE\]"):
            second.pass_("x")
        with pytest.raises(AssertionError) as failure:
            smtpsink.mailbox(ANN).assert_in("INBOX", subject="Ticket")
    finally:
        first.quit()
        second.quit()
    assert (
        f"refused: POP3 USER {ANN!r} (the mailbox was in use by another POP3 "
        "session) (see the sessions' auth_attempts)"
    ) in str(failure.value)


def test_a_mailbox_assertion_names_a_reader_locked_out_by_the_holder_in_the_test(
    smtpsink: Mailbox,
) -> None:
    # The holder logged in in the same test (a check of the test's own, left
    # open): any login of the user made the hint on refusals say nothing,
    # and the reader locked out was named nowhere (helper-231 F3).
    smtpsink.deliver(make_message(), to=ANN)
    holder = login(smtpsink)
    reader = poplib.POP3(smtpsink.pop3.host, smtpsink.pop3.port, timeout=10)
    try:
        reader.user(ANN)
        with pytest.raises(poplib.error_proto, match=r"-ERR \[IN-USE\]"):
            reader.pass_("x")
        with pytest.raises(AssertionError) as failure:
            smtpsink.mailbox(ANN).assert_deleted(subject="Ticket")
    finally:
        reader.quit()
        holder.quit()
    assert (
        f"\nHint: 1 POP3 login as {ANN} was refused in this test: the mailbox was "
        "in use by another POP3 session (RFC 1939 lets one session at a time hold "
        "it, until its QUIT)\nHint: 1 reader session of"
    ) in str(failure.value)


# -- TLS ------------------------------------------------------------------------------


def test_capa_lists_login_commands_only_before_login(smtpsink: Mailbox) -> None:
    client = poplib.POP3(smtpsink.pop3.host, smtpsink.pop3.port, timeout=10)
    before = client.capa()
    client.user(ANN)
    client.pass_("x")
    after = client.capa()
    # USER is refused after login: listing it then would promise a command
    # the server does not take (Dovecot drops it too).
    assert list(before) == [
        "TOP", "USER", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING",
        "SASL", "IMPLEMENTATION",
    ]  # fmt: skip
    assert list(after) == [
        "TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "IMPLEMENTATION",
    ]  # fmt: skip
    with pytest.raises(poplib.error_proto, match="Not valid after login"):
        client.user(ANN)
    client.quit()


@pytest.mark.smtpsink(tls="starttls")
def test_stls_with_certificate_verification(smtpsink: Mailbox) -> None:
    pop3 = smtpsink.pop3
    assert (pop3.tls, pop3.url) == ("starttls", f"pop3://127.0.0.1:{pop3.port}")
    smtpsink.deliver(make_message(subject="over tls"), to=ANN)
    client = poplib.POP3(pop3.host, pop3.port, timeout=10)
    assert "STLS" in client.capa()
    client.stls(context=pop3.ssl_context())
    assert "STLS" not in client.capa()
    client.user(ANN)
    client.pass_("x")
    assert b"Subject: over tls" in b"\n".join(client.retr(1)[1])
    client.quit()
    session = pop3_sessions(smtpsink)[0]
    assert session.tls is not None
    assert session.tls.implicit is False
    assert session.before("STLS", "PASS")


@pytest.mark.parametrize(
    "settings",
    [
        {"tls": "starttls-required"},
        # Passwords checked, and not allowed over plain text: SMTP AUTH
        # refuses them before STARTTLS (538), and so does POP3.
        {"tls": "starttls", "auth": {ANN: "x"}},
    ],
)
def test_starttls_required_refuses_login_before_stls(
    smtpsink_factory: Callable[..., Mailbox], settings: dict[str, Any]
) -> None:
    smtpsink = smtpsink_factory(**settings)
    client = poplib.POP3(smtpsink.pop3.host, smtpsink.pop3.port, timeout=10)
    # No login is offered before STLS (as IMAP's LOGINDISABLED, and as on
    # Dovecot): no USER, and SASL without a mechanism.
    before = client.capa()
    assert "USER" not in before
    assert before["SASL"] == []
    assert "STLS" in before
    assert client._longcmd("AUTH")[1] == []  # type: ignore[attr-defined]
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] TLS is required"):
        client.user(ANN)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] TLS is required"):
        client._shortcmd("AUTH PLAIN AGFubgB4")  # type: ignore[attr-defined]
    client.stls(context=smtpsink.pop3.ssl_context())
    after = client.capa()
    assert "USER" in after
    assert after["SASL"] == ["PLAIN"]
    client.user(ANN)
    assert client.pass_("x").startswith(b"+OK")
    client.quit()


@pytest.mark.smtpsink(tls="starttls", auth={ANN: "x"}, auth_plaintext=True)
def test_auth_plaintext_allows_login_before_stls(smtpsink: Mailbox) -> None:
    client = poplib.POP3(smtpsink.pop3.host, smtpsink.pop3.port, timeout=10)
    assert "STLS" in client.capa()
    client.user(ANN)
    assert client.pass_("x").startswith(b"+OK")
    client.quit()


@pytest.mark.smtpsink(tls="starttls")
def test_commands_pipelined_behind_stls_are_discarded_and_noted(
    smtpsink: Mailbox,
) -> None:
    # RFC 2595 4: what came in plain text behind STLS never runs as if it
    # came over TLS; the transcript says how much (never what: a PASS).
    smuggled = f"USER {ANN}\r\nPASS {SECRET}\r\n".encode()
    pop3 = smtpsink.pop3
    with socket.create_connection((pop3.host, pop3.port), timeout=10) as sock:
        with sock.makefile("rb") as plain:
            plain.readline()  # the greeting
            sock.sendall(b"STLS\r\n" + smuggled)
            assert plain.readline() == b"+OK Begin TLS negotiation\r\n"
        context = pop3.ssl_context()
        with (
            context.wrap_socket(sock, server_hostname=pop3.host) as tls,
            tls.makefile("rb") as secure,
        ):
            tls.sendall(b"STAT\r\n")
            # Not logged in: the smuggled USER and PASS did not run.
            assert secure.readline().startswith(b"-ERR ")
            tls.sendall(b"QUIT\r\n")
            secure.read()
    (session,) = pop3_sessions(smtpsink)
    smtpsink.wait_until(lambda: session.end is not None)
    assert [e.line for e in session.transcript][1:4] == [
        "STLS",
        f"[not run: {len(smuggled)} octets sent after STLS before the TLS "
        "handshake, discarded unread]",
        "STAT",
    ]
    assert SECRET not in session.format_transcript()


@pytest.mark.smtpsink(tls="implicit")
def test_pop3s(smtpsink: Mailbox) -> None:
    pop3 = smtpsink.pop3
    assert pop3.url == f"pop3s://127.0.0.1:{pop3.port}"
    client = poplib.POP3_SSL(pop3.host, pop3.port, context=pop3.ssl_context())
    try:
        assert "STLS" not in client.capa()
        # Not "not offered": TLS is up (Dovecot's words).
        with pytest.raises(
            poplib.error_proto, match=r"^b'-ERR TLS is already active'$"
        ):
            client._shortcmd("STLS")  # type: ignore[attr-defined]
        client.user(ANN)
        client.pass_("x")
    finally:
        client.quit()
    session = pop3_sessions(smtpsink)[0]
    assert session.tls is not None
    assert session.tls.implicit is True
    assert session.end == "quit"


@pytest.mark.smtpsink(tls="implicit")
def test_pop3s_handshake_failure_is_a_session(smtpsink: Mailbox) -> None:
    untrusting = ssl.create_default_context(cafile=None)
    untrusting.load_verify_locations(cadata=_other_ca())
    with pytest.raises(ssl.SSLError):
        poplib.POP3_SSL(smtpsink.pop3.host, smtpsink.pop3.port, context=untrusting)
    ended(smtpsink)
    session = pop3_sessions(smtpsink)[0]
    assert session.end == "tls-failed"
    assert session.tls_error is not None
    assert "rejected the sink's certificate" in session.tls_error


def _other_ca() -> str:
    import trustme

    return trustme.CA().cert_pem.bytes().decode()


def test_stls_is_not_offered_without_tls(smtpsink: Mailbox, raw: Raw) -> None:
    assert raw.send(b"STLS").startswith("-ERR STLS is not offered")
    assert smtpsink.pop3.tls is None
    with pytest.raises(RuntimeError, match="tls=None"):
        smtpsink.pop3.ssl_context()


# -- login ------------------------------------------------------------------------------


@pytest.mark.smtpsink(auth=USERS, auth_plaintext=True)
def test_the_sinks_credentials_are_enforced(smtpsink: Mailbox, raw: Raw) -> None:
    assert raw.send(b"USER ann@example.com").startswith("+OK")
    assert raw.send(b"PASS wrong") == "-ERR [AUTH] Authentication failed"
    assert raw.send(b"PASS " + SECRET.encode()) == "-ERR Send USER first"
    raw.send(b"USER ann@example.com")
    assert raw.send(b"PASS " + SECRET.encode()).startswith("+OK Logged in")
    assert raw.send(b"QUIT").startswith("+OK")
    # APOP: MD5 of the greeting's timestamp and the password.
    apop = Raw(smtpsink.pop3.host, smtpsink.pop3.port)
    stamp = re.search(r"<[^>]+>", apop.greeting)
    assert stamp is not None
    digest = hashlib.md5((stamp.group() + SECRET).encode()).hexdigest()
    assert apop.send(b"APOP ann@example.com " + b"0" * 32).startswith("-ERR [AUTH]")
    assert apop.send(f"APOP ann@example.com {digest}".encode()).startswith("+OK")
    apop.close()
    # AUTH PLAIN with an initial response, and with a continuation.
    plain = Raw(smtpsink.pop3.host, smtpsink.pop3.port)
    good = _plain("ann@example.com", SECRET)
    assert plain.send(b"AUTH PLAIN " + _plain("ann@example.com", "no")).startswith(
        "-ERR [AUTH]"
    )
    assert plain.send(b"AUTH PLAIN") == "+ "
    assert plain.send(b"*") == "-ERR Authentication cancelled"
    assert plain.send(b"AUTH PLAIN") == "+ "
    assert plain.send(good).startswith("+OK Logged in")
    plain.close()
    ended(smtpsink, 3)
    sessions = pop3_sessions(smtpsink)
    assert [(a.mechanism, a.success) for s in sessions for a in s.auth_attempts] == [
        ("USER", False),
        ("USER", True),
        ("APOP", False),
        ("APOP", True),
        ("PLAIN", False),
        ("PLAIN", True),
    ]
    assert {s.authenticated_as for s in sessions} == {ANN}
    shown = "\n".join([repr(s) for s in sessions] + [s.summary() for s in sessions])
    for secret in (SECRET, digest, good.decode()):
        assert secret not in shown
    assert "PASS ****" in shown
    assert "APOP ann@example.com ****" in shown


def test_an_empty_password_logs_in_on_no_read_side_path(smtpsink: Mailbox) -> None:
    # PASS without one was refused, but AUTH PLAIN, IMAP LOGIN "" and IMAP
    # AUTHENTICATE PLAIN logged in: an application whose password setting
    # was empty passed on one path and not the others.
    empty = _plain("ann@example.com", "")
    pop = Raw(smtpsink.pop3.host, smtpsink.pop3.port)
    assert pop.send(b"AUTH PLAIN " + empty) == (
        "-ERR [AUTH] The PLAIN response has no password"
    )
    assert pop.send(b"USER ann@example.com").startswith("+OK")
    assert pop.send(b"PASS") == "-ERR PASS needs a password"
    pop.close()
    with socket.create_connection(
        (smtpsink.imap.host, smtpsink.imap.port), timeout=10
    ) as sock:
        sock.sendall(
            b'a LOGIN ann@example.com ""\r\nb AUTHENTICATE PLAIN '
            + empty
            + b"\r\nc LOGOUT\r\n"
        )
        with sock.makefile("rb") as replies:
            said = replies.read().decode()
    assert "a NO [AUTHENTICATIONFAILED] LOGIN needs a password\r\n" in said
    assert "b NO [AUTHENTICATIONFAILED] The PLAIN response has no password" in said
    assert all(s.authenticated_as is None for s in smtpsink.sessions)


@pytest.mark.smtpsink(auth=USERS, auth_plaintext=True)
def test_a_password_on_the_user_line_is_refused_and_masked(
    smtpsink: Mailbox, raw: Raw
) -> None:
    reply = raw.send(b"USER ann@example.com " + SECRET.encode())
    assert reply == "-ERR USER takes one user name"
    assert raw.send(b"PASS " + SECRET.encode()) == "-ERR Send USER first"
    assert raw.send(b"QUIT").startswith("+OK")
    ended(smtpsink)
    (session,) = pop3_sessions(smtpsink)
    assert session.auth_attempts == ()
    shown = session.format_transcript() + repr(session) + session.summary()
    assert SECRET not in shown
    assert "C: USER ann@example.com ****" in shown


def test_an_invisible_mark_before_a_command_is_shown(
    smtpsink: Mailbox, raw: Raw
) -> None:
    # A byte order mark before USER (a script saved by an editor): the
    # transcript read "C: USER ann@example.com" answered "-ERR Unknown
    # command".
    assert raw.send("\ufeffUSER ann@example.com".encode()) == "-ERR Unknown command"
    assert raw.send(b"QUIT").startswith("+OK")
    ended(smtpsink)
    (session,) = pop3_sessions(smtpsink)
    assert session.commands[0].startswith("\\ufeffUSER")
    assert "C: \\ufeffUSER " in session.format_transcript()


def test_a_password_a_client_sends_astray_is_masked(
    smtpsink: Mailbox, raw: Raw
) -> None:
    # Before login, a misspelt verb whose token made its line too long kept
    # the token's first 64 characters, and the one-word line after a bare
    # PASS was recorded as it came: both in reports, saved transcripts,
    # smtpsink.json and index.html.
    token = "eyJhbGciOiJSUzI1NiJ9" + "A1b2C3d4E5" * 30
    assert raw.send(b"LOGIN help@example.com " + token.encode()).startswith(
        "-ERR Line too long"
    )
    assert raw.send(b"PAS " + token.encode()).startswith("-ERR Line too long")
    assert raw.send(token.encode()).startswith("-ERR Line too long")
    assert raw.send(b"USER ann@example.com") == "+OK Send PASS"
    assert raw.send(b"PASS") == "-ERR PASS needs a password"
    assert raw.send(SECRET.encode()) == "-ERR Unknown command"
    assert raw.send(b"QUIT").startswith("+OK")
    ended(smtpsink)
    (session,) = pop3_sessions(smtpsink)
    shown = session.format_transcript() + repr(session) + session.summary()
    assert "A1b2C3d4E5" not in shown
    assert SECRET not in shown
    length = len(token) + len("LOGIN help@example.com ") + 2
    assert [e.line for e in session.transcript[1:4]] == [
        f"LOGIN **** [{length} bytes in all]",
        f"PAS **** [{len(token) + 6} bytes in all]",
        f"**** [{len(token) + 2} bytes in all]",
    ]
    assert session.transcript[-2].line == "****"


@pytest.mark.parametrize("auth", [None, USERS], ids=["any-password", "auth-table"])
def test_pass_without_a_password_is_refused_not_tried(
    smtpsink_factory: Factory, auth: dict[str, str] | None
) -> None:
    sink = smtpsink_factory(auth=auth, auth_plaintext=True)
    client = Raw(sink.pop3.host, sink.pop3.port)
    try:
        assert client.send(b"USER ann@example.com") == "+OK Send PASS"
        for line in (b"PASS", b"PASS "):
            assert client.send(line) == "-ERR PASS needs a password"
        # Still in AUTHORIZATION, with the user given: no login happened.
        assert client.send(b"STAT") == "-ERR Log in first (USER and PASS, APOP or AUTH)"
        assert client.send(b"PASS " + SECRET.encode()).startswith("+OK Logged in")
        assert client.send(b"QUIT").startswith("+OK")
    finally:
        client.close()
    ended(sink)
    (session,) = pop3_sessions(sink)
    assert [(a.username, a.success) for a in session.auth_attempts] == [(ANN, True)]
    assert session.commands == ["USER", "PASS", "PASS", "STAT", "PASS", "QUIT"]
    refused = session.replies_to("PASS")
    # "PASS " as sent: "PASS ****" told of a password that was not sent.
    assert [e.line for e in refused] == ["PASS", "PASS ", "PASS ****"]
    assert SECRET not in session.format_transcript()


def test_a_long_password_logs_in_as_on_dovecot(smtpsink_factory: Factory) -> None:
    """An app password or a token of 300 to 1,500 characters: RFC 2449's
    255-octet line refused PASS with it ("Line too long"), where Dovecot
    and the sink's own IMAP LOGIN take it (helper-231 F2)."""
    token = "t0k3n-" * 250  # 1,500 characters
    sink = smtpsink_factory(auth={ANN: token}, auth_plaintext=True)
    sink.deliver(make_message(), to=ANN)
    client = poplib.POP3(sink.pop3.host, sink.pop3.port, timeout=10)
    client.user(ANN)
    assert client.pass_(token).startswith(b"+OK Logged in")
    assert client.stat()[0] == 1
    # Other lines keep the limit.
    with pytest.raises(poplib.error_proto, match="Line too long: 307 octets"):
        client._shortcmd("NOOP " + "x" * 300)  # type: ignore[attr-defined]
    client.quit()
    ended(sink)
    assert token not in pop3_sessions(sink)[0].format_transcript()


def _plain(user: str, password: str) -> bytes:
    import base64

    return base64.b64encode(f"\0{user}\0{password}".encode())


def test_reply_is_the_text_without_status_or_final_dot(smtpsink: Mailbox) -> None:
    smtpsink.deliver(make_message(subject="first"), to=ANN)
    client = login(smtpsink)
    client.list()
    with pytest.raises(poplib.error_proto):
        client.retr(9)
    client.quit()
    ended(smtpsink)
    (session,) = pop3_sessions(smtpsink)
    replies = {exchange.line: exchange.reply for exchange in session.transcript}
    assert replies["PASS ****"] == "Logged in: 1 message (166 octets)"
    assert replies["LIST"] == "1 message (166 octets)\n1 166"
    assert replies["RETR 9"] == "There's no message 9 (the maildrop has 1 message)"
    assert replies["QUIT"] == "Logging out"
    assert {exchange.code for exchange in session.transcript} == {None}


@pytest.mark.parametrize("fault", [False, True])
def test_the_session_ends_after_its_last_reply_is_recorded(
    smtpsink: Mailbox, smtpsink_server: SMTPSink, fault: bool
) -> None:
    # A test that waits for a session's end must find the last reply in
    # the transcript: look at the moment the end is set (on the sink's
    # thread, as the store announces it).
    if fault:
        smtpsink.fail("POP3:QUIT", 421, "going away")
    with replies_at_the_end(smtpsink, smtpsink_server) as at_end:
        client = login(smtpsink)
        if fault:
            with pytest.raises(poplib.error_proto, match="going away"):
                client.quit()
        else:
            client.quit()
        client.close()
        ended(smtpsink)
    expected = "-ERR [SYS/TEMP] going away" if fault else "+OK Logging out"
    assert at_end == [[expected]]


def test_secrets_stay_out_of_the_report_and_saved_transcripts(
    pytester: pytest.Pytester,
) -> None:
    half = len(SECRET) // 2
    pytester.makepyfile(
        f"""
import base64, poplib, socket

# Split, so that the traceback's source lines do not show it whole.
SECRET = "{SECRET[:half]}" + "{SECRET[half:]}"

def test_reads(smtpsink):
    pop3 = smtpsink.pop3
    client = poplib.POP3(pop3.host, pop3.port, timeout=10)
    client.user("ann@example.com")
    client.pass_(SECRET)
    try:
        client.apop("ann@example.com", SECRET)
    except poplib.error_proto:
        pass  # refused: logged in already
    client.quit()
    with socket.create_connection((pop3.host, pop3.port)) as raw:
        raw.sendall(b"AUTH PLAIN\\r\\n"
                    + base64.b64encode(b"\\0ann\\0" + SECRET.encode()) + b"\\r\\n"
                    + b"PASS" + SECRET.encode() + b"\\r\\nQUIT\\r\\n")
        while raw.recv(4096):
            pass
    smtpsink.wait_until(lambda: all(s.end for s in smtpsink.sessions))
    print(smtpsink.sessions)
    assert False, "show the report"
"""
    )
    saved = pytester.path / "saved"
    result = pytester.runpytest("-s", f"--smtpsink-save-dir={saved}")
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert "POP3 127.0.0.1" in output  # the report lists the sessions
    assert "PASS ****" in output
    files = [p for p in saved.rglob("*") if p.is_file()]
    assert any("PASS ****" in p.read_text() for p in files)
    encoded = _plain("ann", SECRET).decode()
    for text in [output, result.stderr.str(), *(p.read_text() for p in files)]:
        assert SECRET not in text
        assert encoded not in text


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"FROB", "-ERR Unknown command"),
        (b"", "-ERR Unknown command"),
        (b"RETR", "-ERR Log in first"),
        (b"STAT", "-ERR Log in first"),
        (b"PASS x", "-ERR Send USER first"),
        (b"USER", "-ERR USER needs a user name"),
        (b"USER  ann", "-ERR A second space at byte 5: arguments are separated by one"),
        (b"USER ann ", "-ERR A space at the end of the line (byte 8): nothing may"),
        ("USER jörg  x".encode(), "-ERR A second space at byte 11"),  # octets
        (b"APOP ann  " + b"0" * 32, "-ERR A second space at byte 9"),
        (b"AUTH  PLAIN", "-ERR A second space at byte 5"),
        (b"CAPA all", "-ERR CAPA takes no argument"),
        (b"QUIT now", "-ERR QUIT takes no argument"),
        (b"APOP ann", "-ERR APOP needs a user name and an MD5 digest"),
        # RFC 1939: a name has no space, as USER has it; "ann pw" is no user.
        (
            b"APOP ann pw " + b"0" * 32,
            "-ERR APOP takes a user name and an MD5 digest, not 3 arguments",
        ),
        (b"AUTH CRAM-MD5", "-ERR [AUTH] Unsupported mechanism"),
        # A user name that is not UTF-8 opens no mailbox.
        (b"AUTH PLAIN AP9AeABwdw==", "-ERR [AUTH] Authentication failed"),
        # A dotless i upper-cases to I: still no PLAIN.
        ("AUTH PLA\u0131N AGFubgB4".encode(), "-ERR [AUTH] Unsupported mechanism"),
        (b"\x00\x01\x02", "-ERR Control characters in the command line"),
        (b"USER a\x00b", "-ERR Control characters in the arguments"),
        (b"\xff\xfe\xfd", "-ERR The command line is not UTF-8"),
        (b"USER " + b"a" * 300, "-ERR Line too long: 307 octets"),
        (b"x" * 100_000, "-ERR Line too long: 100002 octets"),
    ],
)
def test_bad_input_before_login(
    smtpsink: Mailbox, raw: Raw, line: bytes, reply: str
) -> None:
    said = raw.send(line)
    assert said.startswith(reply)
    # Not named before login: the word may be a password sent alone.
    assert "FROB" not in said
    # The server keeps serving.
    assert raw.send(b"USER ann@example.com") == "+OK Send PASS"
    session = pop3_sessions(smtpsink)[0]
    assert session.transcript[1].replies[0].startswith(reply)
    assert "\x00" not in session.format_transcript()


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"RETR 0", "-ERR There's no message 0 (the maildrop has 2 messages)"),
        (b"RETR 3", "-ERR There's no message 3 (the maildrop has 2 messages)"),
        (b"RETR one", "-ERR Invalid message number: one"),
        (b"RETR -1", "-ERR Invalid message number: -1"),
        (b"RETR", "-ERR A message number is needed"),
        (b"RETR 2", "-ERR Message 2 is deleted"),
        (b"DELE 2", "-ERR Message 2 is deleted"),
        (b"LIST 2", "-ERR Message 2 is deleted"),
        (b"UIDL 99999999999999999999999", "-ERR There's no message"),
        (b"TOP 1", "-ERR TOP needs a message number and a number of lines, not 1 "),
        (b"TOP 1 x", "-ERR Invalid number of lines: x"),
        (b"TOP 1 -1", "-ERR Invalid number of lines: -1"),
        (b"TOP 1 1 1", "-ERR TOP needs a message number and a number of lines, not 3"),
        (b"RETR 1 2", "-ERR RETR takes one message number, not 2 arguments: 1 2"),
        (b"DELE 1 2", "-ERR DELE takes one message number, not 2 arguments: 1 2"),
        (b"LIST  1", "-ERR A second space at byte 5: arguments are separated by one"),
        (b"RETR 1 ", "-ERR A space at the end of the line (byte 6)"),
        (b"TOP  1 0", "-ERR A second space at byte 4"),
        (b"DELE 1 ", "-ERR A space at the end of the line (byte 6)"),
        (b"STAT 1", "-ERR STAT takes no argument"),
        (b"NOOP extra", "-ERR NOOP takes no argument"),
        (b"RSET 2", "-ERR RSET takes no argument"),  # message 2 stays deleted
        (b"CAPA extra", "-ERR CAPA takes no argument"),
        (b"QUIT now", "-ERR QUIT takes no argument"),  # nothing deleted yet
        (b"USER bob", "-ERR Not valid after login"),
        (b"STLS", "-ERR Not valid after login"),
        (b"EXPN ann", "-ERR Unknown command: EXPN"),
        (b"\xc3(", "-ERR The command line is not UTF-8"),
        (b"NOOP " + b"9" * 260, "-ERR Line too long"),
    ],
)
def test_bad_input_after_login_changes_nothing(
    smtpsink: Mailbox, raw: Raw, line: bytes, reply: str
) -> None:
    smtpsink.deliver(make_message(subject="one"), to=ANN)
    smtpsink.deliver(make_message(subject="two"), to=ANN)
    raw.send(b"USER ann@example.com")
    raw.send(b"PASS x")
    assert raw.send(b"DELE 2").startswith("+OK")
    assert raw.send(line).startswith(reply)
    assert raw.send(b"RSET").startswith("+OK")
    assert raw.send(b"STAT") == "+OK 2 " + str(
        2 * smtpsink.mailbox(ANN).stored()[0].size
    )
    assert raw.send(b"QUIT") == "+OK Logging out"
    mailbox = smtpsink.mailbox(ANN)
    assert [m.subject for m in mailbox.messages()] == ["one", "two"]
    assert mailbox.deleted() == []


def test_pipelined_commands_are_answered_in_order(smtpsink: Mailbox, raw: Raw) -> None:
    smtpsink.deliver(make_message(), to=ANN)
    raw.sock.sendall(b"USER ann@example.com\r\nPASS x\r\nSTAT\r\nNOOP\r\nQUIT\r\n")
    assert [raw.line() for _ in range(5)] == [
        "+OK Send PASS",
        raw_login_reply(smtpsink),
        f"+OK 1 {smtpsink.mailbox(ANN).stored()[0].size}",
        "+OK",
        "+OK Logging out",
    ]
    assert pop3_sessions(smtpsink)[0].commands == [
        "USER", "PASS", "STAT", "NOOP", "QUIT",
    ]  # fmt: skip


def raw_login_reply(smtpsink: Mailbox) -> str:
    size = smtpsink.mailbox(ANN).stored()[0].size
    return f"+OK Logged in: 1 message ({size} octets)"


@pytest.mark.parametrize(
    ("command", "reply", "before_the_goodbye"),
    [
        # Then waiting for a command.
        (b"CAPA", "+OK Capability list follows", "IMPLEMENTATION pytest-smtpsink"),
        # Then waiting for a SASL response.
        (b"AUTH PLAIN", "+ ", ""),
    ],
)
def test_idle_sessions_time_out_saying_so(
    smtpsink_factory: Factory, command: bytes, reply: str, before_the_goodbye: str
) -> None:
    mailbox = smtpsink_factory(idle_timeout=0.5)
    # The command is there when the server first reads: no pause of this
    # thread can let the timeout in before it.
    raw = Raw(mailbox.pop3.host, mailbox.pop3.port, first=command, held=mailbox)
    assert raw.line() == reply
    if command == b"CAPA":
        raw.body()
    assert raw.line() == "-ERR [SYS/TEMP] Disconnected for inactivity"
    assert raw.line() == ""  # closed
    raw.close()
    ended(mailbox)
    (session,) = pop3_sessions(mailbox)
    assert session.end == "timeout"
    goodbye = "[SYS/TEMP] Disconnected for inactivity"
    if command == b"CAPA":
        # Waiting for a command, which never came: no command asked for
        # the goodbye, its own exchange.
        *_, last, notice = session.transcript
        assert last.reply.splitlines()[-1] == before_the_goodbye
        assert (notice.kind, notice.reply) == ("notice", goodbye)
    else:
        # Waiting for the SASL response: the goodbye answers the AUTH.
        assert session.transcript[-1].reply.splitlines()[-2:] == [
            before_the_goodbye,
            goodbye,
        ]


def test_a_command_the_idle_timeout_cut_off_is_noted(smtpsink_factory: Factory) -> None:
    # A line never ended (LF-vs-CRLF, a missing flush) left no trace.
    mailbox = smtpsink_factory(idle_timeout=0.5)
    pop3 = mailbox.pop3
    with loop_held(mailbox):  # all there when the server first reads
        sock = socket.create_connection((pop3.host, pop3.port), timeout=10)
        sock.sendall(f"USER {ANN}\r\nPASS {SECRET}".encode())
    with sock, sock.makefile("rb") as replies:
        said = replies.read()  # until the sink closes
    assert said.endswith(b"-ERR [SYS/TEMP] Disconnected for inactivity\r\n")
    ended(mailbox)
    (session,) = pop3_sessions(mailbox)
    assert [e.line for e in session.transcript][1:] == [
        f"USER {ANN}",
        f"[not run: PASS, {5 + len(SECRET)} octets with no line end, cut off by "
        "the idle timeout]",
        "",  # the goodbye's notice
    ]
    assert SECRET not in session.format_transcript()


def test_a_sasl_response_the_idle_timeout_cut_off_is_counted(
    smtpsink_factory: Factory,
) -> None:
    # Nothing was recorded of it, and the goodbye hung on the AUTH.
    mailbox = smtpsink_factory(idle_timeout=0.5)
    pop3 = mailbox.pop3
    with loop_held(mailbox):  # all there when the server first reads
        sock = socket.create_connection((pop3.host, pop3.port), timeout=10)
        sock.sendall(b"AUTH PLAIN\r\nAGFubgBwdw")
    with sock, sock.makefile("rb") as replies:
        assert replies.read().endswith(
            b"-ERR [SYS/TEMP] Disconnected for inactivity\r\n"
        )
    ended(mailbox)
    (session,) = pop3_sessions(mailbox)
    assert [(e.kind, e.line, e.replies) for e in session.transcript][1:] == [
        ("command", "AUTH PLAIN", ["+ "]),
        (
            "command",
            "[not run: 10 octets with no line end, cut off by the idle timeout]",
            [],
        ),
        ("notice", "", ["-ERR [SYS/TEMP] Disconnected for inactivity"]),
    ]


# -- faults ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "command", "code", "reply"),
    [
        ("POP3:USER", b"USER ann@example.com", 550, "-ERR [SYS/PERM] no"),
        ("POP3:PASS", b"PASS x", 450, "-ERR [SYS/TEMP] no"),
        ("POP3:STAT", b"STAT", 550, "-ERR [SYS/PERM] no"),
        ("POP3:LIST", b"LIST", 550, "-ERR [SYS/PERM] no"),
        ("POP3:UIDL", b"UIDL 1", 550, "-ERR [SYS/PERM] no"),
        ("POP3:RETR", b"RETR 1", 550, "-ERR [SYS/PERM] no"),
        ("POP3:TOP", b"TOP 1 0", 451, "-ERR [SYS/TEMP] no"),
        ("POP3:DELE", b"DELE 1", 550, "-ERR [SYS/PERM] no"),
        ("POP3:NOOP", b"NOOP", 550, "-ERR [SYS/PERM] no"),
        ("POP3:CAPA", b"CAPA", 550, "-ERR [SYS/PERM] no"),
    ],
)
def test_fail_at_each_stage(
    smtpsink: Mailbox, stage: str, command: bytes, code: int, reply: str
) -> None:
    smtpsink.deliver(make_message(), to=ANN)
    rule = smtpsink.fail(stage, code, "no")
    raw = Raw(smtpsink.pop3.host, smtpsink.pop3.port)
    for line in (b"USER ann@example.com", b"PASS x"):
        if line == command:
            break
        raw.send(line)
    assert raw.send(command) == reply
    raw.close()
    assert rule.fired == 1
    injected = [e for e in pop3_sessions(smtpsink)[0].transcript if e.injected]
    assert [e.replies for e in injected] == [[reply]]


@pytest.mark.parametrize("initial", [True, False], ids=["initial", "after-+"])
def test_fail_at_auth_matches_the_user_of_the_plain_response(
    smtpsink: Mailbox, initial: bool
) -> None:
    # The rules were asked at AUTH, before its response named the user: a
    # rule for ann never fired for her AUTH PLAIN login, and a retry test
    # passed without its failure.
    for_ann = smtpsink.fail("POP3:AUTH", 454, "try later", match=ANN, times=1)
    for_bob = smtpsink.fail("POP3:AUTH", 550, "never", match="bob@example.com")
    response = base64.b64encode(f"\0{ANN}\0x".encode())
    raw = Raw(smtpsink.pop3.host, smtpsink.pop3.port)
    for attempt in ("refused", "logged in"):
        if initial:
            reply = raw.send(b"AUTH PLAIN " + response)
        else:
            assert raw.send(b"AUTH PLAIN") == "+ "
            reply = raw.send(response)
        if attempt == "refused":
            assert reply == "-ERR [SYS/TEMP] try later"
        else:
            assert reply.startswith("+OK Logged in")
    raw.close()
    assert (for_ann.seen, for_ann.fired) == (2, 1)
    assert (for_bob.seen, for_bob.fired) == (0, 0)


def test_a_rule_for_the_name_given_at_login_fires_after_login(
    smtpsink_factory: Factory,
) -> None:
    # After login the rules compared with the mailbox's name only: a rule
    # for "Ann@..." (or "ann+news@..." with a recipient delimiter) fired at
    # PASS and never at RETR in the same session.
    sink = smtpsink_factory(recipient_delimiter="+")
    sink.deliver(make_message(), to=ANN)
    for name in ("Ann@example.com", "ann+news@example.com"):
        rule = sink.fail("POP3:RETR", 550, "broken", match=name)
        client = login(sink, name)
        with pytest.raises(poplib.error_proto, match="broken"):
            client.retr(1)
        client.quit()
        assert rule.fired == 1
        sink.clear_faults()


def test_a_pass_a_fault_refused_needs_user_again(smtpsink: Mailbox) -> None:
    # As after a wrong password, and on Dovecot: the user was kept, and a
    # bare PASS retry logged in.
    smtpsink.fail("POP3:PASS", 454, "try later", times=1)
    raw = Raw(smtpsink.pop3.host, smtpsink.pop3.port)
    raw.send(b"USER ann@example.com")
    assert raw.send(b"PASS x") == "-ERR [SYS/TEMP] try later"
    assert raw.send(b"PASS x").startswith("-ERR")
    raw.send(b"USER ann@example.com")
    assert raw.send(b"PASS x").startswith("+OK Logged in")
    raw.close()


def test_fail_matches_the_user_and_quit_fails_without_deleting(
    smtpsink: Mailbox,
) -> None:
    smtpsink.deliver(make_message(), to=[ANN, "bob@example.com"])
    smtpsink.fail("POP3:RETR", 550, "broken store", match="bob@example.com")
    smtpsink.fail("POP3:QUIT", 451)
    ann = login(smtpsink)
    ann.retr(1)  # not matched
    bob = login(smtpsink, "bob@example.com")
    with pytest.raises(poplib.error_proto, match=r"\[SYS/PERM\] broken store"):
        bob.retr(1)
    bob.dele(1)
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
        bob.quit()
    bob.close()
    ann.close()
    ended(smtpsink, 2)
    assert smtpsink.mailbox("bob@example.com").deleted() == []
    assert len(smtpsink.mailbox("bob@example.com").messages()) == 1


def test_a_421_at_a_command_closes_the_session(smtpsink: Mailbox, raw: Raw) -> None:
    # The docs say a 421 closes the connection; POP3 answered and went on.
    smtpsink.deliver(make_message(), to=ANN)
    smtpsink.fail("POP3:RETR", 421, "going down")
    raw.send(b"USER ann@example.com")
    raw.send(b"PASS x")
    assert raw.send(b"RETR 1") == "-ERR [SYS/TEMP] going down"
    assert raw.line() == ""  # closed
    ended(smtpsink)
    assert pop3_sessions(smtpsink)[0].end == "server-closed"


def test_connect_fault_refuses_the_greeting_by_client_ip(smtpsink: Mailbox) -> None:
    smtpsink.fail("POP3:CONNECT", 421, "go away", match="127.0.0.1")
    raw = Raw(smtpsink.pop3.host, smtpsink.pop3.port)
    assert raw.greeting == "-ERR [SYS/TEMP] go away"
    assert raw.line() == ""
    raw.close()
    ended(smtpsink)
    assert pop3_sessions(smtpsink)[0].end == "server-closed"


def test_disconnect_at_retr_deletes_nothing(smtpsink: Mailbox) -> None:
    smtpsink.deliver(make_message(subject="kept"), to=ANN)
    smtpsink.disconnect("POP3:RETR")
    client = login(smtpsink)
    client.dele(1)
    with pytest.raises((poplib.error_proto, ConnectionError, EOFError)):
        client.retr(1)
    client.close()
    ended(smtpsink)
    assert pop3_sessions(smtpsink)[0].end == "server-closed"
    smtpsink.mailbox(ANN).assert_in(subject="kept", flags=())


def test_delay_then_go_on(smtpsink: Mailbox) -> None:
    smtpsink.deliver(make_message(), to=ANN)
    rule = smtpsink.delay("POP3:STAT", 0.05)
    client = login(smtpsink)
    assert client.stat()[0] == 1
    client.quit()
    assert rule.fired == 1
    assert pop3_sessions(smtpsink)[0].replies_to("STAT")[0].injected


def test_a_hang_ends_when_its_rule_is_removed(smtpsink: Mailbox) -> None:
    smtpsink.deliver(make_message(), to=ANN)
    rule = smtpsink.hang("POP3:RETR")
    raw = Raw(smtpsink.pop3.host, smtpsink.pop3.port)
    raw.send(b"USER ann@example.com")
    raw.send(b"PASS x")
    raw.send(b"DELE 1")
    raw.sock.sendall(b"RETR 1\r\n")
    smtpsink.wait_until(lambda: rule.fired == 1)
    rule.remove()
    assert raw.line() == ""  # closed, no reply
    raw.close()
    ended(smtpsink)
    assert pop3_sessions(smtpsink)[0].end == "server-closed"
    assert smtpsink.mailbox(ANN).deleted() == []


# -- curl -------------------------------------------------------------------------------------


def test_curl_pop3(smtpsink: Mailbox) -> None:
    curl = external.require("curl", "apt-get install curl")
    sent = smtpsink.deliver(make_message(subject="via curl"), to=ANN)
    listing = subprocess.run(
        [curl, "--silent", "--show-error", "--user", f"{ANN}:x", smtpsink.pop3.url],
        capture_output=True,
        check=True,
        timeout=30,
    )
    assert listing.stdout.split() == [b"1", str(len(sent.raw)).encode()]
    message = subprocess.run(
        [curl, "-sS", "--user", f"{ANN}:x", f"{smtpsink.pop3.url}/1"],
        capture_output=True,
        check=True,
        timeout=30,
    )
    assert message.stdout == sent.raw


@pytest.mark.smtpsink(tls="implicit")
def test_curl_pop3s(smtpsink: Mailbox, tmp_path: Path) -> None:
    curl = external.require("curl", "apt-get install curl")
    sent = smtpsink.deliver(make_message(subject="via curl"), to=ANN)
    result = subprocess.run(
        [
            *(curl, "-sS", "--cacert", smtpsink.pop3.ca_path),
            *("--user", f"{ANN}:x", f"{smtpsink.pop3.url}/1"),
        ],
        capture_output=True,
        check=True,
        timeout=30,
    )
    assert result.stdout == sent.raw
    assert pop3_sessions(smtpsink)[0].tls is not None


# -- per-test isolation -------------------------------------------------------------------------


def test_sessions_of_an_earlier_test_end_when_the_next_starts(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
import poplib

LEFT_OPEN = []

def test_first(smtpsink):
    smtpsink.deliver(b"Subject: first\\r\\n\\r\\nx\\r\\n", to="ann@example.com")
    client = poplib.POP3(smtpsink.pop3.host, smtpsink.pop3.port, timeout=10)
    client.user("ann@example.com")
    client.pass_("x")
    client.dele(1)
    LEFT_OPEN.append(client)  # no QUIT: still open when the test ends

def test_second(smtpsink):
    smtpsink.deliver(b"Subject: second\\r\\n\\r\\nx\\r\\n", to="ann@example.com")
    old = LEFT_OPEN[0]
    # The server ended it when this test started, saying why.
    line = old.file.readline()
    assert line.startswith(b"-ERR [SYS/TEMP] Session ended: a new test started")
    assert old.file.readline() == b""
    old.close()
    client = poplib.POP3(smtpsink.pop3.host, smtpsink.pop3.port, timeout=10)
    client.user("ann@example.com")
    client.pass_("x")  # not IN-USE: the old lock went with the old test
    assert client.stat()[0] == 1
    subject = [l for l in client.retr(1)[1] if l.startswith(b"Subject")]
    assert subject == [b"Subject: second"]
    client.quit()
    box = smtpsink.mailbox("ann@example.com")
    assert [m.subject for m in box.messages()] == ["second"]
    assert box.deleted() == []
"""
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=2)


@pytest.mark.parametrize("client_leaves", [True, False], ids=["closes", "stalls"])
@pytest.mark.smtpsink(tls="starttls")
def test_stls_handshake_never_finished_is_a_tls_failed_session(
    smtpsink: Mailbox, client_leaves: bool
) -> None:
    raw = Raw(smtpsink.pop3.host, smtpsink.pop3.port)
    try:
        assert raw.send(b"STLS").startswith("+OK")
        if client_leaves:
            raw.sock.shutdown(socket.SHUT_WR)
        ended(smtpsink)  # stalled: the server gives up on the handshake
    finally:
        raw.close()
    session = pop3_sessions(smtpsink)[0]
    # Before: "client-closed", with no tls_error, as if the client had left
    # between two commands.
    assert session.end == "tls-failed"
    assert session.tls_error is not None
    assert "handshake" in session.tls_error


# -- the sink's own bugs --------------------------------------------------------

_BUG = "Internal error ({}) in {}: a bug in pytest-smtpsink, logged with its traceback"


def _sink_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pytest_smtpsink"]


def test_an_internal_error_is_err_recorded_logged_and_serving_goes_on(
    smtpsink: Mailbox,
    raw: Raw,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug in a command's handler (not one known: a helper made to raise,
    the only way to stand for one; the server itself is not mocked) is
    answered ``-ERR [SYS/PERM]``, recorded and logged once with its
    traceback, and the session goes on."""
    smtpsink.deliver(b"Subject: Kept\r\n\r\nbody\r\n", to=ANN)

    def broken(wire: bytes, lines: int) -> bytes:
        raise RuntimeError("top_of broke")

    monkeypatch.setattr(_pop3, "top_of", broken)
    assert raw.send(f"USER {ANN}".encode()) == "+OK Send PASS"
    assert raw.send(b"PASS any").startswith("+OK Logged in")
    bug = "-ERR [SYS/PERM] " + _BUG.format("RuntimeError", "TOP")
    assert raw.send(b"TOP 1 0") == bug
    assert raw.send(b"RETR 1") == "+OK 23 octets"
    assert b"Subject: Kept\r\n" in raw.body()
    assert raw.send(b"QUIT") == "+OK Logging out"
    session = pop3_sessions(smtpsink)[0]
    (failed,) = [e for e in session.transcript if e.command == "TOP"]
    assert failed.replies == [bug], session.format_transcript()
    (logged,) = _sink_log(caplog)
    assert "POP3 session from 127.0.0.1:" in logged
    assert "TOP failed with an internal error" in logged
    assert logged.endswith(
        'in broken\n    raise RuntimeError("top_of broke")\nRuntimeError: top_of broke'
    )


def test_an_internal_error_in_a_login_keeps_its_text_out_of_the_log(
    smtpsink: Mailbox,
    raw: Raw,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug (a helper made to raise, see above) whose error quotes the
    password: the reply, the transcript and the log leave its text out."""

    def broken(auth: object, user: str, password: str) -> bool:
        raise ValueError(f"cannot check {password}")

    monkeypatch.setattr(_pop3, "check_login", broken)
    assert raw.send(f"USER {ANN}".encode()) == "+OK Send PASS"
    assert raw.send(b"PASS Sw0rdfish") == "-ERR [SYS/PERM] " + _BUG.format(
        "ValueError", "PASS"
    )
    assert raw.send(b"NOOP").startswith("-ERR Log in first")
    (logged,) = _sink_log(caplog)
    assert "(its text is left out: it ran a login)" in logged
    text = "\n".join(s.format_transcript() for s in smtpsink.sessions) + logged
    assert "Sw0rdfish" not in text


def test_internal_errors_in_a_row_end_the_session(
    smtpsink: Mailbox,
    raw: Raw,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug on every command (a helper every command goes through made to
    raise, see above): after five in a row the session ends, instead of the
    server thread answering the bug for ever."""

    def broken(verb: str, line: str) -> str | None:
        raise RuntimeError("_spacing_error broke")

    monkeypatch.setattr(_pop3, "_spacing_error", broken)
    bug = "-ERR [SYS/PERM] " + _BUG.format("RuntimeError", "CAPA")
    assert [raw.send(b"CAPA") for _ in range(4)] == [bug] * 4
    assert raw.send(b"CAPA") == f"{bug}; closing after 5 in a row"
    assert raw.line() == ""  # closed
    session = pop3_sessions(smtpsink)[0]
    assert session.end == "server-closed"
    assert len(_sink_log(caplog)) == 5


def test_commands_sent_with_the_end_of_input_all_run(smtpsink: Mailbox) -> None:
    """As for IMAP: the end of input closed the connection, which cancelled
    a busy serving task (here, in a delayed USER) before the commands sent
    with it ran. They all run now, QUIT's deletion included."""
    smtpsink.deliver(b"Subject: one\r\n\r\nbody\r\n", to="ann@example.com")
    smtpsink.delay("POP3:USER", 0.2)
    pop3 = smtpsink.pop3
    with socket.create_connection((pop3.host, pop3.port), timeout=10) as sock:
        sock.sendall(b"USER ann@example.com\r\nPASS x\r\nDELE 1\r\nQUIT\r\n")
        sock.shutdown(socket.SHUT_WR)
        with sock.makefile("rb") as stream:
            replies = stream.read().decode()
    assert replies.count("+OK") == 5, replies  # greeting, USER, PASS, DELE, QUIT
    smtpsink.wait_until(lambda: all(s.end for s in smtpsink.sessions))
    smtpsink.mailbox("ann@example.com").assert_deleted(subject="one")


@pytest.mark.smtpsink(tls="starttls")
def test_commands_pipelined_behind_stls_are_discarded_and_logged(
    smtpsink: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 2595 4: what came in plain text behind STLS never runs as if it
    came over TLS. It was dropped without a word; a warning now says how
    many bytes (never which: a password)."""
    caplog.set_level(logging.WARNING, logger="pytest_smtpsink")
    pop3 = smtpsink.pop3
    smuggled = b"USER ann@example.com\r\nPASS secret-word\r\n"
    with socket.create_connection((pop3.host, pop3.port), timeout=10) as sock:
        with sock.makefile("rb") as plain:
            plain.readline()  # the greeting
            sock.sendall(b"STLS\r\n" + smuggled)
            assert plain.readline().startswith(b"+OK ")
        context = pop3.ssl_context()
        with (
            context.wrap_socket(sock, server_hostname=pop3.host) as tls,
            tls.makefile("rb") as secure,
        ):
            tls.sendall(b"NOOP\r\n")
            # Not logged in: the smuggled USER and PASS did not run.
            assert secure.readline().startswith(b"-ERR "), "USER/PASS ran"
            tls.sendall(b"QUIT\r\n")
            secure.read()
    smtpsink.wait_until(lambda: all(s.end for s in smtpsink.sessions))
    (record,) = [r for r in caplog.records if "STLS" in r.getMessage()]
    message = record.getMessage()
    assert f"sent {len(smuggled)} byte(s) after STLS" in message, message
    assert "secret-word" not in message


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_an_overlong_line_cut_short_by_the_close_is_recorded(
    smtpsink: Mailbox, protocol: str
) -> None:
    # 150 KB and no line end, then the client closes its side: recorded and
    # refused as an overlong line that ended (found by a fuzz run: nothing
    # was recorded).
    endpoint = smtpsink.pop3 if protocol == "pop3" else smtpsink.imap
    with socket.create_connection((endpoint.host, endpoint.port), 10) as sock:
        sock.recv(1000)  # the greeting
        sock.sendall(b"X" * 150_000)
        sock.shutdown(socket.SHUT_WR)
        with sock.makefile("rb") as replies:
            refusal = replies.readline()
    assert b"ine too long" in refusal, refusal
    smtpsink.wait_until(lambda: bool(smtpsink.sessions) and smtpsink.sessions[0].end)
    (session,) = smtpsink.sessions
    (exchange,) = session.transcript[1:]
    # Before a POP3 login a long line keeps no more than a command word: it
    # may be a token.
    assert exchange.line == (
        "**** [150000 bytes in all]"
        if protocol == "pop3"
        else "X" * 64 + "... [150000 bytes in all]"
    )
    assert exchange.replies == [refusal.decode().rstrip("\r\n")]


@pytest.mark.parametrize(
    ("tls", "then"),
    [(None, b""), ("implicit", b""), (None, b"NOOP\r\n")],
    ids=["plain", "tls", "pipelined"],
)
def test_a_client_reading_a_large_message_slowly_is_not_cut_off(
    smtpsink_factory: Factory, tls: Literal["implicit"] | None, then: bytes
) -> None:
    # A client that takes a large reply slowly, but keeps taking it, is not
    # idle (Dovecot counts every flush as activity): the server cut it after
    # idle_timeout, mid-message, saying it had read none of its replies; and
    # then (over TLS, where the last of it takes longer to read) it cut it
    # as soon as the socket had handed over the last byte; and one whose
    # next command, sent with the RETR, had a small reply.
    sink = smtpsink_factory(idle_timeout=1, tls=tls)
    body = (b"z" * 998 + b"\r\n") * 3000
    sink.deliver(b"Subject: big\r\n\r\n" + body, to="ann@x.test")
    # Over TLS, the system's usual buffers: the last of the reply is still
    # in the client's when the sink's queue reads empty.
    client = slow_reader() if tls is None else socket.socket()
    client.settimeout(30)
    commands = b"USER ann@x.test\r\nPASS pw\r\nRETR 1\r\n" + then
    address = (sink.pop3.host, sink.pop3.port)  # started before any hold
    if tls is None:
        with loop_held(sink):  # all there when the server first reads
            client.connect(address)
            client.sendall(commands)
    else:
        client.connect(address)
        context = sink.pop3.ssl_context()
        client = context.wrap_socket(client, server_hostname=sink.pop3.host)
        client.recv(4096)  # the greeting
        client.sendall(commands)
    with client:
        received = bytearray()
        while not received.endswith(b"\r\n.\r\n" + b"+OK\r\n" * bool(then)):
            chunk = client.recv(8192)
            assert chunk, f"cut off after {len(received)} bytes"
            received += chunk
            time.sleep(0.005)  # reading slowly: 3 MB take over a second
        client.sendall(b"QUIT\r\n")
        assert client.recv(4096).startswith(b"+OK Logging out")
    assert body + b".\r\n" in received
    ended(sink)
    assert sink.sessions[0].end == "quit"


def test_a_client_that_stops_reading_is_cut_after_the_idle_timeout(
    smtpsink_factory: Factory,
) -> None:
    # The server waited for its replies to drain with no limit: a client
    # that sent RETR and never read again held the connection for ever (in
    # the standalone sink, until it stopped).
    sink = smtpsink_factory(idle_timeout=0.5)
    sink.deliver(
        b"Subject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 5000, to="ann@x.test"
    )
    client = slow_reader()
    with client, client.makefile("rb") as replies:
        # All there when the server first reads: no pause of this thread
        # lets the plain idle timeout (the same 0.5 s) end it first.
        address = (sink.pop3.host, sink.pop3.port)  # started before the hold
        with loop_held(sink):
            client.connect(address)
            client.sendall(b"USER ann@x.test\r\nPASS pw\r\nRETR 1\r\n")
        replies.readline()  # the greeting; then no reading
        sink.wait_until(lambda: sink.sessions[0].end is not None, timeout=30)
    assert sink.sessions[0].end == "timeout"
    # Nothing could be said to it; the summary says why it was cut.
    assert (
        sink.sessions[0]
        .summary()
        .endswith(" end=timeout (the client read none of its replies for 0.5 s)")
    )


def test_a_word_alone_is_masked_before_login_and_right_after_it_only(
    smtpsink: Mailbox, raw: Raw
) -> None:
    # Before login, a password in Latin-1 alone on a line was recorded
    # ("Pr0d\xe4Secret"); right after a login, the password sent again; a
    # later typo is named, as Dovecot names it.
    latin1 = "Pr0däSecret".encode("latin-1")
    raw.sock.sendall(latin1 + b"\r\n")
    assert raw.line() == "-ERR The command line is not UTF-8"
    raw.send(b"USER ann@example.com")
    assert raw.send(b"PASS Pr0dSecret").startswith("+OK Logged in")
    assert raw.send(b"Pr0dSecret") == "-ERR Unknown command"
    assert raw.send(b"STATS") == "-ERR Unknown command: STATS"
    raw.send(b"QUIT")
    ended(smtpsink)
    (session,) = pop3_sessions(smtpsink)
    lines = [exchange.line for exchange in session.transcript]
    assert lines[1] == "****"
    assert lines[4:6] == ["****", "STATS"]
    assert "Pr0d" not in session.format_transcript()

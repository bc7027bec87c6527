"""The IMAP server with imaplib and raw dialogues over loopback: login and
TLS, transcripts and secrets, folders, FETCH/SEARCH/STORE/COPY/MOVE/EXPUNGE,
sequence numbers across sessions, IDLE, per-test BYE, faults, bad input."""

from __future__ import annotations

import base64
import contextlib
import datetime
import functools
import imaplib
import io
import logging
import pathlib
import poplib
import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal

import pytest
from conftest import loop_held, on_the_loop, replies_at_the_end, slow_reader
from dialogue import Endpoint, run

from pytest_smtpsink import IMAPEndpoint, Mailbox, Session, SMTPSink, _imap, _report

if TYPE_CHECKING:
    from typing_extensions import Buffer

USER = "ann@example.com"


def raw_message(subject: str, body: str = "Hello.") -> bytes:
    return (
        f"From: Zed <zed@example.org>\r\nTo: {USER}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@example.org>\r\n\r\n{body}\r\n"
    ).encode()


def login(sink: Mailbox) -> imaplib.IMAP4:
    client = imaplib.IMAP4(sink.imap.host, sink.imap.port)
    client.login(USER, "secret")
    return client


def imap_address(sink: Mailbox) -> tuple[str, int]:
    return sink.imap.host, sink.imap.port


def dialogue(sink: Mailbox, *lines: str) -> list[str]:
    """Run raw lines (after a LOGIN) and return the server's lines."""
    endpoint = Endpoint("imap", sink.imap.host, sink.imap.port)
    transcript = run([f"L LOGIN {USER} secret", *lines], endpoint)
    return [line[3:] for line in transcript if line.startswith("S: ")]


def test_a_typical_reader_fetches_marks_moves_and_deletes(smtpsink: Mailbox) -> None:
    smtpsink.deliver(raw_message("Invoice 1"), to=USER)
    smtpsink.deliver(raw_message("Spam offer"), to=USER)
    smtpsink.deliver(raw_message("Invoice 2"), to=USER)
    with login(smtpsink) as client:
        assert client.select("INBOX") == ("OK", [b"3"])
        typ, data = client.search(None, "UNSEEN")
        assert data == [b"1 2 3"]
        typ, fetched = client.fetch("1", "(RFC822)")
        first = fetched[0]
        assert isinstance(first, tuple)
        assert b"Subject: Invoice 1" in first[1]
        # A non-PEEK body read sets \Seen, and the response says so.
        assert first[0].startswith(b"1 (FLAGS (\\Seen \\Recent) RFC822 ")
        client.store("2", "+FLAGS", "\\Deleted")
        client.create("Processed")
        # UIDs are sink-wide (never reused), so ask for the one to move.
        typ, found = client.uid("SEARCH", "SUBJECT", '"Invoice 2"')
        (uid,) = found[0].split()
        typ, _ = client.uid("MOVE", uid.decode(), "Processed")
        assert typ == "OK"
        client.expunge()
        client.close()
        client.logout()
    box = smtpsink.mailbox(USER)
    box.assert_in("INBOX", subject="Invoice 1", flags={"\\Seen"})
    box.assert_in("Processed", subject="Invoice 2", flags=())
    box.assert_not_in("INBOX", subject="Spam offer")
    box.assert_deleted(subject="Spam offer")
    assert "(moved to Processed)" in box.describe()


def test_assert_deleted_names_a_deleted_flag_never_expunged(
    smtpsink: Mailbox,
) -> None:
    # \\Deleted alone deletes nothing (RFC 3501): the failure said "found
    # none", and only the [\\Deleted] in the listing told why.
    smtpsink.deliver(raw_message("Spam offer"), to=USER)
    with login(smtpsink) as client:
        client.create("Junk")
        client.select("INBOX")
        client.copy("1", "Junk")
        client.store("1", "+FLAGS", "\\Deleted")
        client.logout()
    box = smtpsink.mailbox(USER)
    uid = box.stored()[0].uid
    with pytest.raises(AssertionError) as failure:
        box.assert_deleted(subject="Spam offer")
    text = str(failure.value)
    assert text.endswith(
        f"\nHint: uid {uid} in INBOX has \\Deleted but was never expunged: "
        "IMAP deletes it only at EXPUNGE, UID EXPUNGE or CLOSE (MOVE takes it away)"
    ), text
    assert f"  * uid {uid} [\\Deleted] " in text
    assert text.count("Hint:") == 1  # not the copy in Junk, which lacks it


def test_assert_deleted_names_mail_moved_to_the_trash(smtpsink: Mailbox) -> None:
    # What most mail clients do to "delete": the listing showed the copy
    # moved, with no mark and no word of why it is no deletion.
    smtpsink.deliver(raw_message("You won"), to=USER)
    box = smtpsink.mailbox(USER)
    uid = box.stored()[0].uid
    with login(smtpsink) as client:
        client.create("Trash")
        client.select("INBOX")
        client.uid("MOVE", str(uid), "Trash")
        client.logout()
    with pytest.raises(AssertionError) as failure:
        box.assert_deleted(subject="You won")
    text = str(failure.value)
    assert f"  * (moved to Trash) uid {uid} " in text
    assert text.endswith(
        f"\nHint: uid {uid} in INBOX was moved to Trash, which deletes nothing: "
        "assert_in('Trash', ...) if that is what the application does"
    ), text
    box.assert_in("Trash", subject="You won")  # the advice works


def test_uid_expunge_removes_only_its_uids_and_minus_flags_undeletes(
    smtpsink: Mailbox,
) -> None:
    # RFC 4315 2.1: UID EXPUNGE removes the \Deleted messages of its set
    # only; -FLAGS (\Deleted) takes the mark off. Neither was held by a
    # test: UID EXPUNGE 1 could expunge every \Deleted message, and an
    # undelete could leave the mark for the next EXPUNGE.
    for n in range(3):
        smtpsink.deliver(raw_message(f"m{n}"), to=USER)
    with imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port) as client:
        client.login(USER, "pw")
        client.select("INBOX")
        first, second, third = client.uid("SEARCH", "ALL")[1][0].decode().split()
        client.uid("STORE", f"{first}:{third}", "+FLAGS", "(\\Deleted)")
        client.uid("STORE", second, "-FLAGS", "(\\Deleted)")
        flags = client.uid("FETCH", second, "(FLAGS)")[1][0]
        assert b"\\Deleted" not in flags
        assert client.uid("EXPUNGE", first)[0] == "OK"
        assert client.uid("SEARCH", "ALL")[1][0].decode().split() == [second, third]
        client.expunge()
        assert client.uid("SEARCH", "ALL")[1][0].decode().split() == [second]
        client.logout()
    box = smtpsink.mailbox(USER)
    box.assert_deleted(subject="m0")
    box.assert_deleted(subject="m2")
    box.assert_in("INBOX", subject="m1")


@pytest.mark.smtpsink(auth={USER: "s3cret"}, auth_plaintext=True)
def test_a_mailbox_assertion_says_when_the_reader_never_got_in(
    smtpsink: Mailbox,
) -> None:
    # The application logged in as Ann@Example.com, which the auth table
    # does not know (user names compare exactly): the assertion said only
    # "found it with flags {}", and the refusals were in the sessions.
    import poplib

    smtpsink.deliver(raw_message("Ticket"), to=USER)
    client = imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port)
    with pytest.raises(imaplib.IMAP4.error):
        client.login("Ann@Example.com", "s3cret")
    client.logout()
    pop = poplib.POP3(smtpsink.pop3.host, smtpsink.pop3.port)
    pop.user("Ann@Example.com")
    with pytest.raises(poplib.error_proto):
        pop.pass_("s3cret")
    pop.quit()
    box = smtpsink.mailbox(USER)
    # And one with the table's own name and a wrong password: "user names
    # compare exactly" blamed the name.
    client = imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port)
    with pytest.raises(imaplib.IMAP4.error):
        client.login(USER, "wrong")
    with pytest.raises(imaplib.IMAP4.error):
        client.login("bob@example.com", "s3cret")
    client.logout()
    table_has = f"(the auth table has {USER!r}: user names compare exactly)"
    hint = (
        f"Hint: no POP3 or IMAP session logged in as {USER} in this test; refused: "
        f"IMAP LOGIN 'Ann@Example.com' {table_has}, POP3 USER 'Ann@Example.com' "
        f"{table_has}, IMAP LOGIN {USER!r} (a wrong password, or an authorization identity of another user), IMAP LOGIN "
        "'bob@example.com' (not in the auth table) (see the sessions' auth_attempts)"
    )
    for check in (
        lambda: box.assert_in("INBOX", subject="Ticket", flags={"\\Seen"}),
        lambda: box.assert_not_in("INBOX", subject="Ticket"),
        lambda: box.assert_deleted(subject="Ticket"),
    ):
        with pytest.raises(AssertionError) as failure:
            check()
        assert str(failure.value).endswith("\n" + hint), failure.value
    # Once a reader got in, the refusals say nothing more.
    client = imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port)
    client.login(USER, "s3cret")
    client.logout()
    with pytest.raises(AssertionError) as failure:
        box.assert_deleted(subject="Ticket")
    assert "Hint: no POP3 or IMAP session logged in" not in str(failure.value)


def test_a_mailbox_assertion_names_the_users_readers_logged_in_as(
    smtpsink: Mailbox,
) -> None:
    # A reader configured with another user got in (any password opens any
    # mailbox), found that user's empty mailbox, and the assertion said
    # nothing of it: the login was in the transcript only.
    smtpsink.deliver(raw_message("Ticket"), to=USER)
    for _ in range(2):
        with imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port) as client:
            client.login("help@example.com", "x")
            client.select("INBOX")
            client.logout()
    with pytest.raises(AssertionError) as failure:
        smtpsink.mailbox(USER).assert_in("INBOX", subject="Ticket", flags={"\\Seen"})
    assert str(failure.value).endswith(
        f"\nHint: no POP3 or IMAP session logged in as {USER} in this test; "
        "logged in as others: IMAP 'help@example.com' (each user reads a mailbox "
        "of its own; one no mail went to is empty)"
    ), failure.value


def test_a_mailbox_assertion_names_the_users_reader_still_open(
    smtpsink: Mailbox,
) -> None:
    # A reader in the background logged in and had not done its work when
    # the test checked: the assertion gave no hint to wait for it.
    smtpsink.deliver(raw_message("Ticket"), to=USER)
    box = smtpsink.mailbox(USER)
    client = imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port)
    client.login(USER, "x")
    client.select("INBOX")
    port = client.sock.getsockname()[1]
    try:
        with pytest.raises(AssertionError) as failure:
            box.assert_in("Archive", subject="Ticket")
    finally:
        client.logout()
    assert str(failure.value).endswith(
        f"\nHint: 1 reader session of {USER} is still open (IMAP from "
        f"127.0.0.1:{port}): one in the background may not have done its work "
        "yet (a POP3 session's deletions and \\Seen land at its QUIT); wait for "
        "it with smtpsink.wait_until(lambda: box.assert_in(...))"
    ), failure.value
    # Once it said LOGOUT, its work is done: no hint.
    with pytest.raises(AssertionError) as failure:
        box.assert_in("Archive", subject="Ticket")
    assert "still open" not in str(failure.value)


def test_a_listing_follows_the_folder_mail_was_moved_to_through_renames(
    smtpsink: Mailbox,
) -> None:
    # The listing said "(moved to Done)" after Done became Finished, and
    # assert_in("Done") said only that there is no such folder.
    smtpsink.deliver(raw_message("T1"), to=USER)
    smtpsink.deliver(raw_message("T2"), to=USER)
    with login(smtpsink) as client:
        client.create("Done")
        client.select("INBOX")
        assert (
            client.uid("MOVE", str(smtpsink.mailbox(USER).stored()[0].uid), "Done")[0]
            == "OK"
        )
        client.rename("Done", "Finished")
        client.create("Done")  # a new Done: what moved before stays Finished
        client.rename("Finished", "Old/Finished")
        client.logout()
    box = smtpsink.mailbox(USER)
    assert box.folders == ("INBOX", "Done", "Old/Finished")
    with pytest.raises(AssertionError) as failure:
        box.assert_in("Done", subject="T1")
    text = str(failure.value)
    # The name the application moved it to (its MOVE), and where it is now.
    assert "    (moved to Done, since renamed Old/Finished) uid " in text, text
    with pytest.raises(AssertionError) as missing:
        box.assert_in("Finished", subject="T1")
    assert (
        "; found 0 (there is no folder 'Finished': it was renamed 'Old/Finished')."
        in str(missing.value)
    )
    box.assert_in("Old/Finished", subject="T1")
    # Nothing is in Finished, but what was is still in its mailbox: as the
    # application renamed (archived) the folder, the test must hear of it.
    with pytest.raises(AssertionError) as renamed:
        box.assert_not_in("Finished", subject="T1")
    lines = str(renamed.value).splitlines()
    assert lines[0] == (
        f"expected no message in {USER}'s Finished matching subject='T1'; there "
        "is no folder 'Finished': it was renamed 'Old/Finished', which holds 1."
    )
    assert any(line.startswith("  * uid ") for line in lines), lines
    box.assert_not_in("Finished", subject="T2")  # not in the renamed one either
    with login(smtpsink) as client:
        client.delete("Old/Finished")
        client.logout()
    with pytest.raises(
        AssertionError, match=r"renamed 'Old/Finished', since deleted\)"
    ) as gone:
        box.assert_in("Finished", subject="T1")
    assert "(moved to Done, since renamed Old/Finished and deleted) uid " in str(
        gone.value
    )


def test_a_listing_does_not_follow_a_later_folder_of_a_deleted_ones_name(
    smtpsink: Mailbox,
) -> None:
    # Moved to Done, Done deleted (the copy with it), a new Done renamed
    # Finished: the listing said "since renamed Finished", a folder that
    # never held the mail.
    smtpsink.deliver(raw_message("T1"), to=USER)
    with login(smtpsink) as client:
        client.create("Done")
        client.select("INBOX")
        assert client.uid("MOVE", "1:*", "Done")[0] == "OK"
        client.delete("Done")
        client.create("Done")
        client.rename("Done", "Finished")
        client.logout()
    box = smtpsink.mailbox(USER)
    text = box.describe()
    assert "    (moved to Done, since deleted) uid " in text, text
    assert "Finished" in box.folders
    assert "since renamed" not in text


def test_uid_commands_are_named_by_both_words(smtpsink: Mailbox) -> None:
    # Recorded as "UID", a UID STORE was neither used("UID STORE") nor
    # used("STORE"): `assert not session.used("STORE")` passed while the
    # reader changed flags the way most libraries do, by UID.
    smtpsink.deliver(raw_message("Invoice 1"), to=USER)
    with login(smtpsink) as client:
        client.select("INBOX")
        client.uid("FETCH", "1:*", "(BODY.PEEK[])")
        client.uid("STORE", "1:*", "+FLAGS", "(\\Seen)")
        client.logout()
    session = smtpsink.sessions[-1]
    assert session.commands[-3:] == ["UID FETCH", "UID STORE", "LOGOUT"]
    assert session.used("UID STORE")
    assert session.used("store")
    assert session.used("UID")
    assert not session.used("EXPUNGE")
    assert not session.used("FLAGS")  # a word of the argument, not a command
    (store,) = session.replies_to("uid store")
    assert store.argument == "1:* +FLAGS (\\Seen)"
    assert store.replies[-1].endswith("OK UID STORE completed")
    assert session.before("UID FETCH", "UID STORE")
    # before() and replies_to() match as used() does: "STORE" is the UID
    # STORE too. before("LOGOUT", "STORE") was True, replies_to("STORE")
    # empty.
    assert session.before("FETCH", "STORE")
    assert session.before("STORE", "LOGOUT")
    assert not session.before("LOGOUT", "STORE")
    assert not session.before("STORE", "FETCH")
    assert session.replies_to("STORE") == [store]
    assert session.replies_to("UID") == [*session.replies_to("uid fetch"), store]
    assert session.replies_to("FETCH") == session.replies_to("UID FETCH")
    with pytest.raises(ValueError, match=r"such as 'UID FETCH'"):
        session.used("UID FETCH 1:*")  # matched nothing: the argument too


def test_an_idle_counts_as_accepted_by_the_completion_its_done_gets(
    smtpsink: Mailbox,
) -> None:
    # The tagged OK of an IDLE is recorded on the DONE: before("IDLE", ...)
    # read the IDLE as never accepted.
    with idling(smtpsink.imap) as stream:
        stream.write(b"DONE\r\nd LOGOUT\r\n")
        stream.flush()
        while not stream.readline().startswith(b"d OK"):
            pass
    smtpsink.wait_until(lambda: smtpsink.sessions[-1].end is not None)
    session = smtpsink.sessions[-1]
    assert session.before("IDLE", "LOGOUT")
    assert session.before("SELECT", "IDLE")


def test_a_login_sent_where_done_belongs_is_recorded_masked(smtpsink: Mailbox) -> None:
    # The line after IDLE was recorded as it came: a LOGIN there showed its
    # password (one the sink does not know, with no auth table).
    with idling(smtpsink.imap) as stream:
        stream.write(b"d LOGIN bob@example.com Horsebatterystaple\r\ne LOGOUT\r\n")
        stream.flush()
        assert stream.readline() == b"c BAD Expected DONE to end IDLE\r\n"
        while not stream.readline().startswith(b"e OK"):
            pass
    smtpsink.wait_until(lambda: smtpsink.sessions[-1].end is not None)
    shown = smtpsink.sessions[-1].format_transcript()
    assert "orsebattery" not in shown.lower()
    assert "C: d LOGIN ****\n" in shown, shown


@pytest.mark.parametrize("plus", ["+", ""])
def test_a_literal_sent_where_done_belongs_is_not_read_as_a_command(
    smtpsink: Mailbox, plus: str
) -> None:
    # Its bytes (the password of "d LOGIN bob {18+}") were read as the next
    # command line, and recorded as they came.
    with idling(smtpsink.imap) as stream:
        stream.write(
            f"d LOGIN bob@example.com {{18{plus}}}\r\nHorsebatterystaple\r\n".encode()
        )
        stream.flush()
        assert stream.readline() == b"c BAD Expected DONE to end IDLE\r\n"
        assert stream.readline().startswith(b"* BYE ")
        assert stream.readline() == b""  # closed
    smtpsink.wait_until(lambda: smtpsink.sessions[-1].end is not None)
    session = smtpsink.sessions[-1]
    assert session.end == "server-closed"
    assert "orsebattery" not in session.format_transcript().lower()


def test_an_authenticate_response_cut_off_by_the_close_is_counted_never_named(
    smtpsink: Mailbox,
) -> None:
    # It left no trace; and a base64 response may be a verb ("NOOP"), which
    # a command line's note would name.
    with (
        socket.create_connection(imap_address(smtpsink), timeout=10) as sock,
        sock.makefile("rb") as replies,
    ):
        replies.readline()
        sock.sendall(b"a AUTHENTICATE PLAIN\r\n")
        assert replies.readline() == b"+ \r\n"
        sock.sendall(b"NOOP")
        sock.shutdown(socket.SHUT_WR)
        assert replies.read() == b""
    smtpsink.wait_until(lambda: smtpsink.sessions[-1].end is not None)
    session = smtpsink.sessions[-1]
    assert session.end == "client-closed"
    assert [e.line for e in session.transcript[-2:]] == [
        "AUTHENTICATE PLAIN",
        "[not run: 4 octets with no line end, cut off by the client's close]",
    ]
    assert session.auth_attempts == ()


@pytest.mark.parametrize(
    ("last", "shown"), [(b"d EXPUNGE", "EXPUNGE"), (b"d uid expunge 1", "UID EXPUNGE")]
)
def test_a_line_cut_off_by_the_close_is_not_run(
    smtpsink: Mailbox, last: bytes, shown: str
) -> None:
    # "d EXPUNGE" without its line end, then the close, was run: it
    # expunged, where a real server runs only a line that ended.
    smtpsink.deliver(raw_message("Invoice 1"), to=USER)
    with socket.create_connection(imap_address(smtpsink), timeout=10) as sock:
        sock.sendall(
            b"a LOGIN ann@example.com pw\r\nb SELECT INBOX\r\n"
            b"c STORE 1 +FLAGS (\\Deleted)\r\n" + last
        )
        sock.shutdown(socket.SHUT_WR)
        with sock.makefile("rb") as replies:
            said = replies.read()
    assert b"c OK" in said
    assert b"EXPUNGE" not in said
    smtpsink.wait_until(lambda: smtpsink.sessions[-1].end is not None)
    session = smtpsink.sessions[-1]
    assert session.end == "client-closed"
    note = session.transcript[-1]
    assert note.line == (
        f"[not run: {shown}, {len(last)} octets with no line end, cut off by the "
        "client's close]"
    )
    assert (note.command, note.argument) == (None, None)
    assert not session.used("EXPUNGE")
    smtpsink.mailbox(USER).assert_in(subject="Invoice 1", flags={"\\Deleted"})


def test_a_bad_reply_never_quotes_a_literal_whole(smtpsink: Mailbox) -> None:
    # A 60 KB message where APPEND's date-time goes (two messages, as
    # MULTIAPPEND would send them) came back whole in one BAD line, and was
    # kept so in the transcript, where literals are counted, not copied.
    message = b"Subject: one\r\n\r\n" + b"y" * 60_000 + b"\r\n"
    with socket.create_connection(imap_address(smtpsink), timeout=10) as sock:
        sock.sendall(
            b"a LOGIN ann@example.com pw\r\n"
            b"c APPEND INBOX {%d+}\r\n"
            % len(message)
            + message
            + b" {5+}\r\nhello\r\nd LOGOUT\r\n"
        )
        sock.shutdown(socket.SHUT_WR)
        with sock.makefile("rb") as replies:
            said = replies.read().split(b"\r\n")
    (bad,) = [line for line in said if line.startswith(b"c ")]
    assert bad.startswith(b"c BAD Invalid date-time 'Subject: one\\r\\n\\r\\nyyy")
    assert len(bad) < 400, len(bad)
    assert bad.endswith(b" more characters]")
    smtpsink.wait_until(lambda: smtpsink.sessions[-1].end is not None)
    assert (
        max(len(r) for e in smtpsink.sessions[-1].transcript for r in e.replies) < 400
    )


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        (b"{50+}\r\n" + b"x" * 18, "{50+} [18 of 50 octets; not run: cut off by"),
        (b"{5+}\r\nhello", "{5+} [5 octets] [not run: no line end, cut off by"),
    ],
)
def test_a_literal_the_idle_timeout_cut_off_is_recorded_as_it_came(
    smtpsink_factory: Callable[..., SMTPSink], sent: bytes, shown: str
) -> None:
    # It read "APPEND INBOX {50+} [50 octets]" when none had come: a
    # complete APPEND that got a BYE.
    sink = smtpsink_factory(idle_timeout=0.5)
    address = imap_address(sink)  # started before the loop is held
    with loop_held(sink):  # all there when the server first reads
        sock = socket.create_connection(address, timeout=10)
        sock.sendall(b"a LOGIN ann@example.com pw\r\nb APPEND INBOX " + sent)
    with sock, sock.makefile("rb") as replies:
        assert replies.read().endswith(b"* BYE Disconnected for inactivity\r\n")
    sink.wait_until(lambda: sink.sessions[-1].end is not None)
    append = sink.sessions[-1].transcript[-1]
    assert append.line == f"APPEND INBOX {shown} the idle timeout]"
    assert append.replies == ["* BYE Disconnected for inactivity"]
    assert sink.mailbox(USER).messages() == []


def test_uidnext_moves_only_when_the_folder_gets_mail(smtpsink: Mailbox) -> None:
    # It was the sink-wide counter: bob's mail, or ann's in another folder,
    # moved ann's INBOX UIDNEXT (RFC 3501 2.3.1.1: MUST NOT), and a poller's
    # "UID FETCH <old UIDNEXT>:*" got back the message it had already read.
    smtpsink.deliver(raw_message("First"), to=USER)
    with login(smtpsink) as client:
        client.select("INBOX")

        def uidnext() -> int:
            # STATUS of the selected folder counts what the session was
            # told, as on Dovecot: NOOP tells it first.
            client.noop()
            _, data = client.status("INBOX", "(UIDNEXT)")
            return int(re.findall(rb"UIDNEXT (\d+)", data[0])[0])

        seen = uidnext()

        smtpsink.deliver(raw_message("For Bob"), to="bob@example.com")
        smtpsink.deliver(raw_message("Filed"), to=USER, folder="Other")
        assert uidnext() == seen
        smtpsink.deliver(raw_message("Second"), to=USER)
        later = uidnext()
        assert later > seen  # the new message's UID, plus one
        _, found = client.uid("SEARCH", "SUBJECT", "Second")
        assert int(found[0]) == later - 1
        client.logout()


def test_a_421_at_a_command_says_bye_and_closes(smtpsink: Mailbox) -> None:
    # The docs say a 421 closes the connection; IMAP answered NO and went on.
    smtpsink.deliver(raw_message("Invoice 1"), to=USER)
    smtpsink.fail("IMAP:FETCH", 421, "going down")
    client = login(smtpsink)
    client.select("INBOX")
    with pytest.raises(imaplib.IMAP4.abort, match=r"\[UNAVAILABLE\] going down"):
        client.fetch("1", "(FLAGS)")
    client.shutdown()
    smtpsink.wait_until(lambda: smtpsink.sessions[-1].end is not None)
    session = smtpsink.sessions[-1]
    assert session.end == "server-closed"
    assert session.transcript[-1].replies == ["* BYE [UNAVAILABLE] going down"]


def selected_then_deleted(smtpsink: Mailbox) -> imaplib.IMAP4:
    """A reader with the folder Work (one message) selected, which another
    session has since deleted."""
    smtpsink.deliver(raw_message("Filed"), to=USER, folder="Work")
    reader = login(smtpsink)
    reader.select("Work")
    with login(smtpsink) as other:
        assert other.delete("Work")[0] == "OK"
        other.logout()
    return reader


def test_a_selected_folder_deleted_by_another_session_ends_this_one(
    smtpsink: Mailbox,
) -> None:
    # It stayed selected on the dead folder: NOOP and EXPUNGE answered OK,
    # and mail in a folder made again under the name never showed. Dovecot
    # says BYE, so that the reader reconnects.
    reader = selected_then_deleted(smtpsink)
    with pytest.raises(imaplib.IMAP4.abort, match="Selected mailbox was deleted"):
        reader.noop()
    reader.shutdown()
    smtpsink.wait_until(lambda: smtpsink.sessions[0].end is not None)
    session = smtpsink.sessions[0]
    assert session.end == "server-closed"
    assert session.transcript[-1].replies[-1] == (
        "* BYE Selected mailbox was deleted, have to disconnect."
    )


@pytest.mark.parametrize("command", ["MOVE", "COPY"])
def test_a_command_on_a_deleted_selected_folder_is_not_run(
    smtpsink: Mailbox, command: str
) -> None:
    # The BYE came after the command ran: a MOVE put the deleted folder's
    # mail back, in another folder.
    smtpsink.deliver(raw_message("Other"), to=USER, folder="Archive")
    reader = selected_then_deleted(smtpsink)
    with pytest.raises(imaplib.IMAP4.abort, match="Selected mailbox was deleted"):
        reader.uid(command, "1:*", "Archive")
    reader.shutdown()
    smtpsink.wait_until(lambda: smtpsink.sessions[0].end is not None)
    mailbox = smtpsink.mailbox(USER)
    assert [m.subject for m in mailbox.messages("Archive")] == ["Other"]
    exchange = smtpsink.sessions[0].transcript[-1]
    assert exchange.command == f"UID {command}"
    assert exchange.replies == [
        "* BYE Selected mailbox was deleted, have to disconnect."
    ]


def test_logout_on_a_deleted_selected_folder_logs_out(smtpsink: Mailbox) -> None:
    reader = selected_then_deleted(smtpsink)
    assert reader.logout()[0] == "BYE"
    smtpsink.wait_until(lambda: smtpsink.sessions[0].end is not None)
    assert smtpsink.sessions[0].end == "quit"


def test_capabilities_and_the_greeting(smtpsink: Mailbox) -> None:
    with imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port) as client:
        for word in [
            "IMAP4REV1",
            "LITERAL+",
            "SASL-IR",
            "AUTH=PLAIN",
            "IDLE",
            "UIDPLUS",
            "MOVE",
            "UNSELECT",
            "NAMESPACE",
            "ID",
            "ENABLE",
            "CHILDREN",
        ]:
            assert word in client.capabilities
        assert "STARTTLS" not in client.capabilities
        assert client.noop()[0] == "OK"
    assert smtpsink.imap.url == f"imap://127.0.0.1:{smtpsink.imap.port}"
    assert smtpsink.imap.port != smtpsink.port


def test_starttls_with_certificate_verification(
    smtpsink_factory: Callable[..., SMTPSink],
) -> None:
    sink = smtpsink_factory(tls="starttls")
    with imaplib.IMAP4(sink.imap.host, sink.imap.port) as client:
        assert "STARTTLS" in client.capabilities
        client.starttls(ssl_context=sink.imap.ssl_context())
        assert "STARTTLS" not in client.capabilities
        client.login(USER, "pw")
        client.logout()
    session = sink.sessions[-1]
    assert session.protocol == "IMAP"
    assert session.tls is not None
    assert not session.tls.implicit
    assert session.before("STARTTLS", "LOGIN")


def test_imaps(smtpsink_factory: Callable[..., SMTPSink]) -> None:
    sink = smtpsink_factory(tls="implicit")
    sink.deliver(raw_message("Secret"), to=USER)
    assert sink.imap.url.startswith("imaps://")
    context = sink.imap.ssl_context()
    with imaplib.IMAP4_SSL(sink.imap.host, sink.imap.port, ssl_context=context) as c:
        c.login(USER, "pw")
        c.select("INBOX")
        assert c.search(None, "ALL") == ("OK", [b"1"])
        c.logout()
    session = sink.sessions[-1]
    assert session.tls is not None
    assert session.tls.implicit


@pytest.mark.parametrize("protocol", ["POP3", "IMAP"])
def test_plain_text_on_an_implicit_tls_port_names_the_protocol(
    smtpsink_factory: Callable[..., SMTPSink], protocol: str
) -> None:
    # Said "plain SMTP on an implicit-TLS port?" to a poplib.POP3 that
    # meant POP3_SSL.
    sink = smtpsink_factory(tls="implicit")
    endpoint = sink.pop3 if protocol == "POP3" else sink.imap
    with socket.create_connection((endpoint.host, endpoint.port), timeout=10) as sock:
        sock.sendall(b"a CAPABILITY\r\n")
        with contextlib.suppress(ConnectionResetError):
            sock.recv(100)
    sink.wait_until(lambda: bool(sink.sessions) and sink.sessions[-1].end is not None)
    session = sink.sessions[-1]
    assert session.end == "tls-failed"
    assert session.tls_error is not None
    assert session.tls_error.endswith(
        f"the client did not start TLS (plain {protocol} on an implicit-TLS port?)"
    )


@pytest.mark.parametrize(
    ("protocol", "starttls", "then"),
    [
        ("SMTP", b"STARTTLS\r\n", b"MAIL FROM:<a@example.com>\r\n"),
        ("POP3", b"STLS\r\n", b"USER ann\r\n"),
        ("IMAP", b"a STARTTLS\r\n", b"b LOGIN ann pw\r\n"),
    ],
)
def test_plain_text_after_the_starttls_go_ahead_says_so(
    smtpsink_factory: Callable[..., SMTPSink],
    protocol: str,
    starttls: bytes,
    then: bytes,
) -> None:
    # Said "plain SMTP on an implicit-TLS port?" on a sink with no such port.
    sink = smtpsink_factory(tls="starttls")
    address = {
        "SMTP": (sink.host, sink.port),
        "POP3": (sink.pop3.host, sink.pop3.port),
        "IMAP": (sink.imap.host, sink.imap.port),
    }[protocol]
    with socket.create_connection(address, timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()  # the greeting
        if protocol == "SMTP":
            sock.sendall(b"EHLO client.example\r\n")
            while reader.readline()[3:4] == b"-":
                pass
        sock.sendall(starttls)
        assert not reader.readline().startswith((b"5", b"-ERR", b"a NO", b"a BAD"))
        sock.sendall(then)
        with contextlib.suppress(ConnectionResetError):
            reader.read()
        reader.close()
    sink.wait_until(lambda: bool(sink.sessions) and sink.sessions[-1].end is not None)
    session = sink.sessions[-1]
    assert session.end == "tls-failed"
    command = "STLS" if protocol == "POP3" else "STARTTLS"
    assert session.tls_error is not None
    assert session.tls_error.endswith(
        f"the client sent plain text after {command} instead of starting TLS"
    ), session.tls_error


#: What a test connects with, and the hint names, per protocol: the client
#: that speaks TLS from the start, and how to connect instead.
_INSTEAD_OF_TLS = {
    ("SMTP", None): "connect without TLS, e.g. smtplib.SMTP (tls='starttls' to "
    "offer STARTTLS)",
    ("POP3", None): "connect without TLS, e.g. poplib.POP3 (tls='starttls' to "
    "offer STLS)",
    ("IMAP", None): "connect without TLS, e.g. imaplib.IMAP4 or "
    "imap_tools.MailBoxUnencrypted (tls='starttls' to offer STARTTLS)",
    ("SMTP", "starttls"): "connect without TLS and start it, e.g. smtplib.SMTP "
    "and starttls()",
    ("POP3", "starttls"): "connect without TLS and start it, e.g. poplib.POP3 "
    "and stls()",
    ("IMAP", "starttls"): "connect without TLS and start it, e.g. imaplib.IMAP4 "
    "and starttls(), or imap_tools.MailBoxStartTls",
}


def _connect_with_tls_at_once(sink: Mailbox, protocol: str) -> None:
    """Connect as a client that speaks TLS from the first byte would."""
    if protocol == "SMTP":
        smtplib.SMTP_SSL(sink.host, sink.port, timeout=10)
    elif protocol == "POP3":
        poplib.POP3_SSL(sink.pop3.host, sink.pop3.port, timeout=10)
    else:
        imaplib.IMAP4_SSL(sink.imap.host, sink.imap.port, timeout=10)


@pytest.mark.parametrize("tls", [None, "starttls"])
@pytest.mark.parametrize("protocol", ["SMTP", "POP3", "IMAP"])
def test_a_tls_client_on_a_plain_text_port_is_told_what_to_do(
    smtpsink_factory: Callable[..., Mailbox], protocol: str, tls: str | None
) -> None:
    # smtplib.SMTP_SSL, poplib.POP3_SSL, imaplib.IMAP4_SSL on a plain port:
    # its ClientHello was read as commands ("500 Error: bad syntax", "* BAD
    # No valid tag", "-ERR The command line is not UTF-8"), recorded as
    # lines of garbage, and the session just "client-closed".
    sink = smtpsink_factory(tls=tls)
    with pytest.raises(ssl.SSLError, match="WRONG_VERSION_NUMBER"):
        _connect_with_tls_at_once(sink, protocol)
    sink.wait_until(
        lambda: any(s.protocol == protocol and s.end for s in sink.sessions)
    )
    (session,) = sink.sessions
    assert session.end == "tls-on-plain-port"
    greeting, handshake = session.transcript
    assert greeting.kind == "greeting"
    assert greeting.replies  # the client read it as TLS: WRONG_VERSION_NUMBER
    assert re.fullmatch(
        r"\[a TLS handshake \(ClientHello\), \d+ bytes, on a plain-text port\]",
        handshake.line,
    ), handshake.line
    assert handshake.replies == []  # nothing said: it would be read as TLS
    assert session.commands == []
    client = {"SMTP": "smtplib.SMTP_SSL", "POP3": "poplib.POP3_SSL"}.get(
        protocol, "imaplib.IMAP4_SSL"
    )
    hint = (
        "the client started TLS on a plain-text port (a client that speaks TLS "
        f"from the start, e.g. {client}, reads the plain greeting as TLS and "
        f"fails with WRONG_VERSION_NUMBER: {_INSTEAD_OF_TLS[protocol, tls]}, or "
        "give the sink tls='implicit')"
    )
    assert session.tls_error == hint
    assert f"end=tls-on-plain-port ({hint})" in session.summary()
    section = _report.section_text([sink], "full") or ""
    assert f"end=tls-on-plain-port ({hint})" in section
    assert f"    C: {handshake.line}\n" in f"{section}\n"
    assert "\\x16" not in section  # no byte of the handshake


def test_bytes_that_are_not_utf8_read_alike_in_every_transcript(
    smtpsink: Mailbox,
) -> None:
    # SMTP wrote them "\xfc", IMAP as U+FFFD (every byte alike), POP3 as
    # the lone surrogates that stood for them ("\udcfc").
    for port in (smtpsink.port, smtpsink.pop3.port, smtpsink.imap.port):
        with socket.create_connection((smtpsink.host, port), timeout=10) as sock:
            reader = sock.makefile("rb")
            reader.readline()  # the greeting
            sock.sendall(b"a NOOP \xfc\xfd \xc3\xa9\r\n")
            assert reader.readline()
            reader.close()
    smtpsink.wait_until(
        lambda: len(smtpsink.sessions) == 3 and all(s.end for s in smtpsink.sessions)
    )
    shown = [
        f"{e.tag} {e.line}" if e.tag else e.line
        for session in smtpsink.sessions
        for e in session.transcript
        if e.kind == "command"
    ]
    assert shown == ["a NOOP \\xfc\\xfd \u00e9"] * 3


@pytest.mark.parametrize(
    "settings",
    [
        {"tls": "starttls-required"},
        # Passwords checked, and not allowed over plain text: SMTP AUTH
        # refuses them before STARTTLS (538), and so does IMAP.
        {"tls": "starttls", "auth": {USER: "pw"}},
    ],
)
def test_starttls_required_disables_login_before_tls(
    smtpsink_factory: Callable[..., SMTPSink], settings: dict[str, Any]
) -> None:
    sink = smtpsink_factory(**settings)
    with imaplib.IMAP4(sink.imap.host, sink.imap.port) as client:
        assert "LOGINDISABLED" in client.capabilities
        assert "AUTH=PLAIN" not in client.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            client.login(USER, "pw")
        client.starttls(ssl_context=sink.imap.ssl_context())
        assert "LOGINDISABLED" not in client.capabilities
        assert client.login(USER, "pw")[0] == "OK"
        client.logout()


def test_auth_plaintext_allows_login_before_starttls(
    smtpsink_factory: Callable[..., SMTPSink],
) -> None:
    sink = smtpsink_factory(tls="starttls", auth={USER: "pw"}, auth_plaintext=True)
    with imaplib.IMAP4(sink.imap.host, sink.imap.port) as client:
        assert "LOGINDISABLED" not in client.capabilities
        assert "STARTTLS" in client.capabilities
        assert client.login(USER, "pw")[0] == "OK"
        client.logout()


def test_auth_table_is_enforced_and_failures_recorded(
    smtpsink_factory: Callable[..., SMTPSink],
) -> None:
    sink = smtpsink_factory(auth={USER: "right-password"}, auth_plaintext=True)
    with imaplib.IMAP4(sink.imap.host, sink.imap.port) as client:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login(USER, "wrong-password")
        assert client.login(USER, "right-password")[0] == "OK"
        client.logout()
    session = sink.sessions[-1]
    assert [(a.username, a.success) for a in session.auth_attempts] == [
        (USER, False),
        (USER, True),
    ]
    text = session.format_transcript() + repr(session)
    assert "wrong-password" not in text
    assert "right-password" not in text
    assert f"LOGIN {USER} ****" in text


def test_an_invisible_mark_before_a_line_or_its_command_is_shown(
    smtpsink: Mailbox,
) -> None:
    # A no-break space before the tag (a line copied from a web page) was
    # dropped: "C: a1 ****" answered "No valid tag". A zero-width space
    # before a verb read as nothing. Written as escapes, as SMTP and POP3
    # write them.
    address = (smtpsink.imap.host, smtpsink.imap.port)
    with socket.create_connection(address, 30) as s, s.makefile("rwb") as stream:
        lines = [
            "\xa0a1 NOOP",
            "\ufeffa2 NOOP",
            f"a3 \u200bLOGIN {USER} s3cret",
            "z LOGOUT",
        ]
        stream.write("".join(f"{line}\r\n" for line in lines).encode())
        stream.flush()
        replies = [line.decode().rstrip("\r\n") for line in stream]
    assert replies[1:4] == [
        "* BAD No valid tag: a command is 'tag SP command'",
        "* BAD No valid tag: a command is 'tag SP command'",
        "a3 BAD Invalid command name at byte 3",
    ]
    shown = smtpsink.sessions[-1].format_transcript()
    assert "C: \\u00a0a1 ****\n" in shown
    assert "C: \\ufeffa2 ****\n" in shown
    assert "C: a3 \\u200bLOGIN****\n" in shown
    assert "s3cret" not in shown + repr(smtpsink.sessions[-1])


def test_authenticate_plain_with_sasl_ir_and_continuation(smtpsink: Mailbox) -> None:
    token = base64.b64encode(f"\0{USER}\0top-secret".encode()).decode()
    endpoint = Endpoint("imap", smtpsink.imap.host, smtpsink.imap.port)
    transcript = run([f"a AUTHENTICATE PLAIN {token}", "b LOGOUT"], endpoint) + run(
        ["c AUTHENTICATE PLAIN", token, "d LOGOUT"], endpoint
    )
    assert "S: a OK [CAPABILITY" in "\n".join(transcript)
    assert "S: + " in transcript
    assert any(line.startswith("S: c OK [CAPABILITY") for line in transcript)
    shown = "\n".join(s.format_transcript() for s in smtpsink.sessions)
    assert token not in shown
    assert "top-secret" not in shown
    assert "C: a AUTHENTICATE PLAIN ****" in shown
    assert "C: ****" in shown
    assert [s.authenticated_as for s in smtpsink.sessions] == [USER, USER]


def test_a_user_name_that_is_not_utf8_opens_no_mailbox(smtpsink: Mailbox) -> None:
    # No recipient's address has such a name: no login (the mailbox would
    # be named with replacement characters no mail reaches). UTF-8 is fine.
    plain = base64.b64encode(b"\0\xff@example.com\0pw")
    lines = [
        b'b LOGIN "\xfe@example.com" pw',
        b"c AUTHENTICATE PLAIN " + plain,
        'd LOGIN "j\u00f6rg@example.com" pw'.encode(),
        b"e LOGOUT",
    ]
    with socket.create_connection(imap_address(smtpsink), timeout=10) as sock:
        sock.sendall(b"".join(line + b"\r\n" for line in lines))
        with sock.makefile("rb") as replies:
            said = [line.decode("utf-8", "replace").rstrip() for line in replies]
    for tag in "bc":
        assert f"{tag} NO [AUTHENTICATIONFAILED] Authentication failed" in said, said
    assert any(line.startswith("d OK [CAPABILITY ") for line in said), said
    smtpsink.wait_until(lambda: smtpsink.sessions[-1].end is not None)
    attempts = smtpsink.sessions[-1].auth_attempts
    assert [a.success for a in attempts] == [False, False, True]
    assert attempts[-1].username == "j\u00f6rg@example.com"


def test_a_user_name_with_control_characters_opens_no_mailbox(
    smtpsink: Mailbox,
) -> None:
    # A literal can carry CR, LF and ESC: LOGIN took "ann\r\n* OK fake\x1b"
    # as a user no SMTP mail can reach (Dovecot refuses it).
    name = b"ann\r\n* OK fake\x1b[31m"
    plain = base64.b64encode(b"\0ann\x1b@example.com\0pw")
    with socket.create_connection(imap_address(smtpsink), timeout=10) as sock:
        sock.sendall(
            b"b LOGIN {%d+}\r\n%s pw\r\nc AUTHENTICATE PLAIN %s\r\nd LOGOUT\r\n"
            % (len(name), name, plain)
        )
        with sock.makefile("rb") as replies:
            said = [line.decode("utf-8", "replace").rstrip() for line in replies]
    for tag in "bc":
        assert f"{tag} NO [AUTHENTICATIONFAILED] Authentication failed" in said, said
    smtpsink.wait_until(lambda: smtpsink.sessions[-1].end is not None)
    assert smtpsink.sessions[-1].authenticated_as is None


def test_authenticate_with_a_split_initial_response_says_so(
    smtpsink: Mailbox,
) -> None:
    endpoint = Endpoint("imap", smtpsink.imap.host, smtpsink.imap.port)
    token = base64.b64encode(f"\0{USER}\0top-secret".encode()).decode()
    transcript = run(
        [f"a AUTHENTICATE PLAIN {token[:8]} {token[8:]}", "b AUTHENTICATE"], endpoint
    )
    assert (
        "S: a BAD AUTHENTICATE takes a mechanism and at most one initial "
        "response (base64, one word), not 2"
    ) in transcript
    assert "S: b BAD AUTHENTICATE needs a mechanism" in transcript
    shown = smtpsink.sessions[-1].format_transcript()
    assert token[8:] not in shown
    assert "C: a AUTHENTICATE PLAIN ****" in shown


def test_login_with_one_argument_masks_it(smtpsink: Mailbox) -> None:
    # A client that leaves out the user name: the lone word may be a password.
    endpoint = Endpoint("imap", smtpsink.imap.host, smtpsink.imap.port)
    transcript = run(
        ["a LOGIN top-secret", 'b LOGIN "top-secret"', "c LOGOUT"], endpoint
    )
    assert "S: a BAD LOGIN needs a user name and a password" in transcript
    shown = smtpsink.sessions[-1].format_transcript()
    assert "top-secret" not in shown
    assert "C: a LOGIN ****" in shown
    assert "C: b LOGIN ****" in shown


def test_a_login_without_its_tag_is_masked(smtpsink: Mailbox) -> None:
    # A client that leaves out its tag (or separates it by a tab): LOGIN
    # or AUTHENTICATE is read as the tag, or no tag is read at all; what
    # follows is still the login's, never shown nor echoed.
    plain = base64.b64encode(f"\0{USER}\0top-secret".encode())
    lines = [
        f"LOGIN {USER} top-secret".encode(),
        b"login top-secret",
        b"AUTHENTICATE PLAIN " + plain,
        f"a\tLOGIN {USER} top-secret".encode(),
        f"b UID LOGIN {USER} top-secret".encode(),
        b"LOGIN {10+}\r\ntop-secret",
        b"LOGIN NOOP",  # a tag that is a verb, before a command: shown
        b"c LOGOUT",
    ]
    with socket.create_connection(imap_address(smtpsink), timeout=10) as sock:
        sock.sendall(b"".join(line + b"\r\n" for line in lines))
        with sock.makefile("rb") as replies:
            said = [line.decode().rstrip() for line in replies]
    assert said[-1] == "c OK LOGOUT completed", said
    assert "LOGIN OK NOOP completed" in said, said
    assert not [line for line in said if "top-secret" in line.lower()], said
    smtpsink.wait_until(lambda: smtpsink.sessions[-1].end is not None)
    (session,) = smtpsink.sessions
    shown = session.format_transcript()
    assert "top-secret" not in shown.lower(), shown
    assert plain.decode() not in shown, shown
    assert "C: LOGIN ****" in shown
    assert "C: AUTHENTICATE ****" in shown
    assert "C: b UID LOGIN ****" in shown
    assert "C: LOGIN NOOP" in shown


def test_tags_that_hold_login_still_run_their_commands(smtpsink: Mailbox) -> None:
    # A tag that runs on past LOGIN may hold a password, so it is masked in
    # the transcript; but its command runs and the client gets its tag
    # back. Refusing them (untagged) hung clients with tags like "login1",
    # and left a {n+} literal's lines to be run as commands.
    message = b"Subject: x\r\n\r\nb1 DELETE INBOX\r\nb2 CREATE pwned\r\n"
    lines = [
        f"p LOGIN {USER} pw".encode(),
        b"login1 NOOP",
        b"x-login NOOP",
        b"LOGINx APPEND INBOX {%d+}" % len(message),
        message[:-2],  # the join's CRLF ends it
        b"",  # the end of the APPEND command's line
        b"z LOGOUT",
    ]
    with socket.create_connection(imap_address(smtpsink), timeout=10) as sock:
        sock.sendall(b"".join(line + b"\r\n" for line in lines))
        with sock.makefile("rb") as replies:
            said = [line.decode().rstrip() for line in replies]
    assert "login1 OK NOOP completed" in said, said
    assert "x-login OK NOOP completed" in said, said
    assert any(line.startswith("LOGINx OK [APPENDUID ") for line in said), said
    assert smtpsink.mailbox(USER).folders == ("INBOX",)  # no CREATE ran
    smtpsink.wait_until(lambda: smtpsink.sessions[-1].end is not None)
    shown = smtpsink.sessions[-1].format_transcript()
    assert "C: LOGIN**** NOOP" in shown
    assert "S: LOGIN**** OK NOOP completed" in shown
    assert "login1" not in shown
    assert "LOGINx" not in shown


def test_a_command_the_sink_lacks_after_authenticate_gets_its_tag(
    smtpsink: Mailbox,
) -> None:
    # After a successful AUTHENTICATE, the next line whose verb the sink
    # does not know was taken for a SASL response sent ahead, and answered
    # untagged: imaplib waited for its tag for ever.
    client = imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port, timeout=10)
    client.authenticate("PLAIN", lambda _: f"\0{USER}\0pw".encode())
    with pytest.raises(imaplib.IMAP4.error, match="Unknown or unsupported command"):
        client.getquotaroot("INBOX")
    client.logout()


def test_authenticate_responses_sent_without_waiting_are_masked(
    smtpsink: Mailbox,
) -> None:
    # A client that sends its SASL responses at once, to an AUTHENTICATE
    # that is refused (a mechanism the sink lacks) or cancelled: the server
    # reads them as commands, which must not show them.
    user = base64.b64encode(USER.encode())
    password = base64.b64encode(b"top-secret")
    plain = base64.b64encode(f"\0{USER}\0top-secret".encode())
    lines = [
        b"a AUTHENTICATE LOGIN", user, password,
        b"b AUTHENTICATE CRAM-MD5", plain,
        b"c AUTHENTICATE PLAIN", b"*", plain,
        b"d AUTHENTICATE XOAUTH2", b"A" * 9000 + plain,
        # Two words: read as a command, the first would be its tag (found by
        # a fuzz run); answered with it, recorded without it.
        b"g AUTHENTICATE PLAIN !!!", plain + b" x",
        b"e NOOP", b"top-secret",
        b"f LOGOUT",
    ]  # fmt: skip
    with socket.create_connection(imap_address(smtpsink), timeout=10) as sock:
        sock.sendall(b"".join(line + b"\r\n" for line in lines))
        with sock.makefile("rb") as replies:
            said = [line.decode().rstrip() for line in replies]
    assert said[-1] == "f OK LOGOUT completed"
    assert "* BAD Unknown or unsupported command" not in said
    smtpsink.wait_until(lambda: smtpsink.sessions[-1].end is not None)
    (session,) = smtpsink.sessions
    shown = session.format_transcript()
    for secret in (user, password, plain):
        assert secret.decode() not in shown
    assert shown.count("C: ****") == 7
    # Untagged: what reads as its tag is the secret's first word, which a
    # tagged reply echoed to the client.
    assert plain.decode() not in "\n".join(said)
    assert "* BAD Unknown command after AUTHENTICATE" in "\n".join(said)
    assert "S: * BAD Unknown command after AUTHENTICATE" in shown
    # A line after a real command is no response: a command, and, a word
    # alone before login on a sink with no table, masked as such.
    assert "C: top-secret" not in shown
    assert [e.kind for e in session.transcript][-3:-1] == ["command", "command"]
    assert session.transcript[-2].lines() == [
        "C: ****",
        "S: * BAD Missing command name",
    ]


def test_select_examine_list_status_and_folders(smtpsink: Mailbox) -> None:
    smtpsink.deliver(raw_message("One"), to=USER, flags={"\\Seen"})
    smtpsink.deliver(raw_message("Two"), to=USER)
    lines = dialogue(
        smtpsink,
        "a SELECT inbox",
        "b CREATE Archive/2024",
        "c CREATE Archive/2024",
        'd LIST "" *',
        'e LIST "" %',
        "f RENAME Archive Old",
        'g LIST "" *',
        "h STATUS INBOX (MESSAGES UNSEEN UIDNEXT)",
        "i EXAMINE INBOX",
        "j STORE 1 +FLAGS (\\Flagged)",
        "k DELETE INBOX",
        "l SUBSCRIBE Old/2024",
        'm LSUB "" *',
        "n SELECT Nowhere",
    )
    text = "\n".join(lines)
    assert "* 2 EXISTS" in text
    assert "* OK [UNSEEN 2] First unseen" in text
    assert re.search(r"\* OK \[UIDVALIDITY \d+\]", text)
    assert "a OK [READ-WRITE] SELECT completed" in text
    assert "c NO [ALREADYEXISTS]" in text
    assert '* LIST (\\HasNoChildren) "/" Archive/2024' in text
    assert '* LIST (\\Noselect \\HasChildren) "/" Archive' in text
    assert '* LIST (\\HasNoChildren) "/" Old/2024' in text
    assert "* STATUS INBOX (MESSAGES 2 UNSEEN 1 UIDNEXT" in text
    assert "i OK [READ-ONLY] EXAMINE completed" in text
    assert "j NO [READ-ONLY]" in text
    assert "k NO INBOX cannot be deleted" in text
    assert '* LSUB (\\HasNoChildren) "/" Old/2024' in text
    assert "n NO [NONEXISTENT]" in text
    assert smtpsink.mailbox(USER).folders == ("INBOX", "Old/2024")


def test_mail_in_a_deleted_folder_counts_as_deleted(smtpsink: Mailbox) -> None:
    """DELETE of a folder that holds mail destroys that mail: a test asking
    whether the reader deleted anything must hear of it."""
    smtpsink.deliver(raw_message("Kept"), to=USER, folder="Archive")
    smtpsink.deliver(raw_message("Expunged first"), to=USER, folder="Archive")
    lines = dialogue(
        smtpsink,
        "a SELECT Archive",
        "b STORE 2 +FLAGS (\\Deleted)",
        "c EXPUNGE",
        "d UNSELECT",
        "e DELETE Archive",
    )
    assert "e OK DELETE completed" in lines
    box = smtpsink.mailbox(USER)
    assert box.folders == ("INBOX",)
    assert [m.subject for m in box.deleted()] == ["Expunged first", "Kept"]
    assert [m.subject for m in box.deleted("Archive")] == ["Expunged first", "Kept"]
    assert box.assert_deleted(subject="Kept").subject == "Kept"
    with pytest.raises(AssertionError) as caught:
        box.assert_in("Archive", subject="Kept")
    assert "Archive (folder deleted):\n    (deleted) uid " in str(caught.value)


def test_folder_names_are_modified_utf7_on_the_wire_and_plain_in_tests(
    smtpsink: Mailbox,
) -> None:
    smtpsink.deliver(raw_message("Rechnung"), to=USER)
    smtpsink.deliver(raw_message("Entwurf"), to=USER, folder="Entwürfe")
    with login(smtpsink) as client:
        assert client.create("Gesch&AOQ-ftlich")[0] == "OK"
        client.select("INBOX")
        assert client.uid("MOVE", "1:*", "Gesch&AOQ-ftlich")[0] == "OK"
        status, listed = client.list()
        assert status == "OK"
        assert b'(\\HasNoChildren) "/" Entw&APw-rfe' in listed
        assert client.select("Entw&APw-rfe") == ("OK", [b"1"])
    # 8-bit names are refused, as a real server (Dovecot) refuses them.
    (reply,) = [
        line for line in dialogue(smtpsink, "a CREATE Entwürfe") if line[:2] == "a "
    ]
    assert reply.startswith("a NO Invalid folder name: "), reply
    assert "'Entw&APw-rfe' for this one" in reply
    box = smtpsink.mailbox(USER)
    assert box.folders == ("INBOX", "Entwürfe", "Geschäftlich")
    box.assert_in("Geschäftlich", subject="Rechnung")
    box.assert_in("Entwürfe", subject="Entwurf")


def test_inbox_is_inbox_in_any_case_also_as_a_parent(smtpsink: Mailbox) -> None:
    lines = dialogue(
        smtpsink,
        "a CREATE Inbox/Sub",
        "b SELECT INBOX/Sub",
        'c LIST "" *',
        "d CREATE inbox/sub2",
    )
    text = "\n".join(lines)
    assert "b OK [READ-WRITE] SELECT completed" in text
    assert [line for line in lines if line.startswith("* LIST")] == [
        '* LIST (\\HasChildren) "/" INBOX',
        '* LIST (\\HasNoChildren) "/" INBOX/Sub',
    ]
    assert smtpsink.mailbox(USER).folders == ("INBOX", "INBOX/Sub", "INBOX/sub2")
    smtpsink.mailbox(USER).assert_not_in("inbox/Sub", subject="x")
    # Only INBOX in ASCII: with a dotless i (U+0131), it upper-cases to it too.
    smtpsink.deliver(raw_message("x"), to=USER, folder="\u0131nbox/x")
    assert "\u0131nbox/x" in smtpsink.mailbox(USER).folders


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("f" * 4097, "it has 4097 characters, at most 4096"),
        ("/".join(["a"] * 3000), "it has 5999 characters, at most 4096"),
        ("ok/" + "x" * 256, "a level of it has 256 characters, at most 255"),
    ],
)
def test_a_folder_name_over_dovecots_limits_is_refused(
    smtpsink: Mailbox, name: str, why: str
) -> None:
    # A name of thousands of levels made every LIST take seconds of the
    # sink's loop (found by a fuzz run); Dovecot refuses such names too.
    (reply,) = [
        line for line in dialogue(smtpsink, f"a CREATE {name}") if line[:2] == "a "
    ]
    assert reply.startswith("a NO [CANNOT] "), reply[:100]
    assert reply.endswith(why)
    with pytest.raises(ValueError, match=re.escape(why)):
        smtpsink.deliver(raw_message("x"), to=USER, folder=name)
    # The limits themselves are names like any other.
    longest = "/".join(["y" * 255] * 16)
    assert len(longest) == 4095
    smtpsink.deliver(raw_message("x"), to=USER, folder=longest)
    assert longest in smtpsink.mailbox(USER).folders


# Two trailing delimiters leave an empty level: only one is CREATE's to
# drop (all of them were, and Archive// made Archive).
@pytest.mark.parametrize("name", ["/lead", "a//b", "//", "Archive//", "A/B///"])
def test_a_folder_name_with_an_empty_level_is_refused(
    smtpsink: Mailbox, name: str
) -> None:
    (reply,) = [
        line for line in dialogue(smtpsink, f"a CREATE {name}") if line[:2] == "a "
    ]
    assert reply.startswith("a NO [CANNOT] "), reply
    assert "it needs a name at each level" in reply
    with pytest.raises(ValueError, match="needs a name at each level") as refused:
        smtpsink.deliver(raw_message("x"), to=USER, folder=name)
    assert str(refused.value).startswith(
        f"{name!r} is not a folder name: it needs a name at each level"
    )
    with pytest.raises(ValueError, match="lone surrogate"):
        smtpsink.deliver(raw_message("x"), to=USER, folder="a\udcffb")
    assert smtpsink.mailbox(USER).folders == ("INBOX",)
    # A trailing delimiter names the folder, as CREATE Archive/ does.
    smtpsink.deliver(raw_message("x"), to=USER, folder="Archive/")
    assert smtpsink.mailbox(USER).folders == ("INBOX", "Archive")


def test_append_with_flags_date_and_literal_plus(smtpsink: Mailbox) -> None:
    message = raw_message("Draft")
    with login(smtpsink) as client:
        typ, data = client.append(
            "INBOX", "(\\Draft $Label)", '"17-Jul-1996 02:44:25 -0700"', message
        )
        assert typ == "OK"
        assert data[0].startswith(b"[APPENDUID ")
        assert client.append("Nowhere", None, None, message)[1][0].startswith(
            b"[TRYCREATE]"
        )
        client.logout()
    lines = dialogue(
        smtpsink, f"a APPEND INBOX {{{len(message)}+}}\r\n" + message.decode()
    )
    assert any(line.startswith("a OK [APPENDUID") for line in lines)
    box = smtpsink.mailbox(USER)
    stored = box.stored()
    assert [s.message.raw for s in stored] == [message, message]
    assert stored[0].flags == {"\\Draft", "$Label"}
    assert stored[0].internal_date.utcoffset() is not None
    assert stored[0].internal_date.hour == 2
    transcript = smtpsink.sessions[0].format_transcript()
    assert f"[{len(message)} octets]" in transcript
    assert "Subject: Draft" not in transcript


APPEND_REFUSALS = [
    pytest.param(
        'INBOX "bad date"',
        "BAD Invalid date-time 'bad date': expected like "
        '"17-Jul-1996 02:44:25 -0700"',
        id="date-time",
    ),
    pytest.param(
        'INBOX "31-Feb-2020 00:00:00 +0000"',
        "BAD Invalid date-time '31-Feb-2020 00:00:00 +0000': Feb 2020 has 29 days",
        id="no-such-day",
    ),
    pytest.param(
        'INBOX "01-Jan-2020 24:00:00 +0000"',
        "BAD Invalid date-time '01-Jan-2020 24:00:00 +0000': hour 24 is out of "
        "range (00-23)",
        id="hour-24",
    ),
    pytest.param(
        'INBOX "01-Jan-2020 00:00:00 +0060"',
        "BAD Invalid date-time '01-Jan-2020 00:00:00 +0060': zone +0060: its "
        "minutes are 00-59",
        id="zone-minute-60",
    ),
    pytest.param(
        "INBOX (\\Seen \\Bogus)",
        "BAD Unknown system flag '\\\\Bogus'",
        id="flag",
    ),
    pytest.param(
        "INBOX (\\Seen) (\\Draft)",
        'BAD APPEND takes (flags), "date-time" and a literal',
        id="two-flag-lists",
    ),
    pytest.param(
        "Nowhere", "NO [TRYCREATE] No such folder: Nowhere", id="no-such-folder"
    ),
    pytest.param("&Jjo!", "NO Invalid folder name: ", id="folder-name"),
    # Not TRYCREATE: it invites a CREATE that must fail (as Dovecot: CANNOT).
    pytest.param('""', "NO [CANNOT] ", id="empty-folder-name"),
    pytest.param("a//b", "NO [CANNOT] ", id="empty-level"),
]


@pytest.mark.parametrize(("arguments", "refusal"), APPEND_REFUSALS)
def test_append_is_refused_before_its_literal_is_sent(
    smtpsink: Mailbox, arguments: str, refusal: str
) -> None:
    message = raw_message("Refused").decode()
    size = len(message)
    endpoint = Endpoint("imap", smtpsink.imap.host, smtpsink.imap.port)
    # Synchronizing: the refusal instead of "+ Ready", so the client sends
    # no literal and its next line is a command.
    lines = run(
        [f"L LOGIN {USER} pw", f"a APPEND {arguments} {{{size}}}", "z NOOP"],
        endpoint,
        read_timeout=5,
    )
    assert lines[3] == f"C: a APPEND {arguments} {{{size}}}"
    assert lines[4].startswith(f"S: a {refusal}"), lines
    assert lines[5:] == ["C: z NOOP", "S: z OK NOOP completed"]
    # Non-synchronizing: the literal is on its way; it is read (none of its
    # lines is taken for a command), then refused alike.
    append = f"b APPEND {arguments} {{{size}+}}\r\n{message}"
    lines = run([f"L LOGIN {USER} pw", append, "z NOOP"], endpoint, read_timeout=5)
    replies = [line for line in lines if line.startswith("S: ")]
    assert len(replies) == 4, lines  # the greeting, L, b and z: no more
    assert replies[2].startswith(f"S: b {refusal}"), lines
    assert replies[3] == "S: z OK NOOP completed"
    smtpsink.wait_until(lambda: all(s.end for s in smtpsink.sessions))
    for session in smtpsink.sessions:
        # LOGIN, APPEND, NOOP: each recorded, nothing else.
        assert [e.tag for e in session.transcript if e.kind == "command"] == [
            "L",
            session.transcript[2].tag,
            "z",
        ]
        assert session.transcript[2].reply.startswith(refusal)
    assert smtpsink.mailbox(USER).stored() == ()


def test_append_before_login_is_refused_before_its_literal(smtpsink: Mailbox) -> None:
    endpoint = Endpoint("imap", smtpsink.imap.host, smtpsink.imap.port)
    lines = run(["a APPEND INBOX {5}", "b NOOP"], endpoint, read_timeout=5)
    assert lines[1:] == [
        "C: a APPEND INBOX {5}",
        "S: a BAD APPEND: log in first",
        "C: b NOOP",
        "S: b OK NOOP completed",
    ]


def test_a_line_of_one_word_is_recorded_once(smtpsink: Mailbox) -> None:
    # Taken as a tag with no command, it was recorded as "abc abc": the
    # tag and the line.
    endpoint = Endpoint("imap", smtpsink.imap.host, smtpsink.imap.port)
    run([f"L LOGIN {USER} pw", "y NOOP", "abc", "z NOOP"], endpoint, read_timeout=5)
    smtpsink.wait_until(lambda: all(s.end for s in smtpsink.sessions))
    (session,) = smtpsink.sessions
    lines = session.format_transcript().splitlines()
    assert "C: abc" in lines
    assert "S: abc BAD Missing command name" in lines
    assert not [line for line in lines if "abc abc" in line]


def test_append_of_a_quoted_string_is_bad_and_stores_nothing(smtpsink: Mailbox) -> None:
    # RFC 3501's APPEND takes the message as a literal; a quoted one was
    # stored with OK (Dovecot answers BAD: tests/test_imap_dovecot.py).
    endpoint = Endpoint("imap", smtpsink.imap.host, smtpsink.imap.port)
    lines = run(
        [f"L LOGIN {USER} pw", 'a APPEND INBOX "Subject: hi"', "b NOOP"],
        endpoint,
        read_timeout=5,
    )
    assert lines[3:] == [
        'C: a APPEND INBOX "Subject: hi"',
        "S: a BAD APPEND's message must be a literal",
        "C: b NOOP",
        "S: b OK NOOP completed",
    ]
    assert smtpsink.mailbox(USER).stored() == ()


class _RecordingIMAP4(imaplib.IMAP4):
    """imaplib's client, keeping what it sends."""

    def __init__(self, host: str, port: int) -> None:
        self.sent: list[bytes] = []
        super().__init__(host, port)

    def send(self, data: Buffer) -> None:
        self.sent.append(bytes(data))
        super().send(data)


def test_imaplib_uploads_no_message_that_append_refuses(smtpsink: Mailbox) -> None:
    message = raw_message("Never sent")
    with _RecordingIMAP4(smtpsink.imap.host, smtpsink.imap.port) as client:
        client.login(USER, "pw")
        with pytest.raises(imaplib.IMAP4.error, match="Invalid date-time"):
            client.append("INBOX", None, '"yesterday"', message)
        typ, data = client.append("Nowhere", None, None, message)
        assert (typ, data) == ("NO", [b"[TRYCREATE] No such folder: Nowhere"])
        assert not any(message in sent for sent in client.sent)
        # The session goes on, and a good APPEND sends its message.
        typ, data = client.append("INBOX", None, None, message)
        assert typ == "OK"
        assert any(message in sent for sent in client.sent)
        client.logout()
    assert [m.subject for m in smtpsink.mailbox(USER).messages()] == ["Never sent"]
    # Shown with its From: address, as deliver()'s mail is, not as "<>".
    (appended,) = smtpsink.mailbox(USER).messages()
    assert appended.envelope.mail_from == "zed@example.org"
    # The transcript said "[n octets]" of the refused ones, as if sent.
    appends = [
        e.line for e in smtpsink.sessions[-1].transcript if e.line.startswith("APPEND")
    ]
    size = len(message)
    assert appends == [
        f'APPEND INBOX "yesterday" {{{size}}} [{size} octets, not sent]',
        f"APPEND Nowhere {{{size}}} [{size} octets, not sent]",
        f"APPEND INBOX {{{size}}} [{size} octets]",
    ]


def test_search_answers_sequence_numbers_and_uid_search_uids(
    smtpsink: Mailbox,
) -> None:
    # smtp4dev #1519: after an expunge, SEARCH must not answer UIDs.
    for subject in ("a", "b", "c", "d"):
        smtpsink.deliver(raw_message(f"Report {subject}"), to=USER)
    with login(smtpsink) as client:
        client.select("INBOX")
        client.store("1:2", "+FLAGS", "\\Deleted")
        client.expunge()
        assert client.search(None, "ALL") == ("OK", [b"1 2"])
        _typ, uids = client.uid("SEARCH", "ALL")
        stored = smtpsink.mailbox(USER).stored()
        assert uids == [" ".join(str(s.uid) for s in stored).encode()]
        assert client.search(None, "SUBJECT", '"Report d"') == ("OK", [b"2"])
        assert client.uid("SEARCH", "CHARSET", "US-ASCII", "SUBJECT", "d")[1] == [
            str(stored[1].uid).encode()
        ]
        client.logout()


def test_no_expunge_during_fetch_store_or_search_only_after(
    smtpsink: Mailbox,
) -> None:
    for subject in ("a", "b", "c"):
        smtpsink.deliver(raw_message(subject), to=USER)
    reader = login(smtpsink)
    reader.select("INBOX")
    reader.untagged_responses.clear()
    with login(smtpsink) as other:
        other.select("INBOX")
        other.store("1", "+FLAGS", "\\Deleted")
        other.expunge()
        other.logout()
    smtpsink.deliver(raw_message("d"), to=USER)
    # The reader still sees 3 then 4 messages numbered as it knows them.
    typ, _data = reader.fetch("1:3", "(UID)")
    assert typ == "OK"
    assert reader.untagged_responses.get("EXPUNGE") is None
    assert reader.untagged_responses.pop("EXISTS") == [b"4"]
    reader.search(None, "ALL")
    reader.store("2", "+FLAGS", "\\Flagged")
    assert "EXPUNGE" not in reader.untagged_responses
    reader.noop()
    assert reader.untagged_responses.pop("EXPUNGE") == [b"1"]
    assert reader.search(None, "ALL") == ("OK", [b"1 2 3"])
    reader.logout()


def test_fetch_items_peek_and_flags(smtpsink: Mailbox) -> None:
    smtpsink.deliver(raw_message("Peek"), to=USER)
    lines = dialogue(
        smtpsink,
        "a SELECT INBOX",
        "b FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] FLAGS)",
        "c FETCH 1 (BODY[TEXT])",
        "d UID FETCH 1:* (FLAGS)",
        "e FETCH 1 (ENVELOPE BODYSTRUCTURE RFC822.SIZE INTERNALDATE)",
        "f STORE 1 -FLAGS.SILENT (\\Seen)",
        "g FETCH 1 FAST",
        "h FETCH 5 FLAGS",
    )
    text = "\n".join(lines)
    assert "Subject: Peek" in text
    assert "* 1 FETCH (FLAGS (\\Seen \\Recent) BODY[TEXT] {8}\nHello.\n)" in text
    # UID FETCH: the UID first, as Dovecot sends it (some clients rely on it).
    assert re.search(r"\* 1 FETCH \(UID \d+ FLAGS \(\\Seen \\Recent\)\)", text)
    assert "ENVELOPE (" in text
    assert 'BODYSTRUCTURE ("text" "plain"' in text
    assert "f OK" in text
    assert "* 1 FETCH (FLAGS (\\Recent))" not in text.split("f OK")[0].split("e OK")[1]
    assert "* 1 FETCH (FLAGS (\\Recent) INTERNALDATE" in text
    assert "h BAD Invalid message sequence number: 5 (the folder has 1 message)" in text


@contextlib.contextmanager
def idling(
    endpoint: IMAPEndpoint, sink: SMTPSink | Mailbox | None = None
) -> Iterator[io.BufferedRWPair]:
    """A raw IMAP session of USER, in IDLE on INBOX: its socket stream.
    With ``sink``, its loop is held while the client connects and asks
    (`loop_held`): for a sink with a short idle timeout."""
    address = (endpoint.host, endpoint.port)
    commands = [f"a LOGIN {USER} pw", "b SELECT INBOX", "c IDLE"]
    with contextlib.ExitStack() as setup:
        if sink is not None:
            setup.enter_context(loop_held(sink))
        s = socket.create_connection(address, 30)
        if sink is not None:
            # All at once, answered in turn: no wait of the client's between.
            s.sendall("".join(f"{c}\r\n" for c in commands).encode())
    with s, s.makefile("rwb") as stream:

        def until(prefix: bytes) -> list[bytes]:
            lines: list[bytes] = []
            while not lines or not lines[-1].startswith(prefix):
                lines.append(stream.readline())
                assert lines[-1], lines
            return lines

        stream.readline()
        for command in commands:
            if sink is None:  # one at a time, as most clients ask
                stream.write(f"{command}\r\n".encode())
                stream.flush()
            replies = until(b"+" if command == "c IDLE" else command[:2].encode())
        assert replies == [b"+ idling\r\n"]
        yield stream


def test_idle_is_woken_by_smtp_mail(smtpsink: Mailbox) -> None:
    smtpsink.deliver(raw_message("First"), to=USER)
    with idling(smtpsink.imap) as stream:
        with smtplib.SMTP(smtpsink.host, smtpsink.port) as smtp:
            smtp.sendmail("zed@example.org", [USER], raw_message("Second"))
        # Woken by the store's notification: no NOOP, no polling.
        assert stream.readline() == b"* 2 EXISTS\r\n"
        assert stream.readline() == b"* 2 RECENT\r\n"
        smtpsink.deliver(raw_message("Third"), to=USER)
        assert stream.readline() == b"* 3 EXISTS\r\n"
        stream.readline()
        stream.write(b"DONE\r\n")
        stream.flush()
        assert stream.readline() == b"c OK IDLE terminated\r\n"
    (session,) = [s for s in smtpsink.sessions if s.protocol == "IMAP"]
    transcript = session.format_transcript()
    assert "C: c IDLE\nS: + idling\nS: * 2 EXISTS" in transcript
    assert "C: DONE\nS: c OK IDLE terminated" in transcript


def test_a_search_string_that_is_not_utf8_is_bad(smtpsink: Mailbox) -> None:
    # Decoded with U+FFFD, it found nothing: a client's Latin-1 terms passed
    # as "no matching mail"; Dovecot answers BAD. So for an 8-bit keyword.
    smtpsink.deliver("Subject: caf\u00e9 menu\r\n\r\nx\r\n".encode(), to=USER)
    address = (smtpsink.imap.host, smtpsink.imap.port)
    with socket.create_connection(address, 30) as sock, sock.makefile("rwb") as io:

        def send(line: bytes) -> list[bytes]:
            io.write(line + b"\r\n")
            io.flush()
            replies = [io.readline()]
            while not replies[-1].startswith(line[:2]):
                replies.append(io.readline())
            return [reply.rstrip(b"\r\n") for reply in replies]

        io.readline()
        send(f"a LOGIN {USER} pw".encode())
        send(b"b SELECT INBOX")
        assert send(b"d SEARCH CHARSET UTF-8 SUBJECT {4+}\r\ncaf\xe9") == [
            b"d BAD The search string 'caf\\xe9' is not UTF-8 (name its charset "
            b"with SEARCH CHARSET)"
        ]
        # Named so, it is found (imap-tools sends a charset as it is given).
        assert send(b"d2 SEARCH CHARSET ISO-8859-1 SUBJECT {4+}\r\ncaf\xe9") == [
            b"* SEARCH 1",
            b"d2 OK SEARCH completed",
        ]
        assert send("e SEARCH SUBJECT {5+}\r\ncaf\u00e9".encode()) == [
            b"* SEARCH 1",
            b"e OK SEARCH completed",
        ]
        assert send("f SEARCH KEYWORD caf\u00e9".encode()) == [
            b"f BAD KEYWORD takes a keyword of ASCII characters"
        ]


def test_an_idle_transcript_counts_the_responses_it_leaves_out(
    smtpsink: Mailbox,
) -> None:
    # Past its first 20 untagged responses an IDLE's transcript said
    # nothing more: the report read as if mail 11 was never announced.
    with idling(smtpsink.imap) as stream:
        for number in range(1, 12):
            smtpsink.deliver(raw_message(f"m{number}"), to=USER)
            assert stream.readline() == f"* {number} EXISTS\r\n".encode()
            assert stream.readline() == f"* {number} RECENT\r\n".encode()
        stream.write(b"DONE\r\n")
        stream.flush()
        assert stream.readline() == b"c OK IDLE terminated\r\n"
    (session,) = [s for s in smtpsink.sessions if s.protocol == "IMAP"]
    transcript = session.format_transcript()
    assert "S: * 10 RECENT\nS: [... 2 more untagged responses]\nC: DONE" in transcript


def test_idle_hears_of_a_change_made_while_it_was_still_writing() -> None:
    # IDLE wrote a burst of updates to a client that did not read them yet;
    # a change that came while it waited for the client was never told:
    # nothing was waiting to be woken, and IDLE then waited for input.
    count = 300
    with SMTPSink() as sink:
        for number in range(count):
            sink.deliver(raw_message(f"m{number}"), to=USER)
        endpoint = sink.imap
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.settimeout(30)
        client.connect((endpoint.host, endpoint.port))
        with client, client.makefile("rb") as stream:

            def until(prefix: bytes) -> None:
                while not stream.readline().startswith(prefix):
                    pass

            stream.readline()
            for line in (f"a LOGIN {USER} pw", "b SELECT INBOX", "c IDLE"):
                client.sendall(line.encode() + b"\r\n")
                until(line[0].encode() if line[0] != "c" else b"+")
            assert sink._runtime is not None
            server = sink._runtime.services["imap"]
            assert isinstance(server, _imap.IMAPServer)
            (connection,) = server.connections
            paused = threading.Event()

            def small_buffers() -> None:
                # So that the burst below fills them: IDLE waits to write.
                assert connection.transport is not None
                connection.transport.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_SNDBUF, 4096
                )
                connection.transport.set_write_buffer_limits(high=4096)
                pause = connection.pause_writing

                def pause_writing() -> None:
                    pause()
                    paused.set()

                connection.pause_writing = pause_writing  # type: ignore[method-assign]

            on_the_loop(sink, small_buffers)
            other = imaplib.IMAP4(endpoint.host, endpoint.port, timeout=30)
            try:
                other.login(USER, "pw")
                other.select("INBOX")
                keywords = " ".join(f"keyword{k:02d}" for k in range(40))
                other.store("1:*", "+FLAGS", f"({keywords})")
            finally:
                other.logout()
            assert paused.wait(30), "IDLE's updates did not fill the buffers"
            sink.deliver(raw_message("Late"), to=USER)
            on_the_loop(sink, lambda: None)  # after the change reached IDLE
            said = b""
            while said != f"* {count + 1} EXISTS\r\n".encode():
                said = stream.readline()  # a timeout if it never comes
                assert said, "the IDLE session was closed"
            client.sendall(b"DONE\r\n")
            until(b"c ")


def test_recent_is_claimed_once_in_a_test_that_began_with_no_session_open() -> None:
    # The server heard of a new test only while a session was open: begun
    # with none, it forgot the earlier test's \\Recent claims at the next
    # change instead, and with them the claim of a session of the new test.
    def recent_on_select(client: imaplib.IMAP4) -> list[Any]:
        client.select("INBOX")
        return client.response("RECENT")[1]

    with SMTPSink() as sink:
        sink.deliver(raw_message("Earlier test"), to=USER)
        old = imaplib.IMAP4(sink.imap.host, sink.imap.port, timeout=30)
        old.login(USER, "pw")
        old.select("INBOX")
        old.logout()
        sink.clear()  # a new test, no session open
        sink.deliver(raw_message("First"), to=USER)
        first = imaplib.IMAP4(sink.imap.host, sink.imap.port, timeout=30)
        second = imaplib.IMAP4(sink.imap.host, sink.imap.port, timeout=30)
        try:
            first.login(USER, "pw")
            assert recent_on_select(first) == [b"1"]  # it claims "First"
            sink.deliver(raw_message("Second"), to=USER)
            second.login(USER, "pw")
            assert recent_on_select(second) == [b"1"]  # "Second" only
        finally:
            first.logout()
            second.logout()


def test_open_read_side_sessions_leave_smtp_lines_alone() -> None:
    # The read-side servers hear of mail changes and of a new test from the
    # mailboxes, not as store listeners: with only POP3 and IMAP sessions
    # open nobody watches the store, so no SMTP transcript line `touch`es
    # it. IDLE still sees new mail, and a new test (clear) still ends both.
    with SMTPSink() as sink:
        store = sink._store
        sink.deliver(raw_message("First"), to=USER)
        pop = poplib.POP3(sink.pop3.host, sink.pop3.port, timeout=30)
        pop.user(USER)
        pop.pass_("pw")
        with idling(sink.imap) as imap:
            assert store.watchers == 0
            with smtplib.SMTP(sink.host, sink.port) as smtp:
                smtp.noop()
                smtp.sendmail("zed@example.org", [USER], raw_message("Second"))
            assert store.watchers == 0
            assert imap.readline() == b"* 2 EXISTS\r\n"
            assert imap.readline() == b"* 2 RECENT\r\n"
            # Another session's change reaches the IDLE session too.
            other = imaplib.IMAP4(sink.imap.host, sink.imap.port)
            other.login(USER, "pw")
            other.select("INBOX")
            other.store("1", "+FLAGS", "\\Flagged")
            other.logout()
            assert imap.readline() == b"* 1 FETCH (FLAGS (\\Flagged \\Recent))\r\n"
            assert store.watchers == 0
            sink.clear()  # what the next test's start does
            assert imap.readline().startswith(b"* BYE Session ended: a new test")
            assert imap.readline() == b""
        line = pop.file.readline()
        assert line.startswith(b"-ERR [SYS/TEMP] Session ended: a new test started")
        assert pop.file.readline() == b""
        pop.close()


def _imap_session(sink: Mailbox) -> imaplib.IMAP4:
    client = imaplib.IMAP4(sink.imap.host, sink.imap.port, timeout=30)
    client.login(USER, "pw")
    return client


def _append(sink: Mailbox) -> None:
    with _imap_session(sink) as client:
        client.append("INBOX", None, None, raw_message("Appended"))


def _move_in(sink: Mailbox) -> None:
    sink.deliver(raw_message("Filed"), to=USER, folder="Archive")
    with _imap_session(sink) as client:
        client.select("Archive")
        client.uid("MOVE", "1:*", "INBOX")


def _copy_in(sink: Mailbox) -> None:
    sink.deliver(raw_message("Filed"), to=USER, folder="Archive")
    with _imap_session(sink) as client:
        client.select("Archive")
        client.copy("1", "INBOX")


def _expunge(sink: Mailbox) -> None:
    with _imap_session(sink) as client:
        client.select("INBOX")
        client.store("1", "+FLAGS.SILENT", "(\\Deleted)")
        client.expunge()


def _fetch_marks_seen(sink: Mailbox) -> None:
    with _imap_session(sink) as client:
        client.select("INBOX")
        client.fetch("1", "(BODY[])")


def _rename_inbox(sink: Mailbox) -> None:
    with _imap_session(sink) as client:
        client.rename("INBOX", "Old")


def _pop3_delete(sink: Mailbox) -> None:
    client = poplib.POP3(sink.pop3.host, sink.pop3.port, timeout=30)
    client.user(USER)
    client.pass_("pw")
    client.dele(1)
    client.quit()


# What another session or protocol does to INBOX, and what an IDLE session
# on INBOX must be told at once: every place that changes the mailboxes
# notifies the read-side servers (Store.mail_changed).
CHANGES = {
    "APPEND": (_append, b"* 2 EXISTS"),
    "MOVE in": (_move_in, b"* 2 EXISTS"),
    "COPY in": (_copy_in, b"* 2 EXISTS"),
    "EXPUNGE": (_expunge, b"* 1 EXPUNGE"),
    "FETCH marks seen": (_fetch_marks_seen, b"* 1 FETCH (FLAGS (\\Seen"),
    "RENAME INBOX": (_rename_inbox, b"* 1 EXPUNGE"),
    "POP3 DELE and QUIT": (_pop3_delete, b"* 1 EXPUNGE"),
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_idle_hears_of_every_change_to_its_mailbox(
    smtpsink: Mailbox, change: tuple[Callable[[Mailbox], None], bytes]
) -> None:
    act, expected = change
    smtpsink.deliver(raw_message("First"), to=USER)
    with idling(smtpsink.imap) as stream:
        act(smtpsink)
        said = [stream.readline()]  # a timeout (30 s) if nothing is said
        while not said[-1].startswith(expected):
            # EXPUNGE's STORE \\Deleted is told first (tested on its own).
            assert len(said) < 3, said
            said.append(stream.readline())
        line = said[-1]
        stream.write(b"DONE\r\n")
        stream.flush()
        while not line.startswith(b"c "):
            line = stream.readline()
            assert line, "the IDLE session was closed"
        assert line == b"c OK IDLE terminated\r\n"


def test_idle_hears_of_new_mail_flags_and_expunges_in_turn(smtpsink: Mailbox) -> None:
    # New mail alone is read without comparing the whole folder, and flags
    # only when some changed: each step must still be told as before.
    smtpsink.deliver(raw_message("First"), to=USER)
    with idling(smtpsink.imap) as stream:

        def told(prefix: bytes) -> list[bytes]:
            lines = [stream.readline()]
            while not lines[-1].startswith(prefix):
                lines.append(stream.readline())
                assert lines[-1], lines
            return lines

        smtpsink.deliver(raw_message("Second"), to=USER)
        smtpsink.deliver(raw_message("Third"), to=USER)
        told(b"* 3 EXISTS")
        with _imap_session(smtpsink) as client:
            client.select("INBOX")
            client.store("3", "+FLAGS.SILENT", "(\\Flagged)")
        assert told(b"* 3 FETCH")[-1] == b"* 3 FETCH (FLAGS (\\Flagged \\Recent))\r\n"
        with _imap_session(smtpsink) as client:
            client.select("INBOX")
            client.store("2", "+FLAGS.SILENT", "(\\Deleted)")
            client.expunge()
        smtpsink.deliver(raw_message("Fourth"), to=USER)
        lines = told(b"* 3 EXISTS")
        assert b"* 2 EXPUNGE\r\n" in lines, lines
        stream.write(b"DONE\r\n")
        stream.flush()
        assert told(b"c ")[-1] == b"c OK IDLE terminated\r\n"


def test_an_idle_session_ended_by_clear_records_only_what_it_was_sent() -> None:
    # Its transcript had a "* 1 EXPUNGE" after the BYE, never sent: IDLE
    # told its updates before it checked for a new test (or the sink's
    # clear()), and read the emptied mailbox as every message expunged.
    with SMTPSink() as sink, contextlib.ExitStack() as stack:
        sink.deliver(raw_message("First"), to=USER)
        stream = stack.enter_context(idling(sink.imap))
        [session] = [s for s in sink.sessions if s.protocol == "IMAP"]
        sink.clear()  # as a new test does
        said = stream.readline()
        assert said.startswith(b"* BYE "), said
        assert stream.readline() == b""  # closed
        stack.close()
        sink.wait_until(lambda: session.end is not None)
    last = session.transcript[-1]
    assert last.kind == "notice", session.transcript[-3:]
    assert last.replies[0].startswith("* BYE "), last
    assert not any("EXPUNGE" in r for e in session.transcript for r in e.replies)


def test_sessions_of_an_earlier_test_get_bye(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import imaplib
        import pytest

        CLIENTS = []

        def test_one(smtpsink):
            client = imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port)
            client.login("ann@example.com", "pw")
            client.select("INBOX")
            CLIENTS.append(client)

        def test_two(smtpsink):
            smtpsink.deliver(b"Subject: new\\r\\n\\r\\nx\\r\\n", to="ann@example.com")
            client = CLIENTS[0]
            try:
                with pytest.raises(imaplib.IMAP4.abort, match="a new test started"):
                    client.noop()
                    client.noop()
            finally:
                client.shutdown()
            ended = [s for s in smtpsink.sessions if s.protocol == "IMAP"]
            assert ended == []  # the old session belongs to test_one
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_faults_answer_no_bad_or_disconnect(smtpsink: Mailbox) -> None:
    smtpsink.deliver(raw_message("One"), to=USER)
    smtpsink.fail("IMAP:FETCH", 451, "Try later", times=1)
    smtpsink.fail("IMAP:SEARCH", 500, "Not today", times=1)
    smtpsink.fail("IMAP:SELECT", 550, match=USER, times=1)
    lines = dialogue(
        smtpsink,
        "a SELECT INBOX",
        "b SELECT INBOX",
        "c UID FETCH 1:* FLAGS",
        "d FETCH 1 FLAGS",
        "e SEARCH ALL",
    )
    assert "a NO Injected failure" in lines
    assert "c NO [UNAVAILABLE] Try later" in lines
    assert "d OK FETCH completed" in lines
    assert "e BAD Not today" in lines
    session = smtpsink.sessions[-1]
    assert [e.injected for e in session.transcript if e.tag in ("a", "b", "c")] == [
        True,
        False,
        True,
    ]
    smtpsink.disconnect("IMAP:LOGIN")
    assert dialogue(smtpsink, "x NOOP")[1:] == ["<connection closed>"]
    assert smtpsink.sessions[-1].end == "server-closed"


def test_fail_at_authenticate_matches_the_user_of_the_plain_response(
    smtpsink: Mailbox,
) -> None:
    # The rules were asked at AUTHENTICATE, before its response named the
    # user: a rule for ann never fired for imaplib's AUTHENTICATE PLAIN.
    for_ann = smtpsink.fail(
        "IMAP:AUTHENTICATE", 454, "try later", match="ann@example.com", times=1
    )
    for_bob = smtpsink.fail("IMAP:AUTHENTICATE", 550, match="bob@example.com")
    client = imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port, timeout=10)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="try later"):
            client.authenticate("PLAIN", lambda _: b"\0ann@example.com\0x")
        assert (
            client.authenticate("PLAIN", lambda _: b"\0ann@example.com\0x")[0] == "OK"
        )
    finally:
        client.logout()
    assert (for_ann.seen, for_ann.fired) == (2, 1)
    assert (for_bob.seen, for_bob.fired) == (0, 0)


def test_a_rule_for_the_name_given_at_login_fires_after_login(
    smtpsink: Mailbox,
) -> None:
    # After login the rules compared with the mailbox's name only.
    rule = smtpsink.fail("IMAP:SELECT", 550, "broken", match="Ann@example.com")
    client = imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port, timeout=10)
    try:
        client.login("Ann@example.com", "x")
        assert client.select("INBOX")[0] == "NO"
    finally:
        client.logout()
    assert rule.fired == 1


def test_unknown_imap_stage_is_refused(smtpsink: Mailbox) -> None:
    with pytest.raises(ValueError, match="unknown IMAP stage 'IMAP:RETR'"):
        smtpsink.fail("IMAP:RETR", 450)


BAD_INPUT = [
    ("", "* BAD Empty command line"),
    # A tag alone is answered tagged (as Dovecot does): its client waits for it.
    (
        "no-command-name",
        "no-command-name BAD Missing command name",
    ),
    ("a", "a BAD Missing command name"),
    ("(a", "* BAD No valid tag: a command is 'tag SP command'"),
    ("a FROBNICATE", "a BAD Unknown or unsupported command: FROBNICATE"),
    ("a SORT (DATE) UTF-8 ALL", "a BAD Unknown or unsupported command: SORT"),
    ("a FETCH 1 FLAGS", "a BAD FETCH: select a folder first"),
    ("a LOGIN x", "a BAD LOGIN is not valid after login"),
    ('a SELECT "unterminated', "a BAD Unterminated quoted string"),
    ("a CREATE (list)", "a BAD Expected an atom or a string, got a list"),
    ("a STATUS INBOX (FOO)", "a BAD Unknown STATUS item"),
    ("a \x00\x01 NOOP", "a BAD Unexpected"),
    ("a APPEND INBOX {999999999}", "a NO [LIMIT] Message too large"),
    # Refused before "+", as on Dovecot: the next command was taken for the
    # literal the sink asked for.
    ("a UID {5}", "a BAD A command's name cannot be a literal"),
    ("a {4}", "a BAD A command's name cannot be a literal"),
    ("a SEARCH SUBJECT ~{3}", "a BAD A literal8 (~{n}) is not accepted"),
    # Wherever it stands (it was "Expected a space at byte 34, found '{'",
    # after "+ Ready" for the second): read and dropped if on its way.
    ("a SEARCH SUBJECT ~{3+}\r\nabc", "a BAD A literal8 (~{n}) is not accepted"),
    (
        "a SEARCH SUBJECT {1+}\r\nx SUBJECT ~{3}",
        "a BAD A literal8 (~{n}) is not accepted",
    ),
    # Commands that take no arguments refuse them, and are not run (a
    # LOGOUT that was would end the session before z NOOP).
    ("a NOOP extra", "a BAD NOOP takes no arguments"),
    ("a CAPABILITY IMAP4rev1", "a BAD CAPABILITY takes no arguments"),
    ("a LOGOUT now", "a BAD LOGOUT takes no arguments"),
    ("a IDLE 30", "a BAD IDLE takes no arguments"),
    ("a NAMESPACE (x)", "a BAD NAMESPACE takes no arguments"),
    # Commands that take one folder name, or ID's one argument.
    ("a DELETE INBOX extra", "a BAD DELETE takes one folder name"),
    ("a UNSUBSCRIBE INBOX extra", "a BAD UNSUBSCRIBE takes one folder name"),
    ("a ID", 'a BAD ID takes NIL or a list of fields ("name" "value" ...)'),
    ("a ID NIL extra", "a BAD ID takes NIL or a list of fields"),
    # Over the limit, with the next command in the same read: only the
    # long line is skipped.
    ("a NOOP " + "x" * 70_000, "a BAD Line too long (70009 bytes, at most 65536)"),
]


@pytest.mark.parametrize(("line", "expected"), BAD_INPUT)
def test_bad_input_is_answered_recorded_and_serving_goes_on(
    smtpsink: Mailbox, line: str, expected: str
) -> None:
    address = (smtpsink.imap.host, smtpsink.imap.port)
    with socket.create_connection(address, 30) as s, s.makefile("rwb") as stream:
        stream.write(f"L LOGIN {USER} pw\r\n{line}\r\nz NOOP\r\n".encode())
        stream.flush()
        lines: list[str] = []
        while not lines or not lines[-1].startswith("z "):
            read = stream.readline()
            assert read, lines
            lines.append(read.decode().rstrip("\r\n"))
    assert lines[-1] == "z OK NOOP completed"
    assert any(reply.startswith(expected) for reply in lines), lines
    # Refused before asking for a literal: "+ Ready" would take the next
    # command for the literal's bytes.
    assert not any(reply.startswith("+") for reply in lines), lines
    session = smtpsink.sessions[-1]
    assert len([e for e in session.transcript if e.kind == "command"]) == 3


def test_parts_fetched_one_command_at_a_time_are_each_messages_own(
    smtpsink: Mailbox,
) -> None:
    # A session keeps the MIME tree of the message it fetched last (a
    # reader fetching part after part had it parsed again each time):
    # another message, or the same bytes with bare LFs, gets its own.
    def mail(word: str, end: bytes = b"\r\n") -> bytes:
        return (
            b'Content-Type: multipart/mixed; boundary="b"'
            + end
            + end
            + b"--b"
            + end
            + end
            + word.encode()
            + b" one"
            + end
            + b"--b"
            + end
            + end
            + word.encode()
            + b" two"
            + end
            + b"--b--"
            + end
        )

    smtpsink.deliver(mail("first"), to=USER)
    smtpsink.deliver(mail("second", b"\n"), to=USER)
    lines = dialogue(
        smtpsink,
        "s SELECT INBOX",
        "a FETCH 1 (BODY.PEEK[1])",
        "b FETCH 1 (BODY.PEEK[2])",
        "c FETCH 2 (BODY.PEEK[2])",
        "d FETCH 2 (BODY.PEEK[1])",
        "e FETCH 1 (BODY.PEEK[2])",
        # Bare LFs after CRLF ones: it was served the first's bytes (review).
        "f FETCH 2 (BODY.PEEK[1])",
    )
    bodies = [line[:-1] for line in lines if line.endswith((" one)", " two)"))]
    assert bodies == [
        "first one",
        "first two",
        "second two",
        "second one",
        "first two",
        "second one",
    ]


def test_a_search_number_in_other_digits_is_bad_and_serving_goes_on(
    smtpsink: Mailbox,
) -> None:
    smtpsink.deliver(raw_message("One"), to=USER)
    # "\u00b2" (superscript two) is a digit to str.isdigit(), not to int().
    lines = dialogue(
        smtpsink,
        "s SELECT INBOX",
        "a SEARCH LARGER \u00b2",
        "b SEARCH SMALLER \u0661",
        "c SEARCH LARGER 1",
    )
    assert "a BAD LARGER takes a number" in lines, lines
    assert "b BAD SMALLER takes a number" in lines, lines
    assert lines[-2:] == ["* SEARCH 1", "c OK SEARCH completed"], lines


def test_a_search_date_that_is_no_day_is_bad_and_serving_goes_on(
    smtpsink: Mailbox,
) -> None:
    smtpsink.deliver(
        raw_message("One"),
        to=USER,
        date=datetime.datetime(2000, 2, 28, 12, tzinfo=datetime.timezone.utc),
    )
    lines = dialogue(
        smtpsink,
        "s SELECT INBOX",
        "a SEARCH BEFORE 31-Feb-2000",
        "b UID SEARCH SINCE 29-Feb-2001",
        "c SEARCH SENTON 0-Jan-2000",
        "d SEARCH NOT SINCE 1-Jan-0000",
        "e SEARCH SINCE 29-Feb-2000",
        "f SEARCH ON 28-Feb-2000",
    )
    bad = [line for line in lines if " BAD " in line]
    assert bad == [
        "a BAD Invalid date '31-Feb-2000': Feb 2000 has 29 days",
        "b BAD Invalid date '29-Feb-2001': Feb 2001 has 28 days",
        "c BAD Invalid date '0-Jan-2000': day 0 is out of range (1-31)",
        "d BAD Invalid date '1-Jan-0000': year 0000 is out of range (0001-9999)",
    ], lines
    assert lines[-4:] == [
        "* SEARCH",
        "e OK SEARCH completed",
        "* SEARCH 1",
        "f OK SEARCH completed",
    ], lines


def test_words_that_upper_case_to_items_and_keys_are_no_items_or_keys(
    smtpsink: Mailbox,
) -> None:
    # str.upper() makes "\ufb02ags" (a ligature) FLAGS and "\u017feen" (a
    # long s) SEEN; the grammar's words are ASCII, so these are refused,
    # as Dovecot refuses 8-bit atoms, and change nothing.
    smtpsink.deliver(raw_message("One"), to=USER)
    lines = dialogue(
        smtpsink,
        "s SELECT INBOX",
        "a FETCH 1 (\ufb02ags)",
        "b SEARCH \u017feen",
        "c STORE 1 +FLAGS (\\\u017feen)",
        "d STATUS INBOX (me\u017f\u017fages)",
        "e FETCH 1 BODY.PEEK[HEADER.FIELD\u017f (Subject)]",
        "f STORE 1 +\ufb02ags (\\Flagged)",
        "g FETCH 1 FLAGS",
    )
    answers = {line.split(" ")[0]: line for line in lines if line[:2] in "a b c d e f "}
    assert all(answers[tag].startswith(f"{tag} BAD ") for tag in "abcdef"), lines
    assert lines[-2:] == ["* 1 FETCH (FLAGS (\\Recent))", "g OK FETCH completed"]
    assert smtpsink.mailbox(USER).stored()[0].flags == frozenset()


def test_selected_commands_without_arguments_refuse_them(smtpsink: Mailbox) -> None:
    smtpsink.deliver(raw_message("Doomed"), to=USER, flags={"\\Deleted"})
    lines = dialogue(
        smtpsink,
        "s SELECT INBOX",
        "a EXPUNGE 1",
        "b CLOSE now",
        "c UNSELECT INBOX",
        "d CHECK all",
        "f FETCH 1 (FLAGS)",  # still selected: none of them ran
        "g EXPUNGE",
    )
    tagged = [line for line in lines if line[:2] in ("a ", "b ", "c ", "d ")]
    assert tagged == [
        "a BAD EXPUNGE takes no arguments",
        "b BAD CLOSE takes no arguments",
        "c BAD UNSELECT takes no arguments",
        "d BAD CHECK takes no arguments",
    ]
    assert "* 1 FETCH (FLAGS (\\Deleted \\Recent))" in lines
    assert lines[-3:] == ["* 1 EXPUNGE", "* 0 RECENT", "g OK EXPUNGE completed"]
    smtpsink.mailbox(USER).assert_deleted(subject="Doomed")
    session = smtpsink.sessions[-1]
    commands = [e.line for e in session.transcript if e.kind == "command"]
    assert commands[2:6] == ["EXPUNGE 1", "CLOSE now", "UNSELECT INBOX", "CHECK all"]


def test_starttls_with_an_argument_is_refused_before_tls(
    smtpsink_factory: Callable[..., SMTPSink],
) -> None:
    sink = smtpsink_factory(tls="starttls")
    endpoint = Endpoint(
        "imap", sink.imap.host, sink.imap.port, ssl_context=sink.imap.ssl_context()
    )
    script = ["a STARTTLS now", "b STARTTLS", f"c LOGIN {USER} pw", "d LOGOUT"]
    lines = run(script, endpoint)
    # Refused in plain text; then STARTTLS itself works.
    assert lines[1:3] == ["C: a STARTTLS now", "S: a BAD STARTTLS takes no arguments"]
    assert "S: b OK Begin TLS negotiation now" in lines
    assert lines[-1] == "S: d OK LOGOUT completed"
    sink.wait_until(lambda: sink.sessions[-1].end is not None)
    session = sink.sessions[-1]
    assert session.tls is not None
    assert session.commands == ["STARTTLS", "STARTTLS", "LOGIN", "LOGOUT"]


def test_folder_commands_and_id_take_exactly_their_arguments(
    smtpsink: Mailbox,
) -> None:
    lines = dialogue(
        smtpsink,
        "a CREATE Box extra",
        "b SUBSCRIBE INBOX extra",
        "c ID NIL",
        'd ID ("name" "a client" "version" "1")',
        "e CREATE Box",
    )
    assert [line for line in lines if line[:2] in ("a ", "b ", "c ", "d ", "e ")] == [
        "a BAD CREATE takes one folder name",
        "b BAD SUBSCRIBE takes one folder name",
        "c OK ID completed",
        "d OK ID completed",
        "e OK CREATE completed",  # a CREATE refused created nothing
    ]


def test_an_error_quoting_undecodable_bytes_is_sent_escaped(smtpsink: Mailbox) -> None:
    # Found by tests/test_read_fuzz.py: the BAD reply quoted the search key,
    # whose invalid UTF-8 became lone surrogates, and encoding the reply
    # raised on the loop: the client got nothing.
    address = (smtpsink.imap.host, smtpsink.imap.port)
    with socket.create_connection(address, 30) as s, s.makefile("rwb") as stream:
        stream.write(f"L LOGIN {USER} pw\r\nS SELECT INBOX\r\n".encode())
        stream.write(b"F SEARCH \xff\xfe\r\nz NOOP\r\n")
        stream.flush()
        lines: list[bytes] = []
        while not lines or not lines[-1].startswith(b"z "):
            read = stream.readline()
            assert read, lines
            lines.append(read.rstrip(b"\r\n"))
    (bad,) = [line for line in lines if line.startswith(b"F ")]
    assert bad.startswith(b"F BAD ")
    assert b"\\xff\\xfe" in bad  # escaped, each byte as it was sent
    assert lines[-1] == b"z OK NOOP completed"


def test_a_command_of_many_literals_over_a_megabyte_is_refused(
    smtpsink: Mailbox,
) -> None:
    # Each literal under the 64 KiB limit, but no end to their number: a
    # megabyte and more of SEARCH kept the sink's loop busy for minutes
    # (found by a fuzz run). Refused as the literal that passes 1 MiB is
    # announced, before it is read; the connection goes on.
    address = (smtpsink.imap.host, smtpsink.imap.port)
    chunk = b"x" * 65536
    with socket.create_connection(address, 30) as s, s.makefile("rwb") as stream:
        stream.write(f"L LOGIN {USER} pw\r\nS SELECT INBOX\r\n".encode())
        stream.write(b"F SEARCH TEXT {65536}\r\n")
        stream.flush()
        lines: list[bytes] = []
        literals = 0
        while True:
            read = stream.readline()
            assert read, lines
            lines.append(read.rstrip(b"\r\n"))
            if read.startswith(b"F "):
                break
            if read.startswith(b"+ "):
                literals += 1
                stream.write(chunk + b" TEXT {65536}\r\n")
                stream.flush()
        stream.write(b"z NOOP\r\n")
        stream.flush()
        assert stream.readline() == b"z OK NOOP completed\r\n"
    assert lines[-1].startswith(b"F BAD Command too long ("), lines[-1]
    assert lines[-1].endswith(b" bytes with its literals, at most 1048576)")
    assert literals == 15  # 16 literals of 64 KiB would pass 1 MiB
    # Recorded as it came, the literals by their size.
    (session,) = smtpsink.sessions
    (refused,) = [e for e in session.transcript if e.tag == "F"]
    assert refused.line == "SEARCH" + " TEXT {65536} [65536 octets]" * 15 + (
        " TEXT {65536}"
    )
    assert refused.replies == [lines[-1].decode()]


def test_a_fetch_asking_for_a_message_many_times_over_is_refused(
    smtpsink: Mailbox,
) -> None:
    # A section asked for again is answered again, as on Dovecot; 400 copies
    # of a 1 MB message made one 1.3 GB response (found by a fuzz run).
    raw = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 1000
    smtpsink.deliver(raw_message("small"), to=USER)
    smtpsink.deliver(raw, to=USER)
    with login(smtpsink) as client:
        client.select("INBOX")
        # Different partials too: each value is made, and counted, in turn.
        partials = " ".join(f"BODY.PEEK[]<{n}.999999>" for n in range(10))
        typ, data = client.fetch("2", f"({partials})")
        assert typ == "NO"
        last = data[-1]
        assert isinstance(last, bytes)
        assert last.startswith(b"[LIMIT] FETCH: the response for message 2")
        typ, data = client.fetch("1:2", "(" + " ".join(["BODY[]"] * 10) + ")")
        assert typ == "NO"
        assert data == [
            b"[LIMIT] FETCH: the response for message 2 would be over 5048640 "
            b"bytes, 4 times the message and a megabyte; ask for each section once"
        ]
        client.logout()
    with login(smtpsink) as client:
        client.select("INBOX")
        # Not fetched, so not seen; the message before it was.
        assert client.fetch("1:2", "(FLAGS)") == (
            "OK",
            [b"1 (FLAGS (\\Seen))", b"2 (FLAGS ())"],
        )
        # What a reader asks for: the whole message and its parts.
        typ, data = client.fetch("2", "(BODY[] BODY[HEADER] BODY[TEXT] BODY[1])")
        assert typ == "OK"
        client.logout()


def test_a_message_over_the_limit_is_refused_and_the_session_goes_on(
    smtpsink_factory: Callable[..., SMTPSink],
) -> None:
    # It was "BAD Literal too large", a syntax error (imaplib raised), and
    # a {n+} literal closed the session; Dovecot answers NO [LIMIT] (RFC
    # 5530) and serves on, as an application that saves to Sent expects.
    sink = smtpsink_factory(max_size=1000)
    endpoint = Endpoint("imap", sink.imap.host, sink.imap.port)
    refusal = (
        "NO [LIMIT] Message too large (5000 bytes, at most 1000: the sink's max_size)"
    )
    # Synchronizing: refused before the client sends a byte of it.
    lines = run([f"a LOGIN {USER} x", "b APPEND INBOX {5000}", "c NOOP"], endpoint)
    assert f"S: b {refusal}" in lines
    assert "S: c OK NOOP completed" in lines
    sink.wait_until(lambda: sink.sessions[0].end is not None)
    assert [e.line for e in sink.sessions[0].transcript if e.command == "APPEND"] == [
        "APPEND INBOX {5000} [5000 octets, not sent]"
    ]
    # Non-synchronizing: its bytes are coming; read, dropped, then refused.
    message = "x" * 4998 + "\r\n"
    lines = run(
        [f"a LOGIN {USER} x", "b APPEND INBOX {5000+}\r\n" + message, "c NOOP"],
        endpoint,
    )
    assert f"S: b {refusal}" in lines
    assert "S: c OK NOOP completed" in lines
    assert sink.mailbox(USER).stored() == ()
    # Another {n+} literal after it: dropped too, its bytes never run as a
    # command (a LOGOUT here).
    lines = run(
        [
            f"a LOGIN {USER} x",
            "b APPEND INBOX {5000+}\r\n" + message + " {10+}\r\nf LOGOUT\r\n",
            "c NOOP",
        ],
        endpoint,
    )
    assert f"S: b {refusal}" in lines
    assert "S: c OK NOOP completed" in lines
    assert not any("LOGOUT" in line for line in lines if line.startswith("S: "))
    client = imaplib.IMAP4(sink.imap.host, sink.imap.port, timeout=30)
    client.login(USER, "x")
    typ, data = client.append("INBOX", None, None, message.encode())
    assert (typ, data[0]) == ("NO", refusal[3:].encode())
    client.logout()
    # Cut off by the client in the middle: said so, as for any literal.
    with socket.create_connection((sink.imap.host, sink.imap.port), 30) as sock:
        sock.makefile("rb").readline()
        sock.sendall(f"a LOGIN {USER} x\r\nb APPEND INBOX {{5000+}}\r\nxyz".encode())
        sock.shutdown(socket.SHUT_WR)
        sock.makefile("rb").read()
    sink.wait_until(lambda: all(s.end for s in sink.sessions))
    assert sink.sessions[-1].transcript[-1].line == (
        "APPEND INBOX {5000+} [3 of 5000 octets; not run: cut off by the client's close]"
    )
    sink.wait_until(lambda: all(s.end for s in sink.sessions))
    assert [s.end for s in sink.sessions] == ["client-closed"] * 3 + ["quit"] + [
        "client-closed"
    ]
    # A line too long, ending in such a literal: the same.
    too_long = "b SEARCH " + "A" * 70_000 + " {5+}"
    lines = run([f"a LOGIN {USER} x", too_long, "c NOOP"], endpoint)
    assert lines[-2:] == ["S: * BYE Too long a command", "S: <connection closed>"]
    sink.wait_until(lambda: all(s.end for s in sink.sessions))
    assert sink.sessions[-1].end == "server-closed"


def test_a_too_long_line_after_a_literal_ending_in_a_literal_plus_ends_it(
    smtpsink: Mailbox,
) -> None:
    # The line after a literal is read as the first line is: too long and
    # ending in {n+}, its literal is on its way and must not run as a
    # command ("c NOOP" is those bytes here).
    endpoint = Endpoint("imap", smtpsink.imap.host, smtpsink.imap.port)
    too_long = "b APPEND INBOX {3+}\r\nabc " + "A" * 70_000 + " {8+}"
    lines = run([f"a LOGIN {USER} x", too_long, "c NOOP"], endpoint)
    assert "S: b BAD Line too long (70008 bytes, at most 65536)" in lines
    assert "S: * BYE Cannot read the rest of that command" in lines
    assert "S: c OK NOOP completed" not in lines
    assert lines[-1] == "S: <connection closed>"
    smtpsink.wait_until(lambda: all(s.end for s in smtpsink.sessions))
    session = smtpsink.sessions[-1]
    assert session.end == "server-closed"
    assert [e.tag for e in session.transcript][-1] == "b"
    assert smtpsink.mailbox(USER).stored() == ()


def test_a_command_cut_off_after_its_literal_is_recorded(smtpsink: Mailbox) -> None:
    with socket.create_connection(imap_address(smtpsink), timeout=10) as sock:
        stream = sock.makefile("rb")
        stream.readline()  # the greeting
        sock.sendall(f"a LOGIN {USER} x\r\n".encode())
        stream.readline()
        # The literal, then the end of input where the command goes on.
        sock.sendall(b"b APPEND INBOX {5+}\r\nhello")
        sock.shutdown(socket.SHUT_WR)
        assert stream.read() == b""
        stream.close()
    smtpsink.wait_until(lambda: all(s.end for s in smtpsink.sessions))
    session = smtpsink.sessions[-1]
    lines = [(e.tag, e.line) for e in session.transcript if e.kind == "command"]
    assert lines[-1] == (
        "b",
        "APPEND INBOX {5+} [5 octets] [not run: no line end, cut off by the "
        "client's close]",
    ), lines
    assert session.end == "client-closed"
    assert smtpsink.mailbox(USER).stored() == ()


@pytest.mark.parametrize("literal", ["{100}", "{100+}"])
def test_a_command_cut_off_inside_its_literal_says_how_much_came(
    smtpsink: Mailbox, literal: str
) -> None:
    # It read "APPEND INBOX {100} [100 octets]" with no reply: as if the
    # whole message had come and the command hung on the server.
    with socket.create_connection(imap_address(smtpsink), timeout=10) as sock:
        stream = sock.makefile("rb")
        stream.readline()  # the greeting
        sock.sendall(f"a LOGIN {USER} x\r\n".encode())
        stream.readline()
        sock.sendall(f"b APPEND INBOX {literal}\r\n".encode())
        if literal == "{100}":
            assert stream.readline().startswith(b"+ ")
        sock.sendall(b"Subject: x\r\n")  # 12 of 100 octets
        sock.shutdown(socket.SHUT_WR)
        assert stream.read() == b""
        stream.close()
    smtpsink.wait_until(lambda: all(s.end for s in smtpsink.sessions))
    session = smtpsink.sessions[-1]
    lines = [(e.tag, e.line) for e in session.transcript if e.kind == "command"]
    assert lines[-1] == (
        "b",
        f"APPEND INBOX {literal} [12 of 100 octets; not run: cut off by the "
        "client's close]",
    ), lines
    assert session.end == "client-closed"
    assert smtpsink.mailbox(USER).stored() == ()


def test_commands_sent_with_the_end_of_input_all_run(smtpsink: Mailbox) -> None:
    """A client that sends its commands and shuts its side at once: the
    connection was closed on the end of input, which cancelled the serving
    task if it was busy (here, in a delayed LOGIN; seen under load too: the
    APPEND of the test above missing from its transcript). All of them run
    now, and then the server closes."""
    smtpsink.delay("IMAP:LOGIN", 0.2)
    with socket.create_connection(imap_address(smtpsink), timeout=10) as sock:
        sock.sendall(
            f"a LOGIN {USER} x\r\nb APPEND INBOX {{9+}}\r\n\r\nhello\r\n\r\n"
            "c LOGOUT\r\n".encode()
        )
        sock.shutdown(socket.SHUT_WR)
        with sock.makefile("rb") as stream:
            replies = stream.read().decode()
    assert "b OK [APPENDUID " in replies, replies
    assert "c OK " in replies, replies
    smtpsink.wait_until(lambda: all(s.end for s in smtpsink.sessions))
    (session,) = smtpsink.sessions
    assert [e.tag for e in session.transcript if e.kind == "command"] == ["a", "b", "c"]
    assert len(smtpsink.mailbox(USER).stored()) == 1


def test_append_takes_any_size_when_max_size_is_zero(
    smtpsink_factory: Callable[..., SMTPSink],
) -> None:
    # max_size=0 means no limit (as for SMTP), not "at most 0 octets".
    sink = smtpsink_factory(max_size=0)
    with imaplib.IMAP4(sink.imap.host, sink.imap.port, timeout=10) as client:
        client.login(USER, "x")
        status, data = client.append("INBOX", None, None, raw_message("Unlimited"))
        assert status == "OK", f"expected APPEND to be OK, got {status} {data}"
    assert [m.subject for m in sink.mailbox(USER).messages()] == ["Unlimited"]


def test_append_faults_act_before_the_literal_is_read(smtpsink: Mailbox) -> None:
    endpoint = Endpoint("imap", smtpsink.imap.host, smtpsink.imap.port)
    message = raw_message("Appended")
    size = len(message)
    smtpsink.disconnect("IMAP:APPEND")
    lines = run([f"a LOGIN {USER} x", f"b APPEND INBOX {{{size}}}"], endpoint)
    # No "+ Ready": the server hung up before asking for a byte of it.
    assert lines[-2:] == [f"C: b APPEND INBOX {{{size}}}", "S: <connection closed>"]
    session = smtpsink.sessions[-1]
    assert session.end == "server-closed"
    (append,) = [e for e in session.transcript if e.tag == "b"]
    assert append.injected
    assert append.line == f"APPEND INBOX {{{size}}} [{size} octets]"
    smtpsink.clear_faults()

    smtpsink.fail("IMAP:APPEND", 451, "Mailbox full", times=2)
    literal = message.decode()
    lines = run(
        [
            f"a LOGIN {USER} x",
            f"b APPEND INBOX {{{size}}}",  # refused instead of "+ Ready"
            f"c APPEND INBOX {{{size}+}}\r\n{literal}",  # read, then refused
            f"d APPEND INBOX {{{size}}}",  # the rule is spent: "+ Ready"
            literal,
            "e NOOP",
        ],
        endpoint,
    )
    assert "S: b NO [UNAVAILABLE] Mailbox full" in lines
    assert "S: c NO [UNAVAILABLE] Mailbox full" in lines
    assert "S: + Ready for literal data" in lines
    assert any(line.startswith("S: d OK [APPENDUID ") for line in lines), lines
    assert lines[-1] == "S: e OK NOOP completed"
    assert [m.subject for m in smtpsink.mailbox(USER).messages()] == ["Appended"]
    tags = [(e.tag, e.injected) for e in smtpsink.sessions[-1].transcript]
    assert tags[-4:] == [("b", True), ("c", True), ("d", False), ("e", False)]


def test_reply_is_the_text_without_tags(smtpsink: Mailbox) -> None:
    smtpsink.deliver(raw_message("Hi"), to=USER)
    client = login(smtpsink)
    client.select("INBOX")
    client.fetch("1", "(FLAGS)")
    client.logout()
    smtpsink.wait_until(lambda: smtpsink.sessions[-1].end is not None)
    transcript = smtpsink.sessions[-1].transcript
    replies = {exchange.line: exchange.reply for exchange in transcript}
    assert replies[""].startswith("OK [CAPABILITY IMAP4rev1 ")
    assert (
        replies["FETCH 1 (FLAGS)"] == "1 FETCH (FLAGS (\\Recent))\nOK FETCH completed"
    )
    assert replies["LOGOUT"] == "BYE Logging out\nOK LOGOUT completed"
    assert {exchange.code for exchange in transcript} == {None}
    # A numeric tag (Thunderbird's) is not a reply code.
    dialogue(smtpsink, "100 NOOP")
    smtpsink.wait_until(lambda: smtpsink.sessions[-1].end is not None)
    (noop,) = [e for e in smtpsink.sessions[-1].transcript if e.tag == "100"]
    assert (noop.code, noop.reply) == (None, "OK NOOP completed")
    # Completions that follow a client line of their own, with no tag.
    token = base64.b64encode(f"\0{USER}\0secret".encode()).decode()
    dialogue(smtpsink, "i SELECT INBOX", "j IDLE", "DONE")
    run(["a AUTHENTICATE PLAIN", token], Endpoint("imap", *imap_address(smtpsink)))
    smtpsink.wait_until(lambda: all(s.end for s in smtpsink.sessions))
    idle, authenticate = smtpsink.sessions[-2:]
    assert idle.transcript[-1].line == "DONE"
    assert idle.transcript[-1].reply == "OK IDLE terminated"
    assert authenticate.transcript[-1].kind == "auth-response"
    assert authenticate.transcript[-1].reply.startswith("OK [CAPABILITY ")


@pytest.mark.parametrize("fault", [False, True])
def test_the_session_ends_after_its_last_reply_is_recorded(
    smtpsink: Mailbox, smtpsink_server: SMTPSink, fault: bool
) -> None:
    # A test that waits for a session's end must find the last replies in
    # the transcript: look at the moment the end is set (on the sink's
    # thread, as the store announces it).
    if fault:
        smtpsink.fail("IMAP:LOGOUT", 421, "going away")
    with replies_at_the_end(smtpsink, smtpsink_server) as at_end:
        client = login(smtpsink)
        try:
            client.logout()
        except imaplib.IMAP4.abort:  # the fault's BYE, then the server closed
            client.shutdown()  # which logout() skips when it raises
        smtpsink.wait_until(lambda: smtpsink.sessions[-1].end is not None)
    tag = smtpsink.sessions[-1].transcript[-1].tag
    expected = (
        ["* BYE [UNAVAILABLE] going away"]
        if fault
        else ["* BYE Logging out", f"{tag} OK LOGOUT completed"]
    )
    assert at_end == [expected]


def test_secrets_stay_out_of_the_report_and_saved_transcripts(
    pytester: pytest.Pytester,
) -> None:
    secret = "imap-s3cret-pass"
    half = len(secret) // 2
    pytester.makepyfile(
        f"""
import base64, imaplib

# Split, so that the traceback's source lines do not show it whole.
SECRET = "{secret[:half]}" + "{secret[half:]}"

def test_reads(smtpsink):
    imap = smtpsink.imap
    with imaplib.IMAP4(imap.host, imap.port) as client:
        client.login("ann@example.com", SECRET)
        client.logout()
    with imaplib.IMAP4(imap.host, imap.port) as client:
        client.authenticate(
            "PLAIN", lambda _: b"\\0ann@example.com\\0" + SECRET.encode()
        )
        client.logout()
    smtpsink.wait_until(lambda: all(s.end for s in smtpsink.sessions))
    assert False, "show the report"
"""
    )
    saved = pytester.path / "saved"
    result = pytester.runpytest(f"--smtpsink-save-dir={saved}")
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert "IMAP 127.0.0.1" in output  # the report lists the sessions
    files = [p for p in saved.rglob("*") if p.is_file()]
    assert any("LOGIN ann@example.com ****" in p.read_text() for p in files)
    encoded = base64.b64encode(f"\0ann@example.com\0{secret}".encode()).decode()
    for text in [output, result.stderr.str(), *(p.read_text() for p in files)]:
        assert secret not in text
        assert encoded not in text


def test_copy_to_a_name_no_folder_can_have_is_cannot_not_trycreate(
    smtpsink: Mailbox,
) -> None:
    # TRYCREATE invites the client to CREATE the folder and try again; a
    # name that CREATE must refuse would loop such a client.
    smtpsink.deliver(raw_message("One"), to=USER)
    replies = dialogue(
        smtpsink, "a SELECT INBOX", 'b COPY 1 ""', "c MOVE 1 a//b", "d COPY 1 Nowhere"
    )
    answers = [r for r in replies if r[:2] in ("b ", "c ", "d ")]
    assert [a[:13] for a in answers[:2]] == ["b NO [CANNOT]", "c NO [CANNOT]"]
    assert answers[2] == "d NO [TRYCREATE] No such folder: Nowhere"


@pytest.mark.parametrize(
    ("pattern", "listed"),
    [
        ("i*", ["INBOX", "INBOX/Kid"]),  # a wildcard covering part of INBOX
        ("iN%", ["INBOX"]),
        ("inbox/%", ["INBOX/Kid"]),
        ("inbox%", ["INBOX"]),  # not INBOXfoo: only INBOX is in any case
        ("INBOXf*", ["INBOXfoo"]),
        ("\u0131nbox", []),  # a dotless i upper-cases to I, but is no i
        ("*o*", ["INBOX", "INBOX/Kid", "INBOXfoo"]),
        ("%/%", ["INBOX/Kid"]),
    ],
)
def test_list_patterns_take_inbox_in_any_case(
    smtpsink: Mailbox, pattern: str, listed: list[str]
) -> None:
    # "i*" listed nothing: INBOX was only in any case when spelt out whole.
    smtpsink.deliver(raw_message("x"), to=USER, folder="INBOX/Kid")
    smtpsink.deliver(raw_message("x"), to=USER, folder="INBOXfoo")
    replies = dialogue(smtpsink, f'a LIST "" "{pattern}"')
    names = [r.rsplit(" ", 1)[1] for r in replies if r.startswith("* LIST")]
    assert names == listed


@contextlib.contextmanager
def raw_selected(endpoint: IMAPEndpoint) -> Iterator[Callable[[str], list[str]]]:
    """A raw IMAP session of USER with INBOX selected: a function that sends
    one tagged command and gives every line up to its completion, in the
    order they came."""
    address = (endpoint.host, endpoint.port)
    with socket.create_connection(address, 30) as s, s.makefile("rwb") as stream:

        def command(line: str) -> list[str]:
            tag = line.split(" ", 1)[0]
            stream.write(line.encode() + b"\r\n")
            stream.flush()
            lines: list[str] = []
            while not lines or not lines[-1].startswith(f"{tag} "):
                read = stream.readline()
                assert read, f"the connection closed after {lines}"
                lines.append(read.decode().rstrip("\r\n"))
            return lines

        stream.readline()
        command(f"a LOGIN {USER} pw")
        command("b SELECT INBOX")
        yield command


@pytest.mark.parametrize("command", ["d EXPUNGE", "d UID EXPUNGE 1:*", "d CLOSE"])
def test_expunge_removes_only_the_mail_the_session_was_told_of(
    smtpsink: Mailbox, command: str
) -> None:
    # As on Dovecot: a \Deleted message another client put in (or flagged)
    # after this session last heard of the folder was removed by a client
    # that never saw it.
    smtpsink.deliver(raw_message("Seen"), to=USER)
    with raw_selected(smtpsink.imap) as send:
        smtpsink.deliver(raw_message("Unseen"), to=USER, flags=["\\Deleted"])
        replies = send(command)
        assert replies[-1].startswith("d OK ")
        assert not any(line.endswith(" EXPUNGE") for line in replies)
    subjects = [m.subject for m in smtpsink.mailbox(USER).messages()]
    assert subjects == ["Seen", "Unseen"]


def test_uid_expunge_star_is_the_newest_uid_the_session_knows(
    smtpsink: Mailbox,
) -> None:
    # "*" was the folder's newest UID, of mail not yet announced: "N:*",
    # N past every UID, then expunged nothing, where Dovecot (and the
    # sink's own UID FETCH) took the last message the session knew.
    smtpsink.deliver(raw_message("Known"), to=USER, flags=["\\Deleted"])
    with raw_selected(smtpsink.imap) as send:
        smtpsink.deliver(raw_message("New"), to=USER)
        replies = send("d UID EXPUNGE 999999:*")
        assert replies[0] == "* 1 EXPUNGE"
        assert replies[-1].startswith("d OK ")
    subjects = [m.subject for m in smtpsink.mailbox(USER).messages()]
    assert subjects == ["New"]


def test_several_fetch_items_without_parentheses_are_bad(smtpsink: Mailbox) -> None:
    # RFC 3501's grammar, and Dovecot's BAD: imaplib's fetch("1", "UID
    # FLAGS"), a classic mistake, passed against the sink and failed on a
    # real server.
    smtpsink.deliver(raw_message("x"), to=USER)
    with raw_selected(smtpsink.imap) as send:
        assert send("c FETCH 1 FLAGS UID") == [
            "c BAD Several FETCH data items go in parentheses, as in "
            "FETCH 1 (FLAGS UID)"
        ]
        # The client's own items, parenthesized: the fix is to copy it.
        assert send("d UID FETCH 1:* RFC822.SIZE flags")[-1] == (
            "d BAD Several FETCH data items go in parentheses, as in "
            "UID FETCH 1:* (RFC822.SIZE flags)"
        )
        # A macro cannot go in a list.
        assert send("h FETCH 1 all FLAGS") == [
            "h BAD ALL stands for several FETCH data items and goes alone "
            "(FETCH 1 ALL); several items go in parentheses, as in "
            "FETCH 1 (FLAGS UID)"
        ]
        assert send('i FETCH 1 FLAGS "UID"')[-1] == (
            "i BAD Several FETCH data items go in parentheses, as in "
            "FETCH 1 (FLAGS UID)"
        )
        # Parenthesized already: the rest is a modifier list, not supported.
        assert send("g FETCH 1 FLAGS (CHANGEDSINCE 5)")[-1].startswith(
            "g BAD FETCH takes a sequence set and its data items; modifiers"
        )
        assert send("f FETCH 1 (FLAGS) (CHANGEDSINCE 5)") == [
            "f BAD FETCH takes a sequence set and its data items; modifiers after "
            "them (CONDSTORE's CHANGEDSINCE) are not supported"
        ]
        # An unknown item before a list is named: no modifier was sent.
        assert send("d FETCH 1 RFC822.HEADER.LINES (FROM)") == [
            "d BAD Unknown FETCH data item: RFC822.HEADER.LINES"
        ]
        assert send("e FETCH 1 (FLAGS UID)")[-1] == "e OK FETCH completed"
    client = login(smtpsink)
    client.select("INBOX")
    with pytest.raises(imaplib.IMAP4.error, match="go in parentheses"):
        client.fetch("1", "UID FLAGS")
    assert client.fetch("1", "(UID FLAGS)")[0] == "OK"
    client.logout()


@pytest.mark.parametrize(
    "select",
    ['SELECT "Trash/"', 'EXAMINE "Entw\u00fcrfe"', "SELECT &AGE-", "SELECT Nope"],
)
def test_a_failed_select_leaves_no_folder_selected(
    smtpsink: Mailbox, select: str
) -> None:
    # RFC 3501 6.3.1, as on Dovecot: a name refused by its checks kept the
    # old folder selected, read-write, and the EXPUNGE after it (a client
    # that ignores the NO, or pipelines) emptied INBOX.
    smtpsink.deliver(raw_message("Keep me"), to=USER)
    with raw_selected(smtpsink.imap) as send:
        assert send("c STORE 1 +FLAGS (\\Deleted)")[-1] == "c OK STORE completed"
        assert send(f"d {select}")[-1].startswith("d NO ")
        assert send("e EXPUNGE") == ["e BAD EXPUNGE: select a folder first"]
    assert smtpsink.mailbox(USER).messages().one().subject == "Keep me"


@pytest.mark.parametrize(
    "command",
    ["FETCH 1:* FLAGS", "UID FETCH 1:* FLAGS", "STORE 1:* +FLAGS (\\Flagged)"],
)
def test_new_mail_is_announced_after_a_fetch_or_store_of_star(
    smtpsink: Mailbox, command: str
) -> None:
    """Mail that arrives while a folder is selected is announced after the
    FETCH or STORE responses, as Dovecot announces it: ``1:*`` covers the
    messages the client knew when it asked, and no ``* 3 EXISTS`` comes
    before responses that leave message 3 out."""
    for subject in ("a", "b"):
        smtpsink.deliver(raw_message(subject), to=USER)
    with raw_selected(smtpsink.imap) as send:
        smtpsink.deliver(raw_message("c"), to=USER)
        lines = send(f"c {command}")
        assert [line.split(" (")[0] for line in lines] == [
            "* 1 FETCH",
            "* 2 FETCH",
            "* 3 EXISTS",
            "* 3 RECENT",
            f"c OK {command.partition(' 1')[0]} completed",
        ], lines
        # The client now knows message 3: the next 1:* includes it.
        lines = send("d FETCH 1:* (UID)")
        assert [line.split(" (")[0] for line in lines] == [
            "* 1 FETCH",
            "* 2 FETCH",
            "* 3 FETCH",
            "d OK FETCH completed",
        ], lines


@pytest.mark.parametrize("command", ["SEARCH ALL", "UID SEARCH ALL"])
def test_new_mail_is_announced_after_a_search(smtpsink: Mailbox, command: str) -> None:
    """As after FETCH and STORE: the result covers the messages the client
    knew when it asked, then ``* 3 EXISTS`` (Dovecot's order)."""
    for subject in ("a", "b"):
        smtpsink.deliver(raw_message(subject), to=USER)
    with raw_selected(smtpsink.imap) as send:
        smtpsink.deliver(raw_message("c"), to=USER)
        lines = send(f"c {command}")
        # Two numbers: sequence numbers 1 and 2, or their UIDs (which an
        # earlier test's mail may have moved on: UIDs are never reused).
        assert [lines[0].split()[:2], len(lines[0].split()), *lines[1:]] == [
            ["*", "SEARCH"],
            4,
            "* 3 EXISTS",
            "* 3 RECENT",
            f"c OK {command.partition(' ALL')[0]} completed",
        ], lines
        assert send("d SEARCH ALL")[0] == "* SEARCH 1 2 3"


# -- the sink's own bugs --------------------------------------------------------


def _sink_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pytest_smtpsink"]


def test_an_internal_error_is_no_serverbug_recorded_logged_and_serving_goes_on(
    smtpsink: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug in a command's handler (not one known: a helper made to raise,
    the only way to stand for one; the server itself is not mocked) is
    answered ``NO [SERVERBUG]`` (RFC 5530) with the command's tag, recorded
    and logged once with its traceback, and the session goes on."""
    smtpsink.deliver(raw_message("Kept"), to=USER)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("fetch_values broke")

    with login(smtpsink) as client:
        client.select("INBOX")
        monkeypatch.setattr(_imap, "fetch_values", broken)
        typ, data = client.fetch("1", "(BODY.PEEK[])")
        assert (typ, data) == (
            "NO",
            [
                b"[SERVERBUG] Internal error (RuntimeError) in FETCH: a bug in "
                b"pytest-smtpsink, logged with its traceback"
            ],
        )
        assert client.noop()[0] == "OK"
        monkeypatch.undo()
        typ, data = client.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK", data
        assert isinstance(data[0], tuple), data
        assert b"Subject: Kept" in data[0][1]
        client.logout()
    (session,) = [s for s in smtpsink.sessions if s.protocol == "IMAP"]
    failed = next(e for e in session.transcript if e.command == "FETCH")
    assert failed.reply == (
        "NO [SERVERBUG] Internal error (RuntimeError) in FETCH: a bug in "
        "pytest-smtpsink, logged with its traceback"
    ), session.format_transcript()
    assert session.end == "quit"
    (logged,) = _sink_log(caplog)
    assert "IMAP session from 127.0.0.1:" in logged
    assert "FETCH failed with an internal error" in logged
    assert "in broken\n" in logged  # the traceback's last frame
    assert logged.endswith("RuntimeError: fetch_values broke")


def test_an_internal_error_in_a_login_keeps_its_text_out_of_the_log(
    smtpsink: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug (a helper made to raise, see above) whose error quotes the
    password: the reply, the transcript and the log leave its text out."""

    def broken(auth: object, user: str, password: str) -> bool:
        raise ValueError(f"cannot check {password}")

    monkeypatch.setattr(_imap, "check_login", broken)
    endpoint = Endpoint("imap", smtpsink.imap.host, smtpsink.imap.port)
    transcript = run([f"a LOGIN {USER} Sw0rdfish", "b NOOP"], endpoint)
    assert transcript[2:] == [
        "S: a NO [SERVERBUG] Internal error (ValueError) in LOGIN: a bug in "
        "pytest-smtpsink, logged with its traceback",
        "C: b NOOP",
        "S: b OK NOOP completed",
    ]
    (logged,) = _sink_log(caplog)
    assert logged.endswith(
        'in broken\n    raise ValueError(f"cannot check {password}")\nValueError'
    ), logged
    text = "\n".join(s.format_transcript() for s in smtpsink.sessions) + logged
    assert "Sw0rdfish" not in text


def test_internal_errors_in_a_row_end_the_session(
    smtpsink: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug on every line (what reads the tag made to raise, see above):
    each line is answered untagged ``* NO [SERVERBUG]`` and recorded, and
    after five in a row the session ends, instead of the server thread
    answering the bug for ever."""

    def broken(line: bytes) -> tuple[str | None, bytes]:
        raise RuntimeError("split_tag broke")

    monkeypatch.setattr(_imap, "split_tag", broken)
    address = (smtpsink.imap.host, smtpsink.imap.port)
    with socket.create_connection(address, 30) as s, s.makefile("rwb") as stream:
        stream.readline()  # the greeting
        stream.write(b"".join(b"%d NOOP\r\n" % n for n in range(1, 8)))
        stream.flush()
        lines = stream.read().decode().split("\r\n")  # up to the close
    bug = (
        "* NO [SERVERBUG] Internal error (RuntimeError) in reading a command: "
        "a bug in pytest-smtpsink, logged with its traceback"
    )
    assert lines == [*[bug] * 5, "* BYE [SERVERBUG] 5 internal errors in a row", ""]
    (session,) = [s for s in smtpsink.sessions if s.protocol == "IMAP"]
    # Recorded as lines that did not parse before login: the first word.
    assert [e.line for e in session.transcript[1:]] == [
        f"{n} ****" for n in range(1, 6)
    ]
    assert session.end == "server-closed"
    assert len(_sink_log(caplog)) == 5


def test_appended_mail_is_labelled_append_not_deliver(
    smtpsink: Mailbox, tmp_path: pathlib.Path
) -> None:
    """Mail the application stored with APPEND is no mail the test
    delivered: summaries, mailbox failures and saved files say APPEND."""
    with login(smtpsink) as client:
        assert client.append("INBOX", None, None, raw_message("Draft"))[0] == "OK"
        client.logout()
    box = smtpsink.mailbox(USER)
    (message,) = box.messages()
    assert message.summary().startswith("APPEND "), message.summary()
    assert repr(message).startswith("<Message APPEND ")
    assert re.search(r"\n    uid \d+ \[-\] APPEND \d\d:\d\d:\d\d", box.describe())
    section = _report.section_text([smtpsink], "summary") or ""
    assert "0 messages, 1 session, 1 put in without SMTP\n  APPEND " in section
    written = _report.save([smtpsink], tmp_path / "saved")
    assert [p.name for p in written] == ["append-0001-Draft.eml", "session-0001.txt"]


def test_commands_pipelined_behind_starttls_are_discarded_and_logged(
    smtpsink_factory: Callable[..., SMTPSink], caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 3501 6.2.1: what came in plain text behind STARTTLS never runs as
    if it came over TLS. It was dropped without a word; a warning now says
    how many bytes (never which: a LOGIN's password)."""
    sink = smtpsink_factory(tls="starttls")
    caplog.set_level(logging.WARNING, logger="pytest_smtpsink")
    smuggled = f"b LOGIN {USER} secret-word\r\n".encode()
    with socket.create_connection((sink.imap.host, sink.imap.port), timeout=10) as sock:
        with sock.makefile("rb") as plain:
            plain.readline()  # the greeting
            sock.sendall(b"a STARTTLS\r\n" + smuggled)
            assert plain.readline().startswith(b"a OK ")
        context = sink.imap.ssl_context()
        with (
            context.wrap_socket(sock, server_hostname=sink.imap.host) as tls,
            tls.makefile("rb") as secure,
        ):
            tls.sendall(b"c NOOP\r\n")
            # The first line over TLS answers NOOP, not the smuggled LOGIN.
            assert secure.readline().startswith(b"c OK "), "LOGIN ran"
            tls.sendall(b"d LOGOUT\r\n")
            secure.read()
    sink.wait_until(lambda: all(s.end for s in sink.sessions))
    (session,) = sink.sessions
    assert session.authenticated_as is None
    lines = [exchange.line for exchange in session.transcript]
    note = (
        f"[not run: {len(smuggled)} octets sent after STARTTLS before the TLS "
        "handshake, discarded unread]"
    )
    # After STARTTLS and its reply, before what came over TLS.
    assert lines[1:4] == ["STARTTLS", note, "NOOP"], lines
    assert session.transcript[1].replies == ["a OK Begin TLS negotiation now"]
    (record,) = [r for r in caplog.records if "STARTTLS" in r.getMessage()]
    message = record.getMessage()
    assert f"sent {len(smuggled)} byte(s) after STARTTLS" in message, message
    assert "secret-word" not in message


def test_idle_outlasts_the_idle_timeout(
    smtpsink_factory: Callable[..., SMTPSink],
) -> None:
    """A client in IDLE waits for mail, silent by design: it is not cut
    after ``idle_timeout``, which closed it 0.5 s into IDLE here (and after
    5 minutes by default, while RFC 3501 asks for 30 and RFC 2177 has
    clients re-issue IDLE every 29)."""
    sink = smtpsink_factory(idle_timeout=0.5)
    with idling(sink.imap, sink) as stream:
        (session,) = sink.sessions
        # Three idle timeouts: the session would have ended in the first.
        with pytest.raises(AssertionError, match=r"still false after 1\.5 s"):
            sink.wait_until(lambda: session.end is not None, timeout=1.5)
        sink.deliver(b"Subject: late\r\n\r\nhi\r\n", to=USER)
        assert stream.readline() == b"* 1 EXISTS\r\n"
        assert stream.readline() == b"* 1 RECENT\r\n"
        stream.write(b"DONE\r\n")
        stream.flush()
        assert stream.readline() == b"c OK IDLE terminated\r\n"
        # Out of IDLE, the idle timeout applies again.
        assert stream.readline() == b"* BYE Disconnected for inactivity\r\n"
    sink.wait_until(lambda: session.end is not None)
    assert session.end == "timeout"


def test_a_literal_that_keeps_coming_outlasts_the_idle_timeout(
    smtpsink_factory: Callable[..., SMTPSink],
) -> None:
    # The idle timeout is the client's silence: one deadline for the whole
    # literal cut off an APPEND sent steadily, its message lost.
    sink = smtpsink_factory(idle_timeout=2)
    pieces = [b"Subject: slow\r\n\r\n", *(b"x" * 998 + b"\r\n" for _ in range(7))]
    size = sum(map(len, pieces))
    with socket.create_connection((sink.imap.host, sink.imap.port), timeout=30) as sock:
        sock.sendall(f"a LOGIN {USER} pw\r\nb APPEND INBOX {{{size}+}}\r\n".encode())
        paced = threading.Event()
        for piece in pieces:  # 3.5 s in all, 0.5 s between pieces
            paced.wait(0.5)
            sock.sendall(piece)
        sock.sendall(b"\r\nc LOGOUT\r\n")
        with sock.makefile("rb") as replies:
            said = replies.read()
    assert b"b OK [APPENDUID " in said
    sink.mailbox(USER).assert_in(subject="slow")


@pytest.mark.parametrize("inside_a_literal", [False, True])
def test_an_idle_client_is_told_why_it_is_closed(
    smtpsink_factory: Callable[..., SMTPSink], inside_a_literal: bool
) -> None:
    sink = smtpsink_factory(idle_timeout=0.5)
    address = (sink.imap.host, sink.imap.port)
    with loop_held(sink):  # asked at once: no pause of ours lets the timeout in
        sock = socket.create_connection(address, timeout=10)
        sock.sendall(
            f"a LOGIN {USER} pw\r\n".encode()
            # Then the literal never comes.
            + (b"b APPEND INBOX {5}\r\n" if inside_a_literal else b"")
        )
    with sock, sock.makefile("rb") as replies:
        replies.readline()  # the greeting
        assert replies.readline().startswith(b"a OK ")
        if inside_a_literal:
            assert replies.readline() == b"+ Ready for literal data\r\n"
        assert replies.readline() == b"* BYE Disconnected for inactivity\r\n"
        assert replies.readline() == b""
    sink.wait_until(lambda: sink.sessions[-1].end is not None)
    session = sink.sessions[-1]
    assert session.end == "timeout"
    last = session.transcript[-1]
    if inside_a_literal:
        # The BYE answers the APPEND it cut off (it went to the LOGIN).
        assert (last.tag, last.command) == ("b", "APPEND")
        assert last.replies == ["* BYE Disconnected for inactivity"]
    else:
        # No command asked for it: its own exchange, after the LOGIN's.
        assert (last.kind, last.command) == ("notice", None)
        assert last.replies == ["* BYE Disconnected for inactivity"]
        assert session.transcript[-2].command == "LOGIN"


# Not "event_loop": pytest-asyncio 0.23 has a fixture of that name.
@pytest.mark.parametrize("loop_kind", ["asyncio", "auto"])
def test_stopping_the_sink_cuts_a_reader_that_left_replies_unread(
    loop_kind: Literal["asyncio", "auto"],
) -> None:
    # The goodbye went out with a close that waits for the unsent bytes,
    # which a client that does not read never takes: the loop closed under
    # the transport, the client never saw the end (asyncio), and under -W
    # error uvloop's stop hung for ever. Such a client is cut off.
    with SMTPSink(event_loop=loop_kind) as sink:
        sink.deliver(b"Subject: big\r\n\r\n" + b"y" * 70 * 150 + b"\r\n", to=USER)
        client = slow_reader()
        with client, client.makefile("rb") as replies:
            client.connect((sink.pop3.host, sink.pop3.port))
            replies.readline()
            client.sendall(f"USER {USER}\r\nPASS pw\r\n".encode())
            assert replies.readline().startswith(b"+OK")
            assert replies.readline().startswith(b"+OK")
            (session,) = sink.sessions
            (connection,) = sink._runtime.services["pop3"].connections  # type: ignore[union-attr]
            unsent = 0
            for sent in range(1, 2000):  # until replies wait unsent
                client.sendall(b"RETR 1\r\n")
                sink.wait_until(functools.partial(_retrs_answered, session, sent))
                unsent = on_the_loop(sink, connection.transport.get_write_buffer_size)
                if unsent:
                    break
            assert unsent
            stopping = threading.Thread(target=sink.stop)
            stopping.start()
            stopping.join(timeout=60)
            assert not stopping.is_alive(), "sink.stop() hung"
            while client.recv(65536):  # the end comes (socket.timeout if not)
                pass
        assert session.end == "server-closed"
        assert session.transcript[-1].command == "RETR"  # no goodbye: unread


def _retrs_answered(session: Session, count: int) -> bool:
    """Whether ``session`` has answered ``count`` RETR commands."""
    answered = sum(e.command == "RETR" and bool(e.replies) for e in session.transcript)
    return answered == count


def test_stopping_the_sink_says_so_to_waiting_readers() -> None:
    # They were cut off without a word, where an SMTP client is told 421:
    # RFC 3501 7.1.5 has IMAP say BYE, and POP3 says -ERR as for its ends.
    with SMTPSink() as sink:
        imap = socket.create_connection((sink.imap.host, sink.imap.port), timeout=30)
        pop3 = socket.create_connection((sink.pop3.host, sink.pop3.port), timeout=30)
        with imap, pop3, imap.makefile("rb") as imap_in, pop3.makefile("rb") as pop3_in:
            assert imap_in.readline().startswith(b"* OK")
            assert pop3_in.readline().startswith(b"+OK")
            imap.sendall(f"a LOGIN {USER} pw\r\n".encode())
            assert imap_in.readline().startswith(b"a OK")
            sink.stop()
            assert imap_in.readline() == b"* BYE Server shutting down\r\n"
            assert pop3_in.readline() == b"-ERR [SYS/TEMP] Server shutting down\r\n"
            assert imap_in.readline() == pop3_in.readline() == b""
        imap_session, pop3_session = sorted(
            sink.sessions, key=lambda s: s.protocol != "IMAP"
        )
        assert imap_session.transcript[-1].replies == ["* BYE Server shutting down"]
        assert pop3_session.end == imap_session.end == "server-closed"


@pytest.mark.parametrize("response", ["=", "dQB4", "YQBiAGMAZA=="])
def test_a_malformed_plain_response_is_an_authentication_failure(
    smtpsink: Mailbox, response: str
) -> None:
    # Empty, two fields ("u\0x"), four ("a\0b\0c\0d"): a bare NO, where
    # Dovecot gives RFC 5530's code, which a client stops retrying on.
    endpoint = Endpoint("imap", smtpsink.imap.host, smtpsink.imap.port)
    transcript = run([f"a AUTHENTICATE PLAIN {response}", "b LOGOUT"], endpoint)
    assert (
        "S: a NO [AUTHENTICATIONFAILED] Bad PLAIN response (authzid NUL user NUL "
        "password)"
    ) in transcript


def test_sinks_started_in_one_second_have_distinct_uidvalidity() -> None:
    # UIDVALIDITY was the start second and UIDs start at 1: a sink started
    # again in the same second gave (UIDVALIDITY, UID 1) to other mail, and
    # a client that keeps the last UID it read skipped the new message.
    seen = []
    for subject in ("first", "second", "third"):
        with SMTPSink() as sink:
            sink.deliver(raw_message(subject), to=USER)
            client = imaplib.IMAP4(sink.imap.host, sink.imap.port, timeout=30)
            client.login(USER, "pw")
            client.select("INBOX")
            [validity] = client.response("UIDVALIDITY")[1]
            assert client.uid("FETCH", "1", "(UID)")[1][0] is not None
            client.logout()
        assert validity is not None
        seen.append(int(validity))
    assert seen == sorted(set(seen))


def test_recent_follows_a_folder_through_a_rename(smtpsink: Mailbox) -> None:
    # \Recent was kept by folder name: after a RENAME all its mail was
    # \Recent again, and a folder renamed onto a deleted one's name took
    # that one's state; Dovecot keeps it with the folder.
    smtpsink.deliver(raw_message("one"), to=USER, folder="Box")
    smtpsink.deliver(raw_message("two"), to=USER, folder="Box")
    with raw_selected(smtpsink.imap) as send:
        assert "* 2 RECENT" in send("c SELECT Box")  # claimed by this session
        send("d CLOSE")
        assert send("e RENAME Box Kept")[-1].startswith("e OK ")
        assert send("f STATUS Kept (RECENT MESSAGES)")[0] == (
            "* STATUS Kept (RECENT 0 MESSAGES 2)"
        )
        # A folder made anew under the old name has none of that state.
        smtpsink.deliver(raw_message("three"), to=USER, folder="Box")
        assert send("g STATUS Box (RECENT)")[0] == "* STATUS Box (RECENT 1)"


def _after_another_session(
    smtpsink: Mailbox, commands: list[str], elsewhere: list[str]
) -> list[str]:
    """``commands`` in a session that selected INBOX (two messages), with
    another session running ``elsewhere`` right before the first: the
    transcript from that command on."""
    for subject in ("One", "Two"):
        smtpsink.deliver(raw_message(subject), to=USER)
    endpoint = Endpoint("imap", smtpsink.imap.host, smtpsink.imap.port)
    other = [f"o1 LOGIN {USER} secret", "o2 SELECT INBOX", *elsewhere]
    script = [f"L LOGIN {USER} secret", "b SELECT INBOX", *commands]
    transcript = run(
        script, endpoint, before={commands[0]: lambda: run(other, endpoint)}
    )
    return transcript[transcript.index(f"C: {commands[0]}") :]


def test_search_goes_by_the_flags_the_session_was_told_of(smtpsink: Mailbox) -> None:
    # Another session deleted message 2 silently: "* SEARCH 2" came before
    # the "* 2 FETCH (FLAGS (\\Deleted))" that told the client so. Dovecot
    # searches what it told, as the sink now does.
    transcript = _after_another_session(
        smtpsink,
        ["c SEARCH DELETED", "d SEARCH DELETED"],
        ["o3 STORE 2 +FLAGS.SILENT (\\Deleted)"],
    )
    assert transcript == [
        "C: c SEARCH DELETED",
        "S: * SEARCH",
        "S: * 2 FETCH (FLAGS (\\Deleted \\Recent))",
        "S: c OK SEARCH completed",
        "C: d SEARCH DELETED",
        "S: * SEARCH 2",
        "S: d OK SEARCH completed",
    ]


def test_search_leaves_out_untold_flags_of_mail_expunged_elsewhere(
    smtpsink: Mailbox,
) -> None:
    # FETCH may not say "* 1 EXPUNGE" (RFC 3501 7.4.1), nor did it tell the
    # message's \\Deleted: SEARCH DELETED then still found message 1.
    transcript = _after_another_session(
        smtpsink,
        ["c FETCH 2 (FLAGS)", "d SEARCH DELETED", "e NOOP"],
        ["o3 STORE 1 +FLAGS.SILENT (\\Deleted)", "o4 EXPUNGE"],
    )
    start = transcript.index("C: d SEARCH DELETED")
    assert transcript[start : start + 5] == [
        "C: d SEARCH DELETED",
        "S: * SEARCH",
        "S: d OK SEARCH completed",
        "C: e NOOP",
        "S: * 1 EXPUNGE",
    ]


def test_a_bad_and_a_status_of_the_selected_folder_tell_no_news(
    smtpsink: Mailbox,
) -> None:
    # Mail came: a BAD said "* 3 EXISTS", then "the folder has 2 messages";
    # STATUS said MESSAGES 3, then "* 3 EXISTS". Neither tells news now, as
    # on Dovecot: both answer as the session was told, and NOOP tells it.
    def deliver() -> None:
        smtpsink.deliver(raw_message("Three"), to=USER)

    for subject in ("One", "Two"):
        smtpsink.deliver(raw_message(subject), to=USER)
    endpoint = Endpoint("imap", smtpsink.imap.host, smtpsink.imap.port)
    script = [
        f"L LOGIN {USER} secret",
        "b SELECT INBOX",
        "c FETCH 9 (FLAGS)",
        "d STATUS INBOX (MESSAGES UNSEEN)",
        "e NOOP",
    ]
    transcript = run(script, endpoint, before={"c FETCH 9 (FLAGS)": deliver})
    assert transcript[transcript.index("C: c FETCH 9 (FLAGS)") :] == [
        "C: c FETCH 9 (FLAGS)",
        "S: c BAD Invalid message sequence number: 9 (the folder has 2 messages)",
        "C: d STATUS INBOX (MESSAGES UNSEEN)",
        "S: * STATUS INBOX (MESSAGES 2 UNSEEN 2)",
        "S: d OK [CLIENTBUG] STATUS of the selected folder completed: counted as"
        " this session was told (NOOP tells what changed)",
        "C: e NOOP",
        "S: * 3 EXISTS",
        "S: * 3 RECENT",
        "S: e OK NOOP completed",
    ]


def test_a_uid_fetch_of_mail_expunged_elsewhere_names_it_by_its_uid(
    smtpsink: Mailbox,
) -> None:
    # UID FETCH sends the "* 1 EXPUNGE" before its completion (RFC 3501
    # 7.4.1 lets it), so "message 1 was expunged" named, by then, the
    # message after it; a sequence FETCH, which may not, still says message.
    for subject in ("One", "Two"):
        smtpsink.deliver(raw_message(subject), to=USER)
    endpoint = Endpoint("imap", smtpsink.imap.host, smtpsink.imap.port)
    reader = [f"L LOGIN {USER} secret", "b SELECT INBOX", "c FETCH 1 (UID)"]
    script = [*reader, "d UID FETCH 1:* (FLAGS)"]

    def expunge_first() -> None:
        run(
            [
                f"o1 LOGIN {USER} secret",
                "o2 SELECT INBOX",
                "o3 STORE 1 +FLAGS.SILENT (\\Deleted)",
                "o4 EXPUNGE",
            ],
            endpoint,
        )

    transcript = run(script, endpoint, before={"c FETCH 1 (UID)": expunge_first})
    start = transcript.index("C: c FETCH 1 (UID)")
    told = re.fullmatch(r"S: \* 1 FETCH \(UID (\d+)\)", transcript[start + 1])
    assert told is not None
    uid = int(told[1])
    assert transcript[start + 2] == (
        "S: c OK [EXPUNGEISSUED] FETCH completed; message 1 was expunged by "
        "another session"
    )
    fetched = transcript[transcript.index("C: d UID FETCH 1:* (FLAGS)") :]
    assert "S: * 1 EXPUNGE" in fetched
    assert fetched[-1] == (
        f"S: d OK [EXPUNGEISSUED] UID FETCH completed; UID {uid} was expunged by "
        "another session"
    )


def test_a_keyword_another_session_adds_during_a_long_fetch_is_announced_first(
    smtpsink: Mailbox,
) -> None:
    # The FETCH looked for new keywords once, as it began: one stored while
    # its responses waited for a slow client went out in "* 600 FETCH
    # (FLAGS ($late ...))" before the "* FLAGS" that announces it, which
    # Dovecot sends first.
    # Three times what the server's socket may buffer (4 MB here), so that
    # the last responses wait in the server while the other session runs.
    try:
        buffered = int(
            pathlib.Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2]
        )
    except (OSError, ValueError, IndexError):
        buffered = 4 * 2**20
    count = max(600, 3 * buffered // 20_000)
    for number in range(count):
        smtpsink.deliver(b"Subject: m%d\r\n\r\n" % number + b"y" * 20_000, to=USER)
    client = slow_reader()
    with client, client.makefile("rb") as replies:
        client.connect(imap_address(smtpsink))
        replies.readline()
        client.sendall(f"a LOGIN {USER} pw\r\nb SELECT INBOX\r\n".encode())
        while not replies.readline().startswith(b"b OK"):
            pass
        client.sendall(b"f FETCH 1:* (FLAGS BODY.PEEK[])\r\n")
        assert replies.readline().startswith(b"* 1 FETCH (FLAGS (")
        # The rest waits in the server for this client to read on.
        with login(smtpsink) as other:
            other.select("INBOX")
            assert other.store(str(count), "+FLAGS.SILENT", "($late)")[0] == "OK"
        told: list[bytes] = []
        while not (line := replies.readline()).startswith(b"f OK"):
            if line.startswith((b"* FLAGS", b"* %d FETCH" % count)):
                told.append(line.rstrip().partition(b" BODY[")[0])
    assert told == [
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $late)",
        b"* %d FETCH (FLAGS (\\Recent $late)" % count,
    ]

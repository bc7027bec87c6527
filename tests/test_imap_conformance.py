"""IMAP conformance without a reference server: the differences from Dovecot
that the corpus test (test_imap_dovecot_corpus.py) found, pinned here so they
stay fixed where Dovecot is absent, and one regression test per IMAP bug of
smtp4dev (issue 16's checklist), each named after it."""

from __future__ import annotations

import re
from pathlib import Path

from dialogue import Endpoint, run

from pytest_smtpsink import Mailbox
from pytest_smtpsink._imap import COMMANDS

USER = "ann@example.com"


def server_lines(sink: Mailbox, *lines: str) -> list[str]:
    """Run raw lines (after a LOGIN) and return the server's lines."""
    endpoint = Endpoint("imap", sink.imap.host, sink.imap.port)
    transcript = run([f"L LOGIN {USER} secret", *lines], endpoint)
    return [line[3:] for line in transcript if line.startswith("S: ")]


def test_list_joins_reference_and_pattern_as_they_are(smtpsink: Mailbox) -> None:
    for folder in ("Archive", "Archive/2024", "Archives"):
        smtpsink.deliver(b"Subject: x\r\n\r\nx\r\n", to=USER, folder=folder)
    lines = server_lines(smtpsink, "a LIST Archive %", "b LIST Archive/ %")
    assert lines[2:5] == [
        '* LIST (\\HasChildren) "/" Archive',
        '* LIST (\\HasNoChildren) "/" Archives',
        "a OK LIST completed",
    ]
    assert lines[5:7] == [
        '* LIST (\\HasNoChildren) "/" Archive/2024',
        "b OK LIST completed",
    ]


def test_store_of_a_new_keyword_announces_flags_first(smtpsink: Mailbox) -> None:
    smtpsink.deliver(b"Subject: x\r\n\r\nx\r\n", to=USER, flags={"$Old"})
    lines = server_lines(
        smtpsink,
        "a SELECT INBOX",
        "b STORE 1 +FLAGS ($Old)",
        "c STORE 1 +FLAGS ($New)",
        "d STORE 1 -FLAGS ($New)",
    )
    # Keywords in the order the folder got them, as Dovecot lists them.
    keywords = "\\Answered \\Flagged \\Deleted \\Seen \\Draft $Old $New"
    after_c = lines[lines.index("b OK STORE completed") + 1 :]
    assert after_c[:4] == [
        f"* FLAGS ({keywords})",
        f"* OK [PERMANENTFLAGS ({keywords} \\*)] Flags permitted",
        "* 1 FETCH (FLAGS (\\Recent $Old $New))",
        "c OK STORE completed",
    ]
    # A keyword already announced, or one removed, announces nothing.
    assert [line for line in lines if line.startswith("* FLAGS")] == [
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Old)",
        f"* FLAGS ({keywords})",
    ]


# -- smtp4dev's IMAP bugs, one test each ------------------------------------------


def test_smtp4dev_1244_javamail_search_unseen(smtpsink: Mailbox) -> None:
    # https://github.com/rnwood/smtp4dev/issues/1244: JavaMail's
    # FlagTerm(SEEN, false) search got "BAD Error in arguments".
    smtpsink.deliver(b"Subject: read\r\n\r\nx\r\n", to=USER, flags={"\\Seen"})
    smtpsink.deliver(b"Subject: unread\r\n\r\nx\r\n", to=USER)
    lines = server_lines(
        smtpsink,
        "a SELECT INBOX",
        "b SEARCH UNSEEN",
        "c SEARCH UNSEEN ALL",
        "d SEARCH NOT SEEN",
        "e SEARCH NOT (SEEN)",
    )
    for tag in "bcde":
        reply = lines.index(f"{tag} OK SEARCH completed")
        assert lines[reply - 1] == "* SEARCH 2", (tag, lines)


def test_smtp4dev_1519_search_answers_sequence_numbers(smtpsink: Mailbox) -> None:
    # https://github.com/rnwood/smtp4dev/issues/1519: SEARCH answered UIDs.
    # Sink-wide UIDs make the two differ from the first message on.
    smtpsink.deliver(b"Subject: other\r\n\r\nx\r\n", to="someone@example.com")
    smtpsink.deliver(b"Subject: mine\r\n\r\nx\r\n", to=USER)
    (stored,) = smtpsink.mailbox(USER).stored()
    assert stored.uid != 1
    lines = server_lines(
        smtpsink,
        "a SELECT INBOX",
        "b UID SEARCH SINCE 1-Jan-2021",
        "c SEARCH SINCE 1-Jan-2021",
    )
    assert lines[-4:] == [
        f"* SEARCH {stored.uid}",
        "b OK UID SEARCH completed",
        "* SEARCH 1",
        "c OK SEARCH completed",
    ]


def test_smtp4dev_2001_uid_search_with_uid_sets(smtpsink: Mailbox) -> None:
    # https://github.com/rnwood/smtp4dev/issues/2001: "UID SEARCH UID 2:6"
    # and "UID 2,4,6" were refused as unsupported criteria.
    for number in range(6):
        smtpsink.deliver(f"Subject: {number}\r\n\r\nx\r\n".encode(), to=USER)
    uids = [s.uid for s in smtpsink.mailbox(USER).stored()]
    lines = server_lines(
        smtpsink,
        "a SELECT INBOX",
        f"b UID SEARCH UID {uids[1]}:{uids[5]}",
        f"c UID SEARCH UID {uids[1]},{uids[3]},{uids[5]}",
        f"d SEARCH UID {uids[1]},{uids[3]}:{uids[4]}",
    )
    assert lines[-6:] == [
        "* SEARCH " + " ".join(map(str, uids[1:6])),
        "b OK UID SEARCH completed",
        f"* SEARCH {uids[1]} {uids[3]} {uids[5]}",
        "c OK UID SEARCH completed",
        "* SEARCH 2 4 5",
        "d OK SEARCH completed",
    ]


def test_smtp4dev_2002_search_header_message_id_unquoted(smtpsink: Mailbox) -> None:
    # https://github.com/rnwood/smtp4dev/issues/2002: an unquoted Message-ID
    # with angle brackets made the search parser fail ("BAD Error in
    # arguments"). '<', '>' and '@' are atom characters (RFC 3501).
    message_id = "<20260106224430.Horde.Ok6GdEyWhiijOVj8ClvE4U8@example.local>"
    smtpsink.deliver(b"Subject: other\r\n\r\nx\r\n", to=USER)
    smtpsink.deliver(
        f"Message-ID: {message_id}\r\nSubject: wanted\r\n\r\nx\r\n".encode(), to=USER
    )
    wanted = smtpsink.mailbox(USER).stored()[1]
    lines = server_lines(
        smtpsink,
        "a SELECT INBOX",
        f"b UID SEARCH HEADER MESSAGE-ID {message_id}",
        f"c SEARCH HEADER Message-ID {message_id}",
    )
    assert lines[-4:] == [
        f"* SEARCH {wanted.uid}",
        "b OK UID SEARCH completed",
        "* SEARCH 2",
        "c OK SEARCH completed",
    ]


def test_smtp4dev_2004_select_of_empty_folders(smtpsink: Mailbox) -> None:
    # https://github.com/rnwood/smtp4dev/issues/2004: on a fresh server,
    # SELECT of an empty INBOX answered "NO Argument 'uid' value must be
    # >= 1". An empty folder selects, with a UIDNEXT of at least 1.
    lines = server_lines(
        smtpsink, "a SELECT INBOX", "b CREATE Sent", "c SELECT Sent", "d EXAMINE INBOX"
    )
    for tag in "acd":
        assert any(line.startswith(f"{tag} OK [READ-") for line in lines), lines
    uidnext = [line for line in lines if line.startswith("* OK [UIDNEXT ")]
    assert len(uidnext) == 3
    assert all(int(line.split()[3].rstrip("]")) >= 1 for line in uidnext)
    assert lines.count("* 0 EXISTS") == 3


def test_smtp4dev_2116_select_after_seeding_without_smtp(smtpsink: Mailbox) -> None:
    # https://github.com/rnwood/smtp4dev/issues/2116: a message imported
    # from an .eml (not over SMTP) had no UID, and SELECT failed. deliver()
    # is the sink's import: every copy gets a UID at once.
    smtpsink.deliver(b"Subject: imported\r\n\r\nx\r\n", to=USER)
    smtpsink.deliver(b"Subject: filed\r\n\r\nx\r\n", to=USER, folder="Archive")
    uids = [s.uid for s in smtpsink.mailbox(USER).stored()]
    assert all(uid >= 1 for uid in uids)
    lines = server_lines(
        smtpsink, "a SELECT INBOX", "b UID FETCH 1:* (UID)", "c SELECT Archive"
    )
    assert "a OK [READ-WRITE] SELECT completed" in lines
    assert f"* 1 FETCH (UID {uids[0]})" in lines
    assert "c OK [READ-WRITE] SELECT completed" in lines


# -- the command reference in docs/reading.rst ------------------------------------

READING = Path(__file__).parent.parent / "docs" / "reading.rst"


def test_the_imap_reference_names_every_command_the_server_runs() -> None:
    text = READING.read_text(encoding="utf-8")
    table = text[text.index(".. list-table:: IMAP commands") :]
    table = table[: table.index("Deferred, each answered")]
    rows = re.findall(r"^   \* - (.+)$", table, re.MULTILINE)[1:]
    named = {
        name.strip()
        for row in rows
        for name in row.replace(" and their UID forms", "").split(",")
    }
    commands = {name for name in COMMANDS if not name.startswith("UID ")}
    assert commands <= {n.split()[0] if n.startswith("AUTH") else n for n in named}
    assert "UID" in " ".join(rows)


def test_deferred_imap_extensions_answer_bad(smtpsink: Mailbox) -> None:
    deferred = ["SORT (DATE) UTF-8 ALL", "THREAD REFS UTF-8 ALL", "GETQUOTAROOT INBOX"]
    deferred += ["GETACL INBOX", "GETMETADATA INBOX /x", "COMPRESS DEFLATE"]
    lines = server_lines(smtpsink, *(f"t{i} {c}" for i, c in enumerate(deferred)))
    for number, command in enumerate(deferred):
        verb = command.split()[0]
        assert f"t{number} BAD Unknown or unsupported command: {verb}" in lines
    session = smtpsink.sessions[-1]
    assert len([e for e in session.transcript if e.kind == "command"]) == 7

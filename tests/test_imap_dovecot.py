"""Differential conformance: the same scripted IMAP session against the
sink and a real Dovecot (tests/dovecot.py) gives the same responses, after
masking what two correct servers may differ in (tests/dialogue.py)."""

from __future__ import annotations

import datetime
import difflib
import re
from collections.abc import Callable, Sequence
from email.message import EmailMessage

from dialogue import Endpoint, masked, run
from dovecot import Dovecot

from pytest_smtpsink import SMTPSink

USER = "differential"
MESSAGES = [
    b"From: Ann <ann@example.com>\r\nTo: bob@example.com\r\nSubject: one\r\n"
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nMessage-ID: <1@example.com>\r\n"
    b"\r\nfirst body\r\n",
    b"From: bob@example.com\r\nSubject: two\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
    b"Content-Type: text/plain\r\n\r\npart one\r\n--b\r\n"
    b"Content-Type: text/html\r\n\r\n<p>part two</p>\r\n--b--\r\n",
    b"Subject: three\r\n\r\nthird\r\n",
]

#: Kept on purpose (docs/reading.rst): the sink's UIDs come from one
#: counter for all folders and its UIDVALIDITY is the sink's, so a copy's
#: new UID differs from Dovecot's per-folder one.
KEPT = [(r"\[COPYUID \S+ \S+ \S+\]", "[COPYUID <copyuid>]")]

SCRIPT = [
    f"a LOGIN {USER} secret",
    "b SELECT INBOX",
    "c FETCH 1:* (FLAGS RFC822.SIZE ENVELOPE)",
    "d FETCH 2 (BODYSTRUCTURE BODY.PEEK[1] BODY.PEEK[2.MIME] BODY.PEEK[]<0.20>)",
    "e SEARCH SUBJECT two",
    "f UID SEARCH OR SUBJECT one SUBJECT three",
    "g STORE 1 +FLAGS (\\Deleted \\Flagged)",
    "h FETCH 1 (BODY[TEXT])",
    "i CREATE Kept",
    "j COPY 2 Kept",
    "k EXPUNGE",
    "l SEARCH ALL",
    "m UID SEARCH ALL",
    "n STATUS Kept (MESSAGES UNSEEN)",
    # One folder per LIST: the order of a LIST's lines is the server's.
    'o LIST "" K*',
    'q LIST "" inbox',
    # Folder names: modified UTF-7 both ways, a quote escaped in a quoted
    # string, INBOX in any case as a parent too, empty levels refused.
    "r CREATE Gesch&AOQ-ftlich",
    'r2 LIST "" Gesch*',
    "r3 STATUS Gesch&AOQ-ftlich (MESSAGES)",
    'r4 CREATE "Say \\"hi\\""',
    'r5 LIST "" Say*',
    "r6 CREATE Inbox/Sub",
    'r7 LIST "" inbox/%',
    "r8 CREATE /lead",
    "r9 CREATE a//b",
    "s CREATE &Jjo!",
    "s2 CREATE &AGE-",  # "a", encoded
    "s3 CREATE &AOQ-&AOQ-",  # two runs in a row
    "s4 CREATE &2AA-",  # a lone surrogate
    'l2 LIST "" &*',  # a pattern is not checked as a name
    # A pattern that is not modified UTF-7 is matched as text: a client
    # that does not encode names (imaplib) lists "R&D" as it wrote it.
    "l3 CREATE R&-D",
    'l4 LIST "" R&D',
    'l5 LIST "" R&*',
    'l6 LIST "" &*',
    "t CREATE INBOXfoo",
    't2 LIST "" inbox%',  # INBOX, not INBOXfoo
    't3 LIST "" INBOXf*',  # INBOXfoo, spelt so
    't4 LIST "" i%',  # INBOX, where a wildcard covers part of it
    "p LOGOUT",
]


def on_both(
    script: list[str],
    dovecot: Dovecot,
    user: str = "",
    messages: Sequence[bytes] = (),
) -> tuple[list[str], list[str]]:
    """``script`` run on a fresh sink's IMAP server and on Dovecot: the
    two transcripts, unmasked. The sink's ``user`` gets ``messages`` first
    (Dovecot's the caller seeds)."""
    with SMTPSink() as sink:
        for message in messages:
            sink.deliver(message, to=user)
        ours = run(script, Endpoint("imap", sink.imap.host, sink.imap.port))
    return ours, run(script, Endpoint("imap", dovecot.host, dovecot.imap_port))


#: `KEPT`, and the UIDs and UIDVALIDITY of a session that appends: the
#: sink's are its own (docs/reading.rst).
KEPT_UIDS = [
    *KEPT,
    (r"\[APPENDUID \S+ \d+\]", "[APPENDUID <uid>]"),
    (r"\[UIDVALIDITY \S+\]", "[UIDVALIDITY <uidvalidity>]"),
    (r"\[UIDNEXT \d+\]", "[UIDNEXT <uidnext>]"),
]


def masked_on_both(
    script: list[str],
    dovecot: Dovecot,
    user: str = "",
    messages: Sequence[bytes] = (),
    extra: Sequence[tuple[str, str]] = (),
) -> tuple[list[str], list[str]]:
    """`on_both`'s transcripts, with what two correct servers may word
    differently masked (`masked`: capabilities, texts, ``extra``)."""
    ours, theirs = on_both(script, dovecot, user, messages)
    return (
        masked(ours, capabilities=True, text=True, extra=extra),
        masked(theirs, capabilities=True, text=True, extra=extra),
    )


def _same_but_for_recent(
    ours: list[str], theirs: list[str], extra: Sequence[tuple[str, str]] = ()
) -> list[str]:
    """The sink's and Dovecot's transcripts, masked, must be equal (else the
    diff) but for the ``* n RECENT`` lines, which the sink sends with every
    EXISTS (kept: docs/reading.rst); the sink's, masked, is returned."""
    ours, theirs = (
        [
            line
            for line in masked(lines, capabilities=True, text=True, extra=extra)
            if not re.fullmatch(r"S: \* \d+ RECENT", line)
        ]
        for lines in (ours, theirs)
    )
    difference = difflib.unified_diff(theirs, ours, "Dovecot", "sink", lineterm="")
    assert ours == theirs, "\n".join(difference)
    return ours


def same_as_dovecot(
    dovecot: Dovecot, user: str, messages: Sequence[bytes], commands: list[str]
) -> list[str]:
    """``commands`` after a LOGIN and an EXAMINE of INBOX, on the sink and
    on Dovecot both holding ``messages`` for ``user``: the masked
    transcripts must be equal (else the diff); the sink's is returned."""
    dovecot.reset(user)
    dovecot.seed(user, messages)
    script = [f"a LOGIN {user} x", "b EXAMINE INBOX", *commands, "z LOGOUT"]
    ours, theirs = masked_on_both(script, dovecot, user, messages)
    difference = difflib.unified_diff(theirs, ours, "Dovecot", "sink", lineterm="")
    assert ours == theirs, "\n".join(difference)
    return ours


def test_a_scripted_session_answers_as_dovecot_does(dovecot: Dovecot) -> None:
    dovecot.reset(USER)
    dovecot.seed(USER, MESSAGES)
    # A sink of its own: its UIDs start at 1, as Dovecot's do.
    with SMTPSink() as sink:
        for message in MESSAGES:
            sink.deliver(message, to=USER)
        ours = run(SCRIPT, Endpoint("imap", sink.imap.host, sink.imap.port))
    theirs = run(SCRIPT, Endpoint("imap", dovecot.host, dovecot.imap_port))
    assert masked(ours, capabilities=True, text=True, extra=KEPT) == masked(
        theirs, capabilities=True, text=True, extra=KEPT
    )


def test_arguments_where_none_belong_are_bad_where_dovecot_ignores_them(
    dovecot: Dovecot,
) -> None:
    user = "no-arguments"
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES[:1], flags=["\\Deleted"])
    refused = [
        "b NOOP extra",
        "c CAPABILITY x",
        "e CHECK now",
        "f EXPUNGE 1",
        "g UNSELECT INBOX",
        "i CLOSE all",
    ]
    script = [
        f"a LOGIN {user} x",
        "b NOOP extra",
        "c CAPABILITY x",
        "d SELECT INBOX",
        "e CHECK now",
        "f EXPUNGE 1",
        "g UNSELECT INBOX",
        "h SELECT INBOX",  # again, for Dovecot, which left it at g
        "i CLOSE all",
        "j LOGOUT",
    ]
    with SMTPSink() as sink:
        sink.deliver(MESSAGES[0], to=user, flags={"\\Deleted"})
        ours = run(script, Endpoint("imap", sink.imap.host, sink.imap.port))
        sink.mailbox(user).assert_in(subject="one", flags={"\\Deleted"})
    theirs = masked(
        run(script, Endpoint("imap", dovecot.host, dovecot.imap_port)),
        capabilities=True,
        text=True,
    )
    # Dovecot runs each as if its arguments were not there (its EXPUNGE
    # removes the message); the sink says BAD (docs/reading.rst) and runs
    # none of them.
    for command in refused:
        tag, name = command.split()[:2]
        assert f"S: {tag} OK <text>" in theirs
        assert f"S: {tag} BAD {name} takes no arguments" in ours
    assert "S: * 1 EXPUNGE" in theirs
    assert "S: * 1 EXPUNGE" not in ours
    assert dovecot.messages(user) == []


def test_append_is_refused_before_its_literal_as_dovecot_refuses_it(
    dovecot: Dovecot,
) -> None:
    user = "append-refused"
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES[:1])
    message = MESSAGES[2].decode()
    size = len(message)
    script = [
        f"a LOGIN {user} x",
        f'b APPEND INBOX "yesterday" {{{size}}}',
        f"c APPEND INBOX (\\Seen \\Bogus) {{{size}}}",
        f"d APPEND Nowhere {{{size}}}",
        f"e APPEND Nowhere {{{size}+}}\r\n{message}",  # read, then refused
        # The message as a quoted string, not a literal: BAD on both, and
        # nothing stored; a missing folder is said first.
        'e2 APPEND INBOX "Subject: hi"',
        'e3 APPEND INBOX (\\Seen) "Subject: hi"',
        'e4 APPEND Nowhere "Subject: hi"',
        "f NOOP",
        "f2 STATUS INBOX (MESSAGES)",
        # Answered with the name as asked, as Dovecot does.
        "f3 STATUS inbox (MESSAGES)",
        'f4 STATUS "Inbox" (UNSEEN)',
        "g LOGOUT",
    ]
    with SMTPSink() as sink:
        sink.deliver(MESSAGES[0], to=user)
        ours = run(script, Endpoint("imap", sink.imap.host, sink.imap.port))
    endpoint = Endpoint("imap", dovecot.host, dovecot.imap_port)
    theirs = run(script, endpoint)
    # No "+" to any of them: each refusal came before the literal was sent.
    assert not any(line.startswith("S: +") for line in ours + theirs)
    assert masked(ours, capabilities=True, text=True) == masked(
        theirs, capabilities=True, text=True
    )
    assert "S: b BAD <text>" in masked(ours, text=True)
    assert "S: d NO [TRYCREATE] <text>" in masked(ours, text=True)
    assert "S: e2 BAD <text>" in masked(ours, text=True)
    assert "S: * STATUS INBOX (MESSAGES 1)" in ours
    assert "S: * STATUS inbox (MESSAGES 1)" in ours
    # A bad date with a {n+} literal: the sink reads the literal, whose
    # bytes are on their way, before it refuses; Dovecot refuses at once
    # and reads the message's lines as commands (a BAD for each).
    script = [
        f"a LOGIN {user} x",
        f'b APPEND INBOX "yesterday" {{{size}+}}\r\n{message}',
    ]
    with SMTPSink() as sink:
        ours = run(
            [*script, "c NOOP"], Endpoint("imap", sink.imap.host, sink.imap.port)
        )
    assert [line for line in ours if " BAD " in line] == [
        "S: b BAD Invalid date-time 'yesterday': expected like "
        '"17-Jul-1996 02:44:25 -0700"'
    ]
    assert ours[-1] == "S: c OK NOOP completed"
    theirs = run([*script, "c NOOP"], endpoint)
    assert len([line for line in theirs if " BAD " in line]) > 1


def test_a_subscription_outlives_its_folder_as_on_dovecot(dovecot: Dovecot) -> None:
    # RFC 3501 6.3.6: the server MUST NOT remove a name from the
    # subscriptions because its folder is gone; a client that deletes a
    # folder and then unsubscribes it (as mail clients do) gets OK.
    user = "subscriptions"
    dovecot.reset(user)
    script = [
        f"a LOGIN {user} x",
        "b SUBSCRIBE INBOX",  # subscribed from the start on the sink
        "c CREATE Old",
        "d SUBSCRIBE Old",
        "e DELETE Old",
        'f LSUB "" *',
        "g UNSUBSCRIBE Old",
        'h LSUB "" *',
        "i LOGOUT",
    ]
    ours, theirs = on_both(script, dovecot)
    # The sink says \Noselect of a subscribed name that is no folder.
    assert 'S: * LSUB (\\Noselect \\HasNoChildren) "/" Old' in ours
    attributes = [(r"^\* LSUB \([^)]*\)", "* LSUB ()")]
    assert masked(ours, capabilities=True, text=True, extra=attributes) == masked(
        theirs, capabilities=True, text=True, extra=attributes
    )


#: LSUB attributes: the sink adds CHILDREN's \HasChildren/\HasNoChildren,
#: Dovecot does not; \Noselect stays.
CHILDREN = [(r" ?\\Has(?:No)?Children", ""), (r"\( ", "(")]


def test_lsub_percent_names_the_unsubscribed_parent_as_dovecot_does(
    dovecot: Dovecot,
) -> None:
    # RFC 3501 6.3.9: with "foo/bar" subscribed and "foo" not, LSUB "%"
    # returns "foo" with \Noselect.
    user = "lsub-parent"
    dovecot.reset(user)
    script = [
        f"a LOGIN {user} x",
        "b SUBSCRIBE INBOX",
        "c CREATE Lists/Work",
        "d SUBSCRIBE Lists/Work",
        'e LSUB "" %',
        'f LSUB "" *',
        'g LSUB "" Lists/%',
        'h LSUB "" %/%',
        "i LOGOUT",
    ]
    ours, theirs = on_both(script, dovecot)
    assert 'S: * LSUB (\\Noselect) "/" Lists' in masked(theirs, extra=CHILDREN)
    assert masked(ours, capabilities=True, text=True, extra=CHILDREN) == masked(
        theirs, capabilities=True, text=True, extra=CHILDREN
    )


def test_status_of_the_selected_folder_counts_its_recent_mail_as_dovecot(
    dovecot: Dovecot,
) -> None:
    # The session that selected the folder holds its \Recent mail: SELECT
    # said "* 3 RECENT", so STATUS says RECENT 3 too. Another session's
    # STATUS says 0 (the first session took them).
    user = "status-selected"
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES)
    script = [
        f"a LOGIN {user} x",
        "b SELECT INBOX",
        "c STATUS INBOX (MESSAGES RECENT UNSEEN)",
        "d STORE 1 +FLAGS.SILENT (\\Deleted)",
        "e EXPUNGE",
        "f STATUS INBOX (RECENT)",
    ]
    status = re.compile(r"^S: \* STATUS ")
    with SMTPSink() as sink:
        for message in MESSAGES:
            sink.deliver(message, to=user)
        endpoint = Endpoint("imap", sink.imap.host, sink.imap.port)
        ours = [line for line in run(script, endpoint) if status.match(line)]
        other = run([f"a LOGIN {user} x", "b STATUS INBOX (RECENT)"], endpoint)
    theirs = run(script, Endpoint("imap", dovecot.host, dovecot.imap_port))
    assert ours == [line for line in theirs if status.match(line)]
    assert ours == [
        "S: * STATUS INBOX (MESSAGES 3 RECENT 3 UNSEEN 3)",
        "S: * STATUS INBOX (RECENT 2)",
    ]
    assert "S: * STATUS INBOX (RECENT 0)" in other


def test_rename_under_itself_is_refused_as_dovecot_refuses_it(
    dovecot: Dovecot,
) -> None:
    # A folder cannot become its own child: the sink renamed P to P/C/D
    # and its child P/C to P/C/D/C, leaving P/C a name without a folder.
    user = "rename-under-itself"
    dovecot.reset(user)
    script = [
        f"a LOGIN {user} x",
        "b CREATE P",
        "c CREATE P/C",
        "d RENAME P P/C/D",
        "e RENAME P P/New",
        "f RENAME P/C P/C/D",
        "g CREATE Q/R",
        "h RENAME Q Q/R/S",  # Q exists only as Q/R's parent
        'i LIST "" *',
        "j LOGOUT",
    ]
    ours, theirs = masked_on_both(script, dovecot, user, MESSAGES[:1], extra=CHILDREN)
    # RFC 3501 leaves the order of LIST's lines to the server.
    assert sorted(ours) == sorted(theirs)
    assert [line for line in ours if "LIST" not in line] == [
        line for line in theirs if "LIST" not in line
    ]
    assert "S: d NO <text>" in ours
    assert 'S: * LIST () "/" P/C' in ours


def test_a_tag_alone_is_answered_with_that_tag_as_dovecot_answers_it(
    dovecot: Dovecot,
) -> None:
    # The sink answered "* BAD": a client waiting for "m3 ..." waited on.
    user = "tag-alone"
    dovecot.reset(user)
    script = [f"a LOGIN {user} x", "m3", "b NOOP", "c LOGOUT"]
    ours, theirs = masked_on_both(script, dovecot)
    assert ours == theirs
    assert "S: m3 BAD <text>" in ours


def test_recent_cannot_be_stored_or_appended_as_on_dovecot(dovecot: Dovecot) -> None:
    # RFC 3501 2.3.2: \Recent is the server's. The sink dropped it from a
    # STORE or APPEND without a word; Dovecot answers BAD, and so does the
    # sink now, before an APPEND's literal is asked for.
    user = "store-recent"
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES[:1])
    size = len(MESSAGES[2])
    script = [
        f"a LOGIN {user} x",
        "b SELECT INBOX",
        "c STORE 1 +FLAGS (\\Recent)",
        "d STORE 1 -FLAGS (\\Recent)",
        "e STORE 1 FLAGS (\\Seen \\Recent)",
        "f FETCH 1 FLAGS",
        f"g APPEND INBOX (\\Recent) {{{size}}}",
        "h SEARCH ALL",  # one message: the APPEND added none
        "i LOGOUT",
    ]
    with SMTPSink() as sink:
        sink.deliver(MESSAGES[0], to=user)
        ours = run(script, Endpoint("imap", sink.imap.host, sink.imap.port))
        sink.mailbox(user).assert_in(subject="one", flags=set())
    theirs = run(script, Endpoint("imap", dovecot.host, dovecot.imap_port))
    assert masked(ours, capabilities=True, text=True) == masked(
        theirs, capabilities=True, text=True
    )
    for tag in "cdeg":
        assert (
            f"S: {tag} BAD \\Recent cannot be stored: the server sets it on new "
            "mail (RFC 3501 2.3.2)" in ours
        )
    assert "S: * 1 FETCH (FLAGS (\\Recent))" in ours
    assert "S: * SEARCH 1" in ours
    assert not any(line.startswith("S: +") for line in ours)


def test_a_keyword_with_a_bracket_is_a_keyword_as_on_dovecot(dovecot: Dovecot) -> None:
    # RFC 3501: "[" is no atom-special, so "a[b" is a keyword; the sink read
    # every "[" as the start of a BODY[...] section and answered BAD.
    user = "bracket-keyword"
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES[:1])
    size = len(MESSAGES[2])
    script = [
        f"a LOGIN {user} x",
        "b SELECT INBOX",
        "c STORE 1 +FLAGS (a[b)",
        "d STORE 1 -FLAGS a[b",  # a bare flag, no list
        "d2 STORE 1 +FLAGS a[b",
        "e FETCH 1 FLAGS",
        "f SEARCH KEYWORD a[b",
        f"g APPEND INBOX (a[b) {{{size}+}}\r\n{MESSAGES[2].decode()}",
        "h FETCH 2 FLAGS",
        "i FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)",  # no "]": still BAD
        "j LOGOUT",
    ]
    ours, theirs = masked_on_both(script, dovecot, user, MESSAGES[:1])
    assert ours == theirs
    assert "S: * 1 FETCH (FLAGS (\\Recent a[b))" in ours
    assert "S: * SEARCH 1" in ours
    assert "S: * 2 FETCH (FLAGS (\\Recent a[b))" in ours
    assert "S: i BAD <text>" in ours


#: The text of a "+" go-ahead for a literal is the server's.
GO_AHEAD = [(r"^\+ .*", "+ <text>")]


def test_header_field_names_as_strings_and_literals_as_on_dovecot(
    dovecot: Dovecot,
) -> None:
    # RFC 3501: header-fld-name = astring. The sink took a literal field
    # name for an unmatched "[" (BAD), and named a quoted one unquoted in
    # its response; Dovecot answers both, naming strings quoted.
    user = "header-field-strings"
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES[:1])
    script = [
        f"a LOGIN {user} x",
        "b SELECT INBOX",
        # A synchronizing literal's bytes go after the server's "+".
        "c FETCH 1 (BODY.PEEK[HEADER.FIELDS ({7}",
        "Subject)])",
        "d FETCH 1 (BODY.PEEK[HEADER.FIELDS ({7+}\r\nSubject From)])",
        'e FETCH 1 (BODY.PEEK[HEADER.FIELDS ("Subject" To)])',
        "f FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT ({4}",
        "Date Message-ID)])",
        'g FETCH 1 (BODY.PEEK[HEADER.FIELDS ("X]")])',  # "]" inside a string
        "h LOGOUT",
    ]
    ours, theirs = masked_on_both(script, dovecot, user, MESSAGES[:1], extra=GO_AHEAD)
    assert ours == theirs
    assert 'S: * 1 FETCH (BODY[HEADER.FIELDS ("SUBJECT")] {16}' in ours
    assert 'S: * 1 FETCH (BODY[HEADER.FIELDS ("SUBJECT" TO)] {37}' in ours


def test_reversed_zero_and_out_of_range_sets_as_on_dovecot(dovecot: Dovecot) -> None:
    # RFC 3501: "*:1" and "3:1" are the same as "1:*" and "1:3"; 0 is no
    # message number; a number past EXISTS is BAD for sequence numbers and
    # names nothing for UIDs. The sink's SEARCH called "0" an unknown key.
    user = "odd-sets"
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES)
    script = [
        f"a LOGIN {user} x",
        "b SELECT INBOX",
        "c UID FETCH *:1 (UID)",
        "d FETCH 3:1 (UID)",
        "e FETCH 0 (UID)",
        "f FETCH 1:0 (UID)",
        "g FETCH 2:4 (UID)",
        "h UID FETCH 99 (UID)",
        "i SEARCH 5",
        "j UID SEARCH 0",
        "k SEARCH 1,,2",
        "l LOGOUT",
    ]
    ours, theirs = on_both(script, dovecot, user, MESSAGES)
    assert masked(ours, capabilities=True, text=True) == masked(
        theirs, capabilities=True, text=True
    )
    assert "S: j BAD Invalid sequence set: '0'" in ours
    assert "S: k BAD Invalid sequence set: '1,,2'" in ours


def test_two_spaces_between_arguments_are_bad_where_dovecot_skips_them(
    dovecot: Dovecot,
) -> None:
    # RFC 3501 puts one SP between arguments. Dovecot skips a second one
    # (not after UID); the sink answers BAD, runs nothing and goes on
    # (docs/reading.rst), so a client's malformed command does not pass
    # unnoticed. A trailing space both take.
    user = "two-spaces"
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES[:1])
    doubled = [
        "b SELECT  INBOX",
        "d FETCH 1  (FLAGS)",
        "e FETCH 1 (FLAGS  UID)",
        "f STORE 1  +FLAGS (\\Flagged)",
        "g SEARCH  ALL",
    ]
    script = [
        f"a LOGIN {user} x",
        *doubled[:1],
        "c SELECT INBOX",  # for the sink, which selected nothing at b
        *doubled[1:],
        "h UID  FETCH 1 (FLAGS)",
        "i FETCH 1 (FLAGS) ",
        "j LOGOUT",
    ]
    with SMTPSink() as sink:
        sink.deliver(MESSAGES[0], to=user)
        ours = run(script, Endpoint("imap", sink.imap.host, sink.imap.port))
        sink.mailbox(user).assert_in(subject="one", flags=set())
        shown = sink.sessions[-1].format_transcript()
    theirs = masked(
        run(script, Endpoint("imap", dovecot.host, dovecot.imap_port)),
        capabilities=True,
        text=True,
    )
    for command in doubled:
        tag = command.split()[0]
        assert any(line.startswith(f"S: {tag} OK ") for line in theirs)
        second = command.index("  ") + 1
        answer = (
            f"{tag} BAD A second space at byte {second}: arguments are separated by one"
        )
        assert f"S: {answer}" in ours
        assert answer in shown
    assert "S: h BAD <text>" in theirs
    assert "S: h BAD A second space at byte 6: arguments are separated by one" in ours
    assert "S: * 1 FETCH (FLAGS (\\Recent))" in ours  # i: the session went on
    assert "S: i OK FETCH completed" in ours
    assert "S: * 1 FETCH (FLAGS (\\Flagged))" in theirs  # f ran there


def test_move_within_the_selected_folder_answers_as_dovecot(dovecot: Dovecot) -> None:
    # A MOVE into the folder itself: EXPUNGE of the old number, EXISTS,
    # COPYUID with the new UID, the moved message \Recent, as on Dovecot.
    # One difference is kept (docs/reading.rst): the sink says RECENT with
    # every EXISTS, as RFC 3501 7.3.2 has it; Dovecot only when the count
    # changed, so not where a \Recent message moved.
    user = "move-within"
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES)
    script = [
        f"a LOGIN {user} x",
        "b SELECT INBOX",
        "c SELECT INBOX",  # again: none is \Recent in this session now
        "d MOVE 1 INBOX",  # RECENT 0 -> 1
        "e MOVE 3 INBOX",  # the \Recent one moves: RECENT stays 1
        "f UID MOVE 2 INBOX",  # RECENT 1 -> 2
        "g FETCH 1:* (UID FLAGS)",
        "h LOGOUT",
    ]
    ours, theirs = masked_on_both(script, dovecot, user, MESSAGES, extra=GO_AHEAD)
    # Dovecot's [CLOSED] at c is CONDSTORE's, kept out (docs/reading.rst).
    theirs.remove("S: * OK [CLOSED] <text>")
    recent = re.compile(r"^S: \* \d+ RECENT$")
    assert [line for line in ours if not recent.match(line)] == [
        line for line in theirs if not recent.match(line)
    ]
    after_e = ours[ours.index("C: e MOVE 3 INBOX") :]
    assert after_e[:5] == [
        "C: e MOVE 3 INBOX",
        "S: * OK [COPYUID <uidvalidity-1> 4 5] <text>",
        "S: * 3 EXPUNGE",
        "S: * 3 EXISTS",
        "S: * 1 RECENT",
    ]
    assert "S: * 1 RECENT" not in theirs[theirs.index("C: e MOVE 3 INBOX") :]
    assert [line for line in ours if recent.match(line)][-1] == "S: * 2 RECENT"
    assert [line for line in theirs if recent.match(line)][-1] == "S: * 2 RECENT"
    assert "S: * 3 FETCH (UID 6 FLAGS (\\Recent))" in ours


def test_bad_keywords_and_date_times_are_bad_where_dovecot_differs(
    dovecot: Dovecot,
) -> None:
    # Kept on purpose (docs/reading.rst). "]", "%" and "*" cannot be in an
    # atom (RFC 3501 atom-specials): the sink says BAD, Dovecot NO [CANNOT].
    # A date-time's day is two digits or a space and one, and it must be a
    # real time: Dovecot takes "1-Jan-2000 ..." and "31-Feb-2000 ..." (the
    # latter stored as 13-Dec-1901), an hour 24 and a zone's minute 60; the
    # sink says BAD, before the literal, and why.
    user = "bad-keywords"
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES[:1])
    size = len(MESSAGES[2])
    keywords = ["c STORE 1 +FLAGS (a]b)", "d STORE 1 +FLAGS (a%b)"]
    dates = [
        f'e APPEND INBOX "1-Jan-2000 00:00:00 +0000" {{{size}}}',
        f'f APPEND INBOX "31-Feb-2000 00:00:00 +0000" {{{size}}}',
        f'g APPEND INBOX "01-Jan-2000 25:00:00 +0000" {{{size}}}',
        f'g2 APPEND INBOX "01-Jan-2000 24:00:00 +0000" {{{size}}}',
        f'g3 APPEND INBOX "01-Jan-2000 00:00:00 +0060" {{{size}}}',
    ]
    script = [f"a LOGIN {user} x", "b SELECT INBOX", *keywords, *dates, "h NOOP"]
    with SMTPSink() as sink:
        sink.deliver(MESSAGES[0], to=user)
        ours = run(script, Endpoint("imap", sink.imap.host, sink.imap.port))
    # Dovecot asks for each message: sent after its "+", then h.
    theirs_script = [line for date in dates for line in (date, MESSAGES[2].decode())]
    theirs = masked(
        run(
            [*script[:4], *theirs_script, "h NOOP"],
            Endpoint("imap", dovecot.host, dovecot.imap_port),
        ),
        text=True,
    )
    for command in keywords:
        tag = command.split()[0]
        assert f"S: {tag} NO [CANNOT] <text>" in theirs
        assert any(line.startswith(f"S: {tag} BAD Invalid flag") for line in ours)
    for command in dates:
        tag = command.split()[0]
        assert any(line.startswith(f"S: {tag} OK [APPENDUID") for line in theirs)
        assert any(line.startswith(f"S: {tag} BAD Invalid date-time") for line in ours)
    assert not any(line.startswith("S: +") for line in ours)
    assert ours[-1] == "S: h OK NOOP completed"


def test_an_empty_folder_name_is_refused_as_dovecot_refuses_it(
    dovecot: Dovecot,
) -> None:
    # The sink answered "NO [NONEXISTENT] No such folder: ", naming nothing.
    user = "empty-name"
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES[:1])
    script = [
        f"a LOGIN {user} x",
        'b SELECT ""',
        'c EXAMINE ""',
        'd DELETE ""',
        'e STATUS "" (MESSAGES)',
        'f RENAME "" x',
        'g CREATE ""',
        "h SELECT INBOX",
        'i COPY 1 ""',
        "j LOGOUT",
    ]
    ours, theirs = on_both(script, dovecot, user, MESSAGES[:1])
    assert masked(ours, capabilities=True, text=True) == masked(
        theirs, capabilities=True, text=True
    )
    for tag in "bcdef":
        assert f"S: {tag} NO [CANNOT] The folder name is empty" in ours


def test_an_empty_user_name_fails_as_on_dovecot(dovecot: Dovecot) -> None:
    # LOGIN with an empty user, AUTHENTICATE PLAIN with one (authzid NUL
    # user NUL password): no mailbox to open, so no login.
    script = [
        "a AUTHENTICATE PLAIN",
        "AAB4",
        "b AUTHENTICATE PLAIN AAB4",
        'c LOGIN "" x',
        "d NAMESPACE",
        "e LOGOUT",
    ]
    ours, theirs = masked_on_both(script, dovecot)
    assert ours == theirs
    assert "S: d BAD <text>" in ours  # still not logged in


def test_status_with_no_item_or_one_twice_answers_as_dovecot(
    dovecot: Dovecot,
) -> None:
    user = "status-items"
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES[:1])
    script = [
        f"a LOGIN {user} x",
        "b STATUS INBOX ()",
        "c STATUS INBOX (MESSAGES MESSAGES unseen)",
        "d LOGOUT",
    ]
    ours, theirs = masked_on_both(script, dovecot, user, MESSAGES[:1])
    assert ours == theirs
    assert "S: b BAD <text>" in ours


def test_id_fields_that_are_no_strings_are_bad_as_on_dovecot(
    dovecot: Dovecot,
) -> None:
    script = [
        'a ID ("name" "client" "version" NIL)',
        "b ID (name client)",
        'c ID (("name") "client")',
        'd ID ("name" ("client"))',
        "e ID NIL",
        "f LOGOUT",
    ]
    ours, theirs = masked_on_both(script, dovecot)
    assert ours == theirs
    assert ours.count("S: * ID <id>") == 2  # a and e
    assert [line for line in ours if " BAD " in line] == [
        "S: b BAD <text>",
        "S: c BAD <text>",
        "S: d BAD <text>",
    ]


def test_a_trailing_delimiter_is_cannot_except_in_create_as_on_dovecot(
    dovecot: Dovecot,
) -> None:
    # Only CREATE takes "Box/" for Box (RFC 3501 6.3.3); the sink took it
    # everywhere, so a client that sent it went unnoticed.
    user = "trailing-delimiter"
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES[:1])
    script = [
        f"a LOGIN {user} x",
        "b CREATE Box/",
        "c STATUS Box/ (MESSAGES)",
        "d EXAMINE Box/",
        "e APPEND Box/ {3+}\r\nabc",
        "f RENAME Box/ Cox",
        "g RENAME Box Cox/",
        "h DELETE Box/",
        "i SELECT INBOX",
        "j COPY 1 Box/",
        "k MOVE 1 Box/",
        "l STATUS Box (MESSAGES)",
        "m LOGOUT",
    ]
    ours, theirs = masked_on_both(script, dovecot, user, MESSAGES[:1])
    assert ours == theirs
    refused = [line for line in ours if " NO [CANNOT] " in line]
    assert [line.split(" ")[1] for line in refused] == list("cdefghjk")
    assert "S: * STATUS Box (MESSAGES 0)" in ours


def test_a_folder_name_with_whitespace_at_an_edge_is_taken_as_on_dovecot(
    dovecot: Dovecot,
) -> None:
    # RFC 3501 allows it and Dovecot makes it, so the IMAP server does too
    # (only deliver(folder=) refuses one: a test means the name without).
    user = "padded-name"
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES[:1])
    script = [
        f"a LOGIN {user} x",
        'b CREATE " Archive"',
        'c CREATE "Trail "',
        'd CREATE "x / y"',
        'e RENAME "Trail " "  Two"',
        "f SELECT INBOX",
        'g COPY 1 " Archive"',
        'h STATUS " Archive" (MESSAGES)',
        'i STATUS "  Two" (MESSAGES)',
        'j STATUS "x / y" (MESSAGES)',
        "k LOGOUT",
    ]
    # The sink's UIDs are its own (docs/reading.rst).
    copyuid = [(r"\[COPYUID [^\]]*\]", "[COPYUID <uids>]")]
    ours, theirs = masked_on_both(script, dovecot, user, MESSAGES[:1], copyuid)
    assert ours == theirs
    assert 'S: * STATUS " Archive" (MESSAGES 1)' in ours


def test_8bit_text_in_an_atom_is_bad_as_on_dovecot(dovecot: Dovecot) -> None:
    # Atoms are 7-bit: a search string or user name with UTF-8 in it goes
    # quoted or as a literal, and a client that sends it bare hears BAD.
    user = "eight-bit-atoms"
    dovecot.reset(user)
    message = b"Subject: =?utf-8?q?=C3=BCmlaut?=\r\n\r\nx\r\n"
    dovecot.seed(user, [message])
    script = [
        "a LOGIN j\u00f6rg x",
        "b LOGIN x p\u00e4ss",
        f"c LOGIN {user} x",
        "d SELECT INBOX",
        "e SEARCH CHARSET UTF-8 SUBJECT \u00fcmlaut",
        'f SEARCH CHARSET UTF-8 SUBJECT "\u00fcmlaut"',
        "g LOGOUT",
    ]
    ours, theirs = masked_on_both(script, dovecot, user, [message])
    assert ours == theirs
    assert [line.split(" ")[1] for line in ours if " BAD " in line] == list("abe")
    assert "S: * SEARCH 1" in ours


def test_fetch_items_come_in_dovecot_s_order(dovecot: Dovecot) -> None:
    # RFC 3501 leaves the order to the server; some clients read the UID
    # first. UID FETCH put the UID last (or where asked) and a \Seen that a
    # FETCH set before everything; Dovecot sends the UID first, then the
    # short items as asked, then those flags, then ENVELOPE and literals.
    user = "fetch-order"
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES)
    script = [
        f"a LOGIN {user} x",
        "b SELECT INBOX",
        "c UID FETCH 1 (FLAGS)",
        "d UID FETCH 1 (FLAGS UID)",
        "e FETCH 1 (FLAGS UID)",  # no UID FETCH: as asked
        "f UID FETCH 1 (BODY[TEXT])",
        "g UID FETCH 2 (RFC822.SIZE BODY[1] UID)",
        "h FETCH 3 (ENVELOPE BODY[TEXT] INTERNALDATE)",
        "i FETCH 1 (BODY.PEEK[TEXT] FLAGS UID)",
        "j UID FETCH 1:3 FAST",
        "k LOGOUT",
    ]
    ours, theirs = masked_on_both(script, dovecot, user, MESSAGES)
    assert ours == theirs
    assert "S: * 1 FETCH (UID 1 FLAGS (\\Recent))" in ours
    assert "S: * 1 FETCH (FLAGS (\\Recent) UID 1)" in ours
    assert "S: * 1 FETCH (UID 1 FLAGS (\\Seen \\Recent) BODY[TEXT] {12}" in ours
    assert any(
        line.startswith(
            "S: * 3 FETCH (INTERNALDATE <date> FLAGS (\\Seen \\Recent) ENVELOPE ("
        )
        for line in ours
    )


def test_an_item_asked_twice_is_answered_once_as_dovecot(dovecot: Dovecot) -> None:
    # The sink answered each copy: "FLAGS (...) FLAGS (...)". Dovecot sends
    # such an item once, where it was first asked, but a body section as
    # often as it was asked.
    user = "fetch-twice"
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES)
    script = [
        f"a LOGIN {user} x",
        "b SELECT INBOX",
        "c FETCH 1 (FLAGS FLAGS)",
        "d UID FETCH 1 (UID FLAGS UID RFC822.SIZE)",
        "e FETCH 1 (BODY.PEEK[TEXT] FLAGS BODY.PEEK[TEXT])",
        "f FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[HEADER.FIELDS "
        "(SUBJECT)])",
        "g FETCH 1 FAST",
        "h LOGOUT",
    ]
    ours, theirs = masked_on_both(script, dovecot, user, MESSAGES)
    assert ours == theirs
    assert "S: * 1 FETCH (FLAGS (\\Recent))" in ours


def test_store_answers_only_for_flags_it_changed_as_dovecot(
    dovecot: Dovecot,
) -> None:
    # RFC 3501: STORE "normally" returns the updated flags. The sink sent a
    # FETCH for every message named, even where nothing changed (+FLAGS
    # (), a flag already set); Dovecot sends one only for a message whose
    # flags changed, and a UID STORE's with the UID first.
    user = "store-changed"
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES)
    script = [
        f"a LOGIN {user} x",
        "b SELECT INBOX",
        "c STORE 1 +FLAGS ()",
        "d STORE 1 -FLAGS ()",
        "e STORE 1 FLAGS ()",
        "f STORE 1 +FLAGS (\\Seen)",
        "g STORE 1 +FLAGS (\\Seen)",  # set already
        "h STORE 1:3 +FLAGS (\\Seen)",  # 2 and 3 change
        "i STORE 1 -FLAGS (\\Flagged)",  # not set
        "j STORE 2 FLAGS (\\Seen)",  # the same flags
        "k UID STORE 1:2 FLAGS (\\Seen \\Answered)",
        "l UID STORE 1 +FLAGS ()",
        "m FETCH 1:3 FLAGS",
        "n LOGOUT",
    ]
    ours, theirs = masked_on_both(script, dovecot, user, MESSAGES)
    assert ours == theirs
    for tag in "cdegijl":
        answer = ours.index(
            next(line for line in ours if line.startswith(f"C: {tag} "))
        )
        assert ours[answer + 1] == f"S: {tag} OK <text>", tag
    assert "S: * 1 FETCH (UID 1 FLAGS (\\Answered \\Seen \\Recent))" in ours


def test_store_without_flags_is_bad_where_dovecot_clears_them(
    dovecot: Dovecot,
) -> None:
    # Kept on purpose (docs/reading.rst): RFC 3501's STORE needs flags, a
    # list or at least one. Dovecot reads none as "()": its "STORE 1 FLAGS"
    # clears every flag. The sink says BAD and changes nothing.
    user = "store-no-flags"
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES[:1], flags=["\\Seen", "\\Flagged"])
    refused = ["c STORE 1 FLAGS", "d STORE 1 +FLAGS", "e STORE 1 -FLAGS.SILENT"]
    script = [f"a LOGIN {user} x", "b SELECT INBOX", *refused, "f FETCH 1 FLAGS"]
    with SMTPSink() as sink:
        sink.deliver(MESSAGES[0], to=user, flags={"\\Seen", "\\Flagged"})
        ours = run(script, Endpoint("imap", sink.imap.host, sink.imap.port))
        sink.mailbox(user).assert_in(subject="one", flags={"\\Seen", "\\Flagged"})
    theirs = masked(
        run(script, Endpoint("imap", dovecot.host, dovecot.imap_port)), text=True
    )
    for command in refused:
        tag, _, _, item = command.split()
        assert f"S: {tag} OK <text>" in theirs
        assert (
            f"S: {tag} BAD STORE {item} needs flags after it: a list such as "
            "(\\Seen), or () for none (RFC 3501)" in ours
        )
    assert theirs[-2:] == ["S: * 1 FETCH (FLAGS (\\Recent))", "S: f OK <text>"]
    assert ours[-2:] == [
        "S: * 1 FETCH (FLAGS (\\Flagged \\Seen \\Recent))",
        "S: f OK FETCH completed",
    ]


def test_subscribe_and_unsubscribe_answer_as_dovecot(dovecot: Dovecot) -> None:
    # Dovecot's SUBSCRIBE of a name without a folder, the empty one
    # included, is a plain NO; the sink said NO [NONEXISTENT] and, for "",
    # NO [CANNOT]. Its UNSUBSCRIBE of a name that is not subscribed is OK
    # (the name is not subscribed afterwards), where the sink said NO
    # [NONEXISTENT]; a name no folder could have is NO [CANNOT] on both.
    user = "subscribe-answers"
    dovecot.reset(user)
    script = [
        f"a LOGIN {user} x",
        'b SUBSCRIBE ""',
        "c SUBSCRIBE Nowhere",
        "d SUBSCRIBE a//b",
        "e CREATE Box",
        "f UNSUBSCRIBE Box",  # never subscribed
        "g UNSUBSCRIBE Nowhere",
        'h UNSUBSCRIBE ""',
        "i UNSUBSCRIBE a//b",
        "j SUBSCRIBE Box",
        "k UNSUBSCRIBE Box",
        "l UNSUBSCRIBE Box",  # again
        'm LSUB "" B*',
        "n LOGOUT",
    ]
    ours, theirs = on_both(script, dovecot)
    assert "S: b NO The folder name is empty" in ours
    assert "S: c NO No such folder: Nowhere" in ours
    ours, theirs = (
        masked(transcript, capabilities=True, text=True)
        for transcript in (ours, theirs)
    )
    assert ours == theirs
    assert "S: g OK <text>" in ours
    assert "S: h NO [CANNOT] <text>" in ours
    assert "S: i NO [CANNOT] <text>" in ours


def test_keywords_are_listed_in_the_order_the_folder_got_them(
    dovecot: Dovecot,
) -> None:
    # The sink sorted keywords (upper case first); Dovecot lists them in the
    # order its folder first had them, in FLAGS and in a message's flags,
    # and keeps one in FLAGS that no message has any more.
    user = "keyword-order"
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES[:2])
    size = len(MESSAGES[2])
    script = [
        f"a LOGIN {user} x",
        "b SELECT INBOX",
        "c STORE 1 +FLAGS (zeta alpha Mid \\Seen)",
        "d STORE 2 +FLAGS (beta alpha)",
        "e STORE 1 +FLAGS beta",
        "f STORE 1:2 -FLAGS (zeta)",
        "g FETCH 1:2 FLAGS",
        "h CREATE Other",
        f"i APPEND Other (omega beta) {{{size}+}}\r\n{MESSAGES[2].decode()}",
        "j COPY 1 Other",
        "k SELECT Other",  # omega, beta, then 1's alpha and Mid in INBOX's order
        "l FETCH 1:* FLAGS",
        "m SELECT INBOX",  # zeta is still listed
        "n LOGOUT",
    ]
    ours, theirs = masked_on_both(script, dovecot, user, MESSAGES[:2], KEPT_UIDS)
    # The [CLOSED] of a SELECT in a selected state is CONDSTORE's (kept).
    theirs = [line for line in theirs if line != "S: * OK [CLOSED] <text>"]
    assert ours == theirs
    assert "S: * 1 FETCH (FLAGS (\\Seen \\Recent alpha Mid beta))" in ours
    assert "S: * 2 FETCH (FLAGS (\\Recent alpha beta))" in ours
    # The copy: its keywords in its new folder's order.
    assert "S: * 2 FETCH (FLAGS (\\Seen \\Recent beta alpha Mid))" in ours
    flags = [line for line in ours if line.startswith("S: * FLAGS ")]
    assert flags[-2:] == [
        "S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft omega beta alpha Mid)",
        "S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft zeta alpha Mid beta)",
    ]


def test_keywords_are_one_whatever_their_case_as_on_dovecot(
    dovecot: Dovecot,
) -> None:
    # Keywords are atoms, compared without regard to case: $label is the
    # folder's $Label, in STORE, APPEND and COPY, and -FLAGS takes it away.
    user = "keyword-case"
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES[:2])
    size = len(MESSAGES[2])
    script = [
        f"a LOGIN {user} x",
        "b SELECT INBOX",
        "c STORE 1 +FLAGS ($Label Junk)",
        "c2 STORE 1 +FLAGS ($LABEL)",  # nothing new: no FETCH
        "d STORE 2 +FLAGS ($label junk)",
        "e FETCH 1:2 FLAGS",
        "f STORE 1 -FLAGS ($LABEL)",
        "g STORE 2 FLAGS (JUNK $label)",
        "h FETCH 1:2 FLAGS",
        "i CREATE Other",
        f"j APPEND Other ($LABEL) {{{size}+}}\r\n{MESSAGES[2].decode()}",
        "k COPY 2 Other",
        "l SELECT Other",
        "m FETCH 1:* FLAGS",
        "n SEARCH KEYWORD $label",
        "o LOGOUT",
    ]
    ours, theirs = masked_on_both(script, dovecot, user, MESSAGES[:2], KEPT_UIDS)
    theirs = [line for line in theirs if line != "S: * OK [CLOSED] <text>"]
    assert ours == theirs
    assert "S: * 2 FETCH (FLAGS (\\Recent $Label Junk))" in ours


def test_a_bare_cr_is_bad_and_named_as_on_dovecot(dovecot: Dovecot) -> None:
    # Only CRLF ends a line. A CR without its LF is BAD on both; the sink
    # said it "found the end" there, where Dovecot says "CR sent without
    # LF". (Dovecot's NOOP takes one as an argument it ignores; the sink
    # refuses arguments there, docs/reading.rst.)
    user = "bare-cr"
    dovecot.reset(user)
    script = [
        f"a LOGIN {user} x",
        "b SELECT INBOX\r",
        "c NO\rOP",
        "d LIST \r *",
        "e LOGOUT",
    ]
    ours, theirs = on_both(script, dovecot)
    assert "S: b BAD Expected a space at byte 14, found a CR without its LF" in ours
    assert masked(ours, capabilities=True, text=True) == masked(
        theirs, capabilities=True, text=True
    )


#: Each run after another session expunged message 1 of two (the session
#: still numbers it, RFC 3501 7.4.1), then STATUS of the target folder.
EXPUNGED_ELSEWHERE = [
    "x FETCH 1:2 (FLAGS BODY.PEEK[HEADER])",
    "x UID FETCH 1:2 (FLAGS BODY.PEEK[HEADER])",
    "x STORE 1:2 +FLAGS (\\Seen)",
    "x COPY 1:2 Other",
    "x COPY 1 Other",
    "x UID COPY 1:2 Other",
    "x MOVE 1:2 Other",
    "x UID MOVE 1:2 Other",
]


def _expunged_elsewhere(endpoint: Endpoint, user: str, command: str) -> list[str]:
    """``command`` in a session of ``user`` after another session expunged
    message 1 (of two) that this one still numbers: the transcript from
    ``command`` on."""
    other = [
        f"o1 LOGIN {user} x",
        "o2 SELECT INBOX",
        "o3 STORE 1 +FLAGS.SILENT (\\Deleted)",
        "o4 EXPUNGE",
        "o5 LOGOUT",
    ]
    script = [f"a LOGIN {user} x", "b CREATE Other", "c SELECT INBOX", command]
    script.append("y STATUS Other (MESSAGES)")
    transcript = run(script, endpoint, before={command: lambda: run(other, endpoint)})
    return transcript[transcript.index(f"C: {command}") :]


def test_copy_of_a_message_expunged_elsewhere_is_no_expungeissued_as_on_dovecot(
    dovecot: Dovecot,
) -> None:
    """Another session expunged a message this one still numbers: COPY and
    MOVE of a set that holds it fail with ``NO [EXPUNGEISSUED]`` and copy
    nothing (RFC 3501: a failed COPY leaves the target as it was), as on
    Dovecot; FETCH completes with ``OK [EXPUNGEISSUED]`` (Dovecot answers
    its body NIL, the sink, which still has it, its bytes, as RFC 2180
    4.1.1 allows), UID FETCH too (after the ``* 1 EXPUNGE`` it may send);
    STORE completes with a plain ``OK``."""
    ours: list[list[str]] = []
    theirs: list[list[str]] = []
    for number, command in enumerate(EXPUNGED_ELSEWHERE):
        user = f"expunged-{number}"
        dovecot.reset(user)
        dovecot.seed(user, MESSAGES[:2])
        with SMTPSink() as sink:
            for message in MESSAGES[:2]:
                sink.deliver(message, to=user)
            endpoint = Endpoint("imap", sink.imap.host, sink.imap.port)
            ours.append(_expunged_elsewhere(endpoint, user, command))
        endpoint = Endpoint("imap", dovecot.host, dovecot.imap_port)
        theirs.append(_expunged_elsewhere(endpoint, user, command))

    def outcome(transcript: list[str]) -> list[str]:
        # The completions and the target's count: untagged lines differ in
        # what the two may (FETCH data, RECENT, Dovecot's FETCH after STORE).
        return [
            line
            for line in masked(transcript, text=True)
            if line.startswith(("C: ", "S: x ", "S: y ", "S: * STATUS"))
        ]

    assert [outcome(t) for t in ours] == [outcome(t) for t in theirs]
    copy = outcome(ours[EXPUNGED_ELSEWHERE.index("x COPY 1:2 Other")])
    assert copy[1:] == [
        "S: x NO [EXPUNGEISSUED] <text>",
        "C: y STATUS Other (MESSAGES)",
        "S: * STATUS Other (MESSAGES 0)",
        "S: y OK <text>",
    ]
    fetched = ours[0]
    assert any(line.startswith("S: x OK [EXPUNGEISSUED] ") for line in fetched)
    assert "S: * 1 EXPUNGE" in ours[1]
    assert outcome(ours[1])[1] == "S: x OK [EXPUNGEISSUED] <text>"


def _with_new_mail(
    script: list[str],
    dovecot: Dovecot,
    user: str,
    at: str,
    also: list[str] | None = None,
) -> tuple[list[str], list[str]]:
    """``script`` on a fresh sink and on Dovecot, both with `MESSAGES` of
    ``user``; just before the line ``at``, one more message arrives and,
    with ``also``, another session of ``user`` runs those commands. The two
    transcripts, masked."""
    new = b"Subject: four\r\n\r\nfourth\r\n"
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES)

    def before(endpoint: Endpoint, deliver: Callable[[], object]) -> None:
        deliver()
        if also is not None:
            run([f"o1 LOGIN {user} x", *also, "o9 LOGOUT"], endpoint)

    with SMTPSink() as sink:
        for message in MESSAGES:
            sink.deliver(message, to=user)
        endpoint = Endpoint("imap", sink.imap.host, sink.imap.port)
        ours = run(
            script,
            endpoint,
            before={at: lambda: before(endpoint, lambda: sink.deliver(new, to=user))},
        )
    endpoint = Endpoint("imap", dovecot.host, dovecot.imap_port)
    theirs = run(
        script,
        endpoint,
        before={at: lambda: before(endpoint, lambda: dovecot.seed(user, [new]))},
    )
    return (
        masked(ours, capabilities=True, text=True),
        masked(theirs, capabilities=True, text=True),
    )


def test_new_mail_is_recent_to_one_session_only_as_on_dovecot(
    dovecot: Dovecot,
) -> None:
    """New mail is \\Recent to one session only (RFC 3501 2.3.2), the first
    to select the folder after it came, as on Dovecot; the session that
    was selected before it hears of it with ``EXISTS`` and fetches it
    without \\Recent. An EXPUNGE of a \\Recent message while new mail came
    is answered as on Dovecot too. Kept (docs/reading.rst): the sink says
    ``* n RECENT`` with every ``EXISTS``, Dovecot only when the count
    changed; the count is the same."""

    def without_recent(transcript: list[str]) -> list[str]:
        # After SELECT (whose RECENT both send).
        selected = transcript.index("S: b OK [READ-WRITE] <text>") + 1
        return transcript[:selected] + [
            line
            for line in transcript[selected:]
            if not re.fullmatch(r"S: \* \d+ RECENT", line)
        ]

    script = [
        "a LOGIN recent-once x",
        "b SELECT INBOX",
        "c NOOP",
        "d FETCH 1:* (FLAGS)",
        "f LOGOUT",
    ]
    ours, theirs = _with_new_mail(
        script, dovecot, "recent-once", "c NOOP", also=["o2 SELECT INBOX"]
    )
    assert without_recent(ours) == without_recent(theirs)
    noop = ours[ours.index("C: c NOOP") + 1 : ours.index("C: d FETCH 1:* (FLAGS)")]
    assert noop == ["S: * 4 EXISTS", "S: * 3 RECENT", "S: c OK <text>"]
    assert "S: * 3 FETCH (FLAGS (\\Recent))" in ours
    assert "S: * 4 FETCH (FLAGS ())" in ours

    script = [
        "a LOGIN recent-expunged x",
        "b SELECT INBOX",
        "c STORE 1 +FLAGS.SILENT (\\Deleted)",
        "d EXPUNGE",
        "e FETCH 3 (FLAGS)",
        "f LOGOUT",
    ]
    ours, theirs = _with_new_mail(script, dovecot, "recent-expunged", "d EXPUNGE")
    assert without_recent(ours) == without_recent(theirs)
    expunge = ours[ours.index("C: d EXPUNGE") + 1 : ours.index("C: e FETCH 3 (FLAGS)")]
    assert expunge == [
        "S: * 1 EXPUNGE",
        "S: * 3 EXISTS",
        "S: * 3 RECENT",
        "S: d OK <text>",
    ]
    assert "S: * 3 FETCH (FLAGS (\\Recent))" in ours


def test_uid_commands_announce_an_expunge_elsewhere_as_dovecot_does(
    dovecot: Dovecot,
) -> None:
    """Another session expunged message 2 (of three): UID FETCH, UID STORE
    and UID SEARCH say ``* 2 EXPUNGE`` before their completion, as Dovecot
    does (RFC 3501 7.4.1: a UID command may), so the client's numbers are
    right at once; FETCH, STORE and SEARCH may not, and leave it to the
    next command (NOOP here)."""
    commands = [
        "x UID FETCH 1:* (FLAGS)",
        "x UID STORE 1:* +FLAGS (\\Flagged)",
        "x UID STORE 2 +FLAGS (\\Flagged)",
        "x UID SEARCH ALL",
        "x FETCH 1:* (UID)",
        "x STORE 1 +FLAGS (\\Flagged)",
        "x SEARCH ALL",
    ]
    other = [
        "o2 SELECT INBOX",
        "o3 STORE 2 +FLAGS.SILENT (\\Deleted)",
        "o4 EXPUNGE",
    ]

    def outcome(transcript: list[str]) -> list[str]:
        # The commands, the EXPUNGEs and the completions' status.
        return [
            re.sub(r"^(S: [xy] \w+) .*", r"\1", line)
            for line in transcript
            if line.startswith(("C: x", "C: y", "S: x ", "S: y "))
            or re.fullmatch(r"S: \* \d+ EXPUNGE", line)
        ]

    def session(endpoint: Endpoint, user: str, command: str) -> list[str]:
        script = [f"a LOGIN {user} x", "b SELECT INBOX", command, "y NOOP"]

        def expunge_elsewhere() -> None:
            run([f"o1 LOGIN {user} x", *other], endpoint)

        return outcome(run(script, endpoint, before={command: expunge_elsewhere}))

    ours: list[list[str]] = []
    theirs: list[list[str]] = []
    for number, command in enumerate(commands):
        user = f"uid-expunged-{number}"
        dovecot.reset(user)
        dovecot.seed(user, MESSAGES)
        with SMTPSink() as sink:
            for message in MESSAGES:
                sink.deliver(message, to=user)
            endpoint = Endpoint("imap", sink.imap.host, sink.imap.port)
            ours.append(session(endpoint, user, command))
        endpoint = Endpoint("imap", dovecot.host, dovecot.imap_port)
        theirs.append(session(endpoint, user, command))
    assert ours == theirs
    assert ours[0] == [
        "C: x UID FETCH 1:* (FLAGS)",
        "S: * 2 EXPUNGE",
        "S: x OK",
        "C: y NOOP",
        "S: y OK",
    ]
    assert ours[-1] == [
        "C: x SEARCH ALL",
        "S: x OK",
        "C: y NOOP",
        "S: * 2 EXPUNGE",
        "S: y OK",
    ]


def test_internaldate_is_the_instant_delivered_or_appended_as_on_dovecot(
    dovecot: Dovecot,
) -> None:
    """A delivered message's date in a zone whose offset has seconds (local
    mean time, as zoneinfo gives it before 1900 or so: Amsterdam was
    +00:19:32) is shown in UTC: IMAP's zone is hours and minutes, and the
    sink showed the local time with the seconds cut from the zone, 30
    seconds off here, and a day off for SEARCH ON. Dovecot shows the same
    instant (in its own zone); the sink's APPEND keeps a client's zone."""
    user = "zone-seconds"
    zone = datetime.timezone(datetime.timedelta(seconds=-30))
    # 23:59:50 local is 00:00:20 UTC of the next day.
    date = datetime.datetime(2020, 5, 31, 23, 59, 50, tzinfo=zone)
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES[:1], date=date)
    appended = MESSAGES[2].decode()
    script = [
        f"a LOGIN {user} x",
        "b SELECT INBOX",
        "c FETCH 1 (INTERNALDATE)",
        "d SEARCH ON 1-Jun-2020",
        f'e APPEND INBOX "17-Jul-1996 02:44:25 -0700" {{{len(appended)}+}}\r\n'
        + appended,
        "f NOOP",
        "g FETCH 2 (INTERNALDATE)",
        "h LOGOUT",
    ]
    with SMTPSink() as sink:
        sink.deliver(MESSAGES[0], to=user, date=date)
        ours = run(script, Endpoint("imap", sink.imap.host, sink.imap.port))
    theirs = run(script, Endpoint("imap", dovecot.host, dovecot.imap_port))

    def internal_date(transcript: list[str], number: int = 1) -> datetime.datetime:
        (line,) = [
            line for line in transcript if line.startswith(f"S: * {number} FETCH")
        ]
        text = re.search(r'INTERNALDATE "([^"]+)"', line)
        assert text is not None, line
        return datetime.datetime.strptime(text.group(1), "%d-%b-%Y %H:%M:%S %z")

    assert internal_date(ours) == internal_date(theirs) == date
    assert 'S: * 1 FETCH (INTERNALDATE "01-Jun-2020 00:00:20 +0000")' in ours
    assert "S: * SEARCH 1" in ours
    # APPEND's date-time: the same instant; the sink keeps the client's zone
    # (Dovecot's Maildir keeps a file time, shown in Dovecot's zone).
    assert internal_date(ours, 2) == internal_date(theirs, 2)
    assert 'S: * 2 FETCH (INTERNALDATE "17-Jul-1996 02:44:25 -0700")' in ours


def _in_multipart(part: bytes) -> bytes:
    return (
        b"From: a@example.com\r\nSubject: outer\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        + part
        + b"\r\n--b\r\nContent-Type: text/plain\r\n\r\nafter\r\n--b--\r\n"
    )


#: message/rfc822 parts in a transfer encoding RFC 2046 forbids them
#: (base64, quoted-printable, an unknown one), and ones whose message has
#: no end of its header.
ENCODED_MESSAGES = [
    _in_multipart(
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"U3ViamVjdDogaW5uZXINCg0KaGVsbG8NCg==\r\nU3ViamVjdDogeA0KDQpib2R5DQo="
    ),
    _in_multipart(
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: BASE64\r\n\r\n"
    ),
    _in_multipart(
        b"Content-Type: message/rfc822\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"Subject: inner=20qp\r\n\r\nbody=3D\r\n"
    ),
    _in_multipart(
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: x-unknown\r\n"
        b"\r\nSubject: enc\r\n\r\nbody"
    ),
    _in_multipart(b"Content-Type: message/rfc822\r\n\r\nSubject: only\r\nX-A: b"),
    _in_multipart(b"Content-Type: message/rfc822\r\n\r\nSubject: only\r\nX-A: b\r\n"),
    _in_multipart(
        b"Content-Type: message/rfc822\r\n\r\n"
        b"Content-Type: message/rfc822\r\n\r\nSubject: deep"
    ),
    _in_multipart(
        b"Content-Type: message/rfc822\r\n\r\n"
        b"Content-Type: message/rfc822\r\n\r\n"
        b'Content-Type: multipart/mixed; boundary="c"\r\n\r\n'
        b"--c\r\n\r\ndeepest\r\n--c--"
    ),
    b"From: a@example.com\r\nSubject: single\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"U3ViamVjdDogaW5uZXINCg0KaGVsbG8NCg==\r\n",
]


def test_an_encoded_message_rfc822_part_is_described_as_dovecot_does(
    dovecot: Dovecot,
) -> None:
    """A message/rfc822 part in base64 (RFC 2046 forbids it, mail has it)
    is a message part in BODYSTRUCTURE: its envelope, body and lines, read
    from its bytes as they are, as Dovecot does; the sink gave the basic
    form, which RFC 3501's grammar has no room for: a client reads an
    envelope after "message" "rfc822" (body-type-msg) and found none. A part
    whose message has no end of header counts the line break before the
    next delimiter, as on Dovecot."""
    user = "encoded-rfc822"
    dovecot.reset(user)
    dovecot.seed(user, ENCODED_MESSAGES)
    script = [
        f"a LOGIN {user} x",
        "b EXAMINE INBOX",
        "c FETCH 1:* (BODYSTRUCTURE)",
        "d FETCH 1:* (BODY)",
        "e FETCH 1:* (BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[1.HEADER] "
        "BODY.PEEK[1.TEXT] BODY.PEEK[1.1] BODY.PEEK[1.1.HEADER] BODY.PEEK[2])",
        "f LOGOUT",
    ]
    ours, theirs = masked_on_both(script, dovecot, user, ENCODED_MESSAGES)
    assert ours == theirs
    assert (
        'S: * 1 FETCH (BODYSTRUCTURE (("message" "rfc822" NIL NIL NIL "base64" 68 '
        "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) "
        '("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) '
        "2 NIL NIL NIL NIL)"
    ) in "\n".join(ours)


def test_one_content_language_is_a_list_as_on_dovecot(dovecot: Dovecot) -> None:
    # The sink gave a single language as a bare string ("fr"), which RFC
    # 3501 allows; Dovecot gives a list: a client indexing it got "f".
    user = "one-language"
    dovecot.reset(user)
    messages = [
        b"Subject: lang\r\nContent-Language: fr\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nbonjour\r\n",
        b"Subject: langs\r\nContent-Language: fr, de\r\n"
        b"Content-Type: text/plain\r\n\r\nhallo\r\n",
    ]
    dovecot.seed(user, messages)
    script = [f"a LOGIN {user} x", "b EXAMINE INBOX", "c FETCH 1:* (BODYSTRUCTURE)"]
    ours, theirs = masked_on_both(script, dovecot, user, messages)
    assert ours == theirs
    assert ' NIL ("fr") NIL))' in "\n".join(ours)


def test_header_keys_search_values_with_blanks_squeezed_as_dovecot(
    dovecot: Dovecot,
) -> None:
    # A Subject folded with a tab (as Outlook folds) or written with two
    # spaces was not found by "order number"; Dovecot finds both, and takes
    # the search string as sent ("your  order" finds nothing there).
    user = "squeezed-blanks"
    dovecot.reset(user)
    messages = [
        b"Subject: Your order\r\n\tnumber 12345\r\nFrom: Ann\r\n\t<ann@example.com>\r\n\r\nx\r\n",
        b"Subject: Your  order number\r\n\r\nx\r\n",
        b"Subject: Your order number\r\n\r\nx\r\n",
    ]
    dovecot.seed(user, messages)
    script = [
        f"a LOGIN {user} x",
        "b SELECT INBOX",
        'c SEARCH SUBJECT "order number"',
        'd SEARCH HEADER SUBJECT "order number"',
        'e SEARCH FROM "ann <ann"',
        'f SEARCH SUBJECT "your  order"',
        "g SEARCH SUBJECT {12+}\r\norder\tnumber",
        'h SEARCH OR SUBJECT "x y" SUBJECT "your order"',
        "i LOGOUT",
    ]
    ours, theirs = masked_on_both(script, dovecot, user, messages)
    assert ours == theirs
    assert [line for line in ours if line.startswith("S: * SEARCH")] == [
        "S: * SEARCH 1 2 3",
        "S: * SEARCH 1 2 3",
        "S: * SEARCH 1",
        "S: * SEARCH",
        "S: * SEARCH",
        "S: * SEARCH 1 2 3",
    ]


def test_body_keys_find_utf8_words_in_8bit_text_labelled_us_ascii_as_dovecot(
    dovecot: Dovecot,
) -> None:
    # An 8-bit body with no charset (US-ASCII by default) or labelled
    # us-ascii was read as US-ASCII, so its UTF-8 words were never found;
    # Dovecot finds them.
    user = "eight-bit-ascii"
    dovecot.reset(user)
    messages = [
        b"Subject: none\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n",
        b"Subject: ascii\r\nContent-Type: text/plain; charset=us-ascii\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9 Gr\xc3\xbc\xc3\x9fe\r\n",
        b"Subject: plain\r\n\r\nGruesse\r\n",
        # Another name of ASCII: both read no 8-bit text in it.
        b"Subject: us\r\nContent-Type: text/plain; charset=ANSI_X3.4-1968\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9\r\n",
        # An encoded word labelled us-ascii holding UTF-8.
        b"Subject: =?us-ascii?q?caf=C3=A9?=\r\n\r\nx\r\n",
    ]
    dovecot.seed(user, messages)
    script = [
        f"a LOGIN {user} x",
        "b SELECT INBOX",
        "c SEARCH CHARSET UTF-8 BODY {7+}\r\nGr\u00fc\u00dfe",
        "d SEARCH CHARSET UTF-8 TEXT {5+}\r\ncaf\u00e9",
        "e SEARCH BODY Gr",
        "f SEARCH CHARSET UTF-8 SUBJECT {5+}\r\ncaf\u00e9",
        "g LOGOUT",
    ]
    ours, theirs = masked_on_both(script, dovecot, user, messages)
    assert ours == theirs
    assert [line for line in ours if line.startswith("S: * SEARCH")] == [
        "S: * SEARCH 1 2",
        "S: * SEARCH 2 5",
        "S: * SEARCH 1 2 3",
        "S: * SEARCH 5",
    ]


def _holding_multipart(ending: bytes) -> bytes:
    return (
        b'Content-Type: multipart/alternative; boundary="c"\r\n\r\n'
        b"--c\r\n\r\nplain\r\n--c\r\nContent-Type: text/html\r\n\r\n<p>h</p>\r\n"
        + ending
    )


def _python_built() -> bytes:
    message = EmailMessage()
    message["From"] = "a@example.com"
    message["Subject"] = "built"
    message.set_content("plain")
    message.add_alternative("<p>h</p>", subtype="html")
    message.add_attachment(
        b"data", maintype="application", subtype="octet-stream", filename="x.bin"
    )
    return message.as_bytes().replace(b"\n", b"\r\n")


#: Parts that hold a multipart, with what follows its close-delimiter:
#: nothing, a blank line, an epilogue, trailing blanks, no close at all
#: (its last part then decides);
#: such a multipart inside a message/rfc822 part; multiparts with no
#: usable boundary.
NESTED_MESSAGES = [
    _in_multipart(_holding_multipart(b"--c--")),
    _in_multipart(_holding_multipart(b"--c--\r\n")),
    _in_multipart(_holding_multipart(b"--c--\r\nthe epilogue")),
    _in_multipart(_holding_multipart(b"--c--\r\nthe epilogue\r\n")),
    _in_multipart(_holding_multipart(b"--c--  ")),
    _in_multipart(_holding_multipart(b"--c--  \r\n\r\n")),
    _in_multipart(_holding_multipart(b"--c\r\n\r\nunclosed")),
    _in_multipart(_holding_multipart(b"--c\r\n\r\nunclosed\r\n")),
    _in_multipart(_holding_multipart(b"--c\r\nContent-Type: text/plain")),
    _in_multipart(
        _holding_multipart(
            b'--c\r\nContent-Type: multipart/mixed; boundary="e"\r\n\r\n'
            b"--e\r\n\r\nin e\r\n--e--"
        )
    ),
    _in_multipart(
        b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n"
        + _holding_multipart(b"--c--\r\n")
    ),
    _in_multipart(
        b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n"
        + _holding_multipart(b"--c--")
    ),
    _in_multipart(
        b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n"
        + _holding_multipart(b"--c--\r\nepilogue\r\n\r\n")
    ),
    _in_multipart(
        b'Content-Type: multipart/mixed; boundary="d"\r\n\r\n--d\r\n'
        + _holding_multipart(b"--c--\r\n\r\n")
        + b"\r\n--d--\r\n"
    ),
    _in_multipart(b"Content-Type: multipart/mixed\r\n\r\nno boundary\r\n"),
    _in_multipart(b'Content-Type: multipart/mixed; boundary="z"\r\n\r\nnone'),
    _python_built(),
]


def test_a_part_holding_a_multipart_ends_where_dovecot_ends_it(
    dovecot: Dovecot,
) -> None:
    """A part that holds a multipart ends, as on Dovecot (and by RFC 2046
    5.1.1, the line break before a delimiter being the delimiter's), before
    the line break that precedes the outer delimiter, when a blank line or
    an epilogue follows the inner close-delimiter; the sink served those
    two bytes in BODY[1] and counted them in BODYSTRUCTURE. This is what
    Python's email package writes for text, HTML and an attachment."""
    commands = [
        "c FETCH 1:* (BODYSTRUCTURE)",
        "d FETCH 1:* (BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[1.TEXT] "
        "BODY.PEEK[1.1] BODY.PEEK[1.2] BODY.PEEK[2])",
        "e FETCH 1:* (BODY.PEEK[1.1.1] BODY.PEEK[1.1.2] BODY.PEEK[1.2.1])",
    ]
    ours = same_as_dovecot(dovecot, "nested-endings", NESTED_MESSAGES, commands)
    # Python's message: its first part ends with the inner close-delimiter
    # line, not with the blank line after it.
    assert "S: * 17 FETCH (BODY[1] {317}" in ours


#: Address literals (RFC 5321 4.1.3), bare and in angle brackets.
LITERAL_ADDRESSES = [
    b"To: user@[IPv6:::1]\r\nSubject: bare v6\r\n\r\nbody\r\n",
    b"To: <user@[IPv6:2001:db8::1]>\r\n\r\nbody\r\n",
    b"From: Ann <ann@[IPv6:2001:db8::1]>\r\n\r\nbody\r\n",
    b"To: user@[127.0.0.1]\r\n\r\nbody\r\n",
    b"Cc: a@x.example, b@[IPv6:::1], c@x.example\r\n\r\nbody\r\n",
    b"To: Team: a@[IPv6:::1], b@x.example;\r\n\r\nbody\r\n",
]


def test_an_address_literal_is_one_domain_as_on_dovecot(dovecot: Dovecot) -> None:
    """The colons of a bare ``user@[IPv6:::1]`` started a group: ENVELOPE
    named a group "user@[IPv6" holding "::1]" at MISSING_DOMAIN."""
    commands = ["c FETCH 1:* (ENVELOPE)", 'd SEARCH TO "user@[IPv6:::1]"']
    ours = same_as_dovecot(dovecot, "literals", LITERAL_ADDRESSES, commands)
    assert '((NIL NIL "user" "[IPv6:::1]")) NIL NIL NIL NIL))' in "\n".join(ours)


#: Address headers with text the address grammar leaves out (helper-232 F2).
TRAILING_TEXT_ADDRESSES = [
    b"From: a@example.com, b@example.com extra\r\n",
    b"From: Ann <a@example.com> trailing\r\n",
    b"From: a@example.com;\r\n",
    b"From: a@example.com\rSubject: bare cr\r\n",
    # The next header holds an address, and a second <...> (review F5).
    b"From: a@x.example\rTo: b@y.example\r\n",
    b"From: Ann <a@x.example> <b@y.example>\r\n",
    # Dovecot stops reading the list at text after an address: the
    # addresses after it are left out (review helper-237 F5).
    b"From: a@x.example\rTo: b@y.example, c@z.example\r\n",
    b"From: a@x.example extra, b@y.example\r\n",
    b"From: Ann <a@x.example> junk, b@y.example\r\n",
    b"From: Ann <a@x.example> <b@y.example>, c@z.example\r\n",
]


def test_text_after_an_address_stays_out_of_it_as_on_dovecot(
    dovecot: Dovecot,
) -> None:
    """The sink glued trailing words into the domain ("example.comextra"),
    kept a ";" in it, named Ann "Ann trailing", and made a group of an
    address a bare CR ran into the next header's name."""
    messages = [h + b"To: t@x.example\r\n\r\nbody\r\n" for h in TRAILING_TEXT_ADDRESSES]
    ours = "\n".join(
        same_as_dovecot(dovecot, "trailing-text", messages, ["c FETCH 1:* (ENVELOPE)"])
    )
    assert '((NIL NIL "a" "example.com")(NIL NIL "b" "example.com"))' in ours
    assert '(("Ann" NIL "a" "example.com"))' in ours
    assert "example.com;" not in ours


def test_odd_parameters_keep_their_file_names_as_on_dovecot(dovecot: Dovecot) -> None:
    """An encoded word written unquoted (name==?UTF-8?B?...?=) was "", and
    a disposition with no type before its file name NIL: the attachment
    lost its name (helper-232 F1, F5)."""
    message = (
        b"From: a@example.com\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; name==?UTF-8?B?ZsOpZS50eHQ=?=\r\n"
        b"Content-Disposition: ; filename=nodisp.txt\r\n\r\nbody\r\n"
    )
    commands = ["c FETCH 1 (BODYSTRUCTURE BODY)"]
    ours = "\n".join(same_as_dovecot(dovecot, "odd-params", [message], commands))
    assert '("name" "=?UTF-8?B?ZsOpZS50eHQ=?="' in ours
    assert '("" ("filename" "nodisp.txt"))' in ours


def test_a_keyword_new_to_the_folder_is_announced_to_every_session_as_on_dovecot(
    dovecot: Dovecot,
) -> None:
    """A keyword another session stores or appends, or this one appends,
    is announced with ``* FLAGS`` and ``PERMANENTFLAGS`` at the session's
    next command, as Dovecot announces it; only the session that stored it
    heard of it, so a client building its list of labels from FLAGS kept a
    stale one until it selected the folder again."""
    user = "keywords-elsewhere"
    appended = "Subject: kw\r\n\r\nhi\r\n"
    other = [
        "o2 SELECT INBOX",
        "o3 STORE 1 +FLAGS ($NewKw)",
        f"o4 APPEND INBOX (kw2) {{{len(appended)}+}}\r\n{appended}",
    ]
    script = [
        f"a LOGIN {user} x",
        "b SELECT INBOX",
        "c NOOP",
        f"d APPEND INBOX (kw3) {{{len(appended)}+}}\r\n{appended}",
        "e NOOP",
        "f LOGOUT",
    ]
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES)

    def elsewhere(endpoint: Endpoint) -> Callable[[], object]:
        return lambda: run([f"o1 LOGIN {user} x", *other, "o9 LOGOUT"], endpoint)

    with SMTPSink() as sink:
        for message in MESSAGES:
            sink.deliver(message, to=user)
        endpoint = Endpoint("imap", sink.imap.host, sink.imap.port)
        ours = run(script, endpoint, before={"c NOOP": elsewhere(endpoint)})
    endpoint = Endpoint("imap", dovecot.host, dovecot.imap_port)
    theirs = run(script, endpoint, before={"c NOOP": elsewhere(endpoint)})
    extra = [(r"\[APPENDUID \S+ \S+\]", "[APPENDUID <appenduid>]")]
    ours = _same_but_for_recent(ours, theirs, extra)
    assert "S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $NewKw kw2)" in (
        ours
    )


def test_a_silent_store_tells_of_another_sessions_flags_as_dovecot_does(
    dovecot: Dovecot,
) -> None:
    """Another session flags a message; this one then stores on it with
    .SILENT, or with a change that changes nothing: the other session's
    flags are told at once (RFC 3501 6.4.6: "SHOULD send an untagged FETCH
    response if a change to a message's flags from an external source is
    observed"), as Dovecot tells them. The sink took them as told, and never
    told them, at that STORE or any later command."""
    user = "silent-store"
    script = [
        f"a LOGIN {user} x",
        "b SELECT INBOX",
        "c STORE 1 +FLAGS.SILENT (\\Seen)",
        "d STORE 2 -FLAGS (\\Draft)",
        "e NOOP",
        "f LOGOUT",
    ]
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES[:2])

    def elsewhere(endpoint: Endpoint, command: str) -> Callable[[], object]:
        other = [f"o1 LOGIN {user} x", "o2 SELECT INBOX", command, "o9 LOGOUT"]
        return lambda: run(other, endpoint)

    def session(endpoint: Endpoint) -> list[str]:
        return run(
            script,
            endpoint,
            before={
                script[2]: elsewhere(endpoint, "o3 STORE 1 +FLAGS (\\Flagged)"),
                script[3]: elsewhere(endpoint, "o3 STORE 2 +FLAGS (\\Answered)"),
            },
        )

    with SMTPSink() as sink:
        for message in MESSAGES[:2]:
            sink.deliver(message, to=user)
        ours = session(Endpoint("imap", sink.imap.host, sink.imap.port))
    theirs = session(Endpoint("imap", dovecot.host, dovecot.imap_port))
    ours = _same_but_for_recent(ours, theirs)
    assert "S: * 1 FETCH (FLAGS (\\Flagged \\Seen \\Recent))" in ours
    assert "S: * 2 FETCH (FLAGS (\\Answered \\Recent))" in ours


def _with_another_session(
    dovecot: Dovecot, user: str, script: list[str], stores: list[str]
) -> tuple[list[str], list[str]]:
    """``script`` on the sink and on Dovecot, each holding the first three
    of MESSAGES for ``user``, with another session running ``stores``
    right before its third line: the two transcripts (ours, theirs)."""
    other = [f"o1 LOGIN {user} x", "o2 SELECT INBOX", *stores, "o9 LOGOUT"]
    dovecot.reset(user)
    dovecot.seed(user, MESSAGES[:3])

    def session(endpoint: Endpoint) -> list[str]:
        return run(script, endpoint, before={script[2]: lambda: run(other, endpoint)})

    with SMTPSink() as sink:
        for message in MESSAGES[:3]:
            sink.deliver(message, to=user)
        ours = session(Endpoint("imap", sink.imap.host, sink.imap.port))
    return ours, session(Endpoint("imap", dovecot.host, dovecot.imap_port))


def test_a_uid_store_tells_of_another_sessions_flags_in_place_as_dovecot(
    dovecot: Dovecot,
) -> None:
    """A UID STORE on a range whose messages another session changed, one
    of them to what this STORE asks: each is told in place, in order and
    with its UID (RFC 3501 6.4.8), as Dovecot tells it; the sink told the
    unchanged one last, and without its UID."""
    user = "uid-store-elsewhere"
    script = [
        f"a LOGIN {user} x",
        "b SELECT INBOX",
        "c UID STORE 1:* +FLAGS (\\Seen)",
        "d LOGOUT",
    ]
    stores = ["o3 STORE 1 +FLAGS (\\Seen)", "o4 STORE 2 +FLAGS (\\Flagged)"]
    ours = _same_but_for_recent(*_with_another_session(dovecot, user, script, stores))
    assert "S: * 1 FETCH (UID 1 FLAGS (\\Seen \\Recent))" in ours


def test_a_uid_command_tells_of_changes_outside_its_set_with_uids_as_dovecot(
    dovecot: Dovecot,
) -> None:
    """Another session flags messages 1 and 3; this one runs UID STORE on
    message 2 alone: the changes it is told of outside its set carry their
    UIDs too (RFC 3501 6.4.8), as Dovecot's do; the sink sent them without.
    (Dovecot sends the three in sequence order, the sink its own first: the
    lines are compared as a set.)"""
    user = "uid-outside-set"
    script = [
        f"a LOGIN {user} x",
        "b SELECT INBOX",
        "c UID STORE 2 +FLAGS (\\Seen)",
        "d LOGOUT",
    ]
    stores = ["o3 STORE 1,3 +FLAGS (\\Flagged)"]

    def told(transcript: list[str]) -> list[str]:
        lines = masked(transcript, capabilities=True, text=True)
        start = lines.index("C: c UID STORE 2 +FLAGS (\\Seen)")
        return sorted(line for line in lines[start:] if " FETCH " in line)

    ours, theirs = map(told, _with_another_session(dovecot, user, script, stores))
    assert ours == theirs
    assert ours == [
        "S: * 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))",
        "S: * 2 FETCH (UID 2 FLAGS (\\Seen \\Recent))",
        "S: * 3 FETCH (UID 3 FLAGS (\\Flagged \\Recent))",
    ]


def test_idle_sends_its_continuation_before_what_changed_as_dovecot(
    dovecot: Dovecot,
) -> None:
    """Another session's flags waiting when IDLE comes: ``+ idling`` first,
    then the news, as Dovecot (and RFC 2177's example) send them; the sink
    sent the news first, and IMAPClient and imap-tools, which read one line
    for the continuation, raised."""
    user = "idle-pending"
    script = [f"a LOGIN {user} x", "b SELECT INBOX", "c IDLE", "DONE", "d LOGOUT"]
    stores = ["o3 STORE 1 +FLAGS (\\Seen)", "o4 STORE 3 +FLAGS (\\Flagged)"]
    ours = _same_but_for_recent(*_with_another_session(dovecot, user, script, stores))
    start = ours.index("C: c IDLE")
    assert ours[start : start + 3] == ["C: c IDLE", "S: + idling", "C: DONE"]
    assert "S: * 3 FETCH (FLAGS (\\Flagged \\Recent))" in ours[start:]


#: A CR alone in a subject or an address field (not a line break).
BARE_CR_HEADERS = [
    b"Subject: cr\rin\r\n",
    b"Subject: a\r b\r\n",
    b"Subject: x\r\r\ry\r\n",
    b"From: Ann\rLee <a@x.example>\r\n",
    b"Subject: =?utf-8?q?a?=\r=?utf-8?q?b?=\r\n",
]


def test_a_bare_cr_in_an_envelope_field_is_a_space_as_on_dovecot(
    dovecot: Dovecot,
) -> None:
    """The sink dropped it, joining the words ("crin", "AnnLee")."""
    messages = [h + b"To: t@x.example\r\n\r\nbody\r\n" for h in BARE_CR_HEADERS]
    commands = ["c FETCH 1:* (ENVELOPE)"]
    ours = same_as_dovecot(dovecot, "bare-cr-fields", messages, commands)
    assert '(("Ann Lee" NIL "a" "x.example"))' in "\n".join(ours)


def test_search_matches_the_flags_the_session_was_told_of_as_dovecot(
    dovecot: Dovecot,
) -> None:
    """Another session deletes message 3 and gives message 1 a keyword,
    silently: this session's SEARCH goes by the flags it was told of (none
    yet), as Dovecot's does, and the FETCHes that tell them come after; the
    sink matched the new flags, and its ``* SEARCH 3`` named a message the
    client then heard was \\Deleted only afterwards."""
    user = "search-untold"
    script = [
        f"a LOGIN {user} x",
        "b SELECT INBOX",
        "c SEARCH OR DELETED KEYWORD $New",
        "d SEARCH OR DELETED KEYWORD $New",
        "e LOGOUT",
    ]
    stores = [
        "o3 STORE 3 +FLAGS.SILENT (\\Deleted)",
        "o4 STORE 1 +FLAGS.SILENT ($New)",
    ]
    ours = _same_but_for_recent(*_with_another_session(dovecot, user, script, stores))
    start = ours.index("C: c SEARCH OR DELETED KEYWORD $New")
    assert ours[start + 1] == "S: * SEARCH"
    assert "S: * SEARCH 1 3" in ours[start + 2 :]


def test_a_keyword_another_session_added_is_announced_before_a_fetch_shows_it(
    dovecot: Dovecot,
) -> None:
    """Another session reads messages 1 and 2 and gives message 3 a keyword
    new to the folder; this one then reads all three, which sets \\Seen on
    message 3 only: ``* FLAGS`` announces the keyword right before the
    first response that carries flags (message 3's), as Dovecot announces
    it. The sink sent it after the FETCH that named the keyword. (Dovecot
    then tells message 3's flags once more: compared up to its response.)"""
    user = "keyword-before-fetch"
    script = [
        f"a LOGIN {user} x",
        "b SELECT INBOX",
        "c FETCH 1:3 (BODY[TEXT])",
        "d LOGOUT",
    ]
    stores = ["o3 STORE 1:2 +FLAGS (\\Seen)", "o4 STORE 3 +FLAGS ($New)"]

    def fetched(transcript: list[str]) -> list[str]:
        lines = masked(transcript, capabilities=True, text=True)
        start = lines.index("C: c FETCH 1:3 (BODY[TEXT])")
        end = lines.index("S: * 3 FETCH (FLAGS (\\Seen \\Recent $New) BODY[TEXT] {7}")
        return lines[start:end]

    ours, theirs = map(fetched, _with_another_session(dovecot, user, script, stores))
    assert ours == theirs
    assert ours[-2:] == [
        "S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $New)",
        "S: * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $New"
        " \\*)] <text>",
    ]


def test_a_store_announces_a_keyword_another_session_added_first_as_dovecot(
    dovecot: Dovecot,
) -> None:
    """Another session gives message 1 a keyword new to the folder; this
    one stores \\Seen on it: FLAGS and PERMANENTFLAGS come before the
    FETCH that shows the keyword, as on Dovecot; the sink sent them after."""
    user = "keyword-before-store"
    script = [
        f"a LOGIN {user} x",
        "b SELECT INBOX",
        "c STORE 1 +FLAGS (\\Seen)",
        "d LOGOUT",
    ]
    stores = ["o3 STORE 1 +FLAGS ($New)"]
    ours = _same_but_for_recent(*_with_another_session(dovecot, user, script, stores))
    start = ours.index("C: c STORE 1 +FLAGS (\\Seen)")
    assert ours[start + 3] == "S: * 1 FETCH (FLAGS (\\Seen \\Recent $New))"


def test_status_of_the_selected_folder_counts_what_it_was_told_as_dovecot(
    dovecot: Dovecot,
) -> None:
    """Another session reads message 1 and appends a message; this one then
    asks STATUS of the folder it has selected: the counts are those it was
    told (3 messages, 3 unseen), with no updates, as Dovecot answers; the
    sink counted the folder as it was (4 messages) and then sent ``* 4
    EXISTS``, the news after the count that already held it."""
    user = "status-selected-told"
    script = [
        f"a LOGIN {user} x",
        "b SELECT INBOX",
        "c STATUS INBOX (MESSAGES RECENT UIDNEXT UNSEEN)",
        "d NOOP",
        "e STATUS INBOX (MESSAGES RECENT UIDNEXT UNSEEN)",
        "f LOGOUT",
    ]
    appended = "Subject: app\r\n\r\nx\r\n"
    stores = [
        "o3 STORE 1 +FLAGS (\\Seen)",
        f"o4 APPEND INBOX {{{len(appended)}+}}\r\n{appended}",
    ]
    ours = _same_but_for_recent(*_with_another_session(dovecot, user, script, stores))
    start = ours.index("C: c STATUS INBOX (MESSAGES RECENT UIDNEXT UNSEEN)")
    assert ours[start + 1 : start + 4] == [
        "S: * STATUS INBOX (MESSAGES 3 RECENT 3 UIDNEXT 4 UNSEEN 3)",
        "S: c OK [CLIENTBUG] <text>",
        "C: d NOOP",
    ]
    assert "S: * STATUS INBOX (MESSAGES 4 RECENT 3 UIDNEXT 5 UNSEEN 3)" in ours


def test_a_bad_command_carries_no_updates_as_on_dovecot(dovecot: Dovecot) -> None:
    """Another session reads message 1 and appends a message; this one then
    sends a FETCH of a message past the end, a STORE of \\Recent and a
    SEARCH with an unknown key: each ``BAD`` comes alone, and the news at
    the next command, as on Dovecot. The sink sent ``* 4 EXISTS`` with the
    first, whose text then said the folder had 3 messages."""
    user = "bad-no-updates"
    script = [
        f"a LOGIN {user} x",
        "b SELECT INBOX",
        "c FETCH 9 (FLAGS)",
        "d STORE 1 +FLAGS (\\Recent)",
        "e SEARCH FOO",
        "f NOOP",
        "g LOGOUT",
    ]
    appended = "Subject: app\r\n\r\nx\r\n"
    stores = [
        "o3 STORE 1 +FLAGS (\\Seen)",
        f"o4 APPEND INBOX {{{len(appended)}+}}\r\n{appended}",
    ]
    ours = _same_but_for_recent(*_with_another_session(dovecot, user, script, stores))
    start = ours.index("C: c FETCH 9 (FLAGS)")
    assert ours[start : start + 7] == [
        "C: c FETCH 9 (FLAGS)",
        "S: c BAD <text>",
        "C: d STORE 1 +FLAGS (\\Recent)",
        "S: d BAD <text>",
        "C: e SEARCH FOO",
        "S: e BAD <text>",
        "C: f NOOP",
    ]
    assert "S: * 4 EXISTS" in ours[start:]


def test_uid_fetch_and_search_tell_other_sessions_changes_with_uids_unlike_dovecot(
    dovecot: Dovecot,
) -> None:
    """Kept on purpose (docs/reading.rst): after UID FETCH, UID SEARCH or a
    .SILENT UID STORE, another session's flag changes are told with their
    UIDs (RFC 3501 6.4.8); Dovecot gives the UID after a UID STORE only.
    The transcripts are otherwise the same."""
    user = "uid-others"
    stores = ["o3 STORE 1,3 +FLAGS (\\Flagged)"]
    for number, command in enumerate(
        [
            "c UID FETCH 2 (FLAGS)",
            "c UID SEARCH ALL",
            "c UID STORE 2 +FLAGS.SILENT (\\Seen)",
        ]
    ):
        script = [f"a LOGIN {user}{number} x", "b SELECT INBOX", command, "d LOGOUT"]
        ours, theirs = _with_another_session(dovecot, f"{user}{number}", script, stores)
        told = "S: * 3 FETCH (UID 3 FLAGS (\\Flagged \\Recent))"
        assert told in ours
        assert told not in theirs
        extra = [(r"^\* (\d+) FETCH \(UID \d+ FLAGS", r"* \1 FETCH (FLAGS")]
        _same_but_for_recent(ours, theirs, extra)

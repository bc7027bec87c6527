"""Differential conformance over the project's message corpus (tests/corpus,
the malformed messages included): every message is delivered to the sink and
seeded into a real Dovecot; scripted IMAP sessions (FETCH of every kind,
every SEARCH key of RFC 3501, STORE, COPY, MOVE, EXPUNGE, APPEND, LIST
patterns) must give the same responses after masking (tests/dialogue.py).

What is masked beyond tags, UIDVALIDITY, dates and free text is kept on
purpose and listed, with the reason, in docs/reading.rst ("Differences from
Dovecot, kept on purpose"); each such mask below says why."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

import pytest
from dialogue import Endpoint, masked, run
from dovecot import Dovecot

from pytest_smtpsink import SMTPSink

USER = "corpus"
CORPUS = sorted((Path(__file__).parent / "corpus").glob("*.eml"))
NAMES = [path.stem for path in CORPUS]
MESSAGES = [path.read_bytes() for path in CORPUS]
#: One internal date for all, so SINCE/BEFORE/ON answer alike on both.
DATE = datetime(2024, 3, 15, 12, 0, tzinfo=timezone.utc)

#: Kept on purpose (see the module docstring).
KEPT: list[tuple[str, str]] = []


#: Dropped from both transcripts, kept on purpose: Dovecot announces
#: "* OK [CLOSED]" when SELECT replaces a selected folder, a response of
#: RFC 7162 (CONDSTORE/QRESYNC), which the sink does not offer.
DROPPED = re.compile(r"^S: \* OK \[CLOSED\]")


def normalized(transcript: list[str]) -> list[str]:
    """Without DROPPED lines, and with each run of untagged LIST/LSUB lines
    sorted: RFC 3501 leaves their order to the server."""
    result: list[str] = []
    run_start = 0
    for line in transcript:
        if DROPPED.match(line):
            continue
        if not line.startswith(("S: * LIST ", "S: * LSUB ")):
            run_start = len(result) + 1
        result.append(line)
        if line.startswith(("S: * LIST ", "S: * LSUB ")):
            result[run_start:] = sorted(result[run_start:])
    return result


class Pair:
    """The sink and Dovecot holding the same mail for USER."""

    def __init__(self, sink: SMTPSink, dovecot: Dovecot) -> None:
        self.ours = Endpoint("imap", sink.imap.host, sink.imap.port)
        self.theirs = Endpoint("imap", dovecot.host, dovecot.imap_port)

    def compare(
        self, script: list[str], kept: Sequence[tuple[str, str]] = ()
    ) -> tuple[list[str], list[str]]:
        """Run *script* against both; assert equal masked transcripts (with
        *kept*, more masks for differences kept on purpose); returns them."""
        full = [f"a LOGIN {USER} secret", *script, "z LOGOUT"]
        extra = [*KEPT, *kept]
        ours = normalized(
            masked(run(full, self.ours), capabilities=True, text=True, extra=extra)
        )
        theirs = normalized(
            masked(run(full, self.theirs), capabilities=True, text=True, extra=extra)
        )
        difference = difflib.unified_diff(theirs, ours, "Dovecot", "sink", lineterm="")
        assert ours == theirs, "\n".join(difference)
        return ours, theirs


@pytest.fixture(scope="module")
def corpus_pair(dovecot: Dovecot) -> Iterator[Pair]:
    """Read-only use only (EXAMINE): shared by the tests of this module."""
    dovecot.reset(USER)
    dovecot.seed(USER, MESSAGES, date=DATE)
    # A sink of its own: its UIDs start at 1, as Dovecot's do.
    with SMTPSink() as sink:
        for message in MESSAGES:
            sink.deliver(message, to=USER, date=DATE)
        yield Pair(sink, dovecot)


#: Kept on purpose: where an address header cannot be parsed, the sink's
#: ENVELOPE keeps its raw text as the mailbox name (so a test sees what was
#: there); Dovecot puts placeholders (MISSING_MAILBOX, SYNTAX_ERROR).
UNPARSEABLE_ADDRESSES = {"garbage_headers"}


def check_kept_envelope(pair: Pair, number: int) -> None:
    """The ENVELOPE of a message with unparseable addresses: date and
    subject as Dovecot's; the addresses keep their raw text where Dovecot
    has placeholders."""
    script = [f"a LOGIN {USER} x", "b EXAMINE INBOX", f"d FETCH {number} ENVELOPE"]
    ours = "\n".join(run(script, pair.ours))
    theirs = "\n".join(run(script, pair.theirs))
    head = '(ENVELOPE ("Mon, 32 Foo 2024 99:99:99 +9999" "garbage" '
    assert head in ours
    assert head in theirs
    assert '((NIL NIL "<<notanaddress" "MISSING_DOMAIN"))' in ours
    assert '((NIL NIL "MISSING_MAILBOX" "SYNTAX_ERROR"))' in theirs


@pytest.mark.parametrize("number", range(1, len(CORPUS) + 1), ids=NAMES)
def test_fetch_of_each_corpus_message(corpus_pair: Pair, number: int) -> None:
    envelope = [f"d FETCH {number} (ENVELOPE)"]
    if NAMES[number - 1] in UNPARSEABLE_ADDRESSES:
        envelope = []
        check_kept_envelope(corpus_pair, number)
    corpus_pair.compare(
        [
            "b EXAMINE INBOX",
            f"c FETCH {number} (UID RFC822.SIZE FLAGS)",
            *envelope,
            f"e FETCH {number} (BODYSTRUCTURE)",
            f"f FETCH {number} (BODY)",
            f"g FETCH {number} (BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])",
            f"h FETCH {number} (BODY.PEEK[HEADER.FIELDS.NOT (RECEIVED)]<0.100>)",
            f"i FETCH {number} (BODY.PEEK[1] BODY.PEEK[1.MIME])",
            f"j FETCH {number} (BODY.PEEK[TEXT]<5.40> BODY.PEEK[]<0.30>)",
            f"k FETCH {number} (BODY.PEEK[2] BODY.PEEK[1.1] BODY.PEEK[2.HEADER])",
            f"l FETCH {number} (RFC822.HEADER)",
        ]
    )


#: Every search key of RFC 3501 section 6.4.4, with terms that match some of
#: the corpus and not all of it, plus sets, NOT, OR, parentheses and a literal.
SEARCHES = [
    "ALL",
    "ANSWERED",
    "BCC nobody",
    "BEFORE 16-Mar-2024",
    "BEFORE 15-Mar-2024",
    "BODY body",
    "BODY nothing-like-this",
    "CC jose",
    "DELETED",
    "DRAFT",
    "FLAGGED",
    "FROM ann",
    "FROM example.com",
    "HEADER Message-ID brackets",
    "HEADER X-Nothing x",
    'HEADER Subject ""',
    "LARGER 4000",
    "NEW",
    "NOT SEEN",
    "OLD",
    "ON 15-Mar-2024",
    "ON 14-Mar-2024",
    "OR FROM ann SUBJECT garbage",
    "RECENT",
    "SEEN",
    "SENTBEFORE 1-Jan-2024",
    "SENTON 1-Jan-2024",
    "SENTSINCE 2-Jan-2024",
    "SINCE 15-Mar-2024",
    "SMALLER 100",
    "SUBJECT charset",
    "SUBJECT levels",
    "TEXT Ann",
    "TO example.com",
    "UID 3:7,20",
    "UNANSWERED",
    "UNDELETED",
    "UNDRAFT",
    "UNFLAGGED",
    "UNSEEN",
    "2:4,30:*",
    "NOT (FROM ann SMALLER 2000)",
    "(OR SUBJECT nested SUBJECT boundary) LARGER 300",
    "CHARSET UTF-8 SUBJECT {6+}\r\nbinary",
    # TEXT looks at the parts' headers too; BODY does not.
    "TEXT filename",
    "BODY filename",
    "TEXT Content-Transfer-Encoding",
    "TEXT octet-stream",
    # An OR chain as imap-tools writes "any of these": 60 keys.
    "OR " * 59 + " ".join(["SUBJECT levels"] * 59 + ["FROM ann"]),
]


def test_every_search_key_over_the_corpus(corpus_pair: Pair) -> None:
    script = ["b EXAMINE INBOX"]
    for number, key in enumerate(SEARCHES):
        script.append(f"s{number} SEARCH {key}")
        script.append(f"u{number} UID SEARCH {key}")
    corpus_pair.compare(script)


def test_address_search_in_an_unparseable_header(corpus_pair: Pair) -> None:
    # Kept on purpose: garbage_headers' 'Cc: "unterminated <x@example.com>'
    # cannot be parsed. The sink searches the header's text, as RFC 3501
    # words it ("contains the specified string in the header"), so the
    # address a person can read there is found; Dovecot searches its parsed
    # placeholder and does not find it.
    garbage = NAMES.index("garbage_headers") + 1
    script = [f"a LOGIN {USER} x", "b EXAMINE INBOX", "c SEARCH CC example"]
    ours = [line for line in run(script, corpus_pair.ours) if "* SEARCH" in line]
    theirs = [line for line in run(script, corpus_pair.theirs) if "* SEARCH" in line]
    (found,) = theirs
    numbers = [int(n) for n in found.split()[3:]]
    assert garbage not in numbers
    assert ours == ["S: * SEARCH " + " ".join(map(str, sorted([*numbers, garbage])))]


#: Kept on purpose: the sink's UIDs come from one counter for all folders
#: (never reused within its life), so a folder other than INBOX gets other
#: UIDs, and UIDNEXT, than Dovecot's per-folder counter gives.
SINK_WIDE_UIDS = [
    # ... and one UIDVALIDITY for all of a user's folders.
    (r"UIDVALIDITY <uidvalidity-\d+>", "UIDVALIDITY <uidvalidity>"),
    (r"\[APPENDUID <uidvalidity-\d+>", "[APPENDUID <uidvalidity>"),
    (r"\[COPYUID \S+ \S+ \S+\]", "[COPYUID <copyuid>]"),
    (r"\[APPENDUID (\S+) \d+\]", r"[APPENDUID \1 <uid>]"),
    (r"\[UIDNEXT \d+\]", "[UIDNEXT <uidnext>]"),
    (r"UIDNEXT \d+", "UIDNEXT <uidnext>"),
]


@pytest.fixture
def fresh_pair(dovecot: Dovecot) -> Iterator[Pair]:
    """The corpus in both, for a test that changes the mailboxes."""
    dovecot.reset(USER)
    dovecot.seed(USER, MESSAGES, date=DATE)
    with SMTPSink() as sink:
        for message in MESSAGES:
            sink.deliver(message, to=USER, date=DATE)
        yield Pair(sink, dovecot)


APPENDED = b"From: a@example.com\r\nSubject: appended\r\n\r\nnew\r\n"


def test_store_copy_move_expunge_append_and_list(fresh_pair: Pair) -> None:
    literal = f"{{{len(APPENDED)}+}}\r\n{APPENDED.decode()}"
    fresh_pair.compare(
        [
            "b SELECT INBOX",
            "c STORE 1:5 +FLAGS (\\Flagged $Forwarded)",
            "d STORE 2 -FLAGS (\\Flagged)",
            "e STORE 3 FLAGS.SILENT (\\Answered)",
            "f UID STORE 4 +FLAGS.SILENT (\\Seen)",
            "g STORE 5 -FLAGS.SILENT ($Forwarded)",
            "h FETCH 1:6 (FLAGS)",
            "i SEARCH KEYWORD $Forwarded",
            "j SEARCH UNKEYWORD $Forwarded FLAGGED",
            "k CREATE Archive",
            "l CREATE Archive/2024",
            "m CREATE Other",
            "n COPY 1:3 Archive",
            "o UID COPY 5 Archive/2024",
            "p MOVE 6:7 Other",
            "q STORE 1 +FLAGS.SILENT (\\Deleted)",
            "r STORE 9:10 +FLAGS (\\Deleted)",
            "s EXPUNGE",
            "t STORE 2 +FLAGS.SILENT (\\Deleted)",
            "u UID EXPUNGE 1:3",
            "v SEARCH ALL",
            f"w APPEND Archive (\\Seen $Work) {literal}",
            "x STATUS Archive (MESSAGES RECENT UIDNEXT UNSEEN)",
            'la LIST "" *',
            'lb LIST "" %',
            'lc LIST "" Archive/%',
            'ld LIST "" arch*',
            'le LIST "" inbox',
            "lf LIST Archive %",
            'lg LIST "" ""',
            'lh LIST "" nothing*',
            "y SELECT Archive",
            "ya FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
            "yb SEARCH SUBJECT appended",
            "yc CLOSE",
            "yd EXAMINE Other",
            "ye FETCH 1:* (FLAGS RFC822.SIZE)",
            "yf0 UNSELECT",
            "yf DELETE Other",
            "yg RENAME Archive Kept",
            'yh LIST "" *',
        ],
        kept=SINK_WIDE_UIDS,
    )

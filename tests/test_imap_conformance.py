"""IMAP conformance without a reference server: the differences from Dovecot
that the corpus test (test_imap_dovecot_corpus.py) found, pinned here so they
stay fixed where Dovecot is absent, and one regression test per IMAP bug of
smtp4dev (issue 16's checklist), each named after it."""

from __future__ import annotations

from dialogue import Endpoint, run

from pytest_smtpsink import Mailbox

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
    keywords = "\\Answered \\Flagged \\Deleted \\Seen \\Draft $New $Old"
    after_c = lines[lines.index("b OK STORE completed") + 1 :]
    assert after_c[:4] == [
        f"* FLAGS ({keywords})",
        f"* OK [PERMANENTFLAGS ({keywords} \\*)] Flags permitted",
        "* 1 FETCH (FLAGS (\\Recent $New $Old))",
        "c OK STORE completed",
    ]
    # A keyword already announced, or one removed, announces nothing.
    assert [line for line in lines if line.startswith("* FLAGS")] == [
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Old)",
        f"* FLAGS ({keywords})",
    ]

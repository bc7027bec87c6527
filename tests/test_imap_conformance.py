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

"""What people see of odd mail: a failed test's report, the saved files and
the standalone CLI's output.

A message whose parsing gives up must still be shown (never an
INTERNALERROR, never a CLI that stops accepting mail), and what a client
sent must never forge a line of output: control characters, NEL and U+2028
in what a client sent are escaped when printed, while the stored values stay
as received.
"""

from __future__ import annotations

import fnmatch
import signal
import smtplib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import Sink

from pytest_smtpsink import Mailbox

pytest_plugins = ["pytester"]

CORPUS = Path(__file__).parent / "corpus"
#: The shapes that once made reading a field raise (issue 13), and the line
#: their summary must show in a report.
ODD = {
    "smtputf8_display_name": "To: Zoë <zoë@exämple.com> | Subject: 'SMTPUTF8 with*",
    "non_ascii_charset_name": "Subject: '=?\ufffd?q?x?='",
    "nested_comments_600": "Subject: '600 nested comments'",
    "open_parentheses_600": "Subject: '600 open parentheses'",
    "nested_rfc822_1000": "Subject: '1000 levels of message/rfc822'",
    "absurd_date": "Subject: 'a date beyond any calendar'",
    "nul_in_charset_name": "Subject: 'NUL in the charset name'",
    "html_unknown_marked_section": "Subject: 'unknown marked section'",
}

SENDS_ODD_MAIL = f"""
import smtplib
from pathlib import Path

CORPUS = Path({str(CORPUS)!r})
NAMES = {sorted(ODD)!r}

def send_all(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=10) as client:
        for name in NAMES:
            data = (CORPUS / f"{{name}}.eml").read_bytes()
            client.sendmail("app@example.com", ["bob@example.com"], data)

def test_fails_with_criteria(smtpsink):
    send_all(smtpsink)
    smtpsink.assert_sent(to="nobody@example.com", subject="never", text="x")

def test_fails_plainly(smtpsink):
    send_all(smtpsink)
    assert len(smtpsink.messages) == 0

def test_later_tests_still_run(smtpsink):
    send_all(smtpsink)
    assert len(smtpsink.messages) == {len(ODD)}
"""


@pytest.mark.parametrize("xdist", [["-p", "no:xdist"], ["-n", "2"]])
def test_odd_mail_gives_a_normal_failure_report(
    pytester: pytest.Pytester, xdist: list[str]
) -> None:
    pytester.makepyfile(SENDS_ODD_MAIL)
    out = pytester.path / "mail"
    result = pytester.runpytest(
        *xdist, f"--smtpsink-save-dir={out}", "--smtpsink-save=all"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=2, passed=1)
    text = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in text
    # The assertion's own failure text and the report section list them all.
    result.stdout.fnmatch_lines(
        [
            "*expected at least 1 message matching to='nobody@example.com'*; found 0.",
            f"*Messages that arrived in this test ({len(ODD)}):",
        ]
    )
    result.stdout.fnmatch_lines(["*- Captured email call -*"])
    # Each odd message's summary: in the assertion text and in two sections.
    for shown in ODD.values():
        found = fnmatch.filter(result.stdout.lines, f"*{shown}*")
        assert len(found) >= 3, (shown, result.stdout.str())
    # Saved byte for byte, all three tests (save=all).
    saved = sorted(out.rglob("*.eml"))
    assert len(saved) == 3 * len(ODD)
    sent = {(CORPUS / f"{name}.eml").read_bytes() for name in ODD}
    assert {path.read_bytes() for path in saved} == sent


def test_last_resort_shows_raw_bytes_and_the_error(pytester: pytest.Pytester) -> None:
    """Should a future field slip past its guard, the report and the saved
    files still work: the message shows as raw bytes plus the error. (The
    conftest breaks `summary` and `subject` to stand in for such a bug; in a
    subprocess, so that the broken class stays there.)"""
    pytester.makeconftest(
        """
from pytest_smtpsink import Message

def broken(self, *args):
    raise RuntimeError("unforeseen")

Message.summary = broken
Message.subject = property(broken)
"""
    )
    pytester.makepyfile(
        """
import smtplib

def test_fails(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=10) as client:
        client.sendmail("a@example.com", ["b@example.com"], b"X-Odd: 1\\r\\n\\r\\nbody\\r\\n")
    assert False

def test_later(smtpsink):
    pass
"""
    )
    out = pytester.path / "mail"
    result = pytester.runpytest_subprocess(
        "-p", "no:xdist", f"--smtpsink-save-dir={out}"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1, passed=1)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(
        [
            "*- Captured email call -*",
            "  #1 could not be read (RuntimeError: unforeseen); 18 bytes: "
            "b'X-Odd: 1\\r\\n\\r\\nbody\\r\\n'",
        ]
    )
    (eml,) = out.rglob("*.eml")
    assert eml.name == "0001-no-subject.eml"
    assert eml.read_bytes() == b"X-Odd: 1\r\n\r\nbody\r\n"


# -- escaping what clients sent ------------------------------------------------

#: Characters that split a line for a terminal or for str.splitlines().
FORGERS = ["\u2028", "\x1b", "\x85", "\x1c", "\x0b"]


ACCEPTED = (
    '"c\u2028S: 250 forged-ok"@example.com',
    '"d\x85S: 250 forged-ok"@example.com',
)


def converse(host: str, port: int) -> None:
    """One SMTP conversation whose EHLO name and recipients carry each
    forging character before a fake server reply. The quoted local parts
    with U+2028 and NEL are accepted (SMTPUTF8), the others refused; all
    are in the transcript."""
    with socket.create_connection((host, port), timeout=10) as sock:
        replies = sock.makefile("rb")
        replies.readline()

        def say(line: str) -> bytes:
            sock.sendall(line.encode("utf-8", "surrogateescape") + b"\r\n")
            reply = replies.readline()
            while reply[3:4] == b"-":
                reply = replies.readline()
            return reply

        for char in FORGERS:
            say(f"EHLO evil{char}S: 250 forged-ehlo")
        say("EHLO client.example")
        say("MAIL FROM:<a@example.com> SMTPUTF8")
        for char in FORGERS:
            say(f"RCPT TO:<b{char}S: 250 forged-rcpt@example.com>")
        for accepted in ACCEPTED:
            assert say(f"RCPT TO:<{accepted}>").startswith(b"250")
        assert say("DATA").startswith(b"354")
        assert say("Subject: hi\r\n\r\nbody\r\n.").startswith(b"250")
        say("QUIT")
        replies.close()


def assert_no_forged_line(text: str) -> None:
    """No forging character left raw, and "forged" only ever inside the
    client's own line (``C: ...``) or a message summary, never as a reply."""
    for char in FORGERS:
        assert char not in text, (char, text)
    for line in text.splitlines():
        if "forged" in line:
            assert line.lstrip().startswith(("C: ", "#", "message #")), line


def test_client_input_cannot_forge_a_transcript_line(smtpsink: Mailbox) -> None:
    converse(smtpsink.host, smtpsink.port)
    smtpsink.wait_until(lambda: smtpsink.sessions[-1].end is not None)
    session = smtpsink.sessions[-1]
    message = smtpsink.messages.one()
    # Stored as received ...
    assert message.envelope.rcpt_to == ACCEPTED
    assert session.transcript[1].line == "EHLO evil\u2028S: 250 forged-ehlo"
    # ... shown escaped, one value per line.
    transcript = session.format_transcript()
    assert "C: EHLO evil\\u2028S: 250 forged-ehlo" in transcript.splitlines()
    assert (
        "C: RCPT TO:<b\\x1bS: 250 forged-rcpt@example.com>" in transcript.splitlines()
    )
    assert_no_forged_line(transcript)
    assert_no_forged_line(repr(session))
    summary = message.summary()
    assert (
        '-> "c\\u2028S: 250 forged-ok"@example.com, "d\\x85S: 250 forged-ok"@example.com |'
        in summary
    )
    assert len(summary.splitlines()) == 1


def test_report_and_saved_transcript_escape_client_input(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_odd_mail_output import converse

def test_fails(smtpsink):
    converse(smtpsink.host, smtpsink.port)
    smtpsink.wait_until(lambda: smtpsink.sessions[-1].end is not None)
    assert False
"""
    )
    out = pytester.path / "mail"
    result = pytester.runpytest("-p", "no:xdist", f"--smtpsink-save-dir={out}")
    result.assert_outcomes(failed=1)
    section = result.stdout.str().split("Captured email call", 1)[1]
    assert "C: EHLO evil\\u2028S: 250 forged-ehlo" in section
    assert_no_forged_line(section)
    (saved,) = out.rglob("session-0001.txt")
    text = saved.read_text(encoding="utf-8")
    assert "C: RCPT TO:<b\\u2028S: 250 forged-rcpt@example.com>" in text
    assert_no_forged_line(text)


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Sink]:
    sink = Sink("--transcripts", "--save-dir", str(tmp_path))
    yield sink
    if sink.proc.poll() is None:
        sink.proc.send_signal(signal.SIGINT)
    sink.finish()


def test_cli_escapes_client_input(cli: Sink, tmp_path: Path) -> None:
    converse("127.0.0.1", cli.port)
    cli.expect(r"session 1 closed")
    rest = cli.stop()
    output = "\n".join(cli.seen)
    assert "C: EHLO evil\\u2028S: 250 forged-ehlo" in output
    assert '-> "c\\u2028S: 250 forged-ok"@example.com, "d\\x85S' in output
    assert_no_forged_line(output)
    assert rest[-1] == "smtpsink stopped: 1 message in 1 session"
    saved = (tmp_path / "session-0001.txt").read_text(encoding="utf-8")
    assert_no_forged_line(saved)


def test_cli_shows_odd_mail_and_keeps_accepting(cli: Sink, tmp_path: Path) -> None:
    for name in sorted(ODD):
        with smtplib.SMTP("127.0.0.1", cli.port, timeout=10) as client:
            data = (CORPUS / f"{name}.eml").read_bytes()
            client.sendmail("app@example.com", ["bob@example.com"], data)
        line = cli.expect(r"^message #").string
        assert fnmatch.fnmatch(line, f"*{ODD[name]}*"), line
        assert (tmp_path / cli.expect(r"saved as (.*)").group(1)).read_bytes() == data
    rest = cli.stop()
    assert rest[-1] == f"smtpsink stopped: {len(ODD)} messages in {len(ODD)} sessions"
    assert "Traceback" not in cli.stderr


def test_many_recipients_are_counted_not_listed(smtpsink: Mailbox) -> None:
    recipients = [f"user{i}@example.com" for i in range(2000)]
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=30) as client:
        client.sendmail("a@example.com", recipients, b"Subject: many\r\n\r\nhi\r\n")
    message = smtpsink.wait_for(timeout=10)
    assert len(message.envelope.rcpt_to) == 2000
    summary = message.summary()
    assert "-> user0@example.com, user1@example.com, ... (+1,998 more) |" in summary
    assert len(summary) < 200

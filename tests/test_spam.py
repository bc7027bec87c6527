"""Spam scores from a real SpamAssassin (`Message.spam_report`,
`Mailbox.assert_not_spam`, ``--smtpsink-spamd``): a spamd started from
Debian's package (tests/spamd.py), a ham message and GTUBE."""

from __future__ import annotations

import email.utils
import re
import smtplib
import socket
import threading
from collections.abc import Iterator

import pytest
from spamd import running_spamd

from pytest_smtpsink import Mailbox, SpamdError, SpamRule
from pytest_smtpsink._spam import _parse, parse_address, use_spamd

pytest_plugins = ["pytester"]

#: SpamAssassin's Generic Test for Unsolicited Bulk Email: always spam.
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


@pytest.fixture(scope="module")
def spamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_spamd(tmp_path_factory.mktemp("spamd")) as address:
        yield address


@pytest.fixture
def configured(spamd: str) -> Iterator[str]:
    """As --smtpsink-spamd does for a whole run."""
    previous = use_spamd(spamd)
    yield spamd
    use_spamd(previous)


def send(sink: Mailbox, body: str, subject: str = "Lunch on Tuesday?") -> None:
    head = (
        f"From: Ann <ann@example.com>\r\nTo: bob@example.com\r\n"
        f"Subject: {subject}\r\nDate: {email.utils.formatdate()}\r\n"
        f"Message-ID: {email.utils.make_msgid(domain='example.com')}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("ann@example.com", ["bob@example.com"], head + body + "\r\n")


HAM = "Hi Bob,\r\n\r\nshall we meet for lunch on Tuesday at noon?\r\n\r\nAnn"


def test_ham_scores_low_and_gtube_is_spam(smtpsink: Mailbox, configured: str) -> None:
    send(smtpsink, HAM)
    send(smtpsink, GTUBE, subject="Offer")
    ham, spam = smtpsink.messages
    ham_report = ham.spam_report()
    assert not ham_report.is_spam
    assert ham_report.score < ham_report.threshold == 5.0
    spam_report = spam.spam_report()
    assert spam_report.is_spam
    assert spam_report.score >= 1000
    assert "GTUBE" in spam_report.hits
    [gtube] = [rule for rule in spam_report.rules if rule.name == "GTUBE"]
    assert gtube.score == 1000
    assert "Generic Test for Unsolicited Bulk Email" in gtube.description
    assert "Content analysis details" in spam_report.report


def test_assert_not_spam_lists_the_spam_and_its_rules(
    smtpsink: Mailbox, configured: str
) -> None:
    send(smtpsink, HAM)
    smtpsink.assert_not_spam()
    send(smtpsink, GTUBE, subject="Offer")
    with pytest.raises(AssertionError) as failure:
        smtpsink.assert_not_spam()
    lines = str(failure.value).splitlines()
    assert lines[0] == (
        "expected every message to score below spamd's threshold; 1 of 2 did not:"
    )
    assert "Subject: 'Offer'" in lines[1]
    assert lines[2].startswith("    score 10")
    assert "GTUBE (+1000)" in lines[2]
    # A stricter bar than spamd's own; the address may also be given per call.
    use_spamd(None)
    smtpsink.clear()
    send(smtpsink, HAM)
    smtpsink.assert_not_spam(max_score=2.0, spamd=configured)
    with pytest.raises(AssertionError) as failure:
        smtpsink.assert_not_spam(max_score=-100, spamd=configured)
    assert str(failure.value).splitlines()[0] == (
        "expected every message to score below -100 (spamd gives scores to one "
        "decimal); 1 of 1 did not:"
    )
    # The same message again: its verdict is not repeated (a test sending
    # 200 messages from one template listed 200 copies).
    smtpsink.clear()
    raw = (
        "From: Ann <ann@example.com>\r\nTo: bob@example.com\r\n"
        "Subject: Lunch\r\nDate: Mon, 30 Nov 2026 19:10:00 +0000\r\n"
        "Message-ID: <lunch@example.com>\r\n\r\n" + HAM + "\r\n"
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        for _ in range(3):
            client.sendmail("ann@example.com", ["bob@example.com"], raw)
    with pytest.raises(AssertionError) as failure:
        smtpsink.assert_not_spam(max_score=-100, spamd=configured)
    lines = str(failure.value).splitlines()
    assert lines[0].endswith("3 of 3 did not:")
    first = int(lines[1].split()[0].removeprefix("#"))  # numbers go on after clear()
    assert "Subject: 'Lunch'" in lines[1]
    assert lines[2].startswith("    score ")
    assert lines[3:] == [
        f"  and the same for 2 more messages: #{first + 1}, #{first + 2}"
    ]


def test_without_a_spamd_the_call_says_how_to_configure_one(smtpsink: Mailbox) -> None:
    send(smtpsink, HAM)
    message = smtpsink.assert_sent()
    with pytest.raises(SpamdError, match=r"no spamd is configured .*--smtpsink-spamd"):
        message.spam_report()
    # It names the call the test made, and how to give that call a spamd.
    with pytest.raises(
        SpamdError,
        match=r"no spamd is configured for assert_not_spam\(\): .* or call "
        r"assert_not_spam\(spamd='127.0.0.1:7830'\)$",
    ) as caught:
        smtpsink.assert_not_spam()
    shown = caught.traceback.filter(caught)  # as pytest reports it
    assert shown[-1].name == "test_without_a_spamd_the_call_says_how_to_configure_one"


def test_an_unreachable_spamd_is_an_error_not_a_pass(smtpsink: Mailbox) -> None:
    send(smtpsink, HAM)
    # A port bound and not listening refuses connections for as long as it
    # is held (port 9, "discard", was served by another program once).
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with pytest.raises(
            SpamdError, match=rf"could not ask spamd at 127\.0\.0\.1:{port}: "
        ):
            smtpsink.assert_sent().spam_report(spamd=f"127.0.0.1:{port}")
        # assert_not_spam says so at the test's line; the advice is to start
        # a spamd at the address the test named, not to name another.
        with pytest.raises(SpamdError) as caught:
            smtpsink.assert_not_spam(spamd=f"127.0.0.1:{port}")
        assert str(caught.value).startswith(
            f"could not ask spamd at 127.0.0.1:{port}: "
        )
        assert str(caught.value).endswith(
            f"Is it running? Start SpamAssassin's spamd there (Debian: apt-get "
            f"install spamd; e.g. spamd --listen=127.0.0.1:{port} --local "
            "--nouser-config --cf='use_bayes 0')."
        )
        shown = caught.traceback.filter(caught)
        assert shown[-1].name == "test_an_unreachable_spamd_is_an_error_not_a_pass"


def test_the_option_and_its_ini_twin(pytester: pytest.Pytester, spamd: str) -> None:
    pytester.makepyfile(
        f"""
import smtplib

def test_scored(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("a@example.com", ["b@example.com"],
                        "Subject: x\\r\\n\\r\\n{GTUBE}\\r\\n")
    assert smtpsink.assert_sent().spam_report().is_spam
"""
    )
    pytester.runpytest("-p", "no:xdist", f"--smtpsink-spamd={spamd}").assert_outcomes(
        passed=1
    )
    pytester.makeini(f"[pytest]\nsmtpsink_spamd = {spamd}\n")
    pytester.runpytest("-p", "no:xdist").assert_outcomes(passed=1)


def test_a_bad_spamd_option_names_itself(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass\n")
    result = pytester.runpytest("--smtpsink-spamd=localhost")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--smtpsink-spamd: 'localhost' is not HOST:PORT (e.g. 127.0.0.1:783)*"]
    )


@pytest.mark.parametrize(
    "value",
    [
        "ann:s3cretpw@127.0.0.1:783",
        "s3cretpw@127.0.0.1:783",
        "spamd://127.0.0.1:s3cretpw:783",
        "127.0.0.1:s3cretpw:783",
        # No port, or a path after it (helper-146's F2).
        "ann:s3cretpw@spamd.example",
        "127.0.0.1:783/?pw=s3cretpw",
    ],
)
def test_a_spamd_option_with_credentials_is_refused_without_showing_them(
    pytester: pytest.Pytester, value: str
) -> None:
    # "user:pw@host:783" passed as a host, and the test then failed with
    # "could not ask spamd at user:pw@host:783": the password in the log.
    pytester.makepyfile("def test_x(): pass\n")
    result = pytester.runpytest(f"--smtpsink-spamd={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*--smtpsink-spamd: the value is not HOST:PORT (e.g. 127.0.0.1:783): "
            "spamd's protocol has no user name or password (the value is not "
            "shown, as it may hold one)*"
        ]
    )
    assert "s3cretpw" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (
            b"SPAMD/1.0 76 Bad header line: (EOF)\r\n\r\n",
            "did not score the message: SPAMD/1.0 76 Bad header line",
        ),
        (
            b"SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n",
            "answered without a Spam: header",
        ),
        # Nothing at all: the message ended after its colon.
        (b"", "closed the connection without an answer: is that port a spamd's?"),
        # Read as no Spam: header at all.
        (
            b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; nan / 5.0\r\n\r\n",
            "answered a Spam: header with no score in it: 'False ; nan / 5.0'",
        ),
        (
            b"HTTP/1.1 400 Bad Request\r\n\r\n",
            "did not score the message: HTTP/1.1 400",
        ),
    ],
)
def test_an_answer_that_is_not_a_score_is_an_error(answer: bytes, error: str) -> None:
    with pytest.raises(SpamdError, match=re.escape(error)):
        _parse(answer, "127.0.0.1:783")


def test_a_report_without_rules_and_a_negative_zero_score() -> None:
    report = _parse(b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; -0.0 / 5.0\r\n\r\n", "x")
    assert (report.score, report.threshold, report.is_spam, report.rules) == (
        0.0,
        5.0,
        False,
        (),
    )
    assert str(report) == "score 0 / 5 (not spam); rules: none"


def test_every_rule_of_the_table_is_read_whatever_its_name() -> None:
    # As spamd 4 writes it (a site's own rule named in lower case, from a
    # --cf line), continued descriptions indented past the score column.
    table = (
        b"Content analysis details:   (2.5 points, 5.0 required)\r\n\r\n"
        b" pts rule name              description\r\n"
        b"---- ---------------------- ------------------------------------\r\n"
        b"-0.0 NO_RECEIVED            Informational: message has no Received headers\r\n"
        b" 1.5 my_lower_rule          A custom rule in lower case\r\n"
        b" 0.0 URIBL_BLOCKED          ADMINISTRATOR NOTICE: The query to URIBL was\r\n"
        b"                            blocked.\r\n"
        b"                            2 more lines [URIs: example.com]\r\n"
        b" 1.0 no_description\r\n"
    )
    report = _parse(
        b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; 2.5 / 5.0\r\n\r\n" + table, "x"
    )
    assert report.rules == (
        SpamRule("NO_RECEIVED", 0.0, "Informational: message has no Received headers"),
        SpamRule("my_lower_rule", 1.5, "A custom rule in lower case"),
        SpamRule(
            "URIBL_BLOCKED",
            0.0,
            "ADMINISTRATOR NOTICE: The query to URIBL was blocked. 2 more lines "
            "[URIs: example.com]",
        ),
        SpamRule("no_description", 1.0, ""),
    )
    # The text puts the rules that made the score first (spamd's order
    # buried them among +0 notes).
    assert str(report) == (
        "score 2.5 / 5 (not spam); rules: my_lower_rule (+1.5), no_description "
        "(+1), NO_RECEIVED (+0), URIBL_BLOCKED (+0)"
    )


def test_without_a_spamd_assert_not_spam_fails_even_with_no_mail(
    smtpsink: Mailbox,
) -> None:
    with pytest.raises(SpamdError, match=r"no spamd is configured .*--smtpsink-spamd"):
        smtpsink.assert_not_spam()


def test_assert_not_spam_fails_when_no_mail_arrived(smtpsink: Mailbox) -> None:
    # It passed: an application that sent nothing was "not spam". No spamd
    # is asked (there is nothing to score); this one would refuse.
    with pytest.raises(AssertionError) as failure:
        smtpsink.assert_not_spam(spamd="127.0.0.1:9")
    lines = str(failure.value).splitlines()
    assert lines[0] == "expected mail to check, none arrived in this test"
    assert lines[1].startswith(f"Hint: no client connected to {smtpsink.url}")


def test_bad_arguments_are_named(smtpsink: Mailbox) -> None:
    send(smtpsink, HAM)
    message = smtpsink.assert_sent()
    with pytest.raises(
        TypeError, match=r"spamd must be 'HOST:PORT' \(a str\) or None, got 783"
    ):
        message.spam_report(spamd=783)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="spamd must be 'HOST:PORT'"):
        smtpsink.assert_not_spam(spamd=783)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"spamd: 'localhost' is not HOST:PORT"):
        message.spam_report(spamd="localhost")
    with pytest.raises(
        ValueError,
        match=r"spamd: '127.0.0.1:99999': the port must be a number from 1 to 65535",
    ):
        message.spam_report(spamd="127.0.0.1:99999")
    for port in ("\uff17\uff18\uff13", "\u00b2"):  # full-width 783; a superscript
        with pytest.raises(ValueError, match=r"is not HOST:PORT"):
            message.spam_report(spamd=f"127.0.0.1:{port}")
    with pytest.raises(ValueError, match=r"spamd: the value is not HOST:PORT") as no:
        message.spam_report(spamd="ann:pw@127.0.0.1:783")
    assert "pw" not in str(no.value).replace("password", "")
    with pytest.raises(ValueError, match=r"spamd: '127.0.0.1 :783' is not HOST:PORT"):
        message.spam_report(spamd="127.0.0.1 :783")
    assert parse_address("[::1]:783") == ("::1", 783)
    assert parse_address("[fe80::1%eth0]:783") == ("fe80::1%eth0", 783)
    # Shown as typed: errors would write it unbracketed (1::2::3:783).
    for host in ("1::2::3", "fe80::1%", "127.0.0.1", "localhost"):
        with pytest.raises(
            ValueError,
            match=rf"^spamd: '\[{re.escape(host)}\]:783' is not HOST:PORT: only an "
            r"IPv6 address goes in brackets \(\[::1\]:783\)$",
        ):
            message.spam_report(spamd=f"[{host}]:783")
    # Not the configured spamd instead, nor "no spamd is configured".
    previous = use_spamd("127.0.0.1:9")
    try:
        with pytest.raises(ValueError, match=r"spamd: '' is not HOST:PORT"):
            message.spam_report(spamd="")
        with pytest.raises(ValueError, match=r"spamd: '' is not HOST:PORT"):
            smtpsink.assert_not_spam(spamd="")
    finally:
        use_spamd(previous)
    with pytest.raises(ValueError, match=r"spamd: '' is not HOST:PORT"):
        message.spam_report(spamd="")
    with pytest.raises(
        TypeError, match=r"max_score must be a number .* got the str '3'"
    ):
        smtpsink.assert_not_spam(max_score="3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_score must be a finite number, got nan"):
        smtpsink.assert_not_spam(max_score=float("nan"))
    with pytest.raises(ValueError, match=r"timeout must be a number of seconds > 0"):
        smtpsink.assert_not_spam(timeout=-1)
    with pytest.raises(
        TypeError, match="timeout must be a number of seconds, got the str '5'"
    ):
        message.spam_report(timeout="5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"timeout must be a number of seconds > 0"):
        message.spam_report(timeout=0)
    # "> 0, got inf" said nothing of why.
    with pytest.raises(
        ValueError, match=r"^timeout must be a finite number of seconds > 0, got inf$"
    ):
        message.spam_report(timeout=float("inf"))


def test_a_spamd_that_answers_a_byte_now_and_then_is_an_error_after_the_timeout(
    smtpsink: Mailbox,
) -> None:
    # The timeout bounded each read: a spamd sending a byte every 0.1 s
    # held the test for ever. Here it stops after 5 s.
    send(smtpsink, HAM)
    stop = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as dripping:

        def drip() -> None:
            connection, _ = dripping.accept()
            with connection:
                for byte in (b"SPAMD/1.1 0 EX_OK\r\n" * 3)[:50]:
                    if stop.wait(0.1):
                        return
                    connection.sendall(bytes([byte]))

        thread = threading.Thread(target=drip)
        thread.start()
        port = dripping.getsockname()[1]
        try:
            with pytest.raises(
                SpamdError,
                match=rf"^spamd at 127\.0\.0\.1:{port} did not answer within 0\.5 s",
            ):
                smtpsink.assert_sent().spam_report(f"127.0.0.1:{port}", timeout=0.5)
        finally:
            stop.set()
            thread.join()


def test_a_spamd_that_never_answers_is_an_error_after_the_timeout(
    smtpsink: Mailbox,
) -> None:
    send(smtpsink, HAM)
    # Listens but never accepts: the connection completes (the backlog), and
    # no answer ever comes.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        with pytest.raises(
            SpamdError,
            match=rf"spamd at 127\.0\.0\.1:{port} did not answer within 0\.05 s",
        ):
            smtpsink.assert_sent().spam_report(f"127.0.0.1:{port}", timeout=0.05)
        # assert_not_spam has its own timeout, and names it (not
        # spam_report's), at the test's line.
        with pytest.raises(SpamdError) as caught:
            smtpsink.assert_not_spam(spamd=f"127.0.0.1:{port}", timeout=0.05)
        assert str(caught.value) == (
            f"spamd at 127.0.0.1:{port} did not answer within 0.05 s "
            "(assert_not_spam(timeout=...) sets the limit)"
        )
        shown = caught.traceback.filter(caught)
        assert shown[-1].name == (
            "test_a_spamd_that_never_answers_is_an_error_after_the_timeout"
        )

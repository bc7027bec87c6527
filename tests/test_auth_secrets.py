"""No form of an AUTH credential reaches any output.

One test sends credentials in every hostile form (`hostile_auth.forms`) to
the sink three ways, and searches every channel a person or a CI log could
see for the password, its base64 and any 12 characters of the base64 PLAIN
responses, in any case (aiosmtpd upper-cases what it echoes).
"""

from __future__ import annotations

import base64
import logging
import socket
from pathlib import Path

import hostile_auth
import pytest
from conftest import Factory
from hostile_auth import PASSWORD, USER
from test_cli import Sink

from pytest_smtpsink import Mailbox, Session

AUTH = {USER: PASSWORD}


def files_text(directory: Path) -> str:
    return "\n".join(
        path.read_bytes().decode("utf-8", "replace")
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    )


def test_no_credential_reaches_any_output(
    smtpsink_factory: Factory,
    caplog: pytest.LogCaptureFixture,
    pytester: pytest.Pytester,
    tmp_path: Path,
) -> None:
    forms = len(hostile_auth.forms())
    leaked: dict[str, list[str]] = {}

    # 1. In process: the transcripts, reprs and every log record at DEBUG.
    caplog.set_level(logging.DEBUG)
    sink = smtpsink_factory(auth=AUTH, auth_plaintext=True)
    finals = hostile_auth.send_all(sink.host, sink.port)
    sink.wait_until(
        lambda: (
            len(sink.sessions) == forms
            and all(s.end is not None for s in sink.sessions)
        )
    )
    sessions = sink.sessions
    shown = "\n".join(
        [repr(s) + "\n" + s.format_transcript() for s in sessions]
        + [e.line + "\n" + "\n".join(e.replies) for s in sessions for e in s.transcript]
    )
    leaked["transcript"] = hostile_auth.leaks(shown)
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert "mail.log" in caplog.text  # aiosmtpd's records were captured
    leaked["log"] = hostile_auth.leaks(logged)

    # What was masked still says what happened.
    lines = [[e.line for e in s.transcript if e.kind != "greeting"] for s in sessions]
    assert lines[0][1] == "AUTH PLAIN ****"
    assert lines[2][1] == "AUTH PLAIN ****"  # tabs
    assert lines[7][1] == "AUTH ****"  # the secret where the mechanism goes
    assert lines[8][1] == "AUTH ****"  # NUL separators
    assert sessions[2].transcript[2].replies == [
        "500 5.5.2 Error: AUTH and its arguments must be separated by spaces"
    ]
    # The long response was read whole, in two reads or one: 235, and the
    # tail was not taken for a command.
    assert finals[16].startswith(b"235")
    assert sessions[16].commands == ["EHLO", "AUTH", "QUIT"]
    assert [e.line for e in sessions[16].transcript if e.kind == "auth-response"] == [
        "****"
    ]
    assert finals[18].startswith(b"500 5.5.6")
    assert sessions[18].commands == ["EHLO", "AUTH", "QUIT"]
    # Responses sent to a refused AUTH are recorded as masked responses,
    # not as commands, and their replies echo nothing.
    assert sessions[19].commands == ["EHLO", "AUTH", "QUIT"]
    stray = sessions[19].transcript[3]
    assert (stray.kind, stray.line) == ("auth-response", "****")
    assert stray.replies == ["500 5.5.2 Error: command not recognized"]
    assert sessions[20].commands == ["EHLO", "AUTH", "AUTH", "QUIT"]
    assert sessions[20].codes[2:4] == [235, 503]
    # A password where no AUTH expects one is masked as a word.
    assert lines[21][1] == f"XLOGIN {USER} ****"
    assert sessions[22].transcript[2].line == "****"
    # Its reply echoes nothing: the client's own log would get it.
    assert sessions[22].transcript[2].replies == [
        "500 5.5.2 Error: command not recognized"
    ]

    # 2. The plugin: the failure report (with the captured log at DEBUG)
    # and the files --smtpsink-save writes.
    pytester.makepyfile(hostile_auth=Path(hostile_auth.__file__).read_text())
    pytester.makepyfile(
        test_hostile=f"""
        import hostile_auth
        import pytest

        AUTH = {{hostile_auth.USER: hostile_auth.PASSWORD}}

        @pytest.mark.smtpsink(auth=AUTH, auth_plaintext=True)
        def test_sends_credentials(smtpsink):
            hostile_auth.send_all(smtpsink.host, smtpsink.port)
            smtpsink.wait_until(
                lambda: len(smtpsink.sessions) == {forms}
                and all(s.end is not None for s in smtpsink.sessions)
            )
            assert False, "fail, to get the report"
        """
    )
    saved = tmp_path / "plugin-saved"
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--log-level=DEBUG",
        "--smtpsink-save=all",
        f"--smtpsink-save-dir={saved}",
    )
    result.assert_outcomes(failed=1)
    report = result.stdout.str() + result.stderr.str()
    assert "AUTH PLAIN ****" in report  # the transcript is in the report
    assert "mail.log" in report  # and the captured log
    leaked["report"] = hostile_auth.leaks(report)
    assert "AUTH PLAIN ****" in files_text(saved)
    leaked["plugin files"] = hostile_auth.leaks(files_text(saved))

    # 3. The standalone sink: --transcripts output, its log on stderr, and
    # the session files of --save-dir.
    cli_saved = tmp_path / "cli-saved"
    cli = Sink(
        *("--transcripts", "--save-dir", str(cli_saved)),
        *("--auth", f"{USER}:{PASSWORD}", "--auth-plaintext"),
    )
    try:
        hostile_auth.send_all("127.0.0.1", cli.port)
        cli.expect(rf"session {forms} closed")
    finally:
        cli.stop()
    output = "\n".join(cli.seen) + "\n" + cli.stderr
    assert "C: AUTH PLAIN ****" in output
    leaked["CLI output"] = hostile_auth.leaks(output)
    assert "AUTH PLAIN ****" in files_text(cli_saved)
    leaked["CLI files"] = hostile_auth.leaks(files_text(cli_saved))

    assert {channel: found for channel, found in leaked.items() if found} == {}


@pytest.mark.parametrize("protocol", ["POP3", "IMAP"])
def test_a_password_where_no_login_expects_it_is_masked(
    smtpsink_factory: Factory, protocol: str
) -> None:
    # A client that sends a known password in an unknown command, or on a
    # line of its own: the read side records and may echo both.
    sink = smtpsink_factory(auth={"ann@example.com": PASSWORD}, auth_plaintext=True)
    endpoint = sink.pop3 if protocol == "POP3" else sink.imap
    lines = (
        [f"XPASS {PASSWORD}", PASSWORD, "QUIT"]
        if protocol == "POP3"
        else [f"a XLOGIN ann@example.com {PASSWORD}", PASSWORD, "z LOGOUT"]
    )
    with socket.create_connection((endpoint.host, endpoint.port), timeout=10) as sock:
        sock.sendall("".join(line + "\r\n" for line in lines).encode())
        with sock.makefile("rb") as replies:
            said = replies.read().decode()
    sink.wait_until(lambda: bool(sink.sessions) and sink.sessions[-1].end is not None)
    (session,) = sink.sessions
    shown = session.format_transcript() + repr(session)
    assert hostile_auth.leaks(shown) == []
    assert "****" in shown
    assert said  # answered, and the server went on to the end


@pytest.mark.parametrize(
    ("protocol", "lines", "recorded"),
    [
        (
            "POP3",
            # PASS forgotten, misspelt, or another protocol's login.
            [
                "USER ann@example.com",
                PASSWORD,
                f"PAS {PASSWORD}",
                f"LOGIN ann {PASSWORD}",
            ],
            ["USER ann@example.com", "****", "PAS ****", "LOGIN ****"],
        ),
        (
            "POP3",
            # Two words, or bytes that are not UTF-8, alone after USER.
            ["USER ann@example.com", f"{PASSWORD} horse", "USER ann", "pw\xe9"],
            ["USER ann@example.com", "****", "USER ann", "****"],
        ),
        (
            "IMAP",
            [
                "a LOGIN ann@example.com",  # its password on the next line
                PASSWORD,
                "c AUTH PLAIN "
                + base64.b64encode(f"\0ann@example.com\0{PASSWORD}".encode()).decode(),
                f"d LOGN ann {PASSWORD}",
                # Run on past LOGIN: the tail may be a password without
                # its space ("LOGINN ****" showed "LOGINpw" whole).
                f"e LOGINN ann {PASSWORD}",
                f"f LOGIN{PASSWORD}",
                f"g AUTHENTICATE{PASSWORD} x",
            ],
            [
                "LOGIN ****",
                "****",
                "AUTH ****",
                "LOGN ****",
                "LOGIN****",
                "LOGIN****",
                "AUTHENTICATE****",
            ],
        ),
        (
            "IMAP",
            # However the line would parse, after a LOGIN that lacked it.
            [
                "a LOGIN ann@example.com",
                f"{PASSWORD} ",
                "b LOGIN ann@example.com",
                f" {PASSWORD}",
                "c LOGIN ann@example.com",
                f"{PASSWORD} horse",
            ],
            ["LOGIN ****", "****", "LOGIN ****", "****", "LOGIN ****", "****"],
        ),
        (
            "IMAP",
            # A line that does not parse, before login: its verb alone
            # ("a LOG\xffIN ann pw" was recorded whole).
            [
                f"a LOG\x7fIN ann {PASSWORD}",
                # No tag, a tag that is none, tabs (helper-146's F1).
                f"LOG\x7fIN ann {PASSWORD}",
                f"* LOGN ann {PASSWORD}",
                f"c+d LOGN ann {PASSWORD}",
                f"e LOGN\tann\t{PASSWORD}",
                f"f LOG\x7fIN\tann\t{PASSWORD}",
                f'b LOGIN "ann {PASSWORD}',
            ],
            [
                "LOG\\x7fIN ****",
                "LOG\\x7fIN ****",
                "* ****",
                "c+d ****",
                "LOGN ****",
                "LOG\\x7fIN ****",
                "LOGIN ****",
            ],
        ),
        (
            "IMAP",
            # Its literal refused as too large, the password sent anyway.
            ["a LOGIN ann@example.com {99999999}", PASSWORD],
            ["LOGIN ****", "****"],
        ),
    ],
)
def test_a_password_the_sink_does_not_know_outside_a_login_is_masked(
    smtpsink: Mailbox, protocol: str, lines: list[str], recorded: list[str]
) -> None:
    # Without an auth table (any password opens a mailbox) the sink knows
    # no password to look for: each of these was recorded as sent, in the
    # report and the saved files too (and the IMAP line alone twice).
    endpoint = smtpsink.pop3 if protocol == "POP3" else smtpsink.imap
    end = "QUIT" if protocol == "POP3" else "z LOGOUT"
    with socket.create_connection((endpoint.host, endpoint.port), timeout=10) as sock:
        sock.sendall("".join(line + "\r\n" for line in [*lines, end]).encode())
        with sock.makefile("rb") as replies:
            assert replies.read()
    smtpsink.wait_until(
        lambda: bool(smtpsink.sessions) and smtpsink.sessions[-1].end is not None
    )
    (session,) = smtpsink.sessions
    commands = [e for e in session.transcript if e.kind == "command"]
    assert [e.line for e in commands][: len(recorded)] == recorded
    shown = session.format_transcript() + repr(session)
    assert hostile_auth.leaks(shown) == []


@pytest.mark.parametrize("known", [False, True], ids=["any-password", "table"])
def test_a_long_sasl_response_sent_unasked_to_pop3_is_masked_whole(
    smtpsink_factory: Factory, known: bool
) -> None:
    # Over POP3's 255-octet line limit, a PLAIN response sent without waiting
    # for "+" (here: after AUTH is refused, once logged in) had its first 64
    # characters recorded: 31 octets of the password, in base64.
    long_password = "TOPSECRET" + "x" * 250
    blob = hostile_auth.b64(f"\0ann@example.com\0{long_password}")
    auth = {"ann@example.com": long_password, "bob": "pw"} if known else None
    sink = smtpsink_factory(auth=auth, auth_plaintext=True)
    with socket.create_connection((sink.pop3.host, sink.pop3.port), timeout=10) as sock:
        sock.sendall(b"USER bob\r\nPASS pw\r\nAUTH PLAIN\r\n" + blob + b"\r\nQUIT\r\n")
        with sock.makefile("rb") as replies:
            said = replies.read().decode()
    sink.wait_until(lambda: bool(sink.sessions) and sink.sessions[-1].end is not None)
    (session,) = sink.sessions
    shown = session.format_transcript() + repr(session)
    assert blob[:20].decode() not in shown
    response = [e for e in session.transcript if e.kind == "auth-response"]
    assert [e.line for e in response] == [f"**** [{len(blob) + 2} bytes in all]"]
    assert response[0].replies[0].startswith("-ERR Line too long")
    assert said.endswith("+OK Logging out\r\n")  # and it went on serving


def test_a_password_sent_as_the_user_name_or_greeting_is_masked(
    smtpsink_factory: Factory,
) -> None:
    # An application with its user name and password swapped sends the
    # password as the user: the transcript masked it, but the summary
    # line ("failed: PLAIN '...'", in reports, saved files and the CLI)
    # showed the attempt's user name as sent; so too a password given as
    # the EHLO name.
    import imaplib
    import poplib
    import smtplib

    sink = smtpsink_factory(auth={USER: PASSWORD}, auth_plaintext=True)
    with (
        smtplib.SMTP(sink.host, sink.port, local_hostname=PASSWORD) as client,
        pytest.raises(smtplib.SMTPAuthenticationError),
    ):
        client.login(PASSWORD, USER)
    pop3 = poplib.POP3(sink.pop3.host, sink.pop3.port, timeout=10)
    pop3.user(PASSWORD)
    with pytest.raises(poplib.error_proto):
        pop3.pass_(USER)
    pop3.quit()
    imap = imaplib.IMAP4(sink.imap.host, sink.imap.port, timeout=10)
    with pytest.raises(imaplib.IMAP4.error):
        imap.login(PASSWORD, USER)
    imap.logout()
    sink.wait_until(lambda: all(s.end is not None for s in sink.sessions))
    shown = "\n".join(repr(s) for s in sink.sessions)
    # smtplib tries CRAM-MD5, PLAIN and LOGIN in turn.
    assert [
        (s.protocol, a.username) for s in sink.sessions for a in s.auth_attempts
    ] == [("SMTP", "****")] * 3 + [("POP3", "****"), ("IMAP", "****")]
    assert sink.sessions[0].ehlo == "****"
    assert hostile_auth.leaks(shown) == []


@pytest.mark.parametrize("password", ["data", "QUIT", "250", "mail", "ok"])
def test_a_password_that_is_a_protocol_word_leaves_the_session_facts_alone(
    smtpsink_factory: Factory, password: str
) -> None:
    # Masking a known password as a word rewrote the verbs and codes the
    # session's facts are read from: with the password "quit", used("QUIT")
    # was False and the end "client-closed"; with "250", no 250 was left.
    import smtplib

    sink = smtpsink_factory(auth={"u": password}, auth_plaintext=True)
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.login("u", password)
        client.sendmail("p@example.com", ["b@example.com"], b"Subject: x\r\n\r\nx\r\n")
        assert client.docmd("NOOP", password)[0] == 250
    sink.wait_until(lambda: sink.sessions[-1].end is not None)
    (session,) = sink.sessions
    assert session.commands == ["EHLO", "AUTH", "MAIL", "RCPT", "DATA", "NOOP", "QUIT"]
    assert session.codes == [220, 250, 334, 235, 250, 250, 354, 250, 250, 221]
    assert session.end == "quit"
    # Where it is no verb or code, it is still masked.
    assert "C: NOOP ****" in session.format_transcript()


@pytest.mark.parametrize(
    "line",
    [
        f"XPW pw={PASSWORD}",
        f"XPW |{PASSWORD}|",
        f"XPW /{PASSWORD}&x=1",
        # A sentence's end: a relay upstream's "535 wrong password pw."
        # showed it (helper-98's F12).
        f"XPW wrong password {PASSWORD}.",
        f"XPW {PASSWORD}. Try again",
        # "@" joins a word only if one follows, as "." does.
        f"XPW {PASSWORD}@",
    ],
)
def test_a_password_after_a_separator_of_no_protocol_is_masked(
    smtpsink_factory: Factory, line: str
) -> None:
    # Only white space, quotes, brackets and ,;: counted as the edge of a
    # word: "pw=..." kept the password (so did a relay upstream's reply
    # quoting it). Letters, digits and _@.- still join it to a word.
    import smtplib

    sink = smtpsink_factory(auth={USER: PASSWORD}, auth_plaintext=True)
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.docmd(line)
        client.docmd(f"XPW {PASSWORD}@example.com x{PASSWORD}")
    sink.wait_until(lambda: sink.sessions[-1].end is not None)
    masked, kept = [e.line for e in sink.sessions[0].transcript if e.command == "XPW"]
    assert (hostile_auth.leaks(masked), "****" in masked) == ([], True)
    assert kept == f"XPW {PASSWORD}@example.com x{PASSWORD}"


def _one_line_on_each_protocol(sink: Mailbox, command: bytes, argument: bytes) -> None:
    """``command`` and ``argument`` as one line to the sink's SMTP, POP3
    and IMAP servers (tagged there), each on a connection of its own that
    reads the reply and closes; returns once the three sessions ended."""
    lines = {
        sink.port: command,
        sink.pop3.port: command,
        sink.imap.port: b"a " + command,
    }
    for port, start in lines.items():
        with socket.create_connection((sink.host, port), timeout=10) as client:
            replies = client.makefile("rb")
            replies.readline()  # the greeting
            client.sendall(start + argument + b"\r\n")
            replies.readline()
            replies.close()
    sink.wait_until(lambda: all(s.end is not None for s in sink.sessions))
    assert len(sink.sessions) == 3


@pytest.mark.parametrize(
    ("protocol", "cut", "tail"),
    # SMTP's second: a line longer than aiosmtpd reads at once (1001 bytes).
    [("SMTP", 512, 8), ("SMTP", 512, 2000), ("POP3", 64, 300), ("IMAP", 64, 64 * 1024)],
)
def test_a_known_password_across_the_cut_of_a_long_line_is_masked(
    smtpsink_factory: Factory, protocol: str, cut: int, tail: int
) -> None:
    # A line too long to record whole is cut (SMTP at 512 characters, a
    # POP3 or IMAP line over its limit after login at 64). The cut came
    # before the mask: a password across it kept its first characters
    # ("... Kx7-Qv2m... [530 bytes in all]"), all of them when it ended
    # right at the cut (the "..." after it read as the same word).
    sink = smtpsink_factory(auth={USER: PASSWORD}, auth_plaintext=True)
    port = {"SMTP": sink.port, "POP3": sink.pop3.port, "IMAP": sink.imap.port}
    tag = b"a " if protocol == "IMAP" else b""
    with socket.create_connection((sink.host, port[protocol]), 10) as client:
        replies = client.makefile("rb")
        replies.readline()  # the greeting
        login = {
            "SMTP": [b"EHLO c"],
            "POP3": [f"USER {USER}".encode(), f"PASS {PASSWORD}".encode()],
            "IMAP": [f"a LOGIN {USER} {PASSWORD}".encode()],
        }[protocol]
        for sent in login:
            client.sendall(sent + b"\r\n")
            while replies.readline()[3:4] == b"-":  # EHLO's lines
                pass
        # The password ends at the cut, then one character later each time.
        for shift in range(len(PASSWORD) + 1):
            head = b"XPW " + b"A" * (cut - len(PASSWORD) - 5 + shift) + b" "
            client.sendall(
                tag + head + PASSWORD.encode() + b" " + b"B" * tail + b"\r\n"
            )
            replies.readline()
        replies.close()
    recorded = [e.line for e in sink.sessions[0].transcript if "XPW" in e.line]
    assert len(recorded) == len(PASSWORD) + 1
    for shown in recorded:
        assert "bytes in all]" in shown, shown
        assert PASSWORD[:3] not in shown, shown


def test_a_password_no_table_names_is_masked_on_smtp_as_on_pop3(
    smtpsink_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    # A sink that takes any password cannot know one; before a login, a
    # line that is no command may hold one. SMTP recorded a misspelt login
    # and a password sent alone as they came, and echoed the lone password
    # upper-cased in its 500 (and in aiosmtpd's log); POP3 and IMAP masked
    # them. After a login, and for known commands, nothing is masked.
    caplog.set_level(logging.DEBUG, logger="mail.log")
    sink = smtpsink_factory(auth="any", auth_plaintext=True)
    secret = "N0tab-pw-QRS"
    with socket.create_connection((sink.host, sink.port), timeout=10) as client:
        replies = client.makefile("rb")
        replies.readline()
        sent = [
            "EHLO c",
            f"LOGIN ann {secret}",
            secret,
            "NOOP",
            # "auth" inside it did not make it an AUTH line, nor masked it.
            f"oAuth{secret}",
            "\u00adAUTH PLAIN "
            + base64.b64encode(f"\0ann\0{secret}".encode()).decode(),
            "AUTH PLAIN " + base64.b64encode(b"\0ann\0pw").decode(),
            "XAFTER login",
        ]
        answers = []
        for line in sent:
            client.sendall(line.encode() + b"\r\n")
            while (answer := replies.readline().decode())[3:4] == "-":
                pass
            answers.append(answer.rstrip())
        replies.close()
    assert answers[6].startswith("235 ")
    recorded = [e.lines() for e in sink.sessions[0].transcript[2:]]
    assert recorded[:5] == [
        ["C: LOGIN ****", 'S: 500 Error: command "LOGIN" not recognized'],
        ["C: ****", "S: 500 5.5.2 Error: command not recognized"],
        ["C: NOOP", "S: 250 OK"],
        ["C: ****", "S: 500 5.5.2 Error: command not recognized"],
        [
            "C: \\u00adAUTH PLAIN ****",
            "S: 500 Error: bad syntax",
        ],  # shown, not invisible
    ]
    assert answers[2] == "500 5.5.2 Error: command not recognized"
    assert recorded[6][0] == "C: XAFTER login"  # logged in: as sent
    assert secret.lower() not in caplog.text.lower()
    assert "LOGIN ****" in caplog.text


@pytest.mark.parametrize("auth", [None, "table"])
def test_a_misspelt_auth_s_credentials_are_masked_on_every_sink(
    smtpsink_factory: Factory, caplog: pytest.LogCaptureFixture, auth: str | None
) -> None:
    # A client sends its credentials after AUTH typed wrong all the same:
    # on a sink with a table (a wrong password, which no table names) or
    # with no logins (the production ones a client was left with), they
    # were recorded and logged in clear; only an auth="any" sink masked.
    caplog.set_level(logging.DEBUG, logger="mail.log")
    table = {USER: PASSWORD} if auth else None
    sink = smtpsink_factory(auth=table, auth_plaintext=bool(auth))
    wrong = "Pr0dSecretF7x"
    plain = base64.b64encode(f"\0{USER}\0{wrong}".encode()).decode()
    login = base64.b64encode(wrong.encode()).decode()
    batches = [  # a sink closes on the fifth unknown command: sessions of four
        [
            f"AU\u200bTH PLAIN {plain}",  # an invisible character copied along
            f"AUHT PLAIN {plain}",
            f"XAUTH PLAIN {plain}",
        ],
        [f"A UTH PLAIN {plain}", f"AUHT LOGIN {login}", "XFOO shown as sent"],
        # Known by the mechanism, however the verb is spelt: a wrong letter,
        # one too many or too few, a look-alike (Cyrillic, full-width).
        [f"AUTJ PLAIN {plain}", f"AUUTH PLAIN {plain}", f"AUT PLAIN {plain}"],
        [f"\u0410UTH PLAIN {plain}", f"\uff21\uff35\uff34\uff28 PLAIN {plain}"],
        # Its responses on lines of their own (no 334 came), pipelined.
        ["AUHT LOGIN", base64.b64encode(USER.encode()).decode(), login],
        # No mechanism and no AUTH in a short verb: shown as sent.
        ["UTAH trip is planned", "XAUTHOR lorem ipsum"],
        # Spaced out, a no-break space after the mechanism, one not listed.
        [
            f"A U T H PLAIN {plain}",
            f"AUHT PLAIN\u00a0{plain}",
            f"AUHT SCRAM-SHA-512 {plain}",
            "XCLIENT LOGIN=ann NAME=client.example",  # no mechanism: as sent
        ],
    ]
    said = []
    for sent in batches:
        with socket.create_connection((sink.host, sink.port), timeout=10) as client:
            replies = client.makefile("rb")
            replies.readline()
            for line in ["EHLO c", *sent, "QUIT"]:
                client.sendall(line.encode() + b"\r\n")
                while (answer := replies.readline().decode())[3:4] == "-":
                    said.append(answer)
                said.append(answer)
            replies.close()
        sink.wait_until(lambda: sink.sessions[-1].end is not None)
    recorded = [e.line for session in sink.sessions for e in session.transcript[2:-1]]
    assert recorded == [
        "AU\u200bTH ****",
        "AUHT ****",
        "XAUTH ****",
        "A ****",
        "AUHT ****",
        "XFOO shown as sent",  # no AUTH: as it came
        "AUTJ ****",
        "AUUTH ****",
        "AUT ****",
        "\u0410UTH ****",
        "\uff21\uff35\uff34\uff28 ****",
        "AUHT ****",
        "****",
        "****",
        "UTAH trip is planned",
        "XAUTHOR lorem ipsum",
        "A ****",
        "AUHT ****",
        "AUHT ****",
        "XCLIENT LOGIN=ann NAME=client.example",
    ]
    transcripts = "".join(session.format_transcript() for session in sink.sessions)
    shown = "".join(said) + transcripts + caplog.text
    for secret in (wrong, plain, login):
        assert secret not in shown


@pytest.mark.parametrize("auth", ["table", "any"])
def test_a_password_alone_that_starts_like_a_verb_is_masked(
    smtpsink_factory: Factory, auth: str
) -> None:
    # The check that lets MAIL, RCPT, DATA... through at once read their
    # first four letters: "mailpass2024" was taken for MAIL, recorded,
    # echoed in the 500 and logged.
    sink = smtpsink_factory(
        auth={USER: PASSWORD} if auth == "table" else "any", auth_plaintext=True
    )
    with socket.create_connection((sink.host, sink.port), timeout=10) as sock:
        sock.sendall(b"EHLO c\r\nmailpass2024\r\nDataCenter!9 x\r\nQUIT\r\n")
        with sock.makefile("rb") as replies:
            said = replies.read().decode()
    sink.wait_until(lambda: sink.sessions[-1].end is not None)
    (session,) = sink.sessions
    recorded = [e.line for e in session.transcript[2:-1]]
    assert recorded == [
        "****",
        "DataCenter!9 ****" if auth == "any" else "DataCenter!9 x",
    ]
    assert "mailpass2024".upper() not in said.upper()


@pytest.mark.parametrize("lead", ["\x01", "\x1b", "\x7f", "\u2800", "(", "\xff"])
def test_a_token_after_any_lead_before_auth_is_masked(
    smtpsink_factory: Factory, caplog: pytest.LogCaptureFixture, lead: str
) -> None:
    # A control character (or a blank-looking symbol) before AUTH made the
    # line no AUTH line; with a password table only the known passwords
    # and PLAIN's base64 were masked, and an XOAUTH2 token holding the
    # password reached the transcript, repr(session) and aiosmtpd's log.
    caplog.set_level(logging.DEBUG, logger="mail.log")
    sink = smtpsink_factory(auth={"ann": "Zq9-Secret-Pw"}, auth_plaintext=True)
    token = base64.b64encode(b"user=ann\x01auth=Bearer Zq9-Secret-Pw\x01\x01")
    line = lead.encode("latin-1" if lead == "\xff" else "utf-8") + b"AUTH XOAUTH2 "
    with socket.create_connection((sink.host, sink.port), timeout=10) as client:
        replies = client.makefile("rb")
        replies.readline()
        for sent in (b"EHLO c", line + token, b"QUIT"):
            client.sendall(sent + b"\r\n")
            while replies.readline()[3:4] == b"-":
                pass
        replies.close()
    sink.wait_until(lambda: sink.sessions[0].end is not None)
    session = sink.sessions[0]
    shown = session.format_transcript() + repr(session) + str(session) + caplog.text
    assert token.decode() not in shown
    assert "Zq9-Secret-Pw" not in shown
    assert "AUTH XOAUTH2 ****" in session.format_transcript()


@pytest.mark.parametrize(
    ("lead", "shown"),
    [(" ", " "), ("\t", "\\x09"), ("\u00a0", "\\u00a0"), ("\u3000", "\\u3000")],
)
def test_what_comes_before_auth_is_shown_and_the_rest_masked(
    smtpsink_factory: Factory, lead: str, shown: str
) -> None:
    # White space before AUTH made aiosmtpd refuse the line, and the
    # transcript left it out: "C: AUTH PLAIN ****" refused with a 500.
    sink = smtpsink_factory(auth={"ann": "Pw-0f-ann"}, auth_plaintext=True)
    response = base64.b64encode(b"\0ann\0Pw-0f-ann").decode()
    with socket.create_connection((sink.host, sink.port), timeout=10) as client:
        replies = client.makefile("rb")
        replies.readline()
        for line in ("EHLO c", f"{lead}AUTH PLAIN {response}", "QUIT"):
            client.sendall(line.encode() + b"\r\n")
            while replies.readline()[3:4] == b"-":
                pass
        replies.close()
    sink.wait_until(lambda: sink.sessions[0].end is not None)
    text = sink.sessions[0].format_transcript()
    assert f"\nC: {shown}AUTH PLAIN ****\nS: 500 " in text, text
    assert response not in text
    assert "Pw-0f-ann" not in text


@pytest.mark.parametrize("protocol", ["POP3", "IMAP"])
def test_a_word_alone_before_login_is_masked_without_a_table(
    smtpsink_factory: Factory, protocol: str
) -> None:
    # POP3 recorded a word alone before login (a password sent without its
    # PASS, or after a cancelled AUTH) as it came; IMAP recorded it and
    # echoed it as the tag of its BAD. A sink with a table masks the
    # password it knows; one without cannot know it.
    sink = smtpsink_factory(auth="any", auth_plaintext=True)
    endpoint = sink.pop3 if protocol == "POP3" else sink.imap

    def one_line(line: bytes) -> tuple[str, Session]:
        """``line`` on a connection of its own: the reply, the session."""
        with socket.create_connection((endpoint.host, endpoint.port), 10) as client:
            replies = client.makefile("rb")
            replies.readline()
            client.sendall(line + b"\r\n")
            answer = replies.readline().decode().rstrip()
            replies.close()
        sink.wait_until(lambda: sink.sessions[-1].end is not None)
        return answer, sink.sessions[-1]

    answer, session = one_line(b"N0tab-pw-QRS")
    assert "N0tab" not in answer
    assert answer in ("-ERR Unknown command", "* BAD Missing command name")
    (exchange,) = session.transcript[1:]
    assert exchange.lines() == ["C: ****", f"S: {answer}"]
    # LOGIN inside the word, not at its start (no tag run on past the verb):
    # masked whole, not shown up to LOGIN.
    assert one_line(b"pw-Login-QRS")[1].transcript[1].line == "****"
    if protocol == "POP3":  # a command of an extension the sink lacks
        assert one_line(b"UTF8")[1].transcript[1].line == "UTF8"


@pytest.mark.parametrize("before", [b"\xff", b"\xc3", b"\x01", b"\t"])
def test_a_password_after_a_byte_the_transcript_escapes_is_masked(
    smtpsink_factory: Factory, before: bytes
) -> None:
    # The transcript writes such a byte as an escape ("\xff", "\t") whose
    # last character joins a word: a password right after it was shown, on
    # SMTP, POP3 and IMAP alike (on IMAP from when its lines kept such bytes).
    sink = smtpsink_factory(auth={USER: PASSWORD}, auth_plaintext=True)
    _one_line_on_each_protocol(sink, b"NOOP ", before + PASSWORD.encode())
    for session in sink.sessions:
        shown = session.format_transcript()
        assert hostile_auth.leaks(shown) == [], shown
        assert "****" in shown, shown


@pytest.mark.parametrize(
    ("password", "encoding"),
    [
        ("s3cr\x01t-pw", "utf-8"),
        ("tab\tpassword", "utf-8"),
        ("p\xe4ssw\xf6rd", "latin-1"),
        ("\u20ac-price-pw", "cp1252"),
    ],
    ids=["control", "tab", "latin-1", "cp1252"],
)
def test_a_password_the_transcript_escapes_is_masked(
    smtpsink_factory: Factory, password: str, encoding: str
) -> None:
    # A password with a control character, or sent by a client in Latin-1
    # or cp1252 rather than UTF-8, is written escaped in the transcript
    # ("s3cr\x01t", "p\xe4ssw\xf6rd"): masking the password as written
    # in the auth table missed it, on SMTP, POP3 and IMAP alike.
    sink = smtpsink_factory(auth={USER: password}, auth_plaintext=True)
    _one_line_on_each_protocol(sink, b"XPW ", password.encode(encoding))
    for session in sink.sessions:
        (line,) = [e.line for e in session.transcript if "XPW" in (e.line or "")]
        assert line.endswith("XPW ****"), session.format_transcript()


def test_a_one_character_password_masks_no_escape_of_other_bytes() -> None:
    # Its escaped form ("\\xe9") masked every such escape in a transcript
    # ("500 bad byte \\xe9"), whichever byte the client had sent.
    from pytest_smtpsink._credentials import credential_forms

    assert "\\xe9" not in credential_forms({"ann": "\xe9"}, None)
    assert "p\\xe4ss" in credential_forms({"ann": "p\xe4ss"}, None)


def test_a_password_sent_as_a_command_is_not_echoed_to_the_client(
    smtpsink_factory: Factory,
) -> None:
    # aiosmtpd echoes an unknown one-word command, upper-cased: the reply
    # to a password sent alone carried it to the client (and its log),
    # while the transcript masked it. Before a login, any word alone may be
    # a password (a wrong one is in no table): none is echoed nor recorded;
    # after one, an unknown command is echoed.
    import smtplib

    sink = smtpsink_factory(auth={USER: PASSWORD}, auth_plaintext=True)
    with smtplib.SMTP(sink.host, sink.port) as client:
        code, text = client.docmd(PASSWORD)
        wrong = client.docmd("Wr0ngPassword")
        client.login(USER, PASSWORD)
        client.noop()  # (a word right after AUTH may be its response)
        assert (
            client.docmd("XUNKNOWN")[1] == b'Error: command "XUNKNOWN" not recognized'
        )
    assert (code, hostile_auth.leaks(text.decode())) == (500, [])
    assert text == b"5.5.2 Error: command not recognized"
    assert wrong == (500, b"5.5.2 Error: command not recognized")
    transcript = sink.sessions[0].format_transcript()
    assert "Wr0ngPassword" not in transcript
    assert "WR0NGPASSWORD" not in transcript


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"auth": AUTH, "auth_plaintext": True},
        {"auth": "any", "auth_plaintext": True},
    ],
    ids=["no-logins", "table", "any"],
)
def test_a_pop3_password_sent_to_the_smtp_port_is_masked(
    smtpsink_factory: Factory,
    caplog: pytest.LogCaptureFixture,
    settings: dict[str, object],
) -> None:
    # A POP3 client pointed at the SMTP port: on a sink that takes no
    # logins nothing masked its PASS (transcripts, saved files, the
    # standalone sink's output; aiosmtpd's log lines), nor one after a tab.
    import smtplib

    sink = smtpsink_factory(**settings)
    caplog.set_level(logging.DEBUG, logger="mail.log")
    with smtplib.SMTP(sink.host, sink.port) as client:
        code, text = client.docmd(f"PASS {PASSWORD}")
        client.docmd(f"PASS\t{PASSWORD}")
    assert code == 500
    assert hostile_auth.leaks(text.decode()) == []
    commands = [e.line for e in sink.sessions[0].transcript if e.kind == "command"]
    assert commands[:2] == ["PASS ****", "PASS\\x09****"]
    assert "PASS ****" in caplog.text
    assert hostile_auth.leaks(caplog.text) == []
    assert hostile_auth.leaks(sink.sessions[0].format_transcript()) == []


@pytest.mark.parametrize("logged_in", [False, True], ids=["before-login", "after"])
def test_a_password_run_on_to_imap_login_is_neither_recorded_nor_echoed(
    smtpsink: Mailbox, logged_in: bool
) -> None:
    # "LOGINpw" (the space left out) was recorded as "LOGINpw", and the BAD
    # reply echoed "LOGINPW" to the client and into the transcript; with no
    # tag either, the whole line came back as the BAD's tag; after UID or a
    # tab, the line was recorded whole. With no tag and a second word
    # ("LOGINann pw"), the first was echoed as the tag and the password as
    # the unknown command.
    secret = "Horsebatterystaple"
    lines = [
        f"a LOGIN{secret}",
        f"b AUTHENTICATE{secret} x",
        f"LOGIN{secret}",
        f"d UID LOGIN{secret}",
        f"e\tlogin{secret}",
        f"LOGINann {secret}",
        f"AUTHENTICATEPLAIN {secret}",
        f"LOGIN{secret} ",
        f"f\tUID LOGIN ann {secret}",
        # A known command after such a tag ran under it, the tag echoed;
        # a tag ended by a character no tag ends with was recorded whole.
        f"LOGIN{secret} NOOP",
        f"g(LOGIN ann {secret}",
        f"h]LOGIN ann {secret}",
        f"i\x7fLOGIN ann {secret}",
        # A valid tag, then LOGIN glued to a character that ends no verb.
        f"l (LOGIN ann {secret}",
        f'm "LOGIN" ann {secret}',
        f"n UID(LOGIN ann {secret}",
        # After login, a LOGIN refused before its password, and an
        # AUTHENTICATE refused before its response: what comes next.
        "j LOGIN ann@example.com",
        secret,
        "k AUTHENTICATE PLAIN",
        f"{secret} x",
        "z LOGOUT",
    ]
    if logged_in:
        lines.insert(0, "p LOGIN ann@example.com any-password")
    with socket.create_connection(
        (smtpsink.imap.host, smtpsink.imap.port), timeout=10
    ) as sock:
        sock.sendall("".join(line + "\r\n" for line in lines).encode())
        with sock.makefile("rb") as replies:
            said = replies.read().decode()
    smtpsink.wait_until(
        lambda: bool(smtpsink.sessions) and smtpsink.sessions[-1].end is not None
    )
    (session,) = smtpsink.sessions
    assert "a BAD Unknown or unsupported command: LOGIN****\r\n" in said
    assert "\r\n* BAD Missing command name\r\n" in said
    assert (
        "\r\n* BAD Unknown command after the tag LOGIN****"
        " (are the tag and the space after LOGIN missing?)\r\n"
    ) in said
    commands = [e for e in session.transcript if e.kind == "command"]
    assert [(e.tag, e.line) for e in commands[int(logged_in) : int(logged_in) + 9]] == [
        ("a", "LOGIN****"),
        ("b", "AUTHENTICATE****"),
        (None, "LOGIN****"),
        ("d", "UID LOGIN****"),
        (None, "e\\tlogin****"),
        ("LOGIN****", "****"),
        ("AUTHENTICATE****", "****"),
        ("LOGIN****", ""),
        (None, "f\\tUID LOGIN ****"),
    ]
    # A known command runs under such a tag ("login1" may be a client's
    # own), so the client gets it back: only there, never recorded.
    echo = f"LOGIN{secret} OK NOOP completed\r\n"
    assert echo in said
    assert "LOGIN**** OK NOOP completed" in session.format_transcript()
    shown = said.replace(echo, "") + session.format_transcript() + repr(session)
    assert secret.lower() not in shown.lower()


@pytest.mark.parametrize("password", ["ok-go", "data-2024", "250-alpha", "list of it"])
def test_a_password_that_only_begins_with_a_protocol_word_is_masked_whole(
    smtpsink_factory: Factory, password: str
) -> None:
    # The protocol word a line starts with is left alone; a password that
    # merely begins with one ("ok-go") kept all of itself with it, sent
    # alone as a line, as a user name or as the EHLO name.
    import poplib
    import smtplib

    sink = smtpsink_factory(auth={"u": password}, auth_plaintext=True)
    with smtplib.SMTP(sink.host, sink.port, local_hostname=password) as client:
        client.docmd(password)
    pop3 = poplib.POP3(sink.pop3.host, sink.pop3.port, timeout=10)

    def log_in_swapped() -> None:
        pop3.user(password)  # refused at once if it holds a space
        pop3.pass_("u")

    with pytest.raises(poplib.error_proto):
        log_in_swapped()
    pop3.quit()
    sink.wait_until(lambda: all(s.end is not None for s in sink.sessions))
    shown = "\n".join(repr(s) for s in sink.sessions).lower()
    assert password not in shown, shown


def test_imap_status_words_stay_when_a_password_is_one(
    smtpsink_factory: Factory,
) -> None:
    # A tagged reply ("a1 OK ...") starts with its tag: with the password
    # "ok", every status word after a tag was masked.
    import imaplib

    sink = smtpsink_factory(auth={"ann@example.com": "ok"}, auth_plaintext=True)
    client = imaplib.IMAP4(sink.imap.host, sink.imap.port, timeout=10)
    client.login("ann@example.com", "ok")
    client.logout()
    sink.wait_until(lambda: all(s.end is not None for s in sink.sessions))
    (session,) = sink.sessions
    replies = [r for e in session.transcript for r in e.replies]
    assert replies[0].startswith("* OK [CAPABILITY ")
    assert [r.split(" ")[1] for r in replies if r[:1] != "*"] == ["OK"] * 3
    assert "LOGIN ann@example.com ****" in session.format_transcript()


def test_a_credentials_table_given_without_auth_is_never_echoed(
    pytester: pytest.Pytester,
) -> None:
    # Passed positionally (auth= forgotten), the table was echoed in full by
    # the "keyword settings only" and fault errors: the password reached the
    # terminal, junitxml, index.html and smtpsink.json.
    pytester.makepyfile(
        """
import pytest

USERS = {"app": "Zq9SecretPw7781"}

@pytest.mark.smtpsink(USERS)
def test_marker(smtpsink):
    pass

@pytest.mark.smtpsink("starttls", USERS)
def test_marker_two(smtpsink):
    pass

def test_factory(smtpsink_factory):
    smtpsink_factory("starttls", USERS)

@pytest.mark.smtpsink_fault("fail", "AUTH", 535, USERS)
def test_fault_marker(smtpsink):
    pass

# The table given to the wrong setting: each was echoed whole.
@pytest.mark.smtpsink(tls="starttls", auth_required=USERS)
def test_wrong_setting(smtpsink):
    pass

@pytest.mark.smtpsink(tls="starttls", auth_plaintext=USERS)
def test_wrong_setting_two(smtpsink):
    pass

@pytest.mark.parametrize("add", [
    lambda s: s.fail(USERS, 550),
    lambda s: s.fail("MAIL", 550, match=USERS),
    lambda s: s.fail("MAIL", 550, times=USERS),
    lambda s: s.hide(USERS),
    # One level down, in a list or the arguments' tuple.
    lambda s: s.fail("MAIL", 550, match=[USERS]),
    lambda s: s.fail("MAIL", 550, probability=0.5, seed=[USERS]),
    lambda s: s.hide("STARTTLS", [USERS]),
])
def test_fault_methods(smtpsink, add):
    add(smtpsink)

def test_own_sink():
    from pytest_smtpsink import SMTPSink
    SMTPSink(USERS)
"""
    )
    saved = pytester.path / "saved"
    result = pytester.runpytest(
        "-p", "no:xdist", f"--smtpsink-save-dir={saved}", "--junitxml=report.xml"
    )
    result.assert_outcomes(failed=9, errors=5)
    shown = result.stdout.str() + (pytester.path / "report.xml").read_text()
    shown += "".join(p.read_text() for p in saved.rglob("*") if p.is_file())
    assert "Zq9SecretPw7781" not in shown
    assert "a dict of 1 item (not shown)" in result.stdout.str()


#: A long password (an API key): its PLAIN response is over 57 bytes, so a
#: client that wraps base64 at 76 columns sends it on two lines.
API_KEY = "SG.Kx7Qv2mZ9tLwRb4Nc8Hd1Jf6Pg3Ts5Vy0Xa2Ue7Wi9Oq4Ml1Kn8Bj3Ch6Dr5Ez0Fs2"


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
@pytest.mark.parametrize("auth", ["any", "table"])
@pytest.mark.parametrize("case", ["sent-again", "wrapped"])
def test_a_sasl_response_sent_again_or_wrapped_is_never_shown(
    smtpsink_factory: Factory, protocol: str, auth: str, case: str
) -> None:
    # After the exchange, its lines were recorded as they came, and IMAP
    # echoed them as the tag of a BAD: a PLAIN response sent again after
    # its initial response, or the rest of one a client wrapped at 76
    # columns (base64.encodebytes, Perl's encode_base64), which the first
    # line's truncated password had already logged in with "any". SMTP
    # masked both.
    sink = smtpsink_factory(
        auth="any" if auth == "any" else {USER: API_KEY}, auth_plaintext=True
    )
    response = base64.b64encode(f"\0{USER}\0{API_KEY}".encode())
    wrapped = base64.encodebytes(f"\0{USER}\0{API_KEY}".encode()).split()
    assert len(wrapped) == 2
    command = b"AUTH PLAIN" if protocol == "pop3" else b"a AUTHENTICATE PLAIN"
    if case == "sent-again":
        lines = [command + b" " + response, response]
    else:
        lines = [command, *wrapped]
    ending = b"QUIT\r\n" if protocol == "pop3" else b"z LOGOUT\r\n"
    endpoint = sink.pop3 if protocol == "pop3" else sink.imap
    with socket.create_connection((endpoint.host, endpoint.port), timeout=30) as sock:
        sock.sendall(b"".join(line + b"\r\n" for line in lines) + ending)
        with sock.makefile("rb") as replies:
            said = replies.read()
    sink.wait_until(lambda: sink.sessions[-1].end is not None)
    shown = said.decode("utf-8", "replace") + "".join(
        session.format_transcript() + repr(session) for session in sink.sessions
    )
    for secret in [API_KEY, response.decode(), *(line.decode() for line in wrapped)]:
        assert secret not in shown
    assert shown.count("****") >= 2


@pytest.mark.parametrize("protocol", ["smtp", "pop3", "imap"])
def test_a_wrong_password_alone_on_a_line_is_never_shown(
    smtpsink_factory: Factory, protocol: str
) -> None:
    # A sink with a table masked its own passwords only: a wrong one sent
    # where no login expects it (on a line of its own) was recorded, and
    # echoed in SMTP's 500 and as the tag of IMAP's BAD. A wrong password
    # is often a real one (production credentials in a misconfigured app).
    sink = smtpsink_factory(auth={USER: PASSWORD}, auth_plaintext=True)
    wrong = "Pr0dSecretF2x"
    endpoint = sink.pop3 if protocol == "pop3" else sink.imap
    address = (
        (sink.host, sink.port) if protocol == "smtp" else (endpoint.host, endpoint.port)
    )
    ending = b"z LOGOUT" if protocol == "imap" else b"QUIT"
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(wrong.encode() + b"\r\n" + ending + b"\r\n")
        with sock.makefile("rb") as replies:
            said = replies.read()
    sink.wait_until(lambda: sink.sessions[-1].end is not None)
    (session,) = sink.sessions
    shown = said.decode() + session.format_transcript()
    assert wrong.lower() not in shown.lower()
    assert session.transcript[1].line == "****"


def test_free_text_masks_a_plain_response_whatever_its_authorization_identity() -> None:
    # Only the empty identity and the user's were masked: a failure's text
    # quoting "AUTH PLAIN <base64 of admin\0user\0password>" showed it.
    from pytest_smtpsink._credentials import credential_forms, mask_anywhere

    secrets = credential_forms({USER: PASSWORD}, None)
    response = base64.b64encode(f"admin\0{USER}\0{PASSWORD}".encode()).decode()
    other = base64.b64encode(f"admin\0{USER}\0not-the-password".encode()).decode()
    assert mask_anywhere(f"server log said: AUTH PLAIN {response} / x", secrets) == (
        "server log said: AUTH PLAIN **** / x"
    )
    assert mask_anywhere(f"AUTH PLAIN {other}", secrets) == f"AUTH PLAIN {other}"


@pytest.mark.parametrize("protocol", ["smtp", "pop3", "imap"])
def test_a_plain_response_with_another_identity_in_a_line_is_masked(
    smtpsink_factory: Factory, protocol: str
) -> None:
    # The word masker knew the PLAIN response with an empty identity or the
    # user's only: "NOOP <base64 of admin\0user\0password>" was recorded.
    sink = smtpsink_factory(auth={USER: PASSWORD}, auth_plaintext=True)
    response = base64.b64encode(f"admin\0{USER}\0{PASSWORD}".encode())
    command = b"a NOOP " if protocol == "imap" else b"NOOP "
    ending = b"z LOGOUT" if protocol == "imap" else b"QUIT"
    endpoint = sink.pop3 if protocol == "pop3" else sink.imap
    address = (
        (sink.host, sink.port) if protocol == "smtp" else (endpoint.host, endpoint.port)
    )
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(command + response + b"\r\n" + ending + b"\r\n")
        with sock.makefile("rb") as replies:
            replies.read()
    sink.wait_until(lambda: sink.sessions[-1].end is not None)
    (session,) = sink.sessions
    assert response.decode() not in session.format_transcript()
    assert "****" in session.format_transcript()


def test_an_imap_password_after_a_tag_before_login_is_neither_recorded_nor_named(
    smtpsink_factory: Factory,
) -> None:
    # "a1 <password>" was recorded, and its BAD named it upper-cased
    # ("Unknown or unsupported command: PR0DSECRETF2X"), on a sink with a
    # table when the password was a wrong one (helper-184). After login an
    # unknown command is named, as Dovecot names it.
    sink = smtpsink_factory(auth={USER: PASSWORD}, auth_plaintext=True)
    wrong = "Pr0dSecretF2x"
    with socket.create_connection((sink.imap.host, sink.imap.port), timeout=30) as sock:
        sock.sendall(
            f"a1 {wrong}\r\nb LOGIN {USER} {PASSWORD}\r\nc FROBNICATE\r\nz LOGOUT\r\n".encode()
        )
        with sock.makefile("rb") as replies:
            said = replies.read().decode()
    sink.wait_until(lambda: sink.sessions[-1].end is not None)
    (session,) = sink.sessions
    assert "a1 BAD Unknown or unsupported command\r\n" in said
    assert "c BAD Unknown or unsupported command: FROBNICATE\r\n" in said
    assert wrong.lower() not in (said + session.format_transcript()).lower()
    assert (session.transcript[1].tag, session.transcript[1].line) == ("a1", "****")


def test_a_password_in_another_case_is_masked_in_a_recorded_line(
    smtpsink_factory: Factory,
) -> None:
    # aiosmtpd upper-cases what it echoes, and a client may send a password
    # astray in any case: no test held that such a line is masked, in the
    # transcript or in free text.
    from pytest_smtpsink._credentials import credential_forms, mask_anywhere

    sink = smtpsink_factory(auth={"ann": "Sup3rSecret"}, auth_plaintext=True)
    with socket.create_connection((sink.host, sink.port), timeout=10) as client:
        reader = client.makefile("rb")
        reader.readline()
        for line in (b"HELP SUP3RSECRET", b"NOOP sup3rsecret", b"QUIT"):
            client.sendall(line + b"\r\n")
            reader.readline()
        reader.close()
    sink.wait_until(lambda: sink.sessions and sink.sessions[0].end is not None)
    (session,) = sink.sessions
    shown = session.format_transcript() + repr(session) + session.summary()
    assert "sup3rsecret" not in shown.lower()
    assert "C: HELP ****" in shown
    assert "C: NOOP ****" in shown
    secrets = credential_forms({"ann": "Sup3rSecret"}, None)
    assert mask_anywhere("login SUP3RSECRET failed", secrets) == "login **** failed"


def test_a_password_that_holds_another_is_masked_whole() -> None:
    # The longest first: with "Sup3rSecret" and "Sup3rSecret-2", the
    # second was shown as "****-2", its tail in clear.
    from pytest_smtpsink._credentials import (
        credential_forms,
        mask_anywhere,
        word_masker,
    )

    auth = {"ann": "Sup3rSecret", "bob": "Sup3rSecret-2"}
    secrets = credential_forms(auth, None)
    assert mask_anywhere("login bob/Sup3rSecret-2 failed", secrets) == (
        "login bob/**** failed"
    )
    masker = word_masker(auth, None)
    assert masker is not None
    assert masker("NOOP Sup3rSecret-2") == "NOOP ****"


@pytest.mark.parametrize("password", ['Tq"9\\zR7', "Nb\u00e9t\u00e8Q7", "Zq\u200bX9wv"])
def test_a_table_password_in_imap_s_own_forms_is_masked(
    smtpsink_factory: Factory, password: str
) -> None:
    # Sent where a folder name or a string goes, a table password came back
    # in forms the masker did not know: IMAP's quoted string ('Tq\"9\\zR7'),
    # a folder name in modified UTF-7 ('Nb&AOk-t&AOg-Q7') and an error's
    # repr ('Zq\u200bX9wv'), in the client's lines and the replies kept.
    from pytest_smtpsink._imap_syntax import encode_folder_name

    sink = smtpsink_factory(auth={USER: password}, auth_plaintext=True)
    quoted = '"' + password.replace("\\", "\\\\").replace('"', '\\"') + '"'
    sent = password.encode()
    lines = [
        b"a1 LOGIN " + USER.encode() + b" {%d+}\r\n" % len(sent) + sent,
        b"a2 SELECT " + quoted.encode(),
        b"a3 STATUS " + quoted.encode() + b" (MESSAGES)",
        b'a4 ID ("password" ' + quoted.encode() + b")",
        b"a5 LOGOUT",
    ]
    with socket.create_connection((sink.imap.host, sink.imap.port), timeout=30) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n")
        with sock.makefile("rb") as replies:
            said = replies.read().decode("utf-8", "replace")
    sink.wait_until(lambda: sink.sessions[-1].end is not None)
    (session,) = sink.sessions
    assert "a1 OK" in said
    # The client is told what it sent; what is kept shows none of it.
    shown = session.format_transcript()
    assert 'C: a2 SELECT "****"' in shown
    for form in (password, quoted[1:-1], repr(password)[1:-1], ascii(password)[1:-1]):
        assert form not in shown
    assert encode_folder_name(password) not in shown.replace("&AKA-", "")


@pytest.mark.parametrize("auth", [None, "any"])
@pytest.mark.parametrize("pipelined", [False, True], ids=["", "pipelined"])
@pytest.mark.parametrize("quoted", [False, True], ids=["", "quoted"])
def test_an_imap_password_sent_again_after_login_is_never_shown(
    smtpsink_factory: Factory, auth: str | None, pipelined: bool, quoted: bool
) -> None:
    # After an AUTHENTICATE a word alone was masked, after a LOGIN not: a
    # sink without a table (or taking any password) recorded the password
    # sent again and echoed it as the tag of its BAD.
    sink = smtpsink_factory(auth=auth, auth_plaintext=auth is not None)
    secret = "Aft LgnPw1x" if quoted else "AftLgnPw1x"  # a blank needs quotes
    with socket.create_connection((sink.imap.host, sink.imap.port), timeout=30) as sock:
        replies = sock.makefile("rb")
        replies.readline()
        sent = f'"{secret}"' if quoted else secret  # as LOGIN took it
        login = f"a1 LOGIN {USER} {sent}\r\n".encode()
        if pipelined:
            sock.sendall(login + sent.encode() + b"\r\n")
        else:
            sock.sendall(login)
            assert replies.readline().startswith(b"a1 OK")
            sock.sendall(sent.encode() + b"\r\n")
        sock.sendall(b"z LOGOUT\r\n")
        said = replies.read().decode()
        replies.close()
    sink.wait_until(lambda: sink.sessions[-1].end is not None)
    (session,) = sink.sessions
    assert "* BAD Missing command name" in said
    assert secret not in said
    assert [e.line for e in session.transcript][2] == "****"
    assert secret not in session.format_transcript()


TOKEN = "pmTok3n-5e1f-4c2a-9d8b"


def test_a_token_as_user_name_and_password_is_masked_as_the_user_name_too(
    smtpsink_factory: Factory,
) -> None:
    """A service's server token used as both (Postmark's): the relay URL,
    the settings and the outcome printed it as the user name."""
    upstream = smtpsink_factory(
        hostname="upstream.test", auth={TOKEN: TOKEN}, auth_plaintext=True
    )
    sink = smtpsink_factory(
        relay=f"smtp://{TOKEN}:{TOKEN}@127.0.0.1:{upstream.port}", relay_to=".*"
    )
    with socket.create_connection((sink.host, sink.port)) as client:
        client.sendall(
            b"HELO app\r\nMAIL FROM:<app@example.com>\r\nRCPT TO:<ann@example.com>"
            b"\r\nDATA\r\nSubject: hi\r\n\r\nx\r\n.\r\nQUIT\r\n"
        )
        while client.recv(4096):
            pass
    message = sink.wait_for()
    sink.wait_until(lambda: message.relay is not None and message.relay.done)
    assert message.relay is not None
    assert message.relay.status == "relayed"
    shown = [
        str(message.relay),
        repr(message.relay),
        repr(sink.settings),
        repr(upstream.settings),
        message.relay.delivery.upstream if message.relay.delivery else "",
    ]
    for text in shown:
        assert TOKEN not in text, text
    assert f"smtp://****@127.0.0.1:{upstream.port}" in str(message.relay)
    assert "auth={'****': '***'}" in repr(upstream.settings)


def test_a_failed_comparison_of_settings_shows_no_password(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest explains two dataclasses field by field, with the fields'
    reprs: both auth tables' passwords, both relay URLs' (helper-234 F5)."""
    # Built at run time: the source lines the traceback shows hold halves.
    pytester.makepyfile(
        """
ONE, TWO = "Cm9p" + "Canary4Xy", "Dq1z" + "Canary8Vb"

def test_settings(smtpsink_factory):
    a = smtpsink_factory(auth={"ann": ONE}, auth_plaintext=True)
    b = smtpsink_factory(auth={"ann": TWO}, auth_plaintext=True)
    assert a.settings == b.settings

def test_relays(smtpsink_factory):
    a = smtpsink_factory(relay=f"smtp://u:{ONE}@127.0.0.1:9", relay_to=".*")
    b = smtpsink_factory(relay=f"smtp://u:{TWO}@127.0.0.1:9", relay_to=".*")
    assert a.settings == b.settings

# Held in a dataclass of the user's own: pytest drills into it, past the
# plugin's explanation (review helper-237 F2).
import dataclasses
from pytest_smtpsink import SinkSettings

@dataclasses.dataclass
class Holder:
    name: str
    settings: SinkSettings

def test_nested():
    a = SinkSettings(auth={"ann": ONE}, auth_plaintext=True, relay=f"smtp://u:{ONE}@127.0.0.1:9", relay_to=".*")
    b = SinkSettings(auth={"ann": TWO}, auth_plaintext=True, relay=f"smtp://u:{TWO}@127.0.0.1:9", relay_to=".*")
    assert Holder("x", a) == Holder("x", b)
"""
    )
    # CI=true: pytest cuts no explanation there, at any verbosity.
    monkeypatch.setenv("CI", "true")
    result = pytester.runpytest("-p", "no:xdist", "-vv")
    result.assert_outcomes(failed=3)
    output = result.stdout.str()
    assert "Cm9pCanary4Xy" not in output
    assert "Dq1zCanary8Vb" not in output
    result.stdout.fnmatch_lines(
        [
            "E  * two different sink settings (passwords not shown):",
            "E  *   auth: {'ann': '***'} (a password differs) != {'ann': '***'}",
            "E  *   relay: 'smtp://u@127.0.0.1:9' (a password differs) != "
            "'smtp://u@127.0.0.1:9'",
        ]
    )


def test_the_standalone_sink_names_no_token_user() -> None:
    sink = Sink("--auth", f"{TOKEN}:{TOKEN}", "--auth", "ann:pw", "--auth-plaintext")
    try:
        assert sink.in_banner(r"AUTH accepts users \*\*\*\*, ann")
    finally:
        lines = sink.stop()
    assert TOKEN not in "\n".join([*sink.seen, *lines, sink.stderr])


PASSPHRASE = "Xq9zu Zr7wy Wm4vt"


def sent_raw(
    sink: Mailbox, address: tuple[str, int], lines: list[str]
) -> tuple[str, str]:
    """``lines`` sent at once to ``address`` (one of ``sink``'s servers),
    read to the end: what the client was told, and the session's
    transcript once the sink noted its end."""
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall("".join(f"{line}\r\n" for line in lines).encode())
        with sock.makefile("rb") as replies:
            said = replies.read().decode("utf-8", "replace")
    sink.wait_until(lambda: sink.sessions[-1].end is not None)
    return said, sink.sessions[-1].format_transcript()


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_a_passphrase_where_no_login_expects_it_is_masked_whole(
    smtpsink_factory: Factory, protocol: str
) -> None:
    """A known password with blanks, sent alone or after a word: the rule
    for a line that is no command kept its first words ("Xq9zu ****" on
    POP3, "Xq9zu Zr7wy ****" on IMAP, the tag echoed), and the known
    password was no longer whole in the line to be masked (helper-234 F6)."""
    sink = smtpsink_factory(auth={USER: PASSPHRASE}, auth_plaintext=True)
    endpoint = sink.pop3 if protocol == "pop3" else sink.imap
    lines = [PASSPHRASE, f"a {PASSPHRASE}", f"b LOGN ann {PASSPHRASE}"]
    end = "QUIT" if protocol == "pop3" else "z LOGOUT"
    _, shown = sent_raw(sink, (endpoint.host, endpoint.port), [*lines, end])
    for word in PASSPHRASE.split():
        assert word not in shown, shown
    assert "C: ****" in shown


def test_a_passphrase_sent_to_smtp_is_neither_echoed_nor_logged_by_its_first_word(
    smtpsink_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    # aiosmtpd logs the first word, upper-cased, as the command it did not
    # recognize ("unrecognised: XQ9ZU"): no mask knew that word alone.
    # With more after it, or quoted, its reply echoed that word to the
    # client, the transcript and the log (review helper-237 F3).
    sink = smtpsink_factory(auth={USER: PASSPHRASE}, auth_plaintext=True)
    caplog.set_level(logging.DEBUG, logger="mail.log")
    lines = [PASSPHRASE, f"{PASSPHRASE} extra", f"{PASSPHRASE}.", f"'{PASSPHRASE}'"]
    said, shown = sent_raw(sink, (sink.host, sink.port), [*lines, "QUIT"])
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "unrecognised" in logged
    for word in PASSPHRASE.split():
        for output in (logged, shown, said):
            assert word.upper() not in output.upper(), output


def test_a_refused_dkim_private_key_is_not_among_the_frames_variables(
    pytester: pytest.Pytester,
) -> None:
    """A key in the wrong format (an EC one) is still a signing key: with
    -vv -l --full-trace, dkim_key's and the plugin's frames printed it whole
    (helper-234 F7)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    pytester.path.joinpath("ec.pem").write_text(pem)
    pytester.makepyfile(
        """
import pathlib

def test_key(smtpsink):
    smtpsink.dkim_key("x.example", private_key=pathlib.Path("ec.pem").read_text())
"""
    )
    result = pytester.runpytest("-p", "no:xdist", "-vv", "-l", "--full-trace")
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert "must be an RSA private key" in output
    body = pem.splitlines()[1:-1]  # the base64 lines
    for line in body:
        assert line not in output


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_a_wrong_password_beside_a_known_one_is_masked_too(
    smtpsink_factory: Factory, protocol: str
) -> None:
    """The known password masked whole first, then the rules for a line
    that is no command: shown as sent for the known one's sake, the wrong
    password beside it was recorded (review helper-237 F1)."""
    wrong = "WrOngCanary55"
    sink = smtpsink_factory(auth={USER: PASSPHRASE, TOKEN: TOKEN}, auth_plaintext=True)
    endpoint = sink.pop3 if protocol == "pop3" else sink.imap
    tag = "" if protocol == "pop3" else "a "
    lines = [
        f"{tag}LOGN ann {wrong} {PASSPHRASE}",
        f"{tag}LOGN {TOKEN} {wrong}",
        f"{tag}PAS {wrong} {PASSPHRASE}",
    ]
    end = "QUIT" if protocol == "pop3" else "z LOGOUT"
    _, shown = sent_raw(sink, (endpoint.host, endpoint.port), [*lines, end])
    for secret in (wrong, TOKEN, *PASSPHRASE.split()):
        assert secret not in shown, shown
    assert f"C: {tag}LOGN ****" in shown


def test_a_long_password_sent_again_after_its_login_is_masked(
    smtpsink: Mailbox,
) -> None:
    # A PASS of up to 12,288 octets logs in now; the same token sent again
    # on its own (a password sent again, which a short one is masked as)
    # went the way of any long line after login: its first 64 characters
    # shown (review helper-237 F4).
    token = "JwTcanary" + "x" * 300
    said, shown = sent_raw(
        smtpsink,
        (smtpsink.pop3.host, smtpsink.pop3.port),
        ["USER ann", f"PASS {token}", token, "QUIT"],
    )
    assert "+OK Logged in" in said
    assert "JwTcanary" not in shown
    assert f"C: **** [{len(token) + 2} bytes in all]" in shown


def test_a_wrong_password_after_a_known_one_that_is_login_is_masked(
    smtpsink_factory: Factory,
) -> None:
    # The table's password is the word LOGIN: masked first, it took away
    # the word after which the rules mask the rest, and a wrong password
    # after it was shown (review helper-238 F1).
    sink = smtpsink_factory(auth={"u": "LOGIN"}, auth_plaintext=True)
    wrong = "WrOngCanary55"
    lines = ["a LOGIN u LOGIN", f"b LOGN LOGIN {wrong}", f"c UID LOGIN {wrong}"]
    _, shown = sent_raw(sink, (sink.imap.host, sink.imap.port), [*lines, "z LOGOUT"])
    assert wrong not in shown, shown
    assert "C: a LOGIN u ****" in shown

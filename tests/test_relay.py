"""Release and automatic relay, proved against real sinks as upstreams.

Every upstream here is a second sink: what it captured is what a real
server would have been sent.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import email
import imaplib
import re
import smtplib
import socket
import socketserver
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from conftest import start_on_ipv6_loopback, time_out_now
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_smtpsink import (
    Delivery,
    Exchange,
    Mailbox,
    Message,
    RecipientDSN,
    RelayError,
    RelayOutcome,
    SettingsError,
    SinkError,
    SinkSettings,
    SMTPSink,
    _relay,
)
from pytest_smtpsink._content import dot_stuffed
from pytest_smtpsink._relay import (
    MAX_HOPS,
    _client_class,
    parse_upstream,
)

Factory = Callable[..., Mailbox]

CORPUS = Path(__file__).parent / "corpus"
PASSWORD = "s3cr3t-pa55"


def capture(sink: Mailbox, raw: bytes, rcpt: list[str] | None = None) -> Message:
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("app@example.com", rcpt or ["ann@example.com"], raw)
    return sink.wait_for(timeout=5)


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port nothing listens on: bound but never listening, and held for
    the test, so that no other server (another test's) can take it meanwhile.
    Connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        yield port


def relay_of(message: Message) -> RelayOutcome:
    assert message.relay is not None
    return message.relay


def wait_relayed(sink: Mailbox, message: Message) -> None:
    # Not the default 5 s: a relay that fails by its own timeout (1 s in a
    # test below) spends that first, and a busy machine adds to it.
    sink.wait_until(
        lambda: message.relay is not None and message.relay.done, timeout=60
    )


# -- release ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "binary_attachment.eml",
        "garbage_headers.eml",
        "latin1_headers.eml",
        "headers_only.eml",
        "longest_legal_line.eml",
    ],
)
def test_release_sends_the_captured_bytes_exactly(
    smtpsink: Mailbox, smtpsink_factory: Factory, name: str
) -> None:
    upstream = smtpsink_factory(hostname="upstream.test")
    captured = capture(smtpsink, (CORPUS / name).read_bytes())

    delivery = smtpsink.release(captured, upstream.host, upstream.port, received=False)

    assert upstream.wait_for().raw == captured.raw
    assert delivery.code == 250
    assert delivery.accepted == ("ann@example.com",)


@settings(deadline=None)  # a busy machine pauses any example
@given(
    st.lists(st.binary(max_size=8).map(lambda b: b.replace(b"\r\n", b"")), max_size=8)
)
def test_dot_stuffing_round_trips_every_line(lines: list[bytes]) -> None:
    # What a server does with the content (RFC 5321 4.5.2: lines end with
    # CRLF; a line's first dot is removed; a line of one dot ends it)
    # gives the captured bytes back, whatever dots, CRs and LFs they hold.
    raw = b"".join(line + b"\r\n" for line in lines)
    sent = dot_stuffed(raw).split(b"\r\n")
    assert sent[-2:] == [b".", b""]  # the final dot, and only there
    body = sent[:-2]
    assert b"." not in body
    assert (
        b"".join(
            (line[1:] if line.startswith(b".") else line) + b"\r\n" for line in body
        )
        == raw
    )


def test_release_keeps_dots_and_bare_newlines() -> None:
    raw = b"Subject: dots\r\n\r\n.leading dot\r\n..two\nbare LF\n.\nafter\r\n"
    with SMTPSink() as sink, SMTPSink() as upstream:
        captured = capture(sink, raw)
        sink.release(captured, upstream.host, upstream.port, received=False)
        assert upstream.wait_for().raw == captured.raw


def test_release_adds_a_received_header_and_keeps_the_envelope(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    upstream = smtpsink_factory(hostname="upstream.test")
    with smtplib.SMTP(smtpsink.host, smtpsink.port, local_hostname="app.test") as c:
        c.sendmail("app@example.com", ["ann@example.com"], b"Subject: hi\r\n\r\nx\r\n")
    captured = smtpsink.wait_for()

    smtpsink.release(captured, upstream.host, upstream.port)

    relayed = upstream.wait_for()
    assert relayed.envelope.mail_from == "app@example.com"
    assert relayed.envelope.rcpt_to == ("ann@example.com",)
    assert relayed.raw.startswith(b"Received: from app.test ([127.0.0.1])\r\n\t")
    received = relayed.header("Received")
    assert received is not None
    assert received.startswith("from app.test ([127.0.0.1])")
    assert f"by smtpsink.test (pytest-smtpsink) with ESMTP id {captured.number}" in (
        " ".join(received.split())
    )
    assert "for <ann@example.com>;" in received
    assert relayed.raw.endswith(captured.raw)
    assert email.utils.parsedate_to_datetime(received.rsplit(";", 1)[1].strip())


def test_the_received_header_of_smtputf8_mail_says_utf8smtp(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    # It said ESMTP: RFC 6531 3.7.3 names UTF8SMTP for such a transaction.
    upstream = smtpsink_factory(hostname="upstream.test")
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            "app@example.com",
            ["jörg@example.com"],
            "Subject: grüße\r\n\r\nx\r\n".encode(),
            mail_options=["SMTPUTF8"],
        )
    captured = smtpsink.wait_for()
    smtpsink.release(captured, upstream.host, upstream.port)
    received = upstream.wait_for().header("Received")
    assert received is not None
    assert f"with UTF8SMTP id {captured.number}" in " ".join(received.split())


def test_the_received_header_of_an_ipv6_client_tags_its_address(
    smtpsink_factory: Factory,
) -> None:
    # RFC 5321 4.1.3: an IPv6 address literal reads [IPv6:::1]; it was [::1].
    upstream = smtpsink_factory()
    sink = start_on_ipv6_loopback()
    try:
        with smtplib.SMTP(sink.host, sink.port, local_hostname="app.test") as c:
            c.sendmail("app@example.com", ["ann@example.com"], b"Subject: hi\r\n\r\n")
        sink.release(sink.wait_for(), upstream.host, upstream.port)
    finally:
        sink.stop()
    assert upstream.wait_for().raw.startswith(
        b"Received: from app.test ([IPv6:::1])\r\n\t"
    )


def test_the_received_header_of_mail_put_in_claims_no_smtp_hop(
    smtpsink_factory: Factory,
) -> None:
    # It read "from unknown ([deliver()])" and "with SMTP": a client address
    # and a protocol that never were; and "id 0" for every such message,
    # which has no number. (A hostname with ";", which ended the header's
    # tokens early, is now refused by the settings.)
    upstream = smtpsink_factory()
    sink = smtpsink_factory(hostname="mx_1.test")
    put_in = sink.deliver(b"From: a@example.com\r\n\r\nhi\r\n", to="b@example.com")
    sink.release(put_in, upstream.host, upstream.port)
    received = upstream.wait_for().header("Received")
    assert received is not None
    assert " ".join(received.split()).startswith(
        "by mx_1.test (pytest-smtpsink) for <b@example.com>; "
    )
    assert email.utils.parsedate_to_datetime(received.rsplit(";", 1)[1].strip())


def test_the_received_header_of_an_imap_append_claims_no_smtp_hop(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    # It read "from unknown ([127.0.0.1]) ... with SMTP id 0".
    upstream = smtpsink_factory()
    client = imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port)
    client.login("ann@example.com", "pw")
    client.append(
        "INBOX", None, None, b"From: a@example.com\r\nSubject: up\r\n\r\nhi\r\n"
    )
    client.logout()
    (appended,) = smtpsink.mailbox("ann@example.com").messages()
    smtpsink.release(appended, upstream.host, upstream.port, rcpt_to=["b@example.com"])
    received = upstream.wait_for().header("Received")
    assert received is not None
    # "for" names the recipient the copy went to, not the captured one.
    assert " ".join(received.split()).startswith(
        f"by {smtpsink.settings.hostname} (pytest-smtpsink) for <b@example.com>; "
    )


def test_the_received_header_names_the_sink_that_received_the_message(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    # Released through another sink's mailbox, the header said "by" that
    # other sink, which never received it: SMTP, deliver() and APPEND alike.
    upstream = smtpsink_factory()
    receiver = smtpsink_factory(hostname="receiver.test")
    with smtplib.SMTP(receiver.host, receiver.port, local_hostname="app.test") as c:
        c.sendmail("app@example.com", ["ann@example.com"], b"Subject: s\r\n\r\n")
    sent = receiver.wait_for()
    put_in = receiver.deliver(b"From: a@example.com\r\n\r\nhi\r\n", to="b@x.test")
    client = imaplib.IMAP4(receiver.imap.host, receiver.imap.port)
    client.login("ann@example.com", "pw")
    client.append("INBOX", None, None, b"From: a@example.com\r\n\r\nup\r\n")
    client.logout()
    appended = receiver.mailbox("ann@example.com").messages()[-1]
    for message in (sent, put_in, appended):
        smtpsink.release(message, upstream.host, upstream.port)
    received = [m.header("Received") or "" for m in upstream.wait_for(3)]
    assert [
        " ".join(r.split()).partition(" (pytest-smtpsink)")[0] for r in received
    ] == [
        "from app.test ([127.0.0.1]) by receiver.test",
        "by receiver.test",
        "by receiver.test",
    ]


def test_a_copy_sent_to_another_recipient_does_not_name_the_captured_one(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    # The Received header said "for <secret-bcc@example.com>" to the
    # archive the copy went to: a Bcc recipient that only the envelope had.
    upstream = smtpsink_factory(hostname="upstream.test")
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            "app@example.com", ["secret-bcc@example.com"], b"Subject: s\r\n\r\nx\r\n"
        )
    captured = smtpsink.wait_for()
    smtpsink.release(
        captured, upstream.host, upstream.port, rcpt_to=["archive@example.com"]
    )
    released = upstream.wait_for()
    assert "secret-bcc" not in released.raw.decode()
    received = released.header("Received")
    assert received is not None
    assert " for <archive@example.com>;" in " ".join(received.split())


def test_release_to_localhost_with_its_final_dot(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    # It passed the loopback check, then failed to connect: the hosts file
    # names localhost without the dot, and getaddrinfo knows only that.
    upstream = smtpsink_factory(hostname="upstream.test")
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")
    assert smtpsink.release(captured, "localhost.", upstream.port).code == 250


def test_release_with_another_envelope(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    upstream = smtpsink_factory(hostname="upstream.test")
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")

    delivery = smtpsink.release(
        captured,
        upstream.host,
        upstream.port,
        mail_from="",
        rcpt_to=["audit@example.net", '"copy desk"@example.net', "zoë@example.net"],
    )

    relayed = upstream.wait_for()
    assert relayed.envelope.mail_from == ""
    assert relayed.envelope.rcpt_to == (
        "audit@example.net",
        '"copy desk"@example.net',
        "zoë@example.net",
    )
    assert delivery.mail_from == ""
    # smtplib's command case differs between Python versions.
    assert "c: mail from:<>" in delivery.format_transcript().lower()


def test_a_recipient_named_twice_is_relayed_twice_as_given(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    # As documented: no deduplication, of the captured envelope or of
    # rcpt_to= (a test of an upstream's duplicate handling needs both).
    upstream = smtpsink_factory(hostname="upstream.test")
    twice = ["ann@example.com", "bob@example.com", "ann@example.com"]
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n", twice)
    assert captured.envelope.rcpt_to == tuple(twice)
    smtpsink.release(captured, upstream.host, upstream.port)
    smtpsink.release(
        captured, upstream.host, upstream.port, rcpt_to=["c@example.com"] * 2
    )
    first, second = upstream.wait_for(count=2)
    assert first.envelope.rcpt_to == tuple(twice)
    assert second.envelope.rcpt_to == ("c@example.com", "c@example.com")


def test_release_over_starttls_with_auth_masks_the_password(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    upstream = smtpsink_factory(
        tls="starttls", auth={"ann": PASSWORD}, auth_required=True
    )
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")

    delivery = release_over_starttls(smtpsink, captured, upstream)

    relayed = upstream.wait_for()
    assert relayed.session.authenticated_as == "ann"
    assert relayed.session.before("STARTTLS", "AUTH")
    assert relayed.session.tls is not None
    text = delivery.format_transcript()
    assert text.startswith("S: 220 ")
    assert "C: STARTTLS" in text
    # PLAIN's initial response, masked as the sink masks it.
    assert "\nC: AUTH PLAIN ****\n" in text
    assert "C: QUIT" in text
    assert "C: <message content: " in text
    for shown in (text, repr(delivery), str(delivery)):
        assert PASSWORD not in shown
    for secret in (PASSWORD, f"\0ann\0{PASSWORD}"):
        assert base64.b64encode(secret.encode()).decode() not in text


def test_release_over_implicit_tls(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    upstream = smtpsink_factory(tls="implicit", auth={"ann": PASSWORD})
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")

    delivery = smtpsink.release(
        captured,
        upstream.host,
        upstream.port,
        tls="implicit",
        ssl_context=upstream.ssl_context(),
        auth=("ann", PASSWORD),
    )

    session = upstream.wait_for().session
    assert session.tls is not None
    assert session.tls.implicit
    assert session.authenticated_as == "ann"
    assert delivery.upstream == f"smtps://ann@127.0.0.1:{upstream.port}"
    assert all(PASSWORD not in e.line for e in delivery.transcript)


@pytest.mark.parametrize("full_trace", [False, True], ids=["", "full-trace"])
def test_a_refused_release_keeps_the_password_out_of_showlocals(
    pytester: pytest.Pytester, full_trace: bool
) -> None:
    # pytest -l prints every shown frame's variables: release()'s own
    # frame, which holds auth, is not shown; --full-trace shows it, and its
    # auth argument showed the password.
    pytester.makepyfile(
        f"""
import smtplib

def test_release(smtpsink, smtpsink_factory):
    upstream = smtpsink_factory(tls="starttls", auth={{"ann": "right"}})
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("a@example.com", ["b@example.net"], b"Subject: s\\r\\n\\r\\nx\\r\\n")
    credentials = ("ann", "{PASSWORD[::-1]}")  # reversed: not in the source shown
    smtpsink.release(
        smtpsink.wait_for(), upstream.host, upstream.port, tls="starttls",
        ca_file=upstream.ca_path, auth=(credentials[0], credentials[1][::-1]),
    )
"""
    )
    options = ["--showlocals", *(["--full-trace"] if full_trace else [])]
    result = pytester.runpytest("-p", "no:xdist", *options)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["E*pytest_smtpsink.RelayError: *refused the message at AUTH: 535 *"]
    )
    assert PASSWORD not in result.stdout.str()
    if full_trace:
        result.stdout.fnmatch_lines(["credentials = <not shown>"])


@pytest.mark.parametrize(
    ("made", "outcome", "variable"),
    [
        # A SettingsError, and a relay to a remote host without the opt-in.
        (
            "def test_it(smtpsink_factory):\n"
            '    smtpsink_factory(auth={"ann": SECRET[::-1]}, auth_plaintext="yes")',
            "failed",
            "held",
        ),
        (
            "def test_it(smtpsink_factory):\n"
            '    smtpsink_factory(relay="smtp://u:" + SECRET[::-1] '
            '+ "@mail.example.com:25", relay_to=".*")',
            "failed",
            "held",
        ),
        # The fixture's `marker` variable held the marker's settings.
        (
            '@pytest.mark.smtpsink(auth={"ann": SECRET[::-1]}, auth_plaintext="yes")\n'
            "def test_it(smtpsink):\n"
            "    pass",
            "errors",
            "marked",
        ),
    ],
    ids=["factory-auth", "factory-relay", "marker"],
)
def test_a_failed_sink_keeps_the_credentials_out_of_full_trace(
    pytester: pytest.Pytester, made: str, outcome: str, variable: str
) -> None:
    # --full-trace shows the plugin's frames and their variables: the
    # factory's settings and _settings_for's overrides held the auth table
    # and the relay URL, password and all.
    pytester.makepyfile(
        f"""
import pytest

SECRET = "{PASSWORD[::-1]}"  # reversed: not in the source shown

{made}
"""
    )
    result = pytester.runpytest("-p", "no:xdist", "--showlocals", "--full-trace")
    result.assert_outcomes(**{outcome: 1})
    result.stdout.fnmatch_lines([f"{variable} * = <not shown>"])
    assert PASSWORD not in result.stdout.str()


def test_a_relay_url_given_without_relay_keeps_its_password_out_of_the_error(
    pytester: pytest.Pytester,
) -> None:
    # The one setting a user may take for positional: its URL was quoted
    # whole, password and all, with no flag needed.
    pytester.makepyfile(
        f"""
import pytest

SECRET = "{PASSWORD[::-1]}"[::-1]  # reversed: not in the source shown

def test_factory(smtpsink_factory):
    smtpsink_factory("smtp://ann:" + SECRET + "@127.0.0.1:25")

def test_pair(smtpsink_factory):
    smtpsink_factory(("ann", SECRET))  # auth= forgotten

def test_other_scheme(smtpsink_factory):
    smtpsink_factory("ann:" + SECRET + "/x@127.0.0.1:25")

@pytest.mark.smtpsink("smtp://ann:" + SECRET + "@127.0.0.1:25")
def test_marker(smtpsink):
    pass
"""
    )
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(failed=3, errors=1)
    result.stdout.fnmatch_lines(["*got a tuple (not shown: it may hold a password)*"])
    for given_by in ("smtpsink_factory()", "@pytest.mark.smtpsink"):
        result.stdout.fnmatch_lines(
            [
                f"*{given_by} takes keyword settings only, got a str (not shown: "
                "it may hold a password)*"
            ]
        )
    assert PASSWORD not in result.stdout.str()


def refused_starttls_release(
    sink: Mailbox, upstream: Mailbox, *, login: bool = True
) -> RelayError:
    """The RelayError of releasing a message captured by ``sink`` to
    ``upstream`` over STARTTLS (logging in as ann with PASSWORD if
    ``login``)."""
    captured = capture(sink, b"Subject: hi\r\n\r\nx\r\n")
    with pytest.raises(RelayError) as raised:
        release_over_starttls(sink, captured, upstream, login=login)
    return raised.value


def release_over_starttls(
    sink: Mailbox, captured: Message, upstream: Mailbox, *, login: bool = True
) -> Delivery:
    """Release ``captured`` to ``upstream`` over STARTTLS, trusting its CA
    (logging in as ann with PASSWORD if ``login``)."""
    return sink.release(
        captured,
        upstream.host,
        upstream.port,
        tls="starttls",
        ca_file=upstream.ca_path,
        auth=("ann", PASSWORD) if login else None,
    )


def refused_starttls_relay(
    factory: Factory, upstream: Mailbox, *, login: bool = True
) -> RelayError:
    """The same refusal, by a sink relaying to ``upstream`` automatically:
    the error recorded on the message."""
    user = f"ann:{PASSWORD}@" if login else ""
    url = f"smtp+starttls://{user}127.0.0.1:{upstream.port}?cafile={upstream.ca_path}"
    sink = factory(relay=url, relay_to=".*")
    message = capture(sink, b"Subject: hi\r\n\r\nx\r\n")
    wait_relayed(sink, message)
    assert relay_of(message).status == "refused"
    error = relay_of(message).error
    assert error is not None
    return error


@pytest.mark.parametrize("how", ["release", "relay"])
def test_a_refused_starttls_sends_nothing_in_the_clear(
    smtpsink: Mailbox, smtpsink_factory: Factory, how: str
) -> None:
    # The refusal ends the conversation: nothing more goes unencrypted, the
    # password least of all.
    upstream = smtpsink_factory(tls="starttls", auth={"ann": PASSWORD})
    upstream.fail("STARTTLS", 454, "4.7.0 TLS not available now")
    if how == "release":
        error = refused_starttls_release(smtpsink, upstream)
    else:
        error = refused_starttls_relay(smtpsink_factory, upstream)

    assert (error.stage, error.code) == ("STARTTLS", 454)
    assert error.reply == "4.7.0 TLS not available now"
    commands = [e.line for e in upstream.sessions[0].transcript]
    assert not any(line.upper().startswith(("AUTH", "MAIL")) for line in commands)
    upstream.assert_nothing_sent()


def test_an_upstream_without_starttls_is_named_so(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    # It was smtplib's own words, "STARTTLS extension not supported by
    # server.", where every other reason says what to do.
    upstream = smtpsink_factory(tls="starttls", auth={"ann": PASSWORD})
    upstream.hide("STARTTLS")
    with pytest.raises(RelayError) as raised:
        release_over_starttls(
            smtpsink, capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n"), upstream
        )
    assert (raised.value.stage, raised.value.code) == ("STARTTLS", None)
    assert raised.value.reply == (
        "the upstream offers no STARTTLS (its EHLO reply does not list it): "
        "nothing was sent; smtp:// is for an upstream without TLS"
    )
    commands = [e.line for e in upstream.sessions[-1].transcript]
    assert not any(
        line.upper().startswith(("AUTH", "MAIL", "STARTTLS")) for line in commands
    )
    # Still in step: it said QUIT before it hung up (RFC 5321 4.1.1.10).
    assert_ended_with_quit(upstream)


def assert_ended_with_quit(upstream: Mailbox) -> None:
    upstream.wait_until(lambda: upstream.sessions[-1].end is not None)
    session = upstream.sessions[-1]
    assert (session.commands[-1], session.end) == ("QUIT", "quit")


@pytest.mark.parametrize("how", ["release", "relay"])
def test_a_greeting_refused_after_starttls_is_the_answer(
    smtpsink: Mailbox, smtpsink_factory: Factory, how: str
) -> None:
    # The EHLO over TLS is refused (the 2nd greeting), then the HELO tried
    # after it (the 3rd): that is the answer, not a MAIL sent ungreeted.
    # (The second rule sees the 1st and 3rd greetings: the first rule takes
    # the 2nd.)
    upstream = smtpsink_factory(tls="starttls")
    upstream.fail("EHLO", 550, "5.7.0 not over TLS", every=2, times=1)
    upstream.fail("EHLO", 554, "5.7.0 not even HELO", every=2, times=1)
    if how == "release":
        error = refused_starttls_release(smtpsink, upstream, login=False)
    else:
        error = refused_starttls_relay(smtpsink_factory, upstream, login=False)

    assert (error.stage, error.code, error.reply) == (
        "EHLO",
        554,
        "5.7.0 not even HELO",
    )
    commands = [e.line for e in upstream.sessions[0].transcript]
    assert not any(line.upper().startswith("MAIL") for line in commands)
    upstream.assert_nothing_sent()


def test_a_wrong_password_is_tried_once(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    # smtplib's login() tries every mechanism both sides know after a 535:
    # three failed logins per message, which a real upstream counts against
    # the account (and may lock it).
    upstream = smtpsink_factory(tls="starttls", auth={"ann": "right"})

    error = refused_starttls_release(smtpsink, upstream)

    assert (error.stage, error.code) == ("AUTH", 535)
    commands = [e.line for e in upstream.sessions[0].transcript]
    assert [line.split()[:2] for line in commands if line.startswith("AUTH")] == [
        ["AUTH", "PLAIN"]
    ]
    # Refused, not broken: it said QUIT before it hung up (it just closed).
    assert_ended_with_quit(upstream)


def relay_with_a_wrong_password(factory: Factory) -> tuple[Mailbox, str]:
    """An upstream over STARTTLS with a login table, and a relay URL that
    logs in to it with a wrong password (answered 535)."""
    upstream = factory(tls="starttls", auth={"ann": "right"})
    url = f"smtp+starttls://ann:{PASSWORD}@127.0.0.1:{upstream.port}"
    return upstream, f"{url}?cafile={upstream.ca_path}"


def logins(upstream: Mailbox) -> list[Exchange]:
    """The AUTH commands ``upstream`` was sent."""
    return [e for s in upstream.sessions for e in s.transcript if e.command == "AUTH"]


def test_a_refused_relay_login_is_not_tried_again_in_the_test(
    smtpsink_factory: Factory,
) -> None:
    # Each message logged in again: a run with a stale password made one
    # failed login a message, which a real upstream counts against the
    # account (and may lock it, or ban the CI machine).
    upstream, url = relay_with_a_wrong_password(smtpsink_factory)
    sink = smtpsink_factory(relay=url, relay_to=".*")
    with smtplib.SMTP(sink.host, sink.port) as client:
        for n in range(3):
            client.sendmail(
                "app@example.com", ["ann@example.com"], f"Subject: {n}\r\n\r\n".encode()
            )
    messages = sink.wait_for(count=3)
    for message in messages:
        wait_relayed(sink, message)
    first, *later = [relay_of(m) for m in messages]
    assert (first.status, first.code) == ("refused", 535)
    for outcome in later:
        assert (outcome.status, outcome.code) == ("refused", 535)
        assert outcome.reply == (
            f"not sent: the upstream refused the relay's login for an earlier "
            f"message of this test (535 {first.reply}); it is not tried again "
            "in this test"
        )
    assert len(logins(upstream)) == 1
    assert PASSWORD not in "".join(str(o) for o in [first, *later])


def test_a_login_refused_after_the_next_test_began_is_the_earlier_tests(
    smtpsink_factory: Factory,
) -> None:
    # Dovecot answers a failed AUTH 2 s late: refused after the next test
    # began, the login was held against that test, whose mail was then
    # refused "for an earlier message of this test" without a login.
    upstream, url = relay_with_a_wrong_password(smtpsink_factory)
    with SMTPSink(relay=url, relay_to=".*") as sink:
        sink.forget_before(sink.view())  # a test begins, as the fixtures do
        rule = upstream.delay("AUTH", 3)
        first = capture(sink, b"Subject: first\r\n\r\nx\r\n")
        # Its AUTH came; the answer is held.
        upstream.wait_until(lambda: len(logins(upstream)) == 1, timeout=60)
        sink.forget_before(sink.view())  # the next test begins meanwhile
        wait_relayed(sink, first)
        assert relay_of(first).code == 535
        rule.remove()
        second = capture(sink, b"Subject: second\r\n\r\nx\r\n")
        wait_relayed(sink, second)
    # The new test's message logged in again (and was refused by the table).
    assert len(logins(upstream)) == 2
    assert "earlier message" not in relay_of(second).reply


def test_a_connection_whose_login_ended_in_the_next_test_is_the_earlier_tests(
    smtpsink_factory: Factory,
) -> None:
    # The connection was stamped with the test running when its login
    # ended: one made for the earlier test's mail, whose login ended after
    # the next test began, carried the next test's mail too, its session
    # in the earlier test's view of the upstream.
    upstream = smtpsink_factory(tls="starttls", auth={"ann": PASSWORD})
    url = f"smtp+starttls://ann:{PASSWORD}@127.0.0.1:{upstream.port}"
    with SMTPSink(relay=f"{url}?cafile={upstream.ca_path}", relay_to=".*") as sink:
        sink.forget_before(sink.view())  # a test begins, as the fixtures do
        rule = upstream.delay("AUTH", 3)
        first = capture(sink, b"Subject: first\r\n\r\nx\r\n")
        # Its AUTH came; the answer is held.
        upstream.wait_until(lambda: len(logins(upstream)) == 1, timeout=60)
        sink.forget_before(sink.view())  # the next test begins meanwhile
        wait_relayed(sink, first)
        rule.remove()
        second = capture(sink, b"Subject: second\r\n\r\nx\r\n")
        wait_relayed(sink, second)
    assert [relay_of(m).status for m in (first, second)] == ["relayed", "relayed"]
    sessions = {m.session for m in upstream.wait_for(count=2)}
    assert len(sessions) == 2


def test_outside_tests_a_refused_relay_login_waits_before_it_is_tried_again(
    smtpsink_factory: Factory,
) -> None:
    # A sink no test drives (the standalone sink, a sink of the user's
    # own) begins no test: one refused login turned relaying off for the
    # rest of the process, "for an earlier message of this test".
    upstream, url = relay_with_a_wrong_password(smtpsink_factory)
    with SMTPSink(relay=url, relay_to=".*") as sink:
        with smtplib.SMTP(sink.host, sink.port) as client:
            for n in range(2):
                client.sendmail(
                    "app@example.com", ["ann@example.com"], f"Subject: {n}\r\n\r\n"
                )
        messages = sink.wait_for(count=2)
        for message in messages:
            wait_relayed(sink, message)
        first, second = [relay_of(m) for m in messages]
    assert (first.status, first.code) == ("refused", 535)
    assert second.reply == (
        "not sent: the upstream refused the relay's login for an earlier "
        f"message (535 {first.reply}); it is tried again 60 s after that refusal"
    )
    assert len(logins(upstream)) == 1


def test_a_bug_in_the_relays_client_says_so_and_is_logged(
    smtpsink: Mailbox,
    smtpsink_factory: Factory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # It read as the upstream's failure, "could not deliver to ... (connect):
    # AttributeError: ...", its traceback gone: nothing to report. Raised as
    # it was, pytest's --showlocals would print the password of the frame
    # that holds it: it says it is a bug, and its traceback is logged.
    upstream = smtpsink_factory(hostname="bug.test")
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")

    def broken(*args: object) -> None:
        raise AttributeError("a bug in the sink")

    monkeypatch.setattr(_relay, "_checked_reply", broken)
    with pytest.raises(RelayError) as raised:
        smtpsink.release(captured, upstream.host, upstream.port)
    assert raised.value.reply == (
        "a bug in pytest-smtpsink's relay, not the upstream's doing: "
        "AttributeError: a bug in the sink (its traceback is logged on the "
        "pytest_smtpsink logger: please report it)"
    )
    assert raised.value.__cause__ is None
    (logged,) = [r for r in caplog.records if "please report this bug" in r.message]
    assert "def broken" not in logged.message  # a traceback, not locals
    assert 'raise AttributeError("a bug in the sink")' in logged.message


@pytest.mark.parametrize(
    ("password", "bug"),
    [
        # Quoted with !r (a backslash doubled, a quote escaped), as bytes,
        # with !a.
        (
            'pa"ss\\w\u00f6rd-s3cret',
            lambda pw: ValueError(f"bad {pw!r} {pw.encode()!r} {pw!a}"),
        ),
        # Inside a text a KeyError quotes, whose repr the outcome quotes
        # again: two reprs deep.
        ("it's-s3cret", lambda pw: KeyError(f'no "session" for {pw}')),
        ("pa\\ss-s3cret", lambda pw: KeyError(f"no {pw!r}")),
    ],
)
def test_a_bug_that_quotes_the_password_in_any_form_is_masked(
    caplog: pytest.LogCaptureFixture,
    password: str,
    bug: Callable[[str], Exception],
) -> None:
    # Masked as given, in base64 and as a PLAIN response only: a bug's
    # message quoting it kept it in clear, in the log, the outcome's reply
    # ("the relay failed: <repr of the error>") and the RelayError.
    from pytest_smtpsink._credentials import mask_anywhere

    quoted = urllib.parse.quote(password, safe="")
    upstream = _relay.parse_upstream(f"smtp://ann:{quoted}@127.0.0.1:2525")
    error = bug(password)
    secrets = _relay._log_bug(upstream, error)
    (logged,) = caplog.records
    for shown in (
        logged.getMessage(),
        mask_anywhere(str(error), secrets),
        mask_anywhere(f"the relay failed: {error!r}", secrets),
    ):
        assert "s3cret" not in shown, shown


def test_an_auth_challenge_that_is_no_base64_is_the_upstreams_doing(
    smtpsink: Mailbox, scripted: Callable[[Answer], ScriptedUpstream]
) -> None:
    # "334 abc" made the relay's client raise binascii.Error, which read as
    # a bug of the sink's (and, raised as it was, --showlocals printed the
    # password of the login's frame).
    def answer(line: bytes) -> bytes | tuple[bytes, ...] | None:
        if line[:4].upper() == b"EHLO":
            return b"250-raw.test\r\n250 AUTH LOGIN\r\n"
        if line[:4].upper() == b"AUTH":
            return b"334 abc\r\n"
        return usual_answer(line)

    upstream = scripted(answer)
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")
    with pytest.raises(RelayError) as raised:
        smtpsink.release(captured, "127.0.0.1", upstream.port, auth=("ann", PASSWORD))
    assert raised.value.stage == "AUTH"
    assert raised.value.reply == (
        "the upstream's AUTH challenge is not base64 (Incorrect padding)"
    )
    assert PASSWORD not in str(raised.value)


def test_login_answers_each_prompt_by_what_it_asks(
    smtpsink: Mailbox, scripted: Callable[[Answer], ScriptedUpstream]
) -> None:
    """An upstream that ignores LOGIN's initial response and asks for the
    user name: the relay answered by count, with the password, which went
    into the upstream's log of failed user names (helper-233 F3)."""
    asking = ""

    def answer(line: bytes) -> bytes | tuple[bytes, ...] | None:
        nonlocal asking
        if line[:4].upper() == b"EHLO":
            return b"250-raw.test\r\n250 AUTH LOGIN\r\n"
        if line[:4].upper() == b"AUTH":  # its initial response ignored
            asking = "user"
            return b"334 " + base64.b64encode(b"Username:") + b"\r\n"
        if asking == "user":
            asking = "password"
            return b"334 " + base64.b64encode(b"Password:") + b"\r\n"
        if asking == "password":
            asking = ""
            return b"235 2.7.0 Authentication successful\r\n"
        return usual_answer(line)

    upstream = scripted(answer)
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")
    smtpsink.release(captured, "127.0.0.1", upstream.port, auth=("ann", PASSWORD))
    login = upstream.received[upstream.received.index(b"AUTH LOGIN YW5u") + 1 :][:2]
    assert login == [
        base64.b64encode(b"ann"),  # to "Username:"
        base64.b64encode(PASSWORD.encode()),  # to "Password:"
    ]


def answering_auth(offered: bytes, digest_reply: bytes) -> Answer:
    """An upstream offering the AUTH mechanisms ``offered``: it challenges
    CRAM-MD5 and answers its digest with ``digest_reply``; PLAIN is taken."""
    challenged = False

    def answer(line: bytes) -> bytes | tuple[bytes, ...] | None:
        nonlocal challenged
        if line[:4].upper() == b"EHLO":
            return b"250-raw.test\r\n250 AUTH " + offered + b"\r\n"
        if line.upper().startswith(b"AUTH CRAM-MD5"):
            challenged = True
            return b"334 " + base64.b64encode(b"<1.2@raw.test>") + b"\r\n"
        if challenged:  # the response: the user name and the digest
            challenged = False
            return digest_reply
        if line.upper().startswith(b"AUTH PLAIN "):
            return b"235 2.7.0 Authentication successful\r\n"
        return usual_answer(line)

    return answer


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_a_password_beyond_ascii_logs_in_as_utf8(
    smtpsink: Mailbox, smtpsink_factory: Factory, mechanism: str
) -> None:
    # smtplib encodes the responses as ASCII: "pässwort" failed with a
    # UnicodeEncodeError, the password in its chained exception, where the
    # sink takes SASL's UTF-8 (RFC 4616).
    password = "p\u00e4ssw\u00f6rd-" + PASSWORD
    upstream = smtpsink_factory(auth={"ann": password}, auth_plaintext=True)
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")
    if mechanism != "PLAIN":
        # The relay logs in with PLAIN while offered: the others by hand,
        # as the relay's client would after a 504 to PLAIN. CRAM-MD5 keys
        # its digest with the password in UTF-8, as the sink checks it.
        client_class = _client_class(implicit=False)
        with client_class(host=upstream.host, port=upstream.port, timeout=10) as client:
            client.ehlo()
            client.user, client.password = "ann", password
            method = getattr(client, "auth_" + mechanism.lower().replace("-", "_"))
            assert client.auth(mechanism, method)[0] == 235
        assert upstream.sessions[-1].authenticated_as == "ann"
        return
    delivery = smtpsink.release(
        captured, upstream.host, upstream.port, auth=("ann", password)
    )
    assert upstream.wait_for().session.authenticated_as == "ann"
    assert password not in delivery.format_transcript()


def test_login_with_cram_md5_masks_its_response(
    smtpsink: Mailbox, scripted: Callable[[Answer], ScriptedUpstream]
) -> None:
    # CRAM-MD5 is the relay's last choice, used when it is the only one.
    upstream = scripted(
        answering_auth(b"CRAM-MD5", b"235 2.7.0 Authentication successful\r\n")
    )
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")

    delivery = smtpsink.release(
        captured, "127.0.0.1", upstream.port, auth=("ann", PASSWORD)
    )

    text = delivery.format_transcript()
    assert "\nC: AUTH CRAM-MD5\nS: 334 " in text
    # The response, masked as the sink masks it.
    assert "\nC: ****\nS: 235 " in text


def test_login_does_not_start_with_cram_md5(
    smtpsink: Mailbox, scripted: Callable[[Answer], ScriptedUpstream]
) -> None:
    # An upstream that offers CRAM-MD5 refuses it with 535 for an account
    # whose password it stores hashed (it cannot compute the digest), while
    # PLAIN with the same password works. Once a 535 ends the login,
    # CRAM-MD5 first made the right password fail.
    upstream = scripted(
        answering_auth(
            b"CRAM-MD5 PLAIN LOGIN", b"535 5.7.8 Error: authentication failed\r\n"
        )
    )
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")

    delivery = smtpsink.release(
        captured, "127.0.0.1", upstream.port, auth=("ann", PASSWORD)
    )

    assert delivery.code == 250
    logins = [line.split()[:2] for line in upstream.received if line[:4] == b"AUTH"]
    assert logins == [[b"AUTH", b"PLAIN"]]


def test_release_refuses_a_password_that_is_no_text_before_connecting(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    # A lone surrogate (os.environ's stand-in for a byte that is not UTF-8):
    # before, the upstream was greeted and the login failed at AUTH.
    upstream = smtpsink_factory(auth={"ann": PASSWORD}, auth_plaintext=True)
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")
    with pytest.raises(
        ValueError, match=r"^auth's user or password is not valid Unicode text$"
    ):
        smtpsink.release(
            captured, upstream.host, upstream.port, auth=("ann", "p\udcffw")
        )
    assert not upstream.sessions


def test_login_to_an_upstream_without_auth_says_so(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    upstream = smtpsink_factory(hostname="upstream.test")  # offers no AUTH
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")

    with pytest.raises(RelayError) as raised:
        smtpsink.release(captured, upstream.host, upstream.port, auth=("ann", PASSWORD))

    assert raised.value.stage == "AUTH"
    assert raised.value.code is None
    assert raised.value.reply == (
        "a login was asked for, but the upstream offers no AUTH (its EHLO reply "
        "lists none): give no auth= to release()"
    )
    assert PASSWORD not in str(raised.value)
    # Nothing was sent for it: still in step, it said QUIT before it hung up.
    assert [e.command for e in raised.value.transcript][-2:] == ["EHLO", "QUIT"]
    assert_ended_with_quit(upstream)


def test_login_without_tls_to_an_upstream_that_wants_starttls_says_so(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    # It said to give no auth=, which then failed at MAIL (530).
    upstream = smtpsink_factory(
        tls="starttls", auth={"ann": PASSWORD}, hostname="upstream.test"
    )
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")
    with pytest.raises(RelayError) as raised:
        smtpsink.release(captured, upstream.host, upstream.port, auth=("ann", PASSWORD))
    assert (raised.value.stage, raised.value.reply) == (
        "AUTH",
        "a login was asked for, but the upstream offers AUTH only after "
        "STARTTLS, it seems (its EHLO reply lists STARTTLS and no AUTH): give "
        "tls='starttls' to release()",
    )
    assert release_over_starttls(smtpsink, captured, upstream).code == 250


def test_the_automatic_relay_s_login_advice_names_the_relay_url(
    smtpsink_factory: Factory,
) -> None:
    # It named release()'s auth= and tls= to a user of the relay URL (the
    # standalone sink's --relay too).
    plain = smtpsink_factory(hostname="upstream.test")  # offers no AUTH
    tls = smtpsink_factory(
        tls="starttls", auth={"ann": PASSWORD}, hostname="tls.upstream.test"
    )
    for upstream, advice in (
        (
            plain,
            "offers no AUTH (its EHLO reply lists none): put no user in the relay URL",
        ),
        (
            tls,
            "offers AUTH only after STARTTLS, it seems (its EHLO reply lists "
            "STARTTLS and no AUTH): use smtp+starttls:// in the relay URL",
        ),
    ):
        sink = smtpsink_factory(
            relay=f"smtp://ann:{PASSWORD}@127.0.0.1:{upstream.port}", relay_to=".*"
        )
        message = capture(sink, b"Subject: hi\r\n\r\nx\r\n")
        wait_relayed(sink, message)
        assert relay_of(message).status == "failed"
        assert relay_of(message).reply == (
            f"a login was asked for, but the upstream {advice}"
        )
        assert not upstream.messages


def test_login_with_no_mechanism_the_relay_uses_names_what_is_offered(
    smtpsink: Mailbox, scripted: Callable[[Answer], ScriptedUpstream]
) -> None:
    upstream = scripted(answering_auth(b"GSSAPI XOAUTH2", b"535 5.7.8 no\r\n"))
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")

    with pytest.raises(RelayError) as raised:
        smtpsink.release(captured, "127.0.0.1", upstream.port, auth=("ann", PASSWORD))

    assert raised.value.stage == "AUTH"
    assert raised.value.code is None
    assert raised.value.reply == (
        "the upstream offers AUTH GSSAPI XOAUTH2, none of which the relay "
        "logs in with (PLAIN, LOGIN, CRAM-MD5)"
    )
    assert not [line for line in upstream.received if line[:4] == b"AUTH"]


@pytest.mark.parametrize(
    "broken",
    [
        b"xyz ann %(password)s",  # no code
        b"999 ann %(password)s",  # no reply code
        b"5350ann %(password)s",  # a code run into the text
        b"xyz %(plain)s",  # the PLAIN response echoed
        b"xyz %(unpadded)s",  # the password in base64, its "=" left out
    ],
)
def test_a_broken_reply_quoting_the_password_is_masked(
    smtpsink: Mailbox, scripted: Callable[[Answer], ScriptedUpstream], broken: bytes
) -> None:
    # A well-formed 535 was masked; a line that is no SMTP reply was quoted
    # as it came, into the outcome, reports and saved files.
    plain = base64.b64encode(f"\0ann\0{PASSWORD}".encode())
    unpadded = base64.b64encode(PASSWORD.encode()).rstrip(b"=")
    assert len(unpadded) % 4  # the form has padding to leave out
    line = (
        broken
        % {b"password": PASSWORD.encode(), b"plain": plain, b"unpadded": unpadded}
        + b"\r\n"
    )

    upstream = scripted(refusing_login_with(line))
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")
    with pytest.raises(RelayError) as raised:
        smtpsink.release(captured, "127.0.0.1", upstream.port, auth=("ann", PASSWORD))
    reply = raised.value.reply
    assert reply.startswith("the upstream's answer is no SMTP reply"), reply
    assert "****" in reply
    assert PASSWORD not in reply, reply
    assert plain.decode() not in reply, reply
    assert unpadded.decode() not in reply, reply
    assert PASSWORD not in str(raised.value)


@pytest.mark.parametrize(
    ("password", "echo"),
    [
        (PASSWORD, b"535 5.7.8 bad credentials user=ann;pass%sx"),  # in a word
        (PASSWORD, b"535 5.7.8 " + b"x" * 60 + b"%s"),  # a long run into it
        ("P\u00e4sswort9Kq", b"535 5.7.8 bad %s"),  # echoed in Latin-1
        # A short one in a refusal too (only replies that accept mask it as
        # a word: inside words it garbled them).
        ("q7x", b"535 5.7.8 bad credentials user=ann;pass%sx"),
        ("\u00e47x", b"535 5.7.8 bad %s"),
    ],
)
def test_a_reply_echoing_the_password_inside_a_word_is_masked(
    smtpsink: Mailbox,
    smtpsink_factory: Factory,
    scripted: Callable[[Answer], ScriptedUpstream],
    password: str,
    echo: bytes,
) -> None:
    # The docs promise a relay's error is masked anywhere, inside a word
    # too; only a word standing alone was, into the RelayError, the
    # outcome, summaries, reports and the login memory's next refusals.
    encoding = "utf-8" if password.isascii() else "latin-1"
    line = echo % password.encode(encoding) + b"\r\n"

    upstream = scripted(refusing_login_with(line))
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")
    with pytest.raises(RelayError) as raised:
        smtpsink.release(captured, "127.0.0.1", upstream.port, auth=("ann", password))
    assert "****" in raised.value.reply
    shown = str(raised.value) + raised.value.reply
    assert password not in shown
    assert "sswort9Kq" not in shown  # nor all but the character Latin-1 wrote

    quoted = urllib.parse.quote(password, safe="")
    sink = smtpsink_factory(
        relay=f"smtp://ann:{quoted}@127.0.0.1:{upstream.port}", relay_to=".*"
    )
    first = capture(sink, b"Subject: 1\r\n\r\nx\r\n")
    wait_relayed(sink, first)
    capture(sink, b"Subject: 2\r\n\r\nx\r\n")
    second = sink.wait_for(2)[1]
    wait_relayed(sink, second)  # refused by the memory of the first's login
    shown = "".join(repr(relay_of(m)) + m.summary() for m in (first, second))
    assert "****" in relay_of(second).reply
    assert password not in shown
    assert "sswort9Kq" not in shown


@pytest.mark.parametrize("password", ["c", "3", "dv", "Ssw0rdQ6-long"])
def test_a_login_challenge_is_decoded_as_sent_whatever_the_password(
    smtpsink: Mailbox, scripted: Callable[[Answer], ScriptedUpstream], password: str
) -> None:
    # Replies were masked before the login decoded them: a password found
    # in the challenge's base64 ("c" in UGFzc3dvcmQ6, "Password:") was cut
    # out of it, and the login failed ("the upstream's AUTH challenge is not
    # base64"). The challenge is recorded masked all the same.
    in_login: list[bytes] = []  # the lines of the login so far

    def answer(line: bytes) -> bytes | tuple[bytes, ...] | None:
        if line[:4].upper() == b"EHLO":
            return b"250-raw.test\r\n250 AUTH LOGIN\r\n"
        if line.upper().startswith(b"AUTH") or len(in_login) == 1:
            in_login.append(line)
            # The user name came with AUTH (smtplib's initial response).
            return b"334 UGFzc3dvcmQ6\r\n" if len(in_login) == 1 else b"235 ok\r\n"
        return usual_answer(line)

    upstream = scripted(answer)
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")
    delivery = smtpsink.release(
        captured, "127.0.0.1", upstream.port, auth=("ann", password)
    )
    assert delivery.code == 250
    assert base64.b64decode(in_login[1]) == password.encode()
    replies = [r for e in delivery.transcript for r in e.replies]
    assert "334 UGFzc3dvcmQ6" in replies


@pytest.mark.parametrize("password", [PASSWORD, "q7x"])
def test_a_334_outside_the_login_is_masked(
    smtpsink: Mailbox, scripted: Callable[[Answer], ScriptedUpstream], password: str
) -> None:
    # Only the login's challenges reach it unmasked: a 334 answering MAIL
    # that quoted the password was kept in the RelayError as it came.
    def answer(line: bytes) -> bytes | tuple[bytes, ...] | None:
        if line.upper().startswith(b"AUTH"):
            return b"235 ok\r\n"
        if line[:4].upper() == b"EHLO":
            return b"250-raw.test\r\n250 AUTH PLAIN\r\n"
        if line[:4].upper() == b"MAIL":
            return f"334 sender refused user=ann;pass{password}x\r\n".encode()
        return usual_answer(line)

    upstream = scripted(answer)
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")
    with pytest.raises(RelayError) as raised:
        smtpsink.release(captured, "127.0.0.1", upstream.port, auth=("ann", password))
    assert raised.value.stage == "MAIL"
    assert password not in str(raised.value)
    assert "****" in str(raised.value)


def test_a_short_relay_password_garbles_no_reply(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    # Masked inside words, a password of one letter cut it out of every
    # reply: "2.0.0 OK: qu****u****d as #1", "235 2.7.0 Auth****ntication".
    upstream = smtpsink_factory(
        auth={"ann": "e"}, auth_plaintext=True, hostname="upstream.test"
    )
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")
    delivery = smtpsink.release(
        captured, upstream.host, upstream.port, auth=("ann", "e")
    )
    assert "queued as" in delivery.reply
    replies = [r for e in delivery.transcript for r in e.replies]
    assert "235 2.7.0 Authentication successful" in replies


def test_release_refuses_an_untrusted_certificate(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    upstream = smtpsink_factory(tls="starttls")
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")

    # No CA given: the system's trust store, which does not know the test CA.
    with pytest.raises(RelayError, match="CERTIFICATE_VERIFY_FAILED") as raised:
        smtpsink.release(captured, upstream.host, upstream.port, tls="starttls")
    assert raised.value.stage == "STARTTLS"
    assert raised.value.reply.endswith(
        "(trust the upstream's CA with ca_file= for release, ?cafile= in the relay URL)"
    )
    upstream.assert_nothing_sent()


def test_release_refused_raises_with_the_upstream_reply(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    upstream = smtpsink_factory(hostname="upstream.test")
    upstream.fail("RCPT", 550, "5.1.1 no such user here")
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")

    with pytest.raises(RelayError) as raised:
        smtpsink.release(captured, upstream.host, upstream.port)

    error = raised.value
    assert (error.code, error.stage) == (550, "RCPT")
    assert error.reply == "5.1.1 no such user here"
    assert "refused the message at RCPT: 550 5.1.1 no such user here" in str(error)
    assert "c: rcpt to:<ann@example.com>" in str(error).lower()
    upstream.assert_nothing_sent()
    assert smtpsink.messages == [captured]  # the captured copy stays


def test_release_refused_at_end_of_data(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    upstream = smtpsink_factory(hostname="upstream.test")
    upstream.fail("EOD", 554, "5.7.1 spam")
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")

    with pytest.raises(RelayError, match=r"at DATA: 554 5\.7\.1 spam") as raised:
        smtpsink.release(captured, upstream.host, upstream.port)
    assert raised.value.code == 554


def test_release_partly_refused_reports_who(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    upstream = smtpsink_factory(hostname="upstream.test")
    upstream.fail("RCPT", 550, match="bob@example.com")
    captured = capture(
        smtpsink, b"Subject: hi\r\n\r\nx\r\n", ["ann@example.com", "bob@example.com"]
    )

    delivery = smtpsink.release(captured, upstream.host, upstream.port)

    assert delivery.accepted == ("ann@example.com",)
    assert [(r, c) for r, c, _ in delivery.refused] == [("bob@example.com", 550)]
    assert upstream.wait_for().envelope.rcpt_to == ("ann@example.com",)


def test_release_to_nothing_listening(smtpsink: Mailbox, refusing_port: int) -> None:
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")
    port = refusing_port

    with pytest.raises(RelayError) as raised:
        smtpsink.release(captured, "127.0.0.1", port, timeout=5)

    assert raised.value.code is None
    assert raised.value.stage == "connect"
    assert f"could not deliver to smtp://127.0.0.1:{port} (connect)" in str(
        raised.value
    )


def test_release_to_a_remote_host_needs_allow_remote(smtpsink: Mailbox) -> None:
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")
    with pytest.raises(ValueError, match="allow_remote=True"):
        smtpsink.release(captured, "192.0.2.1", 25)
    with pytest.raises(
        ValueError,
        match=r"^rcpt_to must be a list of addresses, got the str 'a@example.com' "
        r"\(for one recipient: rcpt_to=\['a@example.com'\]\)$",
    ):
        smtpsink.release(captured, "127.0.0.1", 25, rcpt_to="a@example.com")
    with pytest.raises(ValueError, match=r"^rcpt_to must be a non-empty list"):
        smtpsink.release(captured, "127.0.0.1", 25, rcpt_to=[])
    with pytest.raises(ValueError, match="tls must be"):
        smtpsink.release(captured, "127.0.0.1", 25, tls="yes")  # type: ignore[arg-type]


def test_release_takes_an_ipv6_upstream_as_a_url_writes_it(smtpsink: Mailbox) -> None:
    # "[::1]" was "not a loopback address"; with allow_remote=True it went
    # to smtp://[[::1]] and failed with a DNS error. ::ffff:127.0.0.1 is
    # loopback too (Python says so from 3.13 on).
    upstream = start_on_ipv6_loopback()
    try:
        captured = capture(smtpsink, b"Subject: six\r\n\r\nx\r\n")
        delivery = smtpsink.release(captured, "[::1]", upstream.port)
        assert delivery.upstream == f"smtp://[::1]:{upstream.port}"
        assert upstream.wait_for().subject == "six"
    finally:
        upstream.stop()
    from pytest_smtpsink._relay import is_loopback_host

    assert is_loopback_host("::ffff:127.0.0.1")
    assert not is_loopback_host("::ffff:10.0.0.1")


def test_release_with_auth_in_the_clear_to_a_remote_host_is_refused(
    smtpsink: Mailbox,
) -> None:
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")
    # Before: it connected (192.0.2.1 is TEST-NET: never reached) to send the
    # password unencrypted; now nothing connects.
    with pytest.raises(ValueError, match=r"^auth needs") as raised:
        smtpsink.release(
            captured,
            "192.0.2.1",
            25,
            auth=("ann", PASSWORD),
            allow_remote=True,
            timeout=1,
        )
    assert str(raised.value) == (
        "auth needs tls='starttls' or tls='implicit' for a host off loopback "
        "(192.0.2.1): without TLS the password would be sent unencrypted"
    )
    assert PASSWORD not in str(raised.value)


def test_release_with_auth_in_the_clear_on_loopback_logs_in(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    upstream = smtpsink_factory(auth={"ann": PASSWORD}, auth_plaintext=True)
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")

    smtpsink.release(captured, upstream.host, upstream.port, auth=("ann", PASSWORD))

    assert upstream.wait_for().session.authenticated_as == "ann"


@pytest.mark.parametrize(
    ("arguments", "error", "text"),
    [
        (
            {"timeout": -1},
            ValueError,
            "timeout must be a number of seconds > 0, got -1",
        ),
        ({"timeout": 0}, ValueError, "timeout must be a number of seconds > 0"),
        ({"timeout": float("nan")}, ValueError, "timeout must be"),
        (
            {"timeout": "5"},
            TypeError,
            "timeout must be a number of seconds, got the str '5'",
        ),
        ({"port": "abc"}, TypeError, "port must be an int, got 'abc'"),
        ({"port": -1}, ValueError, "port must be from 1 to 65535, got -1"),
        ({"port": 99999}, ValueError, "port must be from 1 to 65535, got 99999"),
        ({"host": ""}, ValueError, "host must be a host name or address, got ''"),
        ({"host": None}, TypeError, "host must be a host name or address (a str)"),
        # Before: "is not a loopback address" (ask for allow_remote=True),
        # then a DNS lookup of the whole string.
        (
            {"host": "localhost:2525"},
            ValueError,
            "host must be a host name or address, got 'localhost:2525': give "
            "the port as port= ('localhost' and 2525)",
        ),
        (
            {"host": "smtp://127.0.0.1"},
            ValueError,
            "got 'smtp://127.0.0.1': a URL goes to relay= (release() takes the "
            "host, port and tls= apart)",
        ),
        (
            {"host": "127.0.0.1 "},
            ValueError,
            "got '127.0.0.1 ': it has blanks or control characters",
        ),
        ({"host": "[::1"}, ValueError, "it is no IPv6 address, and a host name"),
        (
            {"host": "[::1]:2525"},
            ValueError,
            "give the port as port= ('::1' and 2525)",
        ),
        ({"host": "localhost.."}, ValueError, "it has an empty label ('..')"),
        ({"host": "mail/example"}, ValueError, "a host name has no '/' or '@'"),
        (
            {"ca_file": "/nonexistent/ca.pem"},
            ValueError,
            "'/nonexistent/ca.pem' is not a",
        ),
        ({"ssl_context": "yes"}, TypeError, "ssl_context must be an ssl.SSLContext"),
        # Before: a bare ssl.SSLError, naming neither the file nor ca_file.
        (
            {"ca_file": __file__, "tls": "starttls"},
            ValueError,
            f"ca_file {__file__!r} holds no PEM certificate",
        ),
        # Before: the CA file was not read, and the verification failure
        # said to give ca_file=.
        (
            {
                "ca_file": __file__,
                "tls": "starttls",
                "ssl_context": ssl.create_default_context(),
            },
            ValueError,
            "give ca_file= or ssl_context=, not both",
        ),
        # Before: a RelayError after MAIL went (an AttributeError or a
        # TypeError inside smtplib), or another address sent than given,
        # with the given one in Delivery.accepted.
        ({"mail_from": 5}, TypeError, "mail_from takes address strings, got 5"),
        (
            {"rcpt_to": ["ann@example.com", b"bob@example.com"]},
            TypeError,
            "rcpt_to takes address strings, got b'bob@example.com'",
        ),
        (
            {"rcpt_to": ["ann@example.com\r\nRSET"]},
            ValueError,
            "rcpt_to: 'ann@example.com\\r\\nRSET' has a control character",
        ),
        (
            {"mail_from": "app@example.com\n"},
            ValueError,
            "mail_from: 'app@example.com\\n' has a control character",
        ),
        (
            {"rcpt_to": ["Ann <ann@example.com>"]},
            ValueError,
            "rcpt_to: 'Ann <ann@example.com>' is not an address as SMTP sends it "
            "(no angle brackets, display name or comment): it would go as "
            "<ann@example.com>",
        ),
        ({"rcpt_to": [""]}, ValueError, "rcpt_to has an empty address"),
        # Before: true, so "no" let the message go to a remote host.
        (
            {"host": "192.0.2.1", "allow_remote": "no"},
            TypeError,
            "allow_remote must be True or False, got 'no'",
        ),
        ({"received": "no"}, TypeError, "received must be True or False, got 'no'"),
        # Before: ignored, and the mail went in clear text to an upstream
        # that offered STARTTLS (a relay URL's ?cafile= was refused).
        (
            {"ca_file": __file__},
            ValueError,
            "ca_file is for TLS: give tls='starttls' or tls='implicit' too",
        ),
        (
            {"ssl_context": ssl.create_default_context()},
            ValueError,
            "ssl_context is for TLS: give tls='starttls' or tls='implicit' too",
        ),
    ],
)
def test_bad_release_arguments_are_named_before_anything_connects(
    smtpsink: Mailbox,
    arguments: dict[str, object],
    error: type[Exception],
    text: str,
) -> None:
    # Before: a RelayError for a network failure, and for a negative
    # timeout a socket that smtplib left open (a ResourceWarning).
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")
    call: dict[str, object] = {"host": "127.0.0.1", "port": 2525, **arguments}
    with pytest.raises(error, match=re.escape(text)):
        smtpsink.release(captured, **call)  # type: ignore[arg-type]


# -- automatic relay: settings --------------------------------------------------------


@pytest.mark.parametrize("cut", ["/", "?", "#", "?ann="])
def test_a_password_cut_by_a_url_delimiter_is_named_not_shown(cut: str) -> None:
    # Not percent-encoded, a "/", "?" or "#" ends the host part: the error
    # said the port was no number (the user's port is 2525), or listed the
    # password's tail as an unknown query key.
    url = f"smtp://ann:2525{cut}{PASSWORD}@127.0.0.1:2525"
    with pytest.raises(SettingsError) as raised:
        SinkSettings(relay=url, relay_to=".*")
    assert str(raised.value) == (
        "relay: the URL has an '@' after its host: a '/', '?' or '#' in the "
        "user name or password must be percent-encoded (%2F, %3F, %23)"
    )
    # Encoded, it is the password.
    encoded = urllib.parse.quote(f"2525{cut}{PASSWORD}", safe="")
    upstream = parse_upstream(f"smtp://ann:{encoded}@127.0.0.1:2525")
    assert upstream.password == f"2525{cut}{PASSWORD}"


@pytest.mark.parametrize("userinfo", ["ann:50%off", "ann:p%zz", "ann%:pw", "ann:pw%"])
def test_a_percent_that_starts_no_escape_is_refused_unshown(userinfo: str) -> None:
    # Taken as it was, while "50%41" would have been read "50A": whether a
    # password with a bare "%" logged in depended on what followed it.
    with pytest.raises(SettingsError) as raised:
        SinkSettings(relay=f"smtp://{userinfo}@127.0.0.1:2525", relay_to=".*")
    assert str(raised.value) == (
        "relay: the URL's user name or password has a '%' that starts no %XX "
        "escape: a '%' itself is written %25"
    )
    written = userinfo.replace("%", "%25")
    upstream = parse_upstream(f"smtp://{written}@127.0.0.1:2525")
    assert f"{upstream.username}:{upstream.password}" == userinfo


def test_a_control_character_in_the_relay_user_name_is_refused() -> None:
    with pytest.raises(SettingsError, match="user name has a control character"):
        SinkSettings(relay="smtp://ann%0D%0AMAIL:pw@127.0.0.1:2525", relay_to=".*")
    with pytest.raises(SettingsError, match="user name has a control character"):
        SinkSettings(relay="smtp://ann%C2%85:pw@127.0.0.1:2525", relay_to=".*")
    # Written as it is, urllib dropped it: "an\r\nn" logged in as "ann".
    for url in (
        "smtp://an\r\nn:pw@127.0.0.1:2525",
        "smtp://ann:p\tw@127.0.0.1:2525",
        "smtp://ann:p\x01w@127.0.0.1:2525",
    ):
        with pytest.raises(SettingsError) as raised:
            SinkSettings(relay=url, relay_to=".*")
        assert str(raised.value) == (
            "relay: the URL has a control character (urllib would drop a tab or "
            "a line break): percent-encode it where it belongs"
        )
    # In a password it is the password's (AUTH sends it in base64).
    upstream = parse_upstream("smtp://ann:p%0Aw@127.0.0.1:2525")
    assert upstream.password == "p\nw"


@pytest.mark.parametrize(
    ("changes", "setting", "text"),
    [
        ({"relay": "smtp://127.0.0.1:2525"}, "relay_to", "relay needs relay_to"),
        ({"relay_to": ".*"}, "relay_to", "only used with relay"),
        (
            {"relay": "smtp://127.0.0.1:2525", "relay_to": 123},
            "relay_to",
            "must be a regular expression string, got 123",
        ),
        ({"relay": "http://127.0.0.1", "relay_to": ".*"}, "relay", "smtp://"),
        ({"relay": "smtp://:25", "relay_to": ".*"}, "relay", "names no host"),
        # A password without a user: AUTH would never use it.
        (
            {"relay": "smtp://:s3cret@127.0.0.1:25", "relay_to": ".*"},
            "relay",
            r"^relay: the URL has a password but no user name \(",
        ),
        (
            {
                "relay": "smtps://exa mple.com:465",
                "relay_to": ".*",
                "relay_allow_remote": True,
            },
            "relay",
            "the URL's host 'exa mple.com' is no host name",
        ),
        (
            {"relay": "smtp://ann@h:99999", "relay_to": ".*"},
            "relay",
            "the URL's port must be a number from 1 to 65535, got '99999'",
        ),
        (
            {"relay": "smtp://h:99999", "relay_to": ".*"},  # or ann:<password>
            "relay",
            r"^(?!.*99999).*got something else",
        ),
        # Before: "port must be a number from 1 to 65535, got '25'".
        (
            {"relay": "smtp://localhost:2525:25", "relay_to": ".*"},
            "relay",
            r"^relay: the URL's host:port has more than one ':' \(an IPv6 "
            r"address goes in brackets: smtp://\[::1\]:2525; a user:password, "
            r"if that is one, goes before an '@'\)$",
        ),
        (
            {"relay": "smtp://[::1]:2525:25", "relay_to": ".*"},
            "relay",
            "host:port has more than one ':'",
        ),
        # urllib's bare "Invalid IPv6 URL", or a host it read past or into.
        *(
            (
                {"relay": url, "relay_to": ".*"},
                "relay",
                r"^(?!.*s3cretPW)relay: the URL's host has a '\[' or '\]' out of "
                r"place: only an IPv6 address goes in brackets, as in "
                r"smtp://\[::1\]:2525$",
            )
            for url in (
                "smtp://ann:s3cretPW@[::1",
                "smtp://ann:s3cretPW[::1]:25",
                "smtp://[::1]x:25",
                "smtp://[::1]]:25",
                "smtp://[mail.example]:25",
                "smtp://mail.example]:25",
            )
        ),
        # A password with a bracket: the error blamed the host.
        *(
            (
                {"relay": url, "relay_to": ".*"},
                "relay",
                r"^(?!.*s3cret)relay: the URL has a '\[' or '\]' in its user name "
                r"or password: there they must be percent-encoded \(%5B, %5D\)$",
            )
            for url in (
                "smtp://ann:s3cret[@127.0.0.1:25",
                "smtp://ann:s3cret[x]@127.0.0.1:25",
                "smtp://ann:s3cret]@[::1]:25",
            )
        ),
        # Answered as if it were a query ("may only carry ?cafile=PATH").
        *(
            (
                {"relay": url, "relay_to": ".*"},
                "relay",
                r"^relay: the URL has a '#' part, which an SMTP URL has no use "
                r"for \(a '#' in the user name, the password or the cafile= "
                r"path must be percent-encoded: %23\)$",
            )
            for url in ("smtp://127.0.0.1:25#s3cretPW", "smtp://127.0.0.1:25/#")
        ),
        # No "@host": the password read as the port, and was quoted.
        (
            {"relay": "smtp://ann:s3cretPW", "relay_to": ".*"},
            "relay",
            r"^(?!.*s3cretPW).*got something else \(not shown: a user:password "
            r"goes before an '@'",
        ),
        # ":" typed for "@": the message quoted the password.
        (
            {"relay": "smtp://ann:s3cretPW:mail.example:587", "relay_to": ".*"},
            "relay",
            r"^(?!.*s3cretPW).*has more than one ':'",
        ),
        (
            {"relay": "smtp://127.0.0.1:0", "relay_to": ".*"},
            "relay",
            "port must be a number from 1 to 65535, got '0'",
        ),
        # "@host" forgotten: a password of digits where the port goes.
        (
            {"relay": "smtp://ann:123456", "relay_to": ".*"},
            "relay",
            r"^(?!.*123456)relay: the URL's port must be a number from 1 to 65535, "
            "got something else",
        ),
        (
            {"relay": "smtp://ann@127.0.0.1:123456", "relay_to": ".*"},
            "relay",
            "port must be a number from 1 to 65535, got '123456'",
        ),
        (
            {"relay": "smtp://127.0.0.1:\uff12\uff15", "relay_to": ".*"},
            "relay",
            "port must be a number from 1 to 65535, got '\uff12\uff15'",
        ),
        (
            {"relay": "smtp://mail.example.com:25", "relay_to": ".*"},
            "relay",
            "relay_allow_remote=True",
        ),
        # Names that only look like loopback ones are remote too.
        (
            {"relay": "smtp://mail.example-notlocalhost:2525", "relay_to": ".*"},
            "relay",
            "relay_allow_remote=True",
        ),
        (
            {"relay": "smtp://localhost.example.com:2525", "relay_to": ".*"},
            "relay",
            "relay_allow_remote=True",
        ),
        ({"relay": "smtp://127.0.0.1:25", "relay_to": "("}, "relay_to", "regular"),
        (
            {"relay": "smtp://127.0.0.1:25", "relay_to": ".*", "relay_timeout": 0},
            "relay_timeout",
            "seconds > 0",
        ),
        ({"relay_timeout": -5}, "relay_timeout", "seconds > 0"),
        ({"relay_timeout": "abc"}, "relay_timeout", "seconds > 0"),
        # '5' alone read as a number: the type is said.
        ({"relay_timeout": "5"}, "relay_timeout", "> 0, got the str '5'$"),
        ({"idle_timeout": "5"}, "idle_timeout", "> 0, got the str '5'$"),
        ({"idle_timeout": True}, "idle_timeout", "> 0, got the bool True$"),
        # The password would cross the network unencrypted.
        (
            {
                "relay": f"smtp://ann:{PASSWORD}@mail.example.com:25",
                "relay_to": ".*",
                "relay_allow_remote": True,
            },
            "relay",
            r"^relay: credentials need smtp\+starttls:// or smtps:// for a host off "
            r"loopback \(mail\.example\.com\): smtp:// would send the password "
            "unencrypted$",
        ),
        (
            {"relay": "smtp://127.0.0.1:25?cafile=/x", "relay_to": ".*"},
            "relay",
            "cafile= is for",
        ),
        (
            {"relay": "smtps://127.0.0.1:465?cafile=/nonexistent", "relay_to": ".*"},
            "relay",
            "its cafile= '/nonexistent' is not a file",
        ),
        # Before: accepted, and nothing relayed (relay_to alone was refused).
        ({"relay_timeout": 5}, "relay_timeout", "is only used with relay=URL"),
        ({"relay_allow_remote": True}, "relay_allow_remote", "is only used with"),
        # Before: accepted, and every message failed to relay as a bug of
        # the relay's, with a traceback in the log.
        (
            {"relay": f"smtps://127.0.0.1:465?cafile={__file__}", "relay_to": ".*"},
            "relay",
            "holds no PEM certificate",
        ),
    ],
)
def test_bad_relay_settings_name_the_setting(
    changes: dict[str, object], setting: str, text: str
) -> None:
    with pytest.raises(SettingsError, match=text) as raised:
        SinkSettings(**changes)  # type: ignore[arg-type]
    assert raised.value.setting == setting


def test_a_plus_in_the_cafile_path_is_a_plus(
    smtpsink_factory: Factory, tmp_path: Path
) -> None:
    # Read as a form's query, "c++/ca.pem" was "c  /ca.pem": "not a file".
    upstream = smtpsink_factory(hostname="upstream.test", tls="starttls")
    directory = tmp_path / "c++"
    directory.mkdir()
    ca = directory / "ca.pem"
    ca.write_bytes(Path(upstream.ca_path).read_bytes())
    relayer = smtpsink_factory(
        relay=f"smtp+starttls://127.0.0.1:{upstream.port}?cafile={ca}", relay_to=".*"
    )
    message = capture(relayer, b"Subject: plus\r\n\r\nx\r\n")
    wait_relayed(relayer, message)
    assert relay_of(message).status == "relayed"


def test_a_damaged_ca_file_is_named_with_what_is_wrong(tmp_path: Path) -> None:
    # OpenSSL refuses these with "PEM lib" and no reason: the error said
    # "holds no PEM certificate" of a file that holds one, damaged.
    import trustme

    good = trustme.CA().cert_pem.bytes()
    damaged = b"-----BEGIN CERTIFICATE-----\nMIIBroken\n-----END CERTIFICATE-----\n"
    damaged_at = "holds a PEM certificate that cannot be read: certificate {}"
    files = {
        "damaged.pem": (damaged, damaged_at.format("1 of 1")),
        "second.pem": (good + damaged, damaged_at.format("2 of 2")),
        "cut.pem": (
            good[: len(good) // 2],
            "holds a PEM certificate with no END CERTIFICATE line (cut off?)",
        ),
    }
    for name, (content, reason) in files.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(SettingsError) as raised:
            SinkSettings(relay=f"smtps://127.0.0.1:465?cafile={path}", relay_to=".*")
        assert f"{str(path)!r} {reason}" in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        "smtp+starttls://mail.example.com:587",
        f"smtp+starttls://ann:{PASSWORD}@mail.example.com:587",
        f"smtps://ann:{PASSWORD}@mail.example.com:465",
    ],
)
def test_remote_relay_is_allowed_when_asked_for(url: str) -> None:
    settings = SinkSettings(
        relay=url, relay_to=r".*@example\.com", relay_allow_remote=True
    )
    assert settings.relay_allow_remote


def test_relay_credentials_in_the_clear_are_allowed_on_loopback() -> None:
    # A test's upstream sink: the password stays on this machine.
    settings = SinkSettings(relay=f"smtp://ann:{PASSWORD}@127.0.0.1:25", relay_to=".*")
    assert settings.relay is not None


def test_relay_password_never_shows() -> None:
    settings = SinkSettings(
        relay=f"smtps://ann:{PASSWORD}@127.0.0.1:465", relay_to=".*"
    )
    for text in (repr(settings), settings.describe()):
        assert PASSWORD not in text
        assert "smtps://ann@127.0.0.1:465" in text
    with pytest.raises(SettingsError) as raised:
        SinkSettings(relay=f"smtp://ann:{PASSWORD}@mail.example.com", relay_to=".*")
    assert PASSWORD not in str(raised.value)


def test_a_relay_user_without_a_password_needs_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SMTPSINK_RELAY_PASSWORD", raising=False)
    with pytest.raises(SettingsError) as raised:
        SinkSettings(relay="smtp://ann@127.0.0.1:2525", relay_to=".*")
    assert str(raised.value) == (
        "relay: the URL names the user 'ann' but no password: write it in the "
        "URL (smtp://user:password@host) or, to keep it off command lines, set "
        "SMTPSINK_RELAY_PASSWORD"
    )
    # An empty password in the URL is a password, as curl reads it: the
    # variable is not read.
    monkeypatch.setenv("SMTPSINK_RELAY_PASSWORD", PASSWORD)
    assert parse_upstream("smtp://ann:@127.0.0.1:2525").password == ""


def test_a_relay_password_that_is_no_text_is_refused_naming_its_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A byte that is not UTF-8 in the variable comes as a lone surrogate:
    # before, making the sink's masks raised UnicodeEncodeError.
    monkeypatch.setenv("SMTPSINK_RELAY_PASSWORD", "p\udcffw")
    with pytest.raises(SettingsError) as raised:
        SinkSettings(relay="smtp://ann@127.0.0.1:2525", relay_to=".*")
    assert str(raised.value) == (
        "relay: the relay's password (from SMTPSINK_RELAY_PASSWORD) is not valid "
        "Unicode text (a lone surrogate, such as os.environ gives for a byte "
        "that is not UTF-8)"
    )
    with pytest.raises(SettingsError, match="password \\(in the URL\\) is not valid"):
        SinkSettings(relay="smtp://ann:p\udcffw@127.0.0.1:2525", relay_to=".*")
    with pytest.raises(SettingsError, match="user name is not valid Unicode"):
        SinkSettings(relay="smtp://\udcffann:pw@127.0.0.1:2525", relay_to=".*")


def test_a_relay_password_from_the_environment_logs_in_and_never_shows(
    smtpsink_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTPSINK_RELAY_PASSWORD", PASSWORD)
    upstream = smtpsink_factory(
        auth={"ann@example.com": PASSWORD}, auth_required=True, auth_plaintext=True
    )
    sink = smtpsink_factory(
        relay=f"smtp://ann%40example.com@127.0.0.1:{upstream.port}", relay_to=".*"
    )
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("app@example.com", ["bob@example.com"], b"Subject: 1\r\n\r\n")
    message = sink.wait_for()
    wait_relayed(sink, message)
    assert message.relay is not None
    assert message.relay.status == "relayed", message.relay
    assert upstream.wait_for().envelope.rcpt_to == ("bob@example.com",)
    (session,) = upstream.sessions
    assert session.authenticated_as == "ann@example.com"
    assert message.relay.delivery is not None
    shown = "\n".join(
        [repr(message.relay), *map(str, message.relay.delivery.transcript)]
    )
    assert f"smtp://ann%40example.com@127.0.0.1:{upstream.port}" in shown
    assert PASSWORD not in shown


def test_a_relay_password_from_the_environment_is_masked_where_a_client_sends_it(
    smtpsink_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Written in the URL, the password was masked in every recorded line;
    # from the environment (the safer way, the docs say) it was not.
    monkeypatch.setenv("SMTPSINK_RELAY_PASSWORD", PASSWORD)
    sink = smtpsink_factory(relay="smtp://ann@127.0.0.1:9", relay_to="nobody@x")
    with smtplib.SMTP(sink.host, sink.port) as client:
        assert client.docmd("XPW", PASSWORD)[0] == 500
    sink.wait_until(lambda: sink.sessions[-1].end is not None)
    (session,) = sink.sessions
    assert "C: XPW ****" in session.format_transcript()
    assert PASSWORD not in session.format_transcript() + repr(session)


# -- automatic relay: behaviour ----------------------------------------------------------


def relaying(factory: Factory, upstream: Mailbox, **settings: object) -> Mailbox:
    return factory(
        relay=f"smtp://127.0.0.1:{upstream.port}",
        relay_to=settings.pop("relay_to", r".*@partner\.example"),
        **settings,
    )


def test_matching_recipients_are_relayed_the_others_are_not(
    smtpsink_factory: Factory,
) -> None:
    upstream = smtpsink_factory(hostname="upstream.test")
    sink = relaying(smtpsink_factory, upstream)
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("app@example.com", ["ann@other.example"], b"Subject: 1\r\n\r\n")
        client.sendmail(
            "app@example.com",
            ["bob@partner.example", "ann@other.example", "CAT@PARTNER.EXAMPLE"],
            b"Subject: 2\r\n\r\nbody\r\n",
        )
    first, second = sink.wait_for(2)
    wait_relayed(sink, second)

    assert first.relay is not None
    assert first.relay.status == "not-matched"
    assert second.relay is not None
    assert second.relay.status == "relayed"
    assert second.relay.code == 250
    assert second.relay.recipients == ("bob@partner.example", "CAT@PARTNER.EXAMPLE")
    relayed = upstream.wait_for()
    assert relayed.envelope.rcpt_to == ("bob@partner.example", "CAT@PARTNER.EXAMPLE")
    assert relayed.raw.endswith(second.raw)
    assert relayed.header("Received") is not None
    assert "relayed by smtp://127.0.0.1:" in second.summary()
    assert "not relayed (no recipient matches relay_to)" in first.summary()
    # The relay is FIFO: the unmatched first message was never sent.
    assert len(upstream.messages) == 1


@pytest.mark.parametrize(
    ("relay_to", "advice"),
    [
        # Not ".*partner\.example", which lets in evilpartner.example.
        (r"partner\.example", r'".*@partner\.example" would'),
        ("bob@", '"bob@.*" would'),
        ("@partner", r'".*@partner\.example" would'),
        ("bob@partner", r'"bob@partner\.example" would'),
        # An inline flag stays in front: ".*(?i)..." raised on the SMTP
        # path, and the client's DATA was refused with Python's error.
        (r"(?i)partner\.example", r'"(?i).*@partner\.example" would'),
        ("partner|other", r'".*@(?:partner|other)\.example" would'),
    ],
)
def test_a_relay_to_found_in_an_address_but_not_matching_it_says_so(
    smtpsink_factory: Factory, relay_to: str, advice: str
) -> None:
    # "not relayed (no recipient matches relay_to)", and nothing said that
    # it is matched in full: a domain's pattern alone never matches.
    upstream = smtpsink_factory(hostname="upstream.test")
    sink = smtpsink_factory(
        relay=f"smtp://127.0.0.1:{upstream.port}", relay_to=relay_to
    )
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail(
            "app@example.com", ["bob@partner.example"], b"Subject: 1\r\n\r\n"
        )
    message = sink.wait_for()
    assert str(message.relay) == (
        f'not relayed (no recipient matches relay_to): relay_to "{relay_to}" is '
        f"found in bob@partner.example but must match the whole address: {advice}"
    )
    # The advice relays this recipient, and no other domain's.
    advised = re.compile(advice.removesuffix(" would").strip('"'), re.IGNORECASE)
    assert advised.fullmatch("bob@partner.example")
    for other in ("mallory@evilpartner.example", "mallory@sub.notpartner.example"):
        assert not advised.fullmatch(other), other


@pytest.mark.parametrize(
    ("recipient", "why"),
    [
        # The allowlist names a whole domain, and this one goes on past it:
        # "add .*" let the look-alike in.
        (
            "bob@partner.example.evil",
            "but its domain goes on past the match (partner.example.evil): "
            "another domain, not relayed",
        ),
        (
            "bob@partner.example.com",
            "but its domain goes on past the match (partner.example.com): "
            "another domain, not relayed",
        ),
    ],
)
def test_a_look_alike_domain_is_not_advised_into_the_allowlist(
    smtpsink_factory: Factory, recipient: str, why: str
) -> None:
    upstream = smtpsink_factory(hostname="upstream.test")
    sink = smtpsink_factory(
        relay=f"smtp://127.0.0.1:{upstream.port}", relay_to=r".*@partner\.example"
    )
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("app@example.com", [recipient], b"Subject: 1\r\n\r\n")
    assert str(sink.wait_for().relay) == (
        'not relayed (no recipient matches relay_to): relay_to ".*@partner\\.example" '
        f"is found in {recipient}, {why}"
    )


@pytest.mark.parametrize(
    ("relay_to", "domain", "pattern"),
    [
        (r"partner\.example", "evilpartner.example", r'".*@evilpartner\.example"'),
        (
            r"(?i)partner\.example",
            "evilpartner.example",
            r'"(?i).*@evilpartner\.example"',
        ),
        # A pattern cut short reads the same way: that domain's pattern last.
        (r"artner\.example", "partner.example", r'".*@partner\.example"'),
    ],
)
def test_a_domain_found_inside_a_label_is_another_domain(
    smtpsink_factory: Factory, relay_to: str, domain: str, pattern: str
) -> None:
    # The hint advised ".*@evilpartner\.example", the look-alike the docs
    # warn of, as the pattern that "would" match, without a word of it.
    upstream = smtpsink_factory(hostname="upstream.test")
    sink = smtpsink_factory(
        relay=f"smtp://127.0.0.1:{upstream.port}", relay_to=relay_to
    )
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("app@example.com", [f"bob@{domain}"], b"Subject: 1\r\n\r\n")
    assert str(sink.wait_for().relay) == (
        f'not relayed (no recipient matches relay_to): relay_to "{relay_to}" is '
        f"found in bob@{domain}, but its domain starts before the match "
        f"({domain}): another domain, not relayed; if {domain} is meant, "
        f"{pattern} would"
    )


def test_a_compiled_relay_to_is_told_to_give_its_pattern() -> None:
    with pytest.raises(
        SettingsError, match=r"give its pattern: relay_to=pattern\.pattern"
    ):
        SinkSettings(relay="smtp://127.0.0.1:2525", relay_to=re.compile(".*"))  # type: ignore[arg-type]


def test_the_relays_received_header_names_only_a_recipient_it_relays_to(
    smtpsink_factory: Factory,
) -> None:
    # Relayed to ann alone, the copy's Received header named no recipient
    # (the captured envelope had two); it names the one the copy goes to,
    # never the Bcc recipient relay_to left out.
    upstream = smtpsink_factory(hostname="upstream.test")
    sink = relaying(smtpsink_factory, upstream)
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail(
            "app@example.com",
            ["bcc@corp.example", "ann@partner.example"],
            b"Subject: 1\r\n\r\nx\r\n",
        )
    received = upstream.wait_for().header("Received")
    assert received is not None
    assert " for <ann@partner.example>;" in " ".join(received.split())


def test_relay_to_matches_either_spelling_of_a_domain(
    smtpsink_factory: Factory,
) -> None:
    # Mailboxes take ann@xn--strae-oqa.example and ann@straße.example for
    # one; relay_to matched only the spelling the application sent.
    upstream = smtpsink_factory(hostname="upstream.test")
    sink = relaying(
        smtpsink_factory,
        upstream,
        relay_to=r".*@straße\.example|.*@xn--bcher-kva\.example",
    )
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("app@example.com", ["ann@xn--strae-oqa.example"], b"\r\nA\r\n")
        client.sendmail(
            "app@example.com",
            ["bob@bücher.example"],
            b"\r\nB\r\n",
            mail_options=["SMTPUTF8"],
        )
        client.sendmail("app@example.com", ["cat@strasse.example"], b"\r\nC\r\n")
    first, second, third = sink.wait_for(3)
    wait_relayed(sink, first)
    wait_relayed(sink, second)
    assert first.relay is not None
    assert first.relay.status == "relayed"
    assert first.relay.recipients == ("ann@xn--strae-oqa.example",)
    assert second.relay is not None
    assert second.relay.status == "relayed"
    assert second.relay.recipients == ("bob@bücher.example",)
    # Not IDNA 2003's spelling (ß as ss): another domain.
    assert third.relay is not None
    assert third.relay.status == "not-matched"
    assert [m.envelope.rcpt_to for m in upstream.wait_for(2)] == [
        ("ann@xn--strae-oqa.example",),
        ("bob@bücher.example",),
    ]


def test_a_refusing_upstream_keeps_the_captured_copy(
    smtpsink_factory: Factory,
) -> None:
    upstream = smtpsink_factory(hostname="upstream.test")
    upstream.fail("RCPT", 550, "5.1.1 unknown user")
    sink = relaying(smtpsink_factory, upstream)
    with smtplib.SMTP(sink.host, sink.port) as client:
        assert (
            client.sendmail(
                "app@example.com", ["bob@partner.example"], b"Subject: x\r\n\r\n"
            )
            == {}
        )
    message = sink.wait_for()
    wait_relayed(sink, message)

    assert message.relay is not None
    assert message.relay.status == "refused"
    assert (message.relay.code, message.relay.reply) == (550, "5.1.1 unknown user")
    assert "refused by smtp://127.0.0.1:" in message.summary()
    assert sink.messages == [message]


def send_burst(sink: Mailbox, recipients: list[str]) -> list[Message]:
    """One connection, one message per recipient, numbered in the subject."""
    with smtplib.SMTP(sink.host, sink.port) as client:
        for n, rcpt in enumerate(recipients):
            client.sendmail(
                "app@example.com", [rcpt], f"Subject: {n}\r\n\r\nbody {n}\r\n"
            )
    messages = sink.wait_for(len(recipients))
    for message in messages:
        wait_relayed(sink, message)
    return list(messages)


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_burst_is_relayed_in_order_on_one_connection(
    smtpsink_factory: Factory, pipelining: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Kept however long this thread pauses between two messages.
    monkeypatch.setattr(_relay, "_LINGER", 60.0)
    upstream = smtpsink_factory(hostname="upstream.test")
    if not pipelining:
        upstream.hide("PIPELINING")  # the relay then waits for every reply
    # The first message waits at DATA: the others queue up behind it, and
    # go out pipelined after it.
    upstream.delay("DATA", 0.5, times=1)
    sink = relaying(smtpsink_factory, upstream)

    messages = send_burst(sink, [f"u{n}@partner.example" for n in range(8)])

    assert [relay_of(m).status for m in messages] == ["relayed"] * 8
    relayed = upstream.wait_for(8)
    assert [m.envelope.rcpt_to for m in relayed] == [
        (f"u{n}@partner.example",) for n in range(8)
    ]
    assert all(r.raw.endswith(m.raw) for r, m in zip(relayed, messages, strict=True))
    assert len({id(m.session) for m in relayed}) == 1  # one connection
    # Each outcome holds its own transaction (after the greeting and EHLO,
    # for the first on a connection), never the ones before it.
    for n, message in enumerate(messages):
        transcript = relay_of(message).delivery.transcript  # type: ignore[union-attr]
        commands = [e.line.upper() for e in transcript if e.kind == "command"]
        assert commands[-3:] == [
            f"MAIL FROM:<APP@EXAMPLE.COM> SIZE={len(relayed[n].raw)}",
            f"RCPT TO:<U{n}@PARTNER.EXAMPLE>",
            "DATA",
        ]
        assert all(c.startswith("EHLO ") for c in commands[:-3])
        assert transcript[-1].line.startswith("<message content: ")
        assert transcript[-1].replies[0].startswith("250 ")


@pytest.mark.parametrize("pipelining", [True, False])
def test_refusals_in_a_burst_touch_only_their_message(
    smtpsink_factory: Factory, pipelining: bool
) -> None:
    upstream = smtpsink_factory(hostname=f"refusing-{pipelining}.test")
    if not pipelining:
        upstream.hide("PIPELINING")
    upstream.delay("DATA", 0.5, times=1)
    upstream.fail("MAIL", 451, "4.3.0 try later", times=1)
    upstream.fail("RCPT", 550, "5.1.1 unknown user", match="gone@partner.example")
    upstream.fail("EOD", 554, "5.7.1 spam", every=3)
    sink = relaying(smtpsink_factory, upstream)

    rcpts = [f"u{n}@partner.example" for n in range(7)]
    rcpts[4] = "gone@partner.example"
    messages = send_burst(sink, rcpts)

    assert [(relay_of(m).status, relay_of(m).code) for m in messages] == [
        ("refused", 451),  # MAIL, the first time
        ("relayed", 250),
        ("relayed", 250),
        ("refused", 554),  # the third end of data
        ("refused", 550),  # its only recipient refused: no content sent
        ("relayed", 250),
        ("relayed", 250),
    ]
    assert relay_of(messages[3]).reply == "5.7.1 spam"
    # A refusal's transcript is its own transaction, not the connection's.
    for n in (3, 4):
        error = relay_of(messages[n]).error
        assert error is not None
        mails = [e.line for e in error.transcript if e.line.upper().startswith("MAIL")]
        assert len(mails) == 1, error.transcript
        assert f"u{n}@" in str(error) or "gone@" in str(error)
    assert [m.envelope.rcpt_to[0] for m in upstream.wait_for(4)] == [
        "u1@partner.example",
        "u2@partner.example",
        "u5@partner.example",
        "u6@partner.example",
    ]
    assert len(upstream.messages) == 4


def test_an_upstream_closing_after_a_reply_gets_the_rest_on_a_new_connection(
    smtpsink_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Kept however long this thread pauses between two messages.
    monkeypatch.setattr(_relay, "_LINGER", 60.0)
    upstream = smtpsink_factory(hostname="upstream.test")
    upstream.delay("DATA", 0.5, times=1)
    upstream.fail("EOD", 421, "4.3.2 shutting down", times=1)
    sink = relaying(smtpsink_factory, upstream)

    messages = send_burst(sink, [f"u{n}@partner.example" for n in range(5)])

    assert [relay_of(m).status for m in messages] == ["refused"] + ["relayed"] * 4
    assert relay_of(messages[0]).code == 421
    relayed = upstream.wait_for(4)
    assert [m.envelope.rcpt_to[0] for m in relayed] == [
        f"u{n}@partner.example" for n in range(1, 5)
    ]
    assert len({id(m.session) for m in relayed}) == 1  # a new connection


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_bug_in_the_relay_fails_its_message_and_the_rest_are_relayed(
    smtpsink_factory: Factory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    pipelining: bool,
) -> None:
    """A bug (an exception no upstream causes) in any step of the relay
    thread fails the message it was on, saying so, and masks the password;
    the thread goes on with the next message instead of dying and leaving
    every later message pending."""
    upstream = smtpsink_factory(
        hostname=f"upstream-{pipelining}.test",  # not the other case's sink
        auth={"ann": PASSWORD},
        auth_required=True,
        auth_plaintext=True,
    )
    if not pipelining:
        upstream.hide("PIPELINING")
    # A step of each way through the thread: the final reply of a
    # pipelined message is read apart from its commands' replies.
    step = "read_final_reply" if pipelining else "send"
    connection_class = _relay._Connection
    original = getattr(connection_class, step)
    calls: list[object] = []

    def broken_once(self: object, *args: object, **kwargs: object) -> object:
        calls.append(self)
        if len(calls) == 1:
            raise RuntimeError(f"a bug near {PASSWORD}")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(connection_class, step, broken_once)
    sink = smtpsink_factory(
        relay=f"smtp://ann:{PASSWORD}@127.0.0.1:{upstream.port}", relay_to=".*"
    )

    first = capture(sink, b"Subject: 1\r\n\r\n", ["ann@partner.example"])
    wait_relayed(sink, first)
    capture(sink, b"Subject: 2\r\n\r\n", ["bob@partner.example"])
    second = sink.wait_for(2)[1]
    wait_relayed(sink, second)

    assert (relay_of(first).status, relay_of(first).reply) == (
        "failed",
        "the relay failed: RuntimeError('a bug near ****')",
    )
    assert relay_of(second).status == "relayed", relay_of(second)
    assert upstream.wait_for().envelope.rcpt_to == ("bob@partner.example",)
    assert "please report this bug in pytest-smtpsink" in caplog.text
    assert "RuntimeError: a bug near ****" in caplog.text
    assert PASSWORD not in caplog.text + repr(relay_of(first)) + first.summary()


def test_a_dead_upstream_fails_the_relay_not_the_client(
    smtpsink_factory: Factory, refusing_port: int
) -> None:
    sink = smtpsink_factory(
        relay=f"smtp://127.0.0.1:{refusing_port}", relay_to=".*", relay_timeout=5
    )
    with smtplib.SMTP(sink.host, sink.port) as client:
        assert client.sendmail("a@example.com", ["b@example.com"], b"\r\n") == {}
    message = sink.wait_for()
    wait_relayed(sink, message)

    assert message.relay is not None
    assert message.relay.status == "failed"
    assert message.relay.code is None
    assert "ConnectionRefusedError" in message.relay.reply


def test_a_hanging_upstream_never_holds_the_client(
    smtpsink_factory: Factory,
) -> None:
    upstream = smtpsink_factory(hostname="upstream.test")
    upstream.hang("CONNECT")  # accepts, never greets, until the rule goes
    sink = relaying(smtpsink_factory, upstream, relay_to=".*", relay_timeout=60)
    with smtplib.SMTP(sink.host, sink.port) as client:
        assert client.sendmail("a@example.com", ["b@example.com"], b"\r\n") == {}
        assert client.sendmail("a@example.com", ["c@example.com"], b"\r\n") == {}
    first, second = sink.wait_for(2)

    def relay_is_held() -> bool:  # the upstream's hang holds the relay's connection
        transcript = upstream.sessions[0].transcript
        return bool(transcript) and transcript[0].injected

    upstream.wait_until(relay_is_held)
    # Both transactions are over while the relay still waits for a greeting.
    assert first.relay is not None
    assert first.relay.status == "pending"
    assert second.relay is not None
    assert second.relay.status == "pending"

    upstream.clear_faults()  # the upstream drops the held connection
    wait_relayed(sink, second)
    outcome = relay_of(first)
    assert outcome.status == "failed"
    assert outcome.code is None
    assert relay_of(second).status == "relayed"


def test_an_upstream_that_never_answers_times_out(
    smtpsink_factory: Factory,
) -> None:
    upstream = smtpsink_factory(hostname="upstream.test")
    upstream.hang("MAIL")
    sink = relaying(smtpsink_factory, upstream, relay_to=".*", relay_timeout=1)
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], b"\r\n")
    message = sink.wait_for()
    wait_relayed(sink, message)

    assert message.relay is not None
    assert message.relay.status == "failed"
    assert "timed out" in message.relay.reply
    assert message.relay.error is not None
    assert "timed out" in str(message.relay.error)


def test_an_upstream_that_answers_starttls_and_starts_no_handshake_says_so(
    smtpsink: Mailbox,
) -> None:
    # The 220 came; the TLS handshake never finished: it read "no reply".
    server = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        connection, _ = server.accept()
        with connection, connection.makefile("rb") as lines:
            connection.sendall(b"220 raw.test ESMTP\r\n")
            lines.readline()  # EHLO
            connection.sendall(b"250-raw.test\r\n250 STARTTLS\r\n")
            lines.readline()  # STARTTLS
            connection.sendall(b"220 go ahead\r\n")
            done.wait(30)  # and no handshake

    thread = threading.Thread(target=serve)
    thread.start()
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], b"\r\n")
    captured = smtpsink.wait_for()
    try:
        with pytest.raises(RelayError) as raised:
            smtpsink.release(
                captured,
                "127.0.0.1",
                server.getsockname()[1],
                tls="starttls",
                ssl_context=ssl.create_default_context(),
                timeout=1,
            )
    finally:
        done.set()
        thread.join()
        server.close()
    assert (raised.value.stage, raised.value.reply) == (
        "STARTTLS",
        "timed out: the TLS handshake did not finish within 1 s (no answer to the "
        "TLS hello)",
    )


def test_stopping_a_sink_fails_what_is_still_queued() -> None:
    with SMTPSink() as upstream:
        upstream.hang("CONNECT")
        sink = SMTPSink(
            relay=f"smtp://127.0.0.1:{upstream.port}", relay_to=".*", relay_timeout=0.5
        )
        with sink:
            with smtplib.SMTP(sink.host, sink.port) as client:
                for n in range(3):
                    client.sendmail("a@example.com", ["b@example.com"], f"{n}\r\n")
            messages = sink.wait_for(3)
        assert all(m.relay is not None and m.relay.done for m in messages)
        statuses = [m.relay.status for m in messages if m.relay is not None]
        assert set(statuses) == {"failed"}
        assert len(sink.messages) == 3
        upstream.clear_faults()


def test_relay_outcome_is_in_the_failure_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import smtplib

        def test_x(smtpsink_factory):
            upstream = smtpsink_factory(hostname="upstream.test")
            sink = smtpsink_factory(
                relay=f"smtp://127.0.0.1:{upstream.port}", relay_to=".*"
            )
            with smtplib.SMTP(sink.host, sink.port) as client:
                client.sendmail("a@example.com", ["b@example.com"], "Subject: s\\r\\n\\r\\n")
            message = sink.wait_for()
            sink.wait_until(lambda: message.relay.done)
            sink.assert_sent(subject="other")
        """
    )
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*#1 * a@example.com -> b@example.com | * | relayed by smtp://127.0.0.1:*: 250 *",
        ]
    )


def test_a_timeout_while_the_teardown_waits_for_relays_lets_the_teardown_run(
    pytester: pytest.Pytester,
) -> None:
    # pytest-timeout fails a test from a signal handler wherever its time
    # runs out: in the plugin's wait for pending relays, before pytest's own
    # teardown, it skipped that teardown, and the next test failed at setup
    # ("previous item was not torn down properly"). The failure comes here
    # from the wait itself, as the signal would, at a moment of its own.
    pytester.makepyfile(
        """
        import smtplib
        import pytest

        def test_first(smtpsink_factory):
            upstream = smtpsink_factory(hostname="upstream.test")
            upstream.hang("DATA")
            sink = smtpsink_factory(
                relay=f"smtp://127.0.0.1:{upstream.port}", relay_to=".*"
            )
            with smtplib.SMTP(sink.host, sink.port) as client:
                client.sendmail("a@example.com", ["b@example.com"], "Subject: s\\r\\n\\r\\n")
            sink.wait_for()

            def out_of_time(*args, **kwargs):
                pytest.fail("Timeout (>1.0s) from pytest-timeout.")

            sink.wait_until = out_of_time  # what the teardown waits with

        def test_next(smtpsink):
            smtpsink.assert_nothing_sent()
        """
    )
    result = pytester.runpytest("-p", "no:xdist", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_first*", "E * Failed: Timeout (>1.0s)*"]
    )
    result.stdout.no_fnmatch_line("*torn down*")


def test_ctrl_c_while_the_teardown_waits_for_relays_stops_the_run(
    pytester: pytest.Pytester,
) -> None:
    # Raised after pytest's teardown, the interrupt was lost when a
    # fixture's teardown failed too (its error took the place): the run
    # went on to the next test.
    pytester.makepyfile(
        """
        import smtplib
        import pytest

        @pytest.fixture
        def broken():
            yield
            raise RuntimeError("a fixture's teardown failed too")

        def test_first(broken, smtpsink_factory):
            upstream = smtpsink_factory(hostname="upstream.test")
            upstream.hang("DATA")
            sink = smtpsink_factory(
                relay=f"smtp://127.0.0.1:{upstream.port}", relay_to=".*"
            )
            with smtplib.SMTP(sink.host, sink.port) as client:
                client.sendmail("a@example.com", ["b@example.com"], "Subject: s\\r\\n\\r\\n")
            sink.wait_for()

            def interrupted(*args, **kwargs):
                raise KeyboardInterrupt

            sink.wait_until = interrupted  # what the teardown waits with

        def test_next():
            pass
        """
    )
    # In a process of its own: in this one, the interrupt would stop this run.
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*KeyboardInterrupt*"])
    result.stdout.no_fnmatch_line("*test_next*PASSED*")
    result.assert_outcomes(passed=1)  # the first's call; the next never ran


def test_each_test_relays_on_a_connection_of_its_own(
    pytester: pytest.Pytester,
) -> None:
    """The same settings give each test the same (pooled) sinks; the relay
    connection a test opened is not used for the next test's mail, which
    then has its upstream session in its own view, EHLO and all."""
    pytester.makepyfile(
        """
        import smtplib
        import pytest

        @pytest.mark.parametrize("hide", [False, True])
        def test_relay(smtpsink_factory, hide):
            upstream = smtpsink_factory(hostname="upstream.test")
            if hide:
                upstream.hide("PIPELINING")
            sink = smtpsink_factory(
                relay=f"smtp://127.0.0.1:{upstream.port}", relay_to=".*"
            )
            with smtplib.SMTP(sink.host, sink.port) as client:
                client.sendmail("a@example.com", ["b@example.com"], "Subject: s\\r\\n\\r\\n")
            message = sink.wait_for()
            sink.wait_until(lambda: message.relay.done)
            assert message.relay.status == "relayed"
            (session,) = upstream.sessions
            assert session.messages == (upstream.wait_for(),)
            ehlo = session.transcript[1]
            assert ehlo.line.upper().startswith("EHLO ")
            assert ("250-PIPELINING" in ehlo.replies) is not hide
        """
    )
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(passed=2)


def relay_threads() -> list[str]:
    import threading

    return [
        t.name for t in threading.enumerate() if t.name.startswith("smtpsink-relay")
    ]


def test_no_relay_thread_outlives_its_sink() -> None:
    before = relay_threads()
    with SMTPSink() as upstream:
        sink = SMTPSink(relay=f"smtp://127.0.0.1:{upstream.port}", relay_to=".*")
        with sink:
            assert len(relay_threads()) == len(before) + 1
            # A second sink on the same port cannot start, and leaves no thread.
            busy = SMTPSink(
                port=sink.port, relay=f"smtp://127.0.0.1:{upstream.port}", relay_to=".*"
            )
            with pytest.raises(SinkError):
                busy.start()
            assert len(relay_threads()) == len(before) + 1
    assert relay_threads() == before


def test_smtputf8_mail_is_released_as_smtputf8(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    upstream = smtpsink_factory(hostname="upstream.test")
    raw = "Subject: café\r\n\r\nDéjà vu.\r\n".encode()
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            "zoë@exämple.com", ["jürgen@exämple.de"], raw, mail_options=["SMTPUTF8"]
        )
    captured = smtpsink.wait_for()

    smtpsink.release(captured, upstream.host, upstream.port, received=False)

    relayed = upstream.wait_for()
    assert relayed.envelope.smtputf8
    assert relayed.envelope.mail_from == "zoë@exämple.com"
    assert relayed.envelope.rcpt_to == ("jürgen@exämple.de",)
    assert relayed.raw == raw


@pytest.mark.parametrize("upstream_smtputf8", [True, False])
def test_smtputf8_mail_is_relayed_as_smtputf8(
    smtpsink_factory: Factory, upstream_smtputf8: bool
) -> None:
    # A sink of its own: no relay connection made before the hide.
    upstream = smtpsink_factory(hostname=f"utf8-{upstream_smtputf8}.test")
    if not upstream_smtputf8:
        upstream.hide("SMTPUTF8")
    sink = relaying(smtpsink_factory, upstream, relay_to=".*")
    raw = "Subject: café\r\n\r\nDéjà vu.\r\n".encode()
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail(
            "zoë@exämple.com", ["jürgen@exämple.de"], raw, mail_options=["SMTPUTF8"]
        )
        client.sendmail("app@example.com", ["ann@example.com"], b"Subject: 2\r\n\r\n")
    captured, plain = sink.wait_for(2)
    wait_relayed(sink, plain)

    if upstream_smtputf8:
        assert relay_of(captured).status == "relayed"
        relayed = upstream.wait_for(2)[0]
        assert relayed.envelope.smtputf8
        assert relayed.envelope.mail_from == "zoë@exämple.com"
        assert relayed.envelope.rcpt_to == ("jürgen@exämple.de",)
        assert relayed.raw.endswith(raw)
    else:  # it cannot go: said so, and the next message still goes
        assert relay_of(captured).status == "failed"
        assert relay_of(captured).reply == (
            "the upstream does not offer SMTPUTF8, which the message needs: "
            "its envelope has the address zoë@exämple.com"
        )
        assert upstream.wait_for().envelope.rcpt_to == ("ann@example.com",)
    assert relay_of(plain).status == "relayed"


def test_relay_options_of_the_pytest_plugin(pytester: pytest.Pytester) -> None:
    with SMTPSink(hostname="upstream.test") as upstream:
        pytester.makepyfile(
            """
            import smtplib

            def test_send(smtpsink):
                with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
                    client.sendmail("a@example.com", ["b@partner.example"], "Subject: s\\r\\n\\r\\n")
                message = smtpsink.wait_for()
                smtpsink.wait_until(lambda: message.relay.done)
                assert message.relay.status == "relayed"
            """
        )
        result = pytester.runpytest(
            "-p",
            "no:xdist",
            f"--smtpsink-relay=smtp://127.0.0.1:{upstream.port}",
            r"--smtpsink-relay-to=.*@partner\.example",
        )
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines(
            [
                f"smtpsink: relaying to smtp://127.0.0.1:{upstream.port} the "
                r"recipients matching .*@partner\.example"
            ]
        )
        assert upstream.wait_for().envelope.rcpt_to == ("b@partner.example",)


def test_relay_none_keeps_a_sink_out_of_the_runs_relay(
    pytester: pytest.Pytester,
) -> None:
    # relay=None failed with "relay_to: is only used with relay=URL", a
    # relay_to the test never gave (it came from --smtpsink-relay-to).
    pytester.makepyfile(
        """
        import pytest

        def test_factory(smtpsink_factory):
            settings = smtpsink_factory(relay=None, hostname="upstream.test").settings
            assert (settings.relay, settings.relay_to) == (None, None)
            assert (settings.relay_allow_remote, settings.relay_timeout) == (False, 10)

        @pytest.mark.smtpsink(relay=None)
        def test_marker(smtpsink):
            assert smtpsink.settings.relay_to is None

        def test_relay_to_alone_is_still_an_error(smtpsink_factory):
            smtpsink_factory(relay=None, relay_to=".*")
        """
    )
    result = pytester.runpytest(
        "-p",
        "no:xdist",
        "--smtpsink-relay=smtp://127.0.0.1:2525",
        "--smtpsink-relay-to=.*",
    )
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*relay_to: is only used with relay=URL*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--smtpsink-relay=http://127.0.0.1:25", "--smtpsink-relay-to=.*"],
            "--smtpsink-relay: the URL must start with smtp://",
        ),
        (
            ["--smtpsink-relay=smtp://127.0.0.1:25"],
            "--smtpsink-relay: needs --smtpsink-relay-to=REGEX "
            "(ini: smtpsink_relay_to), the recipients to relay",
        ),
        (
            ["--smtpsink-relay-to=.*"],
            "--smtpsink-relay-to: is only used with --smtpsink-relay=URL "
            "(ini: smtpsink_relay) (the upstream)",
        ),
        (
            ["--smtpsink-relay=smtp://192.0.2.1:25", "--smtpsink-relay-to=.*"],
            "--smtpsink-relay: 192.0.2.1 is not a loopback address; relaying "
            "captured mail to another host must be asked for with "
            "--smtpsink-relay-allow-remote (ini: smtpsink_relay_allow_remote)",
        ),
    ],
)
def test_bad_relay_options_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("-p", "no:xdist", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


def test_a_relay_ini_key_alone_is_named_in_its_error(
    pytester: pytest.Pytester,
) -> None:
    # The error names what the user wrote (the ini key), and what is missing
    # both ways it can be given.
    pytester.makeini("[pytest]\nsmtpsink_relay = smtp://127.0.0.1:25\n")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("-p", "no:xdist")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*smtpsink_relay (ini): needs --smtpsink-relay-to=REGEX "
            "(ini: smtpsink_relay_to)*"
        ]
    )


# -- upstreams that misbehave in ways a sink does not --------------------------------

#: How a scripted upstream answers a line: the greeting (for b""), a command,
#: or the end of a message's content (b"."). None closes the connection; a
#: tuple of pieces is sent a piece at a time, `PACE` seconds apart.
Answer = Callable[[bytes], "bytes | tuple[bytes, ...] | None"]
PACE = 0.2
#: A "slow" scripted upstream rests SLOW_PAUSE seconds before each of the
#: first SLOW_RESTS megabytes of content it reads.
SLOW_PAUSE = 0.25
SLOW_RESTS = 8
#: What a scripted upstream does after its 354: read the content, hang up at
#: once, close after its first line, or read nothing more (the connection
#: open until the test ends).
ContentHandling = Literal[
    "read", "hang up", "close after a line", "stall", "slow", "steady"
]


def usual_answer(line: bytes) -> bytes | tuple[bytes, ...] | None:
    verb = line[:4].upper()
    if not line:
        return b"220 raw.test ESMTP\r\n"
    if verb == b"EHLO":
        return b"250-raw.test\r\n250 PIPELINING\r\n"
    if verb == b"DATA":
        return b"354 go on\r\n"
    if verb == b"QUIT":
        return b"221 bye\r\n"
    return b"250 ok\r\n"


def refusing_login_with(reply: bytes) -> Answer:
    """Answers offering AUTH PLAIN that answer it with ``reply`` (a line
    quoting the password, say), the rest as `usual_answer`."""

    def answer(line: bytes) -> bytes | tuple[bytes, ...] | None:
        if line.upper().startswith(b"AUTH"):
            return reply
        if line[:4].upper() == b"EHLO":
            return b"250-raw.test\r\n250 AUTH PLAIN\r\n"
        return usual_answer(line)

    return answer


#: At the end of a `ScriptedUpstream` answer: the connection is closed once
#: the answer went.
HANG_UP = b"<hang up>"


class ScriptedUpstream(socketserver.ThreadingTCPServer):
    """A real SMTP server written for these tests, for upstream behaviour a
    sink cannot produce: each line is answered by ``answer``."""

    daemon_threads = False  # server_close() joins the connections' threads

    def __init__(self, answer: Answer, content: ContentHandling = "read") -> None:
        self.answer = answer
        self.content = content
        self.stopping = threading.Event()  # ends a paced reply at once
        #: Every command line, and b"<content>" for each content received.
        self.received: list[bytes] = []
        super().__init__(("127.0.0.1", 0), _ScriptedConnection)

    def server_bind(self) -> None:
        if self.content in ("stall", "slow", "steady"):
            # A small receive window (its connections inherit it): a client's
            # writes block after a few MB, whatever the system's maximum (up
            # to 32 MB of receive buffer here otherwise).
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        super().server_bind()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _ScriptedConnection(socketserver.StreamRequestHandler):
    server: ScriptedUpstream

    def handle(self) -> None:
        # The client may go at any point (a relay that gave up): not an error.
        with contextlib.suppress(ConnectionError):
            self.converse()

    def converse(self) -> None:
        answer, received = self.server.answer, self.server.received
        reply = answer(b"")
        while reply is not None:
            if isinstance(reply, tuple):
                for piece in reply:
                    self.wfile.write(piece)
                    if self.server.stopping.wait(PACE):
                        return
                reply = b"".join(reply)
            elif reply.startswith(b"354") and self.server.content == "hang up":
                # The 354 and the close in one segment (TCP_CORK holds the
                # reply until shutdown() adds the FIN): the relay sees the
                # close as it reads the 354, never a moment later by chance.
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
                self.wfile.write(reply)
                return
            else:
                self.wfile.write(reply.removesuffix(HANG_UP))
            if reply.startswith(b"221") or reply.endswith(HANG_UP):
                return
            if reply.startswith(b"354") and self.server.content == "stall":
                self.server.stopping.wait()
                return
            if reply.startswith(b"354") and self.server.content in ("slow", "steady"):
                # A rest of SLOW_PAUSE seconds before each piece read: "slow"
                # before each of the first SLOW_RESTS megabytes, then at full
                # speed (the relay's reply timeout starts once all is
                # written); "steady" after each quarter megabyte, to the end.
                slow = self.server.content == "slow"
                size, most = (1 << 20, SLOW_RESTS) if slow else (1 << 18, None)
                tail, taken, rests = b"", size if slow else 0, 0
                while not tail.endswith(b"\r\n.\r\n"):
                    if taken >= size and (most is None or rests < most):
                        taken, rests = 0, rests + 1
                        if self.server.stopping.wait(SLOW_PAUSE):
                            return
                    piece = self.rfile.read1(size)
                    if not piece:
                        return
                    tail, taken = (tail + piece)[-5:], taken + len(piece)
                received.append(b"<content>")
                reply = answer(b".")
                continue
            if reply.startswith(b"354") and self.server.content == "close after a line":
                self.rfile.readline()
                return  # the rest unread: the relay's writes get a reset
            if reply.startswith(b"354"):
                while (line := self.rfile.readline()) != b".\r\n":
                    if not line:
                        return  # closed before the end of the content
                received.append(b"<content>")
                reply = answer(b".")
                continue
            line = self.rfile.readline()
            if not line:
                return
            received.append(line.rstrip(b"\r\n"))
            reply = answer(line.rstrip(b"\r\n"))


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedUpstream]]:
    servers: list[tuple[ScriptedUpstream, threading.Thread]] = []

    def start(answer: Answer, content: ContentHandling = "read") -> ScriptedUpstream:
        server = ScriptedUpstream(answer, content)
        # A short poll: shutdown() at the end waits for one.
        thread = threading.Thread(target=server.serve_forever, args=(0.05,))
        thread.start()
        servers.append((server, thread))
        return server

    yield start
    for server, thread in servers:
        server.stopping.set()
        server.shutdown()
        thread.join()
        server.server_close()


def answering_mail_with(reply: bytes) -> Answer:
    def answer(line: bytes) -> bytes | tuple[bytes, ...] | None:
        return reply if line.upper().startswith(b"MAIL") else usual_answer(line)

    return answer


NO_REPLIES = {
    "no code": (b"abc what\r\n", "does not start with a 3-digit code"),
    # Quoted whole: smtplib keeps what follows the first four characters.
    "an HTTP answer": (
        b"HTTP/1.1 400 Bad Request\r\n",
        "does not start with a 3-digit code ('HTTP/1.1 400 Bad Request')",
    ),
    "code out of range": (b"999 odd\r\n", "999 is no reply code"),
    # smtplib reads the first three characters as the code whatever follows
    # them: these were taken as the upstream's 250.
    "no space after the code": (b"250ok\r\n", "followed by neither a space nor"),
    "a 4-digit code": (b"2500 ok\r\n", "followed by neither a space nor"),
    "too long": (b"250 " + b"x" * 9000 + b"\r\n", "longer than 8192 bytes"),
    # Lines within smtplib's limit, but a megabyte of them (found by a fuzz
    # run: the relay kept them all, hundreds of megabytes).
    "never ends": (
        (b"250-" + b"x" * 96 + b"\r\n") * 10_000 + b"250 ok\r\n",
        "reply goes on past 64 KiB",
    ),
}


def test_a_success_reply_where_another_is_due_is_no_refusal(
    smtpsink: Mailbox, scripted: Callable[[Answer], ScriptedUpstream]
) -> None:
    # "250 ok" to DATA (354 is due) read "refused the message at DATA: 250
    # ok", with code 250: a refusal with a success code.
    def answer(line: bytes) -> bytes | tuple[bytes, ...] | None:
        return b"250 ok\r\n" if line.upper().startswith(b"DATA") else usual_answer(line)

    upstream = scripted(answer)
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")
    with pytest.raises(RelayError) as raised:
        smtpsink.release(captured, "127.0.0.1", upstream.port)
    assert (raised.value.stage, raised.value.code) == ("DATA", None)
    assert raised.value.reply == (
        "the upstream answered DATA with 250 ok, which is not the reply DATA needs"
    )
    assert "refused" not in str(raised.value)
    assert b"<content>" not in upstream.received


@pytest.mark.parametrize("name", NO_REPLIES)
def test_an_answer_that_is_no_reply_fails_the_release(
    smtpsink: Mailbox, scripted: Callable[[Answer], ScriptedUpstream], name: str
) -> None:
    reply, reason = NO_REPLIES[name]
    upstream = scripted(answering_mail_with(reply))
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")

    with pytest.raises(RelayError) as raised:
        smtpsink.release(captured, "127.0.0.1", upstream.port)

    # Not a refusal: the upstream gave no reply code, smtplib made one up.
    assert (raised.value.stage, raised.value.code) == ("MAIL", None)
    assert reason in raised.value.reply
    assert "could not deliver to smtp://127.0.0.1:" in str(raised.value)
    assert b"<content>" not in upstream.received


@pytest.mark.parametrize("name", NO_REPLIES)
def test_an_answer_that_is_no_reply_fails_the_relay(
    smtpsink_factory: Factory,
    scripted: Callable[[Answer], ScriptedUpstream],
    name: str,
) -> None:
    reply, reason = NO_REPLIES[name]
    upstream = scripted(answering_mail_with(reply))
    sink = smtpsink_factory(relay=f"smtp://127.0.0.1:{upstream.port}", relay_to=".*")
    message = capture(sink, b"Subject: hi\r\n\r\nx\r\n")
    wait_relayed(sink, message)

    outcome = relay_of(message)
    assert (outcome.status, outcome.code) == ("failed", None)
    assert reason in outcome.reply
    # The RCPT and DATA pipelined with the MAIL got 250 and 354: an empty
    # message must not follow them.
    assert b"<content>" not in upstream.received


@pytest.mark.parametrize("stage", ["EHLO", "MAIL", "RCPT", "EOD"])
def test_release_to_an_upstream_that_closes_with_421_says_so(
    smtpsink: Mailbox, smtpsink_factory: Factory, stage: str
) -> None:
    upstream = smtpsink_factory(hostname="upstream.test")
    # At RCPT, the second of three: mid-transaction, one already accepted.
    match = "bob@example.com" if stage == "RCPT" else None
    upstream.fail(stage, 421, "4.3.2 closing", match=match)
    captured = capture(
        smtpsink,
        b"Subject: hi\r\n\r\nx\r\n",
        ["ann@example.com", "bob@example.com", "cat@example.com"],
    )

    with pytest.raises(RelayError) as raised:
        smtpsink.release(captured, upstream.host, upstream.port)

    # The 421 is the answer: not the disconnection that follows it.
    expected = {"EHLO": "EHLO", "MAIL": "MAIL", "RCPT": "RCPT", "EOD": "DATA"}
    assert raised.value.stage == expected[stage]
    assert (raised.value.code, raised.value.reply) == (421, "4.3.2 closing")
    upstream.assert_nothing_sent()


def test_a_421_in_the_middle_of_a_pipelined_group_is_the_outcome(
    smtpsink_factory: Factory,
) -> None:
    upstream = smtpsink_factory(hostname="upstream.test")
    upstream.fail("RCPT", 421, "4.3.2 closing", match="bob@partner.example")
    sink = relaying(smtpsink_factory, upstream)
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail(
            "app@example.com",
            ["ann@partner.example", "bob@partner.example", "cat@partner.example"],
            b"Subject: 1\r\n\r\n",
        )
        client.sendmail(
            "app@example.com", ["dan@partner.example"], b"Subject: 2\r\n\r\n"
        )
    first, second = sink.wait_for(2)
    wait_relayed(sink, second)

    outcome = relay_of(first)
    assert (outcome.status, outcome.code) == ("refused", 421)
    assert outcome.reply == "4.3.2 closing"
    assert outcome.error is not None
    assert outcome.error.stage == "RCPT"
    assert relay_of(second).status == "relayed"  # on a new connection
    assert upstream.wait_for().envelope.rcpt_to == ("dan@partner.example",)


@pytest.mark.parametrize("tls", [False, True])
def test_a_connection_the_upstream_closed_while_idle_is_not_the_next_answer(
    smtpsink_factory: Factory,
    scripted: Callable[[Answer], ScriptedUpstream],
    monkeypatch: pytest.MonkeyPatch,
    tls: bool,
) -> None:
    # The upstream closes the connection the relay keeps for the next
    # message (its idle timeout: 421, then the close). That 421 answers no
    # message: the next one goes on a new connection.
    from pytest_smtpsink import _relay

    monkeypatch.setattr(_relay, "_LINGER", 60.0)  # kept until the sink stops
    if tls:
        upstream = smtpsink_factory(hostname="upstream.test", tls="starttls")
        url = f"smtp+starttls://127.0.0.1:{upstream.port}?cafile={upstream.ca_path}"
    else:

        def answer(line: bytes) -> bytes | tuple[bytes, ...] | None:
            if line == b".":  # it takes this message and no more
                return b"250 ok\r\n421 4.4.2 idle for too long\r\n"
            return usual_answer(line)

        url = f"smtp://127.0.0.1:{scripted(answer).port}"
    with SMTPSink(relay=url, relay_to=".*") as relaying_sink:
        sink = relaying_sink.view()
        first = capture(sink, b"Subject: 1\r\n\r\nx\r\n")
        wait_relayed(sink, first)
        if tls:  # its idle timeout: the session ends once the 421 went
            time_out_now(upstream)
            upstream.wait_until(lambda: upstream.sessions[0].ended_at is not None)
            assert upstream.sessions[0].end == "timeout"
        capture(sink, b"Subject: 2\r\n\r\nx\r\n")
        second = sink.wait_for(2)[1]
        wait_relayed(sink, second)

    assert [relay_of(m).status for m in (first, second)] == ["relayed", "relayed"]


@pytest.mark.parametrize("ending", [b"421 4.3.2 one message a connection\r\n", b""])
def test_an_upstream_ending_each_connection_after_a_message_gets_every_message(
    smtpsink_factory: Factory,
    scripted: Callable[[Answer], ScriptedUpstream],
    ending: bytes,
) -> None:
    """An upstream that takes one message a connection (a 421 after its 250,
    or the close alone): with PIPELINING, the next message's MAIL went with
    the content before it, and the 421 (or the close) was taken as its
    answer: every second message of a burst failed for good, never sent
    (helper-233 F4). Each goes on a new connection, as without PIPELINING."""
    connections = 0

    def answer(line: bytes) -> bytes | tuple[bytes, ...] | None:
        nonlocal connections
        if not line:
            connections += 1
        if line == b".":  # it takes this message and no more
            return b"250 ok\r\n" + ending + HANG_UP
        return usual_answer(line)

    upstream = scripted(answer)
    url = f"smtp://127.0.0.1:{upstream.port}"
    with SMTPSink(relay=url, relay_to=".*") as relaying_sink:
        sink = relaying_sink.view()
        messages = send_burst(sink, [f"u{n}@partner.example" for n in range(4)])
    assert [relay_of(m).status for m in messages] == ["relayed"] * 4
    assert upstream.received.count(b"<content>") == 4
    assert connections == 4


def test_release_sends_recipients_deferred_with_452_in_more_transactions(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    upstream = smtpsink_factory(hostname="upstream.test")
    upstream.limit(max_recipients=10)  # 452 for the 11th RCPT on
    recipients = [f"u{n}@example.com" for n in range(25)]
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n", recipients)

    delivery = smtpsink.release(captured, upstream.host, upstream.port)

    # RFC 5321 4.5.3.1.10: the rest go in later transactions.
    assert delivery.accepted == tuple(recipients)
    assert delivery.refused == ()
    relayed = upstream.wait_for(3)
    assert [m.envelope.rcpt_to for m in relayed] == [
        tuple(recipients[:10]),
        tuple(recipients[10:20]),
        tuple(recipients[20:]),
    ]
    text = delivery.format_transcript().lower()
    assert text.count("c: mail from:") == 3
    assert text.endswith("c: quit\ns: 221 bye")


def test_a_later_transaction_refusal_stays_with_its_recipients(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    upstream = smtpsink_factory(hostname="upstream.test")
    upstream.limit(max_recipients=2)
    upstream.fail("EOD", 554, "5.7.1 not for u3", match="u3@example.com")
    recipients = [f"u{n}@example.com" for n in range(5)]
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n", recipients)

    delivery = smtpsink.release(captured, upstream.host, upstream.port)

    # u2 and u3 went in the second transaction, which was refused; u4, still
    # deferred then, in a third.
    assert delivery.accepted == ("u0@example.com", "u1@example.com", "u4@example.com")
    assert [(r, code) for r, code, _ in delivery.refused] == [
        ("u2@example.com", 554),
        ("u3@example.com", 554),
    ]
    assert [m.envelope.rcpt_to for m in upstream.wait_for(2)] == [
        ("u0@example.com", "u1@example.com"),
        ("u4@example.com",),
    ]


def test_later_transactions_send_as_many_recipients_as_the_upstream_takes(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    # One recipient per transaction upstream: each later transaction sends
    # one, not every recipient still deferred (found by a fuzz run: 300
    # recipients were about 45,000 RCPT commands).
    upstream = smtpsink_factory(hostname="upstream.test")
    upstream.limit(max_recipients=1)
    recipients = [f"u{n:02d}@example.com" for n in range(20)]
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n", recipients)

    delivery = smtpsink.release(captured, upstream.host, upstream.port)

    assert delivery.accepted == tuple(recipients)
    assert delivery.refused == ()
    transcript = delivery.format_transcript().lower()
    assert transcript.count("c: mail from:") == 20
    assert transcript.count("c: rcpt to:") == 20 + 19  # all first, then one each


@pytest.mark.parametrize("pipelining", [True, False])
def test_the_relay_sends_recipients_deferred_with_452_in_more_transactions(
    smtpsink_factory: Factory, pipelining: bool
) -> None:
    # A sink of its own: no relay connection made before the hide.
    upstream = smtpsink_factory(hostname=f"limit-{pipelining}.test")
    upstream.limit(max_recipients=2)
    if not pipelining:
        upstream.hide("PIPELINING")
    sink = relaying(smtpsink_factory, upstream)
    many = [f"u{n}@partner.example" for n in range(5)]
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("app@example.com", many, b"Subject: 1\r\n\r\n")
        client.sendmail("app@example.com", ["v@partner.example"], b"Subject: 2\r\n\r\n")
    first, second = sink.wait_for(2)
    wait_relayed(sink, second)

    outcome = relay_of(first)
    assert outcome.status == "relayed"
    assert outcome.delivery is not None
    assert outcome.delivery.accepted == tuple(many)
    assert outcome.delivery.refused == ()
    assert relay_of(second).status == "relayed"
    # In order: the first message's three transactions, then the second's.
    assert [m.envelope.rcpt_to for m in upstream.wait_for(4)] == [
        tuple(many[:2]),
        tuple(many[2:4]),
        tuple(many[4:]),
        ("v@partner.example",),
    ]


def test_recipients_all_deferred_again_end_the_transactions(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    upstream = smtpsink_factory(hostname="upstream.test")
    # The first RCPT is taken, every later one deferred, in every transaction.
    upstream.fail("RCPT", 452, "4.2.2 mailbox full", match=re.compile("^(bob|cat)@"))
    captured = capture(
        smtpsink,
        b"Subject: hi\r\n\r\nx\r\n",
        ["ann@example.com", "bob@example.com", "cat@example.com"],
    )

    delivery = smtpsink.release(captured, upstream.host, upstream.port)

    assert delivery.accepted == ("ann@example.com",)
    assert [(r, c) for r, c, _ in delivery.refused] == [
        ("bob@example.com", 452),
        ("cat@example.com", 452),
    ]
    # Tried once more, on their own; no third time, as nothing changed.
    assert delivery.format_transcript().lower().count("c: mail from:") == 2


def test_a_partly_refused_relay_says_who_was_refused(
    smtpsink_factory: Factory,
) -> None:
    upstream = smtpsink_factory(hostname="upstream.test")
    upstream.fail("RCPT", 550, "5.1.1 no bob", match="bob@partner.example")
    upstream.fail("RCPT", 550, "5.1.1 no cat", match="cat@partner.example")
    sink = relaying(smtpsink_factory, upstream)
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail(
            "app@example.com",
            ["ann@partner.example", "bob@partner.example"],
            b"Subject: 1\r\n\r\n",
        )
        client.sendmail(
            "app@example.com",
            ["ann@partner.example", "bob@partner.example", "cat@partner.example"],
            b"Subject: 2\r\n\r\n",
        )
    first, second = sink.wait_for(2)
    wait_relayed(sink, second)

    assert relay_of(first).status == "relayed"
    # "relayed" alone would read as every recipient having it.
    assert str(relay_of(first)).endswith(
        "; 1 of 2 recipients refused: bob@partner.example (550 5.1.1 no bob)"
    )
    assert "1 of 2 recipients refused: bob@partner.example" in first.summary()
    assert str(relay_of(second)).endswith(
        "; 2 of 3 recipients refused: bob@partner.example (550 5.1.1 no bob) and 1 more"
    )


def test_stopping_a_sink_sends_nothing_more_after_the_message_in_flight() -> None:
    with SMTPSink() as upstream:
        # The first message waits at DATA, so the next is pipelined behind
        # it; then the upstream never answers the end of its content.
        upstream.delay("DATA", 0.5, times=1)
        held = upstream.hang("EOD")
        # The stop must come before the first message's reply times out: a
        # timeout of 1 s lost that race on a busy CI machine (a 1 s stall of
        # the test's thread), and the second message was sent anew.
        sink = SMTPSink(
            relay=f"smtp://127.0.0.1:{upstream.port}", relay_to=".*", relay_timeout=5
        )
        with sink:
            with smtplib.SMTP(sink.host, sink.port) as client:
                for n in range(3):
                    client.sendmail("a@example.com", ["b@example.com"], f"{n}\r\n")
            messages = sink.wait_for(3)
            upstream.wait_until(lambda: held.fired == 1)
        # The first timed out; the second, whose commands followed its
        # content, was not sent again on a new connection.
        outcomes = [relay_of(m) for m in messages]
        assert [o.status for o in outcomes] == ["failed"] * 3
        assert "timed out" in outcomes[0].reply
        assert [o.reply for o in outcomes[1:]] == [
            "the sink stopped before relaying it"
        ] * 2
        assert len(upstream.sessions) == 1
        upstream.clear_faults()


#: The release and relay timeout of the tests of UNANSWERED: every reply
#: before the hung one must come within it too, on a busy machine.
UNANSWERED_WITHIN = 2

UNANSWERED = {
    # fault: (stage of the error, its reply)
    "hang CONNECT": ("connect", f"timed out: no greeting within {UNANSWERED_WITHIN} s"),
    "hang MAIL": ("MAIL", f"timed out: no reply within {UNANSWERED_WITHIN} s"),
    "hang EOD": (
        "DATA",
        f"timed out: no reply to the message content within {UNANSWERED_WITHIN} s"
        " (it may have kept the message)",
    ),
    "disconnect EOD": (
        "DATA",
        "the connection closed after the message content, before the"
        " upstream's reply (it may have kept the message)",
    ),
    "disconnect RCPT": (
        "RCPT",
        "the upstream closed the connection without a reply",
    ),
}


def test_a_timeout_past_what_the_clock_holds_is_for_ever(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    # It passed the checks, then failed with OverflowError ("timestamp out of
    # range for platform time_t") as a RelayError.
    upstream = smtpsink_factory(hostname="upstream.test")
    captured = capture(smtpsink, b"Subject: far\r\n\r\nx\r\n")
    smtpsink.release(captured, upstream.host, upstream.port, timeout=1e300)
    assert upstream.wait_for().subject == "far"


def test_a_tls_mode_mix_up_is_named_when_it_times_out(
    smtpsink: Mailbox, smtpsink_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Plain SMTP to an implicit-TLS port said "no greeting", and an
    # implicit-TLS handshake that never finished "could not connect".
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")
    with monkeypatch.context() as patched:
        # A port that waits long for a handshake: the client's 1 s runs out
        # first however busy the machine (1 s against the port's own 2 s
        # was two timers racing).
        patched.setattr("pytest_smtpsink._smtp.HANDSHAKE_TIMEOUT", 300.0)
        waiting = smtpsink_factory(tls="implicit", hostname="waiting.test")
    with pytest.raises(RelayError) as raised:
        smtpsink.release(captured, waiting.host, waiting.port, timeout=1)
    assert raised.value.reply == (
        "timed out: no greeting within 1 s (not a byte came: an implicit-TLS "
        "port greets only after a TLS handshake, smtps://, tls='implicit')"
    )
    # With the default timeout (10 s), over the port's 2 s: the port closes
    # first, and the hint went with it.
    implicit = smtpsink_factory(tls="implicit")
    with pytest.raises(RelayError) as raised:
        smtpsink.release(captured, implicit.host, implicit.port)
    assert raised.value.reply == (
        "the upstream closed the connection without a reply and without a byte "
        "(an implicit-TLS port closes on a client that starts no TLS handshake: "
        "smtps://, tls='implicit')"
    )

    def refused_over_implicit_tls(upstream: Mailbox) -> str:
        with pytest.raises(RelayError) as raised:
            smtpsink.release(
                captured,
                upstream.host,
                upstream.port,
                tls="implicit",
                ca_file=implicit.ca_path,  # any: no handshake gets that far
                timeout=2,  # the connection before must come within it too
            )
        return raised.value.reply

    silent = smtpsink_factory(hostname="silent.test")
    silent.hang("CONNECT")
    assert refused_over_implicit_tls(silent) == (
        "timed out: the TLS handshake did not finish within 2 s (no answer to "
        "the TLS hello)"
    )
    silent.clear_faults()
    # A port that greets in plain text answers the TLS hello at once: a bare
    # "SSLError: [SSL: WRONG_VERSION_NUMBER] wrong version number".
    assert refused_over_implicit_tls(smtpsink).endswith(
        " (the upstream answered in plain text: a port that greets in plain "
        "text takes smtp+starttls://, tls='starttls', or smtp:// if it offers "
        "no STARTTLS)"
    )


def unanswered_upstream(factory: Factory, fault: str) -> Mailbox:
    upstream = factory(hostname="upstream.test")
    action, stage = fault.split()
    getattr(upstream, action)(stage)
    return upstream


@pytest.mark.parametrize("fault", UNANSWERED)
def test_release_says_what_went_unanswered(
    smtpsink: Mailbox, smtpsink_factory: Factory, fault: str
) -> None:
    upstream = unanswered_upstream(smtpsink_factory, fault)
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")

    with pytest.raises(RelayError) as raised:
        smtpsink.release(
            captured, upstream.host, upstream.port, timeout=UNANSWERED_WITHIN
        )

    # Not smtplib's "Connection unexpectedly closed: timed out", which
    # reads as the upstream closing; and whether the content went.
    stage, reply = UNANSWERED[fault]
    assert (raised.value.stage, raised.value.code) == (stage, None)
    # A reset may follow, with its error: the commands not read yet.
    assert raised.value.reply.startswith(reply)
    sent_content = "C: <message content: " in str(raised.value)
    assert sent_content == (stage == "DATA")
    upstream.clear_faults()


@pytest.mark.parametrize("fault", UNANSWERED)
def test_the_relay_says_what_went_unanswered(
    smtpsink_factory: Factory, fault: str
) -> None:
    upstream = unanswered_upstream(smtpsink_factory, fault)
    sink = relaying(
        smtpsink_factory, upstream, relay_to=".*", relay_timeout=UNANSWERED_WITHIN
    )
    message = capture(sink, b"Subject: hi\r\n\r\nx\r\n")
    wait_relayed(sink, message)

    outcome = relay_of(message)
    stage, reply = UNANSWERED[fault]
    assert outcome.status == "failed"
    assert outcome.reply.startswith(reply)
    assert outcome.error is not None
    assert outcome.error.stage == stage
    upstream.clear_faults()


# What each message asked for, and what an upstream without the extension
# makes of it: None (sent, without the parameter) or the reason it is not.
WITHOUT_EXTENSION = {
    "SMTPUTF8 asked, ASCII throughout": (
        "SMTPUTF8",
        ("app@example.com", "Subject: x\r\n\r\nbody\r\n", ["SMTPUTF8"]),
        None,
    ),
    "SMTPUTF8, a UTF-8 header": (
        "SMTPUTF8",
        ("app@example.com", "Subject: café\r\n\r\nbody\r\n", ["SMTPUTF8"]),
        "the upstream does not offer SMTPUTF8, which the message needs: "
        "its header has non-ASCII text",
    ),
    "BODY=8BITMIME, 7-bit content": (
        "8BITMIME",
        ("app@example.com", "Subject: x\r\n\r\nbody\r\n", ["BODY=8BITMIME"]),
        None,
    ),
    "BODY=8BITMIME, 8-bit content": (
        "8BITMIME",
        ("app@example.com", "Subject: x\r\n\r\nDéjà vu\r\n", ["BODY=8BITMIME"]),
        "the upstream does not offer 8BITMIME, and the content has 8-bit "
        "bytes: not sent (made 7-bit, it would not be the captured bytes)",
    ),
}


#: A line of only a dot after a bare line end, then commands: one message
#: to the sink (which ends DATA at CRLF.CRLF only), two to an upstream
#: that takes a bare LF (or CR) for a line end (SMTP smuggling).
SMUGGLING = {
    "LF.CRLF": b"hi\n.\r\nMAIL FROM:<evil@x.example>\r\n",
    "LF.LF": b"hi\n.\nRCPT TO:<victim@elsewhere.example>\r\n",
    "CR.CR": b"hi\r.\rDATA\r\n",
    "LF. at the end": b"hi\n.",
}


@pytest.mark.parametrize("case", SMUGGLING)
def test_content_an_upstream_could_read_as_two_messages_is_not_relayed(
    smtpsink: Mailbox, smtpsink_factory: Factory, case: str
) -> None:
    """It went as it was, and the upstream's second transaction bypassed
    relay_to (helper-233 F1)."""
    content = b"Subject: x\r\n\r\n" + SMUGGLING[case]
    bare = "CR" if case.startswith("CR") else "LF"

    def reason(data: bytes) -> str:
        # Named by the 12 bytes before the bare line end and the dot's line.
        start = data.index(b".") - 1
        around = data[start - 12 : min(start + 3, len(data))]
        return (
            f"the content has a line of only a dot after a bare {bare} "
            f"({around!r}): an upstream that takes a bare {bare} for a "
            "line end would read it as the end of the message, and what follows "
            "as SMTP commands of its own (SMTP smuggling): not sent"
        )

    upstream = smtpsink_factory(hostname="upstream.test")
    message = smtpsink.deliver(content, to="ann@example.com")
    with pytest.raises(RelayError) as raised:
        smtpsink.release(message, upstream.host, upstream.port)
    assert (raised.value.stage, raised.value.reply) == ("MAIL", reason(content))
    sink = relaying(smtpsink_factory, upstream, relay_to=".*")
    with socket.create_connection((sink.host, sink.port)) as raw:
        raw.sendall(
            b"HELO app\r\nMAIL FROM:<app@example.com>\r\n"
            b"RCPT TO:<ann@example.com>\r\nDATA\r\n" + content + b"\r\n.\r\nQUIT\r\n"
        )
        while raw.recv(4096):
            pass
    captured = sink.wait_for()
    assert captured.raw == content + b"\r\n"  # kept as it came
    wait_relayed(sink, captured)
    outcome = relay_of(captured)
    assert (outcome.status, outcome.reply) == ("failed", reason(captured.raw))
    upstream.assert_nothing_sent()
    # A dot after a bare LF with more on its line ends nothing: relayed.
    sink.clear()
    capture(sink, b"Subject: x\r\n\r\nhi\n.more\r\n")
    upstream.wait_for()


@pytest.mark.parametrize("case", WITHOUT_EXTENSION)
def test_release_to_an_upstream_without_an_extension(
    smtpsink: Mailbox, smtpsink_factory: Factory, case: str
) -> None:
    hidden, (sender, text, options), reason = WITHOUT_EXTENSION[case]
    upstream = smtpsink_factory(hostname="upstream.test")
    upstream.hide(hidden)
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            sender, ["ann@example.com"], text.encode(), mail_options=options
        )
    captured = smtpsink.wait_for()

    if reason is None:
        smtpsink.release(captured, upstream.host, upstream.port)
        relayed = upstream.wait_for()
        # None it does not offer: SIZE only.
        assert relayed.envelope.mail_options == (f"SIZE={len(relayed.raw)}",)
        assert relayed.raw.endswith(captured.raw)
    else:
        with pytest.raises(RelayError) as raised:
            smtpsink.release(captured, upstream.host, upstream.port)
        assert (raised.value.stage, raised.value.code) == ("MAIL", None)
        assert raised.value.reply == reason
        upstream.assert_nothing_sent()


@pytest.mark.parametrize("case", WITHOUT_EXTENSION)
def test_the_relay_to_an_upstream_without_an_extension(
    smtpsink_factory: Factory, case: str
) -> None:
    hidden, (sender, text, options), reason = WITHOUT_EXTENSION[case]
    # A sink of its own: no relay connection made before the hide.
    number = list(WITHOUT_EXTENSION).index(case)
    upstream = smtpsink_factory(hostname=f"without-{number}.test")
    upstream.hide(hidden)
    sink = relaying(smtpsink_factory, upstream, relay_to=".*")
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail(
            sender, ["ann@example.com"], text.encode(), mail_options=options
        )
    message = sink.wait_for()
    wait_relayed(sink, message)

    outcome = relay_of(message)
    if reason is None:
        assert outcome.status == "relayed"
        relayed = upstream.wait_for()
        assert relayed.envelope.mail_options == (f"SIZE={len(relayed.raw)}",)
    else:
        assert (outcome.status, outcome.reply) == ("failed", reason)
        upstream.assert_nothing_sent()


@pytest.mark.parametrize("declared", [None, "BODY=7BIT"])
def test_eight_bit_content_is_declared_to_the_upstream(
    smtpsink: Mailbox, smtpsink_factory: Factory, declared: str | None
) -> None:
    # RFC 6152: a client sending 8-bit content declares BODY=8BITMIME. An
    # application that sent it undeclared (what lint's
    # 8bit-without-8bitmime reports), or declared as 7-bit, does not make
    # the relay break the RFC.
    upstream = smtpsink_factory(hostname="eight-bit.test")
    sink = relaying(smtpsink_factory, upstream, relay_to=".*")
    for sending in (smtpsink, sink):
        with smtplib.SMTP(sending.host, sending.port) as client:
            client.sendmail(
                "app@example.com",
                ["ann@example.com"],
                "Subject: x\r\n\r\nDéjà vu\r\n".encode(),
                mail_options=[declared] if declared else [],
            )
    captured, message = smtpsink.wait_for(), sink.wait_for()
    for kept in (captured, message):  # smtplib sent SIZE= (and BODY=7BIT) only
        assert [o for o in kept.envelope.mail_options if o.startswith("BODY=")] == (
            [declared] if declared else []
        )

    smtpsink.release(captured, upstream.host, upstream.port)
    wait_relayed(sink, message)

    assert relay_of(message).status == "relayed"
    received = upstream.wait_for(count=2)
    assert [m.envelope.mail_options for m in received] == [
        (f"SIZE={len(m.raw)}", "BODY=8BITMIME") for m in received
    ]


def trickling_greeting(line: bytes) -> bytes | tuple[bytes, ...] | None:
    if not line:  # a byte at a time: each comes long before the timeout
        greeting = b"220 slow.test ESMTP\r\n"
        return tuple(greeting[i : i + 1] for i in range(len(greeting)))
    return usual_answer(line)


def test_release_times_out_on_a_reply_that_trickles_in(
    smtpsink: Mailbox, scripted: Callable[[Answer], ScriptedUpstream]
) -> None:
    upstream = scripted(trickling_greeting)
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")

    # timeout= bounds the whole reply, not each wait for a byte: the
    # greeting takes 20 paces, far longer than 1 s.
    with pytest.raises(RelayError) as raised:
        smtpsink.release(captured, "127.0.0.1", upstream.port, timeout=1)

    assert raised.value.stage == "connect"
    assert raised.value.reply == "timed out: no greeting within 1 s"
    assert upstream.received == []


def test_the_relay_times_out_on_a_reply_that_trickles_in(
    smtpsink_factory: Factory, scripted: Callable[[Answer], ScriptedUpstream]
) -> None:
    upstream = scripted(trickling_greeting)
    sink = smtpsink_factory(
        relay=f"smtp://127.0.0.1:{upstream.port}", relay_to=".*", relay_timeout=1
    )
    message = capture(sink, b"Subject: hi\r\n\r\nx\r\n")
    wait_relayed(sink, message)

    assert relay_of(message).reply == "timed out: no greeting within 1 s"


def test_a_certificate_for_another_name_is_named_as_such(
    smtpsink: Mailbox, smtpsink_factory: Factory, tmp_path: Path
) -> None:
    import trustme

    authority = trustme.CA()
    leaf = authority.issue_cert("mx.other.example")
    cert, ca = tmp_path / "cert.pem", tmp_path / "ca.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(cert))
    authority.cert_pem.write_to_path(str(ca))
    upstream = smtpsink_factory(tls="implicit", tls_cert=str(cert))
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")

    with pytest.raises(RelayError) as raised:
        smtpsink.release(
            captured, "127.0.0.1", upstream.port, tls="implicit", ca_file=ca
        )

    # The CA is trusted: a mismatch, said as one, with no hint about CAs.
    assert raised.value.stage == "connect"
    assert "IP address mismatch, certificate is not valid for '127.0.0.1'" in (
        raised.value.reply
    )
    assert "cafile" not in raised.value.reply
    upstream.assert_nothing_sent()


# -- SIZE (RFC 1870) ----------------------------------------------------------------


def test_release_declares_the_size_of_what_it_sends(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    upstream = smtpsink_factory(hostname="sized.test")
    # No CRLF at the end: the one added counts (RFC 1870), a stuffed dot not.
    captured = capture(smtpsink, b"Subject: hi\r\n\r\n.dot\r\nend")

    smtpsink.release(captured, upstream.host, upstream.port)

    relayed = upstream.wait_for()
    assert relayed.envelope.mail_options == (f"SIZE={len(relayed.raw)}",)
    assert relayed.raw.endswith(b"\r\n.dot\r\nend\r\n")


@pytest.mark.parametrize("pipelining", [True, False])
def test_the_relay_declares_the_size_of_what_it_sends(
    smtpsink_factory: Factory, pipelining: bool
) -> None:
    upstream = smtpsink_factory(hostname=f"sized-{pipelining}.test")
    if not pipelining:
        upstream.hide("PIPELINING")
    sink = relaying(smtpsink_factory, upstream)

    messages = send_burst(sink, ["ann@partner.example", "bob@partner.example"])

    assert [relay_of(m).status for m in messages] == ["relayed"] * 2
    for relayed in upstream.wait_for(2):
        assert relayed.envelope.mail_options == (f"SIZE={len(relayed.raw)}",)


def test_release_over_the_upstreams_size_is_not_sent(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    upstream = smtpsink_factory(hostname="small.test", max_size=1000)
    roomy = smtpsink_factory(hostname="roomy.test")
    captured = capture(smtpsink, b"Subject: big\r\n\r\n" + b"x" * 950 + b"\r\n")
    # What is sent, Received: header and all, as another upstream got it.
    smtpsink.release(captured, roomy.host, roomy.port)
    size = len(roomy.wait_for().raw)

    # Before: sent whole, then refused after the content (552 at DATA).
    with pytest.raises(RelayError) as raised:
        smtpsink.release(captured, upstream.host, upstream.port)

    assert (raised.value.stage, raised.value.code) == ("MAIL", None)
    assert raised.value.reply == (
        f"the message is {size} bytes, more than the 1000 bytes the upstream "
        "takes (its EHLO says SIZE 1000): not sent"
    )
    assert "C: MAIL" not in raised.value.args[0]
    upstream.assert_nothing_sent()
    # Without the Received: header it fits.
    smtpsink.release(captured, upstream.host, upstream.port, received=False)
    assert upstream.wait_for().raw == captured.raw


def test_release_to_an_upstream_whose_size_is_no_number_sends_it(
    smtpsink: Mailbox, scripted: Callable[[Answer], ScriptedUpstream]
) -> None:
    def answer(line: bytes) -> bytes | tuple[bytes, ...] | None:
        if line[:4].upper() == b"EHLO":
            # "²" (latin-1, as smtplib decodes EHLO) is a digit to
            # str.isdigit, not to int().
            return b"250-raw.test\r\n250 SIZE \xb2\r\n"
        return usual_answer(line)

    upstream = scripted(answer)
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")

    # Before: RelayError "ValueError: invalid literal for int() ...".
    delivery = smtpsink.release(captured, "127.0.0.1", upstream.port)

    assert delivery.code == 250
    assert b"<content>" in upstream.received


@pytest.mark.parametrize("pipelining", [True, False])
def test_the_relay_of_a_message_over_the_upstreams_size_fails_unsent(
    smtpsink_factory: Factory, pipelining: bool
) -> None:
    upstream = smtpsink_factory(hostname=f"small-{pipelining}.test", max_size=1000)
    if not pipelining:
        upstream.hide("PIPELINING")
    sink = relaying(smtpsink_factory, upstream)
    with smtplib.SMTP(sink.host, sink.port) as client:
        for n, lines in enumerate((1, 20, 1)):
            client.sendmail(
                "app@example.com",
                [f"u{n}@partner.example"],
                b"Subject: x\r\n\r\n" + (b"x" * 98 + b"\r\n") * lines,
            )
    messages = sink.wait_for(3)
    for message in messages:
        wait_relayed(sink, message)

    small, big, after = (relay_of(m) for m in messages)
    assert (big.status, big.code) == ("failed", None)
    assert re.fullmatch(
        r"the message is \d+ bytes, more than the 1000 bytes the upstream takes "
        r"\(its EHLO says SIZE 1000\): not sent",
        big.reply,
    )
    # The others, before and after it, went on the same connection.
    assert (small.status, after.status) == ("relayed", "relayed")
    relayed = upstream.wait_for(2)
    assert [m.envelope.rcpt_to for m in relayed] == [
        ("u0@partner.example",),
        ("u2@partner.example",),
    ]
    assert len({id(m.session) for m in relayed}) == 1


# -- DSN (RFC 3461) -----------------------------------------------------------------


def capture_with_dsn(sink: Mailbox, n: int = 0) -> Message:
    """The sink's message ``n``, whose MAIL and first RCPT ask for DSNs
    (ENVID and ORCPT in mixed case, with xtext escapes); the second RCPT
    asks for nothing."""
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.ehlo()
        client.mail("app@example.com", ["RET=HDRS", f"ENVID=Order+2B{n}.a"])
        client.rcpt(
            f"ann{n}@partner.example",
            ["NOTIFY=SUCCESS,FAILURE", f"ORCPT=rfc822;Ann+2Btag{n}@Partner.example"],
        )
        client.rcpt(f"bob{n}@partner.example")
        client.data(b"Subject: dsn\r\n\r\nx\r\n")
    sink.wait_until(lambda: len(sink.messages) > n)
    return sink.messages[n]


def assert_same_dsn(relayed: Message, captured: Message) -> None:
    assert relayed.envelope.dsn_ret == captured.envelope.dsn_ret == "HDRS"
    assert relayed.envelope.dsn_envid == captured.envelope.dsn_envid
    assert relayed.envelope.rcpt_dsn == captured.envelope.rcpt_dsn


def test_release_passes_the_dsn_requests_on(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    upstream = smtpsink_factory(hostname="dsn.test")
    captured = capture_with_dsn(smtpsink)
    assert captured.envelope.dsn_envid == "Order+0.a"
    assert captured.envelope.rcpt_dsn[0] == RecipientDSN(
        ("SUCCESS", "FAILURE"), "rfc822;Ann+tag0@Partner.example"
    )

    # Before: sent without RET, ENVID, NOTIFY and ORCPT.
    smtpsink.release(captured, upstream.host, upstream.port)

    assert_same_dsn(upstream.wait_for(), captured)


def test_release_sends_xtext_octets_as_they_came(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    # The sink reads xtext octets as UTF-8 (undecodable ones kept): the
    # release writes the same octets back, whatever the sink made of them.
    upstream = smtpsink_factory(hostname="dsn-xtext.test")
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.ehlo()
        client.mail("app@example.com", ["ENVID=Caf+C3+A9+2B1"])
        client.rcpt("ann@partner.example", ["ORCPT=rfc822;+C3+BCn@x.example"])
        client.rcpt("bob@partner.example", ["ORCPT=rfc822;b+FCb@x.example"])
        client.data(b"Subject: xtext\r\n\r\nx\r\n")
    captured = smtpsink.wait_for(subject="xtext")

    smtpsink.release(captured, upstream.host, upstream.port)

    relayed = upstream.wait_for(subject="xtext")
    assert relayed.envelope.dsn_envid == captured.envelope.dsn_envid == "Café+1"
    assert relayed.envelope.rcpt_dsn == captured.envelope.rcpt_dsn
    sent = [e.line for e in relayed.session.transcript if e.command in ("MAIL", "RCPT")]
    assert "ENVID=Caf+C3+A9+2B1" in sent[0]
    assert sent[1].endswith("ORCPT=rfc822;+C3+BCn@x.example")
    assert sent[2].endswith("ORCPT=rfc822;b+FCb@x.example")


def test_release_keeps_each_recipients_dsn_in_a_later_transaction(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    upstream = smtpsink_factory(hostname="dsn-452.test")
    upstream.limit(max_recipients=1)  # bob goes in a second transaction
    captured = capture_with_dsn(smtpsink)

    smtpsink.release(captured, upstream.host, upstream.port)

    first, second = upstream.wait_for(2)
    assert first.envelope.rcpt_dsn == captured.envelope.rcpt_dsn[:1]
    assert second.envelope.rcpt_dsn == (RecipientDSN(),)
    assert second.envelope.dsn_envid == captured.envelope.dsn_envid


@pytest.mark.parametrize("pipelining", [True, False])
def test_the_relay_passes_the_dsn_requests_on(
    smtpsink_factory: Factory, pipelining: bool
) -> None:
    upstream = smtpsink_factory(hostname=f"dsn-{pipelining}.test")
    if not pipelining:
        upstream.hide("PIPELINING")
    sink = relaying(smtpsink_factory, upstream)

    captured = [capture_with_dsn(sink, n) for n in range(2)]
    for message in captured:
        wait_relayed(sink, message)

    assert [relay_of(m).status for m in captured] == ["relayed"] * 2
    for relayed, message in zip(upstream.wait_for(2), captured, strict=True):
        assert_same_dsn(relayed, message)


def test_to_an_upstream_without_dsn_the_requests_are_left_out(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    # RFC 3461 5.2.2: the message goes on without them.
    upstream = smtpsink_factory(hostname="no-dsn.test")
    upstream.hide("DSN")
    sink = relaying(smtpsink_factory, upstream)
    for sending in (smtpsink, sink):
        message = capture_with_dsn(sending)
    smtpsink.release(smtpsink.wait_for(), upstream.host, upstream.port)
    wait_relayed(sink, message)

    assert relay_of(message).status == "relayed"
    for relayed in upstream.wait_for(2):
        assert relayed.envelope.dsn_ret is None
        assert relayed.envelope.dsn_envid is None
        assert relayed.envelope.rcpt_dsn == (RecipientDSN(), RecipientDSN())
        assert relayed.envelope.mail_options == (f"SIZE={len(relayed.raw)}",)


# -- what the upstream has when the connection closes after its 354 -----------------


@pytest.mark.skipif(not hasattr(socket, "TCP_CORK"), reason="needs TCP_CORK")
def test_release_to_an_upstream_that_hangs_up_after_its_354_says_it_has_nothing(
    smtpsink: Mailbox, scripted: Callable[..., ScriptedUpstream]
) -> None:
    upstream = scripted(usual_answer, content="hang up")
    captured = capture(smtpsink, b"Subject: hi\r\n\r\nx\r\n")

    with pytest.raises(RelayError) as raised:
        smtpsink.release(captured, "127.0.0.1", upstream.port)

    # Before: the content went into the closed connection, and the error
    # said "the connection closed after the message content ... (it may have
    # kept the message)", which would have a careful user not send it again.
    assert (raised.value.stage, raised.value.code) == ("DATA", None)
    assert raised.value.reply == (
        "the upstream closed the connection after its 354, before the message "
        "content was sent: it does not have the message"
    )
    assert "<message content" not in str(raised.value)
    assert raised.value.transcript[-1].replies == ["354 go on"]


@pytest.mark.skipif(not hasattr(socket, "TCP_CORK"), reason="needs TCP_CORK")
def test_the_relay_to_an_upstream_that_hangs_up_after_its_354_says_so(
    smtpsink_factory: Factory, scripted: Callable[..., ScriptedUpstream]
) -> None:
    upstream = scripted(usual_answer, content="hang up")  # offers PIPELINING
    sink = smtpsink_factory(relay=f"smtp://127.0.0.1:{upstream.port}", relay_to=".*")
    # Two at once: the first's content waits for the second's commands, and
    # goes (or not) with them, or alone.
    with smtplib.SMTP(sink.host, sink.port) as client:
        for n in range(2):
            client.sendmail(
                "app@example.com", ["ann@example.com"], f"Subject: {n}\r\n\r\n"
            )
    messages = sink.wait_for(2)
    for message in messages:
        wait_relayed(sink, message)

    for message in messages:
        outcome = relay_of(message)
        assert (outcome.status, outcome.code) == ("failed", None)
        assert outcome.reply == (
            "the upstream closed the connection after its 354, before the "
            "message content was sent: it does not have the message"
        )
        assert outcome.error is not None
        assert "<message content" not in str(outcome.error)
    assert b"<content>" not in upstream.received


def test_release_cut_off_in_the_middle_of_the_content_says_it_was_not_kept(
    smtpsink: Mailbox, scripted: Callable[..., ScriptedUpstream]
) -> None:
    upstream = scripted(usual_answer, content="close after a line")
    # More than the socket buffers hold: the upstream's reset comes while
    # the relay is still writing, before the final dot can go.
    line = b"x" * 998 + b"\r\n"
    captured = capture(smtpsink, b"Subject: big\r\n\r\n" + line * 12_000)

    with pytest.raises(RelayError) as raised:
        smtpsink.release(captured, "127.0.0.1", upstream.port)

    # Before: "the connection closed after the message content, before the
    # upstream's reply (it may have kept the message)".
    assert (raised.value.stage, raised.value.code) == ("DATA", None)
    assert raised.value.reply.startswith(
        "the connection closed while the message content was being sent, "
        "before its end: the upstream does not have the message ("
    )
    assert "may have kept" not in raised.value.reply


@pytest.mark.parametrize(
    ("content", "lines", "timeout"),
    [
        # A socket's timeout bounds a whole sendall: 16 MB that the upstream
        # took steadily but with rests (2 s of them, in its first 8 MB) took
        # longer than the 1 s timeout, and failed though each rest was a
        # quarter of it. The last 8 MB, read at once, are more than the
        # socket buffers hold (the client's 4 MB at most, the upstream's
        # small window): the rests are over before the reply is waited for.
        ("slow", 16_000, 1),
        # 3 MB go into the kernel's buffers at once, and the upstream reads
        # them at 1 MB/s to the end: the wait for its reply began with most
        # of the content still unread, and its 2 s timeout ran out while the
        # upstream was still taking it (it then had the message, and a retry
        # would deliver it twice). The wait goes on while the upstream takes
        # the content.
        ("steady", 3_000, 2),
    ],
)
def test_an_upstream_taking_a_large_message_slowly_gets_it_all(
    smtpsink: Mailbox,
    scripted: Callable[..., ScriptedUpstream],
    content: ContentHandling,
    lines: int,
    timeout: float,
) -> None:
    upstream = scripted(usual_answer, content=content)
    line = b"x" * 998 + b"\r\n"
    captured = capture(smtpsink, b"Subject: big\r\n\r\n" + line * lines)

    delivery = smtpsink.release(captured, "127.0.0.1", upstream.port, timeout=timeout)

    assert delivery.code == 250
    assert upstream.received.count(b"<content>") == 1


def test_stopping_a_sink_gives_up_on_an_upstream_still_taking_the_content(
    scripted: Callable[..., ScriptedUpstream],
) -> None:
    # The wait while an upstream takes the content had no end but the
    # upstream's: stop() waited its whole 10 s, and returned with the relay
    # thread still sending and the message "pending" (helper-183).
    upstream = scripted(usual_answer, content="steady")  # 1 MB/s: 32 s for 32 MB
    line = b"x" * 998 + b"\r\n"
    with SMTPSink(
        relay=f"smtp://127.0.0.1:{upstream.port}", relay_to=".*", relay_timeout=1
    ) as sink:
        with smtplib.SMTP(sink.host, sink.port) as client:
            client.sendmail(
                "a@example.com",
                ["b@example.com"],
                b"Subject: big\r\n\r\n" + line * 32_000,
            )
        message = sink.wait_for()
        relay_thread = f"smtpsink-relay-{sink.port}"
    assert message.relay is not None
    assert message.relay.status == "failed"
    assert "the sink stopped" in message.relay.reply
    assert relay_thread not in [thread.name for thread in threading.enumerate()]


def test_release_timed_out_writing_the_content_says_so(
    smtpsink: Mailbox, scripted: Callable[..., ScriptedUpstream]
) -> None:
    upstream = scripted(usual_answer, content="stall")
    # More than the socket buffers hold: the relay's write waits for an
    # upstream that reads nothing, until its timeout.
    line = b"x" * 998 + b"\r\n"
    captured = capture(smtpsink, b"Subject: big\r\n\r\n" + line * 12_000)

    with pytest.raises(RelayError) as raised:
        # 2 s: the replies before the content must come within it too.
        smtpsink.release(captured, "127.0.0.1", upstream.port, timeout=2)

    # Before: "the connection closed while the message content was being
    # sent ... (TimeoutError: timed out)", though nothing had closed it.
    assert (raised.value.stage, raised.value.code) == ("DATA", None)
    assert raised.value.reply == (
        "timed out: the upstream took none of the message content for 2 s, so "
        "its end never went: the upstream does not have the message"
    )


@contextlib.contextmanager
def _two_sinks_relaying_to_each_other() -> Iterator[tuple[SMTPSink, SMTPSink]]:
    """Sinks A and B, each relaying everything to the other: each must know
    the other's port before it starts, so the ports are found free and
    taken a moment later, and another process may take one between (under
    xdist): then again, with others."""
    for attempt in range(5):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port_a = sock.getsockname()[1]
        with SMTPSink(hostname="b.test") as b_probe:
            port_b = b_probe.port
        try:
            with contextlib.ExitStack() as stack:
                b = stack.enter_context(
                    SMTPSink(
                        port=port_b,
                        hostname="b.test",
                        relay=f"smtp://127.0.0.1:{port_a}",
                        relay_to=".*",
                    )
                )
                a = stack.enter_context(
                    SMTPSink(
                        port=port_a,
                        hostname="a.test",
                        relay=f"smtp://127.0.0.1:{port_b}",
                        relay_to=".*",
                    )
                )
                taken = stack.pop_all()
        except SinkError as error:
            if "in use" not in str(error) or attempt == 4:
                raise
            continue
        with taken:
            yield a, b
        return


def test_a_mail_loop_between_two_sinks_ends_at_the_hop_limit() -> None:
    # Two standalone sinks relaying everything to each other (found by a
    # new-user trial: a sink relaying to itself stored copies for ever).
    # Each hop adds a Received: header; at 100 the message is not relayed.
    with _two_sinks_relaying_to_each_other() as (a, b):
        with smtplib.SMTP(a.host, a.port) as client:
            client.sendmail(
                "app@example.com", ["ann@example.com"], b"Subject: loop\r\n\r\nhi\r\n"
            )

        def settled(sink: SMTPSink) -> bool:
            return all(m.relay is not None and m.relay.done for m in sink.messages)

        # The copy with 100 Received: headers lands on A (even hops).
        a.wait_until(
            lambda: len(a.messages) == MAX_HOPS // 2 + 1 and settled(a), timeout=60
        )
        b.wait_until(lambda: settled(b), timeout=60)
        everything = sorted((*a.messages, *b.messages), key=lambda m: len(m.raw))
        # The first copy was sent by the client; each later one came from a
        # relay, with one Received: header more.
        assert len(everything) == MAX_HOPS + 1
        last = everything[-1]
        assert last.raw.count(b"Received: ") == MAX_HOPS
        assert relay_of(last).status == "failed"
        assert relay_of(last).reply == (
            "not relayed: a mail loop (100 Received: headers, at most 99 relayed on)"
        )
        assert [relay_of(m).status for m in everything[:-1]] == ["relayed"] * MAX_HOPS


def test_a_relay_to_the_sinks_own_address_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"is this sink's own address"):
        SMTPSink(port=2525, relay="smtp://localhost:2525", relay_to=".*")
    # Another port, or a sink on another address, is another server.
    SMTPSink(port=2525, relay="smtp://127.0.0.1:2526", relay_to=".*")


def test_a_password_the_upstream_quotes_is_masked(
    smtpsink_factory: Factory,
    scripted: Callable[..., ScriptedUpstream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An upstream refusing the login with the password in its reply, as
    # given and in base64 (found by a fuzz run: it reached the outcome,
    # the RelayError and the transcript, and the standalone sink's output).
    password = "Pa55w0rd/z"
    encoded = base64.b64encode(password.encode()).decode()

    reply = f"535 5.7.8 wrong password {password} ({encoded})\r\n".encode()
    upstream = scripted(refusing_login_with(reply))
    monkeypatch.setenv("SMTPSINK_RELAY_PASSWORD", password)
    sink = smtpsink_factory(
        relay=f"smtp://ann@127.0.0.1:{upstream.server_address[1]}", relay_to=".*"
    )
    message = capture(sink, b"Subject: hi\r\n\r\nx\r\n")
    wait_relayed(sink, message)
    outcome = relay_of(message)
    assert outcome.status == "refused"
    assert outcome.reply == "5.7.8 wrong password **** (****)"
    assert outcome.error is not None
    shown = "\n".join(
        [str(outcome), repr(outcome), str(outcome.error), message.summary()]
        + [f"{e.line} {e.replies}" for e in outcome.error.transcript]
    )
    assert password not in shown
    assert encoded not in shown
    assert "wrong password ****" in str(outcome.error)


@pytest.mark.parametrize("workers", [None, "2"])
def test_mail_not_relayed_is_listed_at_the_end_of_a_passing_run(
    pytester: pytest.Pytester, refusing_port: int, workers: str | None
) -> None:
    # With --smtpsink-relay, a passing run said nothing of an upstream that
    # was down (found by a new-user trial).
    pytester.makepyfile(
        """
import smtplib

def test_sends(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("app@example.com", ["ann@example.com"], b"Subject: hi\\r\\n\\r\\nx\\r\\n")
    relay = lambda: smtpsink.messages[0].relay
    smtpsink.wait_until(lambda: relay() is None or relay().done)

def test_sends_nothing(smtpsink):
    pass
"""
    )
    args = [
        f"--smtpsink-relay=smtp://127.0.0.1:{refusing_port}",
        "--smtpsink-relay-to=.*",
        *(["-n", workers] if workers else ["-p", "no:xdist"]),
    ]
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*= smtpsink: 1 message not relayed =*",
            "test_mail_not_relayed_is_listed_at_the_end_of_a_passing_run.py::"
            "test_sends: 1 not relayed",
            f"  #* app@example.com -> ann@example.com | * | relay to "
            f"smtp://127.0.0.1:{refusing_port} failed: *",
        ]
    )
    assert "test_sends_nothing:" not in result.stdout.str()
    # Nothing is said when everything was relayed, or nothing relays.
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(passed=2)
    assert "not relayed" not in result.stdout.str()


def test_the_list_of_mail_not_relayed_shows_the_outcome_it_judged(
    smtpsink_factory: Factory,
) -> None:
    # The list read a message's outcome ("pending": listed), then printed
    # its summary, which read it again: settled meanwhile, the line said
    # "relayed by" in a list of mail not relayed.
    from pytest_smtpsink.plugin import _not_relayed

    upstream = smtpsink_factory(hostname="upstream.test")
    sink = relaying(smtpsink_factory, upstream, relay_to=".*")
    message = capture(sink, b"Subject: hi\r\n\r\nx\r\n")
    wait_relayed(sink, message)
    settled = relay_of(message)
    assert settled.status == "relayed"

    class SettlesWhenRead(str):
        """A "pending" that the relay thread settles as it is judged."""

        def __eq__(self, other: object) -> bool:
            message.relay = settled
            return str.__eq__(self, other)

        __hash__ = str.__hash__

    message.relay = dataclasses.replace(settled, status=SettlesWhenRead("pending"))  # type: ignore[arg-type]
    [line] = _not_relayed([sink])
    assert line.endswith("pending"), line
    assert "relayed by" not in line, line


def test_mail_relayed_to_some_recipients_only_is_listed_too(
    pytester: pytest.Pytester,
) -> None:
    # An upstream that took the message for one recipient and refused the
    # other: the refused one never got it, and a passing run said nothing.
    with SMTPSink(hostname="upstream.test") as upstream:
        refusing = upstream.view()
        refusing.fail("RCPT", 550, match="cat@partner.example")
        pytester.makepyfile(
            """
import smtplib

def test_sends(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("app@example.com", ["bob@partner.example", "cat@partner.example"], b"Subject: hi\\r\\n\\r\\nx\\r\\n")
    smtpsink.wait_until(lambda: smtpsink.messages[0].relay.done)
"""
        )
        result = pytester.runpytest(
            "-p",
            "no:xdist",
            f"--smtpsink-relay=smtp://127.0.0.1:{upstream.port}",
            "--smtpsink-relay-to=.*",
        )
        refusing.close()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*= smtpsink: 1 message not relayed =*",
            "*::test_sends: 1 not relayed",
            "  #1 * | relayed by smtp://127.0.0.1:*: 250 *; 1 of 2 recipients "
            "refused: cat@partner.example (550 *",
        ]
    )


def test_mail_still_being_relayed_as_a_test_ends_is_waited_for(
    pytester: pytest.Pytester,
) -> None:
    # A test that waited for the upstream to store its mail ended before
    # the relay read the upstream's 250, and the run listed the message as
    # "pending", not relayed (found in the docs' own relay chain example,
    # 2 runs in 5). The upstream's loop is held until the end of the test
    # waits for the relay: only that wait can see it relayed, however busy
    # the machine.
    pytester.makepyfile(
        """
import smtplib
import threading
import pytest
from pytest_smtpsink import SMTPSink, plugin

@pytest.fixture(scope="module")
def upstream():
    with SMTPSink(hostname="upstream.test") as sink:
        yield sink

def test_sends(smtpsink_factory, upstream, monkeypatch):
    release = threading.Event()
    upstream._runtime.loop.call_soon_threadsafe(release.wait, 20)
    settled = plugin._relays_settled

    def released_when_waited_for(messages):
        release.set()
        return settled(messages)

    monkeypatch.setattr(plugin, "_relays_settled", released_when_waited_for)
    sink = smtpsink_factory(relay=f"smtp://127.0.0.1:{upstream.port}", relay_to=".*")
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("app@example.com", ["ann@example.com"], b"Subject: hi\\r\\n\\r\\nx\\r\\n")
    assert sink.messages[0].relay.status == "pending"

def test_last(upstream):  # the upstream stops after test_sends has ended
    upstream.wait_for()
"""
    )
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(passed=2)
    assert "not relayed" not in result.stdout.str()


def test_mail_held_by_the_tests_own_upstream_is_waited_for_before_its_rules_go(
    pytester: pytest.Pytester,
) -> None:
    # The upstream is the test's sink, delaying its 354: the test's end
    # removed the rule and closed that connection before the wait for the
    # relay, so the outcome was "failed: the upstream closed the connection
    # without a reply" when the relay had reached DATA, and "relayed" when
    # it had not (found by a user trial, 3 runs in 8 under load).
    pytester.makepyfile(
        """
import smtplib

def test_sends(smtpsink_factory):
    upstream = smtpsink_factory(hostname="upstream.test")
    upstream.delay("DATA", 0.2)
    sink = smtpsink_factory(relay=f"smtp://127.0.0.1:{upstream.port}", relay_to=".*")
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("app@example.com", ["ann@example.com"], b"Subject: hi\\r\\n\\r\\nx\\r\\n")
    # Held at DATA as the test ends.
    upstream.wait_until(
        lambda: any(e.line == "DATA" for s in upstream.sessions for e in s.transcript)
    )
"""
    )
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(passed=1)
    assert "not relayed" not in result.stdout.str()


def test_mail_a_fixture_sends_in_its_teardown_is_waited_for_too(
    pytester: pytest.Pytester,
) -> None:
    # The wait moved before the fixtures' teardown (so that a test's own
    # upstream keeps its fault rules meanwhile); an outbox flushed in a
    # fixture's teardown was then listed as "pending", not relayed.
    with SMTPSink(hostname="upstream.test") as upstream:
        slow = upstream.view()
        slow.delay("EOD", 0.2)
        pytester.makepyfile(
            f"""
import smtplib
import pytest

@pytest.fixture
def app(smtpsink_factory):
    sink = smtpsink_factory(relay="smtp://127.0.0.1:{upstream.port}", relay_to=".*")
    yield sink
    with smtplib.SMTP(sink.host, sink.port) as client:  # the outbox, flushed
        client.sendmail("app@example.com", ["ann@example.com"], b"Subject: bye\\r\\n\\r\\nx\\r\\n")

def test_sends(app):
    pass
"""
        )
        result = pytester.runpytest("-p", "no:xdist")
        slow.close()
    result.assert_outcomes(passed=1)
    assert "not relayed" not in result.stdout.str()


def test_the_wait_for_mail_in_flight_survives_a_sink_that_overflowed(
    pytester: pytest.Pytester,
) -> None:
    # The wait raised the overflowed sink's SinkError in pytest's report
    # hook: an INTERNALERROR that ended the run (found in review).
    pytester.makepyfile(
        """
import smtplib, socket, threading
import pytest

@pytest.fixture(scope="module")  # open until test_after is over
def silent():  # greets, then never answers
    server = socket.create_server(("127.0.0.1", 0))
    taken = []

    def serve():
        while True:
            try:
                connection, _ = server.accept()
            except OSError:  # closed: the end
                return
            taken.append(connection)
            connection.sendall(b"220 slow.test\\r\\n")

    thread = threading.Thread(target=serve)
    thread.start()
    yield server.getsockname()[1]
    server.shutdown(socket.SHUT_RDWR)
    server.close()
    thread.join()
    for connection in taken:
        connection.close()

def test_overflows(smtpsink_factory, silent):
    sink = smtpsink_factory(
        relay=f"smtp://127.0.0.1:{silent}", relay_to=".*",
        max_stored_bytes=2000, relay_timeout=30,
    )
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], b"Subject: 1\\r\\n\\r\\nx\\r\\n")
        with pytest.raises(smtplib.SMTPException):
            client.sendmail("a@example.com", ["b@example.com"], (b"x" * 70 + b"\\r\\n") * 60)

def test_after(silent):
    pass
"""
    )
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(passed=2)
    assert "INTERNALERROR" not in result.stdout.str()


def test_a_stopping_sink_sends_no_more_deferred_recipients() -> None:
    # 40 recipients to an upstream taking one per transaction, each MAIL
    # held 0.2 s: a stop after the second transaction ends the relay there,
    # instead of waiting for all 40 (found by a fuzz run: 19 s).
    with SMTPSink(hostname="upstream.test") as upstream:
        upstream.limit(max_recipients=1)
        upstream.delay("MAIL", 0.2)
        relaying = SMTPSink(relay=f"smtp://127.0.0.1:{upstream.port}", relay_to=".*")
        with relaying:
            recipients = [f"u{n:02d}@example.com" for n in range(40)]
            with smtplib.SMTP(relaying.host, relaying.port) as client:
                client.sendmail(
                    "app@example.com", recipients, b"Subject: hi\r\n\r\nx\r\n"
                )
            upstream.wait_for(2, timeout=30)
        # Stopped: the transaction under way finished, no later one began.
        (message,) = relaying.messages
        outcome = relay_of(message)
        assert outcome.status == "relayed"
        assert outcome.delivery is not None
        taken = len(outcome.delivery.accepted)
        assert 2 <= taken < 20  # not 40; margin for a busy machine
        assert [code for _, code, _ in outcome.delivery.refused] == [452] * (40 - taken)
        assert len(upstream.messages) == taken


def test_mail_a_test_left_in_the_relay_does_not_reach_the_next_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An upstream that hangs holds the test's first message; the others
    # waited behind it. They were relayed during the next test (the same
    # sinks, with the same settings) and listed in its view of the upstream.
    pytester.makepyfile(
        """
import smtplib

LEFT = []

def sinks(factory):
    upstream = factory(hostname="upstream.test")
    return upstream, factory(relay=f"smtp://127.0.0.1:{upstream.port}", relay_to=".*")

def test_leaves_mail_in_the_relay(smtpsink_factory):
    upstream, sink = sinks(smtpsink_factory)
    upstream.hang("EOD")
    with smtplib.SMTP(sink.host, sink.port) as client:
        for n in range(3):
            client.sendmail("app@example.com", ["ann@example.com"],
                            f"Subject: left {n}\\r\\n\\r\\nx\\r\\n".encode())
    LEFT.extend(sink.wait_for(3))

def test_after_it(smtpsink_factory):
    upstream, sink = sinks(smtpsink_factory)
    sink.wait_until(lambda: all(m.relay.done for m in LEFT))
    assert [m.relay.reply for m in LEFT[1:]] == [
        "not relayed: its test ended before the relay reached it"
    ] * 2
    upstream.assert_nothing_sent()
"""
    )
    # The wait for the outcomes of the mail cut ends once they are there: a
    # long bound costs nothing, and a busy machine may take over 0.25 s.
    from pytest_smtpsink import plugin

    monkeypatch.setattr(plugin, "_CUT_GRACE", 30.0)
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(passed=2)
    # The end of the first test says so, not "pending".
    result.stdout.fnmatch_lines(
        [
            "*= smtpsink: 3 messages not relayed =*",
            "*test_leaves_mail_in_the_relay: 3 not relayed",
            "  #* | Subject: 'left 1' | * failed: not relayed: its test ended before "
            "the relay reached it",
        ],
        consecutive=False,
    )


def test_mail_a_teardown_left_in_the_relay_does_not_reach_the_next_test(
    pytester: pytest.Pytester,
    smtpsink_factory: Factory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # A fixture's teardown flushes an outbox through the relay, after the
    # cut as the teardown began: what the grace did not see sent was relayed
    # while the next test ran.
    upstream = smtpsink_factory(hostname="upstream.test")
    upstream.delay("EOD", 0.8)  # 5 messages take 4 s, past the 2 s grace
    began = tmp_path / "began"
    pytester.makepyfile(
        f"""
import pathlib
import smtplib
import time

import pytest

KEPT = []

@pytest.fixture
def flush_on_teardown(smtpsink_server):
    view = smtpsink_server.view()
    yield
    with smtplib.SMTP(smtpsink_server.host, smtpsink_server.port) as client:
        for n in range(5):
            client.sendmail("app@example.com", ["ann@example.com"],
                            f"Subject: teardown {{n}}\\r\\n\\r\\nx\\r\\n".encode())
    KEPT.extend(view.wait_for(5))

def test_one(flush_on_teardown, smtpsink):
    pass

def test_two(smtpsink):
    pathlib.Path({str(began)!r}).write_text(repr(time.time()))
    smtpsink.wait_until(lambda: all(m.relay.done for m in KEPT), timeout=60)
    cut = [m.relay.reply for m in KEPT if m.relay.status == "failed"]
    assert cut, [m.relay.status for m in KEPT]
    assert set(cut) == {{"not relayed: its test ended before the relay reached it"}}
"""
    )
    from pytest_smtpsink import plugin

    monkeypatch.setattr(plugin, "_CUT_GRACE", 30.0)  # ends on the outcomes
    result = pytester.runpytest(
        "-p",
        "no:xdist",
        f"--smtpsink-relay=smtp://127.0.0.1:{upstream.port}",
        "--smtpsink-relay-to=.*",
    )
    result.assert_outcomes(passed=2)
    second_began = float(began.read_text())
    late = [m for m in upstream.messages if m.received_at.timestamp() > second_began]
    # At most what was on its way as the teardown ended (sent, or pipelined
    # behind it), never the queue behind that.
    assert len(late) <= 2, [m.subject for m in late]


def test_an_upstreams_report_names_the_refusal_that_caused_it(
    smtpsink_factory: Factory,
) -> None:
    # The relay pipelines MAIL, RCPT and DATA: the upstream's report named
    # DATA's 503 ("need RCPT command"), the consequence, as the last
    # refusal, and advised waiting for mail over the relay's idle connection.
    upstream = smtpsink_factory(hostname="upstream.test")
    upstream.fail("RCPT", 550, "5.1.1 unknown")
    sink = relaying(smtpsink_factory, upstream, relay_to=".*")
    message = capture(sink, b"Subject: hi\r\n\r\nx\r\n")
    sink.wait_until(lambda: message.relay is not None and message.relay.done)
    assert [e.code for e in upstream.sessions[0].transcript if e.command == "DATA"] == [
        503
    ]
    with pytest.raises(AssertionError) as caught:
        upstream.assert_sent()
    report = str(caught.value)
    assert "; last refusal: C: RCPT TO:<" in report
    assert "S: 550 5.1.1 unknown" in report
    assert "still open" not in report


@pytest.mark.parametrize(
    ("tls", "size"),
    [(False, 400), (False, 200), (True, 400)],
    ids=["plain", "plain-small", "tls"],
)
def test_content_goes_as_long_as_a_slow_upstream_keeps_taking_it(
    tls: bool, size: int
) -> None:
    # Each 256 KiB piece had to be taken whole within the timeout (and a
    # message under 256 KiB went in one sendall): an upstream reading
    # steadily at less than 256 KiB per timeout was cut off, "the upstream
    # took none of the message content". Over TLS a write is a record at a
    # time. The reader here takes 8 KiB every 50 ms: 256 KiB take 1.6 s,
    # and the timeout is 1 s.
    from pytest_smtpsink._relay import _client_class
    from pytest_smtpsink._tls import _Authority

    authority = _Authority() if tls else None
    content = bytes(size * 1024)
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = bytearray()

        def slow_upstream() -> None:
            upstream, _ = listener.accept()
            if authority is not None:
                upstream = authority.server_context().wrap_socket(
                    upstream, server_side=True
                )
            with upstream:
                upstream.sendall(b"220 slow.test\r\n")
                while len(taken) < len(content):
                    piece = upstream.recv(8192)
                    if not piece:
                        return
                    taken.extend(piece)
                    done.wait(0.05)  # a slow reader's pace; set only on failure

        done = threading.Event()
        reader = threading.Thread(target=slow_upstream)
        reader.start()
        if authority is None:
            client = _client_class(False)(timeout=1.0)
        else:
            client = _client_class(True)(
                timeout=1.0, context=authority.client_context()
            )
            client._host = "127.0.0.1"
        try:
            client.connect("127.0.0.1", listener.getsockname()[1])
            # A small send buffer, as the kernel's would be full of a bigger
            # message: the upstream's pace decides.
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
            client.send(content)
        finally:
            done.set()
            client.close()
            reader.join()
    assert bytes(taken) == content


def test_the_end_of_a_session_does_not_wait_for_a_hung_upstream(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    # After pytest's summary the run sat silent until the relay to an
    # upstream that never greets timed out (30 s here): the message's
    # outcome, "pending", was already reported.
    outcome = tmp_path / "outcome.txt"
    pytester.makeconftest(
        f"""
import socket

import pytest

KEPT = []
SILENT = socket.socket()  # listens, never greets
SILENT.bind(("127.0.0.1", 0))
SILENT.listen()

@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    SILENT.close()
    with open({str(outcome)!r}, "w") as file:
        file.write(KEPT[0].relay.reply)
"""
    )
    pytester.makepyfile(
        """
import smtplib

from conftest import KEPT, SILENT

def test_sends(smtpsink_factory):
    port = SILENT.getsockname()[1]
    sink = smtpsink_factory(relay=f"smtp://127.0.0.1:{port}", relay_to=".*", relay_timeout=30)
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("app@example.com", ["ann@example.com"], b"Subject: x\\r\\n\\r\\nx\\r\\n")
    KEPT.append(sink.wait_for())
"""
    )
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(passed=1)
    assert outcome.read_text() == "the sink stopped while relaying it"


def test_mail_a_wider_fixture_sends_is_relayed_in_the_test_it_seeds(
    pytester: pytest.Pytester, smtpsink_factory: Factory
) -> None:
    # A session fixture seeds mail through a relaying sink, then the test's
    # smtpsink is made: mail still queued then was cut as "not relayed: its
    # test ended", though no test had ended (only the end of a test cuts).
    upstream = smtpsink_factory(hostname="upstream.test")
    upstream.delay("EOD", 0.2)  # each message takes a while upstream
    pytester.makepyfile(
        """
import smtplib

import pytest

@pytest.fixture(scope="session")
def seeded(smtpsink_server):
    view = smtpsink_server.view()
    with smtplib.SMTP(smtpsink_server.host, smtpsink_server.port) as client:
        for n in range(5):
            client.sendmail("app@example.com", ["ann@example.com"],
                            f"Subject: seed {n}\\r\\n\\r\\nx\\r\\n".encode())
    return view.wait_for(5)

def test_uses_the_seed(seeded, smtpsink):
    smtpsink.wait_until(lambda: all(m.relay.done for m in seeded), timeout=30)
    assert [m.relay.status for m in seeded] == ["relayed"] * 5
"""
    )
    result = pytester.runpytest(
        "-p",
        "no:xdist",
        f"--smtpsink-relay=smtp://127.0.0.1:{upstream.port}",
        "--smtpsink-relay-to=.*",
    )
    result.assert_outcomes(passed=1)
    assert [m.subject for m in upstream.messages] == [f"seed {n}" for n in range(5)]


def test_a_verbose_relay_to_with_a_comment_never_refuses_the_mail(
    smtpsink_factory: Factory,
) -> None:
    # The near-miss hint wrapped the pattern in ".*(?:...)": a verbose
    # pattern's "# comment" swallowed the ")", and re.error, on the SMTP
    # path, refused the message with a 500: lost, not captured.
    upstream = smtpsink_factory(hostname="upstream.test")
    sink = smtpsink_factory(
        relay=f"smtp://127.0.0.1:{upstream.port}",
        relay_to=r"(?x) [^@]+ @ partner\.example   # partners only",
    )
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail(
            "app@example.com", ["eve@partner.example.evil"], b"Subject: 1\r\n\r\n"
        )
    message = sink.wait_for()
    assert str(message.relay) == "not relayed (no recipient matches relay_to)"


def test_the_teardowns_relay_grace_is_one_for_all_mailboxes(
    smtpsink_factory: Factory,
) -> None:
    # It was waited once per mailbox: two views of one sink whose upstream
    # hangs took twice the grace, three took three.
    from pytest_smtpsink import plugin

    upstream = smtpsink_factory(hostname="upstream.test")
    upstream.hang("CONNECT")  # accepts, never greets, until the rule goes
    sinks = [
        relaying(
            smtpsink_factory, upstream, relay_to=".*", relay_timeout=60, hostname=name
        )
        for name in ("a.test", "b.test")
    ]
    views = [sinks[0], sinks[0].sink.view(), sinks[1]]
    for sink in sinks:
        capture(sink, b"Subject: held\r\n\r\n")
    waits: list[float] = []
    for view in views:
        wait_until = view.wait_until

        def counted(*args: Any, wait_until: Any = wait_until, **kwargs: Any) -> Any:
            waits.append(kwargs["timeout"])
            return wait_until(*args, **kwargs)

        view.wait_until = counted  # type: ignore[method-assign]
    pending = plugin._settle_relays(views, grace=0.5)
    # The first wait took the whole grace: nothing was left for the others.
    assert len(waits) == 1
    assert len(pending) == 2
    upstream.clear_faults()
